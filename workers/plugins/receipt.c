/*
 * receipt: issues the fiscal electronic receipt (财政电子票据) of a paid
 * notice, sealed (SM2-with-SM3, or RSA-SHA256) and chained into the ledger,
 * and makes the receipts follow the money when the notice is refunded.
 * docs/receipts.md is the design; this comment is its summary.
 *
 * Events: notice.paid ({gpN}:settled) → the notice's receipt.
 * refund.succeeded of origin "notice" ({gpN}:refunds) → a red-letter receipt
 * (冲红) of the notice's live receipt, naming it (RelatedInvoiceCode/Number),
 * and, when money is kept (a partial refund: refunded_total < paid_amount),
 * a new receipt for the amount kept. Several partial refunds chain: each
 * reverses the receipt then live and issues the next, in the order the
 * refunds succeeded (refunded_total grows with each): a refund whose
 * predecessor's receipts are not done yet waits (GP_RETRY). Refunds of origin
 * "anomaly" (money that never paid the notice) get no receipt. Others are
 * acknowledged.
 *
 * Exactly once per payment and per refund: every receipt has a biz key,
 * {gpr}:biz:<payment> (the notice's receipt), {gpr}:biz:<payment>:<refund
 * id>:red (the refund's red-letter receipt) and {gpr}:biz:<payment>:<refund
 * id> (the receipt that replaces it), and the notice marks what it applied
 * (receipt_number; r<nn>.red_receipt and r<nn>.receipt of the refund).
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
 *   2. STAGE (one script): unless this biz has a receipt already
 *      ({gpr}:biz:<biz>), and if nothing else is staged, and if the entry
 *      follows {gpr}:rseq / {gpr}:head, stores the sealed entry in
 *      {gpr}:stage:<code> and takes the number (rseq). From here the number
 *      is never given up: the staged entry is rolled forward by whoever next
 *      holds the ledger;
 *   3. append the ledger line, fsync;
 *   4. COMMIT (one script): the receipt record {gpr}:r:<code>:<number>, the
 *      biz key, the {gpr}:ridx index, the new {gpr}:head, and on the record
 *      a red-letter receipt reverses, reversed_by; the stage is deleted.
 *
 * Then, without the lock: the PDF is rendered into the record (field pdf),
 * and one script on the notice's shard ({gpN}, another slot) marks the notice,
 * keeps the history of its receipts (field receipts, once one is reversed),
 * stores the document at {gpN}:rcpt:<seq> (…:red) and appends receipt.issued
 * (or receipt.reversed) to the shard's settled stream, once. The stream entry
 * is acknowledged only after that, so a crash anywhere is redelivered: the
 * biz is found in {gpr}:biz and only the remaining steps run.
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
 * after_commit: _exit(137) at that point of issuing; between_receipts: after
 * a partial refund's red-letter receipt is done (ledger, records, notice),
 * before the receipt for the amount kept is begun.
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
/* the gp_seal fields of a receipt's document and PDF in Redis */
#define GP_RECEIPT_SEAL_DOC "receipt_doc"
#define GP_RECEIPT_SEAL_PDF "receipt_pdf"

enum {
    GP_FAULT_R_NONE = 0,
    GP_FAULT_R_AFTER_STAGE,
    GP_FAULT_R_MID_APPEND,
    GP_FAULT_R_AFTER_APPEND,
    GP_FAULT_R_AFTER_COMMIT,
    GP_FAULT_R_BETWEEN_RECEIPTS
};

