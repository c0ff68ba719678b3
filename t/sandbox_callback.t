#!/usr/bin/perl

# Channel callbacks, sandbox channel (API.md, "Channel callbacks"): verify
# first, settle atomically (UNPAID -> PAID plus exactly one settled event),
# duplicates, anomalies (wrong amount, second payment, not payable), refusals.

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
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $r = $t->redis;

sub notice_of {
    my ($code) = @_;
    my $g = $t->get_notice($code);
    return $g->status == 200 ? $g->json : { http => $g->describe };
}

sub settled { $t->stream_entries('settled') }
sub anomalies { $t->stream_entries('anomaly') }

###############################################################################
# a valid callback settles the notice once

my $body = $t->notice_body(amount => 125000);
my $n = $t->signed_request(POST => '/v1/notices', $body)->json
    or BAIL_OUT('cannot create a notice');
my $code = $n->{payment_code};
my ($nkey) = $t->stored_notice($body->{request_id});

my $paid_at = int(time) - 5;
my %cb = (out_trade_no => $code, trade_no => 'SBX20260001', total_fen => 125000,
          trade_status => 'SUCCESS', paid_at => $paid_at);

my $res = $t->sandbox_callback(%cb);
is $res->status, 200, 'valid sandbox callback answers 200' or diag $res->describe;
is $res->body, 'success', 'valid sandbox callback answers success';

my $g = notice_of($code);
is $g->{status}, 'PAID', 'notice is PAID after the callback';
is ref $g->{payment}, 'HASH', 'paid notice has a payment';
is $g->{payment}{channel}, 'sandbox', 'payment channel is sandbox';
is $g->{payment}{channel_trade_no}, 'SBX20260001', 'payment has the channel trade number';
is $g->{payment}{amount}, 125000, 'payment amount is in fen';
is $g->{payment}{paid_at}, epoch_to_rfc3339($paid_at),
    'payment paid_at is the callback time in RFC 3339 +08:00';

