/*
 * refund_cmd: the ops commands of the refund plugin, run by
 * `gov-pay-worker -c worker.json refund ...` with a Redis connection of their
 * own, beside running workers (a running worker's delivery thread takes a
 * retried refund within poll_ms):
 *
 *   status [--json]
 *       refunds in the queues (queued, due now) and dead-lettered, per
 *       shard and in all, and every dead-lettered refund with its channel,
 *       amount, when it died and why.
 *   show <refund id>
 *       the refund as its notice holds it, and where the plugin has it
 *       (queue and next try, or dead), as JSON.
 *   retry <refund id> [--resend]
 *       a refund still REFUNDING back into the queue, due now (a bank's:
 *       bank_timeout_s from now), its tries counted from zero; it is asked
 *       about before it is sent again, unless --resend (ops found in the
 *       channel's statement that the channel never had it).
 */

#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gp_util.h"
#include "refund.h"


#define GP_RC_LIST "99" /* dead refunds listed per shard, at most 100 */


static int gp_rc_status(gp_refund_t *rf, redisContext *c, int argc,
                        char **argv);
static int gp_rc_show(gp_refund_t *rf, redisContext *c, int argc, char **argv);
static int gp_rc_retry(gp_refund_t *rf, redisContext *c, int argc, char **argv);
static int gp_rc_id(gp_refund_t *rf, const char *id, char *code, char *nn,
                    uint32_t *shard, char *key);
static json_t *gp_rc_refund(redisContext *c, const char *key, const char *nn,
                            char *err, size_t errlen);
static void    gp_rc_usage(void);


/* the fields of a refund shown (r<nn>.<field>), in this order */
static const char *gp_rc_fields[] = { "status",
                                      "amount",
                                      "origin",
                                      "channel",
                                      "channel_trade_no",
                                      "reason",
                                      "request_id",
                                      "anomaly_id",
                                      "created_at",
                                      "completed_at",
                                      "channel_refund_no",
                                      "error",
                                      "phase",
                                      "attempts",
                                      "waits",
                                      "last_error",
                                      "last_at",
                                      "dead_at",
                                      "txn_time",
                                      "entry_id",
                                      NULL };


int
gp_refund_command(void *state, int argc, char **argv)
{
    gp_refund_t  *rf;
    redisContext *c;
    char          err[512];
    int           rc;

    rf = state;

    if (argc < 1
        || (strcmp(argv[0], "status") != 0 && strcmp(argv[0], "show") != 0
            && strcmp(argv[0], "retry") != 0))
    {
        gp_rc_usage();
        return 2;
    }

    c = rf->env->connect(rf->env, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "refund: %s\n", err);
        return 1;
    }

    if (strcmp(argv[0], "status") == 0) {
        rc = gp_rc_status(rf, c, argc - 1, argv + 1);
    } else if (strcmp(argv[0], "show") == 0) {
        rc = gp_rc_show(rf, c, argc - 1, argv + 1);
    } else {
        rc = gp_rc_retry(rf, c, argc - 1, argv + 1);
    }

    redisFree(c);
    return rc;
}


static void
gp_rc_usage(void)
{
    fprintf(stderr,
            "usage: gov-pay-worker -c <worker.json> refund status [--json]\n"
            "       gov-pay-worker -c <worker.json> refund show <refund id>\n"
            "       gov-pay-worker -c <worker.json> refund retry <refund id> "
            "[--resend]\n");
}


/* ---- status ----------------------------------------------------------- */