/* what a receipt is for (the notice script's mode) */
enum {
    GP_RC_FIRST = 0, /* the notice's receipt, on notice.paid */
    GP_RC_RED,       /* a refund's red-letter receipt of the live receipt */
    GP_RC_REISSUE    /* a partial refund's receipt for the amount kept */
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


/* one receipt in the making */
typedef struct {
    uint32_t    shard;
    const char *seq; /* of the notice key, digits */
    size_t      seq_len;
    int         mode;       /* GP_RC_* */
    char        code[9];    /* EInvoiceCode */
    char        number[11]; /* EInvoiceNumber */
    char        check[GP_RECEIPT_CHECK_LEN + 1];
    char        payment_code[21];
    /* what is receipted: "<payment>", "<payment>:<refund id>:red" or
     * "<payment>:<refund id>" */
    char    biz[64];
    char    related_code[9]; /* a red-letter receipt: the one it reverses */
    char    related_number[11];
    char    refund_id[24]; /* "" for the notice's first receipt */
    char    nn[3];
    int64_t amount; /* TotalAmount in fen, negative for a red-letter one */
    int     full;   /* the refund leaves nothing: no receipt follows */
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
    char *doc;     /* the document, plain */
    char *doc_rec; /* the document as Redis has it: sealed */
    char *seal;
    int   has_pdf;
} gp_issued_t;


/*
 * KEYS: rseq, head, stage, biz. ARGV: number, prev (hex), hash (hex), biz,
 * doc, seal, check, payment_code, notice_key, kind, at, related
 * ("<code>/<number>" of the receipt a red-letter one reverses, or "").
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
    "'at', ARGV[11],\n"
    "  'related', ARGV[12])\n"
    "redis.call('SET', KEYS[1], tostring(tonumber(ARGV[1])))\n"
    "return {'OK'}\n";

/*
 * KEYS: stage, head, record, biz, ridx, and the record of the receipt the
 * staged one reverses (the record again when it reverses none). ARGV: code,
 * number, hash. → {"OK"} | {"NOSTAGE"} | {"MISMATCH"}
 */
static const char gp_receipt_commit_lua[] =
    "local s = redis.call('HMGET', KEYS[1], 'number', 'hash', 'biz', "
    "'payment_code',\n"
    "  'check', 'doc', 'seal', 'notice_key', 'kind', 'at', 'related')\n"
    "if not s[1] then return {'NOSTAGE'} end\n"
    "if tonumber(s[1]) ~= tonumber(ARGV[2]) or s[2] ~= ARGV[3] then "
    "return {'MISMATCH'} end\n"
    "redis.call('HSET', KEYS[3], 'payment_code', s[4], 'check', s[5], 'doc', "
    "s[6],\n"
    "  'seal', s[7], 'hash', s[2], 'notice_key', s[8], 'kind', s[9], 'at', "
    "s[10],\n"
    "  'biz', s[3])\n"
    "local ref = ARGV[1] .. '/' .. ARGV[2]\n"
    "if s[11] and s[11] ~= '' and KEYS[6] ~= KEYS[3]\n"
    "   and redis.call('EXISTS', KEYS[6]) == 1 then\n"
    "  redis.call('HSET', KEYS[3], 'related', s[11])\n"
    "  redis.call('HSET', KEYS[6], 'reversed_by', ref)\n"
    "end\n"
    "redis.call('SET', KEYS[4], ref)\n"
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
 * KEYS: notice, receipt document ({gpN}:rcpt:<seq>, …:red for a red-letter
 * one), the shard's settled stream, the shard's final set ({gpN}:final).
 * ARGV: mode ("first" | "red" | "reissue"), code, number, check, at,
 * document, payment_code, the refund's marker field ("r<nn>.red_receipt" |
 * "r<nn>.receipt"; "" for the first), amount (fen, negative for a red-letter
 * receipt), the receipt's history entry (JSON), refund id (""), the history
 * entry of the live receipt (JSON, for a notice that has no history yet).
 * → {"ISSUED"} | {"EXISTS", code, number} | {"NONE"}
 * Applied once: the first receipt while the notice has none, a refund's
 * receipt while its marker is unset. The event is appended in the same step,
 * so each receipt has exactly one. The history (field receipts, a JSON
 * array) starts with the first reversal, seeded with the receipt it
 * reverses. The notice becomes final here (paid and receipted: member seq of
 * the final set, score the receipt's time), so the retention plugin archives
 * it keep_s after its last receipt.
 */
static const char gp_receipt_notice_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {'NONE'} end\n"
    "local mode, ref = ARGV[1], ARGV[2] .. '/' .. ARGV[3]\n"
    "if mode == 'first' then\n"
    "  local cur = redis.call('HMGET', KEYS[1], 'receipt_code', "
    "'receipt_number')\n"
    "  if cur[2] then return {'EXISTS', cur[1], cur[2]} end\n"
    "else\n"
    "  local cur = redis.call('HGET', KEYS[1], ARGV[8])\n"
    "  if cur then\n"
    "    local c, n = string.match(cur, '^(%d+)/(%d+)$')\n"
    "    return {'EXISTS', c or '', n or ''}\n"
    "  end\n"
    "  local h = redis.call('HGET', KEYS[1], 'receipts')\n"
    "  if not h and ARGV[12] ~= '' then h = '[' .. ARGV[12] .. ']' end\n"
    "  h = h and (string.sub(h, 1, -2) .. ',' .. ARGV[10] .. ']')\n"
    "    or ('[' .. ARGV[10] .. ']')\n"
    "  redis.call('HSET', KEYS[1], 'receipts', h, ARGV[8], ref)\n"
    "end\n"
    "local f = mode == 'red' and 'red_receipt_' or 'receipt_'\n"
    "redis.call('HSET', KEYS[1], f .. 'code', ARGV[2], f .. 'number', "
    "ARGV[3],\n"
    "           f .. 'check', ARGV[4], f .. 'at', ARGV[5])\n"
    "redis.call('SET', KEYS[2], ARGV[6])\n"
    "redis.call('ZADD', KEYS[4], ARGV[5], string.match(KEYS[1], '(%d+)$'))\n"
    "local n = redis.call('HMGET', KEYS[1], 'unit', 'item_code')\n"
    "local e = {'type', mode == 'red' and 'receipt.reversed' or "
    "'receipt.issued',\n"
    "           'payment_code', ARGV[7], 'unit', n[1], 'item_code', n[2],\n"
    "           'amount', ARGV[9], 'receipt_code', ARGV[2], 'receipt_number', "
    "ARGV[3],\n"
    "           'receipt_check', ARGV[4], 'issued_at', ARGV[5], 'notice_key', "
    "KEYS[1]}\n"
    "if ARGV[11] ~= '' then\n"
    "  e[#e + 1] = 'refund_id'\n"
    "  e[#e + 1] = ARGV[11]\n"
    "end\n"
    "redis.call('XADD', KEYS[3], '*', unpack(e))\n"
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
                                       int64_t when, int64_t kept,
                                       const char *note, json_t **out,
                                       char *msg, size_t msglen);
static gp_result_t gp_receipt_red_document(gp_receipt_t *r, const char *ldoc,
                                           gp_receipt_ctx_t *rc, int64_t when,
                                           json_t **out, int64_t *live,
                                           char *msg, size_t msglen);
static gp_result_t gp_receipt_refund(gp_receipt_t *r, const gp_event_t *ev,
                                     redisReply *notice, const char *nkey,
                                     gp_receipt_ctx_t *rc, char *msg,
                                     size_t msglen);
static gp_result_t gp_receipt_one(gp_receipt_t *r, const gp_event_t *ev,
                                  const char *nkey, gp_receipt_ctx_t *rc,
                                  json_t *doc, const char *seed, char *msg,
                                  size_t msglen);
static char       *gp_receipt_entry(gp_receipt_t *r, const char *kind,
                                    const char *code, const char *number,
                                    const char *check, int64_t amount, int64_t at,
                                    const char *refund_id, const char *rcode,
                                    const char *rnumber);
static gp_result_t gp_receipt_build(gp_receipt_t *r, const gp_event_t *ev,
                                    redisReply *notice, gp_receipt_ctx_t *rc,
                                    int64_t when, int64_t kept,
                                    const char *note, gp_receipt_payer_t *payer,
                                    json_t **out, char *msg, size_t msglen);
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
                                      const char *biz, const char *related,
                                      char *msg, size_t msglen);
