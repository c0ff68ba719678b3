
/*
 * ngx_gov_pay_util.c: what every handler shares: the request context,
 * waiting for Redis, replies in the contract's formats, the notice as
 * Redis holds it and as units see it.
 */


#include "ngx_gov_pay_module.h"


typedef struct {
    const char                *code;
    ngx_uint_t                 status;
} ngx_http_gov_pay_err_t;


static ngx_http_gov_pay_err_t  ngx_http_gov_pay_errors[] = {
    { "OK",                      NGX_HTTP_OK },
    { "BAD_REQUEST",             NGX_HTTP_BAD_REQUEST },
    { "VALIDATION_FAILED",       422 },
    { "UNAUTHENTICATED",         NGX_HTTP_UNAUTHORIZED },
    { "SIGNATURE_INVALID",       NGX_HTTP_UNAUTHORIZED },
    { "TIMESTAMP_OUT_OF_WINDOW", NGX_HTTP_UNAUTHORIZED },
    { "NONCE_REPLAYED",          NGX_HTTP_UNAUTHORIZED },
    { "FORBIDDEN",               NGX_HTTP_FORBIDDEN },
    { "NOT_FOUND",               NGX_HTTP_NOT_FOUND },
    { "METHOD_NOT_ALLOWED",      NGX_HTTP_NOT_ALLOWED },
    { "IDEMPOTENCY_CONFLICT",    NGX_HTTP_CONFLICT },
    { "INVALID_STATE",           NGX_HTTP_CONFLICT },
    { "PAYLOAD_TOO_LARGE",       NGX_HTTP_REQUEST_ENTITY_TOO_LARGE },
    { "UNSUPPORTED_MEDIA_TYPE",  NGX_HTTP_UNSUPPORTED_MEDIA_TYPE },
    { "STORE_UNAVAILABLE",       NGX_HTTP_SERVICE_UNAVAILABLE },
    { "INTERNAL",                NGX_HTTP_INTERNAL_SERVER_ERROR }
};


static ngx_int_t ngx_http_gov_pay_has_csp(ngx_http_request_t *r);


ngx_int_t
ngx_http_gov_pay_store_unavailable(ngx_http_request_t *r)
{
    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_STORE_UNAVAILABLE,
                                       "the payment store is unavailable, "
                                       "retry later", NULL);
}


ngx_int_t
ngx_http_gov_pay_add_header(ngx_http_request_t *r, const char *name,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->value = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_has_csp(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash
            && h[i].key.len == sizeof("Content-Security-Policy") - 1
            && ngx_strncasecmp(h[i].key.data,
                               (u_char *) "Content-Security-Policy",
                               h[i].key.len)
               == 0)
        {
            return 1;
        }
    }
}


