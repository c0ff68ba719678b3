/*
 * refund_send: the delivery thread of the refund plugin. One thread, one
 * Redis connection of its own, one libcurl multi handle: every refund in
 * flight is an easy handle on it, so a channel that hangs holds up no other.
 *
 * A turn of the loop:
 *
 *   1. curl_multi_perform(); a finished transfer's answer is read by its
 *      channel (refund_channels.c) into an outcome.
 *   2. Outcomes are recorded: a final one by refund_done.lua (the edge's
 *      script: the first final word wins, a repeat is DUP), the others by
 *      refund_step.lua (retry on the schedule, ask again after the wait
 *      schedule, send now, or a dead letter), only while the claim's lease
 *      is ours. Kept in memory while Redis is away.
 *   3. Due refunds are claimed (refund_claim.lua), every poll_ms and at once
 *      when handle() queued one, up to max_in_flight: a lease of 2 x
 *      timeout + 1 s, so other worker processes leave the refund alone and a
 *      process that dies only delays it. A claim to send marks the refund
 *      "query" first: after a crash, the next try asks the channel before it
 *      sends again.
 *   4. curl_multi_poll() until a socket is ready, a timer or the next scan is
 *      due, or a wake.
 *
 * Every minute, dead-lettered refunds that ended since (a late notification,
 * a bank's answer) leave the shard's dead refunds (refund_prune.lua).
 */

#define _GNU_SOURCE

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "gp_crypto.h"
#include "refund.h"


#define GP_RS_BACKOFF_MIN 100
#define GP_RS_BACKOFF_MAX 2000
#define GP_RS_PRUNE_MS    60000


static void  *gp_rs_main(void *arg);
static int    gp_rs_connect(gp_refund_t *rf);
static void   gp_rs_disconnect(gp_refund_t *rf);
static void   gp_rs_backoff(gp_refund_t *rf);
static void   gp_rs_land(gp_refund_t *rf);
static int    gp_rs_record(gp_refund_t *rf);
static int    gp_rs_record_one(gp_refund_t *rf, gp_refund_try_t *t);
static int    gp_rs_step(gp_refund_t *rf, gp_refund_try_t *t, const char *kind,
                         int64_t next, const char *phase, const char *why,
                         int counts, int forget);
static int    gp_rs_scan(gp_refund_t *rf, int64_t now);
static int    gp_rs_claim(gp_refund_t *rf, uint32_t shard, const char *id,
                          int64_t now);
static void   gp_rs_begin(gp_refund_t *rf, gp_refund_try_t *t);
static void   gp_rs_now(gp_refund_t *rf, gp_refund_try_t *t);
static int    gp_rs_prune(gp_refund_t *rf);
static void   gp_rs_release(gp_refund_t *rf);
static void   gp_rs_free(gp_refund_try_t *t);
static size_t gp_rs_body(char *ptr, size_t size, size_t nmemb, void *data);
static size_t gp_rs_header(char *ptr, size_t size, size_t nmemb, void *data);
static const char *gp_rs_kind(gp_refund_phase_t phase);


int
gp_refund_start(void *state, char *err, size_t errlen)
{
    gp_refund_t  *rf;
    unsigned char rnd[8];
    int           rc;

    rf = state;

    rf->multi = curl_multi_init();
    if (rf->multi == NULL) {
        snprintf(err, errlen, "curl_multi_init() failed");
        return -1;
    }

    curl_multi_setopt(rf->multi, CURLMOPT_MAXCONNECTS,
                      (long) rf->max_in_flight + 8);

    if (gp_random_bytes(rnd, sizeof(rnd)) != 0) {
        snprintf(err, errlen, "gp_random_bytes() failed");
        return -1;
    }

    gp_hex(rnd, sizeof(rnd), rf->token_prefix);
    rf->backoff_ms = GP_RS_BACKOFF_MIN;

    rc = pthread_create(&rf->thread, NULL, gp_rs_main, rf);
    if (rc != 0) {
        snprintf(err, errlen, "pthread_create() failed: %s", strerror(rc));
        return -1;
    }

    rf->started = 1;
    return 0;
}


/* from shutdown(): transfers in flight are dropped, their leases given back */
void
gp_refund_stop(gp_refund_t *rf)
{
    if (rf->started) {
        atomic_store(&rf->stop, 1);
        curl_multi_wakeup(rf->multi);
        pthread_join(rf->thread, NULL);
        rf->started = 0;
    }

    if (rf->multi != NULL) {
        curl_multi_cleanup(rf->multi);
        rf->multi = NULL;
    }
}


