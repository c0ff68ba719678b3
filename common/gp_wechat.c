/*
 * gp_wechat: WeChat Pay APIv3 notifications' JSON (gp_wechat.h).
 */

#include <string.h>

#include "gp_util.h"
#include "gp_wechat.h"


int
gp_wechat_token(const char *s, size_t n, size_t max)
{
    size_t i;
    char   c;

    if (s == NULL || n == 0 || n > max) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/* a string member of 1..GP_WECHAT_TOKEN_MAX token characters, copied */
static int
gp_wechat_copy(const json_t *obj, const char *key,
               char out[GP_WECHAT_TOKEN_MAX + 1])
{
    const json_t *v;
    size_t        n;

    v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        return -1;
    }

    n = json_string_length(v);

    if (!gp_wechat_token(json_string_value(v), n, GP_WECHAT_TOKEN_MAX)) {
        return -1;
    }

    memcpy(out, json_string_value(v), n);
    out[n] = '\0';

    return 0;
}


/* an RFC 3339 time member, or -1 */
static int64_t
gp_wechat_time(const json_t *obj, const char *key)
{
    const json_t *v;
    int64_t       t;

    v = json_object_get(obj, key);

    if (!json_is_string(v)
        || gp_time_parse_rfc3339(json_string_value(v), json_string_length(v),
                                 &t)
               != 0)
    {
        return -1;
    }

    return t;
}


int
gp_wechat_resource(const json_t *doc, gp_wechat_resource_t *res,
                   const char **why)
{
    const json_t *r, *v;
    const char   *alg;

    memset(res, 0, sizeof(gp_wechat_resource_t));

    r = json_is_object(doc) ? json_object_get(doc, "resource") : NULL;

    alg = json_string_value(json_object_get(r, "algorithm"));
    res->ciphertext = json_string_value(json_object_get(r, "ciphertext"));
    res->nonce = json_string_value(json_object_get(r, "nonce"));
    v = json_object_get(r, "associated_data");
    res->aad = json_is_string(v) ? json_string_value(v) : "";

    if (alg == NULL || strcmp(alg, "AEAD_AES_256_GCM") != 0
        || res->ciphertext == NULL || res->nonce == NULL
        || res->nonce[0] == '\0' || strlen(res->ciphertext) > 16384)
    {
        *why = "no usable resource";
        return -1;
    }

    v = json_object_get(r, "original_type");
    res->refund =
        json_is_string(v) && strcmp(json_string_value(v), "refund") == 0;

    return 0;
}


int
gp_wechat_transaction(const char *plain, size_t n, gp_wechat_tx_t *tx,
                      const char **why)
{
    json_t       *doc;
    const json_t *amount, *v;
    const char   *s;
    int           rc;

    memset(tx, 0, sizeof(gp_wechat_tx_t));
    rc = -1;

    doc = json_loadb(plain, n, 0, NULL);
    if (!json_is_object(doc)) {
        *why = "the resource is no JSON object";
        goto done;
    }

    if (gp_wechat_copy(doc, "mchid", tx->mchid) != 0) {
        *why = "lacks mchid";
        goto done;
    }

    if (gp_wechat_copy(doc, "appid", tx->appid) != 0) {
        *why = "lacks appid";
        goto done;
    }

    if (gp_wechat_copy(doc, "out_trade_no", tx->out_trade_no) != 0) {
        *why = "lacks out_trade_no";
        goto done;
    }

    if (gp_wechat_copy(doc, "transaction_id", tx->transaction_id) != 0) {
        *why = "lacks transaction_id";
        goto done;
    }

    amount = json_object_get(doc, "amount");
    v = json_object_get(amount, "total");
    s = json_string_value(json_object_get(amount, "currency"));

    if (!json_is_integer(v) || (s != NULL && strcmp(s, "CNY") != 0)) {
        *why = "lacks amount.total in CNY";
        goto done;
    }

    tx->total = json_integer_value(v);

    s = json_string_value(json_object_get(doc, "trade_state"));
    tx->success = (s != NULL && strcmp(s, "SUCCESS") == 0);
    tx->paid_at = gp_wechat_time(doc, "success_time");

    rc = 0;

done:

    json_decref(doc);
    return rc;
}


int
gp_wechat_refund(const char *plain, size_t n, gp_wechat_refund_t *rf,
                 const char **why)
{
    json_t       *doc;
    const json_t *v;
    const char   *s;
    int           rc;

    memset(rf, 0, sizeof(gp_wechat_refund_t));
    rc = -1;

    doc = json_loadb(plain, n, 0, NULL);
    if (!json_is_object(doc)) {
        *why = "the resource is no JSON object";
        goto done;
    }

    if (gp_wechat_copy(doc, "mchid", rf->mchid) != 0) {
        *why = "lacks mchid";
        goto done;
    }

    if (gp_wechat_copy(doc, "out_refund_no", rf->out_refund_no) != 0) {
        *why = "refund lacks out_refund_no";
        goto done;
    }

    if (json_object_get(doc, "refund_id") != NULL
        && gp_wechat_copy(doc, "refund_id", rf->refund_id) != 0)
    {
        *why = "refund has a malformed refund_id";
        goto done;
    }

    s = json_string_value(json_object_get(doc, "refund_status"));
    v = json_object_get(json_object_get(doc, "amount"), "refund");

    if (s == NULL || strlen(s) >= sizeof(rf->status) || !json_is_integer(v)) {
        *why = "refund lacks refund_status or amount.refund";
        goto done;
    }

    strcpy(rf->status, s);
    rf->refund = json_integer_value(v);
    rf->at = gp_wechat_time(doc, "success_time");

    if (strcmp(s, "SUCCESS") == 0) {
        rf->final = 1;
        rf->success = 1;

    } else if (strcmp(s, "CLOSED") == 0 || strcmp(s, "ABNORMAL") == 0) {
        rf->final = 1;
    }

    rc = 0;

done:

    json_decref(doc);
    return rc;
}
