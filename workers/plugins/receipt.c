/*
 * receipt: issues the fiscal electronic receipt (财政电子票据) of a paid
 * notice, sealed (SM2-with-SM3, or RSA-SHA256) and chained into the ledger,
 * and the red-letter (冲红) receipt of a refunded one. docs/receipts.md is the
 * design; this comment is its summary.
 *
 * Events: notice.paid → a receipt; refund.settled → a red-letter receipt that
 * names the original (RelatedInvoiceCode/Number); others are acknowledged.
 *
 * Single writer. Numbers run per EInvoiceCode without gaps, and each code has
 * one ledger file, <ledger_dir>/<EInvoiceCode>.ledger. Issuing a receipt of a
 * code is serialised by flock(2) on that file: whoever holds it is the only
 * writer of the code, in every worker process of the host (all issuing
 * workers of a code share ledger_dir). The ledger is the numbering: the next
 * number is the ledger's last + 1 and the entry chains on its last hash.
 * Redis is fenced by the chain: the stage script accepts an entry only if
 * Redis's own idea of the code's last number and head hash ({gpr}:rseq,
 * {gpr}:head) is what the entry follows, so a second writer with another copy
 * of the ledger (another host, a restored backup) can never number or chain
 * a receipt in Redis.
 *
 * Issuing one receipt, with the ledger locked (all keys in slot {gpr}):
 *
 *   1. build the document, number it, seal it; entry_hash = SM3(prev ‖
 *      document ‖ seal);
 *   2. STAGE (one script): unless this payment has a receipt already
 *      ({gpr}:biz:<biz>), and if nothing else is staged, and if the entry
 *      follows {gpr}:rseq / {gpr}:head, stores the sealed entry in
 *      {gpr}:stage:<code> and takes the number (rseq). From here the number
 *      is never given up: the staged entry is rolled forward by whoever next
 *      holds the ledger;
 *   3. append the ledger line, fsync;
 *   4. COMMIT (one script): the receipt record {gpr}:r:<code>:<number>, the
 *      payment's {gpr}:biz, the {gpr}:ridx index, the new {gpr}:head; the
 *      stage is deleted.
 *
 * Then, without the lock: the PDF is rendered into the record (field pdf),
 * and one script on the notice's shard ({gpN}, another slot) marks the notice,
 * stores the document at {gpN}:rcpt:<seq> and appends receipt.issued (or
 * receipt.reversed) to the shard's settled stream, once. The stream entry is
 * acknowledged only after that, so a crash anywhere is redelivered: the
 * payment is found in {gpr}:biz and only the remaining steps run.
 *
 * Recovery (roll forward). When STAGE answers that something is staged or
 * that the entry does not follow Redis, the ledger tail and Redis are
 * reconciled with the lock held: a staged entry already in the ledger is
 * committed; one that is not yet there is appended (its hash checked), then
 * committed; anything else (Redis and ledger disagree: lost AOF, a ledger
 * from elsewhere) stops issuing for that code with an error, every retry.
 * A partial last line (a crash inside the write) is cut when the ledger is
 * read. Workers re-read their own pending entries first thing after start,
 * so a restarted worker recovers before it issues anything new.
 *
 * Configuration: {"region": "33", "category": "01", "kind": "01",
 *   "issuer_code": "...", "issuer_name": "...", "algorithm": "sm2" | "rsa",
 *   "key": "<private key PEM>", "key_serial": "...", "ledger_dir": "...",
 *   "verify_url": "<public base URL>", "font": "<.ttf/.ttc>"}, and
 *   worker.json's top-level "pii_key": the payer's name and ID number are
 *   sealed in the notice (SM4-GCM, common/gp_seal.c), and the receipt is the
 *   one document of the worker that carries them in full (PayerPartyName,
 *   PayerPartyCode), so this plugin opens them, and nothing else does. A
 *   sealed value that does not open (another notice's, altered, a key no
 *   longer listed) fails the entry into the dead letters, naming the field
 *   and the key id, never a value.
 *
 * GOV_PAY_RECEIPT_FAULT (tests only): after_stage, mid_append, after_append,
 * after_commit: _exit(137) at that point of issuing.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "gp_crypto.h"
#include "gp_ledger.h"
#include "gp_pkey.h"
#include "gp_plugin.h"
#include "gp_receipt_pdf.h"
#include "gp_seal.h"
#include "gp_util.h"


#define GP_RECEIPT_NAME       "非税收入统一票据"
#define GP_RECEIPT_RED_NAME   "非税收入统一票据（红字）"
#define GP_RECEIPT_CHECK_LEN  6
#define GP_RECEIPT_NUMBER_MAX 9999999999ULL
#define GP_RECEIPT_QTY_MAX    1000000
#define GP_RECEIPT_LEDGERS    8
#define GP_RECEIPT_FONT       "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"

enum {
    GP_FAULT_R_NONE = 0,
    GP_FAULT_R_AFTER_STAGE,
    GP_FAULT_R_MID_APPEND,
    GP_FAULT_R_AFTER_APPEND,
    GP_FAULT_R_AFTER_COMMIT
};


typedef struct {
    gp_plugin_env_t  *env;
    char              prefix[7]; /* region, category, kind */
    char             *issuer_code;
    char             *issuer_name;
    gp_sigalg_t       alg;
    EVP_PKEY         *key;
    char             *key_serial;
    char             *ledger_dir;
    char             *verify_url;
    gp_receipt_pdf_t *pdf;
    int               fault;
    gp_ledger_t       ledgers[GP_RECEIPT_LEDGERS];
    size_t            nledgers;
} gp_receipt_t;


/* one notice's receipt in the making */
typedef struct {
    uint32_t    shard;
    const char *seq; /* of the notice key, digits */
    size_t      seq_len;
    int         red;        /* a red-letter receipt */
    char        code[9];    /* EInvoiceCode */
    char        number[11]; /* EInvoiceNumber */
    char        check[GP_RECEIPT_CHECK_LEN + 1];
    char        payment_code[21];
    char        biz[48]; /* what is receipted: "<payment>" or "<payment>:red" */
    char        related_code[9];
    char        related_number[11];
} gp_receipt_ctx_t;


/* the payer opened for a document: 100 characters of UTF-8 at most */
typedef struct {
    char name[512];
    char id[512];
} gp_receipt_payer_t;


/* a committed receipt, as the steps after the commit need it */
typedef struct {
    char  code[9];
    char  number[11];
    char  check[GP_RECEIPT_CHECK_LEN + 1];
    char  at[24];
    char *doc;
    char *seal;
    int   has_pdf;
} gp_issued_t;


