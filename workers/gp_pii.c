/*
 * gp_pii: the ops commands of personal data at rest.
 *
 *   gov-pay-worker -c worker.json pii status
 *       counts the notices by the key id their payer is sealed under, and
 *       those still in clear (stored by an edge older than sealing); changes
 *       nothing
 *   gov-pay-worker -c worker.json pii reseal
 *       re-seals under the first key of "pii_key" every notice whose payer is
 *       sealed under another listed key, and seals those still in clear
 *       (their clear fields are deleted), so an old key can be retired
 *
 * Both walk the notices with SCAN (MATCH {gp*}:n:*, TYPE hash, COUNT 500) on
 * one blocking connection, and read a batch with one pipelined HMGET per
 * notice. A notice is rewritten by one script that first checks that it
 * still holds what was read (compare and set), so a run is idempotent, safe
 * beside a running edge and workers, and safe to stop and start again. SCAN
 * may return a key twice: the second visit finds it current. On Redis
 * Cluster, run it against every master.
 *
 * Then the receipts, which name the payer in full (docs/internals.md,
 * "Personal data at rest"): the records {gpr}:r:<code>:<number> (fields doc
 * and pdf, SCAN MATCH {gpr}:r:* TYPE hash) and the documents beside the
 * notices, {gpN}:rcpt:<seq>[:red] (SCAN TYPE string; which receipt each one
 * is, and so what it is bound to, is the notice's receipt_code /
 * receipt_number, red_receipt_* for :red). Counted by key id, re-sealed
 * under the first key by compare and set like the notices.
 *
 * Nothing of a payer is printed: counts, notice keys, key ids and reasons.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <openssl/crypto.h>

#include "gp_pii.h"
#include "gp_plugin.h"
#include "gp_runtime.h"
#include "gp_seal.h"
#include "gp_util.h"


#define GP_PII_SCAN_COUNT "500"
#define GP_PII_PLAIN_MAX  512 /* 100 characters of UTF-8 and more */
#define GP_PII_KIDS_MAX   (GP_SEAL_KEYS_MAX + 1)


/*
 * KEYS[1] the notice. ARGV[1], ARGV[2]: the payer_name_sealed and
 * payer_id_sealed read ("" and "": the notice was read in clear); ARGV[3],
 * ARGV[4]: the new sealed values; ARGV[5], ARGV[6]: the masked forms (for a
 * notice read in clear). → 1 (written) | 0 (changed meanwhile: untouched)
 */
static const char gp_pii_reseal_lua[] =
    "local cur = redis.call('HMGET', KEYS[1], 'payer_name_sealed', "
    "'payer_id_sealed')\n"
    "if ARGV[1] == '' then\n"
    "  if cur[1] or cur[2] or redis.call('HEXISTS', KEYS[1], 'payer_id') == 0 "
    "then\n"
    "    return 0\n"
    "  end\n"
    "  redis.call('HSET', KEYS[1], 'payer_name_sealed', ARGV[3], "
    "'payer_id_sealed', ARGV[4],\n"
    "             'payer_name_masked', ARGV[5], 'payer_id_masked', ARGV[6])\n"
    "  redis.call('HDEL', KEYS[1], 'payer_name', 'payer_id')\n"
    "  return 1\n"
    "end\n"
    "if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'payer_name_sealed', ARGV[3], "
    "'payer_id_sealed', ARGV[4])\n"
    "return 1\n";


/*
 * KEYS[1] a receipt record. ARGV: doc read, doc new, pdf read, pdf new (""
 * for a field that stays or is absent). → 1 | 0 (changed meanwhile)
 */
static const char gp_pii_receipt_lua[] =
    "local cur = redis.call('HMGET', KEYS[1], 'doc', 'pdf')\n"
    "if (cur[1] or '') ~= ARGV[1] or (cur[2] or '') ~= ARGV[3] then "
    "return 0 end\n"
    "if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'doc', ARGV[2]) end\n"
    "if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'pdf', ARGV[4]) end\n"
    "return 1\n";

