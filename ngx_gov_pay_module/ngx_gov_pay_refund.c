
/*
 * ngx_gov_pay_refund.c: refunds at the edge (docs/unit-integration.md,
 * "Refunds"; docs/internals.md, "Refunds").
 *
 *   POST /v1/notices/{code}/refunds              a unit asks for money back:
 *                                                {"request_id","amount",
 *                                                 "reason"}, idempotent on
 *                                                request_id per notice
 *   GET  /v1/notices/{code}/refunds/{refund_id}  one refund
 *
 * and what the callbacks of the channels and the bank API need: a
 * channel's final word on a refund goes through refund_done.lua
 * (ngx_http_gov_pay_refund_result).
 *
 * A refund is decided by one script on the notice's shard (refund.lua):
 * the sum of the notice's refunds, concurrent ones included, never
 * exceeds what was paid.  The refund is carried to the channel by the
 * worker's refund plugin, which reads refund.requested from the shard's
 * refunds stream.  A refund id is "<payment code>R<nn>": it names its
 * notice, so every route finds the refund's keys without a read.
 */


#include "ngx_gov_pay_channel.h"


#define NGX_HTTP_GOV_PAY_REFUND_ID_LEN  (GP_CODE_LEN + 3)

#define NGX_HTTP_GOV_PAY_ROUTE_REFUND      10
#define NGX_HTTP_GOV_PAY_ROUTE_REFUND_GET  11


static ngx_int_t ngx_http_gov_pay_refund_create(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_refund_created(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_refund_get(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_refund_got(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_refund_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static json_t *ngx_http_gov_pay_refund_check(json_t *req);
static ngx_int_t ngx_http_gov_pay_refund_nn(ngx_str_t *code, u_char *id,
    size_t len);
static ngx_str_t *ngx_http_gov_pay_refund_field(ngx_http_gov_pay_ctx_t *ctx,
    const u_char *nn, const char *name);
static ngx_int_t ngx_http_gov_pay_refund_arg(ngx_http_request_t *r,
    ngx_str_t *arg, int64_t value);


/*
 * /v1/notices/{code}/refunds[/{refund_id}], after ngx_http_gov_pay_api_
 * handler matched the prefix; uri is checked here
 */

ngx_int_t
ngx_http_gov_pay_refund_route(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_int_t  rc;
    size_t     base;

    base = sizeof("/v1/notices/") - 1 + GP_CODE_LEN + sizeof("/refunds") - 1;

    if (r->uri.len == base) {
        if (r->method != NGX_HTTP_POST) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use POST to ask for a refund", NULL);
        }

        if (!ngx_http_gov_pay_content_type_is(r, "application/json")) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_UNSUPPORTED_MEDIA_TYPE,
                       "the body must be application/json", NULL);
        }

        ctx->route = NGX_HTTP_GOV_PAY_ROUTE_REFUND;

        return ngx_http_gov_pay_read_body(r, ngx_http_gov_pay_refund_create);
    }

    if (r->uri.len == base + 1 + NGX_HTTP_GOV_PAY_REFUND_ID_LEN
        && r->uri.data[base] == '/')
    {
        if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use GET to read a refund", NULL);
        }

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        ctx->route = NGX_HTTP_GOV_PAY_ROUTE_REFUND_GET;
        ctx->body.len = 0;
        ctx->body.data = (u_char *) "";

        return ngx_http_gov_pay_refund_get(r, ctx);
    }

    ngx_http_discard_request_body(r);

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                       "no such route", NULL);
}


