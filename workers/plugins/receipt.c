/*
 * receipt: issues the fiscal electronic receipt (财政电子票据) of a paid notice;
 * first form: numbered, documented and stored, not yet sealed or chained in the
 * ledger.
 *
 * For a notice.paid event, exactly once per notice however often it is
 * delivered:
 *
 *   1. HGETALL the notice (event field notice_key). Missing: GP_FAILED. Already
 *      has a receipt_number: make sure its {gpr}:ridx entry exists, GP_DONE.
 *   2. Build the document (MOF field names, API.md) from the notice, the
 *      registry and the plugin configuration, so a notice that cannot make a
 *      receipt wastes no number.
 *   3. EInvoiceCode = region, category, kind, yy (of paid_at in +08:00);
 *      EInvoiceNumber = INCR {gpr}:rseq:<EInvoiceCode>, 10 digits; RandomNumber
 *      = 6 of [0-9a-z], unbiased.
 *   4. One EVAL stores the receipt on the notice and the canonical document at
 *      {gpN}:rcpt:<seq>, unless the notice has a receipt already (another
 *      worker won: the number taken in 3 is a gap, logged as a warning).
 *   5. SET {gpr}:ridx:<code>:<number> to the payment code (idempotent, another
 *      slot).
 *
 * Redis errors are GP_RETRY: every step is safe to repeat.
 *
 * Configuration: {"region": "33", "category": "01", "kind": "01",
 *                 "issuer_code": "...", "issuer_name": "..."}
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gp_crypto.h"
#include "gp_plugin.h"
#include "gp_util.h"


#define GP_RECEIPT_NAME       "非税收入统一票据"
#define GP_RECEIPT_CHECK_LEN  6
#define GP_RECEIPT_NUMBER_MAX 9999999999LL
#define GP_RECEIPT_QTY_MAX    1000000


typedef struct {
    gp_plugin_env_t *env;
    char             prefix[7]; /* region, category, kind */
    char            *issuer_code;
    char            *issuer_name;
} gp_receipt_t;


/* one notice's receipt in the making */
typedef struct {
    uint32_t    shard;
    const char *seq; /* of the notice key, digits */
    size_t      seq_len;
    char        code[9];    /* EInvoiceCode */
    char        number[11]; /* EInvoiceNumber */
    char        check[GP_RECEIPT_CHECK_LEN + 1];
    char        payment_code[21];
} gp_receipt_ctx_t;


/*
 * KEYS[1] notice, KEYS[2] receipt document, KEYS[3] the shard's settled
 * stream; ARGV: receipt_code, receipt_number, receipt_check, receipt_at,
 * document, payment_code.
 * → {"ISSUED"} | {"EXISTS", receipt_code, receipt_number} | {"NONE"}
 * Issuing appends the receipt.issued event (for the notify plugin) in the
 * same step, so each receipt has exactly one event.
 */
static const char gp_receipt_store_lua[] =
    "local cur = redis.call('HMGET', KEYS[1], 'receipt_code', "
    "'receipt_number')\n"
    "if cur[2] then return {'EXISTS', cur[1], cur[2]} end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {'NONE'} end\n"
    "redis.call('HSET', KEYS[1], 'receipt_code', ARGV[1], 'receipt_number', "
    "ARGV[2],\n"
    "           'receipt_check', ARGV[3], 'receipt_at', ARGV[4])\n"
    "redis.call('SET', KEYS[2], ARGV[5])\n"
    "local n = redis.call('HMGET', KEYS[1], 'unit', 'item_code', 'amount')\n"
    "redis.call('XADD', KEYS[3], '*', 'type', 'receipt.issued', "
    "'payment_code', ARGV[6],\n"
    "           'unit', n[1], 'item_code', n[2], 'amount', n[3], "
    "'receipt_code', ARGV[1],\n"
    "           'receipt_number', ARGV[2], 'receipt_check', ARGV[3], "
    "'issued_at', ARGV[4],\n"
    "           'notice_key', KEYS[1])\n"
    "return {'ISSUED'}\n";


