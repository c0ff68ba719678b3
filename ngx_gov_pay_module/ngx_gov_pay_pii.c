
/*
 * ngx_gov_pay_pii.c: the payer's name and ID number at rest.
 *
 * A create stores, instead of the payer's name and ID number, their masked
 * forms (what the pages show: 张*, 3301**********1234) and their sealed forms
 * (SM4-GCM, common/gp_seal.c) under the first key of gov_pay_pii_key, each
 * bound to its field and to the notice (unit, request_id, created_at).  The
 * module opens them in one place only: the creating unit's
 * GET /v1/notices/{code}.  The cashier and paid pages, the open per-item
 * code and the bank's view show the masked forms and never open anything.
 *
 * The receipt plugin stores each receipt's document and PDF (they name the
 * payer in full) sealed the same way, bound to the receipt (field
 * "receipt_doc" or "receipt_pdf", the EInvoiceCode as the unit, the
 * EInvoiceNumber as the request_id, created_at 0); /r/ opens them
 * (ngx_http_gov_pay_pii_open_receipt).
 *
 * The key file is read at configuration time (nginx -t checks it); a reload
 * reads it again, which is how keys rotate (docs/internals.md).
 */


#include "ngx_gov_pay_module.h"


static ngx_int_t ngx_http_gov_pay_pii_push(ngx_http_request_t *r,
    ngx_str_t *argv, ngx_uint_t *n, ngx_uint_t max, const char *name,
    u_char *value, size_t len);
static ngx_int_t ngx_http_gov_pay_pii_open(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    gp_seal_ctx_t *sc, const char *field, ngx_str_t *out);
static void ngx_http_gov_pay_pii_cleanup(void *data);


ngx_int_t
ngx_http_gov_pay_pii_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    char                 err[512];
    u_char              *p;
    ngx_pool_cleanup_t  *cln;

    if (gpmcf->pii_key_file.len == 0) {
        if (gpmcf->api_route) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gov_pay: \"gov_pay_api\" needs "
                               "\"gov_pay_pii_key\": the payer's name and ID "
                               "number are stored sealed under its keys");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    if (gp_seal_init(err, sizeof(err)) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_pii_key\": %s", err);
        return NGX_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &gpmcf->pii_key_file, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    p = ngx_http_gov_pay_cstr(cf->pool, &gpmcf->pii_key_file);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (gp_seal_keys_load((char *) p, &gpmcf->pii_keys, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_pii_key\": %s", err);
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        gp_seal_keys_free(gpmcf->pii_keys);
        gpmcf->pii_keys = NULL;
        return NGX_ERROR;
    }

    cln->handler = ngx_http_gov_pay_pii_cleanup;
    cln->data = gpmcf->pii_keys;

    return NGX_OK;
}


/*
 * payer_name_masked, payer_id_masked, payer_name_sealed, payer_id_sealed:
 * what a create stores instead of the payer's name and ID number
 */