/* KEYS[1] {gpN}:rcpt:<seq>[:red]. ARGV: read, new. → 1 | 0 */
static const char gp_pii_rcpt_lua[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')\n"
    "return 1\n";


/* the fields read of each notice, in HMGET order */
enum {
    GP_PII_UNIT = 0,
    GP_PII_REQUEST_ID,
    GP_PII_CREATED_AT,
    GP_PII_NAME_SEALED,
    GP_PII_ID_SEALED,
    GP_PII_NAME_CLEAR,
    GP_PII_ID_CLEAR,
    GP_PII_NFIELDS
};


typedef struct {
    char      kid[GP_SEAL_KID_MAX + 1];
    long long n;
} gp_pii_kid_count_t;


typedef struct {
    gp_config_t       *conf;
    redisContext      *c;
    int                reseal;
    const char        *current; /* the key id that seals */
    long long          scanned;
    long long          already; /* under the current key */
    long long          resealed;
    long long          sealed;  /* from clear */
    long long          clear;   /* status: in clear */
    long long          changed; /* changed meanwhile, left alone */
    long long          other;   /* no payer: not a notice of the edge */
    long long          failed;
    gp_pii_kid_count_t kids[GP_PII_KIDS_MAX];
    size_t             nkids;
    /* the receipts: records' doc and pdf, documents beside the notices */
    long long          r_scanned;
    long long          r_already;
    long long          r_resealed;
    long long          r_changed;
    long long          r_failed;
    gp_pii_kid_count_t rkids[GP_PII_KIDS_MAX];
    size_t             nrkids;
} gp_pii_run_t;


static int  gp_pii_scan(gp_pii_run_t *run);
static int  gp_pii_batch(gp_pii_run_t *run, redisReply *keys);
static int  gp_pii_notice(gp_pii_run_t *run, const char *key, redisReply *f);
static int  gp_pii_reseal(gp_pii_run_t *run, const char *key, redisReply *f,
                          int clear);
static int  gp_pii_open(gp_pii_run_t *run, const char *key, redisReply *f,
                        gp_seal_ctx_t *sc, const char *field, int idx, char *out,
                        size_t *n);
static int  gp_pii_ctx(const char *key, redisReply *f, gp_seal_ctx_t *sc);
static int  gp_pii_notice_key(const gp_pii_run_t *run, const char *key,
                              size_t len);
static void gp_pii_count_kid(gp_pii_run_t *run, const char *kid);
static const char *gp_pii_str(redisReply *f, int idx, size_t *len);
static void        gp_pii_report(const gp_pii_run_t *run);
static int         gp_pii_receipts(gp_pii_run_t *run, const char *match,
                                   const char *type);
static int         gp_pii_record(gp_pii_run_t *run, const char *key);
static int         gp_pii_rcpt(gp_pii_run_t *run, const char *key);
static char       *gp_pii_rewrap(gp_pii_run_t *run, const char *key,
                                 const char *field, const char *code,
                                 const char *number, const char *rec, size_t len,
                                 size_t *outn, int *state);
static void        gp_pii_count_rkid(gp_pii_run_t *run, const char *kid);


int
gp_pii_command(gp_config_t *conf, int argc, char **argv)
{
    gp_pii_run_t *run;
    char          err[512];
    int           rc;

    if (argc != 1
        || (strcmp(argv[0], "status") != 0 && strcmp(argv[0], "reseal") != 0))
    {
        fprintf(stderr, "usage: gov-pay-worker -c <worker.json> pii "
                        "status | reseal\n");
        return 2;
    }

    if (conf->pii_keys == NULL) {
        fprintf(stderr,
                "gov-pay-worker: pii: %s has no \"pii_key\" (the key file "
                "that seals the payer's name and ID number)\n",
                conf->path);
        return 2;
    }

    run = calloc(1, sizeof(gp_pii_run_t));
    if (run == NULL) {
        fprintf(stderr, "gov-pay-worker: pii: out of memory\n");
        return 1;
    }

    run->conf = conf;
    run->reseal = strcmp(argv[0], "reseal") == 0;
    run->current = gp_seal_keys_kid(conf->pii_keys, 0);

    run->c = gp_redis_connect(conf, err, sizeof(err));
    if (run->c == NULL) {
        fprintf(stderr, "gov-pay-worker: pii %s: %s\n", argv[0], err);
        free(run);
        return 1;
    }

    rc = gp_pii_scan(run);

    if (rc == 0) {
        rc = gp_pii_receipts(run, "{gpr}:r:*", "hash");
    }

    if (rc == 0) {
        rc = gp_pii_receipts(run, "{gp*}:rcpt:*", "string");
    }

    gp_pii_report(run);

    if (rc == 0 && (run->failed > 0 || run->r_failed > 0)) {
        rc = -1;
    }

    redisFree(run->c);
    free(run);

    return rc == 0 ? 0 : 1;
}


/* the whole keyspace, a SCAN batch at a time */
static int
gp_pii_scan(gp_pii_run_t *run)
{
    redisReply *r;
    char        cursor[32];
    int         rc;

    snprintf(cursor, sizeof(cursor), "0");

    do {
        r = redisCommand(run->c, "SCAN %s MATCH {gp*}:n:* COUNT %s TYPE hash",
                         cursor, GP_PII_SCAN_COUNT);

        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2
            || r->element[0]->type != REDIS_REPLY_STRING
            || r->element[0]->len >= sizeof(cursor)
            || r->element[1]->type != REDIS_REPLY_ARRAY)
        {
            fprintf(stderr, "gov-pay-worker: pii: SCAN failed: %s\n",
                    r == NULL                      ? run->c->errstr
                    : r->type == REDIS_REPLY_ERROR ? r->str
                                                   : "unexpected reply");
            freeReplyObject(r);
            return -1;
        }

        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);

        rc = gp_pii_batch(run, r->element[1]);
        freeReplyObject(r);

        if (rc != 0) {
            return -1;
        }

    } while (strcmp(cursor, "0") != 0);

    return 0;
}


