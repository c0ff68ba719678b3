#!/usr/bin/perl

# Payer pages in a real browser: Debian's headless Chromium at a phone
# viewport (t/browser/run.js, playwright-core), for every page a payer can
# meet: the page renders, its buttons are there, nothing scrolls sideways,
# tap targets are at least 44 px, a screenshot is saved (build/artifacts/),
# and axe-core finds no serious or critical accessibility violation.

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
$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_lookup_key => $t->dir . '/keys/lookup.key' });
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
    }
EOF

my $id_no = valid_id_no('33010619491231002');
my %payer = (type => 'person', name => '张秀英', id_no => $id_no);

my $unpaid = $t->new_notice(amount => 125000, item_code => '103001', payer => \%payer);
my $paid = $t->new_notice(amount => 2000, item_code => '103002', payer => \%payer);
my $cancelled = $t->new_notice(amount => 3000, item_code => '103001', payer => \%payer);

is $t->sandbox_pay($paid)->body, 'success', 'a notice is paid';
my ($key) = grep { ($t->redis->hget($_, 'amount') // '') eq '2000' }
    $t->redis_keys('{gp*}:n:*');
$t->redis->hset($key, receipt_code => '33010126', receipt_number => '0000000001',
                receipt_check => 'a1b2c3');
is $t->signed_request(POST => "/v1/notices/$cancelled->{payment_code}/cancel", {})->status,
    200, 'a notice is cancelled';

# the 429 page: the first request passes, the next is limited
$t->get('/busy/');

# receipt.html has no route on this branch (the receipt route renders it):
# a second edge whose message page is receipt.html filled with a sample
# receipt shows it, for the same checks
my $preview = GovPay::Test->new;
$preview->start_redis;
my $tpl = "$root/conf/templates";
make_path($preview->dir . '/templates');
for my $f (glob "$tpl/*") {
    (my $name = $f) =~ s{.*/}{};
    my $text = GovPay::Test::_read_file($f);
    $text = sample_receipt(GovPay::Test::_read_file("$tpl/receipt.html"))
        if $name eq 'message.html';
    $preview->write_file("templates/$name", $text);
}
$preview->start_nginx(<<'EOF', directives => { gov_pay_templates => $preview->dir . '/templates' });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /q/ { gov_pay_payer; }
    }
EOF

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
    { name => 'receipt', url => $preview->public_url . '/q/' . random_code() },
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
        . 'no serious or critical axe violation'
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

$t->check_error_log;
$preview->check_error_log;

done_testing;

# receipt.html with a sample receipt in place of its values (bytes in, out)
sub sample_receipt {
    my ($text) = @_;
    my %v = (EInvoiceName => '浙江省非税收入统一票据（电子）', EInvoiceCode => '33010126',
             EInvoiceNumber => '0000000001', RandomNumber => 'a1b2c3',
             IssueDate => '2026-11-24', IssueTime => '10:30:00', TotalAmount => '1250.00',
             InvoicingPartyName => '杭州市财政局', PayerPartyName => '张*',
             PayerPartyCode => '3301**********1234', BizCode => '33010026000000000017',
             PayMode => '网上缴费', Remark => '2026 秋季学费', seal_algorithm => 'SM2-SM3',
             seal_serial => '01AB', seal_time => '2026-11-24 10:30:01');
    my %row = (ItemCode => '103001', ItemName => '学费', ItemQuantity => '1',
               ItemStd => '1250.00', ItemAmount => '1250.00');
    utf8::decode($text);
    $text =~ s/\{\{!.*?\}\}//gs;
    $text =~ s/\{\{#(seal_invalid|return_url)\}\}.*?\{\{\/\1\}\}//gs;
    $text =~ s/\{\{\^(\w+)\}\}.*?\{\{\/\1\}\}//gs;
    $text =~ s{\{\{#Items\}\}(.*?)\{\{/Items\}\}}{
        my $r = $1; $r =~ s/\{\{(\w+)\}\}/$row{$1}/g; $r x 2 }gse;
    $text =~ s/\{\{[#\/]\w+\}\}//g;
    $text =~ s/\{\{(\w+)\}\}/$v{$1} \/\/ ''/ge;
    utf8::encode($text);
    return $text;
}
