#!/usr/bin/perl

# Red-letter (冲红) receipts (docs/receipts.md, "Refunds"): a notice refunded
# in full (refund.succeeded on the refunds stream, refunded_total equal to
# the paid amount) gets a red-letter receipt that names the original, in the
# same numbering and ledger, exactly once however often the event comes; a
# receipt not issued yet makes the refund wait for it; and the RSA-SHA256
# seal as the configured alternative to SM2.  t/refund_receipts.t has the
# partial refunds.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Refunds;

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

my $rid = GovPay::Refunds::ask($t, $pc, 125000);
is GovPay::Refunds::end($t, $rid, 'SUCCEEDED'), 'REFUNDED', 'the whole amount is refunded';
my $red = wait_for(sub { my %h = $r->hgetall($nkey); $h{red_receipt_number} ? \%h : 0 },
                   10, 'the red-letter receipt');
ok $red, 'a full refund gives a red-letter receipt' or diag $t->worker_log;
is $red->{red_receipt_code}, $code, 'in the same code';
is $red->{red_receipt_number}, sprintf('%010d', $orig->{number} + 1),
    'with the next number of the sequence';
is $red->{receipt_number}, $orig->{number}, 'the original receipt stays on the notice';
is $red->{'r01.red_receipt'}, "$code/$red->{red_receipt_number}", 'the refund names it';

my %rr = $r->hgetall("{gpr}:r:$code:$red->{red_receipt_number}");
my $doc = json_decode($t->receipt_open($rr{doc}, $code, $red->{red_receipt_number}) // '') // {};
is $rr{kind}, 'red', 'the record is a red-letter one';
is $doc->{RelatedInvoiceCode}, $orig->{code}, 'RelatedInvoiceCode is the original code';
is $doc->{RelatedInvoiceNumber}, $orig->{number}, 'RelatedInvoiceNumber is the original number';
is $doc->{TotalAmount}, '-1250.00', 'the amounts are negative';
is $doc->{Items}[0]{ItemAmount}, '-1250.00', 'so are the items';
like $doc->{EInvoiceName}, qr/红字/, 'EInvoiceName says red-letter';
is $doc->{BizCode}, $pc, 'BizCode is the same payment';
is $r->hget("{gpr}:r:$code:$orig->{number}", 'reversed_by'), "$code/$red->{red_receipt_number}",
    'the original\'s record says which receipt reversed it';

my $page = $t->get("/r/$code/$red->{red_receipt_number}?c=$red->{red_receipt_check}",
                   headers => { Accept => 'application/json' })->json // {};
is $page->{kind}, 'red', 'the verification page shows a red-letter receipt';
ok $page->{verified}, 'and its seal verifies';
my $html = $t->get("/r/$code/$red->{red_receipt_number}?c=$red->{red_receipt_check}")->text;
like $html, qr{<h1>[^<]*红字[^<]*</h1>}, 'the HTML page is headed as a red-letter receipt';
like $html, qr{<dt>原票据号码</dt><dd class="code">$orig->{number}</dd>},
    'and names the receipt it reverses';
like $html, qr/查验通过/, 'and says that it verifies';
$html = $t->get("/r/$code/$orig->{number}?c=$orig->{check_code}")->text;
like $html, qr/本票据已冲红/, 'the original\'s page says it was reversed';

# the event for the notify plugin
my @rev = grep { $_->{fields}{type} eq 'receipt.reversed' } $t->stream_entries('settled');
is scalar @rev, 1, 'one receipt.reversed event';
is $rev[0]{fields}{receipt_number}, $red->{red_receipt_number}, 'naming the red-letter receipt';

# the same refund event again (a redelivery): nothing new
my ($done) = grep { $_->{fields}{type} eq 'refund.succeeded' } $t->stream_entries('refunds');
$r->xadd($done->{stream}, '*', map { $_ => $done->{fields}{$_} } @{ $done->{order} });
ok wait_for(sub {
    my $p = eval { ($r->xpending($done->{stream}, 'receipt'))[0] } // 1;
    return $p == 0 && grep { /receipts of refund \Q$rid\E are already issued/ }
        split /\n/, $t->worker_log;
}, 10, 'the duplicate refund to be acknowledged'), 'a duplicate refund event is acknowledged';
is $r->get("{gpr}:rseq:$code"), 2, 'and takes no number';

# a refund event whose notice has no receipt yet waits for it
$t->stop_worker;
my $n2 = $t->new_notice(amount => 3000);
$t->sandbox_pay($n2)->body eq 'success' or BAIL_OUT('pay failed');
my $rid2 = GovPay::Refunds::ask($t, $n2->{payment_code}, 3000);
GovPay::Refunds::end($t, $rid2, 'SUCCEEDED');
my ($p2) = grep { $_->{fields}{payment_code} eq $n2->{payment_code} } $t->stream_entries('settled');
$r->xgroup('SETID', $p2->{stream}, 'receipt', '$');   # the payment's event is not read
$t->start_worker(receipt => { algorithm => 'rsa' }, claim_idle_ms => 1000, max_deliveries => 50);
ok wait_for(sub { $t->worker_log =~ /\Q$rid2\E|receipt is not issued yet/ }, 10, 'the refund seen'),
    'the refund comes before its notice\'s receipt';
like $t->worker_log, qr/the notice's receipt is not issued yet/, 'it waits for it';
$r->xadd($p2->{stream}, '*', map { $_ => $p2->{fields}{$_} } @{ $p2->{order} });
ok wait_for(sub { my %h = $r->hgetall($p2->{fields}{notice_key}); $h{red_receipt_number} }, 10,
            'the red-letter receipt after the receipt'),
    'once the receipt is issued, the refund reverses it' or diag $t->worker_log;
is $r->get("{gpr}:rseq:$code"), 4, 'two numbers more: the receipt and its red-letter receipt';

$t->stop_worker;
my ($rc, $out) = $t->ledger_verify($code, '--pubkey', $pub);
is $rc, 0, 'the ledger with the red-letter entries verifies (RSA seals)' or diag $out;
like $out, qr/4 entries/, 'four entries: two receipts and their red-letter receipts';

$t->check_error_log;

done_testing;
