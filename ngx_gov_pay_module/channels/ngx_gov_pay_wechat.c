
/*
 * The WeChat Pay channel: APIv3 JSAPI payment inside WeChat, and its
 * payment notification; on where every gov_pay_wechat_* setting it needs
 * is present (docs/channels.md).
 *
 * Hand-off, in three steps, none of which blocks:
 *
 *   1. /q/{code} (or /pay/wechat/{code}) without an OAuth code: a 302 to
 *      the configured OAuth2 authorize page, scope snsapi_base, back to
 *      /pay/wechat/{code}.
 *   2. /pay/wechat/{code}?code=<oauth code>: a subrequest to the internal
 *      location gov_pay_wechat_oauth_location (ops proxy_pass it to
 *      /sns/oauth2/access_token) with appid, secret, code and grant_type in
 *      its arguments; its answer holds the payer's openid.
 *   3. a subrequest to gov_pay_wechat_prepay_location (ops proxy_pass it to
 *      /v3/pay/transactions/jsapi with proxy_method POST, proxy_set_body
 *      $gov_pay_wechat_body and proxy_set_header Authorization
 *      $gov_pay_wechat_authorization): the order, signed by the merchant
 *      key as WECHATPAY2-SHA256-RSA2048 over "POST\n<path>\n<ts>\n<nonce>\n
 *      <body>\n".  Its answer must be signed by a platform key we know
 *      (Wechatpay-Serial); it holds the prepay_id.
 *
 *   The payer then sees the JSAPI page, which calls getBrandWCPayRequest
 *   with appId, timeStamp, nonceStr, package "prepay_id=…", signType RSA
 *   and paySign (merchant key over "appId\ntimeStamp\nnonceStr\npackage\n").
 *   The subrequests' answers are read in memory (post_subrequest handler,
 *   sr->out), as ngx_http_auth_request_module and SSI do.
 *
 * Callback (POST /notify/wechat): verified first: SHA256withRSA of
 * "Wechatpay-Timestamp\nWechatpay-Nonce\n<body>\n" with the platform key
 * named by Wechatpay-Serial (an unknown serial fails), the timestamp within
 * gov_pay_wechat_notify_window of our clock; then resource is decrypted
 * with AES-256-GCM (APIv3 key, resource.nonce, resource.associated_data,
 * the 16-byte tag at the end of the ciphertext).  appid and mchid must be
 * ours; amount.total (fen) is what settles; only trade_state SUCCESS
 * settles.  Replies: 204 once the money is accounted for; 400, 404 or 503
 * with {"code":"FAIL","message":"…"} otherwise, which WeChat Pay retries.
 */


#include "ngx_gov_pay_channel.h"
#include "gp_wechat.h"


#define NGX_HTTP_GOV_PAY_WECHAT_OAUTH   1
#define NGX_HTTP_GOV_PAY_WECHAT_PREPAY  2

#define NGX_HTTP_GOV_PAY_WECHAT_PATH    "/v3/pay/transactions/jsapi"


typedef struct {
    ngx_uint_t                 step;
    ngx_uint_t                 status;       /* of the subrequest */
    ngx_str_t                  reply;        /* its body */
    ngx_str_t                  timestamp;    /* its Wechatpay-* headers */
    ngx_str_t                  nonce;
    ngx_str_t                  signature;
    ngx_str_t                  serial;
    ngx_str_t                  openid;
    ngx_str_t                  authorization;
    ngx_str_t                  body;
} ngx_http_gov_pay_wechat_state_t;


static ngx_int_t ngx_http_gov_pay_wechat_enabled(
    ngx_http_gov_pay_main_conf_t *gpmcf);
static ngx_int_t ngx_http_gov_pay_wechat_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_wechat_oauth(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_wechat_sub_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static ngx_int_t ngx_http_gov_pay_wechat_refund(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, u_char *plain, size_t plen,
    gp_wechat_refund_t *rf, ngx_http_gov_pay_settlement_t *s);
static ngx_int_t ngx_http_gov_pay_wechat_str(ngx_http_request_t *r,
    const char *v, ngx_str_t *out);
static ngx_int_t ngx_http_gov_pay_wechat_resume(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_wechat_prepay(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_http_gov_pay_wechat_state_t *st);
static ngx_int_t ngx_http_gov_pay_wechat_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_http_gov_pay_wechat_state_t *st);
static ngx_int_t ngx_http_gov_pay_wechat_failed(ngx_http_request_t *r,
    const char *why);
static ngx_int_t ngx_http_gov_pay_wechat_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s);
static ngx_int_t ngx_http_gov_pay_wechat_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome);
static ngx_int_t ngx_http_gov_pay_wechat_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf);
static ngx_int_t ngx_http_gov_pay_wechat_verify(
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_str_t *serial, ngx_str_t *ts,
    ngx_str_t *nonce, ngx_str_t *signature, ngx_str_t *body);
