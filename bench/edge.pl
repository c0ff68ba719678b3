#!/usr/bin/perl

# bench/edge.pl: what the edge's routes cost, against nginx serving a static
# `return 200` and against Redis alone running the same scripts, in one run
# (the machines are shared and noisy: compare the ratios, not the absolute
# numbers).  docs/performance.md keeps the latest table.
#
# One nginx worker, a real redis-server (AOF on, appendfsync always, as the
# money path runs), wrk on loopback with --conns connections.  Signed unit
# requests and signed sandbox callbacks are prepared in advance (each with
# its own nonce or trade number, so none is a replay) and fed to wrk by
# bench/wrk-replay.lua.  Per route:
#
#   req/s, its ratio to `return 200` (x ceil) and, for the Redis-bound routes
#   (create, callback), to the Redis-alone limit of its script (x redis);
#   p99 latency (wrk); nginx CPU per request (the worker's utime + stime
#   from /proc over the run); Redis CPU per request; Redis commands per
#   request (INFO commandstats, commands run by scripts included) and
#   fsyncs per request (the fdatasync calls of redis-server, counted by
#   `perf stat` on its syscall tracepoint); the worker's RSS after the route.
#
# The Redis-alone limits are measured with redis-benchmark in the same run,
# on the same Redis, at the same durability, with --conns connections: the
# create script (EVALSHA of create.lua with the arguments the edge sent for
# a real create, nonce and request_id made random), and the settle path (the
# trade number's claim, SET NX GET, and settle.lua, each measured alone:
# Redis's time per callback is the sum of the two).
#
#   perl bench/edge.pl [--secs S (5)] [--conns C (64)]
#                      [--redis-connections N] [--long [REQUESTS]]
#                      [--only ROUTE,...] [--profile DIR]
#
# --redis-connections sets gov_pay_redis_connections (default: the
# module's).  --long runs every route again and again until REQUESTS
# (default 1 000 000) have been served, printing the worker's RSS after
# each round: no growth after the first round is the target.  --only runs
# some of the routes (static cashier svg get create callback; the ceiling
# always runs).  --profile DIR records each route with `perf record -g`
# (cpu-clock) on the nginx worker and on redis-server, and writes
# DIR/<route>.txt: where each of them spent its CPU.
#
# Figures only: nothing is asserted (the error log is checked at the end,
# as in the tests).

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Digest::SHA qw(hmac_sha256_hex sha1_hex);
use Encode qw(encode_utf8);
use File::Temp qw(tempdir);
use Getopt::Long;
use JSON::XS;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use GovPay::Test;

binmode STDOUT, ':utf8';

my %opt = (secs => 5, conns => 64);
GetOptions(\%opt, 'secs=i', 'conns=i', 'redis-connections=i', 'long:i',
           'only=s', 'profile=s')
    or die "usage: perl bench/edge.pl [--secs S] [--conns C] "
         . "[--redis-connections N] [--long [REQUESTS]] [--only ROUTE,...] "
         . "[--profile DIR]\n";
my %only = map { $_ => 1 } split /,/, $opt{only} // '';
sub wanted { return !%only || $only{ $_[0] } || $_[0] eq 'static' }
if ($opt{profile}) {
    require File::Path;
    File::Path::make_path($opt{profile});
}
$opt{long} = 1_000_000 if defined $opt{long} && $opt{long} == 0;

my ($secs, $conns) = @opt{qw(secs conns)};

for my $tool (qw(wrk redis-benchmark redis-cli)) {
    system("command -v $tool >/dev/null 2>&1") == 0
        or die "$tool is missing (make deps installs it)\n";
}

my $tools = GovPay::Test::build_dir() . '/bench';
-x "$tools/codes" or die "$tools/codes is missing: make bench-tools\n";

my $CLK_TCK = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

###############################################################################
# the edge

my $t = GovPay::Test->new;
$t->write_file('keys/lookup.key', random_string(40) . "\n");
$t->start_redis;

my %directives = (gov_pay_lookup_key => $t->dir . '/keys/lookup.key');
$directives{gov_pay_redis_connections} = $opt{'redis-connections'}
    if $opt{'redis-connections'};

