/*
 * notify_send: the delivery thread of the notify plugin. One thread, one Redis
 * connection of its own, one libcurl multi handle: every webhook in flight is
 * an easy handle on it, so many units, some slow or down, are served at once
 * and none waits for another.
 *
 * A turn of the loop:
 *
 *   1. curl_multi_perform(); finished transfers become outcomes.
 *   2. Outcomes are recorded, pipelined, one script each (done.lua):
 *      delivered (2xx), retry at the next step of the schedule, or dead
 *      letter. Kept in memory while Redis is away; a lost lease makes a
 *      recorded outcome STALE (someone re-sent it meanwhile), which is fine.
 *   3. Due deliveries are claimed: every poll_ms on every shard, at once on a
 *      shard that handle() just queued to (wake), and again on a shard that
 *      had more due than there was room for once transfers finish. Claiming
 *      leases a delivery (its score moves to now + 2 x timeout + 1 s), so
 *      other worker processes leave it alone; a process that dies holding a
 *      lease only delays that delivery until the lease ends. Room: at most
 *      max_in_flight transfers, at most per_recipient per recipient.
 *   4. curl_multi_poll() until a socket is ready, a timer is due, the next
 *      scan, or a wake (curl_multi_wakeup from handle() or stop).
 *
 * Requests: POST, the body as queued, Content-Type application/json,
 * GovPay-Signature "t=<unix>,v1=<hex HMAC(key, t.body)>", connect and total
 * timeouts, TLS peer and host verification on, redirects not followed, only
 * http and https. The response body is read and dropped.
 */

#define _GNU_SOURCE

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "notify.h"


#define GP_SEND_PAGE        256
#define GP_SEND_BACKOFF_MIN 100
#define GP_SEND_BACKOFF_MAX 2000
#define GP_SEND_ERROR_MAX   200
#define GP_SEND_COALESCE_MS 5 /* wakes closer than this make one claim */


struct gp_notify_xfer_s {
    gp_notify_xfer_t  *next;
    gp_notify_t       *n;
    CURL              *easy;
    struct curl_slist *headers;
    gp_notify_rcpt_t  *rcpt; /* NULL: not a configured recipient */
    uint32_t           shard;
    char              *member;
    char              *body;
    char               event_id[GP_NOTIFY_EVT_MAX];
    char               code[24];
    char               token[48];
    long long          attempts; /* before this one */
    int64_t            started;
    int                ok;
    long               status;
    char               error[GP_SEND_ERROR_MAX];
    char               errbuf[CURL_ERROR_SIZE];
};


static void  *gp_send_main(void *arg);
static int    gp_send_connect(gp_notify_t *n);
static void   gp_send_disconnect(gp_notify_t *n);
static void   gp_send_backoff(gp_notify_t *n);
static void   gp_send_land(gp_notify_t *n);
static int    gp_send_record(gp_notify_t *n);
static int    gp_send_scan(gp_notify_t *n, int all, int64_t now);
static int    gp_send_claim(gp_notify_t *n, uint32_t shard, const char **mem,
                            gp_notify_rcpt_t **rc, size_t npick, int64_t now);
static void   gp_send_begin(gp_notify_t *n, uint32_t shard, const char *member,
                            redisReply *f, const char *token);
static void   gp_send_fail_now(gp_notify_t *n, gp_notify_xfer_t *x,
                               const char *why);
static void   gp_send_release(gp_notify_t *n);
static void   gp_xfer_free(gp_notify_xfer_t *x);
static size_t gp_send_discard(char *ptr, size_t size, size_t nmemb,
                              void *userdata);