/* handle() queued a refund: claim it now, not at the next scan */
void
gp_refund_wake(gp_refund_t *rf)
{
    if (rf->multi == NULL) {
        return;
    }

    atomic_store(&rf->woken, 1);
    curl_multi_wakeup(rf->multi);
}


static void *
gp_rs_main(void *arg)
{
    gp_refund_t *rf;
    int64_t      now, wait;
    long         curl_ms;
    int          running;

    rf = arg;
    rf->next_scan = 0;
    rf->next_prune = gp_refund_now_ms() + GP_RS_PRUNE_MS;

    rf->env->log(rf->env, GP_LOG_INFO, NULL,
                 "delivery thread started: alipay %s, wechat %s, unionpay %s, "
                 "sandbox %s; %zu-step schedule, %zu-step wait, timeout "
                 "%ld ms",
                 rf->alipay ? "on" : "off", rf->wechat ? "on" : "off",
                 rf->unionpay ? "on" : "off", rf->sandbox ? "on" : "off",
                 rf->nschedule, rf->nwait, rf->timeout_ms);

    while (!atomic_load(&rf->stop)) {
        curl_multi_perform(rf->multi, &running);
        gp_rs_land(rf);

        if (rf->redis == NULL && gp_rs_connect(rf) != 0) {
            gp_rs_backoff(rf);
            continue;
        }

        now = gp_refund_now_ms();

        if (atomic_exchange(&rf->woken, 0)) {
            rf->next_scan = now;
        }

        if ((rf->landed != NULL && gp_rs_record(rf) != 0)
            || (now >= rf->next_scan && gp_rs_scan(rf, now) != 0)
            || (now >= rf->next_prune && gp_rs_prune(rf) != 0))
        {
            /* transfers in flight go on; outcomes wait for the connection */
            gp_rs_disconnect(rf);
            gp_rs_backoff(rf);
            continue;
        }

        rf->backoff_ms = GP_RS_BACKOFF_MIN;

        if (rf->landed != NULL) {
            continue; /* tries that ended without a transfer: record them */
        }

        curl_multi_perform(rf->multi, &running);

        now = gp_refund_now_ms();
        wait = rf->next_scan - now;

        if (curl_multi_timeout(rf->multi, &curl_ms) == CURLM_OK && curl_ms >= 0
            && curl_ms < wait)
        {
            wait = curl_ms;
        }

        if (wait > 0 && !atomic_load(&rf->woken)) {
            curl_multi_poll(rf->multi, NULL, 0, (int) wait, NULL);
        }
    }

    gp_rs_release(rf);
    gp_rs_disconnect(rf);

    rf->env->log(rf->env, GP_LOG_INFO, NULL, "delivery thread stopped");
    return NULL;
}


static int
gp_rs_connect(gp_refund_t *rf)
{
    char err[512];

    rf->redis = rf->env->connect(rf->env, err, sizeof(err));

    if (rf->redis == NULL) {
        rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                     "delivery thread: %s; retrying in %d ms", err,
                     rf->backoff_ms);
        return -1;
    }

    rf->next_scan = 0;
    return 0;
}


static void
gp_rs_disconnect(gp_refund_t *rf)
{
    if (rf->redis != NULL) {
        redisFree(rf->redis);
        rf->redis = NULL;
    }
}


/* waits backoff_ms (still driving transfers, woken by a stop), doubles it */
static void
gp_rs_backoff(gp_refund_t *rf)
{
    int wait;

    wait = rf->backoff_ms;
    rf->backoff_ms *= 2;
    if (rf->backoff_ms > GP_RS_BACKOFF_MAX) {
        rf->backoff_ms = GP_RS_BACKOFF_MAX;
    }

    curl_multi_poll(rf->multi, NULL, 0, wait, NULL);
}


/* finished transfers: their answers read, into the list to record */
static void
gp_rs_land(gp_refund_t *rf)
{
    CURLMsg         *m;
    gp_refund_try_t *t, **pp;
    void            *priv;
    int              left;

    while ((m = curl_multi_info_read(rf->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE) {
            continue;
        }

        priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **) &priv);
        t = priv;

        t->result = m->data.result;
        if (t->result == CURLE_OK) {
            curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
        }

        curl_multi_remove_handle(rf->multi, t->easy);
        curl_easy_cleanup(t->easy);
        t->easy = NULL;

        for (pp = &rf->flying; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == t) {
                *pp = t->next;
                break;
            }
        }

        rf->nflying--;

        if (rf->fault == GP_REFUND_FAULT_AFTER_ANSWER && t->phase == GP_RF_SEND
            && t->result == CURLE_OK)
        {
            rf->env->log(rf->env, GP_LOG_WARN, NULL,
                         "%s: GOV_PAY_REFUND_FAULT=after_answer: exiting "
                         "before the answer (HTTP %ld) is recorded",
                         t->id, t->status);
            _exit(137);
        }

        t->channel->answer(rf, t);

        t->next = rf->landed;
        rf->landed = t;
    }
}