my %nginx = (worker_processes => 1, error_log_level => 'notice',
             directives => \%directives);
$t->start_nginx(<<'CONF', %nginx);
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log off;
        location = /static { return 200 "ok"; }
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
CONF

my $url    = $t->public_url;
my ($wpid) = $t->nginx_workers;
my $rpid   = $t->redis_pid;
my $r      = $t->redis;
my $dir    = tempdir('gov-pay-bench-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $lua    = "$FindBin::Bin/wrk-replay.lua";

# every notice of its own payer (one ID-number index set each)
sub id_no {
    return valid_id_no(sprintf '330106%04d%02d%02d%03d', 1950 + int(rand(50)),
                       1 + int(rand(12)), 1 + int(rand(28)), int(rand(1000)));
}

sub body {
    return $t->notice_body(payer => { type => 'person', name => '张三',
                                      id_no => id_no() });
}

my $notice = $t->new_notice(%{ body() });
my $code   = $notice->{payment_code};

###############################################################################
# measuring

sub proc_cpu {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $stat = <$fh>;
    $stat =~ s/^.*\)\s+//s;                  # past "pid (comm)"
    my @f = split ' ', $stat;
    return ($f[11] + $f[12]) / $CLK_TCK;     # utime + stime, seconds
}

sub rss_kib {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

# every command Redis ran (scripts' commands included), but the bench's own
sub redis_calls {
    my $stats = $r->info('commandstats');
    my $n = 0;
    for my $k (keys %$stats) {
        next if $k =~ /^cmdstat_(info|ping|quit|client|hello|auth|monitor)$/;
        $n += $1 if $stats->{$k} =~ /calls=(\d+)/;
    }
    return $n;
}

# fdatasync/fsync calls of redis-server while a route runs: perf stat on the
# syscall tracepoints (undef when perf cannot count them here)
my $perf_ok = system("perf stat -e syscalls:sys_enter_fdatasync -p $rpid "
                     . "-x, -o /dev/null -- sleep 0.01 >/dev/null 2>&1") == 0;

sub fsync_start {
    return undef unless $perf_ok;
    my $out = "$dir/perf.$$." . int(rand(1e9));
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        { exec 'perf', 'stat', '-e',
              'syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync',
              '-p', $rpid, '-x,', '-o', $out; }
        POSIX::_exit(127);
    }
    sleep 0.2;                                # perf attaches
    return { pid => $pid, out => $out };
}

sub fsync_stop {
    my ($p) = @_;
    return undef unless $p;
    kill 'INT', $p->{pid};
    waitpid $p->{pid}, 0;
    open my $fh, '<', $p->{out} or return undef;
    my $n = 0;
    while (<$fh>) { $n += $1 if /^(\d+),/ }
    return $n;
}

sub wrk {
    my ($what, @args) = @_;
    my $out = `wrk -t1 -c$conns -d${secs}s --latency @args 2>&1`;
    my ($n)   = $out =~ /(\d+) requests in/;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($p99) = $out =~ /\s99%\s+([\d.]+\w+)/;
    my ($bad) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    my ($err) = $out =~ /Socket errors:\s+(.*)/;
    die "wrk failed for $what:\n$out" unless defined $rps && defined $n;
    return { n => $n, rps => $rps, p99 => $p99 // '?', bad => $bad // 0,
             errors => $err };
}

# perf record of the nginx worker and redis-server while a route runs
sub profile_start {
    my ($key) = @_;
    return undef unless $opt{profile};
    my $data = "$opt{profile}/$key.perf.data";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        { exec 'perf', 'record', '-e', 'cpu-clock', '-F', '499',
              '--call-graph', 'dwarf,8192',
              '-p', "$wpid,$rpid", '-o', $data; }
        POSIX::_exit(127);
    }
    sleep 0.3;
    return { pid => $pid, data => $data, key => $key };
}

sub profile_stop {
    my ($p) = @_;
    return unless $p;
    kill 'INT', $p->{pid};
    waitpid $p->{pid}, 0;
    my $txt = "$opt{profile}/$p->{key}.txt";
    open my $out, '>', $txt or die "$txt: $!";
    for my $who ([nginx => $wpid], ['redis-server' => $rpid]) {
        my $report = `perf report -i $p->{data} --pid $who->[1] --no-children --sort dso,sym --stdio --percent-limit 0.7 -g none 2>/dev/null`;
        $report = join "\n", grep { /^\s+\d/ } split /\n/, $report;
        print {$out} "== $who->[0] (pid $who->[1]): share of its own CPU samples\n$report\n\n";
    }
    close $out;
}