int
gp_notify_start(void *state, char *err, size_t errlen)
{
    gp_notify_t  *n;
    unsigned char rnd[8];
    int           rc;

    n = state;

    n->multi = curl_multi_init();
    if (n->multi == NULL) {
        snprintf(err, errlen, "curl_multi_init() failed");
        return -1;
    }

    /* keep-alive connections to the units: a few per recipient */
    curl_multi_setopt(n->multi, CURLMOPT_MAXCONNECTS,
                      (long) n->max_in_flight + 16);

    if (gp_random_bytes(rnd, sizeof(rnd)) != 0) {
        snprintf(err, errlen, "gp_random_bytes() failed");
        return -1;
    }

    gp_hex(rnd, sizeof(rnd), n->token_prefix);
    n->backoff_ms = GP_SEND_BACKOFF_MIN;

    rc = pthread_create(&n->thread, NULL, gp_send_main, n);
    if (rc != 0) {
        snprintf(err, errlen, "pthread_create() failed: %s", strerror(rc));
        return -1;
    }

    n->started = 1;
    return 0;
}


/* from shutdown(): in-flight transfers are dropped and their leases given back */
void
gp_notify_stop(gp_notify_t *n)
{
    if (n->started) {
        atomic_store(&n->stop, 1);
        curl_multi_wakeup(n->multi);
        pthread_join(n->thread, NULL);
        n->started = 0;
    }

    if (n->multi != NULL) {
        curl_multi_cleanup(n->multi);
        n->multi = NULL;
    }
}


/* handle() queued something on shard: claim it now, not at the next scan */
void
gp_notify_wake(gp_notify_t *n, uint32_t shard)
{
    if (n->multi == NULL) {
        return;
    }

    atomic_store(&n->dirty[shard], 1);
    atomic_store(&n->any_dirty, 1);
    curl_multi_wakeup(n->multi);
}


static void *
gp_send_main(void *arg)
{
    gp_notify_t *n;
    int64_t      now, wait;
    long         curl_ms;
    size_t       i, nurl;
    int          running;

    n = arg;
    n->next_scan = 0;

    for (i = 0, nurl = 0; i < n->nrcpts; i++) {
        nurl += n->rcpts[i].url != NULL;
    }

    n->env->log(n->env, GP_LOG_INFO, NULL,
                "delivery thread started: %zu recipient(s) with a webhook "
                "url, %zu-step schedule, timeout %ld ms, at most %d in "
                "flight",
                nurl, n->nschedule, n->timeout_ms, n->max_in_flight);

    while (!atomic_load(&n->stop)) {
        curl_multi_perform(n->multi, &running);

        gp_send_land(n);

        if (n->redis == NULL && gp_send_connect(n) != 0) {
            gp_send_backoff(n);
            continue;
        }

        now = gp_notify_now_ms();

        if ((n->landed != NULL && gp_send_record(n) != 0)
            || gp_send_scan(n, now >= n->next_scan, now) != 0)
        {
            /* transfers in flight go on; outcomes wait for the connection */
            gp_send_disconnect(n);
            gp_send_backoff(n);
            continue;
        }

        n->backoff_ms = GP_SEND_BACKOFF_MIN;

        if (n->landed != NULL) {
            continue; /* a recipient that is not configured: record it */
        }

        curl_multi_perform(n->multi, &running);

        now = gp_notify_now_ms();
        wait = n->next_scan - now;

        if (atomic_load(&n->any_dirty)) {
            wait = n->last_woken_scan + GP_SEND_COALESCE_MS - now;
        }
        if (curl_multi_timeout(n->multi, &curl_ms) == CURLM_OK && curl_ms >= 0
            && curl_ms < wait)
        {
            wait = curl_ms;
        }

        if (wait < 0) {
            wait = 0;
        }

        if (wait > 0) {
            curl_multi_poll(n->multi, NULL, 0, (int) wait, NULL);
        }
    }

    gp_send_release(n);
    gp_send_disconnect(n);

    n->env->log(n->env, GP_LOG_INFO, NULL, "delivery thread stopped");
    return NULL;
}


static int
gp_send_connect(gp_notify_t *n)
{
    char err[512];

    n->redis = n->env->connect(n->env, err, sizeof(err));

    if (n->redis == NULL) {
        n->env->log(n->env, GP_LOG_ERROR, NULL,
                    "delivery thread: %s; retrying in %d ms", err,
                    n->backoff_ms);
        return -1;
    }

    if (gp_notify_load_scripts(n, n->redis, err, sizeof(err)) != 0) {
        n->env->log(n->env, GP_LOG_ERROR, NULL, "delivery thread: %s", err);
        gp_send_disconnect(n);
        return -1;
    }

    n->next_scan = 0;
    return 0;
}


