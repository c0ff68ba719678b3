#!/usr/bin/perl

# Anomalies are worked off (docs/internals.md, "Anomaly plugin"): money that
# reached the platform for a notice but could not pay it becomes a case with
# an owner and a state.  The policy refunds a second payment at once; other
# cases wait for ops: `anomaly list` shows what is open, `show` one case,
# `refund` gives the money back (a refund of origin anomaly, carried like a
# unit's, a bank's through the bank refunds index), `resolve` closes a case
# with a note.  A failed refund opens the case again; a notice with an open
# case is never archived; the commands refuse hostile input and change
# nothing then.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(decode_utf8);
use Test::More;
use Time::HiRes qw(time);
use GovPay::Test;
use GovPay::Refunds;
use GovPay::Webhook;

my $BANK = 'BANK-TEST-001';
my $UNIT = $GovPay::Test::UNIT;

my $t = GovPay::Test->new;
$t->new_unit_secret($BANK);
my $hook_f = GovPay::Webhook->start($t, name => 'finance');
my $fin_secret = random_string(40);
$t->write_file('keys/finance.secret', "$fin_secret\n");
my $reg = $t->default_registry;
push @{ $reg->{units} }, { id => $BANK, name => '测试银行', scheme => 'GOVPAY-HMAC-SHA256',
                           secret_file => "keys/$BANK.secret", kind => 'bank' };
$t->write_registry($reg);

