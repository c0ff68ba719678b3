
/*
 * ngx_gov_pay_payer.c: the payer's routes (public, no unit auth; ops
 * rate-limit them with limit_req).
 *
 *   GET /q/{code}             unified QR target: the payer's app picks the
 *                             channel (User-Agent); everything else gets the
 *                             cashier page, or the paid / closed page
 *   GET /q/{code}.svg, .png   the QR code of the pay URL (ngx_gov_pay_qr.c)
 *   GET /pay/{channel}/{code} explicit channel choice from the cashier page:
 *                             the channel's hand-off (channels/)
 *   GET, POST /o/{item_code}  the open per-item code (一费一码): a payer
 *                             finds their unpaid notices of one item by
 *                             payment code or ID number
 *   gov_pay_error_page        nginx's own errors (429 of limit_req, 5xx) as
 *                             pages of the same look
 *
 * Pages are the templates of conf/templates/ (ngx_gov_pay_template.c):
 * small, Chinese, mobile first, inline CSS, no outside asset, a large-text
 * mode.  Payer data is masked, and escaped by the templates.
 *
 * A "?return_url=" on /q/ and /pay/ (a unit's website sending the payer
 * here, the PC flow) is shown as a link back only when its host is one of
 * the unit's return_hosts (registry); the edge never redirects to it.
 */


#include "ngx_gov_pay_channel.h"
#include "ngx_gov_pay_template.h"



#define NGX_HTTP_GOV_PAY_PAGE_CASHIER  1
#define NGX_HTTP_GOV_PAY_PAGE_SVG      2
#define NGX_HTTP_GOV_PAY_PAGE_PAY      3
#define NGX_HTTP_GOV_PAY_PAGE_PNG      4
#define NGX_HTTP_GOV_PAY_PAGE_OPEN     5

#define NGX_HTTP_GOV_PAY_OPEN_MAX      10      /* notices per shard shown */


/* gov_pay_agent_route <substring | ~regex | ~*regex> <channel | cashier>; */

typedef struct {
    ngx_str_t                      pattern;
#if (NGX_PCRE)
    ngx_regex_t                   *regex;
#endif
    ngx_str_t                      channel;    /* empty: the cashier page */
} ngx_http_gov_pay_agent_route_t;


/* a lookup of /o/: by code, or by ID number on every shard at once */

typedef struct {
    const gp_item_t               *item;
    ngx_array_t                   *vars;
    ngx_uint_t                     failed;
    ngx_uint_t                     found;
} ngx_http_gov_pay_open_t;


static ngx_int_t ngx_http_gov_pay_lookup(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_str_t *code, ngx_uint_t page);
static ngx_int_t ngx_http_gov_pay_lookup_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static const ngx_http_gov_pay_channel_t *ngx_http_gov_pay_route_agent(
    ngx_http_request_t *r, ngx_http_gov_pay_main_conf_t *gpmcf);
