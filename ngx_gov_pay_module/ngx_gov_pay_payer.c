
/*
 * ngx_gov_pay_payer.c: the payer's routes (public, no unit auth; ops
 * rate-limit them with limit_req).
 *
 *   GET /q/{code}             unified QR target: the cashier page, or the
 *                             paid / closed page
 *   GET /q/{code}.svg         the QR code of the pay URL
 *   GET /pay/{channel}/{code} explicit channel choice from the cashier page:
 *                             the channel's hand-off (channels/)
 *
 * Pages are small, Chinese, mobile first, with inline CSS and no outside
 * asset.  Payer data is masked and HTML-escaped.
 */


#include "ngx_gov_pay_channel.h"

#include <qrencode.h>


#define NGX_HTTP_GOV_PAY_PAGE_CASHIER  1
#define NGX_HTTP_GOV_PAY_PAGE_SVG      2
#define NGX_HTTP_GOV_PAY_PAGE_PAY      3


static ngx_int_t ngx_http_gov_pay_lookup(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_str_t *code, ngx_uint_t page);
static void ngx_http_gov_pay_lookup_done(void *data, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_cashier(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_svg(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_escape(ngx_pool_t *pool, ngx_str_t *dst,
    const u_char *src, size_t len);


static const char  ngx_http_gov_pay_css[] =
    "body{margin:0;font-family:system-ui,-apple-system,\"PingFang SC\","
    "\"Noto Sans CJK SC\",sans-serif;font-size:1.0625rem;line-height:1.6;"
    "color:#1a1a1a;background:#f4f5f7}"
    "main{max-width:30rem;margin:0 auto;padding:1rem}"
    "h1{font-size:1.25rem;margin:.5rem 0 1rem}"
    "h2{font-size:1.0625rem;margin:0}"
    ".card{background:#fff;border-radius:.75rem;padding:1rem 1.25rem;"
    "margin-bottom:1rem}"
    ".amt{font-size:2rem;font-weight:700;color:#b00020;margin:.25rem 0}"
    "dl{margin:0}dt{color:#555;font-size:.9375rem}"
    "dd{margin:0 0 .5rem;word-break:break-all}"
    ".btn{display:block;box-sizing:border-box;width:100%;min-height:3rem;"
    "padding:.75rem 1rem;margin:.75rem 0;border:0;border-radius:.5rem;"
    "background:#0b57d0;color:#fff;font-size:1.125rem;text-align:center;"
    "text-decoration:none;cursor:pointer}"
    ".note{color:#555;font-size:.9375rem}";


ngx_int_t
ngx_http_gov_pay_payer_handler(ngx_http_request_t *r)
{
    u_char                            *p, *last;
    ngx_int_t                          rc;
    ngx_str_t                          code, channel;
    ngx_http_gov_pay_ctx_t            *ctx;
    ngx_http_gov_pay_main_conf_t      *gpmcf;
    const ngx_http_gov_pay_channel_t  *ch;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

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

    p = r->uri.data;
    last = r->uri.data + r->uri.len;

    if (r->uri.len > 3 && ngx_strncmp(p, "/q/", 3) == 0) {
        code.data = p + 3;
        code.len = last - code.data;

        if (code.len == GP_CODE_LEN + 4
            && ngx_strncmp(code.data + GP_CODE_LEN, ".svg", 4) == 0)
        {
            code.len = GP_CODE_LEN;
            return ngx_http_gov_pay_lookup(r, ctx, &code,
                                           NGX_HTTP_GOV_PAY_PAGE_SVG);
        }

        return ngx_http_gov_pay_lookup(r, ctx, &code,
                                       NGX_HTTP_GOV_PAY_PAGE_CASHIER);
    }

    if (r->uri.len > 5 && ngx_strncmp(p, "/pay/", 5) == 0) {
        channel.data = p + 5;
        p = ngx_strlchr(channel.data, last, '/');

        if (p == NULL) {
            return ngx_http_gov_pay_not_found_page(r);
        }

        channel.len = p - channel.data;
        code.data = p + 1;
        code.len = last - code.data;

        ch = ngx_http_gov_pay_channel(&channel);

        if (ch == NULL || !ch->enabled(gpmcf)) {
            return ngx_http_gov_pay_message(r, NGX_HTTP_NOT_FOUND,
                                            "渠道不可用",
                                            "该支付渠道未开通，请返回收银台"
                                            "选择其他方式。");
        }

        ctx->channel = ch->name;

        return ngx_http_gov_pay_lookup(r, ctx, &code,
                                       NGX_HTTP_GOV_PAY_PAGE_PAY);
    }

    return ngx_http_gov_pay_not_found_page(r);
}


ngx_int_t
ngx_http_gov_pay_not_found_page(ngx_http_request_t *r)
{
    return ngx_http_gov_pay_message(r, NGX_HTTP_NOT_FOUND, "缴款码无效",
                                    "未找到该缴款码，请核对缴款通知书上的"
                                    " 20 位缴款码。");
}


ngx_int_t
ngx_http_gov_pay_unavailable_page(ngx_http_request_t *r)
{
    ngx_str_t  v;

    ngx_str_set(&v, "1");
    if (ngx_http_gov_pay_add_header(r, "Retry-After", &v) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_message(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    "系统繁忙", "系统暂时无法查询，请稍后"
                                    "再试。您的款项不会重复扣除。");
}


static ngx_int_t
ngx_http_gov_pay_lookup(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *code, ngx_uint_t page)
{
    ngx_int_t  rc;

    ctx->route = page;

    /* malformed codes and bad check digits never reach the store */

    rc = ngx_http_gov_pay_notice_lookup(r, ctx, code,
                                        ngx_http_gov_pay_lookup_done);

    switch (rc) {

    case NGX_DONE:
        return NGX_DONE;

    case NGX_DECLINED:
        return ngx_http_gov_pay_not_found_page(r);

    case NGX_AGAIN:
        return ngx_http_gov_pay_unavailable_page(r);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


static void
ngx_http_gov_pay_lookup_done(void *data, redisReply *reply)
{
    ngx_http_gov_pay_ctx_t *ctx = data;

    ngx_int_t                          rc;
    const char                        *status;
    ngx_http_request_t                *r;
    ngx_http_gov_pay_main_conf_t      *gpmcf;
    const ngx_http_gov_pay_channel_t  *ch;

    r = ctx->request;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    rc = ngx_http_gov_pay_notice_found(r, ctx, reply);

    if (rc == NGX_AGAIN) {
        ngx_http_gov_pay_finish(r, ngx_http_gov_pay_unavailable_page(r));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_gov_pay_finish(r, ngx_http_gov_pay_not_found_page(r));
        return;
    }

    status = ngx_http_gov_pay_status(ctx);

    switch (ctx->route) {

    case NGX_HTTP_GOV_PAY_PAGE_SVG:
        rc = ngx_http_gov_pay_svg(r, gpmcf, ctx);
        break;

    case NGX_HTTP_GOV_PAY_PAGE_PAY:
        ch = ngx_http_gov_pay_channel(&ctx->channel);

        /* only an unpaid notice is handed over; the rest see their page */

        if (ngx_strcmp(status, "UNPAID") == 0 && ch) {
            rc = ch->handoff(r, ctx);
            break;
        }

        rc = ngx_http_gov_pay_cashier(r, gpmcf, ctx);
        break;

    default:
        /* the unified QR: the payer's app implies the channel */

        ch = ngx_http_gov_pay_channel_for_agent(r, gpmcf);

        if (ngx_strcmp(status, "UNPAID") == 0 && ch) {
            ctx->channel = ch->name;
            rc = ch->handoff(r, ctx);
            break;
        }

        rc = ngx_http_gov_pay_cashier(r, gpmcf, ctx);
    }

    if (rc == NGX_DONE) {
        return;
    }

    ngx_http_gov_pay_finish(r, rc);
}


static ngx_int_t
ngx_http_gov_pay_escape(ngx_pool_t *pool, ngx_str_t *dst, const u_char *src,
    size_t len)
{
    size_t  n;

    n = ngx_escape_html(NULL, (u_char *) src, len);

    dst->len = len + n;
    dst->data = ngx_pnalloc(pool, dst->len + 1);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    if (n) {
        ngx_escape_html(dst->data, (u_char *) src, len);
    } else {
        ngx_memcpy(dst->data, src, len);
    }

    dst->data[dst->len] = '\0';

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_page(ngx_http_request_t *r, ngx_uint_t status,
    const char *title, ngx_str_t *content)
{
    size_t     len;
    ngx_str_t  body;

    len = sizeof("<!doctype html><html lang=\"zh-CN\"><head>"
                 "<meta charset=\"utf-8\"><meta name=\"viewport\" "
                 "content=\"width=device-width,initial-scale=1\">"
                 "<title></title><style></style></head><body><main>"
                 "</main></body></html>")
          + ngx_strlen(title) + sizeof(ngx_http_gov_pay_css) + content->len;

    body.data = ngx_pnalloc(r->pool, len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body.len = ngx_snprintf(body.data, len,
                            "<!doctype html><html lang=\"zh-CN\"><head>"
                            "<meta charset=\"utf-8\"><meta name=\"viewport\" "
                            "content=\"width=device-width,initial-scale=1\">"
                            "<title>%s</title><style>%s</style></head>"
                            "<body><main>%V</main></body></html>",
                            title, ngx_http_gov_pay_css, content)
               - body.data;

    return ngx_http_gov_pay_send(r, status, "text/html; charset=utf-8",
                                 &body);
}


ngx_int_t
ngx_http_gov_pay_message(ngx_http_request_t *r, ngx_uint_t status,
    const char *title, const char *text)
{
    u_char     *p;
    size_t      len;
    ngx_str_t   content;

    len = ngx_strlen(title) + ngx_strlen(text) + 64;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    content.data = p;
    content.len = ngx_snprintf(p, len,
                               "<h1>%s</h1><div class=\"card\"><p>%s</p>"
                               "</div>", title, text)
                  - p;

    return ngx_http_gov_pay_page(r, status, title, &content);
}


static ngx_int_t
ngx_http_gov_pay_cashier(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    u_char                            *p, *last, yuan[32], masked[256];
    u_char                             due[26];
    int                                n;
    ngx_uint_t                         i;
    const ngx_http_gov_pay_channel_t  *ch;
    ngx_str_t          content, item, unit, name, id, *v;
    const char        *status;
    const gp_item_t   *it;
    const gp_unit_t   *un;

    status = ngx_http_gov_pay_status(ctx);

    if (ngx_strcmp(status, "CANCELLED") == 0
        || ngx_strcmp(status, "EXPIRED") == 0)
    {
        return ngx_http_gov_pay_message(r, NGX_HTTP_GOV_PAY_GONE,
                   ngx_strcmp(status, "CANCELLED") == 0 ? "缴款书已撤销"
                                                        : "缴款书已过期",
                   "该缴款书已不能缴费。如需缴费，请联系执收单位重新开具。");
    }

    n = gp_fen_to_yuan(ngx_http_gov_pay_field_int(ctx, "amount"),
                       (char *) yuan, sizeof(yuan));
    if (n < 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v = ngx_http_gov_pay_field(ctx, "item_code");
    it = v ? gp_registry_item(gpmcf->registry, (char *) v->data, v->len)
           : NULL;
    v = ngx_http_gov_pay_field(ctx, "unit");
    un = v ? gp_registry_unit(gpmcf->registry, (char *) v->data, v->len)
           : NULL;

    if (ngx_http_gov_pay_escape(r->pool, &item,
            (u_char *) (it ? it->name : "—"),
            ngx_strlen(it ? it->name : "—")) != NGX_OK
        || ngx_http_gov_pay_escape(r->pool, &unit,
            (u_char *) (un ? un->name : "—"),
            ngx_strlen(un ? un->name : "—")) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    v = ngx_http_gov_pay_field(ctx, "payer_name");
    if (v == NULL
        || gp_mask_name((char *) v->data, v->len, (char *) masked,
                        sizeof(masked)) < 0
        || ngx_http_gov_pay_escape(r->pool, &name, masked,
                                   ngx_strlen(masked)) != NGX_OK)
    {
        ngx_str_set(&name, "—");
    }

    v = ngx_http_gov_pay_field(ctx, "payer_id");
    if (v == NULL
        || gp_mask_id((char *) v->data, v->len, (char *) masked,
                      sizeof(masked)) < 0
        || ngx_http_gov_pay_escape(r->pool, &id, masked,
                                   ngx_strlen(masked)) != NGX_OK)
    {
        ngx_str_set(&id, "—");
    }

    gp_time_rfc3339(ngx_http_gov_pay_field_int(ctx, "due_at"), (char *) due);
    due[10] = ' ';
    due[16] = '\0';

    content.len = 4096 + item.len + unit.len + name.len + id.len;
    content.data = ngx_pnalloc(r->pool, content.len);
    if (content.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = content.data;
    last = content.data + content.len;

    if (ngx_strcmp(status, "PAID") == 0) {
        p = ngx_slprintf(p, last,
                "<h1>已缴费</h1><div class=\"card\">"
                "<div class=\"amt\">¥%s</div><dl>"
                "<dt>缴费项目</dt><dd>%V</dd>"
                "<dt>执收单位</dt><dd>%V</dd>"
                "<dt>缴款人</dt><dd>%V</dd>"
                "<dt>缴款码</dt><dd>%V</dd></dl></div>",
                yuan, &item, &unit, &name, &ctx->code);

        v = ngx_http_gov_pay_field(ctx, "receipt_number");

        if (v && ngx_http_gov_pay_field(ctx, "receipt_code")
            && ngx_http_gov_pay_field(ctx, "receipt_check"))
        {
            p = ngx_slprintf(p, last,
                    "<div class=\"card\"><p>财政电子票据已开具。</p>"
                    "<a class=\"btn\" href=\"/r/%V/%V?c=%V\">查看电子票据</a>"
                    "</div>",
                    ngx_http_gov_pay_field(ctx, "receipt_code"), v,
                    ngx_http_gov_pay_field(ctx, "receipt_check"));
        } else {
            p = ngx_slprintf(p, last,
                    "<div class=\"card\"><p class=\"note\">财政电子票据正在"
                    "开具，请稍后刷新本页查看。</p></div>");
        }

    } else {
        p = ngx_slprintf(p, last,
                "<h1>非税收入缴费</h1><div class=\"card\">"
                "<div class=\"amt\" aria-label=\"应缴金额 %s 元\">¥%s</div>"
                "<dl><dt>缴费项目</dt><dd>%V</dd>"
                "<dt>执收单位</dt><dd>%V</dd>"
                "<dt>缴款人</dt><dd>%V</dd>"
                "<dt>证件号码</dt><dd>%V</dd>"
                "<dt>缴款码</dt><dd>%V</dd>"
                "<dt>缴费截止</dt><dd>%s</dd></dl></div>"
                "<div class=\"card\"><h2>选择支付方式</h2>",
                yuan, yuan, &item, &unit, &name, &id, &ctx->code, due);

        for (i = 0; (ch = ngx_http_gov_pay_channel_at(i)); i++) {
            if (ch->enabled(gpmcf)) {
                p = ngx_slprintf(p, last,
                        "<a class=\"btn\" href=\"/pay/%V/%V\">%s</a>",
                        &ch->name, &ctx->code, ch->title);
            }
        }

        p = ngx_slprintf(p, last,
                "<p class=\"note\">也可在支付宝、微信、云闪付中扫描缴款"
                "通知书上的二维码缴费。</p></div>");
    }

    content.len = p - content.data;

    return ngx_http_gov_pay_page(r, NGX_HTTP_OK,
                                 ngx_strcmp(status, "PAID") == 0
                                 ? "已缴费" : "非税收入缴费",
                                 &content);
}


static ngx_int_t
ngx_http_gov_pay_svg(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    u_char      *p, *last, url[512];
    int          x, y, w;
    QRcode      *qr;
    ngx_int_t    rc;
    ngx_str_t    body, v;

    *ngx_snprintf(url, sizeof(url) - 1, "%V/q/%V", &gpmcf->public_url,
                  &ctx->code) = '\0';

    qr = QRcode_encodeString((const char *) url, 0, QR_ECLEVEL_M,
                             QR_MODE_8, 1);
    if (qr == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      "gov_pay: QRcode_encodeString() failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    w = qr->width;

    body.len = 256 + (size_t) w * w * 24;
    body.data = ngx_pnalloc(r->pool, body.len);
    if (body.data == NULL) {
        QRcode_free(qr);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = body.data;
    last = body.data + body.len;

    /* a 4-module quiet zone, one path of unit squares for the dark modules */

    p = ngx_slprintf(p, last,
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" "
                     "viewBox=\"0 0 %d %d\" shape-rendering=\"crispEdges\">"
                     "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>"
                     "<path fill=\"#000\" d=\"", w + 8, w + 8);

    for (y = 0; y < w; y++) {
        for (x = 0; x < w; x++) {
            if (qr->data[y * w + x] & 1) {
                p = ngx_slprintf(p, last, "M%d %dh1v1h-1z", x + 4, y + 4);
            }
        }
    }

    p = ngx_slprintf(p, last, "\"/></svg>");
    body.len = p - body.data;

    QRcode_free(qr);

    ngx_str_set(&v, "public, max-age=86400");
    if (ngx_http_gov_pay_add_header(r, "Cache-Control", &v) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_gov_pay_send(r, NGX_HTTP_OK, "image/svg+xml", &body);

    return rc;
}