static const char *gp_receipt_fields[] = { "region",      "category",    "kind",
                                           "issuer_code", "issuer_name", NULL };


static int         gp_receipt_init(const json_t *conf, gp_plugin_env_t *env,
                                   void **state, char *err, size_t errlen);
static gp_result_t gp_receipt_handle(void *state, const gp_event_t *ev,
                                     char *msg, size_t msglen);
static void        gp_receipt_shutdown(void *state);
static int gp_receipt_digits2(const json_t *conf, const char *name, char *out,
                              char *err, size_t errlen);
static int gp_receipt_text(const json_t *conf, const char *name, size_t max,
                           char **out, char *err, size_t errlen);
static int gp_receipt_notice_key(const gp_event_t *ev, const char *key,
                                 size_t len, gp_receipt_ctx_t *rc);
static gp_result_t gp_receipt_document(gp_receipt_t *r, const gp_event_t *ev,
                                       redisReply *notice, gp_receipt_ctx_t *rc,
                                       json_t **out, char *msg, size_t msglen);
static json_t     *gp_receipt_items(gp_receipt_t *r, redisReply *notice,
                                    int64_t amount, char *msg, size_t msglen);
static json_t *gp_receipt_item(gp_receipt_t *r, const char *code, size_t len,
                               int64_t qty, int64_t price, char *msg,
                               size_t msglen);
static gp_result_t gp_receipt_number(gp_receipt_t *r, gp_receipt_ctx_t *rc,
                                     char *msg, size_t msglen);
static int         gp_receipt_check_code(char out[GP_RECEIPT_CHECK_LEN + 1]);
static void gp_receipt_issue_time(int64_t now, char date[9], char hms[9]);
static gp_result_t gp_receipt_store(gp_receipt_t *r, const gp_event_t *ev,
                                    const char       *notice_key,
                                    gp_receipt_ctx_t *rc, const char *doc,
                                    int64_t now, char *msg, size_t msglen);
static gp_result_t gp_receipt_index(gp_receipt_t *r, const char *code,
                                    const char *number,
                                    const char *payment_code, char *msg,
                                    size_t msglen);
static gp_result_t gp_receipt_redis_error(gp_receipt_t *r, const char *what,
                                          redisReply *reply, char *msg,
                                          size_t msglen);
static const char *gp_hash_get(redisReply *h, const char *field, size_t *len);
static int         gp_parse_i64(const char *s, size_t n, int64_t *v);
static json_t     *gp_yuan(int64_t fen);


const gp_plugin_t gp_plugin_receipt = { "receipt", gp_receipt_init,
                                        gp_receipt_handle,
                                        gp_receipt_shutdown };


static int
gp_receipt_init(const json_t *conf, gp_plugin_env_t *env, void **state,
                char *err, size_t errlen)
{
    gp_receipt_t *r;
    const char   *key, **f;
    json_t       *value;

    json_object_foreach((json_t *) conf, key, value)
    {
        for (f = gp_receipt_fields; *f != NULL; f++) {
            if (strcmp(*f, key) == 0) {
                break;
            }
        }

        if (*f == NULL) {
            snprintf(err, errlen, "unknown field \"%s\"", key);
            return -1;
        }
    }

    r = calloc(1, sizeof(gp_receipt_t));
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    r->env = env;

    if (gp_receipt_digits2(conf, "region", r->prefix, err, errlen) != 0
        || gp_receipt_digits2(conf, "category", r->prefix + 2, err, errlen) != 0
        || gp_receipt_digits2(conf, "kind", r->prefix + 4, err, errlen) != 0
        || gp_receipt_text(conf, "issuer_code", 64, &r->issuer_code, err,
                           errlen)
               != 0
        || gp_receipt_text(conf, "issuer_name", 200, &r->issuer_name, err,
                           errlen)
               != 0)
    {
        gp_receipt_shutdown(r);
        return -1;
    }

    *state = r;
    return 0;
}


static void
gp_receipt_shutdown(void *state)
{
    gp_receipt_t *r;

    r = state;

    if (r == NULL) {
        return;
    }

    free(r->issuer_code);
    free(r->issuer_name);
    free(r);
}


