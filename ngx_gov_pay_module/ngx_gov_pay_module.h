
/*
 * ngx_http_gov_pay_module: the edge of the unified public payment platform.
 *
 * One header for the module's files: configuration, the per-request
 * context, the non-blocking Redis client and the reply helpers.
 */


#ifndef _NGX_GOV_PAY_MODULE_H_INCLUDED_
#define _NGX_GOV_PAY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "gp_authz.h"
#include "gp_code.h"
#include "gp_crypto.h"
#include "gp_notice.h"
#include "gp_pkey.h"
#include "gp_registry.h"
#include "gp_seal.h"
#include "gp_util.h"


#define NGX_HTTP_GOV_PAY_MAX_SHARDS  1024
#define NGX_HTTP_GOV_PAY_MAX_REDIS_CONNECTIONS  64
#define NGX_HTTP_GOV_PAY_GONE        410


/* the payment channels' settings (channels/, docs/channels.md) */

typedef struct {
    ngx_str_t                  app_id;
    ngx_str_t                  gateway;          /* https://host/gateway.do */
    ngx_str_t                  app_key_file;     /* the edge's private key */
    ngx_str_t                  public_key_file;  /* Alipay's public key */
    EVP_PKEY                  *app_key;
    EVP_PKEY                  *public_key;
} ngx_http_gov_pay_alipay_conf_t;


typedef struct {
    ngx_str_t                  mer_id;
    ngx_str_t                  cert_id;          /* of the signing cert */
    ngx_str_t                  front_url;        /* frontTransReq.do */
    ngx_str_t                  sign_key_file;    /* the edge's private key */
    ngx_str_t                  verify_key_file;  /* UnionPay's public key */
    EVP_PKEY                  *sign_key;
    EVP_PKEY                  *verify_key;
} ngx_http_gov_pay_unionpay_conf_t;


typedef struct {
    ngx_str_t                  serial;
    EVP_PKEY                  *key;
} ngx_http_gov_pay_wechat_key_t;


typedef struct {
    ngx_str_t                  mchid;
    ngx_str_t                  appid;
    ngx_str_t                  app_secret_file;  /* OAuth2 (snsapi_base) */
    ngx_str_t                  app_secret;
    ngx_str_t                  merchant_serial;
    ngx_str_t                  merchant_key_file;
    EVP_PKEY                  *merchant_key;
    ngx_str_t                  apiv3_key_file;
    ngx_str_t                  apiv3_key;        /* 32 bytes */
    ngx_array_t               *platform_keys;    /* wechat_key_t */
    ngx_str_t                  oauth_url;        /* authorize page */
    ngx_str_t                  oauth_location;   /* internal: access_token */
    ngx_str_t                  prepay_location;  /* internal: jsapi prepay */
    time_t                     notify_window;
} ngx_http_gov_pay_wechat_conf_t;


typedef struct {
    ngx_str_t                  redis;
    ngx_addr_t                *redis_addr;
    ngx_msec_t                 redis_timeout;
    ngx_msec_t                 redis_connect_timeout;
    ngx_uint_t                 redis_max_inflight;  /* commands */
    size_t                     redis_max_unsent;    /* bytes */
    ngx_uint_t                 redis_connections;   /* per worker */
    ngx_str_t                  redis_user;          /* ACL user; empty: none */
    ngx_str_t                  redis_password;      /* never logged */
    ngx_uint_t                 shards;

    ngx_str_t                  registry_file;
    gp_registry_t             *registry;
    EVP_PKEY                 **unit_keys;   /* by unit index; NULL for HMAC */
    gp_hmac_key_t            **unit_hmac;   /* by unit index; HMAC units:
                                               the secret prepared once */

    /* the platform's own keys, for answers to units of asymmetric schemes */
    EVP_PKEY                  *platform_key[2];     /* by gp_sigalg_t */
    ngx_str_t                  platform_serial[2];

    ngx_str_t                  code_key_file;
    gp_code_key_t              code_key;

    ngx_str_t                  division;
    ngx_str_t                  public_url;
    size_t                     qr_cache;       /* bytes of QR images kept
                                                  per worker */

    time_t                     auth_window;
    time_t                     default_due;
    time_t                     idempotency_ttl;
    time_t                     retention;        /* of a final notice */
    time_t                     refusal_log_interval;

    ngx_str_t                  sandbox_key_file;
    ngx_str_t                  sandbox_key;
    gp_hmac_key_t             *sandbox_hmac;   /* sandbox_key, prepared */

    ngx_http_gov_pay_alipay_conf_t    alipay;
    ngx_http_gov_pay_unionpay_conf_t  unionpay;
    ngx_http_gov_pay_wechat_conf_t    wechat;
    /* payer pages (ngx_gov_pay_payer.c, ngx_gov_pay_template.c) */
    ngx_str_t                  templates_dir;
    ngx_array_t               *templates;      /* compiled templates */
    ngx_array_t               *agent_routes;   /* gov_pay_agent_route */
    ngx_str_t                  lookup_key_file;
    ngx_str_t                  lookup_key;     /* ID-number index (/o/) */
    gp_hmac_key_t             *lookup_hmac;    /* lookup_key, prepared */
    ngx_array_t               *receipt_keys;   /* receipt issuer keys */
    ngx_flag_t                 receipt_route;  /* gov_pay_receipt is used */

    /* the payer's name and ID number sealed at rest (ngx_gov_pay_pii.c) */
    ngx_str_t                  pii_key_file;
    gp_seal_keys_t            *pii_keys;
    ngx_flag_t                 api_route;      /* gov_pay_api is used */

    ngx_flag_t                 enabled;
} ngx_http_gov_pay_main_conf_t;


