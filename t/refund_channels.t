#!/usr/bin/perl

# The refund plugin carries each refund to the channel that took the money
# (docs/channels.md, "Refunds"; docs/internals.md, "Refund plugin"), against
# stand-ins of the channels' refund APIs that check the worker's signatures
# and sign their answers: Alipay (alipay.trade.refund, the refund query),
# WeChat Pay v3 (POST and GET /v3/refund/domestic/refunds, the encrypted
# REFUND.SUCCESS notification at the edge), UnionPay (backTransReq.do,
# queryTrans.do, the txnType 04 back notification at the edge), the sandbox,
# and bank counters (the bank's own API; the plugin watches the age). For
# every channel: success, a definite refusal, a lost answer then the query,
# duplicates moving the state once, forged and hostile answers changing
# nothing; a refund that cannot complete is dead-lettered and stays
# REFUNDING until `refund retry`; an anomaly's refund is carried the same
# way.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Channels;

my $BANK = 'BANK-TEST-001';

# deadlines stretch under valgrind (make valgrind)
my $SLOW = $ENV{GOV_PAY_VALGRIND} ? 4 : 1;

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
$t->new_unit_secret($BANK);
my $reg = $t->default_registry;
push @{ $reg->{units} }, { id => $BANK, name => '测试银行', scheme => 'GOVPAY-HMAC-SHA256',
                           secret_file => "keys/$BANK.secret", kind => 'bank' };
$t->write_registry($reg);

my %d = $c->directives;
$t->start_redis;
$t->start_nginx(<<'EOF', directives => \%d);
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /bank/v1/ { gov_pay_bank; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location = /notify/alipay { gov_pay_notify alipay; }
        location = /notify/wechat { gov_pay_notify wechat; }
        location = /notify/unionpay { gov_pay_notify unionpay; }
    }
EOF

my $port = $c->start_refund_daemon;
my $conf = $c->refund_config($port, bank_timeout_s => 2);
$t->start_worker(plugins => { refund => $conf });
my $r = $t->redis;

###############################################################################
# helpers

my %trade;    # payment code -> the channel's trade number
my %rid;      # payment code -> the notice's request_id