/*
 * Records every landed outcome. 0, or -1 on a Redis failure (what is not
 * recorded stays landed, for the next connection).
 */
static int
gp_rs_record(gp_refund_t *rf)
{
    gp_refund_try_t *t, *next, *keep;
    int              ret;

    keep = NULL;
    ret = 0;

    for (t = rf->landed; t != NULL; t = next) {
        next = t->next;

        if (ret == 0 && gp_rs_record_one(rf, t) == 0) {
            gp_rs_free(t);
            continue;
        }

        ret = -1;
        t->next = keep;
        keep = t;
    }

    rf->landed = keep;
    return ret;
}


static int
gp_rs_record_one(gp_refund_t *rf, gp_refund_try_t *t)
{
    redisReply *r;
    const char *argv[16], *word;
    char now_s[24], amount[24], division[7], yy[3], why[GP_REFUND_ERR_MAX + 64];
    gp_refund_result_t *res;
    const char         *phase;
    int64_t             now, next;
    int                 forget;

    res = &t->res;
    now = gp_refund_now_ms();
    r = NULL;

    switch (res->outcome) {
    case GP_RF_SUCCEEDED:
    case GP_RF_FAILED:
        snprintf(now_s, sizeof(now_s), "%lld", (long long) (now / 1000));
        if (res->amount >= 0) {
            snprintf(amount, sizeof(amount), "%lld", (long long) res->amount);
        } else {
            amount[0] = '\0';
        }

        memcpy(division, t->code, 6);
        division[6] = '\0';
        memcpy(yy, t->code + 6, 2);
        yy[2] = '\0';

        argv[3] = t->notice_key;
        argv[4] = rf->stream[t->shard];
        argv[5] = rf->queue[t->shard];
        argv[6] = rf->bank[t->shard];
        argv[7] = t->code;
        argv[8] = t->nn;
        argv[9] = res->outcome == GP_RF_SUCCEEDED ? "SUCCEEDED" : "FAILED";
        argv[10] = amount;
        argv[11] = res->refund_no;
        argv[12] = now_s;
        argv[13] = res->outcome == GP_RF_FAILED ? res->error : "";
        argv[14] = division;
        argv[15] = yy;

        r = gp_script_eval(rf->redis, rf->s_done, 4, 16, argv, NULL);
        if (r == NULL) {
            rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                         "%s: redis EVALSHA (refund_done) failed: %s", t->id,
                         rf->redis->errstr);
            return -1;
        }

        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
            || r->element[0]->type != REDIS_REPLY_STRING)
        {
            rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                         "%s: redis EVALSHA (refund_done): %.200s", t->id,
                         r->type == REDIS_REPLY_ERROR ? r->str
                                                      : "unexpected reply");
            freeReplyObject(r);
            return -1;
        }

        word = r->element[0]->str;

        if (strcmp(word, "DONE") == 0) {
            rf->env->log(
                rf->env, GP_LOG_INFO, NULL, "%s %s %s: %s (%s)%s%s, notice %s",
                t->id, t->channel_name, gp_rs_kind(t->phase),
                res->outcome == GP_RF_SUCCEEDED ? "succeeded" : "failed",
                res->error, res->refund_no[0] ? ", refund no " : "",
                res->refund_no,
                r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING
                    ? r->element[1]->str
                    : "?");

        } else if (strcmp(word, "DUP") == 0) {
            rf->env->log(
                rf->env, GP_LOG_INFO, NULL, "%s %s %s: %s, already %s", t->id,
                t->channel_name, gp_rs_kind(t->phase), res->error,
                r->elements > 1 && r->element[1]->type == REDIS_REPLY_STRING
                    ? r->element[1]->str
                    : "final");

        } else if (strcmp(word, "MISMATCH") == 0) {
            /* the channel states another amount: nothing changes; ops */
            freeReplyObject(r);
            r = NULL;
            snprintf(why, sizeof(why),
                     "the channel states %s fen for a refund of %lld fen",
                     amount, (long long) t->amount);
            return gp_rs_step(rf, t, "dead", now, "query", why, 0, 0);

        } else {
            rf->env->log(rf->env, GP_LOG_WARN, NULL,
                         "%s: refund_done answered %.20s: the refund or its "
                         "notice is gone",
                         t->id, word);
        }

        freeReplyObject(r);
        return 0;

    case GP_RF_WAIT:
        if (t->waits >= (long long) rf->nwait) {
            snprintf(why, sizeof(why), "still not final after %lld waits: %s",
                     t->waits, res->error);
            return gp_rs_step(rf, t, "dead", now, "query", why, 0, 0);
        }

        next = now + rf->wait_ms[t->waits];
        return gp_rs_step(rf, t, "wait", next, "query", res->error, 0, 0);

    case GP_RF_AGAIN:
        return gp_rs_step(rf, t, "again", now, "send", res->error, 0, 0);

    case GP_RF_RETRY:
        /* a refund request that cannot have reached the channel is sent
         * again; anything else is asked about first */
        phase = t->phase == GP_RF_SEND && res->unsent ? "send" : "query";

        /* UnionPay did not take it: the next send is a new transaction */
        forget = t->phase == GP_RF_SEND && res->unsent
                 && t->channel == &gp_refund_unionpay;

        if (t->attempts >= (long long) rf->nschedule) {
            snprintf(why, sizeof(why), "gave up after %lld tries: %s",
                     t->attempts + 1, res->error);
            return gp_rs_step(rf, t, "dead", now, phase, why, 1, forget);
        }

        next = now + rf->schedule_ms[t->attempts];
        return gp_rs_step(rf, t, "retry", next, phase, res->error, 0, forget);

    case GP_RF_DEAD:
        return gp_rs_step(rf, t, "dead", now,
                          t->phase == GP_RF_SEND ? "send" : "query", res->error,
                          0, 0);
    }

    return 0;
}


