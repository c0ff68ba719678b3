#!/usr/bin/perl

# Keys of the asymmetric schemes are checked by `nginx -t`: a unit's public
# key file (registry "key_file") that is missing, not a file, empty, of the
# wrong type or too short fails with a message naming the unit and the file;
# an RSA or SM2 unit needs `gov_pay_platform_key` of its family; the
# platform key must be a private key of the family it is declared as.

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
    }
EOF

my $RSA_UNIT = '330100-RSA-001';
my $SM2_UNIT = '330100-SM2-001';

my $rsa_entry = $t->add_unit(id => $RSA_UNIT, scheme => 'GOVPAY-RSA-SHA256');
my $sm2_entry = $t->add_unit(id => $SM2_UNIT, scheme => 'GOVPAY-SM2-SM3');
my @platform = ($t->new_platform_key('rsa'), $t->new_platform_key('sm2'));

my ($rsa_priv, $rsa_pub) = ("$dir/keys/$RSA_UNIT.key", "$dir/keys/$RSA_UNIT.pub");
my (undef, $rsa1024_pub) = $t->new_key_pair('rsa1024', 'rsa', bits => 1024);
my ($sm2_other_priv) = $t->new_key_pair('sm2-other', 'sm2');
$t->write_file('keys/empty.pub', '');
$t->write_file('keys/garbage.pub', "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n"
               . "-----END PUBLIC KEY-----\n");

# registry-<name>.json: the default registry plus the RSA and SM2 units,
# with %change applied to the unit $which
sub registry_with {
    my ($name, $which, %change) = @_;
    my $reg = $t->default_registry;
    for my $e ($rsa_entry, $sm2_entry) {
        my %u = %$e;
        if ($u{id} eq ($which // '')) {
            for my $k (keys %change) {
                if (defined $change{$k}) { $u{$k} = $change{$k} } else { delete $u{$k} }
            }
        }
        push @{ $reg->{units} }, \%u;
    }
    $t->write_registry($reg, "registry-$name.json");
    return "$dir/registry-$name.json";
}

my ($rc, $out) = $t->nginx_t($CONF, directives => {
    gov_pay_registry => registry_with('good'), gov_pay_platform_key => \@platform });
is $rc, 0, 'RSA and SM2 units with their public keys and both platform keys pass nginx -t'
    or diag $out;

sub refused {
    my ($name, $want, %o) = @_;
    my ($rc, $out) = $t->nginx_t($CONF, %o);
    isnt $rc, 0, "$name fails nginx -t";
    for my $w (ref $want eq 'ARRAY' ? @$want : $want) {
        like $out, $w, "$name: the message names $w" or diag $out;
    }
    like $out, qr/\[emerg\]/, "$name is reported at emerg level";
}

sub unit_refused {
    my ($name, $unit, $file, %change) = @_;
    my $reg = registry_with($name =~ s/\W+/-/gr, $unit, %change);
    refused($name, [ qr/\Q$unit\E/, qr/\Q$file\E/ ],
            directives => { gov_pay_registry => $reg, gov_pay_platform_key => \@platform });
}

###############################################################################
# the unit's key file

unit_refused('RSA unit whose key file is missing', $RSA_UNIT, 'nonexistent.pub',
             key_file => 'keys/nonexistent.pub');
unit_refused('SM2 unit whose key file is missing', $SM2_UNIT, 'nonexistent.pub',
             key_file => 'keys/nonexistent.pub');

# tests run as root in CI, where chmod 000 does not stop a read: a directory
# and an empty file are the unreadable keys here
unit_refused('RSA unit whose key file is a directory', $RSA_UNIT, qq{"$dir/keys"},
             key_file => 'keys');
unit_refused('SM2 unit whose key file is empty', $SM2_UNIT, 'empty.pub',
             key_file => 'keys/empty.pub');
unit_refused('RSA unit whose key file is not PEM', $RSA_UNIT, 'garbage.pub',
             key_file => 'keys/garbage.pub');

unit_refused('SM2 unit with an RSA public key', $SM2_UNIT, "$RSA_UNIT.pub",
             key_file => "keys/$RSA_UNIT.pub");
unit_refused('RSA unit with an SM2 public key', $RSA_UNIT, "$SM2_UNIT.pub",
             key_file => "keys/$SM2_UNIT.pub");
unit_refused('RSA unit with a 1024-bit RSA key', $RSA_UNIT, 'rsa1024.pub',
             key_file => 'keys/rsa1024.pub');

# SM2 is its own curve: an EC key on NIST P-256 is not an SM2 key
{
    my $p256 = "$dir/keys/p256.pub";
    GovPay::Test::openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256',
                          '-out', "$dir/keys/p256.key");
    GovPay::Test::openssl('pkey', '-in', "$dir/keys/p256.key", '-pubout', '-out', $p256);
    unit_refused('SM2 unit with an EC key on NIST P-256', $SM2_UNIT, 'p256.pub',
                 key_file => 'keys/p256.pub');
}

