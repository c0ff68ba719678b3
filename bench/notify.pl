#!/usr/bin/perl

# bench/notify.pl: webhook delivery throughput of one gov-pay-worker process
# (the notify plugin alone) to a local webhook receiver, against the rate the
# same receiver takes from wrk, in one run (the machines are shared and
# noisy: compare the ratio, not the absolute numbers).
#
# A real redis-server (AOF on, appendfsync always, as the tests run it), nginx
# as the units' webhook receiver (`return 204`, one worker process), N paid
# notices and their notice.paid events written straight into the settled
# streams of 16 shards for 10 units, then the worker is started and timed
# until `notify status` counts every delivery. Each delivery is the whole
# path: read the notice, build and queue the body (consumer side), claim,
# sign (HMAC-SHA256), POST over a kept-alive connection, record the outcome.
#
#   perl bench/notify.pl [events, default 20000] [--subscriber]
#                        [--fsync=always|everysec]
#
# --subscriber adds the finance system as a second recipient of every event
# (two deliveries per event).

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use File::Temp qw(tempdir);
use JSON::XS;
use Time::HiRes qw(time sleep);
use GovPay::Test;
use GovPay::Webhook;

my $events = 20000;
my $subscriber = 0;
my $fsync = 'always';
for (@ARGV) {
    if ($_ eq '--subscriber') { $subscriber = 1 }
    elsif (/^--fsync=(always|everysec)$/) { $fsync = $1 }
    elsif (/^\d+$/) { $events = $_ }
    else { die "usage: perl bench/notify.pl [events] [--subscriber] "
               . "[--fsync=always|everysec]\n" }
}

system('command -v wrk >/dev/null 2>&1') == 0
    or die "wrk is missing: apt-get install wrk\n";

my $t = GovPay::Test->new(module => 0);
$t->start_redis(args => ['--appendfsync', $fsync]);
$t->start_nginx(<<'CONF', worker_processes => 1, module => 0);
    server {
        listen 127.0.0.1:%%PORT%%;
        access_log off;
        keepalive_requests 1000000;
        location / { return 204; }
    }
CONF
my $sink = $t->public_url;

# ten units, each with its webhook on the sink
my $reg = $t->default_registry;
my @units;
for my $i (1 .. 10) {
    my $id = sprintf '330100-BENCH-%03d', $i;
    $t->new_unit_secret($id);
    push @{ $reg->{units} }, { id => $id, name => "单位$i", scheme => 'GOVPAY-HMAC-SHA256',
        secret_file => "keys/$id.secret", items => ['103001'], webhook => "$sink/unit/$i" };
    push @units, $id;
}
$t->write_registry($reg);
$t->write_file('keys/finance.secret', random_string(40) . "\n");

# the events: HSET + XADD per notice, through redis-cli --pipe
my $body_len;
{
    my $cmds = $t->dir . '/events.resp';
    open my $fh, '>:raw', $cmds or die "$cmds: $!";
    my $resp = sub {
        my $s = '*' . scalar(@_) . "\r\n";
        $s .= '$' . length($_) . "\r\n$_\r\n" for @_;
        return $s;
    };
    my $now = int(time);
    for my $i (1 .. $events) {
        my $shard = $i % 16;
        my $key = "{gp$shard}:n:$i";
        my $code = make_code('330100', current_yy(), sprintf('%011d', $i));
        my $unit = $units[$i % @units];
        print {$fh} $resp->('HSET', $key, unit => $unit, request_id => "B-$i",
            item_code => '103001', amount => 125000, payer_type => 'person',
            payer_name_masked => 'x', payer_id_masked => 'x', due_at => $now + 86400,
            created_at => $now, division => '330100', yy => current_yy(),
            status => 'PAID', channel => 'sandbox', channel_trade_no => "SBX$i",
            paid_at => $now, paid_amount => 125000);
        print {$fh} $resp->('XADD', "{gp$shard}:settled", '*', type => 'notice.paid',
            payment_code => $code, unit => $unit, item_code => '103001',
            amount => 125000, channel => 'sandbox', channel_trade_no => "SBX$i",
            paid_at => $now, notice_key => $key);
    }
    close $fh;
    system("redis-cli -p ${\ $t->redis_port} --pipe < $cmds > /dev/null") == 0
        or die "redis-cli --pipe failed\n";
}