# a notice paid through a channel
sub paid {
    my ($channel, $amount) = @_;
    my $request_id = 'RC-' . random_string(12);
    my $n = $t->new_notice(amount => $amount, request_id => $request_id);
    $rid{ $n->{payment_code} } = $request_id;
    my $no = '2026' . random_string(24, '0123456789');
    my $res;
    if ($channel eq 'alipay') {
        $res = $c->alipay_notify($c->alipay_fields($n, trade_no => $no));
        die 'alipay payment: ' . $res->describe unless $res->body eq 'success';
    } elsif ($channel eq 'wechat') {
        $res = $c->wechat_notify($c->wechat_body($c->wechat_transaction($n, transaction_id => $no)));
        die 'wechat payment: ' . $res->describe unless $res->status == 204;
    } elsif ($channel eq 'unionpay') {
        $no = 'UPQ' . random_string(18, '0123456789');
        $res = $c->unionpay_notify($c->unionpay_fields($n, queryId => $no));
        die 'unionpay payment: ' . $res->describe unless $res->body eq 'ok';
    } elsif ($channel eq 'sandbox') {
        $no = 'SBX' . random_string(20, '0123456789');
        $res = $t->sandbox_pay($n, trade_no => $no);
        die 'sandbox payment: ' . $res->describe unless $res->body eq 'success';
    } else {
        $no = 'BK-' . random_string(10);
        $res = $t->signed_request(POST => '/bank/v1/payments', {
            payment_code => $n->{payment_code}, amount => $amount, bank_trade_no => $no,
            paid_at => epoch_to_rfc3339(int(time) - 60) }, unit => $BANK);
        die 'bank payment: ' . $res->describe unless ($res->json // {})->{result} eq 'PAID';
    }
    $trade{ $n->{payment_code} } = $no;
    return $n;
}

# a unit's refund of a paid notice, with the stand-in's behaviour for it set
# before the worker sees it; returns its id
sub ask {
    my ($n, $amount, $behaviour, %o) = @_;
    my $code = $n->{payment_code};
    my $nn = sprintf '%02d', 1 + scalar @{ ($t->get_notice($code)->json // {})->{refunds} // [] };
    $c->refund_behaviour("${code}R$nn" => $behaviour) if defined $behaviour;
    my $res = $t->signed_request(POST => "/v1/notices/$code/refunds", {
        request_id => 'RF-' . random_string(10), amount => $amount,
        reason => $o{reason} // '退学退费' });
    die 'refund: ' . $res->describe unless $res->status == 201;
    my $id = $res->json->{refund_id};
    die "refund id $id, expected ${code}R$nn" unless $id eq "${code}R$nn";
    return $id;
}

# the notice key of a payment code
sub stored_key {
    my ($code) = @_;
    my ($k) = $t->stored_notice($rid{$code});
    return $k;
}

# the refund as the unit reads it (GET /v1/notices/{code}/refunds/{id})
sub refund_of {
    my ($id) = @_;
    my $code = substr $id, 0, 20;
    my $res = $t->signed_request(GET => "/v1/notices/$code/refunds/$id", undef);
    return $res->status == 200 ? $res->json : undef;
}

# waits until the refund has ended; returns it
sub ended {
    my ($id, $timeout) = @_;
    return wait_for(sub { my $x = refund_of($id); $x && $x->{status} ne 'REFUNDING' ? $x : 0 },
                    ($timeout // 20) * $SLOW, "refund $id to end") // refund_of($id) // {};
}

sub events_of {
    my ($id) = @_;
    return map { $_->{fields} } grep { ($_->{fields}{refund_id} // '') eq $id }
        $t->stream_entries('refunds');
}

sub endings { my ($id) = @_; return map { $_->{type} } grep { $_->{type} ne 'refund.requested' } events_of($id) }

sub dead_letters {
    my ($id) = @_;
    return map { $_->{fields} } grep { ($_->{fields}{plugin} // '') eq 'refund'
                                        && ($_->{fields}{refund_id} // '') eq $id }
        $t->stream_entries('dead');
}

sub kinds { my ($id) = @_; return join ',', map { $_->{kind} } $c->refund_requests($id) }

sub requests { my ($id, $kind) = @_; return grep { $_->{kind} eq $kind } $c->refund_requests($id) }

sub worker_says { my ($re) = @_; return $t->worker_log =~ $re }

sub command {
    my (@args) = @_;
    my ($status, $out, $err) = $t->worker_command('w1', {}, @args);
    return ($status >> 8, $out, $err);
}

###############################################################################
# Alipay

my %ali;
{
    my $n = paid('alipay', 10000);
    $ali{ok} = ask($n, 3000, 'succeed', reason => '退学退费（部分）');
    $ali{refuse} = ask(paid('alipay', 5000), 5000, 'refuse:ACQ.TRADE_HAS_CLOSE');
    $ali{drop} = ask(paid('alipay', 5000), 2000, 'drop_once');
    $ali{timeout} = ask(paid('alipay', 5000), 2000, 'timeout_once');
    $ali{'5xx'} = ask(paid('alipay', 5000), 2000, '5xx_once');
    $ali{fund_n} = ask(paid('alipay', 5000), 2000, 'fund_change_n');
    $ali{$_} = ask(paid('alipay', 5000), 2000, "${_}_once") for qw(badsig garbage huge other_id);
    $ali{mismatch} = ask(paid('alipay', 5000), 3000, 'fund_change_n+amount:2999');
    $ali{system} = ask(paid('alipay', 5000), 1000, 'refuse:ACQ.SYSTEM_ERROR');
}

my $x = ended($ali{ok});
is $x->{status}, 'SUCCEEDED', 'alipay: a refund the gateway makes SUCCEEDED';
my @q = $c->refund_requests($ali{ok});
is kinds($ali{ok}), 'refund', 'alipay: one alipay.trade.refund, no query';
ok $q[0]{signature_ok}, 'alipay: the request carries our RSA2 signature over every parameter';
is $q[0]{amount}, 3000, 'alipay: refund_amount is the refund in yuan (30.00)';
is $q[0]{trade_no}, $trade{ substr $ali{ok}, 0, 20 }, "alipay: trade_no is the payment's";
is $q[0]{reason}, '退学退费（部分）', 'alipay: refund_reason is the unit\'s reason';
is_deeply [ endings($ali{ok}) ], [ 'refund.succeeded' ], 'alipay: one refund.succeeded';
my $j = $t->get_notice(substr $ali{ok}, 0, 20)->json;
is $j->{status}, 'PARTIALLY_REFUNDED', 'alipay: the notice is PARTIALLY_REFUNDED';
is $j->{refunded_amount}, 3000, 'alipay: 3000 fen refunded';

$x = ended($ali{refuse});
is $x->{status}, 'FAILED', 'alipay: ACQ.TRADE_HAS_CLOSE is a definite refusal: FAILED';
is $x->{error}, 'ACQ.TRADE_HAS_CLOSE', 'alipay: the error is the sub_code';
is kinds($ali{refuse}), 'refund', 'alipay: a definite refusal is not tried again';
is $c->refunds_made($ali{refuse}), 0, 'alipay: nothing was refunded';
is $t->get_notice(substr $ali{refuse}, 0, 20)->json->{status}, 'PAID',
    'alipay: the notice is PAID again';
is_deeply [ endings($ali{refuse}) ], [ 'refund.failed' ], 'alipay: one refund.failed';

for my $case ([ drop => 'the answer is lost (connection closed)' ],
              [ timeout => 'the answer times out' ]) {
    my ($k, $what) = @$case;
    $x = ended($ali{$k}, 25);
    is $x->{status}, 'SUCCEEDED', "alipay: $what: the refund query decides, SUCCEEDED";
    is kinds($ali{$k}), 'refund,query', "alipay: $what: the next try asks before sending again";
    is $c->refunds_made($ali{$k}), 1, "alipay: $what: the money went back once";
    is_deeply [ endings($ali{$k}) ], [ 'refund.succeeded' ], "alipay: $what: one refund.succeeded";
}

$x = ended($ali{'5xx'});
is $x->{status}, 'SUCCEEDED', 'alipay: a 502 then the query (not refunded) then the refund again: SUCCEEDED';
is kinds($ali{'5xx'}), 'refund,query,refund', 'alipay: asked before it was sent again';
is $c->refunds_made($ali{'5xx'}), 1, 'alipay: refunded once';

$x = ended($ali{fund_n});
is $x->{status}, 'SUCCEEDED', 'alipay: fund_change N, then REFUND_SUCCESS in the query: SUCCEEDED';
is kinds($ali{fund_n}), 'refund,query', 'alipay: fund_change N is asked about';

for my $k (qw(badsig garbage huge other_id)) {
    $x = ended($ali{$k});
    is $x->{status}, 'SUCCEEDED', "alipay: a $k answer is not believed; the query decides";
    is $c->refunds_made($ali{$k}), 1, "alipay: $k: refunded once";
}
ok worker_says(qr/\Q$ali{badsig}\E alipay refund: try 1 failed \(answer not verified \(sign\)\)/),
    'alipay: an answer with a bad sign is logged as not verified';
ok worker_says(qr/\Q$ali{huge}\E alipay refund: try 1 failed \(answer larger than 65536 bytes\)/),
    'alipay: a huge answer is refused';
ok worker_says(qr/\Q$ali{other_id}\E alipay refund: try 1 failed \(answer for another out_trade_no\)/),
    'alipay: an answer about another trade is refused';

###############################################################################
# WeChat Pay

my %wx;
{
    $wx{ok} = ask(paid('wechat', 8000), 3000, 'succeed');
    $wx{refuse} = ask(paid('wechat', 5000), 5000, 'refuse:USER_ACCOUNT_ABNORMAL');
    $wx{notify} = ask(paid('wechat', 5000), 2000, 'processing_notify');
    $wx{notify2} = ask(paid('wechat', 5000), 2000, 'processing_notify_twice');
    $wx{processing} = ask(paid('wechat', 5000), 2000, 'processing');
    $wx{closed} = ask(paid('wechat', 5000), 2000, 'processing_closed');
    $wx{'5xx'} = ask(paid('wechat', 5000), 2000, '5xx_once');
    $wx{drop} = ask(paid('wechat', 5000), 2000, 'drop_once');
    $wx{$_} = ask(paid('wechat', 5000), 2000, "${_}_once") for qw(badsig stale other_id garbage);
    $wx{forged} = ask(paid('wechat', 5000), 2000, 'processing_forever');
    $wx{mismatch} = ask(paid('wechat', 5000), 2000, 'amount:1999');
    $wx{busy} = ask(paid('wechat', 5000), 1000, 'refuse:NOT_ENOUGH');
}

# the forged notification first, while the refund is PROCESSING
{
    my $code = substr $wx{forged}, 0, 20;
    my $n = { payment_code => $code, amount => 5000 };
    ok wait_for(sub { requests($wx{forged}, 'refund') }, 10 * $SLOW, 'the refund to reach WeChat Pay'),
        'wechat: the refund reached the stand-in';
    my $res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($n, $wx{forged}, refund => 2000)),
                                key => $c->priv('wechat_merchant'));
    isnt $res->status, 204, 'wechat: a REFUND.SUCCESS notification signed with another key is refused';
    $res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($n, $wx{forged}, refund => 2000),
                                                    apiv3_key => random_string(32)));
    isnt $res->status, 204, 'wechat: one encrypted with another key is refused';
    is refund_of($wx{forged})->{status}, 'REFUNDING', 'wechat: forged notifications change nothing';
    is_deeply [ endings($wx{forged}) ], [], 'wechat: and add no event';
    $res = $c->wechat_notify($c->wechat_refund_body($c->wechat_refund($n, $wx{forged}, refund => 2000)));
    is $res->status, 204, 'wechat: the genuine notification is acknowledged';
    is ended($wx{forged})->{status}, 'SUCCEEDED', 'wechat: and ends the refund';
    ok wait_for(sub { !defined $r->zscore("{gp" . shard_of_id($wx{forged}) . "}:refund:queue", $wx{forged}) },
                10 * $SLOW, 'the refund out of the queue'), 'wechat: the plugin stops asking about it';
}

sub shard_of_id {
    my ($id) = @_;
    my ($ev) = grep { ($_->{fields}{refund_id} // '') eq $id } $t->stream_entries('refunds');
    return $ev ? $ev->{shard} : -1;
}

$x = ended($wx{ok});
is $x->{status}, 'SUCCEEDED', 'wechat: SUCCESS in the answer: SUCCEEDED';
@q = $c->refund_requests($wx{ok});
is kinds($wx{ok}), 'refund', 'wechat: one POST /v3/refund/domestic/refunds';
ok $q[0]{signature_ok}, 'wechat: signed by the merchant key (WECHATPAY2-SHA256-RSA2048)';
is $q[0]{amount}, 3000, 'wechat: amount.refund in fen';
is $q[0]{total}, 8000, 'wechat: amount.total is the payment\'s';
is $q[0]{currency}, 'CNY', 'wechat: currency CNY';
is $q[0]{trade_no}, $trade{ substr $wx{ok}, 0, 20 }, 'wechat: transaction_id is the payment\'s';
is $q[0]{out_trade_no}, substr($wx{ok}, 0, 20), 'wechat: out_trade_no is the payment code';
is $q[0]{notify_url}, $t->public_url . '/notify/wechat', 'wechat: notify_url is the edge\'s /notify/wechat';
like $x->{channel_refund_no}, qr/^50\d{27}$/, 'wechat: WeChat\'s refund_id is kept';

$x = ended($wx{refuse});
is $x->{status}, 'FAILED', 'wechat: USER_ACCOUNT_ABNORMAL (403) is a definite refusal';
is $x->{error}, 'USER_ACCOUNT_ABNORMAL', 'wechat: with the code';
is kinds($wx{refuse}), 'refund', 'wechat: not tried again';

$x = ended($wx{notify});
is $x->{status}, 'SUCCEEDED', 'wechat: PROCESSING, then REFUND.SUCCESS at the edge: SUCCEEDED';
my ($req) = requests($wx{notify}, 'refund');
is_deeply $req->{notified}, [ 204 ], 'wechat: the edge acknowledged the notification with 204';
is_deeply [ endings($wx{notify}) ], [ 'refund.succeeded' ], 'wechat: one refund.succeeded';

$x = ended($wx{notify2});
($req) = requests($wx{notify2}, 'refund');
is_deeply $req->{notified}, [ 204, 204 ], 'wechat: a repeated notification is acknowledged too';
is_deeply [ endings($wx{notify2}) ], [ 'refund.succeeded' ],
    'wechat: the duplicate notification moves the state once';

$x = ended($wx{processing});
is $x->{status}, 'SUCCEEDED', 'wechat: PROCESSING and no notification: the refund query decides';
is kinds($wx{processing}), 'refund,query', 'wechat: GET /v3/refund/domestic/refunds/{out_refund_no}';

$x = ended($wx{closed});
is $x->{status}, 'FAILED', 'wechat: CLOSED in the query: FAILED';
is $x->{error}, 'CLOSED', 'wechat: error CLOSED';

$x = ended($wx{'5xx'});
is $x->{status}, 'SUCCEEDED', 'wechat: 502, the query (404 RESOURCE_NOT_EXISTS), the refund again: SUCCEEDED';
is kinds($wx{'5xx'}), 'refund,query,refund', 'wechat: asked before sending again';
is $c->refunds_made($wx{'5xx'}), 1, 'wechat: refunded once';

$x = ended($wx{drop}, 25);
is $x->{status}, 'SUCCEEDED', 'wechat: a lost answer: the query decides';
is kinds($wx{drop}), 'refund,query', 'wechat: no second refund request';

for my $k (qw(badsig stale other_id garbage)) {
    $x = ended($wx{$k});
    is $x->{status}, 'SUCCEEDED', "wechat: a $k answer is not believed; the query decides";
    is $c->refunds_made($wx{$k}), 1, "wechat: $k: refunded once";
}

###############################################################################
# UnionPay

my %up;
{
    $up{ok} = ask(paid('unionpay', 6000), 2500, 'succeed');
    $up{refuse} = ask(paid('unionpay', 5000), 5000, 'refuse:35');
    $up{accepted} = ask(paid('unionpay', 5000), 2000, 'accepted');
    $up{drop} = ask(paid('unionpay', 5000), 2000, 'drop_once');
    $up{'5xx'} = ask(paid('unionpay', 5000), 2000, '5xx_once');
    $up{twice} = ask(paid('unionpay', 5000), 2000, 'notify_twice');
    $up{$_} = ask(paid('unionpay', 5000), 2000, "${_}_once") for qw(badsig garbage other_id);
    $up{forged} = ask(paid('unionpay', 5000), 2000, 'pending');
}

{
    my $code = substr $up{forged}, 0, 20;
    ok wait_for(sub { requests($up{forged}, 'refund') }, 10 * $SLOW, 'the refund to reach UnionPay'),
        'unionpay: the refund reached the stand-in';
    my $n = { payment_code => $code, amount => 5000 };
    my %f = (txnType => '04', txnSubType => '00', orderId => $up{forged}, txnAmt => 2000,
             queryId => 'UPR' . random_string(18, '0123456789'));
    my $res = $c->unionpay_notify($c->unionpay_fields($n, %f), key => $c->priv('unionpay_sign'));
    is $res->status, 400, 'unionpay: a forged refund back notification is refused';
    is refund_of($up{forged})->{status}, 'REFUNDING', 'unionpay: and changes nothing';
    $res = $c->unionpay_notify($c->unionpay_fields($n, %f));
    is $res->body, 'ok', 'unionpay: the genuine back notification is acknowledged';
    is ended($up{forged})->{status}, 'SUCCEEDED', 'unionpay: and ends the refund';
}

$x = ended($up{ok});
is $x->{status}, 'SUCCEEDED', 'unionpay: respCode 00, then the back notification (txnType 04) at the edge: SUCCEEDED';
@q = requests($up{ok}, 'refund');
is scalar @q, 1, 'unionpay: one backTransReq.do';
ok $q[0]{signature_ok}, 'unionpay: signed with signMethod 01 by our signing key';
is $q[0]{amount}, 2500, 'unionpay: txnAmt in fen';
is $q[0]{trade_no}, $trade{ substr $up{ok}, 0, 20 }, 'unionpay: origQryId is the payment\'s queryId';
is $q[0]{notify_url}, $t->public_url . '/notify/unionpay', 'unionpay: backUrl is the edge\'s';
like $q[0]{txn_time}, qr/^20\d{12}$/, 'unionpay: txnTime is yyyyMMddHHmmss';
like $x->{channel_refund_no}, qr/^UPR\d{18}$/, 'unionpay: UnionPay\'s queryId of the refund is kept';
is_deeply $q[0]{notified}, [ 200 ], 'unionpay: the edge acknowledged the back notification (200 ok)';

$x = ended($up{refuse});
is $x->{status}, 'FAILED', 'unionpay: respCode 35 is a definite refusal';
is $x->{error}, 'respCode 35', 'unionpay: with the respCode';

$x = ended($up{accepted});
is $x->{status}, 'SUCCEEDED', 'unionpay: accepted, no notification: queryTrans.do (origRespCode 00) decides';
like kinds($up{accepted}), qr/^refund,query/, 'unionpay: the query after the wait';

$x = ended($up{drop}, 25);
is $x->{status}, 'SUCCEEDED', 'unionpay: a lost answer: the query decides';
is kinds($up{drop}), 'refund,query', 'unionpay: no second backTransReq.do';

$x = ended($up{'5xx'});
is $x->{status}, 'SUCCEEDED', 'unionpay: 502, the query (respCode 34), the refund again: SUCCEEDED';
@q = requests($up{'5xx'}, 'refund');
is scalar @q, 2, 'unionpay: sent again after the query found nothing';
is $q[1]{txn_time}, $q[0]{txn_time}, 'unionpay: with the same orderId and txnTime (one transaction to UnionPay)';
is $c->refunds_made($up{'5xx'}), 1, 'unionpay: refunded once';

$x = ended($up{twice});
is_deeply [ endings($up{twice}) ], [ 'refund.succeeded' ],
    'unionpay: a repeated back notification moves the state once';

for my $k (qw(badsig garbage other_id)) {
    $x = ended($up{$k}, 25);
    is $x->{status}, 'SUCCEEDED', "unionpay: a $k answer is not believed; the query decides";
    is $c->refunds_made($up{$k}), 1, "unionpay: $k: refunded once";
}

###############################################################################
# sandbox and bank counters

my $sb = ask(paid('sandbox', 4000), 4000);
$x = ended($sb);
is $x->{status}, 'SUCCEEDED', 'sandbox: refunded at once';
is $x->{channel_refund_no}, "SANDBOX-$sb", 'sandbox: its refund number';
is $t->get_notice(substr $sb, 0, 20)->json->{status}, 'REFUNDED', 'sandbox: a full refund: REFUNDED';
is scalar($c->refund_requests($sb)), 0, 'sandbox: no channel is called';

my $bk = ask(paid('bank', 3000), 1000);
ok wait_for(sub { dead_letters($bk) }, 15 * $SLOW, 'the bank refund to be dead-lettered'),
    'bank: a refund the bank has not carried out after bank_timeout_s goes to ops';
my ($dl) = dead_letters($bk);
like $dl->{error}, qr/the bank has not carried out the refund within 2 s/, 'bank: saying so';
is refund_of($bk)->{status}, 'REFUNDING', 'bank: the refund stays REFUNDING';
my $list = $t->signed_request(GET => '/bank/v1/refunds', undef, unit => $BANK)->json;
ok((grep { $_->{refund_id} eq $bk } @{ $list->{refunds} // [] }), 'bank: and is still offered to the bank');
my $res = $t->signed_request(POST => "/bank/v1/refunds/$bk", { result => 'SUCCEEDED',
    bank_refund_no => 'BR-1', refunded_at => epoch_to_rfc3339(int(time) - 5) }, unit => $BANK);
is $res->json->{result}, 'SUCCEEDED', 'bank: the bank reports it done';
is refund_of($bk)->{status}, 'SUCCEEDED', 'bank: SUCCEEDED';
is scalar($c->refund_requests($bk)), 0, 'bank: no channel is called';

###############################################################################
# what cannot complete goes to ops, and `refund retry` finishes it

ok wait_for(sub { dead_letters($ali{mismatch}) }, 15 * $SLOW, 'the mismatch to be dead-lettered'),
    'alipay: a query stating another amount is dead-lettered';
is refund_of($ali{mismatch})->{status}, 'REFUNDING', 'alipay: the refund stays REFUNDING';
($dl) = dead_letters($ali{mismatch});
is $dl->{error}, 'the channel states 2999 fen for a refund of 3000 fen', 'alipay: the dead letter says why';
is_deeply [ endings($ali{mismatch}) ], [], 'alipay: no event';

ok wait_for(sub { dead_letters($wx{mismatch}) }, 15 * $SLOW, 'the mismatch to be dead-lettered'),
    'wechat: an answer stating another amount is dead-lettered, nothing changes';
is refund_of($wx{mismatch})->{status}, 'REFUNDING', 'wechat: the refund stays REFUNDING';

ok wait_for(sub { dead_letters($ali{system}) }, 20 * $SLOW, 'ACQ.SYSTEM_ERROR to be given up'),
    'alipay: ACQ.SYSTEM_ERROR is transient: tried on the schedule, then dead-lettered';
($dl) = dead_letters($ali{system});
like $dl->{error}, qr/^gave up after 4 tries: alipay 40004 ACQ\.SYSTEM_ERROR$/, 'alipay: with the last error';
is $dl->{channel}, 'alipay', 'the dead letter names the channel';
is $dl->{amount}, 1000, 'and the amount';
is $dl->{stream}, '{gp' . shard_of_id($ali{system}) . '}:refunds', 'and the refunds stream';
is refund_of($ali{system})->{status}, 'REFUNDING', 'alipay: the refund stays REFUNDING for ops';
is scalar(requests($ali{system}, 'refund')), 4, 'alipay: 1 + 3 tries (schedule_s has 3 steps)';

ok wait_for(sub { dead_letters($wx{busy}) }, 20 * $SLOW, 'NOT_ENOUGH to be given up'),
    'wechat: NOT_ENOUGH (the merchant\'s balance) is tried again, then dead-lettered, not FAILED';

my ($rc, $out, $err) = command('refund', 'status');
is $rc, 0, 'refund status exits 0' or diag $err;
like $out, qr/^\Q$ali{system}\E\s+alipay\s+1000 fen\s+dead since \S+\s+gave up after 4 tries/m,
    'refund status lists the dead-lettered refund';
($rc, $out) = command('refund', 'status', '--json');
my $st = json_decode($out) // {};
cmp_ok $st->{dead}, '>=', 4, 'refund status --json counts the dead refunds';
ok((grep { $_->{refund_id} eq $ali{system} } @{ $st->{dead_refunds} // [] }), 'and lists them');

($rc, $out) = command('refund', 'show', $ali{system});
is $rc, 0, 'refund show exits 0';
my $show = json_decode($out) // {};
is $show->{status}, 'REFUNDING', 'refund show: the status';
is $show->{queue}, 'dead', 'refund show: dead-lettered';
is $show->{attempts}, 4, 'refund show: the attempts';
like $show->{last_error}, qr/ACQ\.SYSTEM_ERROR/, 'refund show: the last error';
unlike $out, qr/PRIVATE KEY|\Q$c->{apiv3_key}\E/, 'refund show prints no key';

$c->refund_behaviour($ali{system} => 'succeed');
($rc, $out, $err) = command('refund', 'retry', $ali{system});
is $rc, 0, 'refund retry exits 0' or diag $err;
like $out, qr/queued again \(it was dead-lettered\)/, 'refund retry puts it back in the queue';
is ended($ali{system})->{status}, 'SUCCEEDED', 'the retried refund SUCCEEDED';
is $c->refunds_made($ali{system}), 1, 'refunded once';
($rc, $out) = command('refund', 'show', $ali{system});
is json_decode($out)->{queue}, 'none', 'it is neither queued nor dead any more';

($rc, $out) = command('refund', 'retry', $ali{ok});
like $out, qr/has ended: SUCCEEDED; nothing to retry/, 'refund retry of a finished refund changes nothing';
($rc, undef, $err) = command('refund', 'retry', substr($ali{ok}, 0, 20) . 'R99');
is $rc, 1, 'refund retry of an unknown refund exits 1';
like $err, qr/no such refund/, 'saying so';
($rc, undef, $err) = command('refund', 'retry', 'R01');
is $rc, 1, 'a malformed refund id is refused';
($rc) = command('refund', 'nonsense');
is $rc, 2, 'an unknown refund command is a usage error';

# the bank refund ended after it was dead-lettered: a retry just says so
($rc, $out) = command('refund', 'retry', $bk);
like $out, qr/has ended: SUCCEEDED/, 'a dead-lettered refund that ended at the edge is not retried';
($rc, $out) = command('refund', 'status', '--json');
ok !(grep { $_->{refund_id} eq $bk } @{ (json_decode($out) // {})->{dead_refunds} // [] }),
    'and leaves the dead refunds';

###############################################################################
# an anomaly's refund is carried the same way (its own channel and trade)

{
    my $n = paid('alipay', 5000);
    my $code = $n->{payment_code};
    my $k = stored_key($code);
    my ($shard) = $k =~ /^\{gp(\d+)\}/;
    my $tx = '42' . random_string(26, '0123456789');
    my $id = "${code}R01";
    my $now = int time;
    $r->hset($k, refund_seq => 1, 'r01.amount' => 7000, 'r01.status' => 'REFUNDING',
             'r01.origin' => 'anomaly', 'r01.anomaly_id' => '1700000000000-0',
             'r01.reason' => 'SECOND_PAYMENT', 'r01.channel' => 'wechat',
             'r01.channel_trade_no' => $tx, 'r01.created_at' => $now);
    $r->xadd("{gp$shard}:refunds", '*', type => 'refund.requested', refund_id => $id,
             payment_code => $code, unit => $GovPay::Test::UNIT, notice_key => $k,
             amount => 7000, origin => 'anomaly', channel => 'wechat',
             channel_trade_no => $tx, paid_amount => 5000, created_at => $now);
    $x = ended($id);
    is $x->{status}, 'SUCCEEDED', "anomaly: the second payment's money goes back through its own channel";
    ($req) = requests($id, 'refund');
    is $req->{trade_no}, $tx, "anomaly: transaction_id is the anomaly's trade";
    is $req->{amount}, 7000, 'anomaly: the whole anomalous payment';
    is $req->{total}, 7000, 'anomaly: amount.total is that payment\'s';
    $j = $t->get_notice($code)->json;
    is $j->{refunded_amount} // 0, 0, "anomaly: the notice's own refunded amount is untouched";
    is $j->{status}, 'PAID', 'anomaly: the notice stays PAID';
}

###############################################################################
# a redelivered refund.requested changes nothing; other event types are left

{
    my $id = $ali{ok};
    my ($ev) = grep { ($_->{fields}{refund_id} // '') eq $id && $_->{fields}{type} eq 'refund.requested' }
        $t->stream_entries('refunds');
    $r->xadd("{gp$ev->{shard}}:refunds", '*', %{ $ev->{fields} });
    ok wait_for(sub { worker_says(qr/\Q$id\E already SUCCEEDED/) }, 10 * $SLOW, 'the repeat to be seen'),
        'a repeated refund.requested of a finished refund is acknowledged, nothing queued';
    is kinds($id), 'refund', 'and nothing is sent';
    $r->xadd("{gp$ev->{shard}}:refunds", '*', type => 'refund.requested', refund_id => 'R01',
             payment_code => '1', notice_key => 'x', channel => 'alipay');
    ok wait_for(sub { grep { ($_->{fields}{plugin} // '') eq 'refund' && ($_->{fields}{refund_id} // '') eq 'R01' }
                      $t->stream_entries('dead') }, 10 * $SLOW, 'the malformed event to be dead-lettered'),
        'a malformed refund.requested is dead-lettered by the runtime';
}

###############################################################################
# configuration is strict (gov-pay-worker -t)

for my $bad ([ 'an unknown field', { colour => 'red' }, qr/unknown field "colour"/ ],
             [ 'no code_key', { code_key => undef }, qr/"code_key" is required/ ],
             [ 'an alipay gateway that is no URL',
               { alipay => { %{ $conf->{alipay} }, gateway => 'ftp://x/gateway.do' } },
               qr/alipay: "gateway" must be an http\(s\):\/\/ URL/ ],
             [ 'WeChat Pay without platform keys',
               { wechat => { %{ $conf->{wechat} }, platform_keys => [] } },
               qr/wechat: "platform_keys" must be an array/ ],
             [ 'a UnionPay sign key that is a public key',
               { unionpay => { %{ $conf->{unionpay} }, sign_key => $conf->{unionpay}{verify_key} } },
               qr/unionpay: / ],
             [ 'an empty schedule', { schedule_s => [] }, qr/"schedule_s" must be an array of 1 to 64/ ],
             [ 'sandbox not a boolean', { sandbox => 'yes' }, qr/"sandbox" must be true or false/ ]) {
    my ($what, $o, $re) = @$bad;
    my %cf = (%$conf, %$o);
    delete $cf{$_} for grep { !defined $cf{$_} } keys %cf;
    $t->write_worker_config('bad', plugins => { refund => \%cf });
    my ($s, undef, $e) = $t->worker_command('bad', {}, '-t');
    is $s >> 8, 1, "-t refuses $what";
    like $e, $re, "naming it ($what)";
}
$t->write_worker_config('bad', plugins => { refund => $conf });
my ($s, undef, $e) = $t->worker_command('bad', { GOV_PAY_REFUND_FAULT => 'sometimes' }, '-t');
is $s >> 8, 1, 'an unknown GOV_PAY_REFUND_FAULT is refused';
like $e, qr/unknown GOV_PAY_REFUND_FAULT "sometimes"/, 'naming it';

unlike $t->worker_log, qr/BEGIN|PRIVATE|\Q$c->{apiv3_key}\E/, 'the worker logs no key';

$t->stop_worker;
$t->done_testing;