# the edge must never hold a unit's private key: a private key where the
# public key belongs is refused (PEM "PRIVATE KEY" is not a public key)
unit_refused('RSA unit with its private key as key_file', $RSA_UNIT, "$RSA_UNIT.key",
             key_file => "keys/$RSA_UNIT.key");
unit_refused('SM2 unit with a private key as key_file', $SM2_UNIT, 'sm2-other.key',
             key_file => 'keys/sm2-other.key');

# the registry fields of the asymmetric schemes
{
    my $reg = registry_with('rsa-secret', $RSA_UNIT, key_file => undef,
                            secret_file => "keys/330100-TEST-001.secret");
    refused('RSA unit with a secret_file and no key_file', qr/\Q$RSA_UNIT\E/,
            directives => { gov_pay_registry => $reg, gov_pay_platform_key => \@platform });
}

###############################################################################
# platform keys

for my $case ([ $RSA_UNIT, 'rsa', 'GOVPAY-RSA-SHA256' ], [ $SM2_UNIT, 'sm2', 'GOVPAY-SM2-SM3' ]) {
    my ($unit, $family, $scheme) = @$case;
    my @only = grep { !/^$family / } @platform;
    refused("$scheme unit without gov_pay_platform_key $family",
            [ qr/\Q$unit\E/, qr/gov_pay_platform_key $family/ ],
            directives => { gov_pay_registry => registry_with('good'),
                            gov_pay_platform_key => \@only });
}

refused('gov_pay_platform_key sm2 pointing at an RSA key', qr/\Q$rsa_priv\E/,
        directives => { gov_pay_registry => registry_with('good'),
                        gov_pay_platform_key => [ $platform[0], "sm2 $rsa_priv SM2-1" ] });
refused('gov_pay_platform_key rsa pointing at an SM2 key', qr/\Q$sm2_other_priv\E/,
        directives => { gov_pay_registry => registry_with('good'),
                        gov_pay_platform_key => [ "rsa $sm2_other_priv RSA-1", $platform[1] ] });
refused('gov_pay_platform_key rsa pointing at a public key', qr/\Q$rsa_pub\E/,
        directives => { gov_pay_registry => registry_with('good'),
                        gov_pay_platform_key => [ "rsa $rsa_pub RSA-1", $platform[1] ] });
refused('gov_pay_platform_key with a missing file', qr/nonexistent-platform\.key/,
        directives => { gov_pay_registry => registry_with('good'),
                        gov_pay_platform_key => [ "rsa $dir/keys/nonexistent-platform.key RSA-1",
                                                  $platform[1] ] });
refused('gov_pay_platform_key with the family word "ecdsa"', qr/ecdsa/,
        directives => { gov_pay_registry => registry_with('good'),
                        gov_pay_platform_key => [ "ecdsa $rsa_priv X-1", @platform ] });
refused('gov_pay_platform_key rsa given twice', qr/gov_pay_platform_key/,
        directives => { gov_pay_registry => registry_with('good'),
                        gov_pay_platform_key => [ @platform, $platform[0] ] });
refused('gov_pay_platform_key with a serial of 65 characters', qr/serial/,
        directives => { gov_pay_registry => registry_with('good'),
                        gov_pay_platform_key => [ "rsa $t->{platform}{rsa}{key} " . ('S' x 65),
                                                  $platform[1] ] });

# HMAC units only: no platform key is needed
($rc, $out) = $t->nginx_t($CONF, directives => { gov_pay_platform_key => undef });
is $rc, 0, 'a registry of HMAC units needs no gov_pay_platform_key' or diag $out;

ok !$t->bad_log_lines, 'no [emerg] reached the main error log';

done_testing;
