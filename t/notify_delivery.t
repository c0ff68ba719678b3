#!/usr/bin/perl

# notify plugin (API.md, "Unit webhooks"): a paid notice reaches the unit's
# webhook twice, as notice.paid and as receipt.issued, signed with the unit's
# secret (HMAC-SHA256; HMAC-SM3 for an SM3 unit), with a stable event id and
# the notice as the unit API shows it; the finance department's system gets
# every unit's events with its own key; `notify status` counts them.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Webhook;

my $t = GovPay::Test->new;
$t->start_redis;

my $hook_a = GovPay::Webhook->start($t, name => 'a');
my $hook_s = GovPay::Webhook->start($t, name => 'sm3');
my $hook_f = GovPay::Webhook->start($t, name => 'finance');

my $UNIT = $GovPay::Test::UNIT;
my $UNIT2 = $GovPay::Test::UNIT2;
my $SM3 = '330100-TEST-SM3';

my $sm3_secret = $t->new_unit_secret($SM3);
my $fin_secret = random_string(40);
$t->write_file('keys/finance.secret', "$fin_secret\n");

my $reg = $t->default_registry;
$reg->{units}[0]{webhook} = $hook_a->url('/hooks/govpay');
push @{ $reg->{units} }, { id => $SM3, name => '国密单位', scheme => 'GOVPAY-HMAC-SM3',
                           secret_file => "keys/$SM3.secret", items => ['103001'],
                           webhook => $hook_s->url('/sm3') };
$t->write_registry($reg);

$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my %notify = (
    public_url => $t->public_url,
    timeout_ms => 2000,
    poll_ms    => 200,
    subscribers => [ { name => 'nontax', url => $hook_f->url('/nontax'),
                       scheme => 'GOVPAY-HMAC-SM3',
                       secret_file => 'keys/finance.secret' } ],
);
my $receipt = $t->receipt_config;

$t->start_worker(plugins => { receipt => $receipt, notify => \%notify });

###############################################################################
# a notice of the SHA-256 unit, paid through the sandbox channel

my $n = $t->new_notice(amount => 125000, remark => '2026 秋季学费');
my $code = $n->{payment_code};
is $t->sandbox_pay($n, trade_no => 'SBX-N1')->body, 'success', 'notice is paid';

