
/*
 * ngx_gov_pay_channel.c: the table of payment channels, the unified-QR
 * routing of a payer's app to its channel by User-Agent, and what the
 * channels share: loading their settings and keys at configuration time,
 * redirects, form fields and China Standard Time stamps.
 */


#include "ngx_gov_pay_channel.h"


static void ngx_http_gov_pay_channel_pkey_cleanup(void *data);
static void ngx_http_gov_pay_refusals_timer(ngx_event_t *ev);


/*
 * Refused callbacks of this worker process, per channel and reason: the
 * first is logged in full; while more come, one line per interval counts
 * them.  A small table: the reasons are the channels' static strings.
 */

#define NGX_HTTP_GOV_PAY_REFUSALS  64

typedef struct {
    const char                *channel;
    const char                *reason;
    time_t                     since;      /* this window's start; 0: none */
    ngx_uint_t                 more;       /* refused since, not logged */
} ngx_http_gov_pay_refusal_t;


static ngx_http_gov_pay_refusal_t  ngx_http_gov_pay_refusals[
                                       NGX_HTTP_GOV_PAY_REFUSALS];
static ngx_event_t                 ngx_http_gov_pay_refusals_ev;


static const ngx_http_gov_pay_channel_t  *ngx_http_gov_pay_channels[] = {
    &ngx_http_gov_pay_alipay_channel,
    &ngx_http_gov_pay_wechat_channel,
    &ngx_http_gov_pay_unionpay_channel,
    &ngx_http_gov_pay_sandbox_channel,
    NULL
};


/* the payer's app, by a fragment of its User-Agent */

typedef struct {
    ngx_str_t                          agent;
    const ngx_http_gov_pay_channel_t  *channel;
} ngx_http_gov_pay_agent_t;


static ngx_http_gov_pay_agent_t  ngx_http_gov_pay_agents[] = {
    { ngx_string("AlipayClient"), &ngx_http_gov_pay_alipay_channel },
    { ngx_string("MicroMessenger"), &ngx_http_gov_pay_wechat_channel },
    { ngx_string("UnionPay/"), &ngx_http_gov_pay_unionpay_channel },
    { ngx_string("CloudPay"), &ngx_http_gov_pay_unionpay_channel },
    { ngx_null_string, NULL }
};


const ngx_http_gov_pay_channel_t *
ngx_http_gov_pay_channel(ngx_str_t *name)
{
    ngx_uint_t                         i;
    const ngx_http_gov_pay_channel_t  *ch;

    for (i = 0; ngx_http_gov_pay_channels[i]; i++) {
        ch = ngx_http_gov_pay_channels[i];

        if (ch->name.len == name->len
            && ngx_strncmp(ch->name.data, name->data, name->len) == 0)
        {
            return ch;
        }
    }

    return NULL;
}


const ngx_http_gov_pay_channel_t *
ngx_http_gov_pay_channel_at(ngx_uint_t i)
{
    ngx_uint_t  n;

    for (n = 0; ngx_http_gov_pay_channels[n]; n++) {
        if (n == i) {
            return ngx_http_gov_pay_channels[i];
        }
    }

    return NULL;
}


const ngx_http_gov_pay_channel_t *
ngx_http_gov_pay_channel_for_agent(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_str_t                 *ua;
    ngx_http_gov_pay_agent_t  *a;

    if (r->headers_in.user_agent == NULL) {
        return NULL;
    }

    ua = &r->headers_in.user_agent->value;

    for (a = ngx_http_gov_pay_agents; a->channel; a++) {
        if (ngx_strlcasestrn(ua->data, ua->data + ua->len, a->agent.data,
                             a->agent.len - 1)
            != NULL)
        {
            /* an app whose channel is not configured sees the cashier */
            return a->channel->enabled(gpmcf) ? a->channel : NULL;
        }
    }

    return NULL;
}


/* configuration */