ngx_int_t
ngx_http_gov_pay_pii_seal_payer(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, const char *unit,
    const char *request_id, int64_t created_at, const char *name,
    const char *id_no, ngx_str_t *argv, ngx_uint_t *n, ngx_uint_t max)
{
    int             len;
    size_t          nlen, ilen, slen;
    u_char         *buf;
    ngx_uint_t      i;
    gp_seal_rc_t    rc;
    gp_seal_ctx_t   sc;
    const char     *field, *value, *masked, *sealed;

    static const char  *fields[2] = { "payer_name", "payer_id" };

    nlen = ngx_strlen(name);
    ilen = ngx_strlen(id_no);

    sc.unit = unit;
    sc.request_id = request_id;
    sc.created_at = created_at;

    for (i = 0; i < 2; i++) {
        field = fields[i];
        value = i ? id_no : name;
        slen = i ? ilen : nlen;
        masked = i ? "payer_id_masked" : "payer_name_masked";
        sealed = i ? "payer_id_sealed" : "payer_name_sealed";

        /* masking never makes a value longer */

        buf = ngx_pnalloc(r->pool, slen + 1);
        if (buf == NULL) {
            return NGX_ERROR;
        }

        len = i ? gp_mask_id(value, slen, (char *) buf, slen + 1)
                : gp_mask_name(value, slen, (char *) buf, slen + 1);

        if (len < 0
            || ngx_http_gov_pay_pii_push(r, argv, n, max, masked, buf, len)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        buf = ngx_pnalloc(r->pool, GP_SEAL_RECORD_MAX(slen));
        if (buf == NULL) {
            return NGX_ERROR;
        }

        sc.field = field;

        rc = gp_seal(gpmcf->pii_keys, &sc, value, slen, (char *) buf,
                     GP_SEAL_RECORD_MAX(slen), &slen);

        if (rc != GP_SEAL_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "gov_pay: sealing the %s of request_id \"%s\" of "
                          "unit %s failed: %s", field, request_id, unit,
                          gp_seal_strerror(rc));
            return NGX_ERROR;
        }

        if (ngx_http_gov_pay_pii_push(r, argv, n, max, sealed, buf, slen)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_pii_push(ngx_http_request_t *r, ngx_str_t *argv,
    ngx_uint_t *n, ngx_uint_t max, const char *name, u_char *value,
    size_t len)
{
    if (*n + 2 > max) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "gov_pay: too many notice fields for the create "
                      "script");
        return NGX_ERROR;
    }

    argv[*n].data = (u_char *) name;
    argv[*n].len = ngx_strlen(name);
    argv[*n + 1].data = value;
    argv[*n + 1].len = len;
    *n += 2;

    return NGX_OK;
}


/*
 * The creating unit's view of its notice: "payer": {"type", "name",
 * "id_no"} in full.  NGX_OK; NGX_DECLINED when a sealed field does not open
 * (logged, naming the notice and why, never a value); NGX_ERROR.
 */

ngx_int_t
ngx_http_gov_pay_pii_payer(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *payer)
{
    ngx_int_t       rc;
    ngx_str_t      *unit, *request_id, *type;
    gp_seal_ctx_t   sc;

    unit = ngx_http_gov_pay_field(ctx, "unit");
    request_id = ngx_http_gov_pay_field(ctx, "request_id");
    type = ngx_http_gov_pay_field(ctx, "payer_type");

    if (unit == NULL || request_id == NULL || type == NULL
        || ngx_strlen(unit->data) != unit->len
        || ngx_strlen(request_id->data) != request_id->len)
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: notice %V has no unit, request_id or "
                      "payer_type: its payer cannot be opened", &ctx->code);
        return NGX_DECLINED;
    }

    sc.unit = (const char *) unit->data;
    sc.request_id = (const char *) request_id->data;
    sc.created_at = ngx_http_gov_pay_field_int(ctx, "created_at");

    payer[0] = *type;
    payer[1].len = 0;
    payer[2].len = 0;

    rc = ngx_http_gov_pay_pii_open(r, gpmcf, ctx, &sc, "payer_name",
                                   &payer[1]);

    if (rc == NGX_OK) {
        rc = ngx_http_gov_pay_pii_open(r, gpmcf, ctx, &sc, "payer_id",
                                       &payer[2]);
    }

    if (rc != NGX_OK) {
        ngx_http_gov_pay_pii_wipe(payer);
    }

    return rc;
}


/* the clear copies live no longer than needed */

void
ngx_http_gov_pay_pii_wipe(ngx_str_t *payer)
{
    if (payer[1].len) {
        ngx_explicit_memzero(payer[1].data, payer[1].len);
    }

    if (payer[2].len) {
        ngx_explicit_memzero(payer[2].data, payer[2].len);
    }
}