/* waits backoff_ms (still driving transfers, woken by a stop), doubles it */
static void
gp_send_backoff(gp_notify_t *n)
{
    int wait;

    wait = n->backoff_ms;
    n->backoff_ms *= 2;
    if (n->backoff_ms > GP_SEND_BACKOFF_MAX) {
        n->backoff_ms = GP_SEND_BACKOFF_MAX;
    }

    curl_multi_poll(n->multi, NULL, 0, wait, NULL);
}


static void
gp_send_disconnect(gp_notify_t *n)
{
    if (n->redis != NULL) {
        redisFree(n->redis);
        n->redis = NULL;
    }
}


/* finished transfers: from curl's hands to the list of outcomes to record */
static void
gp_send_land(gp_notify_t *n)
{
    CURLMsg          *m;
    gp_notify_xfer_t *x, **pp;
    void             *priv;
    int               left;

    while ((m = curl_multi_info_read(n->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }

        priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &priv);
        x = priv;

        if (m->data.result == CURLE_OK) {
            curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
            x->ok = x->status >= 200 && x->status <= 299;

            if (!x->ok) {
                snprintf(x->error, sizeof(x->error), "HTTP %ld", x->status);
            }

        } else {
            snprintf(x->error, sizeof(x->error), "%.199s",
                     x->errbuf[0] != '\0' ? x->errbuf
                                          : curl_easy_strerror(m->data.result));
        }

        curl_multi_remove_handle(n->multi, x->easy);
        curl_easy_cleanup(x->easy);
        x->easy = NULL;

        for (pp = &n->flying; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == x) {
                *pp = x->next;
                break;
            }
        }

        n->nflying--;
        n->freed = 1;
        if (x->rcpt != NULL) {
            x->rcpt->inflight--;
        }

        x->next = n->landed;
        n->landed = x;
    }
}


/*
 * Records every landed outcome, pipelined: one done.lua each. 0, or -1 on a
 * Redis failure (what is not recorded stays landed, for the next connection).
 */