typedef struct {
    ngx_str_t                  channel;
} ngx_http_gov_pay_loc_conf_t;


/* the Redis client: gov_pay_redis_connections pipelined connections per
   worker process */

typedef struct ngx_http_gov_pay_redis_cmd_s  ngx_http_gov_pay_redis_cmd_t;
typedef struct ngx_http_gov_pay_redis_conn_s  ngx_http_gov_pay_redis_conn_t;

/*
 * Called once per command, never from inside the call that queued it:
 * with the reply, or with NULL when Redis failed, timed out or went away.
 * The reply is freed when the handler returns.
 */
typedef void (*ngx_http_gov_pay_redis_handler_pt)(void *data,
    redisReply *reply);

typedef enum {
    NGX_HTTP_GOV_PAY_SCRIPT_CACHE = 0,
    NGX_HTTP_GOV_PAY_SCRIPT_CANCEL,
    NGX_HTTP_GOV_PAY_SCRIPT_CREATE,
    NGX_HTTP_GOV_PAY_SCRIPT_GET,
    NGX_HTTP_GOV_PAY_SCRIPT_LOOKUP,
    NGX_HTTP_GOV_PAY_SCRIPT_REFUND,
    NGX_HTTP_GOV_PAY_SCRIPT_REFUND_DONE,
    NGX_HTTP_GOV_PAY_SCRIPT_SETTLE,
    NGX_HTTP_GOV_PAY_SCRIPT_UNCLAIM,
    NGX_HTTP_GOV_PAY_SCRIPT_N
} ngx_http_gov_pay_script_e;


ngx_int_t ngx_http_gov_pay_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_gov_pay_main_conf_t *gpmcf);
void ngx_http_gov_pay_redis_exit_process(ngx_cycle_t *cycle);

/*
 * The connection a request's next commands go on, so that the commands it
 * sends together keep their order: the least busy one that is up; NULL
 * when none is
 */
ngx_http_gov_pay_redis_conn_t *ngx_http_gov_pay_redis_pick(void);
/*
 * conn: from ngx_http_gov_pay_redis_pick(), or NULL (picked here).
 * NGX_OK: queued; NGX_DECLINED: Redis is not connected, or the worker is at
 * gov_pay_redis_max_inflight or gov_pay_redis_max_unsent (the request gets
 * its "store unavailable" answer at once); NGX_ERROR
 */
ngx_int_t ngx_http_gov_pay_redis_command(ngx_http_gov_pay_redis_conn_t *conn,
    ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_gov_pay_redis_handler_pt handler, void *data,
    ngx_http_gov_pay_redis_cmd_t **cmdp);
/* argv: keys first, then the other arguments */
ngx_int_t ngx_http_gov_pay_redis_script(ngx_http_gov_pay_redis_conn_t *conn,
    ngx_http_gov_pay_script_e script, ngx_uint_t nkeys, ngx_uint_t argc,
    ngx_str_t *argv, ngx_http_gov_pay_redis_handler_pt handler, void *data,
    ngx_http_gov_pay_redis_cmd_t **cmdp);
