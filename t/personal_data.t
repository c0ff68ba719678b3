#!/usr/bin/perl

# Personal data at rest (docs/internals.md, "Personal data at rest"): the
# payer's name and ID number are stored sealed with SM4-GCM (a key id in each
# record) beside the masked forms the pages show. They appear in full only in
# the creating unit's GET answer and in the receipt document; nothing else in
# Redis, the logs, the stream entries or the webhooks holds them. Keys rotate
# (a new first key seals, old records open while their key is listed,
# `gov-pay-worker pii reseal` moves them), and a sealed value copied into
# another notice or field does not open. A bad key file fails `nginx -t` and
# `gov-pay-worker -t`.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(encode_utf8);
use Test::More;
use GovPay::Test;
use GovPay::Webhook;

my $UNIT  = $GovPay::Test::UNIT;
my $UNIT2 = $GovPay::Test::UNIT2;
my $BANK  = 'BANK-PII-001';

my $t = GovPay::Test->new;
my $r;

my $hook = GovPay::Webhook->start($t, name => 'unit');

$t->new_unit_secret($BANK);
my $reg = $t->default_registry;
$reg->{units}[0]{webhook} = $hook->url('/hooks/govpay');
push @{ $reg->{units} }, { id => $BANK, name => '测试银行', scheme => 'GOVPAY-HMAC-SHA256',
                           secret_file => "keys/$BANK.secret", kind => 'bank' };
$t->write_registry($reg);
$t->write_file('keys/lookup.key', random_string(40) . "\n");

my $CONF = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location /q/ { gov_pay_payer; }
        location /o/ { gov_pay_payer; }
        location /bank/v1/ { gov_pay_bank; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
    }
EOF
my %DIRECTIVES = (directives => { gov_pay_lookup_key => $t->dir . '/keys/lookup.key' });

# the payers of this file: names no fixture uses, random ID numbers
sub new_id { valid_id_no('330106' . (1960 + int(rand 40)) . '0' . (1 + int(rand 9))
                         . sprintf('%02d', 10 + int(rand 18)) . random_string(3, '0123456789')) }
my %A = (type => 'person', name => '司马相如', id_no => new_id());
my %B = (type => 'person', name => '卓文君', id_no => new_id());
my %C = (type => 'person', name => '东方朔', id_no => new_id());
my @PAYERS = (\%A, \%B, \%C);

