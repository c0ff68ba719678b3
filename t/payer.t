#!/usr/bin/perl

# Payer routes (API.md, "Payer routes"): the cashier page behind the QR code,
# 404 pages, the explicit channel choice and the sandbox gateway page, and the
# whole offline payment path through the sandbox form.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
$t->start_redis;
$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location /sandbox/ { gov_pay_sandbox_gateway; }
    }
EOF

my $BROWSER = 'Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 '
            . '(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36';
my $id_no = valid_id_no('33010620000101123');

my $n = $t->new_notice(amount => 125000, item_code => '103001',
    payer => { type => 'person', name => '张三', id_no => $id_no });
my $code = $n->{payment_code};

sub page {
    my ($path, %o) = @_;
    return $t->get($path, headers => { 'User-Agent' => $o{ua} // $BROWSER });
}

###############################################################################
# cashier page

my $res = page("/q/$code");
is $res->status, 200, 'cashier page answers 200' or diag $res->describe;
is $res->content_type, 'text/html', 'cashier page is HTML';
my $html = $res->text;
like $html, qr/1250\.00/, 'cashier page shows the amount in yuan (1250.00)';
like $html, qr/学费/, 'cashier page shows the item name';
like $html, qr/张\*/, 'cashier page shows the masked payer name 张*';
unlike $html, qr/张三/, 'cashier page never shows the full payer name';
unlike $html, qr/\Q$id_no\E/, 'cashier page never shows the full ID number';
unlike $html, qr/\Q@{[substr($id_no, 4, 10)]}\E/,
    'cashier page never shows the middle of the ID number';
like $html, qr{href="[^"]*/pay/sandbox/$code"}, 'cashier page links to /pay/sandbox/<code>';
ok(($res->header('Content-Type') // '') =~ /charset=utf-8/i
    || $html =~ /<meta[^>]+charset="?utf-8/i, 'cashier page declares UTF-8');

is page("/q/$code")->status, 200, 'cashier page can be read again';

###############################################################################
# not found

for my $case (
    [ 'unknown code with a valid check digit', random_code() ],
    [ 'code with a bad check digit', substr($code, 0, 19) . ((substr($code, 19) + 1) % 10) ],
    [ 'code of 19 digits', substr($code, 0, 19) ],
    [ 'code with letters', 'ABCDEFGHIJKLMNOPQRST' ],
) {
    my ($name, $c) = @$case;
    my $res = page("/q/$c");
    is $res->status, 404, "cashier page for $name answers 404" or diag $res->describe;
    is $res->content_type, 'text/html', "404 page for $name is HTML";
}

###############################################################################
# channel choice and the sandbox gateway

$res = page("/pay/sandbox/$code");
is $res->status, 302, 'choosing the sandbox channel redirects' or diag $res->describe;
like $res->header('Location') // '', qr{/sandbox/pay/$code$},
    'redirect goes to the sandbox gateway for this code';

# an unknown code ends on a 404 page, at once or after the channel hop
for my $case ([ 'an unknown code', random_code() ],
              [ 'a code with a bad check digit',
                substr($code, 0, 19) . ((substr($code, 19) + 1) % 10) ]) {
    my ($name, $c) = @$case;
    my $res = page("/pay/sandbox/$c");
    if ($res->status == 302) {
        my $loc = $res->header('Location') // '';
        $loc =~ s{^https?://[^/]+}{};
        $res = page($loc);
    }
    is $res->status, 404, "choosing a channel for $name ends on a 404 page"
        or diag $res->describe;
}
is page("/pay/nosuchchannel/$code")->status, 404,
    'choosing an unknown channel answers 404';

$res = page("/sandbox/pay/$code");
is $res->status, 200, 'sandbox gateway page answers 200' or diag $res->describe;
$html = $res->text;
like $html, qr{<form[^>]*method="post"[^>]*action="/notify/sandbox"|<form[^>]*action="/notify/sandbox"[^>]*method="post"}i,
    'gateway page posts a form to /notify/sandbox';

my %form;
while ($html =~ /<input\b([^>]*)>/gi) {
    my $attrs = $1;
    my ($name) = $attrs =~ /\bname="([^"]*)"/;
    my ($value) = $attrs =~ /\bvalue="([^"]*)"/;
    next unless defined $name;
    $form{$name} = $value // '';
    $form{"type:$name"} = ($attrs =~ /\btype="([^"]*)"/)[0] // '';
}
for my $f (qw(out_trade_no trade_no total_fen trade_status paid_at sign)) {
    ok exists $form{$f}, "gateway form has $f";
    is $form{"type:$f"}, 'hidden', "$f is a hidden input";
}
is $form{out_trade_no}, $code, 'out_trade_no is the payment code';
is $form{total_fen}, '125000', 'total_fen is the notice amount';
is $form{trade_status}, 'SUCCESS', 'trade_status is SUCCESS';
like $form{paid_at} // '', qr/^\d+$/, 'paid_at is unix seconds';
ok abs(($form{paid_at} // 0) - time) < 60, 'paid_at is now';
like $form{trade_no} // '', qr/^\S+$/, 'trade_no is set';
my %fields = map { $_ => $form{$_} } qw(out_trade_no trade_no total_fen trade_status paid_at);
is $form{sign}, $t->sandbox_sign(%fields), 'the form is signed with the sandbox key';

###############################################################################
# pay through the form; the QR page then shows the paid notice

$res = $t->sandbox_callback(%fields, sign => $form{sign});
is $res->status, 200, 'posting the gateway form answers 200' or diag $res->describe;
is $res->body, 'success', 'posting the gateway form answers success';

my $g = $t->get_notice($code);
is $g->json && $g->json->{status}, 'PAID', 'notice is PAID after the sandbox form';

$res = page("/q/$code");
is $res->status, 200, 'QR page of a paid notice answers 200';
unlike $res->text, qr{/pay/sandbox/$code}, 'QR page of a paid notice offers no payment';

###############################################################################
# QR image

$res = page("/q/$code.svg");
is $res->status, 200, 'QR image answers 200' or diag $res->describe;
is $res->content_type, 'image/svg+xml', 'QR image is SVG';
like $res->body, qr/<svg\b/, 'QR image is an svg document';
is page('/q/' . random_code() . '.svg')->status, 404, 'QR image of an unknown code answers 404';

###############################################################################

$t->check_error_log;

done_testing;
