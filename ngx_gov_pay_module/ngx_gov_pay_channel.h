
/*
 * The channel interface: what every payment channel (sandbox, Alipay,
 * WeChat Pay, UnionPay) provides to the edge.  One source file per channel
 * under channels/; the table of channels is in ngx_gov_pay_channel.c.
 *
 * The edge owns everything the channels share: looking the notice up,
 * settling it with one Lua script, duplicates and anomalies.  A channel
 * only hands the payer over, verifies and parses its own callback, and
 * answers in its own format.
 */


#ifndef _NGX_GOV_PAY_CHANNEL_H_INCLUDED_
#define _NGX_GOV_PAY_CHANNEL_H_INCLUDED_


#include "ngx_gov_pay_module.h"


/* what a verified callback says */

typedef struct {
    ngx_str_t                  code;        /* payment code (out_trade_no) */
    ngx_str_t                  trade_no;    /* the channel's trade number */
    int64_t                    amount;      /* fen, parsed exactly */
    int64_t                    paid_at;     /* unix seconds */
    ngx_uint_t                 success;     /* a final success state */
} ngx_http_gov_pay_settlement_t;


/* how the edge disposed of a callback; the channel turns it into a reply */

typedef enum {
    NGX_HTTP_GOV_PAY_CB_ACCEPTED = 0,   /* settled, duplicate, anomaly or a
                                           non-final state acknowledged */
    NGX_HTTP_GOV_PAY_CB_REJECTED,       /* not verified or malformed */
    NGX_HTTP_GOV_PAY_CB_UNKNOWN,        /* no such order */
    NGX_HTTP_GOV_PAY_CB_RETRY           /* store unavailable: retry later */
} ngx_http_gov_pay_cb_outcome_e;


typedef struct {
    ngx_str_t                  name;       /* /pay/<name>/, /notify/<name> */
    const char                *title;      /* the cashier's button text */

    /* on only where configured: never offered or routed to otherwise */
    ngx_int_t                (*enabled)(ngx_http_gov_pay_main_conf_t *gpmcf);

    /*
     * The payer chose this channel (or the unified QR routed them to it):
     * answer with a redirect, an auto-submitting form or a page.  ctx holds
     * the notice (ctx->fields), UNPAID and not expired.  May return
     * NGX_DONE and finish the request later (ngx_http_gov_pay_finish).
     */
    ngx_int_t                (*handoff)(ngx_http_request_t *r,
                                        ngx_http_gov_pay_ctx_t *ctx);

    /*
     * A callback arrived (ctx->body holds the raw body; headers are on r).
     * Verify it before reading anything else, then fill s.
     * NGX_OK: verified; NGX_DECLINED: not verified or malformed.
     */
    ngx_int_t                (*callback)(ngx_http_request_t *r,
                                         ngx_http_gov_pay_ctx_t *ctx,
                                         ngx_http_gov_pay_settlement_t *s);

    /* the channel's own reply for an outcome */
    ngx_int_t                (*reply)(ngx_http_request_t *r,
                                      ngx_http_gov_pay_cb_outcome_e outcome);
} ngx_http_gov_pay_channel_t;


const ngx_http_gov_pay_channel_t *ngx_http_gov_pay_channel(ngx_str_t *name);

/* the i-th channel of the table, or NULL past the end */
const ngx_http_gov_pay_channel_t *ngx_http_gov_pay_channel_at(ngx_uint_t i);

/*
 * The channel a payer's app implies, from the User-Agent, among the
 * enabled ones; NULL: show the cashier page.
 */
const ngx_http_gov_pay_channel_t *ngx_http_gov_pay_channel_for_agent(
    ngx_http_request_t *r, ngx_http_gov_pay_main_conf_t *gpmcf);


extern const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_sandbox_channel;


#endif /* _NGX_GOV_PAY_CHANNEL_H_INCLUDED_ */
