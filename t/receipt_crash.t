#!/usr/bin/perl

# Receipts survive a worker killed at any point of issuing (docs/receipts.md,
# "Crashes"): GOV_PAY_RECEIPT_FAULT makes the worker _exit(137) right after
# staging, in the middle of the ledger write, after the fsync'd append and
# after the commit; then a SIGKILL at a random moment of a burst. Each time
# the payment ends with exactly one receipt and one ledger entry, numbers have
# no gap, and the ledger and Redis agree.  Then a partial refund, whose
# red-letter receipt and receipt for the amount kept are two receipts: the
# worker killed between them, after the red-letter receipt's commit and after
# its stage; each time the refund ends with exactly those two receipts.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;
use GovPay::Refunds;

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
my %paid;                                  # payment code -> 1

sub pay {
    my $n = $t->new_notice(amount => 100 + int(rand 9000));
    $t->sandbox_pay($n)->body eq 'success' or die 'pay failed';
    $paid{ $n->{payment_code} } = 1;
    return $n;
}

sub receipt_of {
    my ($pc) = @_;
    my $g = $t->get_notice($pc);
    return $g->status == 200 && ref $g->json->{receipt} eq 'HASH'
        ? $g->json->{receipt} : undef;
}

# everything that must hold when all is done
sub consistent {
    my ($what) = @_;
    my $n = scalar keys %paid;
    my @e = $t->ledger_entries($code);
    is scalar(@e), $n, "$what: one ledger entry per payment ($n)";
    is_deeply [ map { $_->{number} + 0 } @e ], [ 1 .. $n ],
        "$what: numbers 1..$n, no gap";
    my %biz = map { (json_decode($_->{doc}) // {})->{BizCode} // '' => 1 } @e;
    is_deeply \%biz, \%paid, "$what: each payment is in the ledger exactly once";
    my ($rc, $out) = $t->ledger_verify($code, '--pubkey', $pub);
    is $rc, 0, "$what: gov-pay-ledger verify passes" or diag $out;
    is $r->get("{gpr}:rseq:$code"), $n, "$what: redis counter is $n";
    is scalar(my @s = $t->redis_keys('{gpr}:stage:*')), 0, "$what: nothing staged";
    my $agree = 1;
    for my $e (@e) {
        my %rec = $r->hgetall("{gpr}:r:$code:$e->{number}");
        $agree = 0 unless ($t->receipt_open($rec{doc}, $code, $e->{number}) // '') eq $e->{doc}
            && ($rec{seal} // '') eq $e->{seal};
    }
    ok $agree, "$what: every ledger entry is the receipt redis holds";
    my %events;
    $events{ $_->{fields}{payment_code} }++
        for grep { $_->{fields}{type} eq 'receipt.issued' } $t->stream_entries('settled');
    is_deeply \%events, { map { $_ => 1 } keys %paid },
        "$what: one receipt.issued event per payment";
}

###############################################################################
# named crash points

my %check = (
    after_stage => sub {
        my ($n, $before) = @_;
        is scalar($t->ledger_entries($code)), $before, 'after_stage: ledger unchanged';
        ok $r->exists("{gpr}:stage:$code"), 'after_stage: the entry is staged in redis';
    },
    mid_append => sub {
        my ($n, $before) = @_;
        my @e = $t->ledger_entries($code);
        ok @e && $e[-1]{partial}, 'mid_append: the ledger ends with a partial line';
    },
    after_append => sub {
        my ($n, $before) = @_;
        is scalar($t->ledger_entries($code)), $before + 1,
            'after_append: the entry is in the ledger';
        ok $r->exists("{gpr}:stage:$code"), 'after_append: and still staged in redis';
    },
    after_commit => sub {
        my ($n, $before) = @_;
        ok !$r->exists("{gpr}:stage:$code"), 'after_commit: committed in redis';
        ok !receipt_of($n->{payment_code}), 'after_commit: the notice has no receipt yet';
    },
);

for my $point (qw(after_stage mid_append after_append after_commit)) {
    my $before = scalar grep { !$_->{partial} } $t->ledger_entries($code);
    $t->start_worker(consumer => 'worker-1',
                     env => { GOV_PAY_RECEIPT_FAULT => $point });
    my $n = pay();
    my $st = $t->wait_worker_exit('w1', 10);
    is defined $st ? $st >> 8 : undef, 137, "$point: the worker dies there"
        or diag $t->worker_log;
    $check{$point}->($n, $before);
    $t->stop_worker('w1');

    if ($point eq 'after_append') {
        # another worker rolls the staged entry forward before its own receipt
        $t->start_worker(name => 'w2', consumer => 'worker-2');
        my $m = pay();
        my $rc = wait_for(sub { receipt_of($m->{payment_code}) }, 10, 'w2 receipt');
        is $rc && $rc->{number} + 0, $before + 2,
            'after_append: another worker takes the next number after rolling forward'
            or diag $t->worker_log('w2');
        $t->stop_worker('w2');
    }

    if ($point eq 'after_stage') {
        # the staged document is sealed (pii key): one that does not open
        # stops the roll-forward, named by receipt and key id, never shown
        my $sealed = $r->hget("{gpr}:stage:$code", 'doc') // '';
        like $sealed, qr/^t1:[A-Za-z0-9+\/]+=*$/, 'after_stage: the staged document is sealed';
        (my $gone = $sealed) =~ s/^[^:]+:/gone:/;
        $r->hset("{gpr}:stage:$code", 'doc', $gone);
        $t->start_worker(consumer => 'worker-1');
        ok wait_for(sub { $t->worker_log =~ /receipt_doc of receipt $code\/\d{10} in redis does not open \(key id "gone"\)/ },
                    10, 'the open error'),
            'after_stage: a staged document that does not open stops the roll-forward, naming the receipt and key id'
            or diag $t->worker_log;
        is scalar(grep { !$_->{partial} } $t->ledger_entries($code)), $before,
            'after_stage: and nothing reaches the ledger';
        unlike $t->worker_log, qr/PayerParty/, 'after_stage: the log shows nothing of the document';
        $t->stop_worker('w1');
        $r->hset("{gpr}:stage:$code", 'doc', $sealed);
    }

    $t->start_worker(consumer => 'worker-1');
    ok wait_for(sub { receipt_of($n->{payment_code}) }, 10, "$point receipt"),
        "$point: the restarted worker finishes the receipt" or diag $t->worker_log;
    $t->stop_worker('w1');
    consistent($point);
}

###############################################################################
# SIGKILL at a random moment of a burst

$t->start_worker(consumer => 'worker-1');
my @burst = map { pay() } 1 .. 15;
my $done_before = keys %paid;
wait_for(sub { ($r->get("{gpr}:rseq:$code") // 0) >= $done_before - 12 }, 10,
         'issuing under way');
$t->kill_worker('KILL');
note sprintf 'SIGKILL with %d of %d receipts issued', $r->get("{gpr}:rseq:$code") // 0,
    scalar keys %paid;
$t->start_worker(consumer => 'worker-1');
ok wait_for(sub { !grep { !receipt_of($_->{payment_code}) } @burst }, 20,
            'every receipt of the burst'),
    'after SIGKILL mid-burst and a restart every payment has its receipt'
    or diag $t->worker_log;
$t->stop_worker('w1');
consistent('SIGKILL mid-burst');

###############################################################################
# a partial refund: two receipts, killed between them and inside the first

sub notice_hash { my %h = $r->hgetall(GovPay::Refunds::notice_key($t, $_[0])); \%h }

my %refund_check = (
    between_receipts => sub {
        my ($pc, $id, $before) = @_;
        my $h = notice_hash($pc);
        is $h->{'r01.red_receipt'}, sprintf('%s/%010d', $code, $before + 1),
            'between_receipts: the red-letter receipt is done';
        ok !$h->{'r01.receipt'}, 'between_receipts: the new receipt is not begun';
        is scalar($t->ledger_entries($code)), $before + 1,
            'between_receipts: the ledger has the red-letter receipt only';
    },
    after_commit => sub {
        my ($pc, $id, $before) = @_;
        ok $r->exists("{gpr}:biz:$pc:$id:red"), 'after_commit: the red-letter receipt is committed';
        ok !notice_hash($pc)->{'r01.red_receipt'}, 'after_commit: the notice does not know it yet';
    },
    after_stage => sub {
        my ($pc, $id, $before) = @_;
        ok $r->exists("{gpr}:stage:$code"), 'after_stage: the red-letter receipt is staged';
        is scalar($t->ledger_entries($code)), $before, 'after_stage: nothing in the ledger yet';
    },
);

for my $point (qw(between_receipts after_commit after_stage)) {
    $t->start_worker(consumer => 'worker-1');
    my $n = pay();
    my $pc = $n->{payment_code};
    ok wait_for(sub { receipt_of($pc) }, 10, "$point: receipt"), "$point: the payment's receipt";
    $t->stop_worker('w1');
    my $before = $r->get("{gpr}:rseq:$code");
    my $keep = int($n->{amount} / 3);

    $t->start_worker(consumer => 'worker-1', env => { GOV_PAY_RECEIPT_FAULT => $point });
    my $id = GovPay::Refunds::ask($t, $pc, $n->{amount} - $keep);
    GovPay::Refunds::end($t, $id, 'SUCCEEDED');
    my $st = $t->wait_worker_exit('w1', 10);
    is defined $st ? $st >> 8 : undef, 137, "$point: a partial refund, and the worker dies there"
        or diag $t->worker_log;
    $refund_check{$point}->($pc, $id, $before);
    $t->stop_worker('w1');

    $t->start_worker(consumer => 'worker-1');
    ok wait_for(sub { notice_hash($pc)->{'r01.receipt'} }, 10, "$point refund receipts"),
        "$point: the restarted worker finishes the refund's receipts" or diag $t->worker_log;
    $t->stop_worker('w1');

    my $h = notice_hash($pc);
    is $r->get("{gpr}:rseq:$code"), $before + 2, "$point: two numbers for the refund, no more";
    is $h->{'r01.red_receipt'}, sprintf('%s/%010d', $code, $before + 1),
        "$point: the red-letter receipt is the first";
    is $h->{'r01.receipt'}, sprintf('%s/%010d', $code, $before + 2),
        "$point: the receipt for the amount kept the second";
    is $h->{receipt_number}, sprintf('%010d', $before + 2), "$point: and it is the notice's receipt";
    my @e = $t->ledger_entries($code);
    is_deeply [ map { $_->{number} + 0 } @e ], [ 1 .. $before + 2 ], "$point: the ledger has no gap";
    my $kept = json_decode($e[-1]{doc}) // {};
    is $kept->{TotalAmount}, sprintf('%.2f', $keep / 100), "$point: the new receipt is of what is kept";
    my $redd = json_decode($e[-2]{doc}) // {};
    my ($orig) = grep { ((json_decode($_->{doc}) // {})->{BizCode} // '') eq $pc } @e;
    is $redd->{RelatedInvoiceNumber}, $orig->{number},
        "$point: the red-letter receipt reverses the payment's receipt";
    my ($rc, $out) = $t->ledger_verify($code, '--pubkey', $pub);
    is $rc, 0, "$point: gov-pay-ledger verify passes" or diag $out;
    is scalar(my @s = $t->redis_keys('{gpr}:stage:*')), 0, "$point: nothing staged";
    my %types;
    $types{ $_->{fields}{type} }++ for grep { ($_->{fields}{refund_id} // '') eq $id }
        $t->stream_entries('settled');
    is_deeply \%types, { 'receipt.reversed' => 1, 'receipt.issued' => 1 },
        "$point: one event per receipt of the refund";
}

is scalar(my @dead = $t->stream_entries('dead')), 0, 'nothing was dead-lettered';
$t->check_error_log;

done_testing;
