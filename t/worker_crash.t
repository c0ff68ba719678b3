#!/usr/bin/perl

# gov-pay-worker crash between storing a receipt and XACK
# (GOV_PAY_WORKER_FAULT=exit_before_ack makes it _exit(137) there): the
# restarted worker (same consumer name) gets the event again, and the receipt
# plugin, being idempotent, takes no second number and writes no second
# receipt (API.md: "One payment -> exactly one receipt").

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
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $r = $t->redis;

sub pending {
    my ($stream) = @_;
    my @p = eval { $r->xpending($stream, 'receipt') };
    return @p ? $p[0] : -1;
}

$t->start_worker(consumer => 'worker-1',
                 env => { GOV_PAY_WORKER_FAULT => 'exit_before_ack' });

my $body = $t->notice_body(amount => 99900);
my $n = $t->signed_request(POST => '/v1/notices', $body)->json
    or BAIL_OUT('cannot create a notice');
my $code = $n->{payment_code};
my ($nkey) = $t->stored_notice($body->{request_id});
my ($shard) = ($nkey // '') =~ /^\{gp(\d+)\}/;
$shard //= 'X';
my $stream = "{gp$shard}:settled";

is $t->sandbox_pay($n, trade_no => 'SBX-C1')->body, 'success', 'notice is paid';

###############################################################################
# the faulty worker dies after storing the receipt, before XACK

my $status = $t->wait_worker_exit('w1', 10);
ok defined $status, 'worker with exit_before_ack exits by itself'
    or diag $t->worker_log;
is defined $status ? $status >> 8 : undef, 137, 'and exits with status 137';

my $first = $t->get_notice($code)->json // {};
is ref $first->{receipt}, 'HASH', 'the receipt was stored before the crash';
my $rc = $first->{receipt} // {};
is pending($stream), 1, 'the settled event is still pending (not acknowledged)';

###############################################################################
# restarted normally with the same consumer name

$t->stop_worker('w1');
$t->start_worker(consumer => 'worker-1');

ok wait_for(sub { pending($stream) == 0 }, 10, 'XPENDING of the receipt group to be 0'),
    'the restarted worker acknowledges the redelivered event'
    or diag $t->worker_log;
ok $t->worker_running, 'the restarted worker keeps running';

my $after = $t->get_notice($code)->json // {};
is_deeply $after->{receipt}, $rc, 'redelivery leaves the receipt unchanged';
is $r->get("{gpr}:rseq:" . ($rc->{code} // 'none')), 1,
    'exactly one receipt number was taken';
my @docs = $t->redis_keys('{gp*}:rcpt:*');
is scalar @docs, 1, 'exactly one receipt document exists';
my @dead = $t->stream_entries('dead');
is scalar @dead, 0, 'nothing was dead-lettered';

###############################################################################

$t->stop_worker('w1');
$t->check_error_log;

done_testing;
