package GovPay::Test;

# The prove harness of gov-pay edge: one object per test file owns a temporary
# directory, a real redis-server, a real nginx with ngx_http_gov_pay_module,
# and gov-pay-worker processes; every process it starts is stopped in END, even
# when a test dies.  Keys and secrets are made at run time.
#
#   use GovPay::Test;
#   my $t = GovPay::Test->new;
#   $t->start_redis;
#   $t->start_nginx(<<'EOF');
#       server {
#           listen 127.0.0.1:%%PORT%%;
#           location /v1/ { gov_pay_api; }
#       }
#   EOF
#   my $r = $t->signed_request(POST => '/v1/notices', { ... });
#   is $r->status, 201, 'notice is created';
#
# Units of the other schemes: push $t->add_unit(id => ..., scheme =>
# 'GOVPAY-SM2-SM3') into a registry, give nginx the platform keys
# ($t->new_platform_key('sm2')) in gov_pay_platform_key, and signed_request /
# verify_response_signature sign and check as that unit (sign_as, verify_as).
#
# Redis runs with an ACL made at run time from conf/redis/users.acl.example:
# nginx AUTHs as gp-edge (gov_pay_redis_auth) and every worker as gp-worker
# (redis_user, redis_password_file), each with a random password in
# keys/redis-<user>.password, so the whole suite runs with the least-privilege
# command sets; the harness's own client ($t->redis) is the default user,
# with every right.  redis_client(user => ...) connects as another user.
# new(default_user_off => 1) keeps the example's default user (off, as in
# production) and the harness's client logs in as gp-admin instead.
#
# Placeholders in nginx snippets: %%PORT%% (nginx), %%REDIS_PORT%%,
# %%TESTDIR%%.  Environment: GOV_PAY_BUILD (default "build", relative to the
# repository root), GOV_PAY_KEEP=1 keeps the temp dir, TEST_NGINX_BINARY
# overrides /usr/sbin/nginx, GOV_PAY_REDIS_SERVER overrides redis-server,
# GOV_PAY_LD_PRELOAD is preloaded into nginx (ASan runtime for `make asan`).

use strict;
use warnings;
use utf8;

use Carp qw(croak confess);
use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256 hmac_sha256_hex sha256 sha256_hex);
use Encode qw(encode_utf8);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Spec;
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::XS;
use MIME::Base64 qw(encode_base64);
use POSIX qw(:sys_wait_h strftime);
use Redis;
use Test::More ();
use Test::TCP qw(empty_port);
use Time::HiRes qw(time sleep);
use Time::Local qw(timegm);
use URI::Escape qw(uri_escape_utf8);

our @EXPORT = qw(wait_for mod11_10 make_code random_code random_string
                 random_hex rfc3339_to_epoch epoch_to_rfc3339 current_yy
                 shard_of valid_id_no valid_uscc json_encode json_decode);

our $UNIT     = '330100-TEST-001';
our $UNIT2    = '330100-TEST-002';
our $DIVISION = '330100';
our $SCHEME   = 'GOVPAY-HMAC-SHA256';

my $JSON = JSON::XS->new->utf8->canonical;

my @ALL;               # every harness object, for END
my $CREATOR_PID = $$;

# nginx daemonizes: become the child subreaper so that its master is
# reparented to this process (and reaped here) instead of to PID 1
{
    my $nr = eval { require 'syscall.ph'; &SYS_prctl() } // 157;  # x86_64
    syscall($nr, 36, 1, 0, 0, 0);                     # PR_SET_CHILD_SUBREAPER
}

# Test::More prints names with Chinese in them
for my $m (qw(output failure_output todo_output)) {
    binmode Test::More->builder->$m, ':encoding(UTF-8)';
}

###############################################################################
# paths

sub repo_root {
    return abs_path(File::Spec->catdir(dirname(__FILE__), '..', '..', '..'));
}

sub build_dir {
    my $b = $ENV{GOV_PAY_BUILD} // 'build';
    return File::Spec->file_name_is_absolute($b) ? $b
        : File::Spec->catdir(repo_root(), $b);
}

sub module_path { build_dir() . '/nginx/objs/ngx_http_gov_pay_module.so' }
sub worker_path { build_dir() . '/gov-pay-worker' }
sub seal_tool_path { build_dir() . '/tests/seal_tool' }
sub nginx_binary { $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx' }
sub redis_binary { $ENV{GOV_PAY_REDIS_SERVER} // 'redis-server' }

###############################################################################
# construction

# new(%opts): module => 0 makes start_nginx/nginx_t omit load_module and the
# gov_pay_* directives (used by the harness self-test with a plain nginx).
sub new {
    my ($class, %opts) = @_;

    my $self = bless {
        module     => $opts{module} // 1,
        dir        => tempdir('gov-pay-t-XXXXXX', TMPDIR => 1, CLEANUP => 0),
        redis      => undef,
        nginx      => undef,
        workers    => {},
        shards     => $opts{shards} // 16,
        nt_count   => 0,
        default_user_off => $opts{default_user_off} // 0,
    }, $class;

    chmod 0755, $self->{dir};

    $self->{redis_port} = empty_port();
    $self->{port}       = _other_port($self->{redis_port});

    $self->_make_keys_and_registry;
    $self->_make_redis_acl;

    push @ALL, $self;
    return $self;
}

sub dir        { $_[0]{dir} }
sub port       { $_[0]{port} }
sub redis_port { $_[0]{redis_port} }
sub shards     { $_[0]{shards} }
sub public_url { 'http://127.0.0.1:' . $_[0]{port} }
sub code_key   { $_[0]{code_key} }
sub sandbox_key { $_[0]{sandbox_key} }
sub registry_file { $_[0]{dir} . '/registry.json' }
sub code_key_file { $_[0]{dir} . '/keys/code.key' }
sub sandbox_key_file { $_[0]{dir} . '/keys/sandbox.key' }
sub pii_key_file { $_[0]{dir} . '/keys/pii.keys' }
sub error_log  { $_[0]{dir} . '/error.log' }

sub unit_secret {
    my ($self, $unit) = @_;
    $unit //= $UNIT;
    return $self->{secrets}{$unit} // croak "no secret for unit $unit";
}

# new_unit_secret($unit): a random secret written to keys/<unit>.secret and
# known to signed_request and the response verifier; returns the secret
sub new_unit_secret {
    my ($self, $unit) = @_;
    $self->{secrets}{$unit} = random_string(40);
    _write_file("$self->{dir}/keys/$unit.secret", $self->{secrets}{$unit} . "\n", 0600);
    return $self->{secrets}{$unit};
}

sub _other_port {
    my ($not) = @_;
    for (1 .. 50) {
        my $p = empty_port();
        return $p if $p != $not;
    }
    croak 'no second free port';
}

sub _write_file {
    my ($path, $content, $mode) = @_;
    make_path(dirname($path));
    open my $fh, '>:raw', $path or croak "open $path: $!";
    print {$fh} $content;
    close $fh or croak "close $path: $!";
    chmod $mode, $path if defined $mode;
    return $path;
}

sub _read_file {
    my ($path) = @_;
    open my $fh, '<:raw', $path or return undef;
    local $/;
    my $c = <$fh>;
    return $c;
}

sub write_file {
    my ($self, $rel, $content) = @_;
    my $path = File::Spec->file_name_is_absolute($rel) ? $rel
        : "$self->{dir}/$rel";
    return _write_file($path, $content);
}

sub _make_keys_and_registry {
    my ($self) = @_;

    # a unit secret file: text, with a trailing newline that is not part of
    # the secret (docs/internals.md)
    for my $u ($UNIT, $UNIT2) {
        $self->{secrets}{$u} = random_string(40);
        _write_file("$self->{dir}/keys/$u.secret", $self->{secrets}{$u} . "\n",
                    0600);
    }

    $self->{code_key} = random_hex(64);
    _write_file($self->code_key_file, $self->{code_key} . "\n", 0600);

    $self->{sandbox_key} = random_string(48);
    _write_file($self->sandbox_key_file, $self->{sandbox_key}, 0600);

    # the keys that seal the payer's name and ID number (gov_pay_pii_key,
    # worker.json pii_key): one key, id "t1"
    $self->write_pii_keys([ t1 => random_hex(32) ]);

    $self->write_registry;
}

# the Redis ACL: conf/redis/users.acl.example with a random password for
# each of its users (keys/redis-<user>.password, the hash in the ACL); the
# default user, the harness's own client, keeps every right, with no password
sub _make_redis_acl {
    my ($self) = @_;
    my $example = repo_root() . '/conf/redis/users.acl.example';
    my $text = _read_file($example) // croak "read $example: $!";
    my @acl = $self->{default_user_off} ? () : ('user default on nopass ~* &* +@all');
    for my $line (split /\n/, $text) {
        next if $line =~ /^\s*$/;
        next if $line =~ /^user default / && !$self->{default_user_off};
        $line =~ s{#<sha256-of-(\S+)-password>}{
            my $pw = $self->{redis_passwords}{$1} = random_string(32);
            _write_file($self->redis_password_file($1), "$pw\n", 0600);
            '#' . sha256_hex($pw);
        }ge;
        push @acl, $line;
    }
    _write_file($self->redis_acl_file, join("\n", @acl) . "\n");
}

sub redis_acl_file { $_[0]{dir} . '/redis-users.acl' }
sub redis_password_file { $_[0]{dir} . "/keys/redis-$_[1].password" }
sub redis_password {
    my ($self, $user) = @_;
    return $self->{redis_passwords}{$user} // croak "no Redis user $user";
}

# write_pii_keys([kid => hex, ...]): the pii key file (docs/internals.md),
# the first key seals; returns its path
sub write_pii_keys {
    my ($self, $keys) = @_;
    my @k = @$keys;
    my $text = "# test keys, made at run time\n";
    while (my ($kid, $hex) = splice @k, 0, 2) { $text .= "$kid $hex\n" }
    return _write_file($self->pii_key_file, $text, 0600);
}

# the registry used by every test; %override replaces top-level parts
sub default_registry {
    my ($self) = @_;
    return {
        units => [
            { id => $UNIT, name => '测试单位一', scheme => $SCHEME,
              secret_file => "keys/$UNIT.secret",
              items => ['103001', '103002'] },
            { id => $UNIT2, name => '测试单位二', scheme => $SCHEME,
              secret_file => "keys/$UNIT2.secret",
              items => ['103001', '103003'] },
        ],
        items => [
            { code => '103001', name => '学费', department => '杭州市教育局',
              amount => { rule => 'range', min => 1, max => 10000000000 } },
            { code => '103002', name => '证书工本费', department => '杭州市教育局',
              amount => { rule => 'fixed', amount => 2000 } },
            { code => '103003', name => '考试费', department => '杭州市教育考试院',
              amount => { rule => 'range', min => 1, max => 100000 } },
        ],
    };
}

# write_registry($data = default, $file = registry.json): returns the path
sub write_registry {
    my ($self, $data, $file) = @_;
    $data //= $self->default_registry;
    $file //= $self->registry_file;
    $file = "$self->{dir}/$file" unless File::Spec->file_name_is_absolute($file);
    return _write_file($file, JSON::XS->new->utf8->canonical->pretty->encode($data));
}

###############################################################################
# small exported helpers

sub random_string {
    my ($n, $alphabet) = @_;
    my @c = split //, ($alphabet
        // 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789');
    my $bytes = _urandom($n);
    return join '', map { $c[ord(substr($bytes, $_, 1)) % @c] } 0 .. $n - 1;
}

sub random_hex { return substr(unpack('H*', _urandom(int(($_[0] + 1) / 2))), 0, $_[0]) }

sub _urandom {
    my ($n) = @_;
    open my $fh, '<:raw', '/dev/urandom' or croak "/dev/urandom: $!";
    my $buf;
    my $got = read $fh, $buf, $n;
    croak 'short read from /dev/urandom' unless $got == $n;
    return $buf;
}

# ISO/IEC 7064 MOD 11-10 check digit over a string of digits
sub mod11_10 {
    my ($digits) = @_;
    croak "not digits: $digits" unless $digits =~ /^\d+$/;
    my $p = 10;
    for my $d (split //, $digits) {
        my $s = ($p + $d) % 10;
        $s = 10 if $s == 0;
        $p = ($s * 2) % 11;
    }
    return (11 - $p) % 10;
}

# make_code($division, $yy, $body11): a 20-digit code with a valid check digit
sub make_code {
    my ($division, $yy, $body) = @_;
    my $first = sprintf '%s%02d%011s', $division, $yy, $body;
    return $first . mod11_10($first);
}

# a well-formed code (valid check digit) with a random body: almost surely no
# notice
sub random_code {
    my (%o) = @_;
    return make_code($o{division} // $DIVISION, $o{yy} // current_yy(),
                     random_string(11, '0123456789'));
}

sub current_yy {
    my @t = gmtime(time + 8 * 3600);
    return ($t[5] + 1900) % 100;
}

# gp_shard_of: first 4 bytes of SHA-256(unit "\n" request_id), big-endian, mod S
sub shard_of {
    my ($unit, $request_id, $shards) = @_;
    return unpack('N', sha256(encode_utf8("$unit\n$request_id"))) % $shards;
}

# a Chinese resident ID number (GB 11643) with a valid check character
sub valid_id_no {
    my ($first17) = @_;
    $first17 //= '33010620000101123';
    my @w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2);
    my @d = split //, $first17;
    my $s = 0;
    $s += $d[$_] * $w[$_] for 0 .. 16;
    return $first17 . substr('10X98765432', $s % 11, 1);
}

# a unified social credit code (GB 32100) with a valid check character
sub valid_uscc {
    my ($first17) = @_;
    $first17 //= '91330106MA2GL1RQ5';
    my $cs = '0123456789ABCDEFGHJKLMNPQRTUWXY';
    my @w = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28);
    my $s = 0;
    $s += index($cs, substr($first17, $_, 1)) * $w[$_] for 0 .. 16;
    my $c = 31 - $s % 31;
    $c = 0 if $c == 31;
    return $first17 . substr($cs, $c, 1);
}