/*
 * KEYS: rseq, head, stage, biz. ARGV: number, prev (hex), hash (hex), biz,
 * doc, seal, check, payment_code, notice_key, kind, at.
 * → {"DONE", "<code>/<number>"} | {"STAGED"} | {"CONFLICT"} | {"OK"}
 */
static const char gp_receipt_stage_lua[] =
    "local b = redis.call('GET', KEYS[4])\n"
    "if b then return {'DONE', b} end\n"
    "if redis.call('EXISTS', KEYS[3]) == 1 then return {'STAGED'} end\n"
    "local last = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "local head = redis.call('GET', KEYS[2]) or "
    "('0 ' .. string.rep('0', 64))\n"
    "if tonumber(ARGV[1]) ~= last + 1 or head ~= (tostring(last) .. ' ' .. "
    "ARGV[2]) then\n"
    "  return {'CONFLICT'}\n"
    "end\n"
    "redis.call('HSET', KEYS[3], 'number', ARGV[1], 'prev', ARGV[2], 'hash', "
    "ARGV[3],\n"
    "  'biz', ARGV[4], 'doc', ARGV[5], 'seal', ARGV[6], 'check', ARGV[7],\n"
    "  'payment_code', ARGV[8], 'notice_key', ARGV[9], 'kind', ARGV[10], "
    "'at', ARGV[11])\n"
    "redis.call('SET', KEYS[1], tostring(tonumber(ARGV[1])))\n"
    "return {'OK'}\n";

/*
 * KEYS: stage, head, record, biz, ridx. ARGV: code, number, hash.
 * → {"OK"} | {"NOSTAGE"} | {"MISMATCH"}
 */
static const char gp_receipt_commit_lua[] =
    "local s = redis.call('HMGET', KEYS[1], 'number', 'hash', 'biz', "
    "'payment_code',\n"
    "  'check', 'doc', 'seal', 'notice_key', 'kind', 'at')\n"
    "if not s[1] then return {'NOSTAGE'} end\n"
    "if tonumber(s[1]) ~= tonumber(ARGV[2]) or s[2] ~= ARGV[3] then "
    "return {'MISMATCH'} end\n"
    "redis.call('HSET', KEYS[3], 'payment_code', s[4], 'check', s[5], 'doc', "
    "s[6],\n"
    "  'seal', s[7], 'hash', s[2], 'notice_key', s[8], 'kind', s[9], 'at', "
    "s[10])\n"
    "redis.call('SET', KEYS[4], ARGV[1] .. '/' .. ARGV[2])\n"
    "redis.call('SET', KEYS[5], s[4])\n"
    "redis.call('SET', KEYS[2], tostring(tonumber(s[1])) .. ' ' .. s[2])\n"
    "redis.call('DEL', KEYS[1])\n"
    "return {'OK'}\n";

/*
 * KEYS: rseq, head, stage. → {rseq or "", head or "", field, value, ...}
 */
static const char gp_receipt_state_lua[] =
    "local r = {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) "
    "or ''}\n"
    "local s = redis.call('HGETALL', KEYS[3])\n"
    "for i = 1, #s do r[#r + 1] = s[i] end\n"
    "return r\n";

/*
 * KEYS: notice, receipt document, the shard's settled stream, the shard's
 * final set ({gpN}:final). ARGV: field prefix ("receipt_" | "red_receipt_"),
 * code, number, check, at, document, payment_code, event type.
 * → {"ISSUED"} | {"EXISTS", code, number} | {"NONE"}
 * The event is appended in the same step, so each receipt has exactly one.
 * The notice becomes final here (paid and receipted: member seq of the final
 * set, score the receipt's time), in the same step, so the retention plugin
 * archives it keep_s after its last receipt; a red-letter receipt moves that
 * time on.
 */
static const char gp_receipt_notice_lua[] =
    "local f = ARGV[1]\n"
    "local cur = redis.call('HMGET', KEYS[1], f .. 'code', f .. 'number')\n"
    "if cur[2] then return {'EXISTS', cur[1], cur[2]} end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {'NONE'} end\n"
    "redis.call('HSET', KEYS[1], f .. 'code', ARGV[2], f .. 'number', "
    "ARGV[3],\n"
    "           f .. 'check', ARGV[4], f .. 'at', ARGV[5])\n"
    "redis.call('SET', KEYS[2], ARGV[6])\n"
    "redis.call('ZADD', KEYS[4], ARGV[5], string.match(KEYS[1], '(%d+)$'))\n"
    "local n = redis.call('HMGET', KEYS[1], 'unit', 'item_code', 'amount')\n"
    "redis.call('XADD', KEYS[3], '*', 'type', ARGV[8], 'payment_code', "
    "ARGV[7],\n"
    "           'unit', n[1], 'item_code', n[2], 'amount', n[3], "
    "'receipt_code', ARGV[2],\n"
    "           'receipt_number', ARGV[3], 'receipt_check', ARGV[4], "
    "'issued_at', ARGV[5],\n"
    "           'notice_key', KEYS[1])\n"
    "return {'ISSUED'}\n";


static const char *gp_receipt_fields[] = {
    "region",      "category",   "kind", "issuer_code",
    "issuer_name", "algorithm",  "key",  "key_serial",
    "ledger_dir",  "verify_url", "font", NULL
};


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
static gp_result_t gp_receipt_build(gp_receipt_t *r, const gp_event_t *ev,
                                    redisReply *notice, gp_receipt_ctx_t *rc,
                                    gp_receipt_payer_t *payer, json_t **out,
                                    char *msg, size_t msglen);
static int         gp_receipt_open(gp_receipt_t *r, redisReply *notice,
                                   const char *field, char *out, size_t outlen,
                                   size_t *n, char *msg, size_t msglen);
static json_t     *gp_receipt_items(gp_receipt_t *r, redisReply *notice,
                                    int64_t amount, int neg, char *msg,
                                    size_t msglen);
static json_t *gp_receipt_item(gp_receipt_t *r, const char *code, size_t len,
                               int64_t qty, int64_t price, int neg, char *msg,
                               size_t msglen);
static int     gp_receipt_check_code(char out[GP_RECEIPT_CHECK_LEN + 1]);
static void    gp_receipt_issue_time(int64_t now, char date[9], char hms[9]);
static gp_ledger_t *gp_receipt_ledger(gp_receipt_t *r, const char *code,
                                      char *msg, size_t msglen);
static gp_result_t  gp_receipt_issue(gp_receipt_t *r, const gp_event_t *ev,
                                     const char *nkey, gp_receipt_ctx_t *rc,
                                     json_t *doc, gp_ledger_t *l,
                                     gp_issued_t *out, char *msg, size_t msglen);
