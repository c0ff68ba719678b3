#!/usr/bin/perl

# What hostile traffic costs (docs/channels.md, docs/unit-integration.md):
# forged callbacks are logged once per channel and reason, then counted, so
# nobody can grow the error log at line rate; a stale unit request is
# refused before its signature is checked; limit_req can key on the unit a
# request claims ($gov_pay_claimed_unit), before any verification.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Channels;

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
my %d = ($c->directives('alipay'), gov_pay_refusal_log_interval => '2s');

$t->start_redis;
$t->start_nginx(<<'EOF', directives => \%d);
    limit_req_zone $gov_pay_claimed_unit zone=gp_unit:1m rate=1r/m;
    limit_req_status 429;

    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /limited/v1/ {
            limit_req zone=gp_unit nodelay;
            rewrite ^/limited(/v1/.*)$ $1 break;
            gov_pay_api;
        }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location = /notify/alipay { gov_pay_notify alipay; }
    }
EOF

sub lines_matching {
    my ($re) = @_;
    return scalar grep { /$re/ } split /\n/, $t->error_log_text;
}

###############################################################################
# forged callbacks: one line, then a count

my $n = $t->new_notice(amount => 1000);
for (1 .. 40) {
    my $res = $t->sandbox_pay($n, sign => 'f' x 64);
    die 'a forged callback was not refused: ' . $res->describe unless $res->status == 400;
}
for (1 .. 15) {
    my $res = $c->alipay_notify($c->alipay_fields($n), key => $c->priv('alipay_app'));
    die 'a forged alipay callback was accepted' if $res->body eq 'success';
}

is lines_matching(qr/sandbox callback refused: signature does not verify \(/), 1,
    '40 forged sandbox callbacks write one line';
is lines_matching(qr/alipay callback refused: signature does not verify \(/), 1,
    '15 forged alipay callbacks write one line, per channel';
ok wait_for(sub { lines_matching(qr/sandbox callback refused: signature does not verify: 39 more in the last \d+ s/) }, 10,
            'the count line'), 'then one line counts the other 39 (gov_pay_refusal_log_interval)';
ok wait_for(sub { lines_matching(qr/alipay callback refused: signature does not verify: 14 more/) }, 10,
            'the alipay count line'), 'and 14 for alipay';
is $t->get_notice($n->{payment_code})->json->{status}, 'UNPAID', 'nothing was settled';

# the same anomaly again says it was recorded before
my $trade = 'SBX' . random_string(12, '0123456789');
$t->sandbox_pay($n, trade_no => $trade, total_fen => 999) for 1 .. 2;
is lines_matching(qr/sandbox payment \Q$trade\E for \d+ recorded as anomaly AMOUNT_MISMATCH/), 1,
    'a wrong amount is logged as recorded';
is lines_matching(qr/sandbox payment \Q$trade\E for \d+ already recorded as anomaly AMOUNT_MISMATCH/), 1,
    'its retry is logged as already recorded';

###############################################################################
# cheap checks first

my $res = $t->create_notice(_opts => { ts => int(time) - 3600, sig => 'AAAA' });
is $res->error_code, 'TIMESTAMP_OUT_OF_WINDOW',
    'a stale request with a bad signature is refused for its ts (checked before the signature)';
ok !defined $res->header('GovPay-Signature'), 'and the refusal of an unverified request is not signed';
$res = $t->create_notice(_opts => { ts => int(time) - 3600 });
is $res->error_code, 'TIMESTAMP_OUT_OF_WINDOW', 'a stale request with a good signature too';

###############################################################################
# limit_req keyed on the claimed unit

my $UNIT2 = $GovPay::Test::UNIT2;
$res = $t->signed_request(GET => "/limited/v1/notices/$n->{payment_code}", undef,
                          sign_target => "/limited/v1/notices/$n->{payment_code}");
isnt $res->status, 429, 'the first request of a unit passes the per-unit limit';
$res = $t->signed_request(GET => "/limited/v1/notices/$n->{payment_code}", undef,
                          sign_target => "/limited/v1/notices/$n->{payment_code}");
is $res->status, 429, 'its second within the minute is limited (limit_req on $gov_pay_claimed_unit)';
$res = $t->signed_request(GET => "/limited/v1/notices/$n->{payment_code}", undef, unit => $UNIT2);
isnt $res->status, 429, 'another unit has its own allowance';
$res = $t->signed_request(GET => "/limited/v1/notices/$n->{payment_code}", undef, unit => $UNIT2,
                          secret => 'wrong');
is $res->status, 429, 'the claim counts before verification: a forged request of that unit is limited too';
$res = $t->request(GET => "/limited/v1/notices/$n->{payment_code}",
                   headers => { Authorization => 'GOVPAY-HMAC-SHA256 unit="NO-SUCH-UNIT",ts="1",nonce="aaaaaaaaaaaaaaaa",sig="AAAA"' });
isnt $res->status, 429, 'an unknown unit is no key of the per-unit zone (limit it by address)';

$t->check_error_log;

done_testing;