static ngx_int_t
ngx_http_gov_pay_refund_create(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    char                           hex[65];
    json_t                        *req, *fields;
    ngx_int_t                      rc;
    ngx_str_t                      nonce, code, *argv;
    unsigned char                  sha[32];
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ngx_http_gov_pay_authenticate(r, gpmcf, ctx, &nonce, 0, &rc)
        != NGX_OK)
    {
        return rc;
    }

    req = ngx_http_gov_pay_json_body(r, &ctx->body, &rc);
    if (req == NULL) {
        return rc;
    }

    /* wrong JSON types are BAD_REQUEST, as for a create */

    if ((json_object_get(req, "request_id")
         && !json_is_string(json_object_get(req, "request_id")))
        || (json_object_get(req, "amount")
            && !json_is_number(json_object_get(req, "amount")))
        || (json_object_get(req, "reason")
            && !json_is_string(json_object_get(req, "reason"))))
    {
        json_decref(req);
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_BAD_REQUEST,
                   "wrong JSON type for request_id, amount (integer fen) or "
                   "reason", NULL);
    }

    fields = ngx_http_gov_pay_refund_check(req);
    if (fields == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (json_array_size(fields)) {
        json_decref(req);
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
                   "the refund breaks a rule", fields);
    }

    json_decref(fields);

    /* a bad check digit is refused before any lookup */

    code.data = r->uri.data + sizeof("/v1/notices/") - 1;
    code.len = GP_CODE_LEN;

    if (ngx_http_gov_pay_parse_code(gpmcf, &code, ctx) != NGX_OK) {
        json_decref(req);
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    if (gp_digest(GP_MD_SHA256, ctx->body.data, ctx->body.len, sha) != 0) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    gp_hex(sha, 32, hex);

    argv = ngx_palloc(r->pool, 14 * sizeof(ngx_str_t));
    if (argv == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* KEYS: nonce, notice, refunds stream, bank refunds index */

    if (ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "nonce:%s:%V",
                             ctx->unit->id, &nonce) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "n:%uL",
                                ctx->seq) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[2], ctx->shard, "refunds")
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[3], ctx->shard, "bankrefunds")
           != NGX_OK
        || ngx_http_gov_pay_refund_arg(r, &argv[4], 2 * gpmcf->auth_window)
           != NGX_OK
        || ngx_http_gov_pay_refund_arg(r, &argv[11],
               json_integer_value(json_object_get(req, "amount")))
           != NGX_OK
        || ngx_http_gov_pay_refund_arg(r, &argv[13], ngx_time()) != NGX_OK)
    {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* ARGV: nonce ttl, unit, division, yy, code, request_id, sha256,
       amount, reason, now */

    argv[5].data = (u_char *) ctx->unit->id;
    argv[5].len = ngx_strlen(ctx->unit->id);
    argv[6].data = ctx->code.data;
    argv[6].len = 6;
    argv[7].data = ctx->code.data + 6;
    argv[7].len = 2;
    argv[8] = ctx->code;

    argv[9].len = json_string_length(json_object_get(req, "request_id"));
    argv[9].data = ngx_pnalloc(r->pool, argv[9].len);
    argv[12].len = json_string_length(json_object_get(req, "reason"));
    argv[12].data = ngx_pnalloc(r->pool, argv[12].len + 1);
    argv[10].len = 64;
    argv[10].data = ngx_pnalloc(r->pool, 64);

    if (argv[9].data == NULL || argv[12].data == NULL
        || argv[10].data == NULL)
    {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(argv[9].data,
               json_string_value(json_object_get(req, "request_id")),
               argv[9].len);
    ngx_memcpy(argv[12].data,
               json_string_value(json_object_get(req, "reason")),
               argv[12].len);
    ngx_memcpy(argv[10].data, hex, 64);

    json_decref(req);

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_REFUND, 4, 14,
                                  argv, ngx_http_gov_pay_refund_created);
}


/*
 * The rules: request_id 1-64 printable ASCII; amount integer fen, 1 to
 * 10^10 (what is still refundable is the script's to say); reason 1-200
 * characters without control characters; nothing else.  Wrong JSON types
 * are refused with the rest, as VALIDATION_FAILED naming the field.
 */

