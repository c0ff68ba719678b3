#!/usr/bin/perl

# The retention plugin (docs/operations.md, "Retention"): nothing in Redis
# grows without bound.  Streams are trimmed only up to what every consumer
# group acknowledged; dead letters by age; an expired unpaid notice leaves
# the ID-number index; cancelled and paid+receipted notices are archived to
# a JSON-lines file and then deleted (with their receipt records) after
# keep_s, unpaid and unreceipted ones are kept; a crash between archive and
# delete loses nothing and deletes nothing twice.  Passes are driven with
# `gov-pay-worker retention run`, never by waiting for the schedule.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Path qw(make_path);
use Test::More;
use Time::HiRes qw(time);
use GovPay::Test;
use GovPay::Refunds;

my $t = GovPay::Test->new;
$t->write_file('keys/lookup.key', random_string(40) . "\n");
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_lookup_key => $t->dir . '/keys/lookup.key' });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /o/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $r = $t->redis;
my $archive = $t->dir . '/archive';
make_path($archive);

# a worker.json with the retention plugin only (no worker runs it: the
# command reads it); %o overrides the plugin's fields
sub retention_config {
    my ($name, %o) = @_;
    $t->write_worker_config($name, plugins => { retention => {
        keep_s => 86400, archive_dir => $archive,
        code_key => $t->code_key_file, trim_groups => ['receipt'], %o } });
}

# `retention run` with the worker.json of $name -> (exit code, stdout, stderr)
sub run_pass {
    my ($name, %env) = @_;
    my ($st, $out, $err) = $t->worker_command($name, \%env, 'retention', 'run');
    return ($st >> 8, $out, $err);
}

