/*
 * notify_cmd: the ops commands of the notify plugin, run by
 * `gov-pay-worker -c worker.json notify ...` with a Redis connection of their
 * own, beside running workers (they only queue; a running worker's delivery
 * thread sends within poll_ms):
 *
 *   status [--json]
 *       pending (never tried), retrying and dead deliveries, and delivered
 *       so far, per recipient ("u:<unit id>", "s:<subscriber>"), from the
 *       counters {gpN}:notify:stats that the scripts keep in step.
 *   resend <event-id> [--to <unit id | subscriber>]
 *       the event again, to every recipient (or one), on a fresh schedule,
 *       due now; from its delivery record (dead or not) or else from its
 *       stream (history: settled, or refunds for an "evt_r…" id).
 *   resend --unit <id> --since <time> [--until <time>] [--to <recipient>]
 *       every event of the unit in that time (settled and refunds streams,
 *       plus notify's dead letters) to the unit (or --to); without --unit,
 *       --to names a recipient that gets every unit's events of that time.
 *
 * Times: unix seconds or RFC 3339. Same event ids as the first time.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gp_util.h"
#include "notify.h"


#define GP_CMD_PAGE "500"


static const char *gp_cmd_states[] = { "pending", "retrying", "dead",
                                       "delivered" };


static int gp_cmd_status(gp_notify_t *n, redisContext *c, int argc,
                         char **argv);
static int gp_cmd_resend(gp_notify_t *n, redisContext *c, int argc,
                         char **argv);
static int gp_cmd_resend_event(gp_notify_t *n, redisContext *c, uint32_t shard,
                               const char *stream, const char *entry_id,
                               const char *to, json_t *seen, long long *count);
static int gp_cmd_resend_range(gp_notify_t *n, redisContext *c, uint32_t shard,
                               const char *stream, const char *unit,
                               const char *to, int64_t since, int64_t until,
                               json_t *seen, long long *count);
static int gp_cmd_time(const char *s, int64_t *t);
static int gp_cmd_recipient(gp_notify_t *n, const char *name, char *rkey,
                            size_t len);
static const char *gp_cmd_field(redisReply *kv, const char *name, size_t *len);


int
gp_notify_command(void *state, int argc, char **argv)
{
    gp_notify_t  *n;
    redisContext *c;
    char          err[512];
    int           rc;

    n = state;

    if (argc < 1
        || (strcmp(argv[0], "status") != 0 && strcmp(argv[0], "resend") != 0))
    {
        fprintf(stderr, "usage: gov-pay-worker -c <worker.json> notify status "
                        "[--json]\n"
                        "       gov-pay-worker -c <worker.json> notify resend "
                        "<event-id> [--to <recipient>]\n"
                        "       gov-pay-worker -c <worker.json> notify resend "
                        "--unit <id> --since <time>\n"
                        "                      [--until <time>] [--to "
                        "<recipient>]\n");
        return 2;
    }

    c = n->env->connect(n->env, err, sizeof(err));
    if (c == NULL) {
        fprintf(stderr, "notify: %s\n", err);
        return 1;
    }

    if (strcmp(argv[0], "status") == 0) {
        rc = gp_cmd_status(n, c, argc - 1, argv + 1);
    } else {
        rc = gp_cmd_resend(n, c, argc - 1, argv + 1);
    }

    redisFree(c);
    return rc;
}


/* ---- status ----------------------------------------------------------- */

