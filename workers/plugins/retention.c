/*
 * retention: nothing in Redis grows without bound. A thread of the plugin's
 * own runs one pass every interval_s (and `gov-pay-worker -c worker.json
 * retention run` runs one now); each pass, per shard:
 *
 *   streams   {gpN}:settled, {gpN}:refunds and {gpN}:anomaly are trimmed
 *             (XTRIM MINID) up to the oldest entry that some consumer group
 *             has not yet acknowledged, in one script per stream, so no
 *             group can move between the look and the trim. A stream without
 *             a group is never trimmed, nor one that lacks a group that must
 *             read it: for the settled streams trim_groups (default: the
 *             plugins enabled in worker.json that read them), for the refunds
 *             streams "refund" and the enabled plugins that read them, for the
 *             anomaly streams "anomaly" and the enabled plugins that read
 *             them: a plugin added later must find every entry it has not
 *             seen (warned once per stream). {gpN}:dead (read by ops, no
 *             group) is trimmed by age: entries older than keep_s.
 *   expiry    unpaid notices past their due time ({gpN}:due, filled by
 *             create.lua) leave their ID-number index at once, so /o/ stops
 *             listing them, and become final ({gpN}:final, score due_at);
 *             paid or cancelled ones just leave {gpN}:due.
 *   archive   notices final ({gpN}:final: cancel.lua, the receipt plugin's
 *             notice script, the expiry above) for longer than keep_s are
 *             appended as JSON lines to <archive_dir>/notices-<day>.jsonl
 *             and the file is fsync'd; THEN their receipt records in {gpr}
 *             (every receipt of the payment: the live one, the red-letter
 *             ones and the receipts that refunds made) are deleted (one
 *             script, slot {gpr}) and THEN the notice with its receipt
 *             documents and set members (one script, slot {gpN}), only if
 *             its final score is still the one archived. A notice with an
 *             anomaly case that is not closed (docs/internals.md, "Anomaly
 *             plugin"), or money recorded on the anomaly stream that has no
 *             case yet, is held: neither archived nor deleted. A
 *             crash anywhere leaves the notice final, so the next pass
 *             finishes it: a line may be written twice (an auditor keeps the
 *             last line per payment_code), never zero times, and no key is
 *             left without its notice.
 *
 * The payment code of an archived notice is made from shard, sequence,
 * division and year with the code key, as the module makes it (code_key: the
 * same file as nginx's gov_pay_code_key).
 *
 * handle() acknowledges every event: the plugin consumes nothing, its group
 * only keeps up with the others.
 *
 * Configuration (plugins.retention): {"keep_s": 34560000, "archive_dir":
 * "archive", "code_key": "keys/code.key", "interval_s": 3600, "batch": 500,
 * "trim_groups": ["receipt", "notify", "retention"]}; paths relative to
 * worker.json. Keys and scripts: docs/internals.md, "Retention".
 *
 * GOV_PAY_RETENTION_FAULT (tests only): after_archive, after_receipts:
 * _exit(137) after the archive's fsync, or after the receipt records are
 * deleted, before the notices are.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "gp_code.h"
#include "gp_crypto.h"
#include "gp_plugin.h"
#include "gp_runtime.h"
#include "gp_util.h"


#define GP_RET_KEEP_S     (400LL * 86400)
#define GP_RET_KEEP_MAX   (100LL * 366 * 86400)
#define GP_RET_INTERVAL_S 3600
#define GP_RET_BATCH      500
#define GP_RET_FIRST_S    60 /* the first pass, at most this after start */
#define GP_RET_RETRY_S    10 /* after a failed pass */
#define GP_RET_GRACE_S    60 /* unpaid and due more than this ago: expired */
#define GP_RET_GROUPS_MAX 32
#define GP_RET_KEY_MAX    160
#define GP_RET_LOCK       ".retention.lock"
#define GP_RET_KINDS      3 /* settled, refunds, anomaly */


/* the streams trimmed, and the group each must be read by besides trim_groups'
 * or the enabled plugins that read it */
static const char *gp_ret_kinds[GP_RET_KINDS] = { "settled", "refunds",
                                                  "anomaly" };
static const char *gp_ret_owner[GP_RET_KINDS] = { NULL, "refund", "anomaly" };

enum {
    GP_RET_FAULT_NONE = 0,
    GP_RET_FAULT_AFTER_ARCHIVE,
    GP_RET_FAULT_AFTER_RECEIPTS
};


typedef struct {
    const char *src;
    char        sha[41];
} gp_ret_script_t;


/* what one pass did */
typedef struct {
    long long streams;  /* streams trimmed */
    long long trimmed;  /* entries trimmed from them */
    long long dead;     /* dead letters trimmed by age */
    long long expired;  /* unpaid notices that became final */
    long long archived; /* lines written */
    long long deleted;  /* notices deleted */
    long long receipts; /* {gpr} keys deleted */
    long long changed;  /* archived, but changed meanwhile: kept */
    long long skipped;  /* could not be archived: kept, logged */
    long long held;     /* an anomaly case is open: kept */
} gp_ret_stats_t;


typedef struct {
    gp_plugin_env_t *env;

    /* configuration */
    long long     keep_s;
    long          interval_s;
    long          batch;
    char         *archive_dir;
    char         *lock_path;
    gp_code_key_t code_key;
    char        **groups; /* trim_groups */
    size_t        ngroups;
    /* per kind of stream, the groups that must read it (settled: groups) */
    char **kgroups[GP_RET_KINDS];
    size_t nkgroups[GP_RET_KINDS];
    int    fault;

    gp_ret_script_t trim, expire, purge, purge_receipts;

    /* per stream (GP_RET_KINDS per shard): missing group logged */
    unsigned char *warned;

    /* the pass thread */
    pthread_t       thread;
    int             started;
    int             sync_inited;
    atomic_int      stop;
    pthread_mutex_t lock;
    pthread_cond_t  cond;
} gp_ret_t;


/* one notice in the archive step */
typedef struct {
    char        seq[24];
    char        score[32];
    redisReply *hash;
    int         archived;
} gp_ret_notice_t;


/*
 * KEYS[1] a stream. ARGV: the consumer groups that must read it.
 * → {"NOSTREAM"} | {"NOGROUP"} | {"MISSING", group} |
 *   {"TRIMMED", entries, minid}
 * Per group, the oldest entry it has not acknowledged is the smaller of its
 * first pending entry and the entry after its last-delivered-id (or, with
 * none, the next id there could be); the stream keeps everything from the
 * oldest of those over its groups.
 */