/*
 * one pipelined HMGET per notice of the batch; every reply is read before a
 * notice is rewritten (the rewrite is a command of its own on the same
 * connection)
 */
static int
gp_pii_batch(gp_pii_run_t *run, redisReply *keys)
{
    redisReply **replies;
    size_t       i, sent;
    int          rc;

    if (keys->elements == 0) {
        return 0;
    }

    replies = calloc(keys->elements, sizeof(redisReply *));
    if (replies == NULL) {
        fprintf(stderr, "gov-pay-worker: pii: out of memory\n");
        return -1;
    }

    rc = 0;
    sent = 0;

    for (i = 0; i < keys->elements; i++) {
        if (keys->element[i]->type != REDIS_REPLY_STRING
            || !gp_pii_notice_key(run, keys->element[i]->str,
                                  keys->element[i]->len))
        {
            continue;
        }

        if (redisAppendCommand(run->c,
                               "HMGET %s unit request_id created_at "
                               "payer_name_sealed payer_id_sealed payer_name "
                               "payer_id",
                               keys->element[i]->str)
            != REDIS_OK)
        {
            fprintf(stderr, "gov-pay-worker: pii: %s\n", run->c->errstr);
            rc = -1;
            goto done;
        }

        sent++;
    }

    for (i = 0; i < keys->elements && sent > 0; i++) {
        if (keys->element[i]->type != REDIS_REPLY_STRING
            || !gp_pii_notice_key(run, keys->element[i]->str,
                                  keys->element[i]->len))
        {
            continue;
        }

        sent--;

        if (redisGetReply(run->c, (void **) &replies[i]) != REDIS_OK) {
            fprintf(stderr, "gov-pay-worker: pii: HMGET failed: %s\n",
                    run->c->errstr);
            rc = -1;
            goto done;
        }
    }

    for (i = 0; i < keys->elements && rc == 0; i++) {
        if (replies[i] == NULL) {
            continue;
        }

        if (replies[i]->type != REDIS_REPLY_ARRAY
            || replies[i]->elements != GP_PII_NFIELDS)
        {
            fprintf(stderr, "gov-pay-worker: pii: HMGET %s: unexpected reply\n",
                    keys->element[i]->str);
            rc = -1;
            break;
        }

        rc = gp_pii_notice(run, keys->element[i]->str, replies[i]);
    }

done:

    for (i = 0; i < keys->elements; i++) {
        freeReplyObject(replies[i]);
    }

    free(replies);

    return rc;
}


