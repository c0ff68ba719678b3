
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
    ngx_str_t                  code;        /* payment code (out_trade_no);
                                               a refund's id for a refund */
    ngx_str_t                  trade_no;    /* the channel's trade number;
                                               its refund number */
    int64_t                    amount;      /* fen, parsed exactly */
    int64_t                    paid_at;     /* unix seconds */
    ngx_uint_t                 success;     /* a final success state */

    /* the callback reports a refund's result (WeChat REFUND.*, UnionPay
       txnType 04), not a payment; final: SUCCEEDED or FAILED is decided
       (success says which), else a state that is acknowledged only */
    ngx_uint_t                 refund;
    ngx_uint_t                 final;
    ngx_str_t                  error;       /* a failed refund's reason */
} ngx_http_gov_pay_settlement_t;


/* a channel's final word on a refund (ngx_gov_pay_refund.c) */

typedef struct ngx_http_gov_pay_refund_result_s {
    ngx_str_t                  refund_id;   /* "<payment code>R<nn>" */
    ngx_uint_t                 succeeded;   /* else FAILED */
    int64_t                    amount;      /* as stated; -1: none stated */
    ngx_str_t                  refund_no;   /* the channel's refund number */
    time_t                     at;
    ngx_str_t                  error;
    ngx_str_t                  bank;        /* a bank's answer: its id and */
    ngx_str_t                  nonce;       /* its request's nonce */
    ngx_http_gov_pay_step_pt   next;
} ngx_http_gov_pay_refund_result_t;


/* refunds (ngx_gov_pay_refund.c) */
ngx_int_t ngx_http_gov_pay_refund_route(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
/* next runs with ctx->outcome: DONE, DUP, MISMATCH, NONE; empty: store */
ngx_int_t ngx_http_gov_pay_refund_result(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_refund_result_t *rr,
    ngx_http_gov_pay_step_pt next);
json_t *ngx_http_gov_pay_refund_json(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, const u_char *nn);


/* a settle in progress (ngx_gov_pay_settle.c) */

typedef struct ngx_http_gov_pay_settle_s {
    ngx_http_gov_pay_settlement_t  s;
    ngx_str_t                      nonce;      /* a bank's, spent by it */
    ngx_str_t                      claim_key;  /* {gpM}:trade:<ch>:<no> */
    ngx_str_t                      owner;      /* the code that claimed it */
    ngx_http_gov_pay_step_pt       next;
} ngx_http_gov_pay_settle_t;


/*
 * Claims s->trade_no for ctx->code on the trade number's shard, then
 * settles the notice (ctx->shard, ctx->seq, ctx->channel set); next runs
 * with ctx->outcome and ctx->reason.
 */
ngx_int_t ngx_http_gov_pay_settle(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s,
    ngx_str_t *nonce, ngx_http_gov_pay_step_pt next);


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

    /*
     * At configuration time (optional): load keys, check that the settings
     * are complete or absent, with messages naming the directive.
     */
    ngx_int_t                (*init_conf)(ngx_conf_t *cf,
                                          ngx_http_gov_pay_main_conf_t *gpmcf);
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
extern const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_alipay_channel;
extern const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_wechat_channel;
extern const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_unionpay_channel;


/* configuration helpers shared by the channels (ngx_gov_pay_channel.c) */

ngx_int_t ngx_http_gov_pay_channels_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf);
/*
 * Of a channel's settings, either all or none are set: NGX_OK and *on
 * (all set), or NGX_ERROR after naming the first missing directive.
 */
ngx_int_t ngx_http_gov_pay_conf_complete(ngx_conf_t *cf, const char *channel,
    ngx_str_t **values, const char **names, ngx_uint_t *on);
EVP_PKEY *ngx_http_gov_pay_conf_pkey(ngx_conf_t *cf, ngx_str_t *file,
    ngx_uint_t private_key, const char *directive);
/* an http(s)://host[:port]/path URL without query or fragment */
ngx_int_t ngx_http_gov_pay_conf_url(ngx_conf_t *cf, ngx_str_t *url,
    const char *directive);
ngx_int_t ngx_http_gov_pay_text_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome, const char *success);
ngx_int_t ngx_http_gov_pay_conf_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *secret, const char *directive);
char *ngx_http_gov_pay_wechat_platform_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
/* $gov_pay_wechat_authorization, $gov_pay_wechat_body: the prepay request */
ngx_int_t ngx_http_gov_pay_wechat_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


/* request helpers shared by the channels */

/*
 * A callback refused (reason: a static string): logged at warn once per
 * channel and reason, then one line per gov_pay_refusal_log_interval with
 * how many more there were, so forged callbacks cannot grow the error log
 * at line rate.  channel: a channel's name (NUL-terminated, static).
 */
void ngx_http_gov_pay_refused(ngx_http_request_t *r, const char *channel,
    const char *reason);
void ngx_http_gov_pay_refusals_flush(ngx_cycle_t *cycle);

ngx_int_t ngx_http_gov_pay_redirect(ngx_http_request_t *r, ngx_str_t *url);
/* the Content-Type starts with type (case-insensitive; charset ignored) */
ngx_int_t ngx_http_gov_pay_content_type_is(ngx_http_request_t *r,
    const char *type);
/* a form in which no key repeats: NGX_OK, or NGX_DECLINED */
ngx_int_t ngx_http_gov_pay_form_unique(gp_form_t *form);
/*
 * A form value of 1 to max printable ASCII bytes (digits only if digits)
 * copied to the request pool: NGX_OK, NGX_DECLINED (absent or not so) or
 * NGX_ERROR.
 */
ngx_int_t ngx_http_gov_pay_form_token(ngx_http_request_t *r, gp_form_t *form,
    const char *key, size_t max, ngx_uint_t digits, ngx_str_t *out);
/* "yyyy-MM-dd HH:mm:ss" (sep 1) or "yyyyMMddHHmmss" (sep 0) in +08:00 */
u_char *ngx_http_gov_pay_cst_time(u_char *buf, time_t t, ngx_uint_t sep);
/* the reverse: unix seconds, or -1 */
time_t ngx_http_gov_pay_cst_parse(const u_char *s, size_t len,
    ngx_uint_t sep);


#endif /* _NGX_GOV_PAY_CHANNEL_H_INCLUDED_ */