static int
gp_send_record(gp_notify_t *n)
{
    gp_notify_xfer_t *x, *next, *keep;
    redisReply       *r;
    const char      **argv;
    char dkey[GP_NOTIFY_MEMBER_MAX + 32], now[24], status[24], keepd[24],
        stream[32], dead[32], keepx[24], *sched;
    size_t  argc, i, count;
    int64_t next_at, t;
    int     ret;

    argc = 3 + 4 + 9 + n->nschedule;
    argv = calloc(argc, sizeof(char *));
    sched = calloc(n->nschedule, 24);

    if (argv == NULL || sched == NULL) {
        free(argv);
        free(sched);
        return -1;
    }

    for (i = 0; i < n->nschedule; i++) {
        snprintf(sched + 24 * i, 24, "%lld", (long long) n->schedule_ms[i]);
    }

    snprintf(keepd, sizeof(keepd), "%ld", n->keep_delivered_s);
    snprintf(keepx, sizeof(keepx), "%ld", n->keep_dead_s);
    ret = 0;
    count = 0;

    /* send them all, then read the replies in the same order */
    for (x = n->landed; x != NULL; x = x->next) {
        snprintf(dkey, sizeof(dkey), "{gp%u}:notify:d:%s", x->shard, x->member);
        snprintf(now, sizeof(now), "%lld", (long long) gp_notify_now_ms());
        snprintf(status, sizeof(status), "%ld", x->status);
        /* the stream of the event: its id says which ("evt_r…": refunds) */
        snprintf(stream, sizeof(stream), "{gp%u}:%s", x->shard,
                 strncmp(x->member, "evt_r", 5) == 0 ? "refunds" : "settled");
        snprintf(dead, sizeof(dead), "{gp%u}:dead", x->shard);

        argv[0] = "EVALSHA";
        argv[1] = n->done.sha;
        argv[2] = "4";
        argv[3] = dkey;
        argv[4] = n->queue[x->shard];
        argv[5] = n->stats[x->shard];
        argv[6] = dead;
        argv[7] = x->member;
        argv[8] = x->token;
        argv[9] = x->ok ? "1" : "0";
        argv[10] = now;
        argv[11] = status;
        argv[12] = x->error;
        argv[13] = keepd;
        argv[14] = stream;
        argv[15] = keepx;

        for (i = 0; i < n->nschedule; i++) {
            argv[16 + i] = sched + 24 * i;
        }

        if (redisAppendCommandArgv(n->redis, (int) argc, argv, NULL)
            != REDIS_OK) {
            n->env->log(n->env, GP_LOG_ERROR, NULL,
                        "delivery thread: redisAppendCommandArgv() failed");
            ret = -1;
            break;
        }

        count++;
    }

    keep = NULL;

    for (x = n->landed; x != NULL; x = next) {
        next = x->next;

        if (count == 0 || ret != 0) {
            x->next = keep;
            keep = x;
            continue;
        }

        count--;

        if (redisGetReply(n->redis, (void **) &r) != REDIS_OK) {
            n->env->log(n->env, GP_LOG_ERROR, NULL,
                        "delivery thread: redis EVALSHA (done) failed: %s",
                        n->redis->errstr);
            ret = -1;
            x->next = keep;
            keep = x;
            continue;
        }

        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
            || r->element[0]->type != REDIS_REPLY_STRING)
        {
            n->env->log(n->env, GP_LOG_ERROR, NULL,
                        "delivery thread: redis EVALSHA (done): %.200s",
                        r->type == REDIS_REPLY_ERROR ? r->str
                                                     : "unexpected reply");
            freeReplyObject(r);
            ret = -1; /* NOSCRIPT after a SCRIPT FLUSH: reconnect reloads */
            x->next = keep;
            keep = x;
            continue;
        }

        t = gp_notify_now_ms() - x->started;

        if (strcmp(r->element[0]->str, "DELIVERED") == 0) {
            n->env->log(n->env, GP_LOG_INFO, NULL,
                        "%s %s to %s: delivered, HTTP %ld, try %lld, "
                        "%lld ms",
                        x->event_id, x->code,
                        x->rcpt != NULL ? x->rcpt->rkey : "?", x->status,
                        x->attempts + 1, (long long) t);

        } else if (strcmp(r->element[0]->str, "RETRY") == 0 && r->elements == 3
                   && r->element[2]->type == REDIS_REPLY_STRING)
        {
            next_at = strtoll(r->element[2]->str, NULL, 10);
            n->env->log(
                n->env, GP_LOG_WARN, NULL,
                "%s %s to %s: try %lld failed (%s), next try in "
                "%lld s",
                x->event_id, x->code, x->rcpt != NULL ? x->rcpt->rkey : "?",
                x->attempts + 1, x->error,
                (long long) (next_at - gp_notify_now_ms() + 999) / 1000);

            if (next_at < n->next_scan) {
                n->next_scan = next_at;
            }

        } else if (strcmp(r->element[0]->str, "DEAD") == 0) {
            n->env->log(
                n->env, GP_LOG_ERROR, NULL,
                "%s %s to %s: try %lld failed (%s), dead-lettered "
                "to {gp%u}:dead as %s",
                x->event_id, x->code, x->rcpt != NULL ? x->rcpt->rkey : "?",
                x->attempts + 1, x->error, x->shard,
                r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING
                    ? r->element[2]->str
                    : "?");

        } else {
            n->env->log(n->env, GP_LOG_DEBUG, NULL,
                        "%s to %s: outcome not recorded, the delivery was "
                        "re-sent or re-claimed meanwhile",
                        x->event_id, x->rcpt != NULL ? x->rcpt->rkey : "?");
        }

        freeReplyObject(r);
        gp_xfer_free(x);
    }

    n->landed = keep;

    free(argv);
    free(sched);
    return ret;
}


