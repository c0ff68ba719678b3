/*
 * gp_wechat: the parts of a WeChat Pay APIv3 notification that are parsed, plain C (jansson).
 *
 * The edge verifies the notification's signature and time first and decrypts the resource
 * (ngx_gov_pay_module/channels/ngx_gov_pay_wechat.c); these functions only read JSON: the
 * envelope's resource, and the decrypted transaction or refund. Every value is checked for
 * shape and copied into fixed buffers, so nothing points into the JSON afterwards.
 */

#ifndef GP_WECHAT_H
#define GP_WECHAT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define GP_WECHAT_TOKEN_MAX 64

/* the envelope's resource; the strings point into doc (valid while doc is) */
typedef struct {
    int         refund; /* original_type "refund": a refund's notification */
    const char *ciphertext;
    const char *nonce;
    const char *aad; /* associated_data, "" when absent */
} gp_wechat_resource_t;

/* 0, or -1 with *why (a static reason) */
int gp_wechat_resource(const json_t *doc, gp_wechat_resource_t *res,
                       const char **why);

/* a decrypted transaction (trade_state, amount.total in fen) */
typedef struct {
    char    mchid[GP_WECHAT_TOKEN_MAX + 1];
    char    appid[GP_WECHAT_TOKEN_MAX + 1];
    char    out_trade_no[GP_WECHAT_TOKEN_MAX + 1];
    char    transaction_id[GP_WECHAT_TOKEN_MAX + 1];
    int64_t total;
    int     success; /* trade_state SUCCESS */
    int64_t paid_at; /* success_time; -1 when absent or not RFC 3339 */
} gp_wechat_tx_t;

int gp_wechat_transaction(const char *plain, size_t n, gp_wechat_tx_t *tx,
                          const char **why);

/*
 * a decrypted refund: refund_status SUCCESS (final, success), CLOSED or ABNORMAL (final,
 * failed: status names which), PROCESSING (not final)
 */
typedef struct {
    char    mchid[GP_WECHAT_TOKEN_MAX + 1];
    char    out_refund_no[GP_WECHAT_TOKEN_MAX + 1];
    char    refund_id[GP_WECHAT_TOKEN_MAX + 1]; /* "" when absent */
    char    status[16];
    int64_t refund; /* amount.refund, fen */
    int     final;
    int     success;
    int64_t at; /* success_time; -1 when absent */
} gp_wechat_refund_t;

int gp_wechat_refund(const char *plain, size_t n, gp_wechat_refund_t *rf,
                     const char **why);

/* 1 if s is 1 to max of A-Z a-z 0-9 _ - (WeChat's ids, serials, openids) */
int gp_wechat_token(const char *s, size_t n, size_t max);

#endif /* GP_WECHAT_H */