static gp_result_t  gp_receipt_read(gp_receipt_t *r, const char *code,
                                    const char *number, gp_issued_t *out,
                                    char *msg, size_t msglen);
static gp_result_t  gp_receipt_finish(gp_receipt_t *r, const gp_event_t *ev,
                                      const char *nkey, gp_receipt_ctx_t *rc,
                                      gp_issued_t *is, const char *seed,
                                      char *msg, size_t msglen);
static char        *gp_receipt_seal_bytes(gp_receipt_t *r, const char *field,
                                          const char *code, const char *number,
                                          const void *plain, size_t n, size_t *outn);
static char        *gp_receipt_open_bytes(gp_receipt_t *r, const char *field,
                                          const char *code, const char *number,
                                          const char *rec, size_t reclen, size_t *outn,
                                          char *msg, size_t msglen);
static gp_result_t  gp_receipt_render(gp_receipt_t *r, gp_issued_t *is,
                                      char *msg, size_t msglen);
static void         gp_receipt_issued_free(gp_issued_t *is);
static void         gp_receipt_fault(gp_receipt_t *r, int point);
static gp_result_t  gp_receipt_redis_error(gp_receipt_t *r, const char *what,
                                           redisReply *reply, char *msg,
                                           size_t msglen);
static const char  *gp_hash_get(redisReply *h, const char *field, size_t *len);
static json_t      *gp_yuan(int64_t fen);


static const char *const gp_receipt_streams[] = { "settled", "refunds", NULL };


