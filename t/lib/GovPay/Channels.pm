package GovPay::Channels;

# The payment channels' side of the wire, for the tests: keys made at run
# time with the openssl CLI, the channels' signatures (Alipay RSA2, UnionPay
# signMethod 01, WeChat Pay APIv3) and their callbacks in the exact format,
# and a stand-in WeChat Pay / OAuth server (GovPay::Channels::Daemon) that
# checks the edge's merchant signature.
#
#   my $c = GovPay::Channels->new($t);          # $t: a GovPay::Test
#   my %d = $c->directives;                     # gov_pay_alipay_* etc.
#   $t->start_nginx($conf, directives => \%d);
#   $c->alipay_notify(%fields);                 # POST /notify/alipay

use strict;
use warnings;
use utf8;

use Carp qw(croak);
use Crypt::AuthEnc::GCM qw(gcm_encrypt_authenticate);
use Crypt::OpenSSL::RSA;
use Digest::SHA qw(sha256_hex);
use Encode qw(encode encode_utf8);
use Exporter qw(import);
use MIME::Base64 qw(encode_base64 decode_base64);
use JSON::XS ();
use POSIX ();
use Time::HiRes ();
use URI::Escape qw(uri_escape uri_unescape);

use GovPay::Test;

our @EXPORT = qw(form_encode form_decode rsa_sign rsa_verify);

our $ALIPAY_APP_ID = '2021000000000001';
our $UNIONPAY_MER_ID = '777290058110048';
our $UNIONPAY_CERT_ID = '69042905377';
our $WECHAT_MCHID = '1900000109';
our $WECHAT_APPID = 'wxd678efh567hg6787';
our $WECHAT_SERIAL = '5157F09EFDC096DE15EBE81A47057A7232F1B8E1';
our $WECHAT_PLATFORM_SERIAL = 'PUB_KEY_ID_0114232134912410000000000000';

sub new {
    my ($class, $t, %o) = @_;
    my $self = bless { t => $t, dir => $t->dir . '/channel-keys' }, $class;
    mkdir $self->{dir};

    # the edge's keys and the channels' keys: one pair each, made when
    # first needed (keys_for below)

    $self->{apiv3_key} = GovPay::Test::random_string(32);
    $t->write_file("channel-keys/wechat_apiv3.key", $self->{apiv3_key} . "\n");
    $self->{app_secret} = GovPay::Test::random_string(32);
    $t->write_file("channel-keys/wechat_app.secret", $self->{app_secret} . "\n");

    return $self;
}

sub dir { $_[0]{dir} }
sub key_file { $_[0]->_keypair($_[1]); "$_[0]{dir}/$_[1].pem" }
sub pub_file { $_[0]->_keypair($_[1]); "$_[0]{dir}/$_[1].pub.pem" }
sub apiv3_key { $_[0]{apiv3_key} }
sub app_secret { $_[0]{app_secret} }

sub _keypair {
    my ($self, $name) = @_;
    return if $self->{priv}{$name};
    my $priv = "$self->{dir}/$name.pem";
    my $pub = "$self->{dir}/$name.pub.pem";
    system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
           . "-out '$priv' 2>/dev/null") == 0
        or croak "openssl genpkey $name failed";
    system('openssl', 'pkey', '-in', $priv, '-pubout', '-out', $pub) == 0
        or croak "openssl pkey -pubout $name failed";
    $self->{priv}{$name} = Crypt::OpenSSL::RSA->new_private_key(_slurp($priv));
    $self->{pub}{$name} = Crypt::OpenSSL::RSA->new_public_key(_slurp($pub));
}

sub _slurp {
    my ($path) = @_;
    open my $fh, '<', $path or croak "open $path: $!";
    local $/;
    return scalar <$fh>;
}

sub priv { $_[0]->_keypair($_[1]); $_[0]{priv}{$_[1]} }
sub pub { $_[0]->_keypair($_[1]); $_[0]{pub}{$_[1]} }

# directives(@channels): the http-level directives of those channels
# (default: alipay, unionpay, wechat); the sandbox stays as it is
sub directives {
    my ($self, @channels) = @_;
    @channels = qw(alipay unionpay wechat) unless @channels;
    my %want = map { $_ => 1 } @channels;
    my %d;
    %d = (%d,
        gov_pay_alipay_app_id      => $ALIPAY_APP_ID,
        gov_pay_alipay_gateway     => 'https://openapi.alipay.com/gateway.do',
        gov_pay_alipay_app_key     => $self->key_file('alipay_app'),
        gov_pay_alipay_public_key  => $self->pub_file('alipay_platform'),
    ) if $want{alipay};
    %d = (%d,
        gov_pay_unionpay_mer_id      => $UNIONPAY_MER_ID,
        gov_pay_unionpay_cert_id     => $UNIONPAY_CERT_ID,
        gov_pay_unionpay_front_url   => 'https://gateway.95516.com/gateway/api/frontTransReq.do',
        gov_pay_unionpay_sign_key    => $self->key_file('unionpay_sign'),
        gov_pay_unionpay_verify_key  => $self->pub_file('unionpay_platform'),
    ) if $want{unionpay};
    %d = (%d,
        gov_pay_wechat_mchid           => $WECHAT_MCHID,
        gov_pay_wechat_appid           => $WECHAT_APPID,
        gov_pay_wechat_app_secret      => "$self->{dir}/wechat_app.secret",
        gov_pay_wechat_merchant_serial => $WECHAT_SERIAL,
        gov_pay_wechat_merchant_key    => $self->key_file('wechat_merchant'),
        gov_pay_wechat_apiv3_key       => "$self->{dir}/wechat_apiv3.key",
        gov_pay_wechat_platform_key    => "$WECHAT_PLATFORM_SERIAL "
                                          . $self->pub_file('wechat_platform'),
        gov_pay_wechat_oauth_url       => 'https://open.weixin.qq.com/connect/oauth2/authorize',
        gov_pay_wechat_oauth_location  => '/_wechat_oauth',
        gov_pay_wechat_prepay_location => '/_wechat_prepay',
    ) if $want{wechat};
    return %d;
}

###############################################################################
# forms and signatures

