
/*
 * The UnionPay channel: UnionPay online payment (全渠道, version 5.1.0),
 * front consume (txnType 01, txnSubType 01, bizType 000201) and its
 * back notification; on where gov_pay_unionpay_mer_id, _cert_id,
 * _front_url, _sign_key and _verify_key are all set (docs/channels.md).
 *
 * Hand-off: a page with a form that submits itself to the configured
 * front gateway (frontTransReq.do).  signMethod 01: every non-empty field
 * but signature, sorted by name, joined as k=v&k=v; the lowercase hex of
 * its SHA-256; that hex string signed with SHA256withRSA by the edge's
 * signing key (named by certId), base64.
 *
 * Callback (POST /notify/unionpay): a form, verified first: every field
 * but signature, sorted, k=v&k=v, SHA-256 hex, SHA256withRSA over the hex
 * with UnionPay's configured public key.  merId must be ours; txnAmt is in
 * fen; orderId is the payment code, queryId the channel trade number; only
 * respCode 00 settles.  Replies: 200 "ok"; 400 (not verified, malformed),
 * 404 (unknown order), 503 (store unavailable), which UnionPay retries.
 */


#include "ngx_gov_pay_channel.h"


#define NGX_HTTP_GOV_PAY_UNIONPAY_NFIELDS  18


/* a hand-off's form: the fields signed, their digest, the kept signature */

typedef struct {
    gp_kv_t                    kv[NGX_HTTP_GOV_PAY_UNIONPAY_NFIELDS];
    ngx_uint_t                 n;
    char                       hex[65];
    ngx_str_t                  cache;       /* "<txnTime> <signature>" */
} ngx_http_gov_pay_unionpay_form_t;


static ngx_int_t ngx_http_gov_pay_unionpay_enabled(
    ngx_http_gov_pay_main_conf_t *gpmcf);
static ngx_int_t ngx_http_gov_pay_unionpay_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_unionpay_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s);
static ngx_int_t ngx_http_gov_pay_unionpay_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome);
static ngx_int_t ngx_http_gov_pay_unionpay_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf);
static char *ngx_http_gov_pay_unionpay_digest(const char *canon, size_t len,
    char hex[65]);
static ngx_int_t ngx_http_gov_pay_unionpay_cached(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_unionpay_fields(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_http_gov_pay_unionpay_form_t *f, ngx_str_t *txn_time);
static ngx_int_t ngx_http_gov_pay_unionpay_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_unionpay_form_t *f,
    char *sig, size_t siglen);


const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_unionpay_channel = {
    ngx_string("unionpay"),
    "云闪付 / 银联在线支付",
    ngx_http_gov_pay_unionpay_enabled,
    ngx_http_gov_pay_unionpay_handoff,
    ngx_http_gov_pay_unionpay_callback,
    ngx_http_gov_pay_unionpay_reply,
    ngx_http_gov_pay_unionpay_init_conf
};


/* the page's one script, and its hash for the Content-Security-Policy */

static const char  ngx_http_gov_pay_unionpay_script[] =
    "document.getElementById('up').submit();";


static ngx_int_t
ngx_http_gov_pay_unionpay_enabled(ngx_http_gov_pay_main_conf_t *gpmcf)
{
    return gpmcf->unionpay.sign_key != NULL
           && gpmcf->unionpay.verify_key != NULL;
}


