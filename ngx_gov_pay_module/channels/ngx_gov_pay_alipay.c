
/*
 * The Alipay channel: mobile web payment (alipay.trade.wap.pay) and its
 * asynchronous notification; on where gov_pay_alipay_app_id, _gateway,
 * _app_key and _public_key are all set (docs/channels.md).
 *
 * Hand-off: a 302 to the configured gateway with the public request
 * parameters (app_id, method, format=JSON, charset=utf-8, sign_type=RSA2,
 * timestamp, version=1.0, notify_url, return_url, biz_content) signed with
 * the app private key: every non-empty parameter but sign, sorted by name,
 * joined as k=v&k=v (values as they are, not encoded), SHA256withRSA,
 * base64; then every value URL-encoded.  Signing costs about 0.3 ms of a
 * core, so the signed URL is made once per notice and kept as the notice's
 * field "alipay_url" (cache.lua); biz_content.time_expire is the notice's
 * due time, so the URL is good for as long as the notice is payable.
 *
 * Callback (POST /notify/alipay): a form; its Content-Type is matched by
 * prefix only (Alipay has sent "application/x-www-form-urlencoded;
 * text/html; charset=utf-8").  Verified first: every non-empty field but
 * sign and sign_type, form-decoded once, sorted, k=v&k=v, SHA256withRSA
 * with the Alipay public key.  The bytes are verified as they arrive, in
 * whatever charset the notification declares (utf-8 or GBK): the edge keeps
 * only ASCII fields (app_id, out_trade_no, trade_no, total_amount,
 * trade_status, gmt_payment), so nothing is converted.  Replies: 200
 * "success" once the money is accounted for; 200 "fail" otherwise, which
 * Alipay retries.
 */


#include "ngx_gov_pay_channel.h"


#define NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS  10


static ngx_int_t ngx_http_gov_pay_alipay_enabled(
    ngx_http_gov_pay_main_conf_t *gpmcf);
static ngx_int_t ngx_http_gov_pay_alipay_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_alipay_url(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *url);
static ngx_int_t ngx_http_gov_pay_alipay_cached(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_alipay_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s);
static ngx_int_t ngx_http_gov_pay_alipay_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome);
static ngx_int_t ngx_http_gov_pay_alipay_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf);


const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_alipay_channel = {
    ngx_string("alipay"),
    "支付宝",
    ngx_http_gov_pay_alipay_enabled,
    ngx_http_gov_pay_alipay_handoff,
    ngx_http_gov_pay_alipay_callback,
    ngx_http_gov_pay_alipay_reply,
    ngx_http_gov_pay_alipay_init_conf
};


static ngx_int_t
ngx_http_gov_pay_alipay_enabled(ngx_http_gov_pay_main_conf_t *gpmcf)
{
    return gpmcf->alipay.app_key != NULL && gpmcf->alipay.public_key != NULL;
}