sub measure {
    my ($name, $prepared, @args) = @_;
    my ($c0, $rc0, $k0) = (proc_cpu($wpid), proc_cpu($rpid), redis_calls());
    my $perf = fsync_start();
    my $prof = profile_start($name =~ s/\W+/_/gr =~ s/_+$//r);
    my $w = wrk($name, @args);
    profile_stop($prof);
    my $fs = fsync_stop($perf);
    my ($c1, $rc1, $k1) = (proc_cpu($wpid), proc_cpu($rpid), redis_calls());
    my $n = $w->{n} || 1;
    return { %$w, name => $name, prepared => $prepared,
             cpu_us => ($c1 - $c0) * 1e6 / $n, rcpu_us => ($rc1 - $rc0) * 1e6 / $n,
             cmds => ($k1 - $k0) / $n, fsyncs => defined $fs ? $fs / $n : undef,
             rss => rss_kib($wpid) };
}

###############################################################################
# prepared requests (NUL-separated raw HTTP/1.1, bench/wrk-replay.lua)

sub prepare {
    my ($file, $n, $make) = @_;
    open my $fh, '>:raw', $file or die "$file: $!";
    for my $i (1 .. $n) {
        my $raw = $make->($i);
        $raw =~ s{ HTTP/1\.0\r\n}{ HTTP/1.1\r\n};
        print {$fh} $raw, "\0";
    }
    close $fh;
    return $n;
}

sub prepare_creates {
    my ($file, $n) = @_;
    return prepare($file, $n, sub {
        $t->signed_request_raw(POST => '/v1/notices', body())
    });
}

sub prepare_gets {
    my ($file, $n) = @_;
    return prepare($file, $n, sub {
        $t->signed_request_raw(GET => "/v1/notices/$code", undef)
    });
}

# the notices not yet paid: every (shard, seq) the create script allocated
# since the last call, as payment codes (bench/codes: the edge's own code)
my %paid_upto;

sub unpaid_codes {
    my @pairs;
    for my $s (0 .. $t->shards - 1) {
        my $seq = $r->get("{gp$s}:seq") // 0;
        push @pairs, map { "$s $_" } ($paid_upto{$s} // 0) + 1 .. $seq;
        $paid_upto{$s} = $seq;
    }
    my $in = "$dir/pairs";
    open my $fh, '>', $in or die "$in: $!";
    print {$fh} "$_\n" for @pairs;
    close $fh;
    my @codes = split /\n/, `$tools/codes @{[ $t->code_key_file ]} $GovPay::Test::DIVISION @{[ current_yy() ]} @{[ $t->shards ]} < $in`;
    die "bench/codes failed\n" if $? || @codes != @pairs;
    return @codes;
}

# more unpaid notices, copied from a real one in Redis (the create script's
# own fields; the payment codes follow from shard and sequence), in batches
sub more_notices {
    my ($n) = @_;
    my ($key) = $t->stored_notice($notice->{request_id});
    my %h = $r->hgetall($key);
    my @fields = map { ($_, $h{$_}) } grep { $_ ne 'pidx' } sort keys %h;
    my $copy = <<'LUA';
local fields = cjson.decode(ARGV[1])
for s = 0, tonumber(ARGV[2]) - 1 do
    local tag = '{gp' .. s .. '}'
    local last = redis.call('INCRBY', tag .. ':seq', tonumber(ARGV[3]))
    for q = last - tonumber(ARGV[3]) + 1, last do
        redis.call('HSET', tag .. ':n:' .. q, unpack(fields))
    end
end
return 1
LUA
    my $per = int($n / $t->shards) + 1;
    my $json = JSON::XS->new->utf8->encode(\@fields);
    while ($per > 0) {
        my $k = $per > 500 ? 500 : $per;
        $r->eval($copy, 0, $json, $t->shards, $k);
        $per -= $k;
    }
}

sub prepare_callbacks {
    my ($file, $want) = @_;
    my @codes = grep { $_ ne $code } unpaid_codes();   # the cashier's stays unpaid
    if (@codes < $want) {
        more_notices($want - @codes);
        push @codes, unpaid_codes();
    }
    my $now = int(time);
    my $i = 0;
    return prepare($file, scalar @codes, sub {
        my %f = (out_trade_no => $codes[$i], trade_no => 'BENCH' . $now . 'T' . $i,
                 total_fen => $notice->{amount}, trade_status => 'SUCCESS',
                 paid_at => $now);
        $i++;
        $f{sign} = hmac_sha256_hex(encode_utf8(join '&', map { "$_=$f{$_}" } sort keys %f),
                                   $t->sandbox_key);
        my $body = join '&', map { "$_=$f{$_}" } sort keys %f;
        return "POST /notify/sandbox HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             . "Content-Type: application/x-www-form-urlencoded\r\n"
             . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    });
}

###############################################################################
# Redis alone: the commands the edge sends, captured with MONITOR

sub unquote {
    my ($s) = @_;
    my %esc = (n => "\n", r => "\r", t => "\t", a => "\a", b => "\b");
    $s =~ s{\\(x[0-9a-fA-F]{2}|.)}{
        my $e = $1;
        $e =~ /^x/ ? chr(hex(substr $e, 1)) : $esc{$e} // $e
    }ge;
    return $s;
}

# the edge's commands while $do runs: [ [argv], ... ], once $want finds
# what it needs among them (MONITOR may lag behind a busy Redis)
sub capture {
    my ($do, $want) = @_;
    my $file = "$dir/monitor";
    unlink $file;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', $file or POSIX::_exit(1);
        # line-buffered: redis-cli's output to a file would be lost when it
        # is stopped
        { exec 'stdbuf', '-oL', 'redis-cli', '-p', $t->redis_port, 'monitor'; }
        POSIX::_exit(127);
    }
    wait_for(sub { -s $file }, 5, 'redis-cli monitor');
    $do->();
    my @cmds;
    my $read = sub {
        @cmds = ();
        open my $fh, '<:raw', $file or die "$file: $!";
        while (my $line = <$fh>) {
            next unless $line =~ /^\S+ \[\d+ (?:\d+\.\d+\.\d+\.\d+|unix):/;
            my @argv = map { unquote($_) } $line =~ /"((?:[^"\\]|\\.)*)"/g;
            push @cmds, \@argv if @argv;
        }
        return $want->(@cmds);
    };
    wait_for($read, 15, 'the commands in MONITOR');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    return @cmds;
}

