#!/usr/bin/perl

# bench/memory.pl: Redis memory per notice (docs/operations.md, "Capacity").
#
# A real nginx with the module creates the notices (the create script's exact
# fields, the ID-number index on: gov_pay_lookup_key), a real gov-pay-worker
# with the receipt plugin receipts the paid ones (the PDF is stored in
# Redis).  used_memory from INFO memory before and after:
#
#   (a) N unpaid notices as the edge creates them; then again once their
#       nonces and idempotency records have expired (what a notice costs
#       for the rest of its life);
#   (b) M of them paid (sandbox callbacks) and receipted: the notice's new
#       fields, the receipt records in {gpr} (with the PDF), the receipt
#       document, the settled stream entries; then again after the
#       retention plugin trimmed the streams (what stays until keep_s).
#
#   perl bench/memory.pl [--notices N (20000)] [--receipts M (N)]
#
# Figures only: nothing is asserted.  Redis runs with appendfsync everysec
# here (memory does not depend on it; the edge's own default is always).

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use File::Path qw(make_path);
use Getopt::Long;
use POSIX qw(strftime);
use Time::HiRes qw(time);
use GovPay::Test;

binmode STDOUT, ':utf8';

my $N = 20000;
my $M;
GetOptions('notices=i' => \$N, 'receipts=i' => \$M)
    or die "usage: perl bench/memory.pl [--notices N] [--receipts M]\n";
$M //= $N;
$M = $N if $M > $N;

my $t = GovPay::Test->new;
$t->write_file('keys/lookup.key', random_string(40) . "\n");
$t->start_redis(args => ['--appendfsync', 'everysec']);  # and hash-max-listpack-value 128, as in production
$t->start_nginx(<<'CONF', directives => { gov_pay_lookup_key => $t->dir . '/keys/lookup.key' });
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log off;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
CONF

my $r = $t->redis;

sub used { my ($m) = $r->info('memory')->{used_memory}; return $m }
sub keys_n { return $r->dbsize }

# a payer ID number of its own per notice (one ID-number index set each)
sub id_no {
    return valid_id_no(sprintf '330106%04d%02d%02d%03d', 1950 + int(rand(50)),
                       1 + int(rand(12)), 1 + int(rand(28)), int(rand(1000)));
}

# requests in parallel, 32 at a time; the 201 bodies
sub create {
    my ($n) = @_;
    my @notices;
    while (@notices < $n) {
        my $k = $n - @notices > 32 ? 32 : $n - @notices;
        my @raw = map { $t->signed_request_raw(POST => '/v1/notices',
            $t->notice_body(amount => 100 + int(rand(1_000_000)),
                            payer => { type => 'person', name => '张三',
                                       id_no => id_no() })) } 1 .. $k;
        for my $o ($t->parallel_requests(\@raw, 30)) {
            die "create failed: $o->{status} $o->{body}\n" unless $o->{status} eq '201';
            push @notices, json_decode($o->{body});
        }
    }
    return @notices;
}

# warm up: scripts loaded, the sequence counters and sets exist
create(64);

my $t0 = time;
my $before = used();
my $kbefore = keys_n();
my @notices = create($N);
my $created = used();
my $kcreated = keys_n();
my $secs = time - $t0;
my %kinds = map { my $p = $_; ($p => scalar(() = $t->redis_keys("{gp*}:$p:*"))) }
    qw(n nonce idem pidx);

# what stays after the nonces (2 x auth window) and idempotency records
# (gov_pay_idempotency_ttl, 8 days) expired
for my $pat ('{gp*}:nonce:*', '{gp*}:idem:*') {
    my @k = $t->redis_keys($pat);
    while (my @chunk = splice @k, 0, 500) { $r->del(@chunk) }
}
my $settled_unpaid = used();

my $unpaid_full = ($created - $before) / $N;
# the warm-up's 64 nonces and idempotency records went with the others:
# count them back in
my $warm = 64 * (($created - $settled_unpaid) / ($N + 64));
my $unpaid_life = ($settled_unpaid + $warm - $before) / $N;

# (b) paid and receipted
my $archive = $t->dir . '/archive';
make_path($archive);
$t->start_worker(plugins => { receipt => $t->receipt_config });

