/*
 * gp_bank: the bodies banks send to the bank API (/bank/v1/), checked; plain C (jansson).
 *
 * Every rule broken is named in a fields list ([{"field","reason"}]) as the unit API does;
 * what passes is copied into a struct, so nothing points into the JSON afterwards. The edge
 * calls these (ngx_gov_pay_bank.c); fuzz/ calls them with hostile bodies.
 */

#ifndef GP_BANK_H
#define GP_BANK_H

#include <stdint.h>

#include <jansson.h>

/* POST /bank/v1/payments {"payment_code","amount","bank_trade_no","paid_at"} */
typedef struct {
    char payment_code
        [21]; /* 20 characters: its digits are the code parser's to check */
    int64_t amount; /* fen */
    char    bank_trade_no[65];
    int64_t paid_at;
} gp_bank_payment_t;

/* the broken rules (empty: none), or NULL when out of memory; latest: the latest paid_at
 * accepted (now + the auth window) */
json_t *gp_bank_payment_check(const json_t *req, int64_t latest,
                              gp_bank_payment_t *p);

/* POST /bank/v1/refunds/{id} {"result","bank_refund_no","refunded_at","reason"?,"amount"?} */
typedef struct {
    int     succeeded; /* "SUCCEEDED"; else "FAILED" */
    char    bank_refund_no[65];
    int64_t refunded_at;
    char    reason[801]; /* "" when absent; at most 200 characters of UTF-8 */
    int64_t amount;      /* -1 when absent */
} gp_bank_refund_t;

json_t *gp_bank_refund_check(const json_t *req, int64_t latest,
                             gp_bank_refund_t *rf);

#endif /* GP_BANK_H */