const gp_plugin_t gp_plugin_receipt = { .name = "receipt",
                                        .init = gp_receipt_init,
                                        .handle = gp_receipt_handle,
                                        .shutdown = gp_receipt_shutdown,
                                        .streams = gp_receipt_streams };


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
        } else if (strcmp(fault, "between_receipts") == 0) {
            r->fault = GP_FAULT_R_BETWEEN_RECEIPTS;
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
    redisReply      *notice;
    json_t          *doc;
    gp_result_t      res;
    const char      *type, *key, *code, *rcode, *num, *s;
    size_t           type_len, key_len, code_len, len;
    char             nkey[128];
    int64_t          paid_at;
    int              refund;

    r = state;
    notice = NULL;
    doc = NULL;
    memset(&rc, 0, sizeof(rc));

    type = gp_event_get(ev, "type", &type_len);
    if (type != NULL && type_len == 11 && memcmp(type, "notice.paid", 11) == 0)
    {
        refund = 0;

    } else if (type != NULL && type_len == 16
               && memcmp(type, "refund.succeeded", 16) == 0)
    {
        refund = 1;

        /* money that never paid the notice has no receipt to follow */
        s = gp_event_get(ev, "origin", &len);
        if (s == NULL || len != 6 || memcmp(s, "notice", 6) != 0) {
            snprintf(msg, msglen, "no receipt for a refund of origin %.16s",
                     s != NULL ? s : "(none)");
            return GP_DONE;
        }

    } else {
        snprintf(msg, msglen, "ignored: not a notice.paid or refund.succeeded");
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

    if (refund) {
        res = gp_receipt_refund(r, ev, notice, nkey, &rc, msg, msglen);
        goto done;
    }

    /* delivered again after every step was done */
    num = gp_hash_get(notice, "receipt_number", NULL);
    if (num != NULL) {
        rcode = gp_hash_get(notice, "receipt_code", NULL);
        snprintf(msg, msglen, "receipt already issued: %s/%s",
                 rcode != NULL ? rcode : "?", num);
        res = GP_DONE;
        goto done;
    }

    s = gp_hash_get(notice, "paid_at", &len);
    if (s == NULL || gp_parse_i64(s, len, &paid_at) != 0 || paid_at <= 0) {
        snprintf(msg, msglen, "the notice has no valid paid_at");
        res = GP_FAILED;
        goto done;
    }

    rc.mode = GP_RC_FIRST;
    snprintf(rc.biz, sizeof(rc.biz), "%s", rc.payment_code);

    res = gp_receipt_document(r, ev, notice, &rc, paid_at, -1, NULL, &doc, msg,
                              msglen);
    if (res != GP_DONE) {
        goto done;
    }

    res = gp_receipt_one(r, ev, nkey, &rc, doc, "", msg, msglen);

done:

    json_decref(doc);

    if (notice != NULL) {
        freeReplyObject(notice);
    }

    return res;
}


/* a decimal field of the event (at most 18 digits), or -1 */
static int
gp_receipt_event_i64(const gp_event_t *ev, const char *name, int64_t *v)
{
    const char *s;
    size_t      len;

    s = gp_event_get(ev, name, &len);

    return (s != NULL && gp_parse_i64(s, len, v) == 0) ? 0 : -1;
}


/* 1 if field of the notice holds exactly the text want */
static int
gp_receipt_field_is(redisReply *notice, const char *field, const char *want)
{
    const char *v;
    size_t      len;

    v = gp_hash_get(notice, field, &len);

    return v != NULL && len == strlen(want) && memcmp(v, want, len) == 0;
}


/*
 * A refund of the notice succeeded (refund.succeeded, origin "notice"): the
 * live receipt is reversed by a red-letter receipt and, if money is kept, a
 * receipt for the amount kept replaces it. The refunds of a notice are
 * followed in the order they succeeded: the live receipt must be of what was
 * kept before this refund (paid - refunded_total + amount); more means an
 * earlier refund's receipts are still to come (GP_RETRY).
 */
static gp_result_t
gp_receipt_refund(gp_receipt_t *r, const gp_event_t *ev, redisReply *notice,
                  const char *nkey, gp_receipt_ctx_t *rc, char *msg,
                  size_t msglen)
{
    redisReply *rec;
    json_t     *doc;
    gp_result_t res;
    const char *id, *lcode, *lnum, *lcheck, *s;
    size_t      idlen, len;
    char        field[32], want[24], note[160], first[192], second[192];
    char       *seed, *ldoc;
    size_t      ldoc_len;
    int64_t     amount, total, paid, at, live, expected, lat;
    int         red_done, blue_done;

    doc = NULL;
    rec = NULL;
    seed = NULL;
    first[0] = '\0';

    id = gp_event_get(ev, "refund_id", &idlen);
    if (id == NULL || idlen != 23 || memcmp(id, rc->payment_code, 20) != 0
        || id[20] != 'R' || id[21] < '0' || id[21] > '9' || id[22] < '0'
        || id[22] > '9' || (id[21] == '0' && id[22] == '0'))
    {
        snprintf(msg, msglen, "the event has no valid refund_id");
        return GP_FAILED;
    }

    memcpy(rc->refund_id, id, 23);
    rc->refund_id[23] = '\0';
    rc->nn[0] = id[21];
    rc->nn[1] = id[22];
    rc->nn[2] = '\0';

    if (gp_receipt_event_i64(ev, "amount", &amount) != 0
        || gp_receipt_event_i64(ev, "refunded_total", &total) != 0
        || gp_receipt_event_i64(ev, "paid_amount", &paid) != 0
        || gp_receipt_event_i64(ev, "at", &at) != 0 || amount < 1
        || amount > total || total > paid || paid > GP_FEN_MAX || at <= 0)
    {
        snprintf(msg, msglen,
                 "refund %s: the event's amount, refunded_total, paid_amount "
                 "and at do not add up",
                 rc->refund_id);
        return GP_FAILED;
    }

    /* the notice must say the same: this refund succeeded, of this amount */
    snprintf(want, sizeof(want), "%lld", (long long) amount);
    snprintf(field, sizeof(field), "r%s.amount", rc->nn);

    if (!gp_receipt_field_is(notice, field, want)) {
        snprintf(msg, msglen, "refund %s: the notice has it of another amount",
                 rc->refund_id);
        return GP_FAILED;
    }

    snprintf(field, sizeof(field), "r%s.status", rc->nn);
    if (!gp_receipt_field_is(notice, field, "SUCCEEDED")) {
        snprintf(msg, msglen, "refund %s: the notice does not say it succeeded",
                 rc->refund_id);
        return GP_FAILED;
    }

    snprintf(want, sizeof(want), "%lld", (long long) paid);
    if (!gp_receipt_field_is(notice, "paid_amount", want)) {
        snprintf(msg, msglen,
                 "refund %s: the notice was paid another amount than the "
                 "event says",
                 rc->refund_id);
        return GP_FAILED;
    }

    rc->full = total == paid;

    snprintf(field, sizeof(field), "r%s.red_receipt", rc->nn);
    red_done = gp_hash_get(notice, field, NULL) != NULL;
    snprintf(field, sizeof(field), "r%s.receipt", rc->nn);
    blue_done = gp_hash_get(notice, field, NULL) != NULL;

    if (red_done && (rc->full || blue_done)) {
        snprintf(msg, msglen, "the receipts of refund %s are already issued",
                 rc->refund_id);
        return GP_DONE;
    }

    /* the live receipt, which this refund reverses */
    lcode = gp_hash_get(notice, "receipt_code", &len);
    lnum = gp_hash_get(notice, "receipt_number", NULL);
    lcheck = gp_hash_get(notice, "receipt_check", NULL);
    s = gp_hash_get(notice, "receipt_at", &idlen);

    if (lcode == NULL || len != 8 || lnum == NULL || strlen(lnum) != 10
        || lcheck == NULL || s == NULL || gp_parse_i64(s, idlen, &lat) != 0)
    {
        snprintf(msg, msglen, "the notice's receipt is not issued yet");
        return GP_RETRY;
    }

    /* the history starts with the receipt the first reversal reverses */
    seed = gp_hash_get(notice, "receipts", NULL) != NULL
               ? strdup("")
               : gp_receipt_entry(r, "blue", lcode, lnum, lcheck, paid, lat, "",
                                  NULL, NULL);
    if (seed == NULL) {
        snprintf(msg, msglen, "out of memory");
        return GP_RETRY;
    }

    if (!red_done) {
        rec =
            redisCommand(r->env->redis, "HGET {gpr}:r:%s:%s doc", lcode, lnum);
        if (rec == NULL
            || (rec->type != REDIS_REPLY_STRING
                && rec->type != REDIS_REPLY_NIL))
        {
            res = gp_receipt_redis_error(r, "HGET receipt document", rec, msg,
                                         msglen);
            rec = NULL;
            goto done;
        }

        if (rec->type != REDIS_REPLY_STRING) {
            snprintf(msg, msglen, "the record of receipt %s/%s is missing",
                     lcode, lnum);
            res = GP_RETRY;
            goto done;
        }

        rc->mode = GP_RC_RED;
        memcpy(rc->related_code, lcode, 9);
        memcpy(rc->related_number, lnum, 11);
        snprintf(rc->biz, sizeof(rc->biz), "%s:%s:red", rc->payment_code,
                 rc->refund_id);

        ldoc =
            gp_receipt_open_bytes(r, GP_RECEIPT_SEAL_DOC, lcode, lnum, rec->str,
                                  rec->len, &ldoc_len, msg, msglen);
        if (ldoc == NULL) {
            res = GP_RETRY;
            goto done;
        }

        res =
            gp_receipt_red_document(r, ldoc, rc, at, &doc, &live, msg, msglen);
        OPENSSL_cleanse(ldoc, ldoc_len);
        free(ldoc);
        ldoc = NULL;
        if (res != GP_DONE) {
            goto done;
        }

        expected = paid - (total - amount);

        if (live > expected) {
            snprintf(msg, msglen,
                     "refund %s waits: the live receipt %s/%s is of %lld fen, "
                     "an earlier refund's receipts come first",
                     rc->refund_id, lcode, lnum, (long long) live);
            res = GP_RETRY;
            goto done;
        }

        if (live < expected) {
            snprintf(msg, msglen,
                     "refund %s: the live receipt %s/%s is of %lld fen, the "
                     "refund expects %lld",
                     rc->refund_id, lcode, lnum, (long long) live,
                     (long long) expected);
            res = GP_FAILED;
            goto done;
        }

        rc->amount = -live;

        res = gp_receipt_one(r, ev, nkey, rc, doc, seed, msg, msglen);
        if (res != GP_DONE || rc->full) {
            goto done;
        }

        snprintf(first, sizeof(first), "%s", msg);
        json_decref(doc);
        doc = NULL;

        gp_receipt_fault(r, GP_FAULT_R_BETWEEN_RECEIPTS);
    }

    /* the receipt for what the payer keeps paid */
    rc->mode = GP_RC_REISSUE;
    rc->related_code[0] = '\0';
    rc->related_number[0] = '\0';
    rc->amount = paid - total;
    snprintf(rc->biz, sizeof(rc->biz), "%s:%s", rc->payment_code,
             rc->refund_id);
    snprintf(note, sizeof(note), "退费%s后重开，原票据%s/%s", rc->refund_id,
             lcode, lnum);

    res = gp_receipt_document(r, ev, notice, rc, at, rc->amount, note, &doc,
                              msg, msglen);
    if (res != GP_DONE) {
        goto done;
    }

    res = gp_receipt_one(r, ev, nkey, rc, doc, seed, msg, msglen);

    if (res == GP_DONE && first[0] != '\0') {
        snprintf(second, sizeof(second), "%s", msg);
        snprintf(msg, msglen, "%s, then %s", first, second);
    }

done:

    json_decref(doc);
    free(seed);

    if (rec != NULL) {
        freeReplyObject(rec);
    }

    return res;
}


/* locks the ledger of rc->code, issues the receipt, then the notice side */
static gp_result_t
gp_receipt_one(gp_receipt_t *r, const gp_event_t *ev, const char *nkey,
               gp_receipt_ctx_t *rc, json_t *doc, const char *seed, char *msg,
               size_t msglen)
{
    gp_ledger_t *l;
    gp_issued_t  is;
    gp_result_t  res;

    memset(&is, 0, sizeof(is));

    l = gp_receipt_ledger(r, rc->code, msg, msglen);
    if (l == NULL) {
        return GP_RETRY;
    }

    if (gp_ledger_lock(l) != 0) {
        snprintf(msg, msglen, "flock() of ledger %s failed", rc->code);
        return GP_RETRY;
    }

    res = gp_receipt_issue(r, ev, nkey, rc, doc, l, &is, msg, msglen);

    gp_ledger_unlock(l);

    if (res == GP_DONE) {
        res = gp_receipt_finish(r, ev, nkey, rc, &is, seed, msg, msglen);
    }

    gp_receipt_issued_free(&is);
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
    char         *doc_rec;
    size_t        rec_len;
    char          related[24];
    char         *line, *slash;
    const char   *st;
    int64_t       now;
    int           attempt;

    doc_str = NULL;
    doc_rec = NULL;
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

        /* Redis holds the document sealed (it names the payer in full) */
        free(doc_rec);
        doc_rec =
            gp_receipt_seal_bytes(r, GP_RECEIPT_SEAL_DOC, rc->code, rc->number,
                                  doc_str, strlen(doc_str), &rec_len);
        if (doc_rec == NULL) {
            snprintf(msg, msglen, "sealing the document of %s/%s failed",
                     rc->code, rc->number);
            res = GP_RETRY;
            goto fail;
        }

        snprintf(related, sizeof(related), "%s%s%s", rc->related_code,
                 rc->related_code[0] != '\0' ? "/" : "", rc->related_number);

        reply =
            redisCommand(r->env->redis,
                         "EVAL %s 4 {gpr}:rseq:%s {gpr}:head:%s {gpr}:stage:%s "
                         "{gpr}:biz:%s %s %s %s %s %s %s %s %s %s %s %s %s",
                         gp_receipt_stage_lua, rc->code, rc->code, rc->code,
                         rc->biz, rc->number, prev_hex, hash_hex, rc->biz,
                         doc_rec, seal_str, rc->check, rc->payment_code, nkey,
                         rc->mode == GP_RC_RED ? "red" : "blue", at, related);

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

        res = gp_receipt_commit(r, l, rc->number, hash_hex, rc->biz, related,
                                msg, msglen);
        if (res != GP_DONE) {
            goto fail;
        }

        gp_receipt_fault(r, GP_FAULT_R_AFTER_COMMIT);

        memcpy(out->code, rc->code, sizeof(out->code));
        memcpy(out->number, rc->number, sizeof(out->number));
        memcpy(out->check, rc->check, sizeof(out->check));
        memcpy(out->at, at, sizeof(out->at));
        out->doc = doc_str;
        out->doc_rec = doc_rec;
        out->seal = seal_str;
        doc_str = NULL;
        doc_rec = NULL;
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
    free(doc_rec);
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
    const char   *related;
    size_t        doc_len, seal_len, line_len;
    char          head_hex[65], want[96], *line, *plain;
    unsigned char p[GP_LEDGER_HASH_LEN], h[GP_LEDGER_HASH_LEN];
    uint64_t      n;

    line = NULL;
    plain = NULL;

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
        related = gp_hash_get(&fake, "related", NULL);
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

    /* staged sealed: the ledger and the hash take the plain bytes */
    plain = gp_receipt_open_bytes(r, GP_RECEIPT_SEAL_DOC, l->code, number, doc,
                                  doc_len, &doc_len, msg, msglen);
    if (plain == NULL) {
        res = GP_RETRY;
        goto done;
    }

    doc = plain;

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
    res = gp_receipt_commit(r, l, want, hash, biz,
                            related != NULL ? related : "", msg, msglen);

    if (res == GP_DONE) {
        r->env->log(r->env, GP_LOG_WARN, NULL,
                    "receipt %s/%s: staged entry committed", l->code, want);
    }

done:

    if (plain != NULL) {
        OPENSSL_cleanse(plain, doc_len);
        free(plain);
    }

    free(line);
    freeReplyObject(reply);
    return res;
}


static gp_result_t
gp_receipt_commit(gp_receipt_t *r, gp_ledger_t *l, const char *number,
                  const char *hash_hex, const char *biz, const char *related,
                  char *msg, size_t msglen)
{
    redisReply *reply;
    const char *st;
    char        rkey[64];

    /* the record a red-letter receipt reverses gets reversed_by */
    if (strlen(related) == 19 && related[8] == '/'
        && strspn(related, "0123456789/") == 19)
    {
        snprintf(rkey, sizeof(rkey), "{gpr}:r:%.8s:%.10s", related,
                 related + 9);
    } else {
        snprintf(rkey, sizeof(rkey), "{gpr}:r:%s:%s", l->code, number);
    }

    reply =
        redisCommand(r->env->redis,
                     "EVAL %s 6 {gpr}:stage:%s {gpr}:head:%s {gpr}:r:%s:%s "
                     "{gpr}:biz:%s {gpr}:ridx:%s:%s %s %s %s %s",
                     gp_receipt_commit_lua, l->code, l->code, l->code, number,
                     biz, l->code, number, rkey, l->code, number, hash_hex);

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
    size_t      i, len;

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
    out->doc_rec = strdup(reply->element[2]->str);
    out->seal = strdup(reply->element[3]->str);
    out->has_pdf = reply->element[4]->type == REDIS_REPLY_STRING;
    out->doc = gp_receipt_open_bytes(r, GP_RECEIPT_SEAL_DOC, code, number,
                                     reply->element[2]->str,
                                     reply->element[2]->len, &len, msg, msglen);

    freeReplyObject(reply);

    if (out->doc == NULL) {
        return GP_RETRY;
    }

    if (out->doc_rec == NULL || out->seal == NULL) {
        snprintf(msg, msglen, "out of memory");
        return GP_RETRY;
    }

    return GP_DONE;
}


/*
 * After the commit: the PDF into the record, then the notice (its own slot):
 * fields, history, document, and the receipt.issued / receipt.reversed
 * event, once.
 */
static gp_result_t
gp_receipt_finish(gp_receipt_t *r, const gp_event_t *ev, const char *nkey,
                  gp_receipt_ctx_t *rc, gp_issued_t *is, const char *seed,
                  char *msg, size_t msglen)
{
    redisReply *reply, *st;
    gp_result_t res;
    const char *mode, *what;
    char        dkey[64], skey[32], fkey[32], marker[32], amount[24], *entry;
    int64_t     at;
    int         red;

    red = rc->mode == GP_RC_RED;
    what = red ? "red-letter receipt" : "receipt";

    if (!is->has_pdf) {
        res = gp_receipt_render(r, is, msg, msglen);
        if (res != GP_DONE) {
            return res;
        }
    }

    if (gp_parse_i64(is->at, strlen(is->at), &at) != 0) {
        snprintf(msg, msglen, "receipt %s/%s has no valid time", is->code,
                 is->number);
        return GP_RETRY;
    }

    entry = gp_receipt_entry(r, red ? "red" : "blue", is->code, is->number,
                             is->check, rc->amount, at, rc->refund_id,
                             red ? rc->related_code : NULL,
                             red ? rc->related_number : NULL);
    if (entry == NULL) {
        snprintf(msg, msglen, "out of memory");
        return GP_RETRY;
    }

    switch (rc->mode) {
    case GP_RC_RED:
        mode = "red";
        snprintf(marker, sizeof(marker), "r%s.red_receipt", rc->nn);
        break;
    case GP_RC_REISSUE:
        mode = "reissue";
        snprintf(marker, sizeof(marker), "r%s.receipt", rc->nn);
        break;
    default:
        mode = "first";
        marker[0] = '\0';
        break;
    }

    snprintf(dkey, sizeof(dkey), "{gp%u}:rcpt:%.*s%s", rc->shard,
             (int) rc->seq_len, rc->seq, red ? ":red" : "");
    snprintf(skey, sizeof(skey), "{gp%u}:settled", rc->shard);
    snprintf(fkey, sizeof(fkey), "{gp%u}:final", rc->shard);
    snprintf(amount, sizeof(amount), "%lld", (long long) rc->amount);

    reply = redisCommand(r->env->redis,
                         "EVAL %s 4 %s %s %s %s %s %s %s %s %s %s %s %s %s %s "
                         "%s %s",
                         gp_receipt_notice_lua, nkey, dkey, skey, fkey, mode,
                         is->code, is->number, is->check, is->at, is->doc_rec,
                         rc->payment_code, marker, amount, entry, rc->refund_id,
                         seed);
    free(entry);

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return gp_receipt_redis_error(r, "EVAL store receipt on the notice",
                                      reply, msg, msglen);
    }

    st = reply->element[0];

    if (strcmp(st->str, "ISSUED") == 0) {
        snprintf(msg, msglen, "issued %s %s/%s", what, is->code, is->number);
        res = GP_DONE;

    } else if (strcmp(st->str, "EXISTS") == 0 && reply->elements == 3
               && reply->element[1]->type == REDIS_REPLY_STRING
               && reply->element[2]->type == REDIS_REPLY_STRING
               && strcmp(reply->element[1]->str, is->code) == 0
               && strcmp(reply->element[2]->str, is->number) == 0)
    {
        snprintf(msg, msglen, "%s already issued: %s/%s", what, is->code,
                 is->number);
        res = GP_DONE;

    } else if (strcmp(st->str, "NONE") == 0) {
        r->env->log(r->env, GP_LOG_ERROR, ev,
                    "receipt %s/%s is in the ledger but its notice is gone",
                    is->code, is->number);
        snprintf(msg, msglen, "notice not found");
        res = GP_FAILED;

    } else {
        snprintf(msg, msglen, "the notice names another %s than %s/%s", what,
                 is->code, is->number);
        res = GP_FAILED;
    }

    freeReplyObject(reply);
    return res;
}


