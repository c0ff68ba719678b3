
/*
 * ngx_gov_pay_receipt.c: receipt verification (查验), public.
 *
 *   GET /r/{EInvoiceCode}/{EInvoiceNumber}?c={RandomNumber}[&format=pdf]
 *
 * One HMGET of the receipt record {gpr}:r:<code>:<number> (written by the
 * receipt plugin, docs/receipts.md) on the module's non-blocking client;
 * the check code is compared in constant time, and a wrong one answers the
 * same 404 as an unknown receipt, so the page is no oracle. The seal is
 * verified with the issuer's public key named by its key serial
 * (gov_pay_receipt_key); one SM2 verification is about 0.4 ms of CPU, cheap
 * enough for the event loop (the PDF is rendered by the worker at issue
 * time, never here). HTML for browsers (conf/templates/receipt.html in the
 * layout of every payer page), JSON for Accept: application/json, the stored
 * PDF with format=pdf; the payer's name and ID are masked. A receipt that a
 * red-letter receipt reversed (its record's reversed_by) says so, and names
 * it. The record's document and PDF are sealed under the pii keys (they name
 * the payer in full): opened here (ngx_gov_pay_pii.c); one that does not
 * open answers 503, logged with the receipt's code and number. The JSON
 * offers the document's exact bytes (document_b64) and the seal's value, so
 * an auditor verifies the seal from the page alone (docs/receipts.md).
 */


#include "ngx_gov_pay_module.h"
#include "ngx_gov_pay_template.h"

#include <openssl/crypto.h>


#define NGX_HTTP_GOV_PAY_RECEIPT_HTML  0
#define NGX_HTTP_GOV_PAY_RECEIPT_JSON  1
#define NGX_HTTP_GOV_PAY_RECEIPT_PDF   2


typedef struct {
    gp_sigalg_t                alg;
    ngx_str_t                  serial;
    EVP_PKEY                  *pkey;
} ngx_http_gov_pay_receipt_key_t;


static ngx_int_t ngx_http_gov_pay_receipt_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_receipt_not_found(ngx_http_request_t *r,
    ngx_uint_t format);
static ngx_int_t ngx_http_gov_pay_receipt_unavailable(ngx_http_request_t *r,
    ngx_uint_t format);
static ngx_int_t ngx_http_gov_pay_receipt_verify(ngx_http_request_t *r,
    json_t *seal, ngx_str_t *doc);
static json_t *ngx_http_gov_pay_receipt_json(json_t *doc, json_t *seal,
    ngx_int_t valid, const char *kind, const char *rev, ngx_str_t *bytes);
static ngx_int_t ngx_http_gov_pay_receipt_page(ngx_http_request_t *r,
    json_t *doc, json_t *seal, ngx_int_t valid, ngx_str_t *check,
    const char *rev);
static ngx_int_t ngx_http_gov_pay_receipt_tvar(ngx_http_request_t *r,
    ngx_array_t *vars, const char *name, json_t *value);
static ngx_uint_t ngx_http_gov_pay_receipt_wants_json(ngx_http_request_t *r);
static void ngx_http_gov_pay_receipt_key_cleanup(void *data);


