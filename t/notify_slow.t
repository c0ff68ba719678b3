#!/usr/bin/perl

# notify plugin: deliveries are concurrent. A unit whose webhook hangs (up to
# the timeout, on every request) or refuses connections never delays another
# unit's delivery; a hanging unit holds at most per_recipient requests.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Test::TCP qw(empty_port);
use Time::HiRes qw(time);
use GovPay::Test;
use GovPay::Webhook;

my $t = GovPay::Test->new;
$t->start_redis;

my $UNIT = $GovPay::Test::UNIT;
my $UNIT2 = $GovPay::Test::UNIT2;

my $slow = GovPay::Webhook->start($t, name => 'slow', mode => 'hang');
my $fast = GovPay::Webhook->start($t, name => 'fast', mode => '200');
my $closed = empty_port();

my $reg = $t->default_registry;
$reg->{units}[0]{webhook} = $slow->url('/slow');
$reg->{units}[1]{webhook} = $fast->url('/fast');
push @{ $reg->{units} }, { id => '330100-TEST-DOWN', name => '停机单位',
    scheme => 'GOVPAY-HMAC-SHA256', secret_file => "keys/$UNIT.secret",
    webhook => "http://127.0.0.1:$closed/down" };
$t->write_registry($reg);

my %notify = (schedule_s => [1], timeout_ms => 4000, poll_ms => 100,
              per_recipient => 3);
$t->start_worker(plugins => { notify => \%notify });

# the slow unit first: 8 events whose requests hang; the down unit: 3
my @slow = map { GovPay::Webhook::fake_settled($t, unit => $UNIT) } 1 .. 8;
my @down = map { GovPay::Webhook::fake_settled($t, unit => '330100-TEST-DOWN') } 1 .. 3;
ok wait_for(sub { scalar($slow->received) >= 3 }, 5, 'the slow unit to get requests'),
    'the slow unit has requests hanging' or diag $t->worker_log;

# then the fast unit
my @lat;
for my $i (1 .. 5) {
    my $t0 = time;
    my $ev = GovPay::Webhook::fake_settled($t, unit => $UNIT2);
    my $got = wait_for(sub {
        (grep { $_->{headers}{'govpay-event-id'} eq $ev->{event_id} } $fast->received)[0];
    }, 5, "fast unit event $i");
    push @lat, $got ? $got->{t} - $t0 : 99;
}
my $worst = (sort { $b <=> $a } @lat)[0];
ok $worst < 1.0, sprintf('the fast unit gets each event within 1 s while the slow one '
    . 'hangs for 4 s (worst %.3f s, %s)', $worst, join ' ', map { sprintf '%.3f', $_ } @lat)
    or diag $t->worker_log;

is scalar($slow->received), 3,
    'the hanging unit holds no more than per_recipient (3) requests at a time';

# the slow unit's requests time out and are retried later; meanwhile the
# other 5 got their turn
ok wait_for(sub {
    my %ids = map { $_->{headers}{'govpay-event-id'} => 1 } $slow->received;
    return keys(%ids) == 8;
}, 15, 'all 8 slow events tried'), 'every event of the slow unit gets its turn';

my $dkey = "{gp$down[0]{shard}}:notify:d:$down[0]{event_id}:u:330100-TEST-DOWN";
like $t->redis->hget($dkey, 'last_error') // '', qr/connect/i,
    'the refused unit records a connection error';

###############################################################################

is $t->stop_worker('w1', 'TERM'), 0, 'worker exits 0 on SIGTERM, requests in flight or not'
    or diag $t->worker_log;
like $t->worker_log, qr/given back, due now/, 'in-flight requests are given back on stop';
$t->check_error_log;

done_testing;
