#!/usr/bin/perl

# The four unit authentication schemes (API.md, "Unit authentication"):
# GOVPAY-HMAC-SHA256, GOVPAY-HMAC-SM3, GOVPAY-RSA-SHA256 (PKCS#1 v1.5 over
# SHA-256, the unit's public key in the registry) and GOVPAY-SM2-SM3 (SM2
# with SM3, ID 1234567812345678, DER).  For each: a good request, a wrong
# key, a tampered body, a tampered target, a stale ts, a replayed nonce and
# another scheme than the unit's; answers are signed with the unit secret
# (HMAC) or the platform key of the family, named by GovPay-Serial.  Keys are
# made here with the openssl CLI; signatures are made and checked without
# the module's code.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp ();
use MIME::Base64 qw(encode_base64);
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;

my @SCHEMES = qw(GOVPAY-HMAC-SHA256 GOVPAY-HMAC-SM3 GOVPAY-RSA-SHA256 GOVPAY-SM2-SM3);
my %UNIT = (
    'GOVPAY-HMAC-SHA256' => '330100-HSHA-001',
    'GOVPAY-HMAC-SM3'    => '330100-HSM3-001',
    'GOVPAY-RSA-SHA256'  => '330100-RSA-001',
    'GOVPAY-SM2-SM3'     => '330100-SM2-001',
);

my $reg = $t->default_registry;
push @{ $reg->{units} }, map { $t->add_unit(id => $UNIT{$_}, scheme => $_) } @SCHEMES;
$t->write_registry($reg);

my @platform = ($t->new_platform_key('rsa'), $t->new_platform_key('sm2'));

# keys that are not the units' own: "signed by another key"
my ($other_rsa) = $t->new_key_pair('other-rsa', 'rsa');
my ($other_sm2) = $t->new_key_pair('other-sm2', 'sm2');
my %WRONG = (
    'GOVPAY-HMAC-SHA256' => [ secret => GovPay::Test::random_string(40) ],
    'GOVPAY-HMAC-SM3'    => [ secret => GovPay::Test::random_string(40) ],
    'GOVPAY-RSA-SHA256'  => [ key => $other_rsa ],
    'GOVPAY-SM2-SM3'     => [ key => $other_sm2 ],
);

# a correct signature, but under another scheme than the unit's
my %OTHER_SCHEME = (
    'GOVPAY-HMAC-SHA256' => [ scheme => 'GOVPAY-HMAC-SM3', sign_scheme => 'GOVPAY-HMAC-SM3' ],
    'GOVPAY-HMAC-SM3'    => [ scheme => 'GOVPAY-HMAC-SHA256',
                              sign_scheme => 'GOVPAY-HMAC-SHA256' ],
    'GOVPAY-RSA-SHA256'  => [ scheme => 'GOVPAY-SM2-SM3', sign_scheme => 'GOVPAY-SM2-SM3',
                              key => $t->unit_key($UNIT{'GOVPAY-SM2-SM3'}) ],
    'GOVPAY-SM2-SM3'     => [ scheme => 'GOVPAY-RSA-SHA256',
                              sign_scheme => 'GOVPAY-RSA-SHA256',
                              key => $t->unit_key($UNIT{'GOVPAY-RSA-SHA256'}) ],
);

$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_platform_key => \@platform });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
    }
EOF

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

