#!/usr/bin/perl

# Refunds at the edge (docs/unit-integration.md, "Refunds"): a unit asks for
# money back with a signed POST /v1/notices/{code}/refunds, idempotent on
# request_id; the sum of a notice's refunds never exceeds what was paid, even
# when refunds race; channels report how refunds ended through their own
# callbacks (WeChat Pay's refund notification, UnionPay's refund back
# notification) and banks through the bank API; forged, tampered and repeated
# reports change nothing.  Carrying a refund to a channel is the worker's
# refund plugin (t/refund_*.t).

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Channels;

my $BANK = 'BANK-TEST-001';
my $BANK2 = 'BANK-TEST-002';

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
$t->new_unit_secret($_) for $BANK, $BANK2;
my $reg = $t->default_registry;
push @{ $reg->{units} },
    map { { id => $_, name => "银行$_", scheme => 'GOVPAY-HMAC-SHA256',
            secret_file => "keys/$_.secret", kind => 'bank' } } $BANK, $BANK2;
$t->write_registry($reg);

my %d = $c->directives('wechat', 'unionpay');
$t->start_redis;
$t->start_nginx(<<'EOF', directives => \%d);
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /bank/v1/ { gov_pay_bank; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location = /notify/wechat { gov_pay_notify wechat; }
        location = /notify/unionpay { gov_pay_notify unionpay; }
    }
EOF

sub refund {
    my ($code, %o) = @_;
    my $opts = delete $o{_opts} // {};
    my %body = (request_id => 'RF-' . random_string(10), amount => 100, reason => '退学退费', %o);
    delete $body{$_} for grep { !defined $body{$_} } keys %body;
    return $t->signed_request(POST => "/v1/notices/$code/refunds", \%body, %$opts);
}

