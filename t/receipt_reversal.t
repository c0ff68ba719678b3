#!/usr/bin/perl

# Red-letter (冲红) receipts (docs/receipts.md, docs/internals.md
# "refund.settled"): a refund.settled event for a paid notice with a receipt
# gets a red-letter receipt that names the original, in the same numbering
# and ledger, exactly once; and the RSA-SHA256 seal as the configured
# alternative to SM2.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
my (undef, $pub) = $t->issuer_keys('rsa');
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_receipt_key => "rsa $pub TEST-RSA-01" });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location /r/ { gov_pay_receipt; }
    }
EOF

my $r = $t->redis;
my $code = '330101' . sprintf('%02d', current_yy());
$t->start_worker(receipt => { algorithm => 'rsa' });

sub notice_json { $t->get_notice($_[0])->json // {} }

my $n = $t->new_notice(amount => 125000);
my $pc = $n->{payment_code};
$t->sandbox_pay($n)->body eq 'success' or BAIL_OUT('pay failed');
my $orig = wait_for(sub { notice_json($pc)->{receipt} }, 10, 'the receipt');
ok $orig, 'the payment gets its receipt' or diag $t->worker_log;

my ($paid) = grep { $_->{fields}{payment_code} eq $pc && $_->{fields}{type} eq 'notice.paid' }
    $t->stream_entries('settled');
my ($nkey, $stream) = ($paid->{fields}{notice_key}, $paid->{stream});

###############################################################################
# the RSA seal

my %rec = $r->hgetall("{gpr}:r:$code:$orig->{number}");
my $seal = json_decode($rec{seal});
is $seal->{SealAlgorithm}, 'RSA-SHA256', 'configured for RSA: the seal is RSA-SHA256';
is $seal->{SealKeySN}, 'TEST-RSA-01', 'and names the RSA key serial';
my $v = $t->get("/r/$code/$orig->{number}?c=$orig->{check_code}",
                headers => { Accept => 'application/json' })->json // {};
ok $v->{verified}, 'the verification page verifies the RSA seal';

###############################################################################
# the red-letter receipt

sub refund {
    my (%o) = @_;
    $r->xadd($stream, '*', type => 'refund.settled', payment_code => $pc,
             notice_key => $nkey, refund_id => $o{refund_id} // 'RF-1',
             amount => $o{amount} // 125000, refunded_at => time);
}

refund();
my $red = wait_for(sub { my %h = $r->hgetall($nkey); $h{red_receipt_number} ? \%h : 0 },
                   10, 'the red-letter receipt');
ok $red, 'refund.settled gives a red-letter receipt' or diag $t->worker_log;
is $red->{red_receipt_code}, $code, 'in the same code';
is $red->{red_receipt_number}, sprintf('%010d', $orig->{number} + 1),
    'with the next number of the sequence';
is $red->{receipt_number}, $orig->{number}, 'the original receipt stays on the notice';

my %rr = $r->hgetall("{gpr}:r:$code:$red->{red_receipt_number}");
my $doc = json_decode($rr{doc});
is $rr{kind}, 'red', 'the record is a red-letter one';
is $doc->{RelatedInvoiceCode}, $orig->{code}, 'RelatedInvoiceCode is the original code';
is $doc->{RelatedInvoiceNumber}, $orig->{number}, 'RelatedInvoiceNumber is the original number';
is $doc->{TotalAmount}, '-1250.00', 'the amounts are negative';
is $doc->{Items}[0]{ItemAmount}, '-1250.00', 'so are the items';
like $doc->{EInvoiceName}, qr/红字/, 'EInvoiceName says red-letter';
is $doc->{BizCode}, $pc, 'BizCode is the same payment';

my $page = $t->get("/r/$code/$red->{red_receipt_number}?c=$red->{red_receipt_check}",
                   headers => { Accept => 'application/json' })->json // {};
is $page->{kind}, 'red', 'the verification page shows a red-letter receipt';
ok $page->{verified}, 'and its seal verifies';
my $html = $t->get("/r/$code/$red->{red_receipt_number}?c=$red->{red_receipt_check}")->text;
like $html, qr{<h1>[^<]*红字[^<]*</h1>}, 'the HTML page is headed as a red-letter receipt';
like $html, qr{<dt>原票据号码</dt><dd class="code">$orig->{number}</dd>},
    'and names the receipt it reverses';
like $html, qr/查验通过/, 'and says that it verifies';

# the event for the notify plugin
my @rev = grep { $_->{fields}{type} eq 'receipt.reversed' } $t->stream_entries('settled');
is scalar @rev, 1, 'one receipt.reversed event';
is $rev[0]{fields}{receipt_number}, $red->{red_receipt_number}, 'naming the red-letter receipt';

# the same refund again: nothing new
refund();
ok wait_for(sub {
    my $p = eval { ($r->xpending($stream, 'receipt'))[0] } // 1;
    return $p == 0 && grep { /refund.settled.*already issued/ || /red-letter receipt already/ }
        split /\n/, $t->worker_log;
}, 10, 'the duplicate refund to be acknowledged'), 'a duplicate refund event is acknowledged';
is $r->get("{gpr}:rseq:$code"), 2, 'and takes no number';

# a partial refund cannot be reversed in full: dead letter, no number
my $n2 = $t->new_notice(amount => 3000);
$t->sandbox_pay($n2)->body eq 'success' or BAIL_OUT('pay failed');
wait_for(sub { notice_json($n2->{payment_code})->{receipt} }, 10, 'second receipt');
my ($p2) = grep { $_->{fields}{payment_code} eq $n2->{payment_code} } $t->stream_entries('settled');
$r->xadd($p2->{stream}, '*', type => 'refund.settled', payment_code => $n2->{payment_code},
         notice_key => $p2->{fields}{notice_key}, refund_id => 'RF-2', amount => 1000,
         refunded_at => time);
ok wait_for(sub { scalar $t->stream_entries('dead') }, 10, 'a dead letter'),
    'a partial refund is dead-lettered';
is $r->get("{gpr}:rseq:$code"), 3, 'and takes no number';

$t->stop_worker;
my ($rc, $out) = $t->ledger_verify($code, '--pubkey', $pub);
is $rc, 0, 'the ledger with the red-letter entry verifies (RSA seals)' or diag $out;
like $out, qr/3 entries/, 'three entries: two receipts and one red-letter';

$t->check_error_log;

done_testing;
