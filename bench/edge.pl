#!/usr/bin/perl

# bench/edge.pl: throughput of the edge's routes against nginx serving a
# static `return 200` on the same machine, in one run (the machines are
# shared and noisy: compare the ratios, not the absolute numbers).
#
# One nginx worker, a real redis-server (AOF on, appendfsync always, as the
# money path runs), wrk on loopback.  Signed unit requests are prepared in
# advance (each with its own nonce, so none is a replay) and fed to wrk by
# bench/wrk-replay.lua.
#
#   perl bench/edge.pl [seconds per route, default 5] [connections, default 32]

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use File::Temp qw(tempdir);
use GovPay::Test;

binmode STDOUT, ':utf8';

my $secs  = shift // 5;
my $conns = shift // 32;

system('command -v wrk >/dev/null 2>&1') == 0
    or die "wrk is missing: apt-get install wrk (make deps installs it)\n";

my $t = GovPay::Test->new;
$t->start_redis;
$t->start_nginx(<<'CONF', worker_processes => 1);
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log off;
        location = /static { return 200 "ok"; }
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
    }
CONF

my $url  = $t->public_url;
my $code = $t->new_notice->{payment_code};
my $dir  = tempdir('gov-pay-bench-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# more signed requests than one nginx worker can take in $secs seconds
sub prepare {
    my ($file, $n, $make) = @_;
    open my $fh, '>:raw', $file or die "$file: $!";
    for my $i (1 .. $n) {
        my $raw = $make->($i);
        $raw =~ s{ HTTP/1\.0\r\n}{ HTTP/1.1\r\n};
        print {$fh} $raw, "\0";
    }
    close $fh;
}

sub wrk {
    my ($what, @args) = @_;
    my $out = `wrk -t1 -c$conns -d${secs}s --latency @args 2>&1`;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($p99) = $out =~ /\s99%\s+([\d.]+\w+)/;
    my ($non2xx) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "wrk failed for $what:\n$out" unless defined $rps;
    return { rps => $rps, p99 => $p99 // '?', bad => $non2xx // 0 };
}

my $n = int($secs * 40000);

prepare("$dir/create.req", $n, sub {
    $t->signed_request_raw(POST => '/v1/notices', $t->notice_body)
});
prepare("$dir/get.req", $n, sub {
    $t->signed_request_raw(GET => "/v1/notices/$code", undef)
});

my $lua = "$FindBin::Bin/wrk-replay.lua";
my @rows = (
    [ 'static return 200 (baseline)',   wrk('static', "$url/static") ],
    [ 'GET /q/{code} cashier page',     wrk('cashier', "$url/q/$code") ],
    [ 'GET /q/{code}.svg QR image',     wrk('svg', "$url/q/$code.svg") ],
    [ 'GET /v1/notices/{code} signed',  wrk('get', '-s', $lua, $url, '--', "$dir/get.req") ],
    [ 'POST /v1/notices signed create', wrk('create', '-s', $lua, $url, '--', "$dir/create.req") ],
);

my $base = $rows[0][1]{rps};
printf "%-34s %10s %7s %9s %8s\n", 'route (1 nginx worker)', 'req/s', 'ratio', 'p99', 'non-2xx';
for my $r (@rows) {
    printf "%-34s %10.0f %7.2f %9s %8d\n", $r->[0], $r->[1]{rps}, $r->[1]{rps} / $base,
        $r->[1]{p99}, $r->[1]{bad};
}

my $pids = join ',', $t->nginx_workers;
my $rss = `ps -o rss= -p $pids`;
$rss =~ s/\s+/ /g;
print "nginx worker RSS after the run (KiB):$rss\n";
