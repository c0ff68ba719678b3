#!/usr/bin/perl

# notify plugin: a webhook answered with 500 (or a refused connection) is
# tried again on the schedule (shortened here by schedule_s) with the same
# event id and body; after the last try it is dead-lettered with the last
# error; `notify resend <event-id>` and `notify resend --unit .. --since ..`
# send it again.

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

my $hook_a = GovPay::Webhook->start($t, name => 'a', mode => '500,500,200');
my $hook_b = GovPay::Webhook->start($t, name => 'b', mode => '500');
my $closed = empty_port();    # nothing listens there: connection refused

my $reg = $t->default_registry;
$reg->{units}[0]{webhook} = $hook_a->url('/a');
$reg->{units}[1]{webhook} = $hook_b->url('/b');
push @{ $reg->{units} }, { id => '330100-TEST-DOWN', name => '停机单位',
    scheme => 'GOVPAY-HMAC-SHA256', secret_file => "keys/$UNIT.secret",
    webhook => "http://127.0.0.1:$closed/down" };
$t->write_registry($reg);

my %notify = (schedule_s => [1, 1], timeout_ms => 1000, poll_ms => 100,
              keep_dead_s => 86400);
$t->start_worker(plugins => { notify => \%notify });

my $r = $t->redis;

###############################################################################
# 500, 500, 200: three tries, one second apart, same id and body

my $ev = GovPay::Webhook::fake_settled($t, unit => $UNIT);

