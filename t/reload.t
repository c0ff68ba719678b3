#!/usr/bin/perl

# Reload (docs/internals.md: the registry is "read at start and on reload"):
# a unit added to the registry works after `nginx -s reload`; a reload with a
# broken registry is refused and the running configuration keeps serving;
# notices survive reloads.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
$t->start_redis;
my $CONF = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
    }
EOF
$t->start_nginx($CONF);

my $NEW = '330100-TEST-003';
my $secret = $t->new_unit_secret($NEW);

my $n = $t->new_notice(amount => 3000);

my $res = $t->create_notice(_opts => { unit => $NEW, secret => $secret });
is $res->status, 401, 'a unit not yet in the registry is refused';
is $res->error_code, 'UNAUTHENTICATED', 'and is UNAUTHENTICATED';

# add the unit and reload
my $reg = $t->default_registry;
push @{ $reg->{units} }, { id => $NEW, name => '测试单位三', scheme => 'GOVPAY-HMAC-SHA256',
                           secret_file => "keys/$NEW.secret", items => ['103001'] };
$t->write_registry($reg);
ok $t->reload_nginx, 'nginx reloads with the new registry';

$res = $t->create_notice(_opts => { unit => $NEW, secret => $secret });
is $res->status, 201, 'the unit added to the registry creates notices after reload'
    or diag $res->describe;
$t->verify_response_signature($res, 'and its responses are signed with its secret', $NEW);

$res = $t->get_notice($n->{payment_code});
is $res->status, 200, 'a notice created before the reload is still readable';
is $t->get("/q/$n->{payment_code}")->status, 200, 'and its QR page still works';

# a broken registry: the reload is refused, the old configuration serves on
my @workers = $t->nginx_workers;
$t->write_file('registry.json', '{"units": [');
kill 'HUP', $t->nginx_pid;
ok wait_for(sub { $t->error_log_text =~ /registry\.json/ && $t->error_log_text =~ /\[emerg\]/ }, 5,
            'the refused reload to be logged'), 'a reload with a broken registry is refused with [emerg]';
is_deeply [ sort $t->nginx_workers ], [ sort @workers ], 'the running workers stay';
$res = $t->create_notice(_opts => { unit => $NEW, secret => $secret });
is $res->status, 201, 'the running configuration keeps serving after a refused reload'
    or diag $res->describe;

# the [emerg] above is expected; nothing else may be alarming
$t->check_error_log(allow => qr/registry\.json/,
                    name => 'no alert, emerg or sanitizer report besides the refused reload');

done_testing;
