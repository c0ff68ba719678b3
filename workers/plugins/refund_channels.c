/*
 * refund_channels: each channel's refund as the channel publishes it
 * (docs/channels.md, "Refunds"): the request of a try (the refund itself, or
 * the query that asks how it stands), signed as the channel wants, and what
 * the channel's answer means, read only after its signature verified.
 *
 *   Alipay    alipay.trade.refund / alipay.trade.fastpay.refund.query, RSA2
 *             request signature, the answer's "sign" over the raw text of
 *             its *_response member, Alipay's public key.
 *   WeChat    POST /v3/refund/domestic/refunds, GET .../{out_refund_no},
 *             Authorization WECHATPAY2-SHA256-RSA2048 by the merchant key,
 *             the answer's Wechatpay-Signature by a platform key.
 *   UnionPay  backTransReq.do (txnType 04) / queryTrans.do (txnType 00),
 *             signMethod 01 both ways.
 *
 * An answer decides a refund only when it verified; anything else (a lost
 * answer, a 5xx, a body that is not what the channel sends) is transient and
 * the next try asks first. Which channel codes are definite refusals is
 * listed here and in docs/channels.md.
 */

#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "gp_crypto.h"
#include "gp_pkey.h"
#include "gp_util.h"
#include "refund.h"


#define GP_RF_UA "User-Agent: gov-pay-refund/1"

/* an answer's timestamp (WeChat Pay) may be this far from our clock */
#define GP_RF_WECHAT_WINDOW 300