static gp_result_t
gp_receipt_handle(void *state, const gp_event_t *ev, char *msg, size_t msglen)
{
    gp_receipt_t    *r;
    gp_receipt_ctx_t rc;
    redisReply      *notice;
    json_t          *doc;
    gp_result_t      res;
    const char      *type, *key, *code, *rcode, *num;
    size_t           type_len, key_len, code_len;
    char            *doc_str, nkey[128], date[9], hms[9];
    int64_t          now;

    r = state;
    notice = NULL;
    doc = NULL;
    doc_str = NULL;
    memset(&rc, 0, sizeof(rc));

    type = gp_event_get(ev, "type", &type_len);
    if (type == NULL || type_len != 11 || memcmp(type, "notice.paid", 11) != 0)
    {
        snprintf(msg, msglen, "ignored: not a notice.paid event");
        return GP_DONE;
    }

    code = gp_event_get(ev, "payment_code", &code_len);
    if (code == NULL || code_len != 20 || strspn(code, "0123456789") != 20) {
        snprintf(msg, msglen, "the event has no valid payment_code");
        return GP_FAILED;
    }

    memcpy(rc.payment_code, code, 21);

    key = gp_event_get(ev, "notice_key", &key_len);
    if (key == NULL || gp_receipt_notice_key(ev, key, key_len, &rc) != 0
        || key_len >= sizeof(nkey))
    {
        snprintf(msg, msglen, "the event has no valid notice_key for shard %u",
                 ev->shard);
        return GP_FAILED;
    }

    memcpy(nkey, key, key_len + 1);

    notice = redisCommand(r->env->redis, "HGETALL %s", nkey);
    if (notice == NULL || notice->type != REDIS_REPLY_ARRAY) {
        return gp_receipt_redis_error(r, "HGETALL notice", notice, msg, msglen);
    }

    if (notice->elements == 0) {
        snprintf(msg, msglen, "notice not found");
        res = GP_FAILED;
        goto done;
    }

    /* delivered again after the receipt was stored: step 5 may not have run */
    num = gp_hash_get(notice, "receipt_number", NULL);
    if (num != NULL) {
        rcode = gp_hash_get(notice, "receipt_code", NULL);
        if (rcode == NULL) {
            snprintf(msg, msglen,
                     "the notice has receipt_number but no receipt_code");
            res = GP_FAILED;
            goto done;
        }

        res = gp_receipt_index(r, rcode, num, rc.payment_code, msg, msglen);
        if (res == GP_DONE) {
            snprintf(msg, msglen, "receipt already issued: %s/%s", rcode, num);
        }
        goto done;
    }

    res = gp_receipt_document(r, ev, notice, &rc, &doc, msg, msglen);
    if (res != GP_DONE) {
        goto done;
    }

    res = gp_receipt_number(r, &rc, msg, msglen);
    if (res != GP_DONE) {
        goto done;
    }

    now = (int64_t) time(NULL);
    gp_receipt_issue_time(now, date, hms);

    if (json_object_set_new(doc, "EInvoiceCode", json_string(rc.code)) != 0
        || json_object_set_new(doc, "EInvoiceNumber", json_string(rc.number))
               != 0
        || json_object_set_new(doc, "RandomNumber", json_string(rc.check)) != 0
        || json_object_set_new(doc, "IssueDate", json_string(date)) != 0
        || json_object_set_new(doc, "IssueTime", json_string(hms)) != 0)
    {
        snprintf(msg, msglen, "out of memory building the document");
        res = GP_RETRY;
        goto done;
    }

    /* canonical: sorted keys, compact, UTF-8 as is */
    doc_str = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
    if (doc_str == NULL) {
        snprintf(msg, msglen, "json_dumps() of the document failed");
        res = GP_RETRY;
        goto done;
    }

    res = gp_receipt_store(r, ev, nkey, &rc, doc_str, now, msg, msglen);

done:

    free(doc_str);
    json_decref(doc);

    if (notice != NULL) {
        freeReplyObject(notice);
    }

    return res;
}


