
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


/*
 * $gov_pay_claimed_unit: the unit the Authorization header names, if the
 * header parses and the unit exists; nothing is verified (limit_req runs
 * before the handler), so it is a key for limits, never an identity.
 */

ngx_int_t
ngx_http_gov_pay_claimed_unit(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_str_t *unit)
{
    ngx_str_t         *h;
    gp_authz_t         a;
    const gp_unit_t   *u;

    if (r->headers_in.authorization == NULL || gpmcf->registry == NULL) {
        return NGX_DECLINED;
    }

    h = &r->headers_in.authorization->value;

    if (gp_authz_parse((const char *) h->data, h->len, &a) != 0) {
        return NGX_DECLINED;
    }

    u = gp_registry_unit(gpmcf->registry, a.unit.p, a.unit.n);
    if (u == NULL) {
        return NGX_DECLINED;
    }

    unit->data = (u_char *) u->id;
    unit->len = ngx_strlen(u->id);

    return NGX_OK;
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


/*
 * HMAC with the unit's secret (prepared at configuration time) over
 * "<part>\n<part>\n...", the parts hashed where they lie
 */

static ngx_int_t
ngx_http_gov_pay_unit_hmac(ngx_http_gov_pay_main_conf_t *gpmcf,
    const gp_unit_t *unit, ngx_str_t *parts, ngx_uint_t n,
    unsigned char mac[32])
{
    ngx_uint_t  i;
    gp_part_t   p[10];

    if (n > 5) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        p[2 * i].p = parts[i].data;
        p[2 * i].n = parts[i].len;
        p[2 * i + 1].p = "\n";
        p[2 * i + 1].n = 1;
    }

    if (gp_hmac_keyed_parts(gpmcf->unit_hmac[unit - gpmcf->registry->units],
                            p, 2 * n, mac)
        != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
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
    ngx_str_t                 *h;
    gp_authz_t                 a;
    gp_scheme_t                scheme;
    unsigned char              mac[32], sig[NGX_HTTP_GOV_PAY_SIG_MAX];
    const gp_unit_t           *unit;

    *unitp = NULL;

    if (r->headers_in.authorization == NULL) {
        *why = "missing Authorization header";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    h = &r->headers_in.authorization->value;

    if (gp_authz_parse((const char *) h->data, h->len, &a) != 0
        || gp_scheme_parse(a.scheme.p, a.scheme.n, &scheme) != 0)
    {
        *why = "malformed Authorization header";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    unit = gp_registry_unit(gpmcf->registry, a.unit.p, a.unit.n);
    if (unit == NULL) {
        *why = "unknown unit";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    if (!gp_authz_nonce_ok(a.nonce.p, a.nonce.n)) {
        *why = "nonce must be 16 to 64 of A-Z a-z 0-9 _ -";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    if (!gp_authz_ts_ok(a.ts.p, a.ts.n)) {
        *why = "ts must be unix seconds";
        return NGX_HTTP_GOV_PAY_UNAUTHENTICATED;
    }

    if (scheme != unit->scheme) {
        *why = "this unit signs with another scheme";
        return NGX_HTTP_GOV_PAY_SIGNATURE_INVALID;
    }

    /* the window before the signature: a stale request costs no RSA/SM2 */

    ts = ngx_atotm((u_char *) a.ts.p, a.ts.n);
    now = ngx_time();

    if (ts == NGX_ERROR || ts > now + gpmcf->auth_window
        || ts < now - gpmcf->auth_window)
    {
        *why = "ts is outside the accepted window of the edge clock";
        return NGX_HTTP_GOV_PAY_TIMESTAMP_OUT_OF_WINDOW;
    }

    if (a.sig.n > 4 * (NGX_HTTP_GOV_PAY_SIG_MAX / 3)
        || gp_base64_decode(a.sig.p, a.sig.n, sig, &siglen) != 0)
    {
        *why = "signature does not verify";
        return NGX_HTTP_GOV_PAY_SIGNATURE_INVALID;
    }

    parts[0] = r->method_name;
    parts[1] = r->unparsed_uri;
    parts[2].data = (u_char *) a.ts.p;
    parts[2].len = a.ts.n;
    parts[3].data = (u_char *) a.nonce.p;
    parts[3].len = a.nonce.n;
    parts[4] = *body;

    if (ngx_http_gov_pay_is_hmac(unit)) {
        verified = ngx_http_gov_pay_unit_hmac(gpmcf, unit, parts, 5, mac)
                   == NGX_OK
                   && siglen == 32 && gp_ct_equal(mac, sig, 32);

    } else {
        msg = ngx_http_gov_pay_sts(parts, 5, &len);
        if (msg == NULL) {
            *why = "internal error";
            return NGX_HTTP_GOV_PAY_INTERNAL;
        }

        verified = gp_pkey_verify(
                       gpmcf->unit_keys[unit - gpmcf->registry->units],
                       ngx_http_gov_pay_unit_alg(unit), msg, len, sig,
                       siglen) == 1;

        ngx_free(msg);
    }

    if (!verified) {
        *why = "signature does not verify";
        return NGX_HTTP_GOV_PAY_SIGNATURE_INVALID;
    }

    *unitp = unit;
    nonce->data = (u_char *) a.nonce.p;
    nonce->len = a.nonce.n;

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

    alg = ngx_http_gov_pay_unit_alg(unit);

    if (ngx_http_gov_pay_is_hmac(unit)) {
        siglen = 32;
        rc = ngx_http_gov_pay_unit_hmac(gpmcf, unit, parts, 3, raw);

    } else {
        msg = ngx_http_gov_pay_sts(parts, 3, &len);
        if (msg == NULL) {
            return NGX_ERROR;
        }

        rc = gp_pkey_sign(gpmcf->platform_key[alg], alg, msg, len, raw,
                          &siglen);

        ngx_free(msg);
    }

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
