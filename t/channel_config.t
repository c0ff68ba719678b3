#!/usr/bin/perl

# The channels' settings are checked by `nginx -t` (docs/channels.md): a
# channel is all or nothing, its keys must load, its gateway URLs must be
# plain http(s) URLs; a channel not configured is not offered.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Channels;

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
my $dir = $t->dir;

my $CONF = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/alipay { gov_pay_notify alipay; }
        location = /notify/wechat { gov_pay_notify wechat; }
        location = /notify/unionpay { gov_pay_notify unionpay; }
        location /bank/v1/ { gov_pay_bank; }
    }
EOF

my %all = $c->directives;

my ($rc, $out) = $t->nginx_t($CONF, directives => \%all);
is $rc, 0, 'every channel configured passes nginx -t' or diag $out;

($rc, $out) = $t->nginx_t($CONF);
is $rc, 0, 'no channel configured passes nginx -t too' or diag $out;

sub refused {
    my ($name, $want, %d) = @_;
    my ($rc, $out) = $t->nginx_t($CONF, directives => { %all, %d });
    isnt $rc, 0, "$name fails nginx -t";
    like $out, $want, "$name: the message names the directive" or diag $out;
    like $out, qr/\[emerg\]/, "$name is reported at emerg level";
}

refused('alipay without its public key', qr{gov_pay_alipay_public_key},
        gov_pay_alipay_public_key => undef);
refused('alipay without app_id', qr{gov_pay_alipay_app_id},
        gov_pay_alipay_app_id => undef);
refused('alipay with a missing key file', qr{gov_pay_alipay_app_key.*nonexistent\.pem}s,
        gov_pay_alipay_app_key => "$dir/nonexistent.pem");
refused('alipay with a public key where the private key belongs',
        qr{gov_pay_alipay_app_key}, gov_pay_alipay_app_key => $c->pub_file('alipay_app'));
refused('alipay gateway that is not a URL', qr{gov_pay_alipay_gateway},
        gov_pay_alipay_gateway => 'openapi.alipay.com/gateway.do');
refused('alipay gateway with a query', qr{gov_pay_alipay_gateway},
        gov_pay_alipay_gateway => '"https://openapi.alipay.com/gateway.do?x=1"');
refused('unionpay without its verify key', qr{gov_pay_unionpay_verify_key},
        gov_pay_unionpay_verify_key => undef);
refused('unionpay merId of 14 characters', qr{gov_pay_unionpay_mer_id},
        gov_pay_unionpay_mer_id => '77729005811004');
refused('unionpay certId that is not a number', qr{gov_pay_unionpay_cert_id},
        gov_pay_unionpay_cert_id => 'abc');
refused('wechat without the prepay location', qr{gov_pay_wechat_prepay_location},
        gov_pay_wechat_prepay_location => undef);
refused('wechat without a platform key', qr{gov_pay_wechat_platform_key},
        gov_pay_wechat_platform_key => undef);

$t->write_file('channel-keys/short-apiv3.key', "0123456789\n");
refused('wechat APIv3 key that is not 32 characters', qr{gov_pay_wechat_apiv3_key},
        gov_pay_wechat_apiv3_key => "$dir/channel-keys/short-apiv3.key");

($rc, $out) = $t->nginx_t(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /notify/paypal { gov_pay_notify paypal; }
    }
EOF
isnt $rc, 0, 'an unknown channel in gov_pay_notify fails nginx -t';
like $out, qr{unknown channel "paypal"}, 'and names it';

###############################################################################
# not configured: not offered, not routed, callbacks refused

$t->start_redis;
$t->start_nginx($CONF, directives => { $c->directives('alipay') });

my $n = $t->new_notice(amount => 100);
my $code = $n->{payment_code};

my $res = $t->get("/q/$code");
like $res->text, qr{/pay/alipay/$code}, 'the cashier offers the configured channel';
unlike $res->text, qr{/pay/(wechat|unionpay)/}, 'and no other';

$res = $t->get("/q/$code", headers => { 'User-Agent' => 'Mozilla/5.0 MicroMessenger/8.0' });
is $res->status, 200, 'WeChat, not configured, gets the cashier page';
$res = $t->get("/pay/wechat/$code");
is $res->status, 404, '/pay/wechat is not offered';
$res = $t->get("/pay/unionpay/$code");
is $res->status, 404, '/pay/unionpay is not offered';

$res = $t->request(POST => '/notify/unionpay', body => 'merId=1',
    headers => { 'Content-Type' => 'application/x-www-form-urlencoded' });
is $res->status, 400, 'a callback to a channel not configured is refused';
$res = $t->request(POST => '/notify/wechat', body => '{}',
    headers => { 'Content-Type' => 'application/json' });
is $res->status, 400, 'a WeChat callback when WeChat is not configured is refused';

$t->check_error_log;

done_testing;
