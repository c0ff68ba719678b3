
/*
 * ngx_gov_pay_bank.c: the bank counter channel (location /bank/v1/ {
 * gov_pay_bank; }), for banks that take payment codes at the counter or in
 * corporate online banking.
 *
 *   GET  /bank/v1/notices/{code}   what to collect: amount, item, masked
 *                                  payer, status
 *   POST /bank/v1/payments         {"payment_code","amount","bank_trade_no",
 *                                   "paid_at"}: the bank took the money
 *
 * A bank is a unit of kind "bank" in the registry and signs its requests as
 * units do (ngx_gov_pay_auth.c); answers are signed the same way and errors
 * are the unit API's.  A payment settles through settle.lua, which also
 * spends the request's nonce, as channel "bank" with the trade number
 * "<bank id>:<bank_trade_no>" (two banks may use the same number), so a
 * repeated bank_trade_no is a duplicate, not a second payment.
 */


#include "ngx_gov_pay_channel.h"


#define NGX_HTTP_GOV_PAY_BANK_NOTICE   1
#define NGX_HTTP_GOV_PAY_BANK_PAYMENT  2


static ngx_int_t ngx_http_gov_pay_bank_notice(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *code, ngx_str_t *nonce);
static ngx_int_t ngx_http_gov_pay_bank_notice_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_bank_payment(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_bank_payment_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);


ngx_int_t
ngx_http_gov_pay_bank_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      code, nonce;
    ngx_http_gov_pay_ctx_t        *ctx;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->uri.len == sizeof("/bank/v1/notices/") - 1 + GP_CODE_LEN
        && ngx_strncmp(r->uri.data, "/bank/v1/notices/", 17) == 0)
    {
        if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use GET to read a notice", NULL);
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        ctx->route = NGX_HTTP_GOV_PAY_BANK_NOTICE;
        ctx->body.len = 0;
        ctx->body.data = (u_char *) "";

        if (ngx_http_gov_pay_authenticate(r, gpmcf, ctx, &nonce, 1, &rc)
            != NGX_OK)
        {
            return rc;
        }

        code.data = r->uri.data + 17;
        code.len = GP_CODE_LEN;

        return ngx_http_gov_pay_bank_notice(r, gpmcf, ctx, &code, &nonce);
    }

    if (r->uri.len == sizeof("/bank/v1/payments") - 1
        && ngx_strncmp(r->uri.data, "/bank/v1/payments", r->uri.len) == 0)
    {
        if (r->method != NGX_HTTP_POST) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use POST to report a payment", NULL);
        }

        if (!ngx_http_gov_pay_content_type_is(r, "application/json")) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_UNSUPPORTED_MEDIA_TYPE,
                       "the body must be application/json", NULL);
        }

        ctx->route = NGX_HTTP_GOV_PAY_BANK_PAYMENT;

        return ngx_http_gov_pay_read_body(r, ngx_http_gov_pay_bank_payment);
    }

    ngx_http_discard_request_body(r);

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                       "no such route", NULL);
}


static ngx_int_t
ngx_http_gov_pay_bank_notice(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *code, ngx_str_t *nonce)
{
    u_char     *p;
    ngx_str_t   argv[3];

    if (ngx_http_gov_pay_parse_code(gpmcf, code, ctx) != NGX_OK) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[2].data = p;
    argv[2].len = ngx_sprintf(p, "%T", 2 * gpmcf->auth_window) - p;

    if (ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "nonce:%s:%V",
                             ctx->unit->id, nonce) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "n:%uL",
                                ctx->seq) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_GET, 2, 3, argv,
                                  ngx_http_gov_pay_bank_notice_done);
}


