#!/usr/bin/perl

# The payer pages' templates (docs/payer.md, "Templates"): ops restyle their
# own copy of conf/templates/ (gov_pay_templates), read when the
# configuration is read; a broken or missing template, a bad User-Agent
# route or an unknown channel fails nginx -t with a message that says where.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(encode_utf8);
use File::Copy qw(copy);
use File::Path qw(make_path);
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
my $dir = $t->dir;
my $src = GovPay::Test::repo_root() . '/conf/templates';

sub copy_templates {
    my ($to) = @_;
    make_path($to);
    opendir my $d, $src or die "$src: $!";
    for my $f (grep { !/^\./ } readdir $d) {
        copy("$src/$f", "$to/$f") or die "copy $f: $!";
    }
    return $to;
}

sub edit {
    my ($file, $from, $to) = @_;
    open my $in, '<:encoding(UTF-8)', $file or die "$file: $!";
    my $text = do { local $/; <$in> };
    close $in;
    $text =~ s/\Q$from\E/$to/ or die encode_utf8("\"$from\" not in $file");
    open my $out, '>:encoding(UTF-8)', $file or die "$file: $!";
    print $out $text;
    close $out;
}

my $CONF = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
    }
EOF

# a restyled copy: the payer sees ops' markup and style
my $own = copy_templates("$dir/own");
edit("$own/cashier.html", '<h1>缴费信息</h1>', '<h1>缴费信息</h1><p class="brand-x">示范市财政局统一缴费</p>');
edit("$own/style.css", '*{box-sizing:border-box}', '*{box-sizing:border-box}.brand-x{color:#004d40}');

$t->start_redis;
$t->start_nginx($CONF, directives => { gov_pay_templates => $own });
my $n = $t->new_notice;
my $res = $t->get("/q/$n->{payment_code}");
is $res->status, 200, 'the cashier page answers with ops\' templates';
like $res->text, qr{<p class="brand-x">示范市财政局统一缴费</p>}, 'ops\' markup is on the page';
like $res->text, qr/\.brand-x\{color:#004d40\}/, 'ops\' style sheet is on the page';

# changes on disk are read on reload, never on the request path
edit("$own/cashier.html", '示范市财政局统一缴费', '示范市财政局（改版）');
like $t->get("/q/$n->{payment_code}")->text, qr/示范市财政局统一缴费/,
    'a template changed on disk is not read while serving';
$t->reload_nginx;
like $t->get("/q/$n->{payment_code}")->text, qr/示范市财政局（改版）/,
    'a reload reads the changed template';
$t->check_error_log;

sub refused {
    my ($name, $want, $snippet, %o) = @_;
    my ($rc, $out) = $t->nginx_t($snippet // $CONF, %o);
    isnt $rc, 0, "$name fails nginx -t";
    like $out, $want, "$name: the message says where" or diag $out;
}

my $broken = copy_templates("$dir/broken");
edit("$broken/paid.html", '{{/receipt_url}}</section>', '</section>');
refused('an unclosed section', qr/template "paid\.html": section "receipt_url" is never closed/,
        undef, directives => { gov_pay_templates => $broken });

my $stray = copy_templates("$dir/stray");
edit("$stray/open.html", '<h1>{{item}}</h1>', "<h1>{{item}}</h1>\n{{/nothing}}");
refused('a stray closing tag', qr/template "open\.html", line \d+: "\{\{\/nothing\}\}" closes no open section/,
        undef, directives => { gov_pay_templates => $stray });

my $open = copy_templates("$dir/unterminated");
edit("$open/message.html", '<h1>{{title}}</h1>', '<h1>{{title</h1>');
refused('an unterminated tag', qr/template "message\.html", line \d+: malformed tag "\{\{title<\/h1>/,
        undef, directives => { gov_pay_templates => $open });

my $missing = copy_templates("$dir/missing");
unlink "$missing/receipt.html";
refused('a missing template', qr{missing/receipt\.html.*failed}, undef,
        directives => { gov_pay_templates => $missing });

my $ROUTE = <<'EOF';
    ROUTES
    server {
        listen 127.0.0.1:%%PORT%%;
        location /q/ { gov_pay_payer; }
    }
EOF

sub route { (my $c = $ROUTE) =~ s/ROUTES/$_[0]/; return $c }

refused('a route to an unknown channel', qr/unknown channel "nosuch"/,
        route('gov_pay_agent_route ZJZWFW nosuch;'));
refused('a route with a bad regular expression', qr/bad User-Agent pattern "~\(unclosed"/,
        route('gov_pay_agent_route "~(unclosed" sandbox;'));

my ($rc, $out) = $t->nginx_t(route(
    'gov_pay_agent_route "~*zjzwfw" sandbox; gov_pay_agent_route DingTalk cashier;'));
is $rc, 0, 'routes to a channel and to the cashier pass nginx -t' or diag $out;

done_testing;