ngx_int_t
ngx_http_gov_pay_pii_payer_json(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    json_t *doc)
{
    json_t     *obj;
    ngx_int_t   rc;
    ngx_str_t   payer[3];

    rc = ngx_http_gov_pay_pii_payer(r, gpmcf, ctx, payer);
    if (rc != NGX_OK) {
        return rc;
    }

    obj = json_object();

    if (obj == NULL
        || json_object_set_new(doc, "payer", obj) != 0
        || json_object_set_new(obj, "type",
               json_stringn((char *) payer[0].data, payer[0].len)) != 0
        || json_object_set_new(obj, "name",
               json_stringn((char *) payer[1].data, payer[1].len)) != 0
        || json_object_set_new(obj, "id_no",
               json_stringn((char *) payer[2].data, payer[2].len)) != 0)
    {
        rc = NGX_ERROR;
    }

    /* jansson keeps its own copies */

    ngx_http_gov_pay_pii_wipe(payer);

    return rc;
}


static ngx_int_t
ngx_http_gov_pay_pii_open(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    gp_seal_ctx_t *sc, const char *field, ngx_str_t *out)
{
    char           kid[GP_SEAL_KID_MAX + 1];
    size_t         n;
    u_char         key[32];
    ngx_uint_t     level;
    ngx_str_t     *rec;
    gp_seal_rc_t   rc;

    ngx_sprintf(key, "%s_sealed%Z", field);

    rec = ngx_http_gov_pay_field(ctx, (const char *) key);

    if (rec == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: notice %V has no %s", &ctx->code, key);
        return NGX_DECLINED;
    }

    out->data = ngx_pnalloc(r->pool, rec->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    sc->field = field;

    rc = gp_seal_open(gpmcf->pii_keys, sc, (const char *) rec->data,
                      rec->len, (char *) out->data, rec->len + 1, &n);

    if (rc != GP_SEAL_OK) {
        if (gp_seal_record_kid((const char *) rec->data, rec->len, kid)
            != 0)
        {
            ngx_cpystrn((u_char *) kid, (u_char *) "?", sizeof(kid));
        }

        level = (rc == GP_SEAL_ERROR) ? NGX_LOG_ALERT : NGX_LOG_ERR;

        ngx_log_error(level, r->connection->log, 0,
                      "gov_pay: the %s of notice %V does not open "
                      "(key id \"%s\"): %s", key, &ctx->code, kid,
                      gp_seal_strerror(rc));

        out->len = 0;
        return rc == GP_SEAL_ERROR ? NGX_ERROR : NGX_DECLINED;
    }

    out->len = n;

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_pii_open_receipt(ngx_http_request_t *r, const char *field,
    const char *code, const char *number, const char *rec, size_t len,
    ngx_str_t *out)
{
    char                           kid[GP_SEAL_KID_MAX + 1];
    size_t                         n;
    ngx_uint_t                     level;
    gp_seal_rc_t                   rc;
    gp_seal_ctx_t                  sc;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    out->len = 0;

    if (gpmcf->pii_keys == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: receipt %s/%s cannot be opened: no "
                      "gov_pay_pii_key", code, number);
        return NGX_DECLINED;
    }

    out->data = ngx_pnalloc(r->pool, len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    sc.field = field;
    sc.unit = code;
    sc.request_id = number;
    sc.created_at = 0;

    rc = gp_seal_open(gpmcf->pii_keys, &sc, rec, len, (char *) out->data,
                      len + 1, &n);

    if (rc != GP_SEAL_OK) {
        if (gp_seal_record_kid(rec, len, kid) != 0) {
            ngx_cpystrn((u_char *) kid, (u_char *) "?", sizeof(kid));
        }

        level = (rc == GP_SEAL_ERROR) ? NGX_LOG_ALERT : NGX_LOG_ERR;

        ngx_log_error(level, r->connection->log, 0,
                      "gov_pay: the %s of receipt %s/%s does not open "
                      "(key id \"%s\"): %s", field, code, number, kid,
                      gp_seal_strerror(rc));

        return rc == GP_SEAL_ERROR ? NGX_ERROR : NGX_DECLINED;
    }

    out->len = n;

    return NGX_OK;
}


static void
ngx_http_gov_pay_pii_cleanup(void *data)
{
    gp_seal_keys_free(data);
}