static ngx_int_t
ngx_http_gov_pay_bank_notice_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    char                           masked[256], due[26];
    json_t                        *doc;
    ngx_int_t                      rc;
    ngx_str_t                     *v, *division, *yy;
    const char                    *word;
    const gp_item_t               *it;
    const gp_unit_t               *un;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return ngx_http_gov_pay_store_unavailable(r);
    }

    word = reply->element[0]->str;

    if (ngx_strcmp(word, "REPLAY") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NONCE_REPLAYED,
                                           "nonce already used", NULL);
    }

    division = NULL;
    yy = NULL;

    if (ngx_strcmp(word, "OK") != 0
        || ngx_http_gov_pay_reply_fields(r, reply, 1, ctx) != NGX_OK
        || (division = ngx_http_gov_pay_field(ctx, "division")) == NULL
        || (yy = ngx_http_gov_pay_field(ctx, "yy")) == NULL
        || division->len != 6 || yy->len != 2
        || ngx_strncmp(division->data, ctx->code.data, 6) != 0
        || ngx_strncmp(yy->data, ctx->code.data + 6, 2) != 0)
    {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    v = ngx_http_gov_pay_field(ctx, "item_code");
    it = v ? gp_registry_item(gpmcf->registry, (char *) v->data, v->len)
           : NULL;
    v = ngx_http_gov_pay_field(ctx, "unit");
    un = v ? gp_registry_unit(gpmcf->registry, (char *) v->data, v->len)
           : NULL;

    gp_time_rfc3339(ngx_http_gov_pay_field_int(ctx, "due_at"), due);

    doc = json_pack("{s:s%,s:s,s:I,s:s,s:s,s:s,s:s}",
                    "payment_code", ctx->code.data, ctx->code.len,
                    "status", ngx_http_gov_pay_status(ctx),
                    "amount",
                    (json_int_t) ngx_http_gov_pay_field_int(ctx, "amount"),
                    "item_code", it ? it->code : "",
                    "item_name", it ? it->name : "",
                    "unit_name", un ? un->name : "",
                    "due_at", due);
    if (doc == NULL) {
        goto failed;
    }

    /* the masked forms stored at create (masked again: a no-op on them) */

    v = ngx_http_gov_pay_field(ctx, "payer_name_masked");
    if (v && gp_mask_name((char *) v->data, v->len, masked, sizeof(masked))
             >= 0)
    {
        if (json_object_set_new(doc, "payer_name", json_string(masked))) {
            goto failed;
        }
    }

    v = ngx_http_gov_pay_field(ctx, "payer_id_masked");
    if (v && gp_mask_id((char *) v->data, v->len, masked, sizeof(masked))
             >= 0)
    {
        if (json_object_set_new(doc, "payer_id", json_string(masked))) {
            goto failed;
        }
    }

    rc = ngx_http_gov_pay_send_json(r, NGX_HTTP_OK, doc, ctx->unit);
    json_decref(doc);

    return rc;

failed:

    json_decref(doc);
    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                                       "internal error", NULL);
}