static ngx_str_t *ngx_http_gov_pay_wechat_header(ngx_list_t *headers,
    const char *name);
static ngx_int_t ngx_http_gov_pay_wechat_nonce(ngx_http_request_t *r,
    ngx_str_t *nonce);


const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_wechat_channel = {
    ngx_string("wechat"),
    "微信支付",
    ngx_http_gov_pay_wechat_enabled,
    ngx_http_gov_pay_wechat_handoff,
    ngx_http_gov_pay_wechat_callback,
    ngx_http_gov_pay_wechat_reply,
    ngx_http_gov_pay_wechat_init_conf
};


static ngx_int_t
ngx_http_gov_pay_wechat_enabled(ngx_http_gov_pay_main_conf_t *gpmcf)
{
    return gpmcf->wechat.merchant_key != NULL
           && gpmcf->wechat.apiv3_key.len == 32
           && gpmcf->wechat.platform_keys != NULL;
}


/* configuration */

char *
ngx_http_gov_pay_wechat_platform_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = conf;

    ngx_str_t                      *value;
    ngx_uint_t                      i;
    ngx_http_gov_pay_wechat_key_t  *k;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 64
        || !gp_wechat_token((char *) value[1].data,
                                          value[1].len, 64))
    {
        return "needs a serial of 1 to 64 letters, digits, \"_\" or \"-\"";
    }

    if (gpmcf->wechat.platform_keys == NULL) {
        gpmcf->wechat.platform_keys = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_gov_pay_wechat_key_t));
        if (gpmcf->wechat.platform_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    k = gpmcf->wechat.platform_keys->elts;

    for (i = 0; i < gpmcf->wechat.platform_keys->nelts; i++) {
        if (k[i].serial.len == value[1].len
            && ngx_strncmp(k[i].serial.data, value[1].data, value[1].len)
               == 0)
        {
            return "names a serial twice";
        }
    }

    k = ngx_array_push(gpmcf->wechat.platform_keys);
    if (k == NULL) {
        return NGX_CONF_ERROR;
    }

    k->serial = value[1];
    k->key = ngx_http_gov_pay_conf_pkey(cf, &value[2], 0,
                                        "gov_pay_wechat_platform_key");
    if (k->key == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_gov_pay_wechat_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_str_t                       platform;
    ngx_uint_t                      on;
    ngx_http_gov_pay_wechat_conf_t  *wcf;

    static const char  *names[] = {
        "gov_pay_wechat_mchid", "gov_pay_wechat_appid",
        "gov_pay_wechat_app_secret", "gov_pay_wechat_merchant_serial",
        "gov_pay_wechat_merchant_key", "gov_pay_wechat_apiv3_key",
        "gov_pay_wechat_platform_key", "gov_pay_wechat_oauth_location",
        "gov_pay_wechat_prepay_location", NULL
    };

    wcf = &gpmcf->wechat;

    ngx_str_null(&platform);
    if (wcf->platform_keys) {
        ngx_str_set(&platform, "set");
    }

    {
        ngx_str_t  *values[] = {
            &wcf->mchid, &wcf->appid, &wcf->app_secret_file,
            &wcf->merchant_serial, &wcf->merchant_key_file,
            &wcf->apiv3_key_file, &platform, &wcf->oauth_location,
            &wcf->prepay_location
        };

        if (ngx_http_gov_pay_conf_complete(cf, "wechat", values, names, &on)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (!on) {
        return NGX_OK;
    }

    if (!gp_wechat_token((char *) wcf->mchid.data,
                                       wcf->mchid.len, 32)
        || !gp_wechat_token((char *) wcf->appid.data,
                                          wcf->appid.len, 32)
        || !gp_wechat_token((char *) wcf->merchant_serial.data,
                                          wcf->merchant_serial.len, 64))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_wechat_mchid\", "
                           "\"gov_pay_wechat_appid\" and "
                           "\"gov_pay_wechat_merchant_serial\" must be "
                           "letters, digits, \"_\" or \"-\"");
        return NGX_ERROR;
    }

    if (wcf->oauth_location.data[0] != '/'
        || wcf->prepay_location.data[0] != '/')
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_wechat_oauth_location\" and "
                           "\"gov_pay_wechat_prepay_location\" must be "
                           "locations (\"/…\")");
        return NGX_ERROR;
    }

    if (wcf->oauth_url.len == 0) {
        ngx_str_set(&wcf->oauth_url,
                    "https://open.weixin.qq.com/connect/oauth2/authorize");
    }

    if (ngx_http_gov_pay_conf_url(cf, &wcf->oauth_url,
                                  "gov_pay_wechat_oauth_url")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (wcf->notify_window < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_wechat_notify_window\" must "
                           "be at least 1s");
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_conf_secret(cf, &wcf->apiv3_key_file,
                                     &wcf->apiv3_key,
                                     "gov_pay_wechat_apiv3_key")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (wcf->apiv3_key.len != 32) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_wechat_apiv3_key\": \"%V\" "
                           "must hold the 32-character APIv3 key",
                           &wcf->apiv3_key_file);
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_conf_secret(cf, &wcf->app_secret_file,
                                     &wcf->app_secret,
                                     "gov_pay_wechat_app_secret")
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!gp_wechat_token((char *) wcf->app_secret.data,
                                       wcf->app_secret.len, 64))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_wechat_app_secret\": \"%V\" "
                           "must hold the AppSecret (letters and digits)",
                           &wcf->app_secret_file);
        return NGX_ERROR;
    }

    wcf->merchant_key = ngx_http_gov_pay_conf_pkey(cf, &wcf->merchant_key_file,
                                                 1,
                                                 "gov_pay_wechat_merchant_key");
    if (wcf->merchant_key == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* $gov_pay_wechat_authorization (data 0), $gov_pay_wechat_body (data 1) */

ngx_int_t
ngx_http_gov_pay_wechat_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                        *s;
    ngx_http_gov_pay_ctx_t           *ctx;
    ngx_http_gov_pay_wechat_state_t  *st;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_gov_pay_module);
    st = ctx ? ctx->channel_data : NULL;

    if (st == NULL || st->step != NGX_HTTP_GOV_PAY_WECHAT_PREPAY) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (data == 0) ? &st->authorization : &st->body;

    v->data = s->data;
    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* helpers */