sub script_sha {
    my ($name) = @_;
    my $path = GovPay::Test::repo_root() . "/ngx_gov_pay_module/scripts/$name.lua";
    open my $fh, '<:raw', $path or die "$path: $!";
    local $/;
    return sha1_hex(<$fh>);
}

# redis-benchmark of one command (argv with __rand_int__ placeholders):
# requests per second, about $secs seconds of it, in two shapes: --conns
# clients with one command each in flight (as many as wrk's connections),
# and 4 clients pipelining 16 commands each (as the edge's connections
# do: fewer reads and writes per fsync).  The limit is the better of the two.
my %alone_shapes;

sub redis_alone {
    my ($what, $keyspace, @argv) = @_;
    my $run = sub {
        my ($n, @shape) = @_;
        open my $fh, '-|', 'redis-benchmark', '-p', $t->redis_port, @shape,
            '-n', $n, '-r', $keyspace, '--csv', @argv or die "redis-benchmark: $!";
        my $rps;
        while (<$fh>) { $rps = $1 if /^"[^"]*","([\d.]+)"/ }
        close $fh;
        die "redis-benchmark gave no figure for $argv[0] $argv[1]\n" unless $rps;
        return $rps;
    };
    my $best = 0;
    for my $shape ([ '-c', $conns ], [ '-c', 4, '-P', 16 ]) {
        my $guess = $run->(2000, @$shape);
        my $rps = $run->(int($guess * $secs) + 1000, @$shape);
        $alone_shapes{$what}{"@$shape"} = $rps;
        $best = $rps if $rps > $best;
    }
    return $best;
}

