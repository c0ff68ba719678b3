
/*
 * ngx_gov_pay_channel.c: the table of payment channels and the unified-QR
 * routing of a payer's app to its channel by User-Agent.
 */


#include "ngx_gov_pay_channel.h"


static const ngx_http_gov_pay_channel_t  *ngx_http_gov_pay_channels[] = {
    &ngx_http_gov_pay_sandbox_channel,
    NULL
};


const ngx_http_gov_pay_channel_t *
ngx_http_gov_pay_channel(ngx_str_t *name)
{
    ngx_uint_t                         i;
    const ngx_http_gov_pay_channel_t  *ch;

    for (i = 0; ngx_http_gov_pay_channels[i]; i++) {
        ch = ngx_http_gov_pay_channels[i];

        if (ch->name.len == name->len
            && ngx_strncmp(ch->name.data, name->data, name->len) == 0)
        {
            return ch;
        }
    }

    return NULL;
}


const ngx_http_gov_pay_channel_t *
ngx_http_gov_pay_channel_at(ngx_uint_t i)
{
    ngx_uint_t  n;

    for (n = 0; ngx_http_gov_pay_channels[n]; n++) {
        if (n == i) {
            return ngx_http_gov_pay_channels[i];
        }
    }

    return NULL;
}


const ngx_http_gov_pay_channel_t *
ngx_http_gov_pay_channel_for_agent(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    /*
     * No app channel exists yet: the sandbox is chosen on the cashier page
     * only.  The app channels (AlipayClient, MicroMessenger, UnionPay/,
     * CloudPay) route here once they are built.
     */

    return NULL;
}
