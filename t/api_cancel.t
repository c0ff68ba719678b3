#!/usr/bin/perl

# Cancelling a notice and expiry (API.md, "Unit API"):
# POST /v1/notices/{payment_code}/cancel, signed, empty body: an unpaid
# notice becomes CANCELLED (200, again 200), a paid one is 409
# INVALID_STATE, another unit's or a malformed code is 404.  A cancelled or
# expired notice is gone for the payer (410) and money that still arrives
# for it is recorded as an anomaly (NOT_PAYABLE).  EXPIRED is computed on
# read once due_at has passed.

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
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $UNIT2 = '330100-TEST-002';
my $BROWSER = 'Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 '
            . '(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36';

sub cancel {
    my ($code, %o) = @_;
    return $t->signed_request(POST => "/v1/notices/$code/cancel", '', %o,
                              content_type => undef);
}

sub status_of {
    my ($code) = @_;
    my $g = $t->get_notice($code);
    return $g->status == 200 && $g->json ? $g->json->{status} : 'HTTP ' . $g->status;
}

sub stored_status {
    my ($notice_body_rid, $unit) = @_;
    my (undef, $h) = $t->stored_notice($notice_body_rid, $unit);
    return $h ? $h->{status} : undef;
}

sub cashier { $t->get("/q/$_[0]", headers => { 'User-Agent' => $BROWSER }) }

###############################################################################
# an unpaid notice is cancelled, idempotently

my $rid = 'T-' . GovPay::Test::random_string(16);
my $n = $t->new_notice(request_id => $rid, amount => 5000);
my $code = $n->{payment_code};

is cashier($code)->status, 200, 'the cashier page of the unpaid notice answers 200';

my $res = cancel($code);
is $res->status, 200, 'cancelling an unpaid notice answers 200' or diag $res->describe;
is $res->json && $res->json->{status}, 'CANCELLED', 'the answer shows status CANCELLED';
is $res->json && $res->json->{payment_code}, $code, 'the answer is the notice';
is $res->json && $res->json->{amount}, 5000, 'the answer carries the notice (amount)';
$t->verify_response_signature($res, 'the cancel answer is signed with the unit secret');
is stored_status($rid), 'CANCELLED', 'the stored notice is CANCELLED';
is status_of($code), 'CANCELLED', 'GET shows CANCELLED';

my $again = cancel($code);
is $again->status, 200, 'cancelling it again answers 200 (idempotent)' or diag $again->describe;
is $again->json && $again->json->{status}, 'CANCELLED', 'and shows CANCELLED';

my $page = cashier($code);
is $page->status, 410, 'the cashier page of a cancelled notice answers 410' or diag $page->describe;
like $page->text, qr/撤销/, 'and says the notice was cancelled (撤销)';
my $choice = $t->get("/pay/sandbox/$code", headers => { 'User-Agent' => $BROWSER });
is $choice->status, 410, 'choosing a channel for a cancelled notice answers 410, no hand-over'
    or diag $choice->describe;
ok !defined $choice->header('Location'), 'and redirects nowhere';