static int
gp_receipt_digits2(const json_t *conf, const char *name, char *out, char *err,
                   size_t errlen)
{
    json_t     *v;
    const char *s;

    v = json_object_get(conf, name);

    if (v == NULL || !json_is_string(v) || json_string_length(v) != 2) {
        snprintf(err, errlen, "\"%s\" must be a string of 2 digits", name);
        return -1;
    }

    s = json_string_value(v);

    if (s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9') {
        snprintf(err, errlen, "\"%s\" must be a string of 2 digits", name);
        return -1;
    }

    out[0] = s[0];
    out[1] = s[1];
    out[2] = '\0';

    return 0;
}


static int
gp_receipt_text(const json_t *conf, const char *name, size_t max, char **out,
                char *err, size_t errlen)
{
    json_t *v;
    size_t  n;

    v = json_object_get(conf, name);

    if (v == NULL || !json_is_string(v)) {
        snprintf(err, errlen, "\"%s\" must be a string", name);
        return -1;
    }

    n = json_string_length(v);

    if (n == 0 || n > max || strlen(json_string_value(v)) != n) {
        snprintf(err, errlen, "\"%s\" must be 1 to %zu bytes of text", name,
                 max);
        return -1;
    }

    *out = strdup(json_string_value(v));
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    return 0;
}


/* "{gpN}:n:<seq>" with N the event's shard */
static int
gp_receipt_notice_key(const gp_event_t *ev, const char *key, size_t len,
                      gp_receipt_ctx_t *rc)
{
    char   prefix[32];
    int    n;
    size_t i;

    n = snprintf(prefix, sizeof(prefix), "{gp%u}:n:", ev->shard);

    if (n < 0 || len <= (size_t) n || len - (size_t) n > 19
        || memcmp(key, prefix, (size_t) n) != 0)
    {
        return -1;
    }

    for (i = (size_t) n; i < len; i++) {
        if (key[i] < '0' || key[i] > '9') {
            return -1;
        }
    }

    rc->shard = ev->shard;
    rc->seq = key + n;
    rc->seq_len = len - (size_t) n;

    return 0;
}


