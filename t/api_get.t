#!/usr/bin/perl

# Unit API: GET /v1/notices/{payment_code} (API.md, "Unit API"): the notice
# to its unit, 404 to everyone else and for any code that is not a notice,
# EXPIRED computed on read.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

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

my $created = $t->create_notice(amount => 8800, remark => '补考费');
is $created->status, 201, 'notice is created' or diag $created->describe;
my $n = $created->json // {};
my $code = $n->{payment_code} // random_code();

###############################################################################

my $res = $t->get_notice($code);
is $res->status, 200, 'unit reads its own notice' or diag $res->describe;
my $payer = json_decode($created->sent->{body})->{payer};
is_deeply $res->json, { %$n, payer => $payer },
    'read notice equals the created one, with the payer in full (opened)';
$t->verify_response_signature($res, 'read response is signed with the unit secret');

sub not_found {
    my ($name, $c, %o) = @_;
    my $before = $t->redis_snapshot;
    my $res = $t->get_notice($c, %o);
    is $res->status, 404, "$name answers 404" or diag $res->describe;
    is $res->error_code, 'NOT_FOUND', "$name is NOT_FOUND";
    unlike $res->body, qr/\Q$n->{unit}\E|UNPAID|8800/,
        "$name reveals nothing of the notice";
    my @changed = grep { !/:nonce:/ } split /\n/,
        GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
    is scalar @changed, 0, "$name changes nothing in Redis but a nonce"
        or diag join "\n", @changed;
}

not_found("another unit's notice", $code, unit => '330100-TEST-002');
not_found('unknown code with a valid check digit', random_code());

my $bad_check = substr($code, 0, 19) . ((substr($code, 19, 1) + 1) % 10);
not_found('code with a bad check digit', $bad_check);

my $other_year = make_code('330100', (current_yy() + 1) % 100, substr($code, 8, 11));
not_found("the notice's body under another year", $other_year);
my $other_div = make_code('110100', current_yy(), substr($code, 8, 11));
not_found("the notice's body under another division", $other_div);

not_found('code of 19 digits', substr($code, 0, 19));
not_found('code of 21 digits', $code . '0');
not_found('code with letters', 'ABCDEFGHIJKLMNOPQRST');

$res = $t->signed_request(GET => "/v1/notices/$code", undef, authorization => undef);
is $res->status, 401, 'unsigned read answers 401';
is $res->error_code, 'UNAUTHENTICATED', 'unsigned read is UNAUTHENTICATED';

###############################################################################
# EXPIRED is computed on read once due_at has passed

my $soon = $t->create_notice(due_at => epoch_to_rfc3339(int(time) + 2));
is $soon->status, 201, 'notice due in 2 s is created' or diag $soon->describe;
my $soon_code = $soon->json ? $soon->json->{payment_code} : random_code();
is $soon->json && $soon->json->{status}, 'UNPAID', 'it is UNPAID before due_at';

my $expired = wait_for(sub {
    my $g = $t->get_notice($soon_code);
    return $g->status == 200 && $g->json->{status} eq 'EXPIRED' ? $g : 0;
}, 6, 'notice to read as EXPIRED');
ok $expired, 'unpaid notice reads as EXPIRED after due_at';
my (undef, $stored) = $t->stored_notice(
    json_decode($soon->sent->{body})->{request_id});
is $stored && $stored->{status}, 'UNPAID', 'EXPIRED is not written to the store (computed on read)';

###############################################################################

$t->check_error_log;

done_testing;