typedef struct {
    uint32_t          shard;
    const char       *member;
    double            score;
    gp_notify_rcpt_t *rcpt;
    int               picked;
} gp_send_cand_t;


static int
gp_send_cand_cmp(const void *a, const void *b)
{
    const gp_send_cand_t *x = a, *y = b;

    if (x->score != y->score) {
        return x->score < y->score ? -1 : 1;
    }

    return x->shard < y->shard ? -1 : (x->shard > y->shard);
}


/*
 * Claims what is due on the shards that need a look (all of them when the
 * scan is due) and starts its transfers, oldest due first across shards, as
 * far as there is room. 0, or -1 on a Redis failure.
 */
static int
gp_send_scan(gp_notify_t *n, int all, int64_t now)
{
    redisReply        *r, **replies;
    gp_send_cand_t    *cand;
    const char       **mem;
    gp_notify_rcpt_t **rc;
    const char        *colon;
    uint32_t           s, shards, *list, nlist, k;
    size_t             i, ncand, npick;
    char               max[24], page[16];
    int                ret, freed, dirty, woken;

    shards = n->env->shards;
    freed = n->freed;
    n->freed = 0;

    /*
     * wakes from handle() come one per event: claim what they queued at
     * most every GP_SEND_COALESCE_MS, so a burst makes few, full claims
     */
    woken = now - n->last_woken_scan >= GP_SEND_COALESCE_MS;
    if (woken) {
        atomic_store(&n->any_dirty, 0);
        n->last_woken_scan = now;
    }

    list = calloc(shards, sizeof(uint32_t));
    if (list == NULL) {
        return 0;
    }

    nlist = 0;

    for (s = 0; s < shards; s++) {
        dirty = woken && atomic_exchange(&n->dirty[s], 0);

        if (all || dirty || (freed && n->backlog[s])) {
            list[nlist++] = s;
        }
    }

    if (all) {
        n->next_scan = now + n->poll_ms;
    }

    if (nlist == 0 || n->nflying >= n->max_in_flight) {
        for (k = 0; k < nlist; k++) {
            n->backlog[list[k]] = 1; /* when transfers finish */
        }

        free(list);
        return 0;
    }

    snprintf(max, sizeof(max), "%lld", (long long) now);
    snprintf(page, sizeof(page), "%d", GP_SEND_PAGE);

    for (k = 0; k < nlist; k++) {
        if (redisAppendCommand(n->redis,
                               "ZRANGEBYSCORE %s -inf %s WITHSCORES LIMIT 0 %s",
                               n->queue[list[k]], max, page)
            != REDIS_OK)
        {
            free(list);
            return -1;
        }
    }

    /* every reply first: the claims below are commands of their own */
    replies = calloc(nlist, sizeof(redisReply *));
    if (replies == NULL) {
        free(list);
        return -1; /* the pipeline is out of step: reconnect */
    }

    ret = 0;
    ncand = 0;

    for (k = 0; k < nlist; k++) {
        if (redisGetReply(n->redis, (void **) &replies[k]) != REDIS_OK) {
            n->env->log(n->env, GP_LOG_ERROR, NULL,
                        "delivery thread: redis ZRANGEBYSCORE failed: %s",
                        n->redis->errstr);
            ret = -1;
            break;
        }

        r = replies[k];

        if (r->type != REDIS_REPLY_ARRAY) {
            n->env->log(n->env, GP_LOG_ERROR, NULL,
                        "delivery thread: redis ZRANGEBYSCORE: %.200s",
                        r->type == REDIS_REPLY_ERROR ? r->str
                                                     : "unexpected reply");
            ret = -1;
            continue;
        }

        ncand += r->elements / 2;
        n->backlog[list[k]] = r->elements / 2 >= GP_SEND_PAGE;
    }

    cand = NULL;
    mem = NULL;
    rc = NULL;

    if (ret != 0 || ncand == 0) {
        goto done;
    }

    cand = calloc(ncand, sizeof(gp_send_cand_t));
    mem = calloc(ncand, sizeof(char *));
    rc = calloc(ncand, sizeof(gp_notify_rcpt_t *));

    if (cand == NULL || mem == NULL || rc == NULL) {
        goto done;
    }

    ncand = 0;

    for (k = 0; k < nlist; k++) {
        r = replies[k];

        for (i = 0; i + 1 < r->elements; i += 2) {
            if (r->element[i]->type != REDIS_REPLY_STRING
                || r->element[i]->len >= GP_NOTIFY_MEMBER_MAX
                || r->element[i + 1]->type != REDIS_REPLY_STRING)
            {
                continue;
            }

            cand[ncand].shard = list[k];
            cand[ncand].member = r->element[i]->str;
            cand[ncand].score = strtod(r->element[i + 1]->str, NULL);
            colon = strchr(r->element[i]->str, ':');
            cand[ncand].rcpt =
                colon != NULL ? gp_notify_rcpt(n, colon + 1, strlen(colon + 1))
                              : NULL;
            ncand++;
        }
    }

    qsort(cand, ncand, sizeof(gp_send_cand_t), gp_send_cand_cmp);

    /* oldest first, as far as there is room */
    npick = 0;

    for (i = 0; i < ncand; i++) {
        if (n->nflying + (int) npick >= n->max_in_flight) {
            n->backlog[cand[i].shard] = 1;
            continue;
        }

        if (cand[i].rcpt != NULL && cand[i].rcpt->inflight >= n->per_recipient)
        {
            n->backlog[cand[i].shard] = 1; /* when one of its finishes */
            continue;
        }

        cand[i].picked = 1;
        npick++;

        if (cand[i].rcpt != NULL) {
            cand[i].rcpt->inflight++; /* room taken while picking */
        }
    }

    /* one claim per shard, in the order picked */
    for (k = 0; k < nlist && ret == 0; k++) {
        npick = 0;

        for (i = 0; i < ncand; i++) {
            if (cand[i].picked && cand[i].shard == list[k]) {
                mem[npick] = cand[i].member;
                rc[npick] = cand[i].rcpt;
                cand[i].picked = 0;
                npick++;
            }
        }

        if (npick > 0 && gp_send_claim(n, list[k], mem, rc, npick, now) != 0) {
            ret = -1;
        }
    }

    /* picked on shards not claimed (a failure above): give the room back */
    for (i = 0; i < ncand; i++) {
        if (cand[i].picked && cand[i].rcpt != NULL) {
            cand[i].rcpt->inflight--;
        }
    }

done:

    for (k = 0; k < nlist; k++) {
        if (replies[k] != NULL) {
            freeReplyObject(replies[k]);
        }
    }

    free(replies);
    free(cand);
    free(mem);
    free(rc);
    free(list);
    return ret;
}


