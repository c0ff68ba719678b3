#!/usr/bin/perl

# Idempotent create under concurrency (API.md, "Unit API"): the same
# request_id and body sent 50 times at once, each with its own nonce, on two
# nginx workers, makes exactly one notice: one 201, the others 200 with the
# same notice, one sequence number taken, one notice hash stored.  The same
# request_id with two different bodies at once: one body wins, the other
# gets 409 IDEMPOTENCY_CONFLICT.

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
    }
EOF

my $UNIT = '330100-TEST-001';
my $N = 50;
my $r = $t->redis;

sub keys_matching { my @k = $t->redis_keys($_[0]); return scalar @k }

###############################################################################
# 50 identical creates at once

my $body = json_encode($t->notice_body(amount => 4321, remark => 'idempotency'));
my $rid = json_decode($body)->{request_id};
my $shard = shard_of($UNIT, $rid, $t->shards);

my @raw = map { $t->signed_request_raw(POST => '/v1/notices', $body) } 1 .. $N;
my %nonces = map { /nonce="([^"]+)"/ ? ($1 => 1) : () } @raw;
is scalar keys %nonces, $N, "the $N requests carry $N different nonces";

my @res = $t->parallel_requests(\@raw, 15);
my @status = map { $_->{status} } @res;

is scalar(grep { $_ eq '201' || $_ eq '200' } @status), $N,
    "$N concurrent identical creates all answer 201 or 200"
    or diag join ' ', @status;
is scalar(grep { $_ eq '201' } @status), 1, 'exactly one of them answers 201'
    or diag join ' ', @status;

my @notices = map { json_decode($_->{body} // '') // {} } @res;
my %codes = map { ($_->{payment_code} // 'none') => 1 } @notices;
is scalar keys %codes, 1, 'all of them answer the same payment code'
    or diag join ' ', sort keys %codes;
my ($code) = keys %codes;
like $code, qr/^\d{20}$/, 'and it is a payment code';
is scalar(grep { ($_->{amount} // 0) == 4321 && ($_->{status} // '') eq 'UNPAID' } @notices),
    $N, 'every answer is the notice (amount 4321, UNPAID)';

my @notice_keys = $t->redis_keys('{gp*}:n:*');
is scalar @notice_keys, 1, 'exactly one notice is stored' or diag join ' ', @notice_keys;
is $notice_keys[0], "{gp$shard}:n:1", "it is {gp$shard}:n:1, on the request's shard";
is $r->get("{gp$shard}:seq"), 1, "the shard's sequence counter is 1 (no number was wasted)";
is scalar(grep { /^\{gp\d+\}:seq$/ } $t->redis_keys), 1, 'no other shard took a number';
is keys_matching("{gp$shard}:idem:*"), 1, 'one idempotency record';
is keys_matching("{gp$shard}:nonce:$UNIT:*"), $N, "all $N nonces are remembered";

my $g = $t->get_notice($code);
is $g->status, 200, 'the notice can be read' or diag $g->describe;
is $g->json && $g->json->{amount}, 4321, 'it is the notice that was sent';

###############################################################################
# one request_id, two bodies at once: one wins, the other conflicts

my $rid2;
do { $rid2 = 'T-' . GovPay::Test::random_string(16) }
    while shard_of($UNIT, $rid2, $t->shards) == $shard;
my $shard2 = shard_of($UNIT, $rid2, $t->shards);

my $a = json_encode($t->notice_body(request_id => $rid2, amount => 1000));
my $b = json_encode($t->notice_body(request_id => $rid2, amount => 2000));
@raw = map { $t->signed_request_raw(POST => '/v1/notices', $_ % 2 ? $a : $b) } 1 .. $N;
@res = $t->parallel_requests(\@raw, 15);

my (%by_amount, @other);
for my $i (0 .. $#res) {
    my $amount = $i % 2 == 0 ? 1000 : 2000;    # $_ of 1 .. $N is $i + 1
    push @{ $by_amount{$amount} }, $res[$i]{status};
}
my ($winner) = grep { grep { $_ eq '201' } @{ $by_amount{$_} } } keys %by_amount;
ok defined $winner, 'one of the two bodies is created' or diag explain \%by_amount;
$winner //= 1000;
my $loser = $winner == 1000 ? 2000 : 1000;
is scalar(grep { $_ eq '201' || $_ eq '200' } @{ $by_amount{$winner} }), $N / 2,
    "every request with the winning body ($winner) answers 201 or 200"
    or diag join ' ', @{ $by_amount{$winner} };
is scalar(grep { $_ eq '201' } @{ $by_amount{$winner} }), 1, 'exactly one 201';
is scalar(grep { $_ eq '409' } @{ $by_amount{$loser} }), $N / 2,
    "every request with the other body ($loser) answers 409"
    or diag join ' ', @{ $by_amount{$loser} };
is scalar(grep { ($_->{body} // '') =~ /IDEMPOTENCY_CONFLICT/ }
          @res[ grep { ($_ % 2 == 0 ? 1000 : 2000) == $loser } 0 .. $#res ]), $N / 2,
    'and they are IDEMPOTENCY_CONFLICT';
is keys_matching("{gp$shard2}:n:*"), 1, 'one notice is stored for that request_id';
my (undef, $stored) = $t->stored_notice($rid2);
is $stored && $stored->{amount}, $winner, 'the stored notice has the winning body';
is $r->get("{gp$shard2}:seq"), 1, "that shard's sequence counter is 1";

###############################################################################

$t->check_error_log;

done_testing;