static ngx_int_t
ngx_http_gov_pay_unionpay_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_uint_t                         i, on;
    ngx_http_gov_pay_unionpay_conf_t  *ucf;

    static const char  *names[] = {
        "gov_pay_unionpay_mer_id", "gov_pay_unionpay_cert_id",
        "gov_pay_unionpay_front_url", "gov_pay_unionpay_sign_key",
        "gov_pay_unionpay_verify_key", NULL
    };

    ucf = &gpmcf->unionpay;

    {
        ngx_str_t  *values[] = {
            &ucf->mer_id, &ucf->cert_id, &ucf->front_url,
            &ucf->sign_key_file, &ucf->verify_key_file
        };

        if (ngx_http_gov_pay_conf_complete(cf, "unionpay", values, names,
                                           &on)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!on) {
        return NGX_OK;
    }

    /* merId is 15 characters, certId a decimal serial number */

    for (i = 0; i < ucf->mer_id.len; i++) {
        if (!isalnum(ucf->mer_id.data[i])) {
            break;
        }
    }

    if (ucf->mer_id.len != 15 || i != ucf->mer_id.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_unionpay_mer_id\" must be 15 "
                           "letters or digits, got \"%V\"", &ucf->mer_id);
        return NGX_ERROR;
    }

    for (i = 0; i < ucf->cert_id.len; i++) {
        if (ucf->cert_id.data[i] < '0' || ucf->cert_id.data[i] > '9') {
            break;
        }
    }

    if (ucf->cert_id.len > 40 || i != ucf->cert_id.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_unionpay_cert_id\" must be "
                           "the decimal serial number of the signing "
                           "certificate, got \"%V\"", &ucf->cert_id);
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_conf_url(cf, &ucf->front_url,
                                  "gov_pay_unionpay_front_url")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ucf->sign_key = ngx_http_gov_pay_conf_pkey(cf, &ucf->sign_key_file, 1,
                                               "gov_pay_unionpay_sign_key");
    if (ucf->sign_key == NULL) {
        return NGX_ERROR;
    }

    ucf->verify_key = ngx_http_gov_pay_conf_pkey(cf, &ucf->verify_key_file,
                                                 0,
                                                 "gov_pay_unionpay_verify_key");
    if (ucf->verify_key == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static char *
ngx_http_gov_pay_unionpay_digest(const char *canon, size_t len, char hex[65])
{
    unsigned char  md[32];

    if (gp_digest(GP_MD_SHA256, canon, len, md) != 0) {
        return NULL;
    }

    gp_hex(md, 32, hex);

    return hex;
}


/*
 * The form is signed once per notice and kept on the notice as field
 * "unionpay_form" ("<txnTime> <signature>", cache.lua): later hand-offs
 * rebuild the same fields with that txnTime and reuse the signature after
 * checking it with the signing key's public half (a verification costs a
 * few percent of a signature), so a changed key or setting signs anew.
 * UnionPay takes orderId and txnTime as the order's identity; sending the
 * same pair again is the same order.
 */

static ngx_int_t
ngx_http_gov_pay_unionpay_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    u_char                            *p;
    char                               b64[GP_SIG_MAX * 2];
    size_t                             siglen;
    ngx_str_t                          txn_time, cached, *argv;
    unsigned char                      sig[GP_SIG_MAX];
    ngx_http_gov_pay_unionpay_form_t  *f;
    ngx_http_gov_pay_main_conf_t      *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    f = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_unionpay_form_t));
    if (f == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->channel_data = f;

    /* signed before: "<14-digit txnTime> <base64 signature>" */

    p = NULL;
    cached.len = 0;

    if (ngx_http_gov_pay_field(ctx, "unionpay_form")) {
        cached = *ngx_http_gov_pay_field(ctx, "unionpay_form");
        p = (cached.len > 15 && cached.data[14] == ' ')
            ? cached.data + 15 : NULL;
    }

    if (p && gp_base64_decode((char *) p, cached.len - 15, sig, &siglen) == 0)
    {
        txn_time.data = cached.data;
        txn_time.len = 14;

        if (ngx_http_gov_pay_unionpay_fields(r, gpmcf, ctx, f, &txn_time)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (gp_pkey_verify(gpmcf->unionpay.sign_key, GP_SIG_RSA_SHA256,
                           f->hex, 64, sig, siglen)
            == 1)
        {
            return ngx_http_gov_pay_unionpay_page(r, gpmcf, f,
                                                  (char *) p,
                                                  cached.len - 15);
        }
    }

    /* sign now, with now as txnTime, and keep it */

    txn_time.data = ngx_pnalloc(r->pool, 16);
    if (txn_time.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    txn_time.len = ngx_http_gov_pay_cst_time(txn_time.data, ngx_time(), 0)
                   - txn_time.data;

    if (ngx_http_gov_pay_unionpay_fields(r, gpmcf, ctx, f, &txn_time)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (gp_pkey_sign(gpmcf->unionpay.sign_key, GP_SIG_RSA_SHA256, f->hex, 64,
                     sig, &siglen)
        != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "gov_pay: signing the unionpay request for %V failed",
                      &ctx->code);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    gp_base64_encode(sig, siglen, b64);

    f->cache.len = 15 + ngx_strlen(b64);
    f->cache.data = ngx_pnalloc(r->pool, f->cache.len);
    if (f->cache.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(f->cache.data, "%V %s", &txn_time, b64);

    argv = ngx_palloc(r->pool, 4 * sizeof(ngx_str_t));
    if (argv == NULL
        || ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "n:%uL",
                                ctx->seq)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a kept form that did not verify is replaced */

    ngx_str_set(&argv[1], "unionpay_form");
    argv[2] = f->cache;
    argv[3] = cached;

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_CACHE, 1,
                                  cached.len ? 4 : 3, argv,
                                  ngx_http_gov_pay_unionpay_cached);
}


static ngx_int_t
ngx_http_gov_pay_unionpay_cached(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    ngx_http_gov_pay_unionpay_form_t  *f;
    ngx_http_gov_pay_main_conf_t      *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    f = ctx->channel_data;

    /* the store is away: the form is good all the same, only not kept */

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: unionpay form of %V not cached: store "
                      "unavailable", &ctx->code);
    }

    return ngx_http_gov_pay_unionpay_page(r, gpmcf, f,
                                          (char *) f->cache.data + 15,
                                          f->cache.len - 15);
}


/* the front consume request's fields, sorted by name as they are signed */

static ngx_int_t
ngx_http_gov_pay_unionpay_fields(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_http_gov_pay_unionpay_form_t *f, ngx_str_t *txn_time)
{
    u_char                            *timeout, *fen, *front, *back;
    char                              *canon;
    size_t                             len;
    time_t                             due;
    ngx_uint_t                         i, n;
    gp_kv_t                           *kv;
    gp_form_t                          form;
    ngx_http_gov_pay_unionpay_conf_t  *ucf;

    ucf = &gpmcf->unionpay;
    kv = f->kv;

    timeout = ngx_pnalloc(r->pool, 16);
    fen = ngx_pnalloc(r->pool, NGX_INT64_LEN + 1);
    front = ngx_pnalloc(r->pool, 512);
    back = ngx_pnalloc(r->pool, 512);
    if (timeout == NULL || fen == NULL || front == NULL || back == NULL) {
        return NGX_ERROR;
    }

    /* payTimeout: the notice's due time */

    due = (time_t) ngx_http_gov_pay_field_int(ctx, "due_at");
    *ngx_http_gov_pay_cst_time(timeout, due, 0) = '\0';

    *ngx_sprintf(fen, "%L", ngx_http_gov_pay_field_int(ctx, "amount")) = '\0';
    *ngx_snprintf(front, 511, "%V/q/%V", &gpmcf->public_url, &ctx->code)
        = '\0';
    *ngx_snprintf(back, 511, "%V/notify/unionpay", &gpmcf->public_url) = '\0';

    n = 0;

#define ngx_http_gov_pay_unionpay_field(k, v)                                 \
    kv[n].key = (char *) (k);                                                 \
    kv[n].value = (char *) (v);                                               \
    n++

    ngx_http_gov_pay_unionpay_field("accessType", "0");
    ngx_http_gov_pay_unionpay_field("backUrl", back);
    ngx_http_gov_pay_unionpay_field("bizType", "000201");
    ngx_http_gov_pay_unionpay_field("certId", ucf->cert_id.data);
    ngx_http_gov_pay_unionpay_field("channelType", "08");
    ngx_http_gov_pay_unionpay_field("currencyCode", "156");
    ngx_http_gov_pay_unionpay_field("encoding", "UTF-8");
    ngx_http_gov_pay_unionpay_field("frontUrl", front);
    ngx_http_gov_pay_unionpay_field("merId", ucf->mer_id.data);
    ngx_http_gov_pay_unionpay_field("orderId",
        ngx_http_gov_pay_cstr(r->pool, &ctx->code));
    ngx_http_gov_pay_unionpay_field("payTimeout", timeout);
    ngx_http_gov_pay_unionpay_field("signMethod", "01");
    ngx_http_gov_pay_unionpay_field("txnAmt", fen);
    ngx_http_gov_pay_unionpay_field("txnSubType", "01");
    ngx_http_gov_pay_unionpay_field("txnTime",
        ngx_http_gov_pay_cstr(r->pool, txn_time));
    ngx_http_gov_pay_unionpay_field("txnType", "01");
    ngx_http_gov_pay_unionpay_field("version", "5.1.0");

#undef ngx_http_gov_pay_unionpay_field

    for (i = 0; i < n; i++) {
        if (kv[i].value == NULL) {
            return NGX_ERROR;
        }

        kv[i].key_len = ngx_strlen(kv[i].key);
        kv[i].value_len = ngx_strlen(kv[i].value);
    }

    f->n = n;

    form.kv = kv;
    form.n = n;

    canon = gp_form_canonical(&form, NULL, 1, &len);
    if (canon == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_unionpay_digest(canon, len, f->hex) == NULL) {
        free(canon);
        return NGX_ERROR;
    }

    free(canon);

    return NGX_OK;
}


/* the page: its script may run and its form may go to the gateway */

static ngx_int_t
ngx_http_gov_pay_unionpay_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_unionpay_form_t *f,
    char *sig, size_t siglen)
{
    u_char                            *p, *last;
    u_char                             hash[32];
    char                               csh[64];
    ngx_str_t                          content, v, esc;
    ngx_uint_t                         i, n;
    gp_kv_t                           *kv;
    ngx_http_gov_pay_unionpay_conf_t  *ucf;

    ucf = &gpmcf->unionpay;
    kv = f->kv;
    n = f->n;

    kv[n].key = (char *) "signature";
    kv[n].key_len = sizeof("signature") - 1;
    kv[n].value = sig;
    kv[n].value_len = siglen;
    n++;

    if (gp_digest(GP_MD_SHA256, ngx_http_gov_pay_unionpay_script,
                  sizeof(ngx_http_gov_pay_unionpay_script) - 1, hash)
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    gp_base64_encode(hash, 32, csh);

    p = ngx_pnalloc(r->pool, 512 + ucf->front_url.len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v.data = p;
    v.len = ngx_sprintf(p, "default-src 'none'; style-src 'unsafe-inline'; "
                           "script-src 'sha256-%s'; form-action %V; "
                           "base-uri 'none'; frame-ancestors 'none'",
                        csh, &ucf->front_url)
            - p;

    if (ngx_http_gov_pay_add_header(r, "Content-Security-Policy", &v)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    content.len = 1024 + ucf->front_url.len;

    for (i = 0; i < n; i++) {
        content.len += 64 + kv[i].key_len + 6 * kv[i].value_len;
    }

    content.data = ngx_pnalloc(r->pool, content.len);
    if (content.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = content.data;
    last = content.data + content.len;

    p = ngx_slprintf(p, last,
                     "<h1>正在前往银联支付</h1><div class=\"card\">"
                     "<form id=\"up\" method=\"post\" action=\"%V\">",
                     &ucf->front_url);

    for (i = 0; i < n; i++) {
        esc.len = kv[i].value_len
                  + ngx_escape_html(NULL, (u_char *) kv[i].value,
                                    kv[i].value_len);
        esc.data = ngx_pnalloc(r->pool, esc.len);
        if (esc.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_escape_html(esc.data, (u_char *) kv[i].value, kv[i].value_len);

        p = ngx_slprintf(p, last,
                         "<input type=\"hidden\" name=\"%s\" value=\"%V\">",
                         kv[i].key, &esc);
    }

    p = ngx_slprintf(p, last,
                     "<button class=\"btn\" type=\"submit\">继续支付</button>"
                     "</form></div><script>%s</script>",
                     ngx_http_gov_pay_unionpay_script);

    content.len = p - content.data;

    return ngx_http_gov_pay_page(r, NGX_HTTP_OK, "银联支付", &content);
}


static ngx_int_t
ngx_http_gov_pay_unionpay_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s)
{
    char                          *canon, hex[65];
    size_t                         len, siglen;
    ngx_int_t                      rc, verified;
    ngx_str_t                      mer_id, amount, resp, txn_type;
    gp_form_t                      form;
    unsigned char                  sig[GP_SIG_MAX];
    const gp_kv_t                 *sign;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    static const char             *skip[] = { "signature", NULL };

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ctx->body.len > 32768
        || gp_form_parse((const char *) ctx->body.data, ctx->body.len, &form)
           != 0)
    {
        ngx_http_gov_pay_refused(r, "unionpay", "the body is not a form");
        return NGX_DECLINED;
    }

    /* verify before anything else is read */

    verified = 0;
    sign = gp_form_get(&form, "signature");

    if (ngx_http_gov_pay_form_unique(&form) == NGX_OK
        && sign && sign->value_len > 0 && sign->value_len < GP_SIG_MAX
        && gp_base64_decode(sign->value, sign->value_len, sig, &siglen) == 0)
    {
        canon = gp_form_canonical(&form, skip, 0, &len);

        if (canon) {
            verified = ngx_http_gov_pay_unionpay_digest(canon, len, hex)
                       && gp_pkey_verify(gpmcf->unionpay.verify_key,
                                         GP_SIG_RSA_SHA256, hex, 64, sig,
                                         siglen)
                          == 1;
            free(canon);
        }
    }

    if (!verified) {
        gp_form_free(&form);
        ngx_http_gov_pay_refused(r, "unionpay", "signature does not verify");
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    if (ngx_http_gov_pay_form_token(r, &form, "merId", 15, 0, &mer_id)
           != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "txnType", 2, 1, &txn_type)
           != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "orderId", 40, 0, &s->code)
           != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "queryId", 64, 0,
                                       &s->trade_no) != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "txnAmt", 12, 1, &amount)
           != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "respCode", 8, 0, &resp)
           != NGX_OK)
    {
        ngx_http_gov_pay_refused(r, "unionpay", "lacks a field");
        goto done;
    }

    if (mer_id.len != gpmcf->unionpay.mer_id.len
        || ngx_strncmp(mer_id.data, gpmcf->unionpay.mer_id.data, mer_id.len)
           != 0)
    {
        ngx_http_gov_pay_refused(r, "unionpay", "for another merId");
        goto done;
    }

    s->amount = ngx_atoof(amount.data, amount.len);
    s->paid_at = ngx_time();
    s->success = (resp.len == 2 && resp.data[0] == '0'
                  && resp.data[1] == '0');

    /*
     * 01: the consume (a payment); 04: a refund (退货), whose orderId is
     * our refund id and whose respCode says how it ended; any other
     * transaction is not ours to act on
     */

    if (txn_type.data[0] == '0' && txn_type.data[1] == '4') {
        s->refund = 1;
        s->final = 1;

        if (!s->success) {
            s->error = resp;
        }

    } else if (txn_type.data[0] != '0' || txn_type.data[1] != '1') {
        ngx_http_gov_pay_refused(r, "unionpay", "for another txnType");
        goto done;
    }

    rc = NGX_OK;

done:

    gp_form_free(&form);
    return rc;
}


static ngx_int_t
ngx_http_gov_pay_unionpay_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome)
{
    return ngx_http_gov_pay_text_reply(r, outcome, "ok");
}