# the full forms of every payer as they could appear in bytes: UTF-8, JSON's
# \u escapes, the ID number in either case
my @FULL = map {
    my $p = $_;
    (encode_utf8($p->{name}), lc(join '', map { sprintf '\\u%04x', ord } split //, $p->{name}),
     $p->{id_no})
} @PAYERS;

# the full forms found in a text (none: an empty list)
sub full_forms_in {
    my ($text) = @_;
    return () unless defined $text;
    $text = encode_utf8($text) if utf8::is_utf8($text);
    my $lc = lc $text;
    return grep { index($lc, lc $_) >= 0 } @FULL;
}

sub masked_id { substr($_[0], 0, 4) . ('*' x 10) . substr($_[0], 14) }

my $pii_keys = $t->pii_key_file;
my $key1 = random_hex(32);
my $key2 = random_hex(32);
$t->write_pii_keys([ k1 => $key1 ]);

###############################################################################
# a bad key file fails nginx -t, naming the file and the line, never a key

{
    my ($rc, $out) = $t->nginx_t($CONF, directives => { gov_pay_pii_key => $t->dir . '/keys/none.keys' });
    isnt $rc, 0, 'nginx -t fails when the pii key file is missing';
    like $out, qr/gov_pay_pii_key.*none\.keys.*cannot open/, 'naming the directive and the file';

    $t->write_file('keys/bad.keys', "k1 $key1\nk2 $key2" . "ff\n");
    ($rc, $out) = $t->nginx_t($CONF, directives => { gov_pay_pii_key => $t->dir . '/keys/bad.keys' });
    isnt $rc, 0, 'nginx -t fails on a key of 34 hex digits';
    like $out, qr/bad\.keys" line 2: the key must be 32 hex digits/,
        'naming the file and the line of the bad key';
    ok !grep({ index($out, $_) >= 0 } $key1, $key2), 'without quoting any key';

    $t->write_file('keys/bad.keys', "k1 $key1\n$key2\n");
    ($rc, $out) = $t->nginx_t($CONF, directives => { gov_pay_pii_key => $t->dir . '/keys/bad.keys' });
    isnt $rc, 0, 'nginx -t fails on a key without its key id';
    like $out, qr/bad\.keys" line 2: the key id looks like a key/, 'naming the line';
    ok index($out, $key2) < 0, 'without quoting the key';

    $t->write_file('keys/bad.keys', "# nothing\n");
    ($rc, $out) = $t->nginx_t($CONF, directives => { gov_pay_pii_key => $t->dir . '/keys/bad.keys' });
    isnt $rc, 0, 'nginx -t fails on a key file without a key';
    like $out, qr/bad\.keys": no key/, 'saying so';

    ($rc, $out) = $t->nginx_t($CONF, directives => { gov_pay_pii_key => undef });
    isnt $rc, 0, 'nginx -t fails when the unit API is on without gov_pay_pii_key';
    like $out, qr/"gov_pay_api" needs "gov_pay_pii_key"/, 'saying the API needs it';

    ($rc, $out) = $t->nginx_t(<<'EOF', directives => { gov_pay_pii_key => undef });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /q/ { gov_pay_payer; }
    }
EOF
    is $rc, 0, 'payer pages alone need no pii key (they never open anything)' or diag $out;
}

###############################################################################
# ... and gov-pay-worker -t

sub worker_t {
    my (%o) = @_;
    my $cfg = $t->write_file('worker-t.json', JSON::XS->new->utf8->canonical->encode(
        { %{ $t->worker_config }, %o }));
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        my @cmd = (GovPay::Test::worker_prefix(), GovPay::Test::worker_path(), '-t', '-c', $cfg);
        exec { $cmd[0] } @cmd;
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

{
    $t->write_file('keys/bad.keys', "k1 $key1\nk-2 0123\n");
    my ($rc, $out) = worker_t(pii_key => 'keys/bad.keys');
    is $rc, 1, 'gov-pay-worker -t fails on a bad pii key file';
    like $out, qr/"pii_key":.*keys\/bad\.keys" line 2/,
        'naming worker.json\'s field, the file (relative to worker.json) and the line';
    ok index($out, $key1) < 0, 'without quoting a key';

    my $cfg = { %{ $t->worker_config } };
    delete $cfg->{pii_key};
    $t->write_file('worker-t.json', JSON::XS->new->utf8->encode($cfg));
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        my @cmd = (GovPay::Test::worker_prefix(), GovPay::Test::worker_path(), '-t', '-c',
                   $t->dir . '/worker-t.json');
        exec { $cmd[0] } @cmd;
    }
    $out = do { local $/; <$fh> // '' };
    close $fh;
    is $? >> 8, 1, 'gov-pay-worker -t fails when the receipt plugin has no pii key';
    like $out, qr/plugin "receipt": needs "pii_key"/, 'saying the receipt plugin needs it';

    ($rc, $out) = worker_t(pii_key => 'keys/pii.keys');
    is $rc, 0, 'gov-pay-worker -t accepts the key file' or diag $out;
}

###############################################################################
# create: what is stored

$t->start_redis;
$r = $t->redis;
# the edge that runs also serves /r/ (the receipt page opens sealed receipts)
my (undef, $issuer_pub) = $t->issuer_keys('sm2');
(my $CONF_R = $CONF) =~ s/^    \}\n\z/        location \/r\/ { gov_pay_receipt; }\n    }\n/m;
$t->start_nginx($CONF_R, directives => { %{ $DIRECTIVES{directives} },
    gov_pay_receipt_key => "sm2 $issuer_pub TEST-SM2-01" });

