#!/usr/bin/perl

# A channel's trade number pays one notice, ever (docs/internals.md, "Trade
# index"): on every channel, a trade number that settled notice A is never
# taken for notice B (bank: DUPLICATE, nothing changes; the other channels:
# recorded as anomaly TRADE_NO_REUSED on B, acknowledged with the channel's
# success reply, B stays unpaid); a claim left behind by a crash before the
# settle is finished by the channel's retry; a claim made for an unknown
# notice is given back, so the corrected callback settles.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA qw(sha256);
use Encode qw(encode_utf8);
use GovPay::Test;
use GovPay::Channels;

my $BANK = 'BANK-TEST-001';

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

my $r = $t->redis;

sub status_of {
    my ($code) = @_;
    my $g = $t->get_notice($code);
    return $g->status == 200 ? $g->json->{status} : 'HTTP ' . $g->status;
}

sub anomalies_of {
    my ($code) = @_;
    return grep { $_->{fields}{payment_code} eq $code } $t->stream_entries('anomaly');
}

sub settled_of {
    my ($code) = @_;
    return grep { $_->{fields}{payment_code} eq $code } $t->stream_entries('settled');
}

# the trade index entry: on the shard of (channel, trade number)
sub trade_key {
    my ($channel, $trade_no) = @_;
    return sprintf '{gp%d}:trade:%s:%s', shard_of($channel, $trade_no, $t->shards),
        $channel, $trade_no;
}

# each channel: how to pay a notice with a trade number, and what its
# success reply looks like
my %pay = (
    sandbox => sub {
        my ($n, $no) = @_;
        my $res = $t->sandbox_pay($n, trade_no => $no);
        return ($res->status == 200 && $res->body eq 'success', $res);
    },
    alipay => sub {
        my ($n, $no) = @_;
        my $res = $c->alipay_notify($c->alipay_fields($n, trade_no => $no));
        return ($res->status == 200 && $res->body eq 'success', $res);
    },
    wechat => sub {
        my ($n, $no) = @_;
        my $res = $c->wechat_notify($c->wechat_body(
            $c->wechat_transaction($n, transaction_id => $no)));
        return ($res->status == 204, $res);
    },
    unionpay => sub {
        my ($n, $no) = @_;
        my $res = $c->unionpay_notify($c->unionpay_fields($n, queryId => $no));
        return ($res->status == 200 && $res->body eq 'ok', $res);
    },
);

for my $ch (qw(sandbox alipay wechat unionpay)) {
    my $no = uc($ch) . random_string(16, '0123456789');
    my $a = $t->new_notice(amount => 1000);
    my $b = $t->new_notice(amount => 1000);

    my ($ok, $res) = $pay{$ch}->($a, $no);
    ok $ok, "$ch: trade number $no pays notice A" or diag $res->describe;
    is status_of($a->{payment_code}), 'PAID', "$ch: A is paid";
    is $r->get(trade_key($ch, $no)), $a->{payment_code},
        "$ch: the trade index names A, on the trade number's own shard";

    ($ok, $res) = $pay{$ch}->($b, $no);
    ok $ok, "$ch: the same trade number for notice B is acknowledged as the channel expects"
        or diag $res->describe;
    is status_of($b->{payment_code}), 'UNPAID', "$ch: B is not paid by A's trade number";
    is scalar(settled_of($b->{payment_code})), 0, "$ch: no settled event for B";
    my @an = anomalies_of($b->{payment_code});
    is scalar @an, 1, "$ch: B gets one anomaly entry";
    is $an[0]{fields}{reason}, 'TRADE_NO_REUSED', "$ch: reason TRADE_NO_REUSED";
    is $an[0]{fields}{channel_trade_no}, $no, "$ch: naming the trade number";

    ($ok, $res) = $pay{$ch}->($b, $no);
    ok $ok, "$ch: a retry of that callback is acknowledged again";
    is scalar(anomalies_of($b->{payment_code})), 1, "$ch: and recorded once only";
    is scalar(settled_of($a->{payment_code})), 1, "$ch: A was settled exactly once";

    # a crash between the claim and the settle: the claim is there, the
    # notice is not paid; the channel's retry finishes the job
    my $c2 = $t->new_notice(amount => 1000);
    my $no2 = uc($ch) . random_string(16, '0123456789');
    $r->set(trade_key($ch, $no2), $c2->{payment_code});
    ($ok, $res) = $pay{$ch}->($c2, $no2);
    ok $ok, "$ch: a callback whose trade number was claimed before a crash is acknowledged";
    is status_of($c2->{payment_code}), 'PAID', "$ch: and the notice is settled by the retry";
    is scalar(settled_of($c2->{payment_code})), 1, "$ch: once";
}

###############################################################################
# bank counters: DUPLICATE, nothing changes

sub bank_pay {
    my ($code, $no, %o) = @_;
    return $t->signed_request(POST => '/bank/v1/payments', {
        payment_code => $code, amount => $o{amount} // 1000, bank_trade_no => $no,
        paid_at => epoch_to_rfc3339(int(time) - 60) }, unit => $BANK);
}

my $a = $t->new_notice(amount => 1000);
my $b = $t->new_notice(amount => 1000);
my $res = bank_pay($a->{payment_code}, 'BT-1');
is $res->json->{result}, 'PAID', 'bank: BT-1 pays notice A' or diag $res->describe;
is $r->get(trade_key('bank', "$BANK:BT-1")), $a->{payment_code},
    'bank: the trade index names A under "<bank>:<bank_trade_no>"';

my $before = $t->redis_snapshot;
$res = bank_pay($b->{payment_code}, 'BT-1');
is $res->status, 200, 'bank: the same bank_trade_no for notice B answers 200';
is $res->json->{result}, 'DUPLICATE', 'bank: result DUPLICATE, as docs/channels.md promises';
is $res->json->{reason}, 'BANK_TRADE_NO_USED', 'bank: reason says the number paid another notice';
is status_of($b->{payment_code}), 'UNPAID', 'bank: B is not paid';
my $diff = GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
is join(',', grep { !/:nonce:/ } split /\n/, $diff), '',
    'bank: nothing but nonces changes';
is scalar(anomalies_of($b->{payment_code})), 0, 'bank: and no anomaly is recorded';

# an unknown notice: the claim is given back, the corrected payment settles
my $wrong = random_code();
$res = bank_pay($wrong, 'BT-2');
is $res->status, 404, 'bank: a payment for an unknown code is 404';
ok wait_for(sub { !$r->exists(trade_key('bank', "$BANK:BT-2")) }, 5,
            'the claim given back'), 'bank: the claim made for the unknown code is given back';
$res = bank_pay($b->{payment_code}, 'BT-2');
is $res->json->{result}, 'PAID', 'bank: the corrected payment with the same number settles B';

# the sandbox too: a callback for an unknown notice gives its claim back
my $no = 'SBXBACK' . random_string(10, '0123456789');
$res = $t->sandbox_callback(out_trade_no => $wrong, trade_no => $no, total_fen => 1000,
                            trade_status => 'SUCCESS', paid_at => int(time));
is $res->status, 404, 'sandbox: a callback for an unknown notice is refused';
ok wait_for(sub { !$r->exists(trade_key('sandbox', $no)) }, 5, 'the claim given back'),
    'sandbox: its claim is given back';

# the claims expire with the retention
my $ttl = $r->ttl(trade_key('bank', "$BANK:BT-1"));
ok $ttl > 399 * 86400 && $ttl <= 400 * 86400,
    'a claim lives as long as the notices are kept (gov_pay_retention, 400 days)'
    or diag "ttl $ttl";

$t->check_error_log;

done_testing;
