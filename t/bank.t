#!/usr/bin/perl

# The bank counter channel (API.md, "Bank counter channel"; docs/channels.md):
# a bank is a unit of kind "bank", signs like a unit, reads what to collect
# and reports payments idempotently on bank_trade_no.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $BANK = 'BANK-TEST-001';
my $BANK2 = 'BANK-TEST-002';

my $t = GovPay::Test->new;
$t->new_unit_secret($_) for $BANK, $BANK2;
my $reg = $t->default_registry;
push @{ $reg->{units} },
    { id => $BANK, name => '测试银行', scheme => 'GOVPAY-HMAC-SHA256',
      secret_file => "keys/$BANK.secret", kind => 'bank' },
    { id => $BANK2, name => '测试银行二', scheme => 'GOVPAY-HMAC-SHA256',
      secret_file => "keys/$BANK2.secret", kind => 'bank' };
$t->write_registry($reg);

$t->start_redis;
$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /bank/v1/ { gov_pay_bank; }
    }
EOF

sub notice_of {
    my ($code) = @_;
    my $g = $t->get_notice($code);
    return $g->status == 200 ? $g->json : { http => $g->describe };
}

sub settled { $t->stream_entries('settled') }

sub anomalies_of {
    my ($trade_no) = @_;
    return grep { ($_->{fields}{channel_trade_no} // '') eq $trade_no }
        $t->stream_entries('anomaly');
}

sub pay {
    my ($code, %o) = @_;
    my $unit = delete $o{_unit} // $BANK;
    my $opts = delete $o{_opts} // {};
    return $t->signed_request(POST => '/bank/v1/payments', {
        payment_code => $code, amount => 125000, bank_trade_no => 'B20261124000001',
        paid_at => epoch_to_rfc3339(int(time) - 60), %o }, unit => $unit, %$opts);
}

###############################################################################
# the bank reads the notice

my $n = $t->new_notice(amount => 125000);
my $code = $n->{payment_code};

my $res = $t->signed_request(GET => "/bank/v1/notices/$code", undef, unit => $BANK);
is $res->status, 200, 'a bank reads a notice by payment code' or diag $res->describe;
my $j = $res->json // {};
is $j->{payment_code}, $code, 'with its payment code';
is $j->{status}, 'UNPAID', 'its status';
is $j->{amount}, 125000, 'its amount in fen';
is $j->{item_code}, '103001', 'its item code';
is $j->{item_name}, '学费', 'its item name';
is $j->{payer_name}, '张*', 'the payer masked';
like $j->{payer_id} // '', qr/^\d{4}\*{10}\d{3}[\dX]$/, 'the ID number masked';
ok !grep({ /\d{17}[\dX]/ } map { $j->{$_} } grep { $_ ne 'payment_code' } keys %$j),
    'no full ID number';
$t->verify_response_signature($res, 'the answer is signed for the bank', $BANK);

$res = $t->resend($res);
is $res->error_code, 'NONCE_REPLAYED', 'a replayed bank request is refused';

$res = $t->signed_request(GET => "/bank/v1/notices/$code", undef);
is $res->status, 403, 'a unit that is no bank may not use the bank routes';
is $res->error_code, 'FORBIDDEN', 'FORBIDDEN';

$res = $t->signed_request(GET => "/bank/v1/notices/$code", undef, unit => $BANK,
                          secret => 'not-the-secret-of-the-bank-000000');
is $res->error_code, 'SIGNATURE_INVALID', 'a bad bank signature is refused';

$res = $t->signed_request(GET => '/bank/v1/notices/' . random_code(), undef, unit => $BANK);
is $res->status, 404, 'an unknown code is 404';

$res = $t->signed_request(POST => '/v1/notices', $t->notice_body, unit => $BANK);
is $res->status, 403, 'a bank may not create notices';
like $res->json && $res->json->{error}{message}, qr/bank counter routes only/,
    'a bank is refused the unit API as a bank, whatever it asks';
$res = $t->signed_request(GET => "/v1/notices/$code", undef, unit => $BANK);
is $res->status, 403, 'a bank may not read notices through the unit API either';

###############################################################################
# the bank reports a payment

$res = pay($code);
is $res->status, 200, 'a bank payment answers 200' or diag $res->describe;
is $res->json->{result}, 'PAID', 'result PAID';
$t->verify_response_signature($res, 'the answer is signed for the bank', $BANK);
my $g = notice_of($code);
is $g->{status}, 'PAID', 'the notice is PAID';
is $g->{payment}{channel}, 'bank', 'through the bank channel';
is $g->{payment}{channel_trade_no}, "$BANK:B20261124000001",
    'the trade number is the bank id and its bank_trade_no';
is scalar(settled()), 1, 'one settled event';

my $sent = $t->resend($res);
is $sent->status, 401, 'the same signed payment request replayed is refused';
is $sent->error_code, 'NONCE_REPLAYED', 'NONCE_REPLAYED';

my $snap = $t->redis_snapshot;
$res = pay($code);
is $res->status, 200, 'the same bank_trade_no again answers 200';
is $res->json->{result}, 'DUPLICATE', 'result DUPLICATE';
is scalar(settled()), 1, 'no second settled event';
my @diff = grep { !/nonce/ } split /\n/,
    GovPay::Test->snapshot_diff($snap, $t->redis_snapshot);
is "@diff", '', 'a duplicate changes nothing but its nonce';

$res = pay($code, bank_trade_no => 'B20261124000002');
is $res->json->{result}, 'ANOMALY', 'another bank_trade_no for a paid notice is an anomaly';
is $res->json->{reason}, 'SECOND_PAYMENT', 'SECOND_PAYMENT';
is scalar(anomalies_of("$BANK:B20261124000002")), 1, 'recorded on the anomaly stream';

$res = pay($code, _unit => $BANK2);
is $res->json->{result}, 'ANOMALY',
    "another bank's payment under the same number is not taken for a duplicate";

my $n2 = $t->new_notice(amount => 5000);
$res = pay($n2->{payment_code}, amount => 4999, bank_trade_no => 'B3');
is $res->json->{result}, 'ANOMALY', 'a wrong amount is an anomaly';
is $res->json->{reason}, 'AMOUNT_MISMATCH', 'AMOUNT_MISMATCH';
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'and does not settle';

$res = pay(random_code(), bank_trade_no => 'B4');
is $res->status, 404, 'a payment for an unknown code is 404';

for my $bad ([ amount => 1.5 ], [ amount => '100' ], [ amount => 0 ],
             [ bank_trade_no => 'B 5' ], [ bank_trade_no => '' ],
             [ paid_at => '2026-11-24 10:00:00' ],
             [ paid_at => epoch_to_rfc3339(int(time) + 3600) ],
             [ payment_code => '123' ], [ extra => 1 ]) {
    $res = pay($n2->{payment_code}, @$bad);
    is $res->status, 422, "a payment with $bad->[0] '$bad->[1]' is refused"
        or diag $res->describe;
    is $res->error_code, 'VALIDATION_FAILED', 'VALIDATION_FAILED';
}

$res = $t->signed_request(POST => '/bank/v1/payments', 'not json', unit => $BANK);
is $res->error_code, 'BAD_REQUEST', 'a body that is not JSON is BAD_REQUEST';

$res = $t->signed_request(POST => '/bank/v1/payments', '{}', unit => $BANK,
                          content_type => 'text/plain');
is $res->status, 415, 'a body that is not application/json is 415';

###############################################################################
# Redis down

$t->stop_redis;
$res = pay($n2->{payment_code}, amount => 5000, bank_trade_no => 'B6',
           _opts => { timeout => 10 });
is $res->status, 503, 'a bank payment while Redis is down answers 503';
is $res->error_code, 'STORE_UNAVAILABLE', 'STORE_UNAVAILABLE';
$t->start_redis;
ok wait_for(sub {
    (pay($n2->{payment_code}, amount => 5000, bank_trade_no => 'B6')->json // {})->{result}
        // '' eq 'PAID' }, 10, 'the retry'), 'the retry settles once Redis is back';

$t->check_error_log;

done_testing;
