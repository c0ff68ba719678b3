/*
 * refund.h: what the files of the refund plugin share (refund.c: the
 * configuration and the consumer side; refund_send.c: the delivery thread on
 * libcurl's multi interface; refund_channels.c: each channel's refund and
 * query requests and how their answers are read; refund_cmd.c: the ops
 * commands `refund status | show | retry`). Nothing here is seen by the
 * runtime: it knows the plugin only as gp_plugin_refund.
 */

#ifndef GP_REFUND_H
#define GP_REFUND_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>

#include "gp_code.h"
#include "gp_plugin.h"
#include "gp_script.h"


#define GP_REFUND_ID_LEN       (GP_CODE_LEN + 3) /* "<code>R<nn>" */
#define GP_REFUND_KEY_MAX      48
#define GP_REFUND_ERR_MAX      200
#define GP_REFUND_BODY_MAX     65536 /* a channel's answer, at most */
#define GP_REFUND_PLATFORM_MAX 8


/* what a try of a refund is */
typedef enum {
    GP_RF_SEND = 0, /* carry the refund to the channel */
    GP_RF_QUERY     /* ask the channel how the refund stands */
} gp_refund_phase_t;


/* how a try ended, as the channel's answer says */
typedef enum {
    GP_RF_SUCCEEDED = 0, /* final: the money went back (refund_done.lua) */
    GP_RF_FAILED,        /* final: a definite refusal, nothing refunded */
    GP_RF_WAIT,          /* the channel is at work: ask again later */
    GP_RF_AGAIN,         /* the channel has no such refund: send it now */
    GP_RF_RETRY,         /* transient: try again on the schedule */
    GP_RF_DEAD           /* cannot be carried at all: to ops at once */
} gp_refund_outcome_t;


typedef struct {
    gp_refund_outcome_t outcome;
    int64_t             amount; /* as the channel states it, fen; -1: none */
    char                refund_no[72];            /* the channel's number */
    char                error[GP_REFUND_ERR_MAX]; /* why (FAILED: a code) */
    int                 unsent; /* RETRY: nothing reached the channel */
} gp_refund_result_t;


typedef struct {
    char     *app_id;
    char     *gateway;
    EVP_PKEY *app_key;    /* ours: signs requests */
    EVP_PKEY *public_key; /* Alipay's: verifies answers */
} gp_refund_alipay_t;


typedef struct {
    char     *serial;
    EVP_PKEY *key;
} gp_refund_platform_t;


typedef struct {
    char                *mchid;
    char                *merchant_serial;
    EVP_PKEY            *merchant_key;
    gp_refund_platform_t platform[GP_REFUND_PLATFORM_MAX];
    size_t               nplatform;
    char                *api_url;    /* "https://api.mch.weixin.qq.com" */
    char                *notify_url; /* the edge's /notify/wechat */
} gp_refund_wechat_t;


typedef struct {
    char     *mer_id;
    char     *cert_id;
    EVP_PKEY *sign_key;
    EVP_PKEY *verify_key;
    char     *back_url;   /* backTransReq.do */
    char     *query_url;  /* queryTrans.do */
    char     *notify_url; /* the edge's /notify/unionpay */
} gp_refund_unionpay_t;


typedef struct gp_refund_s     gp_refund_t;
typedef struct gp_refund_try_s gp_refund_try_t;


/* a channel's side of a refund (refund_channels.c) */
typedef struct {
    const char *name;
    /* 1 when the channel is configured */
    int (*enabled)(const gp_refund_t *rf);
    /*
     * the request of the try (t->phase): t->url, t->body (NULL: a GET),
     * t->headers; 0, or -1 with a reason in t->res.error
     */
    int (*request)(gp_refund_t *rf, gp_refund_try_t *t);
    /* reads the answer (t->status, t->resp, the headers) into t->res */
    void (*answer)(gp_refund_t *rf, gp_refund_try_t *t);
} gp_refund_channel_t;


/* one claimed refund and its try */
struct gp_refund_try_s {
    gp_refund_try_t *next;
    gp_refund_t     *rf;
    uint32_t         shard;
    char             id[GP_REFUND_ID_LEN + 1];
    char             code[GP_CODE_LEN + 1];
    char             nn[3];
    char             notice_key[GP_REFUND_KEY_MAX];
    char             token[48];