$t->start_redis;
$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /bank/v1/ { gov_pay_bank; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $r = $t->redis;
my $archive = $t->dir . '/archive';
mkdir $archive;
my %plugins = (
    receipt => $t->receipt_config,
    notify  => { public_url => $t->public_url, poll_ms => 100,
                 subscribers => [ { name => 'nontax', url => $hook_f->url('/nontax'),
                                    scheme => 'GOVPAY-HMAC-SHA256',
                                    secret_file => 'keys/finance.secret' } ] },
    anomaly => { code_key => $t->code_key_file },
);
$t->start_worker(plugins => \%plugins);

# `gov-pay-worker -c worker-w1.json anomaly @args` -> (exit code, stdout, stderr)
sub cmd {
    my ($st, $out, $err) = $t->worker_command('w1', {}, 'anomaly', @_);
    return ($st >> 8, decode_utf8($out), decode_utf8($err));
}

sub list_json {
    my ($rc, $out) = cmd('list', '--json', @_);
    return $rc == 0 ? (json_decode(Encode::encode_utf8($out)) // []) : undef;
}

sub case_of {
    my ($code) = @_;
    my ($e) = grep { $_->{fields}{payment_code} eq $code } $t->stream_entries('anomaly');
    return $e ? "A$e->{shard}-$e->{id}" : undef;
}

sub case_fields {
    my ($id) = @_;
    my ($s, $eid) = $id =~ /^A(\d+)-(.+)$/;
    my $seq = $r->hget("{gp$s}:anomaly:cases", $eid) // return {};
    my %h = $r->hgetall("{gp$s}:n:$seq");
    return { map { (my $k = $_) =~ s/^case:\Q$eid\E\.//; ($k => $h{$_}) }
             grep { /^case:\Q$eid\E\./ } keys %h };
}

sub wait_state {
    my ($id, $state) = @_;
    return wait_for(sub { (case_fields($id)->{state} // '') eq $state }, 10, "$id $state");
}

sub bank_pay {
    my ($code, $no, $amount) = @_;
    return $t->signed_request(POST => '/bank/v1/payments', {
        payment_code => $code, amount => $amount, bank_trade_no => $no,
        paid_at => epoch_to_rfc3339(int(time) - 60) }, unit => $BANK);
}

###############################################################################
# a second payment: the policy refunds it at once

my $n = $t->new_notice(amount => 10000);
my $pc = $n->{payment_code};
is $t->sandbox_pay($n, trade_no => 'SBX-A-1')->body, 'success', 'a notice is paid';
is $t->sandbox_pay($n, trade_no => 'SBX-A-2')->body, 'success',
    'and paid again with another trade number: the channel is told success';
ok wait_for(sub { case_of($pc) }, 10, 'the anomaly entry'), 'the second payment is an anomaly';
my $ida = case_of($pc);
like $ida, qr/^A\d+-\d+-\d+$/, "its case id is A<shard>-<entry id>: $ida";
ok wait_state($ida, 'REFUNDING'), 'SECOND_PAYMENT: the policy refunds it at once'
    or diag $t->worker_log;
my $ca = case_fields($ida);
is $ca->{refund_id}, "${pc}R01", 'with a refund of the notice\'s numbering';
is $ca->{owner}, $UNIT, 'the case\'s owner is the notice\'s unit';
is $ca->{reason}, 'SECOND_PAYMENT', 'its reason';
is $ca->{amount}, 10000, 'its amount';
like $ca->{log}, qr/opened worker\n\d+ refund \Q${pc}R01\E policy$/, 'its log says who did what';

my ($rq) = grep { $_->{fields}{refund_id} eq "${pc}R01" } $t->stream_entries('refunds');
is $rq->{fields}{type}, 'refund.requested', 'refund.requested is on the refunds stream';
is $rq->{fields}{origin}, 'anomaly', '  of origin anomaly';
is $rq->{fields}{anomaly_id}, ($ida =~ /^A\d+-(.*)$/)[0], '  naming the anomaly';
is $rq->{fields}{channel_trade_no}, 'SBX-A-2', '  of the second payment\'s trade number';
is $rq->{fields}{amount}, 10000, '  and amount';
is_deeply $rq->{order}, [qw(type refund_id payment_code unit notice_key amount origin anomaly_id
                             channel channel_trade_no paid_amount created_at)],
    '  with the fields of a unit\'s refund.requested, and anomaly_id';
my %nh = $r->hgetall($rq->{fields}{notice_key});
is $nh{'r01.origin'}, 'anomaly', 'the refund is in the notice, origin anomaly';
is $nh{'r01.status'}, 'REFUNDING', '  REFUNDING';
is $nh{status}, 'PAID', 'the notice stays PAID: the money never paid it';
ok !defined $nh{refunds} && !defined $nh{refunding_amount},
    'and the refund is not one of its own refunds';
my $j = $t->get_notice($pc)->json;
ok !exists $j->{refunds}, 'the unit does not see it among the notice\'s refunds';

GovPay::Refunds::end($t, "${pc}R01", 'SUCCEEDED');
ok wait_state($ida, 'REFUNDED'), 'the refund succeeds: the case is REFUNDED';
my $fin = wait_for(sub {
    my ($x) = grep { my $b = json_decode($_->{body}) // {};
                     ($b->{type} // '') eq 'refund.succeeded' && ($b->{data}{refund_id} // '') eq "${pc}R01" }
        $hook_f->received;
    return $x;
}, 10, 'the finance webhook');
my $fb = json_decode($fin ? $fin->{body} : '{}') // {};
is $fb->{data}{origin}, 'anomaly', 'the finance system hears of it, origin anomaly';
is $fb->{data}{anomaly_id}, ($ida =~ /^A\d+-(.*)$/)[0], '  with the anomaly\'s id';
is $fb->{data}{notice}{refunded_amount}, undef, '  the notice\'s refunded amount is untouched';
ok wait_for(sub { !grep { $_->{case} eq $ida } @{ list_json() // [] } }, 5, 'the list'),
    'a refunded case is not listed as open';
my ($done) = grep { $_->{fields}{type} eq 'refund.succeeded' && $_->{fields}{refund_id} eq "${pc}R01" }
    $t->stream_entries('refunds');
ok wait_for(sub { $t->worker_log =~ /receipt \Q$done->{stream} $done->{id}\E .*no receipt for a refund of origin anomaly/ },
            15, 'the receipt plugin to read the refund'),
    'the receipt plugin reads the anomaly\'s refund, and makes no receipt for it';
is scalar(grep { ($_->{fields}{refund_id} // '') eq "${pc}R01" } $t->stream_entries('settled')), 0,
    '  no receipt event of it';
ok !$r->hget($rq->{fields}{notice_key}, 'r01.red_receipt'), '  no red-letter receipt';

###############################################################################
# a wrong amount: OPEN, worked by ops

my $m = $t->new_notice(amount => 5000);
is $t->sandbox_pay($m, total_fen => 4999, trade_no => 'SBX-B-1')->body, 'success',
    'a notice paid with the wrong amount';
ok wait_for(sub { case_of($m->{payment_code}) }, 10, 'the anomaly'), 'is an anomaly';
my $idb = case_of($m->{payment_code});
ok wait_state($idb, 'OPEN'), 'AMOUNT_MISMATCH: the case waits, OPEN';

my $l = list_json();
my ($row) = grep { $_->{case} eq $idb } @{ $l // [] };
ok $row, 'anomaly list --json shows the open case';
is $row->{state}, 'OPEN', '  OPEN';
is $row->{reason}, 'AMOUNT_MISMATCH', '  its reason';
is $row->{amount}, 4999, '  the money that came (fen)';
is $row->{payment_code}, $m->{payment_code}, '  its notice';
is $row->{owner}, $UNIT, '  its owner';
is $row->{channel_trade_no}, 'SBX-B-1', '  the payment to give back';
my ($rc, $out, $err) = cmd('list');
is $rc, 0, 'anomaly list exits 0' or diag $err;
like $out, qr/^\Q$idb\E\s+OPEN\s+AMOUNT_MISMATCH\s+49\.99\s+\Q$m->{payment_code}\E\s+sandbox\s+\Q$UNIT\E/m,
    'and prints it, amount in yuan';
like $out, qr/^1 open case\(s\)$/m, 'counting what is open';

($rc, $out) = cmd('show', $idb);
is $rc, 0, 'anomaly show exits 0';
like $out, qr/^state\s+OPEN$/m, 'and shows the state';
like $out, qr/^amount\s+49\.99 yuan \(4999 fen\)$/m, 'the amount';
like $out, qr/^notice\s+\Q$m->{payment_code}\E .*UNPAID, unit \Q$UNIT\E$/m,
    'the notice, still unpaid';
like $out, qr/^  \d{4}-\d\d-\d\dT\S+ opened worker$/m, 'and its log';
my $show = json_decode(Encode::encode_utf8((cmd('show', $idb, '--json'))[1])) // {};
is $show->{case}, $idb, 'show --json: the case';
is $show->{notice}{status}, 'UNPAID', '  with its notice';

# hostile input changes nothing
# what a command could change: the cases, their notices, the refunds (the
# worker's own work meanwhile, webhooks and receipts, is not compared)
my $mine = qr/^[+~-] \{gp\d+\}:(?:n:\d+|anomaly:(?:cases|open)|refunds|bankrefunds|final)$/;
my $before = $t->redis_snapshot;
for my $bad ([ [ 'resolve', $idb ], 2, qr/with a note/, 'resolve without a note' ],
             [ [ 'resolve', $idb, '--note', '' ], 2, qr/the note must be/, 'an empty note' ],
             [ [ 'resolve', $idb, '--note', '   ' ], 2, qr/the note must be/, 'a note of spaces' ],
             [ [ 'resolve', $idb, '--note', "两行\n说明" ], 2, qr/the note must be/, 'a note of two lines' ],
             [ [ 'resolve', $idb, '--note', "\x{202e}已退" ], 2, qr/the note must be/,
               'a note with RIGHT-TO-LEFT OVERRIDE' ],
             [ [ 'resolve', $idb, '--note', 'x' x 501 ], 2, qr/the note must be/, 'a note of 501 characters' ],
             [ [ 'resolve', $idb, '--note', 'ok', '--by', 'a b' ], 2, qr/--by must be/, 'a --by with a space' ],
             [ [ 'refund', 'A1-1796000000000-0' ], 1, qr/no case A1-1796000000000-0/, 'an unknown case' ],
             [ [ 'show', 'A1-1796000000000-0' ], 1, qr/no case/, 'show of an unknown case' ],
             [ [ 'refund', 'A99-1796000000000-0' ], 2, qr/not a case id/, 'a shard that does not exist' ],
             [ [ 'refund', 'B1-1796000000000-0' ], 2, qr/not a case id/, 'another letter' ],
             [ [ 'refund', 'A1-1796000000000' ], 2, qr/not a case id/, 'an entry id without its sequence' ],
             [ [ 'refund', "A1-1'; FLUSHALL; -0" ], 2, qr/not a case id/, 'a case id with a quote' ],
             [ [ 'refund', 'A1-' . ('9' x 300) . '-0' ], 2, qr/not a case id/, 'a huge case id' ],
             [ [ 'refund' ], 2, qr/which case/, 'refund without a case' ],
             [ [ 'list', '--bogus' ], 2, qr/unexpected argument/, 'an unknown option' ],
             [ [ 'frob' ], 2, qr/usage:/, 'an unknown command' ]) {
    my ($args, $want, $re, $name) = @$bad;
    ($rc, $out, $err) = cmd(@$args);
    is $rc, $want, "$name: exit $want";
    like $err, $re, '  with a clear error';
}
is join("\n", grep { /$mine/ } split /\n/, GovPay::Test->snapshot_diff($before, $t->redis_snapshot)),
    '', 'hostile commands changed nothing';

# refund it by hand; it fails; it is OPEN again
($rc, $out, $err) = cmd('refund', $idb, '--by', 'alice');
is $rc, 0, 'anomaly refund exits 0' or diag $err;
like $out, qr/refund \Q$m->{payment_code}\ER01 requested/, 'and names the refund';
is case_fields($idb)->{state}, 'REFUNDING', 'the case is REFUNDING';
($rc, $out) = cmd('refund', $idb);
is $rc, 0, 'asking again is fine';
like $out, qr/already in flight/, '  it says the refund is in flight';
is scalar(grep { $_->{fields}{type} eq 'refund.requested'
                 && $_->{fields}{payment_code} eq $m->{payment_code} } $t->stream_entries('refunds')), 1,
    '  and makes no second refund';
($rc, undef, $err) = cmd('resolve', $idb, '--note', '已线下处理');
is $rc, 1, 'a case whose refund is in flight cannot be resolved';
like $err, qr/REFUNDING: a refund is in flight/, '  and says so';

GovPay::Refunds::end($t, "$m->{payment_code}R01", 'FAILED', error => 'ACCOUNT_CLOSED');
ok wait_state($idb, 'OPEN'), 'its refund fails: the case is OPEN again' or diag $t->worker_log;
is case_fields($idb)->{error}, 'ACCOUNT_CLOSED', '  with the channel\'s reason';
ok wait_for(sub { $t->worker_log =~ /case \Q$idb\E: refund \S+ failed \(ACCOUNT_CLOSED\): the case is OPEN again/ },
            10, 'the warning'), '  and the worker warns';
ok((grep { $_->{case} eq $idb } @{ list_json() // [] }), 'it is listed as open again');

# resolve it with a note
($rc, $out, $err) = cmd('resolve', $idb, '--note', '已电话联系缴款人，线下退回现金', '--by', 'bob');
is $rc, 0, 'anomaly resolve with a note exits 0' or diag $err;
my $cb = case_fields($idb);
is $cb->{state}, 'RESOLVED', 'the case is RESOLVED';
is decode_utf8($cb->{note}), '已电话联系缴款人，线下退回现金', 'with the note';
is $cb->{resolved_by}, 'bob', 'and who resolved it';
ok !(grep { $_->{case} eq $idb } @{ list_json() // [] }), 'it is no longer listed as open';
my ($all) = grep { $_->{case} eq $idb } @{ list_json('--all') // [] };
is $all && $all->{state}, 'RESOLVED', 'anomaly list --all shows it, RESOLVED';
($rc, undef, $err) = cmd('resolve', $idb, '--note', 'again');
is $rc, 1, 'resolving it again is refused';
like $err, qr/is RESOLVED: it is closed/, '  it is closed';
($rc, undef, $err) = cmd('refund', $idb);
is $rc, 1, 'so is a refund of it';

###############################################################################
# a bank's second payment: the bank is offered the refund, and reports it

my $k = $t->new_notice(amount => 7000);
is bank_pay($k->{payment_code}, 'BK-1', 7000)->json->{result}, 'PAID', 'a bank takes a payment';
is bank_pay($k->{payment_code}, 'BK-2', 7000)->json->{result}, 'ANOMALY',
    'and a second one for the same notice';
ok wait_for(sub { case_of($k->{payment_code}) }, 10, 'the bank anomaly'), 'an anomaly';
my $idk = case_of($k->{payment_code});
ok wait_state($idk, 'REFUNDING'), 'the policy refunds it';
my $offer = $t->signed_request(GET => '/bank/v1/refunds', undef, unit => $BANK)->json // {};
my ($o) = grep { $_->{refund_id} eq "$k->{payment_code}R01" } @{ $offer->{refunds} // [] };
ok $o, 'the bank is offered the refund (GET /bank/v1/refunds)';
is $o && $o->{bank_trade_no}, 'BK-2', '  of the second payment';
is $o && $o->{amount}, 7000, '  its amount';
my $res = $t->signed_request(POST => "/bank/v1/refunds/$k->{payment_code}R01", {
    result => 'SUCCEEDED', bank_refund_no => 'BR-9', refunded_at => epoch_to_rfc3339(int(time)) },
    unit => $BANK);
is $res->status, 200, 'the bank reports it done' or diag $res->describe;
ok wait_state($idk, 'REFUNDED'), 'the case is REFUNDED';

###############################################################################
# entries read again change nothing

my $requested = grep { $_->{fields}{type} eq 'refund.requested' } $t->stream_entries('refunds');
$r->xgroup('SETID', $_, 'anomaly', '0') for map { "{gp$_}:anomaly" } 0 .. $t->shards - 1;
$t->stop_worker;
$t->start_worker(plugins => \%plugins);
ok wait_for(sub { $t->worker_log =~ /\Q$ida\E \(SECOND_PAYMENT\) exists: REFUNDED/ }, 10, 'the replay'),
    'an anomaly read again finds its case';
is scalar(grep { $_->{fields}{type} eq 'refund.requested' } $t->stream_entries('refunds')), $requested,
    'and no refund is made twice';
is case_fields($idb)->{state}, 'RESOLVED', 'a resolved case stays resolved';

###############################################################################
# money for a cancelled notice: its case holds the notice until it is closed

my $c = $t->new_notice(amount => 3000);
is $t->signed_request(POST => "/v1/notices/$c->{payment_code}/cancel", '')->status, 200,
    'a notice is cancelled';
is $t->sandbox_pay($c, trade_no => 'SBX-C-1')->body, 'success', 'and paid afterwards';
ok wait_for(sub { case_of($c->{payment_code}) }, 10, 'the anomaly'), 'an anomaly';
my $idc = case_of($c->{payment_code});
ok wait_state($idc, 'OPEN'), 'NOT_PAYABLE: OPEN';
my ($cs, $ceid) = $idc =~ /^A(\d+)-(.*)$/;
my $ckey = "{gp$cs}:n:" . $r->hget("{gp$cs}:anomaly:cases", $ceid);

$t->write_worker_config('ret', plugins => {
    retention => { keep_s => 1, archive_dir => $archive, code_key => $t->code_key_file },
    %plugins });
my $final = $r->zscore("{gp$cs}:final", ($ckey =~ /(\d+)$/)[0]);
ok defined $final, 'the cancelled notice is final';
ok wait_for(sub { time >= $final + 2.2 }, 10, 'keep_s'), 'keep_s passes';
my ($st, $rout) = $t->worker_command('ret', {}, 'retention', 'run');
is $st >> 8, 0, 'a retention pass runs';
ok $r->exists($ckey), 'a notice with an open case is not archived nor deleted';
like $rout, qr/held for an open anomaly case [1-9]/, '  the pass says it held it';
like $rout, qr/\{gp\d+\}:anomaly: trimmed \d+ entries/,
    'the anomaly stream is trimmed once the anomaly plugin has read it';

($rc, undef, $err) = cmd('resolve', $idc, '--note', '缴款人重新开具缴款书后已抵扣');
is $rc, 0, 'the case is resolved' or diag $err;
my $moved = $r->zscore("{gp$cs}:final", ($ckey =~ /(\d+)$/)[0]);
cmp_ok $moved, '>', $final, 'closing the case moves the notice\'s final time on';
ok wait_for(sub { time >= $moved + 2.2 }, 10, 'keep_s'), 'keep_s passes';
($st, $rout) = $t->worker_command('ret', {}, 'retention', 'run');
ok !$r->exists($ckey), 'then the notice is archived and deleted';
ok !defined $r->hget("{gp$cs}:anomaly:cases", $ceid), 'its case leaves the case index';
my @lines = map { json_decode($_) } do {
    open my $fh, '<:raw', (glob "$archive/notices-*.jsonl")[0] or die "no archive";
    <$fh>;
};
my ($line) = grep { $_->{payment_code} eq $c->{payment_code} } @lines;
is $line && $line->{notice}{"case:$ceid.state"}, 'RESOLVED', 'and is archived with the notice';

###############################################################################
# configuration

for my $bad ([ { }, qr/"code_key" is required/, 'no code_key' ],
             [ { code_key => $t->code_key_file, auto_refund => ['REFUND_ALL'] },
               qr/"auto_refund"\[0\] must be one of/, 'an unknown reason in the policy' ],
             [ { code_key => $t->code_key_file, auto_refund => 'SECOND_PAYMENT' },
               qr/"auto_refund" must be an array/, 'a policy that is not an array' ],
             [ { code_key => $t->code_key_file, owner => "a\nb" }, qr/"owner" must be/,
               'an owner with a newline' ],
             [ { code_key => $t->code_key_file, extra => 1 }, qr/unknown field "extra"/,
               'an unknown field' ]) {
    my ($conf, $re, $name) = @$bad;
    my $cfg = $t->write_worker_config('bad', plugins => { anomaly => $conf });
    my $out = `${\ GovPay::Test::worker_path()} -t -c $cfg 2>&1`;
    is $? >> 8, 1, "-t refuses $name";
    like $out, $re, '  and says why';
}

$t->check_error_log;

done_testing;