static json_t *
ngx_http_gov_pay_refund_check(json_t *req)
{
    json_t      *fields, *v;
    int64_t      amount;
    const char  *key;

    fields = json_array();
    if (fields == NULL) {
        return NULL;
    }

    json_object_foreach(req, key, v) {
        if (ngx_strcmp(key, "request_id") != 0
            && ngx_strcmp(key, "amount") != 0
            && ngx_strcmp(key, "reason") != 0)
        {
            json_array_append_new(fields, json_pack("{s:s,s:s}",
                                  "field", key, "reason", "unknown field"));
        }
    }

    v = json_object_get(req, "request_id");

    if (!json_is_string(v)
        || !gp_request_id_ok(json_string_value(v), json_string_length(v)))
    {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "request_id",
                              "reason", "required: 1 to 64 printable ASCII "
                                        "characters"));
    }

    v = json_object_get(req, "amount");
    amount = json_is_integer(v) ? json_integer_value(v) : 0;

    if (amount < 1 || amount > GP_FEN_MAX) {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "amount",
                              "reason", "required integer number of fen, "
                                        "1 to 10000000000"));
    }

    v = json_object_get(req, "reason");

    if (!json_is_string(v)
        || !gp_text_ok(json_string_value(v), json_string_length(v), 1, 200))
    {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "reason",
                              "reason", "required, 1 to 200 characters"));

    } else if (gp_text_has_controls(json_string_value(v),
                                    json_string_length(v)))
    {
        json_array_append_new(fields, json_pack("{s:s,s:s}",
                              "field", "reason",
                              "reason", "must not contain control or "
                                        "bidirectional formatting "
                                        "characters"));
    }

    return fields;
}


static ngx_int_t
ngx_http_gov_pay_refund_created(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    u_char       msg[128];
    json_t      *doc;
    ngx_int_t    rc;
    ngx_uint_t   status;
    const char  *word;

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

    if (ngx_strcmp(word, "NONE") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    if (ngx_strcmp(word, "CONFLICT") == 0) {
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_IDEMPOTENCY_CONFLICT,
                   "request_id was used with a different body", NULL);
    }

    if (ngx_strcmp(word, "INVALID_STATE") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INVALID_STATE,
                   "the notice is not paid: there is nothing to refund",
                   NULL);
    }

    if (ngx_strcmp(word, "OVER") == 0 || ngx_strcmp(word, "LIMIT") == 0) {
        if (word[0] == 'O' && reply->elements > 1
            && reply->element[1]->type == REDIS_REPLY_STRING)
        {
            *ngx_snprintf(msg, sizeof(msg) - 1,
                          "at most %s fen of this notice can still be "
                          "refunded", reply->element[1]->str) = '\0';
        } else {
            ngx_cpystrn(msg, (u_char *) "a notice takes at most 99 refunds",
                        sizeof(msg));
        }

        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
                   "the refund breaks a rule",
                   json_pack("[{s:s,s:s}]", "field", "amount",
                             "reason", (char *) msg));
    }

    if (reply->elements < 2 || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[1]->len != 2
        || (ngx_strcmp(word, "CREATED") != 0
            && ngx_strcmp(word, "EXISTS") != 0)
        || ngx_http_gov_pay_reply_fields(r, reply, 2, ctx) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: unexpected reply of the refund script for %V",
                      &ctx->code);
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                                           "internal error", NULL);
    }

    status = (word[0] == 'C') ? NGX_HTTP_CREATED : NGX_HTTP_OK;

    doc = ngx_http_gov_pay_refund_json(r, ctx,
                                       (u_char *) reply->element[1]->str);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (status == NGX_HTTP_CREATED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: refund %VR%s of %L fen asked by unit %s",
                      &ctx->code, reply->element[1]->str,
                      ngx_http_gov_pay_field_int(ctx, "refunding_amount"),
                      ctx->unit->id);
    }

    rc = ngx_http_gov_pay_send_json(r, status, doc, ctx->unit);
    json_decref(doc);

    return rc;
}


