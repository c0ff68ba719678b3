/*
 * anomaly_cmd: the ops commands of the anomaly plugin, run by
 * `gov-pay-worker -c worker.json anomaly ...` with a Redis connection of
 * their own, beside running workers:
 *
 *   list [--all] [--json]
 *       the cases not closed (OPEN, REFUNDING), oldest first, from every
 *       shard's {gpN}:anomaly:open; --all: every case whose notice is still
 *       in Redis ({gpN}:anomaly:cases), closed ones too.
 *   show <case id> [--json]
 *       one case: its fields, its notice, its refunds, its log.
 *   refund <case id> [--by <who>]
 *       an OPEN case's money back to its payer: a refund of origin anomaly
 *       (anomaly_case.lua), carried by the refund plugin; the case is
 *       REFUNDING until the channel answers.
 *   resolve <case id> --note "<text>" [--by <who>]
 *       an OPEN case closed without a refund (the payer was reached, the
 *       money was booked otherwise): the note says why, and is kept.
 *
 * A case id is "A<shard>-<ms>-<seq>" (the anomaly's stream entry id). <who>
 * is 1 to 64 of A-Z a-z 0-9 . _ @ -; default $USER, else "ops". Exit
 * status: 0 done, 1 not done (no such case, a state that does not allow
 * it, Redis trouble), 2 a wrong command line (nothing is changed).
 */

#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "anomaly.h"
#include "gp_util.h"


typedef struct {
    json_t            *row;
    unsigned long long ms;
    unsigned long long sq;
    uint32_t           shard;
} gp_cmd_case_t;


static const char *gp_cmd_fields[] = {
    "state",   "reason",           "amount",    "payment_code",
    "channel", "channel_trade_no", "paid_at",   "recorded_at",
    "owner",   "opened_at",        "refund_id", "error",
    "note",    "resolved_by",      "closed_at", "log",
    NULL
};


static int gp_cmd_usage(void);
static int gp_cmd_list(gp_anomaly_t *a, redisContext *c, int argc, char **argv);
static int gp_cmd_show(gp_anomaly_t *a, redisContext *c, int argc, char **argv);
static int gp_cmd_change(gp_anomaly_t *a, redisContext *c, int argc,
                         char **argv, int resolve);
static int gp_cmd_find(gp_anomaly_t *a, redisContext *c, const char *id,
                       uint32_t *shard, char *eid, size_t eidlen, char *seq,
                       size_t seqlen);
static json_t     *gp_cmd_case(redisContext *c, uint32_t shard, const char *eid,
                               const char *seq, int full, int *err);
static int         gp_cmd_by(const char *by);
static int         gp_cmd_compare(const void *x, const void *y);
static void        gp_cmd_print_row(json_t *row);
static const char *gp_cmd_str(json_t *obj, const char *key);


int
gp_anomaly_command(void *state, int argc, char **argv)
{
    gp_anomaly_t *a;
    redisContext *c;
    char          err[512];
    int           rc;

    a = state;

    if (argc < 1
        || (strcmp(argv[0], "list") != 0 && strcmp(argv[0], "show") != 0
            && strcmp(argv[0], "refund") != 0
            && strcmp(argv[0], "resolve") != 0))
    {
        return gp_cmd_usage();
    }

    c = a->env->connect(a->env, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "anomaly: %s\n", err);
        return 1;
    }

    if (strcmp(argv[0], "list") == 0) {
        rc = gp_cmd_list(a, c, argc - 1, argv + 1);
    } else if (strcmp(argv[0], "show") == 0) {
        rc = gp_cmd_show(a, c, argc - 1, argv + 1);
    } else {
        rc = gp_cmd_change(a, c, argc - 1, argv + 1,
                           strcmp(argv[0], "resolve") == 0);
    }

    redisFree(c);
    return rc;
}