/* 0, or -1 when Redis failed (a notice that does not open is counted) */
static int
gp_pii_notice(gp_pii_run_t *run, const char *key, redisReply *f)
{
    const char *name_rec, *id_rec;
    char        name_kid[GP_SEAL_KID_MAX + 1], id_kid[GP_SEAL_KID_MAX + 1];
    size_t      name_len, id_len;

    run->scanned++;

    name_rec = gp_pii_str(f, GP_PII_NAME_SEALED, &name_len);
    id_rec = gp_pii_str(f, GP_PII_ID_SEALED, &id_len);

    if (name_rec == NULL && id_rec == NULL) {
        if (gp_pii_str(f, GP_PII_ID_CLEAR, NULL) == NULL
            || gp_pii_str(f, GP_PII_NAME_CLEAR, NULL) == NULL)
        {
            run->other++;
            return 0;
        }

        /* stored in clear by an edge older than sealing */
        if (!run->reseal) {
            run->clear++;
            return 0;
        }

        return gp_pii_reseal(run, key, f, 1);
    }

    if (name_rec == NULL || id_rec == NULL
        || gp_seal_record_kid(name_rec, name_len, name_kid) != 0
        || gp_seal_record_kid(id_rec, id_len, id_kid) != 0)
    {
        fprintf(stderr,
                "gov-pay-worker: pii: %s: its payer_name_sealed and "
                "payer_id_sealed are not both sealed records\n",
                key);
        run->failed++;
        return 0;
    }

    if (!run->reseal) {
        gp_pii_count_kid(run, id_kid);

        if (strcmp(name_kid, id_kid) != 0) {
            gp_pii_count_kid(run, name_kid);
        }

        return 0;
    }

    if (strcmp(name_kid, run->current) == 0
        && strcmp(id_kid, run->current) == 0) {
        run->already++;
        return 0;
    }

    return gp_pii_reseal(run, key, f, 0);
}


/* opened (or read in clear), sealed under the current key, written back */
static int
gp_pii_reseal(gp_pii_run_t *run, const char *key, redisReply *f, int clear)
{
    const char   *argv[10], *s;
    char          name[GP_PII_PLAIN_MAX], id[GP_PII_PLAIN_MAX];
    char          name_masked[GP_PII_PLAIN_MAX], id_masked[GP_PII_PLAIN_MAX];
    char          name_rec[GP_SEAL_RECORD_MAX(GP_PII_PLAIN_MAX)];
    char          id_rec[GP_SEAL_RECORD_MAX(GP_PII_PLAIN_MAX)];
    size_t        argvlen[10], name_len, id_len, name_rlen, id_rlen, i;
    gp_seal_ctx_t sc;
    redisReply   *r;
    int           rc;

    rc = 0;
    name_masked[0] = '\0';
    id_masked[0] = '\0';

    if (gp_pii_ctx(key, f, &sc) != 0) {
        run->failed++;
        goto done;
    }

    if (clear) {
        s = gp_pii_str(f, GP_PII_NAME_CLEAR, &name_len);
        if (name_len >= sizeof(name)) {
            goto too_long;
        }
        memcpy(name, s, name_len + 1);

        s = gp_pii_str(f, GP_PII_ID_CLEAR, &id_len);
        if (id_len >= sizeof(id)) {
            goto too_long;
        }
        memcpy(id, s, id_len + 1);

        if (gp_mask_name(name, name_len, name_masked, sizeof(name_masked)) < 0
            || gp_mask_id(id, id_len, id_masked, sizeof(id_masked)) < 0)
        {
            fprintf(stderr,
                    "gov-pay-worker: pii: %s: its payer name or ID number "
                    "in clear is not UTF-8: left alone\n",
                    key);
            run->failed++;
            goto done;
        }

    } else if (gp_pii_open(run, key, f, &sc, "payer_name", GP_PII_NAME_SEALED,
                           name, &name_len)
                   != 0
               || gp_pii_open(run, key, f, &sc, "payer_id", GP_PII_ID_SEALED,
                              id, &id_len)
                      != 0)
    {
        run->failed++;
        goto done;
    }

    sc.field = "payer_name";
    if (gp_seal(run->conf->pii_keys, &sc, name, name_len, name_rec,
                sizeof(name_rec), &name_rlen)
        != GP_SEAL_OK)
    {
        goto seal_failed;
    }

    sc.field = "payer_id";
    if (gp_seal(run->conf->pii_keys, &sc, id, id_len, id_rec, sizeof(id_rec),
                &id_rlen)
        != GP_SEAL_OK)
    {
        goto seal_failed;
    }

    /* the masked forms count only for a notice read in clear */
    argv[0] = "EVAL";
    argv[1] = gp_pii_reseal_lua;
    argv[2] = "1";
    argv[3] = key;
    argv[4] = clear ? "" : gp_pii_str(f, GP_PII_NAME_SEALED, NULL);
    argv[5] = clear ? "" : gp_pii_str(f, GP_PII_ID_SEALED, NULL);
    argv[6] = name_rec;
    argv[7] = id_rec;
    argv[8] = name_masked;
    argv[9] = id_masked;

    for (i = 0; i < 10; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    r = redisCommandArgv(run->c, 10, argv, argvlen);

    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        fprintf(stderr,
                "gov-pay-worker: pii: %s: the reseal script failed: %s\n", key,
                r == NULL                      ? run->c->errstr
                : r->type == REDIS_REPLY_ERROR ? r->str
                                               : "unexpected reply");
        freeReplyObject(r);
        rc = -1;
        goto done;
    }

    if (r->integer == 1) {
        if (clear) {
            run->sealed++;
        } else {
            run->resealed++;
        }

    } else {
        run->changed++;
    }

    freeReplyObject(r);
    goto done;

too_long:

    fprintf(stderr,
            "gov-pay-worker: pii: %s: its payer name or ID number in clear "
            "is longer than %d bytes: left alone\n",
            key, GP_PII_PLAIN_MAX - 1);
    run->failed++;
    goto done;

seal_failed:

    fprintf(stderr, "gov-pay-worker: pii: %s: sealing failed\n", key);
    run->failed++;

done:

    OPENSSL_cleanse(name, sizeof(name));
    OPENSSL_cleanse(id, sizeof(id));

    return rc;
}