static const char gp_ret_trim_lua[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {'NOSTREAM'} end\n"
    "local groups = redis.call('XINFO', 'GROUPS', KEYS[1])\n"
    "if #groups == 0 then return {'NOGROUP'} end\n"
    "local function id(s)\n"
    "  local ms, sq = string.match(s, '^(%d+)-(%d+)$')\n"
    "  return {tonumber(ms), tonumber(sq)}\n"
    "end\n"
    "local function less(a, b)\n"
    "  return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2])\n"
    "end\n"
    "local have, min = {}, nil\n"
    "for _, g in ipairs(groups) do\n"
    "  local f = {}\n"
    "  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end\n"
    "  have[f['name']] = true\n"
    "  local last = f['last-delivered-id']\n"
    "  local nxt = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', "
    "1)\n"
    "  local oldest\n"
    "  if #nxt > 0 then oldest = id(nxt[1][1])\n"
    "  else oldest = id(last); oldest[2] = oldest[2] + 1 end\n"
    "  local p = redis.call('XPENDING', KEYS[1], f['name'])\n"
    "  if p[1] > 0 and less(id(p[2]), oldest) then oldest = id(p[2]) end\n"
    "  if not min or less(oldest, min) then min = oldest end\n"
    "end\n"
    "for i = 1, #ARGV do\n"
    "  if not have[ARGV[i]] then return {'MISSING', ARGV[i]} end\n"
    "end\n"
    "local minid = string.format('%.0f-%.0f', min[1], min[2])\n"
    "return {'TRIMMED', redis.call('XTRIM', KEYS[1], 'MINID', minid), minid}\n";

/*
 * KEYS[1] {gpN}:due, KEYS[2] {gpN}:final, then per notice its key and its
 * ID-number index (the notice key again when it has none). ARGV[1] cutoff
 * (unix), ARGV[2..] the notices' sequences.
 * → {expired, left, rescored}: an unpaid notice due before the cutoff leaves
 * its index and moves to the final set (score due_at); a paid, cancelled or
 * missing one just leaves the due set; an unpaid one that is not yet due
 * gets its due_at back as score (so every member makes progress).
 */
static const char gp_ret_expire_lua[] =
    "local expired, left, rescored = 0, 0, 0\n"
    "for i = 2, #ARGV do\n"
    "  local nk, ik, seq = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i]\n"
    "  local n = redis.call('HMGET', nk, 'status', 'due_at', 'pidx')\n"
    "  local due = tonumber(n[2])\n"
    "  if n[1] == 'UNPAID' and due and due < tonumber(ARGV[1]) then\n"
    "    if n[3] and n[3] == ik then redis.call('SREM', ik, seq) end\n"
    "    redis.call('ZADD', KEYS[2], n[2], seq)\n"
    "    redis.call('ZREM', KEYS[1], seq)\n"
    "    expired = expired + 1\n"
    "  elseif n[1] == 'UNPAID' and due then\n"
    "    redis.call('ZADD', KEYS[1], n[2], seq)\n"
    "    rescored = rescored + 1\n"
    "  else\n"
    "    redis.call('ZREM', KEYS[1], seq)\n"
    "    left = left + 1\n"
    "  end\n"
    "end\n"
    "return {expired, left, rescored}\n";

/*
 * KEYS[1] notice, KEYS[2] {gpN}:rcpt:<seq>, KEYS[3] {gpN}:rcpt:<seq>:red,
 * KEYS[4] {gpN}:due, KEYS[5] {gpN}:final, KEYS[6] its ID-number index (the
 * notice key again when it has none), KEYS[7] {gpN}:anomaly:cases, KEYS[8]
 * {gpN}:anomaly:open. ARGV[1] seq, ARGV[2] its final score as archived,
 * ARGV[3] now.
 * → {"DELETED"} | {"CHANGED"} (not final any more with that score: kept) |
 *   {"NOTFINAL"} (in the final set, but not in a final state: taken out of
 *   it, an unpaid one back into the due set) | {"HELD"} (an anomaly of the
 *   notice is not closed, or has no case yet: kept, in the final set)
 * Its anomaly cases go with the notice (their fields are in it, and in the
 * archive line): out of the shard's case index and open set.
 */
static const char gp_ret_purge_lua[] =
    "local s = redis.call('ZSCORE', KEYS[5], ARGV[1])\n"
    "if not s or tonumber(s) ~= tonumber(ARGV[2]) then return {'CHANGED'} "
    "end\n"
    "local n = redis.call('HMGET', KEYS[1], 'status', 'due_at', "
    "'receipt_number', 'pidx')\n"
    "local paid = n[1] == 'PAID' or n[1] == 'PARTIALLY_REFUNDED' "
    "or n[1] == 'REFUNDED'\n"
    "if n[1] and not (n[1] == 'CANCELLED' or (paid and n[3])\n"
    "    or (n[1] == 'UNPAID' and tonumber(n[2])\n"
    "        and tonumber(n[2]) < tonumber(ARGV[3]))) then\n"
    "  redis.call('ZREM', KEYS[5], ARGV[1])\n"
    "  if n[1] == 'UNPAID' and tonumber(n[2]) then\n"
    "    redis.call('ZADD', KEYS[4], n[2], ARGV[1])\n"
    "  end\n"
    "  return {'NOTFINAL'}\n"
    "end\n"
    "local marks, cases, open = 0, {}, false\n"
    "local h = redis.call('HGETALL', KEYS[1])\n"
    "for i = 1, #h, 2 do\n"
    "  if string.sub(h[i], 1, 8) == 'anomaly:' then\n"
    "    marks = marks + 1\n"
    "  else\n"
    "    local id = string.match(h[i], '^case:(%d+%-%d+)%.state$')\n"
    "    if id then\n"
    "      cases[#cases + 1] = id\n"
    "      if h[i + 1] ~= 'REFUNDED' and h[i + 1] ~= 'RESOLVED' then "
    "open = true end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if open or #cases < marks then return {'HELD'} end\n"
    "if n[4] and n[4] == KEYS[6] then redis.call('SREM', KEYS[6], ARGV[1]) "
    "end\n"
    "for _, id in ipairs(cases) do\n"
    "  redis.call('HDEL', KEYS[7], id)\n"
    "  redis.call('ZREM', KEYS[8], id)\n"
    "end\n"
    "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])\n"
    "redis.call('ZREM', KEYS[4], ARGV[1])\n"
    "redis.call('ZREM', KEYS[5], ARGV[1])\n"
    "return {'DELETED'}\n";

/*
 * Slot {gpr}. KEYS, per receipt of the payment (its first, the red-letter
 * ones, those refunds made): the record {gpr}:r:<code>:<number>, its index
 * {gpr}:ridx:<code>:<number>, its biz key ({gpr}:biz:<payment_code>,
 * …:<refund id>:red, …:<refund id>; …:red of a receipt made before refunds
 * had ids). ARGV[1] payment_code, ARGV[2..] "<code>/<number>" per receipt.
 * Each key is deleted only if it is this payment's. → the number of keys
 * deleted.
 */
static const char gp_ret_purge_receipts_lua[] =
    "local n = 0\n"
    "for i = 1, #KEYS, 3 do\n"
    "  local want = ARGV[1 + (i + 2) / 3]\n"
    "  if redis.call('HGET', KEYS[i], 'payment_code') == ARGV[1] then\n"
    "    n = n + redis.call('DEL', KEYS[i])\n"
    "  end\n"
    "  if redis.call('GET', KEYS[i + 1]) == ARGV[1] then\n"
    "    n = n + redis.call('DEL', KEYS[i + 1])\n"
    "  end\n"
    "  if redis.call('GET', KEYS[i + 2]) == want then\n"
    "    n = n + redis.call('DEL', KEYS[i + 2])\n"
    "  end\n"
    "end\n"
    "return n\n";


static const char *gp_ret_fields[] = { "keep_s",   "archive_dir",
                                       "code_key", "interval_s",
                                       "batch",    "trim_groups",
                                       NULL };


static int gp_ret_init(const json_t *conf, gp_plugin_env_t *env, void **state,
                       char *err, size_t errlen);
static gp_result_t gp_ret_handle(void *state, const gp_event_t *ev, char *msg,
                                 size_t msglen);
static void        gp_ret_shutdown(void *state);
static int gp_ret_conf_int(const json_t *conf, const char *name, long long min,
                           long long max, long long def, long long *out,
                           char *err, size_t errlen);
static int gp_ret_conf_path(gp_ret_t *rt, const json_t *conf, const char *name,
                            char **out, char *err, size_t errlen);
static int gp_ret_conf_groups(gp_ret_t *rt, const json_t *conf, char *err,
                              size_t errlen);
static int gp_ret_script(gp_ret_script_t *s, const char *src);
static int gp_ret_start(void *state, char *err, size_t errlen);
static void       *gp_ret_main(void *arg);
static int         gp_ret_command(void *state, int argc, char **argv);
static int         gp_ret_status(gp_ret_t *rt, redisContext *c);
static int         gp_ret_lock(gp_ret_t *rt, int wait);
static int         gp_ret_pass(gp_ret_t *rt, redisContext *c, FILE *out,
                               gp_ret_stats_t *st);
static int         gp_ret_streams(gp_ret_t *rt, redisContext *c, uint32_t shard,
                                  int64_t now, FILE *out, gp_ret_stats_t *st);
static int         gp_ret_expire(gp_ret_t *rt, redisContext *c, uint32_t shard,
                                 int64_t now, gp_ret_stats_t *st);
static int         gp_ret_archive(gp_ret_t *rt, redisContext *c, uint32_t shard,
                                  int64_t now, gp_ret_stats_t *st);
static int         gp_ret_write(gp_ret_t *rt, uint32_t shard, int64_t now,
                                gp_ret_notice_t *nt, size_t count, gp_ret_stats_t *st);
static char       *gp_ret_line(gp_ret_t *rt, uint32_t shard, int64_t now,
                               gp_ret_notice_t *x);
static int         gp_ret_delete(gp_ret_t *rt, redisContext *c, uint32_t shard,
                                 int64_t now, gp_ret_notice_t *x, gp_ret_stats_t *st);
static redisReply *gp_ret_eval(redisContext *c, gp_ret_script_t *s, int nkeys,
                               int argc, const char **argv,
                               const size_t *argvlen);
static int gp_ret_failed(gp_ret_t *rt, redisContext *c, const char *what,
                         redisReply *r);
static const char *gp_ret_final_state(redisReply *h, int64_t now);
static int         gp_ret_held(redisReply *h);
static int  gp_ret_receipt_refs(redisReply *h, char (**refs)[24], size_t *n);
static void gp_ret_say(gp_ret_t *rt, FILE *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int64_t gp_ret_now(void);


const gp_plugin_t gp_plugin_retention = { .name = "retention",
                                          .init = gp_ret_init,
                                          .handle = gp_ret_handle,
                                          .shutdown = gp_ret_shutdown,
                                          .streams = NULL };


static int
gp_ret_init(const json_t *conf, gp_plugin_env_t *env, void **state, char *err,
            size_t errlen)
{
    gp_ret_t   *rt;
    const char *key, *fault;
    char       *code_key;
    long long   v;
    struct stat st;

    if (!json_is_object(conf)) {
        snprintf(err, errlen, "the configuration must be an object");
        return -1;
    }

    key = gp_conf_unknown(conf, gp_ret_fields);
    if (key != NULL) {
        snprintf(err, errlen, "unknown field \"%s\"", key);
        return -1;
    }

    rt = calloc(1, sizeof(gp_ret_t));
    if (rt == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    rt->env = env;
    code_key = NULL;
    atomic_init(&rt->stop, 0);

    if (gp_ret_conf_int(conf, "keep_s", 1, GP_RET_KEEP_MAX, GP_RET_KEEP_S,
                        &rt->keep_s, err, errlen)
            != 0
        || gp_ret_conf_int(conf, "interval_s", 1, 7 * 86400, GP_RET_INTERVAL_S,
                           &v, err, errlen)
               != 0)
    {
        goto fail;
    }

    rt->interval_s = (long) v;

    if (gp_ret_conf_int(conf, "batch", 1, 10000, GP_RET_BATCH, &v, err, errlen)
        != 0)
    {
        goto fail;
    }

    rt->batch = (long) v;

    if (gp_ret_conf_path(rt, conf, "archive_dir", &rt->archive_dir, err, errlen)
            != 0
        || gp_ret_conf_path(rt, conf, "code_key", &code_key, err, errlen) != 0
        || gp_ret_conf_groups(rt, conf, err, errlen) != 0)
    {
        goto fail;
    }

    if (stat(rt->archive_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "\"archive_dir\": %s is not a folder: %s",
                 rt->archive_dir,
                 errno != 0 ? strerror(errno) : "not a folder");
        goto fail;
    }

    if (gp_code_key_load(code_key, &rt->code_key, err, errlen) != 0) {
        goto fail;
    }

    if (asprintf(&rt->lock_path, "%s/%s", rt->archive_dir, GP_RET_LOCK) < 0) {
        rt->lock_path = NULL;
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    rt->warned = calloc(GP_RET_KINDS * (size_t) env->shards, 1);
    if (rt->warned == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    if (gp_ret_script(&rt->trim, gp_ret_trim_lua) != 0
        || gp_ret_script(&rt->expire, gp_ret_expire_lua) != 0
        || gp_ret_script(&rt->purge, gp_ret_purge_lua) != 0
        || gp_ret_script(&rt->purge_receipts, gp_ret_purge_receipts_lua) != 0)
    {
        snprintf(err, errlen, "EVP_Digest(SHA-1) of a script failed");
        goto fail;
    }

    fault = getenv("GOV_PAY_RETENTION_FAULT");
    if (fault != NULL && fault[0] != '\0') {
        if (strcmp(fault, "after_archive") == 0) {
            rt->fault = GP_RET_FAULT_AFTER_ARCHIVE;
        } else if (strcmp(fault, "after_receipts") == 0) {
            rt->fault = GP_RET_FAULT_AFTER_RECEIPTS;
        } else {
            snprintf(err, errlen, "unknown GOV_PAY_RETENTION_FAULT \"%s\"",
                     fault);
            goto fail;
        }

        env->log(env, GP_LOG_WARN, NULL,
                 "GOV_PAY_RETENTION_FAULT=%s is set: test only", fault);
    }

    free(code_key);

    env->start = gp_ret_start;
    env->command = gp_ret_command;

    *state = rt;
    return 0;

fail:

    free(code_key);
    gp_ret_shutdown(rt);
    return -1;
}


static void
gp_ret_shutdown(void *state)
{
    gp_ret_t *rt;
    size_t    i;

    rt = state;

    if (rt == NULL) {
        return;
    }

    if (rt->started) {
        pthread_mutex_lock(&rt->lock);
        atomic_store(&rt->stop, 1);
        pthread_cond_broadcast(&rt->cond);
        pthread_mutex_unlock(&rt->lock);

        pthread_join(rt->thread, NULL);
        rt->started = 0;
    }

    if (rt->sync_inited) {
        pthread_cond_destroy(&rt->cond);
        pthread_mutex_destroy(&rt->lock);
    }

    for (i = 0; i < rt->ngroups; i++) {
        free(rt->groups[i]);
    }

    /* kgroups[0] is groups; the others point into the plugins' names */
    for (i = 1; i < GP_RET_KINDS; i++) {
        free(rt->kgroups[i]);
    }

    gp_code_key_free(&rt->code_key);

    free(rt->groups);
    free(rt->archive_dir);
    free(rt->lock_path);
    free(rt->warned);
    free(rt);
}


/* the plugin reads nothing from the streams: its group just keeps up */
static gp_result_t
gp_ret_handle(void *state, const gp_event_t *ev, char *msg, size_t msglen)
{
    (void) state;
    (void) ev;

    snprintf(msg, msglen, "nothing to do");
    return GP_DONE;
}


/* ---- configuration ---------------------------------------------------- */

static int
gp_ret_conf_int(const json_t *conf, const char *name, long long min,
                long long max, long long def, long long *out, char *err,
                size_t errlen)
{
    json_t   *v;
    long long x;

    v = json_object_get(conf, name);

    if (v == NULL) {
        *out = def;
        return 0;
    }

    if (!json_is_integer(v)) {
        snprintf(err, errlen, "\"%s\" must be an integer", name);
        return -1;
    }

    x = json_integer_value(v);

    if (x < min || x > max) {
        snprintf(err, errlen, "\"%s\" must be %lld to %lld", name, min, max);
        return -1;
    }

    *out = x;
    return 0;
}


/* a required path, relative to worker.json's folder */
static int
gp_ret_conf_path(gp_ret_t *rt, const json_t *conf, const char *name, char **out,
                 char *err, size_t errlen)
{
    json_t *v;

    v = json_object_get(conf, name);

    if (v == NULL) {
        snprintf(err, errlen, "\"%s\" is required", name);
        return -1;
    }

    if (!json_is_string(v) || json_string_length(v) == 0
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        snprintf(err, errlen, "\"%s\" must be a non-empty string", name);
        return -1;
    }

    *out = gp_conf_path(rt->env, json_string_value(v));
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    return 0;
}


/* 1 if the plugin called name (built in) reads the streams of kind */
static int
gp_ret_reads(const char *name, const char *kind)
{
    const gp_plugin_t *p;
    const char *const *k;

    p = gp_plugin_find(name);
    if (p == NULL) {
        return 0;
    }

    for (k = gp_plugin_streams(p); *k != NULL; k++) {
        if (strcmp(*k, kind) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * trim_groups: group names; default the plugins enabled in worker.json that
 * read the settled streams. Then the groups of the other kinds of stream:
 * their owner ("refund", "anomaly") and the enabled plugins that read them.
 */
static int
gp_ret_conf_groups(gp_ret_t *rt, const json_t *conf, char *err, size_t errlen)
{
    json_t     *v, *g;
    const char *name, *const *plugins;
    size_t i, k, n, np;

    v = json_object_get(conf, "trim_groups");

    if (v != NULL && !json_is_array(v)) {
        snprintf(err, errlen, "\"trim_groups\" must be an array of names");
        return -1;
    }

    plugins = rt->env->plugins;
    np = 0;
    while (plugins != NULL && plugins[np] != NULL) {
        np++;
    }

    n = v != NULL ? json_array_size(v) : np;

    if (n > GP_RET_GROUPS_MAX) {
        snprintf(err, errlen, "\"trim_groups\": at most %d groups",
                 GP_RET_GROUPS_MAX);
        return -1;
    }

    rt->groups = calloc(n + 1, sizeof(char *));
    if (rt->groups == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (v == NULL) {
            if (!gp_ret_reads(plugins[i], "settled")) {
                continue;
            }

            name = plugins[i];

        } else {
            g = json_array_get(v, i);
            name = json_is_string(g) ? json_string_value(g) : NULL;

            if (name == NULL || strlen(name) != json_string_length(g)
                || strlen(name) == 0 || strlen(name) > 64)
            {
                snprintf(err, errlen,
                         "\"trim_groups\": each must be a name of 1 to 64 of "
                         "A-Z a-z 0-9 _ -");
                return -1;
            }

            for (k = 0; name[k] != '\0'; k++) {
                if (!((name[k] >= 'a' && name[k] <= 'z')
                      || (name[k] >= 'A' && name[k] <= 'Z')
                      || (name[k] >= '0' && name[k] <= '9') || name[k] == '_'
                      || name[k] == '-'))
                {
                    snprintf(err, errlen,
                             "\"trim_groups\": each must be a name of 1 to 64 "
                             "of A-Z a-z 0-9 _ -");
                    return -1;
                }
            }
        }

        rt->groups[rt->ngroups] = strdup(name);
        if (rt->groups[rt->ngroups] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }

        rt->ngroups++;
    }

    rt->kgroups[0] = rt->groups;
    rt->nkgroups[0] = rt->ngroups;

    for (k = 1; k < GP_RET_KINDS; k++) {
        rt->kgroups[k] = calloc(np + 2, sizeof(char *));
        if (rt->kgroups[k] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }

        /* the names are the owner's constant and the runtime's: not copied */
        rt->kgroups[k][rt->nkgroups[k]++] = (char *) gp_ret_owner[k];

        for (i = 0; i < np; i++) {
            if (strcmp(plugins[i], gp_ret_owner[k]) != 0
                && gp_ret_reads(plugins[i], gp_ret_kinds[k]))
            {
                rt->kgroups[k][rt->nkgroups[k]++] = (char *) plugins[i];
            }
        }
    }

    return 0;
}


static int
gp_ret_script(gp_ret_script_t *s, const char *src)
{
    unsigned char md[20];
    unsigned int  len;

    s->src = src;

    if (EVP_Digest(src, strlen(src), md, &len, EVP_sha1(), NULL) != 1
        || len != 20) {
        return -1;
    }

    gp_hex(md, 20, s->sha);
    return 0;
}


/* ---- the pass thread -------------------------------------------------- */

static int
gp_ret_start(void *state, char *err, size_t errlen)
{
    gp_ret_t          *rt;
    pthread_condattr_t ca;
    int                rc;

    rt = state;

    if (pthread_mutex_init(&rt->lock, NULL) != 0) {
        snprintf(err, errlen, "pthread_mutex_init() failed");
        return -1;
    }

    if (pthread_condattr_init(&ca) != 0
        || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0
        || pthread_cond_init(&rt->cond, &ca) != 0)
    {
        pthread_mutex_destroy(&rt->lock);
        snprintf(err, errlen, "pthread_cond_init() failed");
        return -1;
    }

    pthread_condattr_destroy(&ca);
    rt->sync_inited = 1;

    rc = pthread_create(&rt->thread, NULL, gp_ret_main, rt);
    if (rc != 0) {
        snprintf(err, errlen, "pthread_create() failed: %s", strerror(rc));
        return -1;
    }

    rt->started = 1;
    return 0;
}


/*
 * One pass at most GP_RET_FIRST_S after start (the consumer threads have
 * made their groups by then), then every interval_s; after a failed pass,
 * again in GP_RET_RETRY_S. A stop request is seen between batches.
 */
static void *
gp_ret_main(void *arg)
{
    gp_ret_t       *rt;
    redisContext   *c;
    gp_ret_stats_t  st;
    struct timespec ts;
    long            wait_s;
    int             rc;
    char            err[256];

    rt = arg;
    c = NULL;
    wait_s = rt->interval_s < GP_RET_FIRST_S ? rt->interval_s : GP_RET_FIRST_S;

    rt->env->log(rt->env, GP_LOG_INFO, NULL,
                 "retention thread started: keep %lld s, a pass every %ld s, "
                 "archive in %s",
                 rt->keep_s, rt->interval_s, rt->archive_dir);

    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait_s;

        pthread_mutex_lock(&rt->lock);
        while (!atomic_load(&rt->stop)) {
            if (pthread_cond_timedwait(&rt->cond, &rt->lock, &ts) == ETIMEDOUT)
            {
                break;
            }
        }
        pthread_mutex_unlock(&rt->lock);

        if (atomic_load(&rt->stop)) {
            break;
        }

        wait_s = rt->interval_s;

        if (c == NULL) {
            c = rt->env->connect(rt->env, err, sizeof(err));
            if (c == NULL) {
                rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                             "retention pass skipped: %s", err);
                wait_s = GP_RET_RETRY_S;
                continue;
            }
        }

        rc = gp_ret_lock(rt, 0);

        if (rc == -2) {
            rt->env->log(rt->env, GP_LOG_INFO, NULL,
                         "retention pass skipped: another pass holds %s",
                         rt->lock_path);
            continue;
        }

        if (rc < 0) {
            wait_s = GP_RET_RETRY_S;
            continue;
        }

        memset(&st, 0, sizeof(st));

        if (gp_ret_pass(rt, c, NULL, &st) != 0) {
            /* a new connection: a failed pipeline may be out of step */
            wait_s = GP_RET_RETRY_S;
            redisFree(c);
            c = NULL;
        }

        close(rc);
    }

    if (c != NULL) {
        redisFree(c);
    }

    rt->env->log(rt->env, GP_LOG_INFO, NULL, "retention thread stopped");
    return NULL;
}


/*
 * flock(2) on <archive_dir>/.retention.lock, so that passes of the processes
 * of one host (the thread, `retention run`) take turns: the fd (close it to
 * unlock), -2 if wait is 0 and another pass holds it, -1 on an error (logged)
 */
static int
gp_ret_lock(gp_ret_t *rt, int wait)
{
    int fd;

    fd = open(rt->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "open(\"%s\") failed: %s",
                     rt->lock_path, strerror(errno));
        return -1;
    }

    while (flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
        if (errno == EINTR) {
            continue;
        }

        if (errno == EWOULDBLOCK) {
            close(fd);
            return -2;
        }

        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "flock(\"%s\") failed: %s",
                     rt->lock_path, strerror(errno));
        close(fd);
        return -1;
    }

    return fd;
}


/* ---- ops commands ----------------------------------------------------- */

static int
gp_ret_command(void *state, int argc, char **argv)
{
    gp_ret_t      *rt;
    redisContext  *c;
    gp_ret_stats_t st;
    int            rc, fd;
    char           err[256];

    rt = state;

    if (argc != 1
        || (strcmp(argv[0], "run") != 0 && strcmp(argv[0], "status") != 0))
    {
        fprintf(stderr, "usage: gov-pay-worker -c <worker.json> retention "
                        "run | status\n");
        return 2;
    }

    c = rt->env->connect(rt->env, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "gov-pay-worker: retention %s: %s\n", argv[0], err);
        return 1;
    }

    if (strcmp(argv[0], "status") == 0) {
        rc = gp_ret_status(rt, c);
        redisFree(c);
        return rc;
    }

    fd = gp_ret_lock(rt, 1);
    if (fd < 0) {
        redisFree(c);
        return 1;
    }

    memset(&st, 0, sizeof(st));
    rc = gp_ret_pass(rt, c, stdout, &st);

    close(fd);
    redisFree(c);

    if (rc != 0) {
        fprintf(stderr, "gov-pay-worker: retention run: the pass stopped on "
                        "an error (logged); what is done stays done\n");
        return 1;
    }

    return 0;
}


/* counts over all shards, one pipelined round trip */
static int
gp_ret_status(gp_ret_t *rt, redisContext *c)
{
    redisReply *r;
    uint32_t    s, shards;
    long long   tot[8];
    char        cutoff[32];
    int         i, ok;
    size_t      g;

    static const char *kinds[] = {
        "due",     "final",   "final", "settled",
        "refunds", "anomaly", "dead",  "anomaly:open"
    };

    shards = rt->env->shards;
    snprintf(cutoff, sizeof(cutoff), "(%lld",
             (long long) gp_ret_now() - rt->keep_s);

    for (s = 0; s < shards; s++) {
        redisAppendCommand(c, "ZCARD {gp%u}:due", s);
        redisAppendCommand(c, "ZCARD {gp%u}:final", s);
        redisAppendCommand(c, "ZCOUNT {gp%u}:final -inf %s", s, cutoff);
        redisAppendCommand(c, "XLEN {gp%u}:settled", s);
        redisAppendCommand(c, "XLEN {gp%u}:refunds", s);
        redisAppendCommand(c, "XLEN {gp%u}:anomaly", s);
        redisAppendCommand(c, "XLEN {gp%u}:dead", s);
        redisAppendCommand(c, "ZCARD {gp%u}:anomaly:open", s);
    }

    memset(tot, 0, sizeof(tot));
    ok = 1;

    for (s = 0; s < shards; s++) {
        for (i = 0; i < 8; i++) {
            if (redisGetReply(c, (void **) &r) != REDIS_OK) {
                fprintf(stderr, "gov-pay-worker: retention status: redis: %s\n",
                        c->errstr);
                return 1;
            }

            if (r->type == REDIS_REPLY_INTEGER) {
                tot[i] += r->integer;
            } else {
                if (ok) {
                    fprintf(stderr,
                            "gov-pay-worker: retention status: redis %s "
                            "{gp%u}:%s: %.200s\n",
                            (i < 3 || i == 7) ? "ZCARD" : "XLEN", s, kinds[i],
                            r->type == REDIS_REPLY_ERROR ? r->str
                                                         : "unexpected reply");
                }
                ok = 0;
            }

            freeReplyObject(r);
        }
    }

    printf("keep_s %lld, a pass every %ld s, batches of %ld, archive %s\n",
           rt->keep_s, rt->interval_s, rt->batch, rt->archive_dir);
    printf("trim_groups:");
    for (g = 0; g < rt->ngroups; g++) {
        printf(" %s", rt->groups[g]);
    }
    printf("%s\n", rt->ngroups == 0 ? " (none)" : "");

    for (i = 1; i < GP_RET_KINDS; i++) {
        printf("%s streams are read by:", gp_ret_kinds[i]);
        for (g = 0; g < rt->nkgroups[i]; g++) {
            printf(" %s", rt->kgroups[i][g]);
        }
        printf("\n");
    }
    printf("notices not yet due or not yet expired ({gpN}:due): %lld\n",
           tot[0]);
    printf("final notices ({gpN}:final): %lld, past keep_s (archived and "
           "deleted by the next pass): %lld\n",
           tot[1], tot[2]);
    printf("stream entries: settled %lld, refunds %lld, anomaly %lld, dead "
           "%lld\n",
           tot[3], tot[4], tot[5], tot[6]);
    printf("open anomaly cases ({gpN}:anomaly:open; final notices with one "
           "are held): %lld\n",
           tot[7]);

    return ok ? 0 : 1;
}


/* ---- one pass --------------------------------------------------------- */

/*
 * Every shard: streams, expiry, archive. 0, or -1 (logged) on a Redis or
 * archive failure: what is done stays done, the next pass goes on.
 */
static int
gp_ret_pass(gp_ret_t *rt, redisContext *c, FILE *out, gp_ret_stats_t *st)
{
    uint32_t s;
    int64_t  now;

    now = gp_ret_now();

    for (s = 0; s < rt->env->shards; s++) {
        if (atomic_load(&rt->stop)) {
            return 0;
        }

        if (gp_ret_streams(rt, c, s, now, out, st) != 0
            || gp_ret_expire(rt, c, s, now, st) != 0
            || gp_ret_archive(rt, c, s, now, st) != 0)
        {
            gp_ret_say(rt, out,
                       "pass stopped at shard %u: streams trimmed %lld (%lld "
                       "entries, %lld dead letters), notices expired %lld, "
                       "archived %lld, deleted %lld",
                       s, st->streams, st->trimmed, st->dead, st->expired,
                       st->archived, st->deleted);
            return -1;
        }
    }

    gp_ret_say(rt, out,
               "pass done: streams trimmed %lld (%lld entries), dead letters "
               "trimmed %lld, notices expired %lld, archived %lld, deleted "
               "%lld (receipt keys %lld), changed meanwhile %lld, not "
               "archivable %lld, held for an open anomaly case %lld",
               st->streams, st->trimmed, st->dead, st->expired, st->archived,
               st->deleted, st->receipts, st->changed, st->skipped, st->held);

    return 0;
}


static int
gp_ret_streams(gp_ret_t *rt, redisContext *c, uint32_t shard, int64_t now,
               FILE *out, gp_ret_stats_t *st)
{
    redisReply  *r, *w;
    const char **argv;
    char         key[GP_RET_KEY_MAX], minid[32];
    size_t       g;
    int          k, argc, ret;

    for (k = 0, g = 0; k < GP_RET_KINDS; k++) {
        g = rt->nkgroups[k] > g ? rt->nkgroups[k] : g;
    }

    argv = calloc(4 + g, sizeof(char *));
    if (argv == NULL) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "out of memory");
        return -1;
    }

    ret = -1;

    for (k = 0; k < GP_RET_KINDS; k++) {
        snprintf(key, sizeof(key), "{gp%u}:%s", shard, gp_ret_kinds[k]);

        argc = 3;
        argv[argc++] = key;

        for (g = 0; g < rt->nkgroups[k]; g++) {
            argv[argc++] = rt->kgroups[k][g];
        }

        r = gp_ret_eval(c, &rt->trim, 1, argc, argv, NULL);

        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1
            || r->element[0]->type != REDIS_REPLY_STRING)
        {
            gp_ret_failed(rt, c, "EVALSHA trim", r);
            goto done;
        }

        w = r->element[0];

        if (strcmp(w->str, "MISSING") == 0 && r->elements == 2
            && r->element[1]->type == REDIS_REPLY_STRING)
        {
            if (!rt->warned[GP_RET_KINDS * shard + k]) {
                rt->warned[GP_RET_KINDS * shard + k] = 1;
                rt->env->log(rt->env, GP_LOG_WARN, NULL,
                             "%s is not trimmed: consumer group \"%s\" (in "
                             "trim_groups) does not read it yet",
                             key, r->element[1]->str);
            }

            if (out != NULL) {
                fprintf(out,
                        "%s: not trimmed, consumer group \"%s\" is "
                        "missing\n",
                        key, r->element[1]->str);
            }

        } else if (strcmp(w->str, "TRIMMED") == 0 && r->elements == 3
                   && r->element[1]->type == REDIS_REPLY_INTEGER)
        {
            rt->warned[GP_RET_KINDS * shard + k] = 0;

            if (r->element[1]->integer > 0) {
                st->streams++;
                st->trimmed += r->element[1]->integer;

                gp_ret_say(rt, out, "%s: trimmed %lld entries (before %s)", key,
                           r->element[1]->integer,
                           r->element[2]->type == REDIS_REPLY_STRING
                               ? r->element[2]->str
                               : "?");
            }

        } else if (strcmp(w->str, "NOSTREAM") != 0
                   && strcmp(w->str, "NOGROUP") != 0) {
            gp_ret_failed(rt, c, "EVALSHA trim", r);
            goto done;
        }

        freeReplyObject(r);
    }

    /* the dead letters: by age */
    snprintf(minid, sizeof(minid), "%lld-0",
             (long long) (now - rt->keep_s) * 1000);

    r = redisCommand(c, "XTRIM {gp%u}:dead MINID %s", shard, minid);

    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        gp_ret_failed(rt, c, "XTRIM dead", r);
        goto done;
    }

    if (r->integer > 0) {
        st->dead += r->integer;
        gp_ret_say(rt, out,
                   "{gp%u}:dead: trimmed %lld entries older than %lld s", shard,
                   r->integer, rt->keep_s);
    }

    freeReplyObject(r);
    ret = 0;