static int
gp_cmd_usage(void)
{
    fprintf(stderr,
            "usage: gov-pay-worker -c <worker.json> anomaly list [--all] "
            "[--json]\n"
            "       gov-pay-worker -c <worker.json> anomaly show <case id> "
            "[--json]\n"
            "       gov-pay-worker -c <worker.json> anomaly refund <case id> "
            "[--by <who>]\n"
            "       gov-pay-worker -c <worker.json> anomaly resolve <case id> "
            "--note \"<text>\" [--by <who>]\n"
            "a case id is A<shard>-<ms>-<seq>, as `anomaly list` shows it\n");
    return 2;
}


/* ---- list ------------------------------------------------------------- */

static int
gp_cmd_list(gp_anomaly_t *a, redisContext *c, int argc, char **argv)
{
    gp_cmd_case_t *cases, *p;
    redisReply    *r, *ids, *seqs;
    json_t        *out;
    char          *dump, cur[32];
    size_t         n, cap, i, j;
    uint32_t       s;
    int            all, as_json, k, ret, e;

    all = 0;
    as_json = 0;

    for (k = 0; k < argc; k++) {
        if (strcmp(argv[k], "--all") == 0) {
            all = 1;
        } else if (strcmp(argv[k], "--json") == 0) {
            as_json = 1;
        } else {
            fprintf(stderr, "anomaly list: unexpected argument \"%s\"\n",
                    argv[k]);
            return 2;
        }
    }

    cases = NULL;
    n = 0;
    cap = 0;
    ret = 1;

    for (s = 0; s < a->env->shards; s++) {
        strcpy(cur, "0");

        do {
            /* the ids of the shard's cases and their notices' seqs */
            if (all) {
                r = redisCommand(c, "HSCAN {gp%u}:anomaly:cases %s COUNT 500",
                                 s, cur);
                if (r == NULL || r->type != REDIS_REPLY_ARRAY
                    || r->elements != 2
                    || r->element[0]->type != REDIS_REPLY_STRING
                    || r->element[1]->type != REDIS_REPLY_ARRAY)
                {
                    goto redis_failed;
                }

                snprintf(cur, sizeof(cur), "%s", r->element[0]->str);
                ids = r->element[1];
                seqs = NULL;

            } else {
                r = redisCommand(c, "ZRANGE {gp%u}:anomaly:open 0 -1", s);
                if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
                    goto redis_failed;
                }

                strcpy(cur, "0");
                ids = r;
                seqs = NULL;

                if (r->elements > 0) {
                    const char **hv;

                    hv = calloc(r->elements + 2, sizeof(char *));
                    if (hv == NULL) {
                        freeReplyObject(r);
                        goto nomem;
                    }

                    hv[0] = "HMGET";
                    hv[1] = NULL;

                    {
                        char key[48];

                        snprintf(key, sizeof(key), "{gp%u}:anomaly:cases", s);
                        hv[1] = key;

                        for (i = 0; i < r->elements; i++) {
                            hv[2 + i] = r->element[i]->str;
                        }

                        seqs = redisCommandArgv(c, (int) r->elements + 2, hv,
                                                NULL);
                    }

                    free(hv);

                    if (seqs == NULL || seqs->type != REDIS_REPLY_ARRAY
                        || seqs->elements != r->elements)
                    {
                        if (seqs != NULL) {
                            freeReplyObject(seqs);
                        }
                        goto redis_failed;
                    }
                }
            }

            for (i = 0; i < ids->elements; i += all ? 2 : 1) {
                const char *eid, *seq;

                eid = ids->element[i]->str;
                seq = all ? (i + 1 < ids->elements ? ids->element[i + 1]->str
                                                   : NULL)
                          : (seqs->element[i]->type == REDIS_REPLY_STRING
                                 ? seqs->element[i]->str
                                 : NULL);

                if (eid == NULL || seq == NULL
                    || !gp_anomaly_eid_ok(eid, strlen(eid))
                    || strspn(seq, "0123456789") != strlen(seq))
                {
                    continue;
                }

                if (n == cap) {
                    cap = cap ? 2 * cap : 64;
                    p = realloc(cases, cap * sizeof(gp_cmd_case_t));
                    if (p == NULL) {
                        if (seqs != NULL) {
                            freeReplyObject(seqs);
                        }
                        freeReplyObject(r);
                        goto nomem;
                    }
                    cases = p;
                }

                e = 0;
                cases[n].row = gp_cmd_case(c, s, eid, seq, 0, &e);
                if (e) {
                    if (seqs != NULL) {
                        freeReplyObject(seqs);
                    }
                    freeReplyObject(r);
                    goto redis_failed_reported;
                }

                if (cases[n].row == NULL) {
                    continue; /* its notice went meanwhile */
                }

                cases[n].ms = strtoull(eid, NULL, 10);
                cases[n].sq = strtoull(strchr(eid, '-') + 1, NULL, 10);
                cases[n].shard = s;
                n++;
            }

            if (seqs != NULL) {
                freeReplyObject(seqs);
            }

            freeReplyObject(r);

        } while (strcmp(cur, "0") != 0);
    }

    qsort(cases, n, sizeof(gp_cmd_case_t), gp_cmd_compare);

    /* HSCAN may return a field twice: each case once */
    for (i = 0, j = 0; i < n; i++) {
        if (j > 0 && gp_cmd_compare(&cases[j - 1], &cases[i]) == 0) {
            json_decref(cases[i].row);
            continue;
        }

        cases[j++] = cases[i];
    }

    n = j;

    if (as_json) {
        out = json_array();
        for (j = 0; out != NULL && j < n; j++) {
            json_array_append(out, cases[j].row);
        }

        dump = out != NULL ? json_dumps(out, JSON_COMPACT) : NULL;
        json_decref(out);

        if (dump == NULL) {
            goto nomem;
        }

        printf("%s\n", dump);
        free(dump);

    } else {
        printf("%-24s %-10s %-16s %14s %-20s %-9s %-18s %-25s %s\n", "case",
               "state", "reason", "amount (yuan)", "payment code", "channel",
               "owner", "recorded", "refund");

        for (j = 0; j < n; j++) {
            gp_cmd_print_row(cases[j].row);
        }

        printf("%zu %s\n", n, all ? "case(s)" : "open case(s)");
    }

    ret = 0;
    goto done;

