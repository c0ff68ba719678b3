#!/usr/bin/perl

# The module's variables $gov_pay_unit and $gov_pay_payment_code in an
# access_log: the unit of an authenticated request and the payment code it
# concerns (create, retry, GET, cancel; the payer's /q/{code}); "-" where
# there is none, and never a unit for a request whose signature failed.

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
    log_format gov_pay_test 'id=$http_x_test_id $request_method $status '
                            'unit=$gov_pay_unit code=$gov_pay_payment_code';

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%TESTDIR%%/gov.access.log gov_pay_test;

        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /plain/ { return 204; }
    }
EOF

my $UNIT = '330100-TEST-001';
my $log = $t->dir . '/gov.access.log';

# the access log line of the request tagged $id: (unit, code, status)
sub logged {
    my ($id) = @_;
    my $line = wait_for(sub {
        open my $fh, '<', $log or return 0;
        my ($l) = grep { /^id=\Q$id\E / } <$fh>;
        return $l // 0;
    }, 5, "the access log line of request $id");
    return () unless $line;
    chomp $line;
    return $line =~ /^id=\S+ \S+ (\d+) unit=(\S+) code=(\S+)$/ ? ($2, $3, $1) : ('?', '?', $line);
}

sub tag { my $id = 'L' . GovPay::Test::random_string(12); return ($id, headers => { 'X-Test-Id' => $id }) }

###############################################################################

my ($id, %h) = tag();
my $res = $t->create_notice(_opts => { %h });
is $res->status, 201, 'a notice is created' or diag $res->describe;
my $n = $res->json // {};
my $code = $n->{payment_code} // 'none';
my ($unit, $lcode, $status) = logged($id);
is $unit, $UNIT, 'create: the access log carries the unit id';
is $lcode, $code, 'create: the access log carries the new payment code';

($id, %h) = tag();
$res = $t->signed_request(POST => '/v1/notices', $res->sent->{body}, %h);
is $res->status, 200, 'the same create again answers 200' or diag $res->describe;
($unit, $lcode) = logged($id);
is $unit, $UNIT, 'idempotent retry: the access log carries the unit id';
is $lcode, $code, 'idempotent retry: the access log carries the payment code';

($id, %h) = tag();
$res = $t->get_notice($code, %h);
is $res->status, 200, 'the notice is read' or diag $res->describe;
($unit, $lcode) = logged($id);
is $unit, $UNIT, 'GET: the access log carries the unit id';
is $lcode, $code, 'GET: the access log carries the payment code from the URI';

($id, %h) = tag();
my $unknown = random_code();
$res = $t->get_notice($unknown, %h);
is $res->status, 404, 'an unknown code answers 404';
($unit, $lcode) = logged($id);
is $unit, $UNIT, 'GET of an unknown code: the access log carries the unit id';
is $lcode, $unknown, 'GET of an unknown code: the access log carries the code asked for';

my $n2 = $t->new_notice;
($id, %h) = tag();
$res = $t->signed_request(POST => "/v1/notices/$n2->{payment_code}/cancel", '', %h,
                          content_type => undef);
is $res->status, 200, 'a notice is cancelled' or diag $res->describe;
($unit, $lcode) = logged($id);
is $unit, $UNIT, 'cancel: the access log carries the unit id';
is $lcode, $n2->{payment_code}, 'cancel: the access log carries the payment code';

# refused requests

($id, %h) = tag();
$res = $t->create_notice(_opts => { %h, authorization => undef });
is $res->status, 401, 'an unsigned create answers 401';
($unit, $lcode) = logged($id);
is $unit, '-', 'unsigned create: no unit in the access log';
is $lcode, '-', 'unsigned create: no payment code in the access log';

($id, %h) = tag();
$res = $t->create_notice(_opts => { %h, secret => GovPay::Test::random_string(40) });
is $res->error_code, 'SIGNATURE_INVALID', 'a create with a wrong signature is refused';
($unit) = logged($id);
is $unit, '-', 'a request whose signature fails is not attributed to the unit it names';

($id, %h) = tag();
$res = $t->create_notice(_opts => { %h, unit => '330100-NOPE-999' });
is $res->error_code, 'UNAUTHENTICATED', 'a create by an unknown unit is refused';
($unit) = logged($id);
is $unit, '-', 'an unknown unit is not logged as a unit';

# the payer's route and a location without the module

($id, %h) = tag();
$res = $t->get("/q/$code", %h);
is $res->status, 200, 'the cashier page answers' or diag $res->describe;
($unit, $lcode) = logged($id);
is $lcode, $code, 'cashier page: the access log carries the payment code';
is $unit, '-', 'cashier page: no unit (payers are not units)';

($id, %h) = tag();
$res = $t->get('/plain/x', %h);
is $res->status, 204, 'a location without the module answers';
($unit, $lcode) = logged($id);
is "$unit $lcode", '- -', 'a request the module did not handle logs "-" for both';

###############################################################################

$t->check_error_log;

done_testing;