/*
 * One receipt of the notice's history (field receipts), compact JSON with a
 * fixed key order: {"kind","code","number","check_code","amount" (fen,
 * negative for a red-letter receipt),"issued_at","verify_url"[,"refund_id"]
 * [,"reverses":{"code","number"}]}; malloc'd, or NULL
 */
static char *
gp_receipt_entry(gp_receipt_t *r, const char *kind, const char *code,
                 const char *number, const char *check, int64_t amount,
                 int64_t at, const char *refund_id, const char *rcode,
                 const char *rnumber)
{
    json_t *e;
    char    when[26], url[1200], *s;

    gp_time_rfc3339(at, when);
    snprintf(url, sizeof(url), "%s/r/%s/%s?c=%s", r->verify_url, code, number,
             check);

    e = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "kind", kind, "code",
                  code, "number", number, "check_code", check, "amount",
                  (json_int_t) amount, "issued_at", when, "verify_url", url);
    if (e == NULL) {
        return NULL;
    }

    if ((refund_id != NULL && refund_id[0] != '\0'
         && json_object_set_new(e, "refund_id", json_string(refund_id)) != 0)
        || (rcode != NULL && rnumber != NULL
            && json_object_set_new(
                   e, "reverses",
                   json_pack("{s:s, s:s}", "code", rcode, "number", rnumber))
                   != 0))
    {
        json_decref(e);
        return NULL;
    }

    s = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(e);
    return s;
}