ngx_int_t
ngx_http_gov_pay_receipt_handler(ngx_http_request_t *r)
{
    char                     code[9], number[11];
    ngx_int_t                rc;
    ngx_str_t                check, fmt, argv[8];
    ngx_uint_t               argc, format;
    ngx_http_gov_pay_ctx_t  *ctx;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    format = ngx_http_gov_pay_receipt_wants_json(r)
             ? NGX_HTTP_GOV_PAY_RECEIPT_JSON : NGX_HTTP_GOV_PAY_RECEIPT_HTML;

    if (ngx_http_arg(r, (u_char *) "format", 6, &fmt) == NGX_OK) {
        if (fmt.len == 3 && ngx_strncmp(fmt.data, "pdf", 3) == 0) {
            format = NGX_HTTP_GOV_PAY_RECEIPT_PDF;

        } else if (fmt.len == 4 && ngx_strncmp(fmt.data, "json", 4) == 0) {
            format = NGX_HTTP_GOV_PAY_RECEIPT_JSON;
        }
    }

    ctx->route = format;

    /* /r/ + 8 digits + / + 10 digits, ?c= 6 of 0-9 a-z (common/gp_util.c) */

    if (ngx_http_arg(r, (u_char *) "c", 1, &check) != NGX_OK) {
        ngx_str_null(&check);
    }

    if (gp_receipt_ref_parse((const char *) r->uri.data, r->uri.len,
                             (const char *) check.data, check.len, code,
                             number)
        != 0)
    {
        return ngx_http_gov_pay_receipt_not_found(r, format);
    }

    ctx->check = check;         /* not ctx->code: that one reaches logs */

    /* ngx_str_set() is a macro that names its argument twice */

    ngx_str_set(&argv[0], "HMGET");

    argv[1].len = sizeof("{gpr}:r::") - 1 + 8 + 10;
    argv[1].data = ngx_pnalloc(r->pool, argv[1].len);
    if (argv[1].data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(argv[1].data, "{gpr}:r:%s:%s", code, number);

    ngx_str_set(&argv[2], "check");
    ngx_str_set(&argv[3], "doc");
    ngx_str_set(&argv[4], "seal");
    ngx_str_set(&argv[5], "kind");
    ngx_str_set(&argv[6], "reversed_by");
    ngx_str_set(&argv[7], "pdf");

    argc = (format == NGX_HTTP_GOV_PAY_RECEIPT_PDF) ? 8 : 7;

    return ngx_http_gov_pay_query(r, -1, 0, argc, argv,
                                  ngx_http_gov_pay_receipt_done);
}


static ngx_int_t
ngx_http_gov_pay_receipt_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    char                *rev, code[9], number[11];
    json_t              *doc, *seal, *view;
    ngx_int_t            rc, valid;
    ngx_str_t            body, bytes;
    redisReply         **e;
    json_error_t         jerr;

    doc = NULL;
    seal = NULL;
    view = NULL;
    bytes.len = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 5)
    {
        return (ctx->route == NGX_HTTP_GOV_PAY_RECEIPT_HTML)
               ? ngx_http_gov_pay_unavailable_page(r)
               : ngx_http_gov_pay_send_error(r,
                                         NGX_HTTP_GOV_PAY_STORE_UNAVAILABLE,
                                         "the receipt store is unavailable, "
                                         "retry later", NULL);
    }

    e = reply->element;

    /* an unknown receipt and a wrong check code answer the same */

    if (e[0]->type != REDIS_REPLY_STRING || e[1]->type != REDIS_REPLY_STRING
        || e[2]->type != REDIS_REPLY_STRING || e[0]->len != 6
        || CRYPTO_memcmp(e[0]->str, ctx->check.data, 6) != 0)
    {
        return ngx_http_gov_pay_receipt_not_found(r, ctx->route);
    }

    /* checked in the handler: the same URI and check code */
    if (gp_receipt_ref_parse((const char *) r->uri.data, r->uri.len,
                             (const char *) ctx->check.data, ctx->check.len,
                             code, number)
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the document as it was sealed, opened from its pii seal */
    rc = ngx_http_gov_pay_pii_open_receipt(r, "receipt_doc", code, number,
                                           e[1]->str, e[1]->len, &bytes);
    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc != NGX_OK) {
        return ngx_http_gov_pay_receipt_unavailable(r, ctx->route);
    }

    doc = json_loadb((char *) bytes.data, bytes.len, 0, &jerr);
    seal = json_loadb(e[2]->str, e[2]->len, 0, &jerr);

    if (doc == NULL || seal == NULL || !json_is_object(doc)
        || !json_is_object(seal))
    {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: receipt record \"%V\" does not parse",
                      &r->uri);
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    valid = ngx_http_gov_pay_receipt_verify(r, seal, &bytes);

    if (ctx->route == NGX_HTTP_GOV_PAY_RECEIPT_PDF) {

        if (valid != 1 || reply->elements < 6
            || e[5]->type != REDIS_REPLY_STRING)
        {
            rc = ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_INVALID_STATE,
                                             valid == 1
                                             ? "the printable receipt is not "
                                               "ready yet, retry later"
                                             : "the receipt's seal does not "
                                               "verify: no PDF is served",
                                             NULL);
            goto done;
        }

        rc = ngx_http_gov_pay_pii_open_receipt(r, "receipt_pdf", code,
                                               number, e[5]->str, e[5]->len,
                                               &body);
        if (rc != NGX_OK) {
            rc = (rc == NGX_ERROR)
                 ? NGX_HTTP_INTERNAL_SERVER_ERROR
                 : ngx_http_gov_pay_receipt_unavailable(r, ctx->route);
            goto done;
        }

        rc = ngx_http_gov_pay_send(r, NGX_HTTP_OK, "application/pdf", &body);
        goto done;
    }

    /* a receipt reversed by a red-letter one: "<code>/<number>" of that */

    rev = (e[4]->type == REDIS_REPLY_STRING && e[4]->len == 19
           && e[4]->str[8] == '/') ? e[4]->str : NULL;

    if (ctx->route == NGX_HTTP_GOV_PAY_RECEIPT_HTML) {
        rc = ngx_http_gov_pay_receipt_page(r, doc, seal, valid, &ctx->check,
                                           rev);
        goto done;
    }

    view = ngx_http_gov_pay_receipt_json(doc, seal, valid,
                                         e[3]->type == REDIS_REPLY_STRING
                                         ? e[3]->str : "blue", rev, &bytes);
    if (view == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    rc = ngx_http_gov_pay_send_json(r, NGX_HTTP_OK, view, NULL);

done:

    json_decref(view);
    json_decref(doc);
    json_decref(seal);

    if (bytes.len) {
        ngx_explicit_memzero(bytes.data, bytes.len);
    }

    return rc;
}


