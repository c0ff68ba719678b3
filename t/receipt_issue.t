#!/usr/bin/perl

# Fiscal e-receipts (API.md "Fiscal e-receipt", docs/receipts.md): numbering,
# the MOF document, the SM2 seal, the hash-chained ledger and its offline
# verification, the printable PDF with its QR code, and the public
# verification route /r/{code}/{number}?c={check}.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(decode_utf8);
use MIME::Base64 qw(decode_base64 encode_base64);
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
my ($priv, $pub) = $t->issuer_keys('sm2');
my $ledger_tool = GovPay::Test::build_dir() . '/gov-pay-ledger';

$t->start_redis;
$t->start_nginx(<<'EOF', directives => { gov_pay_receipt_key => "sm2 $pub TEST-SM2-01" });
    server {
        listen 127.0.0.1:%%PORT%%;
        location /v1/ { gov_pay_api; }
        location = /notify/sandbox { gov_pay_notify sandbox; }
        location /r/ { gov_pay_receipt; }
    }
EOF

my $r = $t->redis;
$t->start_worker;

# pays a new notice and waits for its receipt; returns (notice json, receipt)
sub paid_with_receipt {
    my (%o) = @_;
    my $n = $t->new_notice(%o);
    $t->sandbox_pay($n)->body eq 'success' or return;
    my $got = wait_for(sub {
        my $g = $t->get_notice($n->{payment_code});
        return $g->status == 200 && ref $g->json->{receipt} eq 'HASH' ? $g->json : 0;
    }, 10, 'a receipt');
    return ($got, $got ? $got->{receipt} : undef);
}

