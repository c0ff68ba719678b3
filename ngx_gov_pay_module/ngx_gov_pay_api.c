
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


#include "ngx_gov_pay_module.h"


#define NGX_HTTP_GOV_PAY_ROUTE_CREATE  1
#define NGX_HTTP_GOV_PAY_ROUTE_GET     2
#define NGX_HTTP_GOV_PAY_ROUTE_CANCEL  3


static ngx_int_t ngx_http_gov_pay_create(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_create_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_by_code(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_by_code_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static json_t *ngx_http_gov_pay_types(json_t *req);
static json_t *ngx_http_gov_pay_validate(ngx_http_gov_pay_main_conf_t *gpmcf,
    const gp_unit_t *unit, json_t *req, ngx_http_gov_pay_err_e *err);


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

    ngx_http_discard_request_body(r);

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                       "no such route", NULL);
}


static ngx_int_t
ngx_http_gov_pay_push(ngx_str_t *argv, ngx_uint_t *n, const char *name,
    ngx_str_t *value)
{
    if (*n + 2 > 60) {
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
    char                     *lines, hex[65], yy[3];
    json_t                   *req, *fields, *v;
    int64_t                   now, due;
    uint32_t                  shard;
    ngx_int_t                 rc;
    ngx_str_t                 nonce, argv[64], s;
    ngx_uint_t                n, nkeys;
    json_error_t              jerr;
    unsigned char             sha[32];
    ngx_http_gov_pay_err_e    err;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ngx_http_gov_pay_authenticate(r, gpmcf, ctx, &nonce, 0, &rc)
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

    fields = ngx_http_gov_pay_types(req);
    if (fields == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (json_array_size(fields)) {
        json_decref(req);
        return ngx_http_gov_pay_bad_types(r, fields);
    }

    json_decref(fields);

    err = NGX_HTTP_GOV_PAY_OK;
    fields = ngx_http_gov_pay_validate(gpmcf, ctx->unit, req, &err);

    if (err != NGX_HTTP_GOV_PAY_OK) {
        json_decref(req);

        if (err == NGX_HTTP_GOV_PAY_FORBIDDEN) {
            json_decref(fields);
            return ngx_http_gov_pay_send_error(r, err,
                       "this unit may not collect this item", NULL);
        }

        if (err == NGX_HTTP_GOV_PAY_VALIDATION_FAILED) {
            return ngx_http_gov_pay_send_error(r, err,
                       "some fields break the rules", fields);
        }

        json_decref(fields);
        return ngx_http_gov_pay_send_error(r, err, "internal error", NULL);
    }

    /* every key of this operation lives on the shard of (unit, request_id) */

    v = json_object_get(req, "request_id");
    shard = gp_shard_of(ctx->unit->id, ngx_strlen(ctx->unit->id),
                        json_string_value(v), json_string_length(v),
                        (uint32_t) gpmcf->shards);
    ctx->shard = shard;

    if (gp_digest(GP_MD_SHA256, ctx->body.data, ctx->body.len, sha) != 0) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    gp_hex(sha, 32, hex);

    now = ngx_time();
    v = json_object_get(req, "due_at");
    due = now + gpmcf->default_due;

    if (v) {
        (void) gp_time_parse_rfc3339(json_string_value(v),
                                     json_string_length(v), &due);
    }

    ngx_sprintf((u_char *) yy, "%02ud%Z", gp_year2(now));

    n = 0;

    if (ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "nonce:%s:%V",
                             ctx->unit->id, &nonce) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "idem:%s:%s",
                                ctx->unit->id,
                                json_string_value(
                                    json_object_get(req, "request_id")))
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "seq")
           != NGX_OK)
    {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the payer's ID-number index of the item, for the open code (/o/) */

    nkeys = 3;
    v = json_object_get(req, "payer");

    rc = ngx_http_gov_pay_index_key(r, gpmcf, shard,
             json_string_value(json_object_get(req, "item_code")),
             json_string_value(json_object_get(v, "id_no")), &argv[n]);

    if (rc == NGX_ERROR) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_OK) {
        n++;
        nkeys = 4;
    }

    if (ngx_http_gov_pay_num(r, &argv[n++], 2 * gpmcf->auth_window)
        != NGX_OK
        || ngx_http_gov_pay_num(r, &argv[n], 0) != NGX_OK
        || ngx_http_gov_pay_num(r, &argv[n + 1], gpmcf->idempotency_ttl)
           != NGX_OK)
    {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[n].data = (u_char *) ngx_pnalloc(r->pool, 64);
    if (argv[n].data == NULL) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(argv[n].data, hex, 64);
    argv[n].len = 64;
    n += 2;

    rc = NGX_OK;

    if (ngx_http_gov_pay_key(r->pool, &argv[n++], shard, "n:") != NGX_OK) {
        json_decref(req);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->fields = &argv[n];

    rc |= ngx_http_gov_pay_pushs(r, argv, &n, "unit", ctx->unit->id);
    rc |= ngx_http_gov_pay_pushs(r, argv, &n, "request_id",
              json_string_value(json_object_get(req, "request_id")));
    rc |= ngx_http_gov_pay_pushs(r, argv, &n, "item_code",
              json_string_value(json_object_get(req, "item_code")));
    rc |= ngx_http_gov_pay_pushi(r, argv, &n, "amount",
              json_integer_value(json_object_get(req, "amount")));

    /* the payer's name and ID number: masked and sealed, never in clear */

    v = json_object_get(req, "payer");
    rc |= ngx_http_gov_pay_pushs(r, argv, &n, "payer_type",
              json_string_value(json_object_get(v, "type")));
    rc |= ngx_http_gov_pay_pii_seal_payer(r, gpmcf, ctx->unit->id,
              json_string_value(json_object_get(req, "request_id")), now,
              json_string_value(json_object_get(v, "name")),
              json_string_value(json_object_get(v, "id_no")), argv, &n, 60);

    rc |= ngx_http_gov_pay_pushi(r, argv, &n, "due_at", due);
    rc |= ngx_http_gov_pay_pushi(r, argv, &n, "created_at", now);
    s = gpmcf->division;
    rc |= ngx_http_gov_pay_push(argv, &n, "division", &s);
    rc |= ngx_http_gov_pay_pushs(r, argv, &n, "yy", yy);
    rc |= ngx_http_gov_pay_pushs(r, argv, &n, "status", "UNPAID");
    rc |= ngx_http_gov_pay_pushs(r, argv, &n, "body_sha256", hex);

    v = json_object_get(req, "remark");
    if (v) {
        rc |= ngx_http_gov_pay_pushs(r, argv, &n, "remark",
                                     json_string_value(v));
    }

    v = json_object_get(req, "lines");
    if (v) {
        lines = json_dumps(v, JSON_COMPACT);
        if (lines == NULL) {
            json_decref(req);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        rc |= ngx_http_gov_pay_pushs(r, argv, &n, "lines", lines);
        free(lines);
    }

    json_decref(req);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->nfields = &argv[n] - ctx->fields;

    /* the pairs must outlive this frame: the reply handler reads them */

    ctx->fields = ngx_palloc(r->pool, ctx->nfields * sizeof(ngx_str_t));
    if (ctx->fields == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(ctx->fields, &argv[n - ctx->nfields],
               ctx->nfields * sizeof(ngx_str_t));

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
    ngx_str_t                     *division, *yy;
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

    doc = ngx_http_gov_pay_notice_json(r, gpmcf, ctx);
    if (doc == NULL) {
        goto failed;
    }

    if (status == NGX_HTTP_CREATED) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: notice %V created by unit %s",
                      &ctx->code, ctx->unit->id);
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
    ngx_str_t                      nonce, argv[6], code;
    ngx_uint_t                     n;
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

    if (ctx->route == NGX_HTTP_GOV_PAY_ROUTE_CANCEL) {
        argv[3].data = (u_char *) ctx->unit->id;
        argv[3].len = ngx_strlen(ctx->unit->id);
        argv[4].data = ctx->code.data;
        argv[4].len = 6;
        argv[5].data = ctx->code.data + 6;
        argv[5].len = 2;
        n = 6;
    }

    return ngx_http_gov_pay_query(r,
               ctx->route == NGX_HTTP_GOV_PAY_ROUTE_CANCEL
               ? NGX_HTTP_GOV_PAY_SCRIPT_CANCEL : NGX_HTTP_GOV_PAY_SCRIPT_GET,
               2, n, argv, ngx_http_gov_pay_by_code_done);
}


static ngx_int_t
ngx_http_gov_pay_by_code_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    json_t                        *doc;
    ngx_int_t                      rc;
    ngx_str_t                     *unit, *division, *yy;
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

    doc = ngx_http_gov_pay_notice_json(r, gpmcf, ctx);
    if (doc == NULL) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INTERNAL,
                                           "internal error", NULL);
    }

    /* the payer in full: only in the creating unit's own read */

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