static int
gp_cmd_status(gp_notify_t *n, redisContext *c, int argc, char **argv)
{
    json_t     *all, *row, *total, *out;
    redisReply *r;
    const char *key, *colon;
    char        rkey[GP_NOTIFY_RKEY_MAX + 16], *dump;
    size_t      i, j, k;
    uint32_t    s;
    int         as_json;
    long long   v;

    as_json = argc == 1 && strcmp(argv[0], "--json") == 0;

    if (argc > 1 || (argc == 1 && !as_json)) {
        fprintf(stderr, "usage: notify status [--json]\n");
        return 2;
    }

    all = json_object();
    total = json_object();
    if (all == NULL || total == NULL) {
        json_decref(all);
        json_decref(total);
        return 1;
    }

    for (k = 0; k < 4; k++) {
        json_object_set_new(total, gp_cmd_states[k], json_integer(0));
    }

    /* every recipient with an address shows, if only with zeros */
    for (i = 0; i < n->nrcpts; i++) {
        if (n->rcpts[i].url == NULL) {
            continue;
        }

        row = json_object();
        for (k = 0; k < 4; k++) {
            json_object_set_new(row, gp_cmd_states[k], json_integer(0));
        }
        json_object_set_new(all, n->rcpts[i].rkey, row);
    }

    for (s = 0; s < n->env->shards; s++) {
        r = redisCommand(c, "HGETALL %s", n->stats[s]);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            fprintf(
                stderr, "notify: redis HGETALL %s failed: %s\n", n->stats[s],
                r == NULL
                    ? c->errstr
                    : (r->type == REDIS_REPLY_ERROR ? r->str : "bad reply"));
            if (r != NULL) {
                freeReplyObject(r);
            }
            json_decref(all);
            json_decref(total);
            return 1;
        }

        for (j = 0; j + 1 < r->elements; j += 2) {
            if (r->element[j]->type != REDIS_REPLY_STRING
                || r->element[j + 1]->type != REDIS_REPLY_STRING)
            {
                continue;
            }

            key = r->element[j]->str;
            colon = strrchr(key, ':');
            if (colon == NULL || (size_t) (colon - key) >= sizeof(rkey)) {
                continue;
            }

            for (k = 0; k < 4; k++) {
                if (strcmp(colon + 1, gp_cmd_states[k]) == 0) {
                    break;
                }
            }

            if (k == 4) {
                continue;
            }

            memcpy(rkey, key, colon - key);
            rkey[colon - key] = '\0';
            v = strtoll(r->element[j + 1]->str, NULL, 10);

            row = json_object_get(all, rkey);
            if (row == NULL) {
                row = json_object();
                for (i = 0; i < 4; i++) {
                    json_object_set_new(row, gp_cmd_states[i], json_integer(0));
                }
                json_object_set_new(all, rkey, row);
            }

            json_object_set_new(row, gp_cmd_states[k],
                                json_integer(json_integer_value(json_object_get(
                                                 row, gp_cmd_states[k]))
                                             + v));
            json_object_set_new(total, gp_cmd_states[k],
                                json_integer(json_integer_value(json_object_get(
                                                 total, gp_cmd_states[k]))
                                             + v));
        }

        freeReplyObject(r);
    }

    if (as_json) {
        out = json_pack("{s:O,s:O}", "recipients", all, "total", total);
        dump =
            out != NULL ? json_dumps(out, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
        if (dump != NULL) {
            printf("%s\n", dump);
        }
        free(dump);
        json_decref(out);

    } else {
        printf("%-40s %9s %9s %9s %10s\n", "recipient", "pending", "retrying",
               "dead", "delivered");

        dump = NULL;
        {
            const char **names;
            size_t       nn;
            void        *it;

            nn = json_object_size(all);
            names = calloc(nn + 1, sizeof(char *));

            for (it = json_object_iter(all), i = 0; it != NULL && names;
                 it = json_object_iter_next(all, it))
            {
                names[i++] = json_object_iter_key(it);
            }

            for (i = 0; names != NULL && i < nn; i++) {
                for (j = i + 1; j < nn; j++) {
                    if (strcmp(names[j], names[i]) < 0) {
                        key = names[i];
                        names[i] = names[j];
                        names[j] = key;
                    }
                }
            }

            for (i = 0; names != NULL && i < nn; i++) {
                row = json_object_get(all, names[i]);
                printf("%-40s %9lld %9lld %9lld %10lld\n", names[i],
                       json_integer_value(json_object_get(row, "pending")),
                       json_integer_value(json_object_get(row, "retrying")),
                       json_integer_value(json_object_get(row, "dead")),
                       json_integer_value(json_object_get(row, "delivered")));
            }

            free(names);
        }

        printf("%-40s %9lld %9lld %9lld %10lld\n", "total",
               json_integer_value(json_object_get(total, "pending")),
               json_integer_value(json_object_get(total, "retrying")),
               json_integer_value(json_object_get(total, "dead")),
               json_integer_value(json_object_get(total, "delivered")));
    }

    json_decref(all);
    json_decref(total);
    return 0;
}