/* the handler will not be called: for a request that goes away */
void ngx_http_gov_pay_redis_abandon(ngx_http_gov_pay_redis_cmd_t *cmd);
/* errors and the timeout of cmd are logged on log, naming code (may be
   empty), until it is answered or abandoned */
void ngx_http_gov_pay_redis_describe(ngx_http_gov_pay_redis_cmd_t *cmd,
    ngx_log_t *log, ngx_str_t *code);


/* per-request context */

typedef struct ngx_http_gov_pay_ctx_s  ngx_http_gov_pay_ctx_t;

/*
 * The steps of a route (ngx_gov_pay_wait.c): each returns what
 * ngx_http_finalize_request() takes, or NGX_DONE when it started a wait.
 */
typedef ngx_int_t (*ngx_http_gov_pay_step_pt)(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx);
/* reply: NULL when the store failed, timed out or is unavailable */
typedef ngx_int_t (*ngx_http_gov_pay_reply_pt)(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
/* one reply of several sent at once, as it arrives (i: its index) */
typedef void (*ngx_http_gov_pay_part_pt)(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_uint_t i, redisReply *reply);

typedef struct {
    ngx_int_t                      script;     /* -1: a plain command */
    ngx_uint_t                     nkeys;
    ngx_uint_t                     argc;
    ngx_str_t                     *argv;
} ngx_http_gov_pay_query_t;

struct ngx_http_gov_pay_ctx_s {
    ngx_http_request_t            *request;
    ngx_uint_t                     route;

    /* the wait in progress: only ngx_gov_pay_wait.c touches these */
    ngx_http_gov_pay_redis_cmd_t **cmds;       /* NULL once answered */
    ngx_uint_t                     ncmds;
    ngx_uint_t                     pending;
    ngx_http_gov_pay_reply_pt      reply;
    ngx_http_gov_pay_part_pt       part;
    ngx_http_gov_pay_step_pt       step;
    ngx_http_request_t            *subrequest;

    const gp_unit_t               *unit;
    ngx_str_t                      body;

    ngx_str_t                      code;
    uint32_t                       shard;
    uint64_t                       seq;

    ngx_str_t                     *fields;     /* notice fields, pairs */
    ngx_uint_t                     nfields;

    ngx_str_t                      channel;
    ngx_str_t                      check;       /* a receipt's check code:
                                                   never in a variable */
    void                          *channel_data;  /* a hand-off's state */

    /* the unit's page to return to (PC flow), checked against the unit's
       return_hosts; empty when none or not allowed */
    ngx_str_t                      return_url;

    /* money arriving (ngx_gov_pay_settle.c): the settle script's word
       (PAID, DUP, ANOMALY, TAKEN, NONE, REPLAY; empty: the store failed),
       an anomaly's reason, and whether it was recorded before */
    struct ngx_http_gov_pay_settle_s  *settle;
    struct ngx_http_gov_pay_refund_result_s  *refund;
    ngx_str_t                      outcome;
    ngx_str_t                      reason;
    ngx_uint_t                     again;
};


/* error codes of the contract (API.md) */

typedef enum {
    NGX_HTTP_GOV_PAY_OK = 0,
    NGX_HTTP_GOV_PAY_BAD_REQUEST,
    NGX_HTTP_GOV_PAY_VALIDATION_FAILED,
    NGX_HTTP_GOV_PAY_UNAUTHENTICATED,
    NGX_HTTP_GOV_PAY_SIGNATURE_INVALID,
    NGX_HTTP_GOV_PAY_TIMESTAMP_OUT_OF_WINDOW,
    NGX_HTTP_GOV_PAY_NONCE_REPLAYED,
    NGX_HTTP_GOV_PAY_FORBIDDEN,
    NGX_HTTP_GOV_PAY_NOT_FOUND,
    NGX_HTTP_GOV_PAY_METHOD_NOT_ALLOWED,
    NGX_HTTP_GOV_PAY_IDEMPOTENCY_CONFLICT,
    NGX_HTTP_GOV_PAY_INVALID_STATE,
    NGX_HTTP_GOV_PAY_PAYLOAD_TOO_LARGE,
    NGX_HTTP_GOV_PAY_UNSUPPORTED_MEDIA_TYPE,
    NGX_HTTP_GOV_PAY_STORE_UNAVAILABLE,
    NGX_HTTP_GOV_PAY_INTERNAL
} ngx_http_gov_pay_err_e;


extern ngx_module_t  ngx_http_gov_pay_module;


/* handlers installed by the location directives */
ngx_int_t ngx_http_gov_pay_api_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_payer_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_sandbox_gateway_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_notify_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_bank_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_error_page_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_receipt_handler(ngx_http_request_t *r);

/* receipt verification (ngx_gov_pay_receipt.c) */
char *ngx_http_gov_pay_receipt(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_gov_pay_receipt_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


/* unit authentication (ngx_gov_pay_auth.c) */
ngx_http_gov_pay_err_e ngx_http_gov_pay_auth(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_str_t *body,
    const gp_unit_t **unit, ngx_str_t *nonce, const char **why);
ngx_int_t ngx_http_gov_pay_authenticate(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *nonce, ngx_uint_t bank, ngx_int_t *rc);
ngx_int_t ngx_http_gov_pay_claimed_unit(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_str_t *unit);
ngx_int_t ngx_http_gov_pay_sign_response(ngx_http_request_t *r,
    const gp_unit_t *unit, ngx_str_t *body);
ngx_int_t ngx_http_gov_pay_load_unit_keys(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf);


/*
 * waiting (ngx_gov_pay_wait.c): each returns NGX_DONE when the wait
 * started (it holds the request's reference until next runs) or, when it
 * could not start, an answer (a Redis command not sent: next's answer to
 * a NULL reply, run at once)
 */
ngx_http_gov_pay_ctx_t *ngx_http_gov_pay_ctx(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_read_body(ngx_http_request_t *r,
    ngx_http_gov_pay_step_pt next);
ngx_int_t ngx_http_gov_pay_query(ngx_http_request_t *r, ngx_int_t script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_gov_pay_reply_pt next);
ngx_int_t ngx_http_gov_pay_query_all(ngx_http_request_t *r, ngx_uint_t n,
    ngx_http_gov_pay_query_t *q, ngx_http_gov_pay_part_pt part,
    ngx_http_gov_pay_step_pt next);
ngx_int_t ngx_http_gov_pay_subrequest(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_str_t *args, ngx_http_post_subrequest_pt done, void *data,
    ngx_http_gov_pay_step_pt next);

/* helpers (ngx_gov_pay_util.c) */
ngx_int_t ngx_http_gov_pay_add_header(ngx_http_request_t *r,
    const char *name, ngx_str_t *value);
ngx_int_t ngx_http_gov_pay_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *content_type, ngx_str_t *body);
ngx_int_t ngx_http_gov_pay_send_error(ngx_http_request_t *r,
    ngx_http_gov_pay_err_e err, const char *message, json_t *fields);
ngx_int_t ngx_http_gov_pay_send_json(ngx_http_request_t *r,
    ngx_uint_t status, json_t *doc, const gp_unit_t *unit);
ngx_int_t ngx_http_gov_pay_send_json_body(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *body, const gp_unit_t *unit);
/* the contract's 503 STORE_UNAVAILABLE, with Retry-After */
ngx_int_t ngx_http_gov_pay_store_unavailable(ngx_http_request_t *r);

ngx_int_t ngx_http_gov_pay_parse_code(ngx_http_gov_pay_main_conf_t *gpmcf,
    ngx_str_t *code, ngx_http_gov_pay_ctx_t *ctx);
ngx_int_t ngx_http_gov_pay_key(ngx_pool_t *pool, ngx_str_t *key,
    uint32_t shard, const char *fmt, ...);
ngx_int_t ngx_http_gov_pay_reply_fields(ngx_http_request_t *r,
    redisReply *reply, size_t from, ngx_http_gov_pay_ctx_t *ctx);
ngx_str_t *ngx_http_gov_pay_field(ngx_http_gov_pay_ctx_t *ctx,
    const char *name);
int64_t ngx_http_gov_pay_field_int(ngx_http_gov_pay_ctx_t *ctx,
    const char *name);
const char *ngx_http_gov_pay_status(ngx_http_gov_pay_ctx_t *ctx);
ngx_int_t ngx_http_gov_pay_notice_lookup(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_str_t *code,
    ngx_http_gov_pay_reply_pt next);
ngx_int_t ngx_http_gov_pay_notice_found(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
/* the notice's refunds (ngx_gov_pay_refund.c); NULL: none, or *failed */
json_t *ngx_http_gov_pay_refunds_json(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_uint_t *failed);
json_t *ngx_http_gov_pay_notice_json(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx);
/* the same written directly, with payer (type, name, id_no) or NULL;
   NGX_DECLINED for a notice with refunds */
ngx_int_t ngx_http_gov_pay_notice_body(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *payer, ngx_str_t *body);
u_char *ngx_http_gov_pay_cstr(ngx_pool_t *pool, ngx_str_t *s);
json_t *ngx_http_gov_pay_json_body(ngx_http_request_t *r, ngx_str_t *body,
    ngx_int_t *rc);

/* personal data at rest (ngx_gov_pay_pii.c) */
ngx_int_t ngx_http_gov_pay_pii_init_conf(ngx_conf_t *cf,
    ngx_http_gov_pay_main_conf_t *gpmcf);
/* pushes the payer's masked and sealed fields onto a create's argv */
ngx_int_t ngx_http_gov_pay_pii_seal_payer(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, const char *unit,
    const char *request_id, int64_t created_at, const char *name,
    const char *id_no, ngx_str_t *argv, ngx_uint_t *n, ngx_uint_t max);
/*
 * a receipt's document or PDF (field "receipt_doc" or "receipt_pdf") as the
 * worker stored it, opened into the request's pool: NGX_OK, NGX_DECLINED
 * (does not open, logged with the receipt's code and number), NGX_ERROR
 */
ngx_int_t ngx_http_gov_pay_pii_open_receipt(ngx_http_request_t *r,
    const char *field, const char *code, const char *number, const char *rec,
    size_t len, ngx_str_t *out);
/* doc.payer = {type, name, id_no} opened: for the creating unit's GET */
ngx_int_t ngx_http_gov_pay_pii_payer_json(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    json_t *doc);
/* the same as payer[3] = type, name, id_no (on r->pool, wiped at its end);
   NGX_DECLINED: the records do not open (logged) */
ngx_int_t ngx_http_gov_pay_pii_payer(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *payer);
void ngx_http_gov_pay_pii_wipe(ngx_str_t *payer);

/* QR images (ngx_gov_pay_qr.c) */
void ngx_http_gov_pay_qr_init_process(ngx_cycle_t *cycle,
    ngx_http_gov_pay_main_conf_t *gpmcf);
void ngx_http_gov_pay_qr_exit_process(ngx_cycle_t *cycle);
ngx_uint_t ngx_http_gov_pay_qr_scale(ngx_http_request_t *r);
/* NGX_DECLINED: not in this worker's cache */
ngx_int_t ngx_http_gov_pay_qr_cached(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_str_t *code, ngx_uint_t png);
ngx_int_t ngx_http_gov_pay_qr_image(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_uint_t png);

/* payer pages (ngx_gov_pay_payer.c) */
ngx_int_t ngx_http_gov_pay_page(ngx_http_request_t *r, ngx_uint_t status,
    const char *title, ngx_str_t *content);
ngx_int_t ngx_http_gov_pay_message(ngx_http_request_t *r, ngx_uint_t status,
    const char *title, const char *text);
ngx_int_t ngx_http_gov_pay_not_found_page(ngx_http_request_t *r);
ngx_int_t ngx_http_gov_pay_page_lookup(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, ngx_str_t *code,
    ngx_http_gov_pay_reply_pt next);
ngx_int_t ngx_http_gov_pay_unavailable_page(ngx_http_request_t *r);
/* sets the template values name (masked) and name_spoken; id: an ID number;
   value is a stored masked form (masking it again is a no-op) */
ngx_int_t ngx_http_gov_pay_masked(ngx_http_request_t *r, ngx_array_t *vars,
    const char *name, ngx_str_t *value, ngx_uint_t id);
char *ngx_http_gov_pay_agent_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_gov_pay_index_key(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, uint32_t shard,
    const char *item_code, const char *id_no, ngx_str_t *key);


#endif /* _NGX_GOV_PAY_MODULE_H_INCLUDED_ */
