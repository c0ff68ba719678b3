#!/usr/bin/perl
# fuzz/seed.pl: writes the seed inputs of fuzz/corpus/ (run from the repository root; the
# seeds are committed, this says where they came from). Each seed is a well-formed input of
# the kind the tests send (t/lib/GovPay/Test.pm, t/lib/GovPay/Channels.pm), plus a few
# hostile ones the tests also send; libFuzzer mutates from there.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Encode qw(encode encode_utf8);
use File::Path qw(make_path);
use JSON::PP;
use GovPay::Test qw(valid_id_no valid_uscc);
use GovPay::Channels qw(form_encode);

my $json = JSON::PP->new->utf8->canonical;

sub seed {
    my ($target, $name, $bytes) = @_;
    my $dir = "$FindBin::Bin/corpus/$target";
    make_path($dir);
    open my $fh, '>:raw', "$dir/$name" or die "$dir/$name: $!";
    print {$fh} $bytes;
    close $fh;
}

# the Authorization header
seed(authz => 'hmac', 'GOVPAY-HMAC-SHA256 unit="330100-EDU-001",ts="1796110625",'
     . 'nonce="3f1c9a7e5b2d4c6a8e0f1a2b",sig="dGhpcyBpcyBub3QgYSBzaWduYXR1cmUgYXQgYWxs"');
seed(authz => 'sm2', 'GOVPAY-SM2-SM3 unit="BANK-DEMO-001", ts="1796110625", '
     . 'nonce="abcdefghijklmnop_-", sig="MEUCIQ=="');
seed(authz => 'repeated', 'GOVPAY-HMAC-SHA256 unit="a",unit="b",ts="1",nonce="n",sig="s"');

# a create body
my %notice = (request_id => 'EDU-2026-000123', item_code => '103001', amount => 125000,
              payer => { type => 'person', name => '张三', id_no => valid_id_no() },
              due_at => '2026-12-31T23:59:59+08:00', remark => '2026 秋季学费',
              lines => [ { item_code => '103001', quantity => 1, unit_price => 125000 } ]);
seed(notice => 'full', $json->encode(\%notice));
seed(notice => 'org', $json->encode({ request_id => 'X', item_code => '103002', amount => 2000,
    payer => { type => 'org', name => '某某科技有限公司', id_no => valid_uscc() } }));
seed(notice => 'types', '{"request_id":1,"amount":"12.5","payer":"x","lines":{}}');
seed(notice => 'controls', encode_utf8($json->encode({ %notice,
    payer => { type => 'person', name => "张\x{202e}三\n", id_no => '1' } })));

# Alipay's notification (UTF-8 and GBK)
my %ali = (notify_time => '2026-11-24 10:00:00', notify_type => 'trade_status_sync',
           notify_id => 'ac05099524730693a8b330c5ecf72da9786', charset => 'utf-8',
           version => '1.0', sign_type => 'RSA2', app_id => '2021000000000001',
           trade_no => '2026112422001400000000000001', out_trade_no => '33010026380741889157',
           trade_status => 'TRADE_SUCCESS', total_amount => '1250.00', out_biz_no => '',
           gmt_payment => '2026-11-24 09:59:58', subject => '学费',
           body => '2026 秋季学费 100% + 住宿', sign => 'c2lnbmF0dXJl');
seed(alipay => 'utf8', form_encode(\%ali));
seed(alipay => 'gbk', form_encode({ %ali, charset => 'GBK' }, 'GBK'));
seed(alipay => 'repeated', 'a=1&a=2&total_amount=1.5&gmt_payment=2026-13-01%2000:00:00');

# UnionPay's back notifications (consume and refund)
my %up = (version => '5.1.0', encoding => 'UTF-8', bizType => '000201', txnType => '01',
          txnSubType => '01', accessType => '0', currencyCode => '156',
          merId => '777290058110048', orderId => '33010026380741889157',
          txnTime => '20261124095950', txnAmt => '125000', queryId => '772611240959508612048',
          respCode => '00', respMsg => '成功[0000000]', signMethod => '01',
          reqReserved => 'a%b+c 中文', signature => 'c2ln');
seed(unionpay => 'consume', form_encode(\%up));
seed(unionpay => 'refund', form_encode({ %up, txnType => '04', txnSubType => '00',
                                         orderId => '33010026380741889157R01' }));

# WeChat Pay: the envelope, a transaction, a refund
seed(wechat => 'envelope', $json->encode({ id => 'EV-2018022511223320873',
    create_time => '2026-11-24T10:00:00+08:00', resource_type => 'encrypt-resource',
    event_type => 'TRANSACTION.SUCCESS', summary => '支付成功',
    resource => { original_type => 'transaction', algorithm => 'AEAD_AES_256_GCM',
                  ciphertext => 'AAAA', associated_data => 'transaction',
                  nonce => 'fdasflkja484w' } }));
seed(wechat => 'transaction', $json->encode({ appid => 'wxd678efh567hg6787',
    mchid => '1900000109', out_trade_no => '33010026380741889157',
    transaction_id => '4200000000202611240000000001', trade_state => 'SUCCESS',
    success_time => '2026-11-24T09:59:58+08:00',
    amount => { total => 125000, payer_total => 125000, currency => 'CNY' } }));
seed(wechat => 'refund', $json->encode({ mchid => '1900000109',
    out_trade_no => '33010026380741889157', out_refund_no => '33010026380741889157R01',
    refund_id => '50000000382019052709732678859', refund_status => 'SUCCESS',
    success_time => '2026-11-25T10:00:00+08:00',
    amount => { total => 125000, refund => 30000 } }));

# the bank API
seed(bank => 'payment', $json->encode({ payment_code => '33010026380741889157',
    amount => 2000, bank_trade_no => 'CT001', paid_at => '2026-11-24T10:00:00+08:00' }));
seed(bank => 'refund', $json->encode({ result => 'SUCCEEDED', bank_refund_no => 'BR-1',
    refunded_at => '2026-11-25T10:00:00+08:00', reason => '误缴', amount => 2000 }));

# payment codes: one that parses under the targets' fixed key (0x5a x 32), from
# build/fuzz/fuzz_code's own round trip, and near misses
seed(code => 'valid', "33010026" . '00000000001' . '0');
seed(code => 'letters', '3301002638074188915X');

# receipt URLs
seed(receipt => 'valid', '/r/33010126/0000000001?c=ab12cd');
seed(receipt => 'upper', '/r/33010126/0000000001?c=AB12CD');