sub rfc3339_to_epoch {
    my ($s) = @_;
    return undef unless defined $s && $s =~
        /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d+)?(Z|([+-])(\d\d):(\d\d))$/;
    my $e = timegm($6, $5, $4, $3, $2 - 1, $1);
    if ($7 ne 'Z') {
        my $off = ($9 * 3600 + $10 * 60) * ($8 eq '+' ? 1 : -1);
        $e -= $off;
    }
    return $e;
}

sub epoch_to_rfc3339 {
    my ($e) = @_;
    return strftime('%Y-%m-%dT%H:%M:%S+08:00', gmtime($e + 8 * 3600));
}

sub json_encode { $JSON->encode($_[0]) }
sub json_decode { my $d = eval { $JSON->decode($_[0]) }; return $d }

# wait_for(sub { ... }, $timeout_seconds, $what): polls every 50 ms until the
# sub returns true; returns that value, or undef (with a diag) at the deadline
sub wait_for {
    my ($cond, $timeout, $what) = @_;
    $timeout //= 5;
    my $deadline = time + $timeout;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        if (time >= $deadline) {
            Test::More::diag("timed out after ${timeout}s waiting for "
                             . ($what // 'a condition'));
            return undef;
        }
        sleep 0.05;
    }
}

###############################################################################
# processes

# alive($pid): true while the process exists and is not a zombie
sub alive {
    my ($pid) = @_;
    return 0 unless $pid;
    my $stat = _read_file("/proc/$pid/stat");
    return 0 unless defined $stat;
    if ($stat =~ /^\d+ \(.*\) [ZX] /s) {
        waitpid($pid, WNOHANG);      # ours when we are the subreaper
        return 0;
    }
    return 1;
}

sub children_of {
    my ($ppid) = @_;
    my @kids;
    opendir my $dh, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $dh) {
        my $stat = _read_file("/proc/$p/stat") // next;
        push @kids, $p if $stat =~ /^\d+ \(.*\) \S (\d+) /s && $1 == $ppid;
    }
    return @kids;
}

# reaps our own children so that alive() sees them go
sub _reap {
    my ($pid) = @_;
    my $r = waitpid($pid, WNOHANG);
    return $r == $pid ? $? : undef;
}

# _spawn(\@argv, %o): fork + exec with stdout/stderr to $o{log}; env in $o{env}
sub _spawn {
    my ($argv, %o) = @_;
    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        eval {
            if ($o{log}) {
                open STDOUT, '>>', $o{log} or die "stdout: $!";
                open STDERR, '>>&', \*STDOUT or die "stderr: $!";
            }
            open STDIN, '<', '/dev/null';
            %ENV = (%ENV, %{ $o{env} // {} });
            chdir $o{cwd} if $o{cwd};
            exec { $argv->[0] } @$argv;
        };
        print STDERR "exec $argv->[0]: $!\n";
        POSIX::_exit(127);
    }
    return $pid;
}

sub _wait_gone {
    my ($pid, $timeout, $own_child) = @_;
    my $status;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        if ($own_child) {
            my $s = _reap($pid);
            return (1, $s) if defined $s;
            return (1, undef) unless kill 0, $pid;
        } else {
            return (1, undef) unless alive($pid);
        }
        sleep 0.02;
    }
    return (0, undef);
}

###############################################################################
# redis

