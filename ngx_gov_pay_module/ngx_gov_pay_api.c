
/*
 * ngx_gov_pay_api.c: the unit API.
 *
 *   POST /v1/notices                 create a payment notice (idempotent)
 *   GET  /v1/notices/{payment_code}  read one of the unit's notices
 *   POST /v1/notices/{payment_code}/cancel  cancel it (idempotent)
 *
 * A create is checked completely (signature, timestamp, JSON, every field)
 * before the store is touched; then one Lua script checks the nonce and the
 * idempotency record, allocates the shard's sequence and stores the notice,
 * atomically.  A read is one script too: nonce and notice together.
 */


#include "ngx_gov_pay_channel.h"


#define NGX_HTTP_GOV_PAY_ROUTE_CREATE  1
#define NGX_HTTP_GOV_PAY_ROUTE_GET     2
#define NGX_HTTP_GOV_PAY_ROUTE_CANCEL  3

/* the notice's values create.lua takes without their names (ARGV[4..16]) */
#define NGX_HTTP_GOV_PAY_CREATE_VALUES  13



static ngx_int_t ngx_http_gov_pay_create(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_create_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_by_code(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_by_code_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);


typedef struct {
    const char                 *item_code;
    int64_t                     amount;
    const char                 *payer_type;
    const char                 *payer_name;
    const char                 *payer_id;
    int64_t                     due_at;
    const char                 *remark;
    json_t                     *lines;
} ngx_http_gov_pay_notice_in_t;


ngx_int_t
ngx_http_gov_pay_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t               *ct;
    ngx_http_gov_pay_ctx_t  *ctx;

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->uri.len == sizeof("/v1/notices") - 1
        && ngx_strncmp(r->uri.data, "/v1/notices", r->uri.len) == 0)
    {
        if (r->method != NGX_HTTP_POST) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use POST to create a notice", NULL);
        }

        ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                        : NULL;

        if (ct == NULL || ct->len < 16
            || ngx_strncasecmp(ct->data, (u_char *) "application/json", 16)
               != 0
            || (ct->len > 16 && ct->data[16] != ';' && ct->data[16] != ' '))
        {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_UNSUPPORTED_MEDIA_TYPE,
                       "the body must be application/json", NULL);
        }

        ctx->route = NGX_HTTP_GOV_PAY_ROUTE_CREATE;

        return ngx_http_gov_pay_read_body(r, ngx_http_gov_pay_create);
    }

    if (r->uri.len == sizeof("/v1/notices/") - 1 + GP_CODE_LEN
        && ngx_strncmp(r->uri.data, "/v1/notices/", 12) == 0)
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

        ctx->route = NGX_HTTP_GOV_PAY_ROUTE_GET;
        ctx->body.len = 0;
        ctx->body.data = (u_char *) "";

        return ngx_http_gov_pay_by_code(r, ctx);
    }

    if (r->uri.len == sizeof("/v1/notices//cancel") - 1 + GP_CODE_LEN
        && ngx_strncmp(r->uri.data, "/v1/notices/", 12) == 0
        && ngx_strncmp(r->uri.data + 12 + GP_CODE_LEN, "/cancel", 7) == 0)
    {
        if (r->method != NGX_HTTP_POST) {
            ngx_http_discard_request_body(r);
            return ngx_http_gov_pay_send_error(r,
                       NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
                       "use POST to cancel a notice", NULL);
        }

        ctx->route = NGX_HTTP_GOV_PAY_ROUTE_CANCEL;

        return ngx_http_gov_pay_read_body(r, ngx_http_gov_pay_by_code);
    }

    if (r->uri.len >= sizeof("/v1/notices//refunds") - 1 + GP_CODE_LEN
        && ngx_strncmp(r->uri.data, "/v1/notices/", 12) == 0
        && ngx_strncmp(r->uri.data + 12 + GP_CODE_LEN, "/refunds", 8) == 0)
    {
        return ngx_http_gov_pay_refund_route(r, ctx);
    }

    ngx_http_discard_request_body(r);

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                       "no such route", NULL);
}