for my $scheme (@SCHEMES) {
    my $unit = $UNIT{$scheme};
    my $family = $GovPay::Test::FAMILY{$scheme};
    my %as = (unit => $unit);
    my $body = sub { json_encode($t->notice_body(@_)) };

    subtest "$scheme unit" => sub {
        # a good request
        my $res = $t->signed_request(POST => '/v1/notices', $body->(), %as);
        is $res->status, 201, "$scheme: a correctly signed create answers 201"
            or diag $res->describe;
        is $res->json && $res->json->{unit}, $unit, "$scheme: the notice is the unit's";
        $t->verify_response_signature($res, $family
            ? "$scheme: the answer verifies with the platform $family public key"
            : "$scheme: the answer is signed with the unit secret ($scheme)", $unit);
        if ($family) {
            is $res->header('GovPay-Serial'), $t->platform_key($family)->{serial},
                "$scheme: GovPay-Serial names the platform $family key";
        } else {
            ok !defined $res->header('GovPay-Serial'),
                "$scheme: an answer signed with the unit secret carries no GovPay-Serial";
        }
        my $code = $res->json ? $res->json->{payment_code} : random_code();

        my $get = $t->get_notice($code, %as);
        is $get->status, 200, "$scheme: a correctly signed GET (empty body) answers 200"
            or diag $get->describe;
        $t->verify_response_signature($get, "$scheme: the GET answer is signed", $unit);

        # a wrong key
        refused("$scheme: a create signed with another key", 'SIGNATURE_INVALID',
            sub { $t->signed_request(POST => '/v1/notices', $body->(), %as,
                                     @{ $WRONG{$scheme} }) });

        # a tampered body
        my $b = $body->();
        refused("$scheme: a body changed after signing", 'SIGNATURE_INVALID',
            sub { $t->signed_request(POST => '/v1/notices', $b, %as,
                                     sign_body => $b =~ s/125000/125001/r) });

        # a tampered target
        refused("$scheme: a query added after signing", 'SIGNATURE_INVALID',
            sub { $t->signed_request(POST => '/v1/notices?x=1', $body->(), %as,
                                     sign_target => '/v1/notices') });
        my $other_code = random_code();
        refused("$scheme: a GET of another code than was signed", 'SIGNATURE_INVALID',
            sub { $t->signed_request(GET => "/v1/notices/$other_code", undef, %as,
                                     sign_target => "/v1/notices/$code") });

        # a stale timestamp
        my $stale = refused("$scheme: ts 301 s in the past", 'TIMESTAMP_OUT_OF_WINDOW',
            sub { $t->signed_request(POST => '/v1/notices', $body->(), %as,
                                     ts => int(time) - 301) });

        # a replayed nonce
        my $replay = refused("$scheme: the same signed create sent again", 'NONCE_REPLAYED',
            sub { $t->resend($res) });
        $t->verify_response_signature($replay,
            "$scheme: the NONCE_REPLAYED answer is signed too", $unit);
        refused("$scheme: the same signed GET sent again", 'NONCE_REPLAYED',
            sub { $t->resend($get) });

        # another scheme than the unit's (a correct signature under it)
        refused("$scheme: a request under $OTHER_SCHEME{$scheme}[1]", 'SIGNATURE_INVALID',
            sub { $t->signed_request(POST => '/v1/notices', $body->(), %as,
                                     @{ $OTHER_SCHEME{$scheme} }) });
    };
}

###############################################################################
# details of the asymmetric schemes

# the two INTEGERs of a DER SEQUENCE { r, s } (short lengths: SM2 signatures)
sub der_ints {
    my ($der) = @_;
    my @b = unpack 'C*', $der;
    my $i = 2;                       # SEQUENCE tag, length
    my @ints;
    for (1 .. 2) {
        my $len = $b[$i + 1];
        my $v = pack 'C*', @b[ $i + 2 .. $i + 1 + $len ];
        $v =~ s/^\0+//;
        push @ints, $v;
        $i += 2 + $len;
    }
    return @ints;
}

# RSA: a signature made by the openssl CLI (not Crypt::OpenSSL::RSA) verifies
{
    my $unit = $UNIT{'GOVPAY-RSA-SHA256'};
    my $b = json_encode($t->notice_body);
    my ($ts, $nonce) = (int time, GovPay::Test::random_string(24));
    my $sig = encode_base64(GovPay::Test::openssl('dgst', '-sha256', '-sign',
        $t->unit_key($unit), { stdin => GovPay::Test->string_to_sign(
            'POST', '/v1/notices', $ts, $nonce, $b) }), '');
    my $res = $t->signed_request(POST => '/v1/notices', $b, unit => $unit,
                                 ts => $ts, nonce => $nonce, sig => $sig);
    is $res->status, 201, 'GOVPAY-RSA-SHA256: a signature by openssl dgst -sha256 -sign is accepted'
        or diag $res->describe;
}