static int
gp_pii_open(gp_pii_run_t *run, const char *key, redisReply *f,
            gp_seal_ctx_t *sc, const char *field, int idx, char *out, size_t *n)
{
    const char  *rec;
    char         kid[GP_SEAL_KID_MAX + 1];
    size_t       len;
    gp_seal_rc_t rc;

    rec = gp_pii_str(f, idx, &len);
    sc->field = field;

    rc = len < GP_PII_PLAIN_MAX ? gp_seal_open(run->conf->pii_keys, sc, rec,
                                               len, out, GP_PII_PLAIN_MAX, n)
                                : GP_SEAL_MALFORMED;

    if (rc != GP_SEAL_OK) {
        if (gp_seal_record_kid(rec, len, kid) != 0) {
            snprintf(kid, sizeof(kid), "?");
        }

        fprintf(stderr,
                "gov-pay-worker: pii: %s: its %s_sealed does not open (key id "
                "\"%s\"): %s\n",
                key, field, kid, gp_seal_strerror(rc));
        return -1;
    }

    return 0;
}


/* what the records of a notice are bound to */
static int
gp_pii_ctx(const char *key, redisReply *f, gp_seal_ctx_t *sc)
{
    const char *created;
    size_t      len;
    int64_t     at;

    sc->unit = gp_pii_str(f, GP_PII_UNIT, NULL);
    sc->request_id = gp_pii_str(f, GP_PII_REQUEST_ID, NULL);
    created = gp_pii_str(f, GP_PII_CREATED_AT, &len);

    if (sc->unit == NULL || sc->request_id == NULL || created == NULL
        || gp_parse_i64(created, len, &at) != 0)
    {
        fprintf(stderr,
                "gov-pay-worker: pii: %s: no valid unit, request_id or "
                "created_at, which its payer is bound to\n",
                key);
        return -1;
    }

    sc->created_at = at;

    return 0;
}


/* {gpN}:n:<seq> with N below the worker's shards */
static int
gp_pii_notice_key(const gp_pii_run_t *run, const char *key, size_t len)
{
    unsigned long shard;
    char         *end;
    size_t        i;

    if (len < 9 || strlen(key) != len || strncmp(key, "{gp", 3) != 0) {
        return 0;
    }

    if (key[3] < '0' || key[3] > '9') {
        return 0;
    }

    shard = strtoul(key + 3, &end, 10);

    if (shard >= run->conf->shards || strncmp(end, "}:n:", 4) != 0) {
        return 0;
    }

    end += 4;

    if (*end == '\0') {
        return 0;
    }

    for (i = 0; end[i] != '\0'; i++) {
        if (end[i] < '0' || end[i] > '9') {
            return 0;
        }
    }

    return 1;
}


static void
gp_pii_count_kid(gp_pii_run_t *run, const char *kid)
{
    size_t i;

    for (i = 0; i < run->nkids; i++) {
        if (strcmp(run->kids[i].kid, kid) == 0) {
            run->kids[i].n++;
            return;
        }
    }

    if (run->nkids == GP_PII_KIDS_MAX) {
        run->other++;
        return;
    }

    snprintf(run->kids[run->nkids].kid, sizeof(run->kids[0].kid), "%s", kid);
    run->kids[run->nkids].n = 1;
    run->nkids++;
}