/* refund_step.lua; 0, or -1 on a Redis failure */
static int
gp_rs_step(gp_refund_t *rf, gp_refund_try_t *t, const char *kind, int64_t next,
           const char *phase, const char *why, int counts, int forget)
{
    redisReply *r;
    const char *argv[19], *word;
    char        now_s[24], next_s[24];
    int64_t     now;

    now = gp_refund_now_ms();
    snprintf(now_s, sizeof(now_s), "%lld", (long long) now);
    snprintf(next_s, sizeof(next_s), "%lld", (long long) next);

    argv[3] = t->notice_key;
    argv[4] = rf->queue[t->shard];
    argv[5] = rf->dead[t->shard];
    argv[6] = rf->dead_set[t->shard];
    argv[7] = t->id;
    argv[8] = t->nn;
    argv[9] = t->token;
    argv[10] = now_s;
    argv[11] = kind;
    argv[12] = next_s;
    argv[13] = phase;
    argv[14] = why;
    argv[15] = counts ? "1" : "0";
    argv[16] = t->code;
    argv[17] = rf->stream[t->shard];
    argv[18] = forget ? "1" : "0";

    r = gp_script_eval(rf->redis, rf->s_step, 4, 19, argv, NULL);
    if (r == NULL) {
        rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                     "%s: redis EVALSHA (refund_step) failed: %s", t->id,
                     rf->redis->errstr);
        return -1;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                     "%s: redis EVALSHA (refund_step): %.200s", t->id,
                     r->type == REDIS_REPLY_ERROR ? r->str
                                                  : "unexpected reply");
        freeReplyObject(r);
        return -1;
    }

    word = r->element[0]->str;

    if (strcmp(word, "RETRY") == 0) {
        rf->env->log(rf->env, GP_LOG_WARN, NULL,
                     "%s %s %s: try %lld failed (%s), next try in %lld s",
                     t->id, t->channel_name, gp_rs_kind(t->phase),
                     t->attempts + 1, why,
                     (long long) ((next - now + 999) / 1000));

    } else if (strcmp(word, "WAIT") == 0) {
        rf->env->log(rf->env, GP_LOG_INFO, NULL,
                     "%s %s %s: %s; asking again in %lld s", t->id,
                     t->channel_name, gp_rs_kind(t->phase), why,
                     (long long) ((next - now + 999) / 1000));

    } else if (strcmp(word, "AGAIN") == 0) {
        rf->env->log(rf->env, GP_LOG_INFO, NULL, "%s %s %s: %s; %s", t->id,
                     t->channel_name, gp_rs_kind(t->phase), why,
                     strcmp(kind, "release") == 0 ? "given back"
                                                  : "sending it now");
        if (strcmp(kind, "again") == 0) {
            atomic_store(&rf->woken, 1);
        }

    } else if (strcmp(word, "DEAD") == 0) {
        rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                     "%s %s: %s; dead-lettered to {gp%u}:dead as %s, the "
                     "refund stays REFUNDING for ops (refund show / retry)",
                     t->id, t->channel_name, why, t->shard,
                     r->elements == 3
                             && r->element[2]->type == REDIS_REPLY_STRING
                         ? r->element[2]->str
                         : "?");

    } else if (strcmp(word, "FINAL") == 0) {
        rf->env->log(rf->env, GP_LOG_INFO, NULL,
                     "%s %s: ended meanwhile (%s): nothing to record", t->id,
                     t->channel_name,
                     r->elements > 1
                             && r->element[1]->type == REDIS_REPLY_STRING
                         ? r->element[1]->str
                         : "gone");

    } else {
        rf->env->log(rf->env, GP_LOG_DEBUG, NULL,
                     "%s: outcome not recorded, the refund was re-claimed or "
                     "retried meanwhile",
                     t->id);
    }

    freeReplyObject(r);
    return 0;
}