ngx_int_t
ngx_http_gov_pay_channels_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_uint_t                         i;
    const ngx_http_gov_pay_channel_t  *ch;

    for (i = 0; ngx_http_gov_pay_channels[i]; i++) {
        ch = ngx_http_gov_pay_channels[i];

        if (ch->init_conf && ch->init_conf(cf, gpmcf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_conf_complete(ngx_conf_t *cf, const char *channel,
    ngx_str_t **values, const char **names, ngx_uint_t *on)
{
    ngx_uint_t  i, set, first;

    set = 0;
    first = 0;

    for (i = 0; names[i]; i++) {
        if (values[i]->len) {
            set++;
            first = i;
        }
    }

    *on = 0;

    if (set == 0) {
        return NGX_OK;
    }

    for (i = 0; names[i]; i++) {
        if (values[i]->len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gov_pay: the %s channel needs \"%s\" "
                               "(\"%s\" is set)", channel, names[i],
                               names[first]);
            return NGX_ERROR;
        }
    }

    *on = 1;

    return NGX_OK;
}


EVP_PKEY *
ngx_http_gov_pay_conf_pkey(ngx_conf_t *cf, ngx_str_t *file,
    ngx_uint_t private_key, const char *directive)
{
    char                 err[512];
    u_char              *p;
    EVP_PKEY            *pkey;
    ngx_pool_cleanup_t  *cln;

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NULL;
    }

    p = ngx_http_gov_pay_cstr(cf->pool, file);
    if (p == NULL) {
        return NULL;
    }

    pkey = gp_pkey_load((char *) p, private_key ? 1 : 0, GP_SIG_RSA_SHA256,
                        err, sizeof(err));
    if (pkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "gov_pay: \"%s\": %s",
                           directive, err);
        return NULL;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(pkey);
        return NULL;
    }

    cln->handler = ngx_http_gov_pay_channel_pkey_cleanup;
    cln->data = pkey;

    return pkey;
}


static void
ngx_http_gov_pay_channel_pkey_cleanup(void *data)
{
    EVP_PKEY_free(data);
}


ngx_int_t
ngx_http_gov_pay_conf_url(ngx_conf_t *cf, ngx_str_t *url,
    const char *directive)
{
    u_char     *host, *p, *last;
    ngx_uint_t  i;

    last = url->data + url->len;

    if (url->len > 8 && ngx_strncmp(url->data, "https://", 8) == 0) {
        host = url->data + 8;

    } else if (url->len > 7 && ngx_strncmp(url->data, "http://", 7) == 0) {
        host = url->data + 7;

    } else {
        goto invalid;
    }

    /* a host, an optional port, a path: nothing a payer could steer */

    for (p = host; p < last && *p != '/'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')
              || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'
              || *p == ':'))
        {
            goto invalid;
        }
    }

    if (p == host) {
        goto invalid;
    }

    for (i = 0; i < url->len; i++) {
        if (url->data[i] <= 0x20 || url->data[i] >= 0x7f
            || url->data[i] == '?' || url->data[i] == '#'
            || url->data[i] == '"' || url->data[i] == '<'
            || url->data[i] == '>' || url->data[i] == '\''
            || url->data[i] == '@')
        {
            goto invalid;
        }
    }

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "gov_pay: \"%s\" must be an http:// or https:// URL "
                       "of a host and a path, without query, got \"%V\"",
                       directive, url);
    return NGX_ERROR;
}


ngx_int_t
ngx_http_gov_pay_conf_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *secret, const char *directive)
{
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_file_t       f;
    ngx_file_info_t  fi;

    if (ngx_conf_full_name(cf->cycle, file, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "gov_pay: \"%s\": " ngx_open_file_n " \"%V\" "
                           "failed", directive, file);
        return NGX_ERROR;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.fd = fd;
    f.name = *file;
    f.log = cf->log;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 1024)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"%s\": \"%V\" is unreadable or larger "
                           "than 1 KiB", directive, file);
        goto failed;
    }

    secret->data = ngx_pnalloc(cf->pool, (size_t) ngx_file_size(&fi) + 1);
    if (secret->data == NULL) {
        goto failed;
    }

    n = ngx_read_file(&f, secret->data, (size_t) ngx_file_size(&fi), 0);
    if (n == NGX_ERROR) {
        goto failed;
    }

    secret->len = n;

    while (secret->len
           && (secret->data[secret->len - 1] == '\n'
               || secret->data[secret->len - 1] == '\r'
               || secret->data[secret->len - 1] == ' '
               || secret->data[secret->len - 1] == '\t'))
    {
        secret->len--;
    }

    secret->data[secret->len] = '\0';

    ngx_close_file(fd);
    return NGX_OK;

