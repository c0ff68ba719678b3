
/*
 * ngx_http_gov_pay_module: directives, configuration and process hooks.
 *
 * The http-level directives name the Redis store, the registry of units
 * and items, the payment-code key and the public URL; the location-level
 * directives install one content handler per concern (unit API, payer
 * routes, channel callbacks).  Everything is read and checked at
 * configuration time, so `nginx -t` catches a bad deployment and nothing
 * is parsed on the request path.
 */


#include "ngx_gov_pay_channel.h"
#include "ngx_gov_pay_template.h"


static void *ngx_http_gov_pay_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_gov_pay_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_gov_pay_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_gov_pay_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_gov_pay_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gov_pay_redis_auth(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gov_pay_handler_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gov_pay_notify(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_gov_pay_platform_key(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static void ngx_http_gov_pay_pkey_cleanup(void *data);
static ngx_int_t ngx_http_gov_pay_hmac_key_md(ngx_conf_t *cf,
    ngx_str_t *secret, gp_md_t md, gp_hmac_key_t **k, const char *what);
static ngx_int_t ngx_http_gov_pay_hmac_key(ngx_conf_t *cf, ngx_str_t *secret,
    gp_hmac_key_t **k, const char *directive);
static void ngx_http_gov_pay_hmac_key_cleanup(void *data);
static void ngx_http_gov_pay_code_key_cleanup(void *data);
static ngx_int_t ngx_http_gov_pay_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_gov_pay_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_gov_pay_read_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *secret, const char *directive);
static void ngx_http_gov_pay_registry_cleanup(void *data);
static ngx_int_t ngx_http_gov_pay_init_process(ngx_cycle_t *cycle);
static void ngx_http_gov_pay_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_gov_pay_shards_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_HTTP_GOV_PAY_MAX_SHARDS
};


static ngx_conf_num_bounds_t  ngx_http_gov_pay_inflight_bounds = {
    ngx_conf_check_num_bounds, 1, 1048576
};


static ngx_conf_num_bounds_t  ngx_http_gov_pay_connections_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_HTTP_GOV_PAY_MAX_REDIS_CONNECTIONS
};