/* a record that does not open (a key no longer listed, altered): 503 */
static ngx_int_t
ngx_http_gov_pay_receipt_unavailable(ngx_http_request_t *r,
    ngx_uint_t format)
{
    if (format == NGX_HTTP_GOV_PAY_RECEIPT_HTML) {
        return ngx_http_gov_pay_unavailable_page(r);
    }

    return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_STORE_UNAVAILABLE,
                                       "the receipt cannot be read now, "
                                       "retry later", NULL);
}


/* the same page for a malformed URL, an unknown receipt, a wrong check code */
static ngx_int_t
ngx_http_gov_pay_receipt_not_found(ngx_http_request_t *r, ngx_uint_t format)
{
    if (format == NGX_HTTP_GOV_PAY_RECEIPT_JSON) {
        return ngx_http_gov_pay_send_error(r, NGX_HTTP_GOV_PAY_NOT_FOUND,
                                           "no such receipt", NULL);
    }

    return ngx_http_gov_pay_message(r, NGX_HTTP_NOT_FOUND, "未找到票据",
                                    "没有找到这张票据。请核对票据代码、"
                                    "票据号码和校验码。");
}


/* 1: the seal verifies over the document's exact bytes; 0: it does not */
static ngx_int_t
ngx_http_gov_pay_receipt_verify(ngx_http_request_t *r, json_t *seal,
    ngx_str_t *doc)
{
    size_t                           siglen, len;
    ngx_uint_t                       i;
    const char                      *alg, *sn, *value;
    gp_sigalg_t                      a;
    unsigned char                    sig[GP_SIG_MAX + 4];
    ngx_http_gov_pay_main_conf_t    *gpmcf;
    ngx_http_gov_pay_receipt_key_t  *k;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (gpmcf->receipt_keys == NULL
        || json_unpack(seal, "{s:s, s:s, s:s}", "SealAlgorithm", &alg,
                       "SealKeySN", &sn, "SealValue", &value) != 0)
    {
        return 0;
    }

    if (ngx_strcmp(alg, "SM2-SM3") == 0) {
        a = GP_SIG_SM2_SM3;

    } else if (ngx_strcmp(alg, "RSA-SHA256") == 0) {
        a = GP_SIG_RSA_SHA256;

    } else {
        return 0;
    }

    len = ngx_strlen(value);
    if (len > 4 * (GP_SIG_MAX / 3) + 4
        || gp_base64_decode(value, len, sig, &siglen) != 0)
    {
        return 0;
    }

    k = gpmcf->receipt_keys->elts;

    for (i = 0; i < gpmcf->receipt_keys->nelts; i++) {
        if (k[i].alg == a && k[i].serial.len == ngx_strlen(sn)
            && ngx_strncmp(k[i].serial.data, sn, k[i].serial.len) == 0)
        {
            return gp_pkey_verify(k[i].pkey, a, (const char *) doc->data,
                                  doc->len, sig, siglen) == 1;
        }
    }

    return 0;
}


/*
 * what the page shows: the document, payer masked, and the seal's verdict;
 * for an auditor, the document's exact bytes as sealed (document_b64) and
 * the seal's value
 */