static ngx_int_t
ngx_http_gov_pay_refund_get(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_str_t                      nonce, code, *argv;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ngx_http_gov_pay_authenticate(r, gpmcf, ctx, &nonce, 0, &rc)
        != NGX_OK)
    {
        return rc;
    }

    code.data = r->uri.data + sizeof("/v1/notices/") - 1;
    code.len = GP_CODE_LEN;

    /* the refund id must name this notice: "<code>R<nn>" */

    if (ngx_http_gov_pay_parse_code(gpmcf, &code, ctx) != NGX_OK
        || ngx_http_gov_pay_refund_nn(&code, r->uri.data + r->uri.len
                                             - NGX_HTTP_GOV_PAY_REFUND_ID_LEN,
                                      NGX_HTTP_GOV_PAY_REFUND_ID_LEN)
           != NGX_OK)
    {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such refund", NULL);
    }

    argv = ngx_palloc(r->pool, 3 * sizeof(ngx_str_t));
    if (argv == NULL
        || ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "nonce:%s:%V",
                                ctx->unit->id, &nonce) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "n:%uL",
                                ctx->seq) != NGX_OK
        || ngx_http_gov_pay_refund_arg(r, &argv[2], 2 * gpmcf->auth_window)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_GET, 2, 3, argv,
                                  ngx_http_gov_pay_refund_got);
}


static ngx_int_t
ngx_http_gov_pay_refund_got(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    u_char      *nn;
    json_t      *doc;
    ngx_int_t    rc;
    ngx_str_t   *unit, *division, *yy;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return ngx_http_gov_pay_store_unavailable(r);
    }

    if (ngx_strcmp(reply->element[0]->str, "REPLAY") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NONCE_REPLAYED,
                                           "nonce already used", NULL);
    }

    nn = r->uri.data + r->uri.len - 2;

    if (ngx_strcmp(reply->element[0]->str, "OK") != 0
        || ngx_http_gov_pay_reply_fields(r, reply, 1, ctx) != NGX_OK
        || (unit = ngx_http_gov_pay_field(ctx, "unit")) == NULL
        || (division = ngx_http_gov_pay_field(ctx, "division")) == NULL
        || (yy = ngx_http_gov_pay_field(ctx, "yy")) == NULL
        || ngx_strcmp(unit->data, ctx->unit->id) != 0
        || division->len != 6 || yy->len != 2
        || ngx_strncmp(division->data, ctx->code.data, 6) != 0
        || ngx_strncmp(yy->data, ctx->code.data + 6, 2) != 0
        || ngx_http_gov_pay_refund_field(ctx, nn, "status") == NULL)
    {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such refund", NULL);
    }

    doc = ngx_http_gov_pay_refund_json(r, ctx, nn);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_gov_pay_send_json(r, NGX_HTTP_OK, doc, ctx->unit);
    json_decref(doc);

    return rc;
}


/* one refund of the notice in ctx->fields, as units see it */

json_t *
ngx_http_gov_pay_refund_json(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, const u_char *nn)
{
    u_char      id[NGX_HTTP_GOV_PAY_REFUND_ID_LEN + 1];
    char        t[26];
    json_t     *doc;
    ngx_str_t  *v;
    ngx_uint_t  i;

    static const char  *texts[] = { "request_id", "reason", "status",
                                    "origin", "channel_refund_no", "error",
                                    NULL };
    static const char  *times[] = { "created_at", "completed_at", NULL };

    ngx_sprintf(id, "%VR%*s%Z", &ctx->code, (size_t) 2, nn);

    doc = json_pack("{s:s,s:s%}", "refund_id", (char *) id,
                    "payment_code", ctx->code.data, ctx->code.len);
    if (doc == NULL) {
        return NULL;
    }

    v = ngx_http_gov_pay_refund_field(ctx, nn, "amount");
    if (v == NULL
        || json_object_set_new(doc, "amount",
                               json_integer(ngx_atoof(v->data, v->len))))
    {
        goto failed;
    }

    for (i = 0; texts[i]; i++) {
        v = ngx_http_gov_pay_refund_field(ctx, nn, texts[i]);

        if (v && v->len
            && json_object_set_new(doc, texts[i],
                                   json_stringn((char *) v->data, v->len)))
        {
            goto failed;
        }
    }

    for (i = 0; times[i]; i++) {
        v = ngx_http_gov_pay_refund_field(ctx, nn, times[i]);

        if (v && v->len) {
            gp_time_rfc3339(ngx_atoof(v->data, v->len), t);

            if (json_object_set_new(doc, times[i], json_string(t))) {
                goto failed;
            }
        }
    }

    return doc;

failed:

    json_decref(doc);
    return NULL;
}