failed:

    ngx_close_file(fd);
    return NGX_ERROR;
}


/* requests */

void
ngx_http_gov_pay_refused(ngx_http_request_t *r, const char *channel,
    const char *reason)
{
    time_t                          now;
    ngx_uint_t                      i;
    ngx_http_gov_pay_refusal_t     *rf, *free;
    ngx_http_gov_pay_main_conf_t   *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    now = ngx_time();
    free = NULL;
    rf = NULL;

    for (i = 0; i < NGX_HTTP_GOV_PAY_REFUSALS; i++) {
        if (ngx_http_gov_pay_refusals[i].channel == NULL) {
            if (free == NULL) {
                free = &ngx_http_gov_pay_refusals[i];
            }
            continue;
        }

        if (ngx_http_gov_pay_refusals[i].reason == reason
            && ngx_strcmp(ngx_http_gov_pay_refusals[i].channel, channel) == 0)
        {
            rf = &ngx_http_gov_pay_refusals[i];
            break;
        }
    }

    if (rf && rf->since && now < rf->since + gpmcf->refusal_log_interval) {
        /* counted now, logged by the timer at the end of the window */

        rf->more++;

        if (!ngx_http_gov_pay_refusals_ev.timer_set) {
            ngx_http_gov_pay_refusals_ev.handler =
                                           ngx_http_gov_pay_refusals_timer;
            ngx_http_gov_pay_refusals_ev.log = ngx_cycle->log;
            ngx_http_gov_pay_refusals_ev.data = gpmcf;
            ngx_http_gov_pay_refusals_ev.cancelable = 1;

            ngx_add_timer(&ngx_http_gov_pay_refusals_ev,
                          (ngx_msec_t) (rf->since + gpmcf->refusal_log_interval
                                        - now) * 1000);
        }

        return;
    }

    if (rf == NULL) {
        rf = free;
    }

    if (rf) {
        rf->channel = channel;
        rf->reason = reason;
        rf->since = now;
        rf->more = 0;
    }

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "gov_pay: %s callback refused: %s (the same refusals are "
                  "counted, not logged, for %T s)", channel, reason,
                  gpmcf->refusal_log_interval);
}


static void
ngx_http_gov_pay_refusals_timer(ngx_event_t *ev)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = ev->data;

    time_t                       now;
    ngx_uint_t                   i, again;
    ngx_http_gov_pay_refusal_t  *rf;

    now = ngx_time();
    again = 0;

    for (i = 0; i < NGX_HTTP_GOV_PAY_REFUSALS; i++) {
        rf = &ngx_http_gov_pay_refusals[i];

        if (rf->channel == NULL || rf->more == 0) {
            continue;
        }

        ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                      "gov_pay: %s callback refused: %s: %ui more in the "
                      "last %T s", rf->channel, rf->reason, rf->more,
                      now - rf->since);

        /* a new window: its refusals are counted and logged in turn */

        rf->since = now;
        rf->more = 0;
        again = 1;
    }

    if (again && !ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(ev, (ngx_msec_t) gpmcf->refusal_log_interval * 1000);
    }
}


/* at exit: what was counted is logged, not lost */

void
ngx_http_gov_pay_refusals_flush(ngx_cycle_t *cycle)
{
    if (ngx_http_gov_pay_refusals_ev.timer_set) {
        ngx_del_timer(&ngx_http_gov_pay_refusals_ev);
        ngx_http_gov_pay_refusals_ev.log = cycle->log;
        ngx_http_gov_pay_refusals_timer(&ngx_http_gov_pay_refusals_ev);

        if (ngx_http_gov_pay_refusals_ev.timer_set) {
            ngx_del_timer(&ngx_http_gov_pay_refusals_ev);
        }
    }
}