static json_t *
ngx_http_gov_pay_receipt_json(json_t *doc, json_t *seal, ngx_int_t valid,
    const char *kind, const char *rev, ngx_str_t *bytes)
{
    char         buf[256], *b64;
    size_t       n;
    json_t      *view, *d, *v;
    const char  *s;

    d = json_deep_copy(doc);
    if (d == NULL) {
        return NULL;
    }

    v = json_object_get(d, "PayerPartyName");
    s = json_is_string(v) ? json_string_value(v) : "";
    if (gp_mask_name(s, ngx_strlen(s), buf, sizeof(buf)) < 0) {
        buf[0] = '\0';
    }
    json_object_set_new(d, "PayerPartyName", json_string(buf));

    v = json_object_get(d, "PayerPartyCode");
    s = json_is_string(v) ? json_string_value(v) : "";
    if (gp_mask_id(s, ngx_strlen(s), buf, sizeof(buf)) < 0) {
        buf[0] = '\0';
    }
    json_object_set_new(d, "PayerPartyCode", json_string(buf));

    b64 = malloc(4 * ((bytes->len + 2) / 3) + 1);
    if (b64 == NULL) {
        json_decref(d);
        return NULL;
    }

    n = gp_base64_encode(bytes->data, bytes->len, b64);

    view = json_pack("{s:o, s:{s:O?, s:O?, s:O?, s:O?, s:b}, s:s, s:b, s:s#}",
                     "receipt", d,
                     "seal",
                     "algorithm", json_object_get(seal, "SealAlgorithm"),
                     "key_serial", json_object_get(seal, "SealKeySN"),
                     "time", json_object_get(seal, "SealTime"),
                     "value", json_object_get(seal, "SealValue"),
                     "valid", (int) valid,
                     "kind", ngx_strcmp(kind, "red") == 0 ? "red" : "blue",
                     "verified", (int) valid,
                     "document_b64", b64, n);
    free(b64);

    if (view != NULL && rev != NULL
        && json_object_set_new(view, "reversed_by",
                               json_pack("{s:s%, s:s%}", "code", rev,
                                         (size_t) 8, "number", rev + 9,
                                         (size_t) 10))
           != 0)
    {
        json_decref(view);
        return NULL;
    }

    return view;
}


/*
 * The page: receipt.html with the document's fields (named as in the
 * document, docs/payer.md), the payer masked, the seal's verdict, and the
 * PDF link only for a receipt whose seal verifies.  Every value is escaped
 * by the template.
 */
