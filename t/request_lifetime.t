#!/usr/bin/perl

# Every request that waits (for its body, for Redis, for a subrequest) is
# finished exactly once: the connection of an HTTP/1.0 request closes right
# after its answer on every route, with Redis up and with Redis down, and a
# body sent in small chunks is read whole.  The file ends as every file does
# (check_error_log): nginx is stopped with QUIT and its error log must hold no
# [alert], so a request whose reference leaked ("open socket ... left in
# connection") fails here and in every other test file.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(encode_utf8);
use IO::Select;
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time sleep);
use GovPay::Test;

my $BANK = 'BANK-TEST-001';

my $t = GovPay::Test->new;
$t->new_unit_secret($BANK);
my $reg = $t->default_registry;
push @{ $reg->{units} }, { id => $BANK, name => '测试银行', scheme => 'GOVPAY-HMAC-SHA256',
                           secret_file => "keys/$BANK.secret", kind => 'bank' };
$t->write_registry($reg);
$t->write_file('keys/lookup.key', random_string(40) . "\n");
my (undef, $pub) = $t->issuer_keys('sm2');

$t->start_redis;
my %dirs = (gov_pay_lookup_key  => $t->dir . '/keys/lookup.key',
            gov_pay_receipt_key => "sm2 $pub TEST-SM2-01");
$t->start_nginx(<<'EOF', directives => \%dirs);
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /bank/v1/ { gov_pay_bank; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location /o/ { gov_pay_payer; }
        location /r/ { gov_pay_receipt; }
        location /sandbox/ { gov_pay_sandbox_gateway; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

# exchange($request_bytes | [chunks], %o): one connection; returns the status
# and whether nginx closed the connection after answering (within $o{wait})
sub exchange {
    my ($req, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port,
                                  Proto => 'tcp', Timeout => 2) or die "connect: $!";
    $s->autoflush(1);
    for my $part (ref $req ? @$req : ($req)) {
        syswrite $s, $part;
        sleep 0.02 if ref $req;     # each chunk in its own segment
    }
    my ($data, $closed) = ('', 0);
    my $sel = IO::Select->new($s);
    my $deadline = time + ($o{wait} // 10);
    while (time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread $s, my $buf, 65536;
        if (!$n) { $closed = 1; last }
        $data .= $buf;
    }
    close $s;
    my ($status) = $data =~ m{^HTTP/1\.\d (\d{3})};
    my (undef, $body) = split /\r\n\r\n/, $data, 2;
    return { status => $status // 'none', closed => $closed, body => $body // '' };
}

# a signed unit or bank request as raw HTTP/1.0 bytes
sub signed {
    my ($method, $target, $body, %o) = @_;
    return $t->signed_request_raw($method, $target, $body, %o);
}

sub plain {
    my ($method, $target, $body, $ct) = @_;
    my $req = "$method $target HTTP/1.0\r\nHost: 127.0.0.1\r\n";
    $req .= "Content-Type: $ct\r\nContent-Length: " . length($body) . "\r\n" if defined $body;
    return $req . "\r\n" . ($body // '');
}

sub sandbox_form {
    my (%f) = @_;
    $f{sign} = $t->sandbox_sign(%f);
    return join '&', map { "$_=$f{$_}" } sort keys %f;
}

my $id_no = valid_id_no();
my $n = $t->new_notice(amount => 2000, payer => { type => 'person', name => '张三', id_no => $id_no });
my $code = $n->{payment_code};
my $n2 = $t->new_notice(amount => 3000);

# every route family, each a request that waits for Redis at least once
my @routes = (
    [ 'unit create' => sub { signed(POST => '/v1/notices', $t->notice_body) } ],
    [ 'unit read' => sub { signed(GET => "/v1/notices/$code", undef) } ],
    [ 'unit cancel' => sub { signed(POST => "/v1/notices/$n2->{payment_code}/cancel", '') } ],
    [ 'bank read' => sub { signed(GET => "/bank/v1/notices/$code", undef, unit => $BANK) } ],
    [ 'bank payment' => sub {
          signed(POST => '/bank/v1/payments', json_encode({
              payment_code => $code, amount => 2000, bank_trade_no => 'LT' . random_string(10),
              paid_at => epoch_to_rfc3339(int(time) - 5) }), unit => $BANK) } ],
    [ 'channel callback' => sub {
          plain(POST => '/notify/sandbox', sandbox_form(
              out_trade_no => $code, trade_no => 'SBX' . random_string(12, '0123456789'),
              total_fen => 2000, trade_status => 'SUCCESS', paid_at => int(time)),
              'application/x-www-form-urlencoded') } ],
    [ 'cashier page' => sub { plain(GET => "/q/$code") } ],
    [ 'QR image' => sub { plain(GET => "/q/$code.svg") } ],
    [ 'channel hand-off' => sub { plain(GET => "/pay/sandbox/$code") } ],
    [ 'sandbox pay page' => sub { plain(GET => "/sandbox/pay/$code") } ],
    [ 'open code by payment code' => sub {
          plain(POST => '/o/103001', "q=$code", 'application/x-www-form-urlencoded') } ],
    [ 'open code by ID number (every shard at once)' => sub {
          plain(POST => '/o/103001', "q=$id_no", 'application/x-www-form-urlencoded') } ],
    [ 'receipt page' => sub { plain(GET => '/r/33010126/0000000001?c=abc123') } ],
);

for my $route (@routes) {
    my ($name, $make) = @$route;
    my $res = exchange($make->());
    like $res->{status}, qr/^[2-4]\d\d$/, "$name over HTTP/1.0 is answered"
        or diag "$res->{status} $res->{body}";
    ok $res->{closed}, "$name over HTTP/1.0: the connection closes after the answer";
}

# a body in many small chunks (HTTP/1.1, chunked): read whole, answered, closed
my $body = json_encode($t->notice_body(remark => "分块" x 20));
my $head = $t->signed_request_raw(POST => '/v1/notices', $body);
$head =~ s/\r\n\r\n.*\z//s;
$head =~ s{ HTTP/1\.0\r\n}{ HTTP/1.1\r\n};
$head =~ s/\r\nContent-Length: \d+//;
my @chunks = ("$head\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
push @chunks, sprintf("%x\r\n%s\r\n", length $_, $_) for unpack '(a7)*', $body;
push @chunks, "0\r\n\r\n";
my $res = exchange(\@chunks);
is $res->{status}, 201, 'a create whose body arrives in 7-byte chunks is read whole'
    or diag $res->{body};
ok $res->{closed}, 'and its connection closes after the answer';

# with Redis down every route answers at once and closes
$t->stop_redis;
for my $route (@routes) {
    my ($name, $make) = @$route;
    my $res = exchange($make->());
    like $res->{status}, qr/^(503|[24]\d\d)$/, "$name with Redis down is answered"
        or diag "$res->{status} $res->{body}";
    ok $res->{closed}, "$name with Redis down: the connection closes after the answer";
}
$t->start_redis;

$t->check_error_log;

done_testing;