static gp_result_t  gp_receipt_reconcile(gp_receipt_t *r, gp_ledger_t *l,
                                         char *msg, size_t msglen);
static gp_result_t  gp_receipt_commit(gp_receipt_t *r, gp_ledger_t *l,
                                      const char *number, const char *hash_hex,
                                      const char *biz, char *msg, size_t msglen);
static gp_result_t  gp_receipt_read(gp_receipt_t *r, const char *code,
                                    const char *number, gp_issued_t *out,
                                    char *msg, size_t msglen);
static gp_result_t  gp_receipt_finish(gp_receipt_t *r, const gp_event_t *ev,
                                      const char *nkey, gp_receipt_ctx_t *rc,
                                      gp_issued_t *is, char *msg, size_t msglen);
static gp_result_t  gp_receipt_render(gp_receipt_t *r, gp_issued_t *is,
                                      char *msg, size_t msglen);
static void         gp_receipt_issued_free(gp_issued_t *is);
static void         gp_receipt_fault(gp_receipt_t *r, int point);
static gp_result_t  gp_receipt_redis_error(gp_receipt_t *r, const char *what,
                                           redisReply *reply, char *msg,
                                           size_t msglen);
static const char  *gp_hash_get(redisReply *h, const char *field, size_t *len);
static json_t      *gp_yuan(int64_t fen);


const gp_plugin_t gp_plugin_receipt = {
    .name = "receipt",
    .init = gp_receipt_init,
    .handle = gp_receipt_handle,
    .shutdown = gp_receipt_shutdown,
    .streams = NULL
};


/* *path (malloc'd, may be NULL) made relative to worker.json's folder */
static int
gp_receipt_resolve(const gp_plugin_env_t *env, char **path, char *err,
                   size_t errlen)
{
    char *p;

    if (*path == NULL) {
        return 0;
    }

    p = gp_conf_path(env, *path);
    if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    free(*path);
    *path = p;

    return 0;
}


static int
gp_receipt_init(const json_t *conf, gp_plugin_env_t *env, void **state,
                char *err, size_t errlen)
{
    gp_receipt_t *r;
    const char   *key, *fault;
    char         *alg, *keyfile, *font;
    struct stat   st;

    key = gp_conf_unknown(conf, gp_receipt_fields);
    if (key != NULL) {
        snprintf(err, errlen, "unknown field \"%s\"", key);
        return -1;
    }

    r = calloc(1, sizeof(gp_receipt_t));
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    r->env = env;
    alg = NULL;
    keyfile = NULL;
    font = NULL;

    if (env->pii_keys == NULL) {
        snprintf(err, errlen,
                 "needs \"pii_key\" at the top of worker.json: the payer's "
                 "name and ID number are sealed in the notice and the receipt "
                 "carries them in full");
        goto fail;
    }

    if (gp_receipt_digits2(conf, "region", r->prefix, err, errlen) != 0
        || gp_receipt_digits2(conf, "category", r->prefix + 2, err, errlen) != 0
        || gp_receipt_digits2(conf, "kind", r->prefix + 4, err, errlen) != 0
        || gp_receipt_text(conf, "issuer_code", 64, &r->issuer_code, err,
                           errlen)
               != 0
        || gp_receipt_text(conf, "issuer_name", 200, &r->issuer_name, err,
                           errlen)
               != 0
        || gp_receipt_text(conf, "key", 4096, &keyfile, err, errlen) != 0
        || gp_receipt_text(conf, "key_serial", 64, &r->key_serial, err, errlen)
               != 0
        || gp_receipt_text(conf, "ledger_dir", 4096, &r->ledger_dir, err,
                           errlen)
               != 0
        || gp_receipt_text(conf, "verify_url", 1024, &r->verify_url, err,
                           errlen)
               != 0)
    {
        goto fail;
    }

    /* files are named relative to worker.json's folder */

    if (gp_receipt_resolve(env, &keyfile, err, errlen) != 0
        || gp_receipt_resolve(env, &r->ledger_dir, err, errlen) != 0)
    {
        goto fail;
    }

    if (json_object_get(conf, "algorithm") != NULL
        && gp_receipt_text(conf, "algorithm", 8, &alg, err, errlen) != 0)
    {
        goto fail;
    }

    if (alg == NULL || strcmp(alg, "sm2") == 0) {
        r->alg = GP_SIG_SM2_SM3;

    } else if (strcmp(alg, "rsa") == 0) {
        r->alg = GP_SIG_RSA_SHA256;

    } else {
        snprintf(err, errlen, "\"algorithm\" must be \"sm2\" or \"rsa\"");
        goto fail;
    }

    if (strspn(r->key_serial, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "abcdefghijklmnopqrstuvwxyz-_.")
        != strlen(r->key_serial))
    {
        snprintf(err, errlen, "\"key_serial\" must be of [0-9A-Za-z-_.]");
        goto fail;
    }

    r->key = gp_pkey_load(keyfile, 1, r->alg, err, errlen);
    if (r->key == NULL) {
        goto fail;
    }

    if (stat(r->ledger_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "\"ledger_dir\" \"%s\" is not a directory",
                 r->ledger_dir);
        goto fail;
    }

    if (json_object_get(conf, "font") != NULL
        && gp_receipt_text(conf, "font", 4096, &font, err, errlen) != 0)
    {
        goto fail;
    }

    if (gp_receipt_resolve(env, &font, err, errlen) != 0) {
        goto fail;
    }

    r->pdf = gp_receipt_pdf_create(font != NULL ? font : GP_RECEIPT_FONT, err,
                                   errlen);
    if (r->pdf == NULL) {
        goto fail;
    }

    fault = getenv("GOV_PAY_RECEIPT_FAULT");
    if (fault != NULL && fault[0] != '\0') {
        if (strcmp(fault, "after_stage") == 0) {
            r->fault = GP_FAULT_R_AFTER_STAGE;
        } else if (strcmp(fault, "mid_append") == 0) {
            r->fault = GP_FAULT_R_MID_APPEND;
        } else if (strcmp(fault, "after_append") == 0) {
            r->fault = GP_FAULT_R_AFTER_APPEND;
        } else if (strcmp(fault, "after_commit") == 0) {
            r->fault = GP_FAULT_R_AFTER_COMMIT;
        } else {
            snprintf(err, errlen, "unknown GOV_PAY_RECEIPT_FAULT \"%s\"",
                     fault);
            goto fail;
        }

        env->log(env, GP_LOG_WARN, NULL,
                 "GOV_PAY_RECEIPT_FAULT=%s is set: test only", fault);
    }

    free(alg);
    free(keyfile);
    free(font);
    *state = r;
    return 0;

fail:

    free(alg);
    free(keyfile);
    free(font);
    gp_receipt_shutdown(r);
    return -1;
}