static void gp_rf_result(gp_refund_try_t *t, gp_refund_outcome_t outcome,
                         const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int    gp_rf_transport(gp_refund_try_t *t);
static int    gp_rf_sign(EVP_PKEY *key, const void *msg, size_t n, char **b64);
static int    gp_rf_verify(EVP_PKEY *key, const void *msg, size_t n,
                           const char *b64, size_t b64len);
static char  *gp_rf_form(const char *const *kv, size_t n);
static size_t gp_rf_cut(const char *s, size_t max);
static int    gp_rf_json_member(const char *s, size_t n, const char *name,
                                const char **v, size_t *vlen);
static int    gp_rf_set_str(char *dst, size_t dstlen, const char *src);

static int  gp_rf_alipay_enabled(const gp_refund_t *rf);
static int  gp_rf_alipay_request(gp_refund_t *rf, gp_refund_try_t *t);
static void gp_rf_alipay_answer(gp_refund_t *rf, gp_refund_try_t *t);
static int  gp_rf_wechat_enabled(const gp_refund_t *rf);
static int  gp_rf_wechat_request(gp_refund_t *rf, gp_refund_try_t *t);
static void gp_rf_wechat_answer(gp_refund_t *rf, gp_refund_try_t *t);
static int  gp_rf_unionpay_enabled(const gp_refund_t *rf);
static int  gp_rf_unionpay_request(gp_refund_t *rf, gp_refund_try_t *t);
static void gp_rf_unionpay_answer(gp_refund_t *rf, gp_refund_try_t *t);


const gp_refund_channel_t gp_refund_alipay = { "alipay", gp_rf_alipay_enabled,
                                               gp_rf_alipay_request,
                                               gp_rf_alipay_answer };

const gp_refund_channel_t gp_refund_wechat = { "wechat", gp_rf_wechat_enabled,
                                               gp_rf_wechat_request,
                                               gp_rf_wechat_answer };

const gp_refund_channel_t gp_refund_unionpay = { "unionpay",
                                                 gp_rf_unionpay_enabled,
                                                 gp_rf_unionpay_request,
                                                 gp_rf_unionpay_answer };


const gp_refund_channel_t *
gp_refund_channel(const char *name)
{
    if (strcmp(name, "alipay") == 0) {
        return &gp_refund_alipay;
    }

    if (strcmp(name, "wechat") == 0) {
        return &gp_refund_wechat;
    }

    if (strcmp(name, "unionpay") == 0) {
        return &gp_refund_unionpay;
    }

    return NULL;
}


/* ---- Alipay ------------------------------------------------------------ */

/*
 * sub_codes of alipay.trade.refund that refuse the refund for good: nothing
 * was refunded and trying again cannot change it. Others (ACQ.SYSTEM_ERROR,
 * the merchant's balance, a frozen trade, a request Alipay found invalid, an
 * out_request_no used with other values, codes not listed) are tried again
 * and end with ops.
 */
static const char *gp_rf_alipay_definite[] = {
    "ACQ.TRADE_NOT_EXIST",
    "ACQ.TRADE_HAS_CLOSE",
    "ACQ.TRADE_HAS_FINISHED",
    "ACQ.TRADE_STATUS_ERROR",
    "ACQ.TRADE_NOT_ALLOW_REFUND",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
    "ACQ.REASON_TRADE_REFUND_FEE_ERR",
    "ACQ.REFUND_FEE_ERROR",
    NULL
};


static int
gp_rf_alipay_enabled(const gp_refund_t *rf)
{
    return rf->alipay != NULL;
}


static int
gp_rf_alipay_request(gp_refund_t *rf, gp_refund_try_t *t)
{
    gp_refund_alipay_t *a;
    json_t             *biz;
    const char         *kv[18], *method;
    char               *bizs, *canon, *sign, yuan[32], ts[24];
    size_t              i, n, len;
    int                 ret;

    a = rf->alipay;
    ret = -1;
    bizs = canon = sign = NULL;

    method = t->phase == GP_RF_SEND ? "alipay.trade.refund"
                                    : "alipay.trade.fastpay.refund.query";

    biz = json_object();
    if (biz == NULL
        || json_object_set_new(biz, "out_trade_no", json_string(t->code))
        || json_object_set_new(biz, "trade_no", json_string(t->trade_no))
        || json_object_set_new(biz, "out_request_no", json_string(t->id)))
    {
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    if (t->phase == GP_RF_SEND) {
        if (gp_fen_to_yuan(t->amount, yuan, sizeof(yuan)) < 0
            || json_object_set_new(biz, "refund_amount", json_string(yuan))
            || (t->reason != NULL && t->reason[0] != '\0'
                && json_object_set_new(
                    biz, "refund_reason",
                    json_stringn(t->reason, gp_rf_cut(t->reason, 256)))))
        {
            gp_rf_result(t, GP_RF_RETRY, "cannot build the request");
            goto done;
        }
    }

    bizs = json_dumps(biz, JSON_COMPACT);
    if (bizs == NULL) {
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    gp_refund_time_cst(time(NULL), 0, ts, sizeof(ts));

    /* sorted by name: the string signed is "k=v&..." in this order */
    kv[0] = "app_id";
    kv[1] = a->app_id;
    kv[2] = "biz_content";
    kv[3] = bizs;
    kv[4] = "charset";
    kv[5] = "utf-8";
    kv[6] = "format";
    kv[7] = "JSON";
    kv[8] = "method";
    kv[9] = method;
    kv[10] = "sign_type";
    kv[11] = "RSA2";
    kv[12] = "timestamp";
    kv[13] = ts;
    kv[14] = "version";
    kv[15] = "1.0";

    for (i = 0, len = 0; i < 16; i += 2) {
        len += strlen(kv[i]) + 1 + strlen(kv[i + 1]) + 1;
    }

    canon = malloc(len + 1);
    if (canon == NULL) {
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    for (i = 0, n = 0; i < 16; i += 2) {
        n += (size_t) sprintf(canon + n, "%s%s=%s", i > 0 ? "&" : "", kv[i],
                              kv[i + 1]);
    }

    if (gp_rf_sign(a->app_key, canon, n, &sign) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "RSA2 signing failed");
        goto done;
    }

    kv[16] = "sign";
    kv[17] = sign;

    t->body = gp_rf_form(kv, 18);
    t->url = strdup(a->gateway);
    t->headers = curl_slist_append(
        t->headers, "Content-Type: application/x-www-form-urlencoded;"
                    "charset=utf-8");
    t->headers = curl_slist_append(t->headers, GP_RF_UA);

    if (t->body == NULL || t->url == NULL || t->headers == NULL) {
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    ret = 0;

done:

    json_decref(biz);
    free(bizs);
    free(canon);
    free(sign);
    return ret;
}


static void
gp_rf_alipay_answer(gp_refund_t *rf, gp_refund_try_t *t)
{
    json_t     *doc, *node, *sign;
    const char *name, *raw, *code, *sub, *v;
    size_t      rawlen, i;
    int64_t     fen;

    if (gp_rf_transport(t) != 0) {
        return;
    }

    doc = NULL;
    node = NULL;

    name = t->phase == GP_RF_SEND ? "alipay_trade_refund_response"
                                  : "alipay_trade_fastpay_refund_query_"
                                    "response";

    /* the raw text Alipay signed: the value of the *_response member */
    if (gp_rf_json_member(t->resp, t->resp_len, name, &raw, &rawlen) != 0
        && gp_rf_json_member(t->resp, t->resp_len, "error_response", &raw,
                             &rawlen)
               != 0)
    {
        gp_rf_result(t, GP_RF_RETRY, "answer without %s", name);
        return;
    }

    doc = json_loadb(t->resp, t->resp_len, JSON_REJECT_DUPLICATES, NULL);
    sign = doc != NULL ? json_object_get(doc, "sign") : NULL;

    if (!json_is_string(sign)
        || gp_rf_verify(rf->alipay->public_key, raw, rawlen,
                        json_string_value(sign), json_string_length(sign))
               != 1)
    {
        gp_rf_result(t, GP_RF_RETRY, "answer not verified (sign)");
        goto done;
    }

    node = json_loadb(raw, rawlen, JSON_REJECT_DUPLICATES, NULL);
    code = json_string_value(json_object_get(node, "code"));
    sub = json_string_value(json_object_get(node, "sub_code"));

    if (code == NULL) {
        gp_rf_result(t, GP_RF_RETRY, "answer without a code");
        goto done;
    }

    /* an answer about another trade or refund is not about this one */
    v = json_string_value(json_object_get(node, "out_trade_no"));
    if (v != NULL && strcmp(v, t->code) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "answer for another out_trade_no");
        goto done;
    }

    v = json_string_value(json_object_get(node, "trade_no"));
    if (v != NULL && t->trade_no[0] != '\0' && strcmp(v, t->trade_no) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "answer for another trade_no");
        goto done;
    }

    if (strcmp(code, "10000") != 0) {
        if (strcmp(code, "40004") == 0 && sub != NULL) {
            if (t->phase == GP_RF_QUERY
                && strcmp(sub, "ACQ.TRADE_NOT_EXIST") == 0) {
                gp_rf_result(t, GP_RF_AGAIN, "query: %.60s", sub);
                goto done;
            }

            for (i = 0; t->phase == GP_RF_SEND && gp_rf_alipay_definite[i]; i++)
            {
                if (strcmp(sub, gp_rf_alipay_definite[i]) == 0) {
                    gp_rf_result(t, GP_RF_FAILED, "%s", sub);
                    goto done;
                }
            }
        }

        gp_rf_result(t, GP_RF_RETRY, "alipay %.10s %.60s", code,
                     sub != NULL ? sub : "");
        goto done;
    }

    if (t->phase == GP_RF_SEND) {
        /*
         * fund_change Y: the money moved. N or none: this answer does not
         * say; the refund query decides (Alipay's advice)
         */
        v = json_string_value(json_object_get(node, "fund_change"));

        if (v != NULL && strcmp(v, "Y") == 0) {
            gp_rf_result(t, GP_RF_SUCCEEDED, "fund_change Y");
        } else {
            gp_rf_result(t, GP_RF_WAIT, "fund_change %s, asking later",
                         v != NULL ? "N" : "absent");
        }

        goto done;
    }

    v = json_string_value(json_object_get(node, "out_request_no"));
    if (v != NULL && strcmp(v, t->id) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "answer for another out_request_no");
        goto done;
    }

    /*
     * REFUND_SUCCESS: refunded. No refund_status: refunded when the query
     * returns the refund (its amount), else Alipay did not get it or did not
     * make it: it is sent again with the same out_request_no, which Alipay
     * refunds at most once.
     */
    v = json_string_value(json_object_get(node, "refund_status"));

    if ((v != NULL && strcmp(v, "REFUND_SUCCESS") == 0)
        || (v == NULL && json_object_get(node, "refund_amount") != NULL
            && json_object_get(node, "out_request_no") != NULL))
    {
        v = json_string_value(json_object_get(node, "refund_amount"));
        if (v == NULL || gp_yuan_to_fen(v, strlen(v), &fen) != 0) {
            gp_rf_result(t, GP_RF_RETRY, "query: no usable refund_amount");
            goto done;
        }

        gp_rf_result(t, GP_RF_SUCCEEDED, "query: REFUND_SUCCESS");
        t->res.amount = fen;
        goto done;
    }

    if (v != NULL) {
        gp_rf_result(t, GP_RF_WAIT, "query: refund_status %.40s", v);
        goto done;
    }

    gp_rf_result(t, GP_RF_AGAIN, "query: not refunded");

done:

    json_decref(node);
    json_decref(doc);
}


/* ---- WeChat Pay -------------------------------------------------------- */

static int
gp_rf_wechat_enabled(const gp_refund_t *rf)
{
    return rf->wechat != NULL;
}


static int
gp_rf_wechat_request(gp_refund_t *rf, gp_refund_try_t *t)
{
    gp_refund_wechat_t *w;
    json_t             *doc, *amount;
    const char         *prefix;
    unsigned char       rnd[16];
    char                nonce[33], *msg, *sig, *path, hdr[1200];
    size_t              plen, mlen;
    time_t              now;
    int                 ret;

    w = rf->wechat;
    ret = -1;
    doc = NULL;
    msg = sig = path = NULL;

    /* the path signed is the one sent: api_url's own path, if any, first */
    prefix = strstr(w->api_url, "://");
    prefix = prefix != NULL ? strchr(prefix + 3, '/') : NULL;
    plen = prefix != NULL ? strlen(prefix) : 0;

    if (asprintf(&path, "%.*s/v3/refund/domestic/refunds%s%s", (int) plen,
                 prefix != NULL ? prefix : "",
                 t->phase == GP_RF_QUERY ? "/" : "",
                 t->phase == GP_RF_QUERY ? t->id : "")
        < 0)
    {
        path = NULL;
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    if (asprintf(&t->url, "%.*s%s", (int) (strlen(w->api_url) - plen),
                 w->api_url, path)
        < 0)
    {
        t->url = NULL;
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    if (t->phase == GP_RF_SEND) {
        if (t->total < t->amount) {
            gp_rf_result(t, GP_RF_DEAD,
                         "the amount of the payment refunded is unknown");
            goto done;
        }

        amount = json_pack("{s:I,s:I,s:s}", "refund", (json_int_t) t->amount,
                           "total", (json_int_t) t->total, "currency", "CNY");
        doc = json_object();

        if (amount == NULL || doc == NULL
            || json_object_set_new(doc, "transaction_id",
                                   json_string(t->trade_no))
            || json_object_set_new(doc, "out_trade_no", json_string(t->code))
            || json_object_set_new(doc, "out_refund_no", json_string(t->id))
            || (t->reason != NULL && t->reason[0] != '\0'
                && json_object_set_new(
                    doc, "reason",
                    json_stringn(t->reason, gp_rf_cut(t->reason, 80))))
            || json_object_set_new(doc, "notify_url",
                                   json_string(w->notify_url))
            || json_object_set_new(doc, "amount", amount))
        {
            gp_rf_result(t, GP_RF_RETRY, "cannot build the request");
            goto done;
        }

        t->body = json_dumps(doc, JSON_COMPACT);
        if (t->body == NULL) {
            gp_rf_result(t, GP_RF_RETRY, "out of memory");
            goto done;
        }
    }

    /* Authorization: the merchant's signature over the request */
    if (gp_random_bytes(rnd, sizeof(rnd)) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "gp_random_bytes() failed");
        goto done;
    }

    gp_hex(rnd, sizeof(rnd), nonce);
    now = time(NULL);

    mlen = (size_t) asprintf(
        &msg, "%s\n%s\n%lld\n%s\n%s\n", t->body != NULL ? "POST" : "GET", path,
        (long long) now, nonce, t->body != NULL ? t->body : "");
    if (msg == NULL || (ssize_t) mlen < 0) {
        msg = NULL;
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    if (gp_rf_sign(w->merchant_key, msg, mlen, &sig) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "merchant signing failed");
        goto done;
    }

    snprintf(hdr, sizeof(hdr),
             "Authorization: WECHATPAY2-SHA256-RSA2048 mchid=\"%s\","
             "nonce_str=\"%s\",signature=\"%s\",timestamp=\"%lld\","
             "serial_no=\"%s\"",
             w->mchid, nonce, sig, (long long) now, w->merchant_serial);

    t->headers = curl_slist_append(t->headers, hdr);
    t->headers = curl_slist_append(t->headers, "Accept: application/json");
    if (t->body != NULL) {
        t->headers =
            curl_slist_append(t->headers, "Content-Type: application/json");
    }
    t->headers = curl_slist_append(t->headers, GP_RF_UA);

    if (t->headers == NULL) {
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    ret = 0;

done:

    json_decref(doc);
    free(msg);
    free(sig);
    free(path);
    return ret;
}


/*
 * error codes of the refund request that refuse it for good (WeChat Pay's
 * list: "此状态代表退款申请失败"): the payer's account is closed, the
 * refund breaks a business rule (more than is left, an order over a year
 * old), no right to refund this order, no such order. Others
 * (SYSTEM_ERROR, FREQUENCY_LIMITED, NOT_ENOUGH: the merchant's balance,
 * PARAM_ERROR, SIGN_ERROR, MCH_NOT_EXISTS: our request or configuration)
 * are tried again and end with ops.
 */
static const char *gp_rf_wechat_definite[] = { "USER_ACCOUNT_ABNORMAL",
                                               "INVALID_REQUEST", "NO_AUTH",
                                               "RESOURCE_NOT_EXISTS", NULL };


static void
gp_rf_wechat_answer(gp_refund_t *rf, gp_refund_try_t *t)
{
    gp_refund_wechat_t *w;
    json_t             *doc, *amount;
    const char         *v, *status;
    char               *msg;
    size_t              i, mlen;
    int64_t             ts;
    int                 verified;

    if (gp_rf_transport(t) != 0) {
        return;
    }

    w = rf->wechat;
    doc = NULL;
    verified = 0;

    /* Wechatpay-Signature over "ts\nnonce\nbody\n", the key its serial names */
    for (i = 0; i < w->nplatform; i++) {
        if (strcmp(w->platform[i].serial, t->h_serial) == 0) {
            break;
        }
    }

    if (i < w->nplatform && t->h_ts[0] != '\0' && t->h_nonce[0] != '\0'
        && t->h_sig[0] != '\0'
        && gp_parse_i64(t->h_ts, strlen(t->h_ts), &ts) == 0
        && ts >= (int64_t) time(NULL) - GP_RF_WECHAT_WINDOW
        && ts <= (int64_t) time(NULL) + GP_RF_WECHAT_WINDOW)
    {
        msg = malloc(strlen(t->h_ts) + strlen(t->h_nonce) + t->resp_len + 4);
        if (msg != NULL) {
            mlen = (size_t) sprintf(msg, "%s\n%s\n", t->h_ts, t->h_nonce);
            memcpy(msg + mlen, t->resp, t->resp_len);
            mlen += t->resp_len;
            msg[mlen++] = '\n';

            verified = gp_rf_verify(w->platform[i].key, msg, mlen, t->h_sig,
                                    strlen(t->h_sig))
                       == 1;
            free(msg);
        }
    }

    if (!verified) {
        gp_rf_result(t, GP_RF_RETRY,
                     "HTTP %ld, answer not verified "
                     "(Wechatpay-Signature)",
                     t->status);
        return;
    }

    doc = json_loadb(t->resp, t->resp_len, JSON_REJECT_DUPLICATES, NULL);

    if (t->status == 200) {
        v = json_string_value(json_object_get(doc, "out_refund_no"));
        status = json_string_value(json_object_get(doc, "status"));

        if (v == NULL || strcmp(v, t->id) != 0 || status == NULL) {
            gp_rf_result(t, GP_RF_RETRY,
                         "answer without this out_refund_no or a status");
            goto done;
        }

        if (strcmp(status, "SUCCESS") == 0) {
            amount = json_object_get(json_object_get(doc, "amount"), "refund");
            if (!json_is_integer(amount)) {
                gp_rf_result(t, GP_RF_RETRY, "SUCCESS without amount.refund");
                goto done;
            }

            gp_rf_result(t, GP_RF_SUCCEEDED, "SUCCESS");
            t->res.amount = json_integer_value(amount);

        } else if (strcmp(status, "PROCESSING") == 0) {
            gp_rf_result(t, GP_RF_WAIT, "PROCESSING");

        } else if (strcmp(status, "CLOSED") == 0
                   || strcmp(status, "ABNORMAL") == 0) {
            gp_rf_result(t, GP_RF_FAILED, "%s", status);

        } else {
            gp_rf_result(t, GP_RF_RETRY, "unknown status %.40s", status);
            goto done;
        }

        v = json_string_value(json_object_get(doc, "refund_id"));
        if (v != NULL) {
            gp_rf_set_str(t->res.refund_no, sizeof(t->res.refund_no), v);
        }

        goto done;
    }

    v = json_string_value(json_object_get(doc, "code"));

    if (t->status >= 400 && t->status < 500 && v != NULL) {
        if (t->phase == GP_RF_QUERY) {
            if (t->status == 404 && strcmp(v, "RESOURCE_NOT_EXISTS") == 0) {
                gp_rf_result(t, GP_RF_AGAIN, "query: RESOURCE_NOT_EXISTS");
                goto done;
            }

        } else {
            for (i = 0; gp_rf_wechat_definite[i] != NULL; i++) {
                if (strcmp(v, gp_rf_wechat_definite[i]) == 0) {
                    gp_rf_result(t, GP_RF_FAILED, "%s", v);
                    goto done;
                }
            }
        }
    }

    gp_rf_result(t, GP_RF_RETRY, "HTTP %ld %.60s", t->status,
                 v != NULL ? v : "");

done:

    json_decref(doc);
}


/* ---- UnionPay ---------------------------------------------------------- */

static int
gp_rf_unionpay_enabled(const gp_refund_t *rf)
{
    return rf->unionpay != NULL;
}


static int
gp_rf_unionpay_request(gp_refund_t *rf, gp_refund_try_t *t)
{
    gp_refund_unionpay_t *u;
    const char           *kv[40];
    char                 *canon, *sign, amount[24], hex[65];
    unsigned char         md[32];
    size_t                n, i, len;
    int                   ret;

    u = rf->unionpay;
    ret = -1;
    canon = sign = NULL;

    if (t->txn_time[0] == '\0') {
        /* asked about before it was ever sent: it was not */
        gp_rf_result(t, GP_RF_AGAIN, "never sent");
        return -1;
    }

    snprintf(amount, sizeof(amount), "%lld", (long long) t->amount);

    n = 0;
#define GP_KV(k, v)                                                            \
    kv[n++] = (k);                                                             \
    kv[n++] = (v)

    GP_KV("accessType", "0");

    if (t->phase == GP_RF_SEND) {
        GP_KV("backUrl", u->notify_url);
        GP_KV("bizType", "000201");
        GP_KV("certId", u->cert_id);
        GP_KV("channelType", "07");
        GP_KV("currencyCode", "156");
        GP_KV("encoding", "UTF-8");
        GP_KV("merId", u->mer_id);
        GP_KV("orderId", t->id);
        GP_KV("origQryId", t->trade_no);
        GP_KV("signMethod", "01");
        GP_KV("txnAmt", amount);
        GP_KV("txnSubType", "00");
        GP_KV("txnTime", t->txn_time);
        GP_KV("txnType", "04");
        GP_KV("version", "5.1.0");

    } else {
        GP_KV("bizType", "000000");
        GP_KV("certId", u->cert_id);
        GP_KV("encoding", "UTF-8");
        GP_KV("merId", u->mer_id);
        GP_KV("orderId", t->id);
        GP_KV("signMethod", "01");
        GP_KV("txnSubType", "00");
        GP_KV("txnTime", t->txn_time);
        GP_KV("txnType", "00");
        GP_KV("version", "5.1.0");
    }

#undef GP_KV

    /* signMethod 01: SHA256withRSA over the hex SHA-256 of "k=v&..." */
    for (i = 0, len = 0; i < n; i += 2) {
        len += strlen(kv[i]) + strlen(kv[i + 1]) + 2;
    }

    canon = malloc(len + 1);
    if (canon == NULL) {
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    for (i = 0, len = 0; i < n; i += 2) {
        len += (size_t) sprintf(canon + len, "%s%s=%s", i > 0 ? "&" : "", kv[i],
                                kv[i + 1]);
    }

    if (gp_digest(GP_MD_SHA256, canon, len, md) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "SHA-256 failed");
        goto done;
    }

    gp_hex(md, 32, hex);

    if (gp_rf_sign(u->sign_key, hex, 64, &sign) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "signing failed");
        goto done;
    }

    kv[n++] = "signature";
    kv[n++] = sign;

    t->body = gp_rf_form(kv, n);
    t->url = strdup(t->phase == GP_RF_SEND ? u->back_url : u->query_url);
    t->headers = curl_slist_append(
        t->headers, "Content-Type: application/x-www-form-urlencoded;"
                    "charset=UTF-8");
    t->headers = curl_slist_append(t->headers, GP_RF_UA);

    if (t->body == NULL || t->url == NULL || t->headers == NULL) {
        gp_rf_result(t, GP_RF_RETRY, "out of memory");
        goto done;
    }

    ret = 0;

done:

    free(canon);
    free(sign);
    return ret;
}


typedef struct {
    const char *k;
    size_t      klen;
    const char *v;
    size_t      vlen;
} gp_rf_pair_t;


/*
 * UnionPay's synchronous answer: "k=v&k=v", values as they are (not
 * percent-encoded), a value in {} may hold '&' (UnionPay's SDK parses it so);
 * -1 on a repeated key or a pair without '='
 */
static int
gp_rf_unionpay_parse(const char *s, size_t n, gp_rf_pair_t *p, size_t max,
                     size_t *np)
{
    size_t i, start, eq, depth, k;

    *np = 0;
    start = 0;

    while (start < n) {
        depth = 0;
        eq = 0;

        for (i = start; i < n; i++) {
            if (s[i] == '=' && eq == 0) {
                eq = i;
            } else if (s[i] == '{' && eq != 0) {
                depth++;
            } else if (s[i] == '}' && depth > 0) {
                depth--;
            } else if (s[i] == '&' && depth == 0) {
                break;
            }
        }

        if (i > start) {
            if (eq == 0 || eq == start || *np == max) {
                return -1;
            }

            p[*np].k = s + start;
            p[*np].klen = eq - start;
            p[*np].v = s + eq + 1;
            p[*np].vlen = i - eq - 1;

            for (k = 0; k < *np; k++) {
                if (p[k].klen == p[*np].klen
                    && memcmp(p[k].k, p[*np].k, p[k].klen) == 0) {
                    return -1;
                }
            }

            (*np)++;
        }

        start = i + 1;
    }

    return 0;
}


static int
gp_rf_pair_cmp(const void *a, const void *b)
{
    const gp_rf_pair_t *x = a, *y = b;
    size_t              n;
    int                 c;

    n = x->klen < y->klen ? x->klen : y->klen;
    c = memcmp(x->k, y->k, n);

    return c != 0 ? c : (x->klen < y->klen ? -1 : x->klen > y->klen);
}


static const gp_rf_pair_t *
gp_rf_pair(const gp_rf_pair_t *p, size_t n, const char *key)
{
    size_t i, len;

    len = strlen(key);

    for (i = 0; i < n; i++) {
        if (p[i].klen == len && memcmp(p[i].k, key, len) == 0) {
            return &p[i];
        }
    }

    return NULL;
}


static int
gp_rf_pair_is(const gp_rf_pair_t *p, const char *v)
{
    return p != NULL && p->vlen == strlen(v) && memcmp(p->v, v, p->vlen) == 0;
}


/*
 * respCode of the refund request: 00 accepted (the back notification, or
 * a query, ends it), 05 accepted, to be asked about; 03, 04, 12 and codes
 * not listed: unknown, asked about; 02, 06, 10, 11, 13, 31, 32, 37, 39, 43:
 * not taken (busy, our message, the merchant's rights, the time): sent again
 * later; the codes below refuse the refund for good.
 */
static const char *gp_rf_unionpay_unsent[] = { "02", "06", "10", "11",
                                               "13", "31", "32", "37",
                                               "39", "43", NULL };

static const char *gp_rf_unionpay_definite[] = { "01", "30", "33", "34", "35",
                                                 "36", "38", "45", NULL };


static void
gp_rf_unionpay_answer(gp_refund_t *rf, gp_refund_try_t *t)
{
    gp_refund_unionpay_t *u;
    gp_rf_pair_t          p[64];
    const gp_rf_pair_t   *sig, *resp, *orig, *qid, *amt;
    char                 *canon, hex[65], rc[3];
    unsigned char         md[32];
    size_t                np, i, len;
    int64_t               fen;
    int                   verified;

    if (gp_rf_transport(t) != 0) {
        return;
    }

    u = rf->unionpay;

    if (t->status != 200) {
        gp_rf_result(t, GP_RF_RETRY, "HTTP %ld", t->status);
        return;
    }

    /* a line end after the answer is not part of its last value */
    while (t->resp_len > 0
           && (t->resp[t->resp_len - 1] == '\n'
               || t->resp[t->resp_len - 1] == '\r'))
    {
        t->resp_len--;
    }

    if (gp_rf_unionpay_parse(t->resp, t->resp_len, p, 64, &np) != 0) {
        gp_rf_result(t, GP_RF_RETRY, "malformed answer");
        return;
    }

    /* every field but signature (empty values too), sorted, "k=v&..." */
    qsort(p, np, sizeof(gp_rf_pair_t), gp_rf_pair_cmp);
    sig = gp_rf_pair(p, np, "signature");
    verified = 0;

    for (i = 0, len = 0; i < np; i++) {
        len += p[i].klen + p[i].vlen + 2;
    }

    canon = sig != NULL ? malloc(len + 1) : NULL;

    if (canon != NULL) {
        for (i = 0, len = 0; i < np; i++) {
            if (&p[i] == sig) {
                continue;
            }

            if (len > 0) {
                canon[len++] = '&';
            }

            memcpy(canon + len, p[i].k, p[i].klen);
            len += p[i].klen;
            canon[len++] = '=';
            memcpy(canon + len, p[i].v, p[i].vlen);
            len += p[i].vlen;
        }

        if (gp_digest(GP_MD_SHA256, canon, len, md) == 0) {
            gp_hex(md, 32, hex);
            verified =
                gp_rf_verify(u->verify_key, hex, 64, sig->v, sig->vlen) == 1;
        }

        free(canon);
    }

    if (!verified) {
        gp_rf_result(t, GP_RF_RETRY, "answer not verified (signature)");
        return;
    }

    if (!gp_rf_pair_is(gp_rf_pair(p, np, "merId"), u->mer_id)
        || !gp_rf_pair_is(gp_rf_pair(p, np, "orderId"), t->id))
    {
        gp_rf_result(t, GP_RF_RETRY, "answer for another merId or orderId");
        return;
    }

    resp = gp_rf_pair(p, np, "respCode");
    if (resp == NULL || resp->vlen != 2) {
        gp_rf_result(t, GP_RF_RETRY, "answer without a respCode");
        return;
    }

    memcpy(rc, resp->v, 2);
    rc[2] = '\0';

    if (t->phase == GP_RF_SEND) {
        if (strcmp(rc, "00") == 0 || strcmp(rc, "05") == 0) {
            gp_rf_result(t, GP_RF_WAIT, "respCode %s: accepted", rc);
            return;
        }

        for (i = 0; gp_rf_unionpay_unsent[i] != NULL; i++) {
            if (strcmp(rc, gp_rf_unionpay_unsent[i]) == 0) {
                gp_rf_result(t, GP_RF_RETRY, "respCode %s: not taken", rc);
                t->res.unsent = 1;
                return;
            }
        }

        for (i = 0; gp_rf_unionpay_definite[i] != NULL; i++) {
            if (strcmp(rc, gp_rf_unionpay_definite[i]) == 0) {
                break;
            }
        }

        if (gp_rf_unionpay_definite[i] != NULL
            || (rc[0] >= '6' && rc[0] <= '9')) {
            gp_rf_result(t, GP_RF_FAILED, "respCode %s", rc);
            return;
        }

        gp_rf_result(t, GP_RF_RETRY, "respCode %s: asking", rc);
        return;
    }

    /* the query: respCode is the query's, origRespCode the refund's */
    if (strcmp(rc, "34") == 0) {
        /*
         * no such transaction: sent again with the same orderId and txnTime,
         * which UnionPay takes at most once (a repeat is respCode 12)
         */
        gp_rf_result(t, GP_RF_AGAIN, "query: respCode 34, no such refund");
        return;
    }

    if (strcmp(rc, "00") != 0) {
        gp_rf_result(t, GP_RF_RETRY, "query: respCode %s", rc);
        return;
    }

    orig = gp_rf_pair(p, np, "origRespCode");
    if (orig == NULL || orig->vlen != 2) {
        gp_rf_result(t, GP_RF_RETRY, "query: no origRespCode");
        return;
    }

    memcpy(rc, orig->v, 2);

    if (strcmp(rc, "00") == 0) {
        amt = gp_rf_pair(p, np, "txnAmt");
        if (amt == NULL || gp_parse_i64(amt->v, amt->vlen, &fen) != 0) {
            gp_rf_result(t, GP_RF_RETRY, "query: no usable txnAmt");
            return;
        }

        gp_rf_result(t, GP_RF_SUCCEEDED, "query: origRespCode 00");
        t->res.amount = fen;

        qid = gp_rf_pair(p, np, "queryId");
        if (qid != NULL && qid->vlen < sizeof(t->res.refund_no)) {
            memcpy(t->res.refund_no, qid->v, qid->vlen);
            t->res.refund_no[qid->vlen] = '\0';
        }

        return;
    }

    if (strcmp(rc, "03") == 0 || strcmp(rc, "04") == 0 || strcmp(rc, "05") == 0)
    {
        gp_rf_result(t, GP_RF_WAIT, "query: origRespCode %s", rc);
        return;
    }

    gp_rf_result(t, GP_RF_FAILED, "origRespCode %s", rc);
}


/* ---- helpers ----------------------------------------------------------- */

static void
gp_rf_result(gp_refund_try_t *t, gp_refund_outcome_t outcome, const char *fmt,
             ...)
{
    va_list ap;
    size_t  i;

    t->res.outcome = outcome;
    t->res.amount = -1;
    t->res.refund_no[0] = '\0';
    t->res.unsent = 0;

    va_start(ap, fmt);
    vsnprintf(t->res.error, sizeof(t->res.error), fmt, ap);
    va_end(ap);

    /* what a channel said goes to logs and to the refund: printable only */
    for (i = 0; t->res.error[i] != '\0'; i++) {
        if ((unsigned char) t->res.error[i] < 0x20 || t->res.error[i] == 0x7f) {
            t->res.error[i] = '?';
        }
    }
}


/*
 * a transfer that brought no answer: RETRY (unsent when the request cannot
 * have reached the channel); 0 when there is an answer to read
 */
static int
gp_rf_transport(gp_refund_try_t *t)
{
    if (t->result != CURLE_OK) {
        gp_rf_result(t, GP_RF_RETRY, "%.180s",
                     t->errbuf[0] != '\0' ? t->errbuf
                                          : curl_easy_strerror(t->result));
        t->res.unsent = t->result == CURLE_COULDNT_CONNECT
                        || t->result == CURLE_COULDNT_RESOLVE_HOST
                        || t->result == CURLE_COULDNT_RESOLVE_PROXY;
        return -1;
    }

    if (t->too_big) {
        gp_rf_result(t, GP_RF_RETRY, "answer larger than %d bytes",
                     GP_REFUND_BODY_MAX);
        return -1;
    }

    if (t->status >= 500 || t->status == 429 || t->status < 200) {
        gp_rf_result(t, GP_RF_RETRY, "HTTP %ld", t->status);
        return -1;
    }

    return 0;
}


static int
gp_rf_sign(EVP_PKEY *key, const void *msg, size_t n, char **b64)
{
    unsigned char sig[GP_SIG_MAX];
    size_t        siglen;

    *b64 = NULL;

    if (gp_pkey_sign(key, GP_SIG_RSA_SHA256, msg, n, sig, &siglen) != 0) {
        return -1;
    }

    *b64 = malloc(4 * ((siglen + 2) / 3) + 1);
    if (*b64 == NULL) {
        return -1;
    }

    gp_base64_encode(sig, siglen, *b64);
    return 0;
}


/* 1: verifies; 0: does not (or not base64) */
static int
gp_rf_verify(EVP_PKEY *key, const void *msg, size_t n, const char *b64,
             size_t b64len)
{
    unsigned char sig[GP_SIG_MAX];
    size_t        siglen;

    if (b64len == 0 || b64len > 4 * (GP_SIG_MAX / 3)
        || gp_base64_decode(b64, b64len, sig, &siglen) != 0)
    {
        return 0;
    }

    return gp_pkey_verify(key, GP_SIG_RSA_SHA256, msg, n, sig, siglen) == 1;
}


/* "k=v&..." with every value percent-encoded; malloc'd */
static char *
gp_rf_form(const char *const *kv, size_t n)
{
    char  *out, *e, *p;
    size_t i, len, cap, elen;

    cap = 1;
    for (i = 0; i < n; i += 2) {
        cap += strlen(kv[i]) + 2 + 3 * strlen(kv[i + 1]);
    }

    out = malloc(cap);
    if (out == NULL) {
        return NULL;
    }

    len = 0;

    for (i = 0; i < n; i += 2) {
        e = gp_url_encode(kv[i + 1], strlen(kv[i + 1]), &elen);
        if (e == NULL) {
            free(out);
            return NULL;
        }

        p = out + len;
        len += (size_t) sprintf(p, "%s%s=", i > 0 ? "&" : "", kv[i]);
        memcpy(out + len, e, elen);
        len += elen;
        free(e);
    }

    out[len] = '\0';
    return out;
}


/* the length of s cut to at most max bytes at a UTF-8 character boundary */
static size_t
gp_rf_cut(const char *s, size_t max)
{
    size_t n;

    n = strlen(s);
    if (n <= max) {
        return n;
    }

    n = max;
    while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80) {
        n--;
    }

    return n;
}


static size_t
gp_rf_ws(const char *s, size_t n, size_t i)
{
    while (i < n
           && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) {
        i++;
    }

    return i;
}


/* the end of the JSON string starting at s[i] == '"', past its quote; 0 */
static size_t
gp_rf_skip_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\') {
            i++;
        } else if (s[i] == '"') {
            return i + 1;
        }
    }

    return 0;
}