/* ---- resend ----------------------------------------------------------- */

static int
gp_cmd_resend(gp_notify_t *n, redisContext *c, int argc, char **argv)
{
    const char *evt, *unit, *since_s, *until_s, *to_s;
    char        entry_id[64], to[GP_NOTIFY_RKEY_MAX], stream[32];
    int         k;

    static const char *kinds[] = { "settled", "refunds", "dead" };
    uint32_t           shard, s;
    int64_t            since, until;
    long long          count;
    json_t            *seen;
    int                i, rc;

    evt = unit = since_s = until_s = to_s = NULL;

    for (i = 0; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--unit") == 0) {
            unit = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--since") == 0) {
            since_s = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--until") == 0) {
            until_s = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--to") == 0) {
            to_s = argv[++i];
        } else if (argv[i][0] != '-' && evt == NULL) {
            evt = argv[i];
        } else {
            fprintf(stderr, "notify resend: unexpected argument \"%s\"\n",
                    argv[i]);
            return 2;
        }
    }

    to[0] = '\0';

    if (to_s != NULL && gp_cmd_recipient(n, to_s, to, sizeof(to)) != 0) {
        fprintf(stderr,
                "notify resend: --to \"%s\" is neither a unit with a webhook "
                "nor a subscriber\n",
                to_s);
        return 2;
    }

    /* a unit gets its own events only */
    if (to[0] == 'u' && unit != NULL && strcmp(to + 2, unit) != 0) {
        fprintf(stderr, "notify resend: a unit gets only its own events: "
                        "--to must be --unit or a subscriber\n");
        return 2;
    }

    if (to[0] == 'u' && unit == NULL && evt == NULL) {
        unit = to + 2;
    }

    seen = json_object();
    if (seen == NULL) {
        return 1;
    }

    count = 0;

    if (evt != NULL) {
        if (unit != NULL || since_s != NULL || until_s != NULL) {
            fprintf(stderr, "notify resend: an event id, or --unit and "
                            "--since, not both\n");
            json_decref(seen);
            return 2;
        }

        if (gp_notify_parse_event_id(evt, n->env->shards, &shard, stream,
                                     sizeof(stream), entry_id, sizeof(entry_id))
            != 0)
        {
            fprintf(stderr,
                    "notify resend: \"%s\" is not an event id of this "
                    "deployment (evt_<shard>_<ms>_<seq>, "
                    "evt_r<shard>_<ms>_<seq>)\n",
                    evt);
            json_decref(seen);
            return 2;
        }

        rc = gp_cmd_resend_event(n, c, shard, stream, entry_id,
                                 to[0] != '\0' ? to : NULL, seen, &count);

        if (rc == 0 && count == 0) {
            fprintf(stderr,
                    "notify resend: %s: no such event (not in its stream, "
                    "no delivery record)%s\n",
                    evt, to[0] != '\0' ? " for that recipient" : "");
            rc = 1;
        }

    } else {
        if (since_s == NULL || (unit == NULL && to[0] == '\0')) {
            fprintf(stderr, "notify resend: give an event id, or --since "
                            "with --unit and/or --to\n");
            json_decref(seen);
            return 2;
        }

        if (gp_cmd_time(since_s, &since) != 0
            || (until_s != NULL && gp_cmd_time(until_s, &until) != 0))
        {
            fprintf(stderr, "notify resend: --since and --until take unix "
                            "seconds or RFC 3339 times\n");
            json_decref(seen);
            return 2;
        }

        if (until_s == NULL) {
            until = -1;
        }

        if (unit != NULL && to[0] == '\0'
            && gp_cmd_recipient(n, unit, to, sizeof(to)) != 0)
        {
            fprintf(stderr, "notify resend: unit \"%s\" has no webhook\n",
                    unit);
            json_decref(seen);
            return 2;
        }

        rc = 0;

        for (s = 0; s < n->env->shards && rc == 0; s++) {
            for (k = 0; k < 3 && rc == 0; k++) {
                snprintf(stream, sizeof(stream), "{gp%u}:%s", s, kinds[k]);
                rc = gp_cmd_resend_range(n, c, s, stream, unit, to, since,
                                         until, seen, &count);
            }
        }
    }

    if (rc == 0) {
        printf("%lld delivery(ies) queued\n", count);
    }

    json_decref(seen);
    return rc;
}