my @ev = settled();
is scalar @ev, 1, 'exactly one settled event';
my $e = $ev[0] // { fields => {}, order => [] };
my ($shard) = ($nkey // '') =~ /^\{gp(\d+)\}/;
is $e->{stream}, "{gp" . ($shard // 'X') . "}:settled",
    "the event is on the notice's shard stream";
is_deeply $e->{order}, [qw(type payment_code unit item_code amount channel
                           channel_trade_no paid_at notice_key)],
    'settled event has the documented fields in order';
is_deeply $e->{fields}, {
    type => 'notice.paid', payment_code => $code, unit => '330100-TEST-001',
    item_code => '103001', amount => '125000', channel => 'sandbox',
    channel_trade_no => 'SBX20260001', paid_at => $paid_at, notice_key => $nkey,
}, 'settled event carries the payment';
my $id_no = $body->{payer}{id_no};
unlike join(' ', %{ $e->{fields} }), qr/张三|\Q$id_no\E/,
    'settled event holds no personal data';

# duplicate
my $snap = $t->redis_snapshot;
$res = $t->sandbox_callback(%cb);
is $res->status, 200, 'duplicate callback answers 200';
is $res->body, 'success', 'duplicate callback answers success';
is scalar(settled()), 1, 'duplicate callback adds no second event';
is scalar(anomalies()), 0, 'duplicate callback is no anomaly';
my $diff = GovPay::Test->snapshot_diff($snap, $t->redis_snapshot);
is $diff, '', 'duplicate callback changes nothing in Redis';

# a second payment with another trade number
$res = $t->sandbox_callback(%cb, trade_no => 'SBX20260002');
is $res->status, 200, 'second payment answers 200';
is $res->body, 'success', 'second payment answers success (the money has moved)';
$g = notice_of($code);
is $g->{payment}{channel_trade_no}, 'SBX20260001', 'notice keeps the first trade number';
is scalar(settled()), 1, 'second payment adds no settled event';
my @an = anomalies();
is scalar @an, 1, 'second payment is recorded on the anomaly stream';
is $an[0] && $an[0]{fields}{reason}, 'SECOND_PAYMENT', 'anomaly reason is SECOND_PAYMENT';
ok $an[0] && grep({ $_ eq 'SBX20260002' } values %{ $an[0]{fields} }),
    'anomaly records the second trade number';

###############################################################################
# refused callbacks change nothing

sub refused {
    my ($name, $status, %fields) = @_;
    my $before = $t->redis_snapshot;
    my $res = $t->sandbox_callback(%fields);
    is $res->status, $status, "$name answers $status" or diag $res->describe;
    is $res->body, 'fail', "$name answers fail";
    my $diff = GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
    is $diff, '', "$name changes nothing in Redis";
}

my $n2 = $t->new_notice(amount => 5000);
my %cb2 = (out_trade_no => $n2->{payment_code}, trade_no => 'SBX3', total_fen => 5000,
           trade_status => 'SUCCESS', paid_at => int(time));

refused('callback with a bad signature', 400, %cb2, sign => 'ab' x 32);
refused('callback signed with another key', 400, %cb2,
    sign => Digest::SHA::hmac_sha256_hex('out_trade_no=x', 'wrong key'));
refused('callback without sign', 400, %cb2, sign => '');
refused('callback whose amount was changed after signing', 400,
    %cb2, total_fen => 1, sign_fields => { %cb2 });
refused('callback for an unknown order', 404, %cb2, out_trade_no => random_code());
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'refused callbacks leave the notice UNPAID';

###############################################################################
# trade_status other than SUCCESS is acknowledged, nothing settles

$res = $t->sandbox_callback(%cb2, trade_status => 'CLOSED');
is $res->status, 200, 'callback with trade_status CLOSED answers 200';
is $res->body, 'success', 'callback with trade_status CLOSED answers success';
is notice_of($n2->{payment_code})->{status}, 'UNPAID', 'trade_status CLOSED does not settle';
is scalar(settled()), 1, 'trade_status CLOSED adds no settled event';

###############################################################################
# wrong amount with a valid signature: anomaly, notice untouched

$res = $t->sandbox_callback(%cb2, trade_no => 'SBX4', total_fen => 4999);
is $res->status, 200, 'callback with a wrong amount answers 200';
is $res->body, 'success', 'callback with a wrong amount answers success';
$g = notice_of($n2->{payment_code});
is $g->{status}, 'UNPAID', 'wrong amount leaves the notice UNPAID';
ok !$g->{payment}, 'wrong amount records no payment on the notice';
is scalar(settled()), 1, 'wrong amount adds no settled event';
@an = grep { ($_->{fields}{payment_code} // '') eq $n2->{payment_code}
             || grep { $_ eq 'SBX4' } values %{ $_->{fields} } } anomalies();
is scalar @an, 1, 'wrong amount is recorded on the anomaly stream';
is $an[0] && $an[0]{fields}{reason}, 'AMOUNT_MISMATCH', 'anomaly reason is AMOUNT_MISMATCH';

# the right amount still settles afterwards
$res = $t->sandbox_callback(%cb2, trade_no => 'SBX5');
is $res->body, 'success', 'the right amount after a wrong one answers success';
is notice_of($n2->{payment_code})->{status}, 'PAID', 'the right amount then settles the notice';
is scalar(settled()), 2, 'and adds its settled event';

###############################################################################
# a payment after due_at is an anomaly (NOT_PAYABLE)

my $n3 = $t->new_notice(amount => 300, due_at => epoch_to_rfc3339(int(time) + 2));
ok wait_for(sub { notice_of($n3->{payment_code})->{status} eq 'EXPIRED' }, 6,
            'notice to expire'), 'notice expires';
$res = $t->sandbox_callback(out_trade_no => $n3->{payment_code}, trade_no => 'SBX6',
    total_fen => 300, trade_status => 'SUCCESS', paid_at => int(time));
is $res->body, 'success', 'payment on an expired notice answers success';
is notice_of($n3->{payment_code})->{status}, 'EXPIRED', 'expired notice stays EXPIRED';
@an = grep { grep { $_ eq 'SBX6' } values %{ $_->{fields} } } anomalies();
is $an[0] && $an[0]{fields}{reason}, 'NOT_PAYABLE', 'payment on an expired notice is NOT_PAYABLE';
is scalar(settled()), 2, 'payment on an expired notice adds no settled event';

###############################################################################

$t->check_error_log;

done_testing;
