#!/usr/bin/perl

# Redis access (docs/operations.md, "Redis access"): the edge and the worker
# AUTH as their own ACL users, with passwords read from files; a refused
# AUTH is an [error] naming the user (never the password), requests get their
# fast 503 meanwhile, and both recover once the password is right; the edge's
# user cannot run what it does not need; a deployment on a Unix socket runs
# the whole payment path; the caps on commands in flight and on bytes not yet
# sent answer 503 at once and recover, and the output buffer is let go after
# the burst; the connect timeout bounds a handshake that never completes; with
# the ACL as committed (the default user off) a restarted Redis loads every
# write back; the demo's ACL is the example's.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use IO::Select;
use IO::Socket::INET;
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_REUSEADDR inet_aton
              pack_sockaddr_in unpack_sockaddr_in);
use Redis;
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new(shards => 4);
my $dir = $t->dir;
my $sock = "$dir/redis.sock";
my (undef, $pub) = $t->issuer_keys('sm2');
my $port = $t->redis_port;

$t->start_redis(args => ['--unixsocket', $sock, '--unixsocketperm', '700']);

my $snippet = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%% backlog=1024;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /r/ { gov_pay_receipt; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

# a long request timeout: a 503 that comes before the client's 10 s comes
# from the refusal under test, not from gov_pay_redis_timeout
my %base = (gov_pay_redis_timeout => '20s',
            gov_pay_receipt_key   => "sm2 $pub TEST-SM2-01");

sub reload_with {
    my (%d) = @_;
    ok $t->reload_nginx(snippet => $snippet, directives => { %base, %d }),
        'nginx reloads with ' . join(', ', map { "$_ $d{$_}" } sort keys %d);
}

sub edge_password_file { $t->redis_password_file('gp-edge') }
sub worker_password_file { $t->redis_password_file('gp-worker') }

# Redis's clients of a user: "addr" of each (a socket path for a Unix one)
sub clients_of {
    my ($user) = @_;
    my $list = $t->redis->client_list;
    return map { /\baddr=(\S+)/ ? $1 : '?' } grep { /\buser=\Q$user\E\b/ }
        split /\n/, $list;
}

# every line of the error log that matches
sub log_lines {
    my ($re, $text) = @_;
    return grep { /$re/ } split /\n/, $text // $t->error_log_text;
}

###############################################################################
# configuration: nginx -t and gov-pay-worker -t name the file at fault

{
    my ($rc, $out) = $t->nginx_t($snippet, directives => {
        %base, gov_pay_redis_auth => "gp-edge $dir/keys/missing.password" });
    isnt $rc, 0, 'nginx -t fails when the Redis password file is missing';
    like $out, qr{gov_pay_redis_auth.*\Q$dir\E/keys/missing\.password}, '... naming it';

    $t->write_file('keys/empty.password', "\n");
    ($rc, $out) = $t->nginx_t($snippet, directives => {
        %base, gov_pay_redis_auth => "gp-edge $dir/keys/empty.password" });
    isnt $rc, 0, 'nginx -t fails when the Redis password file is empty';
    like $out, qr{\Q$dir\E/keys/empty\.password" is empty}, '... naming it';

    ($rc, $out) = $t->nginx_t($snippet, directives => {
        %base, gov_pay_redis_max_inflight => 2 });
    isnt $rc, 0, 'nginx -t fails when gov_pay_redis_max_inflight is below the shards';
    like $out, qr{gov_pay_redis_max_inflight.*at least}, '... saying why';

    ($rc, $out) = $t->nginx_t($snippet, directives => {
        %base, gov_pay_redis_max_unsent => '1k' });
    isnt $rc, 0, 'nginx -t fails when gov_pay_redis_max_unsent is below 16k';

    ($rc, $out) = $t->nginx_t($snippet, directives => {
        %base, gov_pay_redis => "unix:$sock" });
    is $rc, 0, 'nginx -t takes a unix: address for gov_pay_redis' or diag $out;

    my $bin = GovPay::Test::worker_path();
    my $check = sub {
        my ($cfg) = @_;
        $t->write_file('worker-t.json', json_encode($cfg));
        my $o = `$bin -t -c $dir/worker-t.json 2>&1`;
        return ($? >> 8, $o);
    };

    ($rc, $out) = $check->($t->worker_config);
    is $rc, 0, 'gov-pay-worker -t takes redis_user and redis_password_file' or diag $out;

    ($rc, $out) = $check->($t->worker_config(redis => "unix:$sock"));
    is $rc, 0, 'gov-pay-worker -t takes "redis": "unix:<path>"' or diag $out;

    ($rc, $out) = $check->($t->worker_config(redis => 'unix:'));
    isnt $rc, 0, 'gov-pay-worker -t refuses "redis": "unix:" without a path';

    ($rc, $out) = $check->($t->worker_config(
        extra => { redis_password_file => "$dir/keys/missing.password" }));
    isnt $rc, 0, 'gov-pay-worker -t fails when the password file is missing';
    like $out, qr{redis_password_file.*\Q$dir\E/keys/missing\.password}, '... naming it';

    ($rc, $out) = $check->($t->worker_config(
        extra => { redis_password_file => "$dir/keys/empty.password" }));
    isnt $rc, 0, 'gov-pay-worker -t fails when the password file is empty';
    like $out, qr{\Q$dir\E/keys/empty\.password" is empty}, '... naming it';

    ($rc, $out) = $check->($t->worker_config(redis_auth => 0,
                                             extra => { redis_user => 'gp-worker' }));
    isnt $rc, 0, 'gov-pay-worker -t refuses redis_user without redis_password_file';
    like $out, qr{"redis_user" and "redis_password_file" go together}, '... saying so';

    # relative to worker.json's folder
    $t->write_file('conf/keys/w.password', $t->redis_password('gp-worker') . "\n");
    $t->write_file('conf/worker.json', json_encode($t->worker_config(
        extra => { redis_password_file => 'keys/w.password' })));
    $out = `cd / && $bin -t -c $dir/conf/worker.json 2>&1`;
    is $? >> 8, 0, 'redis_password_file is relative to worker.json' or diag $out;
}

###############################################################################
# the edge runs as gp-edge

$t->start_nginx($snippet, directives => \%base);

my $n = $t->new_notice(amount => 4200);
my $code = $n->{payment_code};
my ($nkey) = $t->stored_notice($n->{request_id});

ok scalar(clients_of('gp-edge')), 'nginx is connected to Redis as gp-edge';
ok !grep({ !/^127\.0\.0\.1:/ } clients_of('gp-edge')), '... over TCP';

###############################################################################
# the users' rights: only the commands and keys they need

{
    my $edge = $t->redis_client(user => 'gp-edge');
    my %h = eval { $edge->hgetall($nkey) };
    is $h{amount}, 4200, 'gp-edge reads a notice';

    for my $c ([flushall => []], [keys => ['*']], [config => ['GET', '*']],
               [eval => ['return 1', 0]], [acl => ['LIST']], [script => ['FLUSH']],
               [xreadgroup => ['GROUP', 'g', 'c', 'STREAMS', '{gp0}:settled', '>']])
    {
        my ($cmd, $args) = @$c;
        eval { $edge->$cmd(@$args) };
        like $@, qr/NOPERM/, "gp-edge cannot run \U$cmd\E";
    }

    eval { $edge->set('other:key', 1) };
    like $@, qr/NOPERM/, 'gp-edge cannot write a key outside {gpN}';
    eval { $edge->hset('{gpr}:r:33010126:0000000001', 'check', 'x') };
    like $@, qr/NOPERM/, 'gp-edge cannot write a receipt record';
    eval { $edge->get('{gpr}:head:33010126') };
    like $@, qr/NOPERM/, 'gp-edge cannot read the receipt ledger\'s keys';

    my $worker = $t->redis_client(user => 'gp-worker');
    ok eval { $worker->xrange('{gp0}:settled', '-', '+'); 1 },
        'gp-worker reads a settled stream' or diag $@;
    for my $cmd (qw(flushall keys config)) {
        eval { $worker->$cmd($cmd eq 'config' ? ('GET', '*') : $cmd eq 'keys' ? '*' : ()) };
        like $@, qr/NOPERM/, "gp-worker cannot run \U$cmd\E";
    }

    eval { $t->redis_client(user => 'gp-edge', password => 'not-the-password') };
    like $@, qr/WRONGPASS/, 'a wrong password is refused';

    my @refused = $t->redis_acl_refusals;
    ok scalar(@refused) >= 14, 'Redis logged the refusals (ACL LOG)'
        or diag explain \@refused;
    $t->reset_acl_refusals;
}

###############################################################################
# the edge with a wrong password: [error] naming the user, fast 503s, retries,
# and recovery once the file is fixed and nginx reloaded

{
    my $wrong = random_string(32);
    GovPay::Test::_write_file(edge_password_file(), "$wrong\n", 0600);
    reload_with();

    ok wait_for(sub { log_lines(qr/\[error\].*gov_pay: redis 127\.0\.0\.1:\Q$port\E refused AUTH as user "gp-edge": WRONGPASS/) >= 2 },
                10, 'two refused AUTHs in the error log'),
        'a refused AUTH is logged at [error] naming the user, and retried';

    my $res = $t->create_notice(_opts => { timeout => 10 });
    is $res->status, 503, 'a create while the edge\'s AUTH is refused answers 503'
        or diag $res->describe;
    is $res->error_code, 'STORE_UNAVAILABLE', '... STORE_UNAVAILABLE';

    $res = $t->get("/q/$code", timeout => 10);
    is $res->status, 503, 'the QR page while the edge\'s AUTH is refused answers 503';

    $res = $t->sandbox_pay($n, trade_no => 'SBX-AUTH', _timeout => 10);
    is $res->status, 503, 'a callback while the edge\'s AUTH is refused answers 503';
    is $res->body, 'fail', '... with the channel\'s failure reply';

    my $log = $t->error_log_text;
    unlike $log, qr/\Q$wrong\E/, 'the error log holds no password (the wrong one)';
    unlike $log, qr/\Q${\ $t->redis_password('gp-edge') }\E/,
        'the error log holds no password (the right one)';

    GovPay::Test::_write_file(edge_password_file(), $t->redis_password('gp-edge') . "\n",
                              0600);
    reload_with();
    ok wait_for(sub { $t->create_notice->status == 201 }, 10, 'a create to work'),
        'with the password fixed and nginx reloaded, creates work again';

    $t->reset_acl_refusals;
}

###############################################################################
# the worker with a wrong password: logs the refusal, keeps trying, then works

{
    my $wrong = random_string(32);
    GovPay::Test::_write_file(worker_password_file(), "$wrong\n", 0600);
    $t->start_worker;

    ok wait_for(sub { () = $t->worker_log =~ /\[error\] receipt: redis at 127\.0\.0\.1:\Q$port\E refused AUTH as user "gp-worker": WRONGPASS/g; }, 10,
                'the worker to log a refused AUTH'),
        'the worker logs a refused AUTH at [error], naming the user';
    ok wait_for(sub { my @m = $t->worker_log =~ /refused AUTH as user "gp-worker"/g; @m >= 3 },
                10, 'three refused AUTHs'),
        'and keeps trying';
    ok $t->worker_running, 'the worker keeps running';
    unlike $t->worker_log, qr/\Q$wrong\E/, 'the worker log holds no password';

    is $t->sandbox_pay($n, trade_no => 'SBX-W1')->body, 'success',
        'a notice is paid meanwhile';

    GovPay::Test::_write_file(worker_password_file(),
                              $t->redis_password('gp-worker') . "\n", 0600);
    my $got = wait_for(sub {
        my $g = $t->get_notice($code);
        return $g->status == 200 && ref $g->json->{receipt} eq 'HASH' ? $g->json : 0;
    }, 15, 'the receipt once the password file is fixed');
    ok $got, 'with the password file fixed, the worker connects and issues the receipt'
        or diag $t->worker_log;
    like $t->worker_log, qr/connected to redis at 127\.0\.0\.1:\Q$port\E as gp-worker/,
        'the worker logs that it is connected as gp-worker';

    is $t->stop_worker, 0, 'the worker stops';
    $t->reset_acl_refusals;
}

###############################################################################
# a deployment on a Unix socket: create, payment, receipt

{
    reload_with(gov_pay_redis => "unix:$sock");

    my $res = $t->create_notice(amount => 2500);
    is $res->status, 201, 'over a Unix socket, a notice is created' or diag $res->describe;
    my $u = $res->json // {};
    ok scalar(grep { $_ eq "$sock:0" } clients_of('gp-edge')),
        'nginx is connected as gp-edge through the socket';

    is $t->sandbox_pay($u, trade_no => 'SBX-UNIX')->body, 'success',
        'over a Unix socket, the callback settles it';

    $t->start_worker(redis => "unix:$sock");
    my $got = wait_for(sub {
        my $g = $t->get_notice($u->{payment_code});
        return $g->status == 200 && ref $g->json->{receipt} eq 'HASH' ? $g->json : 0;
    }, 15, 'the receipt over the socket');
    ok $got, 'over a Unix socket, the worker issues the receipt' or diag $t->worker_log;
    ok scalar(grep { $_ eq "$sock:0" } clients_of('gp-worker')),
        'the worker is connected as gp-worker through the socket';

    my $url = $got ? $got->{receipt}{verify_url} : '';
    $url =~ s{^\Q${\ $t->public_url }\E}{};
    $res = $t->get($url, headers => { Accept => 'application/json' });
    is $res->status, 200, 'over a Unix socket, the receipt verification page answers'
        or diag $res->describe;
    my $v = $res->json // {};
    ok $v->{verified}, '... and the receipt\'s seal verifies';
    is +($v->{receipt} // {})->{EInvoiceNumber}, $got ? $got->{receipt}{number} : '',
        '... showing the payment\'s receipt';

    is $t->stop_worker, 0, 'the worker stops';
}

###############################################################################
# the cap on commands in flight: over it, 503 at once; the rest wait for
# Redis and are answered when it resumes

sub send_all {
    my (@raw) = @_;
    return map {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                                      Proto => 'tcp', Timeout => 2)
            or die "connect: $!";
        $s->autoflush(1);
        print {$s} $_;
        { sock => $s, data => '' };
    } @raw;
}

# reads what has come; returns the replies that are complete (nginx closes
# an HTTP/1.0 connection after its answer)
sub poll_replies {
    my ($conns, $wait) = @_;
    my $sel = IO::Select->new(map { $_->{sock} } grep { !$_->{done} } @$conns);
    my %by = map { ("$_->{sock}" => $_) } @$conns;
    for my $s ($sel->can_read($wait // 0.05)) {
        my $c = $by{"$s"};
        my $got = sysread($s, my $buf, 65536);
        if ($got) { $c->{data} .= $buf; next }
        $c->{done} = 1;
        ($c->{status}) = $c->{data} =~ m{^HTTP/1\.\d (\d{3})};
        $c->{status} //= 'none';
        close $s;
    }
    return grep { $_->{done} } @$conns;
}

{
    reload_with(gov_pay_redis => "unix:$sock", gov_pay_redis_max_inflight => 4);
    is $t->get("/q/$code")->status, 200, 'with 4 commands in flight at most, a page works';

    $t->hang_redis;
    my @conns = send_all(("GET /q/$code HTTP/1.0\r\nHost: localhost\r\n\r\n") x 10);

    ok wait_for(sub { poll_replies(\@conns) >= 6 }, 10, 'six answers while Redis hangs'),
        'while Redis hangs, the requests over the cap are answered';
    my @done = grep { $_->{done} } @conns;
    is scalar(@done), 6, 'exactly the 6 requests over the cap of 4 are answered';
    is_deeply [ map { $_->{status} } @done ], [ (503) x 6 ], '... each with a 503';
    is scalar(log_lines(qr/\[warn\].*redis unix:\Q$sock\E has 4 commands in flight \(gov_pay_redis_max_inflight\), refusing/)),
        6, 'each refusal is logged at [warn], naming the cap';

    $t->resume_redis;
    ok wait_for(sub { poll_replies(\@conns) == 10 }, 10, 'every answer'),
        'once Redis resumes, the 4 waiting requests are answered';
    is_deeply [ sort map { $_->{status} } @conns ], [ (200) x 4, (503) x 6 ],
        '... with their pages';
    is $t->get("/q/$code")->status, 200, 'and the next request is served';
}

###############################################################################
# the cap on bytes not yet sent (Redis not reading): over it, 503 at once;
# after the burst the output buffer is let go

{
    reload_with(gov_pay_redis => "unix:$sock", gov_pay_redis_max_inflight => 4096,
                gov_pay_redis_max_unsent => '64k');

    # creates of about 4 KiB each, enough to fill the socket's buffer (the
    # kernel's default for a Unix socket) and then the 64 KiB
    my @lines = map { { item_code => '103001', quantity => 1, unit_price => 1000000 + $_ } }
        1 .. 50;
    my $amount = 0;
    $amount += $_->{unit_price} for @lines;
    my %big = (lines => \@lines, amount => $amount, remark => '长' x 200);
    my $wmem = GovPay::Test::_read_file('/proc/sys/net/core/wmem_default') // 212992;
    my $count = int(($wmem + 65536) / 3000) + 40;

    SKIP: {
        skip "the socket buffer ($wmem bytes) would take $count requests", 8
            if $count > 900;

        my @raw = map { $t->signed_request_raw(POST => '/v1/notices', $t->notice_body(%big)) }
            1 .. $count;
        $t->hang_redis;
        my @conns = send_all(@raw);

        ok wait_for(sub { poll_replies(\@conns) >= 1 }, 10, 'a refusal'),
            "while Redis hangs, of $count large creates, some are refused";
        my @early = map { $_->{status} } grep { $_->{done} } @conns;
        is_deeply [ grep { $_ ne '503' } @early ], [], '... each with a 503';
        ok scalar(log_lines(qr/\[warn\].*bytes not yet sent \(gov_pay_redis_max_unsent\), refusing EVALSHA create/)),
            'the refusal is logged at [warn], naming the cap';

        $t->resume_redis;
        ok wait_for(sub { poll_replies(\@conns, 0.2) == $count }, 20, 'every answer'),
            'once Redis resumes, every create is answered';
        my %by;
        $by{ $_->{status} }++ for @conns;
        ok $by{201}, 'the creates that were queued are created (' . ($by{201} // 0) . ')';
        is +($by{201} // 0) + ($by{503} // 0), $count, 'the others were refused ('
            . ($by{503} // 0) . ')';

        is $t->get("/q/$code")->status, 200, 'the next request is served';
        ok wait_for(sub { log_lines(qr/\[info\].*redis output buffer of \d+ bytes released after a burst/) },
                    5, 'the buffer to be released'),
            'the output buffer that grew in the burst is let go after it';
    }
}

###############################################################################
# the connect timeout: a peer that never completes the handshake (a listening
# socket whose backlog is full) gets a 503 and a logged timeout

{
    socket(my $listener, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
    setsockopt($listener, SOL_SOCKET, SO_REUSEADDR, 1) or die "setsockopt: $!";
    bind($listener, pack_sockaddr_in(0, inet_aton('127.0.0.1'))) or die "bind: $!";
    listen($listener, 0) or die "listen: $!";
    my ($bport) = unpack_sockaddr_in(getsockname($listener));
    # the one connection a backlog of 0 holds; later SYNs are dropped
    my $filler = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $bport,
                                       Proto => 'tcp', Timeout => 2)
        or die "filler: $!";

    reload_with(gov_pay_redis => "127.0.0.1:$bport",
                gov_pay_redis_connect_timeout => '300ms');

    my $res = $t->get("/q/$code", timeout => 10);
    is $res->status, 503, 'with Redis\'s handshake never completing, a page answers 503'
        or diag $res->describe;
    ok wait_for(sub { log_lines(qr/\[error\].*gov_pay: connect\(\) to redis 127\.0\.0\.1:\Q$bport\E timed out \(gov_pay_redis_connect_timeout\)/) },
                5, 'the connect timeout in the log'),
        'the connect timeout is logged at [error]';
    is scalar(log_lines(qr/redis 127\.0\.0\.1:\Q$bport\E timed out on/)), 0,
        'no command timed out: the connect timer ended the attempt';

    reload_with(gov_pay_redis => "127.0.0.1:$port");
    ok wait_for(sub { $t->get("/q/$code")->status == 200 }, 10, 'the page'),
        'back on the real Redis, pages are served';
    close $filler;
    close $listener;
}

$t->check_error_log;

###############################################################################
# the ACL as committed, the default user off as in production: a restarted
# Redis loads every write back from its AOF.  Redis 7 checks each MULTI/EXEC
# it replays (how a script's writes are logged) against the default user's
# rights; a default user without them would drop those writes without a word.

{
    my $p = GovPay::Test->new(shards => 2, default_user_off => 1);
    my (undef, $ppub) = $p->issuer_keys('sm2');
    $p->start_redis;

    my $anon = Redis->new(server => '127.0.0.1:' . $p->redis_port, reconnect => 0);
    eval { $anon->get('{gp0}:seq') };
    like $@, qr/NOAUTH/, 'with the committed ACL, a client that does not log in can do nothing';
    eval { $anon->auth('default', '') };
    like $@, qr/WRONGPASS/, '... nor log in as the default user';
    $p->reset_acl_refusals;

    $p->start_nginx(<<'EOF', directives => { gov_pay_receipt_key => "sm2 $ppub TEST-SM2-01" });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF
    my $pn = $p->new_notice(amount => 3100);
    is $p->sandbox_pay($pn, trade_no => 'SBX-AOF')->body, 'success',
        'with the committed ACL, a notice is created and paid';
    $p->start_worker;
    ok wait_for(sub { ref +($p->get_notice($pn->{payment_code})->json // {})->{receipt} }, 15,
                'the receipt'), '... and receipted' or diag $p->worker_log;
    is $p->stop_worker, 0, 'the worker stops';

    my $before = $p->redis_snapshot;
    $p->restart_redis;
    my $after = $p->redis_snapshot;
    ok scalar(keys %$before) > 5, 'the store holds the notice, its events, its receipt';
    is +GovPay::Test->snapshot_diff($before, $after), '',
        'after a restart of Redis every key is back as it was (AOF)';
    unlike GovPay::Test::_read_file($p->dir . '/redis.log') // '', qr/AOF-loading-client/,
        'Redis refused nothing while loading its AOF';
    my $g = wait_for(sub {
        my $r = $p->get_notice($pn->{payment_code});
        return $r->status == 200 ? $r->json : 0;
    }, 10, 'the edge to reconnect') // {};
    is $g->{status}, 'PAID', 'the notice is still paid';
    ok ref $g->{receipt}, '... and has its receipt';

    $p->check_error_log;
}

###############################################################################
# the demo's ACL is the example's, with the hashes of the demo's passwords

{
    my $root = GovPay::Test::repo_root();
    my $want = GovPay::Test::_read_file("$root/conf/redis/users.acl.example") // '';
    $want =~ s{#<sha256-of-(\S+)-password>}{
        my $pw = GovPay::Test::_read_file("$root/conf/demo/keys/redis-$1.password") // '';
        $pw =~ s/\s+\z//;
        '#' . sha256_hex($pw);
    }ge;
    is GovPay::Test::_read_file("$root/conf/demo/users.acl"), $want,
        'conf/demo/users.acl is conf/redis/users.acl.example with the demo\'s passwords';
}

done_testing;