/* claims due refunds of every shard, as far as there is room */
static int
gp_rs_scan(gp_refund_t *rf, int64_t now)
{
    redisReply **replies, *r;
    uint32_t     s, shards;
    char         max[24], page[16];
    size_t       i;
    int          room, ret;

    shards = rf->env->shards;
    rf->next_scan = now + rf->poll_ms;

    room = rf->max_in_flight - rf->nflying;
    if (room <= 0) {
        return 0;
    }

    snprintf(max, sizeof(max), "%lld", (long long) now);
    snprintf(page, sizeof(page), "%d", room);

    for (s = 0; s < shards; s++) {
        if (redisAppendCommand(rf->redis, "ZRANGEBYSCORE %s -inf %s LIMIT 0 %s",
                               rf->queue[s], max, page)
            != REDIS_OK)
        {
            return -1;
        }
    }

    replies = calloc(shards, sizeof(redisReply *));
    if (replies == NULL) {
        return -1; /* the pipeline is out of step: reconnect */
    }

    ret = 0;

    for (s = 0; s < shards; s++) {
        if (redisGetReply(rf->redis, (void **) &replies[s]) != REDIS_OK) {
            rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                         "delivery thread: redis ZRANGEBYSCORE failed: %s",
                         rf->redis->errstr);
            ret = -1;
            break;
        }

        if (replies[s]->type != REDIS_REPLY_ARRAY) {
            rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                         "delivery thread: redis ZRANGEBYSCORE: %.200s",
                         replies[s]->type == REDIS_REPLY_ERROR
                             ? replies[s]->str
                             : "unexpected reply");
            ret = -1;
        }
    }

    for (s = 0; s < shards && ret == 0; s++) {
        r = replies[s];

        for (i = 0; i < r->elements && room > 0; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING) {
                continue;
            }

            switch (gp_rs_claim(rf, s, r->element[i]->str, now)) {
            case -1:
                ret = -1;
                break;
            case 1:
                room--;
                break;
            default:
                break;
            }

            if (ret != 0) {
                break;
            }
        }

        if (room == 0) {
            rf->next_scan = now; /* more may be due: look again soon */
        }
    }

    for (s = 0; s < shards; s++) {
        if (replies[s] != NULL) {
            freeReplyObject(replies[s]);
        }
    }

    free(replies);
    return ret;
}


