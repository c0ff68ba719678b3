#!/usr/bin/perl

# QR images are made once per notice (ngx_gov_pay_qr.c): a worker answers an
# image it made before from memory, without Redis; clients may keep it
# (long max-age, ETag) and get 304 Not Modified for the ETag they hold;
# unknown codes never get one; gov_pay_qr_cache 0 keeps nothing.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
$t->start_redis;

my $snippet = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
    }
EOF

$t->start_nginx($snippet);

my $n = $t->new_notice(amount => 1800);
my $code = $n->{payment_code};

###############################################################################
# the answer's cache headers

my $svg = $t->get("/q/$code.svg");
is $svg->status, 200, 'the SVG answers';
like $svg->header('Cache-Control') // '', qr/^public, max-age=(\d+), immutable$/,
    'clients may keep it (public, immutable)';
my ($age) = ($svg->header('Cache-Control') // '') =~ /max-age=(\d+)/;
ok +($age // 0) >= 30 * 86400, "for a long time (max-age=$age)";
my $etag = $svg->header('ETag') // '';
like $etag, qr/^"\Q$code\E\.svg-[0-9a-f]{8}"$/, 'it has a strong ETag naming the code';

my $again = $t->get("/q/$code.svg");
is $again->body, $svg->body, 'asked again, the same image';
is $again->header('ETag'), $etag, '... with the same ETag';

my $png8 = $t->get("/q/$code.png");
my $png3 = $t->get("/q/$code.png?s=3");
is $png8->content_type, 'image/png', 'the PNG answers';
isnt $png8->header('ETag'), $png3->header('ETag'), 'each PNG scale has its own ETag';
isnt $png8->header('ETag'), $etag, '... and they are not the SVG\'s';
isnt $png8->body, $png3->body, 'and its own image';
is $t->get("/q/$code.png?s=99")->header('ETag'), $png8->header('ETag'),
    'an out-of-range scale is the default scale (8)';

###############################################################################
# 304 Not Modified

my $nm = $t->get("/q/$code.svg", headers => { 'If-None-Match' => $etag });
is $nm->status, 304, 'If-None-Match with the ETag answers 304';
is $nm->body, '', '... without a body';
is $nm->header('ETag'), $etag, '... naming the ETag';

$nm = $t->get("/q/$code.svg", headers => { 'If-None-Match' => qq{"other", $etag} });
is $nm->status, 304, 'the ETag among others in If-None-Match answers 304';

my $full = $t->get("/q/$code.svg", headers => { 'If-None-Match' => '"not-it"' });
is $full->status, 200, 'another ETag in If-None-Match gets the image';
is $full->body, $svg->body, '... the same image';

$nm = $t->get("/q/$code.png?s=3", headers => { 'If-None-Match' => $png8->header('ETag') });
is $nm->status, 200, 'the ETag of another scale does not match';

###############################################################################
# kept in the worker: answered with Redis down

my $unknown = random_code();
$t->stop_redis;

$again = $t->get("/q/$code.svg", timeout => 10);
is $again->status, 200, 'with Redis down, an image the worker made before is answered';
is $again->body, $svg->body, '... the same image';
is $t->get("/q/$code.png?s=3", timeout => 10)->body, $png3->body,
    '... and each PNG scale it made';
is $t->get("/q/$code.svg", timeout => 10, headers => { 'If-None-Match' => $etag })->status,
    304, '... and 304 for its ETag';
is $t->get("/q/$code.png?s=5", timeout => 10)->status, 503,
    'a scale it never made needs Redis: 503 while it is down';
is $t->get("/q/$code", timeout => 10)->status, 503,
    'the cashier page (the notice\'s state) still needs Redis: 503';
is $t->get("/q/$unknown.svg", timeout => 10)->status, 503,
    'an image never made needs Redis: 503';

$t->start_redis;
ok wait_for(sub { $t->get("/q/$unknown.svg")->status == 404 }, 10, 'the 404'),
    'an unknown code\'s image answers 404 once Redis is back';
is $t->get("/q/$unknown.svg")->status, 404, 'and again 404: nothing was kept for it';

###############################################################################
# gov_pay_qr_cache 0: nothing kept; images and 304 as before

ok $t->reload_nginx(snippet => $snippet, directives => { gov_pay_qr_cache => 0 }),
    'nginx reloads with gov_pay_qr_cache 0';
my $s0 = $t->get("/q/$code.svg");
is $s0->body, $svg->body, 'the image is the same';
is $s0->header('ETag'), $etag, '... with the same ETag in another worker';
is $t->get("/q/$code.svg", headers => { 'If-None-Match' => $etag })->status, 304,
    '304 for it too';
$t->stop_redis;
is $t->get("/q/$code.svg", timeout => 10)->status, 503,
    'with nothing kept, an image with Redis down answers 503';
$t->start_redis;

###############################################################################
# another public URL: other images, other ETags

ok $t->reload_nginx(snippet => $snippet,
                    directives => { gov_pay_public_url => 'https://pay.example.gov.cn' }),
    'nginx reloads with another gov_pay_public_url';
my $other;
ok wait_for(sub { $other = $t->get("/q/$code.svg"); $other->status == 200 }, 10,
            'the image'), 'the image answers';
isnt $other->header('ETag'), $etag, 'another public URL gives another ETag';
isnt $other->body, $svg->body, '... and another image (of the new pay URL)';

$t->check_error_log;

done_testing;