sub notice { $t->get_notice($_[0])->json // {} }
sub events { map { $_->{fields} } $t->stream_entries('refunds') }
sub events_of { my ($id) = @_; grep { $_->{refund_id} eq $id } events() }

sub paid_notice {
    my (%o) = @_;
    my $n = $t->new_notice(amount => $o{amount} // 10000);
    my $res = $t->sandbox_pay($n);
    die 'not paid: ' . $res->describe unless $res->body eq 'success';
    return $n;
}

###############################################################################
# asking

my $unpaid = $t->new_notice(amount => 10000);
my $res = refund($unpaid->{payment_code});
is $res->status, 409, 'a refund of an unpaid notice is 409';
is $res->error_code, 'INVALID_STATE', 'INVALID_STATE';
is refund(random_code())->status, 404, 'a refund of an unknown notice is 404';

my $n = paid_notice(amount => 10000);
my $code = $n->{payment_code};

is refund($code, _opts => { unit => $GovPay::Test::UNIT2 })->status, 404,
    "another unit's notice is 404";

$res = refund($code, request_id => 'RF-A', amount => 3000, reason => '退学');
is $res->status, 201, 'a refund of a paid notice is 201' or diag $res->describe;
my $r1 = $res->json // {};
is $r1->{refund_id}, "${code}R01", 'the refund id is the payment code, R and 01';
is $r1->{status}, 'REFUNDING', 'it is REFUNDING';
is $r1->{amount}, 3000, 'its amount in fen';
is $r1->{request_id}, 'RF-A', 'its request_id';
is $r1->{reason}, '退学', 'its reason';
$t->verify_response_signature($res, 'the answer is signed');

my ($ev) = events_of("${code}R01");
is $ev->{type}, 'refund.requested', 'refund.requested is on the shard\'s refunds stream';
is $ev->{amount}, 3000, 'with the amount';
is $ev->{channel}, 'sandbox', 'and the channel that took the money';
is $ev->{channel_trade_no}, notice($code)->{payment}{channel_trade_no}, 'and its trade number';

my $j = notice($code);
is $j->{status}, 'REFUNDING', 'the notice is REFUNDING';
is $j->{refunded_amount}, 0, 'nothing refunded yet';
is scalar @{ $j->{refunds} // [] }, 1, 'the notice lists its refund';
is $j->{refunds}[0]{refund_id}, "${code}R01", 'by id';

$res = refund($code, request_id => 'RF-A', amount => 3000, reason => '退学');
is $res->status, 200, 'the same request_id and body again: 200';
is $res->json->{refund_id}, "${code}R01", 'the same refund';
is scalar(events_of("${code}R01")), 1, 'no second refund.requested';
$res = refund($code, request_id => 'RF-A', amount => 3001, reason => '退学');
is $res->status, 409, 'the same request_id with another body: 409';
is $res->error_code, 'IDEMPOTENCY_CONFLICT', 'IDEMPOTENCY_CONFLICT';

$res = refund($code, amount => 7001);
is $res->status, 422, 'more than is left (7000 fen) is 422';
is $res->error_code, 'VALIDATION_FAILED', 'VALIDATION_FAILED';
is(($res->error_fields)[0], 'amount', 'naming amount');
like $res->text, qr/at most 7000 fen/, 'and what is left';

$res = $t->signed_request(GET => "/v1/notices/$code/refunds/${code}R01", undef);
is $res->status, 200, 'GET of the refund';
is $res->json->{status}, 'REFUNDING', 'REFUNDING';
is $t->signed_request(GET => "/v1/notices/$code/refunds/${code}R02", undef)->status, 404,
    'a refund that does not exist is 404';
my $other = paid_notice();
is $t->signed_request(GET => "/v1/notices/$code/refunds/$other->{payment_code}R01", undef)->status,
    404, "another notice's refund id under this notice is 404";
is $t->signed_request(GET => "/v1/notices/$code/refunds/${code}R01", undef,
                      unit => $GovPay::Test::UNIT2)->status, 404, "another unit gets 404";

# hostile input changes nothing
for my $bad ([ 'amount 0', { amount => 0 }, 422 ],
             [ 'amount 1.5', { amount => 1.5 }, 422 ],
             [ 'amount "100"', { amount => '100' }, 400 ],
             [ 'amount over 10^10', { amount => 10000000001 }, 422 ],
             [ 'no reason', { reason => undef }, 422 ],
             [ 'a reason with a newline', { reason => "退\n学" }, 422 ],
             [ 'a reason with RIGHT-TO-LEFT OVERRIDE', { reason => "\x{202e}退学" }, 422 ],
             [ 'a request_id with a space', { request_id => 'a b' }, 422 ],
             [ 'an unknown field', { extra => 1 }, 422 ]) {
    my ($name, $o, $status) = @$bad;
    my $before = $t->redis_snapshot;
    $res = refund($code, %$o);
    is $res->status, $status, "a refund with $name is $status" or diag $res->describe;
    is join(',', grep { !/:nonce:/ } split /\n/,
            GovPay::Test->snapshot_diff($before, $t->redis_snapshot)), '',
        "a refund with $name changes nothing";
}
$res = $t->signed_request(POST => "/v1/notices/$code/refunds", '{"request_id":"x","amount":1,"amount":2,"reason":"r"}');
is $res->status, 400, 'a duplicate JSON key is 400';
like $res->text, qr/duplicate object key/, 'and says so';
$res = $t->signed_request(POST => "/v1/notices/$code/refunds", '{}', content_type => 'text/plain');
is $res->status, 415, 'a body that is not JSON is 415';
$res = refund($code, _opts => { secret => 'wrong' });
is $res->error_code, 'SIGNATURE_INVALID', 'a bad signature is refused';
my $once = refund($code, amount => 1);
$res = $t->resend($once);
is $res->error_code, 'NONCE_REPLAYED', 'a replayed refund request is refused';
is $t->signed_request(PUT => "/v1/notices/$code/refunds", '{}')->status, 405,
    'another method is 405';

###############################################################################
# racing refunds never exceed what was paid

my $race = paid_notice(amount => 10000);
my @raw = map { $t->signed_request_raw(POST => "/v1/notices/$race->{payment_code}/refunds",
                    json_encode({ request_id => "RACE-$_", amount => 1500, reason => '并发' })) } 1 .. 12;
my @out = $t->parallel_requests(\@raw, 20);
my $ok = grep { $_->{status} eq '201' } @out;
my $over = grep { $_->{status} eq '422' } @out;
is $ok, 6, '12 concurrent refunds of 1500 on 10000 fen: exactly 6 are accepted';
is $over, 6, 'and 6 are refused as over the refundable amount';
$j = notice($race->{payment_code});
my $sum = 0;
$sum += $_->{amount} for @{ $j->{refunds} };
is $sum, 9000, 'the accepted refunds sum to 9000, never more than paid';

###############################################################################
# WeChat Pay refund notifications

sub wechat_paid {
    my ($amount) = @_;
    my $w = $t->new_notice(amount => $amount);
    my $res = $c->wechat_notify($c->wechat_body($c->wechat_transaction($w,
        transaction_id => '42' . random_string(26, '0123456789'))));
    die 'wechat payment failed: ' . $res->describe unless $res->status == 204;
    return $w;
}

my $w = wechat_paid(8000);
my $wcode = $w->{payment_code};
$res = refund($wcode, amount => 3000);
my $wid = $res->json->{refund_id};
is notice($wcode)->{status}, 'REFUNDING', 'a WeChat Pay notice being refunded';

my $before = $t->redis_snapshot;
$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid, refund => 3000)),
                         key => $c->priv('wechat_merchant'));
