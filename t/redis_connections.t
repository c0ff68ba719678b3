#!/usr/bin/perl

# Several pipelined connections per nginx worker (gov_pay_redis_connections,
# docs/performance.md): Redis sees that many per worker, each logged in as
# gp-edge with the scripts loaded; requests are spread over them; a
# connection that Redis drops reconnects on its own while the others go on;
# the caps stay the worker's; a restarted Redis gets them all back.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Socket::INET;
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new(shards => 4);
$t->start_redis;

my $snippet = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%% backlog=1024;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

###############################################################################
# the directive

for my $case ([ 0 => qr/between 1 and 64/ ], [ 65 => qr/between 1 and 64/ ],
              [ many => qr/invalid number/ ]) {
    my ($bad, $why) = @$case;
    my ($rc, $out) = $t->nginx_t($snippet, directives => { gov_pay_redis_connections => $bad });
    isnt $rc, 0, "nginx -t refuses gov_pay_redis_connections $bad";
    like $out, $why, '... saying why';
}

###############################################################################
# three connections per worker, two workers

$t->start_nginx($snippet, worker_processes => 2,
                directives => { gov_pay_redis_connections => 3 });

# the edge's clients of Redis: id => { addr, cmd }
sub edge_clients {
    my %c;
    for my $line (split /\n/, $t->redis->client_list) {
        next unless $line =~ /\buser=gp-edge\b/;
        my %f = map { split /=/, $_, 2 } split / /, $line;
        $c{ $f{id} } = \%f;
    }
    return \%c;
}

ok wait_for(sub { keys %{ edge_clients() } == 6 }, 10, 'six connections'),
    'Redis sees 3 connections per nginx worker (6), each logged in as gp-edge'
    or diag $t->redis->client_list;

# every connection has loaded the scripts (SCRIPT LOAD went first on each)
my $n = $t->new_notice(amount => 1500);
my $code = $n->{payment_code};

# many requests at once: spread over the connections of each worker
my @raw = map { $t->signed_request_raw(POST => '/v1/notices', $t->notice_body(amount => 100 + $_)) }
    1 .. 60;
my @res = $t->parallel_requests(\@raw, 15);
is scalar(grep { $_->{status} eq '201' } @res), 60, '60 parallel creates all answer 201';
my %codes = map { ((json_decode($_->{body} // '') // {})->{payment_code} // 'none') => 1 } @res;
is scalar keys %codes, 60, '... each with a payment code of its own';
is_deeply [ sort { $a <=> $b } map { (json_decode($_->{body} // '') // {})->{amount} // 0 } @res ],
    [ map { 100 + $_ } 1 .. 60 ], 'each answer carries its own request\'s amount (no crossed replies)';

my $clients = edge_clients();
my @used = grep { ($clients->{$_}{cmd} // '') eq 'evalsha' } keys %$clients;
is scalar @used, 6, 'every connection ran a script (the requests are spread over them)'
    or diag explain $clients;

###############################################################################
# Redis drops one connection: it comes back by itself, the others stay

my ($victim) = sort keys %$clients;
$t->redis->client_kill('ID', $victim);

ok wait_for(sub {
        my $c = edge_clients();
        keys %$c == 6 && !$c->{$victim};
    }, 10, 'the dropped connection to come back'),
    'a connection that Redis dropped reconnects on its own';
my $after = edge_clients();
is scalar(grep { $after->{$_} } grep { $_ ne $victim } keys %$clients), 5,
    'the other five connections were not touched (same client ids)';

ok wait_for(sub { $t->get("/q/$code")->status == 200 }, 5, 'the cashier page'),
    'pages are served meanwhile and after';
is $t->create_notice->status, 201, 'creates work after the reconnect';
like $t->error_log_text, qr/\[warn\].*gov_pay: redis \S+ unavailable, reconnecting in \d+ ms \(connection \d of 3\)/,
    'the reconnect is logged, naming the connection';

###############################################################################
# the scripts flushed: each connection loads them again when it needs them

$t->redis->script_flush;
my @pages = map { $t->get("/q/$code") } 1 .. 12;
is scalar(grep { $_->status == 200 } @pages), 12, 'pages work after SCRIPT FLUSH';
@res = $t->parallel_requests([ map { $t->signed_request_raw(POST => '/v1/notices', $t->notice_body) } 1 .. 20 ], 15);
is scalar(grep { $_->{status} eq '201' } @res), 20,
    'creates on every connection work after SCRIPT FLUSH (NOSCRIPT: load, send again)';

###############################################################################
# Redis restarted: every connection comes back

$t->restart_redis;
ok wait_for(sub { keys %{ edge_clients() } == 6 }, 15, 'six connections again'),
    'after a restart of Redis, all 6 connections are back';
ok wait_for(sub { $t->create_notice->status == 201 }, 10, 'a create'), 'and creates work';

###############################################################################
# the cap on commands in flight is the worker's, over all its connections

ok $t->reload_nginx(snippet => $snippet, worker_processes => 1,
                    directives => { gov_pay_redis_connections => 3,
                                    gov_pay_redis_max_inflight => 4,
                                    gov_pay_redis_timeout => '20s' }),
    'nginx reloads with one worker, 3 connections, 4 commands in flight at most';
ok wait_for(sub { keys %{ edge_clients() } == 3 && $t->get("/q/$code")->status == 200 },
            10, 'three connections'), 'Redis sees the worker\'s 3 connections';

$t->hang_redis;
my @conns = map {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                                  Proto => 'tcp', Timeout => 2) or die "connect: $!";
    $s->autoflush(1);
    print {$s} "GET /q/$code HTTP/1.0\r\nHost: localhost\r\n\r\n";
    { sock => $s, data => '' };
} 1 .. 10;

sub poll_replies {
    my $sel = IO::Select->new(map { $_->{sock} } grep { !$_->{done} } @conns);
    my %by = map { ("$_->{sock}" => $_) } @conns;
    for my $s ($sel->can_read(0.05)) {
        my $c = $by{"$s"};
        my $got = sysread($s, my $buf, 65536);
        if ($got) { $c->{data} .= $buf; next }
        $c->{done} = 1;
        ($c->{status}) = $c->{data} =~ m{^HTTP/1\.\d (\d{3})};
        close $s;
    }
    return grep { $_->{done} } @conns;
}

ok wait_for(sub { poll_replies() >= 6 }, 10, 'six answers while Redis hangs'),
    'while Redis hangs, the requests over the worker\'s cap are answered';
my @done = grep { $_->{done} } @conns;
is scalar(@done), 6, 'exactly 6 of 10: the cap of 4 holds across the 3 connections';
is_deeply [ map { $_->{status} // '' } @done ], [ (503) x 6 ], '... each with a 503';
$t->resume_redis;
ok wait_for(sub { poll_replies() == 10 }, 10, 'every answer'),
    'once Redis resumes, the 4 that waited are answered';
is_deeply [ sort map { $_->{status} // '' } @conns ], [ (200) x 4, (503) x 6 ], '... with their pages';

$t->check_error_log;

done_testing;