done:

    free(argv);
    return ret;
}


/* unpaid notices past their due time become final, in batches */
static int
gp_ret_expire(gp_ret_t *rt, redisContext *c, uint32_t shard, int64_t now,
              gp_ret_stats_t *st)
{
    redisReply  *list, *r;
    const char **argv;
    char(*keys)[GP_RET_KEY_MAX], (*idx)[GP_RET_KEY_MAX];
    char   due[32], fin[32], pidx[32], cutoff[32];
    size_t i, n, argc, plen;
    int    ret;

    snprintf(due, sizeof(due), "{gp%u}:due", shard);
    snprintf(fin, sizeof(fin), "{gp%u}:final", shard);
    snprintf(pidx, sizeof(pidx), "{gp%u}:pidx:", shard);
    plen = strlen(pidx);

    argv = calloc(6 + 3 * (size_t) rt->batch, sizeof(char *));
    keys = calloc((size_t) rt->batch, GP_RET_KEY_MAX);
    idx = calloc((size_t) rt->batch, GP_RET_KEY_MAX);
    list = NULL;
    ret = -1;

    if (argv == NULL || keys == NULL || idx == NULL) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "out of memory");
        goto done;
    }

    /* "due more than GP_RET_GRACE_S ago": clocks of edge and worker differ */
    snprintf(cutoff, sizeof(cutoff), "%lld", (long long) now - GP_RET_GRACE_S);

    while (!atomic_load(&rt->stop)) {
        list = redisCommand(c, "ZRANGEBYSCORE %s -inf (%s LIMIT 0 %ld", due,
                            cutoff, rt->batch);

        if (list == NULL || list->type != REDIS_REPLY_ARRAY) {
            gp_ret_failed(rt, c, "ZRANGEBYSCORE due", list);
            list = NULL;
            goto done;
        }

        n = list->elements;
        if (n == 0) {
            break;
        }

        for (i = 0; i < n; i++) {
            if (list->element[i]->type != REDIS_REPLY_STRING
                || list->element[i]->len > 20) {
                gp_ret_failed(rt, c, "ZRANGEBYSCORE due", list);
                list = NULL;
                goto done;
            }
        }

        /* each notice's index, pipelined */
        for (i = 0; i < n; i++) {
            snprintf(keys[i], GP_RET_KEY_MAX, "{gp%u}:n:%s", shard,
                     list->element[i]->str);
            redisAppendCommand(c, "HGET %s pidx", keys[i]);
        }

        for (i = 0; i < n; i++) {
            if (redisGetReply(c, (void **) &r) != REDIS_OK) {
                gp_ret_failed(rt, c, "HGET pidx", NULL);
                goto done;
            }

            /* the index, or the notice key again: the script checks pidx */
            if (r->type == REDIS_REPLY_STRING && r->len < GP_RET_KEY_MAX
                && strncmp(r->str, pidx, plen) == 0)
            {
                memcpy(idx[i], r->str, r->len + 1);
            } else {
                memcpy(idx[i], keys[i], GP_RET_KEY_MAX);
            }

            freeReplyObject(r);
        }

        argc = 3;
        argv[argc++] = due;
        argv[argc++] = fin;

        for (i = 0; i < n; i++) {
            argv[argc++] = keys[i];
            argv[argc++] = idx[i];
        }

        argv[argc++] = cutoff;

        for (i = 0; i < n; i++) {
            argv[argc++] = list->element[i]->str;
        }

        r = gp_ret_eval(c, &rt->expire, (int) (2 + 2 * n), (int) argc, argv,
                        NULL);

        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3
            || r->element[0]->type != REDIS_REPLY_INTEGER)
        {
            gp_ret_failed(rt, c, "EVALSHA expire", r);
            goto done;
        }

        st->expired += r->element[0]->integer;
        freeReplyObject(r);

        freeReplyObject(list);
        list = NULL;

        if ((long) n < rt->batch) {
            break;
        }
    }

    ret = 0;

