/*
 * anomaly: money that reached the platform for a notice but could not pay it
 * (settle.lua's {gpN}:anomaly stream: SECOND_PAYMENT, AMOUNT_MISMATCH,
 * NOT_PAYABLE, TRADE_NO_REUSED) is worked off, never left in a write-only
 * log. Each entry becomes a case with an owner and a state:
 *
 *   OPEN ──refund──▶ REFUNDING ──refund.succeeded──▶ REFUNDED
 *     │                  └────────refund.failed─────────▶ OPEN
 *     └──resolve --note──▶ RESOLVED
 *
 * A case lives in its notice's hash (fields "case:<entry id>.*"), so it
 * leaves Redis with the notice and is archived with it; per shard,
 * {gpN}:anomaly:cases (hash: entry id → notice seq) finds a case's notice
 * and {gpN}:anomaly:open (sorted set) lists what is not closed, so no
 * listing scans the keyspace. Ops name a case "A<shard>-<entry id>"
 * (A3-1796112956857-0: letters, digits and dashes, pasted as is into a
 * shell). Every change of a case is one script (workers/scripts/
 * anomaly_case.lua) on the notice's shard; a refund of a case is made as
 * refund.lua makes a unit's (origin "anomaly", the anomaly's own channel,
 * trade number and amount), and the refund plugin carries it.
 *
 * Events: an entry of {gpN}:anomaly opens its case, and refunds it at once
 * when its reason is in the policy (auto_refund, default SECOND_PAYMENT);
 * refund.succeeded / refund.failed of origin "anomaly" on {gpN}:refunds
 * move the case (REFUNDED; back to OPEN). Both are idempotent. Commands
 * (anomaly_cmd.c): list, show, refund, resolve.
 *
 * Configuration (plugins.anomaly): {"code_key": "<nginx's gov_pay_code_key
 * file>", "auto_refund": ["SECOND_PAYMENT"], "owner": "<who works the cases;
 * default the notice's unit>"}. Keys and script: docs/internals.md.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "anomaly.h"
#include "gp_util.h"


static const char *gp_anomaly_fields[] = { "code_key", "auto_refund", "owner",
                                           NULL };

/* the reasons settle.lua records, and the text of their refunds */
static const char *gp_anomaly_reasons[][2] = {
    {"SECOND_PAYMENT",   "重复缴费退款"         },
    { "AMOUNT_MISMATCH", "缴费金额不符退款"   },
    { "NOT_PAYABLE",     "缴款书不可缴费退款"},
    { "TRADE_NO_REUSED", "交易号重复退款"      },
};

#define GP_ANOMALY_NREASONS                                                    \
    (sizeof(gp_anomaly_reasons) / sizeof(gp_anomaly_reasons[0]))


static int         gp_anomaly_init(const json_t *conf, gp_plugin_env_t *env,
                                   void **state, char *err, size_t errlen);
static gp_result_t gp_anomaly_handle(void *state, const gp_event_t *ev,
                                     char *msg, size_t msglen);
static void        gp_anomaly_shutdown(void *state);
static gp_result_t gp_anomaly_open(gp_anomaly_t *a, const gp_event_t *ev,
                                   char *msg, size_t msglen);
static gp_result_t gp_anomaly_refunded(gp_anomaly_t *a, const gp_event_t *ev,
                                       char *msg, size_t msglen);
static int gp_anomaly_field(const gp_event_t *ev, const char *name, char *out,
                            size_t outlen, int digits);


static const char *const gp_anomaly_streams[] = { "anomaly", "refunds", NULL };


const gp_plugin_t gp_plugin_anomaly = { .name = "anomaly",
                                        .init = gp_anomaly_init,
                                        .handle = gp_anomaly_handle,
                                        .shutdown = gp_anomaly_shutdown,
                                        .streams = gp_anomaly_streams };


