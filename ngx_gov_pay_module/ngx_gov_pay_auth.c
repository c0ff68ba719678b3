
/*
 * ngx_gov_pay_auth.c: unit request authentication and response signing.
 *
 *   Authorization: <SCHEME> unit="<id>",ts="<unix>",nonce="<16-64>",sig="<b64>"
 *
 * The string to sign is "<method>\n<target>\n<ts>\n<nonce>\n<body>\n", the
 * target being the path and query exactly as sent.  Cheap checks come
 * before expensive ones: header syntax, known unit, scheme, timestamp
 * window, then the signature (an RSA or SM2 verification costs far more
 * than everything else), so a flood of stale or malformed requests costs
 * no public-key operation.  The nonce is checked by the Redis script of
 * the operation (one round trip), so only a request whose signature
 * verifies ever touches the store.  $gov_pay_claimed_unit is the unit the
 * header names, before any verification, for limit_req keys.
 */


#include "ngx_gov_pay_module.h"


#define NGX_HTTP_GOV_PAY_SIG_MAX  1024


typedef struct {
    ngx_str_t    scheme;
    ngx_str_t    unit;
    ngx_str_t    ts;
    ngx_str_t    nonce;
    ngx_str_t    sig;
} ngx_http_gov_pay_authz_t;


static ngx_int_t ngx_http_gov_pay_parse_authz(ngx_str_t *h,
    ngx_http_gov_pay_authz_t *a);