/*
 * Queues the event of stream entry entry_id of the shard's stream
 * ("{gpN}:settled" or "{gpN}:refunds") again: to `to`, or to every recipient
 * (the unit if it has a webhook, every subscriber, and any other recipient
 * that has a delivery record of it). Adds to *count. 0, or 1 (message on
 * stderr).
 */
static int
gp_cmd_resend_event(gp_notify_t *n, redisContext *c, uint32_t shard,
                    const char *stream, const char *entry_id, const char *to,
                    json_t *seen, long long *count)
{
    redisReply       *r, *kv, *h;
    gp_event_t        ev;
    gp_field_t        fields[4], *evf;
    gp_notify_rcpt_t *u;
    const char       *rkeys[64], *type, *unit;
    char              evt[GP_NOTIFY_EVT_MAX], ukey[80], msg[512];
    char              dkey[GP_NOTIFY_MEMBER_MAX + 32], *body;
    size_t            i, nr, tlen, ulen;
    long long         queued;
    gp_result_t       res;
    int               ret, exists;

    if (gp_notify_event_id(shard, stream, entry_id, evt, sizeof(evt)) != 0) {
        return 0;
    }

    /* each event once per run, whether found in the stream or dead letters */
    if (json_object_get(seen, evt) != NULL) {
        return 0;
    }
    json_object_set_new(seen, evt, json_true());

    r = redisCommand(c, "XRANGE %s %s %s", stream, entry_id, entry_id);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        fprintf(stderr, "notify: redis XRANGE failed: %s\n",
                r == NULL ? c->errstr : "unexpected reply");
        if (r != NULL) {
            freeReplyObject(r);
        }
        return 1;
    }

    kv = (r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY
          && r->element[0]->elements == 2
          && r->element[0]->element[1]->type == REDIS_REPLY_ARRAY)
             ? r->element[0]->element[1]
             : NULL;

    ret = 0;
    nr = 0;
    body = NULL;
    evf = NULL;

    memset(&ev, 0, sizeof(ev));
    ev.stream = stream;
    ev.shard = shard;
    ev.id = entry_id;
    ev.deliveries = 1;

    if (kv != NULL) {
        evf = calloc(kv->elements / 2 + 1, sizeof(gp_field_t));
        if (evf == NULL) {
            freeReplyObject(r);
            return 1;
        }

        for (i = 0; i + 1 < kv->elements; i += 2) {
            evf[i / 2].name = kv->element[i]->str;
            evf[i / 2].name_len = kv->element[i]->len;
            evf[i / 2].value = kv->element[i + 1]->str;
            evf[i / 2].value_len = kv->element[i + 1]->len;
        }

        ev.fields = evf;
        ev.nfields = kv->elements / 2;

        type = gp_event_get(&ev, "type", &tlen);
        if (!gp_notify_type(type)) {
            goto done; /* not a notified event */
        }
    }

    /* the recipients; a unit gets its own events only */
    if (to != NULL && to[0] == 'u' && kv != NULL
        && ((unit = gp_event_get(&ev, "unit", &ulen)) == NULL
            || ulen != strlen(to + 2) || memcmp(unit, to + 2, ulen) != 0))
    {
        fprintf(stderr,
                "notify resend: %s is an event of another unit than "
                "%s\n",
                evt, to + 2);
        ret = 1;
        goto done;
    }

    if (to != NULL) {
        rkeys[nr++] = to;

    } else {
        unit = kv != NULL ? gp_event_get(&ev, "unit", &ulen) : NULL;

        if (unit != NULL) {
            snprintf(ukey, sizeof(ukey), "u:%.*s", (int) ulen, unit);
            u = gp_notify_rcpt(n, ukey, strlen(ukey));
            if (u != NULL && u->url != NULL) {
                rkeys[nr++] = u->rkey;
            }
        }

        for (i = n->nunits; i < n->nrcpts; i++) {
            rkeys[nr++] = n->rcpts[i].rkey;
        }

        if (kv == NULL) {
            /* trimmed from the stream: only the records tell the unit */
            nr = 0;
            for (i = 0; i < n->nrcpts && nr < 64; i++) {
                rkeys[nr++] = n->rcpts[i].rkey;
            }
        }
    }

    for (i = 0; i < nr; i++) {
        snprintf(dkey, sizeof(dkey), "{gp%u}:notify:d:%s:%s", shard, evt,
                 rkeys[i]);

        h = redisCommand(c, "HMGET %s type unit payment_code", dkey);
        if (h == NULL || h->type != REDIS_REPLY_ARRAY || h->elements != 3) {
            fprintf(stderr, "notify: redis HMGET failed: %s\n",
                    h == NULL ? c->errstr : "unexpected reply");
            if (h != NULL) {
                freeReplyObject(h);
            }
            ret = 1;
            goto done;
        }

        exists = h->element[0]->type == REDIS_REPLY_STRING;

        if (!exists && kv == NULL) {
            freeReplyObject(h);
            continue; /* nothing to send it from */
        }

        if (kv == NULL) {
            /* the event from its record: type, unit, payment code */
            fields[0].name = "type";
            fields[1].name = "unit";
            fields[2].name = "payment_code";

            for (tlen = 0; tlen < 3; tlen++) {
                fields[tlen].name_len = strlen(fields[tlen].name);
                fields[tlen].value =
                    h->element[tlen]->type == REDIS_REPLY_STRING
                        ? h->element[tlen]->str
                        : "";
                fields[tlen].value_len = strlen(fields[tlen].value);
            }

            ev.fields = fields;
            ev.nfields = 3;

        } else if (!exists && body == NULL) {
            res = gp_notify_body(n, c, &ev, &body, msg, sizeof(msg));
            if (res != GP_DONE) {
                fprintf(stderr, "notify: %s: %s\n", evt, msg);
                freeReplyObject(h);
                ret = 1;
                goto done;
            }
        }

        if (gp_notify_enqueue(n, c, &ev, evt, body != NULL ? body : "",
                              &rkeys[i], 1, "resend", NULL, &queued, msg,
                              sizeof(msg))
            != 0)
        {
            fprintf(stderr, "notify: %s: %s\n", evt, msg);
            freeReplyObject(h);
            ret = 1;
            goto done;
        }

        freeReplyObject(h);
        *count += queued;
        printf("queued %s for %s (%s)\n", evt, rkeys[i],
               exists ? "from its delivery record" : "from the stream");
    }

