#!/usr/bin/perl

# The Alipay channel (API.md, "Channel callbacks"; docs/channels.md): the
# signed hand-off to alipay.trade.wap.pay (made once per notice), and the
# asynchronous notification: verified first (RSA2 with the Alipay public
# key, over the form-decoded values in their charset), app_id checked,
# total_amount parsed exactly, only TRADE_SUCCESS / TRADE_FINISHED settle.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(decode_utf8 encode_utf8);
use Test::More;
use URI;
use GovPay::Test;
use GovPay::Channels;

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { $c->directives('alipay') });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/alipay { gov_pay_notify alipay; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

sub notice_of {
    my ($code) = @_;
    my $g = $t->get_notice($code);
    return $g->status == 200 ? $g->json : { http => $g->describe };
}

sub settled { $t->stream_entries('settled') }
sub anomalies { $t->stream_entries('anomaly') }

sub anomalies_of {
    my ($trade_no) = @_;
    return grep { ($_->{fields}{channel_trade_no} // '') eq $trade_no } anomalies();
}

my $ALIPAY_UA = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) '
    . 'AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 AlipayClient/10.5.36.6000';

###############################################################################
# hand-off: a 302 to the gateway, signed with the app key, made once

my $n = $t->new_notice(amount => 125000);
my $code = $n->{payment_code};

my $res = $t->get("/q/$code", headers => { 'User-Agent' => $ALIPAY_UA });
is $res->status, 302, 'the QR scanned in Alipay redirects' or diag $res->describe;
my $loc = $res->header('Location') // '';
like $loc, qr{^https://openapi\.alipay\.com/gateway\.do\?},
    'the redirect goes to the configured gateway only';

my %q = URI->new($loc)->query_form;
$_ = decode_utf8($_) for values %q;
is $q{app_id}, $GovPay::Channels::ALIPAY_APP_ID, 'app_id is the configured one';
is $q{method}, 'alipay.trade.wap.pay', 'method is alipay.trade.wap.pay';
is $q{format}, 'JSON', 'format is JSON';
is $q{charset}, 'utf-8', 'charset is utf-8';
is $q{sign_type}, 'RSA2', 'sign_type is RSA2';
is $q{version}, '1.0', 'version is 1.0';
like $q{timestamp} // '', qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/,
    'timestamp is yyyy-MM-dd HH:mm:ss';
is $q{notify_url}, $t->public_url . '/notify/alipay', "notify_url is the edge's callback";
is $q{return_url}, $t->public_url . "/q/$code", 'return_url is the notice page';

my $biz = json_decode(encode_utf8($q{biz_content} // '')) // {};
is $biz->{out_trade_no}, $code, 'biz_content.out_trade_no is the payment code';
is $biz->{total_amount}, '1250.00', 'biz_content.total_amount is yuan with two decimals';
is $biz->{subject}, '学费', 'biz_content.subject is the item name';
is $biz->{product_code}, 'QUICK_WAP_WAY', 'biz_content.product_code is QUICK_WAP_WAY';
is $biz->{quit_url}, $t->public_url . "/q/$code", 'biz_content.quit_url is the notice page';
like $biz->{time_expire} // '', qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/,
    'biz_content.time_expire is the due time';

my %signed = %q;
my $sign = delete $signed{sign};
my $canon = GovPay::Channels::canonical(
    { map { $_ => encode_utf8($signed{$_}) } keys %signed });
ok GovPay::Channels::rsa_verify($c->pub('alipay_app'), $canon, $sign),
    'the redirect verifies with the app public key';
ok !GovPay::Channels::rsa_verify($c->pub('alipay_platform'), $canon, $sign),
    'and not with another key';

my $cached;
for my $k ($t->redis_keys('{gp*}:n:*')) {
    my $v = $t->redis->hget($k, 'alipay_url');
    $cached = $v if $v && $v =~ /\Q$code\E/;
}
is $cached, $loc, 'the signed URL is kept on the notice';

$res = $t->get("/q/$code", headers => { 'User-Agent' => $ALIPAY_UA });
is $res->header('Location'), $loc, 'a second scan gets the same URL (signed once)';

$res = $t->get("/pay/alipay/$code");
is $res->status, 302, 'the cashier button /pay/alipay/{code} redirects too';
is $res->header('Location'), $loc, 'to the same URL';

$res = $t->get("/q/$code");
like $res->text, qr{/pay/alipay/$code}, 'the cashier offers Alipay';

###############################################################################
# a valid notification settles the notice once

my $f = $c->alipay_fields($n);
$res = $c->alipay_notify($f);
is $res->status, 200, 'valid alipay callback answers 200' or diag $res->describe;
is $res->body, 'success', 'valid alipay callback answers success';

my $g = notice_of($code);
is $g->{status}, 'PAID', 'the notice is PAID';
is $g->{payment}{channel}, 'alipay', 'paid through alipay';
is $g->{payment}{channel_trade_no}, $f->{trade_no}, "with Alipay's trade_no";
is $g->{payment}{amount}, 125000, 'total_amount 1250.00 is 125000 fen';
is $g->{payment}{paid_at}, '2026-11-24T09:59:58+08:00',
    'paid_at is gmt_payment (Beijing time)';
is scalar(settled()), 1, 'exactly one settled event';

my $snap = $t->redis_snapshot;
$res = $c->alipay_notify($f);
is $res->body, 'success', 'a replayed notification answers success';
is scalar(settled()), 1, 'a replayed notification adds no event';
is(GovPay::Test->snapshot_diff($snap, $t->redis_snapshot), '',
   'a replayed notification changes nothing');

$res = $c->alipay_notify({ %$f, trade_status => 'TRADE_FINISHED',
                           notify_id => 'another-notify-id' });
is $res->body, 'success', 'TRADE_FINISHED after settlement answers success';
is scalar(settled()), 1, 'TRADE_FINISHED after settlement adds no event';
is scalar(anomalies()), 0, 'and no anomaly';

$res = $t->get("/q/$code", headers => { 'User-Agent' => $ALIPAY_UA });
is $res->status, 200, 'a paid notice scanned in Alipay shows its page, no redirect';

###############################################################################
# refused notifications change nothing

sub refused {
    my ($name, $fields, %o) = @_;
    my $before = $t->redis_snapshot;
    my $res = $c->alipay_notify($fields, %o);
    is $res->status, 200, "$name answers 200" or diag $res->describe;
    is $res->body, 'fail', "$name answers fail";
    is(GovPay::Test->snapshot_diff($before, $t->redis_snapshot), '',
       "$name changes nothing in Redis");
}

my $n2 = $t->new_notice(amount => 1230);
my $f2 = $c->alipay_fields($n2, trade_no => '2026112422001400000000000002');

refused('alipay callback with a forged signature', $f2,
        key => Crypt::OpenSSL::RSA->generate_key(2048));
refused('alipay callback with a garbage sign', { %$f2, sign => 'AAAA' });
refused('alipay callback without sign', { %$f2, sign => '' });
refused('alipay callback with tampered total_amount',
        { %$f2, total_amount => '0.01' }, sign_fields => $f2);
refused('alipay callback with tampered subject (a field the edge does not keep)',
        { %$f2, subject => '别的' }, sign_fields => $f2);
refused('alipay callback for an unknown order',
        $c->alipay_fields({ payment_code => random_code(), amount => 1230 }));
refused('alipay callback for another app_id', { %$f2, app_id => '2021000000000999' });
refused('alipay callback with a malformed total_amount', { %$f2, total_amount => '12.3.0' });
refused('alipay callback with sign_type RSA', { %$f2, sign_type => 'RSA' });
refused('alipay callback as JSON', $f2, content_type => 'application/json');
is notice_of($n2->{payment_code})->{status}, 'UNPAID',
    'refused callbacks leave the notice UNPAID';

# a non-final status is acknowledged, nothing settles
$res = $c->alipay_notify({ %$f2, trade_status => 'WAIT_BUYER_PAY', gmt_payment => undef });
is $res->body, 'success', 'WAIT_BUYER_PAY is acknowledged with success';
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'WAIT_BUYER_PAY does not settle';
$res = $c->alipay_notify({ %$f2, trade_status => 'TRADE_CLOSED' });
is $res->body, 'success', 'TRADE_CLOSED is acknowledged with success';
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'TRADE_CLOSED does not settle';

# the exact yuan parse: 12.30 is 1230 fen
$res = $c->alipay_notify({ %$f2, total_amount => '12.30' });
is $res->body, 'success', 'total_amount 12.30 answers success';
$g = notice_of($n2->{payment_code});
is $g->{status}, 'PAID', 'total_amount 12.30 settles a notice of 1230 fen';
is $g->{payment}{amount}, 1230, 'the payment is 1230 fen';

###############################################################################
# GBK: the signature is over the GBK bytes; values with %, + and Chinese

my $n3 = $t->new_notice(amount => 99);
my $f3 = $c->alipay_fields($n3, charset => 'GBK', trade_no => '2026112422001400000000000003',
                           subject => '考试费 100%+补考', body => '中文 a+b=c&d %41');
$res = $c->alipay_notify($f3, charset => 'GBK',
                         content_type => 'application/x-www-form-urlencoded; charset=GBK');
is $res->body, 'success', 'a GBK-encoded notification verifies and answers success'
    or diag $res->describe;
is notice_of($n3->{payment_code})->{status}, 'PAID', 'the GBK notification settles';

my $n4 = $t->new_notice(amount => 99);
my $f4 = $c->alipay_fields($n4, charset => 'GBK', subject => '考试费');
my %sig4 = (%$f4);
$sig4{sign} = $c->alipay_sign($f4, 'UTF-8');
$res = $c->alipay_notify(\%sig4, charset => 'GBK');
is $res->body, 'fail', 'GBK bytes signed as UTF-8 do not verify';

###############################################################################
# anomalies: the money has moved, Alipay gets success, refund is recorded once

my $n5 = $t->new_notice(amount => 5000);
my $f5 = $c->alipay_fields($n5, trade_no => '2026112422001400000000000005',
                           total_amount => '49.99');
$res = $c->alipay_notify($f5);
is $res->body, 'success', 'a wrong amount answers success';
is notice_of($n5->{payment_code})->{status}, 'UNPAID', 'a wrong amount does not settle';
my @an = anomalies_of($f5->{trade_no});
is scalar @an, 1, 'a wrong amount is recorded on the anomaly stream';
is $an[0] && $an[0]{fields}{reason}, 'AMOUNT_MISMATCH', 'reason AMOUNT_MISMATCH';
is $an[0] && $an[0]{fields}{amount}, 4999, 'the anomaly records 4999 fen';
$res = $c->alipay_notify({ %$f5, notify_id => 'retry' });
is $res->body, 'success', 'the retried wrong amount answers success';
is scalar(anomalies_of($f5->{trade_no})), 1, 'the retried wrong amount is recorded once only';

# settled another way first (sandbox), then Alipay: a second payment
my $n6 = $t->new_notice(amount => 700);
is $t->sandbox_pay($n6)->body, 'success', 'a notice paid through the sandbox';
my $before = scalar settled();
$res = $c->alipay_notify($c->alipay_fields($n6, trade_no => '2026112422001400000000000006'));
is $res->body, 'success', 'Alipay paying a notice settled another way answers success';
is notice_of($n6->{payment_code})->{payment}{channel}, 'sandbox',
    'the notice keeps its first payment';
is scalar(settled()), $before, 'no second settled event';
@an = anomalies_of('2026112422001400000000000006');
is $an[0] && $an[0]{fields}{reason}, 'SECOND_PAYMENT', 'recorded as SECOND_PAYMENT';

# a cancelled notice
my $n7 = $t->new_notice(amount => 800);
is $t->signed_request(POST => "/v1/notices/$n7->{payment_code}/cancel", '')->status, 200,
    'a notice is cancelled';
$res = $c->alipay_notify($c->alipay_fields($n7, trade_no => '2026112422001400000000000007'));
is $res->body, 'success', 'Alipay paying a cancelled notice answers success';
@an = anomalies_of('2026112422001400000000000007');
is $an[0] && $an[0]{fields}{reason}, 'NOT_PAYABLE', 'recorded as NOT_PAYABLE';

###############################################################################
# Redis down: fail, so that Alipay retries; nothing lost

my $n8 = $t->new_notice(amount => 300);
my $f8 = $c->alipay_fields($n8, trade_no => '2026112422001400000000000008');
$t->stop_redis;
$res = $c->alipay_notify($f8, timeout => 10);
is $res->status, 200, 'alipay callback while Redis is down answers 200';
is $res->body, 'fail', 'alipay callback while Redis is down answers fail (Alipay retries)';
ok $res->elapsed < 3, 'and answers within 3 s';
$res = $t->get("/q/$n8->{payment_code}", headers => { 'User-Agent' => $ALIPAY_UA },
               timeout => 10);
is $res->status, 503, 'the QR scanned in Alipay while Redis is down answers 503';
$t->start_redis;
ok wait_for(sub { $c->alipay_notify($f8)->body eq 'success' }, 10, 'the retry to succeed'),
    'the retry succeeds once Redis is back';
is notice_of($n8->{payment_code})->{status}, 'PAID', 'and settles the notice';

$t->check_error_log;

done_testing;