static int
gp_rc_status(gp_refund_t *rf, redisContext *c, int argc, char **argv)
{
    json_t     *out, *shards, *dead, *row, *one, *refund;
    redisReply *r[3], *d;
    char        now[24], code[GP_CODE_LEN + 1], nn[3], key[GP_REFUND_KEY_MAX],
        when[26], err[256], *dump;
    long long total[3], ms;
    uint32_t  s, shard;
    size_t    i, k;
    int       as_json, rc;

    as_json = argc == 1 && strcmp(argv[0], "--json") == 0;

    if (argc > 1 || (argc == 1 && !as_json)) {
        gp_rc_usage();
        return 2;
    }

    out = json_object();
    shards = json_array();
    dead = json_array();

    if (out == NULL || shards == NULL || dead == NULL) {
        json_decref(out);
        json_decref(shards);
        json_decref(dead);
        return 1;
    }

    json_object_set_new(out, "shards", shards);
    json_object_set_new(out, "dead_refunds", dead);

    snprintf(now, sizeof(now), "%lld", (long long) gp_refund_now_ms());
    total[0] = total[1] = total[2] = 0;
    rc = 1;

    for (s = 0; s < rf->env->shards; s++) {
        r[0] = redisCommand(c, "ZCARD %s", rf->queue[s]);
        r[1] = redisCommand(c, "ZCOUNT %s -inf %s", rf->queue[s], now);
        r[2] = redisCommand(c, "ZCARD %s", rf->dead_set[s]);

        for (k = 0; k < 3; k++) {
            if (r[k] == NULL || r[k]->type != REDIS_REPLY_INTEGER) {
                fprintf(stderr, "refund: redis on shard %u failed: %s\n", s,
                        r[k] == NULL ? c->errstr
                                     : (r[k]->type == REDIS_REPLY_ERROR
                                            ? r[k]->str
                                            : "unexpected reply"));
                for (k = 0; k < 3; k++) {
                    if (r[k] != NULL) {
                        freeReplyObject(r[k]);
                    }
                }
                goto done;
            }
        }

        row = json_pack("{s:i,s:I,s:I,s:I}", "shard", (int) s, "queued",
                        (json_int_t) r[0]->integer, "due",
                        (json_int_t) r[1]->integer, "dead",
                        (json_int_t) r[2]->integer);
        json_array_append_new(shards, row);

        for (k = 0; k < 3; k++) {
            total[k] += r[k]->integer;
        }

        if (r[2]->integer > 0) {
            d = redisCommand(c, "ZRANGE %s 0 " GP_RC_LIST " WITHSCORES",
                             rf->dead_set[s]);

            for (i = 0; d != NULL && d->type == REDIS_REPLY_ARRAY
                        && i + 1 < d->elements;
                 i += 2)
            {
                if (d->element[i]->type != REDIS_REPLY_STRING
                    || gp_rc_id(rf, d->element[i]->str, code, nn, &shard, key)
                           != 0)
                {
                    continue;
                }

                refund = gp_rc_refund(c, key, nn, err, sizeof(err));
                if (refund == NULL) {
                    continue;
                }

                ms = strtoll(d->element[i + 1]->str, NULL, 10);
                gp_time_rfc3339(ms / 1000, when);

                one = json_pack(
                    "{s:s,s:O,s:O,s:s,s:O,s:O,s:O}", "refund_id",
                    d->element[i]->str, "channel",
                    json_object_get(refund, "channel") ?: json_null(), "amount",
                    json_object_get(refund, "amount") ?: json_null(), "dead_at",
                    when, "attempts",
                    json_object_get(refund, "attempts") ?: json_null(),
                    "status", json_object_get(refund, "status") ?: json_null(),
                    "error",
                    json_object_get(refund, "last_error") ?: json_null());
                json_array_append_new(dead, one);
                json_decref(refund);
            }

            if (d != NULL) {
                freeReplyObject(d);
            }
        }

        for (k = 0; k < 3; k++) {
            freeReplyObject(r[k]);
        }
    }

    json_object_set_new(out, "queued", json_integer(total[0]));
    json_object_set_new(out, "due", json_integer(total[1]));
    json_object_set_new(out, "dead", json_integer(total[2]));

    if (as_json) {
        dump = json_dumps(out, JSON_SORT_KEYS | JSON_COMPACT);
        if (dump != NULL) {
            printf("%s\n", dump);
        }
        free(dump);

    } else {
        printf("%-6s %8s %8s %8s\n", "shard", "queued", "due", "dead");

        json_array_foreach(shards, i, row)
        {
            if (json_integer_value(json_object_get(row, "queued")) == 0
                && json_integer_value(json_object_get(row, "dead")) == 0)
            {
                continue;
            }

            printf("%-6lld %8lld %8lld %8lld\n",
                   json_integer_value(json_object_get(row, "shard")),
                   json_integer_value(json_object_get(row, "queued")),
                   json_integer_value(json_object_get(row, "due")),
                   json_integer_value(json_object_get(row, "dead")));
        }

        printf("%-6s %8lld %8lld %8lld\n", "total", total[0], total[1],
               total[2]);

        if (json_array_size(dead) > 0) {
            printf("\ndead-lettered refunds (still REFUNDING: see `refund show`"
                   ", then `refund retry`):\n");
        }

        json_array_foreach(dead, i, one)
        {
            printf("%s  %-8s %10s fen  dead since %s  %s\n",
                   json_string_value(json_object_get(one, "refund_id")),
                   json_string_value(json_object_get(one, "channel")) ?: "?",
                   json_string_value(json_object_get(one, "amount")) ?: "?",
                   json_string_value(json_object_get(one, "dead_at")),
                   json_string_value(json_object_get(one, "error")) ?: "");
        }
    }

    rc = 0;

done:

    json_decref(out);
    return rc;
}


