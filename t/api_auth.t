#!/usr/bin/perl

# Unit authentication (API.md, "Unit authentication"): the Authorization
# header, the signature over method, target, ts, nonce and body, the time
# window, nonce replay; every refused request changes nothing in Redis.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 ();
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
$t->start_redis;
$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
    }
EOF

my $r = $t->redis;
my $UNIT = '330100-TEST-001';

# a notice for the GET cases
my $notice_rid = 'T-' . GovPay::Test::random_string(16);
my $notice = $t->new_notice(request_id => $notice_rid);
my $code = $notice->{payment_code};

sub refused {
    my ($name, $ecode, $send) = @_;
    my $before = $t->redis_snapshot;
    my $res = $send->();
    is $res->status, 401, "$name answers 401" or diag $res->describe;
    is $res->error_code, $ecode, "$name is $ecode" or diag $res->describe;
    my $diff = GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
    is $diff, '', "$name changes nothing in Redis";
    return $res;
}

sub body { json_encode($t->notice_body(@_)) }

###############################################################################
# the header

refused('create without Authorization', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(), authorization => undef) });
refused('get without Authorization', 'UNAUTHENTICATED',
    sub { $t->signed_request(GET => "/v1/notices/$code", undef, authorization => undef) });
refused('Authorization that is garbage', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(),
                             authorization => 'Bearer abc.def.ghi') });
refused('Authorization without sig', 'UNAUTHENTICATED',
    sub { my $ts = time;
          $t->signed_request(POST => '/v1/notices', body(), authorization =>
              qq{GOVPAY-HMAC-SHA256 unit="$UNIT",ts="$ts",nonce="abcdefghijklmnop1234"}) });
refused('unknown scheme word', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(), scheme => 'GOVPAY-FOO') });
refused('unknown unit', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(), unit => '330100-NOPE-999',
                             secret => $t->unit_secret) });
refused('nonce shorter than 16 chars', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(), nonce => 'abcdefghijklmno') });
refused('nonce longer than 64 chars', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(), nonce => 'n' x 65) });
refused('nonce with a character outside A-Za-z0-9_-', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(), nonce => 'abcdefgh.ijklmnopq') });
refused('ts that is not a number', 'UNAUTHENTICATED',
    sub { $t->signed_request(POST => '/v1/notices', body(), ts => 'yesterday') });

###############################################################################
# the signature

refused('signature with the wrong secret', 'SIGNATURE_INVALID',
    sub { $t->signed_request(POST => '/v1/notices', body(),
                             secret => GovPay::Test::random_string(40)) });
refused("signature with another unit's secret", 'SIGNATURE_INVALID',
    sub { $t->signed_request(POST => '/v1/notices', body(),
                             secret => $t->unit_secret('330100-TEST-002')) });
{
    my $b = body();
    refused('body changed after signing', 'SIGNATURE_INVALID',
        sub { $t->signed_request(POST => '/v1/notices', $b,
                                 sign_body => $b =~ s/125000/125001/r) });
}
refused('request target changed after signing', 'SIGNATURE_INVALID',
    sub { $t->signed_request(POST => '/v1/notices?x=1', body(),
                             sign_target => '/v1/notices') });
refused('method changed after signing', 'SIGNATURE_INVALID',
    sub { $t->signed_request(GET => "/v1/notices/$code", undef, sign_method => 'POST') });
refused('signature with one bit flipped', 'SIGNATURE_INVALID',
    sub {
        my $ts = int time;
        my $nonce = GovPay::Test::random_string(24);
        my $b = body();
        my $sig = GovPay::Test->sign($t->unit_secret,
            GovPay::Test->string_to_sign('POST', '/v1/notices', $ts, $nonce, $b));
        my $raw = MIME::Base64::decode_base64($sig);
        substr($raw, 0, 1) = chr(ord(substr($raw, 0, 1)) ^ 1);
        $t->signed_request(POST => '/v1/notices', $b, ts => $ts, nonce => $nonce,
                           sig => MIME::Base64::encode_base64($raw, ''));
    });
refused('signature under another scheme than the unit has (HMAC-SM3)', 'SIGNATURE_INVALID',
    sub { $t->signed_request(POST => '/v1/notices', body(), scheme => 'GOVPAY-HMAC-SM3') });

###############################################################################
# the time window (300 s)

