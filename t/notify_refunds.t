#!/usr/bin/perl

# Everyone hears of a refund (docs/notify.md, "Refund events"): refund.succeeded
# and refund.failed reach the unit's webhook and the finance department's
# system, signed like every event, with the refund and the notice as the unit
# sees it; the red-letter receipt and the receipt for the amount kept follow
# as receipt.reversed and receipt.issued.  Event ids stay unique across the
# settled and refunds streams of a shard (evt_<shard>_… and evt_r<shard>_…),
# even for entries with the same stream entry id; a refund event that died
# (its recipient down) is dead-lettered with its stream, and `notify resend`
# sends it again, by event id or by unit and time.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Refunds;
use GovPay::Webhook;

my $t = GovPay::Test->new;
$t->start_redis;

my $hook_a = GovPay::Webhook->start($t, name => 'a');
my $hook_b = GovPay::Webhook->start($t, name => 'b', mode => '500');
my $hook_f = GovPay::Webhook->start($t, name => 'finance');

my $UNIT = $GovPay::Test::UNIT;
my $UNIT2 = $GovPay::Test::UNIT2;
my $fin_secret = random_string(40);
$t->write_file('keys/finance.secret', "$fin_secret\n");

my $reg = $t->default_registry;
$reg->{units}[0]{webhook} = $hook_a->url('/hooks/govpay');
$reg->{units}[1]{webhook} = $hook_b->url('/hooks/b');
$t->write_registry($reg);

$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $r = $t->redis;
my %notify = (
    public_url => $t->public_url, timeout_ms => 2000, poll_ms => 100,
    schedule_s => [1],
    subscribers => [ { name => 'nontax', url => $hook_f->url('/nontax'),
                       scheme => 'GOVPAY-HMAC-SM3', secret_file => 'keys/finance.secret' } ],
);
$t->start_worker(plugins => { receipt => $t->receipt_config, notify => \%notify });