done:

    if (list != NULL) {
        freeReplyObject(list);
    }

    free(argv);
    free(keys);
    free(idx);
    return ret;
}


/*
 * Notices final for longer than keep_s: archive lines (fsync'd), then the
 * deletes. Notices that cannot be archived are skipped (logged) and stay;
 * "skip" pages past them.
 */
static int
gp_ret_archive(gp_ret_t *rt, redisContext *c, uint32_t shard, int64_t now,
               gp_ret_stats_t *st)
{
    gp_ret_notice_t *nt;
    redisReply      *list, *r;
    size_t           i, n, skip;
    long long        before;
    int              ret;

    nt = calloc((size_t) rt->batch, sizeof(gp_ret_notice_t));
    if (nt == NULL) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "out of memory");
        return -1;
    }

    list = NULL;
    n = 0;
    skip = 0;
    ret = -1;

    while (!atomic_load(&rt->stop)) {
        list = redisCommand(c,
                            "ZRANGEBYSCORE {gp%u}:final -inf (%lld WITHSCORES "
                            "LIMIT %lld %ld",
                            shard, (long long) (now - rt->keep_s),
                            (long long) skip, rt->batch);

        if (list == NULL || list->type != REDIS_REPLY_ARRAY
            || list->elements % 2 != 0) {
            gp_ret_failed(rt, c, "ZRANGEBYSCORE final", list);
            list = NULL;
            goto done;
        }

        n = list->elements / 2;
        if (n == 0) {
            break;
        }

        for (i = 0; i < n; i++) {
            if (list->element[2 * i]->type != REDIS_REPLY_STRING
                || list->element[2 * i]->len >= sizeof(nt[i].seq)
                || list->element[2 * i + 1]->type != REDIS_REPLY_STRING
                || list->element[2 * i + 1]->len >= sizeof(nt[i].score))
            {
                gp_ret_failed(rt, c, "ZRANGEBYSCORE final", list);
                list = NULL;
                n = 0;
                goto done;
            }

            memcpy(nt[i].seq, list->element[2 * i]->str,
                   list->element[2 * i]->len + 1);
            memcpy(nt[i].score, list->element[2 * i + 1]->str,
                   list->element[2 * i + 1]->len + 1);
            nt[i].hash = NULL;
            nt[i].archived = 0;

            redisAppendCommand(c, "HGETALL {gp%u}:n:%s", shard, nt[i].seq);
        }

        freeReplyObject(list);
        list = NULL;

        for (i = 0; i < n; i++) {
            if (redisGetReply(c, (void **) &r) != REDIS_OK) {
                gp_ret_failed(rt, c, "HGETALL notice", NULL);
                goto done;
            }

            if (r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) {
                gp_ret_failed(rt, c, "HGETALL notice", r);
                goto done;
            }

            nt[i].hash = r;
        }

        /* the lines first, on disk; held and unarchivable notices stay in
         * the final set: the next batch starts past them */
        before = st->skipped + st->held;
        if (gp_ret_write(rt, shard, now, nt, n, st) != 0) {
            goto done;
        }

        skip += (size_t) (st->skipped + st->held - before);

        if (rt->fault == GP_RET_FAULT_AFTER_ARCHIVE) {
            rt->env->log(rt->env, GP_LOG_WARN, NULL,
                         "fault injection after_archive: exiting");
            _exit(137);
        }

        for (i = 0; i < n; i++) {
            if (nt[i].archived
                && gp_ret_delete(rt, c, shard, now, &nt[i], st) != 0) {
                goto done;
            }
        }

        for (i = 0; i < n; i++) {
            freeReplyObject(nt[i].hash);
            nt[i].hash = NULL;
        }

        if ((long) n < rt->batch) {
            n = 0;
            break;
        }

        n = 0;
    }

    ret = 0;

