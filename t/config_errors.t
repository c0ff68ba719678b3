#!/usr/bin/perl

# Configuration errors are caught by `nginx -t`, with a message naming the
# problem: the registry file, the code key, the shard count, the registry's
# content (docs/internals.md, "Registry file").

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
my $dir = $t->dir;

my $CONF = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /pay/ { gov_pay_payer; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location /sandbox/ { gov_pay_sandbox_gateway; }
    }
EOF

my ($rc, $out) = $t->nginx_t($CONF);
is $rc, 0, 'the complete test configuration passes nginx -t' or diag $out;

sub refused {
    my ($name, $want, %o) = @_;
    my ($rc, $out) = $t->nginx_t($CONF, %o);
    isnt $rc, 0, "$name fails nginx -t";
    like $out, $want, "$name: the message names the problem" or diag $out;
    like $out, qr/\[emerg\]/, "$name is reported at emerg level";
}

refused('missing registry file', qr{nonexistent-registry\.json},
    directives => { gov_pay_registry => "$dir/nonexistent-registry.json" });

$t->write_file('keys/short.key', ('a' x 63) . "\n");
refused('code key of 63 hex digits', qr{short\.key|gov_pay_code_key|code key}i,
    directives => { gov_pay_code_key => "$dir/keys/short.key" });
$t->write_file('keys/nothex.key', ('g' x 64) . "\n");
refused('code key that is not hex', qr{nothex\.key|gov_pay_code_key|code key}i,
    directives => { gov_pay_code_key => "$dir/keys/nothex.key" });
refused('missing code key file', qr{nonexistent\.key},
    directives => { gov_pay_code_key => "$dir/keys/nonexistent.key" });

# nginx's own bounds check says "value must be between 1 and N" with the line
refused('gov_pay_shards 0', qr{shards|must be between 1 and}, directives => { gov_pay_shards => 0 });
refused('gov_pay_shards not a number', qr{gov_pay_shards|shards},
    directives => { gov_pay_shards => 'many' });
refused('gov_pay_division of 5 digits', qr{gov_pay_division|division},
    directives => { gov_pay_division => '33010' });
refused('gov_pay_redis with a bad port', qr{gov_pay_redis|port|127\.0\.0\.1:notaport}i,
    directives => { gov_pay_redis => '127.0.0.1:notaport' });

# registry content
my $reg = $t->default_registry;
$reg->{units}[0]{scheme} = 'GOVPAY-FOO';
$t->write_registry($reg, 'registry-badscheme.json');
refused('unknown scheme in the registry', qr{(?=.*scheme)(?=.*330100-TEST-001)}s,
    directives => { gov_pay_registry => "$dir/registry-badscheme.json" });

$reg = $t->default_registry;
$reg->{units}[0]{secret_file} = 'keys/nonexistent.secret';
$t->write_registry($reg, 'registry-nosecret.json');
refused('unit secret file missing', qr{nonexistent\.secret},
    directives => { gov_pay_registry => "$dir/registry-nosecret.json" });

$reg = $t->default_registry;
$reg->{items}[0]{colour} = 'red';
$t->write_registry($reg, 'registry-unknownfield.json');
refused('unknown field in the registry', qr{colour},
    directives => { gov_pay_registry => "$dir/registry-unknownfield.json" });

$t->write_file('registry-notjson.json', '{"units": [');
refused('registry that is not JSON', qr{registry-notjson\.json},
    directives => { gov_pay_registry => "$dir/registry-notjson.json" });

$reg = $t->default_registry;
push @{ $reg->{units}[0]{items} }, '999999';
$t->write_registry($reg, 'registry-unknownitem.json');
refused('unit allowed an item that is not in the catalogue', qr{999999},
    directives => { gov_pay_registry => "$dir/registry-unknownitem.json" });

# directives in the wrong place
my ($rc2, $out2) = $t->nginx_t(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;
        gov_pay_shards 16;
        location /v1/ { gov_pay_api; }
    }
EOF
isnt $rc2, 0, 'gov_pay_shards inside server{} fails nginx -t';
like $out2, qr{"gov_pay_shards" directive is not allowed here}, 'and says so' or diag $out2;

# the main error log saw none of it
ok !$t->bad_log_lines, 'no [emerg] reached the main error log';

done_testing;