static ngx_int_t
ngx_http_gov_pay_push(ngx_str_t *argv, ngx_uint_t *n, const char *name,
    ngx_str_t *value)
{
    if (*n + 2 > 40) {
        return NGX_ERROR;
    }

    argv[*n].data = (u_char *) name;
    argv[*n].len = ngx_strlen(name);
    argv[*n + 1] = *value;
    *n += 2;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_pushs(ngx_http_request_t *r, ngx_str_t *argv, ngx_uint_t *n,
    const char *name, const char *value)
{
    ngx_str_t  v;

    v.len = ngx_strlen(value);
    v.data = ngx_pnalloc(r->pool, v.len + 1);
    if (v.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(v.data, value, v.len + 1);

    return ngx_http_gov_pay_push(argv, n, name, &v);
}


static ngx_int_t
ngx_http_gov_pay_pushi(ngx_http_request_t *r, ngx_str_t *argv, ngx_uint_t *n,
    const char *name, int64_t value)
{
    u_char     buf[NGX_INT64_LEN + 1];

    *ngx_sprintf(buf, "%L", value) = '\0';

    return ngx_http_gov_pay_pushs(r, argv, n, name, (const char *) buf);
}


static ngx_int_t
ngx_http_gov_pay_bad_types(ngx_http_request_t *r, json_t *types)
{
    u_char      *p, *last, msg[512];
    size_t       i;
    json_t      *v;

    p = msg;
    last = msg + sizeof(msg) - 1;

    p = ngx_slprintf(p, last, "wrong JSON type for");

    json_array_foreach(types, i, v) {
        p = ngx_slprintf(p, last, "%s %s", i ? "," : "",
                         json_string_value(v));
    }

    *p = '\0';

    json_decref(types);

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_BAD_REQUEST,
                                       (const char *) msg, NULL);
}


static ngx_int_t
ngx_http_gov_pay_num(ngx_http_request_t *r, ngx_str_t *arg, int64_t value)
{
    arg->data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (arg->data == NULL) {
        return NGX_ERROR;
    }

    arg->len = ngx_sprintf(arg->data, "%L", value) - arg->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_create(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx)
{
    int                            forbidden;
    char                          *lines;
    u_char                        *hex;
    json_t                        *req, *fields, *v, *rid, *item, *payer;
    int64_t                        now, due;
    uint32_t                       shard;
    ngx_int_t                      rc;
    ngx_str_t                      nonce, argv[48], s, yy, *f;
    ngx_uint_t                     n, nkeys, nf, fixed, i;
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

    /* the rules (common/gp_notice.c): wrong types, then every field */

    fields = gp_notice_types(req);
    if (fields == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (json_array_size(fields)) {
        json_decref(req);
        return ngx_http_gov_pay_bad_types(r, fields);
    }

    json_decref(fields);

    fields = gp_notice_check(gpmcf->registry, ctx->unit, req, ngx_time(),
                             &forbidden);
    if (fields == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (json_array_size(fields)) {
        json_decref(req);
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
                   "some fields break the rules", fields);
    }

    json_decref(fields);

    if (forbidden) {
        json_decref(req);
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_FORBIDDEN,
                   "this unit may not collect this item", NULL);
    }

    /* every key of this operation lives on the shard of (unit, request_id) */

    rid = json_object_get(req, "request_id");
    item = json_object_get(req, "item_code");
    payer = json_object_get(req, "payer");

    shard = gp_shard_of(ctx->unit->id, ngx_strlen(ctx->unit->id),
                        json_string_value(rid), json_string_length(rid),
                        (uint32_t) gpmcf->shards);
    ctx->shard = shard;

    if (gp_digest(GP_MD_SHA256, ctx->body.data, ctx->body.len, sha) != 0) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    now = ngx_time();
    v = json_object_get(req, "due_at");
    due = now + gpmcf->default_due;

    if (v) {
        (void) gp_time_parse_rfc3339(json_string_value(v),
                                     json_string_length(v), &due);
    }

    /*
     * The notice's fields, name and value, in the order create.lua stores
     * them: the values go to the script without their names (it holds
     * them), the pairs answer the request.
     */

    f = ngx_palloc(r->pool, 40 * sizeof(ngx_str_t));
    if (f == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    nf = 0;
    rc = NGX_OK;

    rc |= ngx_http_gov_pay_pushs(r, f, &nf, "unit", ctx->unit->id);
    rc |= ngx_http_gov_pay_pushs(r, f, &nf, "request_id",
                                 json_string_value(rid));
    rc |= ngx_http_gov_pay_pushs(r, f, &nf, "item_code",
                                 json_string_value(item));
    rc |= ngx_http_gov_pay_pushi(r, f, &nf, "amount",
              json_integer_value(json_object_get(req, "amount")));
    rc |= ngx_http_gov_pay_pushs(r, f, &nf, "payer_type",
              json_string_value(json_object_get(payer, "type")));

    /* the payer's name and ID number: masked and sealed, never in clear */

    rc |= ngx_http_gov_pay_pii_seal_payer(r, gpmcf, ctx->unit->id,
              json_string_value(rid), now,
              json_string_value(json_object_get(payer, "name")),
              json_string_value(json_object_get(payer, "id_no")), f, &nf, 36);

    rc |= ngx_http_gov_pay_pushi(r, f, &nf, "due_at", due);
    rc |= ngx_http_gov_pay_pushi(r, f, &nf, "created_at", now);
    s = gpmcf->division;
    rc |= ngx_http_gov_pay_push(f, &nf, "division", &s);

    yy.data = ngx_pnalloc(r->pool, 3);
    if (yy.data == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(yy.data, "%02ud%Z", gp_year2(now));
    yy.len = 2;
    rc |= ngx_http_gov_pay_push(f, &nf, "yy", &yy);

    fixed = nf;

    v = json_object_get(req, "remark");
    if (v) {
        rc |= ngx_http_gov_pay_pushs(r, f, &nf, "remark",
                                     json_string_value(v));
    }

    v = json_object_get(req, "lines");
    if (v) {
        lines = json_dumps(v, JSON_COMPACT);
        if (lines == NULL) {
            json_decref(req);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc |= ngx_http_gov_pay_pushs(r, f, &nf, "lines", lines);
        free(lines);
    }

    if (rc != NGX_OK || fixed != 2 * NGX_HTTP_GOV_PAY_CREATE_VALUES) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the keys */

    n = 0;

    if (ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "nonce:%s:%V",
                             ctx->unit->id, &nonce) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "idem:%s:%s",
                                ctx->unit->id, json_string_value(rid))
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "seq")
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "due")
           != NGX_OK)
    {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the payer's ID-number index of the item, for the open code (/o/) */

    nkeys = 4;

    rc = ngx_http_gov_pay_index_key(r, gpmcf, shard, json_string_value(item),
             json_string_value(json_object_get(payer, "id_no")), &argv[n]);

    json_decref(req);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        n++;
        nkeys = 5;
    }

    /* ARGV: the nonce's ttl, the body's hash (once), the record's ttl */

    hex = ngx_pnalloc(r->pool, 2 * sizeof(sha) + 1);
    if (hex == NULL
        || ngx_http_gov_pay_num(r, &argv[n], 2 * gpmcf->auth_window)
           != NGX_OK
        || ngx_http_gov_pay_num(r, &argv[n + 2], gpmcf->idempotency_ttl)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    gp_hex(sha, sizeof(sha), (char *) hex);
    argv[n + 1].data = hex;
    argv[n + 1].len = 2 * sizeof(sha);
    n += 3;

    /* the fixed values without their names, then the optional pairs */

    for (i = 0; i < nf; i++) {
        if (i >= fixed || i % 2) {
            argv[n++] = f[i];
        }
    }

    /* the answer's fields: the notice as stored */

    rc = ngx_http_gov_pay_pushs(r, f, &nf, "status", "UNPAID");
    s.data = hex;
    s.len = 2 * sizeof(sha);
    rc |= ngx_http_gov_pay_push(f, &nf, "body_sha256", &s);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->fields = f;
    ctx->nfields = nf;

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_CREATE, nkeys,
                                  n, argv, ngx_http_gov_pay_create_done);
}


static ngx_int_t
ngx_http_gov_pay_create_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    char                           code[GP_CODE_LEN + 1];
    json_t                        *doc;
    ngx_int_t                      rc;
    ngx_str_t                     *division, *yy, body;
    ngx_uint_t                     status;
    redisReply                    *word;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return ngx_http_gov_pay_store_unavailable(r);
    }

    word = reply->element[0];

    if (ngx_strcmp(word->str, "REPLAY") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NONCE_REPLAYED,
                                           "nonce already used", NULL);
    }

    if (ngx_strcmp(word->str, "CONFLICT") == 0) {
        return ngx_http_gov_pay_send_error(r,
                   NGX_HTTP_GOV_PAY_IDEMPOTENCY_CONFLICT,
                   "request_id was used with a different body", NULL);
    }

    if (reply->elements < 2
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        goto failed;
    }

    ctx->seq = ngx_atoof((u_char *) reply->element[1]->str,
                         reply->element[1]->len);

    if (ngx_strcmp(word->str, "EXISTS") == 0) {
        if (ngx_http_gov_pay_reply_fields(r, reply, 2, ctx) != NGX_OK) {
            goto failed;
        }
        status = NGX_HTTP_OK;

    } else if (ngx_strcmp(word->str, "CREATED") == 0) {
        status = NGX_HTTP_CREATED;

    } else {
        goto failed;
    }

    division = ngx_http_gov_pay_field(ctx, "division");
    yy = ngx_http_gov_pay_field(ctx, "yy");

    if (division == NULL || yy == NULL
        || gp_code_make(&gpmcf->code_key, (const char *) division->data,
                        (unsigned) ngx_atoi(yy->data, yy->len),
                        (uint32_t) gpmcf->shards, ctx->shard, ctx->seq,
                        code)
           != 0)
    {
        goto failed;
    }

    ctx->code.len = GP_CODE_LEN;
    ctx->code.data = ngx_pnalloc(r->pool, GP_CODE_LEN);
    if (ctx->code.data == NULL) {
        goto failed;
    }
    ngx_memcpy(ctx->code.data, code, GP_CODE_LEN);

    if (status == NGX_HTTP_CREATED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: notice %V created by unit %s",
                      &ctx->code, ctx->unit->id);
    }

    /* written directly; a retried create of a notice paid since: jansson */

    rc = ngx_http_gov_pay_notice_body(r, gpmcf, ctx, NULL, &body);

    if (rc == NGX_OK) {
        return ngx_http_gov_pay_send_json_body(r, status, &body, ctx->unit);
    }

    if (rc == NGX_ERROR) {
        goto failed;
    }

    doc = ngx_http_gov_pay_notice_json(r, gpmcf, ctx);
    if (doc == NULL) {
        goto failed;
    }

    rc = ngx_http_gov_pay_send_json(r, status, doc, ctx->unit);
    json_decref(doc);

    return rc;