/*
 * Claims the picked members of one shard in one script and starts a transfer
 * for each one claimed. The room taken while picking (rc[i]->inflight) is
 * given back here; gp_send_begin() counts what it starts.
 */
static int
gp_send_claim(gp_notify_t *n, uint32_t shard, const char **mem,
              gp_notify_rcpt_t **rc, size_t npick, int64_t now)
{
    redisReply  *r;
    const char **argv;
    char       **keys, nowb[24], until[24], token[48];
    size_t       i, argc;
    int          ret;

    ret = -1;
    argv = calloc(3 + 1 + 2 * npick + 3, sizeof(char *));
    keys = calloc(npick, sizeof(char *));

    for (i = 0; i < npick; i++) {
        if (rc[i] != NULL) {
            rc[i]->inflight--;
        }
    }

    if (argv == NULL || keys == NULL) {
        goto done;
    }

    snprintf(nowb, sizeof(nowb), "%lld", (long long) now);
    snprintf(until, sizeof(until), "%lld",
             (long long) (now + 2 * n->timeout_ms + 1000));
    snprintf(token, sizeof(token), "%s-%llx", n->token_prefix, ++n->token_seq);

    argc = 3;
    argv[argc++] = n->queue[shard];

    for (i = 0; i < npick; i++) {
        keys[i] = malloc(strlen(mem[i]) + 32);
        if (keys[i] == NULL) {
            goto done;
        }

        snprintf(keys[i], strlen(mem[i]) + 32, "{gp%u}:notify:d:%s", shard,
                 mem[i]);
        argv[argc++] = keys[i];
    }

    argv[argc++] = nowb;
    argv[argc++] = until;
    argv[argc++] = token;

    for (i = 0; i < npick; i++) {
        argv[argc++] = mem[i];
    }

    r = gp_notify_eval(n->redis, &n->claim, (int) (1 + npick), (int) argc, argv,
                       NULL);
    if (r == NULL) {
        n->env->log(n->env, GP_LOG_ERROR, NULL,
                    "delivery thread: redis EVALSHA (claim) failed: %s",
                    n->redis->errstr);
        goto done;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements != npick) {
        n->env->log(n->env, GP_LOG_ERROR, NULL,
                    "delivery thread: redis EVALSHA (claim): %.200s",
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        goto done;
    }

    for (i = 0; i < npick; i++) {
        if (r->element[i]->type == REDIS_REPLY_ARRAY
            && r->element[i]->elements == 7) {
            gp_send_begin(n, shard, mem[i], r->element[i], token);
        }
    }

    freeReplyObject(r);
    ret = 0;

done:

    if (keys != NULL) {
        for (i = 0; i < npick; i++) {
            free(keys[i]);
        }
    }

    free(keys);
    free(argv);
    return ret;
}


/*
 * f: event_id, type, recipient, unit, payment_code, body, attempts (claim.lua)
 */
static void
gp_send_begin(gp_notify_t *n, uint32_t shard, const char *member, redisReply *f,
              const char *token)
{
    gp_notify_xfer_t *x;
    unsigned char     mac[32];
    char             *msg, hex[65], hdr[160];
    time_t            t;
    size_t            i, blen;
    int               k;

    for (i = 0; i < 7; i++) {
        if (f->element[i]->type != REDIS_REPLY_STRING) {
            n->env->log(n->env, GP_LOG_ERROR, NULL,
                        "%s: delivery record without its fields, skipped",
                        member);
            return;
        }
    }

    x = calloc(1, sizeof(gp_notify_xfer_t));
    if (x == NULL) {
        return; /* the lease runs out and it is claimed again */
    }

    x->n = n;
    x->shard = shard;
    x->member = strdup(member);
    x->body = strdup(f->element[5]->str);
    x->attempts = strtoll(f->element[6]->str, NULL, 10);
    x->started = gp_notify_now_ms();
    snprintf(x->event_id, sizeof(x->event_id), "%s", f->element[0]->str);
    snprintf(x->code, sizeof(x->code), "%.20s", f->element[4]->str);
    snprintf(x->token, sizeof(x->token), "%s", token);
    x->rcpt = gp_notify_rcpt(n, f->element[2]->str, f->element[2]->len);

    if (x->member == NULL || x->body == NULL) {
        gp_xfer_free(x);
        return;
    }

    if (x->rcpt == NULL || x->rcpt->url == NULL) {
        gp_send_fail_now(n, x,
                         x->rcpt == NULL ? "recipient not configured"
                                         : "the unit has no webhook url");
        return;
    }

    /* GovPay-Signature: t=<unix>,v1=<hex HMAC of "<t>.<body>"> */
    t = time(NULL);
    blen = strlen(x->body);
    msg = malloc(blen + 32);
    if (msg == NULL) {
        gp_send_fail_now(n, x, "out of memory");
        return;
    }

    k = snprintf(msg, 32, "%lld.", (long long) t);
    memcpy(msg + k, x->body, blen);

    if (gp_hmac(x->rcpt->md, x->rcpt->key, x->rcpt->key_len, msg, k + blen, mac)
        != 0)
    {
        free(msg);
        gp_send_fail_now(n, x, "HMAC failed");
        return;
    }

    free(msg);
    gp_hex(mac, 32, hex);

    x->headers =
        curl_slist_append(x->headers, "Content-Type: application/json");
    snprintf(hdr, sizeof(hdr), "GovPay-Signature: t=%lld,v1=%s", (long long) t,
             hex);
    x->headers = curl_slist_append(x->headers, hdr);
    snprintf(hdr, sizeof(hdr), "GovPay-Event-Id: %s", x->event_id);
    x->headers = curl_slist_append(x->headers, hdr);
    snprintf(hdr, sizeof(hdr), "GovPay-Event-Type: %.40s", f->element[1]->str);
    x->headers = curl_slist_append(x->headers, hdr);
    x->headers = curl_slist_append(x->headers, "Expect:");

    x->easy = curl_easy_init();

    if (x->headers == NULL || x->easy == NULL) {
        gp_send_fail_now(n, x, "out of memory");
        return;
    }

    curl_easy_setopt(x->easy, CURLOPT_URL, x->rcpt->url);
    curl_easy_setopt(x->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE, (long) blen);
    curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(x->easy, CURLOPT_USERAGENT, "gov-pay-notify/1");
    curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, n->connect_timeout_ms);
    curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, n->timeout_ms);
    curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(x->easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(x->easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(x->easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(x->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, gp_send_discard);
    curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);

    if (n->ca_file != NULL) {
        curl_easy_setopt(x->easy, CURLOPT_CAINFO, n->ca_file);
    }

    if (curl_multi_add_handle(n->multi, x->easy) != CURLM_OK) {
        curl_easy_cleanup(x->easy);
        x->easy = NULL;
        gp_send_fail_now(n, x, "curl_multi_add_handle() failed");
        return;
    }

    x->rcpt->inflight++;
    n->nflying++;
    x->next = n->flying;
    n->flying = x;
}


/* an attempt that failed before any request: recorded like a failed one */
static void
gp_send_fail_now(gp_notify_t *n, gp_notify_xfer_t *x, const char *why)
{
    snprintf(x->error, sizeof(x->error), "%.199s", why);
    x->ok = 0;
    x->status = 0;
    x->next = n->landed;
    n->landed = x;
}


/* graceful stop: drop what is in flight and give the leases back */
static void
gp_send_release(gp_notify_t *n)
{
    gp_notify_xfer_t *x, *next;
    redisReply       *r;
    const char       *argv[8];
    char              dkey[GP_NOTIFY_MEMBER_MAX + 32], now[24];
    int               released;

    released = 0;

    if (n->redis != NULL && n->landed != NULL) {
        (void) gp_send_record(n);
    }

    for (x = n->flying; x != NULL; x = next) {
        next = x->next;

        curl_multi_remove_handle(n->multi, x->easy);

        if (n->redis != NULL) {
            snprintf(dkey, sizeof(dkey), "{gp%u}:notify:d:%s", x->shard,
                     x->member);
            snprintf(now, sizeof(now), "%lld", (long long) gp_notify_now_ms());

            argv[3] = dkey;
            argv[4] = n->queue[x->shard];
            argv[5] = x->member;
            argv[6] = x->token;
            argv[7] = now;

            r = gp_notify_eval(n->redis, &n->release, 2, 8, argv, NULL);
            if (r != NULL) {
                released += r->type == REDIS_REPLY_INTEGER && r->integer == 1;
                freeReplyObject(r);
            } else {
                gp_send_disconnect(n);
            }
        }

        gp_xfer_free(x);
    }

    n->flying = NULL;
    n->nflying = 0;

    for (x = n->landed; x != NULL; x = next) {
        next = x->next;
        gp_xfer_free(x);
    }

    n->landed = NULL;

    if (released > 0) {
        n->env->log(n->env, GP_LOG_INFO, NULL,
                    "stopping: %d delivery(ies) in flight given back, due "
                    "now",
                    released);
    }
}


static void
gp_xfer_free(gp_notify_xfer_t *x)
{
    if (x->easy != NULL) {
        curl_easy_cleanup(x->easy);
    }

    curl_slist_free_all(x->headers);
    free(x->member);
    free(x->body);
    free(x);
}


static size_t
gp_send_discard(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    (void) ptr;
    (void) userdata;

    return size * nmemb;
}
