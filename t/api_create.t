#!/usr/bin/perl

# Unit API: POST /v1/notices creates a payment notice (API.md, "Unit API"):
# the notice, the payment code, idempotency, validation, response signature,
# and that a rejected request changes nothing in Redis.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode ();
use Test::More;
use GovPay::Test;

my $t = GovPay::Test->new;
$t->start_redis;
$t->start_nginx(<<'EOF');
    server {
        listen 127.0.0.1:%%PORT%%;

        client_max_body_size 64k;
        error_page 413 = @too_large;

        location /v1/ { gov_pay_api; }

        location @too_large {
            default_type application/json;
            return 413 '{"error":{"code":"PAYLOAD_TOO_LARGE","message":"request body is larger than the limit"}}';
        }
    }
EOF

my $public = $t->public_url;
my $r = $t->redis;

###############################################################################
# a notice is created

my $body = $t->notice_body(amount => 125000, remark => '2026 autumn tuition');
my $before = time;
my $res = $t->signed_request(POST => '/v1/notices', $body);
is $res->status, 201, 'valid create answers 201' or diag $res->describe;
like $res->content_type, qr{^application/json$}, 'create answers JSON';

my $n = $res->json // {};
my $code = $n->{payment_code} // '';

like $code, qr/^\d{20}$/, 'payment code is 20 digits';
is substr($code, 0, 6), '330100', 'payment code starts with the division';
is substr($code, 6, 2), sprintf('%02d', current_yy()),
    'payment code carries the current year (+08:00)';
is substr($code, 19, 1), mod11_10(substr($code, 0, 19)),
    'payment code ends with the ISO 7064 MOD 11-10 check digit';
is $n->{status}, 'UNPAID', 'new notice is UNPAID';
is $n->{unit}, '330100-TEST-001', 'notice names the unit';
is $n->{item_code}, '103001', 'notice has the item code';
ok defined $n->{amount} && !ref $n->{amount} && $n->{amount} =~ /^\d+$/
    && $n->{amount} == 125000, 'amount is the integer 125000 (fen)';
like $n->{amount} // '', qr/^125000$/, 'amount is not a float';
is $n->{pay_url}, "$public/q/$code", 'pay_url is <public_url>/q/<code>';
is $n->{qr_image_url}, "$public/q/$code.svg",
    'qr_image_url is <public_url>/q/<code>.svg';

like $n->{created_at} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/,
    'created_at is RFC 3339 in +08:00';
my $created = rfc3339_to_epoch($n->{created_at}) // 0;
ok $created >= $before - 2 && $created <= time + 2, 'created_at is now';
like $n->{due_at} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/,
    'due_at is RFC 3339 in +08:00';
my $due = rfc3339_to_epoch($n->{due_at}) // 0;
ok abs($due - ($created + 30 * 86400)) <= 120,
    'due_at defaults to gov_pay_default_due (30 d) after creation'
    or diag "created_at $n->{created_at} due_at $n->{due_at}";
ok !exists $n->{payment} && !exists $n->{receipt},
    'a new notice has no payment and no receipt';

$t->verify_response_signature($res, 'create response is signed');

###############################################################################
# storage layout (docs/internals.md): the notice sits on the shard of
# (unit, request_id) and carries its idempotency record and nonce there

my $shard = shard_of('330100-TEST-001', $body->{request_id}, $t->shards);
my @notice_keys = grep { /^\{gp\d+\}:n:\d+$/ } $t->redis_keys;
is scalar @notice_keys, 1, 'one notice hash is stored';
like $notice_keys[0] // '', qr/^\{gp$shard\}:n:\d+$/,
    "the notice is on shard $shard = gp_shard_of(unit, request_id)";