sub measure_redis_alone {
    my %alone;

    # create.lua, as the edge sent it, with a new nonce and request_id
    goto settle unless wanted('create');
    my $is_create = sub { $_[0][0] eq 'EVALSHA' && $_[0][1] eq script_sha('create') };
    my ($create) = grep { $is_create->($_) }
        capture(sub { $t->new_notice(%{ body() }) },
                sub { grep { $is_create->($_) } @_ });
    die "no create captured\n" unless $create;
    my @c = map { s/^(\{gp\d+\}:(?:nonce|idem):[^:]+:).*/${1}__rand_int__/r } @$create;
    $alone{create} = redis_alone(create => 2_000_000_000, @c);

  settle:
    return \%alone unless wanted('callback');

    # the settle path: claim, settle.lua; the notice's fields copied to the
    # keys redis-benchmark names (__rand_int__ is 12 digits), so that each
    # settle finds an unpaid notice (or, hitting one again, records a second
    # payment: the same writes)
    my $n = $t->new_notice(%{ body() });
    my ($key) = $t->stored_notice($n->{request_id});
    my ($tag) = $key =~ /^(\{gp\d+\})/;
    my %h = $r->hgetall($key);
    my $copies = 20_000;
    my $copy = <<'LUA';
local fields = cjson.decode(ARGV[1])
for i = tonumber(ARGV[3]), tonumber(ARGV[4]) do
    redis.call('HSET', string.format('%s:n:%012d', ARGV[2], i), unpack(fields))
end
return 1
LUA
    my $json = JSON::XS->new->utf8->encode([ map { ($_, $h{$_}) } sort keys %h ]);
    for (my $i = 0; $i < $copies; $i += 1000) {
        $r->eval($copy, 0, $json, $tag, $i, $i + 999);
    }
    my $is_claim = sub { $_[0][0] eq 'SET' && $_[0][1] =~ /:trade:/ };
    my $is_settle = sub { $_[0][0] eq 'EVALSHA' && $_[0][1] eq script_sha('settle') };
    my @cmds = capture(sub { $t->sandbox_pay($n) },
                       sub { (grep { $is_claim->($_) } @_) && grep { $is_settle->($_) } @_ });
    my ($claim) = grep { $is_claim->($_) } @cmds;
    my ($settle) = grep { $is_settle->($_) } @cmds;
    die "no claim or settle captured:\n" . join("\n", map { join ' ', map { substr $_, 0, 40 } @$_ } @cmds) . "\n"
        unless $claim && $settle;
    my @cl = @$claim;
    $cl[1] =~ s/:trade:([^:]+):.*/:trade:$1:__rand_int__/;
    my @st = @$settle;
    $st[3] = "$tag:n:__rand_int__";                   # KEYS[1], the notice
    $st[ 3 + $st[2] + 2 ] = '__rand_int__';           # ARGV[3], the trade number
    $alone{claim} = redis_alone(claim => 2_000_000_000, @cl);
    $alone{settle} = redis_alone(settle => $copies, @st);
    $alone{callback} = 1 / (1 / $alone{claim} + 1 / $alone{settle});
    return \%alone;
}

###############################################################################
# the run

sub machine {
    my $cpu = `grep -m1 'model name' /proc/cpuinfo` =~ s/.*:\s*//sr =~ s/\s+$//r;
    my $redis = $r->info('server')->{redis_version};
    my $nginx = `nginx -v 2>&1` =~ s/.*nginx\///sr =~ s/\s+$//r;
    return sprintf "%s; %d cores (nproc); %s; nginx %s, Redis %s (appendfsync always), "
        . "wrk -t1 -c%d, %d s per route, gov_pay_redis_connections %s",
        strftime('%Y-%m-%d %H:%M %z', localtime), `nproc` + 0, $cpu, $nginx, $redis,
        $conns, $secs, $opt{'redis-connections'} // 'default';
}