static void
gp_receipt_shutdown(void *state)
{
    gp_receipt_t *r;
    size_t        i;

    r = state;

    if (r == NULL) {
        return;
    }

    for (i = 0; i < r->nledgers; i++) {
        gp_ledger_close(&r->ledgers[i]);
    }

    gp_receipt_pdf_free(r->pdf);
    EVP_PKEY_free(r->key);
    free(r->issuer_code);
    free(r->issuer_name);
    free(r->key_serial);
    free(r->ledger_dir);
    free(r->verify_url);
    free(r);
}


static void
gp_receipt_fault(gp_receipt_t *r, int point)
{
    if (r->fault == point) {
        _exit(137);
    }
}


static gp_result_t
gp_receipt_handle(void *state, const gp_event_t *ev, char *msg, size_t msglen)
{
    gp_receipt_t    *r;
    gp_receipt_ctx_t rc;
    gp_issued_t      is;
    gp_ledger_t     *l;
    redisReply      *notice;
    json_t          *doc;
    gp_result_t      res;
    const char      *type, *key, *code, *rcode, *num;
    size_t           type_len, key_len, code_len, n;
    char             nkey[128];
    int64_t          v, amount;

    r = state;
    notice = NULL;
    doc = NULL;
    l = NULL;
    memset(&rc, 0, sizeof(rc));
    memset(&is, 0, sizeof(is));

    type = gp_event_get(ev, "type", &type_len);
    if (type != NULL && type_len == 11 && memcmp(type, "notice.paid", 11) == 0)
    {
        rc.red = 0;

    } else if (type != NULL && type_len == 14
               && memcmp(type, "refund.settled", 14) == 0)
    {
        rc.red = 1;

    } else {
        snprintf(msg, msglen, "ignored: not a notice.paid or refund.settled");
        return GP_DONE;
    }

    code = gp_event_get(ev, "payment_code", &code_len);
    if (code == NULL || code_len != 20 || strspn(code, "0123456789") != 20) {
        snprintf(msg, msglen, "the event has no valid payment_code");
        return GP_FAILED;
    }

    memcpy(rc.payment_code, code, 21);
    snprintf(rc.biz, sizeof(rc.biz), "%s%s", rc.payment_code,
             rc.red ? ":red" : "");

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

    /* delivered again after every step was done */
    num = gp_hash_get(notice, rc.red ? "red_receipt_number" : "receipt_number",
                      NULL);
    if (num != NULL) {
        rcode = gp_hash_get(notice,
                            rc.red ? "red_receipt_code" : "receipt_code", NULL);
        snprintf(msg, msglen, "%sreceipt already issued: %s/%s",
                 rc.red ? "red-letter " : "", rcode != NULL ? rcode : "?", num);
        res = GP_DONE;
        goto done;
    }

    if (rc.red) {
        /* the original must exist, and a reversal is of the whole receipt */
        rcode = gp_hash_get(notice, "receipt_code", &n);
        num = gp_hash_get(notice, "receipt_number", NULL);
        if (rcode == NULL || num == NULL || n != 8 || strlen(num) != 10) {
            snprintf(msg, msglen, "the original receipt is not issued yet");
            res = GP_RETRY;
            goto done;
        }

        memcpy(rc.related_code, rcode, 9);
        memcpy(rc.related_number, num, 11);

        key = gp_event_get(ev, "amount", &n);
        num = gp_hash_get(notice, "amount", &code_len);
        if (key == NULL || gp_parse_i64(key, n, &v) != 0 || num == NULL
            || gp_parse_i64(num, code_len, &amount) != 0 || v != amount)
        {
            snprintf(msg, msglen,
                     "the refund is not of the whole amount: "
                     "partial reversal is not supported");
            res = GP_FAILED;
            goto done;
        }
    }

    res = gp_receipt_document(r, ev, notice, &rc, &doc, msg, msglen);
    if (res != GP_DONE) {
        goto done;
    }

    l = gp_receipt_ledger(r, rc.code, msg, msglen);
    if (l == NULL) {
        res = GP_RETRY;
        goto done;
    }

    if (gp_ledger_lock(l) != 0) {
        snprintf(msg, msglen, "flock() of ledger %s failed", rc.code);
        res = GP_RETRY;
        goto done;
    }

    res = gp_receipt_issue(r, ev, nkey, &rc, doc, l, &is, msg, msglen);

    gp_ledger_unlock(l);

    if (res != GP_DONE) {
        goto done;
    }

    res = gp_receipt_finish(r, ev, nkey, &rc, &is, msg, msglen);

done:

    gp_receipt_issued_free(&is);
    json_decref(doc);

    if (notice != NULL) {
        freeReplyObject(notice);
    }

    return res;
}


/* the open ledger of code, opened on first use */
static gp_ledger_t *
gp_receipt_ledger(gp_receipt_t *r, const char *code, char *msg, size_t msglen)
{
    size_t i;
    char   path[4200];

    for (i = 0; i < r->nledgers; i++) {
        if (strcmp(r->ledgers[i].code, code) == 0) {
            return &r->ledgers[i];
        }
    }

    if (r->nledgers == GP_RECEIPT_LEDGERS) {
        /* a new year: the oldest code is done with */
        gp_ledger_close(&r->ledgers[0]);
        memmove(&r->ledgers[0], &r->ledgers[1],
                (GP_RECEIPT_LEDGERS - 1) * sizeof(gp_ledger_t));
        r->nledgers--;
    }

    snprintf(path, sizeof(path), "%s/%s.ledger", r->ledger_dir, code);

    if (gp_ledger_open(&r->ledgers[r->nledgers], path, code, msg, msglen) != 0)
    {
        return NULL;
    }

    return &r->ledgers[r->nledgers++];
}


/*
 * With the ledger locked: numbers, seals, stages, appends and commits the
 * receipt of rc->biz, or finds the one that exists; *out gets it.
 */
