
/*
 * The sandbox channel: offline, for the demo and the tests; on only where
 * gov_pay_sandbox_key is set.  It moves no money.
 *
 * Hand-off: a 302 to the sandbox's own pay page, /sandbox/pay/{code},
 * which this edge serves as the stand-in of the channel's gateway (as the
 * real channels' sandboxes do).  The page's form posts the signed callback
 * to /notify/sandbox.
 *
 * Callback: a form with out_trade_no (the payment code), trade_no,
 * total_fen, trade_status, paid_at (unix seconds) and sign: lowercase hex
 * of HMAC-SHA256 with the sandbox key over the other fields, form-decoded
 * once, sorted by name, joined as k=v&k=v.  Only trade_status=SUCCESS
 * settles.  Replies: 200 "success"; 400 "fail" (not verified, malformed),
 * 404 "fail" (unknown order), 503 "fail" (store unavailable: retry).
 */


#include "ngx_gov_pay_channel.h"


static ngx_int_t ngx_http_gov_pay_sandbox_enabled(
    ngx_http_gov_pay_main_conf_t *gpmcf);
static ngx_int_t ngx_http_gov_pay_sandbox_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_sandbox_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s);
static ngx_int_t ngx_http_gov_pay_sandbox_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome);
static ngx_int_t ngx_http_gov_pay_sandbox_page_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_sandbox_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);


const ngx_http_gov_pay_channel_t  ngx_http_gov_pay_sandbox_channel = {
    ngx_string("sandbox"),
    "沙箱支付（演示渠道）",
    ngx_http_gov_pay_sandbox_enabled,
    ngx_http_gov_pay_sandbox_handoff,
    ngx_http_gov_pay_sandbox_callback,
    ngx_http_gov_pay_sandbox_reply,
    NULL                                   /* its key is read in module.c */
};


static ngx_int_t
ngx_http_gov_pay_sandbox_enabled(ngx_http_gov_pay_main_conf_t *gpmcf)
{
    return gpmcf->sandbox_key.len != 0;
}