static void ngx_http_gov_pay_return_url(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_notice_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_notice_vars(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_array_t *vars);
static ngx_int_t ngx_http_gov_pay_open(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf);
static ngx_int_t ngx_http_gov_pay_open_body(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_open_page(ngx_http_request_t *r,
    const gp_item_t *item, ngx_array_t *vars);
static ngx_int_t ngx_http_gov_pay_open_code_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_open_by_id(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    u_char *id);
static void ngx_http_gov_pay_open_shard_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_uint_t i, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_open_found(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
static ngx_int_t ngx_http_gov_pay_open_row(ngx_http_request_t *r,
    ngx_array_t *vars, ngx_str_t *code, int64_t amount, ngx_str_t *name,
    int64_t due);
static void ngx_http_gov_pay_time(int64_t t, u_char *buf);
static ngx_int_t ngx_http_gov_pay_yuan(ngx_http_request_t *r,
    int64_t fen, ngx_str_t *s);


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

    if (r->uri.len > 3 && ngx_strncmp(r->uri.data, "/o/", 3) == 0) {
        return ngx_http_gov_pay_open(r, gpmcf);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return ngx_http_gov_pay_message(r, NGX_HTTP_NOT_ALLOWED,
                                        "不支持的请求",
                                        "请从缴款通知书上的二维码或链接"
                                        "打开本页。");
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

        /* a QR image this worker made before needs no lookup */

        if (code.len == GP_CODE_LEN + 4
            && ngx_strncmp(code.data + GP_CODE_LEN, ".svg", 4) == 0)
        {
            code.len = GP_CODE_LEN;

            rc = ngx_http_gov_pay_qr_cached(r, ctx, &code, 0);
            if (rc != NGX_DECLINED) {
                return rc;
            }

            return ngx_http_gov_pay_lookup(r, ctx, &code,
                                           NGX_HTTP_GOV_PAY_PAGE_SVG);
        }

        if (code.len == GP_CODE_LEN + 4
            && ngx_strncmp(code.data + GP_CODE_LEN, ".png", 4) == 0)
        {
            code.len = GP_CODE_LEN;

            rc = ngx_http_gov_pay_qr_cached(r, ctx, &code, 1);
            if (rc != NGX_DECLINED) {
                return rc;
            }

            return ngx_http_gov_pay_lookup(r, ctx, &code,
                                           NGX_HTTP_GOV_PAY_PAGE_PNG);
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
                                            "该支付方式没有开通，请返回上一页"
                                            "选择其他支付方式。");
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
                                    "没有找到这个缴款码。请核对缴款通知书上"
                                    "的 20 位缴款码。");
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


/* error_page 429 500 502 503 504 /_gp/error; location = /_gp/error */

ngx_int_t
ngx_http_gov_pay_error_page_handler(ngx_http_request_t *r)
{
    ngx_int_t   rc;
    ngx_str_t   v;
    ngx_uint_t  status;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    status = r->err_status ? r->err_status : NGX_HTTP_NOT_FOUND;

    switch (status) {

    case NGX_HTTP_NOT_FOUND:
        return ngx_http_gov_pay_message(r, status, "页面不存在",
                                        "没有这个页面。请扫描缴款通知书上的"
                                        "二维码，或核对网址。");

    case 429:
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        ngx_str_set(&v, "60");
        if (ngx_http_gov_pay_add_header(r, "Retry-After", &v) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_http_gov_pay_message(r, status, "请稍后再试",
                                        "访问的人较多，请等一分钟后再打开"
                                        "本页。您的款项不会重复扣除。");

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_NOT_ALLOWED:
        return ngx_http_gov_pay_message(r, status, "请求有误",
                                        "请从缴款通知书上的二维码或链接"
                                        "重新打开本页。");

    default:
        return ngx_http_gov_pay_message(r, status >= 400 ? status
                                           : NGX_HTTP_INTERNAL_SERVER_ERROR,
                                        "系统繁忙",
                                        "系统暂时出了问题，请稍后再试。"
                                        "您的款项不会重复扣除。");
    }
}


static ngx_int_t
ngx_http_gov_pay_lookup(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *code, ngx_uint_t page)
{
    ctx->route = page;

    return ngx_http_gov_pay_page_lookup(r, ctx, code,
                                        ngx_http_gov_pay_lookup_done);
}


/*
 * A public page about a notice: ask Redis (handler answers later), or
 * answer now with the 404 page (malformed code, bad check digit: never
 * looked up) or the 503 page.
 */

ngx_int_t
ngx_http_gov_pay_page_lookup(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_str_t *code,
    ngx_http_gov_pay_reply_pt next)
{
    ngx_int_t  rc;

    rc = ngx_http_gov_pay_notice_lookup(r, ctx, code, next);

    if (rc == NGX_DECLINED) {
        return ngx_http_gov_pay_not_found_page(r);
    }

    return rc;
}


static ngx_int_t
ngx_http_gov_pay_lookup_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    ngx_int_t                          rc;
    const char                        *status;
    ngx_http_gov_pay_main_conf_t      *gpmcf;
    const ngx_http_gov_pay_channel_t  *ch;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    rc = ngx_http_gov_pay_notice_found(r, ctx, reply);

    if (rc == NGX_AGAIN) {
        return ngx_http_gov_pay_unavailable_page(r);
    }

    if (rc != NGX_OK) {
        return ngx_http_gov_pay_not_found_page(r);
    }

    status = ngx_http_gov_pay_status(ctx);

    switch (ctx->route) {

    case NGX_HTTP_GOV_PAY_PAGE_SVG:
    case NGX_HTTP_GOV_PAY_PAGE_PNG:
        rc = ngx_http_gov_pay_qr_image(r, gpmcf, ctx,
                                       ctx->route == NGX_HTTP_GOV_PAY_PAGE_PNG);
        break;

    case NGX_HTTP_GOV_PAY_PAGE_PAY:
        ngx_http_gov_pay_return_url(r, gpmcf, ctx);

        ch = ngx_http_gov_pay_channel(&ctx->channel);

        /* only an unpaid notice is handed over; the rest see their page */

        if (ngx_strcmp(status, "UNPAID") == 0 && ch) {
            rc = ch->handoff(r, ctx);
            break;
        }

        rc = ngx_http_gov_pay_notice_page(r, gpmcf, ctx);
        break;

    default:
        ngx_http_gov_pay_return_url(r, gpmcf, ctx);

        /* the unified QR: the payer's app implies the channel */

        ch = ngx_http_gov_pay_route_agent(r, gpmcf);

        if (ngx_strcmp(status, "UNPAID") == 0 && ch) {
            ctx->channel = ch->name;
            rc = ch->handoff(r, ctx);
            break;
        }

        rc = ngx_http_gov_pay_notice_page(r, gpmcf, ctx);
    }

    return rc;
}


/*
 * The channel of the payer's app: ops' table (gov_pay_agent_route) first,
 * in order, then the built-in patterns of the app channels.  A channel
 * that is not configured is never chosen; NULL: the cashier page.
 */

static const ngx_http_gov_pay_channel_t *
ngx_http_gov_pay_route_agent(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_str_t                          ua;
    ngx_uint_t                         i, match;
    ngx_http_gov_pay_agent_route_t    *route;
    const ngx_http_gov_pay_channel_t  *ch;

    if (r->headers_in.user_agent == NULL) {
        return NULL;
    }

    ua = r->headers_in.user_agent->value;

    if (gpmcf->agent_routes) {
        route = gpmcf->agent_routes->elts;

        for (i = 0; i < gpmcf->agent_routes->nelts; i++) {

#if (NGX_PCRE)
            if (route[i].regex) {
                match = (ngx_regex_exec(route[i].regex, &ua, NULL, 0) >= 0);
            } else
#endif
            {
                match = (ngx_strstrn(ua.data, (char *) route[i].pattern.data,
                                     route[i].pattern.len - 1)
                         != NULL);
            }

            if (!match) {
                continue;
            }

            if (route[i].channel.len == 0) {
                return NULL;
            }

            ch = ngx_http_gov_pay_channel(&route[i].channel);

            if (ch && ch->enabled(gpmcf)) {
                return ch;
            }
        }
    }

    ch = ngx_http_gov_pay_channel_for_agent(r, gpmcf);

    return (ch && ch->enabled(gpmcf)) ? ch : NULL;
}


char *
ngx_http_gov_pay_agent_route(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = conf;

    ngx_str_t                       *value;
    ngx_http_gov_pay_agent_route_t  *route;
#if (NGX_PCRE)
    u_char                           errstr[NGX_MAX_CONF_ERRSTR];
    ngx_regex_compile_t              rc;
#endif

    value = cf->args->elts;

    if (gpmcf->agent_routes == NULL) {
        gpmcf->agent_routes = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_gov_pay_agent_route_t));
        if (gpmcf->agent_routes == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    route = ngx_array_push(gpmcf->agent_routes);
    if (route == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(route, sizeof(ngx_http_gov_pay_agent_route_t));

    if (value[1].len == 0) {
        return "needs a non-empty pattern";
    }

    if (ngx_strcmp(value[2].data, "cashier") != 0) {
        if (ngx_http_gov_pay_channel(&value[2]) == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gov_pay: unknown channel \"%V\" (a channel's "
                               "name or \"cashier\")", &value[2]);
            return NGX_CONF_ERROR;
        }

        route->channel = value[2];
    }

    if (value[1].data[0] != '~') {
        route->pattern = value[1];      /* NUL-terminated */
        return NGX_CONF_OK;
    }

#if (NGX_PCRE)
    ngx_memzero(&rc, sizeof(ngx_regex_compile_t));

    rc.pattern.data = value[1].data + 1;
    rc.pattern.len = value[1].len - 1;

    if (rc.pattern.len && rc.pattern.data[0] == '*') {
        rc.pattern.data++;
        rc.pattern.len--;
        rc.options = NGX_REGEX_CASELESS;
    }

    rc.pool = cf->pool;
    rc.err.len = NGX_MAX_CONF_ERRSTR;
    rc.err.data = errstr;

    if (rc.pattern.len == 0 || ngx_regex_compile(&rc) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: bad User-Agent pattern \"%V\": %V",
                           &value[1], &rc.err);
        return NGX_CONF_ERROR;
    }

    route->regex = rc.regex;
    route->pattern = value[1];

    return NGX_CONF_OK;

#else
    return "needs PCRE for a \"~\" pattern";
#endif
}


/*
 * "?return_url=": kept in ctx->return_url only when it is an absolute
 * https URL (http where the unit's entry says "http://") whose host and
 * port are exactly one of the unit's return_hosts.
 */

static void
ngx_http_gov_pay_return_url(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    u_char           *d, *s, *host, *end;
    size_t            len;
    ngx_str_t         arg, url, *v;
    ngx_uint_t        i, secure;
    const char       *e;
    const gp_unit_t  *unit;

    if (ngx_http_arg(r, (u_char *) "return_url", 10, &arg) != NGX_OK
        || arg.len == 0 || arg.len > 1024)
    {
        return;
    }

    url.data = ngx_pnalloc(r->pool, arg.len + 1);
    if (url.data == NULL) {
        return;
    }

    d = url.data;
    s = arg.data;
    ngx_unescape_uri(&d, &s, arg.len, 0);
    url.len = d - url.data;
    *d = '\0';

    for (i = 0; i < url.len; i++) {
        if (url.data[i] <= 0x20 || url.data[i] >= 0x7f
            || url.data[i] == '\\')
        {
            return;
        }
    }

    if (url.len > 8 && ngx_strncasecmp(url.data, (u_char *) "https://", 8)
                       == 0)
    {
        secure = 1;
        host = url.data + 8;

    } else if (url.len > 7
               && ngx_strncasecmp(url.data, (u_char *) "http://", 7) == 0)
    {
        secure = 0;
        host = url.data + 7;

    } else {
        return;
    }

    for (end = host; end < url.data + url.len; end++) {
        if (*end == '/' || *end == '?' || *end == '#') {
            break;
        }

        if (*end == '@') {
            return;
        }
    }

    len = end - host;

    v = ngx_http_gov_pay_field(ctx, "unit");
    unit = v ? gp_registry_unit(gpmcf->registry, (char *) v->data, v->len)
             : NULL;

    if (unit == NULL || len == 0) {
        return;
    }

    for (i = 0; i < unit->nreturn_hosts; i++) {
        e = unit->return_hosts[i];

        if (ngx_strncmp(e, "http://", 7) == 0) {
            if (secure) {
                continue;
            }

            e += 7;

        } else if (!secure) {
            continue;
        }

        if (ngx_strlen(e) == len
            && ngx_strncasecmp(host, (u_char *) e, len) == 0)
        {
            ctx->return_url = url;
            return;
        }
    }
}


/* the page of a notice that is not handed to a channel */

static ngx_int_t
ngx_http_gov_pay_notice_page(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx)
{
    u_char                            *p;
    size_t                             len;
    ngx_str_t                          s, *code, *number, *check, arg;
    ngx_uint_t                         i;
    ngx_array_t                       *vars, *row;
    const char                        *status;
    const ngx_http_gov_pay_channel_t  *ch;

    status = ngx_http_gov_pay_status(ctx);

    if (ngx_strcmp(status, "CANCELLED") == 0
        || ngx_strcmp(status, "EXPIRED") == 0)
    {
        return ngx_http_gov_pay_message(r, NGX_HTTP_GOV_PAY_GONE,
                   ngx_strcmp(status, "CANCELLED") == 0 ? "缴款书已撤销"
                                                        : "缴款书已过期",
                   "这张缴款书已经不能缴费。如果还需要缴费，请联系收费单位"
                   "重新开具。");
    }

    vars = ngx_http_gov_pay_tvars(r->pool);
    if (vars == NULL
        || ngx_http_gov_pay_notice_vars(r, gpmcf, ctx, vars) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_strcmp(status, "UNPAID") != 0) {

        /* paid (and whatever follows a payment): the receipt, once issued */

        code = ngx_http_gov_pay_field(ctx, "receipt_code");
        number = ngx_http_gov_pay_field(ctx, "receipt_number");
        check = ngx_http_gov_pay_field(ctx, "receipt_check");

        if (code && number && check) {
            len = sizeof("/r//?c=") + code->len + number->len + check->len;
            s.data = ngx_pnalloc(r->pool, len);
            if (s.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            s.len = ngx_sprintf(s.data, "/r/%V/%V?c=%V", code, number, check)
                    - s.data;

            if (ngx_http_gov_pay_tvar(vars, "receipt_url", &s) != NGX_OK) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        return ngx_http_gov_pay_render_page(r, NGX_HTTP_OK, "paid.html",
                                            "已缴费", vars);
    }

    /* the cashier: one button per enabled channel, return_url carried on */

    arg.len = 0;

    if (ctx->return_url.len) {
        len = ngx_escape_uri(NULL, ctx->return_url.data, ctx->return_url.len,
                             NGX_ESCAPE_URI_COMPONENT);
        arg.len = sizeof("?return_url=") - 1 + ctx->return_url.len + 2 * len;
        arg.data = ngx_pnalloc(r->pool, arg.len);
        if (arg.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(arg.data, "?return_url=", 12);
        ngx_escape_uri(p, ctx->return_url.data, ctx->return_url.len,
                       NGX_ESCAPE_URI_COMPONENT);
    }

    for (i = 0; (ch = ngx_http_gov_pay_channel_at(i)); i++) {
        if (!ch->enabled(gpmcf)) {
            continue;
        }

        row = ngx_http_gov_pay_tvar_row(vars, "channels");
        if (row == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        s.len = sizeof("/pay//") - 1 + ch->name.len + ctx->code.len + arg.len;
        s.data = ngx_pnalloc(r->pool, s.len);
        if (s.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_sprintf(s.data, "/pay/%V/%V%V", &ch->name, &ctx->code, &arg);

        if (ngx_http_gov_pay_tvar(row, "url", &s) != NGX_OK
            || ngx_http_gov_pay_tvar_cstr(row, "title", ch->title) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    return ngx_http_gov_pay_render_page(r, NGX_HTTP_OK, "cashier.html",
                                        "缴费信息", vars);
}


/* the values every notice page shows, masked where they are personal */

static ngx_int_t
ngx_http_gov_pay_notice_vars(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_array_t *vars)
{
    u_char           *p, due[26], paid[26];
    int64_t           amount;
    ngx_str_t         s, *v;
    ngx_uint_t        i;
    const gp_item_t  *it;
    const gp_unit_t  *un;

    amount = ngx_http_gov_pay_field_int(ctx, "paid_amount");
    if (amount <= 0) {
        amount = ngx_http_gov_pay_field_int(ctx, "amount");
    }

    if (ngx_http_gov_pay_yuan(r, amount, &s) != NGX_OK
        || ngx_http_gov_pay_tvar(vars, "amount", &s) != NGX_OK)
    {
        return NGX_ERROR;
    }

    v = ngx_http_gov_pay_field(ctx, "item_code");
    it = v ? gp_registry_item(gpmcf->registry, (char *) v->data, v->len)
           : NULL;
    v = ngx_http_gov_pay_field(ctx, "unit");
    un = v ? gp_registry_unit(gpmcf->registry, (char *) v->data, v->len)
           : NULL;

    if (ngx_http_gov_pay_tvar_cstr(vars, "item", it ? it->name : "—")
        != NGX_OK
        || ngx_http_gov_pay_tvar_cstr(vars, "unit", un ? un->name : "—")
           != NGX_OK
        || ngx_http_gov_pay_tvar(vars, "code", &ctx->code) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the masked forms stored at create; the sealed ones are never opened */

    if (ngx_http_gov_pay_masked(r, vars, "payer_name",
            ngx_http_gov_pay_field(ctx, "payer_name_masked"), 0)
        != NGX_OK
        || ngx_http_gov_pay_masked(r, vars, "payer_id",
               ngx_http_gov_pay_field(ctx, "payer_id_masked"), 1)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the code in groups of four: easier to read out and to type */

    s.len = ctx->code.len + ctx->code.len / 4;
    s.data = ngx_pnalloc(r->pool, s.len);
    if (s.data == NULL) {
        return NGX_ERROR;
    }

    for (i = 0, p = s.data; i < ctx->code.len; i++) {
        if (i && i % 4 == 0) {
            *p++ = ' ';
        }

        *p++ = ctx->code.data[i];
    }

    s.len = p - s.data;

    if (ngx_http_gov_pay_tvar(vars, "code_grouped", &s) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_gov_pay_time(ngx_http_gov_pay_field_int(ctx, "due_at"), due);

    s.data = due;
    s.len = ngx_strlen(due);
    s.data = ngx_pstrdup(r->pool, &s);
    if (s.data == NULL || ngx_http_gov_pay_tvar(vars, "due", &s) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_field(ctx, "paid_at")) {
        ngx_http_gov_pay_time(ngx_http_gov_pay_field_int(ctx, "paid_at"),
                              paid);

        s.data = paid;
        s.len = ngx_strlen(paid);
        s.data = ngx_pstrdup(r->pool, &s);
        if (s.data == NULL
            || ngx_http_gov_pay_tvar(vars, "paid_at", &s) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    s.len = sizeof("/q/.svg") - 1 + ctx->code.len;
    s.data = ngx_pnalloc(r->pool, s.len);
    if (s.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(s.data, "/q/%V.svg", &ctx->code);

    if (ngx_http_gov_pay_tvar(vars, "qr_url", &s) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->return_url.len
        && ngx_http_gov_pay_tvar(vars, "return_url", &ctx->return_url)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * A masked name or ID number, and how a screen reader should say it:
 * "张**" -> "张（其余字已隐去）", "3301**********1234" -> "前 4 位 3 3 0 1，
 * 后 4 位 1 2 3 4，中间已隐去" (not "asterisk" ten times).  Sets name and
 * name_spoken; nothing for an absent or empty value.  The notice stores the
 * masked forms (payer_name_masked, payer_id_masked); masking them again
 * changes nothing, and keeps a page masked whatever a field holds.
 */

ngx_int_t
ngx_http_gov_pay_masked(ngx_http_request_t *r, ngx_array_t *vars,
    const char *name, ngx_str_t *value, ngx_uint_t id)
{
    u_char     *masked, *spoken, *p, *first, *last, *end, *c;
    size_t      len;
    ngx_int_t   n;
    ngx_str_t   s;

    if (value == NULL || value->len == 0) {
        return id ? NGX_OK
                  : ngx_http_gov_pay_tvar_cstr(vars, name, "—");
    }

    masked = ngx_pnalloc(r->pool, 256);
    spoken = ngx_pnalloc(r->pool, 512);
    if (masked == NULL || spoken == NULL) {
        return NGX_ERROR;
    }

    n = id ? gp_mask_id((char *) value->data, value->len, (char *) masked,
                        256)
           : gp_mask_name((char *) value->data, value->len, (char *) masked,
                          256);
    if (n < 0) {
        return id ? NGX_OK
                  : ngx_http_gov_pay_tvar_cstr(vars, name, "—");
    }

    len = n;
    end = masked + len;
    first = ngx_strlchr(masked, end, '*');

    if (first == NULL) {
        p = ngx_cpymem(spoken, masked, len);

    } else if (!id) {
        p = ngx_cpymem(spoken, masked, first - masked);
        p = ngx_cpymem(p, "（其余字已隐去）",
                       sizeof("（其余字已隐去）") - 1);

    } else {
        for (last = end; last[-1] != '*'; last--) { /* void */ }

        p = ngx_sprintf(spoken, "前 %uz 位", (size_t) (first - masked));
        for (c = masked; c < first; c++) {
            p = ngx_sprintf(p, " %c", *c);
        }

        p = ngx_sprintf(p, "，后 %uz 位", (size_t) (end - last));
        for (c = last; c < end; c++) {
            p = ngx_sprintf(p, " %c", *c);
        }

        p = ngx_cpymem(p, "，中间已隐去", sizeof("，中间已隐去") - 1);
    }

    *p = '\0';

    if (ngx_http_gov_pay_tvar_cstr(vars, name, (char *) masked) != NGX_OK) {
        return NGX_ERROR;
    }

    s.len = ngx_strlen(name) + sizeof("_spoken");
    s.data = ngx_pnalloc(r->pool, s.len);
    if (s.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(s.data, "%s_spoken%Z", name);

    return ngx_http_gov_pay_tvar_cstr(vars, (char *) s.data, (char *) spoken);
}


/* "2026-12-31 23:59" (+08:00) */

static void
ngx_http_gov_pay_time(int64_t t, u_char *buf)
{
    gp_time_rfc3339(t, (char *) buf);
    buf[10] = ' ';
    buf[16] = '\0';
}


static ngx_int_t
ngx_http_gov_pay_yuan(ngx_http_request_t *r, int64_t fen, ngx_str_t *s)
{
    int  n;

    s->data = ngx_pnalloc(r->pool, 32);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    n = gp_fen_to_yuan(fen, (char *) s->data, 32);
    if (n < 0) {
        return NGX_ERROR;
    }

    s->len = ngx_strlen(s->data);

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_page(ngx_http_request_t *r, ngx_uint_t status,
    const char *title, ngx_str_t *content)
{
    ngx_array_t  *vars;

    vars = ngx_http_gov_pay_tvars(r->pool);
    if (vars == NULL
        || ngx_http_gov_pay_tvar(vars, "content_html", content) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_render_page(r, status, "page.html", title, vars);
}


ngx_int_t
ngx_http_gov_pay_message(ngx_http_request_t *r, ngx_uint_t status,
    const char *title, const char *text)
{
    ngx_array_t             *vars;
    ngx_http_gov_pay_ctx_t  *ctx;

    vars = ngx_http_gov_pay_tvars(r->pool);
    if (vars == NULL
        || ngx_http_gov_pay_tvar_cstr(vars, "text", text) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);

    if (ctx && ctx->return_url.len
        && ngx_http_gov_pay_tvar(vars, "return_url", &ctx->return_url)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_render_page(r, status, "message.html", title,
                                        vars);
}


/*
 * The open per-item code (一费一码), for when a unit's own system is down:
 * GET /o/{item} is the form; POST /o/{item} with q=<payment code or ID
 * number> shows the payer's unpaid notices of that item.  By code: the
 * code's own shard; it must be of this item and unpaid.  By ID number: the
 * item's index on every shard (a keyed hash of the ID, never the ID),
 * asked at once.  An unknown ID and an ID without notices look the same.
 * POST keeps ID numbers out of access logs and browser history.
 */

static ngx_int_t
ngx_http_gov_pay_open(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_int_t         rc;
    ngx_str_t         code;
    const gp_item_t  *item;

    code.data = r->uri.data + 3;
    code.len = r->uri.len - 3;

    item = (code.len <= 32)
           ? gp_registry_item(gpmcf->registry, (char *) code.data, code.len)
           : NULL;

    if (r->method == NGX_HTTP_POST && item) {
        return ngx_http_gov_pay_read_body(r, ngx_http_gov_pay_open_body);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (item == NULL) {
        return ngx_http_gov_pay_message(r, NGX_HTTP_NOT_FOUND,
                                        "收费项目不存在",
                                        "没有找到这个收费项目。请核对二维码"
                                        "或网址。");
    }

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return ngx_http_gov_pay_message(r, NGX_HTTP_NOT_ALLOWED,
                                        "不支持的请求",
                                        "请重新打开本页查询。");
    }

    return ngx_http_gov_pay_open_page(r, item, NULL);
}


static ngx_int_t
ngx_http_gov_pay_open_page(ngx_http_request_t *r, const gp_item_t *item,
    ngx_array_t *vars)
{
    ngx_str_t  action;

    if (vars == NULL) {
        vars = ngx_http_gov_pay_tvars(r->pool);
        if (vars == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    action = r->uri;

    if (ngx_http_gov_pay_tvar_cstr(vars, "item", item->name) != NGX_OK
        || ngx_http_gov_pay_tvar_cstr(vars, "department", item->department)
           != NGX_OK
        || ngx_http_gov_pay_tvar(vars, "action", &action) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_render_page(r, NGX_HTTP_OK, "open.html",
                                        item->name, vars);
}


static ngx_int_t
ngx_http_gov_pay_open_body(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx)
{
    u_char                        *q, *p;
    size_t                         len;
    ngx_int_t                      rc;
    ngx_str_t                      code;
    gp_form_t                      form;
    ngx_array_t                   *vars;
    const gp_kv_t                 *kv;
    ngx_http_gov_pay_open_t       *op;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    op = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_open_t));
    vars = ngx_http_gov_pay_tvars(r->pool);

    if (op == NULL || vars == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->channel_data = op;
    op->vars = vars;
    op->item = gp_registry_item(gpmcf->registry, (char *) r->uri.data + 3,
                                r->uri.len - 3);

    if (ngx_http_gov_pay_tvar_cstr(vars, "searched", "1") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the one field, trimmed and upper-cased (an ID's check 'x') */

    q = NULL;
    len = 0;

    if (ctx->body.len <= 1024
        && gp_form_parse((const char *) ctx->body.data, ctx->body.len, &form)
           == 0)
    {
        kv = gp_form_get(&form, "q");

        if (kv && kv->value_len <= 64) {
            q = ngx_pnalloc(r->pool, kv->value_len + 1);

            if (q) {
                for (p = (u_char *) kv->value;
                     p < (u_char *) kv->value + kv->value_len;
                     p++)
                {
                    if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
                        q[len++] = ngx_toupper(*p);
                    }
                }

                q[len] = '\0';
            }
        }

        gp_form_free(&form);
    }

    if (q && len == GP_CODE_LEN) {
        code.data = q;
        code.len = len;
        ctx->route = NGX_HTTP_GOV_PAY_PAGE_OPEN;

        rc = ngx_http_gov_pay_notice_lookup(r, ctx, &code,
                                            ngx_http_gov_pay_open_code_done);

        if (rc != NGX_DECLINED) {
            return rc;
        }

        return ngx_http_gov_pay_tvar_cstr(vars, "none", "1") == NGX_OK
               ? ngx_http_gov_pay_open_page(r, op->item, vars)
               : NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (q && len == 18 && gpmcf->lookup_key.len
        && (gp_resident_id_valid((char *) q, len)
            || gp_uscc_valid((char *) q, len)))
    {
        return ngx_http_gov_pay_open_by_id(r, gpmcf, ctx, q);
    }

    if (ngx_http_gov_pay_tvar_cstr(vars, "error",
            gpmcf->lookup_key.len
            ? "请输入缴款通知书上的 20 位缴款码，或 18 位身份证号码"
              "（统一社会信用代码）。"
            : "请输入缴款通知书上的 20 位缴款码。")
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_open_page(r, op->item, vars);
}


static ngx_int_t
ngx_http_gov_pay_open_code_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    ngx_int_t                 rc;
    ngx_str_t                *item_code, *name;
    const gp_item_t          *item;
    ngx_http_gov_pay_open_t  *op;

    op = ctx->channel_data;
    item = op->item;

    rc = ngx_http_gov_pay_notice_found(r, ctx, reply);

    if (rc == NGX_AGAIN) {
        return ngx_http_gov_pay_unavailable_page(r);
    }

    /* the code must be of this item and payable; anything else: nothing */

    item_code = (rc == NGX_OK) ? ngx_http_gov_pay_field(ctx, "item_code")
                               : NULL;

    if (item_code && item_code->len == ngx_strlen(item->code)
        && ngx_strncmp(item_code->data, item->code, item_code->len) == 0
        && ngx_strcmp(ngx_http_gov_pay_status(ctx), "UNPAID") == 0)
    {
        name = ngx_http_gov_pay_field(ctx, "payer_name_masked");

        rc = ngx_http_gov_pay_open_row(r, op->vars, &ctx->code,
                 ngx_http_gov_pay_field_int(ctx, "amount"), name,
                 ngx_http_gov_pay_field_int(ctx, "due_at"));

    } else {
        rc = ngx_http_gov_pay_tvar_cstr(op->vars, "none", "1");
    }

    return rc == NGX_OK ? ngx_http_gov_pay_open_page(r, item, op->vars)
                        : NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static ngx_int_t
ngx_http_gov_pay_open_row(ngx_http_request_t *r, ngx_array_t *vars,
    ngx_str_t *code, int64_t amount, ngx_str_t *name, int64_t due)
{
    u_char        when[26];
    ngx_str_t     s;
    ngx_array_t  *row;

    row = ngx_http_gov_pay_tvar_row(vars, "results");

    if (row == NULL
        || ngx_http_gov_pay_masked(r, row, "payer_name", name, 0) != NGX_OK
        || ngx_http_gov_pay_yuan(r, amount, &s) != NGX_OK
        || ngx_http_gov_pay_tvar(row, "amount", &s) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_gov_pay_time(due, when);

    s.data = when;
    s.len = ngx_strlen(when);
    s.data = ngx_pstrdup(r->pool, &s);
    if (s.data == NULL || ngx_http_gov_pay_tvar(row, "due", &s) != NGX_OK) {
        return NGX_ERROR;
    }

    s.len = sizeof("/q/") - 1 + code->len;
    s.data = ngx_pnalloc(r->pool, s.len);
    if (s.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(s.data, "/q/%V", code);

    return ngx_http_gov_pay_tvar(row, "url", &s);
}


/*
 * The key of a payer's index for one item on one shard:
 * "{gpN}:pidx:<item>:<first 32 hex of HMAC-SHA256(lookup key, ID)>".
 * NGX_DECLINED when the index is off (no gov_pay_lookup_key) or no ID.
 */

ngx_int_t
ngx_http_gov_pay_index_key(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, uint32_t shard,
    const char *item_code, const char *id_no, ngx_str_t *key)
{
    char           hex[65];
    u_char         id[64];
    size_t         i, len;
    unsigned char  mac[32];

    if (gpmcf->lookup_key.len == 0 || item_code == NULL || id_no == NULL) {
        return NGX_DECLINED;
    }

    len = ngx_strlen(id_no);
    if (len == 0 || len > sizeof(id)) {
        return NGX_DECLINED;
    }

    for (i = 0; i < len; i++) {
        id[i] = ngx_toupper((u_char) id_no[i]);
    }

    if (gp_hmac_keyed(gpmcf->lookup_hmac, id, len, mac) != 0)
    {
        return NGX_ERROR;
    }

    gp_hex(mac, 16, hex);

    return ngx_http_gov_pay_key(r->pool, key, shard, "pidx:%s:%*s",
                                item_code, (size_t) 32, hex);
}


static ngx_int_t
ngx_http_gov_pay_open_by_id(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    u_char *id)
{
    u_char                    *p;
    ngx_str_t                 *argv;
    ngx_uint_t                 i, n;
    ngx_http_gov_pay_open_t   *op;
    ngx_http_gov_pay_query_t  *q;

    op = ctx->channel_data;
    n = gpmcf->shards;

    q = ngx_palloc(r->pool, n * sizeof(ngx_http_gov_pay_query_t));
    argv = ngx_palloc(r->pool, 4 * n * sizeof(ngx_str_t));
    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + NGX_INT_T_LEN + 2);
    if (q == NULL || argv == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[2].data = p;
    argv[2].len = ngx_sprintf(p, "%T", ngx_time()) - p;
    argv[3].data = argv[2].data + argv[2].len;
    argv[3].len = ngx_sprintf(argv[3].data, "%ui",
                              (ngx_uint_t) NGX_HTTP_GOV_PAY_OPEN_MAX)
                  - argv[3].data;

    /* every shard at once: the commands are pipelined on one connection */

    for (i = 0; i < n; i++) {
        if (ngx_http_gov_pay_index_key(r, gpmcf, i, op->item->code,
                                       (char *) id, &argv[4 * i])
            != NGX_OK
            || ngx_http_gov_pay_key(r->pool, &argv[4 * i + 1], i, "n:")
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[4 * i + 2] = argv[2];
        argv[4 * i + 3] = argv[3];

        q[i].script = NGX_HTTP_GOV_PAY_SCRIPT_LOOKUP;
        q[i].nkeys = 1;
        q[i].argc = 4;
        q[i].argv = &argv[4 * i];
    }

    return ngx_http_gov_pay_query_all(r, n, q,
                                      ngx_http_gov_pay_open_shard_done,
                                      ngx_http_gov_pay_open_found);
}


static void
ngx_http_gov_pay_open_shard_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_uint_t shard, redisReply *reply)
{
    char                           code[GP_CODE_LEN + 1];
    size_t                         i;
    uint64_t                       seq;
    ngx_str_t                      c, name;
    redisReply                   **e;
    ngx_http_gov_pay_open_t       *op;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    op = ctx->channel_data;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements % 6)
    {
        op->failed++;
        return;
    }

    e = reply->element;

    for (i = 0; i + 6 <= reply->elements; i += 6) {
        if (e[i]->type != REDIS_REPLY_STRING
            || e[i + 1]->type != REDIS_REPLY_STRING
            || e[i + 3]->type != REDIS_REPLY_STRING
            || e[i + 4]->type != REDIS_REPLY_STRING
            || e[i + 5]->type != REDIS_REPLY_STRING
            || e[i + 4]->len != 6 || e[i + 5]->len != 2)
        {
            continue;
        }

        seq = (uint64_t) ngx_atoof((u_char *) e[i]->str, e[i]->len);

        if (gp_code_make(&gpmcf->code_key, e[i + 4]->str,
                         (unsigned) ngx_atoi((u_char *) e[i + 5]->str, 2),
                         (uint32_t) gpmcf->shards, (uint32_t) shard, seq,
                         code)
            != 0)
        {
            continue;
        }

        c.data = (u_char *) code;
        c.len = GP_CODE_LEN;
        c.data = ngx_pstrdup(r->pool, &c);

        name.data = (u_char *) (e[i + 2]->type == REDIS_REPLY_STRING
                                ? e[i + 2]->str : "");
        name.len = (e[i + 2]->type == REDIS_REPLY_STRING) ? e[i + 2]->len : 0;

        if (c.data == NULL
            || ngx_http_gov_pay_open_row(r, op->vars, &c,
                   ngx_atoof((u_char *) e[i + 1]->str, e[i + 1]->len),
                   &name,
                   ngx_atoof((u_char *) e[i + 3]->str, e[i + 3]->len))
               != NGX_OK)
        {
            op->failed++;
            break;
        }

        op->found++;
    }
}


/* every shard answered (or failed) */

static ngx_int_t
ngx_http_gov_pay_open_found(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx)
{
    ngx_http_gov_pay_open_t  *op;

    op = ctx->channel_data;

    if (op->failed) {
        return ngx_http_gov_pay_unavailable_page(r);
    }

    if (op->found == 0
        && ngx_http_gov_pay_tvar_cstr(op->vars, "none", "1") != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_gov_pay_open_page(r, op->item, op->vars);
}