isnt $res->status, 204, 'a refund notification signed with another key is refused';
$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid, refund => 3000),
                                                apiv3_key => random_string(32)));
isnt $res->status, 204, 'a refund notification encrypted with another key is refused';
$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid, refund => 3001)));
is $res->status, 204, 'a refund notification with another amount is acknowledged';
is(GovPay::Test->snapshot_diff($before, $t->redis_snapshot), '',
   'forged, tampered and mismatched refund notifications change nothing');
like $t->error_log_text, qr/refund \Q$wid\E: the channel states an amount the refund does not have/,
    'the mismatch is logged for ops';

$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid, refund => 3000,
                                                                  refund_status => 'PROCESSING')));
is $res->status, 204, 'a PROCESSING refund notification is acknowledged';
is notice($wcode)->{refunds}[0]{status}, 'REFUNDING', 'and changes nothing';

$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid, refund => 3000)));
is $res->status, 204, 'REFUND.SUCCESS is acknowledged with 204';
$j = notice($wcode);
is $j->{refunds}[0]{status}, 'SUCCEEDED', 'the refund SUCCEEDED';
is $j->{refunds}[0]{channel_refund_no}, '50000000382019052709732678859', 'with WeChat\'s refund id';
is $j->{status}, 'PARTIALLY_REFUNDED', 'the notice is PARTIALLY_REFUNDED';
is $j->{refunded_amount}, 3000, 'refunded_amount 3000';
my @e = events_of($wid);
is_deeply [ map { $_->{type} } @e ], [ 'refund.requested', 'refund.succeeded' ],
    'refund.succeeded follows refund.requested';
is $e[1]{refunded_total}, 3000, 'it carries the refunded total';
is $e[1]{paid_amount}, 8000, 'and the paid amount';

$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid, refund => 3000)));
is $res->status, 204, 'a duplicate REFUND.SUCCESS is acknowledged';
is scalar(events_of($wid)), 2, 'and adds no event';

$res = refund($wcode, amount => 5000);
my $wid2 = $res->json->{refund_id};
$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, $wid2, refund => 5000,
                                                                  refund_status => 'ABNORMAL')));
is $res->status, 204, 'REFUND.ABNORMAL is acknowledged';
$j = notice($wcode);
is $j->{refunds}[1]{status}, 'FAILED', 'the refund FAILED';
is $j->{refunds}[1]{error}, 'ABNORMAL', 'with the reason';
is $j->{status}, 'PARTIALLY_REFUNDED', 'the notice is back to PARTIALLY_REFUNDED';
is refund($wcode, amount => 5000)->status, 201, 'the failed amount can be refunded again';

$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, "${wcode}R09")));
is $res->status, 404, 'a notification for an unknown refund is refused, so WeChat retries';

# a payment callback still knows the notice is paid
$res = $c->wechat_notify($c->wechat_body($c->wechat_transaction($w,
    transaction_id => $j->{payment}{channel_trade_no})));
is $res->status, 204, 'the payment notification again, on a refunded notice';
is scalar(grep { $_->{fields}{payment_code} eq $wcode } $t->stream_entries('anomaly')), 0,
    'is a duplicate, not an anomaly';

###############################################################################
# UnionPay refund back notifications (txnType 04)

my $u = $t->new_notice(amount => 6000);
$res = $c->unionpay_notify($c->unionpay_fields($u, queryId => 'UPQ' . random_string(18, '0123456789')));
is $res->body, 'ok', 'a UnionPay payment';
my $uid = refund($u->{payment_code}, amount => 6000)->json->{refund_id};
my %fields = (txnType => '04', txnSubType => '00', orderId => $uid, txnAmt => 6000,
              queryId => 'UPR' . random_string(18, '0123456789'));