/*
 * The notice's own refunds (origin "notice"), in order, for the notice's
 * answer; NULL when it has none (and on failure: *failed set)
 */

json_t *
ngx_http_gov_pay_refunds_json(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_uint_t *failed)
{
    u_char     *p, *last;
    json_t     *list, *one;
    ngx_str_t  *refunds;

    *failed = 0;

    refunds = ngx_http_gov_pay_field(ctx, "refunds");
    if (refunds == NULL || refunds->len < 2) {
        return NULL;
    }

    list = json_array();
    if (list == NULL) {
        *failed = 1;
        return NULL;
    }

    p = refunds->data;
    last = refunds->data + refunds->len;

    while (p + 2 <= last) {
        one = ngx_http_gov_pay_refund_json(r, ctx, p);

        if (one == NULL || json_array_append_new(list, one) != 0) {
            json_decref(list);
            *failed = 1;
            return NULL;
        }

        p += 3;     /* "nn," */
    }

    return list;
}


static ngx_str_t *
ngx_http_gov_pay_refund_field(ngx_http_gov_pay_ctx_t *ctx, const u_char *nn,
    const char *name)
{
    u_char  field[64];

    ngx_snprintf(field, sizeof(field), "r%*s.%s%Z", (size_t) 2, nn, name);

    return ngx_http_gov_pay_field(ctx, (char *) field);
}


/* the refund id names the notice: "<code>R<two digits>" */

static ngx_int_t
ngx_http_gov_pay_refund_nn(ngx_str_t *code, u_char *id, size_t len)
{
    if (len != NGX_HTTP_GOV_PAY_REFUND_ID_LEN
        || ngx_strncmp(id, code->data, GP_CODE_LEN) != 0
        || id[GP_CODE_LEN] != 'R'
        || id[GP_CODE_LEN + 1] < '0' || id[GP_CODE_LEN + 1] > '9'
        || id[GP_CODE_LEN + 2] < '0' || id[GP_CODE_LEN + 2] > '9'
        || (id[GP_CODE_LEN + 1] == '0' && id[GP_CODE_LEN + 2] == '0'))
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * A channel's final word on a refund (a verified callback, a bank's
 * answer): refund_done.lua on the refund's notice.  next runs with
 * ctx->outcome (DONE, DUP, MISMATCH, NONE; empty: the store failed).
 */