/* a string field of the HMGET reply, or NULL; NUL-free */
static const char *
gp_pii_str(redisReply *f, int idx, size_t *len)
{
    redisReply *v;

    v = f->element[idx];

    if (v->type != REDIS_REPLY_STRING || strlen(v->str) != v->len) {
        if (len != NULL) {
            *len = 0;
        }
        return NULL;
    }

    if (len != NULL) {
        *len = v->len;
    }

    return v->str;
}


static void
gp_pii_report(const gp_pii_run_t *run)
{
    size_t i, k;
    int    listed;

    if (run->reseal) {
        printf("pii reseal: %lld notices scanned\n", run->scanned);
        printf("  resealed under \"%s\":     %lld\n", run->current,
               run->resealed);
        printf("  sealed from clear:        %lld\n", run->sealed);
        printf("  already under \"%s\":      %lld\n", run->current,
               run->already);
        printf("  changed meanwhile, left:  %lld\n", run->changed);
        printf("  without a payer:          %lld\n", run->other);
        printf("  failed:                   %lld\n", run->failed);
        printf("pii reseal: %lld receipt values scanned\n", run->r_scanned);
        printf("  receipts resealed under \"%s\": %lld\n", run->current,
               run->r_resealed);
        printf("  receipts already under \"%s\":  %lld\n", run->current,
               run->r_already);
        printf("  receipts changed meanwhile:   %lld\n", run->r_changed);
        printf("  receipts failed:              %lld\n", run->r_failed);
        return;
    }

    printf("pii status: %lld notices scanned\n", run->scanned);

    for (i = 0; i < run->nkids; i++) {
        listed = 0;

        for (k = 0; k < gp_seal_keys_count(run->conf->pii_keys); k++) {
            if (strcmp(gp_seal_keys_kid(run->conf->pii_keys, k),
                       run->kids[i].kid)
                == 0) {
                listed = 1;
            }
        }

        printf("  sealed under \"%s\": %lld%s\n", run->kids[i].kid,
               run->kids[i].n,
               strcmp(run->kids[i].kid, run->current) == 0
                   ? " (the key that seals)"
               : listed ? ""
                        : " (NOT in the key file: they do not open)");
    }

    printf("  in clear: %lld\n", run->clear);
    printf("  without a payer: %lld\n", run->other);
    printf("  unreadable: %lld\n", run->failed);

    printf("pii status: %lld receipt values scanned\n", run->r_scanned);

    for (i = 0; i < run->nrkids; i++) {
        listed = 0;

        for (k = 0; k < gp_seal_keys_count(run->conf->pii_keys); k++) {
            if (strcmp(gp_seal_keys_kid(run->conf->pii_keys, k),
                       run->rkids[i].kid)
                == 0) {
                listed = 1;
            }
        }

        printf("  receipts sealed under \"%s\": %lld%s\n", run->rkids[i].kid,
               run->rkids[i].n,
               strcmp(run->rkids[i].kid, run->current) == 0
                   ? " (the key that seals)"
               : listed ? ""
                        : " (NOT in the key file: they do not open)");
    }

    printf("  receipts unreadable: %lld\n", run->r_failed);
}


/* ---- receipts ------------------------------------------------------------ */

/* every key of match and type, one at a time */
static int
gp_pii_receipts(gp_pii_run_t *run, const char *match, const char *type)
{
    redisReply *r;
    char        cursor[32];
    size_t      i;
    int         rc;

    snprintf(cursor, sizeof(cursor), "0");

    do {
        r = redisCommand(run->c, "SCAN %s MATCH %s COUNT %s TYPE %s", cursor,
                         match, GP_PII_SCAN_COUNT, type);

        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2
            || r->element[0]->type != REDIS_REPLY_STRING
            || r->element[0]->len >= sizeof(cursor)
            || r->element[1]->type != REDIS_REPLY_ARRAY)
        {
            fprintf(stderr, "gov-pay-worker: pii: SCAN failed: %s\n",
                    r == NULL                      ? run->c->errstr
                    : r->type == REDIS_REPLY_ERROR ? r->str
                                                   : "unexpected reply");
            freeReplyObject(r);
            return -1;
        }

        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);

        rc = 0;

        for (i = 0; rc == 0 && i < r->element[1]->elements; i++) {
            redisReply *k = r->element[1]->element[i];

            if (k->type != REDIS_REPLY_STRING || strlen(k->str) != k->len) {
                continue;
            }

            rc = strcmp(type, "hash") == 0 ? gp_pii_record(run, k->str)
                                           : gp_pii_rcpt(run, k->str);
        }

        freeReplyObject(r);

        if (rc != 0) {
            return -1;
        }

    } while (strcmp(cursor, "0") != 0);

    return 0;
}