failed:

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "gov_pay: unexpected reply of the create script");

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                                       "internal error", NULL);
}


/* GET and cancel: one script on the code's shard spends the nonce too */

static ngx_int_t
ngx_http_gov_pay_by_code(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_str_t                      nonce, argv[7], code;
    ngx_uint_t                     n, nkeys;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ngx_http_gov_pay_authenticate(r, gpmcf, ctx, &nonce, 0, &rc)
        != NGX_OK)
    {
        return rc;
    }

    /* a bad check digit is refused before any lookup */

    code.data = r->uri.data + 12;
    code.len = GP_CODE_LEN;

    if (ngx_http_gov_pay_parse_code(gpmcf, &code, ctx) != NGX_OK) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such notice", NULL);
    }

    if (ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "nonce:%s:%V",
                             ctx->unit->id, &nonce) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "n:%uL",
                                ctx->seq) != NGX_OK
        || ngx_http_gov_pay_num(r, &argv[2], 2 * gpmcf->auth_window)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = 3;
    nkeys = 2;

    if (ctx->route == NGX_HTTP_GOV_PAY_ROUTE_CANCEL) {
        /*
         * cancel.lua's third key: the shard's final set (retention); the
         * nonce ttl moves after it
         */
        argv[3] = argv[2];

        if (ngx_http_gov_pay_key(r->pool, &argv[2], ctx->shard, "final")
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[4].data = (u_char *) ctx->unit->id;
        argv[4].len = ngx_strlen(ctx->unit->id);
        argv[5].data = ctx->code.data;
        argv[5].len = 6;
        argv[6].data = ctx->code.data + 6;
        argv[6].len = 2;
        n = 7;
        nkeys = 3;
    }

    return ngx_http_gov_pay_query(r,
               ctx->route == NGX_HTTP_GOV_PAY_ROUTE_CANCEL
               ? NGX_HTTP_GOV_PAY_SCRIPT_CANCEL : NGX_HTTP_GOV_PAY_SCRIPT_GET,
               nkeys, n, argv, ngx_http_gov_pay_by_code_done);
}


