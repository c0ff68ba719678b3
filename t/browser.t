#!/usr/bin/perl

# Payer pages in a real browser: Debian's headless Chromium at a phone
# viewport (t/browser/run.js, playwright-core), for every page a payer can
# meet: the page renders, its buttons are there, nothing scrolls sideways,
# tap targets are at least 44 px, a screenshot is saved (build/artifacts/),
# and axe-core finds no serious or critical accessibility violation (none at
# all on the receipt verification page, a real receipt issued by the worker).

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Path qw(make_path);
use Test::More;
use Time::HiRes qw(time);
use GovPay::Test;

my $root = GovPay::Test::repo_root();
my $runner = "$root/t/browser/run.js";
my $chromium = $ENV{GOV_PAY_CHROMIUM} // '/usr/bin/chromium';

# make test installs both (scripts/install-deps.sh, the Makefile's npm ci);
# a missing piece is a failure, not a skip
my $have = ok(-x $chromium, "Chromium is installed at $chromium");
$have &= ok(-d "$root/t/browser/node_modules/playwright-core"
            && -d "$root/t/browser/node_modules/axe-core",
            'playwright-core and axe-core are installed (make browser-deps)');
unless ($have) {
    done_testing;
    exit 1;
}

my $t = GovPay::Test->new;
$t->write_file('keys/lookup.key', GovPay::Test::random_string(40) . "\n");
my (undef, $pub) = $t->issuer_keys('sm2');
$t->start_redis;
my %directives = (gov_pay_lookup_key => $t->dir . '/keys/lookup.key',
                  gov_pay_receipt_key => "sm2 $pub TEST-SM2-01");
$t->start_nginx(<<'EOF', directives => \%directives);
    limit_req_zone $binary_remote_addr zone=gp_open:1m rate=1r/m;
    server {
        listen 127.0.0.1:%%PORT%%;
        error_page 429 500 502 503 504 /_gp/error;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location /o/ { gov_pay_payer; }
        location /busy/ { limit_req zone=gp_open nodelay; limit_req_status 429; gov_pay_payer; }
        location = /_gp/error { internal; gov_pay_error_page; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location /sandbox/ { gov_pay_sandbox_gateway; }
        location /r/ { gov_pay_receipt; }
    }
EOF
$t->start_worker;               # the receipt plugin (receipt_config)

my $id_no = valid_id_no('33010619491231002');
my %payer = (type => 'person', name => '张秀英', id_no => $id_no);

my $unpaid = $t->new_notice(amount => 125000, item_code => '103001', payer => \%payer);
my $paid = $t->new_notice(amount => 2000, item_code => '103002', payer => \%payer);
my $cancelled = $t->new_notice(amount => 3000, item_code => '103001', payer => \%payer);

is $t->sandbox_pay($paid)->body, 'success', 'a notice is paid';
my $receipt = wait_for(sub {
    my $g = $t->get_notice($paid->{payment_code});
    return $g->status == 200 && ref $g->json->{receipt} eq 'HASH' ? $g->json->{receipt} : 0;
}, 10, 'the receipt');
ok $receipt && $receipt->{verify_url}, 'the worker issues its receipt' or diag $t->worker_log;
is $t->signed_request(POST => "/v1/notices/$cancelled->{payment_code}/cancel", {})->status,
    200, 'a notice is cancelled';

# the 429 page: the first request passes, the next is limited
$t->get('/busy/');

my $base = $t->public_url;
my @pages = (
    { name => 'cashier', url => "$base/q/$unpaid->{payment_code}", buttons => 1 },
    { name => 'cashier-big', url => "$base/q/$unpaid->{payment_code}?big=1",
      buttons => 1, big => 1 },
    { name => 'paid', url => "$base/q/$paid->{payment_code}", buttons => 1 },
    { name => 'closed', url => "$base/q/$cancelled->{payment_code}" },
    { name => 'not-found', url => "$base/q/" . random_code() },
    { name => 'open', url => "$base/o/103001", buttons => 1 },
    { name => 'open-by-id', url => "$base/o/103001", fill => $id_no, buttons => 2 },
    { name => 'open-by-code', url => "$base/o/103001", fill => $unpaid->{payment_code},
      buttons => 2 },
    { name => 'open-nothing', url => "$base/o/103001", fill => valid_id_no('11010519491231002'),
      buttons => 1 },
    { name => 'sandbox-gateway', url => "$base/sandbox/pay/$unpaid->{payment_code}",
      buttons => 1 },
    { name => 'rate-limited', url => "$base/busy/" },
    { name => 'receipt', url => $receipt->{verify_url} // "$base/r/", buttons => 1,
      strict => 1 },
);

my $out = "$root/" . ($ENV{GOV_PAY_BUILD} // 'build') . '/artifacts';
$out = "$ENV{GOV_PAY_BUILD}/artifacts" if ($ENV{GOV_PAY_BUILD} // '') =~ m{^/};
make_path($out);

my $spec = $t->write_file('pages.json', json_encode({ out => $out, pages => \@pages }));

my $t0 = time;
my $json = `node $runner $spec 2>$t->{dir}/browser.err`;
my $rc = $? >> 8;
my $res = json_decode($json);

ok $res && ref $res->{pages} eq 'ARRAY', 'the browser run reports every page'
    or diag "exit $rc: $json\n" . (GovPay::Test::_read_file("$t->{dir}/browser.err") // '');

for my $p (@{ $res->{pages} // [] }) {
    ok $p->{ok}, "$p->{name}: renders at a phone viewport, buttons present, "
        . ($p->{strict} ? 'no axe violation at all' : 'no serious or critical axe violation')
        or diag join "\n", @{ $p->{errors} };
    ok $p->{screenshot} && -s $p->{screenshot}, "$p->{name}: screenshot saved"
        . ($p->{screenshot} ? " ($p->{screenshot})" : '');
    note "$p->{name}: axe found " . scalar(@{ $p->{violations} }) . ' minor or moderate: '
        . join(', ', map { "$_->{id} ($_->{impact})" } @{ $p->{violations} });
}

my %by = map { $_->{name} => $_ } @{ $res->{pages} // [] };
ok $by{'cashier-big'} && $by{cashier}
    && $by{'cashier-big'}{bodyFont} >= 1.3 * $by{cashier}{bodyFont},
    'the large-text mode makes the text at least 30% larger';

cmp_ok time - $t0, '<', 120, 'the browser checks take under two minutes';

is $t->stop_worker, 0, 'the worker stops cleanly';
$t->check_error_log;

done_testing;