my @a = @{ wait_for(sub { my @g = $hook_a->received; @g >= 3 ? \@g : 0 }, 10,
                    'three tries at unit A') // [] };
is scalar @a, 3, 'unit A is tried three times (500, 500, then 200)'
    or diag $t->worker_log;
is_deeply [ map { $_->{answer} } @a ], [500, 500, 200], 'answered 500, 500, 200';
is_deeply [ map { $_->{headers}{'govpay-event-id'} } @a ], [ ($ev->{event_id}) x 3 ],
    'the same event id on every try';
is scalar(keys %{ { map { $_->{body} => 1 } @a } }), 1, 'the same body on every try';
ok((GovPay::Webhook::signature_ok($_, $t->unit_secret($UNIT)))[0],
   'every try is signed') for @a;
if (@a == 3) {
    my ($g1, $g2) = ($a[1]{t} - $a[0]{t}, $a[2]{t} - $a[1]{t});
    ok $g1 >= 0.9 && $g1 < 2.5, sprintf 'second try about 1 s after the first (%.2fs)', $g1;
    ok $g2 >= 0.9 && $g2 < 2.5, sprintf 'third try about 1 s after the second (%.2fs)', $g2;
}

my $dkey = "{gp$ev->{shard}}:notify:d:$ev->{event_id}:u:$UNIT";
ok wait_for(sub { ($r->hget($dkey, 'state') // '') eq 'delivered' }, 5,
            'the delivery record to say delivered'), 'the delivery is recorded as delivered';
is $r->hget($dkey, 'attempts'), 3, 'after 3 attempts';
ok $r->ttl($dkey) > 0, 'a delivered record expires (history, keep_delivered_s)';

###############################################################################
# always 500: dead letter after 1 + 2 tries, with the last error

my $ev_b = GovPay::Webhook::fake_settled($t, unit => $UNIT2);
my $ev_d = GovPay::Webhook::fake_settled($t, unit => '330100-TEST-DOWN');

sub dead_letters {
    return grep { ($_->{fields}{plugin} // '') eq 'notify' } $t->stream_entries('dead');
}

my @dead = @{ wait_for(sub { my @d = dead_letters(); @d >= 2 ? \@d : 0 }, 15,
                       'two dead letters') // [] };
is scalar @dead, 2, 'both deliveries that never succeed are dead-lettered'
    or diag $t->worker_log;
my ($db) = grep { $_->{fields}{event_id} eq $ev_b->{event_id} } @dead;
my ($dd) = grep { $_->{fields}{event_id} eq $ev_d->{event_id} } @dead;
is $db && $db->{fields}{recipient}, "u:$UNIT2", 'the dead letter names the recipient';
is $db && $db->{fields}{error}, 'HTTP 500', 'and the last error (HTTP 500)';
is $db && $db->{fields}{deliveries}, 3, 'after 3 tries';
is $db && $db->{fields}{entry_id}, $ev_b->{entry_id}, 'and the settled entry';
is $db && $db->{stream}, "{gp$ev_b->{shard}}:dead", "on the shard's dead-letter stream";
like $dd && $dd->{fields}{error} // '', qr/connect/i,
    'a refused connection is a failed try too (its error says so)';
is scalar(grep { $_->{headers}{'govpay-event-id'} eq $ev_b->{event_id} } $hook_b->received), 3,
    'unit B was tried 3 times';

my $st = GovPay::Webhook::notify_status($t) // {};
is_deeply $st->{recipients}{"u:$UNIT2"}, { pending => 0, retrying => 0, dead => 1, delivered => 0 },
    'status: unit B has 1 dead';
is $st->{recipients}{"u:$UNIT"}{delivered}, 1, 'status: unit A has 1 delivered';

my $dead_key = "{gp$ev_b->{shard}}:notify:d:$ev_b->{event_id}:u:$UNIT2";
is $r->hget($dead_key, 'state'), 'dead', 'the dead delivery record is kept for ops';
my $dttl = $r->ttl($dead_key);
ok $dttl > 86400 - 120 && $dttl <= 86400, "and expires after keep_dead_s (ttl $dttl)";

###############################################################################
# resend from the dead letter, by event id

$hook_b->set_mode('200');
my ($rc, $out, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend',
                                                    $ev_b->{event_id});
is $rc, 0, 'notify resend <event-id> exits 0' or diag $err;
like $out, qr/1 delivery\(ies\) queued/, 'and says it queued one';

my $ok = wait_for(sub {
    grep { $_->{headers}{'govpay-event-id'} eq $ev_b->{event_id} && $_->{answer} eq '200' }
        $hook_b->received;
}, 10, 'the re-sent webhook');
ok $ok, 'the dead event is delivered after resend, with the same event id';
ok wait_for(sub {
    my $s = GovPay::Webhook::notify_status($t);
    $s && $s->{recipients}{"u:$UNIT2"}{dead} == 0 && $s->{recipients}{"u:$UNIT2"}{delivered} == 1;
}, 5, 'status after resend'), 'status: unit B has 0 dead, 1 delivered';

###############################################################################
# resend from history, by unit and time

my $before = grep { $_->{headers}{'govpay-event-id'} eq $ev->{event_id} } $hook_a->received;
($rc, $out, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend',
    '--unit', $UNIT, '--since', epoch_to_rfc3339(int(time) - 600));
is $rc, 0, 'notify resend --unit --since exits 0' or diag $err;
like $out, qr/^1 delivery\(ies\) queued$/m, 'one event of the unit in that time';
ok wait_for(sub {
    (grep { $_->{headers}{'govpay-event-id'} eq $ev->{event_id} } $hook_a->received) > $before;
}, 10, 'the re-sent history event'), 'unit A gets its delivered event again, same event id';

($rc, $out) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend',
    '--unit', $UNIT, '--since', int(time) + 3600);
is $rc, 0, 'a resend of a time with no events exits 0';
like $out, qr/^0 delivery\(ies\) queued$/m, 'and queues nothing';

($rc, undef, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend',
                                                  'evt_3_1_0');
is $rc, 1, 'resend of an unknown event exits 1';
like $err, qr/no such event/, 'saying so';
($rc) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend', 'evt_99_1_0');
is $rc, 2, 'an event id of a shard that does not exist is a usage error';

# a unit gets only its own events
($rc, undef, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend',
                                                  $ev->{event_id}, '--to', $UNIT2);
is $rc, 1, "resend of unit A's event to unit B is refused";
like $err, qr/another unit/, 'saying why';
($rc) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend', '--unit', $UNIT,
                                     '--since', 0, '--to', $UNIT2);
is $rc, 2, "--unit A --to B is a usage error";
my $d2 = "{gp$ev->{shard}}:notify:d:$ev->{event_id}:u:$UNIT2";
ok !$r->exists($d2), 'and no delivery of it to unit B exists';

###############################################################################

is $t->stop_worker('w1', 'TERM'), 0, 'worker exits 0 on SIGTERM' or diag $t->worker_log;
$t->check_error_log;

done_testing;
