#!/usr/bin/perl

# A worker killed while it carries a refund neither refunds twice nor forgets
# the refund (docs/internals.md, "Refund plugin", crashes):
# GOV_PAY_REFUND_FAULT=after_answer makes the worker _exit(137) right after
# the channel's answer to the refund request arrived and before anything is
# recorded; before_send right after the claim, before the request. The
# restarted worker (or another worker process, once the dead one's lease has
# run out) asks the channel first and records the outcome once. Then a
# SIGKILL at a random moment of a burst. The stand-in gateways count the
# refunds they made: at most one per refund, exactly one for those that
# succeeded.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use GovPay::Test;
use GovPay::Channels;

# deadlines stretch under valgrind (make valgrind)
my $SLOW = $ENV{GOV_PAY_VALGRIND} ? 4 : 1;

my $t = GovPay::Test->new;
my $c = GovPay::Channels->new($t);
my %d = $c->directives;
$t->start_redis;
$t->start_nginx(<<'EOF', directives => \%d);
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/alipay { gov_pay_notify alipay; }
        location = /notify/wechat { gov_pay_notify wechat; }
        location = /notify/unionpay { gov_pay_notify unionpay; }
    }
EOF

my $port = $c->start_refund_daemon;
my $conf = $c->refund_config($port);

sub paid {
    my ($channel, $amount) = @_;
    my $n = $t->new_notice(amount => $amount);
    my $no = '2026' . random_string(24, '0123456789');
    my $res;
    if ($channel eq 'alipay') {
        $res = $c->alipay_notify($c->alipay_fields($n, trade_no => $no));
        die 'alipay payment: ' . $res->describe unless $res->body eq 'success';
    } elsif ($channel eq 'wechat') {
        $res = $c->wechat_notify($c->wechat_body($c->wechat_transaction($n, transaction_id => $no)));
        die 'wechat payment: ' . $res->describe unless $res->status == 204;
    } else {
        $res = $c->unionpay_notify($c->unionpay_fields($n, queryId => 'UPQ' . random_string(18, '0123456789')));
        die 'unionpay payment: ' . $res->describe unless $res->body eq 'ok';
    }
    return $n;
}

sub ask {
    my ($n, $amount, $behaviour) = @_;
    my $code = $n->{payment_code};
    $c->refund_behaviour("${code}R01" => $behaviour) if defined $behaviour;
    my $res = $t->signed_request(POST => "/v1/notices/$code/refunds", {
        request_id => 'RF-' . random_string(10), amount => $amount, reason => '退费' });
    die 'refund: ' . $res->describe unless $res->status == 201;
    return $res->json->{refund_id};
}

sub refund_of {
    my ($id) = @_;
    my $res = $t->signed_request(GET => '/v1/notices/' . substr($id, 0, 20) . "/refunds/$id", undef);
    return $res->status == 200 ? $res->json : {};
}

sub ended {
    my ($id, $timeout) = @_;
    return wait_for(sub { my $x = refund_of($id); $x->{status} && $x->{status} ne 'REFUNDING' ? $x : 0 },
                    ($timeout // 20) * $SLOW, "refund $id to end") // refund_of($id);
}

sub endings {
    my ($id) = @_;
    return map { $_->{fields}{type} }
        grep { ($_->{fields}{refund_id} // '') eq $id && $_->{fields}{type} ne 'refund.requested' }
        $t->stream_entries('refunds');
}

sub kinds { my ($id) = @_; return join ',', map { $_->{kind} } $c->refund_requests($id) }

###############################################################################
# named crash points, one channel at a time

my %behaviour = (alipay => 'succeed', wechat => 'succeed', unionpay => 'accepted');

for my $channel (qw(alipay wechat unionpay)) {
    for my $fault (qw(after_answer before_send)) {
        my $what = "$channel, $fault";
        $t->start_worker(plugins => { refund => $conf },
                         env => { GOV_PAY_REFUND_FAULT => $fault });
        my $id = ask(paid($channel, 6000), 2500, $behaviour{$channel});
        my $st = $t->wait_worker_exit('w1', 20 * $SLOW);
        is defined $st ? $st >> 8 : undef, 137, "$what: the worker dies at the fault";
        $t->stop_worker('w1');

        is refund_of($id)->{status}, 'REFUNDING', "$what: the refund is still REFUNDING";
        if ($fault eq 'after_answer') {
            is $c->refunds_made($id), 1, "$what: the channel made the refund before the worker died";
        } else {
            is scalar($c->refund_requests($id)), 0, "$what: nothing reached the channel";
        }

        $t->start_worker(plugins => { refund => $conf });
        my $x = ended($id);
        is $x->{status}, 'SUCCEEDED', "$what: the restarted worker finishes the refund";
        like kinds($id), $fault eq 'after_answer' ? qr/^refund,query(,query)*$/
                                                  : qr/^query,refund(,query)*$/,
            "$what: it asked the channel before it would send again";
        is $c->refunds_made($id), 1, "$what: the money went back exactly once";
        is_deeply [ endings($id) ], [ 'refund.succeeded' ], "$what: one refund.succeeded";
        $t->stop_worker('w1');
    }
}

###############################################################################
# another worker process takes over once a dead one's lease has run out

{
    $t->start_worker(name => 'w1', consumer => 'worker-1', plugins => { refund => $conf },
                     env => { GOV_PAY_REFUND_FAULT => 'after_answer' });
    my $id = ask(paid('wechat', 5000), 5000, 'succeed');
    my $st = $t->wait_worker_exit('w1', 20 * $SLOW);
    is defined $st ? $st >> 8 : undef, 137, 'takeover: worker 1 dies after the answer';
    $t->stop_worker('w1');
    $t->start_worker(name => 'w2', consumer => 'worker-2', plugins => { refund => $conf });
    my $x = ended($id);
    is $x->{status}, 'SUCCEEDED', 'takeover: worker 2 finishes the refund after the lease ran out';
    is $c->refunds_made($id), 1, 'takeover: refunded once';
    like $t->worker_log('w2'), qr/\Q$id\E wechat query: succeeded/, 'takeover: worker 2 asked first';
    $t->stop_worker('w2');
}

###############################################################################
# SIGKILL at a random moment of a burst

{
    my @ids;
    $t->start_worker(plugins => { refund => $conf });
    my @plan = (map { [ alipay => $_ ] } qw(succeed drop_once 5xx_once fund_change_n)),
               (map { [ wechat => $_ ] } qw(succeed processing processing_notify 5xx_once)),
               (map { [ unionpay => $_ ] } qw(succeed accepted drop_once 5xx_once));
    for my $p (@plan) {
        push @ids, ask(paid($p->[0], 3000), 3000, $p->[1]);
    }
    sleep 0.2 + rand(1.5);
    $t->kill_worker('KILL');
    $t->start_worker(plugins => { refund => $conf });

    my @ended = map { ended($_, 30)->{status} // 'none' } @ids;
    is_deeply \@ended, [ ('SUCCEEDED') x @ids ], 'burst: every refund SUCCEEDED after the SIGKILL';
    is_deeply [ map { $c->refunds_made($_) } @ids ], [ (1) x @ids ],
        'burst: each refunded exactly once';
    is_deeply [ map { scalar endings($_) } @ids ], [ (1) x @ids ], 'burst: one ending event each';
    $t->stop_worker('w1');
}

$t->done_testing;
