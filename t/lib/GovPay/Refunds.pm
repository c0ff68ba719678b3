package GovPay::Refunds;

# Refunds in tests of what follows them (receipts, webhooks, anomaly cases):
# a unit asks through the edge API, and the refund ends the way a channel
# ends it: refund_done.lua (ngx_gov_pay_module/scripts/), run here through the
# harness's Redis client exactly as the worker's refund plugin runs it for the
# sandbox channel and for Alipay's answers.
#
#   my $id = GovPay::Refunds::ask($t, $code, 3000);          # "<code>R01"
#   GovPay::Refunds::end($t, $id, 'SUCCEEDED');               # or 'FAILED'
#   my $key = GovPay::Refunds::notice_key($t, $code);         # "{gpN}:n:<seq>"

use strict;
use warnings;
use utf8;

use Carp qw(croak);
use Encode qw(encode_utf8);

use GovPay::Test;

my $DONE;

sub _script {
    return $DONE //= do {
        my $f = GovPay::Test::repo_root() . '/ngx_gov_pay_module/scripts/refund_done.lua';
        open my $fh, '<', $f or croak "$f: $!";
        local $/;
        <$fh>;
    };
}

# ask($t, $code, $amount, %body) -> the refund id (dies unless 201)
sub ask {
    my ($t, $code, $amount, %o) = @_;
    my $res = $t->signed_request(POST => "/v1/notices/$code/refunds",
        { request_id => 'RF-' . random_string(10), amount => $amount,
          reason => '退学退费', %o });
    croak 'refund refused: ' . $res->describe unless $res->status == 201;
    return $res->json->{refund_id};
}

# notice_key($t, $code): the notice's key, found without the code key: the
# notice whose refund, settled event or anomaly names the code
sub notice_key {
    my ($t, $code) = @_;
    for my $kind (qw(settled refunds)) {
        for my $e ($t->stream_entries($kind)) {
            return $e->{fields}{notice_key}
                if ($e->{fields}{payment_code} // '') eq $code && $e->{fields}{notice_key};
        }
    }
    croak "no event names notice $code";
}

# end($t, $refund_id, 'SUCCEEDED' | 'FAILED', amount => ..., no => ...,
# at => ..., error => ...) -> the notice's status after it; dies unless DONE
sub end {
    my ($t, $id, $outcome, %o) = @_;
    my ($code, $nn) = $id =~ /^(\d{20})R(\d\d)$/ or croak "bad refund id $id";
    my $key = $o{key} // notice_key($t, $code);
    my ($s) = $key =~ /^\{gp(\d+)\}/;
    my $res = $t->redis->eval(_script(), 4, $key, "{gp$s}:refunds",
        "{gp$s}:refund:queue", "{gp$s}:bankrefunds", map { encode_utf8($_) } $code, $nn,
        $outcome, $o{amount} // '', $o{no} // 'SBXR' . random_string(12, '0123456789'),
        $o{at} // int(time), $o{error} // ($outcome eq 'FAILED' ? 'REFUSED' : ''),
        substr($code, 0, 6), substr($code, 6, 2));
    croak "refund_done.lua answered @$res" unless $res->[0] eq 'DONE';
    return $res->[1];
}

1;