sub bodies {
    my ($hook, $type, $code) = @_;
    return grep { ($_->{json}{type} // '') eq $type
                  && ($code // '') eq (($_->{json}{data}{notice} // $_->{json}{data})->{payment_code} // '') }
        map { { %$_, json => json_decode($_->{body}) // {} } } $hook->received;
}

sub wait_body {
    my ($hook, $type, $code, $what) = @_;
    my $got = wait_for(sub { my @b = bodies($hook, $type, $code); @b ? $b[-1] : 0 }, 15, $what);
    return $got // { json => {}, headers => {}, body => '' };
}

###############################################################################
# a partial refund succeeds

my $n = $t->new_notice(amount => 10000, remark => '秋季学费');
my $code = $n->{payment_code};
is $t->sandbox_pay($n)->body, 'success', 'a notice is paid';
wait_body($hook_a, 'receipt.issued', $code, 'the receipt webhook');
my $id = GovPay::Refunds::ask($t, $code, 3000, reason => '退学');
GovPay::Refunds::end($t, $id, 'SUCCEEDED', no => 'SBXR-0001');

my $req = wait_body($hook_a, 'refund.succeeded', $code, 'refund.succeeded at the unit');
my $ev = $req->{json};
ok $ev->{id}, 'the unit gets refund.succeeded' or diag $t->worker_log;
my ($ok, $why) = GovPay::Webhook::signature_ok($req, $t->unit_secret($UNIT));
ok $ok, 'signed with the unit\'s key, as every event' or diag $why;
like $ev->{id}, qr/^evt_r\d+_\d+_\d+$/, 'its id is an event id of the refunds stream (evt_r…)';
is $req->{headers}{'govpay-event-id'}, $ev->{id}, 'GovPay-Event-Id is the body\'s id';
is $req->{headers}{'govpay-event-type'}, 'refund.succeeded', 'GovPay-Event-Type too';
ok defined rfc3339_to_epoch($ev->{created_at}), 'created_at is RFC 3339';

my $d = $ev->{data} // {};
my $api = $t->signed_request(GET => "/v1/notices/$code/refunds/$id", undef)->json // {};
my %refund = map { $_ => $d->{$_} } grep { $_ ne 'notice' } keys %$d;
is_deeply \%refund, $api, 'data is the refund as the unit API shows it';
is $d->{refund_id}, $id, '  its id';
is $d->{amount}, 3000, '  its amount in fen';
is $d->{status}, 'SUCCEEDED', '  SUCCEEDED';
is $d->{origin}, 'notice', '  of the notice\'s own money';
is $d->{channel_refund_no}, 'SBXR-0001', '  with the channel\'s refund number';
ok defined rfc3339_to_epoch($d->{completed_at}), '  and when it completed';
my $notice = $d->{notice} // {};
is $notice->{payment_code}, $code, 'data.notice is the notice';
is $notice->{status}, 'PARTIALLY_REFUNDED', '  PARTIALLY_REFUNDED';
is $notice->{refunded_amount}, 3000, '  with what came back';
is_deeply [ map { $_->{refund_id} } @{ $notice->{refunds} // [] } ], [ $id ], '  and its refunds';
is $notice->{payment}{amount}, 10000, '  and its payment';
ok $req->{body} !~ /张三|payer_id|id_no/, 'no personal data of the payer';

my $fin = wait_body($hook_f, 'refund.succeeded', $code, 'refund.succeeded at finance');
is $fin->{json}{id}, $ev->{id}, 'the finance system gets it, with the same event id';
($ok, $why) = GovPay::Webhook::signature_ok($fin, $fin_secret, 'sm3');
ok $ok, '  signed with its own key (HMAC-SM3)' or diag $why;

# the receipts follow: receipt.reversed, then receipt.issued for 70.00
my $rev = wait_body($hook_a, 'receipt.reversed', $code, 'receipt.reversed at the unit');
like $rev->{json}{id}, qr/^evt_\d+_\d+_\d+$/, 'receipt.reversed reaches the unit (settled stream)';
my $hist = wait_for(sub {
    my @i = bodies($hook_a, 'receipt.issued', $code);
    return @i >= 2 ? $i[-1]{json}{data} : 0;
}, 15, 'the receipt for the amount kept');
ok $hist, 'so does receipt.issued of the receipt for the amount kept';
is $hist && scalar @{ $hist->{receipts} // [] }, 3,
    '  whose notice shows the receipts: the first, the red-letter one, the new one';
is $hist && $hist->{receipt}{number}, $hist && $hist->{receipts}[2]{number},
    '  the new one as the notice\'s receipt';

###############################################################################
# a refund fails

my $id2 = GovPay::Refunds::ask($t, $code, 5000);
GovPay::Refunds::end($t, $id2, 'FAILED', error => '账户已销户');
my $f = wait_body($hook_a, 'refund.failed', $code, 'refund.failed at the unit')->{json};
is $f->{data}{refund_id}, $id2, 'the unit gets refund.failed of the refund';
is $f->{data}{status}, 'FAILED', '  FAILED';
is $f->{data}{error}, '账户已销户', '  with the channel\'s reason';
is $f->{data}{notice}{status}, 'PARTIALLY_REFUNDED', '  the notice back to what it was';
is $f->{data}{notice}{refunded_amount}, 3000, '  nothing more came back';
ok wait_body($hook_f, 'refund.failed', $code, 'refund.failed at finance')->{json}{id},
    'the finance system gets it too';

###############################################################################
# the same entry id in both streams of a shard: two events, two ids

my $key = GovPay::Refunds::notice_key($t, $code);
my ($s) = $key =~ /^\{gp(\d+)\}/;
my ($last) = sort { $b <=> $a } map { /^(\d+)-/ ? $1 : 0 } map { $_->{id} }
    grep { $_->{shard} == $s } ($t->stream_entries('settled'), $t->stream_entries('refunds'));
my $same = ($last + 1000) . '-0';
my ($issued) = grep { $_->{shard} == $s && $_->{fields}{type} eq 'receipt.issued' }
    $t->stream_entries('settled');
my ($done) = grep { ($_->{fields}{refund_id} // '') eq $id2 && $_->{fields}{type} eq 'refund.failed' }
    $t->stream_entries('refunds');
$r->xadd("{gp$s}:settled", $same, map { $_ => $issued->{fields}{$_} } @{ $issued->{order} });
$r->xadd("{gp$s}:refunds", $same, map { $_ => $done->{fields}{$_} } @{ $done->{order} });
(my $e_settled = "evt_${s}_$same") =~ s/-/_/;
(my $e_refunds = "evt_r${s}_$same") =~ s/-/_/;
ok wait_for(sub {
    my %ids = map { $_->{headers}{'govpay-event-id'} => 1 } $hook_a->received;
    return $ids{$e_settled} && $ids{$e_refunds};
}, 15, 'both events of one entry id'), "entry $same of both streams: the unit gets $e_settled and $e_refunds";
my %seen;
$seen{ $_->{headers}{'govpay-event-id'} }++ for $hook_a->received;
is scalar(grep { $_ > 1 } values %seen), 0, 'every event id the unit got is one event';

###############################################################################
# a refund event whose delivery dies, then ops send it again

my $since = int(time) - 1;
my $m = $t->new_notice(amount => 4000, _opts => { unit => $UNIT2 });
is $t->sandbox_pay($m)->body, 'success', 'a notice of a unit whose webhook is down is paid';
my $mid = $t->signed_request(POST => "/v1/notices/$m->{payment_code}/refunds",
    { request_id => 'RF-B-1', amount => 4000, reason => '误缴' }, unit => $UNIT2)->json->{refund_id};
GovPay::Refunds::end($t, $mid, 'SUCCEEDED');
my $dl = wait_for(sub {
    my ($x) = grep { ($_->{fields}{type} // '') eq 'refund.succeeded'
                     && ($_->{fields}{plugin} // '') eq 'notify'
                     && ($_->{fields}{payment_code} // '') eq $m->{payment_code} }
        $t->stream_entries('dead');
    return $x;
}, 20, 'the dead letter of the refund event');
ok $dl, 'its refund.succeeded dies after the schedule' or diag $t->worker_log;
like $dl->{fields}{stream} // '', qr/^\{gp\d+\}:refunds$/, 'the dead letter names the refunds stream';
like $dl->{fields}{event_id} // '', qr/^evt_r\d+_/, '  and the event id';

$hook_b->set_mode('200');
my ($rc, $out, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend',
    $dl->{fields}{event_id});
is $rc, 0, 'notify resend <evt_r…> queues it again' or diag $err;
my $again = wait_for(sub {
    my @b = grep { $_->{headers}{'govpay-event-id'} eq $dl->{fields}{event_id} } $hook_b->received;
    return @b >= 3 ? $b[-1] : 0;       # two tries that died, and the re-sent one
}, 15, 'the re-sent refund event');
ok $again, 'and the unit gets it, with the same event id';
my $body = json_decode($again ? $again->{body} : '{}') // {};
is $body->{data}{refund_id}, $mid, '  the same refund';

my $before = () = $hook_b->received;
($rc, $out, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend', '--unit', $UNIT2,
    '--since', $since);
is $rc, 0, 'notify resend --unit --since' or diag $err;
like $out, qr/queued \Q$dl->{fields}{event_id}\E for u:\Q$UNIT2\E/,
    'takes the refund events of the unit from the refunds stream too';
ok wait_for(sub { my @b = $hook_b->received; @b > $before }, 15, 'the re-sent events'),
    'and sends them';

($rc, undef, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend', 'evt_r999_1_0');
is $rc, 2, 'an event id of a shard that does not exist is refused';
($rc, undef, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend', 'evt_rx_1_0');
is $rc, 2, 'so is a malformed one';
($rc, undef, $err) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'resend', "evt_r${s}_1_0");
is $rc, 1, 'a well-formed id of no event is not found';
like $err, qr/no such event/, '  and says so';

###############################################################################

is $t->stop_worker('w1', 'TERM'), 0, 'the worker exits 0 on SIGTERM' or diag $t->worker_log;
$t->check_error_log;

done_testing;
