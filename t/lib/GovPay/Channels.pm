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
use POSIX ();
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
