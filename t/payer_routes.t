#!/usr/bin/perl

# The payer routes for every payer (API.md, "Payer routes"; issue 5): the
# unified QR routed by real User-Agent strings, the paid / closed / 404
# pages, security headers, escaping of hostile names, the page size budget,
# the large-text mode, the return_url of the PC flow, QR images that decode
# back to the pay URL, the open per-item code (一费一码), and nginx's own
# errors (limit_req's 429) as pages of the same look.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(encode_utf8);
use Test::More;
use GovPay::Test;

my $HOSTILE_ITEM = '<script>alert(1)</script>考试费';
my $HOSTILE_UNIT = '测试单位一 <b>"&\'';

my $t = GovPay::Test->new;

# a registry with hostile names (ops' data is escaped too) and return hosts
my $reg = $t->default_registry;
$reg->{units}[0]{name} = $HOSTILE_UNIT;
$reg->{units}[0]{items} = ['103001', '103002', '103003'];
$reg->{units}[0]{return_hosts} = ['pay.school.example', 'http://intranet.school.example:8080'];
$_->{name} = $HOSTILE_ITEM for grep { $_->{code} eq '103003' } @{ $reg->{items} };
$t->write_registry($reg);
$t->write_file('keys/lookup.key', random_string(40) . "\n");

