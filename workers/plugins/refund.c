/*
 * refund: carries each refund to the channel that took the money (the issue
 * "Money back"; docs/internals.md, "Refund plugin"; docs/channels.md,
 * "Refunds").
 *
 * The edge decides a refund (refund.lua: never more than was paid) and
 * appends refund.requested to the shard's {gpN}:refunds stream. Two halves
 * carry it from there, so that a slow channel never holds up the stream:
 *
 *   consumer  handle(), on the runtime's thread: the refund id into the
 *             shard's queue {gpN}:refund:queue (a sorted set scored by the
 *             next try, unix ms), once, by one script (refund_queue.lua);
 *             the runtime then acknowledges the entry.
 *   delivery  refund_send.c: a thread of the plugin's own with libcurl's
 *             multi interface, which claims due refunds (a lease), sends the
 *             channel's refund request or its query, and records what the
 *             answer says: the refund's end through refund_done.lua (the
 *             script the edge ends refunds with, so a refund ends once,
 *             whoever reports first), or the next try (refund_step.lua):
 *             retry on the schedule, ask again later, or a dead letter for
 *             ops after the last try.
 *
 * Both refund origins (a unit's refund of its notice, and an anomaly's money
 * given back) are carried the same way: the refund's own channel and trade
 * number are in its fields r<nn>.channel / r<nn>.channel_trade_no.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "gp_pkey.h"
#include "refund.h"


#define GP_REFUND_TIMEOUT_MS    10000
#define GP_REFUND_CONNECT_MS    3000
#define GP_REFUND_POLL_MS       1000
#define GP_REFUND_MAX_IN_FLIGHT 64
#define GP_REFUND_BANK_S        (7 * 86400)
#define GP_REFUND_SCHEDULE_MAX  64


/* transient failures: about 2 days of tries, then a dead letter for ops */
static const int64_t gp_refund_default_schedule_s[] = {
    15, 30, 60, 300, 900, 1800, 3600, 3600, 10800, 21600, 43200, 86400
};

/*
 * a channel still at work (WeChat Pay PROCESSING, UnionPay accepted):
 * every minute for five minutes, then less and less often (as WeChat Pay
 * advises), daily at the end: about 6 days, since a refund to a bank card
 * takes 1 to 3 working days
 */
static const int64_t gp_refund_default_wait_s[] = {
    60,   60,   60,    60,    60,    300,   600,   1200,  1800,  3600,
    3600, 7200, 14400, 28800, 43200, 86400, 86400, 86400, 86400, 86400
};


static const char *gp_refund_fields[] = {
    "code_key", "timeout_ms",    "connect_timeout_ms", "schedule_s", "wait_s",
    "poll_ms",  "max_in_flight", "bank_timeout_s",     "ca_file",    "sandbox",
    "alipay",   "wechat",        "unionpay",           NULL
};

static const char *gp_refund_alipay_fields[] = { "app_id", "gateway", "app_key",
                                                 "public_key", NULL };

static const char *gp_refund_wechat_fields[] = { "mchid",
                                                 "merchant_serial",
                                                 "merchant_key",
                                                 "platform_keys",
                                                 "api_url",
                                                 "notify_url",
                                                 NULL };

static const char *gp_refund_platform_fields[] = { "serial", "key", NULL };

static const char *gp_refund_unionpay_fields[] = { "mer_id",     "cert_id",
                                                   "sign_key",   "verify_key",
                                                   "back_url",   "query_url",
                                                   "notify_url", NULL };


static int         gp_refund_init(const json_t *conf, gp_plugin_env_t *env,
                                  void **state, char *err, size_t errlen);
static gp_result_t gp_refund_handle(void *state, const gp_event_t *ev,
                                    char *msg, size_t msglen);
static void        gp_refund_shutdown(void *state);
static int gp_refund_conf_int(const json_t *conf, const char *name, long min,
                              long max, long def, long *out, char *err,
                              size_t errlen);
static int gp_refund_conf_str(const json_t *conf, const char *name,
                              int required, char **out, char *err,
                              size_t errlen);
