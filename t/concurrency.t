#!/usr/bin/perl

# Many requests at once (ARCHITECTURE.md: "one non-blocking, pipelined Redis
# connection per nginx worker"): parallel creates, reads, and callbacks on
# two workers all succeed, each notice gets its own code, each payment settles
# once, and Redis sees one connection per nginx worker.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
$t->start_redis;
$t->start_nginx(<<'EOF', worker_processes => 2);
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $N = 60;

# warm up both workers' connections
ok wait_for(sub { $t->create_notice->status == 201 }, 5, 'a first create'), 'edge answers';

my @raw = map { $t->signed_request_raw(POST => '/v1/notices', $t->notice_body(amount => 100 + $_)) }
    1 .. $N;
my @res = $t->parallel_requests(\@raw, 15);
my @bad = grep { $_->{status} ne '201' } @res;
is scalar @bad, 0, "$N parallel creates all answer 201"
    or diag join "\n", map { "$_->{status} " . ($_->{body} // '') } @bad[0 .. ($#bad < 4 ? $#bad : 4)];

my @notices = map { json_decode($_->{body} // '') // {} } @res;
my %codes = map { ($_->{payment_code} // 'none') => 1 } @notices;
is scalar keys %codes, $N, "$N parallel creates get $N different payment codes";
is_deeply [ sort { $a <=> $b } map { $_->{amount} // 0 } @notices ], [ map { 100 + $_ } 1 .. $N ],
    'each reply carries its own request\'s amount (no crossed replies)';

my @notice_keys = grep { /:n:\d+$/ } $t->redis_keys;
is scalar @notice_keys, $N + 1, "Redis holds $N + 1 notices";

# parallel reads of every notice
@raw = map { $t->signed_request_raw(GET => "/v1/notices/$_->{payment_code}", undef) }
    grep { $_->{payment_code} } @notices;
@res = $t->parallel_requests(\@raw, 15);
is scalar(grep { $_->{status} eq '200' } @res), scalar @raw, 'parallel reads all answer 200';
my $crossed = grep { my $j = json_decode($res[$_]{body} // '') // {};
                     ($j->{payment_code} // '') ne ($notices[$_]{payment_code} // 'x') } 0 .. $#res;
is $crossed, 0, 'each read answers its own notice';

# parallel payments, each sent twice
my @cb;
for my $n (@notices) {
    next unless $n->{payment_code};
    my %f = (out_trade_no => $n->{payment_code}, trade_no => "SBX$n->{amount}",
             total_fen => $n->{amount}, trade_status => 'SUCCESS', paid_at => int(time));
    $f{sign} = $t->sandbox_sign(%f);
    my $body = join '&', map { "$_=$f{$_}" } sort keys %f;
    my $req = "POST /notify/sandbox HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            . "Content-Type: application/x-www-form-urlencoded\r\n"
            . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    push @cb, $req, $req;
}
@res = $t->parallel_requests(\@cb, 15);
is scalar(grep { $_->{status} eq '200' && ($_->{body} // '') eq 'success' } @res), scalar @cb,
    'parallel callbacks (each sent twice) all answer 200 success';
is scalar($t->stream_entries('settled')), $N, "exactly $N settled events for $N payments";
is scalar($t->stream_entries('anomaly')), 0, 'no anomaly from duplicate callbacks';

# one connection per nginx worker
my $list = $t->redis->client_list;
my $mine = $t->redis->client_id;
my @edge = grep { !/\bid=$mine\b/ } grep { /\S/ } split /\n/, $list;
is scalar @edge, 2, 'Redis sees one connection per nginx worker (2)' or diag $list;

$t->check_error_log;

done_testing;