sub run {
    my @cmd = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        { exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

###############################################################################
# numbering and the document

my $lines = [ { item_code => '103001', quantity => 2, unit_price => 50000 },
              { item_code => '103002', quantity => 1, unit_price => 2000 } ];
my ($n1, $rc1) = paid_with_receipt(amount => 102000, lines => $lines,
                                   remark => '2026 秋季学费');
ok $rc1, 'a paid notice gets a receipt' or diag $t->worker_log;
my ($n2, $rc2) = paid_with_receipt(amount => 2000, item_code => '103002');
my ($n3, $rc3) = paid_with_receipt(amount => 1,
    payer => { type => 'org', name => '杭州某某科技有限公司', id_no => valid_uscc() });

my $yy = sprintf '%02d', current_yy();
is $rc1->{code}, "330101$yy", 'EInvoiceCode: region, category, kind, year (8 digits)';
is_deeply [ map { $_->{number} } $rc1, $rc2, $rc3 ],
    [ '0000000001', '0000000002', '0000000003' ],
    'EInvoiceNumber runs 1, 2, 3 without gaps (10 digits)';
like $_->{check_code}, qr/^[0-9a-z]{6}$/, 'RandomNumber is 6 of [0-9a-z]' for $rc1, $rc2;
is $r->get("{gpr}:rseq:$rc1->{code}"), 3, 'the counter stands at the last number';
like $r->get("{gpr}:head:$rc1->{code}"), qr/^3 [0-9a-f]{64}$/,
    'redis knows the ledger head (number and hash)';
is scalar(my @staged = $t->redis_keys('{gpr}:stage:*')), 0, 'nothing is left staged';

my %rec = $r->hgetall("{gpr}:r:$rc1->{code}:$rc1->{number}");
my $doc_bytes = $t->receipt_open($rec{doc}, $rc1->{code}, $rc1->{number});
ok defined $doc_bytes && $rec{doc} ne $doc_bytes,
    'redis holds the document sealed under the pii key, and it opens';
my $doc = json_decode($doc_bytes);
is $doc->{TotalAmount}, '1020.00', 'TotalAmount in yuan with two decimals';
is scalar @{ $doc->{Items} }, 2, 'one item per notice line';
is_deeply $doc->{Items}[0], { ItemCode => '103001', ItemName => '学费', ItemQuantity => 2,
    ItemStd => '500.00', ItemAmount => '1000.00' }, 'item: code, name, quantity, standard, amount';
is $doc->{Items}[1]{ItemName}, '证书工本费', 'second line from the catalogue';
is $doc->{PayerPartyType}, '1', 'PayerPartyType 1 for a person';
is $doc->{PayMode}, 'sandbox', 'PayMode is the channel';
is $doc->{Remark}, '2026 秋季学费', 'Remark from the notice';
is $doc->{BizCode}, $n1->{payment_code}, 'BizCode is the payment code';
is $doc->{EInvoiceName}, '非税收入统一票据', 'EInvoiceName';
like $doc->{IssueDate}, qr/^20\d{6}$/, 'IssueDate yyyymmdd';
like $doc->{IssueTime}, qr/^\d\d:\d\d:\d\d$/, 'IssueTime hh:mm:ss';
is $doc_bytes, json_encode($doc), 'the document is canonical: sorted keys, compact, UTF-8';
my %rec3 = $r->hgetall("{gpr}:r:$rc3->{code}:$rc3->{number}");
my $doc3 = json_decode($t->receipt_doc($rc3->{code}, $rc3->{number}) // '') // {};
is $doc3->{PayerPartyType}, '2', 'PayerPartyType 2 for an organisation';
is $doc3->{TotalAmount}, '0.01', 'one fen prints as 0.01';

###############################################################################
# the seal: checked with the public key only

my $seal = json_decode($rec{seal});
is $seal->{SealAlgorithm}, 'SM2-SM3', 'seal algorithm SM2-SM3';
is $seal->{SealKeySN}, 'TEST-SM2-01', 'seal names the key serial';
like $seal->{SealTime}, qr/\+08:00$/, 'seal has its signing time';
my $dir = $t->dir;
$t->write_file('doc.json', $doc_bytes);
$t->write_file('seal.json', $rec{seal});
$t->write_file('sig.der', decode_base64($seal->{SealValue}));
my ($rc, $out) = run('openssl', 'dgst', '-sm3', '-verify', $pub, '-sigopt',
    'distid:1234567812345678', '-signature', "$dir/sig.der", "$dir/doc.json");
is $rc, 0, 'openssl verifies the SM2 seal over the document with the public key'
    or diag $out;
($rc, $out) = run($ledger_tool, 'check-receipt', "$dir/doc.json", "$dir/seal.json",
                  '--pubkey', $pub);
is $rc, 0, 'gov-pay-ledger check-receipt accepts the receipt' or diag $out;
(my $forged = $doc_bytes) =~ s/"TotalAmount":"1020.00"/"TotalAmount":"1.00"/;
$t->write_file('forged.json', $forged);
($rc, $out) = run($ledger_tool, 'check-receipt', "$dir/forged.json", "$dir/seal.json",
                  '--pubkey', $pub);
is $rc, 1, 'check-receipt refuses a document with a changed amount';

# an auditor with the JSON page alone (docs/receipts.md, "Checking a
# receipt"): document_b64 is the document's exact bytes as sealed, seal.value
# the SealValue; openssl verifies them with the issuer's public key
{
    my $pj = $t->get("/r/$rc1->{code}/$rc1->{number}?c=$rc1->{check_code}",
                     headers => { Accept => 'application/json' })->json // {};
    my $bytes = decode_base64($pj->{document_b64} // '');
    is $bytes, $doc_bytes, 'the JSON page offers the document exactly as it was sealed';
    is $pj->{seal}{value}, $seal->{SealValue}, 'and the seal value';
    isnt $pj->{receipt}{PayerPartyCode}, json_decode($bytes)->{PayerPartyCode},
        'its readable fields are masked: they are not the sealed bytes';
    $t->write_file('page-doc.json', $bytes);
    $t->write_file('page-sig.der', decode_base64($pj->{seal}{value} // ''));
    my @cmd = ('openssl', 'dgst', '-sm3', '-verify', $pub, '-sigopt',
               'distid:1234567812345678', '-signature', "$dir/page-sig.der");
    my ($prc, $pout) = run(@cmd, "$dir/page-doc.json");
    is $prc, 0, 'openssl verifies the seal from the page alone' or diag $pout;
    like $pout, qr/Verified OK/, 'saying "Verified OK"';
    (my $flipped = $bytes) =~ s/"TotalAmount":"1020.00"/"TotalAmount":"1020.01"/;
    isnt $flipped, $bytes, 'one byte of the document flipped';
    $t->write_file('page-flipped.json', $flipped);
    ($prc, $pout) = run(@cmd, "$dir/page-flipped.json");
    isnt $prc, 0, 'openssl refuses the page\'s document with one byte changed';
    unlike $pout, qr/Verified OK/, 'and never says it verifies';
}

###############################################################################
# the ledger

my $ledger = $t->ledger_dir . "/$rc1->{code}.ledger";
($rc, $out) = run($ledger_tool, 'verify', $ledger, '--pubkey', $pub);
is $rc, 0, 'gov-pay-ledger verify: chain and seals are good' or diag $out;
like $out, qr/^ok: $rc1->{code}, 3 entries/, 'it counts three entries';

open my $fh, '<:raw', $ledger or die;
my @entries = <$fh>;
close $fh;
is scalar @entries, 3, 'one ledger line per receipt';
my @f = split /\t/, $entries[0];
chomp $f[5];
is decode_base64($f[4]), $doc_bytes, 'the ledger holds the document as issued';
is $f[2], '0' x 64, 'the first entry chains on zeros';
$t->write_file('prev.bin', pack('H*', $f[2]) . decode_base64($f[4]) . decode_base64($f[5]));
($rc, $out) = run('openssl', 'dgst', '-sm3', '-r', "$dir/prev.bin");
is +(split ' ', $out)[0], $f[3], 'entry_hash = SM3(prev_hash || document || seal), by openssl';

# tamper with entry 2 in a copy: the amount in its document
my @t2 = split /\t/, $entries[1];
my $d2 = decode_base64($t2[4]);
$d2 =~ s/"TotalAmount":"20.00"/"TotalAmount":"2.00"/ or fail('entry 2 has 20.00');
$t2[4] = encode_base64($d2, '');
$t->write_file('tampered.ledger', join('', $entries[0], join("\t", @t2), $entries[2]));
($rc, $out) = run($ledger_tool, 'verify', "$dir/tampered.ledger");
is $rc, 1, 'verify exits 1 on a tampered ledger';
like $out, qr{broken: entry $rc1->{code}/0000000002 .*entry_hash},
    'and names entry 2 as the first broken one' or diag $out;

# a removed entry
$t->write_file('gap.ledger', $entries[0] . $entries[2]);
($rc, $out) = run($ledger_tool, 'verify', "$dir/gap.ledger");
like $out, qr/broken: entry .*0000000003 .*where 2 was due/, 'a removed entry is found'
    or diag $out;

###############################################################################
# the verification route

my $url = "/r/$rc1->{code}/$rc1->{number}?c=$rc1->{check_code}";
my $res = $t->get($url, headers => { Accept => 'application/json' });
is $res->status, 200, 'verification page answers 200' or diag $res->describe;
my $v = $res->json // {};
ok $v->{verified}, 'the seal verifies on the page';
is $v->{receipt}{EInvoiceNumber}, $rc1->{number}, 'the page shows the receipt';
is $v->{receipt}{PayerPartyName}, '张*', 'payer name masked';
like $v->{receipt}{PayerPartyCode}, qr/^\d{4}\*{10}[\dX]{4}$/, 'payer ID masked';
my $id_no = valid_id_no();
unlike $res->body, qr/\Q$id_no\E/, 'no full ID number on the page';
is $v->{seal}{key_serial}, 'TEST-SM2-01', 'the page names the key serial';

$res = $t->get($url);
is $res->content_type, 'text/html', 'HTML for a browser';
my $html = $res->text;
like $html, qr/查验通过/, 'the HTML page says the receipt verifies';
like $html, qr/学费/, 'and lists the items';
like $html, qr{<title>财政电子票据查验</title>}, 'the page has its title';
like $html, qr{<h1>非税收入统一票据</h1>}, 'the receipt name as its heading';
like $html, qr{<header class="top">.*长辈模式}s,
    'receipt.html in the layout of every payer page (the large-text switch)';
like $html, qr{<style>.*\.btn\{}s, 'with the payer pages\' style sheet';
like $html, qr{class="code">$rc1->{number}<}, 'the receipt number';
like $html, qr{>1020\.00 元<}, 'the total in yuan';
like $html, qr{<span aria-hidden="true">张\*</span><span class="sr">张（其余字已隐去）</span>},
    'the payer name masked, and said in words to screen readers';
like $html, qr{<span aria-hidden="true">\d{4}\*{10}[\dX]{4}</span>}, 'the payer ID masked';
unlike $html, qr/\Q$id_no\E/, 'no full ID number in the HTML';
unlike $html, qr/张三/, 'no full payer name in the HTML';
like $html, qr{<td>学费</td><td>2</td><td>500\.00</td><td>1000\.00</td>},
    'an item row: name, quantity, standard, amount';
like $html, qr{TEST-SM2-01}, 'the key serial under the verdict';
like $html, qr{href="\Q$url\E&amp;format=pdf"}, 'a link to the printable receipt';
like $res->header('Content-Security-Policy') // '', qr/default-src 'none'/,
    'the payer pages\' security headers: CSP';
is $res->header('X-Content-Type-Options'), 'nosniff', 'nosniff';
is $res->header('Cache-Control'), 'no-store', 'no-store';
like $t->get("$url&big=1")->text, qr{<html lang="zh-CN" class="big">.*href="\Q$url\E&amp;big=0"}s,
    'the large-text mode, its switch keeping the check code';

my $wrong = $rc1->{check_code} eq 'aaaaaa' ? 'bbbbbb' : 'aaaaaa';
my $bad = $t->get("/r/$rc1->{code}/$rc1->{number}?c=$wrong");
my $none = $t->get("/r/$rc1->{code}/0000009999?c=$wrong");
is $bad->status, 404, 'a wrong check code is 404';
is $none->status, 404, 'an unknown receipt is 404';
like $bad->text, qr{<h1>未找到票据</h1>}, 'the 404 is a payer page';
(my $bad_body = $bad->body) =~ s{/r/$rc1->{code}/$rc1->{number}\?}{/r/CODE/NUMBER?}g;
(my $none_body = $none->body) =~ s{/r/$rc1->{code}/0000009999\?}{/r/CODE/NUMBER?}g;
is $bad_body, $none_body,
    'and both answer the same body but for their own URL in the mode switch (no oracle)';
is_deeply [ map { $bad->header($_) } qw(Content-Type Content-Length Cache-Control) ],
    [ map { $none->header($_) } qw(Content-Type Content-Length Cache-Control) ],
    'and the same headers';
is $t->get("/r/$rc1->{code}/$rc1->{number}")->status, 404, 'no check code is 404';
$res = $t->get("/r/$rc1->{code}/x");
is $res->status, 404, 'a malformed URL is 404';
like $res->text, qr{<h1>未找到票据</h1>}, 'with the same page';

###############################################################################
# the printable receipt

$res = $t->get("$url&format=pdf");
is $res->status, 200, 'format=pdf answers 200';
is $res->content_type, 'application/pdf', 'as a PDF';
$t->write_file('r.pdf', $res->body);
($rc, $out) = run('pdffonts', "$dir/r.pdf");
like $out, qr/WenQuanYi.*\byes\b/i, 'the CJK font is embedded (pdffonts: emb yes)' or diag $out;
($rc, $out) = run('pdftotext', "$dir/r.pdf", '-');
like decode_utf8($out), qr/非税收入统一票据/, 'the PDF carries the Chinese title as text';
like decode_utf8($out), qr/$rc1->{number}/, 'and the receipt number';
($rc, $out) = run('pdftoppm', '-png', '-r', '150', '-singlefile', "$dir/r.pdf", "$dir/r");
is $rc, 0, 'pdftoppm renders the PDF' or diag $out;
($rc, $out) = run('zbarimg', '-q', '--raw', "$dir/r.png");
($out) = grep { m{^http} } split /\n/, $out;      # zbarimg may chat on stderr
is $out, $t->public_url . $url, 'its QR code is the verification URL';
is $t->get("/r/$rc1->{code}/$rc1->{number}?c=$wrong&format=pdf")->status, 404,
    'no PDF with a wrong check code';

###############################################################################
# a tampered document is refused

(my $tampered = $doc_bytes) =~ s/"TotalAmount":"1020.00"/"TotalAmount":"1.00"/;
$r->hset("{gpr}:r:$rc1->{code}:$rc1->{number}", 'doc',
         $t->receipt_seal($tampered, $rc1->{code}, $rc1->{number}));
$res = $t->get($url, headers => { Accept => 'application/json' });
ok $res->json && !$res->json->{verified},
    'the verification page refuses a tampered document';
$html = $t->get($url)->text;
like $html, qr/查验未通过/, 'the HTML page says so';
unlike $html, qr/查验通过/, 'and never that it verifies';
unlike $html, qr/format=pdf/, 'and links no PDF';
is $t->get("$url&format=pdf")->status, 409, 'and serves no PDF for it';

# a tampered record with markup in its fields: shown escaped, refused
my $evil = json_decode($doc_bytes);
$evil->{Remark} = '<script>alert(1)</script>';
$evil->{Items}[0]{ItemName} = '"><img src=x onerror=alert(1)>';
$evil->{PayerPartyName} = '<b>李四</b>';
$r->hset("{gpr}:r:$rc1->{code}:$rc1->{number}", 'doc',
         $t->receipt_seal(json_encode($evil), $rc1->{code}, $rc1->{number}));
$html = $t->get($url)->text;
like $html, qr/查验未通过/, 'a record with markup in it does not verify';
unlike $html, qr/<script>|<img |<b>/, 'and none of its markup reaches the page';
like $html, qr/&lt;script&gt;alert\(1\)&lt;\/script&gt;/, 'the remark is escaped';
like $html, qr/&quot;&gt;&lt;img src=x/, 'the item name is escaped';
unlike $html, qr/李四/, 'the payer name is still masked';
$r->hset("{gpr}:r:$rc1->{code}:$rc1->{number}", 'doc', $rec{doc});
like $t->get($url)->text, qr/查验通过/, 'the record restored verifies again';

###############################################################################
# configuration errors

my ($nrc, $nout) = $t->nginx_t(<<'EOF', directives => { gov_pay_receipt_key => undef });
    server { listen 127.0.0.1:%%PORT%%; location /r/ { gov_pay_receipt; } }
EOF
isnt $nrc, 0, 'nginx -t: gov_pay_receipt without gov_pay_receipt_key is refused';
like $nout, qr/needs at least one "gov_pay_receipt_key"/, 'with a message saying so';
($nrc, $nout) = $t->nginx_t(<<'EOF', directives => { gov_pay_receipt_key => "sm2 $priv X" });
    server { listen 127.0.0.1:%%PORT%%; location /r/ { gov_pay_receipt; } }
EOF
like $nout, qr/receipt key: .*no PEM public key/, 'nginx -t: a private key is not a public key';

sub worker_t {
    my (%receipt) = @_;
    my $cfg = $t->write_file('worker-t.json',
                             json_encode($t->worker_config(receipt => \%receipt)));
    return run(GovPay::Test::worker_path(), '-t', '-c', $cfg);
}
($rc, $out) = worker_t();
is $rc, 0, 'gov-pay-worker -t accepts the receipt configuration' or diag $out;
($rc, $out) = worker_t(key => $pub);
is $rc, 1, 'gov-pay-worker -t: a public key cannot seal';
($rc, $out) = worker_t(ledger_dir => "$dir/none");
like $out, qr/ledger_dir.*not a directory/, 'gov-pay-worker -t: a missing ledger folder';
($rc, $out) = worker_t(algorithm => 'dsa');
like $out, qr/"algorithm" must be/, 'gov-pay-worker -t: an unknown algorithm';
($rc, $out) = worker_t(font => "$dir/none.ttf");
like $out, qr/cannot load the font/, 'gov-pay-worker -t: a missing font';
unlike $out, qr/BEGIN|PRIVATE/, 'no key material in the messages';

###############################################################################

is $t->stop_worker, 0, 'worker stops cleanly';
$t->check_error_log;

done_testing;
