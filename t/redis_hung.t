#!/usr/bin/perl

# Redis hung (SIGSTOP: connected, never answers): requests fail with 503 once
# gov_pay_redis_timeout (500ms here) has passed, the edge recovers after
# SIGCONT, and a graceful quit is not held up by the hung connection
# (ARCHITECTURE.md: cancelable timers).

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Time::HiRes qw(time);
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_redis_timeout => '500ms' });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location = /status { stub_status; }
    }
EOF

my $n = $t->new_notice(amount => 4200);
my $code = $n->{payment_code};
my $n2 = $t->new_notice(amount => 900);

###############################################################################
# hung

$t->hang_redis;

my $res = $t->create_notice(_opts => { timeout => 10 });
is $res->status, 503, 'create while Redis hangs answers 503' or diag $res->describe;
is $res->error_code, 'STORE_UNAVAILABLE', 'create while Redis hangs is STORE_UNAVAILABLE';
like $res->header('Retry-After') // '', qr/^\d+$/, 'create while Redis hangs sets Retry-After';
ok $res->elapsed >= 0.4 && $res->elapsed < 2,
    sprintf('create while Redis hangs answers after the 500ms timeout, within 2 s (%.2fs)',
            $res->elapsed);

$res = $t->get("/q/$code", timeout => 10);
is $res->status, 503, 'QR page while Redis hangs answers 503' or diag $res->describe;
ok $res->elapsed < 2, sprintf('QR page while Redis hangs answers within 2 s (%.2fs)',
                              $res->elapsed);

$res = $t->sandbox_pay($n2, trade_no => 'SBX-HUNG', _timeout => 10);
is $res->status, 503, 'callback while Redis hangs answers 503';
is $res->body, 'fail', 'callback while Redis hangs answers fail';
ok $res->elapsed < 2, 'callback while Redis hangs answers within 2 s';

# requests in parallel while hung: each gets its own timeout, none waits for
# the others (raw sockets, all sent before any is read)
my $t0 = time;
my @socks = map {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                                  Proto => 'tcp', Timeout => 2) or die "connect: $!";
    print {$s} "GET /q/$code HTTP/1.0\r\nHost: localhost\r\n\r\n";
    $s;
} 1 .. 10;
my @status = map {
    local $/;
    $_->timeout(10) if $_->can('timeout');
    my $reply = readline($_) // '';
    close $_;
    ($reply =~ m{^HTTP/1\.\d (\d{3})})[0] // 'none';
} @socks;
my $took = time - $t0;
is_deeply \@status, [ (503) x 10 ], '10 parallel requests while Redis hangs all answer 503';
ok $took < 3, sprintf('10 parallel requests while Redis hangs finish within 3 s (%.2fs)', $took);

###############################################################################
# resumed

$t->resume_redis;
ok wait_for(sub { $t->create_notice->status == 201 }, 10,
            'create to succeed after SIGCONT'),
    'create succeeds again after Redis resumes';
is $t->get("/q/$code")->status, 200, 'QR page works again after Redis resumes';
$res = $t->sandbox_pay($n2, trade_no => 'SBX-HUNG');
is $res->body, 'success', 'the retried callback settles after Redis resumes';
is +($t->get_notice($n2->{payment_code})->json // {})->{status}, 'PAID',
    'the retried callback paid the notice';
is scalar($t->stream_entries('settled')), 1, 'exactly one settled event for it';

###############################################################################
# graceful quit while Redis hangs, with a request waiting on it

my @workers = $t->nginx_workers;
my $master = $t->nginx_pid;
$t->hang_redis;

my $pending = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                                    Proto => 'tcp', Timeout => 2);
print {$pending} "GET /q/$code HTTP/1.0\r\nHost: localhost\r\n\r\n" if $pending;
# the request has reached nginx and waits on Redis: stub_status counts it
# (and itself) as writing
# (it may time out first: the quit must not hang either way)
wait_for(sub { $t->get('/status')->body =~ /Writing: (\d+)/ && $1 >= 2 }, 1,
         'the request to wait on the hung Redis');

$t0 = time;
my ($rc, $out) = $t->nginx_signal('quit');
is $rc, 0, 'nginx -s quit is accepted' or diag $out;
my $gone = wait_for(sub { !GovPay::Test::alive($master) }, 5,
                    'nginx master to exit after quit');
ok $gone, sprintf('nginx master exits within 5 s of quit while Redis hangs (%.2fs)',
                  time - $t0);
ok wait_for(sub { !grep { GovPay::Test::alive($_) } @workers }, 2, 'nginx workers to exit'),
    'nginx workers exit too';

$t->resume_redis;

###############################################################################

$t->check_error_log;

done_testing;
