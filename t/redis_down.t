#!/usr/bin/perl

# Redis stopped (API.md, STORE_UNAVAILABLE; ARCHITECTURE.md, "the edge never
# blocks"): units get a fast 503 with Retry-After, payers a 503 page, channels
# their failure reply; once Redis is back the edge reconnects by itself and
# nothing acknowledged was lost (AOF).

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
my (undef, $pub) = $t->issuer_keys('sm2');
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_receipt_key => "sm2 $pub TEST-SM2-01" });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /r/ { gov_pay_receipt; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $before = $t->new_notice(amount => 4200);
my $code = $before->{payment_code};
my $unpaid = $t->new_notice(amount => 700);

###############################################################################
# Redis stopped

ok $t->stop_redis, 'redis-server stops';

my $res = $t->create_notice(_opts => { timeout => 10 });
is $res->status, 503, 'create while Redis is down answers 503' or diag $res->describe;
is $res->error_code, 'STORE_UNAVAILABLE', 'create while Redis is down is STORE_UNAVAILABLE';
like $res->header('Retry-After') // '', qr/^\d+$/, 'create while Redis is down sets Retry-After';
ok $res->elapsed < 3, sprintf('create while Redis is down answers within 3 s (%.2fs)',
                              $res->elapsed);
unlike $res->body, qr/redis|ECONNREFUSED|Connection refused/i,
    'the error message names no store internals';

$res = $t->get_notice($code, timeout => 10);
is $res->status, 503, 'read while Redis is down answers 503' or diag $res->describe;
is $res->error_code, 'STORE_UNAVAILABLE', 'read while Redis is down is STORE_UNAVAILABLE';
ok $res->elapsed < 3, 'read while Redis is down answers within 3 s';

$res = $t->get("/q/$code", timeout => 10);
is $res->status, 503, 'QR page while Redis is down answers 503' or diag $res->describe;
ok $res->elapsed < 3, 'QR page while Redis is down answers within 3 s';

$res = $t->get('/r/33010126/0000000001?c=a1b2c3', timeout => 10);
is $res->status, 503, 'receipt page while Redis is down answers 503' or diag $res->describe;
like $res->text, qr{<h1>系统繁忙</h1>}, 'the payer pages\' busy page';
ok $res->elapsed < 3, 'receipt page while Redis is down answers within 3 s';
$res = $t->get('/r/33010126/0000000001?c=a1b2c3', timeout => 10,
               headers => { Accept => 'application/json' });
is $res->error_code, 'STORE_UNAVAILABLE', 'its JSON answer is STORE_UNAVAILABLE';

$res = $t->sandbox_pay($unpaid, trade_no => 'SBX-DOWN', _timeout => 10);
is $res->status, 503, 'callback while Redis is down answers 503' or diag $res->describe;
is $res->body, 'fail', 'callback while Redis is down answers fail (the channel retries)';
ok $res->elapsed < 3, 'callback while Redis is down answers within 3 s';

# a burst of requests while down: all answered, none hangs
my @slow = grep { $_->status != 503 || $_->elapsed >= 3 }
    map { $t->get("/q/$code", timeout => 10) } 1 .. 20;
is scalar @slow, 0, '20 requests while Redis is down all answer 503 within 3 s';

###############################################################################
# Redis back on the same port: the edge reconnects by itself

$t->start_redis;
my $ok = wait_for(sub { $t->create_notice->status == 201 }, 10,
                  'create to succeed after Redis restarts');
ok $ok, 'create succeeds again after Redis restarts';

$res = $t->get_notice($code);
is $res->status, 200, 'notice created before the outage is still there (AOF)'
    or diag $res->describe;
is $res->json && $res->json->{amount}, 4200, 'and has its amount';

$res = $t->get("/q/$code");
is $res->status, 200, 'QR page works again after Redis restarts';

$res = $t->sandbox_pay($unpaid, trade_no => 'SBX-DOWN');
is $res->body, 'success', 'the retried callback settles after Redis restarts';
is +($t->get_notice($unpaid->{payment_code})->json // {})->{status}, 'PAID',
    'the retried callback paid the notice';
is scalar($t->stream_entries('settled')), 1, 'exactly one settled event';

###############################################################################
# killed (no clean shutdown) and back

$t->kill_redis;
is $t->get("/q/$code", timeout => 10)->status, 503, 'QR page after Redis is killed answers 503';
$t->start_redis;
ok wait_for(sub { $t->get("/q/$code")->status == 200 }, 10,
            'QR page after Redis is killed and restarted'),
    'QR page works again after Redis is killed and restarted';
is +($t->get_notice($unpaid->{payment_code})->json // {})->{status}, 'PAID',
    'the payment acknowledged before the kill survived (appendfsync always)';

###############################################################################

$t->check_error_log;

done_testing;