static ngx_int_t
ngx_http_gov_pay_sandbox_handoff(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_str_t         loc;
    ngx_table_elt_t  *h;

    loc.len = sizeof("/sandbox/pay/") - 1 + ctx->code.len;
    loc.data = ngx_pnalloc(r->pool, loc.len);
    if (loc.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_sprintf(loc.data, "/sandbox/pay/%V", &ctx->code);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Location");
    h->value = loc;

    r->headers_out.location = h;

    ngx_str_set(&loc, "");

    return ngx_http_gov_pay_send(r, NGX_HTTP_MOVED_TEMPORARILY,
                                 "text/html; charset=utf-8", &loc);
}


static ngx_int_t
ngx_http_gov_pay_sandbox_token(const gp_kv_t *kv, size_t max, int digits)
{
    size_t  i;

    if (kv == NULL || kv->value_len == 0 || kv->value_len > max) {
        return 0;
    }

    for (i = 0; i < kv->value_len; i++) {
        if (digits ? (kv->value[i] < '0' || kv->value[i] > '9')
                   : (kv->value[i] < 0x21 || kv->value[i] > 0x7e))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_gov_pay_sandbox_copy(ngx_http_request_t *r, ngx_str_t *dst,
    const gp_kv_t *kv)
{
    ngx_str_t  s;

    s.data = (u_char *) kv->value;
    s.len = kv->value_len;

    dst->data = ngx_http_gov_pay_cstr(r->pool, &s);
    dst->len = s.len;

    return dst->data ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_gov_pay_sandbox_callback(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_http_gov_pay_settlement_t *s)
{
    char                          *canon, hex[65];
    size_t                         len;
    ngx_int_t                      rc, verified;
    gp_form_t                      form;
    unsigned char                  mac[32];
    const gp_kv_t                 *sign, *code, *trade_no, *total, *status;
    const gp_kv_t                 *paid;
    ngx_http_gov_pay_main_conf_t  *gpmcf;
    static const char             *skip[] = { "sign", NULL };

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (ctx->body.len > 8192
        || gp_form_parse((const char *) ctx->body.data, ctx->body.len, &form)
           != 0)
    {
        ngx_http_gov_pay_refused(r, "sandbox", "the body is not a form");
        return NGX_DECLINED;
    }

    /* verify before anything else is read */

    verified = 0;
    sign = gp_form_get(&form, "sign");

    if (sign && sign->value_len == 64) {
        canon = gp_form_canonical(&form, skip, 0, &len);

        if (canon
            && gp_hmac_keyed(gpmcf->sandbox_hmac, canon, len, mac) == 0)
        {
            gp_hex(mac, 32, hex);
            verified = gp_ct_equal(hex, sign->value, 64);
        }

        free(canon);
    }

    if (!verified) {
        gp_form_free(&form);
        ngx_http_gov_pay_refused(r, "sandbox", "signature does not verify");
        return NGX_DECLINED;
    }

    code = gp_form_get(&form, "out_trade_no");
    trade_no = gp_form_get(&form, "trade_no");
    total = gp_form_get(&form, "total_fen");
    status = gp_form_get(&form, "trade_status");
    paid = gp_form_get(&form, "paid_at");

    rc = NGX_DECLINED;

    if (!ngx_http_gov_pay_sandbox_token(code, 64, 0)
        || !ngx_http_gov_pay_sandbox_token(trade_no, 64, 0)
        || !ngx_http_gov_pay_sandbox_token(total, 11, 1)
        || !ngx_http_gov_pay_sandbox_token(status, 32, 0)
        || !ngx_http_gov_pay_sandbox_token(paid, 12, 1))
    {
        ngx_http_gov_pay_refused(r, "sandbox", "lacks a field");
        goto done;
    }

    if (ngx_http_gov_pay_sandbox_copy(r, &s->code, code) != NGX_OK
        || ngx_http_gov_pay_sandbox_copy(r, &s->trade_no, trade_no)
           != NGX_OK)
    {
        rc = NGX_ERROR;
        goto done;
    }

    s->amount = ngx_atoof((u_char *) total->value, total->value_len);
    s->paid_at = ngx_atoof((u_char *) paid->value, paid->value_len);
    s->success = (status->value_len == 7
                  && ngx_strncmp(status->value, "SUCCESS", 7) == 0);

    rc = NGX_OK;

done:

    gp_form_free(&form);
    return rc;
}


static ngx_int_t
ngx_http_gov_pay_sandbox_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome)
{
    return ngx_http_gov_pay_text_reply(r, outcome, "success");
}


/* GET /sandbox/pay/{code}: the stand-in of the channel's pay page */

ngx_int_t
ngx_http_gov_pay_sandbox_gateway_handler(ngx_http_request_t *r)
{
    ngx_int_t                      rc;
    ngx_str_t                      code;
    ngx_http_gov_pay_ctx_t        *ctx;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_gov_pay_sandbox_enabled(gpmcf)) {
        return ngx_http_gov_pay_message(r, NGX_HTTP_NOT_FOUND, "沙箱未开通",
                                        "沙箱渠道未配置。");
    }

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->uri.len != sizeof("/sandbox/pay/") - 1 + GP_CODE_LEN
        || ngx_strncmp(r->uri.data, "/sandbox/pay/", 13) != 0)
    {
        return ngx_http_gov_pay_not_found_page(r);
    }

    code.data = r->uri.data + 13;
    code.len = GP_CODE_LEN;

    return ngx_http_gov_pay_page_lookup(r, ctx, &code,
                                        ngx_http_gov_pay_sandbox_page_done);
}


static ngx_int_t
ngx_http_gov_pay_sandbox_page_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    ngx_int_t                      rc;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    rc = ngx_http_gov_pay_notice_found(r, ctx, reply);

    if (rc == NGX_AGAIN) {
        rc = ngx_http_gov_pay_unavailable_page(r);

    } else if (rc != NGX_OK) {
        rc = ngx_http_gov_pay_not_found_page(r);

    } else if (ngx_strcmp(ngx_http_gov_pay_status(ctx), "UNPAID") != 0) {
        rc = ngx_http_gov_pay_message(r, NGX_HTTP_GOV_PAY_GONE, "不可支付",
                                      "该缴款书已缴费、已撤销或已过期。");

    } else {
        rc = ngx_http_gov_pay_sandbox_page(r, gpmcf, ctx);
    }

    return rc;
}