done:

    free(body);
    free(evf);
    freeReplyObject(r);
    return ret;
}


/*
 * XRANGE over [since, until] of the settled or refunds stream or the dead
 * letters of one shard, page by page; every notified event of the unit (any
 * unit if NULL) is queued again to `to`
 */
static int
gp_cmd_resend_range(gp_notify_t *n, redisContext *c, uint32_t shard,
                    const char *stream, const char *unit, const char *to,
                    int64_t since, int64_t until, json_t *seen,
                    long long *count)
{
    redisReply *r, *e, *kv;
    const char *v, *entry;
    char        start[80], end[32], id[64], from[32];
    size_t      i, len;
    int         dead, ret;

    dead = strstr(stream, ":dead") != NULL;

    snprintf(start, sizeof(start), "%lld", (long long) since * 1000);
    if (until >= 0) {
        snprintf(end, sizeof(end), "%lld", (long long) until * 1000 + 999);
    } else {
        strcpy(end, "+");
    }

    for (;;) {
        r = redisCommand(c, "XRANGE %s %s %s COUNT " GP_CMD_PAGE, stream, start,
                         end);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            fprintf(stderr, "notify: redis XRANGE %s failed: %s\n", stream,
                    r == NULL ? c->errstr
                              : (r->type == REDIS_REPLY_ERROR ? r->str
                                                              : "bad reply"));
            if (r != NULL) {
                freeReplyObject(r);
            }
            return 1;
        }

        ret = 0;

        for (i = 0; i < r->elements && ret == 0; i++) {
            e = r->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
                || e->element[0]->type != REDIS_REPLY_STRING
                || e->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            kv = e->element[1];
            snprintf(start, sizeof(start), "(%s", e->element[0]->str);

            v = gp_cmd_field(kv, "unit", &len);
            if (unit != NULL
                && (v == NULL || len != strlen(unit) || memcmp(v, unit, len))) {
                continue;
            }

            if (dead) {
                v = gp_cmd_field(kv, "plugin", &len);
                if (v == NULL || strcmp(v, "notify") != 0) {
                    continue;
                }

                /* a delivery's dead letter names its recipient */
                v = gp_cmd_field(kv, "recipient", &len);
                if (v != NULL && strcmp(v, to) != 0) {
                    continue;
                }

                entry = gp_cmd_field(kv, "entry_id", &len);
                if (entry == NULL || len >= sizeof(id)) {
                    continue;
                }

                snprintf(id, sizeof(id), "%s", entry);

                /* the stream the event came from (the refunds one, or the
                 * settled one, which dead letters named before there were
                 * two) */
                v = gp_cmd_field(kv, "stream", &len);
                snprintf(from, sizeof(from), "{gp%u}:%s", shard,
                         v != NULL && len > 8
                                 && strcmp(v + len - 8, ":refunds") == 0
                             ? "refunds"
                             : "settled");

            } else {
                snprintf(id, sizeof(id), "%s", e->element[0]->str);
                snprintf(from, sizeof(from), "%s", stream);
            }

            ret = gp_cmd_resend_event(n, c, shard, from, id, to, seen, count);
        }

        len = r->elements;
        freeReplyObject(r);

        if (ret != 0) {
            return ret;
        }

        if (len < (size_t) atoi(GP_CMD_PAGE)) {
            return 0;
        }
    }
}