/* claims one refund and starts its try: 1, 0 (not claimed), -1 (Redis) */
static int
gp_rs_claim(gp_refund_t *rf, uint32_t shard, const char *id, int64_t now)
{
    gp_refund_try_t *t;
    redisReply      *r, *e;
    const char      *argv[11];
    char             now_s[24], until[24], txn_time[16];
    uint32_t         s;
    int64_t          v;
    size_t           i;

    t = calloc(1, sizeof(gp_refund_try_t));
    if (t == NULL) {
        return 0;
    }

    t->rf = rf;

    if (gp_refund_parse_id(rf, id, strlen(id), t->code, t->nn, &s,
                           t->notice_key, sizeof(t->notice_key))
            != 0
        || s != shard)
    {
        /* not a refund id of this shard: it can never be carried */
        rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                     "%s: a member of %.40s that is no refund id of it: "
                     "removed",
                     rf->queue[shard], id);
        r = redisCommand(rf->redis, "ZREM %s %s", rf->queue[shard], id);
        free(t);

        if (r == NULL) {
            return -1;
        }

        freeReplyObject(r);
        return 0;
    }

    memcpy(t->id, id, GP_REFUND_ID_LEN);
    t->id[GP_REFUND_ID_LEN] = '\0';
    t->shard = shard;

    snprintf(now_s, sizeof(now_s), "%lld", (long long) now);
    snprintf(until, sizeof(until), "%lld",
             (long long) (now + 2 * rf->timeout_ms + 1000));
    snprintf(t->token, sizeof(t->token), "%s-%llx", rf->token_prefix,
             ++rf->token_seq);
    gp_refund_time_cst(time(NULL), 1, txn_time, sizeof(txn_time));

    argv[3] = t->notice_key;
    argv[4] = rf->queue[shard];
    argv[5] = t->id;
    argv[6] = t->nn;
    argv[7] = now_s;
    argv[8] = until;
    argv[9] = t->token;
    argv[10] = txn_time;

    r = gp_script_eval(rf->redis, rf->s_claim, 2, 11, argv, NULL);

    if (r == NULL) {
        rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                     "%s: redis EVALSHA (refund_claim) failed: %s", t->id,
                     rf->redis->errstr);
        free(t);
        return -1;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                     "%s: redis EVALSHA (refund_claim): %.200s", t->id,
                     r->type == REDIS_REPLY_ERROR ? r->str
                                                  : "unexpected reply");
        freeReplyObject(r);
        free(t);
        return -1;
    }

    if (strcmp(r->element[0]->str, "CLAIMED") != 0 || r->elements != 12) {
        if (strcmp(r->element[0]->str, "FINAL") == 0) {
            rf->env->log(rf->env, GP_LOG_DEBUG, NULL,
                         "%s: ended meanwhile: out of the queue", t->id);
        }

        freeReplyObject(r);
        free(t);
        return 0;
    }

    for (i = 1; i < 12; i++) {
        if (r->element[i]->type != REDIS_REPLY_STRING) {
            break;
        }
    }

    e = r;

    if (i < 12
        || gp_parse_i64(e->element[2]->str, e->element[2]->len, &t->amount) != 0
        || e->element[3]->len >= sizeof(t->channel_name)
        || e->element[4]->len >= sizeof(t->trade_no)
        || e->element[5]->len >= sizeof(t->origin)
        || e->element[9]->len >= sizeof(t->txn_time))
    {
        /* a refund the plugin cannot read is ops' */
        freeReplyObject(r);
        t->phase = GP_RF_QUERY;
        t->res.outcome = GP_RF_DEAD;
        t->res.amount = -1;
        snprintf(t->res.error, sizeof(t->res.error),
                 "the refund's fields on its notice are not usable");
        t->next = rf->landed;
        rf->landed = t;
        return 1;
    }

    t->phase =
        strcmp(e->element[1]->str, "query") == 0 ? GP_RF_QUERY : GP_RF_SEND;
    memcpy(t->channel_name, e->element[3]->str, e->element[3]->len + 1);
    memcpy(t->trade_no, e->element[4]->str, e->element[4]->len + 1);
    memcpy(t->origin, e->element[5]->str, e->element[5]->len + 1);
    memcpy(t->txn_time, e->element[9]->str, e->element[9]->len + 1);
    t->reason = strdup(e->element[6]->str);
    t->attempts = strtoll(e->element[7]->str, NULL, 10);
    t->waits = strtoll(e->element[8]->str, NULL, 10);

    /*
     * the payment refunded: a unit's refund takes back part of the notice's
     * payment; an anomaly's refund gives back one whole payment, its own
     * amount
     */
    t->total = t->amount;
    if (strcmp(t->origin, "notice") == 0
        && gp_parse_i64(e->element[10]->str, e->element[10]->len, &v) == 0)
    {
        t->total = v;
    }

    if (gp_parse_i64(e->element[11]->str, e->element[11]->len, &v) == 0) {
        t->created_at = v;
    }

    freeReplyObject(r);

    if (t->reason == NULL) {
        gp_rs_free(t);
        return 0;
    }

    t->channel = gp_refund_channel(t->channel_name);

    if (t->channel == NULL || !t->channel->enabled(rf)) {
        gp_rs_now(rf, t);
        return 1;
    }

    gp_rs_begin(rf, t);
    return 1;
}