static ngx_command_t  ngx_http_gov_pay_commands[] = {

    { ngx_string("gov_pay_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_gov_pay_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gov_pay_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("gov_pay_redis_auth"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_gov_pay_redis_auth,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gov_pay_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, redis_connect_timeout),
      NULL },

    { ngx_string("gov_pay_redis_max_inflight"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, redis_max_inflight),
      &ngx_http_gov_pay_inflight_bounds },

    { ngx_string("gov_pay_redis_connections"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, redis_connections),
      &ngx_http_gov_pay_connections_bounds },

    { ngx_string("gov_pay_redis_max_unsent"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, redis_max_unsent),
      NULL },

    { ngx_string("gov_pay_shards"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, shards),
      &ngx_http_gov_pay_shards_bounds },

    { ngx_string("gov_pay_registry"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, registry_file),
      NULL },

    { ngx_string("gov_pay_code_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, code_key_file),
      NULL },

    { ngx_string("gov_pay_qr_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, qr_cache),
      NULL },

    { ngx_string("gov_pay_division"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, division),
      NULL },

    { ngx_string("gov_pay_public_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, public_url),
      NULL },

    { ngx_string("gov_pay_auth_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, auth_window),
      NULL },

    { ngx_string("gov_pay_default_due"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, default_due),
      NULL },

    { ngx_string("gov_pay_idempotency_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, idempotency_ttl),
      NULL },

    { ngx_string("gov_pay_retention"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, retention),
      NULL },

    { ngx_string("gov_pay_refusal_log_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, refusal_log_interval),
      NULL },

    { ngx_string("gov_pay_sandbox_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, sandbox_key_file),
      NULL },

    { ngx_string("gov_pay_platform_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE3,
      ngx_http_gov_pay_platform_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    /* payer pages (ngx_gov_pay_payer.c, ngx_gov_pay_template.c) */

    { ngx_string("gov_pay_templates"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, templates_dir),
      NULL },

    { ngx_string("gov_pay_agent_route"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_gov_pay_agent_route,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gov_pay_lookup_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, lookup_key_file),
      NULL },

    { ngx_string("gov_pay_pii_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, pii_key_file),
      NULL },

    { ngx_string("gov_pay_error_page"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_gov_pay_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_gov_pay_error_page_handler },

    { ngx_string("gov_pay_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_gov_pay_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_gov_pay_api_handler },

    { ngx_string("gov_pay_payer"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_gov_pay_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_gov_pay_payer_handler },

    { ngx_string("gov_pay_sandbox_gateway"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_gov_pay_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_gov_pay_sandbox_gateway_handler },

    { ngx_string("gov_pay_receipt"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_gov_pay_receipt,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gov_pay_receipt_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE3,
      ngx_http_gov_pay_receipt_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gov_pay_notify"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_gov_pay_notify,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    /* payment channels (docs/channels.md); each is on only when complete */

    { ngx_string("gov_pay_alipay_app_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, alipay.app_id),
      NULL },

    { ngx_string("gov_pay_alipay_gateway"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, alipay.gateway),
      NULL },

    { ngx_string("gov_pay_alipay_app_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, alipay.app_key_file),
      NULL },

    { ngx_string("gov_pay_alipay_public_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, alipay.public_key_file),
      NULL },

    { ngx_string("gov_pay_unionpay_mer_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, unionpay.mer_id),
      NULL },

    { ngx_string("gov_pay_unionpay_cert_id"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, unionpay.cert_id),
      NULL },

    { ngx_string("gov_pay_unionpay_front_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, unionpay.front_url),
      NULL },

    { ngx_string("gov_pay_unionpay_sign_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, unionpay.sign_key_file),
      NULL },

    { ngx_string("gov_pay_unionpay_verify_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, unionpay.verify_key_file),
      NULL },

    { ngx_string("gov_pay_wechat_mchid"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.mchid),
      NULL },

    { ngx_string("gov_pay_wechat_appid"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.appid),
      NULL },

    { ngx_string("gov_pay_wechat_app_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.app_secret_file),
      NULL },

    { ngx_string("gov_pay_wechat_merchant_serial"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.merchant_serial),
      NULL },

    { ngx_string("gov_pay_wechat_merchant_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.merchant_key_file),
      NULL },

    { ngx_string("gov_pay_wechat_apiv3_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.apiv3_key_file),
      NULL },

    { ngx_string("gov_pay_wechat_platform_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_gov_pay_wechat_platform_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("gov_pay_wechat_oauth_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.oauth_url),
      NULL },

    { ngx_string("gov_pay_wechat_oauth_location"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.oauth_location),
      NULL },

    { ngx_string("gov_pay_wechat_prepay_location"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.prepay_location),
      NULL },

    { ngx_string("gov_pay_wechat_notify_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_gov_pay_main_conf_t, wechat.notify_window),
      NULL },

    { ngx_string("gov_pay_bank"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_gov_pay_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      (void *) ngx_http_gov_pay_bank_handler },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_gov_pay_module_ctx = {
    ngx_http_gov_pay_add_variables,        /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_gov_pay_create_main_conf,     /* create main configuration */
    ngx_http_gov_pay_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_gov_pay_create_loc_conf,      /* create location configuration */
    ngx_http_gov_pay_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_gov_pay_module = {
    NGX_MODULE_V1,
    &ngx_http_gov_pay_module_ctx,          /* module context */
    ngx_http_gov_pay_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_gov_pay_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_gov_pay_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_gov_pay_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_gov_pay_main_conf_t));
    if (gpmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     gpmcf->redis = { 0, NULL };
     *     gpmcf->redis_addr = NULL;
     *     gpmcf->redis_user = { 0, NULL };
     *     gpmcf->redis_password = { 0, NULL };
     *     gpmcf->registry = NULL;
     *     gpmcf->sandbox_key = { 0, NULL };
     *     gpmcf->templates_dir = { 0, NULL };
     *     gpmcf->agent_routes = NULL;
     *     gpmcf->lookup_key = { 0, NULL };
     *     gpmcf->pii_key_file = { 0, NULL };
     *     gpmcf->pii_keys = NULL;
     *     gpmcf->api_route = 0;
     *     gpmcf->enabled = 0;
     */

    gpmcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    gpmcf->redis_connect_timeout = NGX_CONF_UNSET_MSEC;
    gpmcf->redis_max_inflight = NGX_CONF_UNSET_UINT;
    gpmcf->redis_max_unsent = NGX_CONF_UNSET_SIZE;
    gpmcf->redis_connections = NGX_CONF_UNSET_UINT;
    gpmcf->qr_cache = NGX_CONF_UNSET_SIZE;
    gpmcf->shards = NGX_CONF_UNSET_UINT;
    gpmcf->auth_window = NGX_CONF_UNSET;
    gpmcf->default_due = NGX_CONF_UNSET;
    gpmcf->idempotency_ttl = NGX_CONF_UNSET;
    gpmcf->retention = NGX_CONF_UNSET;
    gpmcf->refusal_log_interval = NGX_CONF_UNSET;
    gpmcf->wechat.notify_window = NGX_CONF_UNSET;

    return gpmcf;
}


static char *
ngx_http_gov_pay_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = conf;

    u_char               *p;
    char                  err[512];
    ngx_uint_t            i;
    ngx_pool_cleanup_t   *cln;

    ngx_conf_init_msec_value(gpmcf->redis_timeout, 1000);

    /*
     * A handshake on a LAN takes well under a millisecond, and a lost SYN is
     * sent again only after 1s: a connect not done by then is better started
     * afresh (with backoff) while requests get their fast 503.
     */
    ngx_conf_init_msec_value(gpmcf->redis_connect_timeout, 1000);

    /*
     * A request waits for one command at a time (an /o/ lookup: one per
     * shard), so a worker's connections need a few hundred; a Redis running
     * scripts answers some 20 000 a second on one connection, so 2048 in
     * flight is about 100 ms of queue, far inside gov_pay_redis_timeout.
     * Past that the store is falling behind: a fast 503 beats a queue of
     * requests that would time out (and a timeout fails every command in
     * flight).  Memory: about 1.5 KiB a command, 3 MiB.
     */
    ngx_conf_init_uint_value(gpmcf->redis_max_inflight, 2048);

    /*
     * Bytes wait here only when the socket's own buffer is full (Redis is
     * not reading); 1 MiB is some 1000 commands more, or 16 of the largest
     * creates (64 KiB bodies).
     */
    ngx_conf_init_size_value(gpmcf->redis_max_unsent, 1024 * 1024);

    /*
     * Redis reads at most 16 KiB of one client's commands per turn of its
     * event loop, and with appendfsync always it fsyncs once per turn: one
     * connection's commands share an fsync about ten creates at a time.
     * More connections let more commands share each fsync (docs/
     * performance.md); one is the default, as before this directive.
     */
    ngx_conf_init_uint_value(gpmcf->redis_connections, 1);
    ngx_conf_init_uint_value(gpmcf->shards, 16);

    /* an SVG is about 10 KiB: some 1600 notices' images per worker */
    ngx_conf_init_size_value(gpmcf->qr_cache, 16 * 1024 * 1024);
    ngx_conf_init_value(gpmcf->auth_window, 300);
    ngx_conf_init_value(gpmcf->default_due, 30 * 86400);
    ngx_conf_init_value(gpmcf->idempotency_ttl, 8 * 86400);
    ngx_conf_init_value(gpmcf->retention, 400 * 86400);
    ngx_conf_init_value(gpmcf->refusal_log_interval, 60);
    ngx_conf_init_value(gpmcf->wechat.notify_window, 300);

    if (!gpmcf->enabled) {
        return NGX_CONF_OK;
    }

    if (gpmcf->receipt_route && gpmcf->receipt_keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_receipt\" needs at least one "
                           "\"gov_pay_receipt_key\"");
        return NGX_CONF_ERROR;
    }

    if (gpmcf->redis_addr == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_redis\" is required");
        return NGX_CONF_ERROR;
    }

    if (gpmcf->redis_max_inflight < gpmcf->shards) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_redis_max_inflight\" must be "
                           "at least \"gov_pay_shards\" (%ui): an /o/ "
                           "lookup sends one command per shard",
                           gpmcf->shards);
        return NGX_CONF_ERROR;
    }

    if (gpmcf->redis_max_unsent < 16384) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_redis_max_unsent\" must be "
                           "at least 16k");
        return NGX_CONF_ERROR;
    }

    if (gpmcf->idempotency_ttl < 7 * 86400) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_idempotency_ttl\" must be "
                           "at least 7 days");
        return NGX_CONF_ERROR;
    }

    if (gpmcf->refusal_log_interval < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_refusal_log_interval\" must "
                           "be at least 1s");
        return NGX_CONF_ERROR;
    }

    if (gpmcf->retention < 86400) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_retention\" must be at "
                           "least 1 day");
        return NGX_CONF_ERROR;
    }

    if (gpmcf->auth_window < 1 || gpmcf->default_due < 60) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_auth_window\" must be at "
                           "least 1s and \"gov_pay_default_due\" at least 1m");
        return NGX_CONF_ERROR;
    }

    /* division: 6 digits of an administrative division code */

    if (gpmcf->division.len != 6) {
        goto bad_division;
    }

    for (i = 0; i < 6; i++) {
        if (gpmcf->division.data[i] < '0' || gpmcf->division.data[i] > '9') {
            goto bad_division;
        }
    }

    /* public URL: http(s)://host[:port], no trailing slash */

    if (gpmcf->public_url.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_public_url\" is required");
        return NGX_CONF_ERROR;
    }

    if (ngx_strncmp(gpmcf->public_url.data, "http://", 7) != 0
        && ngx_strncmp(gpmcf->public_url.data, "https://", 8) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_public_url\" must start with "
                           "http:// or https://");
        return NGX_CONF_ERROR;
    }

    while (gpmcf->public_url.len
           && gpmcf->public_url.data[gpmcf->public_url.len - 1] == '/')
    {
        gpmcf->public_url.len--;
    }

    /* the registry of units and items, shared with the workers */

    if (gpmcf->registry_file.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_registry\" is required");
        return NGX_CONF_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &gpmcf->registry_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    p = ngx_http_gov_pay_cstr(cf->pool, &gpmcf->registry_file);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    if (gp_registry_load((char *) p, &gpmcf->registry, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "gov_pay: %s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        gp_registry_free(gpmcf->registry);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_gov_pay_registry_cleanup;
    cln->data = gpmcf->registry;

    if (ngx_http_gov_pay_load_unit_keys(cf, gpmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the payment-code permutation key */

    if (gpmcf->code_key_file.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_code_key\" is required");
        return NGX_CONF_ERROR;
    }

    if (ngx_conf_full_name(cf->cycle, &gpmcf->code_key_file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    p = ngx_http_gov_pay_cstr(cf->pool, &gpmcf->code_key_file);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    if (gp_code_key_load((char *) p, &gpmcf->code_key, err, sizeof(err))
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "gov_pay: %s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        gp_code_key_free(&gpmcf->code_key);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_gov_pay_code_key_cleanup;
    cln->data = &gpmcf->code_key;

    /* the sandbox channel is on only where its key is configured */

    if (gpmcf->sandbox_key_file.len) {
        if (ngx_http_gov_pay_read_secret(cf, &gpmcf->sandbox_key_file,
                                         &gpmcf->sandbox_key,
                                         "gov_pay_sandbox_key")
            != NGX_OK
            || ngx_http_gov_pay_hmac_key(cf, &gpmcf->sandbox_key,
                                         &gpmcf->sandbox_hmac,
                                         "gov_pay_sandbox_key")
               != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* the ID-number index of the open per-item code (/o/) */

    if (gpmcf->lookup_key_file.len) {
        if (ngx_http_gov_pay_read_secret(cf, &gpmcf->lookup_key_file,
                                         &gpmcf->lookup_key,
                                         "gov_pay_lookup_key")
            != NGX_OK
            || ngx_http_gov_pay_hmac_key(cf, &gpmcf->lookup_key,
                                         &gpmcf->lookup_hmac,
                                         "gov_pay_lookup_key")
               != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* the keys that seal the payer's name and ID number at rest */

    if (ngx_http_gov_pay_pii_init_conf(cf, gpmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the real channels: keys loaded and settings checked here, once */

    if (ngx_http_gov_pay_channels_init_conf(cf, gpmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* the payer pages' templates, read and compiled once, here */

    return ngx_http_gov_pay_templates_load(cf, gpmcf);

bad_division:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "gov_pay: \"gov_pay_division\" must be a 6-digit "
                       "administrative division code, got \"%V\"",
                       &gpmcf->division);
    return NGX_CONF_ERROR;
}


static void *
ngx_http_gov_pay_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_gov_pay_loc_conf_t  *gplcf;

    gplcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_gov_pay_loc_conf_t));
    if (gplcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     gplcf->channel = { 0, NULL };
     */

    return gplcf;
}


static char *
ngx_http_gov_pay_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_gov_pay_loc_conf_t *prev = parent;
    ngx_http_gov_pay_loc_conf_t *conf = child;

    ngx_conf_merge_str_value(conf->channel, prev->channel, "");

    return NGX_CONF_OK;
}


static char *
ngx_http_gov_pay_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = conf;

    ngx_str_t  *value;
    ngx_url_t   u;

    if (gpmcf->redis_addr) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* resolved here, once: no name lookup ever happens at request time */

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.default_port = 6379;
    u.no_resolve = 0;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gov_pay: %s in \"%V\"", u.err, &u.url);
        }

        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: no address for redis \"%V\"", &u.url);
        return NGX_CONF_ERROR;
    }

    gpmcf->redis = value[1];
    gpmcf->redis_addr = &u.addrs[0];

    return NGX_CONF_OK;
}


/*
 * gov_pay_redis_auth <user> <password file>: the file is read here, once;
 * the password is sent in AUTH on every connection and never logged
 */

static char *
ngx_http_gov_pay_redis_auth(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = conf;

    ngx_str_t   *value, file;
    ngx_uint_t   i;

    if (gpmcf->redis_user.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* a name that an ACL file can hold: 1 to 128 visible characters */

    if (value[1].len == 0 || value[1].len > 128) {
        goto bad_user;
    }

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= ' ' || value[1].data[i] >= 0x7f) {
            goto bad_user;
        }
    }

    file = value[2];

    if (ngx_http_gov_pay_conf_secret(cf, &file, &gpmcf->redis_password,
                                     "gov_pay_redis_auth")
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (gpmcf->redis_password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"gov_pay_redis_auth\": password file "
                           "\"%V\" is empty", &file);
        return NGX_CONF_ERROR;
    }

    gpmcf->redis_user = value[1];

    return NGX_CONF_OK;

bad_user:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "gov_pay: \"gov_pay_redis_auth\": the user must be 1 "
                       "to 128 visible ASCII characters, got \"%V\"",
                       &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_gov_pay_handler_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another handler";
    }

    clcf->handler = (ngx_http_handler_pt) cmd->post;

    gpmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_gov_pay_module);
    gpmcf->enabled = 1;

    if (cmd->post == (void *) ngx_http_gov_pay_api_handler) {
        gpmcf->api_route = 1;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_gov_pay_notify(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gov_pay_loc_conf_t *gplcf = conf;

    ngx_str_t                     *value;
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    value = cf->args->elts;

    if (ngx_http_gov_pay_channel(&value[1]) == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: unknown channel \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate or conflicts with another handler";
    }

    clcf->handler = ngx_http_gov_pay_notify_handler;
    gplcf->channel = value[1];

    gpmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_gov_pay_module);
    gpmcf->enabled = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_gov_pay_platform_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_gov_pay_main_conf_t *gpmcf = conf;

    char                 err[512];
    u_char              *p;
    ngx_str_t           *value;
    gp_sigalg_t          alg;
    ngx_pool_cleanup_t  *cln;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "rsa") == 0) {
        alg = GP_SIG_RSA_SHA256;

    } else if (ngx_strcmp(value[1].data, "sm2") == 0) {
        alg = GP_SIG_SM2_SM3;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: platform key family must be \"rsa\" "
                           "or \"sm2\", got \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (gpmcf->platform_key[alg]) {
        return "is duplicate";
    }

    if (value[3].len == 0 || value[3].len > 64) {
        return "needs a key serial of 1 to 64 characters";
    }

    if (ngx_conf_full_name(cf->cycle, &value[2], 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    p = ngx_http_gov_pay_cstr(cf->pool, &value[2]);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    gpmcf->platform_key[alg] = gp_pkey_load((char *) p, 1, alg, err,
                                            sizeof(err));
    if (gpmcf->platform_key[alg] == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: platform key: %s", err);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        EVP_PKEY_free(gpmcf->platform_key[alg]);
        gpmcf->platform_key[alg] = NULL;
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_gov_pay_pkey_cleanup;
    cln->data = gpmcf->platform_key[alg];

    gpmcf->platform_serial[alg] = value[3];

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_gov_pay_load_unit_keys(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    char                 err[512];
    ngx_str_t            secret;
    ngx_uint_t           i;
    gp_unit_t           *unit;
    gp_sigalg_t          alg;
    ngx_pool_cleanup_t  *cln;

    gpmcf->unit_keys = ngx_pcalloc(cf->pool, (gpmcf->registry->nunits + 1)
                                             * sizeof(EVP_PKEY *));
    gpmcf->unit_hmac = ngx_pcalloc(cf->pool, (gpmcf->registry->nunits + 1)
                                             * sizeof(gp_hmac_key_t *));
    if (gpmcf->unit_keys == NULL || gpmcf->unit_hmac == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < gpmcf->registry->nunits; i++) {
        unit = &gpmcf->registry->units[i];

        if (unit->scheme == GP_SCHEME_HMAC_SHA256
            || unit->scheme == GP_SCHEME_HMAC_SM3)
        {
            /* the secret's HMAC state, hashed here once per unit */

            secret.data = (u_char *) unit->secret;
            secret.len = unit->secret_len;

            if (ngx_http_gov_pay_hmac_key_md(cf, &secret,
                    unit->scheme == GP_SCHEME_HMAC_SM3 ? GP_MD_SM3
                                                       : GP_MD_SHA256,
                    &gpmcf->unit_hmac[i], unit->id)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        alg = (unit->scheme == GP_SCHEME_RSA_SHA256) ? GP_SIG_RSA_SHA256
                                                     : GP_SIG_SM2_SM3;

        /* parsed once here, reused by every request */

        gpmcf->unit_keys[i] = gp_pkey_load(unit->key_file, 0, alg, err,
                                           sizeof(err));
        if (gpmcf->unit_keys[i] == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gov_pay: unit \"%s\" in \"%V\": %s",
                               unit->id, &gpmcf->registry_file, err);
            return NGX_ERROR;
        }

        cln = ngx_pool_cleanup_add(cf->pool, 0);
        if (cln == NULL) {
            EVP_PKEY_free(gpmcf->unit_keys[i]);
            return NGX_ERROR;
        }

        cln->handler = ngx_http_gov_pay_pkey_cleanup;
        cln->data = gpmcf->unit_keys[i];

        if (gpmcf->platform_key[alg] == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "gov_pay: unit \"%s\" uses %s: "
                               "\"gov_pay_platform_key %s\" is required to "
                               "sign the answers", unit->id,
                               gp_scheme_name(unit->scheme),
                               alg == GP_SIG_RSA_SHA256 ? "rsa" : "sm2");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_gov_pay_pkey_cleanup(void *data)
{
    EVP_PKEY_free(data);
}


/*
 * A secret's HMAC state, prepared here once and freed with the
 * configuration: no request hashes a key (what: the directive or the unit,
 * for the message)
 */

static ngx_int_t
ngx_http_gov_pay_hmac_key_md(ngx_conf_t *cf, ngx_str_t *secret, gp_md_t md,
    gp_hmac_key_t **k, const char *what)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    *k = gp_hmac_key_new(md, secret->data, secret->len);
    if (*k == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"%s\": preparing its HMAC key failed "
                           "(OpenSSL)", what);
        return NGX_ERROR;
    }

    cln->handler = ngx_http_gov_pay_hmac_key_cleanup;
    cln->data = *k;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_hmac_key(ngx_conf_t *cf, ngx_str_t *secret,
    gp_hmac_key_t **k, const char *directive)
{
    return ngx_http_gov_pay_hmac_key_md(cf, secret, GP_MD_SHA256, k,
                                        directive);
}


static void
ngx_http_gov_pay_hmac_key_cleanup(void *data)
{
    gp_hmac_key_free(data);
}


static void
ngx_http_gov_pay_code_key_cleanup(void *data)
{
    gp_code_key_free(data);
}


static ngx_http_variable_t  ngx_http_gov_pay_vars[] = {

    { ngx_string("gov_pay_unit"), NULL, ngx_http_gov_pay_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("gov_pay_payment_code"), NULL, ngx_http_gov_pay_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    /* the unit the Authorization header names, unverified: for limit_req */

    { ngx_string("gov_pay_claimed_unit"), NULL, ngx_http_gov_pay_variable,
      2, 0, 0 },

    /* the WeChat Pay prepay subrequest's Authorization and body */

    { ngx_string("gov_pay_wechat_authorization"), NULL,
      ngx_http_gov_pay_wechat_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("gov_pay_wechat_body"), NULL,
      ngx_http_gov_pay_wechat_variable, 1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_gov_pay_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_gov_pay_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t                      unit;
    ngx_http_gov_pay_ctx_t        *ctx;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    if (data == 2) {
        gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

        if (gpmcf == NULL
            || ngx_http_gov_pay_claimed_unit(r, gpmcf, &unit) != NGX_OK)
        {
            v->not_found = 1;
            return NGX_OK;
        }

        v->data = unit.data;
        v->len = unit.len;
        v->valid = 1;
        v->no_cacheable = 0;
        v->not_found = 0;

        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (data == 0 && ctx->unit) {
        v->data = (u_char *) ctx->unit->id;
        v->len = ngx_strlen(ctx->unit->id);

    } else if (data == 1 && ctx->code.len) {
        v->data = ctx->code.data;
        v->len = ctx->code.len;

    } else {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


/* a key file of a directive: its text, at least 16 bytes of it */

static ngx_int_t
ngx_http_gov_pay_read_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *secret, const char *directive)
{
    if (ngx_http_gov_pay_conf_secret(cf, file, secret, directive) != NGX_OK) {
        return NGX_ERROR;
    }

    if (secret->len < 16) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "gov_pay: \"%s\": key file \"%V\" holds fewer "
                           "than 16 bytes", directive, file);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_gov_pay_registry_cleanup(void *data)
{
    gp_registry_free(data);
}


static ngx_int_t
ngx_http_gov_pay_init_process(ngx_cycle_t *cycle)
{
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    if (ngx_http_cycle_get_module_main_conf(cycle, ngx_http_core_module)
        == NULL)
    {
        return NGX_OK;
    }

    gpmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                                ngx_http_gov_pay_module);
    if (gpmcf == NULL || !gpmcf->enabled) {
        return NGX_OK;
    }

    ngx_http_gov_pay_qr_init_process(cycle, gpmcf);

    return ngx_http_gov_pay_redis_init_process(cycle, gpmcf);
}


static void
ngx_http_gov_pay_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_gov_pay_refusals_flush(cycle);
    ngx_http_gov_pay_redis_exit_process(cycle);
    ngx_http_gov_pay_qr_exit_process(cycle);
}