static int
gp_cmd_time(const char *s, int64_t *t)
{
    char     *end;
    long long v;

    if (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s)) {
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0') {
            return -1;
        }
        *t = v;
        return 0;
    }

    return gp_time_parse_rfc3339(s, strlen(s), t);
}


/* a subscriber's name or a unit id → its recipient key */
static int
gp_cmd_recipient(gp_notify_t *n, const char *name, char *rkey, size_t len)
{
    size_t i;

    for (i = n->nunits; i < n->nrcpts; i++) {
        if (strcmp(n->rcpts[i].rkey + 2, name) == 0) {
            snprintf(rkey, len, "%s", n->rcpts[i].rkey);
            return 0;
        }
    }

    if (gp_registry_unit(n->env->registry, name, strlen(name)) != NULL
        && gp_registry_unit(n->env->registry, name, strlen(name))->webhook
               != NULL)
    {
        snprintf(rkey, len, "u:%s", name);
        return 0;
    }

    return -1;
}


static const char *
gp_cmd_field(redisReply *kv, const char *name, size_t *len)
{
    size_t i;

    for (i = 0; i + 1 < kv->elements; i += 2) {
        if (kv->element[i]->type == REDIS_REPLY_STRING
            && kv->element[i + 1]->type == REDIS_REPLY_STRING
            && strcmp(kv->element[i]->str, name) == 0)
        {
            *len = kv->element[i + 1]->len;
            return kv->element[i + 1]->str;
        }
    }

    return NULL;
}