# start_redis(%opts): redis-server on the test's port; extra args in $o{args}
sub start_redis {
    my ($self, %o) = @_;
    croak 'redis already running' if $self->{redis} && alive($self->{redis}{pid});

    my $dir = "$self->{dir}/redis";
    make_path($dir);

    my @argv = (redis_binary(), '--port', $self->{redis_port},
                '--bind', '127.0.0.1', '--dir', $dir,
                '--appendonly', 'yes', '--appendfsync', 'always',
                '--save', '', '--daemonize', 'no', '--protected-mode', 'no',
                # as in production (docs/operations.md, "Capacity"): a
                # notice hash with its sealed payer stays a listpack
                '--hash-max-listpack-value', '128',
                '--aclfile', $self->redis_acl_file,
                '--logfile', '', @{ $o{args} // $self->{redis_args} // [] });
    $self->{redis_args} = $o{args} if $o{args};

    my $pid = _spawn(\@argv, log => "$self->{dir}/redis.log");
    $self->{redis} = { pid => $pid, stopped => 0 };
    delete $self->{redis_client};

    my $ok = wait_for(sub {
        return 0 unless kill 0, $pid;
        my $c = eval { Redis->new(server => "127.0.0.1:$self->{redis_port}",
                                   reconnect => 0, cnx_timeout => 0.5,
                                   $self->_admin_login) };
        return 0 unless $c;
        my $pong = eval { $c->ping };
        eval { $c->quit };
        return $pong && $pong eq 'PONG';
    }, 10, "redis-server on port $self->{redis_port}");

    unless ($ok) {
        my $log = _read_file("$self->{dir}/redis.log") // '';
        confess "redis-server did not start:\n$log";
    }
    return $pid;
}

# redis(): a client (reconnecting) for inspecting and changing state
sub redis {
    my ($self) = @_;
    croak 'redis not started' unless $self->{redis};
    return $self->{redis_client} //= Redis->new(
        server        => "127.0.0.1:$self->{redis_port}",
        reconnect     => 5,
        every         => 100_000,
        cnx_timeout   => 2,
        read_timeout  => 5,
        write_timeout => 5,
        $self->_admin_login,
    );
}

# the harness's own login: none (the default user) or, with the default user
# off, gp-admin's
sub _admin_login {
    my ($self) = @_;
    return () unless $self->{default_user_off};
    return (username => 'gp-admin', password => $self->redis_password('gp-admin'));
}

# redis_client(user => ..., password => ...): a new client of its own that
# AUTHs as that ACL user (the password defaults to the user's from the ACL);
# dies when Redis refuses the AUTH
sub redis_client {
    my ($self, %o) = @_;
    croak 'redis not started' unless $self->{redis};
    my $c = Redis->new(server => "127.0.0.1:$self->{redis_port}",
                       reconnect => 0, cnx_timeout => 2, read_timeout => 5,
                       write_timeout => 5);
    $c->auth($o{user}, $o{password} // $self->redis_password($o{user}))
        if defined $o{user};
    return $c;
}

sub redis_pid { $_[0]{redis} ? $_[0]{redis}{pid} : undef }

# stop_redis(): SIGTERM (AOF flushed), waits for the exit
sub stop_redis {
    my ($self, $sig) = @_;
    my $r = $self->{redis} or return;
    $sig //= 'TERM';
    kill 'CONT', $r->{pid} if $r->{stopped};
    $r->{stopped} = 0;
    # the ACL LOG lives in memory: keep what it holds for check_error_log
    push @{ $self->{acl_refusals} }, $self->redis_acl_refusals;
    if (my $c = delete $self->{redis_client}) { eval { $c->quit } }
    kill $sig, $r->{pid};
    my ($gone) = _wait_gone($r->{pid}, 10, 1);
    unless ($gone) {
        kill 'KILL', $r->{pid};
        _wait_gone($r->{pid}, 5, 1);
    }
    $self->{redis} = undef;
    return $gone;
}

sub kill_redis { $_[0]->stop_redis('KILL') }

# restart_redis(): same port and dir, so the AOF data comes back
sub restart_redis {
    my ($self) = @_;
    $self->stop_redis if $self->{redis};
    return $self->start_redis;
}

# hang_redis() / resume_redis(): SIGSTOP / SIGCONT
sub hang_redis {
    my ($self) = @_;
    my $r = $self->{redis} or croak 'redis not running';
    if (my $c = delete $self->{redis_client}) { eval { $c->quit } }
    kill 'STOP', $r->{pid} or croak "SIGSTOP redis: $!";
    $r->{stopped} = 1;
}

sub resume_redis {
    my ($self) = @_;
    my $r = $self->{redis} or croak 'redis not running';
    kill 'CONT', $r->{pid} or croak "SIGCONT redis: $!";
    $r->{stopped} = 0;
}

# what Redis refused (ACL LOG: a command or a key outside a user's rights, a
# failed AUTH) since it started or since the last reset_acl_refusals, one line
# each: "<reason> <object> (<context>) by <user>"; empty when Redis is not
# running.  stop_redis keeps what the log held for check_error_log.
sub redis_acl_refusals {
    my ($self) = @_;
    my $r = $self->{redis} or return ();
    return () if $r->{stopped} || !alive($r->{pid});
    my @log = eval { $self->redis->acl('LOG', 1000) };
    return map { my %e = @$_; "$e{reason} $e{object} ($e{context}) by $e{username}" }
        @log;
}

# forgets the refusals so far (a test that provoked them on purpose)
sub reset_acl_refusals {
    my ($self) = @_;
    $self->{acl_refusals} = [];
    $self->redis->acl('LOG', 'RESET') if $self->{redis};
}

# every key (SCAN), sorted: for "nothing changed" assertions
sub redis_keys {
    my ($self, $pattern) = @_;
    my $r = $self->redis;
    my ($cursor, %keys) = (0);
    do {
        my ($next, $batch) = $r->scan($cursor, 'MATCH', $pattern // '*',
                                      'COUNT', 1000);
        $keys{$_} = 1 for @$batch;
        $cursor = $next;
    } while ($cursor != 0);
    return sort keys %keys;
}

# a snapshot of the whole store (keys with type and content digest), to show
# exactly what a rejected request changed
sub redis_snapshot {
    my ($self) = @_;
    my $r = $self->redis;
    my %snap;
    for my $k ($self->redis_keys) {
        my $type = $r->type($k);
        my $v;
        if ($type eq 'string') { $v = $r->get($k) }
        elsif ($type eq 'hash') { my %h = $r->hgetall($k); $v = json_encode(\%h) }
        elsif ($type eq 'stream') { $v = 'xlen=' . $r->xlen($k) }
        else { $v = $type }
        $snap{$k} = "$type:" . (defined $v ? $v : '');
    }
    return \%snap;
}

# describe the difference of two snapshots ('' when equal)
sub snapshot_diff {
    my ($class, $a, $b) = @_;
    my @d;
    for my $k (sort keys %{ { %$a, %$b } }) {
        next if defined $a->{$k} && defined $b->{$k} && $a->{$k} eq $b->{$k};
        push @d, !defined $a->{$k} ? "+ $k"
               : !defined $b->{$k} ? "- $k" : "~ $k";
    }
    return join "\n", @d;
}

# stored_notice($request_id[, $unit]) -> ($key, \%hash) of the notice hash
# created with that request_id (docs/internals.md: {gpN}:n:<seq>)
sub stored_notice {
    my ($self, $request_id, $unit) = @_;
    $unit //= $UNIT;
    my $r = $self->redis;
    for my $k ($self->redis_keys('{gp*}:n:*')) {
        next unless $r->type($k) eq 'hash';
        my %h = $r->hgetall($k);
        next unless ($h{request_id} // '') eq $request_id && ($h{unit} // '') eq $unit;
        return ($k, \%h);
    }
    return;
}

# sum of XLEN of the settled (or another kind of) stream over all shards,
# and the entries with their shard
sub stream_entries {
    my ($self, $kind) = @_;
    $kind //= 'settled';
    my $r = $self->redis;
    my @all;
    for my $n (0 .. $self->{shards} - 1) {
        my $key = "{gp$n}:$kind";
        next unless $r->exists($key);
        for my $e (@{ $r->xrange($key, '-', '+') }) {
            my ($id, $fields) = @$e;
            my %f = @$fields;
            push @all, { shard => $n, stream => $key, id => $id, fields => \%f,
                         order => [ @$fields[ grep { $_ % 2 == 0 } 0 .. $#$fields ] ] };
        }
    }
    return @all;
}

###############################################################################
# nginx

sub _default_http_directives {
    my ($self) = @_;
    return [
        [ gov_pay_redis           => "127.0.0.1:$self->{redis_port}" ],
        [ gov_pay_redis_auth      => 'gp-edge '
                                     . $self->redis_password_file('gp-edge') ],
        [ gov_pay_redis_timeout   => '1s' ],
        [ gov_pay_shards          => $self->{shards} ],
        [ gov_pay_registry        => $self->registry_file ],
        [ gov_pay_code_key        => $self->code_key_file ],
        [ gov_pay_division        => $DIVISION ],
        [ gov_pay_public_url      => $self->public_url ],
        [ gov_pay_auth_window     => '300s' ],
        [ gov_pay_default_due     => '30d' ],
        [ gov_pay_idempotency_ttl => '8d' ],
        [ gov_pay_sandbox_key     => $self->sandbox_key_file ],
        [ gov_pay_pii_key         => $self->pii_key_file ],
    ];
}

sub _subst {
    my ($self, $text) = @_;
    $text =~ s/%%PORT%%/$self->{port}/g;
    $text =~ s/%%REDIS_PORT%%/$self->{redis_port}/g;
    $text =~ s/%%TESTDIR%%/$self->{dir}/g;
    return $text;
}

# nginx_conf($http_snippet, %opts) -> text.  %opts:
#   directives => { gov_pay_x => 'value' | [values] | undef (omit) }
#     http-level overrides; an array gives the directive once per value
#   worker_processes => N (1), main => 'extra main-level text',
#   events => 'extra events text', module => 0/1, error_log => path,
#   error_log_level => 'info' (the default; bench/edge.pl runs at notice)
sub nginx_conf {
    my ($self, $snippet, %o) = @_;
    my $dir = $self->{dir};
    my $module = $o{module} // $self->{module};
    my $over = $o{directives} // {};

    my $conf = '';
    $conf .= 'load_module ' . ($o{module_path} // module_path()) . ";\n\n"
        if $module;
    $conf .= "user root;\n" if $> == 0;
    $conf .= "daemon on;\nmaster_process on;\n";
    $conf .= 'worker_processes ' . ($o{worker_processes} // 1) . ";\n";
    $conf .= "pid $dir/nginx.pid;\n";
    $conf .= 'error_log ' . ($o{error_log} // "$dir/error.log") . ' '
           . ($o{error_log_level} // 'info') . ";\n";
    $conf .= "lock_file $dir/nginx.lock;\n";
    $conf .= ($o{main} // '') . "\n";
    $conf .= "events {\n    worker_connections 1024;\n" . ($o{events} // '')
           . "}\n\n";
    $conf .= "http {\n";
    $conf .= "    access_log $dir/access.log;\n";
    $conf .= "    client_body_temp_path $dir/client_body_temp;\n";
    $conf .= "    proxy_temp_path $dir/proxy_temp;\n";
    $conf .= "    fastcgi_temp_path $dir/fastcgi_temp;\n";
    $conf .= "    uwsgi_temp_path $dir/uwsgi_temp;\n";
    $conf .= "    scgi_temp_path $dir/scgi_temp;\n";
    $conf .= "    default_type application/octet-stream;\n\n";
    if ($module) {
        my %seen;
        for my $d (@{ $self->_default_http_directives }) {
            my ($name, $value) = @$d;
            $seen{$name} = 1;
            $value = $over->{$name} if exists $over->{$name};
            next unless defined $value;
            $conf .= "    $name $_;\n" for ref $value eq 'ARRAY' ? @$value : $value;
        }
        for my $name (sort keys %$over) {
            next if $seen{$name} || !defined $over->{$name};
            $conf .= "    $name $_;\n"
                for ref $over->{$name} eq 'ARRAY' ? @{ $over->{$name} } : $over->{$name};
        }
        $conf .= "\n";
    }
    $conf .= $self->_subst($snippet // '') . "\n}\n";
    return $conf;
}

# start_nginx($http_snippet, %opts): writes nginx.conf, starts nginx, waits
# until the port answers.  Dies (with the error log) when nginx fails.
sub start_nginx {
    my ($self, $snippet, %o) = @_;
    croak 'nginx already running' if $self->{nginx} && alive($self->{nginx}{pid});

    my $dir = $self->{dir};
    make_path("$dir/$_") for qw(client_body_temp proxy_temp fastcgi_temp
                                 uwsgi_temp scgi_temp);
    my $conf = $self->nginx_conf($snippet, %o);
    _write_file("$dir/nginx.conf", $conf);
    $self->{nginx_snippet} = [$snippet, %o];
    unlink "$dir/nginx.pid";

    my $out = _capture(nginx_binary(), '-p', "$dir/", '-c', "$dir/nginx.conf",
                       '-e', "$dir/error.log");
    my $rc = $? >> 8;
    if ($rc != 0) {
        confess "nginx failed to start (exit $rc):\n$out\n"
            . (_read_file("$dir/error.log") // '');
    }

    $self->{log_checked} = 0;
    $self->{nginx_started} = 1;

    my $pid = wait_for(sub {
        my $p = _read_file("$dir/nginx.pid");
        return $p && $p =~ /^(\d+)/ ? $1 : 0;
    }, 10, 'nginx pid file')
        or confess "nginx wrote no pid file:\n" . (_read_file("$dir/error.log") // '');
    $self->{nginx} = { pid => $pid };

    $self->wait_port($self->{port}, 10)
        or confess "nginx does not answer on port $self->{port}:\n"
            . (_read_file("$dir/error.log") // '');
    # the worker processes are up once one exists
    wait_for(sub { scalar children_of($pid) }, 10, 'nginx worker processes');
    return $pid;
}

sub nginx_pid { $_[0]{nginx} ? $_[0]{nginx}{pid} : undef }

sub nginx_workers {
    my ($self) = @_;
    return () unless $self->{nginx};
    return children_of($self->{nginx}{pid});
}

sub wait_port {
    my ($self, $port, $timeout) = @_;
    return wait_for(sub {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Timeout => 0.5);
        return 0 unless $s;
        close $s;
        return 1;
    }, $timeout // 10, "port $port to accept connections");
}

# runs a command (nginx) and returns its stdout+stderr; GOV_PAY_LD_PRELOAD
# (the sanitizer runtime for an ASan build of the module) becomes LD_PRELOAD
sub _capture {
    my (@argv) = @_;
    local $ENV{LD_PRELOAD} = $ENV{GOV_PAY_LD_PRELOAD}
        if $ENV{GOV_PAY_LD_PRELOAD};
    my $pid = open(my $fh, '-|') // croak "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        { exec { $argv[0] } @argv; }
        print "exec $argv[0]: $!\n";
        POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return $out;
}

# nginx_t($http_snippet, %opts) -> (exit code, output): `nginx -t` on a config
# written to its own file with its own error log (so expected [emerg] lines
# stay out of the main error log)
sub nginx_t {
    my ($self, $snippet, %o) = @_;
    my $n = ++$self->{nt_count};
    my $dir = $self->{dir};
    my $log = "$dir/nginx-t-$n.log";
    make_path("$dir/$_") for qw(client_body_temp proxy_temp fastcgi_temp
                                 uwsgi_temp scgi_temp);
    my $conf = $self->nginx_conf($snippet, %o, error_log => $log);
    _write_file("$dir/nginx-t-$n.conf", $conf);
    my $out = _capture(nginx_binary(), '-t', '-p', "$dir/", '-c',
                       "$dir/nginx-t-$n.conf", '-e', $log);
    my $rc = $? >> 8;
    return ($rc, $out);
}

sub nginx_signal {
    my ($self, $sig) = @_;
    my $out = _capture(nginx_binary(), '-p', "$self->{dir}/", '-c',
                       "$self->{dir}/nginx.conf", '-e', "$self->{dir}/error.log",
                       '-s', $sig);
    return ($? >> 8, $out);
}

# reload(%opts): optionally rewrites nginx.conf ($opts{snippet} and the
# start_nginx options), sends HUP, waits until every old worker is gone and a
# new one is up
sub reload_nginx {
    my ($self, %o) = @_;
    my $n = $self->{nginx} or croak 'nginx not running';
    if (exists $o{snippet}) {
        my ($old, %oo) = @{ $self->{nginx_snippet} };
        my $snippet = delete $o{snippet};
        my %merged = (%oo, %o);
        _write_file("$self->{dir}/nginx.conf", $self->nginx_conf($snippet, %merged));
        $self->{nginx_snippet} = [$snippet, %merged];
    }
    my %old = map { $_ => 1 } children_of($n->{pid});
    kill 'HUP', $n->{pid} or croak "HUP nginx: $!";
    return wait_for(sub {
        my @now = children_of($n->{pid});
        return 0 if grep { $old{$_} } @now;
        return scalar @now;
    }, $o{timeout} // 10, 'nginx reload (old workers gone, new ones up)');
}

# quit_nginx($timeout): graceful quit; true if the master exited in time
sub quit_nginx {
    my ($self, $timeout) = @_;
    my $n = $self->{nginx} or return 1;
    my @workers = children_of($n->{pid});
    kill 'QUIT', $n->{pid};
    my ($gone) = _wait_gone($n->{pid}, $timeout // 10, 0);
    return 0 unless $gone;
    for my $w (@workers) { _wait_gone($w, 2, 0) }
    $self->{nginx} = undef;
    return 1;
}

# stop_nginx(): fast shutdown (TERM), then KILL of the master and its workers
sub stop_nginx {
    my ($self) = @_;
    my $n = $self->{nginx} or return 1;
    my @workers = children_of($n->{pid});
    kill 'TERM', $n->{pid};
    my ($gone) = _wait_gone($n->{pid}, 5, 0);
    push @workers, children_of($n->{pid}) if alive($n->{pid});
    unless ($gone) {
        kill 'KILL', $n->{pid};
        _wait_gone($n->{pid}, 2, 0);
    }
    for my $w (@workers) {
        next unless alive($w);
        my ($g) = _wait_gone($w, 2, 0);
        kill 'KILL', $w unless $g;
    }
    $self->{nginx} = undef;
    return $gone;
}

# error log lines matching the alarming levels and sanitizer reports
sub bad_log_lines {
    my ($self, $file) = @_;
    my $log = _read_file($file // $self->error_log) // '';
    return grep { /\[(?:alert|emerg)\]|AddressSanitizer|runtime error:|LeakSanitizer/ }
        split /\n/, $log;
}

# check_error_log(): the end of a test file, as nginx-tests does it: the
# workers are stopped (TERM), nginx is stopped gracefully (QUIT), and only then
# are the logs read, so that what nginx says at exit counts: a request whose
# reference was leaked keeps its connection open, and the exiting worker logs
# "open socket ... left in connection" as an [alert].  Tests: nginx quits
# in time, and no [alert], [emerg] or sanitizer report is in the error logs;
# while Redis runs, also that its ACL LOG is empty: the edge and the workers
# ran with their least-privilege users and Redis refused them nothing.
# Nothing may use this nginx afterwards (start it again if needed).  allow =>
# qr/.../: lines a test provoked on purpose (a refused reload's [emerg]).
sub check_error_log {
    my ($self, %o) = @_;
    for my $name (keys %{ $self->{workers} }) {
        eval { $self->stop_worker($name) };
    }
    if ($self->{nginx}) {
        Test::More::ok($self->quit_nginx($o{quit_timeout} // 30),
                       'nginx quits gracefully (QUIT) in time');
    }
    if ($self->{redis} || @{ $self->{acl_refusals} // [] }) {
        my @refused = (@{ $self->{acl_refusals} // [] }, $self->redis_acl_refusals);
        Test::More::ok(!@refused, 'Redis refused the edge and the workers nothing '
                                  . '(ACL LOG)')
            or Test::More::diag(join "\n", @refused);
    }
    $self->{log_checked} = 1;
    my @bad = $self->bad_log_lines;
    @bad = grep { !/$o{allow}/ } @bad if $o{allow};      # expected ones
    for my $log (values %{ $self->{old_worker_logs} // {} }) {
        push @bad, grep { /AddressSanitizer|runtime error:|LeakSanitizer/ }
            split /\n/, (_read_file($log) // '');
    }
    Test::More::ok(!@bad, $o{name} // 'no alert, emerg or sanitizer report in the error logs')
        or Test::More::diag(join "\n", @bad);
}

# done_testing(): check_error_log (unless done since nginx last started), then
# Test::More's done_testing
sub done_testing {
    my ($self, @args) = @_;
    $self->check_error_log unless $self->{log_checked};
    Test::More::done_testing(@args);
}

sub error_log_text { _read_file($_[0]->error_log) // '' }

###############################################################################
# worker

# worker_config(%o): consumer, block_ms, claim_idle_ms, max_deliveries,
# plugins, receipt (the receipt plugin's overrides), redis (the address),
# redis_auth => 0 (no redis_user / redis_password_file), extra => {...}
sub worker_config {
    my ($self, %o) = @_;
    return {
        redis          => $o{redis} // "127.0.0.1:$self->{redis_port}",
        (($o{redis_auth} // 1)
         ? (redis_user          => 'gp-worker',
            redis_password_file => $self->redis_password_file('gp-worker'))
         : ()),
        shards         => $self->{shards},
        consumer       => $o{consumer} // 'worker-1',
        registry       => $self->registry_file,
        block_ms       => $o{block_ms} // 200,
        claim_idle_ms  => $o{claim_idle_ms} // 30000,
        max_deliveries => $o{max_deliveries} // 5,
        pii_key        => $self->pii_key_file,
        plugins        => $o{plugins} // {
            receipt => $self->receipt_config(%{ $o{receipt} // {} }),
        },
        %{ $o{extra} // {} },
    };
}

# seal_clear_notices(): seals the payer of every notice that holds it in
# clear with the worker's `pii reseal` (what it does for the notices of an
# edge older than sealing). For fixtures that write notices straight into
# Redis: Perl has no SM4-GCM. Returns the command's output; dies if it fails.
sub seal_clear_notices {
    my ($self) = @_;
    my $cfg = _write_file("$self->{dir}/worker-pii.json",
        JSON::XS->new->utf8->canonical->encode($self->worker_config));
    my $out = _capture(worker_prefix(), worker_path(), '-c', $cfg, 'pii', 'reseal');
    croak "pii reseal failed:\n$out" if $?;
    return $out;
}

# receipt_open($rec, $code, $number, $field = 'receipt_doc'): the plain
# bytes of a receipt's document (or, with 'receipt_pdf', its PDF) as the
# worker stores it in Redis: sealed under the pii key for that receipt
# (docs/internals.md). undef when it does not open. receipt_seal($plain, ...)
# the other way: for tests that put an altered document in Redis.
sub receipt_open { my $self = shift; return $self->_seal_tool('open', @_) }
sub receipt_seal { my $self = shift; return $self->_seal_tool('seal', @_) }

# receipt_doc($code, $number): the record's document, opened
sub receipt_doc {
    my ($self, $code, $number) = @_;
    my $rec = $self->redis->hget("{gpr}:r:$code:$number", 'doc');
    return defined $rec ? $self->receipt_open($rec, $code, $number) : undef;
}

sub _seal_tool {
    my ($self, $op, $in, $code, $number, $field) = @_;
    return undef unless defined $in;
    my $file = _write_file("$self->{dir}/seal-tool.in", $in);
    my $pid = open(my $fh, '-|') // croak "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', $file or POSIX::_exit(127);
        open STDERR, '>', '/dev/null';
        { exec { seal_tool_path() } seal_tool_path(), $op, $self->pii_key_file,
              $field // 'receipt_doc', $code, $number, 0; }
        POSIX::_exit(127);
    }
    binmode $fh;
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return $? == 0 ? $out : undef;
}

# issuer_keys($alg = 'sm2'): (private, public) PEM paths of the receipt
# issuer's test key, made once per test file with the openssl CLI
sub issuer_keys {
    my ($self, $alg) = @_;
    $alg //= 'sm2';
    my $priv = "$self->{dir}/keys/issuer-$alg.pem";
    my $pub  = "$self->{dir}/keys/issuer-$alg.pub.pem";
    unless (-s $pub) {
        my @gen = $alg eq 'sm2'
            ? ('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:SM2')
            : ('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048');
        my $out = _capture('openssl', @gen, '-out', $priv);
        croak "openssl genpkey $alg: $out" if $?;
        $out = _capture('openssl', 'pkey', '-in', $priv, '-pubout', '-out', $pub);
        croak "openssl pkey -pubout $alg: $out" if $?;
        chmod 0600, $priv;
    }
    return ($priv, $pub);
}

sub ledger_dir {
    my ($self) = @_;
    my $d = "$self->{dir}/ledger";
    make_path($d);
    return $d;
}

# the receipt plugin's configuration; %o overrides fields
sub receipt_config {
    my ($self, %o) = @_;
    my $alg = $o{algorithm} // 'sm2';
    my ($priv) = $self->issuer_keys($alg);
    return {
        region => '33', category => '01', kind => '01',
        issuer_code => '330100000000', issuer_name => '杭州市财政局',
        algorithm => $alg, key => $priv,
        key_serial => $alg eq 'sm2' ? 'TEST-SM2-01' : 'TEST-RSA-01',
        ledger_dir => $self->ledger_dir, verify_url => $self->public_url,
        %o,
    };
}

# ledger_file($code) and ledger_entries($code): the receipt ledger of an
# EInvoiceCode, as a list of { code, number, prev, hash, doc, seal } (doc and
# seal decoded; a partial last line is returned as { partial => 1 })
sub ledger_file { $_[0]->ledger_dir . "/$_[1].ledger" }

sub ledger_entries {
    my ($self, $code) = @_;
    my $c = _read_file($self->ledger_file($code)) // return ();
    my @out;
    for my $line (split /(?<=\n)/, $c) {
        unless ($line =~ s/\n$//) { push @out, { partial => 1 }; next }
        my @f = split /\t/, $line;
        push @out, { code => $f[0], number => $f[1], prev => $f[2], hash => $f[3],
                     doc => MIME::Base64::decode_base64($f[4]),
                     seal => MIME::Base64::decode_base64($f[5]) };
    }
    return @out;
}

# ledger_verify($code, @args) -> (exit code, output) of gov-pay-ledger verify
sub ledger_verify {
    my ($self, $code, @args) = @_;
    my $out = _capture(build_dir() . '/gov-pay-ledger', 'verify',
                       $self->ledger_file($code), @args);
    return ($? >> 8, $out);
}

# start_worker(%opts): name (default 'w1'), consumer, env => {...},
# plugins/extra as in worker_config; returns the pid
sub start_worker {
    my ($self, %o) = @_;
    my $name = $o{name} // 'w1';
    croak "worker $name already running"
        if $self->{workers}{$name} && kill 0, $self->{workers}{$name}{pid};
    my $bin = worker_path();
    croak "no worker binary at $bin" unless -x $bin;

    my $cfg = "$self->{dir}/worker-$name.json";
    _write_file($cfg, JSON::XS->new->utf8->canonical->pretty->encode(
        $self->worker_config(%o)));
    my $log = "$self->{dir}/worker-$name.log";
    my @cmd = (worker_prefix(%{ $o{env} // {} }), $bin, '-c', $cfg);

    my $pid = _spawn(\@cmd, log => $log, env => $o{env} // {},
                     cwd => $self->{dir});
    $self->{workers}{$name} = { pid => $pid, log => $log, status => undef };
    return $pid;
}

# make valgrind: every worker (and every worker command) runs under memcheck;
# its reports go to the folder named by GOV_PAY_VALGRIND, and a leak counts as
# an error there. The words to put before the worker's command line.
# worker_prefix(%env): valgrind's command line under make valgrind (a leak
# counts as an error, except for a worker that a *_FAULT variable in %env
# makes _exit() on purpose, holding what it had)
sub worker_prefix {
    my (%env) = @_;
    my $vg = $ENV{GOV_PAY_VALGRIND} or return ();
    make_path($vg);
    my $leaks = (grep { /_FAULT$/ } keys %env) ? 'no' : 'full';
    return ('valgrind', '--quiet', "--leak-check=$leaks",
            '--errors-for-leak-kinds=definite,indirect', '--error-exitcode=99',
            "--log-file=$vg/worker-%p.log");
}

sub worker_pid { my $w = $_[0]{workers}{ $_[1] // 'w1' }; $w ? $w->{pid} : undef }
sub worker_log { _read_file("$_[0]{dir}/worker-" . ($_[1] // 'w1') . '.log') // '' }

# wait_worker_exit($name, $timeout) -> wait status (as $?) or undef if still running
sub wait_worker_exit {
    my ($self, $name, $timeout) = @_;
    my $w = $self->{workers}{ $name // 'w1' } or croak 'no such worker';
    return $w->{status} if defined $w->{status};
    my $deadline = time + ($timeout // 10);
    while (time < $deadline) {
        my $s = _reap($w->{pid});
        if (defined $s) { $w->{status} = $s; return $s }
        sleep 0.02;
    }
    return undef;
}

sub worker_running {
    my ($self, $name) = @_;
    my $w = $self->{workers}{ $name // 'w1' } or return 0;
    return 0 if defined $w->{status};
    my $s = _reap($w->{pid});
    if (defined $s) { $w->{status} = $s; return 0 }
    return 1;
}

# stop_worker($name): SIGTERM (graceful), KILL after 10 s; returns the status
sub stop_worker {
    my ($self, $name, $sig) = @_;
    $name //= 'w1';
    my $w = $self->{workers}{$name} or return;
    if ($self->worker_running($name)) {
        kill $sig // 'TERM', $w->{pid};
        my $s = $self->wait_worker_exit($name, 10);
        unless (defined $s) {
            kill 'KILL', $w->{pid};
            $s = $self->wait_worker_exit($name, 5);
        }
    }
    my $st = $w->{status};
    delete $self->{workers}{$name};
    $self->{old_worker_logs}{$name} = $w->{log};
    return $st;
}

sub kill_worker {
    my ($self, $sig, $name) = @_;
    return $self->stop_worker($name // 'w1', $sig // 'KILL');
}

###############################################################################
# unit schemes and keys: HMAC-SM3, RSA and SM2 units, platform keys.  Keys are
# made at run time with the openssl CLI; signatures are made and checked
# independently of the module (Digest::SHA, Crypt::OpenSSL::RSA, openssl).

our %FAMILY = ('GOVPAY-RSA-SHA256' => 'rsa', 'GOVPAY-SM2-SM3' => 'sm2');
our $SM2_ID = '1234567812345678';

# openssl(@args) -> stdout bytes; croaks with stderr when openssl fails.
# stdin => bytes is fed to it.
sub openssl {
    my (@args) = @_;
    my %o = ref $args[-1] eq 'HASH' ? %{ pop @args } : ();
    my $in = File::Temp->new;
    binmode $in;
    print {$in} $o{stdin} // '';
    close $in;
    my $out = File::Temp->new;
    my $err = File::Temp->new;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', $in->filename;
        open STDOUT, '>', $out->filename;
        open STDERR, '>', $err->filename;
        { exec { 'openssl' } 'openssl', @args; }
        POSIX::_exit(127);
    }
    waitpid($pid, 0);
    my $rc = $? >> 8;
    my $stdout = _read_file($out->filename) // '';
    return ($rc, $stdout, _read_file($err->filename) // '') if $o{status};
    croak "openssl @args: exit $rc: " . (_read_file($err->filename) // '') if $rc;
    return $stdout;
}

# new_key_pair($name, $family, bits => N): keys/<name>.key (private PEM) and
# keys/<name>.pub (public PEM, openssl pkey -pubout); $family rsa (default
# 2048 bits) or sm2; returns (private path, public path)
sub new_key_pair {
    my ($self, $name, $family, %o) = @_;
    my $priv = "$self->{dir}/keys/$name.key";
    my $pub  = "$self->{dir}/keys/$name.pub";
    make_path("$self->{dir}/keys");
    my @alg = $family eq 'rsa'
        ? ('-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:' . ($o{bits} // 2048))
        : $family eq 'sm2' ? ('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:SM2')
        : croak "unknown key family $family";
    openssl('genpkey', @alg, '-out', $priv);
    openssl('pkey', '-in', $priv, '-pubout', '-out', $pub);
    return ($priv, $pub);
}

# unit_scheme($unit): the scheme registered with add_unit, else HMAC-SHA256
sub unit_scheme { $_[0]{unit_scheme}{ $_[1] // $UNIT } // $SCHEME }

# unit_key($unit): the private key file of an RSA / SM2 unit
sub unit_key {
    my ($self, $unit) = @_;
    return $self->{unit_key}{$unit} // croak "no private key for unit $unit";
}

# add_unit(id => ..., scheme => ..., items => [...], name => ..., bits => N):
# makes the unit's secret (HMAC schemes: keys/<id>.secret) or key pair
# (RSA / SM2: keys/<id>.key, keys/<id>.pub), remembers them for
# signed_request and the response verifier, and returns the registry entry
# (push it into a registry's units)
sub add_unit {
    my ($self, %u) = @_;
    my $id = $u{id} // croak 'add_unit needs an id';
    my $scheme = $u{scheme} // $SCHEME;
    $self->{unit_scheme}{$id} = $scheme;
    my %entry = (id => $id, name => $u{name} // "测试单位 $id", scheme => $scheme,
                 items => $u{items} // ['103001']);
    if (my $family = $FAMILY{$scheme}) {
        my ($priv) = $self->new_key_pair($id, $family, bits => $u{bits});
        $self->{unit_key}{$id} = $priv;
        $entry{key_file} = "keys/$id.pub";
    } else {
        $self->new_unit_secret($id);
        $entry{secret_file} = "keys/$id.secret";
    }
    return \%entry;
}

# new_platform_key($family, $serial): a platform key pair of the family
# (rsa, sm2) whose public half the response verifier uses; returns the
# arguments of `gov_pay_platform_key`: "<family> <private key> <serial>"
sub new_platform_key {
    my ($self, $family, $serial) = @_;
    $serial //= uc($family) . '-' . uc random_hex(16);
    my ($priv, $pub) = $self->new_key_pair("platform-$family", $family);
    $self->{platform}{$family} = { key => $priv, pub => $pub, serial => $serial };
    return "$family $priv $serial";
}

sub platform_key { $_[0]{platform}{ $_[1] } }

# sign_as($scheme, $key, $string) -> base64 signature.  $key: the secret
# (HMAC schemes) or the private key PEM file (RSA, SM2).
#   GOVPAY-HMAC-SHA256  Digest::SHA hmac_sha256
#   GOVPAY-HMAC-SM3     openssl dgst -sm3 -hmac <secret> -binary
#   GOVPAY-RSA-SHA256   Crypt::OpenSSL::RSA, SHA-256, PKCS#1 v1.5
#   GOVPAY-SM2-SM3      openssl pkeyutl -sign -rawin -digest sm3
#                       -pkeyopt distid:1234567812345678 (DER)
sub sign_as {
    my ($class, $scheme, $key, $string) = @_;
    croak "no key to sign as $scheme" unless defined $key;
    my $raw;
    if ($scheme eq 'GOVPAY-HMAC-SHA256') {
        $raw = hmac_sha256($string, $key);
    } elsif ($scheme eq 'GOVPAY-HMAC-SM3') {
        $raw = openssl('dgst', '-sm3', '-hmac', $key, '-binary', { stdin => $string });
    } elsif ($scheme eq 'GOVPAY-RSA-SHA256') {
        require Crypt::OpenSSL::RSA;
        my $rsa = Crypt::OpenSSL::RSA->new_private_key(_read_file($key)
                                                      // croak "read $key: $!");
        $rsa->use_sha256_hash;
        $rsa->use_pkcs1_padding;
        $raw = $rsa->sign($string);
    } elsif ($scheme eq 'GOVPAY-SM2-SM3') {
        my $msg = File::Temp->new;
        binmode $msg;
        print {$msg} $string;
        close $msg;
        $raw = openssl('pkeyutl', '-sign', '-rawin', '-digest', 'sm3',
                       '-pkeyopt', "distid:$SM2_ID", '-inkey', $key,
                       '-in', $msg->filename);
    } else {
        croak "cannot sign as $scheme";
    }
    return encode_base64($raw, '');
}

# verify_as($scheme, $public_key_file, $string, $base64_sig): true when the
# signature verifies (openssl dgst -verify / pkeyutl -verify)
sub verify_as {
    my ($class, $scheme, $pub, $string, $sig) = @_;
    my $msg = File::Temp->new;
    binmode $msg;
    print {$msg} $string;
    close $msg;
    my $sf = File::Temp->new;
    binmode $sf;
    print {$sf} MIME::Base64::decode_base64($sig);
    close $sf;
    my ($rc) = $scheme eq 'GOVPAY-RSA-SHA256'
        ? openssl('dgst', '-sha256', '-verify', $pub, '-signature', $sf->filename,
                  $msg->filename, { status => 1 })
        : $scheme eq 'GOVPAY-SM2-SM3'
        ? openssl('pkeyutl', '-verify', '-rawin', '-digest', 'sm3', '-pkeyopt',
                  "distid:$SM2_ID", '-pubin', '-inkey', $pub, '-sigfile',
                  $sf->filename, '-in', $msg->filename, { status => 1 })
        : croak "cannot verify $scheme";
    return $rc == 0;
}

# the signature signed_request sends: %o may give sign_scheme, secret, key
sub _unit_sign {
    my ($self, $unit, $sts, %o) = @_;
    my $scheme = $o{sign_scheme} // $self->unit_scheme($unit);
    my $key;
    if ($FAMILY{$scheme}) {
        $key = $o{key} // $self->{unit_key}{$unit}
            // croak "no private key to sign for unit $unit as $scheme";
    } else {
        $key = exists $o{secret} ? $o{secret}
             : ($self->{secrets}{$unit} // random_string(40));
    }
    return __PACKAGE__->sign_as($scheme, $key, $sts);
}

###############################################################################
# HTTP

sub _ua {
    my ($self, $timeout) = @_;
    return HTTP::Tiny->new(max_redirect => 0, timeout => $timeout // 10,
                           keep_alive => 0, agent => 'gov-pay-tests/1');
}

# request($method, $target, %o): body => bytes | ref (JSON encoded),
# headers => {...}, timeout => s.  Returns a GovPay::Test::Response.
sub request {
    my ($self, $method, $target, %o) = @_;
    my $body = $o{body};
    $body = $JSON->encode($body) if ref $body;
    my %h = %{ $o{headers} // {} };
    my $url = 'http://127.0.0.1:' . ($o{port} // $self->{port}) . $target;
    my $t0 = time;
    my $res = $self->_ua($o{timeout})->request($method, $url, {
        headers => \%h,
        (defined $body ? (content => $body) : ()),
    });
    return GovPay::Test::Response->new($res, time - $t0,
        { method => $method, target => $target, headers => \%h, body => $body });
}

sub get { my ($self, $target, %o) = @_; return $self->request(GET => $target, %o) }

# resend($response): the exact same request again (same Authorization)
sub resend {
    my ($self, $res, %o) = @_;
    my $q = $res->sent;
    return $self->request($q->{method}, $q->{target}, headers => $q->{headers},
                          body => $q->{body}, %o);
}

sub string_to_sign {
    my ($class, $method, $target, $ts, $nonce, $body) = @_;
    return "$method\n$target\n$ts\n$nonce\n" . ($body // '') . "\n";
}

sub sign {
    my ($class, $secret, $string) = @_;
    return encode_base64(hmac_sha256($string, $secret), '');
}

# signed_request($method, $target, $body, %o).  $body: bytes, a ref (JSON),
# or undef (no body; signed as empty).  Options:
#   unit, secret, ts, nonce, scheme (word in the header),
#   sign_scheme (the algorithm that signs; default: the unit's scheme as
#     registered with add_unit, else GOVPAY-HMAC-SHA256), key (private key
#     PEM file for GOVPAY-RSA-SHA256 / GOVPAY-SM2-SM3; default: the unit's),
#   sign_method / sign_target / sign_body (sign something else than is sent),
#   sig (literal sig value), authorization (raw header; undef = none sent),
#   content_type (default application/json when there is a body),
#   headers => {...}, timeout
sub signed_request {
    my ($self, $method, $target, $body, %o) = @_;
    $body = $JSON->encode($body) if ref $body;

    my $unit   = $o{unit} // $UNIT;
    my $ts     = $o{ts} // int(time);
    my $nonce  = $o{nonce} // random_string(24);
    my $scheme = $o{scheme} // $self->unit_scheme($unit);

    my $sts = __PACKAGE__->string_to_sign(
        $o{sign_method} // $method, $o{sign_target} // $target, $ts, $nonce,
        exists $o{sign_body} ? $o{sign_body} : $body);
    my $sig = $o{sig} // $self->_unit_sign($unit, $sts, %o);

    my %h = %{ $o{headers} // {} };
    if (exists $o{authorization}) {
        $h{Authorization} = $o{authorization} if defined $o{authorization};
    } else {
        $h{Authorization} = qq{$scheme unit="$unit",ts="$ts",nonce="$nonce",sig="$sig"};
    }
    if (exists $o{content_type}) {
        $h{'Content-Type'} = $o{content_type} if defined $o{content_type};
    } elsif (defined $body) {
        $h{'Content-Type'} = 'application/json';
    }

    my $res = $self->request($method, $target, body => $body, headers => \%h,
                             timeout => $o{timeout});
    $res->{nonce} = $nonce;
    $res->{ts} = $ts;
    $res->{unit} = $unit;
    return $res;
}

# response_signature_ok($res, $unit): GovPay-Signature over
# "TS\nNONCE\nBODY\n": HMAC-SHA256 / HMAC-SM3 with the unit secret for HMAC
# units; for RSA / SM2 units, verified with the platform PUBLIC key of the
# family (new_platform_key) and GovPay-Serial must name it; returns
# (ok, reason)
sub response_signature_ok {
    my ($self, $res, $unit) = @_;
    my $ts = $res->header('GovPay-Timestamp');
    my $nonce = $res->header('GovPay-Nonce');
    my $sig = $res->header('GovPay-Signature');
    return (0, 'no GovPay-Timestamp header') unless defined $ts;
    return (0, 'no GovPay-Nonce header') unless defined $nonce;
    return (0, 'no GovPay-Signature header') unless defined $sig;
    return (0, "GovPay-Timestamp '$ts' is not unix seconds") unless $ts =~ /^\d+$/;
    return (0, "GovPay-Timestamp $ts is not now") if abs($ts - time) > 60;
    $unit //= $UNIT;
    my $scheme = $self->unit_scheme($unit);
    my $string = "$ts\n$nonce\n" . $res->body . "\n";
    if (my $family = $FAMILY{$scheme}) {
        my $p = $self->{platform}{$family}
            or return (0, "the harness knows no platform $family key (new_platform_key)");
        my $serial = $res->header('GovPay-Serial');
        return (0, 'no GovPay-Serial header') unless defined $serial;
        return (0, "GovPay-Serial '$serial' is not the platform $family key's "
                   . "serial '$p->{serial}'") if $serial ne $p->{serial};
        return (0, "GovPay-Signature $sig does not verify with the platform "
                   . "$family public key") unless
            __PACKAGE__->verify_as($scheme, $p->{pub}, $string, $sig);
        return (1, '');
    }
    my $want = __PACKAGE__->sign_as($scheme, $self->unit_secret($unit), $string);
    return (0, "GovPay-Signature $sig does not verify (want $want)") if $sig ne $want;
    return (1, '');
}

# verify_response_signature($res, $name, $unit): one test
sub verify_response_signature {
    my ($self, $res, $name, $unit) = @_;
    my ($ok, $why) = $self->response_signature_ok($res, $unit);
    Test::More::ok($ok, $name // 'response is signed with the unit secret')
        or Test::More::diag($why);
    return $ok;
}

# signed_request_raw(...): like signed_request, but returns the raw HTTP/1.0
# request bytes (for parallel_requests)
sub signed_request_raw {
    my ($self, $method, $target, $body, %o) = @_;
    $body = $JSON->encode($body) if ref $body;
    my $unit   = $o{unit} // $UNIT;
    my $ts     = $o{ts} // int(time);
    my $nonce  = $o{nonce} // random_string(24);
    my $scheme = $o{scheme} // $self->unit_scheme($unit);
    my $sig = $self->_unit_sign($unit,
        __PACKAGE__->string_to_sign($method, $target, $ts, $nonce, $body), %o);
    my $req = "$method $target HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        . qq{Authorization: $scheme unit="$unit",ts="$ts",nonce="$nonce",sig="$sig"\r\n};
    $req .= "Content-Type: application/json\r\nContent-Length: " . length($body)
        . "\r\n" if defined $body;
    return $req . "\r\n" . ($body // '');
}

# parallel_requests(\@raw, $timeout): opens one connection per raw request,
# sends them all, then reads all replies; returns a list of
# { status, headers (raw), body, elapsed } in the same order
sub parallel_requests {
    my ($self, $raws, $timeout) = @_;
    require IO::Select;
    $timeout //= 10;
    my $t0 = time;
    my (@socks, %i, @out);
    for my $n (0 .. $#$raws) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
                                      Proto => 'tcp', Timeout => 2)
            or croak "connect: $!";
        $s->autoflush(1);
        print {$s} $raws->[$n];
        push @socks, $s;
        $i{"$s"} = $n;
        $out[$n] = { data => '' };
    }
    my $sel = IO::Select->new(@socks);
    my $deadline = $t0 + $timeout;
    while ($sel->count && time < $deadline) {
        for my $s ($sel->can_read($deadline - time)) {
            my $n = $i{"$s"};
            my $got = sysread($s, my $buf, 65536);
            if ($got) { $out[$n]{data} .= $buf; next }
            $out[$n]{elapsed} = time - $t0;
            $sel->remove($s);
            close $s;
        }
    }
    for my $o (@out) {
        my ($head, $body) = split /\r\n\r\n/, $o->{data}, 2;
        $o->{status} = ($head // '') =~ m{^HTTP/1\.\d (\d{3})} ? $1 : 'none';
        $o->{headers} = $head;
        $o->{body} = $body;
        $o->{elapsed} //= time - $t0;
    }
    close $_ for $sel->handles;
    return @out;
}

# a create body with a fresh request_id; %o replaces top-level fields,
# a value of undef removes the field
sub notice_body {
    my ($self, %o) = @_;
    my %b = (
        request_id => 'T-' . random_string(16),
        item_code  => '103001',
        amount     => 125000,
        payer      => { type => 'person', name => '张三', id_no => valid_id_no() },
    );
    for my $k (keys %o) {
        if (defined $o{$k}) { $b{$k} = $o{$k} } else { delete $b{$k} }
    }
    return \%b;
}

# create_notice(%fields) -> response (signed POST /v1/notices); options for
# signed_request may be given in $fields{_opts}
sub create_notice {
    my ($self, %o) = @_;
    my $opts = delete $o{_opts} // {};
    return $self->signed_request(POST => '/v1/notices', $self->notice_body(%o),
                                 %$opts);
}

# a created notice or die with the reason
sub new_notice {
    my ($self, %o) = @_;
    my $r = $self->create_notice(%o);
    confess 'could not create a notice: ' . $r->describe unless $r->status == 201;
    return $r->json;
}

sub get_notice {
    my ($self, $code, %o) = @_;
    return $self->signed_request(GET => "/v1/notices/$code", undef, %o);
}

###############################################################################
# sandbox channel

# canonical: all fields but sign, sorted by key, k=v joined by &
sub sandbox_sign {
    my ($self, %f) = @_;
    delete $f{sign};
    my $canon = join '&', map { "$_=$f{$_}" } sort keys %f;
    return hmac_sha256_hex(encode_utf8($canon), $self->{sandbox_key});
}

# sandbox_callback(%fields): posts the form; sign computed unless given
# (sign_fields => {...} signs other values than are sent)
sub sandbox_callback {
    my ($self, %f) = @_;
    my $sign_fields = delete $f{sign_fields};
    my $timeout = delete $f{_timeout};
    $f{sign} //= $self->sandbox_sign(%{ $sign_fields // \%f });
    my $body = join '&', map { uri_escape_utf8($_) . '=' . uri_escape_utf8($f{$_}) }
        sort keys %f;
    return $self->request(POST => '/notify/sandbox', body => $body,
        headers => { 'Content-Type' => 'application/x-www-form-urlencoded' },
        timeout => $timeout);
}

# pay($notice_or_code, %fields): a successful sandbox callback for the notice
sub sandbox_pay {
    my ($self, $notice, %o) = @_;
    my ($code, $amount) = ref $notice
        ? ($notice->{payment_code}, $notice->{amount}) : ($notice, $o{total_fen});
    return $self->sandbox_callback(
        out_trade_no => $code,
        trade_no     => $o{trade_no} // 'SBX' . random_string(20, '0123456789'),
        total_fen    => $o{total_fen} // $amount,
        trade_status => $o{trade_status} // 'SUCCESS',
        paid_at      => $o{paid_at} // int(time),
        (map { $_ => $o{$_} } grep { /^(sign|sign_fields|_timeout)$/ } keys %o),
    );
}

###############################################################################
# cleanup

sub cleanup {
    my ($self) = @_;
    return if $self->{cleaned}++;
    for my $name (keys %{ $self->{workers} }) {
        eval { $self->stop_worker($name) };
    }
    eval { $self->stop_nginx };
    eval { $self->stop_redis };
}

sub _keep_dir {
    my ($self) = @_;
    return 1 if $ENV{GOV_PAY_KEEP};
    my $tb = Test::More->builder;
    return 1 unless $tb->is_passing;
    return 0;
}

END {
    local $?;
    if ($$ == $CREATOR_PID) {
        # a file that started nginx must end with check_error_log: a test that
        # is not run fails the plan
        for my $t (@ALL) {
            next unless $t->{nginx_started} && !$t->{log_checked};
            Test::More::ok(0, 'the test file ends with $t->check_error_log '
                              . '(nginx quit, error log read)');
        }
        for my $t (@ALL) {
            $t->cleanup;
            if ($t->_keep_dir) {
                print STDERR "# test files kept in $t->{dir}\n";
            } else {
                File::Path::remove_tree($t->{dir});
            }
        }
    }
}

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub {
        for my $t (@ALL) { eval { $t->cleanup } }
        $SIG{$sig} = 'DEFAULT';
        kill $sig, $$;
    };
}

###############################################################################

package GovPay::Test::Response;

use strict;
use warnings;
use Encode qw(decode_utf8);
use JSON::XS;

sub new {
    my ($class, $res, $elapsed, $sent) = @_;
    return bless { res => $res, elapsed => $elapsed, sent => $sent }, $class;
}

sub status  { $_[0]{res}{status} }
sub reason  { $_[0]{res}{reason} }
sub body    { $_[0]{res}{content} // '' }
sub text    { my $t = eval { decode_utf8($_[0]->body, 1) }; defined $t ? $t : $_[0]->body }
sub elapsed { $_[0]{elapsed} }
sub sent    { $_[0]{sent} }
sub nonce   { $_[0]{nonce} }
sub headers { $_[0]{res}{headers} // {} }

sub header {
    my ($self, $name) = @_;
    my $v = $self->headers->{ lc $name };
    return ref $v ? join(', ', @$v) : $v;
}

sub content_type { my $c = $_[0]->header('Content-Type') // ''; $c =~ s/;.*//s; lc $c }

sub json {
    my ($self) = @_;
    return $self->{json} if exists $self->{json};
    $self->{json} = eval { JSON::XS->new->utf8->decode($self->body) };
    return $self->{json};
}

sub error_code {
    my $j = $_[0]->json;
    return ref $j eq 'HASH' && ref $j->{error} eq 'HASH' ? $j->{error}{code} : undef;
}

# names of the fields in a validation error
sub error_fields {
    my $j = $_[0]->json;
    return () unless ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
        && ref $j->{error}{fields} eq 'ARRAY';
    return map { ref $_ eq 'HASH' ? ($_->{field} // '') : '' } @{ $j->{error}{fields} };
}

# for diagnostics
sub describe {
    my ($self) = @_;
    my $b = $self->text;
    $b = substr($b, 0, 600) . '...' if length $b > 600;
    return sprintf "%s %s -> %s %s (%.2fs)\n%s", $self->{sent}{method},
        $self->{sent}{target}, $self->status, $self->reason // '', $self->elapsed, $b;
}

###############################################################################
# worker commands without a running worker (t/retention.t)

package GovPay::Test;

# write_worker_config($name, %o): worker-<name>.json as start_worker writes it
# (%o as in worker_config), without starting a worker; returns its path
sub write_worker_config {
    my ($self, $name, %o) = @_;
    my $cfg = "$self->{dir}/worker-$name.json";
    _write_file($cfg, JSON::XS->new->utf8->canonical->pretty->encode(
        $self->worker_config(%o)));
    return $cfg;
}

# worker_command($name, \%env, @args) -> (wait status as in $?, stdout,
# stderr) of `gov-pay-worker -c worker-<name>.json @args`, run in the test
# folder; under valgrind's memcheck when GOV_PAY_VALGRIND is set, as
# start_worker does (without the leak check when a *_FAULT variable makes
# it _exit() on purpose, holding what it had)
sub worker_command {
    my ($self, $name, $env, @args) = @_;
    my @cmd = (worker_path(), '-c', "$self->{dir}/worker-$name.json", @args);
    if (my $vg = $ENV{GOV_PAY_VALGRIND}) {
        make_path($vg);
        my $leaks = (grep { /_FAULT$/ } keys %{ $env // {} }) ? 'no' : 'full';
        unshift @cmd, 'valgrind', '--quiet', "--leak-check=$leaks",
            '--errors-for-leak-kinds=definite,indirect', '--error-exitcode=99',
            "--log-file=$vg/worker-%p.log";
    }
    my $err = "$self->{dir}/command-$name.err";
    my $pid = open(my $fh, '-|') // croak "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $err;
        chdir $self->{dir};
        $ENV{$_} = $env->{$_} for keys %{ $env // {} };
        { exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $status = $?;
    return ($status, $out, _read_file($err) // '');
}

1;
