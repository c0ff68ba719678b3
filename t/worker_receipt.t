#!/usr/bin/perl

# gov-pay-worker, receipt plugin (API.md, "Fiscal e-receipt"): a paid notice
# gets exactly one receipt (code, number, check code, verify URL), stored as
# docs/internals.md says, and the worker stops gracefully on SIGTERM.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Spec;
use Test::More;
use Time::HiRes qw(time);
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

# entries pending in the receipt group of a stream (-1: no such group)
sub pending {
    my ($stream) = @_;
    my @p = eval { $r->xpending($stream, 'receipt') };
    return @p ? $p[0] : -1;
}

my $public = $t->public_url;

# started before any settled stream exists: it must create what it needs
$t->start_worker;
ok $t->worker_running, 'worker starts';

my $body = $t->notice_body(amount => 125000);
my $n = $t->signed_request(POST => '/v1/notices', $body)->json
    or BAIL_OUT('cannot create a notice');
my $code = $n->{payment_code};
my ($nkey) = $t->stored_notice($body->{request_id});
my ($shard, $seq) = ($nkey // '') =~ /^\{gp(\d+)\}:n:(\d+)$/;

is $t->sandbox_pay($n, trade_no => 'SBX-R1')->body, 'success', 'notice is paid';

my $got = wait_for(sub {
    my $g = $t->get_notice($code);
    return $g->status == 200 && ref $g->json->{receipt} eq 'HASH' ? $g->json : 0;
}, 10, 'the receipt to be issued');
ok $got, 'a receipt is issued for the paid notice'
    or diag $t->worker_log;
my $rc = $got ? $got->{receipt} : {};

my $yy = sprintf '%02d', current_yy();
is $rc->{code}, "330101$yy", 'receipt code is region 33, category 01, kind 01, year';
like $rc->{number} // '', qr/^\d{10}$/, 'receipt number is 10 digits';
like $rc->{check_code} // '', qr/^[0-9a-z]{6}$/, 'check code is 6 of [0-9a-z]';
is $rc->{verify_url}, "$public/r/" . ($rc->{code} // '') . '/' . ($rc->{number} // '')
    . '?c=' . ($rc->{check_code} // ''), 'verify_url is <public_url>/r/<code>/<number>?c=<check>';
is $got && $got->{status}, 'PAID', 'notice stays PAID';

is $r->get("{gpr}:rseq:$rc->{code}"), 1, 'one receipt number is taken';
is $rc->{number} + 0, 1, 'the first receipt number of the code is 1';
is $r->get("{gpr}:ridx:$rc->{code}:$rc->{number}"), $code,
    'the receipt index points at the payment code';

my $doc_json = defined $shard
    ? $t->receipt_open($r->get("{gp$shard}:rcpt:$seq"), $rc->{code}, $rc->{number})
    : undef;
ok defined $doc_json, 'the receipt document is stored next to the notice';
my $doc = json_decode($doc_json // '') // {};
is $doc->{EInvoiceCode}, $rc->{code}, 'document EInvoiceCode';
is $doc->{EInvoiceNumber}, $rc->{number}, 'document EInvoiceNumber';
is $doc->{RandomNumber}, $rc->{check_code}, 'document RandomNumber is the check code';
is $doc->{BizCode}, $code, 'document BizCode is the payment code';
is $doc->{PayerPartyName}, '张三', 'document names the payer';
is $doc->{InvoicingPartyCode}, '330100000000', 'document names the issuer code';
is $doc->{InvoicingPartyName}, '杭州市财政局', 'document names the issuer';
is ref $doc->{Items}, 'ARRAY', 'document has items';
is $doc->{Items}[0]{ItemCode}, '103001', 'document item code';
is $doc->{Items}[0]{ItemName}, '学费', 'document item name';
unlike $doc_json // '', qr/\n|": |, "/, 'document is compact';

# the stream entry is acknowledged
ok wait_for(sub { pending("{gp$shard}:settled") == 0 }, 5,
            'receipt group to have nothing pending'),
    'the settled event is acknowledged by the receipt group';

###############################################################################
# a second paid notice takes the next number

my $n2 = $t->new_notice(amount => 2000, item_code => '103002');
is $t->sandbox_pay($n2, trade_no => 'SBX-R2')->body, 'success', 'second notice is paid';
my $got2 = wait_for(sub {
    my $g = $t->get_notice($n2->{payment_code});
    return $g->status == 200 && ref $g->json->{receipt} eq 'HASH' ? $g->json : 0;
}, 10, 'the second receipt');
is $got2 && $got2->{receipt}{number} + 0, 2, 'the second receipt takes number 2';
isnt $got2 && $got2->{receipt}{check_code}, $rc->{check_code},
    'check codes differ between receipts';

###############################################################################
# graceful stop

my $t0 = time;
my $status = $t->stop_worker('w1', 'TERM');
is $status, 0, 'worker exits 0 on SIGTERM' or diag $t->worker_log;
ok time - $t0 < 3, sprintf('worker stops within 3 s of SIGTERM (%.2fs)', time - $t0);

my @rcpts = $t->redis_keys('{gp*}:rcpt:*');
is scalar @rcpts, 2, 'two payments, two receipt documents';

###############################################################################
# files in worker.json are named relative to its folder (docs/internals.md),
# wherever the worker is started from

{
    require File::Copy;
    require File::Path;
    my $d = $t->dir . '/relconf';
    File::Path::make_path("$d/keys", "$d/ledger");
    my ($priv) = $t->issuer_keys('sm2');
    File::Copy::copy($priv, "$d/keys/issuer.pem") or die "copy: $!";
    my $cfg = $t->worker_config(
        plugins => { receipt => $t->receipt_config(key => 'keys/issuer.pem',
                                                   ledger_dir => 'ledger') });
    $t->write_file("$d/worker.json", GovPay::Test::json_encode($cfg));
    my $bin = File::Spec->rel2abs(GovPay::Test::worker_path());
    my $out = `cd / && $bin -t -c $d/worker.json 2>&1`;
    is $?, 0, 'a worker.json naming its key and ledger folder relatively checks out '
        . 'from another working directory' or diag $out;
}

###############################################################################

$t->check_error_log;

done_testing;