static int
gp_anomaly_init(const json_t *conf, gp_plugin_env_t *env, void **state,
                char *err, size_t errlen)
{
    gp_anomaly_t *a;
    json_t       *v, *r;
    const char   *key, *s;
    char         *path;
    size_t        i, k;

    if (!json_is_object(conf)) {
        snprintf(err, errlen, "the configuration must be an object");
        return -1;
    }

    key = gp_conf_unknown(conf, gp_anomaly_fields);
    if (key != NULL) {
        snprintf(err, errlen, "unknown field \"%s\"", key);
        return -1;
    }

    a = calloc(1, sizeof(gp_anomaly_t));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    a->env = env;
    path = NULL;

    v = json_object_get(conf, "code_key");
    if (!json_is_string(v) || json_string_length(v) == 0) {
        snprintf(err, errlen,
                 "\"code_key\" is required: the file of nginx's "
                 "gov_pay_code_key");
        goto fail;
    }

    path = gp_conf_path(env, json_string_value(v));
    if (path == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    if (gp_code_key_load(path, &a->code_key, err, errlen) != 0) {
        goto fail;
    }

    /* the policy: reasons refunded without waiting for a person */
    v = json_object_get(conf, "auto_refund");

    if (v == NULL) {
        a->auto_refund[a->nauto] = strdup("SECOND_PAYMENT");
        if (a->auto_refund[a->nauto++] == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }

    } else if (!json_is_array(v) || json_array_size(v) > GP_ANOMALY_NREASONS) {
        snprintf(err, errlen,
                 "\"auto_refund\" must be an array of anomaly reasons");
        goto fail;

    } else {
        json_array_foreach(v, i, r)
        {
            s = json_string_value(r);

            for (k = 0; s != NULL && k < GP_ANOMALY_NREASONS; k++) {
                if (strcmp(s, gp_anomaly_reasons[k][0]) == 0) {
                    break;
                }
            }

            if (s == NULL || k == GP_ANOMALY_NREASONS) {
                snprintf(err, errlen,
                         "\"auto_refund\"[%zu] must be one of SECOND_PAYMENT, "
                         "AMOUNT_MISMATCH, NOT_PAYABLE, TRADE_NO_REUSED",
                         i);
                goto fail;
            }

            a->auto_refund[a->nauto] = strdup(s);
            if (a->auto_refund[a->nauto++] == NULL) {
                snprintf(err, errlen, "out of memory");
                goto fail;
            }
        }
    }

    v = json_object_get(conf, "owner");

    if (v != NULL) {
        s = json_string_value(v);

        if (s == NULL || json_string_length(v) == 0
            || json_string_length(v) > 64
            || !gp_utf8_valid(s, json_string_length(v), NULL)
            || gp_text_has_controls(s, json_string_length(v)))
        {
            snprintf(err, errlen,
                     "\"owner\" must be a name of 1 to 64 bytes of text");
            goto fail;
        }

        a->owner = strdup(s);
        if (a->owner == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }

    a->script = gp_script("anomaly_case");
    if (a->script == NULL) {
        snprintf(err, errlen, "the script anomaly_case.lua is not built in");
        goto fail;
    }

    env->command = gp_anomaly_command;

    free(path);
    *state = a;
    return 0;

fail:

    free(path);
    gp_anomaly_shutdown(a);
    return -1;
}


static void
gp_anomaly_shutdown(void *state)
{
    gp_anomaly_t *a;
    size_t        i;

    a = state;

    if (a == NULL) {
        return;
    }

    for (i = 0; i < a->nauto; i++) {
        free(a->auto_refund[i]);
    }

    gp_code_key_free(&a->code_key);
    free(a->owner);
    free(a);
}


static gp_result_t
gp_anomaly_handle(void *state, const gp_event_t *ev, char *msg, size_t msglen)
{
    gp_anomaly_t *a;
    const char   *kind;

    a = state;
    kind = strrchr(ev->stream, ':');

    if (kind != NULL && strcmp(kind, ":anomaly") == 0) {
        return gp_anomaly_open(a, ev, msg, msglen);
    }

    return gp_anomaly_refunded(a, ev, msg, msglen);
}


/* an entry of {gpN}:anomaly: its case, refunded at once by the policy */
static gp_result_t
gp_anomaly_open(gp_anomaly_t *a, const gp_event_t *ev, char *msg, size_t msglen)
{
    redisReply *r;
    const char *argv[20], *code, *unit, *owner, *st;
    char        reason[40], channel[40], trade[136], amount[24], paid_at[24];
    char        recorded[24], now[24], id[GP_ANOMALY_ID_MAX], seq[24];
    char        division[7], ownbuf[80];
    size_t      clen, ulen, i;
    uint32_t    shard;
    uint64_t    s;
    unsigned    yy;
    int         autor;

    gp_anomaly_case_id(ev->shard, ev->id, id, sizeof(id));

    code = gp_event_get(ev, "payment_code", &clen);

    if (code == NULL
        || gp_code_parse(&a->code_key, code, clen, a->env->shards, division,
                         &yy, &shard, &s)
               != 0
        || shard != ev->shard)
    {
        snprintf(msg, msglen,
                 "case %s: the entry has no payment code of a notice of "
                 "shard %u",
                 id, ev->shard);
        return GP_FAILED;
    }

    if (gp_anomaly_field(ev, "reason", reason, sizeof(reason), 0) != 0
        || strspn(reason, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != strlen(reason)
        || gp_anomaly_field(ev, "channel", channel, sizeof(channel), 0) != 0
        || gp_anomaly_field(ev, "channel_trade_no", trade, sizeof(trade), 0)
               != 0
        || gp_anomaly_field(ev, "amount", amount, sizeof(amount), 1) != 0
        || strcmp(amount, "0") == 0 || strlen(amount) > 11
        || gp_anomaly_field(ev, "paid_at", paid_at, sizeof(paid_at), 1) != 0
        || gp_anomaly_field(ev, "recorded_at", recorded, sizeof(recorded), 1)
               != 0)
    {
        snprintf(msg, msglen,
                 "case %s: the entry lacks a valid reason, channel, "
                 "channel_trade_no, amount, paid_at or recorded_at",
                 id);
        return GP_FAILED;
    }

    /* the owner: the configured one, or the unit of the notice */
    owner = a->owner;
    if (owner == NULL) {
        ulen = 0;
        unit = gp_event_get(ev, "unit", &ulen);
        snprintf(ownbuf, sizeof(ownbuf), "%.*s", (int) (ulen > 64 ? 64 : ulen),
                 unit != NULL && ulen > 0 ? unit : "ops");
        owner = ownbuf;
    }

    autor = 0;
    for (i = 0; i < a->nauto; i++) {
        autor |= strcmp(a->auto_refund[i], reason) == 0;
    }

    snprintf(seq, sizeof(seq), "%llu", (unsigned long long) s);
    snprintf(now, sizeof(now), "%lld", (long long) time(NULL));

    argv[3] = "open";
    argv[4] = ev->id;
    argv[5] = now;
    argv[6] = code;
    argv[7] = reason;
    argv[8] = channel;
    argv[9] = trade;
    argv[10] = amount;
    argv[11] = paid_at;
    argv[12] = recorded;
    argv[13] = owner;
    argv[14] = autor ? "1" : "0";
    argv[15] = gp_anomaly_refund_reason(reason);
    argv[16] = "policy";

    r = gp_anomaly_case(a, a->env->redis, ev->shard, seq, 14, argv + 3);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        snprintf(msg, msglen, "case %s: redis %s", id,
                 r == NULL                      ? a->env->redis->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "answered something else");
        if (r != NULL) {
            freeReplyObject(r);
        }
        return GP_RETRY;
    }

    st = r->element[0]->str;

    if (strcmp(st, "NONE") == 0) {
        snprintf(msg, msglen,
                 "case %s: the notice of %.20s is not in Redis; the money "
                 "(%s fen, %s) is in this dead letter for ops",
                 id, code, amount, reason);
        freeReplyObject(r);
        return GP_FAILED;
    }

    if (r->elements < 3 || r->element[1]->type != REDIS_REPLY_STRING
        || r->element[2]->type != REDIS_REPLY_STRING)
    {
        snprintf(msg, msglen, "case %s: the case script answered %.16s", id,
                 st);
        freeReplyObject(r);
        return GP_RETRY;
    }

    if (strcmp(st, "EXISTS") == 0) {
        snprintf(msg, msglen, "case %s (%s) exists: %s%s%s", id, reason,
                 r->element[1]->str, r->element[2]->len ? " " : "",
                 r->element[2]->str);

    } else if (strcmp(r->element[1]->str, "REFUNDING") == 0) {
        snprintf(msg, msglen,
                 "case %s (%s, %s fen) opened and refunded by the policy: "
                 "refund %s",
                 id, reason, amount, r->element[2]->str);

    } else if (autor) {
        /* the policy could not refund it (99 refunds): a person must */
        a->env->log(a->env, GP_LOG_WARN, ev,
                    "case %s (%s, %s fen) could not be refunded by the "
                    "policy (%s): left OPEN",
                    id, reason, amount,
                    r->elements > 3 && r->element[3]->type == REDIS_REPLY_STRING
                        ? r->element[3]->str
                        : "?");
        snprintf(msg, msglen, "case %s opened, OPEN", id);

    } else {
        snprintf(msg, msglen, "case %s (%s, %s fen) opened, owner %s", id,
                 reason, amount, owner);
    }

    freeReplyObject(r);
    return GP_DONE;
}


/* refund.succeeded / refund.failed of a case's refund: the case moves */
static gp_result_t
gp_anomaly_refunded(gp_anomaly_t *a, const gp_event_t *ev, char *msg,
                    size_t msglen)
{
    redisReply *r;
    const char *type, *origin, *key, *argv[10];
    char        eid[GP_ANOMALY_EID_MAX], rid[24], error[256], now[24];
    char        id[GP_ANOMALY_ID_MAX], prefix[32];
    size_t      tlen, olen, klen, plen;
    int         ok;

    type = gp_event_get(ev, "type", &tlen);
    origin = gp_event_get(ev, "origin", &olen);

    if (type == NULL || origin == NULL || olen != 7
        || memcmp(origin, "anomaly", 7) != 0
        || (strcmp(type, "refund.succeeded") != 0
            && strcmp(type, "refund.failed") != 0))
    {
        snprintf(msg, msglen, "ignored: not the end of a case's refund");
        return GP_DONE;
    }

    ok = strcmp(type, "refund.succeeded") == 0;

    klen = 0;
    key = gp_event_get(ev, "notice_key", &klen);
    snprintf(prefix, sizeof(prefix), "{gp%u}:n:", ev->shard);
    plen = strlen(prefix);

    if (gp_anomaly_field(ev, "anomaly_id", eid, sizeof(eid), 0) != 0
        || !gp_anomaly_eid_ok(eid, strlen(eid))
        || gp_anomaly_field(ev, "refund_id", rid, sizeof(rid), 0) != 0
        || strlen(rid) != 23 || key == NULL || klen <= plen || klen > plen + 19
        || memcmp(key, prefix, plen) != 0
        || strspn(key + plen, "0123456789") != klen - plen)
    {
        snprintf(msg, msglen,
                 "refund event of origin anomaly without a valid anomaly_id, "
                 "refund_id or notice_key");
        return GP_FAILED;
    }

    gp_anomaly_case_id(ev->shard, eid, id, sizeof(id));

    if (gp_anomaly_field(ev, "error", error, sizeof(error), 0) != 0) {
        error[0] = '\0';
    }

    snprintf(now, sizeof(now), "%lld", (long long) time(NULL));

    argv[0] = "refund_done";
    argv[1] = eid;
    argv[2] = now;
    argv[3] = rid;
    argv[4] = ok ? "SUCCEEDED" : "FAILED";
    argv[5] = error;

    r = gp_anomaly_case(a, a->env->redis, ev->shard, key + plen, 6, argv);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        snprintf(msg, msglen, "case %s: redis %s", id,
                 r == NULL                      ? a->env->redis->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "answered something else");
        if (r != NULL) {
            freeReplyObject(r);
        }
        return GP_RETRY;
    }

    if (strcmp(r->element[0]->str, "NONE") == 0) {
        snprintf(msg, msglen,
                 "refund %s names case %s, which its notice has not", rid, id);
        freeReplyObject(r);
        return GP_FAILED;
    }

    if (strcmp(r->element[0]->str, "MOVED") == 0) {
        if (!ok) {
            a->env->log(a->env, GP_LOG_WARN, ev,
                        "case %s: refund %s failed (%s): the case is OPEN "
                        "again",
                        id, rid, error[0] != '\0' ? error : "no reason given");
        }

        snprintf(msg, msglen, "case %s: refund %s %s, the case is %s", id, rid,
                 ok ? "succeeded" : "failed",
                 r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING
                     ? r->element[1]->str
                     : "?");
    } else {
        snprintf(msg, msglen, "case %s: refund %s already counted (%s)", id,
                 rid, r->element[0]->str);
    }

    freeReplyObject(r);
    return GP_DONE;
}


/*
 * field name of the event into out: at most outlen - 1 bytes, no control
 * characters; digits only if digits. 0 or -1
 */
static int
gp_anomaly_field(const gp_event_t *ev, const char *name, char *out,
                 size_t outlen, int digits)
{
    const char *v;
    size_t      len;

    v = gp_event_get(ev, name, &len);

    if (v == NULL || len == 0 || len >= outlen || !gp_utf8_valid(v, len, NULL)
        || gp_text_has_controls(v, len)
        || (digits && strspn(v, "0123456789") != len))
    {
        return -1;
    }

    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}


redisReply *
gp_anomaly_case(gp_anomaly_t *a, redisContext *c, uint32_t shard,
                const char *seq, int argc, const char **argv)
{
    const char *all[32];
    char        keys[6][48];
    int         i;

    if (argc > 20) {
        return NULL;
    }

    snprintf(keys[0], sizeof(keys[0]), "{gp%u}:n:%s", shard, seq);
    snprintf(keys[1], sizeof(keys[1]), "{gp%u}:refunds", shard);
    snprintf(keys[2], sizeof(keys[2]), "{gp%u}:bankrefunds", shard);
    snprintf(keys[3], sizeof(keys[3]), "{gp%u}:anomaly:cases", shard);
    snprintf(keys[4], sizeof(keys[4]), "{gp%u}:anomaly:open", shard);
    snprintf(keys[5], sizeof(keys[5]), "{gp%u}:final", shard);

    for (i = 0; i < 6; i++) {
        all[3 + i] = keys[i];
    }

    for (i = 0; i < argc; i++) {
        all[9 + i] = argv[i];
    }

    return gp_script_eval(c, a->script, 6, 9 + argc, all, NULL);
}


const char *
gp_anomaly_refund_reason(const char *reason)
{
    size_t i;

    for (i = 0; i < GP_ANOMALY_NREASONS; i++) {
        if (strcmp(reason, gp_anomaly_reasons[i][0]) == 0) {
            return gp_anomaly_reasons[i][1];
        }
    }

    return "异常款项退款";
}


void
gp_anomaly_case_id(uint32_t shard, const char *eid, char *out, size_t outlen)
{
    snprintf(out, outlen, "A%u-%s", shard, eid);
}


int
gp_anomaly_eid_ok(const char *s, size_t len)
{
    size_t ms, sq;

    ms = strspn(s, "0123456789");

    if (ms == 0 || ms > 20 || ms >= len || s[ms] != '-') {
        return 0;
    }

    sq = strspn(s + ms + 1, "0123456789");

    return sq > 0 && sq <= 20 && ms + 1 + sq == len && len < GP_ANOMALY_EID_MAX;
}


int
gp_anomaly_parse_id(const char *id, uint32_t shards, uint32_t *shard, char *eid,
                    size_t eidlen)
{
    size_t        n, len;
    unsigned long s;

    len = strlen(id);

    if (len < 5 || (id[0] != 'A' && id[0] != 'a')) {
        return -1;
    }

    n = strspn(id + 1, "0123456789");

    if (n == 0 || n > 5 || id[1 + n] != '-'
        || !gp_anomaly_eid_ok(id + 2 + n, len - 2 - n) || len - 2 - n >= eidlen)
    {
        return -1;
    }

    s = strtoul(id + 1, NULL, 10);
    if (s >= shards) {
        return -1;
    }

    *shard = (uint32_t) s;
    memcpy(eid, id + 2 + n, len - 2 - n + 1);
    return 0;
}