/* ---- show ------------------------------------------------------------- */

static int
gp_rc_show(gp_refund_t *rf, redisContext *c, int argc, char **argv)
{
    json_t     *refund;
    redisReply *r;
    char        code[GP_CODE_LEN + 1], nn[3], key[GP_REFUND_KEY_MAX], err[256],
        when[26], *dump;
    uint32_t  shard;
    long long ms;

    if (argc != 1) {
        gp_rc_usage();
        return 2;
    }

    if (gp_rc_id(rf, argv[0], code, nn, &shard, key) != 0) {
        fprintf(stderr,
                "refund: \"%.40s\" is not a refund id (<payment "
                "code>R<nn>)\n",
                argv[0]);
        return 1;
    }

    refund = gp_rc_refund(c, key, nn, err, sizeof(err));
    if (refund == NULL) {
        fprintf(stderr, "refund: %s: %s\n", argv[0], err);
        return 1;
    }

    json_object_set_new(refund, "refund_id", json_string(argv[0]));
    json_object_set_new(refund, "payment_code", json_string(code));

    r = redisCommand(c, "ZSCORE %s %s", rf->queue[shard], argv[0]);
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        ms = strtoll(r->str, NULL, 10);
        gp_time_rfc3339(ms / 1000, when);
        json_object_set_new(refund, "queue", json_string("queued"));
        json_object_set_new(refund, "next_try_at", json_string(when));
    } else if (r != NULL) {
        freeReplyObject(r);
        r = redisCommand(c, "ZSCORE %s %s", rf->dead_set[shard], argv[0]);
        json_object_set_new(
            refund, "queue",
            json_string(r != NULL && r->type == REDIS_REPLY_STRING ? "dead"
                                                                   : "none"));
    }

    if (r == NULL) {
        fprintf(stderr, "refund: redis ZSCORE failed: %s\n", c->errstr);
        json_decref(refund);
        return 1;
    }

    freeReplyObject(r);

    dump = json_dumps(refund, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (dump != NULL) {
        printf("%s\n", dump);
    }

    free(dump);
    json_decref(refund);
    return 0;
}


/* ---- retry ------------------------------------------------------------ */