# SM2: the distinguishing ID is part of the signature
{
    my $unit = $UNIT{'GOVPAY-SM2-SM3'};
    my $b = json_encode($t->notice_body);
    my ($ts, $nonce) = (int time, GovPay::Test::random_string(24));
    my $msg = File::Temp->new;
    binmode $msg;
    print {$msg} GovPay::Test->string_to_sign('POST', '/v1/notices', $ts, $nonce, $b);
    close $msg;
    my $sig = encode_base64(GovPay::Test::openssl('pkeyutl', '-sign', '-rawin',
        '-digest', 'sm3', '-pkeyopt', 'distid:8765432187654321', '-inkey',
        $t->unit_key($unit), '-in', $msg->filename), '');
    refused('GOVPAY-SM2-SM3: a signature with another distinguishing ID', 'SIGNATURE_INVALID',
        sub { $t->signed_request(POST => '/v1/notices', $b, unit => $unit,
                                 ts => $ts, nonce => $nonce, sig => $sig) });

    # the signature is DER, not the 64 bytes r || s
    my $b3 = json_encode($t->notice_body);
    my $n3 = GovPay::Test::random_string(24);
    my $der = MIME::Base64::decode_base64(GovPay::Test->sign_as('GOVPAY-SM2-SM3',
        $t->unit_key($unit), GovPay::Test->string_to_sign('POST', '/v1/notices', $ts, $n3, $b3)));
    my ($r, $s) = der_ints($der);
    my $raw = join '', map { substr(("\0" x 32) . $_, -32) } $r, $s;
    is length $raw, 64, 'GOVPAY-SM2-SM3: the DER signature converts to 64 bytes r || s';
    refused('GOVPAY-SM2-SM3: the same signature as raw r || s (not DER)', 'SIGNATURE_INVALID',
        sub { $t->signed_request(POST => '/v1/notices', $b3, unit => $unit, ts => $ts,
                                 nonce => $n3, sig => encode_base64($raw, '')) });
    my $res3 = $t->signed_request(POST => '/v1/notices', $b3, unit => $unit, ts => $ts,
                                  nonce => $n3, sig => encode_base64($der, ''));
    is $res3->status, 201, 'GOVPAY-SM2-SM3: the DER form of it is accepted'
        or diag $res3->describe;

    # SM2 signatures are randomized: two signatures of one request differ and
    # both verify (only the first use of the nonce is accepted)
    my $b2 = json_encode($t->notice_body);
    my $sts = GovPay::Test->string_to_sign('POST', '/v1/notices', $ts, $nonce . 'x', $b2);
    my $s1 = GovPay::Test->sign_as('GOVPAY-SM2-SM3', $t->unit_key($unit), $sts);
    my $s2 = GovPay::Test->sign_as('GOVPAY-SM2-SM3', $t->unit_key($unit), $sts);
    isnt $s1, $s2, 'GOVPAY-SM2-SM3: two signatures of the same string differ (randomized)';
    my $res = $t->signed_request(POST => '/v1/notices', $b2, unit => $unit,
                                 ts => $ts, nonce => $nonce . 'x', sig => $s2);
    is $res->status, 201, 'GOVPAY-SM2-SM3: either of them is accepted' or diag $res->describe;
}

# an RSA unit's answer does not verify with the SM2 platform key, and an HMAC
# unit's answer is not signed by a platform key
{
    my $res = $t->signed_request(POST => '/v1/notices', $t->notice_body,
                                 unit => $UNIT{'GOVPAY-RSA-SHA256'});
    is $res->status, 201, 'RSA unit creates a notice' or diag $res->describe;
    my $string = join("\n", $res->header('GovPay-Timestamp') // '',
                      $res->header('GovPay-Nonce') // '', $res->body) . "\n";
    ok !GovPay::Test->verify_as('GOVPAY-SM2-SM3', $t->platform_key('sm2')->{pub},
                                $string, $res->header('GovPay-Signature') // ''),
        'the RSA unit\'s answer is not signed with the SM2 platform key';
    ok(GovPay::Test->verify_as('GOVPAY-RSA-SHA256', $t->platform_key('rsa')->{pub},
                               $string, $res->header('GovPay-Signature') // ''),
        'the RSA unit\'s answer is signed with the RSA platform key');
}

###############################################################################

$t->check_error_log;

done_testing;