static gp_result_t
gp_receipt_issue(gp_receipt_t *r, const gp_event_t *ev, const char *nkey,
                 gp_receipt_ctx_t *rc, json_t *doc, gp_ledger_t *l,
                 gp_issued_t *out, char *msg, size_t msglen)
{
    redisReply   *reply;
    gp_result_t   res;
    json_t       *seal;
    unsigned char sig[GP_SIG_MAX], hash[GP_LEDGER_HASH_LEN];
    size_t        siglen, line_len;
    char          date[9], hms[9], sealtime[26], prev_hex[65], hash_hex[65];
    char          sig_b64[4 * GP_SIG_MAX / 3 + 8], at[24], *doc_str, *seal_str;
    char         *line, *slash;
    const char   *st;
    int64_t       now;
    int           attempt;

    doc_str = NULL;
    seal_str = NULL;
    line = NULL;
    seal = NULL;
    reply = NULL;

    for (attempt = 0; attempt < 3; attempt++) {
        free(doc_str);
        free(seal_str);
        json_decref(seal);
        doc_str = NULL;
        seal_str = NULL;
        seal = NULL;

        if (reply != NULL) {
            freeReplyObject(reply);
            reply = NULL;
        }

        if (gp_ledger_sync(l, msg, msglen) != 0) {
            r->env->log(r->env, GP_LOG_ERROR, ev, "ledger %s: %s", l->code,
                        msg);
            return GP_RETRY;
        }

        if (l->last >= GP_RECEIPT_NUMBER_MAX) {
            snprintf(msg, msglen, "receipt numbers of code %s are exhausted",
                     l->code);
            return GP_FAILED;
        }

        snprintf(rc->number, sizeof(rc->number), "%010llu",
                 (unsigned long long) l->last + 1);

        if (gp_receipt_check_code(rc->check) != 0) {
            snprintf(msg, msglen, "gp_random_bytes() failed");
            return GP_RETRY;
        }

        now = (int64_t) time(NULL);
        gp_receipt_issue_time(now, date, hms);
        gp_time_rfc3339(now, sealtime);
        snprintf(at, sizeof(at), "%lld", (long long) now);

        if (json_object_set_new(doc, "EInvoiceCode", json_string(rc->code)) != 0
            || json_object_set_new(doc, "EInvoiceNumber",
                                   json_string(rc->number))
                   != 0
            || json_object_set_new(doc, "RandomNumber", json_string(rc->check))
                   != 0
            || json_object_set_new(doc, "IssueDate", json_string(date)) != 0
            || json_object_set_new(doc, "IssueTime", json_string(hms)) != 0)
        {
            snprintf(msg, msglen, "out of memory building the document");
            return GP_RETRY;
        }

        /* canonical: sorted keys, compact, UTF-8 as is */
        doc_str = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
        if (doc_str == NULL) {
            snprintf(msg, msglen, "json_dumps() of the document failed");
            return GP_RETRY;
        }

        if (gp_pkey_sign(r->key, r->alg, doc_str, strlen(doc_str), sig, &siglen)
            != 0) {
            snprintf(msg, msglen, "signing the receipt failed");
            res = GP_RETRY;
            goto fail;
        }

        gp_base64_encode(sig, siglen, sig_b64);

        seal = json_pack("{s:s, s:s, s:s, s:s}", "SealAlgorithm",
                         r->alg == GP_SIG_SM2_SM3 ? "SM2-SM3" : "RSA-SHA256",
                         "SealKeySN", r->key_serial, "SealTime", sealtime,
                         "SealValue", sig_b64);
        seal_str = seal != NULL
                       ? json_dumps(seal, JSON_SORT_KEYS | JSON_COMPACT)
                       : NULL;
        if (seal_str == NULL) {
            snprintf(msg, msglen, "out of memory building the seal");
            res = GP_RETRY;
            goto fail;
        }

        if (gp_ledger_hash(l->head, doc_str, strlen(doc_str), seal_str,
                           strlen(seal_str), hash)
            != 0)
        {
            snprintf(msg, msglen, "SM3 of the ledger entry failed");
            res = GP_RETRY;
            goto fail;
        }

        gp_hex(l->head, GP_LEDGER_HASH_LEN, prev_hex);
        gp_hex(hash, GP_LEDGER_HASH_LEN, hash_hex);

        reply = redisCommand(
            r->env->redis,
            "EVAL %s 4 {gpr}:rseq:%s {gpr}:head:%s {gpr}:stage:%s "
            "{gpr}:biz:%s %s %s %s %s %s %s %s %s %s %s %s",
            gp_receipt_stage_lua, rc->code, rc->code, rc->code, rc->biz,
            rc->number, prev_hex, hash_hex, rc->biz, doc_str, seal_str,
            rc->check, rc->payment_code, nkey, rc->red ? "red" : "blue", at);

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
            || reply->elements < 1
            || reply->element[0]->type != REDIS_REPLY_STRING)
        {
            res = gp_receipt_redis_error(r, "EVAL stage receipt", reply, msg,
                                         msglen);
            reply = NULL;
            goto fail;
        }

        st = reply->element[0]->str;

        if (strcmp(st, "DONE") == 0) {
            /* committed before: a redelivery after a crash, or a race lost */
            if (reply->elements != 2
                || reply->element[1]->type != REDIS_REPLY_STRING
                || (slash = strchr(reply->element[1]->str, '/')) == NULL)
            {
                snprintf(msg, msglen, "the stage script answered a bad DONE");
                res = GP_RETRY;
                goto fail;
            }

            *slash = '\0';
            res = gp_receipt_read(r, reply->element[1]->str, slash + 1, out,
                                  msg, msglen);
            goto fail; /* not a failure: the common exit */
        }

        if (strcmp(st, "STAGED") == 0 || strcmp(st, "CONFLICT") == 0) {
            /* an unfinished entry, or Redis is ahead of this copy: roll
             * forward, then number again */
            r->env->log(r->env, GP_LOG_WARN, ev,
                        "receipt code %s: %s, reconciling ledger and redis",
                        rc->code, st);
            res = gp_receipt_reconcile(r, l, msg, msglen);
            if (res != GP_DONE) {
                r->env->log(r->env, GP_LOG_ERROR, ev, "receipt code %s: %s",
                            rc->code, msg);
                goto fail;
            }
            continue;
        }

        if (strcmp(st, "OK") != 0) {
            snprintf(msg, msglen,
                     "the stage script answered an unknown status");
            res = GP_RETRY;
            goto fail;
        }

        gp_receipt_fault(r, GP_FAULT_R_AFTER_STAGE);

        line = gp_ledger_format(rc->code, l->last + 1, l->head, hash, doc_str,
                                strlen(doc_str), seal_str, strlen(seal_str),
                                &line_len);
        if (line == NULL) {
            snprintf(msg, msglen, "out of memory formatting the ledger entry");
            res = GP_RETRY;
            goto fail;
        }

        if (r->fault == GP_FAULT_R_MID_APPEND) {
            if (write(l->fd, line, line_len / 2) < 0) {
                /* exits anyway */
            }
            _exit(137);
        }

        if (gp_ledger_append(l, line, line_len, msg, msglen) != 0) {
            r->env->log(r->env, GP_LOG_ERROR, ev, "ledger %s: %s", l->code,
                        msg);
            res = GP_RETRY; /* staged: the next try rolls it forward */
            goto fail;
        }

        l->last++;
        memcpy(l->head, hash, GP_LEDGER_HASH_LEN);

        gp_receipt_fault(r, GP_FAULT_R_AFTER_APPEND);

        res =
            gp_receipt_commit(r, l, rc->number, hash_hex, rc->biz, msg, msglen);
        if (res != GP_DONE) {
            goto fail;
        }

        gp_receipt_fault(r, GP_FAULT_R_AFTER_COMMIT);

        memcpy(out->code, rc->code, sizeof(out->code));
        memcpy(out->number, rc->number, sizeof(out->number));
        memcpy(out->check, rc->check, sizeof(out->check));
        memcpy(out->at, at, sizeof(out->at));
        out->doc = doc_str;
        out->seal = seal_str;
        doc_str = NULL;
        seal_str = NULL;
        res = GP_DONE;
        goto fail;
    }

    snprintf(msg, msglen, "receipt code %s: still conflicting after %d tries",
             rc->code, attempt);
    res = GP_RETRY;