$res = $c->unionpay_notify($c->unionpay_fields($u, %fields), key => $c->priv('unionpay_sign'));
is $res->status, 400, 'a forged refund back notification is refused';
$res = $c->unionpay_notify($c->unionpay_fields($u, %fields, respCode => '03'));
is $res->body, 'ok', 'a failed refund back notification is acknowledged';
is notice($u->{payment_code})->{refunds}[0]{status}, 'FAILED', 'and the refund FAILED';
$uid = refund($u->{payment_code}, amount => 6000)->json->{refund_id};
$res = $c->unionpay_notify($c->unionpay_fields($u, %fields, orderId => $uid));
is $res->body, 'ok', 'a successful refund back notification is acknowledged with ok';
$j = notice($u->{payment_code});
is $j->{status}, 'REFUNDED', 'a full refund: the notice is REFUNDED';
is $j->{refunded_amount}, 6000, 'refunded_amount 6000';
is refund($u->{payment_code}, amount => 1)->status, 422, 'nothing is left to refund';
$res = $c->unionpay_notify($c->unionpay_fields($u, %fields, txnType => '31'));
is $res->status, 400, 'another txnType is not acted on';

###############################################################################
# bank counters carry their own refunds

sub bank_pay {
    my ($code, $bank, $no, $amount) = @_;
    return $t->signed_request(POST => '/bank/v1/payments', {
        payment_code => $code, amount => $amount, bank_trade_no => $no,
        paid_at => epoch_to_rfc3339(int(time) - 60) }, unit => $bank);
}

my $b1 = $t->new_notice(amount => 5000);
my $b2 = $t->new_notice(amount => 7000);
is bank_pay($b1->{payment_code}, $BANK, 'BK-1', 5000)->json->{result}, 'PAID', 'bank 1 takes a payment';
is bank_pay($b2->{payment_code}, $BANK2, 'BK-2', 7000)->json->{result}, 'PAID', 'bank 2 takes one';
my $bid1 = refund($b1->{payment_code}, amount => 5000, reason => '误缴')->json->{refund_id};
my $bid2 = refund($b2->{payment_code}, amount => 2000)->json->{refund_id};

$res = $t->signed_request(GET => '/bank/v1/refunds', undef, unit => $BANK);
is $res->status, 200, 'a bank lists the refunds it must carry out';
my @list = @{ $res->json->{refunds} // [] };
is_deeply [ map { $_->{refund_id} } @list ], [ $bid1 ], "only its own payments' refunds";
is $list[0]{bank_trade_no}, 'BK-1', 'with its bank_trade_no';
is $list[0]{amount}, 5000, 'the amount';
is $list[0]{reason}, '误缴', 'and the reason';
$t->verify_response_signature($res, 'the list is signed for the bank', $BANK);
is $t->resend($res)->error_code, 'NONCE_REPLAYED', 'a replayed list request is refused';
is $t->signed_request(GET => '/bank/v1/refunds', undef)->status, 403, 'a unit may not list';

sub bank_done {
    my ($id, $bank, %o) = @_;
    return $t->signed_request(POST => "/bank/v1/refunds/$id", {
        result => 'SUCCEEDED', bank_refund_no => 'BR-' . random_string(8),
        refunded_at => epoch_to_rfc3339(int(time) - 10), %o }, unit => $bank);
}

is bank_done($bid1, $BANK2)->status, 404, "another bank cannot report this bank's refund";
$res = bank_done($bid1, $BANK, amount => 4999);
is $res->status, 422, 'a report with another amount is 422';
$res = bank_done($bid1, $BANK, bank_refund_no => 'BR-1');
is $res->status, 200, 'the bank reports the refund done';
is $res->json->{result}, 'SUCCEEDED', 'SUCCEEDED';
is notice($b1->{payment_code})->{status}, 'REFUNDED', 'the notice is REFUNDED';
$res = bank_done($bid1, $BANK, bank_refund_no => 'BR-1');
is $res->json->{recorded}, 'DUPLICATE', 'the same report again is a duplicate';
is bank_done($bid1, $BANK, result => 'FAILED')->status, 409,
    'a contradicting report is 409';
is_deeply [ map { $_->{refund_id} } @{ $t->signed_request(GET => '/bank/v1/refunds', undef,
                                                          unit => $BANK)->json->{refunds} } ],
    [], 'a finished refund is no longer offered';
$res = bank_done($bid2, $BANK2, result => 'FAILED', reason => '账户已销户');
is $res->json->{result}, 'FAILED', 'a bank reports a refund it could not make';
is notice($b2->{payment_code})->{refunds}[0]{error}, '账户已销户', 'with its reason';

###############################################################################
# Redis down

$t->stop_redis;
$res = refund($code, amount => 1);
is $res->status, 503, 'with Redis down a refund request answers 503';
$res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($w, "${wcode}R03")));
is $res->status, 503, 'and a refund notification gets the failure reply, so WeChat retries';
$t->start_redis;

$t->check_error_log;

done_testing;