static ngx_int_t
ngx_http_gov_pay_alipay_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_uint_t                       on;
    ngx_http_gov_pay_alipay_conf_t  *acf;

    static const char  *names[] = {
        "gov_pay_alipay_app_id", "gov_pay_alipay_gateway",
        "gov_pay_alipay_app_key", "gov_pay_alipay_public_key", NULL
    };

    acf = &gpmcf->alipay;

    {
        ngx_str_t  *values[] = {
            &acf->app_id, &acf->gateway, &acf->app_key_file,
            &acf->public_key_file
        };

        if (ngx_http_gov_pay_conf_complete(cf, "alipay", values, names, &on)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!on) {
        return NGX_OK;
    }

    if (acf->app_id.len > 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_alipay_app_id\" is longer "
                           "than 32 characters");
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_conf_url(cf, &acf->gateway, "gov_pay_alipay_gateway")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    acf->app_key = ngx_http_gov_pay_conf_pkey(cf, &acf->app_key_file, 1,
                                              "gov_pay_alipay_app_key");
    if (acf->app_key == NULL) {
        return NGX_ERROR;
    }

    acf->public_key = ngx_http_gov_pay_conf_pkey(cf, &acf->public_key_file, 0,
                                                 "gov_pay_alipay_public_key");
    if (acf->public_key == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_alipay_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_int_t                      rc;
    ngx_str_t                     *cached, *gw, argv[4];
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    gw = &gpmcf->alipay.gateway;

    /* signed before: only ever a URL on the configured gateway */

    cached = ngx_http_gov_pay_field(ctx, "alipay_url");

    if (cached && cached->len > gw->len
        && ngx_strncmp(cached->data, gw->data, gw->len) == 0
        && cached->data[gw->len] == '?')
    {
        return ngx_http_gov_pay_redirect(r, cached);
    }

    /* ctx->body is free on a payer route: it holds the URL meanwhile */

    rc = ngx_http_gov_pay_alipay_url(r, gpmcf, ctx, &ctx->body);
    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "n:%uL",
                             ctx->seq)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a kept URL for another gateway is replaced */

    ngx_str_set(&argv[1], "alipay_url");
    argv[2] = ctx->body;

    if (cached) {
        argv[3] = *cached;
    }

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_CACHE, 1,
                                  cached ? 4 : 3, argv,
                                  ngx_http_gov_pay_alipay_cached);
}


static ngx_int_t
ngx_http_gov_pay_alipay_cached(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    /* the store is away: the URL is good all the same, only not kept */

    if (reply == NULL) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "gov_pay: alipay url of %V not cached: store "
                      "unavailable", &ctx->code);
    }

    return ngx_http_gov_pay_redirect(r, &ctx->body);
}