/*
 * A receipt's document or PDF as Redis holds it: a gp_seal record under the
 * pii key (docs/internals.md, "Personal data at rest"), bound to the field
 * (GP_RECEIPT_SEAL_DOC, GP_RECEIPT_SEAL_PDF) and to the receipt (code as the
 * unit, number as the request_id, created_at 0). malloc'd, NUL-terminated,
 * or NULL.
 */
static char *
gp_receipt_seal_bytes(gp_receipt_t *r, const char *field, const char *code,
                      const char *number, const void *plain, size_t n,
                      size_t *outn)
{
    gp_seal_ctx_t sc;
    char         *out;
    size_t        outlen;

    if (n > GP_SEAL_PLAIN_MAX) {
        return NULL;
    }

    sc.field = field;
    sc.unit = code;
    sc.request_id = number;
    sc.created_at = 0;

    outlen = GP_SEAL_RECORD_MAX(n);
    out = malloc(outlen);
    if (out == NULL) {
        return NULL;
    }

    if (gp_seal(r->env->pii_keys, &sc, plain, n, out, outlen, outn)
        != GP_SEAL_OK) {
        free(out);
        return NULL;
    }

    return out;
}


/*
 * The plain bytes of a record gp_receipt_seal_bytes made: malloc'd,
 * NUL-terminated, or NULL with msg naming the receipt and the key id, never
 * the content.
 */