fail:

    free(line);
    free(doc_str);
    free(seal_str);
    json_decref(seal);

    if (reply != NULL) {
        freeReplyObject(reply);
    }

    return res;
}


/*
 * With the ledger locked and read: makes Redis and the ledger agree by rolling
 * a staged entry forward; GP_DONE when they agree (nothing staged, same last
 * number and head), GP_RETRY with msg when they cannot be made to.
 */
static gp_result_t
gp_receipt_reconcile(gp_receipt_t *r, gp_ledger_t *l, char *msg, size_t msglen)
{
    redisReply   *reply;
    gp_result_t   res;
    const char   *rseq, *head, *number, *prev, *hash, *doc, *seal, *biz;
    size_t        doc_len, seal_len, line_len;
    char          head_hex[65], want[96], *line;
    unsigned char p[GP_LEDGER_HASH_LEN], h[GP_LEDGER_HASH_LEN];
    uint64_t      n;

    line = NULL;

    reply = redisCommand(r->env->redis,
                         "EVAL %s 3 {gpr}:rseq:%s {gpr}:head:%s "
                         "{gpr}:stage:%s",
                         gp_receipt_state_lua, l->code, l->code, l->code);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        return gp_receipt_redis_error(r, "EVAL receipt state", reply, msg,
                                      msglen);
    }

    rseq = reply->element[0]->str;
    head = reply->element[1]->str;

    gp_hex(l->head, GP_LEDGER_HASH_LEN, head_hex);

    if (reply->elements == 2) {
        /* nothing staged: both must be at the same entry */
        snprintf(want, sizeof(want), "%llu %s", (unsigned long long) l->last,
                 head_hex);

        if ((l->last == 0 && rseq[0] == '\0' && head[0] == '\0')
            || (strtoull(rseq, NULL, 10) == l->last && strcmp(head, want) == 0))
        {
            res = GP_DONE;
        } else {
            snprintf(msg, msglen,
                     "ledger and redis disagree: ledger ends at %llu, redis "
                     "at %s (committed %.20s): issuing stopped",
                     (unsigned long long) l->last, rseq[0] ? rseq : "0",
                     head[0] ? head : "0");
            res = GP_RETRY;
        }

        freeReplyObject(reply);
        return res;
    }

    /* the staged entry, as field/value pairs after the first two */
    {
        redisReply fake;

        fake.elements = reply->elements - 2;
        fake.element = reply->element + 2;
        number = gp_hash_get(&fake, "number", NULL);
        prev = gp_hash_get(&fake, "prev", NULL);
        hash = gp_hash_get(&fake, "hash", NULL);
        doc = gp_hash_get(&fake, "doc", &doc_len);
        seal = gp_hash_get(&fake, "seal", &seal_len);
        biz = gp_hash_get(&fake, "biz", NULL);
    }

    if (number == NULL || prev == NULL || hash == NULL || doc == NULL
        || seal == NULL || biz == NULL || strlen(prev) != 64
        || strlen(hash) != 64)
    {
        snprintf(msg, msglen, "the staged entry of %s is incomplete", l->code);
        res = GP_RETRY;
        goto done;
    }

    n = strtoull(number, NULL, 10);
    snprintf(want, sizeof(want), "%s", hash);

    if (n == l->last && strcmp(head_hex, hash) == 0) {
        /* appended before the crash: commit only */

    } else if (n == l->last + 1 && strcmp(head_hex, prev) == 0) {
        /* staged, not appended: append it as it was sealed */
        if (gp_ledger_hash(l->head, doc, doc_len, seal, seal_len, h) != 0) {
            snprintf(msg, msglen, "SM3 of the staged entry failed");
            res = GP_RETRY;
            goto done;
        }

        gp_hex(h, GP_LEDGER_HASH_LEN, want);
        if (strcmp(want, hash) != 0) {
            snprintf(msg, msglen,
                     "the staged entry %s/%llu does not hash to "
                     "its entry_hash: issuing stopped",
                     l->code, (unsigned long long) n);
            res = GP_RETRY;
            goto done;
        }

        memcpy(p, l->head, sizeof(p));
        line = gp_ledger_format(l->code, n, p, h, doc, doc_len, seal, seal_len,
                                &line_len);
        if (line == NULL) {
            snprintf(msg, msglen, "out of memory formatting the ledger entry");
            res = GP_RETRY;
            goto done;
        }

        if (gp_ledger_append(l, line, line_len, msg, msglen) != 0) {
            res = GP_RETRY;
            goto done;
        }

        l->last = n;
        memcpy(l->head, h, GP_LEDGER_HASH_LEN);

        r->env->log(r->env, GP_LOG_WARN, NULL,
                    "receipt %s/%010llu: staged entry rolled forward into "
                    "the ledger",
                    l->code, (unsigned long long) n);

    } else {
        snprintf(msg, msglen,
                 "ledger and redis disagree: ledger ends at %llu, redis has "
                 "%s/%s staged: issuing stopped",
                 (unsigned long long) l->last, l->code, number);
        res = GP_RETRY;
        goto done;
    }

    snprintf(want, sizeof(want), "%010llu", (unsigned long long) n);
    res = gp_receipt_commit(r, l, want, hash, biz, msg, msglen);

    if (res == GP_DONE) {
        r->env->log(r->env, GP_LOG_WARN, NULL,
                    "receipt %s/%s: staged entry committed", l->code, want);
    }

