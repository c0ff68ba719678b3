#!/usr/bin/perl

# notify plugin: pending retries live in Redis, so a worker killed in the
# middle of them (waiting for the next try, or with requests in flight) loses
# nothing: after a restart every event reaches the unit. A worker killed
# right after queueing an event (before the runtime's XACK) sends it once:
# the queueing script acknowledges the entry itself.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Webhook;

my $t = GovPay::Test->new;
$t->start_redis;

my $UNIT = $GovPay::Test::UNIT;
my $hook = GovPay::Webhook->start($t, name => 'a', mode => '500');

my $reg = $t->default_registry;
$reg->{units}[0]{webhook} = $hook->url('/a');
$t->write_registry($reg);

# 7 tries, 1 s apart: the test ends long before the last
my %notify = (schedule_s => [1, 1, 1, 1, 1, 1], timeout_ms => 1000, poll_ms => 100);
$t->start_worker(plugins => { notify => \%notify });

my @ev = map { GovPay::Webhook::fake_settled($t, unit => $UNIT) } 1 .. 5;
my %want = map { $_->{event_id} => 1 } @ev;

sub tried {
    my (%o) = @_;
    my %n;
    for my $g ($hook->received) {
        next if defined $o{answer} && $g->{answer} ne $o{answer};
        $n{ $g->{headers}{'govpay-event-id'} }++;
    }
    return \%n;
}

###############################################################################
# killed while the deliveries wait for their next try

ok wait_for(sub { keys %{ tried() } == 5 }, 10, 'every event tried once'),
    'every event was tried and failed (500)' or diag $t->worker_log;
# the webhook server sees a try before the worker records its outcome
my $st = {};
wait_for(sub {
    $st = GovPay::Webhook::notify_status($t) // {};
    ($st->{recipients}{"u:$UNIT"}{retrying} // 0) == 5
}, 10, 'the five failed tries recorded');
is $st->{recipients}{"u:$UNIT"}{retrying}, 5, 'status: 5 retrying';

$t->kill_worker('KILL');
ok !$t->worker_running, 'worker killed (SIGKILL) in the middle of the retries';

###############################################################################
# restarted; the unit now hangs: killed again with requests in flight

$hook->set_mode('hang');
my $seen = scalar $hook->received;
$t->start_worker(plugins => { notify => \%notify });

ok wait_for(sub { scalar($hook->received) >= $seen + 5 }, 10,
            'the restarted worker to try all 5 again'),
    'the restarted worker tries every event again' or diag $t->worker_log;
$t->kill_worker('KILL');
ok !$t->worker_running, 'worker killed again while its requests hang';

###############################################################################
# restarted with the unit back: everything arrives (the leases of the killed
# worker run out after 2 x timeout + 1 s)

$hook->set_mode('200');
$t->start_worker(plugins => { notify => \%notify });

ok wait_for(sub { keys %{ tried(answer => 200) } == 5 }, 15, 'all 5 delivered'),
    'after the restarts every event is delivered' or diag $t->worker_log;
is_deeply [ sort keys %{ tried(answer => 200) } ], [ sort keys %want ],
    'exactly the 5 events, by event id';
ok((!grep { $_ > 1 } values %{ tried(answer => 200) }), 'each delivered once');

$st = wait_for(sub {
    my $s = GovPay::Webhook::notify_status($t);
    $s && $s->{recipients}{"u:$UNIT"}{delivered} == 5 ? $s : 0;
}, 5, 'status to show 5 delivered');
is_deeply $st && $st->{recipients}{"u:$UNIT"},
    { pending => 0, retrying => 0, dead => 0, delivered => 5 },
    'status: 5 delivered, nothing pending, retrying or dead';
is scalar(grep { ($_->{fields}{plugin} // '') eq 'notify' } $t->stream_entries('dead')), 0,
    'nothing dead-lettered';
$t->stop_worker;

###############################################################################
# killed after queueing, before the runtime's XACK: queued and sent once

$t->start_worker(plugins => { notify => \%notify },
                 env => { GOV_PAY_WORKER_FAULT => 'exit_before_ack' });
my $e6 = GovPay::Webhook::fake_settled($t, unit => $UNIT);
my $status = $t->wait_worker_exit('w1', 10);
is defined $status ? $status >> 8 : undef, 137,
    'the worker with exit_before_ack exits before acknowledging';
$t->stop_worker;
$t->start_worker(plugins => { notify => \%notify });

ok wait_for(sub { tried(answer => 200)->{ $e6->{event_id} } }, 10, 'event 6 delivered'),
    'the event is delivered after the restart' or diag $t->worker_log;
my $r = $t->redis;
ok wait_for(sub {
    my @p = eval { $r->xpending("{gp$e6->{shard}}:settled", 'notify') };
    @p && !$p[0];
}, 5, 'nothing pending'), 'and acknowledged';
ok wait_for(sub { !$r->zcard("{gp$e6->{shard}}:notify:queue") }, 5, 'an empty queue'),
    'nothing left queued';
is scalar(grep { $_->{headers}{'govpay-event-id'} eq $e6->{event_id} } $hook->received), 1,
    'the event was queued once and sent once (queueing acknowledges the entry)';

###############################################################################

is $t->stop_worker('w1', 'TERM'), 0, 'worker exits 0 on SIGTERM' or diag $t->worker_log;
$t->check_error_log;

done_testing;