my %h = $r->hgetall($notice_keys[0] // 'none');
is $h{unit}, '330100-TEST-001', 'stored notice: unit';
is $h{request_id}, $body->{request_id}, 'stored notice: request_id';
is $h{amount}, '125000', 'stored notice: amount in fen';
is $h{status}, 'UNPAID', 'stored notice: status';
is $h{division}, '330100', 'stored notice: division';
is $h{yy}, sprintf('%02d', current_yy()), 'stored notice: yy';
is $h{payer_type}, 'person', 'stored notice: payer_type';
is $h{payer_name_masked}, Encode::encode_utf8('张*'),
    'stored notice: the payer name masked';
is $h{payer_id_masked},
    substr($body->{payer}{id_no}, 0, 4) . ('*' x 10) . substr($body->{payer}{id_no}, 14),
    'stored notice: the ID number masked';
like $h{payer_name_sealed} // '', qr{^t1:[A-Za-z0-9+/]+=*$},
    'stored notice: the payer name sealed under key t1';
like $h{payer_id_sealed} // '', qr{^t1:[A-Za-z0-9+/]+=*$},
    'stored notice: the ID number sealed under key t1';
ok !exists $h{payer_name} && !exists $h{payer_id},
    'stored notice: no payer name or ID number in clear';
my $full_name = Encode::encode_utf8('张三');
ok !grep({ /\Q$body->{payer}{id_no}\E|\Q$full_name\E/ } values %h),
    'no field of the stored notice holds the full name or ID number';

my $idem = "{gp$shard}:idem:330100-TEST-001:$body->{request_id}";
ok $r->exists($idem), 'idempotency record exists on the same shard';
my $ttl = $r->ttl($idem);
ok $ttl > 7 * 86400 && $ttl <= 8 * 86400,
    "idempotency record lives gov_pay_idempotency_ttl (8 d), at least 7 d (ttl $ttl)";
my $nonce_key = "{gp$shard}:nonce:330100-TEST-001:" . $res->nonce;
ok $r->exists($nonce_key), 'nonce is remembered on the same shard';
$ttl = $r->ttl($nonce_key);
ok $ttl > 540 && $ttl <= 600, "nonce is remembered 2 x auth window (ttl $ttl)";

###############################################################################
# idempotency

my $bytes = json_encode($body);
my $again = $t->signed_request(POST => '/v1/notices', $bytes);
is $again->status, 200, 'same request_id and body with a new nonce answers 200'
    or diag $again->describe;
is_deeply $again->json, $n, 'retried create returns the same notice';
$t->verify_response_signature($again, 'retried create response is signed');
is scalar(grep { /:n:\d+$/ } $t->redis_keys), 1,
    'retried create stores no second notice';

my $snap = $t->redis_snapshot;
my $conflict = $t->signed_request(POST => '/v1/notices',
    { %$body, amount => 125001 });
is $conflict->status, 409, 'same request_id with another body answers 409';
is $conflict->error_code, 'IDEMPOTENCY_CONFLICT',
    'same request_id with another body is IDEMPOTENCY_CONFLICT';
my %h2 = $r->hgetall($notice_keys[0] // 'none');
is $h2{amount}, '125000', 'conflicting create leaves the notice unchanged';
is_deeply [ grep { !/:nonce:/ } sort keys %{ $t->redis_snapshot } ],
    [ grep { !/:nonce:/ } sort keys %$snap ],
    'conflicting create adds no key but its nonce';

# a different request_id is a different notice with a different code
my $n2 = $t->new_notice;
isnt $n2->{payment_code}, $code, 'another request_id gets another payment code';

###############################################################################
# amount rules and optional fields

$res = $t->create_notice(item_code => '103002', amount => 2000);
is $res->status, 201, 'fixed-amount item with its amount is created'
    or diag $res->describe;

my $due_at = epoch_to_rfc3339(int(time) + 7 * 86400);
$res = $t->create_notice(due_at => $due_at,
    lines => [ { item_code => '103001', quantity => 2, unit_price => 62500 } ]);
is $res->status, 201, 'create with due_at and summing lines is created'
    or diag $res->describe;
is $res->json && $res->json->{due_at}, $due_at, 'given due_at is kept';

$res = $t->create_notice(amount => 10000000000);
is $res->status, 201, 'amount of 10^10 fen (the maximum) is accepted'
    or diag $res->describe;
$res = $t->create_notice(amount => 1);
is $res->status, 201, 'amount of 1 fen is accepted' or diag $res->describe;

$res = $t->create_notice(payer => { type => 'org', name => '杭州某某科技有限公司',
                                    id_no => valid_uscc() });
is $res->status, 201, 'organisation payer with a valid USCC is created'
    or diag $res->describe;

# a Content-Type with a charset is still JSON
$res = $t->signed_request(POST => '/v1/notices', $t->notice_body,
    content_type => 'application/json; charset=utf-8');
is $res->status, 201, 'application/json; charset=utf-8 is accepted'
    or diag $res->describe;

my @codes = map { $_->{payment_code} } ($n, $n2,
    map { $t->new_notice } 1 .. 4);
my %uniq = map { $_ => 1 } @codes;
is scalar keys %uniq, scalar @codes, 'every notice gets its own payment code';
is scalar(grep { substr($_, 19) eq mod11_10(substr($_, 0, 19)) } @codes),
    scalar @codes, 'every payment code has a valid check digit';

###############################################################################
# rejected requests: status, code, fields, and nothing written

sub rejected {
    my ($name, $status, $ecode, $field, $send) = @_;
    my $before = $t->redis_snapshot;
    my $res = $send->();
    is $res->status, $status, "$name answers $status" or diag $res->describe;
    is $res->error_code, $ecode, "$name is $ecode";
    my $j = $res->json;
    ok ref $j eq 'HASH' && defined $j->{error}{message} && length $j->{error}{message},
        "$name error has a message";
    if (defined $field) {
        ok scalar(grep { $_ eq $field } $res->error_fields),
            "$name names the field '$field'"
            or diag 'fields: ' . join(', ', $res->error_fields);
    }
    my $diff = GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
    is $diff, '', "$name changes nothing in Redis";
    return $res;
}

rejected('malformed JSON', 400, 'BAD_REQUEST', undef,
    sub { $t->signed_request(POST => '/v1/notices', '{"request_id":"x",') });
rejected('a JSON array body', 400, 'BAD_REQUEST', undef,
    sub { $t->signed_request(POST => '/v1/notices', '[1,2,3]') });
rejected('an empty body', 400, 'BAD_REQUEST', undef,
    sub { $t->signed_request(POST => '/v1/notices', '') });

# API.md: BAD_REQUEST for "wrong types"; a string where an integer is due
rejected('amount as a string "12.5"', 400, 'BAD_REQUEST', undef,
    sub { $t->create_notice(amount => '12.5') });

rejected('amount 0', 422, 'VALIDATION_FAILED', 'amount',
    sub { $t->create_notice(amount => 0) });
rejected('negative amount', 422, 'VALIDATION_FAILED', 'amount',
    sub { $t->create_notice(amount => -5) });
rejected('amount above 10^10 fen', 422, 'VALIDATION_FAILED', 'amount',
    sub { $t->create_notice(amount => 10000000001) });
{
    # a JSON number that is not an integer: a wrong type (400) or a broken
    # rule (422 naming amount); API.md allows either reading, never a notice
    my $before = $t->redis_snapshot;
    my $res = $t->signed_request(POST => '/v1/notices',
        json_encode($t->notice_body(amount => 0)) =~ s/"amount":0/"amount":12.5/r);
    ok(($res->status == 400 && ($res->error_code // '') eq 'BAD_REQUEST')
        || ($res->status == 422 && ($res->error_code // '') eq 'VALIDATION_FAILED'
            && grep { $_ eq 'amount' } $res->error_fields),
        'fractional amount 12.5 is refused as BAD_REQUEST or as VALIDATION_FAILED on amount')
        or diag $res->describe;
    my $diff = GovPay::Test->snapshot_diff($before, $t->redis_snapshot);
    is $diff, '', 'fractional amount 12.5 changes nothing in Redis';
}
rejected('fixed-amount item with another amount', 422, 'VALIDATION_FAILED', 'amount',
    sub { $t->create_notice(item_code => '103002', amount => 2001) });
rejected('unknown field "amout"', 422, 'VALIDATION_FAILED', 'amout',
    sub { $t->create_notice(amount => undef, amout => 125000) });
rejected('missing request_id', 422, 'VALIDATION_FAILED', 'request_id',
    sub { $t->create_notice(request_id => undef) });
rejected('request_id of 65 chars', 422, 'VALIDATION_FAILED', 'request_id',
    sub { $t->create_notice(request_id => 'R' x 65) });
rejected('missing amount', 422, 'VALIDATION_FAILED', 'amount',
    sub { $t->create_notice(amount => undef) });
rejected('missing item_code', 422, 'VALIDATION_FAILED', 'item_code',
    sub { $t->create_notice(item_code => undef) });
rejected('unknown item', 422, 'VALIDATION_FAILED', 'item_code',
    sub { $t->create_notice(item_code => '999999') });
rejected('item the unit may not use', 403, 'FORBIDDEN', undef,
    sub { $t->create_notice(item_code => '103003', amount => 100) });
rejected('due_at in the past', 422, 'VALIDATION_FAILED', 'due_at',
    sub { $t->create_notice(due_at => epoch_to_rfc3339(int(time) - 3600)) });
rejected('due_at that is no time', 422, 'VALIDATION_FAILED', 'due_at',
    sub { $t->create_notice(due_at => 'next tuesday') });
rejected('remark over 200 chars', 422, 'VALIDATION_FAILED', 'remark',
    sub { $t->create_notice(remark => '备' x 201) });
rejected('lines that do not sum to the amount', 422, 'VALIDATION_FAILED', 'lines',
    sub { $t->create_notice(amount => 125000,
        lines => [ { item_code => '103001', quantity => 1, unit_price => 100 } ]) });

{
    my $res = rejected('missing payer name', 422, 'VALIDATION_FAILED', undef,
        sub { $t->create_notice(payer => { type => 'person', id_no => valid_id_no() }) });
    ok scalar(grep { /payer/ } $res->error_fields), 'missing payer name names the payer'
        or diag 'fields: ' . join(', ', $res->error_fields);
}

# one failing example of each rule not covered above

rejected('range item with an amount above its range (103003: 1 to 100000)', 422,
    'VALIDATION_FAILED', 'amount',
    sub { $t->create_notice(item_code => '103003', amount => 100001,
                            _opts => { unit => '330100-TEST-002' }) });
rejected('lines with an item that is not in the catalogue', 422, 'VALIDATION_FAILED', 'lines',
    sub { $t->create_notice(amount => 125000,
        lines => [ { item_code => '999999', quantity => 1, unit_price => 125000 } ]) });
{
    my $id = valid_id_no('33010620000101123');
    my $bad = substr($id, 0, 17) . (substr($id, 17) eq '0' ? '1' : '0');
    rejected('resident ID with a wrong check character', 422, 'VALIDATION_FAILED',
        'payer.id_no',
        sub { $t->create_notice(payer => { type => 'person', name => '张三', id_no => $bad }) });
}
{
    my $uscc = valid_uscc();
    my $bad = substr($uscc, 0, 17) . (substr($uscc, 17) eq '0' ? '1' : '0');
    rejected('USCC with a wrong check character', 422, 'VALIDATION_FAILED', 'payer.id_no',
        sub { $t->create_notice(payer => { type => 'org', name => '杭州某某科技有限公司',
                                           id_no => $bad }) });
}
rejected('payer.name of 101 chars', 422, 'VALIDATION_FAILED', 'payer.name',
    sub { $t->create_notice(payer => { type => 'person', name => '张' x 101,
                                       id_no => valid_id_no() }) });

# control and bidirectional formatting characters never reach a receipt, a PDF
# or a page
for my $case ([ 'a newline' => "张\n三" ], [ 'a tab' => "张\t三" ],
              [ 'U+0000' => "张\x{0}三" ], [ 'U+001B' => "张\x{1b}[31m三" ],
              [ 'U+007F' => "张\x{7f}" ], [ 'a C1 control U+0085' => "张\x{85}三" ],
              [ 'U+202E RIGHT-TO-LEFT OVERRIDE' => "张三\x{202e}txt.exe" ],
              [ 'U+2066 LEFT-TO-RIGHT ISOLATE' => "\x{2066}张三" ],
              [ 'U+200F RIGHT-TO-LEFT MARK' => "张\x{200f}三" ]) {
    my ($what, $name) = @$case;
    my $res = rejected("payer.name with $what", 422, 'VALIDATION_FAILED', 'payer.name',
        sub { $t->create_notice(payer => { type => 'person', name => $name,
                                           id_no => valid_id_no() }) });
    like $res->text, qr/control characters/, "payer.name with $what: the reason says why";
    rejected("remark with $what", 422, 'VALIDATION_FAILED', 'remark',
        sub { $t->create_notice(remark => "备注$name") });
}
$res = $t->create_notice(payer => { type => 'person', name => '欧阳·娜娜 (Nana)',
                                    id_no => valid_id_no() }, remark => '2026 秋季 — 学费。');
is $res->status, 201, 'a name and remark with spaces, punctuation and dashes are accepted'
    or diag $res->describe;

# the message says what is wrong with the JSON
$res = rejected('a duplicate key', 400, 'BAD_REQUEST', undef,
    sub { $t->signed_request(POST => '/v1/notices',
              '{"request_id":"DUP-1","item_code":"103001","amount":100,"amount":200,'
              . '"payer":{"type":"person","name":"x","id_no":"' . valid_id_no() . '"}}') });
like $res->json->{error}{message}, qr/duplicate object key/,
    'a duplicate key: the message says "duplicate object key"';
$res = rejected('an integer out of range', 400, 'BAD_REQUEST', undef,
    sub { $t->signed_request(POST => '/v1/notices',
              '{"request_id":"BIG-1","item_code":"103001","amount":99999999999999999999999}') });
like $res->json->{error}{message}, qr/too big integer/,
    'an integer out of range: the message says so';
like $res->json->{error}{message}, qr/line 1, column \d+/, 'with its line and column';
$res = rejected('a JSON array', 400, 'BAD_REQUEST', undef,
    sub { $t->signed_request(POST => '/v1/notices', '[1]') });
like $res->json->{error}{message}, qr/not a JSON object/, 'an array: "not a JSON object"';

# jansson refuses a body that is not valid UTF-8 before any field is read: the
# module answers BAD_REQUEST (not JSON), its documented decision
rejected('a body with invalid UTF-8 in a string (0xFF 0xFE)', 400, 'BAD_REQUEST', undef,
    sub { $t->signed_request(POST => '/v1/notices',
              json_encode($t->notice_body(remark => 'UTF8HERE')) =~ s/UTF8HERE/\xff\xfe/r) });
rejected('request_id as a number', 400, 'BAD_REQUEST', undef,
    sub { $t->create_notice(request_id => 12345) });
rejected('payer as a string', 400, 'BAD_REQUEST', undef,
    sub { $t->create_notice(payer => '张三 330106200001011235') });
rejected('lines as an object', 400, 'BAD_REQUEST', undef,
    sub { $t->create_notice(lines => { item_code => '103001', quantity => 1,
                                       unit_price => 125000 }) });

rejected('body over 64 KiB', 413, 'PAYLOAD_TOO_LARGE', undef,
    sub { $t->create_notice(remark => 'x' x (70 * 1024)) });
rejected('text/plain body', 415, 'UNSUPPORTED_MEDIA_TYPE', undef,
    sub { $t->signed_request(POST => '/v1/notices', $t->notice_body,
                             content_type => 'text/plain') });
rejected('form body', 415, 'UNSUPPORTED_MEDIA_TYPE', undef,
    sub { $t->signed_request(POST => '/v1/notices', 'a=1&b=2',
                             content_type => 'application/x-www-form-urlencoded') });

###############################################################################

$t->check_error_log;

done_testing;