static ngx_str_t *
ngx_http_gov_pay_wechat_header(ngx_list_t *headers, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i].value;
        }
    }
}


static ngx_int_t
ngx_http_gov_pay_wechat_nonce(ngx_http_request_t *r, ngx_str_t *nonce)
{
    u_char  rnd[16];

    if (gp_random_bytes(rnd, sizeof(rnd)) != 0) {
        return NGX_ERROR;
    }

    nonce->data = ngx_pnalloc(r->pool, 33);
    if (nonce->data == NULL) {
        return NGX_ERROR;
    }

    gp_hex(rnd, sizeof(rnd), (char *) nonce->data);
    nonce->len = 32;

    return NGX_OK;
}


/* 1: verified with the platform key of that serial; 0: not */

static ngx_int_t
ngx_http_gov_pay_wechat_verify(ngx_http_gov_pay_main_conf_t *gpmcf,
    ngx_str_t *serial, ngx_str_t *ts, ngx_str_t *nonce, ngx_str_t *signature,
    ngx_str_t *body)
{
    u_char                         *msg, *p;
    size_t                          len, siglen;
    ngx_int_t                       ok;
    ngx_uint_t                      i;
    unsigned char                   sig[GP_SIG_MAX];
    ngx_http_gov_pay_wechat_key_t  *k;

    if (serial == NULL || ts == NULL || nonce == NULL || signature == NULL
        || signature->len == 0 || signature->len >= GP_SIG_MAX
        || gp_base64_decode((char *) signature->data, signature->len, sig,
                            &siglen) != 0)
    {
        return 0;
    }

    k = gpmcf->wechat.platform_keys->elts;

    for (i = 0; i < gpmcf->wechat.platform_keys->nelts; i++) {
        if (k[i].serial.len == serial->len
            && ngx_strncmp(k[i].serial.data, serial->data, serial->len) == 0)
        {
            break;
        }
    }

    if (i == gpmcf->wechat.platform_keys->nelts) {
        return 0;
    }

    len = ts->len + nonce->len + body->len + 3;

    msg = ngx_alloc(len, ngx_cycle->log);
    if (msg == NULL) {
        return 0;
    }

    p = ngx_sprintf(msg, "%V\n%V\n", ts, nonce);
    p = ngx_cpymem(p, body->data, body->len);
    *p++ = '\n';

    ok = (gp_pkey_verify(k[i].key, GP_SIG_RSA_SHA256, msg, p - msg, sig,
                         siglen)
          == 1);

    ngx_free(msg);

    return ok;
}


/* hand-off */

