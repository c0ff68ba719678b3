
/*
 * ngx_gov_pay_bank.c: the bank counter channel (location /bank/v1/ {
 * gov_pay_bank; }), for banks that take payment codes at the counter or in
 * corporate online banking.
 *
 *   GET  /bank/v1/notices/{code}   what to collect: amount, item, masked
 *                                  payer, status
 *   POST /bank/v1/payments         {"payment_code","amount","bank_trade_no",
 *                                   "paid_at"}: the bank took the money
 *   GET  /bank/v1/refunds          the refunds of payments this bank took
 *                                  that it must carry out (every shard)
 *   POST /bank/v1/refunds/{id}     {"result","bank_refund_no","refunded_at",
 *                                   "reason"?,"amount"?}: how one ended
 *
 * A bank is a unit of kind "bank" in the registry and signs its requests as
 * units do (ngx_gov_pay_auth.c); answers are signed the same way and errors
 * are the unit API's.  A payment settles through settle.lua, which also
 * spends the request's nonce, as channel "bank" with the trade number
 * "<bank id>:<bank_trade_no>" (two banks may use the same number), so a
 * repeated bank_trade_no is a duplicate, not a second payment.
 */


#include "ngx_gov_pay_channel.h"
#include "gp_bank.h"


#define NGX_HTTP_GOV_PAY_BANK_NOTICE   1
#define NGX_HTTP_GOV_PAY_BANK_PAYMENT  2
#define NGX_HTTP_GOV_PAY_BANK_REFUNDS  3
#define NGX_HTTP_GOV_PAY_BANK_REFUND   4

#define NGX_HTTP_GOV_PAY_BANK_REFUND_ID_LEN  (GP_CODE_LEN + 3)


/* GET /bank/v1/refunds: every shard's offers at once, then the nonce */

typedef struct {
    json_t                        *list;
    ngx_uint_t                     failed;
    ngx_uint_t                     replay;
    ngx_uint_t                     nshards;
} ngx_http_gov_pay_bank_refunds_t;


