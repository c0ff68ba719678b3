#!/usr/bin/perl

# The UnionPay channel (API.md, "Channel callbacks"; docs/channels.md): the
# self-submitting form to the front gateway (5.1.0, signMethod 01), and the
# back notification: verified first (sorted k=v&, SHA-256 hex, SHA256withRSA
# over the hex with UnionPay's key), merId checked, txnAmt in fen, only
# respCode 00 settles.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Encode qw(encode_utf8);
use HTML::Entities qw(decode_entities);
use Test::More;
use GovPay::Test;
use GovPay::Channels;

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { $c->directives('unionpay') });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/unionpay { gov_pay_notify unionpay; }
    }
EOF

sub notice_of {
    my ($code) = @_;
    my $g = $t->get_notice($code);
    return $g->status == 200 ? $g->json : { http => $g->describe };
}

sub settled { $t->stream_entries('settled') }

sub anomalies_of {
    my ($trade_no) = @_;
    return grep { ($_->{fields}{channel_trade_no} // '') eq $trade_no }
        $t->stream_entries('anomaly');
}

my $CLOUDPAY_UA = 'Mozilla/5.0 (Linux; Android 13) AppleWebKit/537.36 (KHTML, like Gecko) '
    . 'Mobile Safari/537.36 (com.unionpay.cloudpay) UnionPay/1.0 CloudPay';

###############################################################################
# hand-off: a signed form that submits itself to the front gateway

my $n = $t->new_notice(amount => 125000);
my $code = $n->{payment_code};

my $res = $t->get("/q/$code", headers => { 'User-Agent' => $CLOUDPAY_UA });
is $res->status, 200, 'the QR scanned in 云闪付 answers the hand-off page'
    or diag $res->describe;
my $html = $res->text;
like $html, qr{<form id="up" method="post" action="https://gateway\.95516\.com/gateway/api/frontTransReq\.do">},
    'the form posts to the configured front gateway only';
like $res->header('Content-Security-Policy') // '',
    qr{form-action https://gateway\.95516\.com/gateway/api/frontTransReq\.do;},
    'the page may post its form to that gateway and nowhere else';
like $res->header('Content-Security-Policy') // '', qr{script-src 'sha256-},
    'the page runs only its own script';

my %form;
while ($html =~ /<input type="hidden" name="([^"]+)" value="([^"]*)">/g) {
    $form{$1} = decode_entities($2);
}
is $form{version}, '5.1.0', 'version 5.1.0';
is $form{encoding}, 'UTF-8', 'encoding UTF-8';
is $form{txnType}, '01', 'txnType 01 (consume)';
is $form{txnSubType}, '01', 'txnSubType 01';
is $form{bizType}, '000201', 'bizType 000201';
is $form{accessType}, '0', 'accessType 0 (merchant)';
is $form{currencyCode}, '156', 'currencyCode 156';
is $form{merId}, $GovPay::Channels::UNIONPAY_MER_ID, 'merId is the configured one';
is $form{certId}, $GovPay::Channels::UNIONPAY_CERT_ID, 'certId is the configured one';
is $form{orderId}, $code, 'orderId is the payment code';
is $form{txnAmt}, '125000', 'txnAmt is in fen';
is $form{signMethod}, '01', 'signMethod 01';
is $form{backUrl}, $t->public_url . '/notify/unionpay', "backUrl is the edge's callback";
is $form{frontUrl}, $t->public_url . "/q/$code", 'frontUrl is the notice page';
like $form{txnTime} // '', qr/^\d{14}$/, 'txnTime is yyyyMMddHHmmss';
like $form{payTimeout} // '', qr/^\d{14}$/, 'payTimeout is yyyyMMddHHmmss';

my %signed = %form;
my $sig = delete $signed{signature};
ok GovPay::Channels::rsa_verify($c->pub('unionpay_sign'),
                                sha256_hex(GovPay::Channels::canonical(\%signed)), $sig),
    'the form verifies: SHA256withRSA over the SHA-256 hex of the sorted fields';

# signed once per notice: a second hand-off reuses the kept signature
sub form_of {
    my ($html) = @_;
    my %f;
    while ($html =~ /<input type="hidden" name="([^"]+)" value="([^"]*)">/g) {
        $f{$1} = decode_entities($2);
    }
    return \%f;
}

my ($nkey) = $t->stored_notice($n->{request_id});
is $t->redis->hget($nkey, 'unionpay_form'), "$form{txnTime} $form{signature}",
    'the signed form is kept on the notice (txnTime and signature)';
my $again = form_of($t->get("/q/$code", headers => { 'User-Agent' => $CLOUDPAY_UA })->text);
is $again->{txnTime}, $form{txnTime}, 'a second hand-off sends the same txnTime';
is $again->{signature}, $form{signature}, 'and the same signature, not signed again';

# a kept signature that no longer verifies (a new key, a tampered field) is
# replaced by a fresh one
$t->redis->hset($nkey, 'unionpay_form', '20200101000000 ' . ('A' x 344));
my $fresh = form_of($t->get("/q/$code", headers => { 'User-Agent' => $CLOUDPAY_UA })->text);
my %fs = %$fresh;
my $fsig = delete $fs{signature};
ok GovPay::Channels::rsa_verify($c->pub('unionpay_sign'),
                                sha256_hex(GovPay::Channels::canonical(\%fs)), $fsig),
    'a kept signature that does not verify is replaced by a fresh, valid one';
isnt $fresh->{txnTime}, '20200101000000', 'with a fresh txnTime';
is $t->redis->hget($nkey, 'unionpay_form'), "$fresh->{txnTime} $fresh->{signature}",
    'and the fresh form replaces the unusable one on the notice';

$res = $t->get("/pay/unionpay/$code");
is $res->status, 200, 'the cashier button /pay/unionpay/{code} answers the form';
$res = $t->get("/q/$code", headers => { 'User-Agent' => 'Mozilla/5.0 UnionPay/1.0' });
like $res->text, qr{frontTransReq}, 'the UnionPay/ user agent is routed too';
$res = $t->get("/q/$code");
like $res->text, qr{/pay/unionpay/$code}, 'the cashier offers UnionPay';
unlike $res->text, qr{/pay/alipay/}, 'and not Alipay, which is not configured';
$res = $t->get("/q/$code", headers => { 'User-Agent' => 'Mozilla/5.0 AlipayClient/10.5' });
is $res->status, 200, 'Alipay, not configured, gets the cashier page';
like $res->text, qr{/pay/unionpay/$code}, 'which offers what is configured';
$res = $t->get("/pay/alipay/$code");
is $res->status, 404, 'a channel that is not configured is not offered';

###############################################################################
# a valid notification settles once

my $f = $c->unionpay_fields($n);
$res = $c->unionpay_notify($f);
is $res->status, 200, 'valid unionpay callback answers 200' or diag $res->describe;
is $res->body, 'ok', 'valid unionpay callback answers ok';
my $g = notice_of($code);
is $g->{status}, 'PAID', 'the notice is PAID';
is $g->{payment}{channel}, 'unionpay', 'paid through unionpay';
is $g->{payment}{channel_trade_no}, $f->{queryId}, 'the trade number is queryId';
is $g->{payment}{amount}, 125000, 'txnAmt is fen';
is scalar(settled()), 1, 'exactly one settled event';

my $snap = $t->redis_snapshot;
$res = $c->unionpay_notify($f);
is $res->body, 'ok', 'a replayed notification answers ok';
is(GovPay::Test->snapshot_diff($snap, $t->redis_snapshot), '',
   'a replayed notification changes nothing');
is scalar(settled()), 1, 'a duplicate after settlement adds no event';

###############################################################################
# refusals change nothing

sub refused {
    my ($name, $status, $fields, %o) = @_;
    my $before = $t->redis_snapshot;
    my $res = $c->unionpay_notify($fields, %o);
    is $res->status, $status, "$name answers $status" or diag $res->describe;
    is(GovPay::Test->snapshot_diff($before, $t->redis_snapshot), '',
       "$name changes nothing in Redis");
}

my $n2 = $t->new_notice(amount => 5000);
my $f2 = $c->unionpay_fields($n2, queryId => '772611240959508612049');
refused('unionpay callback with a forged signature', 400, $f2,
        key => Crypt::OpenSSL::RSA->generate_key(2048));
refused('unionpay callback without signature', 400, { %$f2, signature => '' });
refused('unionpay callback with tampered txnAmt', 400, { %$f2, txnAmt => 1 },
        sign_fields => $f2);
refused('unionpay callback with tampered reqReserved', 400,
        { %$f2, reqReserved => 'x' }, sign_fields => $f2);
refused('unionpay callback for another merId', 400,
        { %$f2, merId => '777290058110099' });
refused('unionpay callback for an unknown order', 404,
        $c->unionpay_fields({ payment_code => random_code(), amount => 5000 }));
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'refused callbacks leave the notice UNPAID';

$res = $c->unionpay_notify({ %$f2, respCode => '03', respMsg => '交易通讯超时' });
is $res->body, 'ok', 'respCode 03 is acknowledged with ok';
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'respCode 03 does not settle';

# anomaly once; then the right amount settles
$res = $c->unionpay_notify({ %$f2, txnAmt => 4999, queryId => '772611240959508612050' });
is $res->body, 'ok', 'a wrong txnAmt answers ok';
my @an = anomalies_of('772611240959508612050');
is scalar @an, 1, 'a wrong txnAmt is recorded on the anomaly stream';
is $an[0] && $an[0]{fields}{reason}, 'AMOUNT_MISMATCH', 'reason AMOUNT_MISMATCH';
$res = $c->unionpay_notify({ %$f2, txnAmt => 4999, queryId => '772611240959508612050' });
is scalar(anomalies_of('772611240959508612050')), 1, 'its replay is recorded once only';

$res = $c->unionpay_notify($f2);
is $res->body, 'ok', 'the right txnAmt answers ok';
is notice_of($n2->{payment_code})->{status}, 'PAID', 'and settles';

$res = $c->unionpay_notify({ %$f2, queryId => '772611240959508612051' });
is $res->body, 'ok', 'a second payment under another queryId answers ok';
@an = anomalies_of('772611240959508612051');
is $an[0] && $an[0]{fields}{reason}, 'SECOND_PAYMENT', 'recorded as SECOND_PAYMENT';

###############################################################################
# Redis down: 503, UnionPay retries

my $n3 = $t->new_notice(amount => 300);
my $f3 = $c->unionpay_fields($n3, queryId => '772611240959508612052');
$t->stop_redis;
$res = $c->unionpay_notify($f3, timeout => 10);
is $res->status, 503, 'unionpay callback while Redis is down answers 503';
ok $res->elapsed < 3, 'and answers within 3 s';
$t->start_redis;
ok wait_for(sub { $c->unionpay_notify($f3)->body eq 'ok' }, 10, 'the retry to succeed'),
    'the retry succeeds once Redis is back';
is notice_of($n3->{payment_code})->{status}, 'PAID', 'and settles the notice';

$t->check_error_log;

done_testing;
