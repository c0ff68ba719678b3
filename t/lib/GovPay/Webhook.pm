package GovPay::Webhook;

# A test webhook receiver (t/lib/webhook-server.pl) run as a helper daemon:
# answers 200, 500, ... or hangs or closes as told, and records every request
# it got.  Stopped in END (and by stop()); a stopped receiver's port refuses
# connections.
#
#   my $hook = GovPay::Webhook->start($t, mode => '200');
#   $hook->url('/hooks/a')              http://127.0.0.1:<port>/hooks/a
#   $hook->set_mode('500,500,200');
#   my @got = $hook->received;          [{t, method, path, headers, body}, ...]
#   $hook->stop;  $hook->restart;       refuse, then listen again (same port)

use strict;
use warnings;

use Carp qw(croak);
use File::Basename qw(dirname);
use HTTP::Tiny;
use JSON::XS;
use POSIX qw(:sys_wait_h);
use Test::TCP qw(empty_port);
use Time::HiRes qw(time sleep);

use GovPay::Test;

my @ALL;
my $CREATOR_PID = $$;
my $SERVER = dirname(__FILE__) . '/../webhook-server.pl';

# start($t, mode => '200', name => 'a', port => P)
sub start {
    my ($class, $t, %o) = @_;
    my $name = $o{name} // 'hook' . (scalar(@ALL) + 1);
    my $self = bless {
        t    => $t,
        name => $name,
        port => $o{port} // empty_port(),
        log  => $t->dir . "/webhook-$name.jsonl",
        mode => $o{mode} // '200',
    }, $class;
    push @ALL, $self;
    $self->_spawn;
    return $self;
}

sub _spawn {
    my ($self) = @_;
    my $pid = fork // croak "fork: $!";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $self->{t}->dir . "/webhook-$self->{name}.out";
        open STDERR, '>&', \*STDOUT;
        { exec $^X, $SERVER, '--port', $self->{port}, '--log', $self->{log},
              '--mode', $self->{mode}; }
        POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $ok = wait_for(sub {
        my $r = HTTP::Tiny->new(timeout => 1)
            ->get("http://127.0.0.1:$self->{port}/_ping");
        return $r->{status} == 200;
    }, 10, "webhook receiver $self->{name} on port $self->{port}");
    croak "webhook receiver $self->{name} did not start" unless $ok;
}