static ngx_int_t
ngx_http_gov_pay_bank_payment(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    size_t           i, len;
    json_t          *req, *fields, *v;
    int64_t          paid_at;
    ngx_int_t        rc;
    ngx_str_t        nonce, code, trade_no;
    json_int_t       amount;
    const char      *key, *s;
    json_error_t     jerr;
    ngx_http_gov_pay_settlement_t  st;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ctx->body.len > 4096) {
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_PAYLOAD_TOO_LARGE,
                   "the body is larger than 4 KiB", NULL);
    }

    if (ngx_http_gov_pay_authenticate(r, gpmcf, ctx, &nonce, 1, &rc)
        != NGX_OK)
    {
        return rc;
    }

    req = json_loadb((const char *) ctx->body.data, ctx->body.len,
                     JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL || !json_is_object(req)) {
        json_decref(req);
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_BAD_REQUEST,
                                           "the body is not a JSON object",
                                           NULL);
    }

    fields = json_array();
    if (fields == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json_object_foreach(req, key, v) {
        if (ngx_strcmp(key, "payment_code") != 0
            && ngx_strcmp(key, "amount") != 0
            && ngx_strcmp(key, "bank_trade_no") != 0
            && ngx_strcmp(key, "paid_at") != 0)
        {
            json_array_append_new(fields, json_pack("{s:s,s:s}", "field", key,
                                                    "reason", "unknown field"));
        }
    }

    /* payment_code: 20 digits */

    v = json_object_get(req, "payment_code");
    s = json_string_value(v);

    if (s == NULL || json_string_length(v) != GP_CODE_LEN) {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "payment_code",
                              "reason", "must be a 20-digit payment code"));
        s = NULL;
    }

    code.len = 0;

    if (s) {
        code.data = ngx_pnalloc(r->pool, GP_CODE_LEN);
        if (code.data == NULL) {
            json_decref(fields);
            json_decref(req);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(code.data, s, GP_CODE_LEN);
        code.len = GP_CODE_LEN;
    }

    /* amount: integer fen */

    v = json_object_get(req, "amount");
    amount = json_is_integer(v) ? json_integer_value(v) : 0;

    if (amount < 1 || amount > GP_FEN_MAX) {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "amount",
                              "reason", "must be an integer number of fen, "
                                        "1 to 10000000000"));
    }

    /* bank_trade_no: 1-64 of A-Za-z0-9_- */

    v = json_object_get(req, "bank_trade_no");
    s = json_string_value(v);
    len = s ? json_string_length(v) : 0;

    for (i = 0; i < len; i++) {
        if (!isalnum((u_char) s[i]) && s[i] != '_' && s[i] != '-') {
            break;
        }
    }

    if (s == NULL || len == 0 || len > 64 || i != len) {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "bank_trade_no",
                              "reason", "must be 1-64 of A-Za-z0-9_-"));
        len = 0;
    }

    trade_no.len = 0;

    if (len) {
        trade_no.len = ngx_strlen(ctx->unit->id) + 1 + len;
        trade_no.data = ngx_pnalloc(r->pool, trade_no.len);
        if (trade_no.data == NULL) {
            json_decref(fields);
            json_decref(req);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(trade_no.data, "%s:%*s", ctx->unit->id, len, s);
    }

    /* paid_at: RFC 3339, not in the future */

    v = json_object_get(req, "paid_at");
    s = json_string_value(v);

    if (s == NULL
        || gp_time_parse_rfc3339(s, json_string_length(v), &paid_at) != 0
        || paid_at > (int64_t) ngx_time() + gpmcf->auth_window)
    {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "paid_at",
                              "reason", "must be an RFC 3339 time, not in "
                                        "the future"));
    }

    json_decref(req);

    if (json_array_size(fields)) {
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
                   "the payment breaks a rule", fields);
    }

    json_decref(fields);

    if (ngx_http_gov_pay_parse_code(gpmcf, &code, ctx) != NGX_OK) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    ngx_str_set(&ctx->channel, "bank");

    ngx_memzero(&st, sizeof(ngx_http_gov_pay_settlement_t));
    st.code = ctx->code;
    st.trade_no = trade_no;
    st.amount = amount;
    st.paid_at = paid_at;
    st.success = 1;

    return ngx_http_gov_pay_settle(r, ctx, &st, &nonce,
                                   ngx_http_gov_pay_bank_payment_done);
}


static ngx_int_t
ngx_http_gov_pay_bank_payment_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    json_t      *doc;
    ngx_int_t    rc;
    ngx_str_t   *trade_no;
    const char  *word, *result, *reason;

    trade_no = &ctx->settle->s.trade_no;

    if (ctx->outcome.len == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: bank payment %V for %V not settled: store "
                      "unavailable", trade_no, &ctx->code);
        return ngx_http_gov_pay_store_unavailable(r);
    }

    word = (const char *) ctx->outcome.data;
    reason = NULL;

    if (ngx_strcmp(word, "REPLAY") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NONCE_REPLAYED,
                                           "nonce already used", NULL);
    }

    if (ngx_strcmp(word, "NONE") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    if (ngx_strcmp(word, "PAID") == 0) {
        result = "PAID";

    } else if (ngx_strcmp(word, "DUP") == 0) {
        result = "DUPLICATE";

    } else if (ngx_strcmp(word, "TAKEN") == 0) {
        /* this bank_trade_no paid another notice: nothing changed */
        result = "DUPLICATE";
        reason = "BANK_TRADE_NO_USED";

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: bank payment %V for %V refused: the trade "
                      "number paid another notice", trade_no, &ctx->code);

    } else {
        /* the money has moved: recorded for refund, the bank must stop */
        result = "ANOMALY";
        reason = ctx->reason.len ? (const char *) ctx->reason.data
                                 : "UNKNOWN";

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: bank payment %V for %V %s anomaly %s",
                      trade_no, &ctx->code,
                      ctx->again ? "already recorded as" : "recorded as",
                      reason);
    }

    doc = json_pack("{s:s%,s:s%,s:s}",
                    "payment_code", ctx->code.data, ctx->code.len,
                    "channel_trade_no", trade_no->data, trade_no->len,
                    "result", result);

    if (doc && reason) {
        json_object_set_new(doc, "reason", json_string(reason));
    }

    if (doc == NULL) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                                           "internal error", NULL);
    }

    rc = ngx_http_gov_pay_send_json(r, NGX_HTTP_OK, doc, ctx->unit);
    json_decref(doc);

    return rc;
}