static ngx_int_t
ngx_http_gov_pay_parse_authz(ngx_str_t *h, ngx_http_gov_pay_authz_t *a)
{
    u_char     *p, *last, *name, *value;
    size_t      nlen;
    ngx_str_t  *dst;

    p = h->data;
    last = h->data + h->len;

    /* the scheme word */

    a->scheme.data = p;
    while (p < last && *p != ' ') {
        p++;
    }
    a->scheme.len = p - a->scheme.data;

    if (a->scheme.len == 0 || p == last) {
        return NGX_ERROR;
    }

    while (p < last && *p == ' ') {
        p++;
    }

    /* k="v" pairs separated by commas; each key once */

    while (p < last) {
        name = p;
        while (p < last && *p >= 'a' && *p <= 'z') {
            p++;
        }
        nlen = p - name;

        if (nlen == 0 || p + 2 > last || p[0] != '=' || p[1] != '"') {
            return NGX_ERROR;
        }

        p += 2;
        value = p;

        while (p < last && *p != '"') {
            if (*p < 0x21 || *p > 0x7e || *p == '\\') {
                return NGX_ERROR;
            }
            p++;
        }

        if (p == last) {
            return NGX_ERROR;
        }

        if (nlen == 4 && ngx_strncmp(name, "unit", 4) == 0) {
            dst = &a->unit;
        } else if (nlen == 2 && ngx_strncmp(name, "ts", 2) == 0) {
            dst = &a->ts;
        } else if (nlen == 5 && ngx_strncmp(name, "nonce", 5) == 0) {
            dst = &a->nonce;
        } else if (nlen == 3 && ngx_strncmp(name, "sig", 3) == 0) {
            dst = &a->sig;
        } else {
            return NGX_ERROR;
        }

        if (dst->data) {
            return NGX_ERROR;
        }

        dst->data = value;
        dst->len = p - value;

        p++;    /* closing quote */

        while (p < last && *p == ' ') {
            p++;
        }

        if (p < last) {
            if (*p != ',') {
                return NGX_ERROR;
            }
            p++;

            while (p < last && *p == ' ') {
                p++;
            }
        }
    }

    if (a->unit.len == 0 || a->ts.len == 0 || a->nonce.len == 0
        || a->sig.len == 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * $gov_pay_claimed_unit: the unit the Authorization header names, if the
 * header parses and the unit exists; nothing is verified (limit_req runs
 * before the handler), so it is a key for limits, never an identity.
 */

ngx_int_t
ngx_http_gov_pay_claimed_unit(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_str_t *unit)
{
    const gp_unit_t           *u;
    ngx_http_gov_pay_authz_t   a;

    if (r->headers_in.authorization == NULL || gpmcf->registry == NULL) {
        return NGX_DECLINED;
    }

    ngx_memzero(&a, sizeof(ngx_http_gov_pay_authz_t));

    if (ngx_http_gov_pay_parse_authz(&r->headers_in.authorization->value,
                                     &a)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    u = gp_registry_unit(gpmcf->registry, (const char *) a.unit.data,
                         a.unit.len);
    if (u == NULL) {
        return NGX_DECLINED;
    }

    unit->data = (u_char *) u->id;
    unit->len = ngx_strlen(u->id);

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_nonce_valid(ngx_str_t *nonce)
{
    u_char      c;
    ngx_uint_t  i;

    if (nonce->len < 16 || nonce->len > 64) {
        return 0;
    }

    for (i = 0; i < nonce->len; i++) {
        c = nonce->data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/* "<part>\n<part>\n...": the string to sign; malloc'd (bodies can be large) */

static u_char *
ngx_http_gov_pay_sts(ngx_str_t *parts, ngx_uint_t n, size_t *lenp)
{
    u_char      *msg, *p;
    size_t       len;
    ngx_uint_t   i;

    len = 0;
    for (i = 0; i < n; i++) {
        len += parts[i].len + 1;
    }

    msg = ngx_alloc(len + 1, ngx_cycle->log);
    if (msg == NULL) {
        return NULL;
    }

    p = msg;
    for (i = 0; i < n; i++) {
        p = ngx_cpymem(p, parts[i].data, parts[i].len);
        *p++ = '\n';
    }

    *lenp = len;

    return msg;
}


static gp_md_t
ngx_http_gov_pay_unit_md(const gp_unit_t *unit)
{
    return unit->scheme == GP_SCHEME_HMAC_SM3 ? GP_MD_SM3 : GP_MD_SHA256;
}


static gp_sigalg_t
ngx_http_gov_pay_unit_alg(const gp_unit_t *unit)
{
    return unit->scheme == GP_SCHEME_RSA_SHA256 ? GP_SIG_RSA_SHA256
                                                : GP_SIG_SM2_SM3;
}


static ngx_int_t
ngx_http_gov_pay_is_hmac(const gp_unit_t *unit)
{
    return unit->scheme == GP_SCHEME_HMAC_SHA256
           || unit->scheme == GP_SCHEME_HMAC_SM3;
}


ngx_http_gov_pay_err_e
ngx_http_gov_pay_auth(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_str_t *body,
    const gp_unit_t **unitp, ngx_str_t *nonce, const char **why)
{
    u_char                    *msg;
    size_t                     siglen, len;
    time_t                     ts, now;
    ngx_int_t                  verified;
    ngx_str_t                  parts[5];
    ngx_uint_t                 i;
    gp_scheme_t                scheme;
    unsigned char              mac[32], sig[NGX_HTTP_GOV_PAY_SIG_MAX];
    const gp_unit_t           *unit;
    ngx_http_gov_pay_authz_t   a;

    *unitp = NULL;

    if (r->headers_in.authorization == NULL) {
        *why = "missing Authorization header";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    ngx_memzero(&a, sizeof(ngx_http_gov_pay_authz_t));

    if (ngx_http_gov_pay_parse_authz(&r->headers_in.authorization->value,
                                     &a)
        != NGX_OK
        || gp_scheme_parse((const char *) a.scheme.data, a.scheme.len,
                           &scheme)
           != 0)
    {
        *why = "malformed Authorization header";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    unit = gp_registry_unit(gpmcf->registry, (const char *) a.unit.data,
                            a.unit.len);
    if (unit == NULL) {
        *why = "unknown unit";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    if (!ngx_http_gov_pay_nonce_valid(&a.nonce)) {
        *why = "nonce must be 16 to 64 of A-Z a-z 0-9 _ -";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    for (i = 0; i < a.ts.len; i++) {
        if (a.ts.data[i] < '0' || a.ts.data[i] > '9') {
            *why = "ts must be unix seconds";
            return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
        }
    }

    if (a.ts.len > 12) {
        *why = "ts must be unix seconds";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    if (scheme != unit->scheme) {
        *why = "this unit signs with another scheme";
        return NGX_HTTP_GOV_PAY_SIGNATURE_INVALID;
    }

    /* the window before the signature: a stale request costs no RSA/SM2 */

    ts = ngx_atotm(a.ts.data, a.ts.len);
    now = ngx_time();

    if (ts == NGX_ERROR || ts > now + gpmcf->auth_window
        || ts < now - gpmcf->auth_window)
    {
        *why = "ts is outside the accepted window of the edge clock";
        return NGX_HTTP_GOV_PAY_TIMESTAMP_OUT_OF_WINDOW;
    }

    if (a.sig.len > 4 * (NGX_HTTP_GOV_PAY_SIG_MAX / 3)
        || gp_base64_decode((const char *) a.sig.data, a.sig.len, sig,
                            &siglen)
           != 0)
    {
        *why = "signature does not verify";
        return NGX_HTTP_GOV_PAY_SIGNATURE_INVALID;
    }

    parts[0] = r->method_name;
    parts[1] = r->unparsed_uri;
    parts[2] = a.ts;
    parts[3] = a.nonce;
    parts[4] = *body;

    msg = ngx_http_gov_pay_sts(parts, 5, &len);
    if (msg == NULL) {
        *why = "internal error";
        return NGX_HTTP_GOV_PAY_INTERNAL;
    }

    if (ngx_http_gov_pay_is_hmac(unit)) {
        verified = gp_hmac(ngx_http_gov_pay_unit_md(unit), unit->secret,
                           unit->secret_len, msg, len, mac) == 0
                   && siglen == 32 && gp_ct_equal(mac, sig, 32);

    } else {
        verified = gp_pkey_verify(
                       gpmcf->unit_keys[unit - gpmcf->registry->units],
                       ngx_http_gov_pay_unit_alg(unit), msg, len, sig,
                       siglen) == 1;
    }

    ngx_free(msg);

    if (!verified) {
        *why = "signature does not verify";
        return NGX_HTTP_GOV_PAY_SIGNATURE_INVALID;
    }

    *unitp = unit;
    *nonce = a.nonce;

    return NGX_HTTP_GOV_PAY_OK;
}


/*
 * For a route: NGX_OK, the caller is authenticated and of the kind the
 * route serves (banks on /bank/v1/, units elsewhere); NGX_DECLINED, the
 * refusal was sent and *rc is what the handler returns.
 */

ngx_int_t
ngx_http_gov_pay_authenticate(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *nonce, ngx_uint_t bank, ngx_int_t *rc)
{
    const char              *why;
    const gp_unit_t         *unit;
    ngx_http_gov_pay_err_e   err;

    err = ngx_http_gov_pay_auth(r, gpmcf, &ctx->body, &unit, nonce, &why);

    /* answers to a caller whose signature verified are signed */
    ctx->unit = unit;

    if (err == NGX_HTTP_GOV_PAY_OK && (ngx_uint_t) unit->bank != bank) {
        err = NGX_HTTP_GOV_PAY_FORBIDDEN;
        why = bank ? "only a bank may use the bank counter routes"
                   : "a bank may use the bank counter routes only";
    }

    if (err != NGX_HTTP_GOV_PAY_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "gov_pay: %s request refused: %s",
                      bank ? "bank" : "unit", why);

        *rc = ngx_http_gov_pay_send_error(r, err, why, NULL);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_sign_response(ngx_http_request_t *r, const gp_unit_t *unit,
    ngx_str_t *body)
{
    u_char                        *msg, rnd[16], *p;
    size_t                         len, siglen;
    ngx_int_t                      rc;
    ngx_str_t                      parts[3], ts, nonce, sig;
    gp_sigalg_t                    alg;
    unsigned char                  raw[GP_SIG_MAX];
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (gp_random_bytes(rnd, sizeof(rnd)) != 0) {
        return NGX_ERROR;
    }

    ts.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    nonce.data = ngx_pnalloc(r->pool, 2 * sizeof(rnd) + 1);
    sig.data = ngx_pnalloc(r->pool, 4 * ((GP_SIG_MAX + 2) / 3) + 1);
    if (ts.data == NULL || nonce.data == NULL || sig.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(ts.data, "%T", ngx_time());
    ts.len = p - ts.data;

    gp_hex(rnd, sizeof(rnd), (char *) nonce.data);
    nonce.len = 2 * sizeof(rnd);

    parts[0] = ts;
    parts[1] = nonce;
    parts[2] = *body;

    msg = ngx_http_gov_pay_sts(parts, 3, &len);
    if (msg == NULL) {
        return NGX_ERROR;
    }

    alg = ngx_http_gov_pay_unit_alg(unit);

    if (ngx_http_gov_pay_is_hmac(unit)) {
        siglen = 32;
        rc = gp_hmac(ngx_http_gov_pay_unit_md(unit), unit->secret,
                     unit->secret_len, msg, len, raw);

    } else {
        rc = gp_pkey_sign(gpmcf->platform_key[alg], alg, msg, len, raw,
                          &siglen);
    }

    ngx_free(msg);

    if (rc != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: signing the answer to unit %s failed",
                      unit->id);
        return NGX_ERROR;
    }

    sig.len = gp_base64_encode(raw, siglen, (char *) sig.data);

    if (ngx_http_gov_pay_add_header(r, "GovPay-Timestamp", &ts) != NGX_OK
        || ngx_http_gov_pay_add_header(r, "GovPay-Nonce", &nonce) != NGX_OK
        || ngx_http_gov_pay_add_header(r, "GovPay-Signature", &sig)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ngx_http_gov_pay_is_hmac(unit)
        && ngx_http_gov_pay_add_header(r, "GovPay-Serial",
                                       &gpmcf->platform_serial[alg])
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