# money that still arrives is recorded, not applied
my $before_settled = () = $t->stream_entries('settled');
my $cb = $t->sandbox_pay($n, trade_no => 'SBXCANCELLED1');
is $cb->status, 200, 'a sandbox payment of a cancelled notice answers 200' or diag $cb->describe;
is $cb->body, 'success', 'and success (the money has moved; retrying would not help)';
my @an = grep { ($_->{fields}{payment_code} // '') eq $code
                || grep { $_ eq 'SBXCANCELLED1' } values %{ $_->{fields} } }
         $t->stream_entries('anomaly');
is scalar @an, 1, 'the payment is recorded on the anomaly stream';
is $an[0] && $an[0]{fields}{reason}, 'NOT_PAYABLE', 'with reason NOT_PAYABLE';
is scalar(my @s = $t->stream_entries('settled')), $before_settled, 'no settled event';
is status_of($code), 'CANCELLED', 'the notice stays CANCELLED';

###############################################################################
# a paid notice cannot be cancelled

my $prid = 'T-' . GovPay::Test::random_string(16);
my $paid = $t->new_notice(request_id => $prid, amount => 7000);
my $pay = $t->sandbox_pay($paid);
is $pay->body, 'success', 'a notice is paid' or diag $pay->describe;
is status_of($paid->{payment_code}), 'PAID', 'it reads PAID';

my $before = $t->redis_snapshot;
$res = cancel($paid->{payment_code});
is $res->status, 409, 'cancelling a paid notice answers 409' or diag $res->describe;
is $res->error_code, 'INVALID_STATE', 'and is INVALID_STATE';
$t->verify_response_signature($res, 'the INVALID_STATE answer is signed');
is stored_status($prid), 'PAID', 'the paid notice stays PAID';
my @changed = grep { !/:nonce:/ } split /\n/,
    GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
is scalar @changed, 0, 'refusing to cancel changes nothing but a nonce' or diag "@changed";

###############################################################################
# not found: another unit's notice, malformed codes

sub not_found {
    my ($name, $c, %o) = @_;
    my $before = $t->redis_snapshot;
    my $res = cancel($c, %o);
    is $res->status, 404, "cancelling $name answers 404" or diag $res->describe;
    is $res->error_code, 'NOT_FOUND', "cancelling $name is NOT_FOUND";
    my @changed = grep { !/:nonce:/ } split /\n/,
        GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
    is scalar @changed, 0, "cancelling $name changes nothing but a nonce"
        or diag join "\n", @changed;
}

my $orid = 'T-' . GovPay::Test::random_string(16);
my $own = $t->new_notice(request_id => $orid);
not_found("another unit's notice", $own->{payment_code}, unit => $UNIT2);
is stored_status($orid), 'UNPAID', "the other unit's notice stays UNPAID";
is status_of($own->{payment_code}), 'UNPAID', 'and its unit still reads it UNPAID';

my $bad_check = substr($own->{payment_code}, 0, 19)
              . ((substr($own->{payment_code}, 19, 1) + 1) % 10);
not_found('a code with a bad check digit', $bad_check);
not_found('an unknown code with a valid check digit', random_code());
is stored_status($orid), 'UNPAID', 'a bad check digit cancels nothing';

###############################################################################
# cancel is a signed request

$res = $t->signed_request(POST => "/v1/notices/$own->{payment_code}/cancel", '',
                          authorization => undef, content_type => undef);
is $res->status, 401, 'an unsigned cancel answers 401';
is $res->error_code, 'UNAUTHENTICATED', 'and is UNAUTHENTICATED';
$res = cancel($own->{payment_code}, secret => GovPay::Test::random_string(40));
is $res->error_code, 'SIGNATURE_INVALID', 'a cancel signed with a wrong secret is SIGNATURE_INVALID';
$res = cancel($own->{payment_code}, sign_target => "/v1/notices/$code/cancel");
is $res->error_code, 'SIGNATURE_INVALID',
    'a cancel signed for another code is SIGNATURE_INVALID';
is stored_status($orid), 'UNPAID', 'refused cancels cancel nothing';

my $ok = cancel($own->{payment_code});
is $ok->status, 200, 'a signed cancel is accepted' or diag $ok->describe;
$res = $t->resend($ok);
is $res->status, 401, 'the same cancel sent again answers 401';
is $res->error_code, 'NONCE_REPLAYED', 'and is NONCE_REPLAYED';

###############################################################################
# expiry: an unpaid notice past due_at reads EXPIRED, for the unit and payer

my $erid = 'T-' . GovPay::Test::random_string(16);
my $soon = $t->new_notice(request_id => $erid, due_at => epoch_to_rfc3339(int(time) + 2));
is $soon->{status}, 'UNPAID', 'a notice due in 2 s is UNPAID';
is cashier($soon->{payment_code})->status, 200, 'its cashier page answers 200 before due_at';

ok wait_for(sub { status_of($soon->{payment_code}) eq 'EXPIRED' }, 8,
            'the notice to read EXPIRED'), 'after due_at GET shows EXPIRED';
$page = cashier($soon->{payment_code});
is $page->status, 410, 'the cashier page of an expired notice answers 410'
    or diag $page->describe;
like $page->text, qr/过期/, 'and says the notice has expired (过期)';
$choice = $t->get("/pay/sandbox/$soon->{payment_code}", headers => { 'User-Agent' => $BROWSER });
is $choice->status, 410, 'choosing a channel for an expired notice answers 410, no hand-over'
    or diag $choice->describe;
is stored_status($erid), 'UNPAID', 'EXPIRED is computed on read, not stored';

###############################################################################

$t->check_error_log;

done_testing;