done:

    for (i = 0; i < n && i < (size_t) rt->batch; i++) {
        if (nt[i].hash != NULL) {
            freeReplyObject(nt[i].hash);
        }
    }

    if (list != NULL) {
        freeReplyObject(list);
    }

    free(nt);
    return ret;
}


/*
 * Appends the lines of the batch to <archive_dir>/notices-<day>.jsonl (the
 * day in Asia/Shanghai) with one write(2), fsync(2)s it (and the folder, for
 * a new file). A notice that is gone is not archived (its set members go);
 * one that cannot be encoded is skipped. 0, or -1 (logged).
 */
static int
gp_ret_write(gp_ret_t *rt, uint32_t shard, int64_t now, gp_ret_notice_t *nt,
             size_t count, gp_ret_stats_t *st)
{
    char   *buf, *line, *p, path[4096], day[26];
    size_t  i, len, cap, l;
    ssize_t w;
    int     fd, dfd, created, ret;

    buf = NULL;
    len = 0;
    cap = 0;
    ret = -1;
    fd = -1;

    for (i = 0; i < count; i++) {
        if (nt[i].hash->elements == 0) {
            nt[i].archived = 1; /* nothing to keep: the members go */
            continue;
        }

        if (gp_ret_held(nt[i].hash)) {
            st->held++; /* an anomaly of the notice is not worked off */
            continue;
        }

        line = gp_ret_line(rt, shard, now, &nt[i]);
        if (line == NULL) {
            /* not final after all (archived 1: the delete script sorts it
             * out), or not archivable (logged: it stays, the pass pages
             * past it) */
            st->skipped += nt[i].archived == 0;
            continue;
        }

        l = strlen(line);

        if (len + l + 1 > cap) {
            cap = (len + l + 1) * 2;
            p = realloc(buf, cap);
            if (p == NULL) {
                free(line);
                rt->env->log(rt->env, GP_LOG_ERROR, NULL, "out of memory");
                goto done;
            }
            buf = p;
        }

        memcpy(buf + len, line, l);
        buf[len + l] = '\n';
        len += l + 1;
        free(line);

        nt[i].archived = 2;
    }

    if (len == 0) {
        ret = 0;
        goto done;
    }

    gp_time_rfc3339(now, day);
    day[10] = '\0';
    snprintf(path, sizeof(path), "%s/notices-%s.jsonl", rt->archive_dir, day);

    created = 1;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0640);

    if (fd < 0 && errno == EEXIST) {
        created = 0;
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    }

    if (fd < 0) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                     "open(\"%s\") failed: %s; nothing archived nor deleted",
                     path, strerror(errno));
        goto done;
    }

    for (i = 0; i < len; i += (size_t) w) {
        w = write(fd, buf + i, len - i);

        if (w < 0 && errno == EINTR) {
            w = 0;
            continue;
        }

        if (w <= 0) {
            rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                         "write(\"%s\") failed: %s; nothing deleted", path,
                         w < 0 ? strerror(errno) : "wrote nothing");
            goto done;
        }
    }

    if (fsync(fd) != 0) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                     "fsync(\"%s\") failed: %s; nothing deleted", path,
                     strerror(errno));
        goto done;
    }

    if (created) {
        dfd = open(rt->archive_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0) {
            rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                         "fsync of the folder %s failed: %s; nothing deleted",
                         rt->archive_dir, strerror(errno));
            if (dfd >= 0) {
                close(dfd);
            }
            goto done;
        }
        close(dfd);
    }

    for (i = 0; i < count; i++) {
        if (nt[i].archived == 2) {
            st->archived++;
        }
    }

    ret = 0;