/*
 * A receipt value under the current key: NULL with *state 0 (nothing to
 * do); re-sealed under it: the new record (malloc'd), *state 1; does not
 * open: NULL, *state -1 (reported). Status only counts (*state 0).
 */
static char *
gp_pii_rewrap(gp_pii_run_t *run, const char *key, const char *field,
              const char *code, const char *number, const char *rec, size_t len,
              size_t *outn, int *state)
{
    gp_seal_ctx_t sc;
    gp_seal_rc_t  rc;
    char          kid[GP_SEAL_KID_MAX + 1], *plain, *out;
    size_t        n, outlen;

    *state = 0;
    run->r_scanned++;

    if (gp_seal_record_kid(rec, len, kid) != 0) {
        fprintf(stderr,
                "gov-pay-worker: pii: %s: its %s is not a sealed record\n", key,
                field);
        run->r_failed++;
        *state = -1;
        return NULL;
    }

    if (!run->reseal) {
        gp_pii_count_rkid(run, kid);
        return NULL;
    }

    if (strcmp(kid, run->current) == 0) {
        run->r_already++;
        return NULL;
    }

    sc.field = field;
    sc.unit = code;
    sc.request_id = number;
    sc.created_at = 0;

    plain = malloc(len + 1);
    if (plain == NULL) {
        run->r_failed++;
        *state = -1;
        return NULL;
    }

    rc = gp_seal_open(run->conf->pii_keys, &sc, rec, len, plain, len + 1, &n);
    if (rc != GP_SEAL_OK) {
        fprintf(stderr,
                "gov-pay-worker: pii: %s: its %s does not open (key id "
                "\"%s\"): %s\n",
                key, field, kid, gp_seal_strerror(rc));
        free(plain);
        run->r_failed++;
        *state = -1;
        return NULL;
    }

    outlen = GP_SEAL_RECORD_MAX(n);
    out = malloc(outlen);

    if (out == NULL
        || gp_seal(run->conf->pii_keys, &sc, plain, n, out, outlen, outn)
               != GP_SEAL_OK)
    {
        fprintf(stderr, "gov-pay-worker: pii: %s: sealing its %s failed\n", key,
                field);
        free(out);
        out = NULL;
        run->r_failed++;
        *state = -1;
    } else {
        *state = 1;
    }

    OPENSSL_cleanse(plain, n);
    free(plain);
    return out;
}


/* {gpr}:r:<code>:<number>: doc and pdf */
static int
gp_pii_record(gp_pii_run_t *run, const char *key)
{
    redisReply *r, *w;
    char        code[9], number[11], *doc, *pdf;
    size_t      dn, pn;
    int         ds, ps;

    /* {gpr}:r: + 8 digits + : + 10 digits */
    if (strlen(key) != 8 + 8 + 1 + 10 || key[16] != ':'
        || strspn(key + 8, "0123456789") != 8
        || strspn(key + 17, "0123456789") != 10)
    {
        return 0;
    }

    memcpy(code, key + 8, 8);
    code[8] = '\0';
    memcpy(number, key + 17, 10);
    number[10] = '\0';

    r = redisCommand(run->c, "HMGET %s doc pdf", key);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        fprintf(stderr, "gov-pay-worker: pii: HMGET %s failed\n", key);
        freeReplyObject(r);
        return -1;
    }

    doc = pdf = NULL;
    ds = ps = 0;
    dn = pn = 0;

    if (r->element[0]->type == REDIS_REPLY_STRING) {
        doc = gp_pii_rewrap(run, key, "receipt_doc", code, number,
                            r->element[0]->str, r->element[0]->len, &dn, &ds);
    }

    if (r->element[1]->type == REDIS_REPLY_STRING) {
        pdf = gp_pii_rewrap(run, key, "receipt_pdf", code, number,
                            r->element[1]->str, r->element[1]->len, &pn, &ps);
    }

    if ((ds == 1 || ps == 1) && ds >= 0 && ps >= 0) {
        w = redisCommand(
            run->c, "EVAL %s 1 %s %b %b %b %b", gp_pii_receipt_lua, key,
            r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str : "",
            r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->len : 0,
            doc != NULL ? doc : "", dn,
            r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : "",
            r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->len : 0,
            pdf != NULL ? pdf : "", pn);

        if (w == NULL || w->type != REDIS_REPLY_INTEGER) {
            fprintf(stderr, "gov-pay-worker: pii: rewriting %s failed: %s\n",
                    key,
                    w == NULL                      ? run->c->errstr
                    : w->type == REDIS_REPLY_ERROR ? w->str
                                                   : "unexpected reply");
            run->r_failed++;
        } else if (w->integer == 1) {
            run->r_resealed += (ds == 1) + (ps == 1);
        } else {
            run->r_changed++;
        }

        freeReplyObject(w);
    }

    free(doc);
    free(pdf);
    freeReplyObject(r);
    return 0;
}