static int
gp_rc_retry(gp_refund_t *rf, redisContext *c, int argc, char **argv)
{
    json_t     *refund;
    redisReply *r;
    const char *id, *args[11], *channel, *word;
    char        code[GP_CODE_LEN + 1], nn[3], key[GP_REFUND_KEY_MAX], err[256],
        now_s[24], due_s[24];
    uint32_t shard;
    int64_t  now, due, created;
    int      resend, i, rc;

    id = NULL;
    resend = 0;

    for (i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--resend") == 0) {
            resend = 1;
        } else if (argv[i][0] != '-' && id == NULL) {
            id = argv[i];
        } else {
            gp_rc_usage();
            return 2;
        }
    }

    if (id == NULL) {
        gp_rc_usage();
        return 2;
    }

    if (gp_rc_id(rf, id, code, nn, &shard, key) != 0) {
        fprintf(stderr,
                "refund: \"%.40s\" is not a refund id (<payment "
                "code>R<nn>)\n",
                id);
        return 1;
    }

    refund = gp_rc_refund(c, key, nn, err, sizeof(err));
    if (refund == NULL) {
        fprintf(stderr, "refund: %s: %s\n", id, err);
        return 1;
    }

    now = gp_refund_now_ms();
    channel = json_string_value(json_object_get(refund, "channel"));
    created = now / 1000;

    /* a bank's refund is watched again for bank_timeout_s from now */
    due = gp_refund_due(rf, channel != NULL ? channel : "", created, now);

    json_decref(refund);

    snprintf(now_s, sizeof(now_s), "%lld", (long long) now);
    snprintf(due_s, sizeof(due_s), "%lld", (long long) due);

    args[3] = key;
    args[4] = rf->queue[shard];
    args[5] = rf->dead_set[shard];
    args[6] = id;
    args[7] = nn;
    args[8] = now_s;
    args[9] = due_s;
    args[10] = resend ? "1" : "0";

    r = gp_script_eval(c, rf->s_retry, 3, 11, args, NULL);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        fprintf(stderr, "refund: redis EVALSHA (refund_retry) failed: %s\n",
                r == NULL ? c->errstr
                          : (r->type == REDIS_REPLY_ERROR ? r->str
                                                          : "unexpected "
                                                            "reply"));
        if (r != NULL) {
            freeReplyObject(r);
        }
        return 1;
    }

    word = r->element[0]->str;
    rc = 1;

    if (strcmp(word, "QUEUED") == 0) {
        printf("%s queued again%s%s; %s\n", id,
               r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING
                       && strcmp(r->element[1]->str, "1") == 0
                   ? " (it was dead-lettered)"
                   : "",
               resend ? ", to be sent without asking first" : "",
               due > now ? "a bank's refund: watched for bank_timeout_s again"
                         : "due now");
        rc = 0;

    } else if (strcmp(word, "FINAL") == 0) {
        printf("%s has ended: %s; nothing to retry\n", id,
               r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING
                   ? r->element[1]->str
                   : "?");
        rc = 0;

    } else if (strcmp(word, "LEASED") == 0) {
        fprintf(stderr,
                "refund: %s is being tried by a worker right now; look "
                "again with `refund show %s`\n",
                id, id);

    } else {
        fprintf(stderr, "refund: %s: no such refund\n", id);
    }

    freeReplyObject(r);
    return rc;
}


/* ---- helpers ---------------------------------------------------------- */

static int
gp_rc_id(gp_refund_t *rf, const char *id, char *code, char *nn, uint32_t *shard,
         char *key)
{
    return gp_refund_parse_id(rf, id, strlen(id), code, nn, shard, key,
                              GP_REFUND_KEY_MAX);
}


/* the refund's fields (r<nn>.*) as a JSON object; NULL with err */
static json_t *
gp_rc_refund(redisContext *c, const char *key, const char *nn, char *err,
             size_t errlen)
{
    json_t      *out;
    redisReply  *r;
    const char **argv;
    char       **own;
    size_t       n, i;

    for (n = 0; gp_rc_fields[n] != NULL; n++) { /* void */
    }

    argv = calloc(n + 2, sizeof(char *));
    own = calloc(n, sizeof(char *));
    out = NULL;
    r = NULL;

    if (argv == NULL || own == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }

    argv[0] = "HMGET";
    argv[1] = key;

    for (i = 0; i < n; i++) {
        if (asprintf(&own[i], "r%s.%s", nn, gp_rc_fields[i]) < 0) {
            own[i] = NULL;
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        argv[i + 2] = own[i];
    }

    r = redisCommandArgv(c, (int) (n + 2), argv, NULL);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n) {
        snprintf(err, errlen, "redis HMGET failed: %s",
                 r == NULL
                     ? c->errstr
                     : (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply"));
        goto done;
    }

    if (r->element[0]->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "no such refund");
        goto done;
    }

    out = json_object();
    if (out == NULL) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (r->element[i]->type == REDIS_REPLY_STRING && r->element[i]->len > 0)
        {
            json_object_set_new(
                out, gp_rc_fields[i],
                json_stringn(r->element[i]->str, r->element[i]->len));
        }
    }

done:

    if (r != NULL) {
        freeReplyObject(r);
    }

    if (own != NULL) {
        for (i = 0; i < n; i++) {
            free(own[i]);
        }
    }

    free(own);
    free(argv);
    return out;
}