redis_failed:

    fprintf(stderr, "anomaly list: redis: %s\n",
            r == NULL ? c->errstr
                      : (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply"));
    if (r != NULL) {
        freeReplyObject(r);
    }

redis_failed_reported:

    ret = 1;
    goto done;

nomem:

    fprintf(stderr, "anomaly list: out of memory\n");
    ret = 1;

done:

    for (j = 0; j < n; j++) {
        json_decref(cases[j].row);
    }

    free(cases);
    return ret;
}


static int
gp_cmd_compare(const void *x, const void *y)
{
    const gp_cmd_case_t *a, *b;

    a = x;
    b = y;

    if (a->ms != b->ms) {
        return a->ms < b->ms ? -1 : 1;
    }

    if (a->sq != b->sq) {
        return a->sq < b->sq ? -1 : 1;
    }

    return a->shard < b->shard ? -1 : (a->shard > b->shard);
}


static void
gp_cmd_print_row(json_t *row)
{
    char    yuan[32];
    int64_t fen;

    fen = json_integer_value(json_object_get(row, "amount"));
    if (gp_fen_to_yuan(fen, yuan, sizeof(yuan)) < 0) {
        snprintf(yuan, sizeof(yuan), "?");
    }

    printf("%-24s %-10s %-16s %14s %-20s %-9s %-18s %-25s %s\n",
           gp_cmd_str(row, "case"), gp_cmd_str(row, "state"),
           gp_cmd_str(row, "reason"), yuan, gp_cmd_str(row, "payment_code"),
           gp_cmd_str(row, "channel"), gp_cmd_str(row, "owner"),
           gp_cmd_str(row, "recorded_at"), gp_cmd_str(row, "refund_id"));
}


static const char *
gp_cmd_str(json_t *obj, const char *key)
{
    const char *s;

    s = json_string_value(json_object_get(obj, key));
    return s != NULL ? s : "";
}


/*
 * The case eid of notice seq as a JSON object ("case", its fields; with
 * full: "notice" and "refunds" too), NULL if the notice has no such case
 * (*err 0) or on a Redis failure (*err 1, reported)
 */
static json_t *
gp_cmd_case(redisContext *c, uint32_t shard, const char *eid, const char *seq,
            int full, int *err)
{
    redisReply *r;
    json_t     *row, *refunds, *one, *notice;
    const char *f, *v;
    char        id[GP_ANOMALY_ID_MAX], name[96], when[26], nkey[48];
    size_t      i, plen, flen;
    int64_t     t;

    *err = 0;

    snprintf(nkey, sizeof(nkey), "{gp%u}:n:%s", shard, seq);

    r = redisCommand(c, "HGETALL %s", nkey);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "anomaly: redis HGETALL %s: %s\n", nkey,
                r == NULL
                    ? c->errstr
                    : (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply"));
        if (r != NULL) {
            freeReplyObject(r);
        }
        *err = 1;
        return NULL;
    }

    snprintf(name, sizeof(name), "case:%s.state", eid);
    if (gp_hash_get(r, name, NULL) == NULL) {
        freeReplyObject(r);
        return NULL;
    }

    gp_anomaly_case_id(shard, eid, id, sizeof(id));

    row = json_pack("{s:s}", "case", id);
    if (row == NULL) {
        goto nomem;
    }

    for (i = 0; gp_cmd_fields[i] != NULL; i++) {
        f = gp_cmd_fields[i];

        if (!full && strcmp(f, "log") == 0) {
            continue;
        }

        snprintf(name, sizeof(name), "case:%s.%s", eid, f);
        v = gp_hash_get(r, name, &flen);
        if (v == NULL) {
            continue;
        }

        if (strcmp(f, "amount") == 0) {
            if (gp_parse_i64(v, flen, &t) == 0
                && json_object_set_new(row, f, json_integer(t)) != 0)
            {
                goto nomem;
            }

        } else if (strcmp(f, "paid_at") == 0 || strcmp(f, "recorded_at") == 0
                   || strcmp(f, "opened_at") == 0
                   || strcmp(f, "closed_at") == 0)
        {
            if (gp_parse_i64(v, flen, &t) == 0) {
                gp_time_rfc3339(t, when);
                if (json_object_set_new(row, f, json_string(when)) != 0) {
                    goto nomem;
                }
            }

        } else if (json_object_set_new(row, f, json_stringn(v, flen)) != 0) {
            goto nomem;
        }
    }

    if (full) {
        notice = json_pack("{s:s}", "notice_key", nkey);
        if (notice == NULL || json_object_set_new(row, "notice", notice) != 0) {
            goto nomem;
        }

        if (((v = gp_hash_get(r, "status", &flen)) != NULL
             && json_object_set_new(notice, "status", json_stringn(v, flen)))
            || ((v = gp_hash_get(r, "unit", &flen)) != NULL
                && json_object_set_new(notice, "unit", json_stringn(v, flen)))
            || ((v = gp_hash_get(r, "amount", &flen)) != NULL
                && gp_parse_i64(v, flen, &t) == 0
                && json_object_set_new(notice, "amount", json_integer(t))))
        {
            goto nomem;
        }

        /* the refunds made for this case ("r<nn>.anomaly_id" is its id) */
        refunds = json_array();
        if (refunds == NULL || json_object_set_new(row, "refunds", refunds)) {
            goto nomem;
        }

        for (i = 0; i + 1 < r->elements; i += 2) {
            f = r->element[i]->str;
            plen = r->element[i]->len;

            if (plen != 14 || f[0] != 'r' || strcmp(f + 3, ".anomaly_id") != 0
                || r->element[i + 1]->type != REDIS_REPLY_STRING
                || strcmp(r->element[i + 1]->str, eid) != 0)
            {
                continue;
            }

            one = json_object();
            if (one == NULL || json_array_append_new(refunds, one) != 0) {
                goto nomem;
            }

            snprintf(name, sizeof(name), "%.2s", f + 1);
            if (json_object_set_new(one, "nn", json_string(name)) != 0) {
                goto nomem;
            }

            snprintf(name, sizeof(name), "r%.2s.status", f + 1);
            v = gp_hash_get(r, name, NULL);
            if (json_object_set_new(one, "status",
                                    json_string(v != NULL ? v : ""))
                != 0) {
                goto nomem;
            }

            snprintf(name, sizeof(name), "r%.2s.error", f + 1);
            v = gp_hash_get(r, name, NULL);
            if (v != NULL
                && json_object_set_new(one, "error", json_string(v)) != 0) {
                goto nomem;
            }
        }
    }

    freeReplyObject(r);
    return row;

nomem:

    fprintf(stderr, "anomaly: out of memory\n");
    json_decref(row);
    freeReplyObject(r);
    *err = 1;
    return NULL;
}


/* ---- show ------------------------------------------------------------- */

static int
gp_cmd_show(gp_anomaly_t *a, redisContext *c, int argc, char **argv)
{
    json_t     *row, *refunds, *one;
    const char *id, *pc, *l, *nl, *sp;
    char        eid[GP_ANOMALY_EID_MAX], seq[24], yuan[32], when[26], *dump;
    uint32_t    shard;
    size_t      i;
    int         k, as_json, rc, err;

    id = NULL;
    as_json = 0;

    for (k = 0; k < argc; k++) {
        if (strcmp(argv[k], "--json") == 0) {
            as_json = 1;
        } else if (id == NULL && argv[k][0] != '-') {
            id = argv[k];
        } else {
            fprintf(stderr, "anomaly show: unexpected argument \"%s\"\n",
                    argv[k]);
            return 2;
        }
    }

    if (id == NULL) {
        fprintf(stderr, "anomaly show: which case? (anomaly show <case id>)\n");
        return 2;
    }

    rc = gp_cmd_find(a, c, id, &shard, eid, sizeof(eid), seq, sizeof(seq));
    if (rc != 0) {
        return rc;
    }

    row = gp_cmd_case(c, shard, eid, seq, 1, &err);
    if (row == NULL) {
        if (!err) {
            fprintf(stderr, "anomaly show: no case %s\n", id);
        }
        return 1;
    }

    if (as_json) {
        dump = json_dumps(row, JSON_COMPACT);
        if (dump != NULL) {
            printf("%s\n", dump);
        }
        free(dump);
        json_decref(row);
        return dump != NULL ? 0 : 1;
    }

    if (gp_fen_to_yuan(json_integer_value(json_object_get(row, "amount")), yuan,
                       sizeof(yuan))
        < 0)
    {
        snprintf(yuan, sizeof(yuan), "?");
    }

    pc = gp_cmd_str(row, "payment_code");

    printf("case          %s\n", gp_cmd_str(row, "case"));
    printf("state         %s\n", gp_cmd_str(row, "state"));
    printf("reason        %s\n", gp_cmd_str(row, "reason"));
    printf("amount        %s yuan (%lld fen)\n", yuan,
           (long long) json_integer_value(json_object_get(row, "amount")));
    printf("owner         %s\n", gp_cmd_str(row, "owner"));
    printf("notice        %s (%s), %s, unit %s\n", pc,
           gp_cmd_str(json_object_get(row, "notice"), "notice_key"),
           gp_cmd_str(json_object_get(row, "notice"), "status"),
           gp_cmd_str(json_object_get(row, "notice"), "unit"));
    printf("paid          %s %s at %s\n", gp_cmd_str(row, "channel"),
           gp_cmd_str(row, "channel_trade_no"), gp_cmd_str(row, "paid_at"));
    printf("recorded      %s\n", gp_cmd_str(row, "recorded_at"));

    refunds = json_object_get(row, "refunds");
    json_array_foreach(refunds, i, one)
    {
        printf("refund        %sR%s %s%s%s\n", pc, gp_cmd_str(one, "nn"),
               gp_cmd_str(one, "status"),
               json_object_get(one, "error") != NULL ? ": " : "",
               gp_cmd_str(one, "error"));
    }

    if (json_object_get(row, "note") != NULL) {
        printf("note          %s (by %s)\n", gp_cmd_str(row, "note"),
               gp_cmd_str(row, "resolved_by"));
    }

    if (json_object_get(row, "closed_at") != NULL) {
        printf("closed        %s\n", gp_cmd_str(row, "closed_at"));
    }

    /* the log: "<unix> <what> <who>" per line */
    printf("log\n");

    for (l = gp_cmd_str(row, "log"); *l != '\0'; l = nl + (*nl == '\n')) {
        nl = l + strcspn(l, "\n");
        sp = l + strcspn(l, " ");
        gp_time_rfc3339(strtoll(l, NULL, 10), when);
        printf("  %s %.*s\n", when, (int) (nl - sp - (sp < nl)),
               sp + (sp < nl));
    }

    json_decref(row);
    return 0;
}


/* ---- refund, resolve -------------------------------------------------- */

static int
gp_cmd_change(gp_anomaly_t *a, redisContext *c, int argc, char **argv,
              int resolve)
{
    redisReply *r;
    const char *id, *note, *by, *what, *args[8], *st;
    char        eid[GP_ANOMALY_EID_MAX], seq[24], now[24], reason[40];
    uint32_t    shard;
    size_t      len;
    int         k, rc;

    what = resolve ? "resolve" : "refund";
    id = NULL;
    note = NULL;
    by = NULL;

    for (k = 0; k < argc; k++) {
        if (k + 1 < argc && strcmp(argv[k], "--by") == 0) {
            by = argv[++k];
        } else if (resolve && k + 1 < argc && strcmp(argv[k], "--note") == 0) {
            note = argv[++k];
        } else if (id == NULL && argv[k][0] != '-') {
            id = argv[k];
        } else {
            fprintf(stderr, "anomaly %s: unexpected argument \"%s\"\n", what,
                    argv[k]);
            return 2;
        }
    }

    if (id == NULL) {
        fprintf(stderr, "anomaly %s: which case? (anomaly %s <case id>)\n",
                what, what);
        return 2;
    }

    if (by == NULL) {
        by = getenv("USER");
        if (by == NULL || !gp_cmd_by(by)) {
            by = "ops";
        }

    } else if (!gp_cmd_by(by)) {
        fprintf(stderr,
                "anomaly %s: --by must be 1 to 64 of A-Z a-z 0-9 . _ @ -\n",
                what);
        return 2;
    }

    if (resolve) {
        if (note == NULL) {
            fprintf(stderr, "anomaly resolve: a case is resolved with a note "
                            "saying why: --note \"<text>\"\n");
            return 2;
        }

        len = strlen(note);

        if (!gp_text_ok(note, len, 1, 500) || gp_text_has_controls(note, len)
            || strspn(note, " ") == len)
        {
            fprintf(stderr,
                    "anomaly resolve: the note must be 1 to 500 characters "
                    "of UTF-8 text, on one line, without control "
                    "characters\n");
            return 2;
        }
    }

    rc = gp_cmd_find(a, c, id, &shard, eid, sizeof(eid), seq, sizeof(seq));
    if (rc != 0) {
        return rc;
    }

    snprintf(now, sizeof(now), "%lld", (long long) time(NULL));

    args[0] = what;
    args[1] = eid;
    args[2] = now;
    args[3] = by;

    if (resolve) {
        args[4] = note;

    } else {
        /* the refund's reason: that of the anomaly */
        r = redisCommand(c, "HGET {gp%u}:n:%s case:%s.reason", shard, seq, eid);
        if (r == NULL || r->type != REDIS_REPLY_STRING
            || r->len >= sizeof(reason)) {
            fprintf(stderr, "anomaly refund: no case %s\n", id);
            if (r != NULL) {
                freeReplyObject(r);
            }
            return 1;
        }

        memcpy(reason, r->str, r->len + 1);
        freeReplyObject(r);
        args[4] = gp_anomaly_refund_reason(reason);
    }

    r = gp_anomaly_case(a, c, shard, seq, 5, args);

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        fprintf(stderr, "anomaly %s: redis: %s\n", what,
                r == NULL
                    ? c->errstr
                    : (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply"));
        if (r != NULL) {
            freeReplyObject(r);
        }
        return 1;
    }

    st = r->element[0]->str;
    rc = 1;

    if (strcmp(st, "REFUNDING") == 0 && r->elements == 2) {
        printf("case %s: refund %s requested; the case is REFUNDING until the "
               "channel answers\n",
               id, r->element[1]->str);
        rc = 0;

    } else if (strcmp(st, "EXISTS") == 0 && r->elements == 2) {
        printf("case %s: refund %s is already in flight\n", id,
               r->element[1]->str);
        rc = 0;

    } else if (strcmp(st, "RESOLVED") == 0) {
        printf("case %s: RESOLVED\n", id);
        rc = 0;

    } else if (strcmp(st, "INVALID_STATE") == 0 && r->elements == 2) {
        fprintf(stderr, "anomaly %s: case %s is %s: %s\n", what, id,
                r->element[1]->str,
                strcmp(r->element[1]->str, "REFUNDING") == 0
                    ? "a refund is in flight; wait for its end"
                    : "it is closed");

    } else if (strcmp(st, "LIMIT") == 0) {
        fprintf(stderr,
                "anomaly refund: case %s: its notice has 99 refunds "
                "already; refund it by hand and resolve the case\n",
                id);

    } else if (strcmp(st, "NONE") == 0) {
        fprintf(stderr, "anomaly %s: no case %s\n", what, id);

    } else {
        fprintf(stderr, "anomaly %s: the case script answered %.32s\n", what,
                st);
    }

    freeReplyObject(r);
    return rc;
}


/*
 * The shard, entry id and notice seq of case id: 0, 1 (no such case,
 * reported) or 2 (not a case id, reported)
 */
static int
gp_cmd_find(gp_anomaly_t *a, redisContext *c, const char *id, uint32_t *shard,
            char *eid, size_t eidlen, char *seq, size_t seqlen)
{
    redisReply *r;

    if (gp_anomaly_parse_id(id, a->env->shards, shard, eid, eidlen) != 0) {
        fprintf(stderr,
                "anomaly: \"%.80s\" is not a case id of this deployment "
                "(A<shard>-<ms>-<seq>, as `anomaly list` shows it)\n",
                id);
        return 2;
    }

    r = redisCommand(c, "HGET {gp%u}:anomaly:cases %s", *shard, eid);

    if (r == NULL
        || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        fprintf(stderr, "anomaly: redis: %s\n",
                r == NULL
                    ? c->errstr
                    : (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply"));
        if (r != NULL) {
            freeReplyObject(r);
        }
        return 1;
    }

    if (r->type == REDIS_REPLY_NIL || r->len >= seqlen
        || strspn(r->str, "0123456789") != r->len)
    {
        fprintf(stderr, "anomaly: no case %s\n", id);
        freeReplyObject(r);
        return 1;
    }

    memcpy(seq, r->str, r->len + 1);
    freeReplyObject(r);
    return 0;
}


/* 1 if by is 1 to 64 of A-Z a-z 0-9 . _ @ - */
static int
gp_cmd_by(const char *by)
{
    size_t n;

    n = strlen(by);

    return n >= 1 && n <= 64
           && strspn(by, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789._@-")
                  == n;
}