my %notify = (timeout_ms => 5000, poll_ms => 200, public_url => 'https://pay.example.gov.cn');
$notify{subscribers} = [ { name => 'nontax', url => "$sink/finance",
                           scheme => 'GOVPAY-HMAC-SM3',
                           secret_file => 'keys/finance.secret' } ] if $subscriber;
my $want = $events * ($subscriber ? 2 : 1);

my $t0 = time;
$t->start_worker(plugins => { notify => \%notify });
$ENV{GOV_PAY_WORKER_DEBUG} = 0;

my $r = $t->redis;
sub delivered {
    my $n = 0;
    for my $s (0 .. 15) {
        my %h = $r->hgetall("{gp$s}:notify:stats");
        $n += $h{$_} for grep { /:delivered$/ } keys %h;
    }
    return $n;
}
my $done = wait_for(sub { delivered() >= $want }, 600, "$want deliveries");
my $elapsed = time - $t0;
die "not all delivered:\n" . substr($t->worker_log, -2000) unless $done;
$t->stop_worker;

# one body as sent, for wrk to post
my ($d) = grep { /^\{gp\d+\}:notify:d:/ } $t->redis_keys('{gp1}:notify:d:*');
my $body = $r->hget($d, 'body') // '{}';
$body_len = length $body;

# the sink's own rate, from wrk over as many connections as the worker uses
my $lua = $t->dir . '/post.lua';
(my $esc = $body) =~ s/(["\\])/\\$1/g;
$t->write_file('post.lua', qq{wrk.method = "POST"\nwrk.body = "$esc"\n}
    . qq{wrk.headers["Content-Type"] = "application/json"\n}
    . qq{wrk.headers["GovPay-Signature"] = "t=1700000000,v1=} . ('0' x 64) . qq{"\n});
my $out = `wrk -t1 -c32 -d5s -s $lua $sink/unit/1 2>&1`;
my ($raw) = $out =~ /Requests\/sec:\s+([\d.]+)/;

# what one client's writes get from this redis (with appendfsync always each
# write waits for an fsync; the consumer side makes one per event)
my $bout = `redis-benchmark -p ${\ $t->redis_port} -t set -c 1 -n 2000 2>&1`;
my ($wrate) = $bout =~ /throughput summary:\s+([\d.]+)/;
($wrate) = $bout =~ /([\d.]+) requests per second/ unless $wrate;

my $rate = $want / $elapsed;
printf "notify delivery: %d events (%d deliveries, %s) in %.2f s: %.0f deliveries/s, "
     . "%.0f events/s per worker process\n",
    $events, $want, $subscriber ? 'unit + finance subscriber' : 'unit only',
    $elapsed, $rate, $events / $elapsed;
printf "sink (nginx return 204) from wrk, 32 connections, same %d-byte body: %.0f requests/s\n",
    $body_len, $raw // 0;
printf "ratio: notify delivers at %.1f%% of the rate the sink takes from wrk\n",
    $raw ? 100 * $rate / $raw : 0;
printf "redis: appendonly yes, appendfsync %s; one client's SETs one at a time: %.0f/s "
     . "(notify: %.0f%% of that in events/s)\n",
    $fsync, $wrate // 0, $wrate ? 100 * ($events / $elapsed) / $wrate : 0;
printf "machine: %d CPUs shared by redis-server, nginx, the worker and wrk\n",
    scalar(grep { /^processor/ } split /\n/, GovPay::Test::_read_file('/proc/cpuinfo') // '');