/* the end of the JSON value starting at s[i]; 0 when malformed */
static size_t
gp_rf_skip_value(const char *s, size_t n, size_t i)
{
    size_t depth;

    if (i >= n) {
        return 0;
    }

    if (s[i] == '"') {
        return gp_rf_skip_string(s, n, i);
    }

    if (s[i] != '{' && s[i] != '[') {
        while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' '
               && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
        {
            i++;
        }
        return i;
    }

    depth = 0;

    while (i < n) {
        if (s[i] == '"') {
            i = gp_rf_skip_string(s, n, i);
            if (i == 0) {
                return 0;
            }
            continue;
        }

        if (s[i] == '{' || s[i] == '[') {
            depth++;
        } else if (s[i] == '}' || s[i] == ']') {
            if (--depth == 0) {
                return i + 1;
            }
        }

        i++;
    }

    return 0;
}


/*
 * the raw text of the value of the top-level member name of the JSON object
 * s (the text a channel signed, byte for byte); 0, or -1 (not there, or s is
 * not an object)
 */
static int
gp_rf_json_member(const char *s, size_t n, const char *name, const char **v,
                  size_t *vlen)
{
    size_t i, kstart, kend, vstart, vend, len;

    len = strlen(name);
    i = gp_rf_ws(s, n, 0);

    if (i >= n || s[i] != '{') {
        return -1;
    }

    i = gp_rf_ws(s, n, i + 1);

    while (i < n && s[i] == '"') {
        kstart = i + 1;
        kend = gp_rf_skip_string(s, n, i);
        if (kend == 0) {
            return -1;
        }

        i = gp_rf_ws(s, n, kend);
        if (i >= n || s[i] != ':') {
            return -1;
        }

        vstart = gp_rf_ws(s, n, i + 1);
        vend = gp_rf_skip_value(s, n, vstart);
        if (vend == 0 || vend == vstart) {
            return -1;
        }

        if (kend - 1 - kstart == len && memcmp(s + kstart, name, len) == 0) {
            *v = s + vstart;
            *vlen = vend - vstart;
            return 0;
        }

        i = gp_rf_ws(s, n, vend);
        if (i >= n || s[i] != ',') {
            break;
        }

        i = gp_rf_ws(s, n, i + 1);
    }

    return -1;
}


static int
gp_rf_set_str(char *dst, size_t dstlen, const char *src)
{
    size_t n;

    n = strlen(src);
    if (n >= dstlen) {
        dst[0] = '\0';
        return -1;
    }

    memcpy(dst, src, n + 1);
    return 0;
}