static ngx_int_t
ngx_http_gov_pay_alipay_url(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *url)
{
    u_char          *p, *last, *subject, yuan[32], ts[20], texp[20];
    u_char           notify[512], quit[512];
    char            *canon, *biz, *enc[NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS + 1];
    char             b64[GP_SIG_MAX * 2];
    size_t           len, n, enclen[NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS + 1];
    size_t           siglen;
    json_t          *doc;
    ngx_int_t        rc;
    ngx_str_t       *item;
    ngx_uint_t       i;
    gp_kv_t          kv[NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS];
    gp_form_t        form;
    unsigned char    sig[GP_SIG_MAX];
    const gp_item_t  *it;

    if (gp_fen_to_yuan(ngx_http_gov_pay_field_int(ctx, "amount"),
                       (char *) yuan, sizeof(yuan)) < 0)
    {
        return NGX_ERROR;
    }

    *ngx_http_gov_pay_cst_time(ts, ngx_time(), 1) = '\0';
    *ngx_http_gov_pay_cst_time(texp,
                               ngx_http_gov_pay_field_int(ctx, "due_at"), 1)
        = '\0';

    *ngx_snprintf(notify, sizeof(notify) - 1, "%V/notify/alipay",
                  &gpmcf->public_url) = '\0';
    *ngx_snprintf(quit, sizeof(quit) - 1, "%V/q/%V", &gpmcf->public_url,
                  &ctx->code) = '\0';

    /* the subject is the item's name, without the characters Alipay bars */

    item = ngx_http_gov_pay_field(ctx, "item_code");
    it = item ? gp_registry_item(gpmcf->registry, (char *) item->data,
                                 item->len)
              : NULL;

    n = ngx_strlen(it ? it->name : "非税收入");
    subject = ngx_pnalloc(r->pool, n + 1);
    if (subject == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(subject, it ? it->name : "非税收入", n + 1);

    for (p = subject; *p; p++) {
        if (*p == '/' || *p == '=' || *p == '&' || *p < 0x20) {
            *p = ' ';
        }
    }

    doc = json_pack("{s:s%,s:s,s:s,s:s,s:s,s:s}",
                    "out_trade_no", ctx->code.data, ctx->code.len,
                    "total_amount", (char *) yuan,
                    "subject", (char *) subject,
                    "product_code", "QUICK_WAP_WAY",
                    "quit_url", (char *) quit,
                    "time_expire", (char *) texp);
    if (doc == NULL) {
        return NGX_ERROR;
    }

    biz = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    if (biz == NULL) {
        return NGX_ERROR;
    }

    /* the public parameters, by name */

    kv[0].key = (char *) "app_id";
    kv[0].value = (char *) gpmcf->alipay.app_id.data;
    kv[1].key = (char *) "biz_content";
    kv[1].value = biz;
    kv[2].key = (char *) "charset";
    kv[2].value = (char *) "utf-8";
    kv[3].key = (char *) "format";
    kv[3].value = (char *) "JSON";
    kv[4].key = (char *) "method";
    kv[4].value = (char *) "alipay.trade.wap.pay";
    kv[5].key = (char *) "notify_url";
    kv[5].value = (char *) notify;
    kv[6].key = (char *) "return_url";
    kv[6].value = (char *) quit;
    kv[7].key = (char *) "sign_type";
    kv[7].value = (char *) "RSA2";
    kv[8].key = (char *) "timestamp";
    kv[8].value = (char *) ts;
    kv[9].key = (char *) "version";
    kv[9].value = (char *) "1.0";

    for (i = 0; i < NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS; i++) {
        kv[i].key_len = ngx_strlen(kv[i].key);
        kv[i].value_len = (i == 0) ? gpmcf->alipay.app_id.len
                                   : ngx_strlen(kv[i].value);
        enc[i] = NULL;
    }

    enc[NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS] = NULL;

    form.kv = kv;
    form.n = NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS;

    rc = NGX_ERROR;

    canon = gp_form_canonical(&form, NULL, 1, &len);
    if (canon == NULL) {
        goto done;
    }

    if (gp_pkey_sign(gpmcf->alipay.app_key, GP_SIG_RSA_SHA256, canon, len,
                     sig, &siglen)
        != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "gov_pay: signing the alipay request for %V failed",
                      &ctx->code);
        free(canon);
        goto done;
    }

    free(canon);

    n = gp_base64_encode(sig, siglen, b64);

    /* the URL: every value percent-encoded, the signature last */

    len = gpmcf->alipay.gateway.len + 1;

    for (i = 0; i <= NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS; i++) {
        if (i == NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS) {
            enc[i] = gp_url_encode(b64, n, &enclen[i]);
            len += sizeof("sign=") - 1;

        } else {
            enc[i] = gp_url_encode(kv[i].value, kv[i].value_len, &enclen[i]);
            len += kv[i].key_len + 2;
        }

        if (enc[i] == NULL) {
            goto done;
        }

        len += enclen[i];
    }

    url->data = ngx_pnalloc(r->pool, len);
    if (url->data == NULL) {
        goto done;
    }

    p = url->data;
    last = url->data + len;

    p = ngx_slprintf(p, last, "%V?", &gpmcf->alipay.gateway);

    for (i = 0; i < NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS; i++) {
        p = ngx_slprintf(p, last, "%s=%*s&", kv[i].key, enclen[i], enc[i]);
    }

    p = ngx_slprintf(p, last, "sign=%*s", enclen[i], enc[i]);

    url->len = p - url->data;

    rc = NGX_OK;

done:

    for (i = 0; i <= NGX_HTTP_GOV_PAY_ALIPAY_NPARAMS; i++) {
        free(enc[i]);
    }

    free(biz);

    return rc;
}