static ngx_int_t
ngx_http_gov_pay_by_code_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    json_t                        *doc;
    ngx_int_t                      rc;
    ngx_str_t                     *unit, *division, *yy, *payer, body;
    ngx_str_t                      opened[3];
    const char                    *word;
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

    if (ngx_strcmp(word, "INVALID_STATE") == 0) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INVALID_STATE,
                   "the notice is paid and can no longer be cancelled", NULL);
    }

    if (ngx_strcmp(word, "OK") != 0
        || ngx_http_gov_pay_reply_fields(r, reply, 1, ctx) != NGX_OK)
    {
        goto not_found;
    }

    /* another unit's notice, or a code of another division or year */

    unit = ngx_http_gov_pay_field(ctx, "unit");
    division = ngx_http_gov_pay_field(ctx, "division");
    yy = ngx_http_gov_pay_field(ctx, "yy");

    if (unit == NULL || division == NULL || yy == NULL
        || ngx_strcmp(unit->data, ctx->unit->id) != 0
        || division->len != 6 || yy->len != 2
        || ngx_strncmp(division->data, ctx->code.data, 6) != 0
        || ngx_strncmp(yy->data, ctx->code.data + 6, 2) != 0)
    {
        goto not_found;
    }

    if (ctx->route == NGX_HTTP_GOV_PAY_ROUTE_CANCEL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: notice %V cancelled by unit %s",
                      &ctx->code, ctx->unit->id);
    }

    /* the payer in full: only in the creating unit's own read */

    payer = NULL;

    if (ctx->route == NGX_HTTP_GOV_PAY_ROUTE_GET) {
        rc = ngx_http_gov_pay_pii_payer(r, gpmcf, ctx, opened);

        if (rc != NGX_OK) {
            return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                       rc == NGX_DECLINED
                       ? "the payer of this notice cannot be opened"
                       : "internal error", NULL);
        }

        payer = opened;
    }

    /* written directly; a notice with refunds: jansson */

    rc = ngx_http_gov_pay_notice_body(r, gpmcf, ctx, payer, &body);

    if (payer) {
        ngx_http_gov_pay_pii_wipe(payer);
    }

    if (rc == NGX_OK) {
        return ngx_http_gov_pay_send_json_body(r, NGX_HTTP_OK, &body,
                                               ctx->unit);
    }

    if (rc == NGX_ERROR) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                                           "internal error", NULL);
    }

    doc = ngx_http_gov_pay_notice_json(r, gpmcf, ctx);
    if (doc == NULL) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                                           "internal error", NULL);
    }

    if (ctx->route == NGX_HTTP_GOV_PAY_ROUTE_GET) {
        rc = ngx_http_gov_pay_pii_payer_json(r, gpmcf, ctx, doc);

        if (rc != NGX_OK) {
            json_decref(doc);
            return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                       rc == NGX_DECLINED
                       ? "the payer of this notice cannot be opened"
                       : "internal error", NULL);
        }
    }

    rc = ngx_http_gov_pay_send_json(r, NGX_HTTP_OK, doc, ctx->unit);
    json_decref(doc);

    return rc;

not_found:

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                       "no such notice", NULL);
}