static char *
gp_receipt_open_bytes(gp_receipt_t *r, const char *field, const char *code,
                      const char *number, const char *rec, size_t reclen,
                      size_t *outn, char *msg, size_t msglen)
{
    gp_seal_ctx_t sc;
    gp_seal_rc_t  rc;
    char         *out, kid[GP_SEAL_KID_MAX + 1];

    sc.field = field;
    sc.unit = code;
    sc.request_id = number;
    sc.created_at = 0;

    out = malloc(reclen + 1);
    if (out == NULL) {
        snprintf(msg, msglen, "out of memory opening receipt %s/%s", code,
                 number);
        return NULL;
    }

    rc =
        gp_seal_open(r->env->pii_keys, &sc, rec, reclen, out, reclen + 1, outn);
    if (rc != GP_SEAL_OK) {
        free(out);

        if (gp_seal_record_kid(rec, reclen, kid) != 0) {
            snprintf(kid, sizeof(kid), "?");
        }

        snprintf(msg, msglen,
                 "the %s of receipt %s/%s in redis does not open (key id "
                 "\"%s\"): %s",
                 field, code, number, kid, gp_seal_strerror(rc));
        return NULL;
    }

    return out;
}


static gp_result_t
gp_receipt_render(gp_receipt_t *r, gp_issued_t *is, char *msg, size_t msglen)
{
    json_t        *doc, *seal;
    json_error_t   jerr;
    redisReply    *reply;
    unsigned char *pdf;
    size_t         len;
    char           url[1200], err[256], *rec;
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

    rec = gp_receipt_seal_bytes(r, GP_RECEIPT_SEAL_PDF, is->code, is->number,
                                pdf, len, &len);
    free(pdf);

    if (rec == NULL) {
        snprintf(msg, msglen, "sealing the PDF of %s/%s failed", is->code,
                 is->number);
        return GP_RETRY;
    }

    reply = redisCommand(r->env->redis, "HSET {gpr}:r:%s:%s pdf %b", is->code,
                         is->number, rec, len);
    free(rec);

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
    if (is->doc != NULL) {
        OPENSSL_cleanse(is->doc, strlen(is->doc));
    }

    free(is->doc);
    free(is->doc_rec);
    free(is->seal);
    is->doc = NULL;
    is->doc_rec = NULL;
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
                    gp_receipt_ctx_t *rc, int64_t when, int64_t kept,
                    const char *note, json_t **out, char *msg, size_t msglen)
{
    gp_receipt_payer_t payer;
    gp_result_t        res;

    res = gp_receipt_build(r, ev, notice, rc, when, kept, note, &payer, out,
                           msg, msglen);
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
                 gp_receipt_ctx_t *rc, int64_t when, int64_t kept,
                 const char *note, gp_receipt_payer_t *payer, json_t **out,
                 char *msg, size_t msglen)
{
    const char *status, *s, *payer_type, *payer_id, *payer_name, *channel,
        *remark, *item;
    size_t   len, id_len, name_len, channel_len, remark_len, item_len;
    int64_t  amount;
    unsigned yy;
    json_t  *doc, *items, *it, *rem;

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

    /* the year of the payment; of the refund, for a receipt a refund made */
    yy = gp_year2(when);
    snprintf(rc->code, sizeof(rc->code), "%s%02u", r->prefix, yy % 100);

    if (kept < 0) {
        items = gp_receipt_items(r, notice, amount, 0, msg, msglen);
        if (items == NULL) {
            return GP_FAILED;
        }

    } else {
        /* what is kept after a partial refund: one line of the notice's item */
        item = gp_hash_get(notice, "item_code", &item_len);
        if (item == NULL) {
            snprintf(msg, msglen, "the notice has no item_code");
            return GP_FAILED;
        }

        amount = kept;

        it = gp_receipt_item(r, item, item_len, 1, kept, 0, msg, msglen);
        if (it == NULL) {
            return GP_FAILED;
        }

        items = json_array();
        if (items == NULL || json_array_append_new(items, it) != 0) {
            json_decref(items);
            snprintf(msg, msglen, "out of memory building the items");
            return GP_RETRY;
        }
    }

    /* the notice's remark, and what the receipt is, if it needs saying */
    if (note != NULL) {
        rem = json_pack("s++", remark, remark_len > 0 ? "；" : "", note);
    } else {
        rem = json_stringn(remark, remark_len);
    }

    if (rem == NULL) {
        json_decref(items);
        snprintf(msg, msglen, "out of memory building the document");
        return GP_RETRY;
    }

    doc = json_object();
    if (doc == NULL) {
        json_decref(items);
        json_decref(rem);
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
        || json_object_set_new(doc, "Remark", rem) != 0)
    {
        json_decref(doc);
        snprintf(msg, msglen, "out of memory building the document");
        return GP_RETRY;
    }

    *out = doc;
    return GP_DONE;
}


