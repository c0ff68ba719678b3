
/*
 * ngx_gov_pay_callback.c: the channel callback dispatcher.
 *
 *   POST /notify/<channel>      (location = /notify/x { gov_pay_notify x; })
 *
 * The channel verifies its callback before anything in it is believed
 * (channels/); then one Lua script settles the notice (UNPAID -> PAID plus
 * the settled event), recognises a duplicate, or records money that cannot
 * settle it on the anomaly stream.  The channel gets its success reply only
 * once Redis has accepted the script, and its failure reply otherwise, so
 * that it retries: nothing is lost.
 */


#include "ngx_gov_pay_channel.h"


static void ngx_http_gov_pay_notify_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_gov_pay_notify(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    const ngx_http_gov_pay_channel_t *ch);
static void ngx_http_gov_pay_settle_done(void *data, redisReply *reply);


ngx_int_t
ngx_http_gov_pay_notify_handler(ngx_http_request_t *r)
{
    ngx_int_t                     rc;
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

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_gov_pay_notify_body);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_gov_pay_notify_body(ngx_http_request_t *r)
{
    ngx_int_t                          rc;
    ngx_http_gov_pay_ctx_t            *ctx;
    ngx_http_gov_pay_main_conf_t      *gpmcf;
    const ngx_http_gov_pay_channel_t  *ch;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);

    ch = ngx_http_gov_pay_channel(&ctx->channel);

    if (ngx_http_gov_pay_read_body(r, &ctx->body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_gov_pay_notify(r, gpmcf, ctx, ch);

    if (rc == NGX_DONE) {
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_gov_pay_notify(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    const ngx_http_gov_pay_channel_t *ch)
{
    ngx_int_t                      rc;
    ngx_str_t                      argv[11];
    ngx_http_gov_pay_settlement_t  s;

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

    if (ngx_http_gov_pay_parse_code(gpmcf, &s.code, ctx) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: %V callback for an unknown order",
                      &ctx->channel);
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_UNKNOWN);
    }

    if (!s.success) {
        /* only a final success settles; the rest is acknowledged */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: %V callback for %V in a non-final state "
                      "acknowledged", &ctx->channel, &ctx->code);
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_ACCEPTED);
    }

    if (s.amount < 0 || s.amount > GP_FEN_MAX) {
        return ch->reply(r, NGX_HTTP_GOV_PAY_CB_REJECTED);
    }

    if (ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "n:%uL",
                             ctx->seq) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "settled")
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[2], ctx->shard, "anomaly")
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[3] = ctx->code;
    argv[4] = ctx->channel;
    argv[5] = s.trade_no;
    argv[6].data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    argv[7].data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    argv[8].data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);

    if (argv[6].data == NULL || argv[7].data == NULL || argv[8].data == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[6].len = ngx_sprintf(argv[6].data, "%L", s.amount) - argv[6].data;
    argv[7].len = ngx_sprintf(argv[7].data, "%L", s.paid_at) - argv[7].data;
    argv[8].len = ngx_sprintf(argv[8].data, "%T", ngx_time()) - argv[8].data;

    /* the code's division and year must be the notice's */
    argv[9].data = ctx->code.data;
    argv[9].len = 6;
    argv[10].data = ctx->code.data + 6;
    argv[10].len = 2;

    rc = ngx_http_gov_pay_redis_script(NGX_HTTP_GOV_PAY_SCRIPT_SETTLE, 3, 11,
                                       argv, ngx_http_gov_pay_settle_done,
                                       ctx, &ctx->cmd);
    if (rc == NGX_OK) {
        return NGX_DONE;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "gov_pay: %V callback for %V refused: store unavailable",
                  &ctx->channel, &ctx->code);

    return ch->reply(r, NGX_HTTP_GOV_PAY_CB_RETRY);
}


static void
ngx_http_gov_pay_settle_done(void *data, redisReply *reply)
{
    ngx_http_gov_pay_ctx_t *ctx = data;

    ngx_int_t                          rc;
    const char                        *word, *reason;
    ngx_http_request_t                *r;
    const ngx_http_gov_pay_channel_t  *ch;

    r = ctx->request;
    ctx->cmd = NULL;

    ch = ngx_http_gov_pay_channel(&ctx->channel);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: %V callback for %V not settled: store "
                      "unavailable", &ctx->channel, &ctx->code);
        ngx_http_gov_pay_finish(r, ch->reply(r, NGX_HTTP_GOV_PAY_CB_RETRY));
        return;
    }

    word = reply->element[0]->str;

    if (ngx_strcmp(word, "NONE") == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: %V callback for unknown notice %V",
                      &ctx->channel, &ctx->code);
        ngx_http_gov_pay_finish(r, ch->reply(r, NGX_HTTP_GOV_PAY_CB_UNKNOWN));
        return;
    }

    if (ngx_strcmp(word, "ANOMALY") == 0) {
        reason = (reply->elements > 1
                  && reply->element[1]->type == REDIS_REPLY_STRING)
                 ? reply->element[1]->str : "?";

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: %V payment for %V recorded as anomaly %s",
                      &ctx->channel, &ctx->code, reason);

    } else {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: %V callback for %V: %s",
                      &ctx->channel, &ctx->code, word);
    }

    /* PAID, DUP, ANOMALY: the money has moved; the channel must stop */

    rc = ch->reply(r, NGX_HTTP_GOV_PAY_CB_ACCEPTED);
    ngx_http_gov_pay_finish(r, rc);
}