static ngx_int_t
ngx_http_gov_pay_wechat_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    u_char                           *p, *last;
    size_t                            len;
    char                             *enc;
    ngx_str_t                         code, uri, args, url;
    ngx_http_gov_pay_main_conf_t     *gpmcf;
    ngx_http_gov_pay_wechat_conf_t   *wcf;
    ngx_http_gov_pay_wechat_state_t  *st;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    wcf = &gpmcf->wechat;

    /* back from the OAuth hop: /pay/wechat/{code}?code=…&state=gp */

    if (ngx_http_arg(r, (u_char *) "code", 4, &code) == NGX_OK
        && gp_wechat_token((char *) code.data, code.len, 128))
    {
        st = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_wechat_state_t));
        if (st == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        st->step = NGX_HTTP_GOV_PAY_WECHAT_OAUTH;
        ctx->channel_data = st;

        args.len = sizeof("appid=&secret=&code=&grant_type="
                          "authorization_code") - 1
                   + wcf->appid.len + wcf->app_secret.len + code.len;
        args.data = ngx_pnalloc(r->pool, args.len);
        if (args.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(args.data, "appid=%V&secret=%V&code=%V"
                    "&grant_type=authorization_code",
                    &wcf->appid, &wcf->app_secret, &code);

        uri = wcf->oauth_location;

        return ngx_http_gov_pay_subrequest(r, &uri, &args,
                                           ngx_http_gov_pay_wechat_sub_done,
                                           ctx,
                                           ngx_http_gov_pay_wechat_resume);
    }

    /* the payer's openid first: the snsapi_base OAuth2 hop */

    p = ngx_pnalloc(r->pool, gpmcf->public_url.len + 64);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = ngx_sprintf(p, "%V/pay/wechat/%V", &gpmcf->public_url, &ctx->code);

    enc = gp_url_encode((char *) p, last - p, &len);
    if (enc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    url.len = wcf->oauth_url.len + wcf->appid.len + len
              + sizeof("?appid=&redirect_uri=&response_type=code"
                       "&scope=snsapi_base&state=gp#wechat_redirect") - 1;
    url.data = ngx_pnalloc(r->pool, url.len);
    if (url.data == NULL) {
        free(enc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(url.data, "%V?appid=%V&redirect_uri=%*s&response_type=code"
                "&scope=snsapi_base&state=gp#wechat_redirect",
                &wcf->oauth_url, &wcf->appid, len, enc);

    free(enc);

    return ngx_http_gov_pay_redirect(r, &url);
}


static ngx_int_t
ngx_http_gov_pay_wechat_sub_done(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_gov_pay_ctx_t *ctx = data;

    ngx_str_t                        *h;
    ngx_http_gov_pay_wechat_state_t  *st;

    st = ctx->channel_data;

    st->status = (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE)
                 ? NGX_HTTP_BAD_GATEWAY : sr->headers_out.status;

    ngx_str_null(&st->reply);

    if (sr->out && sr->out->buf) {
        st->reply.len = sr->out->buf->last - sr->out->buf->pos;
        st->reply.data = ngx_pnalloc(ctx->request->pool, st->reply.len + 1);
        if (st->reply.data == NULL) {
            st->status = NGX_HTTP_INTERNAL_SERVER_ERROR;
            return rc;
        }

        ngx_memcpy(st->reply.data, sr->out->buf->pos, st->reply.len);
        st->reply.data[st->reply.len] = '\0';
    }

    ngx_str_null(&st->timestamp);
    ngx_str_null(&st->nonce);
    ngx_str_null(&st->signature);
    ngx_str_null(&st->serial);

    if ((h = ngx_http_gov_pay_wechat_header(&sr->headers_out.headers,
                                            "Wechatpay-Timestamp")))
    {
        st->timestamp = *h;
    }

    if ((h = ngx_http_gov_pay_wechat_header(&sr->headers_out.headers,
                                            "Wechatpay-Nonce")))
    {
        st->nonce = *h;
    }

    if ((h = ngx_http_gov_pay_wechat_header(&sr->headers_out.headers,
                                            "Wechatpay-Signature")))
    {
        st->signature = *h;
    }

    if ((h = ngx_http_gov_pay_wechat_header(&sr->headers_out.headers,
                                            "Wechatpay-Serial")))
    {
        st->serial = *h;
    }

    return rc;
}


/* the parent request, once a subrequest's answer is in */

static ngx_int_t
ngx_http_gov_pay_wechat_resume(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_http_gov_pay_main_conf_t     *gpmcf;
    ngx_http_gov_pay_wechat_state_t  *st;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    st = ctx->channel_data;

    if (st->step == NGX_HTTP_GOV_PAY_WECHAT_OAUTH) {
        return ngx_http_gov_pay_wechat_oauth(r, gpmcf, ctx);
    }

    return ngx_http_gov_pay_wechat_page(r, gpmcf, ctx, st);
}


static ngx_int_t
ngx_http_gov_pay_wechat_failed(ngx_http_request_t *r, const char *why)
{
    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "gov_pay: wechat hand-off failed: %s", why);

    return ngx_http_gov_pay_message(r, NGX_HTTP_BAD_GATEWAY, "微信支付暂不可用",
                                    "暂时无法发起微信支付，请稍后重试，或返回"
                                    "收银台选择其他支付方式。");
}


/* step 2 done: the openid; step 3: the prepay request */

static ngx_int_t
ngx_http_gov_pay_wechat_oauth(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    json_t                           *doc;
    const char                       *openid;
    ngx_http_gov_pay_wechat_state_t  *st;

    st = ctx->channel_data;

    if (st->status != NGX_HTTP_OK || st->reply.len == 0) {
        return ngx_http_gov_pay_wechat_failed(r, "oauth answer is not 200");
    }

    doc = json_loadb((char *) st->reply.data, st->reply.len, 0, NULL);
    openid = doc ? json_string_value(json_object_get(doc, "openid")) : NULL;

    if (openid == NULL
        || !gp_wechat_token(openid, ngx_strlen(openid), 128))
    {
        json_decref(doc);
        return ngx_http_gov_pay_wechat_failed(r, "oauth answer has no openid");
    }

    st->openid.len = ngx_strlen(openid);
    st->openid.data = ngx_pnalloc(r->pool, st->openid.len);
    if (st->openid.data == NULL) {
        json_decref(doc);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(st->openid.data, openid, st->openid.len);
    json_decref(doc);

    return ngx_http_gov_pay_wechat_prepay(r, gpmcf, ctx, st);
}


static ngx_int_t
ngx_http_gov_pay_wechat_prepay(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_http_gov_pay_wechat_state_t *st)
{
    u_char           *p, *msg, notify[512], expire[26];
    char             *body, b64[GP_SIG_MAX * 2];
    size_t            n, siglen, dlen;
    json_t           *doc;
    ngx_str_t         nonce, args, *item;
    unsigned char     sig[GP_SIG_MAX];
    const gp_item_t  *it;
    const char       *desc;

    *ngx_snprintf(notify, sizeof(notify) - 1, "%V/notify/wechat",
                  &gpmcf->public_url) = '\0';
    gp_time_rfc3339(ngx_http_gov_pay_field_int(ctx, "due_at"),
                    (char *) expire);

    item = ngx_http_gov_pay_field(ctx, "item_code");
    it = item ? gp_registry_item(gpmcf->registry, (char *) item->data,
                                 item->len)
              : NULL;

    /* description: at most 127 bytes, cut at a character boundary */

    desc = it ? it->name : "非税收入";
    dlen = ngx_strlen(desc);

    if (dlen > 127) {
        dlen = 127;
        while (dlen && ((u_char) desc[dlen] & 0xc0) == 0x80) {
            dlen--;
        }
    }

    doc = json_pack("{s:s%,s:s%,s:s%,s:s%,s:s,s:s,s:{s:I,s:s},s:{s:s%}}",
                    "appid", gpmcf->wechat.appid.data, gpmcf->wechat.appid.len,
                    "mchid", gpmcf->wechat.mchid.data, gpmcf->wechat.mchid.len,
                    "description", desc, dlen,
                    "out_trade_no", ctx->code.data, ctx->code.len,
                    "time_expire", (char *) expire,
                    "notify_url", (char *) notify,
                    "amount",
                    "total",
                    (json_int_t) ngx_http_gov_pay_field_int(ctx, "amount"),
                    "currency", "CNY",
                    "payer",
                    "openid", st->openid.data, st->openid.len);
    if (doc == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->body.len = ngx_strlen(body);
    st->body.data = ngx_pnalloc(r->pool, st->body.len);
    if (st->body.data == NULL) {
        free(body);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(st->body.data, body, st->body.len);
    free(body);

    /* the merchant signature over the request */

    if (ngx_http_gov_pay_wechat_nonce(r, &nonce) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = sizeof("POST\n" NGX_HTTP_GOV_PAY_WECHAT_PATH "\n\n\n\n")
        + NGX_TIME_T_LEN + nonce.len + st->body.len;

    msg = ngx_pnalloc(r->pool, n);
    if (msg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(msg, "POST\n" NGX_HTTP_GOV_PAY_WECHAT_PATH "\n%T\n%V\n%V\n",
                    ngx_time(), &nonce, &st->body);

    if (gp_pkey_sign(gpmcf->wechat.merchant_key, GP_SIG_RSA_SHA256, msg,
                     p - msg, sig, &siglen)
        != 0)
    {
        return ngx_http_gov_pay_wechat_failed(r, "merchant signing failed");
    }

    gp_base64_encode(sig, siglen, b64);

    st->authorization.len = sizeof("WECHATPAY2-SHA256-RSA2048 mchid=\"\","
                                   "nonce_str=\"\",signature=\"\","
                                   "timestamp=\"\",serial_no=\"\"")
                            + gpmcf->wechat.mchid.len + nonce.len
                            + ngx_strlen(b64) + NGX_TIME_T_LEN
                            + gpmcf->wechat.merchant_serial.len;
    st->authorization.data = ngx_pnalloc(r->pool, st->authorization.len);
    if (st->authorization.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->authorization.len = ngx_sprintf(st->authorization.data,
                                "WECHATPAY2-SHA256-RSA2048 mchid=\"%V\","
                                "nonce_str=\"%V\",signature=\"%s\","
                                "timestamp=\"%T\",serial_no=\"%V\"",
                                &gpmcf->wechat.mchid, &nonce, b64,
                                ngx_time(), &gpmcf->wechat.merchant_serial)
                            - st->authorization.data;

    st->step = NGX_HTTP_GOV_PAY_WECHAT_PREPAY;

    ngx_str_null(&args);

    return ngx_http_gov_pay_subrequest(r, &gpmcf->wechat.prepay_location,
                                       &args, ngx_http_gov_pay_wechat_sub_done,
                                       ctx, ngx_http_gov_pay_wechat_resume);
}


/* step 3 done: the JSAPI page */

static ngx_int_t
ngx_http_gov_pay_wechat_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_http_gov_pay_wechat_state_t *st)
{
    u_char          *p, *msg, pkg[160], ts[NGX_TIME_T_LEN + 1], hash[32];
    char             b64[GP_SIG_MAX * 2], csh[64];
    size_t           siglen, n;
    json_t          *doc;
    ngx_str_t        nonce, script, content, csp;
    const char      *prepay;
    unsigned char    sig[GP_SIG_MAX];

    if (st->status != NGX_HTTP_OK || st->reply.len == 0) {
        return ngx_http_gov_pay_wechat_failed(r, "prepay answer is not 200");
    }

    if (!ngx_http_gov_pay_wechat_verify(gpmcf, &st->serial, &st->timestamp,
                                        &st->nonce, &st->signature,
                                        &st->reply))
    {
        return ngx_http_gov_pay_wechat_failed(r, "prepay answer does not "
                                              "verify with a platform key");
    }

    doc = json_loadb((char *) st->reply.data, st->reply.len, 0, NULL);
    prepay = doc ? json_string_value(json_object_get(doc, "prepay_id"))
                 : NULL;

    if (prepay == NULL
        || !gp_wechat_token(prepay, ngx_strlen(prepay), 64))
    {
        json_decref(doc);
        return ngx_http_gov_pay_wechat_failed(r, "prepay answer has no "
                                              "prepay_id");
    }

    *ngx_sprintf(pkg, "prepay_id=%s", prepay) = '\0';
    json_decref(doc);

    *ngx_sprintf(ts, "%T", ngx_time()) = '\0';

    if (ngx_http_gov_pay_wechat_nonce(r, &nonce) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* paySign: appId\ntimeStamp\nnonceStr\npackage\n */

    n = gpmcf->wechat.appid.len + NGX_TIME_T_LEN + nonce.len + sizeof(pkg)
        + 4;
    msg = ngx_pnalloc(r->pool, n);
    if (msg == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(msg, "%V\n%s\n%V\n%s\n", &gpmcf->wechat.appid, ts, &nonce,
                    pkg);

    if (gp_pkey_sign(gpmcf->wechat.merchant_key, GP_SIG_RSA_SHA256, msg,
                     p - msg, sig, &siglen)
        != 0)
    {
        return ngx_http_gov_pay_wechat_failed(r, "paySign failed");
    }

    gp_base64_encode(sig, siglen, b64);

    /* every value is of [A-Za-z0-9_=+/-]: safe inside the script */

    script.len = 1024 + n + ngx_strlen(b64) + ctx->code.len;
    script.data = ngx_pnalloc(r->pool, script.len);
    if (script.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    script.len = ngx_sprintf(script.data,
        "var gp={\"appId\":\"%V\",\"timeStamp\":\"%s\",\"nonceStr\":\"%V\","
        "\"package\":\"%s\",\"signType\":\"RSA\",\"paySign\":\"%s\"};"
        "function gpPay(){WeixinJSBridge.invoke('getBrandWCPayRequest',gp,"
        "function(res){if(res.err_msg=='get_brand_wcpay_request:ok')"
        "{location.href='/q/%V';}});}"
        "if(typeof WeixinJSBridge=='undefined'){document.addEventListener("
        "'WeixinJSBridgeReady',gpPay,false);}else{gpPay();}",
        &gpmcf->wechat.appid, ts, &nonce, pkg, b64, &ctx->code)
        - script.data;

    if (gp_digest(GP_MD_SHA256, script.data, script.len, hash) != 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    gp_base64_encode(hash, 32, csh);

    csp.data = ngx_pnalloc(r->pool, 256);
    if (csp.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    csp.len = ngx_sprintf(csp.data,
                          "default-src 'none'; style-src 'unsafe-inline'; "
                          "script-src 'sha256-%s'; form-action 'self'; "
                          "base-uri 'none'; frame-ancestors 'none'", csh)
              - csp.data;

    if (ngx_http_gov_pay_add_header(r, "Content-Security-Policy", &csp)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    content.len = script.len + 512;
    content.data = ngx_pnalloc(r->pool, content.len);
    if (content.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    content.len = ngx_sprintf(content.data,
                      "<h1>微信支付</h1><div class=\"card\">"
                      "<p>正在调起微信支付……</p>"
                      "<a class=\"btn\" href=\"/q/%V\">已完成支付</a></div>"
                      "<script>%V</script>", &ctx->code, &script)
                  - content.data;

    return ngx_http_gov_pay_page(r, NGX_HTTP_OK, "微信支付", &content);
}


/* callback */

static ngx_int_t
ngx_http_gov_pay_wechat_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s)
{
    u_char                        *plain, *ct;
    size_t                         ctlen, plen;
    time_t                         ts;
    json_t                        *doc;
    ngx_str_t                     *h_ts, *h_nonce, *h_sig, *h_serial;
    const char                    *why;
    gp_wechat_tx_t                 tx;
    gp_wechat_refund_t             rf;
    gp_wechat_resource_t           res;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    h_ts = ngx_http_gov_pay_wechat_header(&r->headers_in.headers,
                                          "Wechatpay-Timestamp");
    h_nonce = ngx_http_gov_pay_wechat_header(&r->headers_in.headers,
                                             "Wechatpay-Nonce");
    h_sig = ngx_http_gov_pay_wechat_header(&r->headers_in.headers,
                                           "Wechatpay-Signature");
    h_serial = ngx_http_gov_pay_wechat_header(&r->headers_in.headers,
                                              "Wechatpay-Serial");

    /* verify before anything else is read; a stale message is refused */

    if (ctx->body.len > 16384
        || !ngx_http_gov_pay_wechat_verify(gpmcf, h_serial, h_ts, h_nonce,
                                           h_sig, &ctx->body))
    {
        ngx_http_gov_pay_refused(r, "wechat", "signature does not verify");
        return NGX_DECLINED;
    }

    ts = (h_ts->len > 0 && h_ts->len <= 12) ? ngx_atotm(h_ts->data, h_ts->len)
                                            : NGX_ERROR;

    if (ts == NGX_ERROR || ts < ngx_time() - gpmcf->wechat.notify_window
        || ts > ngx_time() + gpmcf->wechat.notify_window)
    {
        ngx_http_gov_pay_refused(r, "wechat", "timestamp out of the window");
        return NGX_DECLINED;
    }

    /* the envelope's resource (common/gp_wechat.c), decrypted */

    doc = json_loadb((char *) ctx->body.data, ctx->body.len, 0, NULL);

    if (gp_wechat_resource(doc, &res, &why) != 0) {
        json_decref(doc);
        ngx_http_gov_pay_refused(r, "wechat", why);
        return NGX_DECLINED;
    }

    ct = ngx_pnalloc(r->pool, ngx_strlen(res.ciphertext));
    plain = ngx_pnalloc(r->pool, ngx_strlen(res.ciphertext) + 1);
    if (ct == NULL || plain == NULL) {
        json_decref(doc);
        return NGX_ERROR;
    }

    if (gp_base64_decode(res.ciphertext, ngx_strlen(res.ciphertext), ct,
                         &ctlen)
        != 0
        || gp_aes256gcm_decrypt(gpmcf->wechat.apiv3_key.data, res.nonce,
                                ngx_strlen(res.nonce), res.aad,
                                ngx_strlen(res.aad), ct, ctlen, plain, &plen)
           != 0)
    {
        json_decref(doc);
        ngx_http_gov_pay_refused(r, "wechat", "resource does not decrypt");
        return NGX_DECLINED;
    }

    if (res.refund) {
        json_decref(doc);
        return ngx_http_gov_pay_wechat_refund(r, gpmcf, plain, plen, &rf, s);
    }

    json_decref(doc);

    if (gp_wechat_transaction((char *) plain, plen, &tx, &why) != 0) {
        ngx_http_gov_pay_refused(r, "wechat", why);
        return NGX_DECLINED;
    }

    if (ngx_strlen(tx.mchid) != gpmcf->wechat.mchid.len
        || ngx_strncmp(tx.mchid, gpmcf->wechat.mchid.data,
                       gpmcf->wechat.mchid.len) != 0)
    {
        ngx_http_gov_pay_refused(r, "wechat", "for another mchid");
        return NGX_DECLINED;
    }

    if (ngx_strlen(tx.appid) != gpmcf->wechat.appid.len
        || ngx_strncmp(tx.appid, gpmcf->wechat.appid.data,
                       gpmcf->wechat.appid.len) != 0)
    {
        ngx_http_gov_pay_refused(r, "wechat", "for another appid");
        return NGX_DECLINED;
    }

    if (ngx_http_gov_pay_wechat_str(r, tx.out_trade_no, &s->code) != NGX_OK
        || ngx_http_gov_pay_wechat_str(r, tx.transaction_id, &s->trade_no)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    s->amount = tx.total;
    s->success = tx.success;
    s->paid_at = (tx.paid_at >= 0) ? tx.paid_at : ngx_time();

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_wechat_str(ngx_http_request_t *r, const char *v,
    ngx_str_t *out)
{
    ngx_str_t  tmp;

    tmp.data = (u_char *) v;
    tmp.len = ngx_strlen(v);

    out->data = ngx_http_gov_pay_cstr(r->pool, &tmp);
    out->len = tmp.len;

    return out->data ? NGX_OK : NGX_ERROR;
}


/*
 * A refund notification's decrypted resource (common/gp_wechat.c):
 * out_refund_no is our refund id, refund_id WeChat's refund number,
 * refund_status SUCCESS (succeeded), CLOSED or ABNORMAL (failed: nothing
 * reached the payer, the refund is ops' to redo), PROCESSING (not final),
 * amount.refund the amount in fen.
 */

static ngx_int_t
ngx_http_gov_pay_wechat_refund(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, u_char *plain, size_t plen,
    gp_wechat_refund_t *rf, ngx_http_gov_pay_settlement_t *s)
{
    const char  *why;

    if (gp_wechat_refund((char *) plain, plen, rf, &why) != 0) {
        ngx_http_gov_pay_refused(r, "wechat", why);
        return NGX_DECLINED;
    }

    if (ngx_strlen(rf->mchid) != gpmcf->wechat.mchid.len
        || ngx_strncmp(rf->mchid, gpmcf->wechat.mchid.data,
                       gpmcf->wechat.mchid.len) != 0)
    {
        ngx_http_gov_pay_refused(r, "wechat", "for another mchid");
        return NGX_DECLINED;
    }

    s->refund = 1;
    s->final = rf->final;
    s->success = rf->success;
    s->amount = rf->refund;
    s->paid_at = (rf->at >= 0) ? rf->at : ngx_time();

    if (ngx_http_gov_pay_wechat_str(r, rf->out_refund_no, &s->code) != NGX_OK
        || ngx_http_gov_pay_wechat_str(r, rf->refund_id, &s->trade_no)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (rf->final && !rf->success
        && ngx_http_gov_pay_wechat_str(r, rf->status, &s->error) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_wechat_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome)
{
    ngx_str_t   body;
    ngx_uint_t  status;

    switch (outcome) {

    case NGX_HTTP_GOV_PAY_CB_ACCEPTED:
        ngx_str_set(&body, "");
        return ngx_http_gov_pay_send(r, NGX_HTTP_NO_CONTENT,
                                     "application/json", &body);

    case NGX_HTTP_GOV_PAY_CB_UNKNOWN:
        status = NGX_HTTP_NOT_FOUND;
        ngx_str_set(&body, "{\"code\":\"FAIL\",\"message\":\"unknown order\"}");
        break;

    case NGX_HTTP_GOV_PAY_CB_RETRY:
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_str_set(&body, "{\"code\":\"FAIL\",\"message\":\"store "
                           "unavailable, retry later\"}");
        break;

    default:
        status = NGX_HTTP_BAD_REQUEST;
        ngx_str_set(&body, "{\"code\":\"FAIL\",\"message\":\"not verified "
                           "or malformed\"}");
    }

    return ngx_http_gov_pay_send(r, status, "application/json", &body);
}
