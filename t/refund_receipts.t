#!/usr/bin/perl

# Receipts follow the money (docs/receipts.md, "Refunds"): a notice paid
# through the sandbox channel is refunded through the unit API, and the
# refund ends as a channel ends it (refund_done.lua, run here through Redis as
# the refund plugin runs it, and a WeChat Pay refund notification at the
# edge).  A partial refund reverses the live receipt with a red-letter
# receipt (冲红) and issues a new receipt for the amount kept; several
# partial refunds chain; a full refund only reverses; a failed refund and a
# refund of money that never paid the notice touch no receipt.  Every receipt
# is in the ledger, verifiable at /r/, and the original's page says which
# receipt reversed it; the unit sees the live receipt and the history.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Channels;
use GovPay::Refunds;

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
my (undef, $pub) = $t->issuer_keys('sm2');
my %d = $c->directives('wechat');
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { %d, gov_pay_receipt_key => "sm2 $pub TEST-SM2-01" });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location = /notify/wechat { gov_pay_notify wechat; }
        location /r/ { gov_pay_receipt; }
    }
EOF

my $r = $t->redis;
my $CODE = '330101' . sprintf('%02d', current_yy());
$t->start_worker(claim_idle_ms => 2000);

sub notice { $t->get_notice($_[0])->json // {} }

sub paid_notice {
    my (%o) = @_;
    my $n = $t->new_notice(amount => $o{amount} // 10000, %{ $o{notice} // {} });
    my $res = $t->sandbox_pay($n);
    die 'not paid: ' . $res->describe unless $res->body eq 'success';
    wait_for(sub { notice($n->{payment_code})->{receipt} }, 10, 'the first receipt')
        or die 'no receipt: ' . $t->worker_log;
    return $n;
}

sub ask_refund { GovPay::Refunds::ask($t, @_) }
sub end_refund { GovPay::Refunds::end($t, @_) }
sub notice_key { GovPay::Refunds::notice_key($t, @_) }

sub hash_of { my %h = $r->hgetall(notice_key($_[0])); \%h }
sub record { my ($code, $number) = @_; my %h = $r->hgetall("{gpr}:r:$code:$number"); \%h }
sub doc_of { json_decode($t->receipt_doc(@_) // '') // {} }
sub page_json {
    my ($rc) = @_;
    return $t->get("/r/$rc->{code}/$rc->{number}?c=$rc->{check_code}",
                   headers => { Accept => 'application/json' })->json // {};
}

sub receipts_done {
    my ($code, $nn, $what) = @_;
    return wait_for(sub { hash_of($code)->{"r$nn.$what"} }, 10, "r$nn.$what");
}

###############################################################################
# a partial refund: red-letter receipt, then a receipt for what is kept

my $n = paid_notice(amount => 10000, notice => { remark => '秋季学费' });
my $pc = $n->{payment_code};
my $first = notice($pc)->{receipt};
is $first->{number} + 0, 1, 'the payment gets receipt 1';

my $id1 = ask_refund($pc, 3000);
is end_refund($id1, 'SUCCEEDED'), 'PARTIALLY_REFUNDED', 'a refund of 3000 of 10000 fen succeeds';
ok receipts_done($pc, '01', 'receipt'), 'the partial refund gets its receipts'
    or diag $t->worker_log;

my $h = hash_of($pc);
my ($red_code, $red_no) = split m{/}, $h->{'r01.red_receipt'};
my ($new_code, $new_no) = split m{/}, $h->{'r01.receipt'};
is "$red_code/$red_no", sprintf('%s/%010d', $CODE, 2), 'a red-letter receipt, number 2';
is "$new_code/$new_no", sprintf('%s/%010d', $CODE, 3), 'then a new receipt, number 3';

my $red = doc_of($red_code, $red_no);
like $red->{EInvoiceName}, qr/红字/, 'the first is red-letter';
is $red->{RelatedInvoiceNumber}, $first->{number}, 'and reverses receipt 1';
is $red->{RelatedInvoiceCode}, $first->{code}, '  of its code';
is $red->{TotalAmount}, '-100.00', 'for the whole live receipt, negative';
is $red->{Items}[0]{ItemQuantity}, -1, 'its items mirror the original, negated';
is $red->{Items}[0]{ItemAmount}, '-100.00', '  amounts too';
like $red->{Remark}, qr/\Q$id1\E/, 'it names the refund';
is record($red_code, $red_no)->{kind}, 'red', 'the record is red';

my $kept = doc_of($new_code, $new_no);
unlike $kept->{EInvoiceName}, qr/红字/, 'the second is an ordinary receipt';
is $kept->{TotalAmount}, '70.00', 'of the 7000 fen the payer keeps paid';
is $kept->{Items}[0]{ItemAmount}, '70.00', 'in one line';
is $kept->{Items}[0]{ItemCode}, '103001', 'of the notice\'s item';
is $kept->{BizCode}, $pc, 'for the same payment';
like $kept->{Remark}, qr/^秋季学费；退费\Q$id1\E后重开，原票据\Q$first->{code}\E\/\Q$first->{number}\E$/,
    'its remark keeps the notice\'s and says what it replaces';
ok !exists $kept->{RelatedInvoiceNumber}, 'it is no red-letter receipt';
is record($new_code, $new_no)->{kind}, 'blue', 'the record is blue';
is $r->get("{gpr}:biz:$pc:$id1:red"), "$red_code/$red_no", 'the red-letter receipt is the refund\'s, once';
is $r->get("{gpr}:biz:$pc:$id1"), "$new_code/$new_no", 'so is the new receipt';

my $j = notice($pc);
is $j->{receipt}{number}, $new_no, 'the unit sees the new receipt as the notice\'s receipt';
like $j->{receipt}{verify_url}, qr{/r/\Q$new_code/$new_no\E\?c=}, 'with its verify_url';
is_deeply [ map { "$_->{kind} $_->{number} $_->{amount}" } @{ $j->{receipts} // [] } ],
    [ "blue $first->{number} 10000", "red $red_no -10000", "blue $new_no 7000" ],
    'and the history: the original, its red-letter receipt, the new one';
is $j->{receipts}[1]{reverses}{number}, $first->{number}, 'the red-letter entry says what it reverses';
is $j->{receipts}[1]{refund_id}, $id1, 'and which refund made it';
is $j->{receipts}[2]{refund_id}, $id1, 'so does the new receipt';

# /r/: the original says it was reversed and by which receipt
my $p = page_json($first);
ok $p->{verified}, 'the original still verifies at /r/';
is_deeply $p->{reversed_by}, { code => $red_code, number => $red_no },
    'its JSON names the red-letter receipt that reversed it';
my $html = $t->get("/r/$first->{code}/$first->{number}?c=$first->{check_code}")->text;
like $html, qr/本票据已冲红：红字票据代码 \Q$red_code\E，号码 \Q$red_no\E/,
    'its page says it was reversed, by which receipt';
$p = page_json($j->{receipts}[1]);
is $p->{kind}, 'red', 'the red-letter receipt verifies at /r/';
ok $p->{verified}, '  its seal too';
ok !exists $p->{reversed_by}, '  and it is reversed by nothing';
$p = page_json($j->{receipt});
ok $p->{verified} && !exists $p->{reversed_by}, 'the new receipt verifies and is live';
unlike $t->get("/r/$new_code/$new_no?c=$j->{receipt}{check_code}")->text, qr/已冲红/,
    'its page does not say reversed';

my @ev = grep { $_->{fields}{payment_code} eq $pc } $t->stream_entries('settled');
is_deeply [ map { $_->{fields}{type} } @ev ],
    [ 'notice.paid', 'receipt.issued', 'receipt.reversed', 'receipt.issued' ],
    'each receipt has one event on the settled stream';
is $ev[2]{fields}{amount}, -10000, 'receipt.reversed carries the red-letter amount';
is $ev[2]{fields}{refund_id}, $id1, '  and the refund';
is $ev[3]{fields}{amount}, 7000, 'the new receipt.issued carries the amount kept';

###############################################################################
# partial refunds chain; a full refund of the rest only reverses

my $id2 = ask_refund($pc, 2000);
end_refund($id2, 'SUCCEEDED');
ok receipts_done($pc, '02', 'receipt'), 'a second partial refund gets its receipts'
    or diag $t->worker_log;
$h = hash_of($pc);
is $h->{'r02.red_receipt'}, sprintf('%s/%010d', $CODE, 4), 'a red-letter receipt 4';
is doc_of($CODE, sprintf('%010d', 4))->{RelatedInvoiceNumber}, $new_no,
    'reversing the receipt then live (3), not the original';
is doc_of($CODE, sprintf('%010d', 4))->{TotalAmount}, '-70.00', 'of its 70.00';
is doc_of(split m{/}, $h->{'r02.receipt'})->{TotalAmount}, '50.00', 'and a new receipt of 50.00';
is_deeply page_json(notice($pc)->{receipts}[2])->{reversed_by},
    { code => $CODE, number => sprintf('%010d', 4) }, 'receipt 3 now says it was reversed by 4';

my $id3 = ask_refund($pc, 5000);
is end_refund($id3, 'SUCCEEDED'), 'REFUNDED', 'the rest is refunded: REFUNDED';
ok receipts_done($pc, '03', 'red_receipt'), 'a full refund gets its red-letter receipt'
    or diag $t->worker_log;
$h = hash_of($pc);
ok wait_for(sub { grep { /receipts of refund \Q$id3\E|issued red-letter receipt \Q$h->{'r03.red_receipt'}\E/ }
                  split /\n/, $t->worker_log }, 5, 'the log line'), 'and the worker logs it';
ok !defined $h->{'r03.receipt'}, 'and no new receipt: nothing is kept';
is doc_of(split m{/}, $h->{'r03.red_receipt'})->{TotalAmount}, '-50.00',
    'the red-letter receipt reverses the 50.00 left';
$j = notice($pc);
is $j->{status}, 'REFUNDED', 'the notice is REFUNDED';
is scalar @{ $j->{receipts} }, 6, 'its history has six receipts';
is $j->{red_receipt}, undef, 'the answer has no other receipt fields';
is $r->get("{gpr}:rseq:$CODE"), 6, 'six numbers taken, no gap';

###############################################################################
# a failed refund touches no receipt; WeChat Pay's notification ends one

my $n2 = paid_notice(amount => 8000);
my $before = $r->get("{gpr}:rseq:$CODE");
my $idf = ask_refund($n2->{payment_code}, 1000);
is end_refund($idf, 'FAILED'), 'PAID', 'a failed refund leaves the notice PAID';

my $w = $t->new_notice(amount => 6000);
is $c->wechat_notify($c->wechat_body($c->wechat_transaction($w,
       transaction_id => '42' . random_string(26, '0123456789'))))->status, 204,
    'a notice paid through WeChat Pay';
wait_for(sub { notice($w->{payment_code})->{receipt} }, 10, 'the WeChat receipt');
my $wid = ask_refund($w->{payment_code}, 1500);
is $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid, refund => 1500)))->status,
    204, 'WeChat Pay notifies REFUND.SUCCESS at the edge';
ok wait_for(sub { hash_of($w->{payment_code})->{'r01.receipt'} }, 10, 'the WeChat refund\'s receipts'),
    'the refund ended by the channel\'s notification gets its receipts';
my $wr = notice($w->{payment_code})->{receipt};
is doc_of($wr->{code}, $wr->{number})->{TotalAmount}, '45.00', 'the new receipt is of the 45.00 kept';
is doc_of($wr->{code}, $wr->{number})->{PayMode}, 'wechat', '  paid through WeChat Pay';
is $r->get("{gpr}:rseq:$CODE"), $before + 3,
    'three numbers since: the WeChat payment\'s receipt and its refund\'s two';
is hash_of($n2->{payment_code})->{'r01.red_receipt'}, undef, 'the failed refund made no receipt';
is notice($n2->{payment_code})->{receipts}, undef, '  and its notice has no history';

###############################################################################
# refunds of one notice are followed in the order they succeeded

my $n3 = paid_notice(amount => 9000);
my $pc3 = $n3->{payment_code};
$t->stop_worker;
my $a1 = ask_refund($pc3, 1000);
my $a2 = ask_refund($pc3, 2000);
end_refund($a1, 'SUCCEEDED');
end_refund($a2, 'SUCCEEDED');
# the first one's event goes to the end of the stream: the second comes first
my ($e1) = grep { ($_->{fields}{refund_id} // '') eq $a1 && $_->{fields}{type} eq 'refund.succeeded' }
    $t->stream_entries('refunds');
$r->xdel($e1->{stream}, $e1->{id});
$r->xadd($e1->{stream}, '*', map { $_ => $e1->{fields}{$_} } @{ $e1->{order} });
$t->start_worker(claim_idle_ms => 2000);
ok receipts_done($pc3, '02', 'receipt'), 'both refunds get their receipts'
    or diag $t->worker_log;
like $t->worker_log, qr/refund \Q$a2\E waits: the live receipt/,
    'the later refund waited for the earlier one';
$h = hash_of($pc3);
is doc_of(split m{/}, $h->{'r01.receipt'})->{TotalAmount}, '80.00', 'the earlier refund keeps 80.00';
is doc_of(split m{/}, $h->{'r02.red_receipt'})->{RelatedInvoiceNumber},
    (split m{/}, $h->{'r01.receipt'})[1], 'the later one reverses that receipt';
is doc_of(split m{/}, $h->{'r02.receipt'})->{TotalAmount}, '60.00', 'and keeps 60.00';

###############################################################################
# the ledger

$t->stop_worker;
my ($rc, $out) = $t->ledger_verify($CODE, '--pubkey', $pub);
is $rc, 0, 'the ledger with every receipt and red-letter receipt verifies' or diag $out;
my @entries = $t->ledger_entries($CODE);
is scalar @entries, $r->get("{gpr}:rseq:$CODE"), 'one ledger entry per number';
is scalar(grep { $_->{partial} } @entries), 0, 'no partial line';
my @dead = $t->stream_entries('dead');
is scalar @dead, 0, 'nothing was dead-lettered' or diag explain \@dead;

$t->check_error_log;

done_testing;