static ngx_int_t ngx_http_gov_pay_bank_notice(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *code, ngx_str_t *nonce);
static ngx_int_t ngx_http_gov_pay_bank_notice_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_bank_payment(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_bank_payment_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_bank_refunds(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *nonce);
static void ngx_http_gov_pay_bank_refunds_part(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_uint_t i, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_bank_refunds_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static void ngx_http_gov_pay_bank_refunds_cleanup(void *data);
static ngx_int_t ngx_http_gov_pay_bank_refund(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_bank_refund_done(ngx_http_request_t *r,
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

    if (r->uri.len == sizeof("/bank/v1/refunds") - 1
        && ngx_strncmp(r->uri.data, "/bank/v1/refunds", r->uri.len) == 0)
    {
        if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use GET to list the refunds to carry out", NULL);
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        ctx->route = NGX_HTTP_GOV_PAY_BANK_REFUNDS;
        ctx->body.len = 0;
        ctx->body.data = (u_char *) "";

        if (ngx_http_gov_pay_authenticate(r, gpmcf, ctx, &nonce, 1, &rc)
            != NGX_OK)
        {
            return rc;
        }

        return ngx_http_gov_pay_bank_refunds(r, gpmcf, ctx, &nonce);
    }

    if (r->uri.len == sizeof("/bank/v1/refunds/") - 1
                      + NGX_HTTP_GOV_PAY_BANK_REFUND_ID_LEN
        && ngx_strncmp(r->uri.data, "/bank/v1/refunds/", 17) == 0)
    {
        if (r->method != NGX_HTTP_POST) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use POST to report how a refund ended", NULL);
        }

        if (!ngx_http_gov_pay_content_type_is(r, "application/json")) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_UNSUPPORTED_MEDIA_TYPE,
                       "the body must be application/json", NULL);
        }

        ctx->route = NGX_HTTP_GOV_PAY_BANK_REFUND;

        return ngx_http_gov_pay_read_body(r, ngx_http_gov_pay_bank_refund);
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
    json_t                         *req, *fields;
    ngx_int_t                       rc;
    ngx_str_t                       nonce, code, trade_no;
    gp_bank_payment_t               p;
    ngx_http_gov_pay_settlement_t   st;
    ngx_http_gov_pay_main_conf_t   *gpmcf;

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

    req = ngx_http_gov_pay_json_body(r, &ctx->body, &rc);
    if (req == NULL) {
        return rc;
    }

    /* the rules (common/gp_bank.c); paid_at not in the future */

    fields = gp_bank_payment_check(req, ngx_time() + gpmcf->auth_window, &p);
    json_decref(req);

    if (fields == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (json_array_size(fields)) {
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
                   "the payment breaks a rule", fields);
    }

    json_decref(fields);

    /* the bank's trade number is "<bank id>:<bank_trade_no>" */

    code.len = GP_CODE_LEN;
    code.data = ngx_pnalloc(r->pool, GP_CODE_LEN);
    trade_no.len = ngx_strlen(ctx->unit->id) + 1 + ngx_strlen(p.bank_trade_no);
    trade_no.data = ngx_pnalloc(r->pool, trade_no.len);

    if (code.data == NULL || trade_no.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(code.data, p.payment_code, GP_CODE_LEN);
    ngx_sprintf(trade_no.data, "%s:%s", ctx->unit->id, p.bank_trade_no);

    if (ngx_http_gov_pay_parse_code(gpmcf, &code, ctx) != NGX_OK) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    ngx_str_set(&ctx->channel, "bank");

    ngx_memzero(&st, sizeof(ngx_http_gov_pay_settlement_t));
    st.code = ctx->code;
    st.trade_no = trade_no;
    st.amount = p.amount;
    st.paid_at = p.paid_at;
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


/*
 * GET /bank/v1/refunds: HGETALL of every shard's {gpN}:bankrefunds
 * (refund id -> "<bank>\t<bank_trade_no>\t<amount>\t<created>\t<reason>"),
 * pipelined in one round trip, this bank's rows kept; the request's nonce
 * is spent on the shard of (bank, nonce) in the same pipeline
 */

static ngx_int_t
ngx_http_gov_pay_bank_refunds(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *nonce)
{
    u_char                           *p;
    uint32_t                          shard;
    ngx_str_t                        *argv;
    ngx_uint_t                        i, n;
    ngx_pool_cleanup_t               *cln;
    ngx_http_gov_pay_query_t         *q;
    ngx_http_gov_pay_bank_refunds_t  *br;

    n = gpmcf->shards;

    br = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_bank_refunds_t));
    q = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_http_gov_pay_query_t));
    argv = ngx_palloc(r->pool, (2 * n + 7) * sizeof(ngx_str_t));
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (br == NULL || q == NULL || argv == NULL || cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    br->list = json_array();
    if (br->list == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_gov_pay_bank_refunds_cleanup;
    cln->data = br;

    br->nshards = n;
    ctx->channel_data = br;

    for (i = 0; i < n; i++) {
        ngx_str_set(&argv[2 * i], "HGETALL");

        if (ngx_http_gov_pay_key(r->pool, &argv[2 * i + 1], i, "bankrefunds")
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        q[i].script = -1;
        q[i].nkeys = 0;
        q[i].argc = 2;
        q[i].argv = &argv[2 * i];
    }

    /* SET nonce 1 NX EX ttl */

    shard = gp_shard_of(ctx->unit->id, ngx_strlen(ctx->unit->id),
                        (const char *) nonce->data, nonce->len,
                        (uint32_t) n);

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (p == NULL
        || ngx_http_gov_pay_key(r->pool, &argv[2 * n + 1], shard,
                                "nonce:%s:%V", ctx->unit->id, nonce)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&argv[2 * n], "SET");
    ngx_str_set(&argv[2 * n + 2], "1");
    ngx_str_set(&argv[2 * n + 3], "NX");
    ngx_str_set(&argv[2 * n + 4], "EX");
    argv[2 * n + 5].data = p;
    argv[2 * n + 5].len = ngx_sprintf(p, "%T", 2 * gpmcf->auth_window) - p;

    q[n].script = -1;
    q[n].nkeys = 0;
    q[n].argc = 6;
    q[n].argv = &argv[2 * n];

    return ngx_http_gov_pay_query_all(r, n + 1, q,
                                      ngx_http_gov_pay_bank_refunds_part,
                                      ngx_http_gov_pay_bank_refunds_done);
}


static void
ngx_http_gov_pay_bank_refunds_part(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_uint_t i, redisReply *reply)
{
    char                             *f[5], *p, *row;
    size_t                            k, len, blen;
    json_t                           *one;
    int64_t                           t;
    ngx_uint_t                        j;
    ngx_http_gov_pay_bank_refunds_t  *br;

    br = ctx->channel_data;

    if (i == br->nshards) {
        /* the nonce: nil when it was spent before */

        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            br->failed = 1;

        } else if (reply->type == REDIS_REPLY_NIL) {
            br->replay = 1;
        }

        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements % 2)
    {
        br->failed = 1;
        return;
    }

    blen = ngx_strlen(ctx->unit->id);

    for (k = 0; k + 1 < reply->elements; k += 2) {
        if (reply->element[k]->type != REDIS_REPLY_STRING
            || reply->element[k + 1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        row = reply->element[k + 1]->str;
        len = reply->element[k + 1]->len;

        if (len <= blen || ngx_strncmp(row, ctx->unit->id, blen) != 0
            || row[blen] != '\t')
        {
            continue;       /* another bank's */
        }

        /* bank, bank_trade_no, amount, created, reason: split in place
           (the reply is ours until this returns) */

        f[0] = row;
        j = 1;

        for (p = row; p < row + len && j < 5; p++) {
            if (*p == '\t') {
                *p = '\0';
                f[j++] = p + 1;
            }
        }

        if (j < 5) {
            continue;
        }

        t = ngx_atoof((u_char *) f[3], ngx_strlen(f[3]));

        one = json_pack("{s:s%,s:s%,s:s,s:I,s:s}",
                        "refund_id", reply->element[k]->str,
                        reply->element[k]->len,
                        "payment_code", reply->element[k]->str,
                        (size_t) GP_CODE_LEN,
                        "bank_trade_no", f[1],
                        "amount",
                        (json_int_t) ngx_atoof((u_char *) f[2],
                                               ngx_strlen(f[2])),
                        "reason", f[4]);

        if (one) {
            char  when[26];

            gp_time_rfc3339(t, when);
            json_object_set_new(one, "requested_at", json_string(when));
        }

        if (one == NULL || json_array_append_new(br->list, one) != 0) {
            br->failed = 1;
            return;
        }
    }
}


static ngx_int_t
ngx_http_gov_pay_bank_refunds_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    json_t                           *doc;
    ngx_int_t                         rc;
    ngx_http_gov_pay_bank_refunds_t  *br;

    br = ctx->channel_data;

    if (br->failed) {
        return ngx_http_gov_pay_store_unavailable(r);
    }

    if (br->replay) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NONCE_REPLAYED,
                                           "nonce already used", NULL);
    }

    doc = json_pack("{s:O}", "refunds", br->list);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_gov_pay_send_json(r, NGX_HTTP_OK, doc, ctx->unit);
    json_decref(doc);

    return rc;
}


