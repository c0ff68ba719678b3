#!/usr/bin/perl

# The WeChat Pay channel, APIv3 JSAPI (API.md, "Channel callbacks";
# docs/channels.md): the OAuth2 snsapi_base hop, the prepay request through
# nginx subrequests to internal locations that proxy_pass to a stand-in
# WeChat Pay (it checks the merchant signature), the JSAPI page with
# paySign; and the payment notification: verified with the platform key
# named by Wechatpay-Serial, stale timestamps refused, resource decrypted
# with AES-256-GCM, only trade_state SUCCESS settles.

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
my $dport = $c->start_wechat_daemon;

my %d = $c->directives('wechat');
# a second platform key: serials rotate
$d{gov_pay_wechat_platform_key} .= ";\n    gov_pay_wechat_platform_key PUB_KEY_ID_ROTATED "
    . $c->pub_file('wechat_platform2');

$t->start_redis;
$t->start_nginx(<<"EOF", directives => \%d);
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/wechat { gov_pay_notify wechat; }

        location = /_wechat_oauth {
            internal;
            proxy_pass_request_headers off;
            proxy_pass_request_body off;
            proxy_pass http://127.0.0.1:$dport/sns/oauth2/access_token;
        }

        location = /_wechat_prepay {
            internal;
            proxy_method POST;
            proxy_pass_request_headers off;
            proxy_pass_request_body off;
            proxy_set_header Content-Type application/json;
            proxy_set_header Accept application/json;
            proxy_set_header Authorization \$gov_pay_wechat_authorization;
            proxy_set_body \$gov_pay_wechat_body;
            proxy_pass http://127.0.0.1:$dport/v3/pay/transactions/jsapi;
        }
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

my $WECHAT_UA = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) '
    . 'AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c)';

###############################################################################
# hand-off, step 1: the OAuth2 snsapi_base hop

my $n = $t->new_notice(amount => 125000);
my $code = $n->{payment_code};