done:

    free(line);
    freeReplyObject(reply);
    return res;
}


static gp_result_t
gp_receipt_commit(gp_receipt_t *r, gp_ledger_t *l, const char *number,
                  const char *hash_hex, const char *biz, char *msg,
                  size_t msglen)
{
    redisReply *reply;
    const char *st;

    reply =
        redisCommand(r->env->redis,
                     "EVAL %s 5 {gpr}:stage:%s {gpr}:head:%s {gpr}:r:%s:%s "
                     "{gpr}:biz:%s {gpr}:ridx:%s:%s %s %s %s",
                     gp_receipt_commit_lua, l->code, l->code, l->code, number,
                     biz, l->code, number, l->code, number, hash_hex);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return gp_receipt_redis_error(r, "EVAL commit receipt", reply, msg,
                                      msglen);
    }

    st = reply->element[0]->str;

    if (strcmp(st, "OK") != 0) {
        snprintf(msg, msglen, "commit of receipt %s/%s answered %.16s", l->code,
                 number, st);
        freeReplyObject(reply);
        return GP_RETRY;
    }

    freeReplyObject(reply);
    return GP_DONE;
}


/* the committed receipt record {gpr}:r:<code>:<number> */
static gp_result_t
gp_receipt_read(gp_receipt_t *r, const char *code, const char *number,
                gp_issued_t *out, char *msg, size_t msglen)
{
    redisReply *reply;
    size_t      i;

    if (strlen(code) != 8 || strlen(number) != 10) {
        snprintf(msg, msglen, "bad receipt reference %.8s/%.10s", code, number);
        return GP_RETRY;
    }

    reply =
        redisCommand(r->env->redis, "HMGET {gpr}:r:%s:%s check at doc seal pdf",
                     code, number);
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 5) {
        return gp_receipt_redis_error(r, "HMGET receipt", reply, msg, msglen);
    }

    for (i = 0; i < 4; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING) {
            freeReplyObject(reply);
            snprintf(msg, msglen, "receipt record %s/%s is incomplete", code,
                     number);
            return GP_RETRY;
        }
    }

    snprintf(out->code, sizeof(out->code), "%s", code);
    snprintf(out->number, sizeof(out->number), "%s", number);
    snprintf(out->check, sizeof(out->check), "%s", reply->element[0]->str);
    snprintf(out->at, sizeof(out->at), "%s", reply->element[1]->str);
    out->doc = strdup(reply->element[2]->str);
    out->seal = strdup(reply->element[3]->str);
    out->has_pdf = reply->element[4]->type == REDIS_REPLY_STRING;

    freeReplyObject(reply);

    if (out->doc == NULL || out->seal == NULL) {
        snprintf(msg, msglen, "out of memory");
        return GP_RETRY;
    }

    return GP_DONE;
}


/*
 * After the commit: the PDF into the record, then the notice (its own slot):
 * fields, document, and the receipt.issued / receipt.reversed event, once.
 */
static gp_result_t
gp_receipt_finish(gp_receipt_t *r, const gp_event_t *ev, const char *nkey,
                  gp_receipt_ctx_t *rc, gp_issued_t *is, char *msg,
                  size_t msglen)
{
    redisReply *reply, *st;
    gp_result_t res;
    char        dkey[64], skey[32], fkey[32];

    if (!is->has_pdf) {
        res = gp_receipt_render(r, is, msg, msglen);
        if (res != GP_DONE) {
            return res;
        }
    }

    snprintf(dkey, sizeof(dkey), "{gp%u}:rcpt:%.*s%s", rc->shard,
             (int) rc->seq_len, rc->seq, rc->red ? ":red" : "");
    snprintf(skey, sizeof(skey), "{gp%u}:settled", rc->shard);
    snprintf(fkey, sizeof(fkey), "{gp%u}:final", rc->shard);

    reply = redisCommand(
        r->env->redis, "EVAL %s 4 %s %s %s %s %s %s %s %s %s %s %s %s",
        gp_receipt_notice_lua, nkey, dkey, skey, fkey,
        rc->red ? "red_receipt_" : "receipt_", is->code, is->number, is->check,
        is->at, is->doc, rc->payment_code,
        rc->red ? "receipt.reversed" : "receipt.issued");

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return gp_receipt_redis_error(r, "EVAL store receipt on the notice",
                                      reply, msg, msglen);
    }

    st = reply->element[0];

    if (strcmp(st->str, "ISSUED") == 0) {
        snprintf(msg, msglen, "issued %sreceipt %s/%s",
                 rc->red ? "red-letter " : "", is->code, is->number);
        res = GP_DONE;

    } else if (strcmp(st->str, "EXISTS") == 0 && reply->elements == 3
               && reply->element[1]->type == REDIS_REPLY_STRING
               && reply->element[2]->type == REDIS_REPLY_STRING
               && strcmp(reply->element[1]->str, is->code) == 0
               && strcmp(reply->element[2]->str, is->number) == 0)
    {
        snprintf(msg, msglen, "receipt already issued: %s/%s", is->code,
                 is->number);
        res = GP_DONE;

    } else if (strcmp(st->str, "NONE") == 0) {
        r->env->log(r->env, GP_LOG_ERROR, ev,
                    "receipt %s/%s is in the ledger but its notice is gone",
                    is->code, is->number);
        snprintf(msg, msglen, "notice not found");
        res = GP_FAILED;

    } else {
        snprintf(msg, msglen, "the notice names another receipt than %s/%s",
                 is->code, is->number);
        res = GP_FAILED;
    }

    freeReplyObject(reply);
    return res;
}


static gp_result_t
gp_receipt_render(gp_receipt_t *r, gp_issued_t *is, char *msg, size_t msglen)
{
    json_t        *doc, *seal;
    json_error_t   jerr;
    redisReply    *reply;
    unsigned char *pdf;
    size_t         len;
    char           url[1200], err[256];
    int            rc;

    doc = json_loads(is->doc, 0, &jerr);
    seal = json_loads(is->seal, 0, &jerr);

    snprintf(url, sizeof(url), "%s/r/%s/%s?c=%s", r->verify_url, is->code,
             is->number, is->check);

    rc = (doc != NULL && seal != NULL) ? gp_receipt_pdf_render(
             r->pdf, doc, seal, url, &pdf, &len, err, sizeof(err))
                                       : -1;

    json_decref(doc);
    json_decref(seal);

    if (rc != 0) {
        snprintf(msg, msglen, "rendering the PDF of %s/%s failed", is->code,
                 is->number);
        return GP_RETRY;
    }

    reply = redisCommand(r->env->redis, "HSET {gpr}:r:%s:%s pdf %b", is->code,
                         is->number, pdf, len);
    free(pdf);

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        return gp_receipt_redis_error(r, "HSET receipt pdf", reply, msg,
                                      msglen);
    }

    freeReplyObject(reply);
    is->has_pdf = 1;
    return GP_DONE;
}