/* the document without its number, check code and issue time */
static gp_result_t
gp_receipt_document(gp_receipt_t *r, const gp_event_t *ev, redisReply *notice,
                    gp_receipt_ctx_t *rc, json_t **out, char *msg,
                    size_t msglen)
{
    const char *status, *s, *payer_type, *payer_id, *payer_name, *channel,
        *remark;
    size_t   len, id_len, name_len, channel_len, remark_len;
    int64_t  paid_at, amount;
    unsigned yy;
    json_t  *doc, *items;

    status = gp_hash_get(notice, "status", NULL);
    if (status == NULL
        || (strcmp(status, "UNPAID") == 0 || strcmp(status, "CANCELLED") == 0))
    {
        snprintf(msg, msglen, "the notice is not paid (status %.16s)",
                 status != NULL ? status : "missing");
        return GP_FAILED;
    }

    /* the code's division and year are the notice's (docs/internals.md) */
    s = gp_hash_get(notice, "division", &len);
    if (s != NULL && (len != 6 || memcmp(s, rc->payment_code, 6) != 0)) {
        snprintf(msg, msglen,
                 "the payment code does not match the notice's division");
        return GP_FAILED;
    }

    s = gp_hash_get(notice, "yy", &len);
    if (s != NULL && (len != 2 || memcmp(s, rc->payment_code + 6, 2) != 0)) {
        snprintf(msg, msglen,
                 "the payment code does not match the notice's year");
        return GP_FAILED;
    }

    s = gp_hash_get(notice, "paid_at", &len);
    if (s == NULL || gp_parse_i64(s, len, &paid_at) != 0 || paid_at <= 0) {
        snprintf(msg, msglen, "the notice has no valid paid_at");
        return GP_FAILED;
    }

    s = gp_hash_get(notice, "amount", &len);
    if (s == NULL || gp_parse_i64(s, len, &amount) != 0 || amount < 1
        || amount > GP_FEN_MAX)
    {
        snprintf(msg, msglen, "the notice has no valid amount");
        return GP_FAILED;
    }

    payer_type = gp_hash_get(notice, "payer_type", NULL);
    payer_id = gp_hash_get(notice, "payer_id", &id_len);
    payer_name = gp_hash_get(notice, "payer_name", &name_len);

    if (payer_type == NULL
        || (strcmp(payer_type, "person") != 0
            && strcmp(payer_type, "org") != 0))
    {
        snprintf(msg, msglen, "the notice has no valid payer_type");
        return GP_FAILED;
    }

    if (payer_id == NULL || id_len == 0 || payer_name == NULL || name_len == 0
        || !gp_utf8_valid(payer_id, id_len, NULL)
        || !gp_utf8_valid(payer_name, name_len, NULL))
    {
        /* never the values themselves: they are personal data */
        snprintf(msg, msglen, "the notice has no valid payer_id or payer_name");
        return GP_FAILED;
    }

    channel = gp_hash_get(notice, "channel", &channel_len);
    if (channel == NULL) {
        channel = gp_event_get(ev, "channel", &channel_len);
    }

    if (channel == NULL || channel_len == 0
        || !gp_utf8_valid(channel, channel_len, NULL))
    {
        snprintf(msg, msglen, "neither notice nor event has a valid channel");
        return GP_FAILED;
    }

    remark = gp_hash_get(notice, "remark", &remark_len);
    if (remark == NULL) {
        remark = "";
        remark_len = 0;
    }

    if (!gp_utf8_valid(remark, remark_len, NULL)) {
        snprintf(msg, msglen, "the notice remark is not UTF-8");
        return GP_FAILED;
    }

    yy = gp_year2(paid_at);
    snprintf(rc->code, sizeof(rc->code), "%s%02u", r->prefix, yy % 100);

    items = gp_receipt_items(r, notice, amount, msg, msglen);
    if (items == NULL) {
        return GP_FAILED;
    }

    doc = json_object();
    if (doc == NULL) {
        json_decref(items);
        snprintf(msg, msglen, "out of memory building the document");
        return GP_RETRY;
    }

    /* json_object_set_new() takes its value, and fails on a NULL one */
    if (json_object_set_new(doc, "Items", items) != 0
        || json_object_set_new(doc, "EInvoiceName",
                               json_string(GP_RECEIPT_NAME))
               != 0
        || json_object_set_new(doc, "TotalAmount", gp_yuan(amount)) != 0
        || json_object_set_new(doc, "InvoicingPartyCode",
                               json_string(r->issuer_code))
               != 0
        || json_object_set_new(doc, "InvoicingPartyName",
                               json_string(r->issuer_name))
               != 0
        || json_object_set_new(doc, "PayerPartyType",
                               json_string(payer_type[0] == 'p' ? "1" : "2"))
               != 0
        || json_object_set_new(doc, "PayerPartyCode",
                               json_stringn(payer_id, id_len))
               != 0
        || json_object_set_new(doc, "PayerPartyName",
                               json_stringn(payer_name, name_len))
               != 0
        || json_object_set_new(doc, "BizCode", json_string(rc->payment_code))
               != 0
        || json_object_set_new(doc, "PayMode",
                               json_stringn(channel, channel_len))
               != 0
        || json_object_set_new(doc, "Remark", json_stringn(remark, remark_len))
               != 0)
    {
        json_decref(doc);
        snprintf(msg, msglen, "out of memory building the document");
        return GP_RETRY;
    }

    *out = doc;
    return GP_DONE;
}


/*
 * Items[] from the notice's lines ([{"item_code","quantity","unit_price"}],
 * compact JSON) if it has some, else one line of item_code for the whole
 * amount. The lines must add up to the amount. NULL with msg on failure.
 */