refused('ts 301 s in the past', 'TIMESTAMP_OUT_OF_WINDOW',
    sub { $t->signed_request(POST => '/v1/notices', body(), ts => int(time) - 301) });
refused('ts 301 s in the future', 'TIMESTAMP_OUT_OF_WINDOW',
    sub { $t->signed_request(POST => '/v1/notices', body(), ts => int(time) + 301) });
refused('ts an hour in the past', 'TIMESTAMP_OUT_OF_WINDOW',
    sub { $t->signed_request(POST => '/v1/notices', body(), ts => int(time) - 3600) });

my $res = $t->signed_request(POST => '/v1/notices', body(), ts => int(time) - 280);
is $res->status, 201, 'ts 280 s in the past is inside the window' or diag $res->describe;
$res = $t->signed_request(POST => '/v1/notices', body(), ts => int(time) + 280);
is $res->status, 201, 'ts 280 s in the future is inside the window' or diag $res->describe;

###############################################################################
# nonces

# (on another shard than $notice, for the read below)
my $first_rid;
do { $first_rid = 'T-' . GovPay::Test::random_string(16) }
    while shard_of($UNIT, $first_rid, $t->shards)
       == shard_of($UNIT, $notice_rid, $t->shards);
my $first = $t->signed_request(POST => '/v1/notices', body(request_id => $first_rid));
is $first->status, 201, 'first use of a nonce is accepted' or diag $first->describe;
refused('exact same request sent twice', 'NONCE_REPLAYED', sub { $t->resend($first) });

# Nonces live on the shard of the request they sign (ARCHITECTURE.md: every
# key of an operation carries one hash tag), so a replayed request, which
# always lands on its own shard, is always refused.  A unit that reuses its
# own nonce on a *different* request is refused only on the same shard; the
# unit guide (docs/unit-integration.md) requires a fresh nonce per request.
{
    my $s1 = shard_of($UNIT, $first_rid, $t->shards);
    my ($same, $rid);
    do { $same = 'T-' . GovPay::Test::random_string(16) }
        while shard_of($UNIT, $same, $t->shards) != $s1;
    do { $rid = 'T-' . GovPay::Test::random_string(16) }
        while shard_of($UNIT, $rid, $t->shards) == $s1;
    refused('used nonce on a new create (same shard) with a valid signature', 'NONCE_REPLAYED',
        sub { $t->signed_request(POST => '/v1/notices', body(request_id => $same),
                                 nonce => $first->nonce) });
    my $other = $t->signed_request(POST => '/v1/notices', body(request_id => $rid),
                                   nonce => $first->nonce);
    is $other->status, 201,
        'a nonce reused by the unit on a different request of another shard is not tracked there'
        or diag $other->describe;
    refused('that request replayed on its own shard', 'NONCE_REPLAYED',
        sub { $t->resend($other) });
}

my $g = $t->get_notice($code);
is $g->status, 200, 'signed GET is accepted' or diag $g->describe;
refused('exact same GET sent twice', 'NONCE_REPLAYED', sub { $t->resend($g) });

# nonces are remembered per unit
$res = $t->signed_request(POST => '/v1/notices', body(), unit => '330100-TEST-002',
                          nonce => $first->nonce);
is $res->status, 201, "another unit may use a nonce this unit used"
    or diag $res->describe;

# nonce alphabet edges
$res = $t->signed_request(POST => '/v1/notices', body(), nonce => 'a-b_c' . ('Z' x 11));
is $res->status, 201, 'nonce of 16 chars with - and _ is accepted' or diag $res->describe;
$res = $t->signed_request(POST => '/v1/notices', body(), nonce => 'n' x 64);
is $res->status, 201, 'nonce of 64 chars is accepted' or diag $res->describe;

# a refused request does not burn its nonce: the same nonce, now signed right
{
    my $nonce = GovPay::Test::random_string(24);
    my $b = body();
    my $bad = $t->signed_request(POST => '/v1/notices', $b, nonce => $nonce,
                                 secret => GovPay::Test::random_string(40));
    is $bad->error_code, 'SIGNATURE_INVALID', 'badly signed request is refused';
    my $good = $t->signed_request(POST => '/v1/notices', $b, nonce => $nonce);
    is $good->status, 201, 'a badly signed request does not use up its nonce'
        or diag $good->describe;
}

###############################################################################

$t->check_error_log;

done_testing;