static ngx_int_t
ngx_http_gov_pay_alipay_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s)
{
    char                          *canon;
    size_t                         len, siglen;
    time_t                         t;
    ngx_int_t                      rc, verified;
    ngx_str_t                      app_id, total, status;
    gp_form_t                      form;
    unsigned char                  sig[GP_SIG_MAX];
    const gp_kv_t                 *sign, *sign_type, *gmt;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    static const char             *skip[] = { "sign", "sign_type", NULL };

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (!ngx_http_gov_pay_content_type_is(r,
                                          "application/x-www-form-urlencoded"))
    {
        ngx_http_gov_pay_refused(r, "alipay", "the Content-Type is not a form");
        return NGX_DECLINED;
    }

    if (ctx->body.len > 16384
        || gp_form_parse((const char *) ctx->body.data, ctx->body.len, &form)
           != 0)
    {
        ngx_http_gov_pay_refused(r, "alipay", "the body is not a form");
        return NGX_DECLINED;
    }

    /* verify before anything else is read */

    verified = 0;
    sign = gp_form_get(&form, "sign");
    sign_type = gp_form_get(&form, "sign_type");

    if (ngx_http_gov_pay_form_unique(&form) == NGX_OK
        && sign && sign->value_len > 0 && sign->value_len < GP_SIG_MAX
        && sign_type && sign_type->value_len == 4
        && ngx_strncmp(sign_type->value, "RSA2", 4) == 0
        && gp_base64_decode(sign->value, sign->value_len, sig, &siglen) == 0)
    {
        canon = gp_form_canonical(&form, skip, 1, &len);

        if (canon) {
            verified = (gp_pkey_verify(gpmcf->alipay.public_key,
                                       GP_SIG_RSA_SHA256, canon, len, sig,
                                       siglen)
                        == 1);
            free(canon);
        }
    }

    if (!verified) {
        gp_form_free(&form);
        ngx_http_gov_pay_refused(r, "alipay", "signature does not verify");
        return NGX_DECLINED;
    }

    rc = NGX_DECLINED;

    if (ngx_http_gov_pay_form_token(r, &form, "app_id", 32, 0, &app_id)
           != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "out_trade_no", 64, 0,
                                       &s->code) != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "trade_no", 64, 0,
                                       &s->trade_no) != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "total_amount", 20, 0,
                                       &total) != NGX_OK
        || ngx_http_gov_pay_form_token(r, &form, "trade_status", 32, 0,
                                       &status) != NGX_OK)
    {
        ngx_http_gov_pay_refused(r, "alipay", "lacks a field");
        goto done;
    }

    if (app_id.len != gpmcf->alipay.app_id.len
        || ngx_strncmp(app_id.data, gpmcf->alipay.app_id.data, app_id.len)
           != 0)
    {
        ngx_http_gov_pay_refused(r, "alipay", "for another app_id");
        goto done;
    }

    if (gp_yuan_to_fen((char *) total.data, total.len, &s->amount) != 0) {
        ngx_http_gov_pay_refused(r, "alipay", "total_amount is no amount");
        goto done;
    }

    /* gmt_payment is Beijing time; absent in states other than paid */

    s->paid_at = ngx_time();
    gmt = gp_form_get(&form, "gmt_payment");

    if (gmt) {
        t = ngx_http_gov_pay_cst_parse((u_char *) gmt->value, gmt->value_len,
                                       1);
        if (t > 0) {
            s->paid_at = t;
        }
    }

    s->success = (status.len == 13
                  && ngx_strncmp(status.data, "TRADE_SUCCESS", 13) == 0)
                 || (status.len == 14
                     && ngx_strncmp(status.data, "TRADE_FINISHED", 14) == 0);

    rc = NGX_OK;

done:

    gp_form_free(&form);
    return rc;
}


static ngx_int_t
ngx_http_gov_pay_alipay_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome)
{
    ngx_str_t  body;

    if (outcome == NGX_HTTP_GOV_PAY_CB_ACCEPTED) {
        ngx_str_set(&body, "success");

    } else {
        ngx_str_set(&body, "fail");
    }

    return ngx_http_gov_pay_send(r, NGX_HTTP_OK, "text/plain; charset=utf-8",
                                 &body);
}
