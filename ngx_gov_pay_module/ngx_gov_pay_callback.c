
/*
 * ngx_gov_pay_callback.c: channel callbacks.
 *
 *   POST /notify/<channel>
 *
 * The callback is verified before anything in it is believed; then one
 * Lua script settles the notice (UNPAID -> PAID plus the settled event),
 * recognises a duplicate, or records money that cannot settle it on the
 * anomaly stream.  The channel gets its own success reply only once Redis
 * has accepted the script, and its failure reply otherwise, so that it
 * retries: nothing is lost.
 *
 * The sandbox channel (demo and tests; on only where gov_pay_sandbox_key
 * is set) posts a form: out_trade_no (the payment code), trade_no,
 * total_fen, trade_status, paid_at (unix seconds), sign: lowercase hex of
 * HMAC-SHA256 with the sandbox key over the other fields, form-decoded
 * once, sorted by name, joined as k=v&k=v.  Replies: 200 "success";
 * 400 "fail" (not verified or malformed), 404 "fail" (unknown order),
 * 503 "fail" (store unavailable: retry).
 */


#include "ngx_gov_pay_module.h"


static void ngx_http_gov_pay_notify_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_gov_pay_sandbox_notify(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);
static void ngx_http_gov_pay_settle_done(void *data, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_reply(ngx_http_request_t *r,
    ngx_uint_t status, const char *text);


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
    ngx_int_t                      rc;
    ngx_http_gov_pay_ctx_t        *ctx;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);

    if (ngx_http_gov_pay_read_body(r, &ctx->body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_gov_pay_sandbox_notify(r, gpmcf, ctx);

    if (rc == NGX_DONE) {
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_gov_pay_reply(ngx_http_request_t *r, ngx_uint_t status,
    const char *text)
{
    ngx_str_t  body;

    body.data = (u_char *) text;
    body.len = ngx_strlen(text);

    return ngx_http_gov_pay_send(r, status, "text/plain; charset=utf-8",
                                 &body);
}


static ngx_int_t
ngx_http_gov_pay_token_ok(const gp_kv_t *kv, size_t max, int digits)
{
    size_t  i;

    if (kv == NULL || kv->value_len == 0 || kv->value_len > max) {
        return 0;
    }

    for (i = 0; i < kv->value_len; i++) {
        if (digits ? (kv->value[i] < '0' || kv->value[i] > '9')
                   : (kv->value[i] < 0x21 || kv->value[i] > 0x7e))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_gov_pay_sandbox_notify(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    char                 *canon, hex[65];
    size_t                len;
    int64_t               fen, paid_at;
    ngx_int_t             rc, verified;
    ngx_str_t             argv[11], code;
    gp_form_t             form;
    unsigned char         mac[32];
    const gp_kv_t        *sign, *out_trade_no, *trade_no, *total, *status;
    const gp_kv_t        *paid;
    static const char    *skip[] = { "sign", NULL };

    if (gpmcf->sandbox_key.len == 0) {
        return ngx_http_gov_pay_reply(r, NGX_HTTP_NOT_FOUND, "fail");
    }

    if (ctx->body.len > 8192
        || gp_form_parse((const char *) ctx->body.data, ctx->body.len, &form)
           != 0)
    {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: sandbox callback is not a form body");
        return ngx_http_gov_pay_reply(r, NGX_HTTP_BAD_REQUEST, "fail");
    }

    /* verify before anything else is read */

    verified = 0;
    sign = gp_form_get(&form, "sign");

    if (sign && sign->value_len == 64) {
        canon = gp_form_canonical(&form, skip, 0, &len);

        if (canon
            && gp_hmac(GP_MD_SHA256, gpmcf->sandbox_key.data,
                       gpmcf->sandbox_key.len, canon, len, mac) == 0)
        {
            gp_hex(mac, 32, hex);
            verified = gp_ct_equal(hex, sign->value, 64);
        }

        free(canon);
    }

    if (!verified) {
        gp_form_free(&form);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: sandbox callback signature does not verify");
        return ngx_http_gov_pay_reply(r, NGX_HTTP_BAD_REQUEST, "fail");
    }

    out_trade_no = gp_form_get(&form, "out_trade_no");
    trade_no = gp_form_get(&form, "trade_no");
    total = gp_form_get(&form, "total_fen");
    status = gp_form_get(&form, "trade_status");
    paid = gp_form_get(&form, "paid_at");

    if (!ngx_http_gov_pay_token_ok(out_trade_no, 64, 0)
        || !ngx_http_gov_pay_token_ok(trade_no, 64, 0)
        || !ngx_http_gov_pay_token_ok(total, 11, 1)
        || !ngx_http_gov_pay_token_ok(status, 32, 0)
        || !ngx_http_gov_pay_token_ok(paid, 12, 1))
    {
        gp_form_free(&form);
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: sandbox callback lacks a field");
        return ngx_http_gov_pay_reply(r, NGX_HTTP_BAD_REQUEST, "fail");
    }

    code.data = (u_char *) out_trade_no->value;
    code.len = out_trade_no->value_len;

    if (ngx_http_gov_pay_parse_code(gpmcf, &code, ctx) != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: sandbox callback for an unknown order");
        gp_form_free(&form);
        return ngx_http_gov_pay_reply(r, NGX_HTTP_NOT_FOUND, "fail");
    }

    ctx->code.data = ngx_http_gov_pay_cstr(r->pool, &code);
    if (ctx->code.data == NULL) {
        gp_form_free(&form);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (status->value_len != 7 || ngx_strncmp(status->value, "SUCCESS", 7))
    {
        /* only a final success settles; the rest is acknowledged */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: sandbox callback for %V with status %*s "
                      "acknowledged", &ctx->code, status->value_len,
                      status->value);
        gp_form_free(&form);
        return ngx_http_gov_pay_reply(r, NGX_HTTP_OK, "success");
    }

    fen = ngx_atoof((u_char *) total->value, total->value_len);
    paid_at = ngx_atoof((u_char *) paid->value, paid->value_len);

    rc = NGX_OK;

    if (ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "n:%uL",
                             ctx->seq) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "settled")
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[2], ctx->shard, "anomaly")
           != NGX_OK)
    {
        rc = NGX_ERROR;
    }

    argv[3] = ctx->code;
    argv[4] = ctx->channel;
    argv[5].len = trade_no->value_len;
    argv[5].data = ngx_pnalloc(r->pool, trade_no->value_len);
    argv[6].data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    argv[7].data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    argv[8].data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);

    if (rc != NGX_OK || argv[5].data == NULL || argv[6].data == NULL
        || argv[7].data == NULL || argv[8].data == NULL)
    {
        gp_form_free(&form);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(argv[5].data, trade_no->value, trade_no->value_len);
    argv[6].len = ngx_sprintf(argv[6].data, "%L", fen) - argv[6].data;
    argv[7].len = ngx_sprintf(argv[7].data, "%L", paid_at) - argv[7].data;
    argv[8].len = ngx_sprintf(argv[8].data, "%T", ngx_time()) - argv[8].data;

    /* the code's division and year must be the notice's */
    argv[9].data = ctx->code.data;
    argv[9].len = 6;
    argv[10].data = ctx->code.data + 6;
    argv[10].len = 2;

    gp_form_free(&form);

    rc = ngx_http_gov_pay_redis_script(NGX_HTTP_GOV_PAY_SCRIPT_SETTLE, 3, 11,
                                       argv, ngx_http_gov_pay_settle_done,
                                       ctx, &ctx->cmd);
    if (rc == NGX_OK) {
        return NGX_DONE;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "gov_pay: sandbox callback for %V refused: store "
                  "unavailable", &ctx->code);

    return ngx_http_gov_pay_reply(r, NGX_HTTP_SERVICE_UNAVAILABLE, "fail");
}


static void
ngx_http_gov_pay_settle_done(void *data, redisReply *reply)
{
    ngx_http_gov_pay_ctx_t *ctx = data;

    ngx_int_t            rc;
    const char          *word, *reason;
    ngx_http_request_t  *r;

    r = ctx->request;
    ctx->cmd = NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: %V callback for %V not settled: store "
                      "unavailable", &ctx->channel, &ctx->code);
        rc = ngx_http_gov_pay_reply(r, NGX_HTTP_SERVICE_UNAVAILABLE, "fail");
        ngx_http_gov_pay_finish(r, rc);
        return;
    }

    word = reply->element[0]->str;

    if (ngx_strcmp(word, "NONE") == 0) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: %V callback for unknown notice %V",
                      &ctx->channel, &ctx->code);
        rc = ngx_http_gov_pay_reply(r, NGX_HTTP_NOT_FOUND, "fail");
        ngx_http_gov_pay_finish(r, rc);
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

    rc = ngx_http_gov_pay_reply(r, NGX_HTTP_OK, "success");
    ngx_http_gov_pay_finish(r, rc);
}