ngx_int_t
ngx_http_gov_pay_refund_result(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_refund_result_t *rr,
    ngx_http_gov_pay_step_pt next)
{
    ngx_str_t                     *argv, *a, code;
    ngx_uint_t                     nkeys, argc;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    rr->next = next;
    ctx->refund = rr;
    ngx_str_null(&ctx->outcome);
    ngx_str_null(&ctx->reason);

    code.data = rr->refund_id.data;
    code.len = GP_CODE_LEN;

    if (rr->refund_id.len != NGX_HTTP_GOV_PAY_REFUND_ID_LEN
        || ngx_http_gov_pay_parse_code(gpmcf, &code, ctx) != NGX_OK
        || ngx_http_gov_pay_refund_nn(&code, rr->refund_id.data,
                                      rr->refund_id.len)
           != NGX_OK)
    {
        ngx_str_set(&ctx->outcome, "NONE");
        return next(r, ctx);
    }

    /*
     * KEYS: notice, refunds stream, refund queue, bank refunds index[,
     * the bank's nonce].  ARGV: code, nn, outcome, amount, channel refund
     * no, at, error, division, yy[, nonce ttl, bank id]
     */

    nkeys = rr->bank.len ? 5 : 4;
    argc = nkeys + (rr->bank.len ? 11 : 9);

    argv = ngx_palloc(r->pool, argc * sizeof(ngx_str_t));
    if (argv == NULL
        || ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "n:%uL",
                                ctx->seq) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "refunds")
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[2], ctx->shard,
                                "refund:queue") != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[3], ctx->shard, "bankrefunds")
           != NGX_OK
        || ngx_http_gov_pay_refund_arg(r, &argv[nkeys + 5], rr->at)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rr->bank.len
        && (ngx_http_gov_pay_key(r->pool, &argv[4], ctx->shard,
                                 "nonce:%V:%V", &rr->bank, &rr->nonce)
            != NGX_OK
            || ngx_http_gov_pay_refund_arg(r, &argv[nkeys + 9],
                                           2 * gpmcf->auth_window)
               != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    a = &argv[nkeys];

    a[0] = ctx->code;
    a[1].data = rr->refund_id.data + GP_CODE_LEN + 1;
    a[1].len = 2;

    if (rr->succeeded) {
        ngx_str_set(&a[2], "SUCCEEDED");
    } else {
        ngx_str_set(&a[2], "FAILED");
    }

    if (rr->amount >= 0) {
        if (ngx_http_gov_pay_refund_arg(r, &a[3], rr->amount) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {
        ngx_str_set(&a[3], "");
    }

    a[4] = rr->refund_no;
    a[6] = rr->error;
    a[7].data = ctx->code.data;
    a[7].len = 6;
    a[8].data = ctx->code.data + 6;
    a[8].len = 2;

    if (rr->bank.len) {
        a[10] = rr->bank;
    }

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_REFUND_DONE,
                                  nkeys, argc, argv,
                                  ngx_http_gov_pay_refund_done);
}


static ngx_int_t
ngx_http_gov_pay_refund_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    ngx_str_t  word;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1
        && reply->element[0]->type == REDIS_REPLY_STRING)
    {
        word.data = (u_char *) reply->element[0]->str;
        word.len = reply->element[0]->len;

        ctx->outcome.data = ngx_http_gov_pay_cstr(r->pool, &word);
        if (ctx->outcome.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->outcome.len = word.len;

        if (reply->elements > 1
            && reply->element[1]->type == REDIS_REPLY_STRING)
        {
            word.data = (u_char *) reply->element[1]->str;
            word.len = reply->element[1]->len;

            ctx->reason.data = ngx_http_gov_pay_cstr(r->pool, &word);
            if (ctx->reason.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ctx->reason.len = word.len;
        }
    }

    if (ctx->outcome.len && ngx_strcmp(ctx->outcome.data, "MISMATCH") == 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: refund %V: the channel states an amount the "
                      "refund does not have (%V fen recorded): nothing "
                      "changed, ops must look", &ctx->refund->refund_id,
                      &ctx->reason);

    } else if (ctx->outcome.len
               && ngx_strcmp(ctx->outcome.data, "DONE") == 0)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: refund %V %s", &ctx->refund->refund_id,
                      ctx->refund->succeeded ? "succeeded" : "failed");
    }

    return ctx->refund->next(r, ctx);
}


static ngx_int_t
ngx_http_gov_pay_refund_arg(ngx_http_request_t *r, ngx_str_t *arg,
    int64_t value)
{
    arg->data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (arg->data == NULL) {
        return NGX_ERROR;
    }

    arg->len = ngx_sprintf(arg->data, "%L", value) - arg->data;

    return NGX_OK;
}