# every archived line, decoded
sub archived {
    my @lines;
    for my $f (sort glob "$archive/notices-*.jsonl") {
        open my $fh, '<:raw', $f or die "$f: $!";
        push @lines, map { json_decode($_) // { bad => $_ } } <$fh>;
    }
    return @lines;
}

sub archived_codes { my %c = (map { $_->{payment_code} // '' => 1 } archived()); return \%c }

# a new notice: { code, key, shard, seq }
sub notice {
    my (%o) = @_;
    my $body = $t->notice_body(%o);
    my $res = $t->signed_request(POST => '/v1/notices', $body);
    die 'cannot create a notice: ' . $res->describe unless $res->status == 201;
    my ($key) = $t->stored_notice($body->{request_id});
    my ($shard, $seq) = $key =~ /^\{gp(\d+)\}:n:(\d+)$/ or die "bad key $key";
    return { code => $res->json->{payment_code}, key => $key, shard => $shard,
             seq => $seq, json => $res->json, pidx => $t->redis->hget($key, 'pidx') };
}

sub cancel {
    my ($n) = @_;
    my $res = $t->signed_request(POST => "/v1/notices/$n->{code}/cancel", '');
    die 'cannot cancel: ' . $res->describe unless $res->status == 200;
}

sub lookup {
    my ($item, $q) = @_;
    return $t->request(POST => "/o/$item", body => "q=$q",
                       headers => { 'Content-Type' => 'application/x-www-form-urlencoded' });
}

# as if time had passed: the notice fell due $ago seconds ago
sub backdate {
    my ($n, $ago) = @_;
    my $due = int(time) - $ago;
    $r->hset($n->{key}, due_at => $due);
    $r->zadd("{gp$n->{shard}}:due", $due, $n->{seq});
    return $due;
}

###############################################################################
# configuration

{
    my @bad = (
        [ { keep_s => 0 }, qr/"keep_s" must be 1 to/, 'keep_s 0' ],
        [ { keep_s => '400' }, qr/"keep_s" must be an integer/, 'keep_s as a string' ],
        [ { batch => 0 }, qr/"batch" must be 1 to/, 'batch 0' ],
        [ { interval_s => -5 }, qr/"interval_s" must be 1 to/, 'a negative interval' ],
        [ { archive_dir => undef }, qr/"archive_dir" is required/, 'no archive_dir' ],
        [ { archive_dir => $t->dir . '/no-such-folder' }, qr/is not a folder/, 'a missing archive_dir' ],
        [ { code_key => $t->dir . '/keys/lookup.key' }, qr/hex|key/i, 'a code key that is not 64 hex digits' ],
        [ { trim_groups => ['receipt', 'no spaces'] }, qr/"trim_groups"/, 'a group name with a space' ],
        [ { trim_groups => 'receipt' }, qr/"trim_groups" must be an array/, 'trim_groups not an array' ],
        [ { frobnicate => 1 }, qr/unknown field "frobnicate"/, 'an unknown field' ],
    );
    for my $b (@bad) {
        my ($o, $re, $what) = @$b;
        my %conf = (keep_s => 86400, archive_dir => $archive, code_key => $t->code_key_file, %$o);
        delete $conf{$_} for grep { !defined $conf{$_} } keys %conf;
        $t->write_worker_config('bad', plugins => { retention => \%conf });
        my $text = `${\ GovPay::Test::worker_path()} -t -c ${\ $t->dir}/worker-bad.json 2>&1`;
        isnt $? >> 8, 0, "worker.json with $what is refused";
        like $text, $re, "  and the message names the fault ($what)";
    }

    retention_config('ok');
    my $text = `${\ GovPay::Test::worker_path()} -t -c ${\ $t->dir}/worker-ok.json 2>&1`;
    is $? >> 8, 0, 'a complete retention configuration checks out' or diag $text;

    my ($st, $out, $err) = $t->worker_command('ok', { GOV_PAY_RETENTION_FAULT => 'bogus' },
                                              'retention', 'run');
    isnt $st >> 8, 0, 'an unknown GOV_PAY_RETENTION_FAULT is refused';
    like $err, qr/unknown GOV_PAY_RETENTION_FAULT/, '  with a message saying so';

    ($st, $out, $err) = $t->worker_command('ok', {}, 'retention', 'frob');
    is $st >> 8, 2, 'an unknown retention command exits 2';
    like $err, qr/usage: .*retention run \| status/, '  and shows the usage';
}

###############################################################################
# streams

{
    # {gp0}:settled, six entries; "receipt" has all of them delivered and
    # acknowledged but e4; "retention" has e1..e5 delivered and acknowledged
    my $s = '{gp0}:settled';
    my @e = map { $r->xadd($s, '*', type => 'test.event', n => $_) } 1 .. 6;
    $r->xgroup('CREATE', $s, 'receipt', '0');
    $r->xgroup('CREATE', $s, 'retention', '0');
    $r->xreadgroup('GROUP', 'receipt', 'c1', 'COUNT', 10, 'STREAMS', $s, '>');
    $r->xack($s, 'receipt', @e[0 .. 2, 4, 5]);
    $r->xreadgroup('GROUP', 'retention', 'c1', 'COUNT', 5, 'STREAMS', $s, '>');
    $r->xack($s, 'retention', @e[0 .. 4]);

    # {gp1}:settled: acknowledged by "receipt", but "retention" does not
    # read it yet; {gp2}:anomaly: nobody reads it
    my $s1 = '{gp1}:settled';
    my @f = map { $r->xadd($s1, '*', type => 'test.event', n => $_) } 1 .. 3;
    $r->xgroup('CREATE', $s1, 'receipt', '0');
    $r->xreadgroup('GROUP', 'receipt', 'c1', 'COUNT', 10, 'STREAMS', $s1, '>');
    $r->xack($s1, 'receipt', @f);
    $r->xadd('{gp2}:anomaly', '*', reason => 'AMOUNT_MISMATCH') for 1 .. 2;

    # the anomaly and refunds streams: read by their owners' groups
    # ("anomaly", "refund"), which must be there before anything goes
    my %own;
    for my $x ([ '{gp4}:anomaly', 'anomaly' ], [ '{gp5}:anomaly', 'notify' ],
               [ '{gp6}:refunds', 'refund' ], [ '{gp7}:refunds', 'receipt' ]) {
        my ($key, $group) = @$x;
        my @ids = map { $r->xadd($key, '*', type => 'test.event', n => $_) } 1 .. 2;
        $r->xgroup('CREATE', $key, $group, '0');
        $r->xreadgroup('GROUP', $group, 'c1', 'COUNT', 10, 'STREAMS', $key, '>');
        $r->xack($key, $group, @ids);
        $own{$key} = $group;
    }

    # dead letters: one two days old, one new
    my $old = (int(time) - 2 * 86400) * 1000;
    $r->xadd('{gp0}:dead', "$old-0", plugin => 'receipt', error => 'old');
    my $new = $r->xadd('{gp0}:dead', '*', plugin => 'receipt', error => 'new');

    retention_config('streams', trim_groups => ['receipt', 'retention']);
    my ($rc, $out, $err) = run_pass('streams');
    is $rc, 0, 'retention run exits 0' or diag $err;

    my @left = map { $_->[0] } @{ $r->xrange($s, '-', '+') };
    is_deeply \@left, [ @e[3 .. 5] ],
        'a stream is trimmed up to the oldest entry some group has not acknowledged '
        . '(pending for one group, or not yet delivered to another)';
    like $out, qr/\Q$s\E: trimmed 3 entries/, 'the command says what it trimmed';
    is $r->xlen($s1), 3, 'a stream lacking a group of trim_groups is not trimmed';
    like $out, qr/\Q$s1\E: not trimmed, consumer group "retention" is missing/,
        '  and the command says which group is missing';
    like $err, qr/\Q$s1\E is not trimmed: consumer group "retention"/, '  and logs a warning';
    is $r->xlen('{gp2}:anomaly'), 2, 'a stream without a consumer group is not trimmed';
    is $r->xlen('{gp4}:anomaly'), 0, 'an anomaly stream that the anomaly plugin has read is trimmed';
    is $r->xlen('{gp5}:anomaly'), 2, 'one that only another group has read is not';
    like $out, qr/\{gp5\}:anomaly: not trimmed, consumer group "anomaly" is missing/,
        '  for want of the anomaly group';
    is $r->xlen('{gp6}:refunds'), 0, 'a refunds stream that the refund plugin has read is trimmed';
    is $r->xlen('{gp7}:refunds'), 2, 'one that the refund plugin has not read is not';
    like $out, qr/\{gp7\}:refunds: not trimmed, consumer group "refund" is missing/,
        '  for want of the refund group';
    is_deeply [ map { $_->[0] } @{ $r->xrange('{gp0}:dead', '-', '+') } ], [$new],
        'dead letters older than keep_s are trimmed, newer ones kept';

    # the pending entry is acknowledged: the stream moves on to what
    # "retention" has not seen yet (e6), then to nothing
    $r->xack($s, 'receipt', $e[3]);
    ($rc, $out) = run_pass('streams');
    is_deeply [ map { $_->[0] } @{ $r->xrange($s, '-', '+') } ], [ $e[5] ],
        'once acknowledged, the entry goes; an entry a group has not read stays';
    $r->xreadgroup('GROUP', 'retention', 'c1', 'COUNT', 5, 'STREAMS', $s, '>');
    $r->xack($s, 'retention', $e[5]);
    ($rc, $out) = run_pass('streams');
    is $r->xlen($s), 0, 'a stream every group has acknowledged is trimmed to nothing';
    my $e7 = $r->xadd($s, '*', type => 'test.event', n => 7);
    ($rc, $out) = run_pass('streams');
    is_deeply [ map { $_->[0] } @{ $r->xrange($s, '-', '+') } ], [$e7],
        'an entry added after the groups caught up is kept';
    $r->del($s, $s1, '{gp2}:anomaly', '{gp0}:dead', keys %own);
}

###############################################################################
# notices: expiry, archive, delete

my $id_no = valid_id_no('33010619491231002');
my %payer = (type => 'person', name => '张秀英', id_no => $id_no);

$t->start_worker(plugins => { receipt => $t->receipt_config });

my $U = notice(amount => 1001, payer => \%payer);               # unpaid, not due
my $E = notice(amount => 1002, payer => \%payer);               # unpaid, will expire
my $C = notice(amount => 1003, payer => \%payer);               # cancelled
my $P = notice(amount => 1004, payer => \%payer);               # paid and receipted

for my $n ($U, $E, $C, $P) {
    is $r->zscore("{gp$n->{shard}}:due", $n->{seq}), $r->hget($n->{key}, 'due_at'),
        "create puts notice $n->{code} in its shard's due set, scored by due_at";
}
my $pidx = $r->hget($E->{key}, 'pidx');
like $pidx // '', qr/^\{gp$E->{shard}\}:pidx:103001:[0-9a-f]{32}$/,
    'the notice names its ID-number index (field pidx)';
ok $r->sismember($pidx, $E->{seq}), 'and is a member of it';

cancel($C);
ok defined $r->zscore("{gp$C->{shard}}:final", $C->{seq}),
    'cancelling a notice puts it in the final set';
cmp_ok abs($r->zscore("{gp$C->{shard}}:final", $C->{seq}) - time), '<', 60,
    '  scored by the time it was cancelled';

is $t->sandbox_pay($P->{json}, trade_no => 'SBX-RET-P')->body, 'success', 'a notice is paid';
ok wait_for(sub { $r->hget($P->{key}, 'receipt_number') }, 15, 'the receipt'),
    'and receipted by the worker' or diag $t->worker_log;
my %P = $r->hgetall($P->{key});
is $r->zscore("{gp$P->{shard}}:final", $P->{seq}), $P{receipt_at},
    'the receipt puts the paid notice in the final set, scored by the receipt time';
my @gpr = ("{gpr}:r:$P{receipt_code}:$P{receipt_number}",
           "{gpr}:ridx:$P{receipt_code}:$P{receipt_number}", "{gpr}:biz:$P->{code}");
ok $r->exists($_), "the receipt has $_" for @gpr;

$t->stop_worker;
my $Q = notice(amount => 1005, payer => \%payer);               # paid, no receipt
is $t->sandbox_pay($Q->{json}, trade_no => 'SBX-RET-Q')->body, 'success',
    'another notice is paid while no receipt worker runs';
ok !defined $r->zscore("{gp$Q->{shard}}:final", $Q->{seq}),
    'a paid notice without its receipt is not final';

# E fell due an hour ago
my $E_due = backdate($E, 3600);
like lookup('103001', $id_no)->text, qr{/q/$U->{code}}, 'the /o/ lookup lists the unpaid notice';

retention_config('long');                                      # keep_s: a day
my ($rc, $out, $err) = run_pass('long');
is $rc, 0, 'a pass runs' or diag $err;
like $out, qr/notices expired 1, archived 0, deleted 0/, 'the command counts one notice expired';
ok !$r->sismember($pidx, $E->{seq}), 'an expired unpaid notice leaves the ID-number index';
my $html = lookup('103001', $id_no)->text;
unlike $html, qr{/q/$E->{code}}, 'the /o/ lookup by ID number does not list it';
like $html, qr{/q/$U->{code}}, 'the unpaid notice that is not yet due is still listed';
is $r->zscore("{gp$E->{shard}}:final", $E->{seq}), $E_due,
    'the expired notice is final, scored by its due time';
ok !defined $r->zscore("{gp$E->{shard}}:due", $E->{seq}), 'and left the due set';
ok $r->exists($_->{key}), "notice $_->{code} is kept before keep_s has passed"
    for $U, $E, $C, $P, $Q;
is scalar(archived()), 0, 'nothing is archived before keep_s has passed';

# keep_s 1: the final ones go once they are more than a second old
retention_config('short', keep_s => 1);
ok wait_for(sub {
    my ($rc2, $out2) = run_pass('short');
    return !$r->exists($C->{key}) && !$r->exists($P->{key});
}, 15, 'the final notices to be deleted'), 'final notices are deleted after keep_s';
ok !$r->exists($E->{key}), 'the expired notice too';
ok $r->exists($U->{key}), 'an unpaid notice that is not due is kept';
ok $r->exists($Q->{key}), 'a paid notice without its receipt is kept';
is $r->hget($Q->{key}, 'status'), 'PAID', '  unchanged';

my %lines = map { ($_->{payment_code} // '') => $_ } archived();
for my $n ($E, $C, $P) {
    my $l = $lines{ $n->{code} };
    ok $l, "notice $n->{code} is archived with its payment code";
    is $l && $l->{notice_key}, $n->{key}, '  with its notice key';
    like $l && $l->{archived_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/,
        '  and when it was archived (RFC 3339, +08:00)';
    is $l && $l->{notice}{amount}, $n->{json}{amount}, '  and every field of the notice';
}
is $lines{ $C->{code} }{final}, 'cancelled', 'the cancelled notice is archived as cancelled';
is $lines{ $C->{code} }{notice}{status}, 'CANCELLED', '  with its status';
is $lines{ $E->{code} }{final}, 'expired', 'the expired one as expired';
is $lines{ $P->{code} }{final}, 'paid', 'the receipted one as paid';
is $lines{ $P->{code} }{notice}{receipt_number}, $P{receipt_number}, '  with its receipt number';
is $lines{ $P->{code} }{notice}{payer_name_masked}, '张**', 'text is kept as UTF-8 (the masked name; the full one is sealed)';
ok !exists $lines{ $U->{code} } && !exists $lines{ $Q->{code} },
    'notices that are kept are not archived';
my ($day) = (epoch_to_rfc3339(time) =~ /^(\d{4}-\d\d-\d\d)/);
ok -s "$archive/notices-$day.jsonl" || glob("$archive/notices-*.jsonl"),
    'the archive file is named by the day (Asia/Shanghai)';

ok !$r->exists($_), "$_ is deleted with the notice" for @gpr;
ok !$r->exists("{gp$P->{shard}}:rcpt:$P->{seq}"), 'the receipt document too';
ok $_->{pidx} && !$r->sismember($_->{pidx}, $_->{seq}),
    "notice $_->{code} is out of its ID-number index" for $C, $P;
ok !defined $r->zscore("{gp$_->{shard}}:final", $_->{seq})
    && !defined $r->zscore("{gp$_->{shard}}:due", $_->{seq}), "notice $_->{code} left the sets"
    for $E, $C, $P;
is $r->zscore("{gp$U->{shard}}:due", $U->{seq}), $r->hget($U->{key}, 'due_at'),
    'the kept unpaid notice stays in the due set';
my $n_lines = scalar(archived());
run_pass('short');
is scalar(archived()), $n_lines, 'a pass with nothing final writes nothing';

###############################################################################
# a crash between archive and delete

# the receipt worker again: it also receipts Q, whose event waited for it
$t->start_worker(plugins => { receipt => $t->receipt_config });
my $K1 = notice(amount => 2001);
my $K2 = notice(amount => 2002);
cancel($K1);
$t->sandbox_pay($K2->{json}, trade_no => 'SBX-RET-K2');
ok wait_for(sub { $r->hget($K2->{key}, 'receipt_number') && $r->hget($Q->{key}, 'receipt_number') },
            15, 'the receipts of K2 and Q'),
    'paid notices are receipted, also one paid while no worker ran';
$t->stop_worker;
ok defined $r->zscore("{gp$Q->{shard}}:final", $Q->{seq}), 'its receipt makes that one final';

my @final = ($K1, $K2, $Q);
my %rec = map { my %h = $r->hgetall($_->{key}); ($_->{code} => [
    "{gpr}:r:$h{receipt_code}:$h{receipt_number}",
    "{gpr}:ridx:$h{receipt_code}:$h{receipt_number}", "{gpr}:biz:$_->{code}" ]) } $K2, $Q;
ok((!grep { !$r->exists($_) } map { @$_ } values %rec), 'their receipt records are in Redis');

# keep_s (1 s) passes for all three
my $last = 0;
for my $n (@final) {
    my $s = $r->zscore("{gp$n->{shard}}:final", $n->{seq}) // 0;
    $last = $s if $s > $last;
}
ok wait_for(sub { time >= $last + 2.2 }, 10, 'keep_s to pass'), 'keep_s passes';

# after_archive: a pass dies right after its first fsync'd lines
my $before = scalar(archived());
my ($st) = run_pass('short', GOV_PAY_RETENTION_FAULT => 'after_archive');
is $st, 137, 'a pass dies right after the archive fsync';
cmp_ok scalar(archived()), '>', $before, 'the lines it wrote are in the archive';
ok((!grep { !$r->exists($_->{key}) } @final), 'no notice is deleted');

# after_receipts: a pass dies after deleting some receipt records
($st) = run_pass('short', GOV_PAY_RETENTION_FAULT => 'after_receipts');
is $st, 137, 'a pass dies after deleting the receipt records of a notice, before the notice';
my @half = grep { !$r->exists($rec{ $_->{code} }[0]) && $r->exists($_->{key}) } $K2, $Q;
is scalar(@half), 1, 'one notice has lost its receipt records';
ok @half && defined $r->zscore("{gp$half[0]{shard}}:final", $half[0]{seq}),
    '  but is still there, still final';

($st, $out) = run_pass('short');
is $st, 0, 'the next pass runs to the end';
ok((!grep { $r->exists($_->{key}) } @final), 'and deletes every final notice');
ok((!grep { $r->exists($_) } map { @$_ } values %rec), 'and every receipt record');
ok((!grep { $r->exists("{gp$_->{shard}}:rcpt:$_->{seq}") } $K2, $Q), 'and every receipt document');
for my $n (@final) {
    my @l = grep { ($_->{payment_code} // '') eq $n->{code} } archived();
    cmp_ok scalar(@l), '>=', 1, "notice $n->{code} is in the archive at least once";
    cmp_ok scalar(@l), '<=', 3, '  and at most once per pass that reached it';
    is scalar(keys %{ { map { json_encode($_->{notice}) => 1 } @l } }), 1,
        '  every line of it holds the same notice';
}
ok $r->exists($U->{key}), 'the unpaid notice that is not due is still kept';

###############################################################################
# a refunded notice: every receipt of its payment goes with it

$t->start_worker(plugins => { receipt => $t->receipt_config });
my $RF = notice(amount => 3000);
is $t->sandbox_pay($RF->{json}, trade_no => 'SBX-RET-RF')->body, 'success', 'a notice is paid';
ok wait_for(sub { $r->hget($RF->{key}, 'receipt_number') }, 15, 'its receipt'), 'and receipted';
my $rid1 = GovPay::Refunds::ask($t, $RF->{code}, 1000);
GovPay::Refunds::end($t, $rid1, 'SUCCEEDED', key => $RF->{key});
ok wait_for(sub { $r->hget($RF->{key}, 'r01.receipt') }, 15, 'the partial refund\'s receipts'),
    'a partial refund reverses the receipt and issues one for the amount kept';
my $rid2 = GovPay::Refunds::ask($t, $RF->{code}, 2000);
GovPay::Refunds::end($t, $rid2, 'SUCCEEDED', key => $RF->{key});
ok wait_for(sub { $r->hget($RF->{key}, 'r02.red_receipt') }, 15, 'the full refund\'s receipt'),
    'the rest refunded reverses that one';
$t->stop_worker;

my $hist = json_decode($r->hget($RF->{key}, 'receipts')) // [];
is scalar @$hist, 4, 'four receipts: the payment\'s, two red-letter ones, one for the amount kept';
my @rfkeys = ((map { ("{gpr}:r:$_->{code}:$_->{number}", "{gpr}:ridx:$_->{code}:$_->{number}") }
               @$hist),
              map { "{gpr}:biz:$RF->{code}$_" } '', ":$rid1:red", ":$rid1", ":$rid2:red");
ok((!grep { !$r->exists($_) } @rfkeys), 'their records, indexes and biz keys are in Redis');
my $rf_final = $r->zscore("{gp$RF->{shard}}:final", $RF->{seq});
ok defined $rf_final, 'the refunded notice is final';
ok wait_for(sub { time >= $rf_final + 2.2 }, 10, 'keep_s to pass'), 'keep_s passes';
($st, $out) = run_pass('short');
is $st, 0, 'a pass runs';
ok !$r->exists($RF->{key}), 'the refunded notice is deleted';
my @left = grep { $r->exists($_) } @rfkeys;
is_deeply \@left, [], 'and every receipt of its payment with it, records, indexes and biz keys';
my ($rfl) = grep { ($_->{payment_code} // '') eq $RF->{code} } archived();
is $rfl && $rfl->{notice}{status}, 'REFUNDED', 'it is archived as REFUNDED';
is $rfl && $rfl->{notice}{'r02.amount'}, 2000, '  with its refunds';
is_deeply $rfl && json_decode($rfl->{notice}{receipts}), $hist, '  and the history of its receipts';

###############################################################################
# the plugin in a running worker: its own thread, a warning once, a clean stop

$r->xadd('{gp3}:settled', '*', type => 'test.event');
$t->start_worker(name => 'w2', plugins => { retention => {
    keep_s => 86400, archive_dir => $archive, code_key => $t->code_key_file,
    interval_s => 1, trim_groups => ['retention', 'nosuchplugin'] } });
ok wait_for(sub { my @p = $t->worker_log('w2') =~ /pass done/g; @p >= 2 },
            20, 'two passes of the retention thread'),
    'the retention thread runs a pass every interval_s' or diag $t->worker_log('w2');
my $warn = () = $t->worker_log('w2') =~ /\{gp3\}:settled is not trimmed: consumer group "nosuchplugin"/g;
is $warn, 1, 'a stream missing a group is warned about once';
is $r->xlen('{gp3}:settled'), 1, 'and not trimmed';
my $status = $t->stop_worker('w2');
is $status, 0, 'the worker stops cleanly with its retention thread';
like $t->worker_log('w2'), qr/retention thread stopped/, 'the thread says it stopped';

{
    my ($st2, $o2) = $t->worker_command('long', {}, 'retention', 'status');
    is $st2 >> 8, 0, 'retention status exits 0';
    like $o2, qr/final notices \(\{gpN\}:final\): \d+/, 'and shows the final notices';
}

$t->check_error_log;

done_testing;