/*
 * The reply of a channel that answers in plain text: its own success word,
 * 404 for an unknown order, 503 to have it retry, 400 otherwise; "fail" is
 * the body of every failure.
 */

ngx_int_t
ngx_http_gov_pay_text_reply(ngx_http_request_t *r,
    ngx_http_gov_pay_cb_outcome_e outcome, const char *success)
{
    ngx_str_t   body;
    ngx_uint_t  status;

    switch (outcome) {

    case NGX_HTTP_GOV_PAY_CB_ACCEPTED:
        body.data = (u_char *) success;
        body.len = ngx_strlen(success);
        return ngx_http_gov_pay_send(r, NGX_HTTP_OK,
                                     "text/plain; charset=utf-8", &body);

    case NGX_HTTP_GOV_PAY_CB_UNKNOWN:
        status = NGX_HTTP_NOT_FOUND;
        break;

    case NGX_HTTP_GOV_PAY_CB_RETRY:
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        break;

    default:
        status = NGX_HTTP_BAD_REQUEST;
    }

    ngx_str_set(&body, "fail");

    return ngx_http_gov_pay_send(r, status, "text/plain; charset=utf-8",
                                 &body);
}


ngx_int_t
ngx_http_gov_pay_redirect(ngx_http_request_t *r, ngx_str_t *url)
{
    ngx_str_t         empty;
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Location");
    h->value = *url;

    r->headers_out.location = h;

    ngx_str_set(&empty, "");

    return ngx_http_gov_pay_send(r, NGX_HTTP_MOVED_TEMPORARILY,
                                 "text/html; charset=utf-8", &empty);
}


ngx_int_t
ngx_http_gov_pay_content_type_is(ngx_http_request_t *r, const char *type)
{
    size_t      len;
    ngx_str_t  *ct;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    ct = &r->headers_in.content_type->value;
    len = ngx_strlen(type);

    return ct->len >= len
           && ngx_strncasecmp(ct->data, (u_char *) type, len) == 0;
}


ngx_int_t
ngx_http_gov_pay_form_unique(gp_form_t *form)
{
    size_t  i, j;

    for (i = 0; i < form->n; i++) {
        for (j = i + 1; j < form->n; j++) {
            if (form->kv[i].key_len == form->kv[j].key_len
                && ngx_memcmp(form->kv[i].key, form->kv[j].key,
                              form->kv[i].key_len)
                   == 0)
            {
                return NGX_DECLINED;
            }
        }
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_form_token(ngx_http_request_t *r, gp_form_t *form,
    const char *key, size_t max, ngx_uint_t digits, ngx_str_t *out)
{
    size_t          i;
    const gp_kv_t  *kv;

    kv = gp_form_get(form, key);

    if (kv == NULL || kv->value_len == 0 || kv->value_len > max) {
        return NGX_DECLINED;
    }

    for (i = 0; i < kv->value_len; i++) {
        if (digits ? (kv->value[i] < '0' || kv->value[i] > '9')
                   : (kv->value[i] < 0x21 || kv->value[i] > 0x7e))
        {
            return NGX_DECLINED;
        }
    }

    out->len = kv->value_len;
    out->data = ngx_pnalloc(r->pool, out->len + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(out->data, kv->value, out->len);
    out->data[out->len] = '\0';

    return NGX_OK;
}


u_char *
ngx_http_gov_pay_cst_time(u_char *buf, time_t t, ngx_uint_t sep)
{
    ngx_tm_t  tm;

    ngx_gmtime(t + 8 * 3600, &tm);

    if (sep) {
        return ngx_sprintf(buf, "%4d-%02d-%02d %02d:%02d:%02d",
                           tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                           tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
    }

    return ngx_sprintf(buf, "%4d%02d%02d%02d%02d%02d",
                       tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                       tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec);
}


time_t
ngx_http_gov_pay_cst_parse(const u_char *s, size_t len, ngx_uint_t sep)
{
    int64_t  t;

    return gp_cst_parse((const char *) s, len, sep ? 1 : 0, &t) == 0
           ? (time_t) t : -1;
}