static ngx_int_t
ngx_http_gov_pay_sandbox_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    u_char          *p, trade_no[40], rnd[8], hex[17], fen[NGX_INT64_LEN + 1];
    u_char           paid_at[NGX_TIME_T_LEN + 1], yuan[32], mac[32];
    char            *canon, sig[65];
    size_t           len;
    gp_kv_t          kv[5];
    gp_form_t        form;
    ngx_str_t        content;

    if (gp_random_bytes(rnd, sizeof(rnd)) != 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    gp_hex(rnd, sizeof(rnd), (char *) hex);

    *ngx_sprintf(trade_no, "SBX%T%s", ngx_time(), hex) = '\0';
    *ngx_sprintf(fen, "%L", ngx_http_gov_pay_field_int(ctx, "amount")) = '\0';
    *ngx_sprintf(paid_at, "%T", ngx_time()) = '\0';

    if (gp_fen_to_yuan(ngx_http_gov_pay_field_int(ctx, "amount"),
                       (char *) yuan, sizeof(yuan)) < 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the stand-in channel signs its callback as the real sandbox would */

    kv[0].key = (char *) "out_trade_no";
    kv[0].value = (char *) ngx_http_gov_pay_cstr(r->pool, &ctx->code);
    kv[1].key = (char *) "trade_no";
    kv[1].value = (char *) trade_no;
    kv[2].key = (char *) "total_fen";
    kv[2].value = (char *) fen;
    kv[3].key = (char *) "trade_status";
    kv[3].value = (char *) "SUCCESS";
    kv[4].key = (char *) "paid_at";
    kv[4].value = (char *) paid_at;

    if (kv[0].value == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (len = 0; len < 5; len++) {
        kv[len].key_len = ngx_strlen(kv[len].key);
        kv[len].value_len = ngx_strlen(kv[len].value);
    }

    form.kv = kv;
    form.n = 5;

    canon = gp_form_canonical(&form, NULL, 0, &len);
    if (canon == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (gp_hmac_keyed(gpmcf->sandbox_hmac, canon, len, mac) != 0) {
        free(canon);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    free(canon);
    gp_hex(mac, 32, sig);

    content.len = 2048;
    content.data = ngx_pnalloc(r->pool, content.len);
    if (content.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_snprintf(content.data, content.len,
            "<h1>沙箱支付（演示渠道）</h1><div class=\"card\">"
            "<p class=\"note\">这是离线沙箱渠道，不会扣除真实款项。</p>"
            "<div class=\"amt\">¥%s</div><dl><dt>缴款码</dt><dd>%V</dd>"
            "<dt>渠道流水号</dt><dd>%s</dd></dl>"
            "<form method=\"post\" action=\"/notify/sandbox\">"
            "<input type=\"hidden\" name=\"out_trade_no\" value=\"%V\">"
            "<input type=\"hidden\" name=\"trade_no\" value=\"%s\">"
            "<input type=\"hidden\" name=\"total_fen\" value=\"%s\">"
            "<input type=\"hidden\" name=\"trade_status\" value=\"SUCCESS\">"
            "<input type=\"hidden\" name=\"paid_at\" value=\"%s\">"
            "<input type=\"hidden\" name=\"sign\" value=\"%s\">"
            "<button class=\"btn\" type=\"submit\">确认支付 ¥%s</button>"
            "</form></div>",
            yuan, &ctx->code, trade_no, &ctx->code, trade_no, fen, paid_at,
            sig, yuan);

    content.len = p - content.data;

    return ngx_http_gov_pay_page(r, NGX_HTTP_OK, "沙箱支付", &content);
}