/* validation: every rule of API.md; the fields list names each failure */

static void
ngx_http_gov_pay_fail(json_t *fields, const char *field, const char *reason)
{
    json_array_append_new(fields, json_pack("{s:s,s:s}", "field", field,
                                            "reason", reason));
}


static int
ngx_http_gov_pay_text_ok(json_t *v, size_t min, size_t max)
{
    size_t  chars;

    if (!json_is_string(v)) {
        return 0;
    }

    if (!gp_utf8_valid(json_string_value(v), json_string_length(v), &chars)
        || chars < min || chars > max
        || ngx_strlen(json_string_value(v)) != json_string_length(v))
    {
        return 0;
    }

    return 1;
}


static int
ngx_http_gov_pay_request_id_ok(json_t *v)
{
    size_t       i, len;
    const char  *s;

    if (!json_is_string(v)) {
        return 0;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    if (len < 1 || len > 64) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


/*
 * Wrong JSON types are BAD_REQUEST (API.md); present fields only: a
 * missing field is a broken rule.  A fractional amount is a number and so
 * a broken rule, not a wrong type.
 */

static void
ngx_http_gov_pay_type(json_t *types, json_t *obj, const char *key,
    const char *path, json_type type)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (v == NULL) {
        return;
    }

    if (type == JSON_REAL ? !json_is_number(v) : json_typeof(v) != type) {
        json_array_append_new(types, json_string(path));
    }
}


static json_t *
ngx_http_gov_pay_types(json_t *req)
{
    size_t   i;
    json_t  *types, *payer, *lines, *line;

    types = json_array();
    if (types == NULL) {
        return NULL;
    }

    ngx_http_gov_pay_type(types, req, "request_id", "request_id",
                          JSON_STRING);
    ngx_http_gov_pay_type(types, req, "item_code", "item_code", JSON_STRING);
    ngx_http_gov_pay_type(types, req, "amount", "amount", JSON_REAL);
    ngx_http_gov_pay_type(types, req, "payer", "payer", JSON_OBJECT);
    ngx_http_gov_pay_type(types, req, "due_at", "due_at", JSON_STRING);
    ngx_http_gov_pay_type(types, req, "remark", "remark", JSON_STRING);
    ngx_http_gov_pay_type(types, req, "lines", "lines", JSON_ARRAY);

    payer = json_object_get(req, "payer");
    if (json_is_object(payer)) {
        ngx_http_gov_pay_type(types, payer, "type", "payer.type",
                              JSON_STRING);
        ngx_http_gov_pay_type(types, payer, "name", "payer.name",
                              JSON_STRING);
        ngx_http_gov_pay_type(types, payer, "id_no", "payer.id_no",
                              JSON_STRING);
    }

    lines = json_object_get(req, "lines");
    if (json_is_array(lines)) {
        json_array_foreach(lines, i, line) {
            if (!json_is_object(line)) {
                json_array_append_new(types, json_string("lines"));
                break;
            }

            ngx_http_gov_pay_type(types, line, "item_code",
                                  "lines.item_code", JSON_STRING);
            ngx_http_gov_pay_type(types, line, "quantity", "lines.quantity",
                                  JSON_REAL);
            ngx_http_gov_pay_type(types, line, "unit_price",
                                  "lines.unit_price", JSON_REAL);
        }
    }

    return types;
}


static json_t *
ngx_http_gov_pay_validate(ngx_http_gov_pay_main_conf_t *gpmcf,
    const gp_unit_t *unit, json_t *req, ngx_http_gov_pay_err_e *err)
{
    json_t            *fields, *v, *payer, *line;
    size_t             i;
    int64_t            due, amount, sum, q, p;
    const char        *key, *type;
    const gp_item_t   *item;
    ngx_uint_t         forbidden;

    static const char *allowed[] = { "request_id", "item_code", "amount",
                                     "payer", "due_at", "lines", "remark",
                                     NULL };

    fields = json_array();
    if (fields == NULL) {
        *err = NGX_HTTP_GOV_PAY_INTERNAL;
        return NULL;
    }

    forbidden = 0;
    item = NULL;
    amount = 0;

    json_object_foreach(req, key, v) {
        for (i = 0; allowed[i]; i++) {
            if (ngx_strcmp(key, allowed[i]) == 0) {
                break;
            }
        }

        if (allowed[i] == NULL) {
            ngx_http_gov_pay_fail(fields, key, "unknown field");
        }
    }

    if (!ngx_http_gov_pay_request_id_ok(json_object_get(req, "request_id")))
    {
        ngx_http_gov_pay_fail(fields, "request_id",
                              "required: 1 to 64 printable ASCII characters");
    }

    v = json_object_get(req, "item_code");
    if (!json_is_string(v)) {
        ngx_http_gov_pay_fail(fields, "item_code", "required string");

    } else {
        item = gp_registry_item(gpmcf->registry, json_string_value(v),
                                json_string_length(v));
        if (item == NULL) {
            ngx_http_gov_pay_fail(fields, "item_code",
                                  "not in the item catalogue");

        } else if (!gp_unit_allows(unit, json_string_value(v),
                                   json_string_length(v)))
        {
            forbidden = 1;
        }
    }

    v = json_object_get(req, "amount");
    if (!json_is_integer(v)) {
        ngx_http_gov_pay_fail(fields, "amount",
                              "required integer number of fen");

    } else {
        amount = json_integer_value(v);

        if (amount < 1 || amount > GP_FEN_MAX) {
            ngx_http_gov_pay_fail(fields, "amount",
                                  "must be 1 to 10000000000 fen");

        } else if (item && (amount < item->min || amount > item->max)) {
            ngx_http_gov_pay_fail(fields, "amount",
                                  item->rule == GP_AMOUNT_FIXED
                                  ? "must equal the item's fixed amount"
                                  : "outside the item's allowed range");
        }
    }

    payer = json_object_get(req, "payer");
    if (!json_is_object(payer)) {
        ngx_http_gov_pay_fail(fields, "payer", "required object");

    } else {
        json_object_foreach(payer, key, v) {
            if (ngx_strcmp(key, "type") != 0 && ngx_strcmp(key, "name") != 0
                && ngx_strcmp(key, "id_no") != 0)
            {
                ngx_http_gov_pay_fail(fields, "payer", "unknown field");
                break;
            }
        }

        type = json_string_value(json_object_get(payer, "type"));

        if (type == NULL
            || (ngx_strcmp(type, "person") != 0
                && ngx_strcmp(type, "org") != 0))
        {
            ngx_http_gov_pay_fail(fields, "payer.type",
                                  "must be \"person\" or \"org\"");
            type = NULL;
        }

        if (!ngx_http_gov_pay_text_ok(json_object_get(payer, "name"), 1, 100))
        {
            ngx_http_gov_pay_fail(fields, "payer.name",
                                  "required, 1 to 100 characters");
        }

        v = json_object_get(payer, "id_no");

        if (!json_is_string(v)) {
            ngx_http_gov_pay_fail(fields, "payer.id_no", "required string");

        } else if (type && ngx_strcmp(type, "person") == 0
                   && !gp_resident_id_valid(json_string_value(v),
                                            json_string_length(v)))
        {
            ngx_http_gov_pay_fail(fields, "payer.id_no",
                                  "not a valid 18-character resident ID");

        } else if (type && ngx_strcmp(type, "org") == 0
                   && !gp_uscc_valid(json_string_value(v),
                                     json_string_length(v)))
        {
            ngx_http_gov_pay_fail(fields, "payer.id_no",
                                  "not a valid unified social credit code");
        }
    }

    v = json_object_get(req, "due_at");
    if (v) {
        if (!json_is_string(v)
            || gp_time_parse_rfc3339(json_string_value(v),
                                     json_string_length(v), &due)
               != 0)
        {
            ngx_http_gov_pay_fail(fields, "due_at",
                                  "must be an RFC 3339 time with offset");

        } else if (due <= (int64_t) ngx_time()) {
            ngx_http_gov_pay_fail(fields, "due_at", "must be in the future");
        }
    }

    v = json_object_get(req, "remark");
    if (v && !ngx_http_gov_pay_text_ok(v, 0, 200)) {
        ngx_http_gov_pay_fail(fields, "remark",
                              "must be a string of at most 200 characters");
    }

    v = json_object_get(req, "lines");
    if (v) {
        if (!json_is_array(v) || json_array_size(v) == 0
            || json_array_size(v) > 50)
        {
            ngx_http_gov_pay_fail(fields, "lines",
                                  "must be an array of 1 to 50 lines");

        } else {
            sum = 0;

            json_array_foreach(v, i, line) {
                q = json_integer_value(json_object_get(line, "quantity"));
                p = json_integer_value(json_object_get(line, "unit_price"));

                if (!json_is_object(line) || json_object_size(line) != 3
                    || !json_is_string(json_object_get(line, "item_code"))
                    || gp_registry_item(gpmcf->registry,
                           json_string_value(json_object_get(line,
                                                             "item_code")),
                           json_string_length(json_object_get(line,
                                                              "item_code")))
                       == NULL
                    || !json_is_integer(json_object_get(line, "quantity"))
                    || !json_is_integer(json_object_get(line, "unit_price"))
                    || q < 1 || q > 1000000 || p < 1 || p > GP_FEN_MAX
                    || p > GP_FEN_MAX / q)
                {
                    ngx_http_gov_pay_fail(fields, "lines",
                        "each line needs a known item_code, quantity >= 1 "
                        "and unit_price >= 1 fen, and nothing else");
                    sum = -1;
                    break;
                }

                sum += q * p;

                if (sum > GP_FEN_MAX) {
                    break;
                }
            }

            if (sum >= 0 && sum != amount) {
                ngx_http_gov_pay_fail(fields, "lines",
                                      "lines do not sum to amount");
            }
        }
    }

    if (json_array_size(fields)) {
        *err = NGX_HTTP_GOV_PAY_VALIDATION_FAILED;
        return fields;
    }

    if (forbidden) {
        *err = NGX_HTTP_GOV_PAY_FORBIDDEN;
    }

    return fields;
}