my $p0 = used();
my $t1 = time;
for my $i (0 .. $M - 1) {
    my $res = $t->sandbox_pay($notices[$i], trade_no => "SBX-MEM-$i");
    die 'pay failed: ' . $res->describe unless $res->body eq 'success';
}
my $yy = sprintf '%02d', current_yy();
my $rseq = "{gpr}:rseq:330101$yy";
my $done = wait_for(sub { ($r->get($rseq) // 0) >= $M + 0 }, 60 + $M / 5,
                    "$M receipts");
die 'the receipts were not all issued: ' . ($r->get($rseq) // 0) . " of $M\n"
    unless $done;
# the last receipts' notice scripts and the consumer groups' acks
wait_for(sub {
    my $ok = 1;
    for my $s (0 .. $t->shards - 1) {
        my @p = eval { $r->xpending("{gp$s}:settled", 'receipt') };
        $ok = 0 if @p && $p[0];
    }
    return $ok;
}, 30, 'the receipt group to acknowledge everything');
my $rsecs = time - $t1;
$t->stop_worker;
my $paid = used();

# the PDFs and records in {gpr}
my ($pdf, $rec, $n) = (0, 0, 0);
for my $k ($t->redis_keys('{gpr}:r:*')) {
    $pdf += $r->hstrlen($k, 'pdf');
    $rec += $r->memory('USAGE', $k, 'SAMPLES', 0) // 0;
    $n++;
    last if $n >= 200;
}
$pdf /= $n || 1;
$rec /= $n || 1;

# the streams trimmed by the retention plugin (every group has acknowledged)
$t->write_worker_config('ret', plugins => { retention => {
    archive_dir => $archive, code_key => $t->code_key_file,
    trim_groups => ['receipt'] } });
my $xlen = sub { my $n = 0; $n += $r->xlen("{gp$_}:settled") for 0 .. $t->shards - 1; $n };
my $xbefore = $xlen->();
my ($st, $out) = $t->worker_command('ret', {}, 'retention', 'run');
die "retention run failed: $out\n" if $st;
my $trimmed = used();

my $paid_full = ($paid - $p0) / $M + $unpaid_life;
my $paid_life = ($trimmed - $p0) / $M + $unpaid_life;

my $mib = sub { sprintf '%.1f GiB', $_[0] * 1e7 / 2**30 };
my $cpu = `grep -m1 'model name' /proc/cpuinfo` =~ s/.*:\s*//sr =~ s/\s+$//r;
my $ver = $r->info('server')->{redis_version};

printf "Redis %s, %s, %d cores, %s\n", $ver, $cpu, `nproc` + 0,
    strftime('%Y-%m-%d', localtime);
printf "%d notices created in %.1f s (%d keys more); %d paid and receipted in %.1f s\n\n",
    $N, $secs, $kcreated - $kbefore, $M, $rsecs;
printf "settled stream entries: %d before the retention pass, %d after\n",
    $xbefore, $xlen->();
printf "keys: %s\n\n", join ', ', map { "$kinds{$_} {gpN}:$_:*" } sort keys %kinds;
printf "%-62s %8s\n", 'used_memory per notice', 'bytes';
printf "%-62s %8.0f\n", '(a) unpaid, as created (with nonce and idempotency record)', $unpaid_full;
printf "%-62s %8.0f\n", '(a) unpaid, after nonce and idempotency record expired', $unpaid_life;
printf "%-62s %8.0f\n", '(b) paid + receipted, stream entries not yet trimmed', $paid_full;
printf "%-62s %8.0f\n", '(b) paid + receipted, streams trimmed', $paid_life;
printf "%-62s %8.0f\n", '    of which the receipt PDF (HSTRLEN pdf)', $pdf;
printf "%-62s %8.0f\n", '    the {gpr}:r: record with it (MEMORY USAGE)', $rec;
printf "\n10 million notices: %s unpaid, %s paid and receipted (streams trimmed)\n",
    $mib->($unpaid_life), $mib->($paid_life);

# nginx quit cleanly and its log holds no alert: the figures above are of a sound run
$t->done_testing;
