#!/usr/bin/perl

# Exactly once (docs/receipts.md): two worker processes race on the same
# settled events (every event is delivered twice: the original and a copy
# XADDed again, as a redelivery would), and events are redelivered after
# their receipts exist. Each payment still has exactly one receipt and one
# ledger entry, and the numbers run without a gap.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
my (undef, $pub) = $t->issuer_keys('sm2');
$t->start_redis;
$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF

my $r = $t->redis;
my $code = '330101' . sprintf('%02d', current_yy());
my $N = 24;

$t->start_worker(name => 'w1', consumer => 'worker-1');
$t->start_worker(name => 'w2', consumer => 'worker-2');

# both consumers are blocked on the streams before the first payment
wait_for(sub {
    my @c = eval { @{ $r->xinfo('CONSUMERS', '{gp0}:settled', 'receipt') } };
    return @c >= 2;
}, 10, 'both consumers to be reading');

# every payment's event is delivered twice: right after the original, a copy
# is XADDed, so the two copies go to the two workers at the same moment
my @notices;
for (1 .. $N) {
    my $n = $t->new_notice(amount => 1000 + $_);
    $t->sandbox_pay($n)->body eq 'success' or BAIL_OUT('pay failed');
    push @notices, $n;
    my ($e) = grep { $_->{fields}{payment_code} eq $n->{payment_code} }
        $t->stream_entries('settled');
    $r->xadd($e->{stream}, '*', map { $_ => $e->{fields}{$_} } @{ $e->{order} });
}

my $settled = sub {
    my @p = map { my $s = $_; scalar eval { ($r->xpending("{gp$s}:settled", 'receipt'))[0] } // 0 }
        0 .. $t->shards - 1;
    my $pending = 0;
    $pending += $_ for @p;
    my @iss = grep { $_->{fields}{type} eq 'receipt.issued' } $t->stream_entries('settled');
    return @iss >= $N && $pending == 0;
};
ok wait_for($settled, 30, 'all receipts, nothing pending'),
    'two racing workers issue every receipt' or diag $t->worker_log('w1'), $t->worker_log('w2');

# redelivery of old events once everything is issued
for my $e (grep { $_->{fields}{type} eq 'notice.paid' } ($t->stream_entries('settled'))[0 .. 3]) {
    $r->xadd($e->{stream}, '*', map { $_ => $e->{fields}{$_} } @{ $e->{order} });
}
ok wait_for($settled, 10, 'redelivered events'), 'redelivered events are acknowledged';

$t->stop_worker('w1');
$t->stop_worker('w2');

my @e = $t->ledger_entries($code);
is scalar @e, $N, "one ledger entry per payment ($N)";
is_deeply [ map { $_->{number} + 0 } @e ], [ 1 .. $N ], 'numbers 1..N without a gap';
my %biz;
$biz{ (json_decode($_->{doc}) // {})->{BizCode} // '' }++ for @e;
is_deeply \%biz, { map { $_->{payment_code} => 1 } @notices },
    'every payment once in the ledger';
my %ev;
$ev{ $_->{fields}{payment_code} }++
    for grep { $_->{fields}{type} eq 'receipt.issued' } $t->stream_entries('settled');
is_deeply \%ev, { map { $_->{payment_code} => 1 } @notices },
    'one receipt.issued per payment';
my ($rc, $out) = $t->ledger_verify($code, '--pubkey', $pub);
is $rc, 0, 'the ledger verifies' or diag $out;
is $r->get("{gpr}:rseq:$code"), $N, 'the counter stands at N';
my %numbers;
for my $n (@notices) {
    my $g = $t->get_notice($n->{payment_code})->json // {};
    $numbers{ $g->{receipt}{number} // 'none' }++;
}
is scalar(grep { $_ == 1 } values %numbers), $N, 'each notice names its own receipt number';
ok !exists $numbers{none}, 'no notice is left without a receipt';

my @issued = map { scalar grep { /issued receipt/ } split /\n/, $t->worker_log($_) }
    qw(w1 w2);
my @again = map { scalar grep { /already issued/ } split /\n/, $t->worker_log($_) }
    qw(w1 w2);
note "issued by worker-1: $issued[0], by worker-2: $issued[1]; "
    . "found already issued: $again[0] and $again[1]";
ok $issued[0] + $again[0] && $issued[1] + $again[1],
    'both workers handled copies of the events (they did race)';

is scalar(my @dead = $t->stream_entries('dead')), 0, 'nothing was dead-lettered';
$t->check_error_log;

done_testing;