# form_encode(\@pairs | \%fields, $charset): application/x-www-form-urlencoded
# of the values encoded in $charset (default UTF-8), '+' for space as browsers
# and the channels' servers do
sub form_encode {
    my ($fields, $charset) = @_;
    my @pairs = ref $fields eq 'ARRAY' ? @$fields
        : map { ($_, $fields->{$_}) } sort keys %$fields;
    my @out;
    while (my ($k, $v) = splice @pairs, 0, 2) {
        my $bytes = encode($charset // 'UTF-8', $v);
        (my $e = uri_escape($bytes, '^A-Za-z0-9\-._~ ')) =~ s/ /+/g;
        push @out, "$k=$e";
    }
    return join '&', @out;
}

sub form_decode {
    my ($body) = @_;
    my %f;
    for my $p (split /&/, $body) {
        my ($k, $v) = split /=/, $p, 2;
        $v //= '';
        $v =~ tr/+/ /;
        $f{ uri_unescape($k) } = uri_unescape($v);
    }
    return \%f;
}

sub rsa_sign {
    my ($key, $bytes) = @_;
    $key->use_sha256_hash;
    return encode_base64($key->sign($bytes), '');
}

sub rsa_verify {
    my ($key, $bytes, $b64) = @_;
    $key->use_sha256_hash;
    my $sig = decode_base64($b64 // '');
    return eval { $key->verify($bytes, $sig) } ? 1 : 0;
}

# k=v&k=v of the byte values, sorted, without the skipped keys (and empty
# values, when skip_empty)
sub canonical {
    my ($fields, $skip, $skip_empty) = @_;
    my %skip = map { $_ => 1 } @{ $skip // [] };
    return join '&', map { "$_=$fields->{$_}" }
        grep { !$skip{$_} && !($skip_empty && $fields->{$_} eq '') }
        sort keys %$fields;
}

###############################################################################
# Alipay

# alipay_sign(\%fields, $charset): the notification's sign over the values
# as bytes in $charset
sub alipay_sign {
    my ($self, $f, $charset, $key) = @_;
    my %bytes = map { $_ => encode($charset // 'UTF-8', $f->{$_}) } keys %$f;
    return rsa_sign($key // $self->priv('alipay_platform'),
                    canonical(\%bytes, [qw(sign sign_type)], 1));
}

# a TRADE_SUCCESS notification for a notice, %o overriding fields
sub alipay_fields {
    my ($self, $notice, %o) = @_;
    my $yuan = sprintf '%d.%02d', int($notice->{amount} / 100), $notice->{amount} % 100;
    my %f = (
        notify_time => '2026-11-24 10:00:00', notify_type => 'trade_status_sync',
        notify_id => 'ac05099524730693a8b330c5ecf72da9786', charset => 'utf-8',
        version => '1.0', sign_type => 'RSA2', app_id => $ALIPAY_APP_ID,
        auth_app_id => $ALIPAY_APP_ID, trade_no => '2026112422001400000000000001',
        out_trade_no => $notice->{payment_code}, out_biz_no => '',
        buyer_id => '2088102122524333', seller_id => '2088101106499364',
        trade_status => 'TRADE_SUCCESS', total_amount => $yuan,
        receipt_amount => $yuan, buyer_pay_amount => $yuan, point_amount => '0.00',
        invoice_amount => $yuan, gmt_create => '2026-11-24 09:59:50',
        gmt_payment => '2026-11-24 09:59:58', subject => '学费',
        body => '2026 秋季学费 100% + 住宿', fund_bill_list =>
            '[{"amount":"' . $yuan . '","fundChannel":"ALIPAYACCOUNT"}]',
        %o,
    );
    delete $f{$_} for grep { !defined $f{$_} } keys %f;
    return \%f;
}

# alipay_notify(\%fields, charset => 'GBK', sign_fields => {...},
# content_type => ...): posts the notification; sign computed unless given
sub alipay_notify {
    my ($self, $f, %o) = @_;
    my $charset = $o{charset} // 'UTF-8';
    my %f = map { $_ => $f->{$_} } grep { defined $f->{$_} } keys %$f;
    $f{sign} //= $self->alipay_sign($o{sign_fields} // \%f, $charset, $o{key});
    return $self->{t}->request(POST => '/notify/alipay',
        body => form_encode(\%f, $charset), timeout => $o{timeout},
        headers => { 'Content-Type' => $o{content_type}
            // 'application/x-www-form-urlencoded; text/html; charset=utf-8' });
}

###############################################################################
# UnionPay

sub unionpay_sign {
    my ($self, $f, $key) = @_;
    my %b = map { $_ => encode_utf8($f->{$_}) } keys %$f;
    return rsa_sign($key // $self->priv('unionpay_platform'),
                    sha256_hex(canonical(\%b, ['signature'])));
}

sub unionpay_fields {
    my ($self, $notice, %o) = @_;
    my %f = (
        version => '5.1.0', encoding => 'UTF-8', bizType => '000201',
        txnType => '01', txnSubType => '01', accessType => '0',
        currencyCode => '156', merId => $UNIONPAY_MER_ID,
        orderId => $notice->{payment_code}, txnTime => '20261124095950',
        txnAmt => $notice->{amount}, queryId => '772611240959508612048',
        traceNo => '861204', traceTime => '1124095950', settleAmt => $notice->{amount},
        settleCurrencyCode => '156', settleDate => '1124', respCode => '00',
        respMsg => '成功[0000000]', signMethod => '01', certId => '69026276696',
        accNo => '6221****0000', payType => '0001', payCardType => '01',
        reqReserved => 'a%b+c 中文', signPubKeyCert => "-----BEGIN CERTIFICATE-----\nMIIB+x/y==\n-----END CERTIFICATE-----",
        %o,
    );
    delete $f{$_} for grep { !defined $f{$_} } keys %f;
    return \%f;
}

sub unionpay_notify {
    my ($self, $f, %o) = @_;
    my %f = map { $_ => $f->{$_} } grep { defined $f->{$_} } keys %$f;
    $f{signature} //= $self->unionpay_sign($o{sign_fields} // \%f, $o{key});
    return $self->{t}->request(POST => '/notify/unionpay',
        body => form_encode(\%f), timeout => $o{timeout},
        headers => { 'Content-Type' => 'application/x-www-form-urlencoded;charset=UTF-8' });
}

###############################################################################
# WeChat Pay APIv3

sub wechat_transaction {
    my ($self, $notice, %o) = @_;
    my $amount = delete $o{amount} // $notice->{amount};
    return {
        appid => $WECHAT_APPID, mchid => $WECHAT_MCHID,
        out_trade_no => $notice->{payment_code},
        transaction_id => '4200000000202611240000000001', trade_type => 'JSAPI',
        trade_state => 'SUCCESS', trade_state_desc => '支付成功',
        bank_type => 'OTHERS', attach => '100% + 中文',
        success_time => '2026-11-24T09:59:58+08:00',
        payer => { openid => 'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o' },
        amount => { total => $amount, payer_total => $amount, currency => 'CNY',
                    payer_currency => 'CNY' },
        %o,
    };
}

# a refund's resource (REFUND.SUCCESS and co.): the plaintext WeChat Pay
# encrypts for a refund notification
sub wechat_refund {
    my ($self, $notice, $refund_id, %o) = @_;
    my $amount = delete $o{refund} // $notice->{amount};
    return {
        mchid => $WECHAT_MCHID, out_trade_no => $notice->{payment_code},
        transaction_id => '4200000000202611240000000001',
        out_refund_no => $refund_id, refund_id => '50000000382019052709732678859',
        refund_status => 'SUCCESS', success_time => '2026-11-25T10:00:00+08:00',
        user_received_account => '招商银行信用卡0403',
        amount => { total => $notice->{amount}, refund => $amount,
                    payer_total => $notice->{amount}, payer_refund => $amount },
        %o,
    };
}

# the notification body of a refund: wechat_refund_body($resource, %o)
sub wechat_refund_body {
    my ($self, $rf, %o) = @_;
    my $status = ref $rf ? $rf->{refund_status} : 'SUCCESS';
    return $self->wechat_body($rf, aad => 'refund', original_type => 'refund',
        event_type => 'REFUND.' . ($status eq 'PROCESSING' ? 'SUCCESS' : $status),
        summary => '退款结果', %o);
}

# the notification body around an encrypted transaction
sub wechat_body {
    my ($self, $tx, %o) = @_;
    my $plain = ref $tx ? GovPay::Test::json_encode($tx) : $tx;
    my $nonce = $o{nonce} // GovPay::Test::random_string(12);
    my $aad = $o{aad} // 'transaction';
    my ($ct, $tag) = gcm_encrypt_authenticate('AES', $o{apiv3_key} // $self->{apiv3_key},
                                              $nonce, $aad, $plain);
    return GovPay::Test::json_encode({
        id => 'EV-2018022511223320873', create_time => '2026-11-24T10:00:00+08:00',
        resource_type => 'encrypt-resource',
        event_type => $o{event_type} // 'TRANSACTION.SUCCESS',
        summary => $o{summary} // '支付成功',
        resource => { original_type => $o{original_type} // 'transaction',
                      algorithm => 'AEAD_AES_256_GCM',
                      ciphertext => encode_base64($o{tamper} ? $o{tamper}->($ct . $tag)
                                                             : $ct . $tag, ''),
                      associated_data => $aad, nonce => $nonce },
    });
}

# wechat_notify($body, ts => , nonce =>, serial =>, key =>, sign_body =>)
sub wechat_notify {
    my ($self, $body, %o) = @_;
    my $ts = $o{ts} // int(time);
    my $nonce = $o{nonce} // GovPay::Test::random_string(32);
    my $sig = $o{signature} // rsa_sign($o{key} // $self->priv('wechat_platform'),
        "$ts\n$nonce\n" . ($o{sign_body} // $body) . "\n");
    return $self->{t}->request(POST => '/notify/wechat', body => $body,
        timeout => $o{timeout},
        headers => { 'Content-Type' => 'application/json',
                     'Wechatpay-Timestamp' => $ts, 'Wechatpay-Nonce' => $nonce,
                     'Wechatpay-Signature' => $sig,
                     'Wechatpay-Serial' => $o{serial} // $WECHAT_PLATFORM_SERIAL });
}

###############################################################################
# the stand-in WeChat Pay and WeChat OAuth server

# start_wechat_daemon(): forks an HTTP server on a free port that plays
#   GET  /sns/oauth2/access_token   appid + secret + code -> openid
#                                   (code "BAD" -> errcode 40029)
#   POST /v3/pay/transactions/jsapi checks the merchant Authorization; its
#                                   answer is signed with the platform key
#                                   (openid "o-badsig": with another key)
# and logs each request as one JSON line to wechat-daemon.log; returns the port
my @DAEMONS;
my $CREATOR = $$;

sub start_wechat_daemon {
    my ($self) = @_;
    require HTTP::Daemon;
    require HTTP::Response;
    my $d = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => 0, Reuse => 1)
        or croak "HTTP::Daemon: $!";
    my $port = $d->sockport;
    my $log = $self->{t}->dir . '/wechat-daemon.log';
    $self->{daemon_log} = $log;
    my $merchant = $self->pub('wechat_merchant');
    my $platform = $self->priv('wechat_platform');
    my $other = $self->priv('alipay_platform');
    my $secret = $self->{app_secret};

    my $pid = fork // croak "fork: $!";
    if ($pid) {
        close $d;
        push @DAEMONS, $pid;
        return $port;
    }

    $SIG{TERM} = sub { POSIX::_exit(0) };
    while (my $conn = $d->accept) {
        while (my $req = $conn->get_request) {
            my %entry = (method => $req->method, path => $req->uri->path,
                         query => $req->uri->query // '', body => $req->content,
                         authorization => $req->header('Authorization') // '');
            my $res;
            if ($req->uri->path eq '/sns/oauth2/access_token') {
                my %q = $req->uri->query_form;
                if (($q{secret} // '') eq $secret && ($q{appid} // '') eq $WECHAT_APPID
                    && ($q{grant_type} // '') eq 'authorization_code'
                    && ($q{code} // 'BAD') ne 'BAD') {
                    my $openid = $q{code} eq 'BADSIG' ? 'o-badsig' : 'o-payer-0001';
                    $res = HTTP::Response->new(200, 'OK',
                        [ 'Content-Type' => 'application/json' ],
                        qq({"access_token":"ACCESS","expires_in":7200,)
                        . qq("refresh_token":"R","openid":"$openid","scope":"snsapi_base"}));
                } else {
                    $res = HTTP::Response->new(200, 'OK',
                        [ 'Content-Type' => 'application/json' ],
                        '{"errcode":40029,"errmsg":"invalid code"}');
                }
            } elsif ($req->uri->path eq '/v3/pay/transactions/jsapi') {
                my %a = ($entry{authorization} =~ /(\w+)="([^"]*)"/g);
                my $ok = $entry{authorization} =~ /^WECHATPAY2-SHA256-RSA2048 /
                    && ($a{mchid} // '') eq $WECHAT_MCHID
                    && ($a{serial_no} // '') eq $WECHAT_SERIAL
                    && rsa_verify($merchant, "POST\n/v3/pay/transactions/jsapi\n"
                        . ($a{timestamp} // '') . "\n" . ($a{nonce_str} // '') . "\n"
                        . $req->content . "\n", $a{signature});
                $entry{signature_ok} = $ok ? 1 : 0;
                if ($ok) {
                    my $body = '{"prepay_id":"wx24100000000000000000000000000001"}';
                    my ($ts, $nonce) = (int(time), GovPay::Test::random_string(32));
                    my $key = $req->content =~ /o-badsig/ ? $other : $platform;
                    $res = HTTP::Response->new(200, 'OK', [
                        'Content-Type' => 'application/json',
                        'Wechatpay-Timestamp' => $ts, 'Wechatpay-Nonce' => $nonce,
                        'Wechatpay-Serial' => $WECHAT_PLATFORM_SERIAL,
                        'Wechatpay-Signature' => rsa_sign($key, "$ts\n$nonce\n$body\n"),
                    ], $body);
                } else {
                    $res = HTTP::Response->new(401, 'Unauthorized',
                        [ 'Content-Type' => 'application/json' ],
                        '{"code":"SIGN_ERROR","message":"bad signature"}');
                }
            } else {
                $res = HTTP::Response->new(404, 'Not Found');
            }
            if (open my $fh, '>>', $log) {
                print {$fh} GovPay::Test::json_encode(\%entry), "\n";
                close $fh;
            }
            $conn->send_response($res);
        }
        $conn->close;
    }
    POSIX::_exit(0);
}

###############################################################################
# refunds: the worker's refund plugin and the stand-in refund gateways

# the worker's timeout of a channel request in the tests: generous, since a
# shared machine (and valgrind, far more) slows the worker; the stand-in's
# "timeout" answers take longer than this
our $REFUND_TIMEOUT_MS = $ENV{GOV_PAY_VALGRIND} ? 8000 : 2000;

# refund_config($port, %o): plugins.refund of a worker that carries refunds to
# the stand-in gateways on $port (start_refund_daemon) and reports to this
# test's edge; short schedules; %o replaces top-level fields
sub refund_config {
    my ($self, $port, %o) = @_;
    my $t = $self->{t};
    my $base = "http://127.0.0.1:$port";
    return {
        code_key => $t->code_key_file,
        timeout_ms => $REFUND_TIMEOUT_MS, connect_timeout_ms => $REFUND_TIMEOUT_MS,
        poll_ms => 100,
        schedule_s => [1, 1, 1], wait_s => [1, 1, 1, 1, 1, 1],
        sandbox => \1,
        alipay => { app_id => $ALIPAY_APP_ID, gateway => "$base/gateway.do",
                    app_key => $self->key_file('alipay_app'),
                    public_key => $self->pub_file('alipay_platform') },
        wechat => { mchid => $WECHAT_MCHID, merchant_serial => $WECHAT_SERIAL,
                    merchant_key => $self->key_file('wechat_merchant'),
                    platform_keys => [ { serial => $WECHAT_PLATFORM_SERIAL,
                                         key => $self->pub_file('wechat_platform') } ],
                    api_url => $base, notify_url => $t->public_url . '/notify/wechat' },
        unionpay => { mer_id => $UNIONPAY_MER_ID, cert_id => $UNIONPAY_CERT_ID,
                      sign_key => $self->key_file('unionpay_sign'),
                      verify_key => $self->pub_file('unionpay_platform'),
                      back_url => "$base/gateway/api/backTransReq.do",
                      query_url => "$base/gateway/api/queryTrans.do",
                      notify_url => $t->public_url . '/notify/unionpay' },
        %o,
    };
}

# refund_behaviour($refund_id => $behaviour, ...): how the stand-in gateways
# treat the requests about that refund (read on every request); words join
# with "+" ("fund_change_n+amount:2999"):
#   succeed            the refund is made and the answer says so (the
#                      default); UnionPay accepts it (respCode 00) and posts
#                      the signed back notification (txnType 04) to backUrl
#   refuse:<code>      a definite refusal: Alipay 40004 with that sub_code,
#                      WeChat Pay that error code (its HTTP status), UnionPay
#                      that respCode
#   5xx                every request about it is answered 502
#   <mutation>_once    the first refund request: the refund is made but its
#                      answer is spoiled: drop (the connection closes, no
#                      answer), timeout (no answer for 2 s longer than the
#                      worker waits), 5xx (502, not
#                      made), badsig (signed with another key), garbage (not
#                      the channel's format), huge (100 KiB), other_id (an
#                      answer about another refund), stale (WeChat Pay: a
#                      timestamp an hour old); later requests are answered
#                      as "succeed"; UnionPay sends no notification after a
#                      dropped or timed out answer
#   amount:<fen>       answers (and notifications) state this amount
#   fund_change_n      Alipay: 10000 with fund_change N; the query says
#                      REFUND_SUCCESS
#   processing         WeChat Pay: PROCESSING; the query then says SUCCESS
#   processing_closed  WeChat Pay: PROCESSING; the query then says CLOSED
#   processing_forever WeChat Pay: PROCESSING, and so does every query
#   processing_notify  WeChat Pay: PROCESSING, then the signed, encrypted
#                      REFUND.SUCCESS notification posted to notify_url
#                      (processing_notify_twice: posted twice)
#   accepted           UnionPay: respCode 00 and no notification; the query
#                      says origRespCode 00
#   notify_twice       UnionPay: the back notification is posted twice
#   pending            UnionPay: accepted, no notification, the query says
#                      origRespCode 05 (still at work)
sub refund_behaviour {
    my ($self, %b) = @_;
    my $file = $self->{t}->dir . '/refund-daemon.json';
    my $cur = (-s $file ? GovPay::Test::json_decode(_slurp($file)) : undef) // {};
    %$cur = (%$cur, %b);
    open my $fh, '>', "$file.tmp" or croak "open $file.tmp: $!";
    print {$fh} GovPay::Test::json_encode($cur);
    close $fh;
    rename "$file.tmp", $file or croak "rename $file: $!";
}

# the requests the stand-in refund gateways received, oldest first: hashes
# { channel, kind (refund | query), refund_id, signature_ok, answer (HTTP
# status or "dropped"), behaviour, made (1: this request made the refund),
# notified (notifications posted after the answer) }
sub refund_requests {
    my ($self, $id) = @_;
    open my $fh, '<', $self->{t}->dir . '/refund-daemon.log' or return ();
    my @all = map { GovPay::Test::json_decode($_) } <$fh>;
    return defined $id ? grep { ($_->{refund_id} // '') eq $id } @all : @all;
}

# refunds the stand-in made (money moved) for that refund id: the tests'
# "never refunded twice"
sub refunds_made {
    my ($self, $id) = @_;
    return scalar grep { $_->{made} } $self->refund_requests($id);
}

sub _yuan { sprintf '%d.%02d', int($_[0] / 100), $_[0] % 100 }

sub _fen {
    my ($y) = @_;
    return undef unless defined $y && $y =~ /^(\d+)(?:\.(\d{1,2}))?$/;
    return $1 * 100 + ($2 // 0) * (length($2 // '') == 1 ? 10 : 1);
}

sub _cst {
    my ($fmt) = @_;
    return POSIX::strftime($fmt, gmtime(time + 8 * 3600));
}

# start_refund_daemon(): forks an HTTP server on a free port that plays the
# refund APIs of the three channels, as they publish them:
#   POST /gateway.do                         Alipay: alipay.trade.refund and
#                                            alipay.trade.fastpay.refund.query
#   POST /v3/refund/domestic/refunds         WeChat Pay: a refund
#   GET  /v3/refund/domestic/refunds/{no}    WeChat Pay: the refund query
#   POST /gateway/api/backTransReq.do        UnionPay: 退货 (txnType 04)
#   POST /gateway/api/queryTrans.do          UnionPay: the query (txnType 00)
# It checks the worker's signatures with the worker's public keys (a request
# that does not verify is refused as the channel refuses it), answers signed
# with the channels' keys, remembers the refunds it made (a repeated request
# refunds nothing more: Alipay's out_request_no, WeChat Pay's out_refund_no;
# UnionPay's orderId + txnTime), behaves per refund_behaviour(), and logs each
# request (refund_requests). Returns the port.
sub start_refund_daemon {
    my ($self) = @_;
    require HTTP::Daemon;
    require HTTP::Response;
    require HTTP::Tiny;
    my $d = HTTP::Daemon->new(LocalAddr => '127.0.0.1', LocalPort => 0, Reuse => 1)
        or croak "HTTP::Daemon: $!";
    my $port = $d->sockport;
    my $dir = $self->{t}->dir;
    my %k = (
        alipay_app => $self->pub('alipay_app'), alipay => $self->priv('alipay_platform'),
        wechat_merchant => $self->pub('wechat_merchant'), wechat => $self->priv('wechat_platform'),
        unionpay_sign => $self->pub('unionpay_sign'), unionpay => $self->priv('unionpay_platform'),
        other => $self->priv('other_channel'),
    );
    my $apiv3 = $self->{apiv3_key};

    my $pid = fork // croak "fork: $!";
    if ($pid) {
        close $d;
        push @DAEMONS, $pid;
        return $port;
    }

    $SIG{TERM} = sub { POSIX::_exit(0) };
    my $J = JSON::XS->new->utf8->canonical;
    my (%made, %count);
    my $seq = 0;

    my $log = sub {
        my ($e) = @_;
        if (open my $fh, '>>', "$dir/refund-daemon.log") {
            print {$fh} GovPay::Test::json_encode($e), "\n";
            close $fh;
        }
    };
    # the behaviour of a refund: its words ("a+b+c" is three), as a hash
    my $behaviour = sub {
        my ($id) = @_;
        my $c = -s "$dir/refund-daemon.json"
            ? GovPay::Test::json_decode(_slurp("$dir/refund-daemon.json")) : {};
        my $b = ($c // {})->{ $id // '' } // 'succeed';
        my %b = (_ => $b);
        for my $w (split /\+/, $b) {
            if ($w =~ /^(refuse|amount):(.+)$/) { $b{$1} = $2 }
            elsif ($w =~ /^(\w+?)_once$/) { $b{once} = $1 }
            else { $b{$w} = 1 }
        }
        return \%b;
    };
    my $post = sub {
        my ($url, $body, $headers) = @_;
        my $r = HTTP::Tiny->new(timeout => 10)->post($url,
            { content => $body, headers => $headers });
        return "$r->{status}";
    };

    # a spoiled first answer ("<mutation>_once"): the mutation, or ''
    my $once = sub {
        my ($b, $id) = @_;
        return ($b->{once} && $count{$id} == 1) ? $b->{once} : '';
    };

    # -- Alipay ------------------------------------------------------------
    my $alipay = sub {
        my ($req, $e) = @_;
        my %f = %{ form_decode($req->content) };
        $e->{channel} = 'alipay';
        my $biz = GovPay::Test::json_decode($f{biz_content} // '') // {};
        my $id = $biz->{out_request_no} // '';
        $e->{refund_id} = $id;
        $e->{signature_ok} = (rsa_verify($k{alipay_app},
            canonical(\%f, ['sign'], 1), $f{sign}) && ($f{app_id} // '') eq $ALIPAY_APP_ID
            && ($f{sign_type} // '') eq 'RSA2' && ($f{charset} // '') eq 'utf-8') ? 1 : 0;
        my $method = $f{method} // '';
        my $b = $behaviour->($id);
        $e->{behaviour} = $b->{_};
        $e->{trade_no} = $biz->{trade_no};
        my ($name, %node);
        my $key = $k{alipay};
        my $mut = '';
        my $stated = $b->{amount};

        if ($method eq 'alipay.trade.refund') {
            $e->{kind} = 'refund';
            $count{$id}++;
            $name = 'alipay_trade_refund_response';
            $mut = $once->($b, $id);
            $e->{amount} = _fen($biz->{refund_amount});
            $e->{reason} = $biz->{refund_reason};
            if (!$e->{signature_ok}) {
                %node = (code => '40002', msg => 'Invalid Arguments',
                         sub_code => 'isv.invalid-signature', sub_msg => '验签出错');
            } elsif ($b->{'5xx'} || $mut eq '5xx') {
                return HTTP::Response->new(502, 'Bad Gateway');
            } elsif (defined $b->{refuse}) {
                %node = (code => '40004', msg => 'Business Failed', sub_code => $b->{refuse},
                         sub_msg => '退款被拒绝', out_trade_no => $biz->{out_trade_no},
                         refund_fee => '0.00', send_back_fee => '0.00');
            } else {
                my $first = !$made{$id};
                if ($first) {
                    $made{$id} = { amount => $e->{amount}, trade_no => $biz->{trade_no},
                                   out_trade_no => $biz->{out_trade_no} };
                    $e->{made} = 1;
                }
                my $total = 0;
                $total += $_->{amount} for grep { ($_->{trade_no} // '') eq ($biz->{trade_no} // '') }
                    values %made;
                %node = (code => '10000', msg => 'Success', trade_no => $biz->{trade_no},
                         out_trade_no => $biz->{out_trade_no}, buyer_logon_id => '159****5620',
                         fund_change => ($first && !$b->{fund_change_n}) ? 'Y' : 'N',
                         refund_fee => _yuan($total), send_back_fee => _yuan($made{$id}{amount}),
                         gmt_refund_pay => _cst('%Y-%m-%d %H:%M:%S'));
            }
        } elsif ($method eq 'alipay.trade.fastpay.refund.query') {
            $e->{kind} = 'query';
            $name = 'alipay_trade_fastpay_refund_query_response';
            return HTTP::Response->new(502, 'Bad Gateway') if $b->{'5xx'};
            if (!$e->{signature_ok}) {
                %node = (code => '40002', msg => 'Invalid Arguments',
                         sub_code => 'isv.invalid-signature', sub_msg => '验签出错');
            } elsif (my $m = $made{$id}) {
                %node = (code => '10000', msg => 'Success', trade_no => $m->{trade_no},
                         out_trade_no => $m->{out_trade_no}, out_request_no => $id,
                         refund_amount => _yuan($stated // $m->{amount}),
                         total_amount => _yuan($m->{amount}), refund_status => 'REFUND_SUCCESS',
                         gmt_refund_pay => _cst('%Y-%m-%d %H:%M:%S'));
            } else {
                %node = (code => '10000', msg => 'Success', trade_no => $biz->{trade_no},
                         out_trade_no => $biz->{out_trade_no});
            }
        } else {
            $e->{kind} = 'other';
            $name = 'error_response';
            %node = (code => '40001', msg => 'Missing Required Arguments');
        }

        $node{out_trade_no} = '99999999999999999999' if $mut eq 'other_id' && $node{out_trade_no};
        $key = $k{other} if $mut eq 'badsig';
        my $json = $J->encode(\%node);
        my $body = qq({"$name":$json,"sign":") . rsa_sign($key, $json) . '"}';
        $body = '<html>502 Bad Gateway</html>' if $mut eq 'garbage';
        $body = $body . (' ' x 102400) if $mut eq 'huge';
        return ($mut eq 'drop' || $mut eq 'timeout') ? uc $mut
            : HTTP::Response->new(200, 'OK', [ 'Content-Type' => 'text/html;charset=utf-8' ], $body);
    };

    # -- WeChat Pay ----------------------------------------------------------
    my %wechat_status = (USER_ACCOUNT_ABNORMAL => 403, NOT_ENOUGH => 403, NO_AUTH => 403,
        INVALID_REQUEST => 400, PARAM_ERROR => 400, MCH_NOT_EXISTS => 400,
        RESOURCE_NOT_EXISTS => 404, FREQUENCY_LIMITED => 429, SYSTEM_ERROR => 500,
        SIGN_ERROR => 401);
    my $wechat_answer = sub {
        my ($status, $doc, $mut) = @_;
        my $body = ref $doc ? $J->encode($doc) : $doc;
        my ($ts, $nonce) = (int(time), GovPay::Test::random_string(32));
        $ts -= 3600 if ($mut // '') eq 'stale';
        my $key = ($mut // '') eq 'badsig' ? $k{other} : $k{wechat};
        $body = '<html>bad gateway</html>' if ($mut // '') eq 'garbage';
        my $sig = rsa_sign($key, "$ts\n$nonce\n$body\n");
        $body .= ' ' x 102400 if ($mut // '') eq 'huge';
        return HTTP::Response->new($status, 'X', [
            'Content-Type' => 'application/json', 'Wechatpay-Timestamp' => $ts,
            'Wechatpay-Nonce' => $nonce, 'Wechatpay-Serial' => $WECHAT_PLATFORM_SERIAL,
            'Wechatpay-Signature' => $sig ], $body);
    };
    my $wechat_refund = sub {
        my ($id, $stated) = @_;
        my $m = $made{$id};
        my $amt = $stated // $m->{amount};
        return { refund_id => $m->{refund_id}, out_refund_no => $id,
                 transaction_id => $m->{trade_no}, out_trade_no => $m->{out_trade_no},
                 channel => 'ORIGINAL', user_received_account => '支付用户零钱',
                 ($m->{status} eq 'SUCCESS' ? (success_time => '2026-11-25T10:00:05+08:00') : ()),
                 create_time => '2026-11-25T10:00:00+08:00', status => $m->{status},
                 funds_account => 'AVAILABLE',
                 amount => { total => $m->{total}, refund => $amt + 0, payer_total => $m->{total},
                             payer_refund => $amt + 0, settlement_refund => $amt + 0,
                             settlement_total => $m->{total}, discount_refund => 0,
                             currency => 'CNY', refund_fee => 0 } };
    };
    my $wechat_notify = sub {
        my ($id, $stated) = @_;
        my $m = $made{$id};
        $m->{status} = 'SUCCESS';
        my $plain = $J->encode({ mchid => $WECHAT_MCHID, out_trade_no => $m->{out_trade_no},
            transaction_id => $m->{trade_no}, out_refund_no => $id, refund_id => $m->{refund_id},
            refund_status => 'SUCCESS', success_time => '2026-11-25T10:00:05+08:00',
            user_received_account => '支付用户零钱',
            amount => { total => $m->{total}, refund => ($stated // $m->{amount}) + 0,
                        payer_total => $m->{total}, payer_refund => ($stated // $m->{amount}) + 0 } });
        my $nonce = GovPay::Test::random_string(12);
        my ($ct, $tag) = gcm_encrypt_authenticate('AES', $apiv3, $nonce, 'refund', $plain);
        my $body = $J->encode({ id => 'EV-' . GovPay::Test::random_string(20, '0123456789'),
            create_time => '2026-11-25T10:00:05+08:00', resource_type => 'encrypt-resource',
            event_type => 'REFUND.SUCCESS', summary => '退款成功',
            resource => { original_type => 'refund', algorithm => 'AEAD_AES_256_GCM',
                          ciphertext => encode_base64($ct . $tag, ''), associated_data => 'refund',
                          nonce => $nonce } });
        my ($ts, $n2) = (int(time), GovPay::Test::random_string(32));
        return $post->($m->{notify_url}, $body, { 'Content-Type' => 'application/json',
            'Wechatpay-Timestamp' => $ts, 'Wechatpay-Nonce' => $n2,
            'Wechatpay-Serial' => $WECHAT_PLATFORM_SERIAL,
            'Wechatpay-Signature' => rsa_sign($k{wechat}, "$ts\n$n2\n$body\n") });
    };
    my $wechat = sub {
        my ($req, $e) = @_;
        $e->{channel} = 'wechat';
        my %a = (($req->header('Authorization') // '') =~ /(\w+)="([^"]*)"/g);
        my $path = $req->uri->path . (defined $req->uri->query ? '?' . $req->uri->query : '');
        $e->{signature_ok} = (($req->header('Authorization') // '') =~ /^WECHATPAY2-SHA256-RSA2048 /
            && ($a{mchid} // '') eq $WECHAT_MCHID && ($a{serial_no} // '') eq $WECHAT_SERIAL
            && rsa_verify($k{wechat_merchant}, $req->method . "\n$path\n" . ($a{timestamp} // '')
                          . "\n" . ($a{nonce_str} // '') . "\n" . $req->content . "\n",
                          $a{signature})) ? 1 : 0;
        my $after;
        if ($req->method eq 'POST' && $req->uri->path eq '/v3/refund/domestic/refunds') {
            my $doc = GovPay::Test::json_decode($req->content) // {};
            my $id = $doc->{out_refund_no} // '';
            $e->{refund_id} = $id;
            $e->{kind} = 'refund';
            $e->{amount} = $doc->{amount}{refund};
            $e->{total} = $doc->{amount}{total};
            $e->{notify_url} = $doc->{notify_url};
            $e->{reason} = $doc->{reason};
            $e->{trade_no} = $doc->{transaction_id};
            $e->{out_trade_no} = $doc->{out_trade_no};
            $e->{currency} = $doc->{amount}{currency};
            my $b = $behaviour->($id);
            $e->{behaviour} = $b->{_};
            $count{$id}++;
            my $mut = $once->($b, $id);
            my $stated = $b->{amount};
            return ($wechat_answer->(401, { code => 'SIGN_ERROR', message => '签名错误' }))
                unless $e->{signature_ok};
            return HTTP::Response->new(502, 'Bad Gateway') if $b->{'5xx'} || $mut eq '5xx';
            if (defined $b->{refuse}) {
                return $wechat_answer->($wechat_status{ $b->{refuse} } // 400,
                                        { code => $b->{refuse}, message => '退款被拒绝' });
            }
            unless ($made{$id}) {
                $made{$id} = { amount => $doc->{amount}{refund}, total => $doc->{amount}{total},
                    trade_no => $doc->{transaction_id}, out_trade_no => $doc->{out_trade_no},
                    notify_url => $doc->{notify_url},
                    refund_id => '50' . GovPay::Test::random_string(27, '0123456789'),
                    status => (grep { /^processing/ } keys %$b) ? 'PROCESSING' : 'SUCCESS' };
                $e->{made} = 1;
                if ($b->{processing_notify} || $b->{processing_notify_twice}) {
                    my $times = $b->{processing_notify_twice} ? 2 : 1;
                    $after = sub { [ map { $wechat_notify->($id, $stated) } 1 .. $times ] };
                }
            }
            my $refund = $wechat_refund->($id, $stated);
            $refund->{out_refund_no} = substr($id, 0, -1) . (substr($id, -1) eq '9' ? '8' : '9')
                if $mut eq 'other_id';
            return ($mut eq 'drop' || $mut eq 'timeout') ? (uc $mut, $after)
                : ($wechat_answer->(200, $refund, $mut), $after);
        }
        if ($req->method eq 'GET' && $req->uri->path =~ m{^/v3/refund/domestic/refunds/([^/]+)$}) {
            my $id = $1;
            $e->{refund_id} = $id;
            $e->{kind} = 'query';
            my $b = $behaviour->($id);
            $e->{behaviour} = $b->{_};
            my $stated = $b->{amount};
            return ($wechat_answer->(401, { code => 'SIGN_ERROR', message => '签名错误' }))
                unless $e->{signature_ok};
            return HTTP::Response->new(502, 'Bad Gateway') if $b->{'5xx'};
            my $m = $made{$id}
                or return $wechat_answer->(404, { code => 'RESOURCE_NOT_EXISTS',
                                                  message => '退款单不存在' });
            if ($m->{status} eq 'PROCESSING') {
                $m->{status} = $b->{processing_closed} ? 'CLOSED'
                             : $b->{processing} ? 'SUCCESS' : 'PROCESSING';
            }
            return $wechat_answer->(200, $wechat_refund->($id, $stated));
        }
        $e->{kind} = 'other';
        return HTTP::Response->new(404, 'Not Found');
    };

    # -- UnionPay ------------------------------------------------------------
    my $unionpay_answer = sub {
        my ($f, $mut) = @_;
        my %f = (version => '5.1.0', encoding => 'UTF-8', signMethod => '01',
                 certId => '69026276696', accessType => '0', merId => $UNIONPAY_MER_ID,
                 signPubKeyCert => "-----BEGIN CERTIFICATE-----\r\nMIIB+x/y==\r\n-----END CERTIFICATE-----",
                 %$f);
        my %b = map { $_ => encode_utf8($f{$_}) } keys %f;
        my $key = ($mut // '') eq 'badsig' ? $k{other} : $k{unionpay};
        $b{signature} = rsa_sign($key, sha256_hex(canonical(\%b, ['signature'])));
        my $body = join '&', map { "$_=$b{$_}" } sort keys %b;
        $body = '<html>bad gateway</html>' if ($mut // '') eq 'garbage';
        $body .= '&pad=' . ('x' x 102400) if ($mut // '') eq 'huge';
        return HTTP::Response->new(200, 'OK', [ 'Content-Type' => 'text/plain;charset=UTF-8' ], $body);
    };
    my $unionpay_notify = sub {
        my ($id, $stated) = @_;
        my $m = $made{$id};
        my %f = (version => '5.1.0', encoding => 'UTF-8', bizType => '000201', txnType => '04',
                 txnSubType => '00', accessType => '0', merId => $UNIONPAY_MER_ID,
                 orderId => $id, txnTime => $m->{txn_time}, txnAmt => $stated // $m->{amount},
                 currencyCode => '156', queryId => $m->{query_id}, origQryId => $m->{orig},
                 traceNo => '861205', traceTime => '1125100005', settleAmt => $stated // $m->{amount},
                 settleCurrencyCode => '156', settleDate => '1125', respCode => '00',
                 respMsg => '成功[0000000]', signMethod => '01', certId => '69026276696',
                 reqReserved => '', signPubKeyCert => "-----BEGIN CERTIFICATE-----\nMIIB+x/y==\n-----END CERTIFICATE-----");
        my %b = map { $_ => encode_utf8($f{$_}) } keys %f;
        $f{signature} = rsa_sign($k{unionpay}, sha256_hex(canonical(\%b, ['signature'])));
        return $post->($m->{notify_url}, form_encode(\%f),
                       { 'Content-Type' => 'application/x-www-form-urlencoded;charset=UTF-8' });
    };
    my $unionpay = sub {
        my ($req, $e) = @_;
        $e->{channel} = 'unionpay';
        my %f = %{ form_decode($req->content) };
        my $id = $f{orderId} // '';
        $e->{refund_id} = $id;
        $e->{txn_time} = $f{txnTime};
        $e->{signature_ok} = (rsa_verify($k{unionpay_sign},
            sha256_hex(canonical(\%f, ['signature'])), $f{signature})
            && ($f{merId} // '') eq $UNIONPAY_MER_ID && ($f{certId} // '') eq $UNIONPAY_CERT_ID
            && ($f{signMethod} // '') eq '01') ? 1 : 0;
        my $b = $behaviour->($id);
        $e->{behaviour} = $b->{_};
        $e->{trade_no} = $f{origQryId};
        $e->{notify_url} = $f{backUrl};
        my $stated = $b->{amount};
        my %echo = (orderId => $id, txnTime => $f{txnTime} // '', txnType => $f{txnType} // '',
                    txnSubType => $f{txnSubType} // '', bizType => $f{bizType} // '');
        my $after;
        if ($req->uri->path eq '/gateway/api/backTransReq.do') {
            $e->{kind} = 'refund';
            $e->{amount} = $f{txnAmt};
            $count{$id}++;
            my $mut = $once->($b, $id);
            return $unionpay_answer->({ %echo, respCode => '11', respMsg => '验证签名失败' })
                unless $e->{signature_ok} && ($f{txnType} // '') eq '04';
            return HTTP::Response->new(502, 'Bad Gateway') if $b->{'5xx'} || $mut eq '5xx';
            return $unionpay_answer->({ %echo, respCode => $b->{refuse}, respMsg => '交易失败' })
                if defined $b->{refuse};
            if (my $m = $made{$id}) {
                # orderId + txnTime name one transaction: the same again is a
                # duplicate; another txnTime would be a second refund
                return $unionpay_answer->({ %echo, respCode => '12', respMsg => '重复交易' })
                    if $m->{txn_time} eq ($f{txnTime} // '');
                $e->{second} = 1;
            }
            $made{$id} = { amount => $f{txnAmt}, txn_time => $f{txnTime}, orig => $f{origQryId},
                           notify_url => $f{backUrl},
                           query_id => 'UPR' . GovPay::Test::random_string(18, '0123456789') };
            $e->{made} = 1;
            # a lost answer comes without its notification: the query decides
            unless ($b->{accepted} || $b->{pending} || $mut eq 'drop' || $mut eq 'timeout') {
                my $times = $b->{notify_twice} ? 2 : 1;
                $after = sub { [ map { $unionpay_notify->($id, $stated) } 1 .. $times ] };
            }
            my %ans = (%echo, respCode => '00', respMsg => '成功[0000000]', txnAmt => $f{txnAmt});
            $ans{orderId} = substr($id, 0, -1) . (substr($id, -1) eq '9' ? '8' : '9')
                if $mut eq 'other_id';
            return ($mut eq 'drop' || $mut eq 'timeout') ? (uc $mut, $after)
                : ($unionpay_answer->(\%ans, $mut), $after);
        }
        if ($req->uri->path eq '/gateway/api/queryTrans.do') {
            $e->{kind} = 'query';
            return $unionpay_answer->({ %echo, respCode => '11', respMsg => '验证签名失败' })
                unless $e->{signature_ok} && ($f{txnType} // '') eq '00';
            return HTTP::Response->new(502, 'Bad Gateway') if $b->{'5xx'};
            my $m = $made{$id};
            return $unionpay_answer->({ %echo, respCode => '34', respMsg => '查无此交易' })
                unless $m && $m->{txn_time} eq ($f{txnTime} // '');
            return $unionpay_answer->({ %echo, respCode => '00', respMsg => '成功[0000000]',
                origRespCode => $b->{pending} ? '05' : '00',
                origRespMsg => $b->{pending} ? '交易已受理' : '成功[0000000]',
                txnAmt => $stated // $m->{amount}, queryId => $m->{query_id},
                settleAmt => $stated // $m->{amount}, reserved => '{cardNumberLock=1&x=y}' });
        }
        $e->{kind} = 'other';
        return HTTP::Response->new(404, 'Not Found');
    };

    # one request per connection (the worker's transfers run at once; a
    # kept-alive connection would hold up the others); a "timeout" answer is
    # held by a child, so it holds up nobody else
    $SIG{CHLD} = 'IGNORE';
    while (my $conn = $d->accept) {
        if (my $req = $conn->get_request) {
            my %e = (method => $req->method, path => $req->uri->path, seq => ++$seq,
                     t => Time::HiRes::time());
            my $path = $req->uri->path;
            my ($res, $after) = $path eq '/gateway.do' ? $alipay->($req, \%e)
                : $path =~ m{^/v3/refund/} ? $wechat->($req, \%e)
                : $path =~ m{^/gateway/api/} ? $unionpay->($req, \%e)
                : (HTTP::Response->new(404, 'Not Found'));
            if (!ref $res) {
                $e{answer} = $res eq 'DROP' ? 'dropped' : 'timed out';
                if ($res eq 'TIMEOUT' && !fork) {
                    sleep 2 + $REFUND_TIMEOUT_MS / 1000;
                    POSIX::_exit(0);
                }
            } else {
                $e{answer} = $res->code;
                $conn->force_last_request;
                $conn->send_response($res);
            }
            $conn->close;
            $e{notified} = $after->() if $after;
            $log->(\%e);
        }
        $conn->close;
    }
    POSIX::_exit(0);
}

# the daemon's log: a list of hashes
sub daemon_requests {
    my ($self) = @_;
    open my $fh, '<', $self->{daemon_log} or return ();
    return map { GovPay::Test::json_decode($_) } <$fh>;
}

END {
    if ($$ == $CREATOR) {
        for my $pid (@DAEMONS) {
            kill 'TERM', $pid;
            waitpid $pid, 0;
        }
    }
}

1;