static void
ngx_http_gov_pay_bank_refunds_cleanup(void *data)
{
    ngx_http_gov_pay_bank_refunds_t  *br = data;

    json_decref(br->list);
}


/* POST /bank/v1/refunds/{refund_id}: how the bank's refund ended */

static ngx_int_t
ngx_http_gov_pay_bank_refund(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    json_t                            *req, *fields;
    ngx_int_t                          rc;
    ngx_str_t                          nonce, s;
    gp_bank_refund_t                   b;
    ngx_http_gov_pay_main_conf_t      *gpmcf;
    ngx_http_gov_pay_refund_result_t  *rr;

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

    req = ngx_http_gov_pay_json_body(r, &ctx->body, &rc);
    if (req == NULL) {
        return rc;
    }

    fields = gp_bank_refund_check(req, ngx_time() + gpmcf->auth_window, &b);
    json_decref(req);

    if (fields == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (json_array_size(fields)) {
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
                   "the refund's outcome breaks a rule", fields);
    }

    json_decref(fields);

    rr = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_refund_result_t));
    if (rr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rr->refund_id.data = r->uri.data + 17;
    rr->refund_id.len = NGX_HTTP_GOV_PAY_BANK_REFUND_ID_LEN;
    rr->succeeded = b.succeeded;
    rr->amount = b.amount;
    rr->at = (time_t) b.refunded_at;
    rr->bank.data = (u_char *) ctx->unit->id;
    rr->bank.len = ngx_strlen(ctx->unit->id);
    rr->nonce = nonce;

    s.data = (u_char *) b.bank_refund_no;
    s.len = ngx_strlen(b.bank_refund_no);
    rr->refund_no.data = ngx_http_gov_pay_cstr(r->pool, &s);
    rr->refund_no.len = s.len;

    s.data = (u_char *) b.reason;
    s.len = ngx_strlen(b.reason);
    rr->error.data = ngx_http_gov_pay_cstr(r->pool, &s);
    rr->error.len = s.len;

    if (rr->refund_no.data == NULL || rr->error.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&ctx->channel, "bank");

    return ngx_http_gov_pay_refund_result(r, ctx, rr,
                                          ngx_http_gov_pay_bank_refund_done);
}


static ngx_int_t
ngx_http_gov_pay_bank_refund_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    json_t      *doc;
    ngx_int_t    rc;
    const char  *word, *recorded, *want;

    if (ctx->outcome.len == 0) {
        return ngx_http_gov_pay_store_unavailable(r);
    }

    word = (const char *) ctx->outcome.data;
    want = ctx->refund->succeeded ? "SUCCEEDED" : "FAILED";

    if (ngx_strcmp(word, "REPLAY") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NONCE_REPLAYED,
                                           "nonce already used", NULL);
    }

    if (ngx_strcmp(word, "NONE") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such refund for this bank",
                                           NULL);
    }

    if (ngx_strcmp(word, "MISMATCH") == 0) {
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
                   "the refund's outcome breaks a rule",
                   json_pack("[{s:s,s:s}]", "field", "amount",
                             "reason", "not the refund's amount"));
    }

    recorded = want;

    if (ngx_strcmp(word, "DUP") == 0) {
        recorded = ctx->reason.len ? (const char *) ctx->reason.data : "";

        if (ngx_strcmp(recorded, want) != 0) {
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_INVALID_STATE,
                       "the refund's outcome was recorded before, and it is "
                       "not this one", NULL);
        }
    }

    doc = json_pack("{s:s%,s:s,s:s}",
                    "refund_id", ctx->refund->refund_id.data,
                    ctx->refund->refund_id.len,
                    "result", recorded,
                    "recorded", ngx_strcmp(word, "DUP") == 0 ? "DUPLICATE"
                                                             : "NOW");
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_gov_pay_send_json(r, NGX_HTTP_OK, doc, ctx->unit);
    json_decref(doc);

    return rc;
}