sub port { $_[0]{port} }
sub url  { 'http://127.0.0.1:' . $_[0]{port} . ($_[1] // '/hook') }

sub set_mode {
    my ($self, $mode) = @_;
    $self->{mode} = $mode;
    my $r = HTTP::Tiny->new(timeout => 5)->post(
        "http://127.0.0.1:$self->{port}/_mode", { content => $mode });
    croak "set_mode $mode: $r->{status}" unless $r->{status} == 200;
}

# every request received so far, oldest first
sub received {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return ();
    my @r;
    my $json = JSON::XS->new->utf8;
    while (my $line = <$fh>) {
        next unless $line =~ /\n\z/;    # a line being written
        push @r, $json->decode($line);
    }
    return @r;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'TERM', $self->{pid};
    my $deadline = time + 5;
    while (time < $deadline) {
        last if waitpid($self->{pid}, WNOHANG) == $self->{pid};
        sleep 0.02;
    }
    kill 'KILL', $self->{pid} if kill 0, $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

sub restart {
    my ($self, %o) = @_;
    $self->stop;
    $self->{mode} = $o{mode} if defined $o{mode};
    $self->_spawn;
}

# fake_settled($t, unit => ..., type => 'notice.paid', amount => ..., shard =>
# N, receipt => 1): what the edge (and the receipt plugin) would have
# written: a paid notice hash and its event on {gpN}:settled, without nginx.
# The payer is written in clear and sealed by `pii reseal`, so the notice
# holds what the edge stores (masked and sealed forms, docs/internals.md).
# Returns { code, shard, key, entry_id, event_id }.
my $SEQ = 0;
sub fake_settled {
    my ($t, %o) = @_;
    my $r = $t->redis;
    my $shard = $o{shard} // int(rand($t->shards));
    my $seq = $o{seq} // (100000 + ++$SEQ);
    my $key = "{gp$shard}:n:$seq";
    my $code = $o{code} // random_code();
    my $unit = $o{unit} // $GovPay::Test::UNIT;
    my $amount = $o{amount} // 125000;
    my $now = int(time);
    my %n = (unit => $unit, request_id => 'FAKE-' . random_string(10),
             item_code => '103001', amount => $amount, payer_type => 'person',
             # in clear, then sealed below as the edge stores it
             payer_name => '张三', payer_id => valid_id_no(),
             due_at => $now + 86400, created_at => $now - 60,
             division => '330100', yy => current_yy(), status => 'PAID',
             channel => 'sandbox', channel_trade_no => 'SBX' . random_string(12, '0123456789'),
             paid_at => $now, paid_amount => $amount);
    if ($o{receipt}) {
        %n = (%n, receipt_code => '33010126', receipt_number => '0000000001',
              receipt_check => 'abc123', receipt_at => $now);
    }
    $r->hset($key, %n);
    $t->seal_clear_notices;
    my $type = $o{type} // 'notice.paid';
    my @f = $type eq 'receipt.issued'
        ? (type => $type, payment_code => $code, unit => $unit,
           item_code => '103001', amount => $amount, receipt_code => '33010126',
           receipt_number => '0000000001', receipt_check => 'abc123',
           issued_at => $now, notice_key => $key)
        : (type => $type, payment_code => $code, unit => $unit,
           item_code => '103001', amount => $amount, channel => 'sandbox',
           channel_trade_no => $n{channel_trade_no}, paid_at => $now,
           notice_key => $key);
    my $id = $r->xadd("{gp$shard}:settled", '*', @f);
    (my $evt = "evt_${shard}_$id") =~ s/-/_/;
    return { code => $code, shard => $shard, key => $key, entry_id => $id,
             event_id => $evt };
}

# signature_ok($req, $secret, $md): GovPay-Signature "t=..,v1=.." checks
# against HMAC-SHA256 (or HMAC-SM3 with $md eq 'sm3', through openssl) of
# "<t>.<body>"; returns (ok, why)
sub signature_ok {
    my ($req, $secret, $md) = @_;
    my $sig = $req->{headers}{'govpay-signature'} // '';
    return (0, "no signature header") unless $sig;
    my ($ts, $v1) = $sig =~ /^t=(\d+),v1=([0-9a-f]{64})$/
        or return (0, "malformed GovPay-Signature '$sig'");
    my $msg = "$ts.$req->{body}";
    my $want;
    if (($md // 'sha256') eq 'sm3') {
        require IPC::Open2;
        my $pid = IPC::Open2::open2(my $out, my $in, 'openssl', 'mac', '-digest',
                                    'SM3', '-macopt', "key:$secret", 'HMAC');
        binmode $in;
        print {$in} $msg;
        close $in;
        $want = lc(<$out> // '');
        $want =~ s/\s+//g;
        waitpid $pid, 0;
    } else {
        require Digest::SHA;
        $want = Digest::SHA::hmac_sha256_hex($msg, $secret);
    }
    return (0, "v1 $v1 is not the HMAC ($want)") unless $v1 eq $want;
    return (0, "t=$ts is not now") if abs($ts - time) > 60;
    return (1, '');
}

# run_command($t, $worker_name, @args) -> (exit status, stdout, stderr):
# gov-pay-worker -c <that worker's config> @args
sub run_command {
    my ($t, $name, @args) = @_;
    my $cfg = $t->dir . '/worker-' . ($name // 'w1') . '.json';
    my $err = $t->dir . '/command.err';
    my $pid = open(my $fh, '-|') // croak "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $err;
        my @cmd = (GovPay::Test::worker_prefix(), GovPay::Test::worker_path(),
                   '-c', $cfg, @args);
        { exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $status = $? >> 8;
    open my $e, '<', $err;
    my $errtext = <$e> // '';
    return ($status, $out, $errtext);
}

# notify_status($t) -> the --json status as a hash
sub notify_status {
    my ($t, $name) = @_;
    my ($rc, $out) = run_command($t, $name, 'notify', 'status', '--json');
    return undef unless $rc == 0;
    return eval { JSON::XS->new->utf8->decode($out) };
}

END {
    local $?;
    if ($$ == $CREATOR_PID) {
        $_->stop for @ALL;
    }
}

1;