my @got = @{ wait_for(sub {
    my @r = $hook_a->received;
    return @r >= 2 ? \@r : 0;
}, 10, 'two webhooks at the unit') // [] };
is scalar @got, 2, 'the unit gets two webhooks: notice.paid and receipt.issued'
    or diag $t->worker_log;

my %by_type = map { (json_decode($_->{body}) // {})->{type} => $_ } @got;
my $paid = $by_type{'notice.paid'};
my $issued = $by_type{'receipt.issued'};
ok $paid && $issued, 'one of each type';

my $now_notice = $t->get_notice($code)->json // {};

for my $req (grep { defined } $paid, $issued) {
    my $b = json_decode($req->{body}) // {};
    my $what = $b->{type} // '?';
    is $req->{method}, 'POST', "$what: POST";
    is $req->{path}, '/hooks/govpay', "$what: to the unit's webhook URL";
    like $req->{headers}{'content-type'} // '', qr{^application/json}, "$what: JSON";
    my ($ok, $why) = GovPay::Webhook::signature_ok($req, $t->unit_secret($UNIT));
    ok $ok, "$what: GovPay-Signature is HMAC-SHA256 of t.body with the unit secret"
        or diag $why;
    like $b->{id} // '', qr/^evt_\d+_\d+_\d+$/, "$what: event id evt_…";
    is $req->{headers}{'govpay-event-id'}, $b->{id}, "$what: GovPay-Event-Id is the body's id";
    ok defined rfc3339_to_epoch($b->{created_at}), "$what: created_at is RFC 3339";
    my $d = $b->{data} // {};
    is $d->{payment_code}, $code, "$what: data.payment_code";
    is $d->{status}, 'PAID', "$what: data.status PAID";
    is $d->{unit}, $UNIT, "$what: data.unit";
    is $d->{amount}, 125000, "$what: data.amount in fen";
    is $d->{item_code}, '103001', "$what: data.item_code";
    is $d->{due_at}, $now_notice->{due_at}, "$what: data.due_at as the API shows it";
    is $d->{remark}, '2026 秋季学费', "$what: data.remark (UTF-8)";
    is $d->{pay_url}, $now_notice->{pay_url}, "$what: data.pay_url";
    is_deeply $d->{payment}, $now_notice->{payment}, "$what: data.payment as the API shows it";
    ok !exists $d->{payer} && $req->{body} !~ /张三|33010620000101/,
        "$what: no personal data of the payer";
}

my $ib = json_decode($issued ? $issued->{body} : '{}') // {};
is_deeply $ib->{data}{receipt}, $now_notice->{receipt},
    'receipt.issued carries the receipt as the API shows it (code, number, check code, verify URL)';
isnt((json_decode($paid ? $paid->{body} : '{}') // {})->{id}, $ib->{id},
     'the two events have different ids');

###############################################################################
# the finance department's system gets the same events, with its own key

my @fin = @{ wait_for(sub { my @r = $hook_f->received; @r >= 2 ? \@r : 0 }, 10,
                      'two webhooks at the finance system') // [] };
is scalar @fin, 2, 'the finance system gets both events too';
is_deeply [ sort map { $_->{headers}{'govpay-event-id'} } @fin ],
    [ sort map { $_->{headers}{'govpay-event-id'} } @got ],
    'with the same event ids as the unit';
my ($fok, $fwhy) = GovPay::Webhook::signature_ok($fin[0] // {}, $fin_secret, 'sm3');
ok $fok, "finance webhook is signed with the finance key (HMAC-SM3)" or diag $fwhy;
is $fin[0] && $fin[0]{path}, '/nontax', 'at its own URL';

###############################################################################
# an SM3 unit: its webhooks are HMAC-SM3 with its secret

my $ev = GovPay::Webhook::fake_settled($t, unit => $SM3);
my ($sreq) = @{ wait_for(sub {
    my @r = grep { $_->{headers}{'govpay-event-id'} eq $ev->{event_id} } $hook_s->received;
    return @r ? \@r : 0;
}, 10, 'the SM3 unit webhook') // [] };
ok $sreq, 'the SM3 unit gets its webhook, with the event id evt_<shard>_<stream entry id>';
my ($sok, $swhy) = GovPay::Webhook::signature_ok($sreq // {}, $sm3_secret, 'sm3');
ok $sok, 'signed with HMAC-SM3 of t.body with its secret' or diag $swhy;

# a unit without a webhook: only the finance system hears of it
my $ev2 = GovPay::Webhook::fake_settled($t, unit => $UNIT2);
ok wait_for(sub { grep { $_->{headers}{'govpay-event-id'} eq $ev2->{event_id} }
                  $hook_f->received }, 10, 'the finance webhook of a unit without one'),
    'the finance system gets the events of a unit that has no webhook';

###############################################################################
# notify status; nothing pending; acknowledged. The receipt plugin issues a
# receipt for the two events made above too: 10 deliveries in all (the unit
# 2, the SM3 unit 2, the finance system 6)

my $st = wait_for(sub {
    my $s = GovPay::Webhook::notify_status($t);
    return $s && $s->{total}{delivered} == 10 ? $s : 0;
}, 10, 'status to count 10 deliveries');
ok $st, 'notify status --json answers' or diag explain $st;
is_deeply $st->{recipients}{"u:$UNIT"}, { pending => 0, retrying => 0, dead => 0, delivered => 2 },
    'status: the unit got 2, nothing pending, retrying or dead';
is $st->{recipients}{'s:nontax'}{delivered}, 6, 'status: the finance system got 6';
is $st->{recipients}{"u:$SM3"}{delivered}, 2, 'status: the SM3 unit got 2';
is_deeply $st->{total}, { pending => 0, retrying => 0, dead => 0, delivered => 10 },
    'status: the totals';

my ($rc, $text) = GovPay::Webhook::run_command($t, 'w1', 'notify', 'status');
is $rc, 0, 'notify status exits 0';
like $text, qr/^u:\Q$UNIT\E\s+0\s+0\s+0\s+2$/m, 'notify status prints a row per recipient';

my $r = $t->redis;
ok wait_for(sub {
    for my $s (0 .. $t->shards - 1) {
        my @p = eval { $r->xpending("{gp$s}:settled", 'notify') };
        return 0 if @p && $p[0];
    }
    return 1;
}, 5, 'the notify group to have nothing pending'), 'every settled event is acknowledged';

my $log = $t->worker_log;
unlike $log, qr/\Q$fin_secret\E|\Q$sm3_secret\E|\Q${\ $t->unit_secret($UNIT)}\E/,
    'no secret in the worker log';

###############################################################################
# configuration errors are found by -t

sub config_test {
    my (%notify_conf) = @_;
    my $cfg = $t->worker_config(plugins => { notify => \%notify_conf });
    $cfg->{registry} = delete $notify_conf{_registry} if $notify_conf{_registry};
    $t->write_file('worker-t.json', json_encode($cfg));
    my ($out) = `${\ GovPay::Test::worker_path()} -t -c ${\ $t->dir}/worker-t.json 2>&1`;
    return ($? >> 8, $out // '');
}

my ($c1, $o1) = config_test(schedule_s => [1, 1], timeout_ms => 1000);
is $c1, 0, 'a short schedule is a valid configuration' or diag $o1;
my ($c2, $o2) = config_test(retries => 3);
is $c2, 1, 'an unknown field is an error';
like $o2, qr/unknown field "retries"/, 'naming the field';
my ($c3) = config_test(schedule_s => [0]);
is $c3, 1, 'a delay of 0 s is an error';
my ($c4, $o4) = config_test(subscribers => [ { name => 'x', url => 'ftp://x',
    scheme => 'GOVPAY-HMAC-SHA256', secret_file => 'keys/finance.secret' } ]);
is $c4, 1, 'a subscriber URL that is not http(s) is an error';

# an RSA unit has no shared secret: its webhooks need webhook_secret_file
$t->write_file('keys/rsa.pem', "not read by the worker\n");
my $rreg = $t->default_registry;
push @{ $rreg->{units} }, { id => 'RSA-UNIT', name => 'rsa', scheme => 'GOVPAY-RSA-SHA256',
                            key_file => 'keys/rsa.pem', webhook => 'https://unit.example/h' };
$t->write_registry($rreg, 'registry-rsa.json');
my ($c5, $o5) = config_test(_registry => $t->dir . '/registry-rsa.json');
is $c5, 1, 'an RSA unit with a webhook and no webhook secret is an error';
like $o5, qr/webhook_secret_file/, 'the message says what to add';
$rreg->{units}[-1]{webhook_secret_file} = 'keys/finance.secret';
$t->write_registry($rreg, 'registry-rsa.json');
my ($c6, $o6) = config_test(_registry => $t->dir . '/registry-rsa.json');
is $c6, 0, 'with webhook_secret_file it is valid' or diag $o6;

###############################################################################

is $t->stop_worker('w1', 'TERM'), 0, 'worker exits 0 on SIGTERM' or diag $t->worker_log;
$t->check_error_log;

done_testing;