done:

    if (fd >= 0) {
        close(fd);
    }

    free(buf);
    return ret;
}


/*
 * {"archived_at": "<RFC 3339, +08:00>", "payment_code": "<20 digits>",
 *  "notice_key": "{gpN}:n:<seq>", "final": "paid" | "cancelled" |
 *  "expired", "final_at": <unix>, "notice": {<every field of the hash>}},
 * malloc'd, or NULL (logged: the notice stays)
 */
static char *
gp_ret_line(gp_ret_t *rt, uint32_t shard, int64_t now, gp_ret_notice_t *x)
{
    json_t     *doc, *fields, *v;
    redisReply *h;
    const char *division, *yy, *final;
    char        code[GP_CODE_LEN + 1], key[GP_RET_KEY_MAX], at[26], *line;
    int64_t     seq, yyv, fin;
    size_t      i, dlen, ylen;

    h = x->hash;
    line = NULL;

    snprintf(key, sizeof(key), "{gp%u}:n:%s", shard, x->seq);

    division = gp_hash_get(h, "division", &dlen);
    yy = gp_hash_get(h, "yy", &ylen);
    final = gp_ret_final_state(h, now);

    if (final == NULL) {
        /* the delete script takes it out of the final set, nothing is lost */
        x->archived = 1;
        return NULL;
    }

    if (gp_parse_i64(x->seq, strlen(x->seq), &seq) != 0 || division == NULL
        || dlen != 6 || yy == NULL || gp_parse_i64(yy, ylen, &yyv) != 0
        || yyv > 99
        || gp_code_make(&rt->code_key, division, (unsigned) yyv,
                        rt->env->shards, shard, (uint64_t) seq, code)
               != 0)
    {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                     "notice %s: no payment code can be made of its division "
                     "and year; not archived, kept",
                     key);
        return NULL;
    }

    fin = (int64_t) strtoll(x->score, NULL, 10);
    gp_time_rfc3339(now, at);

    doc = json_object();
    fields = json_object();

    if (doc == NULL || fields == NULL
        || json_object_set_new(doc, "archived_at", json_string(at)) != 0
        || json_object_set_new(doc, "payment_code", json_string(code)) != 0
        || json_object_set_new(doc, "notice_key", json_string(key)) != 0
        || json_object_set_new(doc, "final", json_string(final)) != 0
        || json_object_set_new(doc, "final_at", json_integer(fin)) != 0)
    {
        goto nomem;
    }

    for (i = 0; i + 1 < h->elements; i += 2) {
        if (h->element[i]->type != REDIS_REPLY_STRING
            || h->element[i + 1]->type != REDIS_REPLY_STRING)
        {
            goto bad;
        }

        v = json_stringn(h->element[i + 1]->str, h->element[i + 1]->len);
        if (v == NULL) {
            goto bad; /* not UTF-8 */
        }

        if (json_object_setn_new(fields, h->element[i]->str, h->element[i]->len,
                                 v)
            != 0)
        {
            goto bad;
        }
    }

    if (json_object_set(doc, "notice", fields) != 0) {
        goto nomem;
    }

    line = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (line == NULL) {
        goto nomem;
    }

    json_decref(fields);
    json_decref(doc);
    x->archived = 2;
    return line;