static json_t *
gp_receipt_items(gp_receipt_t *r, redisReply *notice, int64_t amount, char *msg,
                 size_t msglen)
{
    const char  *lines_s, *code;
    size_t       lines_len, code_len, i;
    json_t      *lines, *line, *v, *items, *item;
    json_error_t jerr;
    int64_t      qty, price, sum;

    items = json_array();
    if (items == NULL) {
        snprintf(msg, msglen, "out of memory building the items");
        return NULL;
    }

    lines_s = gp_hash_get(notice, "lines", &lines_len);

    if (lines_s == NULL || lines_len == 0) {
        code = gp_hash_get(notice, "item_code", &code_len);
        if (code == NULL) {
            snprintf(msg, msglen, "the notice has no item_code");
            goto fail;
        }

        item = gp_receipt_item(r, code, code_len, 1, amount, msg, msglen);
        if (item == NULL || json_array_append_new(items, item) != 0) {
            goto fail;
        }

        return items;
    }

    lines = json_loadb(lines_s, lines_len, JSON_REJECT_DUPLICATES, &jerr);
    if (lines == NULL || !json_is_array(lines) || json_array_size(lines) == 0) {
        json_decref(lines);
        snprintf(msg, msglen, "the notice lines are not a JSON array of lines");
        goto fail;
    }

    sum = 0;

    json_array_foreach(lines, i, line)
    {
        v = json_object_get(line, "item_code");
        if (v == NULL || !json_is_string(v)) {
            snprintf(msg, msglen, "notice line %zu has no item_code", i + 1);
            json_decref(lines);
            goto fail;
        }

        code = json_string_value(v);
        code_len = json_string_length(v);

        v = json_object_get(line, "quantity");
        qty = (v != NULL && json_is_integer(v)) ? json_integer_value(v) : 0;
        v = json_object_get(line, "unit_price");
        price = (v != NULL && json_is_integer(v)) ? json_integer_value(v) : 0;

        if (qty < 1 || qty > GP_RECEIPT_QTY_MAX || price < 1
            || price > GP_FEN_MAX) {
            snprintf(msg, msglen,
                     "notice line %zu has no valid quantity or unit_price",
                     i + 1);
            json_decref(lines);
            goto fail;
        }

        sum += qty * price; /* at most 10^6 * 10^10 per line: no overflow */
        if (sum > GP_FEN_MAX) {
            break;
        }

        item = gp_receipt_item(r, code, code_len, qty, price, msg, msglen);
        if (item == NULL || json_array_append_new(items, item) != 0) {
            json_decref(lines);
            goto fail;
        }
    }

    json_decref(lines);

    if (sum != amount) {
        snprintf(msg, msglen, "the notice lines do not add up to its amount");
        goto fail;
    }

    return items;

fail:

    if (msg[0] == '\0') {
        snprintf(msg, msglen, "out of memory building the items");
    }

    json_decref(items);
    return NULL;
}


static json_t *
gp_receipt_item(gp_receipt_t *r, const char *code, size_t code_len,
                int64_t quantity, int64_t price, char *msg, size_t msglen)
{
    const gp_item_t *it;
    json_t          *item;

    it = gp_registry_item(r->env->registry, code, code_len);
    if (it == NULL) {
        snprintf(msg, msglen, "item %.*s is not in the registry",
                 (int) (code_len > 32 ? 32 : code_len), code);
        return NULL;
    }

    item = json_object();
    if (item == NULL) {
        snprintf(msg, msglen, "out of memory building the items");
        return NULL;
    }

    if (json_object_set_new(item, "ItemCode", json_string(it->code)) != 0
        || json_object_set_new(item, "ItemName", json_string(it->name)) != 0
        || json_object_set_new(item, "ItemQuantity", json_integer(quantity))
               != 0
        || json_object_set_new(item, "ItemStd", gp_yuan(price)) != 0
        || json_object_set_new(item, "ItemAmount", gp_yuan(quantity * price))
               != 0)
    {
        json_decref(item);
        snprintf(msg, msglen, "out of memory building the items");
        return NULL;
    }

    return item;
}