/* a try that needs no transfer: the sandbox, a bank's, an unknown channel */
static void
gp_rs_now(gp_refund_t *rf, gp_refund_try_t *t)
{
    gp_refund_result_t *res;

    res = &t->res;
    memset(res, 0, sizeof(*res));
    res->amount = -1;

    if (strcmp(t->channel_name, "sandbox") == 0 && rf->sandbox) {
        res->outcome = GP_RF_SUCCEEDED;
        res->amount = t->amount;
        snprintf(res->refund_no, sizeof(res->refund_no), "SANDBOX-%s", t->id);
        snprintf(res->error, sizeof(res->error), "the sandbox refunds at once");

    } else if (strcmp(t->channel_name, "bank") == 0) {
        res->outcome = GP_RF_DEAD;
        snprintf(res->error, sizeof(res->error),
                 "the bank has not carried out the refund within %ld s "
                 "(bank_timeout_s)",
                 rf->bank_timeout_s);

    } else {
        res->outcome = GP_RF_DEAD;
        snprintf(res->error, sizeof(res->error),
                 "channel \"%.24s\" is not configured in plugins.refund",
                 t->channel_name);
    }

    t->next = rf->landed;
    rf->landed = t;
}


static void
gp_rs_begin(gp_refund_t *rf, gp_refund_try_t *t)
{
    CURL *easy;

    if (t->channel->request(rf, t) != 0) {
        t->next = rf->landed; /* its outcome is set: recorded as it is */
        rf->landed = t;
        return;
    }

    if (rf->fault == GP_REFUND_FAULT_BEFORE_SEND && t->phase == GP_RF_SEND) {
        rf->env->log(rf->env, GP_LOG_WARN, NULL,
                     "%s: GOV_PAY_REFUND_FAULT=before_send: exiting before "
                     "the refund request is sent",
                     t->id);
        _exit(137);
    }

    easy = curl_easy_init();
    if (easy == NULL) {
        t->res.outcome = GP_RF_RETRY;
        t->res.unsent = 1;
        snprintf(t->res.error, sizeof(t->res.error), "curl_easy_init() failed");
        t->next = rf->landed;
        rf->landed = t;
        return;
    }

    t->easy = easy;
    t->started = gp_refund_now_ms();

    curl_easy_setopt(easy, CURLOPT_URL, t->url);
    if (t->body != NULL) {
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, t->body);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) strlen(t->body));
        t->headers = curl_slist_append(t->headers, "Expect:");
    } else {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, rf->connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, rf->timeout_ms);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, gp_rs_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, gp_rs_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->errbuf);
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);

    if (rf->ca_file != NULL) {
        curl_easy_setopt(easy, CURLOPT_CAINFO, rf->ca_file);
    }

    if (t->headers == NULL
        || curl_multi_add_handle(rf->multi, easy) != CURLM_OK) {
        curl_easy_cleanup(easy);
        t->easy = NULL;
        t->res.outcome = GP_RF_RETRY;
        t->res.unsent = 1;
        snprintf(t->res.error, sizeof(t->res.error),
                 "curl_multi_add_handle() failed");
        t->next = rf->landed;
        rf->landed = t;
        return;
    }

    rf->nflying++;
    t->next = rf->flying;
    rf->flying = t;
}


/* dead refunds that ended since (or whose notice is gone) leave the set */
static int
gp_rs_prune(gp_refund_t *rf)
{
    redisReply *r, *p;
    const char *argv[7];
    char        code[GP_CODE_LEN + 1], nn[3], key[GP_REFUND_KEY_MAX];
    uint32_t    s, shard;
    size_t      i;

    rf->next_prune = gp_refund_now_ms() + GP_RS_PRUNE_MS;

    for (s = 0; s < rf->env->shards; s++) {
        r = redisCommand(rf->redis, "ZRANGE %s 0 999", rf->dead_set[s]);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
            rf->env->log(rf->env, GP_LOG_ERROR, NULL,
                         "delivery thread: redis ZRANGE %s failed: %s",
                         rf->dead_set[s],
                         r == NULL ? rf->redis->errstr
                                   : (r->type == REDIS_REPLY_ERROR
                                          ? r->str
                                          : "unexpected reply"));
            if (r != NULL) {
                freeReplyObject(r);
            }
            return -1;
        }

        for (i = 0; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING
                || gp_refund_parse_id(rf, r->element[i]->str,
                                      r->element[i]->len, code, nn, &shard, key,
                                      sizeof(key))
                       != 0
                || shard != s)
            {
                continue;
            }

            argv[3] = key;
            argv[4] = rf->dead_set[s];
            argv[5] = r->element[i]->str;
            argv[6] = nn;

            p = gp_script_eval(rf->redis, rf->s_prune, 2, 7, argv, NULL);
            if (p == NULL) {
                freeReplyObject(r);
                return -1;
            }

            if (p->type == REDIS_REPLY_INTEGER && p->integer == 1) {
                rf->env->log(rf->env, GP_LOG_INFO, NULL,
                             "%s: a dead-lettered refund that has ended "
                             "since: out of %s",
                             r->element[i]->str, rf->dead_set[s]);
            }

            freeReplyObject(p);
        }

        freeReplyObject(r);
    }

    return 0;
}