bad:

    rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                 "notice %s (%s): a field is not UTF-8 text; not archived, "
                 "kept",
                 key, code);
    json_decref(fields);
    json_decref(doc);
    return NULL;

nomem:

    rt->env->log(rt->env, GP_LOG_ERROR, NULL, "notice %s: out of memory", key);
    json_decref(fields);
    json_decref(doc);
    return NULL;
}


/*
 * The receipt records in {gpr} first (one script), then the notice and what
 * belongs to it on its shard (one script, only if still final with the
 * archived score). 0, or -1 (logged)
 */
static int
gp_ret_delete(gp_ret_t *rt, redisContext *c, uint32_t shard, int64_t now,
              gp_ret_notice_t *x, gp_ret_stats_t *st)
{
    redisReply  *r, *h, *e;
    const char **argv, *pc, *biz, *kind;
    char(*refs)[24], (*keys)[GP_RET_KEY_MAX], nowb[24], pcode[24], *slash;
    size_t nrefs, nk, i;
    int    argc, k, ret;

    h = x->hash;
    argv = NULL;
    refs = NULL;
    keys = NULL;
    nrefs = 0;
    nk = 0;
    pc = NULL;
    ret = -1;

    /* every receipt of a paid notice: the records name the payment */
    if (h->elements > 0 && gp_hash_get(h, "receipt_number", NULL) != NULL
        && gp_ret_receipt_refs(h, &refs, &nrefs) != 0)
    {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "out of memory");
        return -1;
    }

    keys = calloc(3 * nrefs + 8, GP_RET_KEY_MAX);
    argv = calloc(3 + 4 * nrefs + 16, sizeof(char *));

    if (keys == NULL || argv == NULL) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "out of memory");
        goto done;
    }

    for (i = 0; i < nrefs; i++) {
        refs[i][8] = '\0';
        redisAppendCommand(c, "HMGET {gpr}:r:%s:%s payment_code kind biz",
                           refs[i], refs[i] + 9);
        refs[i][8] = '/';
    }

    for (i = 0; i < nrefs; i++) {
        if (redisGetReply(c, (void **) &r) != REDIS_OK) {
            gp_ret_failed(rt, c, "HMGET receipt record", NULL);
            goto done;
        }

        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
            gp_ret_failed(rt, c, "HMGET receipt record", r);

            /* the replies still on the way are read and dropped */
            for (i++; i < nrefs; i++) {
                if (redisGetReply(c, (void **) &r) != REDIS_OK) {
                    break;
                }
                freeReplyObject(r);
            }

            goto done;
        }

        e = r->element[0];

        /* gone: a pass before this one deleted it */
        if (e->type != REDIS_REPLY_STRING || e->len >= sizeof(pcode)) {
            freeReplyObject(r);
            continue;
        }

        if (pc == NULL) {
            memcpy(pcode, e->str, e->len + 1);
            pc = pcode;
        }

        kind = r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str
                                                         : "blue";
        biz = r->element[2]->type == REDIS_REPLY_STRING ? r->element[2]->str
                                                        : NULL;
        slash = refs[i] + 8;
        *slash = '\0';

        snprintf(keys[3 * nk], GP_RET_KEY_MAX, "{gpr}:r:%s:%s", refs[i],
                 slash + 1);
        snprintf(keys[3 * nk + 1], GP_RET_KEY_MAX, "{gpr}:ridx:%s:%s", refs[i],
                 slash + 1);

        /* a record made before records kept their biz: blue or ":red" */
        if (biz != NULL) {
            snprintf(keys[3 * nk + 2], GP_RET_KEY_MAX, "{gpr}:biz:%s", biz);
        } else {
            snprintf(keys[3 * nk + 2], GP_RET_KEY_MAX, "{gpr}:biz:%s%s", pc,
                     strcmp(kind, "red") == 0 ? ":red" : "");
        }

        *slash = '/';
        freeReplyObject(r);

        /* the wanted "<code>/<number>" is refs[i] itself */
        nk++;
        memmove(refs[nk - 1], refs[i], sizeof(refs[0]));
    }

    if (nk > 0) {
        argc = 3;

        for (i = 0; i < 3 * nk; i++) {
            argv[argc++] = keys[i];
        }

        argv[argc++] = pc;

        for (i = 0; i < nk; i++) {
            argv[argc++] = refs[i];
        }

        r = gp_ret_eval(c, &rt->purge_receipts, (int) (3 * nk), argc, argv,
                        NULL);

        if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
            gp_ret_failed(rt, c, "EVALSHA purge receipts", r);
            goto done;
        }

        st->receipts += r->integer;
        freeReplyObject(r);

        if (rt->fault == GP_RET_FAULT_AFTER_RECEIPTS) {
            rt->env->log(rt->env, GP_LOG_WARN, NULL,
                         "fault injection after_receipts: exiting");
            _exit(137);
        }
    }

    /* the notice */
    snprintf(keys[0], GP_RET_KEY_MAX, "{gp%u}:n:%s", shard, x->seq);
    snprintf(keys[1], GP_RET_KEY_MAX, "{gp%u}:rcpt:%s", shard, x->seq);
    snprintf(keys[2], GP_RET_KEY_MAX, "{gp%u}:rcpt:%s:red", shard, x->seq);
    snprintf(keys[3], GP_RET_KEY_MAX, "{gp%u}:due", shard);
    snprintf(keys[4], GP_RET_KEY_MAX, "{gp%u}:final", shard);
    memcpy(keys[5], keys[0], GP_RET_KEY_MAX);
    snprintf(keys[6], GP_RET_KEY_MAX, "{gp%u}:anomaly:cases", shard);
    snprintf(keys[7], GP_RET_KEY_MAX, "{gp%u}:anomaly:open", shard);

    {
        const char *idx;
        size_t      ilen;
        char        prefix[32];

        idx = h->elements > 0 ? gp_hash_get(h, "pidx", &ilen) : NULL;
        snprintf(prefix, sizeof(prefix), "{gp%u}:pidx:", shard);

        if (idx != NULL && ilen < GP_RET_KEY_MAX
            && strncmp(idx, prefix, strlen(prefix)) == 0)
        {
            memcpy(keys[5], idx, ilen + 1);
        }
    }

    snprintf(nowb, sizeof(nowb), "%lld", (long long) now);

    argc = 3;
    for (k = 0; k < 8; k++) {
        argv[argc++] = keys[k];
    }
    argv[argc++] = x->seq;
    argv[argc++] = x->score;
    argv[argc++] = nowb;

    r = gp_ret_eval(c, &rt->purge, 8, argc, argv, NULL);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        gp_ret_failed(rt, c, "EVALSHA purge notice", r);
        goto done;
    }

    if (strcmp(r->element[0]->str, "DELETED") == 0) {
        st->deleted++;
    } else if (strcmp(r->element[0]->str, "CHANGED") == 0) {
        st->changed++;
        rt->env->log(rt->env, GP_LOG_INFO, NULL,
                     "notice %s changed after it was archived: kept (the "
                     "next pass archives it again)",
                     keys[0]);
    } else if (strcmp(r->element[0]->str, "HELD") == 0) {
        st->held++;
        rt->env->log(rt->env, GP_LOG_INFO, NULL,
                     "notice %s has an anomaly case opened after it was "
                     "archived: kept (archived again once the case is "
                     "closed)",
                     keys[0]);
    }

    freeReplyObject(r);
    ret = 0;