/* INCR {gpr}:rseq:<EInvoiceCode>, and the check code */
static gp_result_t
gp_receipt_number(gp_receipt_t *r, gp_receipt_ctx_t *rc, char *msg,
                  size_t msglen)
{
    redisReply *reply;
    long long   n;

    reply = redisCommand(r->env->redis, "INCR {gpr}:rseq:%s", rc->code);
    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        return gp_receipt_redis_error(r, "INCR receipt sequence", reply, msg,
                                      msglen);
    }

    n = reply->integer;
    freeReplyObject(reply);

    if (n < 1 || n > GP_RECEIPT_NUMBER_MAX) {
        snprintf(msg, msglen, "receipt numbers of code %s are exhausted",
                 rc->code);
        return GP_FAILED;
    }

    snprintf(rc->number, sizeof(rc->number), "%010lld", n);

    if (gp_receipt_check_code(rc->check) != 0) {
        snprintf(msg, msglen, "gp_random_bytes() failed; number %s/%s is a gap",
                 rc->code, rc->number);
        return GP_RETRY;
    }

    return GP_DONE;
}


/*
 * 6 of [0-9a-z], uniform: bytes >= 252 (= 7 * 36) are dropped, so no modulo
 * bias
 */
static int
gp_receipt_check_code(char out[GP_RECEIPT_CHECK_LEN + 1])
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    unsigned char     buf[32];
    size_t            i, n;

    n = 0;

    while (n < GP_RECEIPT_CHECK_LEN) {
        if (gp_random_bytes(buf, sizeof(buf)) != 0) {
            return -1;
        }

        for (i = 0; i < sizeof(buf) && n < GP_RECEIPT_CHECK_LEN; i++) {
            if (buf[i] < 252) {
                out[n++] = alphabet[buf[i] % 36];
            }
        }
    }

    out[n] = '\0';
    return 0;
}


/* IssueDate "20261231" and IssueTime "23:59:59" of now, in +08:00 */
static void
gp_receipt_issue_time(int64_t now, char date[9], char hms[9])
{
    char t[26];

    gp_time_rfc3339(now, t); /* 2026-12-31T23:59:59+08:00 */

    memcpy(date, t, 4);
    memcpy(date + 4, t + 5, 2);
    memcpy(date + 6, t + 8, 2);
    date[8] = '\0';

    memcpy(hms, t + 11, 8);
    hms[8] = '\0';
}


static gp_result_t
gp_receipt_store(gp_receipt_t *r, const gp_event_t *ev, const char *notice_key,
                 gp_receipt_ctx_t *rc, const char *doc, int64_t now, char *msg,
                 size_t msglen)
{
    redisReply *reply, *st;
    gp_result_t res;
    char        rkey[64], skey[32], at[24];

    snprintf(rkey, sizeof(rkey), "{gp%u}:rcpt:%.*s", rc->shard,
             (int) rc->seq_len, rc->seq);
    snprintf(skey, sizeof(skey), "{gp%u}:settled", rc->shard);
    snprintf(at, sizeof(at), "%lld", (long long) now);

    reply = redisCommand(r->env->redis, "EVAL %s 3 %s %s %s %s %s %s %s %s %s",
                         gp_receipt_store_lua, notice_key, rkey, skey,
                         rc->code, rc->number, rc->check, at, doc,
                         rc->payment_code);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        res =
            gp_receipt_redis_error(r, "EVAL store receipt", reply, msg, msglen);
        r->env->log(r->env, GP_LOG_WARN, ev,
                    "receipt number %s/%s taken, storing it "
                    "failed: a gap unless the store went through",
                    rc->code, rc->number);
        return res;
    }

    st = reply->element[0];

    if (strcmp(st->str, "NONE") == 0) {
        freeReplyObject(reply);
        r->env->log(r->env, GP_LOG_WARN, ev,
                    "receipt number %s/%s is a gap: the notice "
                    "disappeared",
                    rc->code, rc->number);
        snprintf(msg, msglen, "notice not found");
        return GP_FAILED;
    }

    if (strcmp(st->str, "EXISTS") == 0) {
        if (reply->elements != 3
            || reply->element[1]->type != REDIS_REPLY_STRING
            || reply->element[2]->type != REDIS_REPLY_STRING)
        {
            freeReplyObject(reply);
            snprintf(msg, msglen,
                     "the notice has receipt_number but no receipt_code");
            return GP_FAILED;
        }

        /* another worker issued it first; gapless numbering comes later */
        r->env->log(r->env, GP_LOG_WARN, ev,
                    "receipt number %s/%s is a gap: the notice "
                    "already has receipt %s/%s",
                    rc->code, rc->number, reply->element[1]->str,
                    reply->element[2]->str);

        res =
            gp_receipt_index(r, reply->element[1]->str, reply->element[2]->str,
                             rc->payment_code, msg, msglen);
        if (res == GP_DONE) {
            snprintf(msg, msglen, "receipt already issued: %s/%s",
                     reply->element[1]->str, reply->element[2]->str);
        }

        freeReplyObject(reply);
        return res;
    }

    if (strcmp(st->str, "ISSUED") != 0) {
        freeReplyObject(reply);
        snprintf(msg, msglen, "the store script answered an unknown status");
        return GP_RETRY;
    }

    freeReplyObject(reply);

    res = gp_receipt_index(r, rc->code, rc->number, rc->payment_code, msg,
                           msglen);
    if (res == GP_DONE) {
        snprintf(msg, msglen, "issued receipt %s/%s", rc->code, rc->number);
    }

    return res;
}