static ngx_int_t
ngx_http_gov_pay_receipt_page(ngx_http_request_t *r, json_t *doc,
    json_t *seal, ngx_int_t valid, ngx_str_t *check, const char *rev)
{
    size_t        i, c;
    json_t       *items, *it, *v;
    ngx_str_t     s, payer;
    ngx_array_t  *vars, *row;

    static const char  *fields[] = {
        "EInvoiceName", "EInvoiceCode", "EInvoiceNumber", "RandomNumber",
        "IssueDate", "IssueTime", "TotalAmount", "InvoicingPartyName",
        "BizCode", "PayMode", "RelatedInvoiceCode", "RelatedInvoiceNumber",
        "Remark"
    };

    static const char  *cells[] = {
        "ItemCode", "ItemName", "ItemQuantity", "ItemStd", "ItemAmount"
    };

    static const char  *seals[][2] = {
        { "seal_algorithm", "SealAlgorithm" }, { "seal_serial", "SealKeySN" },
        { "seal_time", "SealTime" }
    };

    vars = ngx_http_gov_pay_tvars(r->pool);
    if (vars == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (ngx_http_gov_pay_receipt_tvar(r, vars, fields[i],
                                          json_object_get(doc, fields[i]))
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* the payer masked as on every payer page, and said in words */

    v = json_object_get(doc, "PayerPartyName");
    payer.data = (u_char *) (json_is_string(v) ? json_string_value(v) : "");
    payer.len = json_is_string(v) ? json_string_length(v) : 0;

    if (ngx_http_gov_pay_masked(r, vars, "PayerPartyName", &payer, 0)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v = json_object_get(doc, "PayerPartyCode");
    payer.data = (u_char *) (json_is_string(v) ? json_string_value(v) : "");
    payer.len = json_is_string(v) ? json_string_length(v) : 0;

    if (ngx_http_gov_pay_masked(r, vars, "PayerPartyCode", &payer, 1)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    items = json_object_get(doc, "Items");

    for (i = 0; i < json_array_size(items); i++) {
        it = json_array_get(items, i);

        row = ngx_http_gov_pay_tvar_row(vars, "Items");
        if (row == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        for (c = 0; c < sizeof(cells) / sizeof(cells[0]); c++) {
            if (ngx_http_gov_pay_receipt_tvar(r, row, cells[c],
                                              json_object_get(it, cells[c]))
                != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    /* the verdict, and the seal's own fields under it */

    if (ngx_http_gov_pay_tvar_cstr(vars, valid ? "seal_valid"
                                               : "seal_invalid", "1")
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < sizeof(seals) / sizeof(seals[0]); i++) {
        if (ngx_http_gov_pay_receipt_tvar(r, vars, seals[i][0],
                                          json_object_get(seal, seals[i][1]))
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* reversed (冲红): by which red-letter receipt */

    if (rev != NULL) {
        s.len = 8;
        s.data = (u_char *) rev;

        if (ngx_http_gov_pay_tvar(vars, "ReversedByCode", &s) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        s.len = 10;
        s.data = (u_char *) rev + 9;

        if (ngx_http_gov_pay_tvar(vars, "ReversedByNumber", &s) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    /* the printable receipt: only when the seal verifies */

    if (valid) {
        s.len = r->uri.len + sizeof("?c=&format=pdf") - 1 + check->len;
        s.data = ngx_pnalloc(r->pool, s.len);
        if (s.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        s.len = ngx_sprintf(s.data, "%V?c=%V&format=pdf", &r->uri, check)
                - s.data;

        if (ngx_http_gov_pay_tvar(vars, "pdf_url", &s) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_gov_pay_render_page(r, NGX_HTTP_OK, "receipt.html",
                                        "财政电子票据查验", vars);
}


/* a document value as a template value: a string, or an integer as digits */
static ngx_int_t
ngx_http_gov_pay_receipt_tvar(ngx_http_request_t *r, ngx_array_t *vars,
    const char *name, json_t *value)
{
    ngx_str_t  s;

    if (json_is_string(value)) {
        s.len = json_string_length(value);
        s.data = ngx_pnalloc(r->pool, s.len);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(s.data, json_string_value(value), s.len);

    } else if (json_is_integer(value)) {
        s.data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (s.data == NULL) {
            return NGX_ERROR;
        }

        s.len = ngx_sprintf(s.data, "%L", (int64_t) json_integer_value(value))
                - s.data;

    } else {
        return NGX_OK;                      /* absent: renders as nothing */
    }

    return ngx_http_gov_pay_tvar(vars, name, &s);
}


static ngx_uint_t
ngx_http_gov_pay_receipt_wants_json(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == 6
            && ngx_strncasecmp(h[i].key.data, (u_char *) "Accept", 6) == 0
            && ngx_strlcasestrn(h[i].value.data,
                                h[i].value.data + h[i].value.len,
                                (u_char *) "application/json", 16 - 1)
               != NULL)
        {
            return 1;
        }
    }

    return 0;
}


/* gov_pay_receipt; in a location: the verification route */
char *
ngx_http_gov_pay_receipt(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another handler";
    }

    clcf->handler = ngx_http_gov_pay_receipt_handler;

    gpmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_gov_pay_module);
    gpmcf->enabled = 1;
    gpmcf->receipt_route = 1;       /* init_main_conf wants a key then */

    return NGX_CONF_OK;
}


/* gov_pay_receipt_key sm2|rsa <public key PEM> <serial>; */
char *
ngx_http_gov_pay_receipt_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = conf;

    char                             err[512];
    u_char                          *path;
    ngx_str_t                       *value;
    ngx_pool_cleanup_t              *cln;
    ngx_http_gov_pay_receipt_key_t  *k;

    value = cf->args->elts;

    if (gpmcf->receipt_keys == NULL) {
        gpmcf->receipt_keys = ngx_array_create(cf->pool, 2,
                                      sizeof(ngx_http_gov_pay_receipt_key_t));
        if (gpmcf->receipt_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    k = ngx_array_push(gpmcf->receipt_keys);
    if (k == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_strcmp(value[1].data, "sm2") == 0) {
        k->alg = GP_SIG_SM2_SM3;

    } else if (ngx_strcmp(value[1].data, "rsa") == 0) {
        k->alg = GP_SIG_RSA_SHA256;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: receipt key family must be \"sm2\" or "
                           "\"rsa\", got \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (value[3].len == 0 || value[3].len > 64) {
        return "needs a key serial of 1 to 64 characters";
    }

    if (ngx_conf_full_name(cf->cycle, &value[2], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    path = ngx_http_gov_pay_cstr(cf->pool, &value[2]);
    if (path == NULL) {
        return NGX_CONF_ERROR;
    }

    k->pkey = gp_pkey_load((char *) path, 0, k->alg, err, sizeof(err));
    if (k->pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: receipt key: %s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(k->pkey);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_gov_pay_receipt_key_cleanup;
    cln->data = k->pkey;

    k->serial = value[3];

    return NGX_CONF_OK;
}


static void
ngx_http_gov_pay_receipt_key_cleanup(void *data)
{
    EVP_PKEY_free(data);
}