sub rounds {
    my ($long) = @_;
    my @rows;
    my $n = int($secs * 30000);
    my $p;

    push @rows, [ static => measure('static return 200 (ceiling)', undef, "$url/static") ]
        unless $long;
    push @rows, [ cashier => measure('GET /q/{code} cashier page', undef, "$url/q/$code") ]
        if wanted('cashier');
    push @rows, [ svg => measure('GET /q/{code}.svg QR image', undef, "$url/q/$code.svg") ]
        if wanted('svg');

    if (wanted('get')) {
        $p = prepare_gets("$dir/get.req", $n);
        push @rows, [ get => measure('GET /v1/notices/{code} signed', $p, '-s', $lua,
                                     $url, '--', "$dir/get.req") ];
    }

    if (wanted('create')) {
        $p = prepare_creates("$dir/create.req", $n);
        push @rows, [ create => measure('POST /v1/notices signed create', $p, '-s', $lua,
                                        $url, '--', "$dir/create.req") ];
    }

    if (wanted('callback')) {
        $p = prepare_callbacks("$dir/callback.req", $n);
        push @rows, [ callback => measure('POST /notify/sandbox callback', $p, '-s', $lua,
                                          $url, '--', "$dir/callback.req") ];
    }
    return @rows;
}

sub fmt_num { defined $_[0] ? sprintf($_[1], $_[0]) : 'n/a' }

my $rss0 = rss_kib($wpid);
my @rows = rounds();
my $alone = measure_redis_alone();
my $rss1 = rss_kib($wpid);

my %row = map { $_->[0] => $_->[1] } @rows;
my $ceil = $row{static}{rps};
my %limit = (create => $alone->{create}, callback => $alone->{callback});

print "\n", machine(), "\n\n";
printf "%-32s %8s %6s %6s %8s %9s %8s %6s %7s %8s\n", 'route (1 nginx worker)', 'req/s',
    'xceil', 'xredis', 'p99', 'nginx us', 'redis us', 'cmds', 'fsyncs', 'RSS KiB';
for my $rw (@rows) {
    my ($k, $m) = @$rw;
    my $note = '';
    $note .= " ($m->{bad} non-2xx)" if $m->{bad};
    $note .= " (socket errors: $m->{errors})" if $m->{errors};
    $note .= " (past the $m->{prepared} prepared: replays)"
        if defined $m->{prepared} && $m->{n} > $m->{prepared};
    printf "%-32s %8.0f %6.2f %6s %8s %9.1f %8.1f %6.2f %7s %8d%s\n", $m->{name}, $m->{rps},
        $m->{rps} / $ceil, $limit{$k} ? sprintf('%.2f', $m->{rps} / $limit{$k}) : '',
        $m->{p99}, $m->{cpu_us}, $m->{rcpu_us}, $m->{cmds}, fmt_num($m->{fsyncs}, '%.3f'),
        $m->{rss}, $note;
}
printf "\nRedis alone (redis-benchmark, same Redis, appendfsync always; the better shape "
    . "is the limit):\n";
for my $w ([ create => 'create.lua' ], [ claim => 'claim (SET NX EX GET)' ],
           [ settle => 'settle.lua' ]) {
    next unless $alone_shapes{ $w->[0] };
    printf "  %-32s %s\n", $w->[1], join '  ', map { sprintf '%8.0f/s (%s)',
        $alone_shapes{ $w->[0] }{$_}, $_ } sort keys %{ $alone_shapes{ $w->[0] } };
}
printf "  %-32s %8.0f/s\n", 'claim + settle.lua, per callback', $alone->{callback}
    if $alone->{callback};
printf "nginx worker RSS: %d KiB before the routes, %d KiB after\n", $rss0, $rss1;
print "fsyncs: perf could not count redis-server's fdatasync calls here\n" unless $perf_ok;

if ($opt{long}) {
    print "\nlong run: every route of the edge again until $opt{long} requests, "
        . "the worker's RSS after each round\n";
    my ($total, $round, $first) = (0, 0);
    while ($total < $opt{long} || $round < 2) {
        my @rr = rounds(1);
        $round++;
        $total += $_->[1]{n} for @rr;
        my $rss = rss_kib($wpid);
        $first //= $rss;
        printf "  round %2d: %9d requests in all, RSS %d KiB\n", $round, $total, $rss;
    }
    printf "RSS growth after the first round: %+d KiB over %d requests\n",
        rss_kib($wpid) - $first, $total;
}

$t->done_testing;