    gp_refund_phase_t          phase;
    const gp_refund_channel_t *channel; /* NULL: sandbox, bank, unknown */
    char                       channel_name[24];
    int64_t                    amount;
    int64_t                    total; /* of the payment refunded (WeChat) */
    char                       trade_no[72];
    char                      *reason;
    char                       origin[16];
    long long                  attempts; /* before this try */
    long long                  waits;
    char                       txn_time[16]; /* UnionPay */
    int64_t                    created_at;

    /* the request */
    CURL              *easy;
    struct curl_slist *headers;
    char              *url;
    char              *body;
    int64_t            started;

    /* the answer */
    int      done; /* curl finished the transfer */
    CURLcode result;
    long     status;
    char    *resp;
    size_t   resp_len;
    int      too_big;
    char     h_ts[24], h_nonce[80], h_sig[700], h_serial[80]; /* Wechatpay-* */
    char     errbuf[CURL_ERROR_SIZE];

    gp_refund_result_t res;
};


struct gp_refund_s {
    gp_plugin_env_t *env;

    /* configuration */
    gp_code_key_t         code_key;
    long                  timeout_ms;
    long                  connect_timeout_ms;
    int64_t              *schedule_ms;
    size_t                nschedule;
    int64_t              *wait_ms;
    size_t                nwait;
    long                  bank_timeout_s;
    int                   poll_ms;
    int                   max_in_flight;
    char                 *ca_file;
    int                   sandbox;
    gp_refund_alipay_t   *alipay;
    gp_refund_wechat_t   *wechat;
    gp_refund_unionpay_t *unionpay;
    int                   fault; /* GOV_PAY_REFUND_FAULT */

    /* per shard: "{gpN}:refund:queue", "{gpN}:refund:dead", "{gpN}:dead",
     * "{gpN}:refunds", "{gpN}:bankrefunds" */
    char **queue;
    char **dead_set;
    char **dead;
    char **stream;
    char **bank;

    const gp_script_t *s_queue, *s_claim, *s_step, *s_retry, *s_prune, *s_done;

    int curl_inited;

    /* the delivery thread (refund_send.c) */
    pthread_t          thread;
    int                started;
    atomic_int         stop;
    atomic_int         woken;
    CURLM             *multi;
    redisContext      *redis;
    gp_refund_try_t   *flying; /* in curl's hands */
    gp_refund_try_t   *landed; /* outcome not yet recorded */
    int                nflying;
    int64_t            next_scan;
    int64_t            next_prune;
    int                backoff_ms;
    char               token_prefix[17];
    unsigned long long token_seq;
};


enum {
    GP_REFUND_FAULT_NONE = 0,
    GP_REFUND_FAULT_BEFORE_SEND, /* _exit after the claim, before the request */
    GP_REFUND_FAULT_AFTER_ANSWER /* _exit after a refund request's answer */
};


/* refund.c */
int64_t gp_refund_now_ms(void);
/*
 * the parts of a refund id "<code>R<nn>": code, nn, shard and the notice
 * key "{gpN}:n:<seq>"; 0, or -1 (malformed, or not a code of this key)
 */
int gp_refund_parse_id(const gp_refund_t *rf, const char *id, size_t len,
                       char code[GP_CODE_LEN + 1], char nn[3], uint32_t *shard,
                       char *key, size_t keylen);
/* the due time of a refund taken in hand now (a bank's: when it is overdue) */
int64_t gp_refund_due(const gp_refund_t *rf, const char *channel,
                      int64_t created_at, int64_t now);
/* Beijing time of t: "yyyy-MM-dd HH:mm:ss" (dash) or "yyyyMMddHHmmss" */
void gp_refund_time_cst(time_t t, int compact, char *out, size_t outlen);

/* refund_channels.c */
extern const gp_refund_channel_t gp_refund_alipay;
extern const gp_refund_channel_t gp_refund_wechat;
extern const gp_refund_channel_t gp_refund_unionpay;
const gp_refund_channel_t       *gp_refund_channel(const char *name);

/* refund_send.c */
int  gp_refund_start(void *state, char *err, size_t errlen);
void gp_refund_stop(gp_refund_t *rf);
void gp_refund_wake(gp_refund_t *rf);

/* refund_cmd.c */
int gp_refund_command(void *state, int argc, char **argv);

#endif /* GP_REFUND_H */