$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_lookup_key => $t->dir . '/keys/lookup.key' });
    gov_pay_agent_route ZJZWFW sandbox;
    gov_pay_agent_route "~(ICBCAndroid|ICBCiPhone|CCBAndroid|CCBIOS)" sandbox;
    gov_pay_agent_route "~*force-the-cashier" cashier;
    gov_pay_agent_route force-the-cashier sandbox;

    # only requests that carry X-Test-Limit are counted (an empty key is not)
    limit_req_zone $http_x_test_limit zone=gp_open:1m rate=1r/m;

    server {
        listen 127.0.0.1:%%PORT%%;
        error_page 429 500 502 503 504 /_gp/error;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location /o/ {
            limit_req zone=gp_open nodelay;
            limit_req_status 429;
            gov_pay_payer;
        }
        location = /_gp/error { internal; gov_pay_error_page; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location /sandbox/ { gov_pay_sandbox_gateway; }
    }
EOF

my %UA = (
    alipay    => 'Mozilla/5.0 (Linux; U; Android 12; zh-CN; M2012K11AC Build/SKQ1.211006.001) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/89.0.4389.72 '
               . 'UWS/3.22.2.46 Mobile Safari/537.36 UCBS/3.22.2.46_220808184406 ChannelId(1) '
               . 'NebulaSDK/1.8.100112 Nebula AlipayDefined(nt:WIFI,ws:393|0|2.75) '
               . 'AliApp(AP/10.2.96.7000) AlipayClient/10.2.96.7000 Language/zh-Hans',
    wechat    => 'Mozilla/5.0 (Linux; Android 12; M2012K11AC Build/SKQ1.211006.001; wv) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/107.0.5304.141 '
               . 'Mobile Safari/537.36 XWEB/5023 MMWEBSDK/20221206 MMWEBID/2585 '
               . 'MicroMessenger/8.0.32.2300(0x2800205D) WeChat/arm64 Weixin NetType/WIFI '
               . 'Language/zh_CN ABI/arm64',
    wechat_ios => 'Mozilla/5.0 (iPhone; CPU iPhone OS 16_1 like Mac OS X) AppleWebKit/605.1.15 '
               . '(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.31(0x18001f2f) '
               . 'NetType/WIFI Language/zh_CN',
    unionpay  => 'Mozilla/5.0 (Linux; Android 11; V2055A Build/RP1A.200720.012; wv) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/87.0.4280.141 '
               . 'Mobile Safari/537.36 (com.unionpay.mobilepay) (cordova 7.0.0) (updebug 0) '
               . '(version 929) (UnionPay/1.0 CloudPay) (clientVersion 189) (language zh_CN)',
    qq        => 'Mozilla/5.0 (Linux; Android 12; PGBM10 Build/SP1A.210812.016; wv) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/98.0.4758.102 '
               . 'MQQBrowser/6.2 TBS/046291 Mobile Safari/537.36 V1_AND_SQ_8.9.28_3700_YYB_D '
               . 'QQ/8.9.28.10155 NetType/WIFI WebP/0.3.0 AppId/537150355',
    dingtalk  => 'Mozilla/5.0 (Linux; U; Android 12; zh-CN; V2148A Build/SP1A.210812.003) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 '
               . 'UWS/3.22.1.233 Mobile Safari/537.36 AliApp(DingTalk/7.0.10) '
               . 'com.alibaba.android.rimet/28224232 Channel/700159 language/zh-CN',
    baidu     => 'Mozilla/5.0 (Linux; Android 10; HMA-AL00 Build/HUAWEIHMA-AL00; wv) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/76.0.3809.89 '
               . 'Mobile Safari/537.36 T7/13.10 SP-engine/2.28.0 baiduboxapp/13.10.0.10 (Baidu; P1 10)',
    chrome    => 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 '
               . '(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36',
    firefox   => 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0',
    safari    => 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 '
               . '(KHTML, like Gecko) Version/17.1 Safari/605.1.15',
    gov_app   => 'Mozilla/5.0 (Linux; Android 12; SM-G9910 Build/SP1A.210812.016; wv) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/99.0.4844.88 '
               . 'Mobile Safari/537.36 dtdreamweb zwfw ZJZWFW/7.10.0',
    icbc      => 'Mozilla/5.0 (Linux; Android 11; M2011K2C Build/RKQ1.200928.002; wv) '
               . 'AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/83.0.4103.106 '
               . 'Mobile Safari/537.36 ICBCAndroidBSNew/8.1.0.6.0',
    ccb       => 'Mozilla/5.0 (iPhone; CPU iPhone OS 15_4 like Mac OS X) AppleWebKit/605.1.15 '
               . '(KHTML, like Gecko) Mobile/15E148 CCBIOS/6.3.1',
);

my $BROWSER = $UA{chrome};

sub page {
    my ($path, %o) = @_;
    my %h = ('User-Agent' => $o{ua} // $BROWSER, %{ $o{headers} // {} });
    delete $h{'User-Agent'} if exists $o{ua} && !defined $o{ua};
    return $t->get($path, headers => \%h);
}

sub is_our_page {
    my ($res, $name) = @_;
    like $res->text, qr/长辈模式/, "$name is one of our pages (not an nginx default page)";
    is $res->content_type, 'text/html', "$name is HTML";
}

my $id_no = valid_id_no('33010619491231002');
my %payer = (type => 'person', name => '张秀英', id_no => $id_no);

my $n = $t->new_notice(amount => 125000, item_code => '103001', payer => \%payer);
my $code = $n->{payment_code};

###############################################################################
# unified QR: routing by User-Agent

for my $app (qw(alipay wechat wechat_ios unionpay)) {
    my $res = page("/q/$code", ua => $UA{$app});
    is $res->status, 200, "$app User-Agent gets the cashier while its channel is not configured"
        or diag $res->describe;
    like $res->text, qr{href="/pay/sandbox/$code"}, "$app: the cashier lists the enabled channel";
}

for my $app (qw(qq dingtalk baidu chrome firefox safari)) {
    my $res = page("/q/$code", ua => $UA{$app});
    is $res->status, 200, "$app User-Agent gets the cashier page" or diag $res->describe;
    like $res->text, qr/选择支付方式/, "$app: the page is the cashier";
}

my $res = page("/q/$code", ua => undef);
is $res->status, 200, 'a request without User-Agent gets the cashier page';

for my $app (qw(gov_app icbc ccb)) {
    my $res = page("/q/$code", ua => $UA{$app});
    is $res->status, 302, "$app User-Agent is routed by the gov_pay_agent_route table"
        or diag $res->describe;
    like $res->header('Location') // '', qr{/sandbox/pay/$code$}, "$app goes to its channel";
}

$res = page("/q/$code", ua => "$UA{chrome} Force-The-Cashier");
is $res->status, 200, 'a route to "cashier" wins over a later route of the same agent';

###############################################################################
# the cashier page

$res = page("/q/$code");
my $html = $res->text;
is_our_page($res, 'the cashier page');
like $html, qr/1250\.00/, 'the amount is shown in yuan';
like $html, qr/学费/, 'the item name is shown';
like $html, qr/张\*\*/, 'the payer name is masked (张**)';
unlike $html, qr/秀英/, 'the full payer name is never shown';
like $html, qr/3301\*{10}\Q@{[substr($id_no, 14)]}\E/, 'the ID number is masked (3301**********1234)';
unlike $html, qr/\Q$id_no\E/, 'the full ID number is never shown';
like $html, qr{<span aria-hidden="true">张\*\*</span><span class="sr">张（其余字已隐去）</span>},
    'a screen reader hears the masked name as words, not as asterisks';
my ($head, $tail) = (substr($id_no, 0, 4), substr($id_no, 14));
my $spoken = '前 4 位 ' . join(' ', split //, $head) . '，后 4 位 ' . join(' ', split //, $tail)
    . '，中间已隐去';
like $html, qr{<span class="sr">\Q$spoken\E</span>}, 'a screen reader hears the masked ID number as its digits';
my $grouped = join ' ', unpack '(A4)*', $code;
like $html, qr{<dd class="code">\Q$grouped\E</dd>}, 'the payment code is shown in groups of four';
like $html, qr/缴费截止/, 'the due date is shown';
like $html, qr/\d{4}-\d\d-\d\d \d\d:\d\d/, 'the due date reads as a date and time';
like $html, qr/<html lang="zh-CN"/, 'the page says it is Chinese';
like $html, qr/<meta name="viewport" content="width=device-width,initial-scale=1">/,
    'the page is mobile first and lets the payer zoom';
unlike $html, qr/(?:src|href)="(?:https?:)?\/\//i, 'the page loads nothing from another host';
unlike $html, qr/<script\b/i, 'the page has no script';
unlike $html, qr/<link\b/i, 'the page has no outside style sheet';
unlike $html, qr/font-size:\s*\d+(?:\.\d+)?px/, 'no font size is fixed in px: text scales with the phone';
cmp_ok length($res->body), '<', 15 * 1024, 'the cashier page is under 15 KiB ('
    . length($res->body) . ' bytes)';

for my $h (qw(Content-Security-Policy X-Content-Type-Options Referrer-Policy)) {
    ok defined $res->header($h), "the cashier page sends $h";
}
like $res->header('Content-Security-Policy') // '', qr/default-src 'none'/,
    'the CSP allows nothing by default';

###############################################################################
# large-text mode (长辈模式)

$res = page("/q/$code?big=1");
like $res->text, qr/<html lang="zh-CN" class="big"/, '?big=1 turns the large-text mode on';
like $res->header('Set-Cookie') // '', qr/gp_big=1/, 'the large-text mode is remembered in a cookie';
like $res->text, qr{href="/q/$code\?big=0"}, 'the page links back to the standard mode';
$res = page("/q/$code", headers => { Cookie => 'a=b; gp_big=1' });
like $res->text, qr/class="big"/, 'the cookie keeps the large-text mode on the next page';
like page("/q/$code")->text, qr{<a class="mode" href="/q/$code\?big=1">长辈模式},
    'the standard page links to the large-text mode';

###############################################################################
# HTML escaping of hostile names

my $hostile = $t->new_notice(amount => 5000, item_code => '103003',
    payer => { type => 'person', name => '<script>alert(1)</script>', id_no => valid_id_no() });
$res = page("/q/$hostile->{payment_code}");
$html = $res->text;
is $res->status, 200, 'a notice with hostile names has its cashier page';
unlike $html, qr/<script/i, 'no hostile name reaches the page as markup';
like $html, qr/&lt;\*+/, 'the masked payer name <*** is shown as text';
like $html, qr/\Q&lt;script&gt;alert(1)&lt;\/script&gt;考试费\E/, 'the hostile item name is shown as text';
like $html, qr/\Q测试单位一 &lt;b&gt;&quot;&amp;&#39;\E/, 'the hostile unit name is shown as text';

###############################################################################
# return_url (PC flow): only to one of the unit's hosts, only as a link

my $good = 'https://pay.school.example/done?order=1&x=2';
my $esc = sub { my $s = shift; $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge; $s };
$res = page("/q/$code?return_url=" . $esc->($good));
$html = $res->text;
like $html, qr{<a class="btn sec" href="https://pay\.school\.example/done\?order=1&amp;x=2">返回单位网站},
    'a return_url on one of the unit\'s hosts is offered as a link back';
like $html, qr{href="/pay/sandbox/$code\?return_url=https%3A%2F%2Fpay\.school\.example%2Fdone%3Forder%3D1%26x%3D2"},
    'the return_url is carried on to the channel choice';
is $res->status, 200, 'a return_url never redirects';

like page("/q/$code?return_url=" . $esc->('http://intranet.school.example:8080/back'))->text,
    qr/返回单位网站/, 'plain http is allowed where the unit\'s entry says http://';
for my $bad ('https://evil.example/', 'http://pay.school.example/', 'https://pay.school.example.evil.example/',
             'https://pay.school.example@evil.example/', 'javascript:alert(1)',
             '//pay.school.example/', 'https://intranet.school.example:8080/',
             "https://pay.school.example/\x{0a}x") {
    (my $shown = $bad) =~ s/\n/\\n/g;
    my $r = page("/q/$code?return_url=" . $esc->(encode_utf8($bad)));
    unlike $r->text, qr/返回单位网站/, "return_url \"$shown\" is not offered";
}

###############################################################################
# paid, closed, unknown

my $paid = $t->new_notice(amount => 2000, item_code => '103002', payer => \%payer);
is $t->sandbox_pay($paid)->body, 'success', 'a notice is paid';
$res = page("/q/$paid->{payment_code}", ua => $UA{gov_app});
is $res->status, 200, 'a paid notice answers 200, even to a routed app';
like $res->text, qr/已缴费/, 'the paid page says so';
like $res->text, qr/正在开具/, 'before the receipt is issued the paid page says it is coming';
unlike $res->text, qr{/pay/}, 'the paid page offers no payment';

for my $k ($t->redis_keys('{gp*}:n:*')) {
    next unless ($t->redis->hget($k, 'status') // '') eq 'PAID';
    $t->redis->hset($k, receipt_code => '33010126', receipt_number => '0000000001',
                    receipt_check => 'a1b2c3');
}
$res = page("/q/$paid->{payment_code}?return_url=" . $esc->($good));
like $res->text, qr{href="/r/33010126/0000000001\?c=a1b2c3">查看电子票据},
    'once issued, the paid page links to the receipt';
like $res->text, qr/返回单位网站/, 'the paid page links back to the unit';
cmp_ok length($res->body), '<', 15 * 1024, 'the paid page is under 15 KiB (' . length($res->body) . ' bytes)';

my $c = $t->new_notice(amount => 3000, item_code => '103001', payer => \%payer);
$t->signed_request(POST => "/v1/notices/$c->{payment_code}/cancel", {});
$res = page("/q/$c->{payment_code}");
is $res->status, 410, 'a cancelled notice answers 410';
like $res->text, qr/已撤销/, 'the page says it was cancelled';
is_our_page($res, 'the cancelled page');

my $e = $t->new_notice(amount => 3000, item_code => '103001', payer => \%payer);
for my $k ($t->redis_keys('{gp*}:n:*')) {
    my %h = $t->redis->hgetall($k);
    $t->redis->hset($k, due_at => time - 60) if $h{amount} eq '3000' && $h{status} eq 'UNPAID';
}
$res = page("/q/$e->{payment_code}");
is $res->status, 410, 'an expired notice answers 410';
like $res->text, qr/已过期/, 'the page says it expired';
$res = page("/q/$e->{payment_code}", ua => $UA{gov_app});
is $res->status, 410, 'an expired notice is never handed to a channel';

for my $case ([ 'an unknown code', '/q/' . random_code() ],
              [ 'a malformed code', '/q/12345' ],
              [ 'an empty code', '/q/' ],
              [ 'a path under a code', "/q/$code/x" ],
              [ 'an unknown code\'s image', '/q/' . random_code() . '.png' ]) {
    my ($name, $path) = @$case;
    my $r = page($path);
    is $r->status, 404, "$name answers 404";
    is_our_page($r, "the 404 page of $name");
}

$res = $t->request(POST => "/q/$code", body => 'x=1',
                   headers => { 'Content-Type' => 'application/x-www-form-urlencoded' });
is $res->status, 405, 'a POST to the QR target answers 405';
is_our_page($res, 'the 405 page');

###############################################################################
# QR images decode back to the pay URL

my $pay_url = $t->public_url . "/q/$code";

$res = page("/q/$code.png");
is $res->status, 200, 'the PNG QR answers 200' or diag $res->describe;
is $res->content_type, 'image/png', 'it is a PNG';
like $res->header('Cache-Control') // '', qr/max-age=\d+/, 'the PNG may be cached';
$t->write_file('qr.png', $res->body);
is zbar($t->dir . '/qr.png'), $pay_url, 'the PNG decodes (zbarimg) to the pay URL';

$res = page("/q/$code.png?s=3");
$t->write_file('qr3.png', $res->body);
is zbar($t->dir . '/qr3.png'), $pay_url, 'a small PNG (3 px per module) decodes too';

$res = page("/q/$code.svg");
is $res->content_type, 'image/svg+xml', 'the SVG QR answers';
like $res->header('Cache-Control') // '', qr/max-age=\d+/, 'the SVG may be cached';
$t->write_file('qr.pbm', svg_to_pbm($res->body, 4));
is zbar($t->dir . '/qr.pbm'), $pay_url, 'the SVG, drawn as it says, decodes to the pay URL';

###############################################################################
# open per-item code (一费一码)

$res = page('/o/103001');
is $res->status, 200, 'the open code page answers 200';
like $res->text, qr{<form method="post" action="/o/103001">}, 'it has the lookup form';
like $res->text, qr{<label for="q">}, 'the field has a label';
is page('/o/999999')->status, 404, 'an unknown item answers 404';

sub lookup {
    my ($item, $q, %o) = @_;
    return $t->request(POST => "/o/$item", body => "q=$q",
                       headers => { 'Content-Type' => 'application/x-www-form-urlencoded',
                                    %{ $o{headers} // {} } });
}

# more unpaid notices of the same payer, on other shards
my @mine = ($n);
push @mine, $t->new_notice(amount => 100 + $_, item_code => '103001', payer => \%payer) for 1 .. 4;
my $other_item = $t->new_notice(amount => 2000, item_code => '103002', payer => \%payer);

$res = lookup('103001', $id_no);
$html = $res->text;
is $res->status, 200, 'a lookup by ID number answers 200';
for my $m (@mine) {
    like $html, qr{href="/q/$m->{payment_code}"}, "the payer's unpaid notice $m->{payment_code} is listed";
}
unlike $html, qr{/q/$paid->{payment_code}}, 'a paid notice is not listed';
unlike $html, qr{/q/$c->{payment_code}}, 'a cancelled notice is not listed';
unlike $html, qr{/q/$e->{payment_code}}, 'an expired notice is not listed';
unlike $html, qr{/q/$other_item->{payment_code}}, 'a notice of another item is not listed';
like $html, qr/张\*\*/, 'results are masked';
unlike $html, qr/秀英|\Q$id_no\E/, 'results never show the full name or ID number';

$res = lookup('103001', lc $id_no);
like $res->text, qr{href="/q/$code"}, 'the ID number is found whatever the case of its x';

my $unknown = lookup('103001', valid_id_no('11010519491231002'))->text;
like $unknown, qr/没有查到待缴费用/, 'an ID number without notices shows "nothing unpaid"';
(my $nothing = $unknown) =~ s/.*<h2 id="res-h">//s;
my $none2 = lookup('103002', valid_id_no('44010619491231002'))->text;
(my $nothing2 = $none2) =~ s/.*<h2 id="res-h">//s;
is $nothing, $nothing2, 'an unknown ID and an ID without notices of this item look the same';

$res = lookup('103001', $code);
like $res->text, qr{href="/q/$code"}, 'a lookup by payment code lists that notice';
like lookup('103002', $code)->text, qr/没有查到待缴费用/, 'a code of another item shows nothing';
like lookup('103001', $paid->{payment_code})->text, qr/没有查到待缴费用/, 'a paid code shows nothing';
like lookup('103001', random_code())->text, qr/没有查到待缴费用/, 'an unknown code shows nothing';
like lookup('103001', 'abc')->text, qr/请输入缴款通知书上的 20 位缴款码/, 'a malformed entry asks again';

ok !(grep { index($_, $id_no) >= 0 || index(lc $_, lc $id_no) >= 0 } $t->redis_keys),
    'no Redis key holds the ID number in clear';
my @index = $t->redis_keys('{gp*}:pidx:103001:*');
ok @index >= 2, 'the index is kept per shard and item (' . scalar(@index) . ' keys)';
unlike GovPay::Test::_read_file($t->dir . '/access.log') // '', qr/\Q$id_no\E/,
    'the ID number never reaches the access log';

###############################################################################
# rate limiting: nginx limit_req, its 429 as one of our pages

my $first = lookup('103001', $id_no, headers => { 'X-Test-Limit' => 'me' });
is $first->status, 200, 'a first lookup under limit_req passes';
my $second = lookup('103001', $id_no, headers => { 'X-Test-Limit' => 'me' });
is $second->status, 429, 'the next lookup within the limit answers 429';
is_our_page($second, 'the 429 page');
like $second->text, qr/请稍后再试/, 'the 429 page asks to wait';
ok defined $second->header('Retry-After'), 'the 429 page says when to retry';
ok defined $second->header('Content-Security-Policy'), 'the 429 page sends the CSP';

###############################################################################
# every page within the budget, with the headers

for my $case ([ cashier => page("/q/$code") ],
              [ 'cashier, large-text mode' => page("/q/$code?big=1") ],
              [ paid => page("/q/$paid->{payment_code}") ],
              [ 'closed (410)' => page("/q/$c->{payment_code}") ],
              [ 'not found (404)' => page('/q/' . random_code()) ],
              [ 'open code form' => page('/o/103001') ],
              [ 'open code results' => lookup('103001', $id_no) ],
              [ 'open code, nothing found' => lookup('103001', valid_id_no('11010519491231002')) ],
              [ 'sandbox pay page' => page("/sandbox/pay/$code") ]) {
    my ($name, $r) = @$case;
    cmp_ok length($r->body), '<', 15 * 1024, "the $name page is under 15 KiB ("
        . length($r->body) . ' bytes)';
    ok defined $r->header('Content-Security-Policy') && defined $r->header('X-Content-Type-Options')
        && defined $r->header('Referrer-Policy'),
        "the $name page sends CSP, X-Content-Type-Options, Referrer-Policy";
}

$t->check_error_log;

###############################################################################
# a channel that is not configured is never chosen, even by the table

my $t2 = GovPay::Test->new;
$t2->start_redis;
$t2->start_nginx(<<'EOF', directives => { gov_pay_sandbox_key => undef });
    gov_pay_agent_route ZJZWFW sandbox;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
    }
EOF
my $n2 = $t2->new_notice;
$res = $t2->get("/q/$n2->{payment_code}", headers => { 'User-Agent' => $UA{gov_app} });
is $res->status, 200, 'a route to a channel that is not configured falls back to the cashier';
like $res->text, qr/暂时不能在线缴费/, 'with no channel configured the cashier says so plainly';
$t2->check_error_log;

done_testing;

###############################################################################

sub zbar {
    my ($file) = @_;
    my $out = `zbarimg --quiet --raw "$file" 2>/dev/null`;
    chomp $out;
    return $out;
}

# the SVG's unit squares ("M<x> <y>h1v1h-1z") as a plain PBM, $scale pixels each
sub svg_to_pbm {
    my ($svg, $scale) = @_;
    my ($side) = $svg =~ /viewBox="0 0 (\d+) \d+"/ or return '';
    my @dark;
    while ($svg =~ /M(\d+) (\d+)h1v1h-1z/g) { $dark[$2][$1] = 1 }
    my $px = $side * $scale;
    my $pbm = "P1\n$px $px\n";
    for my $y (0 .. $px - 1) {
        $pbm .= join(' ', map { $dark[int($y / $scale)][int($_ / $scale)] ? 1 : 0 } 0 .. $px - 1) . "\n";
    }
    return $pbm;
}