done:

    free(refs);
    free(keys);
    free(argv);
    return ret;
}


/* ---- small things ----------------------------------------------------- */

/* "paid" (and receipted), "cancelled", "expired" (unpaid, due), or NULL */
static const char *
gp_ret_final_state(redisReply *h, int64_t now)
{
    const char *status, *due;
    size_t      slen, dlen;
    int64_t     d;

    status = gp_hash_get(h, "status", &slen);
    if (status == NULL) {
        return NULL;
    }

    if (strcmp(status, "CANCELLED") == 0) {
        return "cancelled";
    }

    /*
     * paid, and whatever refunds followed: final once receipted and no
     * refund is in flight (refund.lua sets REFUNDING while one is)
     */

    if (strcmp(status, "PAID") == 0 || strcmp(status, "PARTIALLY_REFUNDED") == 0
        || strcmp(status, "REFUNDED") == 0)
    {
        return gp_hash_get(h, "receipt_number", NULL) != NULL ? "paid" : NULL;
    }

    due = gp_hash_get(h, "due_at", &dlen);

    if (strcmp(status, "UNPAID") == 0 && due != NULL
        && gp_parse_i64(due, dlen, &d) == 0 && d < now)
    {
        return "expired";
    }

    return NULL;
}


/*
 * 1 if the notice is held by its anomalies: money recorded on the anomaly
 * stream for it (its "anomaly:<channel>:<trade no>" fields) without a case
 * yet, or a case ("case:<id>.state") that is not REFUNDED or RESOLVED
 */
static int
gp_ret_held(redisReply *h)
{
    redisReply *f, *v;
    size_t      i, marks, cases, n;

    marks = 0;
    cases = 0;

    for (i = 0; i + 1 < h->elements; i += 2) {
        f = h->element[i];
        v = h->element[i + 1];

        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (f->len > 8 && memcmp(f->str, "anomaly:", 8) == 0) {
            marks++;
            continue;
        }

        n = f->len;

        if (n > 11 && memcmp(f->str, "case:", 5) == 0
            && memcmp(f->str + n - 6, ".state", 6) == 0)
        {
            cases++;

            if (strcmp(v->str, "REFUNDED") != 0
                && strcmp(v->str, "RESOLVED") != 0) {
                return 1;
            }
        }
    }

    return cases < marks;
}


/*
 * "<code>/<number>" of every receipt of the notice: receipt_*, red_receipt_*
 * and the history (receipts); each once, malloc'd into *refs. 0, or -1 (out
 * of memory)
 */
static int
gp_ret_receipt_refs(redisReply *h, char (**refs)[24], size_t *n)
{
    json_t     *hist, *e;
    const char *code, *number, *v;
    char(*out)[24], ref[24];
    size_t i, j, k, cap, len;

    static const char *prefix[] = { "receipt_", "red_receipt_" };

    v = gp_hash_get(h, "receipts", &len);
    hist = v != NULL ? json_loadb(v, len, 0, NULL) : NULL;
    cap = 2 + (json_is_array(hist) ? json_array_size(hist) : 0);

    out = calloc(cap, sizeof(out[0]));
    if (out == NULL) {
        json_decref(hist);
        return -1;
    }

    k = 0;

    for (i = 0; i < cap; i++) {
        if (i < 2) {
            char f1[32], f2[32];

            snprintf(f1, sizeof(f1), "%scode", prefix[i]);
            snprintf(f2, sizeof(f2), "%snumber", prefix[i]);
            code = gp_hash_get(h, f1, NULL);
            number = gp_hash_get(h, f2, NULL);

        } else {
            e = json_array_get(hist, i - 2);
            code = json_string_value(json_object_get(e, "code"));
            number = json_string_value(json_object_get(e, "number"));
        }

        if (code == NULL || number == NULL || strlen(code) != 8
            || strlen(number) != 10 || strspn(code, "0123456789") != 8
            || strspn(number, "0123456789") != 10)
        {
            continue;
        }

        snprintf(ref, sizeof(ref), "%s/%s", code, number);

        for (j = 0; j < k && strcmp(out[j], ref) != 0; j++) { /* void */
        }

        if (j == k) {
            memcpy(out[k++], ref, sizeof(ref));
        }
    }

    json_decref(hist);
    *refs = out;
    *n = k;
    return 0;
}


/* EVALSHA, then EVAL on NOSCRIPT; argv[0..2] are filled here */
static redisReply *
gp_ret_eval(redisContext *c, gp_ret_script_t *s, int nkeys, int argc,
            const char **argv, const size_t *argvlen)
{
    redisReply *r;
    char        numkeys[16];

    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);

    argv[0] = "EVALSHA";
    argv[1] = s->sha;
    argv[2] = numkeys;

    r = redisCommandArgv(c, argc, argv, argvlen);

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = s->src;
        r = redisCommandArgv(c, argc, argv, argvlen);
    }

    argv[0] = argv[1] = argv[2] = NULL;
    return r;
}


/* logs a failed Redis call (r may be NULL: an I/O error); frees r; -1 */
static int
gp_ret_failed(gp_ret_t *rt, redisContext *c, const char *what, redisReply *r)
{
    if (r == NULL) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "redis %s failed: %s", what,
                     c->errstr[0] != '\0' ? c->errstr : "unknown error");
        return -1;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL, "redis %s failed: %.200s",
                     what, r->str);
    } else {
        rt->env->log(rt->env, GP_LOG_ERROR, NULL,
                     "redis %s: unexpected reply of type %d", what, r->type);
    }

    freeReplyObject(r);
    return -1;
}


/* a line for the command's output (out) or, for the thread, the log */
static void
gp_ret_say(gp_ret_t *rt, FILE *out, const char *fmt, ...)
{
    va_list ap;
    char    buf[1024];

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);

    if (out != NULL) {
        fprintf(out, "%s\n", buf);
        fflush(out);
    } else {
        rt->env->log(rt->env, GP_LOG_INFO, NULL, "%s", buf);
    }
}


static int64_t
gp_ret_now(void)
{
    return (int64_t) time(NULL);
}