/* {gpN}:rcpt:<seq>[:red]: the receipt its notice names */
static int
gp_pii_rcpt(gp_pii_run_t *run, const char *key)
{
    redisReply *r, *n, *w;
    const char *p, *seq;
    char        nkey[64], code[9], number[11], *rec;
    size_t      seqlen, rn;
    int         red, st;

    p = strstr(key, "}:rcpt:");
    if (p == NULL || strncmp(key, "{gp", 3) != 0) {
        return 0;
    }

    seq = p + 7;
    seqlen = strspn(seq, "0123456789");
    red = strcmp(seq + seqlen, ":red") == 0;

    if (seqlen == 0 || (seq[seqlen] != '\0' && !red)
        || (size_t) (p - key) + 16 + seqlen >= sizeof(nkey))
    {
        return 0;
    }

    snprintf(nkey, sizeof(nkey), "%.*s:n:%.*s", (int) (p + 1 - key), key,
             (int) seqlen, seq);

    n = redisCommand(run->c,
                     red ? "HMGET %s red_receipt_code "
                           "red_receipt_number"
                         : "HMGET %s receipt_code receipt_number",
                     nkey);
    r = redisCommand(run->c, "GET %s", key);

    if (n == NULL || n->type != REDIS_REPLY_ARRAY || n->elements != 2
        || r == NULL
        || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL))
    {
        fprintf(stderr, "gov-pay-worker: pii: reading %s failed\n", key);
        freeReplyObject(n);
        freeReplyObject(r);
        return -1;
    }

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(n);
        freeReplyObject(r);
        return 0;
    }

    if (n->element[0]->type != REDIS_REPLY_STRING
        || n->element[1]->type != REDIS_REPLY_STRING || n->element[0]->len != 8
        || n->element[1]->len != 10)
    {
        fprintf(stderr,
                "gov-pay-worker: pii: %s: its notice names no receipt\n", key);
        run->r_scanned++;
        run->r_failed++;
        freeReplyObject(n);
        freeReplyObject(r);
        return 0;
    }

    memcpy(code, n->element[0]->str, 9);
    memcpy(number, n->element[1]->str, 11);

    rec = gp_pii_rewrap(run, key, "receipt_doc", code, number, r->str, r->len,
                        &rn, &st);

    if (st == 1) {
        w = redisCommand(run->c, "EVAL %s 1 %s %b %b", gp_pii_rcpt_lua, key,
                         r->str, r->len, rec, rn);

        if (w == NULL || w->type != REDIS_REPLY_INTEGER) {
            fprintf(stderr, "gov-pay-worker: pii: rewriting %s failed\n", key);
            run->r_failed++;
        } else if (w->integer == 1) {
            run->r_resealed++;
        } else {
            run->r_changed++;
        }

        freeReplyObject(w);
    }

    free(rec);
    freeReplyObject(n);
    freeReplyObject(r);
    return 0;
}


static void
gp_pii_count_rkid(gp_pii_run_t *run, const char *kid)
{
    size_t i;

    for (i = 0; i < run->nrkids; i++) {
        if (strcmp(run->rkids[i].kid, kid) == 0) {
            run->rkids[i].n++;
            return;
        }
    }

    if (run->nrkids == GP_PII_KIDS_MAX) {
        return;
    }

    snprintf(run->rkids[run->nrkids].kid, sizeof(run->rkids[0].kid), "%s", kid);
    run->rkids[run->nrkids].n = 1;
    run->nrkids++;
}