static int gp_refund_conf_url(const json_t *conf, const char *name,
                              const char *def, char **out, char *err,
                              size_t errlen);
static int gp_refund_conf_key(gp_refund_t *rf, const json_t *conf,
                              const char *name, int private_key, EVP_PKEY **out,
                              char *err, size_t errlen);
static int gp_refund_conf_list(const json_t *conf, const char *name,
                               const int64_t *def, size_t ndef, int64_t **out,
                               size_t *count, char *err, size_t errlen);
static int gp_refund_conf_alipay(gp_refund_t *rf, const json_t *conf, char *err,
                                 size_t errlen);
static int gp_refund_conf_wechat(gp_refund_t *rf, const json_t *conf, char *err,
                                 size_t errlen);
static int gp_refund_conf_unionpay(gp_refund_t *rf, const json_t *conf,
                                   char *err, size_t errlen);
static char *gp_refund_strf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


static const char *const gp_refund_streams[] = { "refunds", NULL };


const gp_plugin_t gp_plugin_refund = { .name = "refund",
                                       .init = gp_refund_init,
                                       .handle = gp_refund_handle,
                                       .shutdown = gp_refund_shutdown,
                                       .streams = gp_refund_streams };


static int
gp_refund_init(const json_t *conf, gp_plugin_env_t *env, void **state,
               char *err, size_t errlen)
{
    gp_refund_t *rf;
    const char  *key, *fault;
    char        *path;
    long         v;
    uint32_t     s;
    json_t      *sb;

    key = gp_conf_unknown(conf, gp_refund_fields);
    if (key != NULL) {
        snprintf(err, errlen, "unknown field \"%s\"", key);
        return -1;
    }

    rf = calloc(1, sizeof(gp_refund_t));
    if (rf == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    rf->env = env;
    atomic_init(&rf->stop, 0);
    atomic_init(&rf->woken, 0);
    path = NULL;

    if (gp_refund_conf_str(conf, "code_key", 1, &path, err, errlen) != 0) {
        goto fail;
    }

    key = path;
    path = gp_conf_path(env, key);
    free((char *) key);

    if (path == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    if (gp_code_key_load(path, &rf->code_key, err, errlen) != 0) {
        goto fail;
    }

    free(path);
    path = NULL;

    if (gp_refund_conf_int(conf, "timeout_ms", 100, 600000,
                           GP_REFUND_TIMEOUT_MS, &rf->timeout_ms, err, errlen)
            != 0
        || gp_refund_conf_int(conf, "connect_timeout_ms", 100, 600000,
                              GP_REFUND_CONNECT_MS, &rf->connect_timeout_ms,
                              err, errlen)
               != 0
        || gp_refund_conf_int(conf, "bank_timeout_s", 1, 366L * 86400,
                              GP_REFUND_BANK_S, &rf->bank_timeout_s, err,
                              errlen)
               != 0
        || gp_refund_conf_int(conf, "poll_ms", 10, 60000, GP_REFUND_POLL_MS, &v,
                              err, errlen)
               != 0)
    {
        goto fail;
    }

    rf->poll_ms = (int) v;

    if (gp_refund_conf_int(conf, "max_in_flight", 1, 10000,
                           GP_REFUND_MAX_IN_FLIGHT, &v, err, errlen)
        != 0)
    {
        goto fail;
    }

    rf->max_in_flight = (int) v;

    if (rf->connect_timeout_ms > rf->timeout_ms) {
        rf->connect_timeout_ms = rf->timeout_ms;
    }

    if (gp_refund_conf_list(conf, "schedule_s", gp_refund_default_schedule_s,
                            sizeof(gp_refund_default_schedule_s)
                                / sizeof(int64_t),
                            &rf->schedule_ms, &rf->nschedule, err, errlen)
            != 0
        || gp_refund_conf_list(conf, "wait_s", gp_refund_default_wait_s,
                               sizeof(gp_refund_default_wait_s)
                                   / sizeof(int64_t),
                               &rf->wait_ms, &rf->nwait, err, errlen)
               != 0
        || gp_refund_conf_str(conf, "ca_file", 0, &path, err, errlen) != 0)
    {
        goto fail;
    }

    if (path != NULL) {
        rf->ca_file = gp_conf_path(env, path);
        free(path);
        path = NULL;

        if (rf->ca_file == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }

    sb = json_object_get(conf, "sandbox");
    if (sb != NULL && !json_is_boolean(sb)) {
        snprintf(err, errlen, "\"sandbox\" must be true or false");
        goto fail;
    }

    rf->sandbox = sb != NULL && json_is_true(sb);

    if (gp_refund_conf_alipay(rf, json_object_get(conf, "alipay"), err, errlen)
            != 0
        || gp_refund_conf_wechat(rf, json_object_get(conf, "wechat"), err,
                                 errlen)
               != 0
        || gp_refund_conf_unionpay(rf, json_object_get(conf, "unionpay"), err,
                                   errlen)
               != 0)
    {
        goto fail;
    }

    rf->queue = calloc(env->shards, sizeof(char *));
    rf->dead_set = calloc(env->shards, sizeof(char *));
    rf->dead = calloc(env->shards, sizeof(char *));
    rf->stream = calloc(env->shards, sizeof(char *));
    rf->bank = calloc(env->shards, sizeof(char *));

    if (rf->queue == NULL || rf->dead_set == NULL || rf->dead == NULL
        || rf->stream == NULL || rf->bank == NULL)
    {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    for (s = 0; s < env->shards; s++) {
        rf->queue[s] = gp_refund_strf("{gp%u}:refund:queue", s);
        rf->dead_set[s] = gp_refund_strf("{gp%u}:refund:dead", s);
        rf->dead[s] = gp_refund_strf("{gp%u}:dead", s);
        rf->stream[s] = gp_refund_strf("{gp%u}:refunds", s);
        rf->bank[s] = gp_refund_strf("{gp%u}:bankrefunds", s);

        if (rf->queue[s] == NULL || rf->dead_set[s] == NULL
            || rf->dead[s] == NULL || rf->stream[s] == NULL
            || rf->bank[s] == NULL)
        {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }

    rf->s_queue = gp_script("refund_queue");
    rf->s_claim = gp_script("refund_claim");
    rf->s_step = gp_script("refund_step");
    rf->s_retry = gp_script("refund_retry");
    rf->s_prune = gp_script("refund_prune");
    rf->s_done = gp_script("refund_done");

    if (rf->s_queue == NULL || rf->s_claim == NULL || rf->s_step == NULL
        || rf->s_retry == NULL || rf->s_prune == NULL || rf->s_done == NULL)
    {
        snprintf(err, errlen, "a refund script is not embedded in the worker");
        goto fail;
    }

    fault = getenv("GOV_PAY_REFUND_FAULT");
    if (fault != NULL && fault[0] != '\0') {
        if (strcmp(fault, "before_send") == 0) {
            rf->fault = GP_REFUND_FAULT_BEFORE_SEND;
        } else if (strcmp(fault, "after_answer") == 0) {
            rf->fault = GP_REFUND_FAULT_AFTER_ANSWER;
        } else {
            snprintf(err, errlen, "unknown GOV_PAY_REFUND_FAULT \"%s\"", fault);
            goto fail;
        }

        env->log(env, GP_LOG_WARN, NULL,
                 "GOV_PAY_REFUND_FAULT=%s is set: test only", fault);
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init() failed");
        goto fail;
    }

    rf->curl_inited = 1;

    env->start = gp_refund_start;
    env->command = gp_refund_command;

    *state = rf;
    return 0;

fail:

    free(path);
    gp_refund_shutdown(rf);
    return -1;
}


static void
gp_refund_shutdown(void *state)
{
    gp_refund_t *rf;
    size_t       i;
    uint32_t     s;

    rf = state;

    if (rf == NULL) {
        return;
    }

    gp_refund_stop(rf);

    if (rf->curl_inited) {
        curl_global_cleanup();
    }

    if (rf->alipay != NULL) {
        free(rf->alipay->app_id);
        free(rf->alipay->gateway);
        EVP_PKEY_free(rf->alipay->app_key);
        EVP_PKEY_free(rf->alipay->public_key);
        free(rf->alipay);
    }

    if (rf->wechat != NULL) {
        free(rf->wechat->mchid);
        free(rf->wechat->merchant_serial);
        EVP_PKEY_free(rf->wechat->merchant_key);
        free(rf->wechat->api_url);
        free(rf->wechat->notify_url);

        for (i = 0; i < rf->wechat->nplatform; i++) {
            free(rf->wechat->platform[i].serial);
            EVP_PKEY_free(rf->wechat->platform[i].key);
        }

        free(rf->wechat);
    }

    if (rf->unionpay != NULL) {
        free(rf->unionpay->mer_id);
        free(rf->unionpay->cert_id);
        EVP_PKEY_free(rf->unionpay->sign_key);
        EVP_PKEY_free(rf->unionpay->verify_key);
        free(rf->unionpay->back_url);
        free(rf->unionpay->query_url);
        free(rf->unionpay->notify_url);
        free(rf->unionpay);
    }

    for (s = 0; s < rf->env->shards; s++) {
        if (rf->queue != NULL) {
            free(rf->queue[s]);
        }
        if (rf->dead_set != NULL) {
            free(rf->dead_set[s]);
        }
        if (rf->dead != NULL) {
            free(rf->dead[s]);
        }
        if (rf->stream != NULL) {
            free(rf->stream[s]);
        }
        if (rf->bank != NULL) {
            free(rf->bank[s]);
        }
    }

    free(rf->queue);
    free(rf->dead_set);
    free(rf->dead);
    free(rf->stream);
    free(rf->bank);
    free(rf->schedule_ms);
    free(rf->wait_ms);
    free(rf->ca_file);
    gp_code_key_free(&rf->code_key);
    free(rf);
}


/*
 * refund.requested: the refund into its shard's queue (once); the other
 * types of the refunds stream (refund.succeeded, refund.failed) are other
 * plugins' business
 */
static gp_result_t
gp_refund_handle(void *state, const gp_event_t *ev, char *msg, size_t msglen)
{
    gp_refund_t *rf;
    redisReply  *r;
    const char  *type, *id, *code, *key, *channel, *created, *argv[9];
    char rcode[GP_CODE_LEN + 1], nn[3], nkey[GP_REFUND_KEY_MAX], due[24],
        chan[24];
    size_t      idlen, clen, klen, chlen, crlen;
    uint32_t    shard;
    int64_t     created_at;
    gp_result_t rc;

    rf = state;
    idlen = clen = klen = chlen = crlen = 0;

    type = gp_event_get(ev, "type", NULL);
    if (type == NULL || strcmp(type, "refund.requested") != 0) {
        snprintf(msg, msglen, "type %.40s is not carried",
                 type != NULL ? type : "(none)");
        return GP_DONE;
    }

    id = gp_event_get(ev, "refund_id", &idlen);
    code = gp_event_get(ev, "payment_code", &clen);
    key = gp_event_get(ev, "notice_key", &klen);
    channel = gp_event_get(ev, "channel", &chlen);
    created = gp_event_get(ev, "created_at", &crlen);

    if (id == NULL || code == NULL || key == NULL || channel == NULL
        || chlen == 0 || chlen >= sizeof(chan)
        || gp_refund_parse_id(rf, id, idlen, rcode, nn, &shard, nkey,
                              sizeof(nkey))
               != 0
        || shard != ev->shard || clen != GP_CODE_LEN
        || memcmp(code, rcode, GP_CODE_LEN) != 0 || klen != strlen(nkey)
        || memcmp(key, nkey, klen) != 0)
    {
        snprintf(msg, msglen,
                 "refund.requested without a refund id of this shard and "
                 "notice");
        return GP_FAILED;
    }

    if (created == NULL || gp_parse_i64(created, crlen, &created_at) != 0) {
        created_at = gp_refund_now_ms() / 1000;
    }

    memcpy(chan, channel, chlen);
    chan[chlen] = '\0';

    snprintf(
        due, sizeof(due), "%lld",
        (long long) gp_refund_due(rf, chan, created_at, gp_refund_now_ms()));

    argv[3] = nkey;
    argv[4] = rf->queue[shard];
    argv[5] = id;
    argv[6] = nn;
    argv[7] = due;
    argv[8] = ev->id;

    r = gp_script_eval(rf->env->redis, rf->s_queue, 2, 9, argv, NULL);

    if (r == NULL) {
        snprintf(msg, msglen, "redis EVALSHA (refund_queue) failed: %s",
                 rf->env->redis->errstr);
        return GP_RETRY;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1
        || r->element[0]->type != REDIS_REPLY_STRING)
    {
        snprintf(msg, msglen, "redis EVALSHA (refund_queue): %.200s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        return GP_RETRY;
    }

    rc = GP_DONE;

    if (strcmp(r->element[0]->str, "QUEUED") == 0) {
        snprintf(msg, msglen, "%s (%s, %s fen) queued", id, chan,
                 gp_event_get(ev, "amount", NULL) != NULL
                     ? gp_event_get(ev, "amount", NULL)
                     : "?");
        gp_refund_wake(rf);

    } else if (strcmp(r->element[0]->str, "ALREADY") == 0) {
        snprintf(msg, msglen, "%s already in hand", id);

    } else if (strcmp(r->element[0]->str, "DEAD") == 0) {
        snprintf(msg, msglen, "%s is dead-lettered: left to ops", id);

    } else if (strcmp(r->element[0]->str, "FINAL") == 0 && r->elements == 2
               && r->element[1]->type == REDIS_REPLY_STRING)
    {
        snprintf(msg, msglen, "%s already %.20s", id, r->element[1]->str);

    } else {
        snprintf(msg, msglen, "%s not found on its notice", id);
        rc = GP_FAILED;
    }

    freeReplyObject(r);
    return rc;
}


/* ---- helpers shared by the files --------------------------------------- */

int64_t
gp_refund_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int
gp_refund_parse_id(const gp_refund_t *rf, const char *id, size_t len,
                   char code[GP_CODE_LEN + 1], char nn[3], uint32_t *shard,
                   char *key, size_t keylen)
{
    char     division[7];
    unsigned yy;
    uint64_t seq;
    int      k;

    if (len != GP_REFUND_ID_LEN || id[GP_CODE_LEN] != 'R'
        || id[GP_CODE_LEN + 1] < '0' || id[GP_CODE_LEN + 1] > '9'
        || id[GP_CODE_LEN + 2] < '0' || id[GP_CODE_LEN + 2] > '9'
        || (id[GP_CODE_LEN + 1] == '0' && id[GP_CODE_LEN + 2] == '0'))
    {
        return -1;
    }

    if (gp_code_parse(&rf->code_key, id, GP_CODE_LEN, rf->env->shards, division,
                      &yy, shard, &seq)
        != 0)
    {
        return -1;
    }

    memcpy(code, id, GP_CODE_LEN);
    code[GP_CODE_LEN] = '\0';
    nn[0] = id[GP_CODE_LEN + 1];
    nn[1] = id[GP_CODE_LEN + 2];
    nn[2] = '\0';

    k = snprintf(key, keylen, "{gp%u}:n:%llu", *shard,
                 (unsigned long long) seq);

    return (k > 0 && (size_t) k < keylen) ? 0 : -1;
}


int64_t
gp_refund_due(const gp_refund_t *rf, const char *channel, int64_t created_at,
              int64_t now)
{
    int64_t due;

    if (strcmp(channel, "bank") != 0) {
        return now;
    }

    /* a bank carries its own refunds: the plugin only looks at their age */
    due = (created_at + rf->bank_timeout_s) * 1000;

    return due > now ? due : now;
}


void
gp_refund_time_cst(time_t t, int compact, char *out, size_t outlen)
{
    struct tm tm;
    time_t    cst;

    cst = t + 8 * 3600;
    gmtime_r(&cst, &tm);

    strftime(out, outlen, compact ? "%Y%m%d%H%M%S" : "%Y-%m-%d %H:%M:%S", &tm);
}


/* ---- configuration ---------------------------------------------------- */

static int
gp_refund_conf_int(const json_t *conf, const char *name, long min, long max,
                   long def, long *out, char *err, size_t errlen)
{
    json_t *v;

    v = json_object_get(conf, name);
    if (v == NULL) {
        *out = def;
        return 0;
    }

    if (!json_is_integer(v) || json_integer_value(v) < min
        || json_integer_value(v) > max)
    {
        snprintf(err, errlen, "\"%s\" must be an integer from %ld to %ld", name,
                 min, max);
        return -1;
    }

    *out = (long) json_integer_value(v);
    return 0;
}


static int
gp_refund_conf_str(const json_t *conf, const char *name, int required,
                   char **out, char *err, size_t errlen)
{
    json_t *v;

    *out = NULL;

    v = json_object_get(conf, name);
    if (v == NULL) {
        if (required) {
            snprintf(err, errlen, "\"%s\" is required", name);
            return -1;
        }
        return 0;
    }

    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > 1024
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        snprintf(err, errlen, "\"%s\" must be a non-empty string", name);
        return -1;
    }

    *out = strdup(json_string_value(v));
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    return 0;
}


/* an http(s) URL without query, fragment or user info; trailing '/' dropped */
static int
gp_refund_conf_url(const json_t *conf, const char *name, const char *def,
                   char **out, char *err, size_t errlen)
{
    const char *host;
    char       *u;
    size_t      n;

    if (gp_refund_conf_str(conf, name, def == NULL, out, err, errlen) != 0) {
        return -1;
    }

    if (*out == NULL) {
        *out = strdup(def);
        if (*out == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }

    u = *out;

    host = strncmp(u, "https://", 8) == 0  ? u + 8
           : strncmp(u, "http://", 7) == 0 ? u + 7
                                           : NULL;

    if (host == NULL || host[0] == '\0' || host[0] == '/'
        || strpbrk(u, "?#@ \t\r\n") != NULL)
    {
        snprintf(err, errlen,
                 "\"%s\" must be an http(s):// URL without query, fragment "
                 "or user",
                 name);
        free(u);
        *out = NULL;
        return -1;
    }

    n = strlen(u);
    while (n > (size_t) (host - u) + 1 && u[n - 1] == '/') {
        u[--n] = '\0';
    }

    return 0;
}


static int
gp_refund_conf_key(gp_refund_t *rf, const json_t *conf, const char *name,
                   int private_key, EVP_PKEY **out, char *err, size_t errlen)
{
    char *file, *path;

    if (gp_refund_conf_str(conf, name, 1, &file, err, errlen) != 0) {
        return -1;
    }

    path = gp_conf_path(rf->env, file);
    free(file);

    if (path == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    *out = gp_pkey_load(path, private_key, GP_SIG_RSA_SHA256, err, errlen);
    free(path);

    return *out != NULL ? 0 : -1;
}


static int
gp_refund_conf_list(const json_t *conf, const char *name, const int64_t *def,
                    size_t ndef, int64_t **out, size_t *count, char *err,
                    size_t errlen)
{
    json_t *list, *v;
    size_t  i, n;

    list = json_object_get(conf, name);

    if (list == NULL) {
        n = ndef;
    } else {
        n = json_is_array(list) ? json_array_size(list) : 0;

        if (n == 0 || n > GP_REFUND_SCHEDULE_MAX) {
            snprintf(err, errlen,
                     "\"%s\" must be an array of 1 to %d delays in seconds",
                     name, GP_REFUND_SCHEDULE_MAX);
            return -1;
        }
    }

    *out = calloc(n, sizeof(int64_t));
    if (*out == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (list == NULL) {
            (*out)[i] = def[i] * 1000;
            continue;
        }

        v = json_array_get(list, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > 7 * 86400)
        {
            snprintf(err, errlen,
                     "\"%s\"[%zu] must be an integer from 1 to 604800", name,
                     i);
            return -1;
        }

        (*out)[i] = (int64_t) json_integer_value(v) * 1000;
    }

    *count = n;
    return 0;
}


static int
gp_refund_conf_alipay(gp_refund_t *rf, const json_t *conf, char *err,
                      size_t errlen)
{
    gp_refund_alipay_t *a;
    const char         *key;
    char                e[400];

    if (conf == NULL) {
        return 0;
    }

    if (!json_is_object(conf)) {
        snprintf(err, errlen, "\"alipay\" must be an object");
        return -1;
    }

    key = gp_conf_unknown(conf, gp_refund_alipay_fields);
    if (key != NULL) {
        snprintf(err, errlen, "alipay: unknown field \"%s\"", key);
        return -1;
    }

    a = calloc(1, sizeof(gp_refund_alipay_t));
    if (a == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    rf->alipay = a;

    if (gp_refund_conf_str(conf, "app_id", 1, &a->app_id, e, sizeof(e)) != 0
        || gp_refund_conf_url(conf, "gateway", NULL, &a->gateway, e, sizeof(e))
               != 0
        || gp_refund_conf_key(rf, conf, "app_key", 1, &a->app_key, e, sizeof(e))
               != 0
        || gp_refund_conf_key(rf, conf, "public_key", 0, &a->public_key, e,
                              sizeof(e))
               != 0)
    {
        snprintf(err, errlen, "alipay: %s", e);
        return -1;
    }

    if (strspn(a->app_id, "0123456789") != strlen(a->app_id)
        || strlen(a->app_id) > 32)
    {
        snprintf(err, errlen, "alipay: \"app_id\" must be 1-32 digits");
        return -1;
    }

    return 0;
}


static int
gp_refund_conf_wechat(gp_refund_t *rf, const json_t *conf, char *err,
                      size_t errlen)
{
    gp_refund_wechat_t *w;
    const char         *key;
    json_t             *list, *item;
    char                e[400], *file, *path;
    size_t              i;

    if (conf == NULL) {
        return 0;
    }

    if (!json_is_object(conf)) {
        snprintf(err, errlen, "\"wechat\" must be an object");
        return -1;
    }

    key = gp_conf_unknown(conf, gp_refund_wechat_fields);
    if (key != NULL) {
        snprintf(err, errlen, "wechat: unknown field \"%s\"", key);
        return -1;
    }

    w = calloc(1, sizeof(gp_refund_wechat_t));
    if (w == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    rf->wechat = w;

    if (gp_refund_conf_str(conf, "mchid", 1, &w->mchid, e, sizeof(e)) != 0
        || gp_refund_conf_str(conf, "merchant_serial", 1, &w->merchant_serial,
                              e, sizeof(e))
               != 0
        || gp_refund_conf_key(rf, conf, "merchant_key", 1, &w->merchant_key, e,
                              sizeof(e))
               != 0
        || gp_refund_conf_url(conf, "api_url", "https://api.mch.weixin.qq.com",
                              &w->api_url, e, sizeof(e))
               != 0
        || gp_refund_conf_url(conf, "notify_url", NULL, &w->notify_url, e,
                              sizeof(e))
               != 0)
    {
        snprintf(err, errlen, "wechat: %s", e);
        return -1;
    }

    if (strspn(w->mchid, "0123456789") != strlen(w->mchid)
        || strlen(w->mchid) > 32
        || strspn(w->merchant_serial,
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789_-")
               != strlen(w->merchant_serial)
        || strlen(w->merchant_serial) > 64)
    {
        snprintf(err, errlen,
                 "wechat: \"mchid\" must be 1-32 digits and "
                 "\"merchant_serial\" 1-64 of A-Za-z0-9_-");
        return -1;
    }

    list = json_object_get(conf, "platform_keys");
    if (!json_is_array(list) || json_array_size(list) == 0
        || json_array_size(list) > GP_REFUND_PLATFORM_MAX)
    {
        snprintf(err, errlen,
                 "wechat: \"platform_keys\" must be an array of 1 to %d "
                 "{\"serial\", \"key\"}",
                 GP_REFUND_PLATFORM_MAX);
        return -1;
    }

    json_array_foreach(list, i, item)
    {
        if (!json_is_object(item)
            || gp_conf_unknown(item, gp_refund_platform_fields) != NULL)
        {
            snprintf(err, errlen,
                     "wechat: platform_keys[%zu] must be {\"serial\", "
                     "\"key\"}",
                     i);
            return -1;
        }

        if (gp_refund_conf_str(item, "serial", 1, &w->platform[i].serial, e,
                               sizeof(e))
                != 0
            || strlen(w->platform[i].serial) > 64
            || strspn(w->platform[i].serial,
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789_-")
                   != strlen(w->platform[i].serial))
        {
            free(w->platform[i].serial);
            w->platform[i].serial = NULL;
            snprintf(err, errlen,
                     "wechat: platform_keys[%zu]: \"serial\" must be 1-64 of "
                     "A-Za-z0-9_-",
                     i);
            return -1;
        }

        w->nplatform = i + 1;

        if (gp_refund_conf_str(item, "key", 1, &file, e, sizeof(e)) != 0) {
            snprintf(err, errlen, "wechat: platform_keys[%zu]: %s", i, e);
            return -1;
        }

        path = gp_conf_path(rf->env, file);
        free(file);

        if (path == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }

        w->platform[i].key =
            gp_pkey_load(path, 0, GP_SIG_RSA_SHA256, e, sizeof(e));
        free(path);

        if (w->platform[i].key == NULL) {
            snprintf(err, errlen, "wechat: platform_keys[%zu]: %s", i, e);
            return -1;
        }
    }

    return 0;
}


static int
gp_refund_conf_unionpay(gp_refund_t *rf, const json_t *conf, char *err,
                        size_t errlen)
{
    gp_refund_unionpay_t *u;
    const char           *key;
    char                  e[400];

    if (conf == NULL) {
        return 0;
    }

    if (!json_is_object(conf)) {
        snprintf(err, errlen, "\"unionpay\" must be an object");
        return -1;
    }

    key = gp_conf_unknown(conf, gp_refund_unionpay_fields);
    if (key != NULL) {
        snprintf(err, errlen, "unionpay: unknown field \"%s\"", key);
        return -1;
    }

    u = calloc(1, sizeof(gp_refund_unionpay_t));
    if (u == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    rf->unionpay = u;

    if (gp_refund_conf_str(conf, "mer_id", 1, &u->mer_id, e, sizeof(e)) != 0
        || gp_refund_conf_str(conf, "cert_id", 1, &u->cert_id, e, sizeof(e))
               != 0
        || gp_refund_conf_key(rf, conf, "sign_key", 1, &u->sign_key, e,
                              sizeof(e))
               != 0
        || gp_refund_conf_key(rf, conf, "verify_key", 0, &u->verify_key, e,
                              sizeof(e))
               != 0
        || gp_refund_conf_url(
               conf, "back_url",
               "https://gateway.95516.com/gateway/api/backTransReq.do",
               &u->back_url, e, sizeof(e))
               != 0
        || gp_refund_conf_url(
               conf, "query_url",
               "https://gateway.95516.com/gateway/api/queryTrans.do",
               &u->query_url, e, sizeof(e))
               != 0
        || gp_refund_conf_url(conf, "notify_url", NULL, &u->notify_url, e,
                              sizeof(e))
               != 0)
    {
        snprintf(err, errlen, "unionpay: %s", e);
        return -1;
    }

    if (strlen(u->mer_id) != 15
        || strspn(u->mer_id, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 15
        || strlen(u->cert_id) > 40
        || strspn(u->cert_id, "0123456789") != strlen(u->cert_id))
    {
        snprintf(err, errlen,
                 "unionpay: \"mer_id\" must be 15 of 0-9A-Z and \"cert_id\" "
                 "1-40 digits");
        return -1;
    }

    return 0;
}


static char *
gp_refund_strf(const char *fmt, ...)
{
    va_list ap;
    char   *s;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
    }
    va_end(ap);

    return s;
}