static void
gp_receipt_issued_free(gp_issued_t *is)
{
    free(is->doc);
    free(is->seal);
    is->doc = NULL;
    is->seal = NULL;
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


/*
 * the document without its number, check code and issue time; the payer's
 * opened name and ID number are wiped when it is built (the document keeps
 * its own copies)
 */
static gp_result_t
gp_receipt_document(gp_receipt_t *r, const gp_event_t *ev, redisReply *notice,
                    gp_receipt_ctx_t *rc, json_t **out, char *msg,
                    size_t msglen)
{
    gp_receipt_payer_t payer;
    gp_result_t        res;

    res = gp_receipt_build(r, ev, notice, rc, &payer, out, msg, msglen);
    OPENSSL_cleanse(&payer, sizeof(payer));

    return res;
}


/*
 * One sealed field of the payer (field "payer_name" or "payer_id", stored as
 * <field>_sealed), opened for this notice: 0, or -1 with a reason in msg
 * that names the field and the key id, never a value.
 */
static int
gp_receipt_open(gp_receipt_t *r, redisReply *notice, const char *field,
                char *out, size_t outlen, size_t *n, char *msg, size_t msglen)
{
    const char   *rec, *unit, *request_id, *created;
    char          key[32], kid[GP_SEAL_KID_MAX + 1];
    size_t        reclen, ulen, qlen, clen;
    int64_t       created_at;
    gp_seal_ctx_t sc;
    gp_seal_rc_t  rc;

    snprintf(key, sizeof(key), "%s_sealed", field);

    rec = gp_hash_get(notice, key, &reclen);
    unit = gp_hash_get(notice, "unit", &ulen);
    request_id = gp_hash_get(notice, "request_id", &qlen);
    created = gp_hash_get(notice, "created_at", &clen);

    if (rec == NULL) {
        snprintf(msg, msglen, "the notice has no %s", key);
        return -1;
    }

    if (unit == NULL || request_id == NULL || created == NULL
        || strlen(unit) != ulen || strlen(request_id) != qlen
        || gp_parse_i64(created, clen, &created_at) != 0)
    {
        snprintf(msg, msglen,
                 "the notice has no valid unit, request_id or created_at, "
                 "which its %s is bound to",
                 key);
        return -1;
    }

    sc.field = field;
    sc.unit = unit;
    sc.request_id = request_id;
    sc.created_at = created_at;

    rc = reclen < outlen
             ? gp_seal_open(r->env->pii_keys, &sc, rec, reclen, out, outlen, n)
             : GP_SEAL_MALFORMED;

    if (rc != GP_SEAL_OK) {
        if (gp_seal_record_kid(rec, reclen, kid) != 0) {
            snprintf(kid, sizeof(kid), "?");
        }

        snprintf(msg, msglen,
                 "the notice's %s does not open (key id \"%s\"): %s", key, kid,
                 gp_seal_strerror(rc));
        return -1;
    }

    return 0;
}


static gp_result_t
gp_receipt_build(gp_receipt_t *r, const gp_event_t *ev, redisReply *notice,
                 gp_receipt_ctx_t *rc, gp_receipt_payer_t *payer, json_t **out,
                 char *msg, size_t msglen)
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

    if (payer_type == NULL
        || (strcmp(payer_type, "person") != 0
            && strcmp(payer_type, "org") != 0))
    {
        snprintf(msg, msglen, "the notice has no valid payer_type");
        return GP_FAILED;
    }

    /* the payer in full: opened here, for the document, and nowhere else */
    if (gp_receipt_open(r, notice, "payer_name", payer->name,
                        sizeof(payer->name), &name_len, msg, msglen)
            != 0
        || gp_receipt_open(r, notice, "payer_id", payer->id, sizeof(payer->id),
                           &id_len, msg, msglen)
               != 0)
    {
        return GP_FAILED;
    }

    payer_name = payer->name;
    payer_id = payer->id;

    if (id_len == 0 || name_len == 0 || !gp_utf8_valid(payer_id, id_len, NULL)
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

    if (rc->red) {
        /* a red-letter receipt belongs to the year of the refund */
        s = gp_event_get(ev, "refunded_at", &len);
        if (s == NULL || gp_parse_i64(s, len, &paid_at) != 0 || paid_at <= 0) {
            snprintf(msg, msglen, "the refund event has no valid refunded_at");
            return GP_FAILED;
        }
    }

    yy = gp_year2(paid_at);
    snprintf(rc->code, sizeof(rc->code), "%s%02u", r->prefix, yy % 100);

    items = gp_receipt_items(r, notice, amount, rc->red, msg, msglen);
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
        || json_object_set_new(
               doc, "EInvoiceName",
               json_string(rc->red ? GP_RECEIPT_RED_NAME : GP_RECEIPT_NAME))
               != 0
        || json_object_set_new(doc, "TotalAmount",
                               gp_yuan(rc->red ? -amount : amount))
               != 0
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

    if (rc->red
        && (json_object_set_new(doc, "RelatedInvoiceCode",
                                json_string(rc->related_code))
                != 0
            || json_object_set_new(doc, "RelatedInvoiceNumber",
                                   json_string(rc->related_number))
                   != 0))
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
gp_receipt_items(gp_receipt_t *r, redisReply *notice, int64_t amount, int neg,
                 char *msg, size_t msglen)
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

        item = gp_receipt_item(r, code, code_len, 1, amount, neg, msg, msglen);
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

        item = gp_receipt_item(r, code, code_len, qty, price, neg, msg, msglen);
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
                int64_t quantity, int64_t price, int neg, char *msg,
                size_t msglen)
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
        || json_object_set_new(item, "ItemQuantity",
                               json_integer(neg ? -quantity : quantity))
               != 0
        || json_object_set_new(item, "ItemStd", gp_yuan(price)) != 0
        || json_object_set_new(
               item, "ItemAmount",
               gp_yuan(neg ? -quantity * price : quantity * price))
               != 0)
    {
        json_decref(item);
        snprintf(msg, msglen, "out of memory building the items");
        return NULL;
    }

    return item;
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