/* SET {gpr}:ridx:<code>:<number> <payment code>: receipt → notice index */
static gp_result_t
gp_receipt_index(gp_receipt_t *r, const char *code, const char *number,
                 const char *payment_code, char *msg, size_t msglen)
{
    redisReply *reply;

    reply = redisCommand(r->env->redis, "SET {gpr}:ridx:%s:%s %s", code, number,
                         payment_code);
    if (reply == NULL || reply->type != REDIS_REPLY_STATUS) {
        return gp_receipt_redis_error(r, "SET receipt index", reply, msg,
                                      msglen);
    }

    freeReplyObject(reply);
    return GP_DONE;
}


/*
 * a Redis failure is worth a retry: the I/O error, or the error reply, goes
 * into msg
 */
static gp_result_t
gp_receipt_redis_error(gp_receipt_t *r, const char *what, redisReply *reply,
                       char *msg, size_t msglen)
{
    if (reply == NULL) {
        snprintf(msg, msglen, "redis %s failed: %s", what,
                 r->env->redis->errstr[0] != '\0' ? r->env->redis->errstr
                                                  : "no reply");
        return GP_RETRY;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        snprintf(msg, msglen, "redis %s failed: %.200s", what, reply->str);
    } else {
        snprintf(msg, msglen, "redis %s: unexpected reply of type %d", what,
                 reply->type);
    }

    freeReplyObject(reply);
    return GP_RETRY;
}


/*
 * the value of field in an HGETALL reply (NUL-terminated by hiredis), or NULL
 */
static const char *
gp_hash_get(redisReply *h, const char *field, size_t *len)
{
    size_t i, n;

    n = strlen(field);

    for (i = 0; i + 1 < h->elements; i += 2) {
        if (h->element[i]->type == REDIS_REPLY_STRING && h->element[i]->len == n
            && memcmp(h->element[i]->str, field, n) == 0
            && h->element[i + 1]->type == REDIS_REPLY_STRING)
        {
            if (len != NULL) {
                *len = h->element[i + 1]->len;
            }
            return h->element[i + 1]->str;
        }
    }

    return NULL;
}


/* a decimal integer of 1 to 18 digits, no sign */
static int
gp_parse_i64(const char *s, size_t n, int64_t *v)
{
    size_t  i;
    int64_t x;

    if (n == 0 || n > 18) {
        return -1;
    }

    x = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        x = x * 10 + (s[i] - '0');
    }

    *v = x;
    return 0;
}


/* "1250.00" as a JSON string */
static json_t *
gp_yuan(int64_t fen)
{
    char buf[32];

    if (gp_fen_to_yuan(fen, buf, sizeof(buf)) < 0) {
        return NULL;
    }

    return json_string(buf);
}
