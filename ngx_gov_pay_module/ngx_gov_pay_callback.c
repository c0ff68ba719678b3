
/*
 * ngx_gov_pay_callback.c: the channel callback dispatcher.
 *
 *   POST /notify/<channel>      (location = /notify/x { gov_pay_notify x; })
 *
 * The channel verifies its callback before anything in it is believed
 * (channels/); then ngx_gov_pay_settle.c claims the channel's trade number
 * and settles the notice (UNPAID -> PAID plus the settled event),
 * recognises a duplicate, or records money that cannot settle it on the
 * anomaly stream.  The channel gets its success reply only once Redis has
 * accepted the settle, and its failure reply otherwise, so that it
 * retries: nothing is lost.
 */


#include "ngx_gov_pay_channel.h"


static ngx_int_t ngx_http_gov_pay_notify(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_settle_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_notify_refund(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s);
static ngx_int_t ngx_http_gov_pay_refund_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);


ngx_int_t
ngx_http_gov_pay_notify_handler(ngx_http_request_t *r)
{
    ngx_http_gov_pay_ctx_t       *ctx;
    ngx_http_gov_pay_loc_conf_t  *gplcf;

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    gplcf = ngx_http_get_module_loc_conf(r, ngx_http_gov_pay_module);

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->channel = gplcf->channel;

    return ngx_http_gov_pay_read_body(r, ngx_http_gov_pay_notify);
}


static ngx_int_t
ngx_http_gov_pay_notify(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_int_t                          rc;
    ngx_http_gov_pay_settlement_t      s;
    ngx_http_gov_pay_main_conf_t      *gpmcf;
    const ngx_http_gov_pay_channel_t  *ch;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    ch = ngx_http_gov_pay_channel(&ctx->channel);

    if (!ch->enabled(gpmcf)) {
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_REJECTED);
    }

    ngx_memzero(&s, sizeof(ngx_http_gov_pay_settlement_t));

    rc = ch->callback(r, ctx, &s);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_REJECTED);
    }

    if (s.refund) {
        return ngx_http_gov_pay_notify_refund(r, ctx, &s);
    }

    if (ngx_http_gov_pay_parse_code(gpmcf, &s.code, ctx) != NGX_OK) {
        ngx_http_gov_pay_refused(r, (char *) ch->name.data,
                                 "for a malformed payment code");
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_UNKNOWN);
    }

    if (!s.success) {
        /* only a final success settles; the rest is acknowledged */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: %V callback for %V in a non-final state "
                      "acknowledged", &ctx->channel, &ctx->code);
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_ACCEPTED);
    }

    if (s.amount < 0 || s.amount > GP_FEN_MAX || s.trade_no.len == 0) {
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_REJECTED);
    }

    return ngx_http_gov_pay_settle(r, ctx, &s, NULL,
                                   ngx_http_gov_pay_settle_done);
}


static ngx_int_t
ngx_http_gov_pay_settle_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    const ngx_http_gov_pay_channel_t  *ch;

    ch = ngx_http_gov_pay_channel(&ctx->channel);

    if (ctx->outcome.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: %V callback for %V not settled: store "
                      "unavailable", &ctx->channel, &ctx->code);
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_RETRY);
    }

    if (ngx_strcmp(ctx->outcome.data, "NONE") == 0) {
        ngx_http_gov_pay_refused(r, (char *) ch->name.data,
                                 "for an unknown notice");
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_UNKNOWN);
    }

    if (ngx_strcmp(ctx->outcome.data, "ANOMALY") == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: %V payment %V for %V %s anomaly %V",
                      &ctx->channel, &ctx->settle->s.trade_no, &ctx->code,
                      ctx->again ? "already recorded as" : "recorded as",
                      &ctx->reason);

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: %V callback for %V: %V",
                      &ctx->channel, &ctx->code, &ctx->outcome);
    }

    /* PAID, DUP, ANOMALY: the money has moved; the channel must stop */

    return ch->reply(r, NGX_HTTP_GOV_PAY_CB_ACCEPTED);
}


/* a verified callback reports how a refund ended */

static ngx_int_t
ngx_http_gov_pay_notify_refund(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s)
{
    ngx_http_gov_pay_refund_result_t  *rr;
    const ngx_http_gov_pay_channel_t  *ch;

    ch = ngx_http_gov_pay_channel(&ctx->channel);

    if (!s->final) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: %V refund %V in a non-final state "
                      "acknowledged", &ctx->channel, &s->code);
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_ACCEPTED);
    }

    rr = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_refund_result_t));
    if (rr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rr->refund_id = s->code;
    rr->succeeded = s->success;
    rr->amount = s->amount;
    rr->refund_no = s->trade_no;
    rr->at = s->paid_at;
    rr->error = s->error;

    return ngx_http_gov_pay_refund_result(r, ctx, rr,
                                          ngx_http_gov_pay_refund_reply);
}


static ngx_int_t
ngx_http_gov_pay_refund_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    const ngx_http_gov_pay_channel_t  *ch;

    ch = ngx_http_gov_pay_channel(&ctx->channel);

    if (ctx->outcome.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: %V refund %V not recorded: store unavailable",
                      &ctx->channel, &ctx->refund->refund_id);
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_RETRY);
    }

    if (ngx_strcmp(ctx->outcome.data, "NONE") == 0) {
        ngx_http_gov_pay_refused(r, (char *) ch->name.data,
                                 "for an unknown refund");
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_UNKNOWN);
    }

    /* DONE, DUP, MISMATCH (logged for ops): the channel must stop */

    return ch->reply(r, NGX_HTTP_GOV_PAY_CB_ACCEPTED);
}