/*
 * The red-letter receipt of the live receipt, from the live receipt's own
 * document ldoc: the same payer, items and issuer, quantities and amounts
 * negated, RelatedInvoiceCode/Number naming it, the refund in Remark; *live
 * gets the live receipt's total in fen. Without its number, check code and
 * issue time.
 */
static gp_result_t
gp_receipt_red_document(gp_receipt_t *r, const char *ldoc, gp_receipt_ctx_t *rc,
                        int64_t when, json_t **out, int64_t *live, char *msg,
                        size_t msglen)
{
    json_t      *doc, *items, *it, *v;
    json_error_t jerr;
    const char  *total;
    char         neg[32], remark[96];
    size_t       i;

    doc = json_loads(ldoc, 0, &jerr);
    if (doc == NULL || !json_is_object(doc)) {
        json_decref(doc);
        snprintf(msg, msglen, "the document of receipt %s/%s does not parse",
                 rc->related_code, rc->related_number);
        return GP_FAILED;
    }

    v = json_object_get(doc, "TotalAmount");
    total = json_is_string(v) ? json_string_value(v) : NULL;
    items = json_object_get(doc, "Items");

    if (total == NULL || total[0] == '-'
        || gp_yuan_to_fen(total, strlen(total), live) != 0 || *live < 1
        || !json_is_array(items) || json_array_size(items) == 0)
    {
        json_decref(doc);
        snprintf(msg, msglen,
                 "the document of receipt %s/%s has no valid TotalAmount "
                 "or Items",
                 rc->related_code, rc->related_number);
        return GP_FAILED;
    }

    json_array_foreach(items, i, it)
    {
        v = json_object_get(it, "ItemQuantity");
        if (!json_is_integer(v)
            || json_object_set_new(it, "ItemQuantity",
                                   json_integer(-json_integer_value(v)))
                   != 0)
        {
            goto bad;
        }

        v = json_object_get(it, "ItemAmount");
        if (!json_is_string(v) || json_string_value(v)[0] == '-'
            || strlen(json_string_value(v)) > sizeof(neg) - 2)
        {
            goto bad;
        }

        snprintf(neg, sizeof(neg), "-%s", json_string_value(v));
        if (json_object_set_new(it, "ItemAmount", json_string(neg)) != 0) {
            goto bad;
        }
    }

    snprintf(neg, sizeof(neg), "-%s", total);
    snprintf(remark, sizeof(remark), "冲红原因：退费%s", rc->refund_id);

    if (json_object_set_new(doc, "TotalAmount", json_string(neg)) != 0
        || json_object_set_new(doc, "EInvoiceName",
                               json_string(GP_RECEIPT_RED_NAME))
               != 0
        || json_object_set_new(doc, "RelatedInvoiceCode",
                               json_string(rc->related_code))
               != 0
        || json_object_set_new(doc, "RelatedInvoiceNumber",
                               json_string(rc->related_number))
               != 0
        || json_object_set_new(doc, "Remark", json_string(remark)) != 0)
    {
        json_decref(doc);
        snprintf(msg, msglen, "out of memory building the document");
        return GP_RETRY;
    }

    /* a red-letter receipt belongs to the year of the refund */
    snprintf(rc->code, sizeof(rc->code), "%s%02u", r->prefix,
             gp_year2(when) % 100);

    *out = doc;
    return GP_DONE;

bad:

    json_decref(doc);
    snprintf(msg, msglen, "the items of receipt %s/%s are not valid",
             rc->related_code, rc->related_number);
    return GP_FAILED;
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