my $res = $t->get("/q/$code", headers => { 'User-Agent' => $WECHAT_UA });
is $res->status, 302, 'the QR scanned in WeChat redirects' or diag $res->describe;
my $loc = $res->header('Location') // '';
like $loc, qr{^https://open\.weixin\.qq\.com/connect/oauth2/authorize\?},
    'to the configured OAuth2 authorize page';
like $loc, qr{#wechat_redirect$}, 'ending in #wechat_redirect';
my %q = URI->new($loc =~ s/#.*//r)->query_form;
is $q{appid}, $GovPay::Channels::WECHAT_APPID, 'with our appid';
is $q{scope}, 'snsapi_base', 'scope snsapi_base';
is $q{response_type}, 'code', 'response_type code';
is $q{redirect_uri}, $t->public_url . "/pay/wechat/$code",
    'back to /pay/wechat/{code}';

###############################################################################
# steps 2 and 3: openid, prepay, the JSAPI page

$res = $t->get("/pay/wechat/$code?code=CODE0001&state=gp",
               headers => { 'User-Agent' => $WECHAT_UA });
is $res->status, 200, 'back from OAuth the payer gets the JSAPI page' or diag $res->describe;
my $html = $res->text;
my ($params) = $html =~ /var gp=(\{[^}]*\});/;
my $p = json_decode(encode_utf8($params // '')) // {};
is $p->{appId}, $GovPay::Channels::WECHAT_APPID, 'the page calls WeChat Pay with our appId';
is $p->{package}, 'prepay_id=wx24100000000000000000000000000001',
    'with the prepay_id WeChat Pay answered';
is $p->{signType}, 'RSA', 'signType RSA';
ok GovPay::Channels::rsa_verify($c->pub('wechat_merchant'),
       "$p->{appId}\n$p->{timeStamp}\n$p->{nonceStr}\n$p->{package}\n", $p->{paySign}),
    'paySign verifies with the merchant public key';
like $html, qr/getBrandWCPayRequest/, 'the page invokes getBrandWCPayRequest';
like $res->header('Content-Security-Policy') // '', qr/script-src 'sha256-/,
    'the page runs only its own script';

my @reqs = $c->daemon_requests;
my ($oauth) = grep { $_->{path} eq '/sns/oauth2/access_token' } @reqs;
ok $oauth, 'the edge asked for the openid';
like $oauth->{query} // '', qr/(^|&)code=CODE0001(&|$)/, 'with the OAuth code';
like $oauth->{query} // '', qr/grant_type=authorization_code/, 'grant_type authorization_code';

my ($prepay) = grep { $_->{path} eq '/v3/pay/transactions/jsapi' } @reqs;
ok $prepay, 'the edge asked WeChat Pay for a prepay id';
is $prepay->{method}, 'POST', 'with POST';
ok $prepay->{signature_ok}, 'the prepay request carries a valid merchant signature';
my $order = json_decode($prepay->{body} // '') // {};
is $order->{appid}, $GovPay::Channels::WECHAT_APPID, 'order appid';
is $order->{mchid}, $GovPay::Channels::WECHAT_MCHID, 'order mchid';
is $order->{out_trade_no}, $code, 'order out_trade_no is the payment code';
is_deeply $order->{amount}, { total => 125000, currency => 'CNY' }, 'order amount in fen';
is_deeply $order->{payer}, { openid => 'o-payer-0001' }, 'order payer openid';
is $order->{notify_url}, $t->public_url . '/notify/wechat', 'order notify_url';
is $order->{description}, '学费', 'order description is the item name';
like $order->{time_expire} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/,
    'order time_expire is the due time';

$res = $t->get("/pay/wechat/$code?code=BAD&state=gp");
is $res->status, 502, 'a refused OAuth code gives a clear 502 page';
like $res->text, qr/微信支付暂不可用/, 'which says WeChat Pay is unavailable';

$res = $t->get("/pay/wechat/$code?code=BADSIG&state=gp");
is $res->status, 502, 'a prepay answer that does not verify is not believed';

$res = $t->get("/q/$code");
like $res->text, qr{/pay/wechat/$code}, 'the cashier offers WeChat Pay';

###############################################################################
# the notification

my $tx = $c->wechat_transaction($n);
my $body = $c->wechat_body($tx);
$res = $c->wechat_notify($body);
is $res->status, 204, 'valid wechat callback answers 204' or diag $res->describe;
my $g = notice_of($code);
is $g->{status}, 'PAID', 'the notice is PAID';
is $g->{payment}{channel}, 'wechat', 'paid through wechat';
is $g->{payment}{channel_trade_no}, $tx->{transaction_id}, 'trade number is transaction_id';
is $g->{payment}{amount}, 125000, 'amount.total is fen';
is $g->{payment}{paid_at}, '2026-11-24T09:59:58+08:00', 'paid_at is success_time';
is scalar(settled()), 1, 'one settled event';

my $snap = $t->redis_snapshot;
$res = $c->wechat_notify($body);
is $res->status, 204, 'a replayed notification answers 204';
is(GovPay::Test->snapshot_diff($snap, $t->redis_snapshot), '',
   'a replayed notification changes nothing');
$res = $c->wechat_notify($c->wechat_body($tx));
is $res->status, 204, 'a duplicate (new envelope) after settlement answers 204';
is scalar(settled()), 1, 'and adds no event';

$res = $t->get("/q/$code", headers => { 'User-Agent' => $WECHAT_UA });
is $res->status, 200, 'a paid notice scanned in WeChat shows its page';

sub refused {
    my ($name, $status, $body, %o) = @_;
    my $before = $t->redis_snapshot;
    my $res = $c->wechat_notify($body, %o);
    is $res->status, $status, "$name answers $status" or diag $res->describe;
    is ((json_decode($res->body) // {})->{code}, 'FAIL', "$name answers code FAIL");
    is(GovPay::Test->snapshot_diff($before, $t->redis_snapshot), '',
       "$name changes nothing in Redis");
}

my $n2 = $t->new_notice(amount => 5000);
my $tx2 = $c->wechat_transaction($n2, transaction_id => '4200000000202611240000000002');
my $b2 = $c->wechat_body($tx2);

refused('wechat callback with a forged signature', 400, $b2,
        key => $c->priv('alipay_platform'));
refused('wechat callback from an unknown serial', 400, $b2, serial => 'PUB_KEY_ID_UNKNOWN');
refused('wechat callback with a stale timestamp', 400, $b2, ts => int(time) - 600);
refused('wechat callback from the future', 400, $b2, ts => int(time) + 600);
my $b2t = $b2 =~ s/"summary":"[^"]*"/"summary":"x"/r;
refused('wechat callback whose body was changed after signing', 400, $b2t, sign_body => $b2);
refused('wechat callback with a tampered amount (re-encrypted, old signature)', 400,
        $c->wechat_body({ %$tx2, amount => { total => 1, currency => 'CNY' } }),
        sign_body => $b2);
refused('wechat callback whose ciphertext does not authenticate', 400,
        $c->wechat_body($tx2, tamper => sub { my $x = shift; substr($x, 0, 1) ^= "\x01"; $x }));
refused('wechat callback encrypted with another APIv3 key', 400,
        $c->wechat_body($tx2, apiv3_key => 'x' x 32));
refused('wechat callback for another mchid', 400,
        $c->wechat_body({ %$tx2, mchid => '1900000999' }));
refused('wechat callback for another appid', 400,
        $c->wechat_body({ %$tx2, appid => 'wx0000000000000000' }));
refused('wechat callback for an unknown order', 404,
        $c->wechat_body($c->wechat_transaction({ payment_code => random_code(),
                                                  amount => 5000 })));
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'refused callbacks leave it UNPAID';

$res = $c->wechat_notify($c->wechat_body({ %$tx2, trade_state => 'NOTPAY' }));
is $res->status, 204, 'trade_state NOTPAY is acknowledged';
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'NOTPAY does not settle';

$res = $c->wechat_notify($c->wechat_body($tx2), key => $c->priv('wechat_platform2'),
                         serial => 'PUB_KEY_ID_ROTATED');
is $res->status, 204, 'a callback signed with the second platform key (its serial) settles';
is notice_of($n2->{payment_code})->{status}, 'PAID', 'the notice is PAID';

# anomalies
my $n3 = $t->new_notice(amount => 700);
my $tx3 = $c->wechat_transaction($n3, transaction_id => '4200000000202611240000000003',
                                 amount => 699);
$res = $c->wechat_notify($c->wechat_body($tx3));
is $res->status, 204, 'a wrong amount.total answers 204';
my @an = anomalies_of('4200000000202611240000000003');
is $an[0] && $an[0]{fields}{reason}, 'AMOUNT_MISMATCH', 'recorded as AMOUNT_MISMATCH';
$res = $c->wechat_notify($c->wechat_body({ %$tx2,
    transaction_id => '4200000000202611240000000004' }));
is $res->status, 204, 'a second payment under another transaction_id answers 204';
@an = anomalies_of('4200000000202611240000000004');
is $an[0] && $an[0]{fields}{reason}, 'SECOND_PAYMENT', 'recorded as SECOND_PAYMENT';

###############################################################################
# Redis down

my $n4 = $t->new_notice(amount => 300);
my $b4 = $c->wechat_body($c->wechat_transaction($n4,
    transaction_id => '4200000000202611240000000005'));
$t->stop_redis;
$res = $c->wechat_notify($b4, timeout => 10);
is $res->status, 503, 'wechat callback while Redis is down answers 503';
is((json_decode($res->body) // {})->{code}, 'FAIL', 'with code FAIL');
ok $res->elapsed < 3, 'and answers within 3 s';
$t->start_redis;
ok wait_for(sub { $c->wechat_notify($b4)->status == 204 }, 10, 'the retry to succeed'),
    'the retry succeeds once Redis is back';
is notice_of($n4->{payment_code})->{status}, 'PAID', 'and settles the notice';

$t->check_error_log;

done_testing;