ngx_int_t
ngx_http_gov_pay_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *content_type, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_str_t     v;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_type.data = (u_char *) content_type;
    r->headers_out.content_type.len = ngx_strlen(content_type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = body->len;

    ngx_str_set(&v, "nosniff");
    if (ngx_http_gov_pay_add_header(r, "X-Content-Type-Options", &v)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&v, "no-referrer");
    if (ngx_http_gov_pay_add_header(r, "Referrer-Policy", &v) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* images set their own cache policy; nothing else may be cached */

    if (ngx_strncmp(content_type, "image/", 6) != 0) {
        ngx_str_set(&v, "no-store");
        if (ngx_http_gov_pay_add_header(r, "Cache-Control", &v) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* a page that set its own policy (a channel's hand-off form) keeps it */

    if (ngx_strncmp(content_type, "text/html", 9) == 0
        && !ngx_http_gov_pay_has_csp(r))
    {
        ngx_str_set(&v, "default-src 'none'; style-src 'unsafe-inline'; "
                        "img-src 'self' data:; form-action 'self'; "
                        "base-uri 'none'; frame-ancestors 'none'");
        if (ngx_http_gov_pay_add_header(r, "Content-Security-Policy", &v)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (r->method == NGX_HTTP_HEAD || body->len == 0) {
        r->header_only = (r->method == NGX_HTTP_HEAD) ? 1 : r->header_only;

        rc = ngx_http_send_header(r);

        if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
            return rc;
        }

        return ngx_http_send_special(r, NGX_HTTP_LAST);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_gov_pay_send_json(ngx_http_request_t *r, ngx_uint_t status,
    json_t *doc, const gp_unit_t *unit)
{
    size_t     len;
    ngx_str_t  body;

    len = json_dumpb(doc, NULL, 0, JSON_COMPACT);
    if (len == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.data = ngx_pnalloc(r->pool, len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = json_dumpb(doc, (char *) body.data, len, JSON_COMPACT);
    if (body.len != len) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_send_json_body(r, status, &body, unit);
}


/* a JSON body already written: signed for a unit, sent */

ngx_int_t
ngx_http_gov_pay_send_json_body(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *body, const gp_unit_t *unit)
{
    if (unit && ngx_http_gov_pay_sign_response(r, unit, body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_send(r, status, "application/json", body);
}


ngx_int_t
ngx_http_gov_pay_send_error(ngx_http_request_t *r, ngx_http_gov_pay_err_e err,
    const char *message, json_t *fields)
{
    json_t                  *doc;
    ngx_int_t                rc;
    ngx_str_t                v;
    ngx_http_gov_pay_ctx_t  *ctx;

    doc = json_pack("{s:{s:s,s:s}}", "error",
                    "code", ngx_http_gov_pay_errors[err].code,
                    "message", message);
    if (doc == NULL) {
        json_decref(fields);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (fields) {
        json_object_set_new(json_object_get(doc, "error"), "fields", fields);
    }

    if (err == NGX_HTTP_GOV_PAY_STORE_UNAVAILABLE) {
        ngx_str_set(&v, "1");
        if (ngx_http_gov_pay_add_header(r, "Retry-After", &v) != NGX_OK) {
            json_decref(doc);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);

    rc = ngx_http_gov_pay_send_json(r, ngx_http_gov_pay_errors[err].status,
                                    doc, ctx ? ctx->unit : NULL);
    json_decref(doc);

    return rc;
}


/*
 * A request body that must be one JSON object: the object, or NULL after
 * sending 400 BAD_REQUEST (*rc) with a message that says what is wrong:
 * jansson's own words for malformed JSON, a duplicate key, an integer out
 * of range, with line and column (printable ASCII only: the words may
 * quote the body), or "not a JSON object".
 */

json_t *
ngx_http_gov_pay_json_body(ngx_http_request_t *r, ngx_str_t *body,
    ngx_int_t *rc)
{
    u_char        msg[256], *p, *last;
    json_t       *req;
    const char   *c;
    json_error_t  jerr;

    /* U+0000 parses: the fields' rules refuse it with their own reasons */

    req = json_loadb((const char *) body->data, body->len,
                     JSON_REJECT_DUPLICATES|JSON_ALLOW_NUL, &jerr);

    if (req && json_is_object(req)) {
        return req;
    }

    if (req) {
        json_decref(req);
        *rc = ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_BAD_REQUEST,
                                          "the body is not a JSON object",
                                          NULL);
        return NULL;
    }

    p = msg;
    last = msg + sizeof(msg) - 1;

    p = ngx_slprintf(p, last, "the body is not valid JSON: ");

    for (c = jerr.text; *c && p < last; c++) {
        *p++ = (*c >= 0x20 && *c < 0x7f) ? *c : '?';
    }

    p = ngx_slprintf(p, last, " (line %d, column %d)", jerr.line,
                     jerr.column);
    *p = '\0';

    *rc = ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_BAD_REQUEST,
                                      (const char *) msg, NULL);
    return NULL;
}


u_char *
ngx_http_gov_pay_cstr(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p;

    p = ngx_pnalloc(pool, s->len + 1);
    if (p == NULL) {
        return NULL;
    }

    ngx_memcpy(p, s->data, s->len);
    p[s->len] = '\0';

    return p;
}


ngx_int_t
ngx_http_gov_pay_parse_code(ngx_http_gov_pay_main_conf_t *gpmcf,
    ngx_str_t *code, ngx_http_gov_pay_ctx_t *ctx)
{
    char      division[7];
    unsigned  yy;

    if (gp_code_parse(&gpmcf->code_key, (const char *) code->data, code->len,
                      (uint32_t) gpmcf->shards, division, &yy, &ctx->shard,
                      &ctx->seq)
        != 0)
    {
        return NGX_DECLINED;
    }

    ctx->code = *code;

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_key(ngx_pool_t *pool, ngx_str_t *key, uint32_t shard,
    const char *fmt, ...)
{
    u_char   *p, buf[512];
    va_list   args;

    p = ngx_snprintf(buf, sizeof(buf), "{gp%uD}:", shard);

    va_start(args, fmt);
    p = ngx_vslprintf(p, buf + sizeof(buf), fmt, args);
    va_end(args);

    key->len = p - buf;
    key->data = ngx_pnalloc(pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(key->data, buf, key->len);

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_reply_fields(ngx_http_request_t *r, redisReply *reply,
    size_t from, ngx_http_gov_pay_ctx_t *ctx)
{
    size_t      i, n;
    ngx_str_t   s, *f;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < from
        || (reply->elements - from) % 2)
    {
        return NGX_ERROR;
    }

    n = reply->elements - from;

    f = ngx_palloc(r->pool, (n + 1) * sizeof(ngx_str_t));
    if (f == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (reply->element[from + i]->type != REDIS_REPLY_STRING) {
            return NGX_ERROR;
        }

        s.data = (u_char *) reply->element[from + i]->str;
        s.len = reply->element[from + i]->len;

        f[i].data = ngx_http_gov_pay_cstr(r->pool, &s);
        if (f[i].data == NULL) {
            return NGX_ERROR;
        }

        f[i].len = s.len;
    }

    ctx->fields = f;
    ctx->nfields = n;

    return NGX_OK;
}


ngx_str_t *
ngx_http_gov_pay_field(ngx_http_gov_pay_ctx_t *ctx, const char *name)
{
    size_t      len;
    ngx_uint_t  i;

    len = ngx_strlen(name);

    for (i = 0; i + 1 < ctx->nfields; i += 2) {
        if (ctx->fields[i].len == len
            && ngx_strncmp(ctx->fields[i].data, name, len) == 0)
        {
            return &ctx->fields[i + 1];
        }
    }

    return NULL;
}


int64_t
ngx_http_gov_pay_field_int(ngx_http_gov_pay_ctx_t *ctx, const char *name)
{
    ngx_str_t  *v;

    v = ngx_http_gov_pay_field(ctx, name);
    if (v == NULL || v->len == 0) {
        return -1;
    }

    return ngx_atoof(v->data, v->len);
}


const char *
ngx_http_gov_pay_status(ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_str_t  *status;

    status = ngx_http_gov_pay_field(ctx, "status");
    if (status == NULL) {
        return "UNKNOWN";
    }

    if (status->len == 6 && ngx_strncmp(status->data, "UNPAID", 6) == 0
        && ngx_http_gov_pay_field_int(ctx, "due_at") < (int64_t) ngx_time())
    {
        return "EXPIRED";
    }

    return (const char *) status->data;
}


/*
 * Reads a notice by payment code for a public route: NGX_DECLINED for a
 * malformed code or a bad check digit (never looked up); otherwise what
 * ngx_http_gov_pay_query() returns (next gets the HGETALL reply).
 */

ngx_int_t
ngx_http_gov_pay_notice_lookup(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_str_t *code,
    ngx_http_gov_pay_reply_pt next)
{
    ngx_str_t                     *argv;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ngx_http_gov_pay_parse_code(gpmcf, code, ctx) != NGX_OK) {
        return NGX_DECLINED;
    }

    argv = ngx_palloc(r->pool, 2 * sizeof(ngx_str_t));
    if (argv == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&argv[0], "HGETALL");

    if (ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "n:%uL",
                             ctx->seq)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_query(r, -1, 0, 2, argv, next);
}


/*
 * The reply of that lookup: NGX_OK with ctx->fields set, NGX_DECLINED when
 * there is no such notice (or the code's division or year is not the
 * notice's), NGX_AGAIN when the store failed.
 */

ngx_int_t
ngx_http_gov_pay_notice_found(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    ngx_str_t  *division, *yy;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return NGX_AGAIN;
    }

    if (ngx_http_gov_pay_reply_fields(r, reply, 0, ctx) != NGX_OK
        || ctx->nfields == 0
        || (division = ngx_http_gov_pay_field(ctx, "division")) == NULL
        || (yy = ngx_http_gov_pay_field(ctx, "yy")) == NULL
        || division->len != 6 || yy->len != 2
        || ngx_strncmp(division->data, ctx->code.data, 6) != 0
        || ngx_strncmp(yy->data, ctx->code.data + 6, 2) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static json_t *
ngx_http_gov_pay_json_time(int64_t t)
{
    char  buf[26];

    gp_time_rfc3339(t, buf);

    return json_string(buf);
}


static json_t *
ngx_http_gov_pay_json_str(ngx_str_t *s)
{
    return json_stringn((const char *) s->data, s->len);
}


/* "name":"value" (the value escaped as jansson would), with a comma before */

static u_char *
ngx_http_gov_pay_json_pair(u_char *p, const char *name, ngx_str_t *value)
{
    p = ngx_sprintf(p, ",\"%s\":\"", name);
    p += gp_json_escape((const char *) value->data, value->len, (char *) p);
    *p++ = '"';

    return p;
}


/*
 * The notice as units see it, written directly (no jansson tree): the same
 * bytes as json_dumpb(ngx_http_gov_pay_notice_json(), JSON_COMPACT), with
 * doc.payer = {type, name, id_no} after it when payer is given (the
 * creating unit's GET).  NGX_DECLINED for a notice with refunds: its
 * answer is built with ngx_http_gov_pay_notice_json().
 */

ngx_int_t
ngx_http_gov_pay_notice_body(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *payer, ngx_str_t *body)
{
    char         due[26], created[26], paid[26];
    u_char      *p, *url;
    size_t       len, ulen;
    ngx_str_t   *v[10], *refunds;
    ngx_uint_t   i;
    const char  *status;

    static const char  *strs[] = {
        "unit", "request_id", "item_code", "remark", "channel",
        "channel_trade_no", "receipt_code", "receipt_number",
        "receipt_check", "paid_at"
    };

    refunds = ngx_http_gov_pay_field(ctx, "refunds");

    if (refunds && refunds->len >= 2) {
        return NGX_DECLINED;
    }

    /* the strings written must be UTF-8, as jansson would insist */

    status = ngx_http_gov_pay_status(ctx);

    len = sizeof("{\"payment_code\":\"\",\"status\":\"\",\"pay_url\":\"\","
                 "\"qr_image_url\":\"\",\"amount\":,\"due_at\":\"\","
                 "\"created_at\":\"\",\"payment\":{\"paid_at\":\"\","
                 "\"amount\":},\"receipt\":{\"code\":\"\",\"number\":\"\","
                 "\"check_code\":\"\",\"verify_url\":\"\"},\"payer\":{}}")
          + GP_JSON_ESCAPED_MAX(3 * gpmcf->public_url.len
                                + 3 * ctx->code.len + ngx_strlen(status))
          + sizeof("/q/.svg/q//r//?c=") + 2 * NGX_INT64_LEN + 3 * 26;

    for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        v[i] = ngx_http_gov_pay_field(ctx, strs[i]);

        if (v[i] == NULL) {
            continue;
        }

        if (!gp_utf8_valid((const char *) v[i]->data, v[i]->len, NULL)) {
            return NGX_ERROR;
        }

        len += sizeof(",\"\":\"\"") + ngx_strlen(strs[i])
               + 2 * GP_JSON_ESCAPED_MAX(v[i]->len);
    }

    for (i = 0; payer && i < 3; i++) {
        if (!gp_utf8_valid((const char *) payer[i].data, payer[i].len,
                           NULL))
        {
            return NGX_ERROR;
        }

        len += sizeof(",\"id_no\":\"\"") + GP_JSON_ESCAPED_MAX(payer[i].len);
    }

    body->data = ngx_pnalloc(r->pool, len);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(body->data, "{\"payment_code\":\"",
                   sizeof("{\"payment_code\":\"") - 1);
    p += gp_json_escape((const char *) ctx->code.data, ctx->code.len,
                        (char *) p);
    p = ngx_cpymem(p, "\",\"status\":\"", sizeof("\",\"status\":\"") - 1);
    p += gp_json_escape(status, ngx_strlen(status), (char *) p);
    p = ngx_cpymem(p, "\",\"pay_url\":\"", sizeof("\",\"pay_url\":\"") - 1);
    p += gp_json_escape((const char *) gpmcf->public_url.data,
                        gpmcf->public_url.len, (char *) p);
    p = ngx_cpymem(p, "/q/", 3);
    p += gp_json_escape((const char *) ctx->code.data, ctx->code.len,
                        (char *) p);
    p = ngx_cpymem(p, "\",\"qr_image_url\":\"",
                   sizeof("\",\"qr_image_url\":\"") - 1);
    p += gp_json_escape((const char *) gpmcf->public_url.data,
                        gpmcf->public_url.len, (char *) p);
    p = ngx_cpymem(p, "/q/", 3);
    p += gp_json_escape((const char *) ctx->code.data, ctx->code.len,
                        (char *) p);
    p = ngx_cpymem(p, ".svg\"", 5);

    for (i = 0; i < 3; i++) {
        if (v[i]) {
            p = ngx_http_gov_pay_json_pair(p, strs[i], v[i]);
        }
    }

    gp_time_rfc3339(ngx_http_gov_pay_field_int(ctx, "due_at"), due);
    gp_time_rfc3339(ngx_http_gov_pay_field_int(ctx, "created_at"), created);

    p = ngx_sprintf(p, ",\"amount\":%L,\"due_at\":\"%s\","
                    "\"created_at\":\"%s\"",
                    ngx_http_gov_pay_field_int(ctx, "amount"), due, created);

    if (v[3]) {
        p = ngx_http_gov_pay_json_pair(p, "remark", v[3]);
    }

    /* paid: by which channel, which trade number, when, how much */

    if (v[4]) {
        gp_time_rfc3339(ngx_http_gov_pay_field_int(ctx, "paid_at"), paid);

        p = ngx_cpymem(p, ",\"payment\":{\"channel\":\"",
                       sizeof(",\"payment\":{\"channel\":\"") - 1);
        p += gp_json_escape((const char *) v[4]->data, v[4]->len, (char *) p);
        p = ngx_cpymem(p, "\",\"channel_trade_no\":\"",
                       sizeof("\",\"channel_trade_no\":\"") - 1);
        p += gp_json_escape((const char *) (v[5] ? v[5] : v[4])->data,
                            (v[5] ? v[5] : v[4])->len, (char *) p);
        p = ngx_sprintf(p, "\",\"paid_at\":\"%s\",\"amount\":%L}", paid,
                        ngx_http_gov_pay_field_int(ctx, "paid_amount"));
    }

    /* receipted: the receipt and where to verify it */

    if (v[6] && v[7] && v[8]) {
        ulen = gpmcf->public_url.len + sizeof("/r//?c=") - 1 + v[6]->len
               + v[7]->len + v[8]->len;

        if (ulen > 511) {
            /* notice_json cuts such a URL at 511 bytes: let it */
            return NGX_DECLINED;
        }

        url = ngx_pnalloc(r->pool, ulen);
        if (url == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf(url, "%V/r/%V/%V?c=%V", &gpmcf->public_url, v[6], v[7],
                    v[8]);

        p = ngx_cpymem(p, ",\"receipt\":{\"code\":\"",
                       sizeof(",\"receipt\":{\"code\":\"") - 1);
        p += gp_json_escape((const char *) v[6]->data, v[6]->len, (char *) p);
        p = ngx_cpymem(p, "\",\"number\":\"", sizeof("\",\"number\":\"") - 1);
        p += gp_json_escape((const char *) v[7]->data, v[7]->len, (char *) p);
        p = ngx_cpymem(p, "\",\"check_code\":\"",
                       sizeof("\",\"check_code\":\"") - 1);
        p += gp_json_escape((const char *) v[8]->data, v[8]->len, (char *) p);
        p = ngx_cpymem(p, "\",\"verify_url\":\"",
                       sizeof("\",\"verify_url\":\"") - 1);
        p += gp_json_escape((const char *) url, ulen, (char *) p);
        p = ngx_cpymem(p, "\"}", 2);
    }

    if (payer) {
        p = ngx_cpymem(p, ",\"payer\":{\"type\":\"",
                       sizeof(",\"payer\":{\"type\":\"") - 1);
        p += gp_json_escape((const char *) payer[0].data, payer[0].len,
                            (char *) p);
        p = ngx_cpymem(p, "\",\"name\":\"", sizeof("\",\"name\":\"") - 1);
        p += gp_json_escape((const char *) payer[1].data, payer[1].len,
                            (char *) p);
        p = ngx_cpymem(p, "\",\"id_no\":\"", sizeof("\",\"id_no\":\"") - 1);
        p += gp_json_escape((const char *) payer[2].data, payer[2].len,
                            (char *) p);
        p = ngx_cpymem(p, "\"}", 2);
    }

    *p++ = '}';

    body->len = p - body->data;

    return NGX_OK;
}


json_t *
ngx_http_gov_pay_notice_json(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    u_char      *p, url[512];
    json_t      *doc, *sub;
    ngx_str_t   *v, *code, *number, *check;
    ngx_uint_t   failed;

    doc = json_object();
    if (doc == NULL) {
        return NULL;
    }

    p = ngx_snprintf(url, sizeof(url), "%V/q/%V", &gpmcf->public_url,
                     &ctx->code);

    if (json_object_set_new(doc, "payment_code",
                            ngx_http_gov_pay_json_str(&ctx->code))
        || json_object_set_new(doc, "status",
                               json_string(ngx_http_gov_pay_status(ctx)))
        || json_object_set_new(doc, "pay_url",
                               json_stringn((char *) url, p - url)))
    {
        goto failed;
    }

    p = ngx_snprintf(url, sizeof(url), "%V/q/%V.svg", &gpmcf->public_url,
                     &ctx->code);

    if (json_object_set_new(doc, "qr_image_url",
                            json_stringn((char *) url, p - url)))
    {
        goto failed;
    }

    if ((v = ngx_http_gov_pay_field(ctx, "unit"))
        && json_object_set_new(doc, "unit", ngx_http_gov_pay_json_str(v)))
    {
        goto failed;
    }

    if ((v = ngx_http_gov_pay_field(ctx, "request_id"))
        && json_object_set_new(doc, "request_id",
                               ngx_http_gov_pay_json_str(v)))
    {
        goto failed;
    }

    if ((v = ngx_http_gov_pay_field(ctx, "item_code"))
        && json_object_set_new(doc, "item_code",
                               ngx_http_gov_pay_json_str(v)))
    {
        goto failed;
    }

    if (json_object_set_new(doc, "amount",
            json_integer(ngx_http_gov_pay_field_int(ctx, "amount")))
        || json_object_set_new(doc, "due_at",
            ngx_http_gov_pay_json_time(
                ngx_http_gov_pay_field_int(ctx, "due_at")))
        || json_object_set_new(doc, "created_at",
            ngx_http_gov_pay_json_time(
                ngx_http_gov_pay_field_int(ctx, "created_at"))))
    {
        goto failed;
    }

    if ((v = ngx_http_gov_pay_field(ctx, "remark"))
        && json_object_set_new(doc, "remark", ngx_http_gov_pay_json_str(v)))
    {
        goto failed;
    }

    if ((v = ngx_http_gov_pay_field(ctx, "channel"))) {
        sub = json_object();
        if (sub == NULL || json_object_set_new(doc, "payment", sub)) {
            goto failed;
        }

        if (json_object_set_new(sub, "channel", ngx_http_gov_pay_json_str(v))
            || json_object_set_new(sub, "channel_trade_no",
                   ngx_http_gov_pay_json_str(
                       ngx_http_gov_pay_field(ctx, "channel_trade_no")
                       ? ngx_http_gov_pay_field(ctx, "channel_trade_no")
                       : v))
            || json_object_set_new(sub, "paid_at",
                   ngx_http_gov_pay_json_time(
                       ngx_http_gov_pay_field_int(ctx, "paid_at")))
            || json_object_set_new(sub, "amount",
                   json_integer(
                       ngx_http_gov_pay_field_int(ctx, "paid_amount"))))
        {
            goto failed;
        }
    }

    /* refunds: what came back, and each refund */

    sub = ngx_http_gov_pay_refunds_json(r, ctx, &failed);

    if (failed) {
        goto failed;
    }

    if (sub) {
        if (json_object_set_new(doc, "refunds", sub)
            || json_object_set_new(doc, "refunded_amount",
                   json_integer(ngx_http_gov_pay_field_int(ctx,
                                                      "refunded_amount") < 0
                                ? 0
                                : ngx_http_gov_pay_field_int(ctx,
                                                      "refunded_amount"))))
        {
            goto failed;
        }
    }

    code = ngx_http_gov_pay_field(ctx, "receipt_code");
    number = ngx_http_gov_pay_field(ctx, "receipt_number");
    check = ngx_http_gov_pay_field(ctx, "receipt_check");

    if (code && number && check) {
        sub = json_object();
        if (sub == NULL || json_object_set_new(doc, "receipt", sub)) {
            goto failed;
        }

        p = ngx_snprintf(url, sizeof(url), "%V/r/%V/%V?c=%V",
                         &gpmcf->public_url, code, number, check);

        if (json_object_set_new(sub, "code", ngx_http_gov_pay_json_str(code))
            || json_object_set_new(sub, "number",
                                   ngx_http_gov_pay_json_str(number))
            || json_object_set_new(sub, "check_code",
                                   ngx_http_gov_pay_json_str(check))
            || json_object_set_new(sub, "verify_url",
                                   json_stringn((char *) url, p - url)))
        {
            goto failed;
        }
    }

    /*
     * every receipt of the notice once one was reversed (a refund): a JSON
     * array kept by the receipt plugin (docs/receipts.md), shown as it is
     */

    v = ngx_http_gov_pay_field(ctx, "receipts");

    if (v != NULL) {
        sub = json_loadb((char *) v->data, v->len, 0, NULL);

        if (!json_is_array(sub)) {
            json_decref(sub);
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "gov_pay: the receipt history of notice %V "
                          "is not a JSON array", &ctx->code);

        } else if (json_object_set_new(doc, "receipts", sub)) {
            goto failed;
        }
    }

    return doc;

failed:

    json_decref(doc);
    return NULL;
}