/* graceful stop: what is recorded is, what is in flight is given back */
static void
gp_rs_release(gp_refund_t *rf)
{
    gp_refund_try_t *t, *next;
    int              released;

    released = 0;

    if (rf->redis != NULL && rf->landed != NULL) {
        (void) gp_rs_record(rf);
    }

    for (t = rf->flying; t != NULL; t = next) {
        next = t->next;

        curl_multi_remove_handle(rf->multi, t->easy);

        if (rf->redis != NULL
            && gp_rs_step(rf, t, "release", gp_refund_now_ms(), "query",
                          "the worker stopped during the try", 0, 0)
                   == 0)
        {
            released++;
        }

        gp_rs_free(t);
    }

    rf->flying = NULL;
    rf->nflying = 0;

    for (t = rf->landed; t != NULL; t = next) {
        next = t->next;
        gp_rs_free(t);
    }

    rf->landed = NULL;

    if (released > 0) {
        rf->env->log(rf->env, GP_LOG_INFO, NULL,
                     "stopping: %d refund(s) in flight given back, due now",
                     released);
    }
}


static void
gp_rs_free(gp_refund_try_t *t)
{
    if (t->easy != NULL) {
        curl_easy_cleanup(t->easy);
    }

    curl_slist_free_all(t->headers);
    free(t->url);
    free(t->body);
    free(t->resp);
    free(t->reason);
    free(t);
}


static size_t
gp_rs_body(char *ptr, size_t size, size_t nmemb, void *data)
{
    gp_refund_try_t *t;
    size_t           n;
    char            *p;

    t = data;
    n = size * nmemb;

    if (t->too_big || t->resp_len + n > GP_REFUND_BODY_MAX) {
        t->too_big = 1;
        return n; /* read and dropped */
    }

    p = realloc(t->resp, t->resp_len + n + 1);
    if (p == NULL) {
        t->too_big = 1;
        return n;
    }

    t->resp = p;
    memcpy(t->resp + t->resp_len, ptr, n);
    t->resp_len += n;
    t->resp[t->resp_len] = '\0';

    return n;
}


/* keeps the Wechatpay-* headers of the answer (WeChat Pay signs with them) */
static size_t
gp_rs_header(char *ptr, size_t size, size_t nmemb, void *data)
{
    static const struct {
        const char *name;
        size_t      off;
        size_t      len;
    } h[] = {
        {"Wechatpay-Timestamp",  offsetof(gp_refund_try_t, h_ts),
         sizeof(((gp_refund_try_t *) 0)->h_ts)    },
        { "Wechatpay-Nonce",     offsetof(gp_refund_try_t, h_nonce),
         sizeof(((gp_refund_try_t *) 0)->h_nonce) },
        { "Wechatpay-Signature", offsetof(gp_refund_try_t, h_sig),
         sizeof(((gp_refund_try_t *) 0)->h_sig)   },
        { "Wechatpay-Serial",    offsetof(gp_refund_try_t, h_serial),
         sizeof(((gp_refund_try_t *) 0)->h_serial)},
    };

    gp_refund_try_t *t;
    const char      *v;
    char            *dst;
    size_t           n, vlen, nlen, dstlen, i;

    t = data;
    n = size * nmemb;

    for (i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
        nlen = strlen(h[i].name);

        if (n <= nlen + 1 || strncasecmp(ptr, h[i].name, nlen) != 0
            || ptr[nlen] != ':') {
            continue;
        }

        v = ptr + nlen + 1;
        vlen = n - nlen - 1;

        while (vlen > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }

        while (vlen > 0
               && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'
                   || v[vlen - 1] == ' '))
        {
            vlen--;
        }

        dst = (char *) t + h[i].off;
        dstlen = h[i].len;

        /* a value too long for its field is no value (it cannot verify) */
        if (vlen >= dstlen) {
            vlen = 0;
        }

        memcpy(dst, v, vlen);
        dst[vlen] = '\0';
    }

    return n;
}


static const char *
gp_rs_kind(gp_refund_phase_t phase)
{
    return phase == GP_RF_SEND ? "refund" : "query";
}