my $bodyA = $t->notice_body(amount => 125000, payer => \%A);
my $resA = $t->signed_request(POST => '/v1/notices', $bodyA);
is $resA->status, 201, 'a notice is created' or diag $resA->describe;
my $nA = $resA->json // {};
my $codeA = $nA->{payment_code} // random_code();
ok !exists $nA->{payer}, 'the create answer carries no payer';

my ($keyA, $hA) = $t->stored_notice($bodyA->{request_id});
$hA //= {};
is $hA->{payer_name_masked}, encode_utf8('司***'), 'the stored notice has the masked name (司***)';
is $hA->{payer_id_masked}, masked_id($A{id_no}), 'and the masked ID number (3301**********dddd)';
like $hA->{payer_name_sealed} // '', qr{^k1:[A-Za-z0-9+/]{40,}={0,2}$}, 'and the name sealed under k1';
like $hA->{payer_id_sealed} // '', qr{^k1:[A-Za-z0-9+/]{40,}={0,2}$}, 'and the ID number sealed under k1';
ok !exists $hA->{payer_name} && !exists $hA->{payer_id}, 'and neither in clear';

# every key of the store with all it holds: hash fields and values, strings,
# set members, stream entries
sub store_by_key {
    my %by;
    for my $k ($t->redis_keys) {
        my @parts = ($k);
        my $type = $r->type($k);
        if ($type eq 'string') { push @parts, $r->get($k) // '' }
        elsif ($type eq 'hash') { push @parts, $r->hgetall($k) }
        elsif ($type eq 'set') { push @parts, $r->smembers($k) }
        elsif ($type eq 'zset') { push @parts, $r->zrange($k, 0, -1) }
        elsif ($type eq 'list') { push @parts, $r->lrange($k, 0, -1) }
        elsif ($type eq 'stream') {
            push @parts, map { ($_->[0], @{ $_->[1] }) } @{ $r->xrange($k, '-', '+') };
        }
        else { push @parts, "<$type>" }
        $by{$k} = join "\n", @parts;
    }
    return \%by;
}

sub store_text { join "\n", values %{ store_by_key() } }

my $bodyB = $t->notice_body(amount => 2000, item_code => '103002', payer => \%B);
my $nB = $t->signed_request(POST => '/v1/notices', $bodyB)->json // {};
my $codeB = $nB->{payment_code} // random_code();

my @found = full_forms_in(store_text());
ok !@found, 'after two creates, nothing in Redis holds a full name or ID number'
    or diag "found: @found";

###############################################################################
# opened only for the creating unit

my $g = $t->get_notice($codeA);
is $g->status, 200, 'the creating unit reads its notice' or diag $g->describe;
is_deeply $g->json->{payer}, \%A, 'its answer has the payer in full: type, name, id_no';
is scalar(full_forms_in($g->body)), 2,
    'the checks of this file find a full name and ID number where they are';

$g = $t->get_notice($codeA, unit => $UNIT2);
is $g->status, 404, "another unit's read is 404";
ok !full_forms_in($g->body), 'and says nothing of the payer';

###############################################################################
# everywhere else: the masked forms

my $page = $t->get("/q/$codeA", headers => { 'User-Agent' => 'Mozilla/5.0 (X11; Linux x86_64)' });
is $page->status, 200, 'the cashier page answers';
like $page->text, qr/司\*\*\*/, 'the cashier page shows the masked name';
like $page->text, qr/\Q${\ masked_id($A{id_no})}\E/, 'and the masked ID number';
ok !full_forms_in($page->body), 'and neither in full';

my $bank = $t->signed_request(GET => "/bank/v1/notices/$codeA", undef, unit => $BANK);
is $bank->status, 200, "the bank's view answers" or diag $bank->describe;
is $bank->json->{payer_name}, '司***', "the bank's view has the masked name";
is $bank->json->{payer_id}, masked_id($A{id_no}), 'and the masked ID number';
ok !full_forms_in($bank->body), 'and neither in full';

my $open = $t->request(POST => '/o/103001', body => "q=$A{id_no}",
                       headers => { 'Content-Type' => 'application/x-www-form-urlencoded' });
is $open->status, 200, 'a lookup of the open per-item code by ID number answers';
like $open->text, qr{href="/q/$codeA"}, 'it finds the notice (the ID-number index is unchanged)';
like $open->text, qr/司\*\*\*/, 'and shows the masked name';
ok !full_forms_in($open->body), 'and no full name or ID number';

###############################################################################
# paid: the receipt carries the payer in full, the webhooks do not

$t->start_worker(plugins => {
    receipt => $t->receipt_config,
    notify  => { public_url => $t->public_url, timeout_ms => 2000, poll_ms => 200 },
});

is $t->sandbox_pay($nA, trade_no => 'SBX-PII-A')->body, 'success', 'the notice is paid';

my $issued = wait_for(sub {
    my $x = $t->get_notice($codeA);
    return $x->status == 200 && ref $x->json->{receipt} eq 'HASH' ? $x->json : 0;
}, 15, 'the receipt');
ok $issued, 'a receipt is issued' or diag $t->worker_log;

my ($shardA, $seqA) = ($keyA // '') =~ /^\{gp(\d+)\}:n:(\d+)$/;
my $rcA = $issued ? $issued->{receipt} : {};
my $doc = json_decode($t->receipt_open($r->get("{gp$shardA}:rcpt:$seqA"), $rcA->{code} // '',
                                       $rcA->{number} // '') // '') // {};
is $doc->{PayerPartyName}, $A{name}, 'the receipt document, opened, names the payer in full';
is $doc->{PayerPartyCode}, $A{id_no}, 'and carries the full ID number';
is $doc->{PayerPartyType}, '1', 'of a person';

my @entries = $t->ledger_entries($issued ? $issued->{receipt}{code} : 'none');
my $ledger_doc = json_decode($entries[-1]{doc} // '') // {};
is $ledger_doc->{PayerPartyCode}, $A{id_no}, 'the sealed receipt in the ledger carries the full ID number';

my @hooks = @{ wait_for(sub { my @x = $hook->received; @x >= 2 ? \@x : 0 }, 15,
                        'two webhooks') // [] };
is scalar @hooks, 2, 'the unit gets notice.paid and receipt.issued';
ok !grep({ full_forms_in($_->{body}) } @hooks), 'no delivered webhook body holds a full name or ID number';
ok !grep({ exists((json_decode($_->{body}) // {})->{data}{payer}) } @hooks),
    'a webhook has no payer object (the GET answer has, for the creating unit alone)';

$page = $t->get("/q/$codeA", headers => { 'User-Agent' => 'Mozilla/5.0 (X11; Linux x86_64)' });
like $page->text, qr/司\*\*\*/, 'the paid page shows the masked name';
ok !full_forms_in($page->body), 'and not the full one';

# after the payment and its receipt, no value in Redis holds the full payer:
# the receipt's document and PDF are sealed under the pii key like the
# notice's fields (docs/internals.md), every key, string and hash field
my $by = store_by_key();
my @holding = sort grep { full_forms_in($by->{$_}) } keys %$by;
ok scalar(grep { /^\{gpr\}:r:/ } keys %$by) && scalar(grep { /^\{gp\d+\}:rcpt:/ } keys %$by),
    'after the receipt, redis has its record and its document';
is_deeply \@holding, [], 'and no key of redis holds the full name or ID number in clear'
    or diag "holding: @holding";
ok !grep({ index($by->{$_}, $A{id_no}) >= 0 || index(encode_utf8($by->{$_}), encode_utf8($A{name})) >= 0 } keys %$by),
    'not the ID number, not the name, in any string or hash field';

# the receipt still shows and prints, opened by the module
my $rurl = "/r/" . ($rcA->{code} // '') . "/" . ($rcA->{number} // '') . "?c=" . ($rcA->{check_code} // '');
my $rpage = $t->get($rurl, headers => { Accept => 'application/json' });
is $rpage->status, 200, 'the receipt page answers';
ok $rpage->json && $rpage->json->{verified}, 'and its seal verifies';
like $rpage->json ? $rpage->json->{receipt}{PayerPartyCode} // '' : '', qr/\*/, 'with the ID number masked';
my $pdf = $t->get("$rurl&format=pdf");
is $pdf->status, 200, 'the PDF downloads';
like $pdf->body, qr/^%PDF/, 'and is a PDF';

# a document that does not open (the key no longer listed): 503, never the content
{
    my $rkey = "{gpr}:r:" . ($rcA->{code} // '') . ":" . ($rcA->{number} // '');
    my $good = $r->hget($rkey, 'doc');
    $r->hset($rkey, 'doc', 'gone:' . substr($good // 'x:AAAA', index($good // 'x:', ':') + 1));
    my $bad = $t->get($rurl, headers => { Accept => 'application/json' });
    is $bad->status, 503, 'a receipt whose document does not open answers 503';
    ok !full_forms_in($bad->body), 'and shows nothing of it';
    like $t->get($rurl)->text, qr/\S/, 'the HTML page answers too';
    like GovPay::Test::_read_file($t->error_log) // "", qr/receipt_doc of receipt \d{8}\/\d{10} does not open \(key id "gone"\)/,
        'the log names the receipt and the key id';
    $r->hset($rkey, 'doc', $good);
    is $t->get($rurl, headers => { Accept => 'application/json' })->status, 200,
        'the record restored answers again';
}

my @stream = map { join ' ', %{ $_->{fields} } } $t->stream_entries('settled'), $t->stream_entries('dead');
ok scalar @stream >= 2, 'the settled streams hold the paid and issued events';
ok !grep({ full_forms_in($_) } @stream), 'no stream entry holds a full name or ID number';

###############################################################################
# key rotation: a new first key seals, the old one still opens

$t->write_pii_keys([ k2 => $key2, k1 => $key1 ]);
$t->stop_worker('w1');                       # the worker learns k2 first
$t->start_worker(plugins => { receipt => $t->receipt_config });
ok $t->reload_nginx, 'nginx reloads with k2 first and k1 second';

my $bodyC = $t->notice_body(amount => 3000, payer => \%C);
my $nC = $t->signed_request(POST => '/v1/notices', $bodyC)->json // {};
my $codeC = $nC->{payment_code} // random_code();
my (undef, $hC) = $t->stored_notice($bodyC->{request_id});
like $hC && $hC->{payer_id_sealed}, qr/^k2:/, 'a notice created after the rotation is sealed under k2';

is_deeply $t->get_notice($codeC)->json->{payer}, \%C, 'it opens';
is_deeply $t->get_notice($codeB)->json->{payer}, \%B, 'a notice sealed under k1 still opens';

# a notice an edge older than sealing stored in clear
my $bodyL = $t->notice_body(amount => 4000, payer => \%B);
my $nL = $t->signed_request(POST => '/v1/notices', $bodyL)->json // {};
my ($keyL) = $t->stored_notice($bodyL->{request_id});
$r->hdel($keyL, qw(payer_name_sealed payer_id_sealed payer_name_masked payer_id_masked));
$r->hset($keyL, payer_name => encode_utf8($B{name}), payer_id => $B{id_no});

my ($rc, $out, $err) = GovPay::Webhook::run_command($t, 'w1', 'pii', 'status');
is $rc, 0, 'pii status runs' or diag $err;
like $out, qr/sealed under "k1": 2\b/, 'pii status: two notices under k1';
like $out, qr/sealed under "k2": 1 \(the key that seals\)/, 'one under k2, the key that seals';
like $out, qr/in clear: 1\b/, 'one in clear';
like $out, qr/receipts sealed under "k1": 3\b/,
    'pii status: the receipt of k1 (its document, its PDF, the document beside the notice)';
ok !full_forms_in("$out$err"), 'it prints no payer';

($rc, $out, $err) = GovPay::Webhook::run_command($t, 'w1', 'pii', 'reseal');
is $rc, 0, 'pii reseal runs' or diag "$out$err";
like $out, qr/4 notices scanned/, 'pii reseal scans every notice';
like $out, qr/resealed under "k2": +2\b/, 'it reseals the two notices of k1 under k2';
like $out, qr/sealed from clear: +1\b/, 'it seals the one in clear';
like $out, qr/already under "k2": +1\b/, 'it leaves the one of k2';
like $out, qr/receipts resealed under "k2": +3\b/, 'it reseals the receipt\'s three values under k2';
like $out, qr/receipts failed: +0\b/, 'none fails';
ok !full_forms_in("$out$err"), 'it prints no payer';

my (undef, $hL) = $t->stored_notice($bodyL->{request_id});
ok !exists $hL->{payer_name} && !exists $hL->{payer_id}, 'the notice in clear is clear no more';
is $hL->{payer_name_masked}, encode_utf8('卓**'), 'it has the masked name';
like $hL->{payer_id_sealed}, qr/^k2:/, 'and its ID number sealed under k2';

($rc, $out) = GovPay::Webhook::run_command($t, 'w1', 'pii', 'reseal');
is $rc, 0, 'pii reseal runs again';
like $out, qr/resealed under "k2": +0\b.*already under "k2": +4\b/s,
    'and changes nothing: it is idempotent';

@found = full_forms_in(join "\n", map { join ' ', %{ ($t->stored_notice($_->{request_id}))[1] // {} } }
                                   $bodyA, $bodyB, $bodyC, $bodyL);
ok !@found, 'no notice holds a full name or ID number after the reseal' or diag "found: @found";

# k1 retired
$t->write_pii_keys([ k2 => $key2 ]);
$t->stop_worker('w1');
$t->start_worker(plugins => { receipt => $t->receipt_config });
ok $t->reload_nginx, 'nginx reloads without k1';

is_deeply $t->get_notice($codeA)->json->{payer}, \%A, 'the first notice still opens';
is_deeply $t->get_notice($codeB)->json->{payer}, \%B, 'the second too';
is_deeply $t->get_notice($codeC)->json->{payer}, \%C, 'the third too';
is_deeply $t->get_notice($nL->{payment_code} // random_code())->json->{payer},
    \%B, 'and the one that was in clear';

($rc, $out) = GovPay::Webhook::run_command($t, 'w1', 'pii', 'status');
unlike $out, qr/"k1"/, 'pii status: nothing is left under k1';
like $out, qr/receipts sealed under "k2": 3 \(the key that seals\)/, 'the receipt is under k2';

{
    my $pj = $t->get($rurl, headers => { Accept => 'application/json' });
    is $pj->status, 200, 'the receipt resealed under k2 still shows with k1 retired';
    ok $pj->json && $pj->json->{verified}, 'and its seal verifies';
    like $t->get("$rurl&format=pdf")->body, qr/^%PDF/, 'and its PDF downloads';
}

is $t->sandbox_pay($nC, trade_no => 'SBX-PII-C')->body, 'success', 'the third notice is paid';
my $issuedC = wait_for(sub {
    my $x = $t->get_notice($codeC);
    return $x->status == 200 && ref $x->json->{receipt} eq 'HASH' ? $x->json : 0;
}, 15, 'the third receipt');
my ($shardC, $seqC) = (($t->stored_notice($bodyC->{request_id}))[0] // '') =~ /^\{gp(\d+)\}:n:(\d+)$/;
my $docC = json_decode($t->receipt_open($r->get("{gp$shardC}:rcpt:$seqC"),
    $issuedC ? $issuedC->{receipt}{code} : '', $issuedC ? $issuedC->{receipt}{number} : '') // '') // {};
is $docC->{PayerPartyCode}, $C{id_no}, 'its receipt carries the full ID number, opened under k2';

###############################################################################
# a sealed value moved to another notice or field does not open

my (undef, $hB) = $t->stored_notice($bodyB->{request_id});
my ($keyB) = $t->stored_notice($bodyB->{request_id});
my (undef, $hA2) = $t->stored_notice($bodyA->{request_id});
$r->hset($keyB, payer_name_sealed => $hA2->{payer_name_sealed},
                payer_id_sealed => $hA2->{payer_id_sealed});

$g = $t->get_notice($codeB);
is $g->status, 500, "a notice holding another notice's sealed payer answers 500";
is $g->error_code, 'INTERNAL', 'INTERNAL';
ok !full_forms_in($g->body), 'and says nothing of either payer';
like $t->error_log_text, qr/payer_name_sealed of notice $codeB does not open \(key id "k2"\): does not authenticate/,
    'the error log names the notice, the field and the key id';

$page = $t->get("/q/$codeB", headers => { 'User-Agent' => 'Mozilla/5.0 (X11; Linux x86_64)' });
is $page->status, 200, 'its cashier page still shows (the page never opens the sealed values)';
like $page->text, qr/卓\*\*/, 'with its own masked name';

$r->hset($keyB, payer_name_sealed => $hB->{payer_id_sealed}, payer_id_sealed => $hB->{payer_id_sealed});
$g = $t->get_notice($codeB);
is $g->status, 500, 'a sealed ID number moved into the name field of the same notice does not open';

$r->hset($keyB, payer_name_sealed => $hB->{payer_name_sealed}, payer_id_sealed => $hB->{payer_id_sealed});
is_deeply $t->get_notice($codeB)->json->{payer}, \%B, 'put back, the payer opens again';

# the receipt plugin refuses a moved value: a dead letter, no receipt
$r->hset($keyB, payer_id_sealed => $hA2->{payer_id_sealed});
is $t->sandbox_pay($nB, trade_no => 'SBX-PII-B')->body, 'success', 'that notice is paid';
my ($shardB) = $keyB =~ /^\{gp(\d+)\}/;
my $dead = wait_for(sub {
    my @d = grep { ($_->{fields}{plugin} // '') eq 'receipt' && ($_->{fields}{payment_code} // '') eq $codeB }
        $t->stream_entries('dead');
    return @d ? $d[0] : 0;
}, 15, 'the dead letter of the receipt plugin');
ok $dead, 'the receipt plugin dead-letters the paid event' or diag $t->worker_log;
like $dead && $dead->{fields}{error}, qr/payer_id_sealed does not open \(key id "k2"\): does not authenticate/,
    'saying which field does not open, under which key id';
ok !full_forms_in(join ' ', %{ $dead ? $dead->{fields} : {} }), 'the dead letter holds no payer';
ok !$t->get_notice($codeB)->json->{receipt}, 'no receipt is issued for it';
$r->hset($keyB, payer_id_sealed => $hB->{payer_id_sealed});

###############################################################################
# the logs hold no full name or ID number

$t->check_error_log;
for my $log ([ 'error.log' => $t->error_log_text ],
             [ 'access.log' => GovPay::Test::_read_file($t->dir . '/access.log') ],
             [ 'the worker log' => $t->worker_log ],
             [ 'the webhook log' => GovPay::Test::_read_file($t->dir . '/webhook-unit.jsonl') ]) {
    my @f = full_forms_in($log->[1]);
    ok !@f, "$log->[0] holds no full name or ID number" or diag "found: @f";
}

done_testing;
