/*
 * notify: signed webhooks to the units' business systems (API.md, "Unit
 * webhooks"), and to subscribers that see every unit's events (the finance
 * department's non-tax revenue management system, 非税收入收缴管理系统).
 *
 * Two halves, so that a slow unit never holds up the stream:
 *
 *   consumer  handle(), on the runtime's thread: for a notice.paid,
 *             receipt.issued or receipt.reversed event ({gpN}:settled), or
 *             a refund.succeeded or refund.failed one ({gpN}:refunds), read
 *             the notice, build the body once (the notice as the unit API
 *             shows it; for a refund, the refund with the notice inside) and
 *             queue one delivery
 *             per recipient in one script: a hash {gpN}:notify:d:<evt>:<rkey>
 *             and a member of the sorted set {gpN}:notify:queue scored by
 *             its next attempt time. Only then is the entry acknowledged, so
 *             a crash at any point loses nothing (a redelivered entry finds
 *             its deliveries queued and changes nothing).
 *   delivery  notify_send.c: a thread of the plugin's own with libcurl's multi
 *             interface, which claims due deliveries (a lease), sends them
 *             concurrently and records each outcome: delivered, retry at the
 *             next step of the schedule, or dead letter on {gpN}:dead.
 *
 * Event id: "evt_<shard>_<ms>_<seq>" from the settled stream's entry,
 * "evt_r<shard>_<ms>_<seq>" from the refunds stream's, the same on every try,
 * every re-send and for every recipient. Keys and scripts:
 * docs/internals.md; the unit's side: docs/notify.md.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "gp_util.h"
#include "notify.h"


#define GP_NOTIFY_TIMEOUT_MS       10000
#define GP_NOTIFY_CONNECT_MS       3000
#define GP_NOTIFY_MAX_IN_FLIGHT    256
#define GP_NOTIFY_PER_RECIPIENT    16
#define GP_NOTIFY_POLL_MS          1000
#define GP_NOTIFY_KEEP_DELIVERED_S (7 * 86400)
#define GP_NOTIFY_KEEP_DEAD_S      (400 * 86400) /* retention's keep_s */
#define GP_NOTIFY_SCHEDULE_MAX     64
#define GP_NOTIFY_SUBSCRIBERS_MAX  16


/* API.md: at least 24 h in all */
static const int64_t gp_notify_default_schedule_s[] = {
    15,   15,   30,    180,   600,   1200,  1800, 1800,
    1800, 3600, 10800, 10800, 10800, 21600, 21600
};


/*
 * KEYS[1] queue, KEYS[2] stats, KEYS[3] the settled stream, KEYS[4..]
 * delivery hashes; ARGV[1] now (ms), ARGV[2] mode ("new" | "resend"), ARGV[3]
 * body, ARGV[4] type, ARGV[5] payment_code, ARGV[6] unit, ARGV[7] entry_id,
 * ARGV[8] event_id, ARGV[9] consumer group to acknowledge the entry for, or
 * "", ARGV[10..] the recipients of KEYS[4..]. → the number created or reset.
 *
 * handle() acknowledges its entry here, in the step that queues it (the
 * runtime's XACK that follows then changes nothing, so Redis writes nothing
 * for it): one write, one fsync per event instead of two.
 */
static const char gp_notify_enqueue_lua[] =
    "local n = 0\n"
    "for i = 4, #KEYS do\n"
    "  local rkey = ARGV[6 + i]\n"
    "  local m = ARGV[8] .. ':' .. rkey\n"
    "  local state = redis.call('HGET', KEYS[i], 'state')\n"
    "  if not state then\n"
    "    redis.call('HSET', KEYS[i], 'event_id', ARGV[8], 'type', ARGV[4],\n"
    "      'recipient', rkey, 'unit', ARGV[6], 'payment_code', ARGV[5],\n"
    "      'entry_id', ARGV[7], 'body', ARGV[3], 'state', 'pending',\n"
    "      'attempts', 0, 'created_at', ARGV[1], 'next_at', ARGV[1],\n"
    "      'lease', '')\n"
    "    redis.call('ZADD', KEYS[1], ARGV[1], m)\n"
    "    redis.call('HINCRBY', KEYS[2], rkey .. ':pending', 1)\n"
    "    n = n + 1\n"
    "  elseif ARGV[2] == 'resend' then\n"
    "    redis.call('PERSIST', KEYS[i])\n"
    "    redis.call('HSET', KEYS[i], 'state', 'pending', 'attempts', 0,\n"
    "      'next_at', ARGV[1], 'lease', '')\n"
    "    redis.call('HINCRBY', KEYS[i], 'resends', 1)\n"
    "    redis.call('ZADD', KEYS[1], ARGV[1], m)\n"
    "    if state ~= 'pending' then\n"
    "      if state ~= 'delivered' then\n"
    "        redis.call('HINCRBY', KEYS[2], rkey .. ':' .. state, -1)\n"
    "      end\n"
    "      redis.call('HINCRBY', KEYS[2], rkey .. ':pending', 1)\n"
    "    end\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "if ARGV[9] ~= '' then redis.call('XACK', KEYS[3], ARGV[9], ARGV[7]) end\n"
    "return n\n";


/*
 * KEYS[1] queue, KEYS[2..] delivery hashes; ARGV[1] now, ARGV[2] lease until,
 * ARGV[3] lease token, ARGV[4..] the members of KEYS[2..]. A member still due
 * is leased (scored at the lease's end, so nobody else takes it meanwhile).
 * → per member, in order: {event_id, type, recipient, unit, payment_code,
 * body, attempts} or 0 (taken meanwhile, or gone).
 */
static const char gp_notify_claim_lua[] =
    "local out = {}\n"
    "for i = 2, #KEYS do\n"
    "  local m = ARGV[i + 2]\n"
    "  local s = redis.call('ZSCORE', KEYS[1], m)\n"
    "  out[i - 1] = 0\n"
    "  if s and tonumber(s) <= tonumber(ARGV[1]) then\n"
    "    if redis.call('EXISTS', KEYS[i]) == 1 then\n"
    "      redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m)\n"
    "      redis.call('HSET', KEYS[i], 'lease', ARGV[3])\n"
    "      out[i - 1] = redis.call('HMGET', KEYS[i], 'event_id', 'type',\n"
    "        'recipient', 'unit', 'payment_code', 'body', 'attempts')\n"
    "    else\n"
    "      redis.call('ZREM', KEYS[1], m)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";


/*
 * KEYS[1] delivery hash, KEYS[2] queue, KEYS[3] stats, KEYS[4] dead letters;
 * ARGV[1] member, ARGV[2] lease token, ARGV[3] "1" delivered / "0" failed,
 * ARGV[4] now, ARGV[5] HTTP status (0: none), ARGV[6] error, ARGV[7] seconds
 * to keep a delivered record, ARGV[8] the settled stream's name, ARGV[9]
 * seconds to keep a dead record (the retention period: ops read it, then it
 * goes), ARGV[10..] the schedule (ms after the 1st, 2nd, ... failed try).
 * → {"DELIVERED", attempts} | {"RETRY", attempts, next_at} |
 *   {"DEAD", attempts, dead letter id} | {"STALE"} (lease lost: someone
 *   re-sent or re-claimed it meanwhile; their outcome counts)
 */
static const char gp_notify_done_lua[] =
    "local d = KEYS[1]\n"
    "if redis.call('HGET', d, 'lease') ~= ARGV[2] then return {'STALE'} end\n"
    "local state = redis.call('HGET', d, 'state')\n"
    "local rkey = redis.call('HGET', d, 'recipient')\n"
    "local a = redis.call('HINCRBY', d, 'attempts', 1)\n"
    "redis.call('HSET', d, 'lease', '', 'last_at', ARGV[4],\n"
    "  'last_status', ARGV[5], 'last_error', ARGV[6])\n"
    "local function move(to)\n"
    "  if state ~= to then\n"
    "    redis.call('HINCRBY', KEYS[3], rkey .. ':' .. state, -1)\n"
    "    redis.call('HSET', d, 'state', to)\n"
    "  end\n"
    "  if to == 'delivered' or state ~= to then\n"
    "    redis.call('HINCRBY', KEYS[3], rkey .. ':' .. to, 1)\n"
    "  end\n"
    "end\n"
    "if ARGV[3] == '1' then\n"
    "  redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "  move('delivered')\n"
    "  redis.call('HSET', d, 'delivered_at', ARGV[4])\n"
    "  redis.call('EXPIRE', d, ARGV[7])\n"
    "  return {'DELIVERED', a}\n"
    "end\n"
    "if a <= #ARGV - 9 then\n"
    "  local nxt = tonumber(ARGV[4]) + tonumber(ARGV[9 + a])\n"
    "  redis.call('ZADD', KEYS[2], nxt, ARGV[1])\n"
    "  redis.call('HSET', d, 'next_at', nxt)\n"
    "  move('retrying')\n"
    "  return {'RETRY', a, tostring(nxt)}\n"
    "end\n"
    "redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "move('dead')\n"
    "redis.call('EXPIRE', d, ARGV[9])\n"
    "local f = redis.call('HMGET', d, 'event_id', 'type', 'unit',\n"
    "  'payment_code', 'entry_id')\n"
    "local id = redis.call('XADD', KEYS[4], '*', 'plugin', 'notify',\n"
    "  'entry_id', f[5], 'stream', ARGV[8], 'error', ARGV[6],\n"
    "  'deliveries', a, 'event_id', f[1], 'recipient', rkey, 'type', f[2],\n"
    "  'unit', f[3], 'payment_code', f[4])\n"
    "return {'DEAD', a, id}\n";


/*
 * KEYS[1] delivery hash, KEYS[2] queue; ARGV[1] member, ARGV[2] token,
 * ARGV[3] now: gives a lease back (graceful stop), due now
 */
static const char gp_notify_release_lua[] =
    "if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'lease', '')\n"
    "redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[1])\n"
    "return 1\n";


static const char *gp_notify_fields[] = {
    "schedule_s",    "timeout_ms", "connect_timeout_ms", "max_in_flight",
    "per_recipient", "poll_ms",    "keep_delivered_s",   "keep_dead_s",
    "public_url",    "ca_file",    "subscribers",        NULL
};

static const char *gp_notify_subscriber_fields[] = { "name", "url", "scheme",
                                                     "secret_file", NULL };


static int         gp_notify_init(const json_t *conf, gp_plugin_env_t *env,
                                  void **state, char *err, size_t errlen);
static gp_result_t gp_notify_handle(void *state, const gp_event_t *ev,
                                    char *msg, size_t msglen);
static void        gp_notify_shutdown(void *state);
static int gp_notify_conf_int(const json_t *conf, const char *name, long min,
                              long max, long def, long *out, char *err,
                              size_t errlen);
static int gp_notify_conf_str(const json_t *conf, const char *name, char **out,
                              char *err, size_t errlen);
static int gp_notify_conf_schedule(gp_notify_t *n, const json_t *conf,
                                   char *err, size_t errlen);
static int gp_notify_units(gp_notify_t *n, char *err, size_t errlen);
static int gp_notify_subscribers(gp_notify_t *n, const json_t *conf, char *err,
                                 size_t errlen);
static int gp_notify_read_secret(const char *path, unsigned char **out,
                                 size_t *outlen, char *err, size_t errlen);
static int gp_notify_script(gp_notify_script_t *s, const char *src);
static int gp_json_time(json_t *obj, const char *key, redisReply *h,
                        const char *field);
static json_t *gp_notify_refund_json(redisReply *r, const char *code,
                                     size_t clen, const char *nn);
static char   *gp_strf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


static const char *const gp_notify_streams[] = { "settled", "refunds", NULL };


const gp_plugin_t gp_plugin_notify = { .name = "notify",
                                       .init = gp_notify_init,
                                       .handle = gp_notify_handle,
                                       .shutdown = gp_notify_shutdown,
                                       .streams = gp_notify_streams };


static int
gp_notify_init(const json_t *conf, gp_plugin_env_t *env, void **state,
               char *err, size_t errlen)
{
    gp_notify_t *n;
    const char  *key;
    long         v;
    uint32_t     s;

    key = gp_conf_unknown(conf, gp_notify_fields);
    if (key != NULL) {
        snprintf(err, errlen, "unknown field \"%s\"", key);
        return -1;
    }

    n = calloc(1, sizeof(gp_notify_t));
    if (n == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    n->env = env;
    atomic_init(&n->stop, 0);
    atomic_init(&n->any_dirty, 0);

    if (gp_notify_conf_int(conf, "timeout_ms", 100, 600000,
                           GP_NOTIFY_TIMEOUT_MS, &n->timeout_ms, err, errlen)
            != 0
        || gp_notify_conf_int(conf, "connect_timeout_ms", 100, 600000,
                              GP_NOTIFY_CONNECT_MS, &n->connect_timeout_ms, err,
                              errlen)
               != 0
        || gp_notify_conf_int(conf, "max_in_flight", 1, 10000,
                              GP_NOTIFY_MAX_IN_FLIGHT, &v, err, errlen)
               != 0)
    {
        goto fail;
    }

    n->max_in_flight = (int) v;

    if (gp_notify_conf_int(conf, "per_recipient", 1, 10000,
                           GP_NOTIFY_PER_RECIPIENT, &v, err, errlen)
        != 0)
    {
        goto fail;
    }

    n->per_recipient = (int) v;

    if (gp_notify_conf_int(conf, "poll_ms", 10, 60000, GP_NOTIFY_POLL_MS, &v,
                           err, errlen)
        != 0)
    {
        goto fail;
    }

    n->poll_ms = (int) v;

    if (gp_notify_conf_int(conf, "keep_delivered_s", 60, 366L * 86400,
                           GP_NOTIFY_KEEP_DELIVERED_S, &n->keep_delivered_s,
                           err, errlen)
            != 0
        || gp_notify_conf_int(conf, "keep_dead_s", 1, 3660L * 86400,
                              GP_NOTIFY_KEEP_DEAD_S, &n->keep_dead_s, err,
                              errlen)
               != 0
        || gp_notify_conf_str(conf, "public_url", &n->public_url, err, errlen)
               != 0
        || gp_notify_conf_str(conf, "ca_file", &n->ca_file, err, errlen) != 0
        || gp_notify_conf_schedule(n, conf, err, errlen) != 0)
    {
        goto fail;
    }

    if (n->public_url != NULL) {
        if (strncmp(n->public_url, "http://", 7) != 0
            && strncmp(n->public_url, "https://", 8) != 0)
        {
            snprintf(err, errlen, "\"public_url\" must be an http(s):// URL");
            goto fail;
        }

        while (strlen(n->public_url) > 8
               && n->public_url[strlen(n->public_url) - 1] == '/')
        {
            n->public_url[strlen(n->public_url) - 1] = '\0';
        }
    }

    if (n->connect_timeout_ms > n->timeout_ms) {
        n->connect_timeout_ms = n->timeout_ms;
    }

    if (gp_notify_units(n, err, errlen) != 0
        || gp_notify_subscribers(n, conf, err, errlen) != 0)
    {
        goto fail;
    }

    n->queue = calloc(env->shards, sizeof(char *));
    n->stats = calloc(env->shards, sizeof(char *));
    n->dirty = calloc(env->shards, sizeof(atomic_uchar));
    n->backlog = calloc(env->shards, 1);

    if (n->queue == NULL || n->stats == NULL || n->dirty == NULL
        || n->backlog == NULL)
    {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    for (s = 0; s < env->shards; s++) {
        n->queue[s] = gp_strf("{gp%u}:notify:queue", s);
        n->stats[s] = gp_strf("{gp%u}:notify:stats", s);

        if (n->queue[s] == NULL || n->stats[s] == NULL) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
    }

    if (gp_notify_script(&n->enqueue, gp_notify_enqueue_lua) != 0
        || gp_notify_script(&n->claim, gp_notify_claim_lua) != 0
        || gp_notify_script(&n->done, gp_notify_done_lua) != 0
        || gp_notify_script(&n->release, gp_notify_release_lua) != 0)
    {
        snprintf(err, errlen, "EVP_Digest(SHA-1) of a script failed");
        goto fail;
    }

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init() failed");
        goto fail;
    }

    n->curl_inited = 1;

    env->start = gp_notify_start;
    env->command = gp_notify_command;

    *state = n;
    return 0;

fail:

    gp_notify_shutdown(n);
    return -1;
}


static void
gp_notify_shutdown(void *state)
{
    gp_notify_t *n;
    size_t       i;
    uint32_t     s;

    n = state;

    if (n == NULL) {
        return;
    }

    gp_notify_stop(n);

    if (n->curl_inited) {
        curl_global_cleanup();
    }

    for (i = 0; i < n->nrcpts; i++) {
        free(n->rcpts[i].rkey);
        free(n->rcpts[i].own_url);

        if (n->rcpts[i].own_key != NULL) {
            OPENSSL_cleanse(n->rcpts[i].own_key, n->rcpts[i].key_len);
            free(n->rcpts[i].own_key);
        }
    }

    if (n->queue != NULL) {
        for (s = 0; s < n->env->shards; s++) {
            free(n->queue[s]);
            free(n->stats[s]);
        }
    }

    free(n->rcpts);
    free(n->queue);
    free(n->stats);
    free(n->dirty);
    free(n->backlog);
    free(n->schedule_ms);
    free(n->public_url);
    free(n->ca_file);
    free(n);
}


static gp_result_t
gp_notify_handle(void *state, const gp_event_t *ev, char *msg, size_t msglen)
{
    gp_notify_t      *n;
    gp_notify_rcpt_t *unit_rcpt;
    const char       *type, *unit, *rkeys[1 + GP_NOTIFY_SUBSCRIBERS_MAX];
    char              evt[GP_NOTIFY_EVT_MAX], ukey[GP_NOTIFY_RKEY_MAX];
    char             *body;
    size_t            tlen, ulen, nr, i;
    long long         queued;
    gp_result_t       rc;

    n = state;

    type = gp_event_get(ev, "type", &tlen);

    if (!gp_notify_type(type)) {
        snprintf(msg, msglen, "type %.40s is not notified",
                 type != NULL ? type : "(none)");
        return GP_DONE;
    }

    unit = gp_event_get(ev, "unit", &ulen);
    if (unit == NULL || ulen == 0 || ulen > 64) {
        snprintf(msg, msglen, "event without a unit");
        return GP_FAILED;
    }

    if (gp_notify_event_id(ev->shard, ev->stream, ev->id, evt, sizeof(evt))
        != 0) {
        snprintf(msg, msglen, "unexpected stream entry id");
        return GP_FAILED;
    }

    /* the recipients: the unit if it has a webhook, every subscriber */
    nr = 0;
    snprintf(ukey, sizeof(ukey), "u:%.*s", (int) ulen, unit);
    unit_rcpt = gp_notify_rcpt(n, ukey, strlen(ukey));

    if (unit_rcpt != NULL && unit_rcpt->url != NULL) {
        rkeys[nr++] = unit_rcpt->rkey;
    }

    for (i = n->nunits; i < n->nrcpts; i++) {
        rkeys[nr++] = n->rcpts[i].rkey;
    }

    if (nr == 0) {
        snprintf(msg, msglen, "no recipient: the unit has no webhook");
        return GP_DONE;
    }

    rc = gp_notify_body(n, n->env->redis, ev, &body, msg, msglen);
    if (rc != GP_DONE) {
        return rc;
    }

    if (gp_notify_enqueue(n, n->env->redis, ev, evt, body, rkeys, nr, "new",
                          n->env->plugin, &queued, msg, msglen)
        != 0)
    {
        free(body);
        return GP_RETRY;
    }

    free(body);
    gp_notify_wake(n, ev->shard);

    if (queued == 0) {
        snprintf(msg, msglen, "%s already queued", evt);
    } else {
        snprintf(msg, msglen, "%s queued for %lld recipient(s)", evt, queued);
    }

    return GP_DONE;
}


/* ---- the body --------------------------------------------------------- */

/*
 * The notice as GET /v1/notices/{code} shows it (docs/api.md), from its hash
 * r, but for the payer: only the creating unit's own read opens it, a webhook
 * (which subscribers get too) carries no personal data (docs/notify.md):
 * NULL on failure (msg says why)
 */
static json_t *
gp_notify_notice_json(gp_notify_t *n, redisReply *r, const char *code,
                      size_t clen, char *msg, size_t msglen)
{
    json_t     *data, *sub, *list, *one;
    const char *status, *v, *v2, *v3;
    char        url[1024];
    size_t      len, l2, l3;
    int64_t     i64, due;

    snprintf(msg, msglen, "out of memory");

    data = json_object();
    if (data == NULL) {
        return NULL;
    }

    status = gp_hash_get(r, "status", &len);
    if (status != NULL && strcmp(status, "UNPAID") == 0
        && (v = gp_hash_get(r, "due_at", &len)) != NULL
        && gp_parse_i64(v, len, &due) == 0 && due < (int64_t) time(NULL))
    {
        status = "EXPIRED";
    }

    if (json_object_set_new(data, "payment_code", json_stringn(code, clen))
        || json_object_set_new(data, "status",
                               json_string(status != NULL ? status : "")))
    {
        goto failed;
    }

    if (n->public_url != NULL) {
        snprintf(url, sizeof(url), "%s/q/%.*s", n->public_url, (int) clen,
                 code);
        if (json_object_set_new(data, "pay_url", json_string(url))) {
            goto failed;
        }

        snprintf(url, sizeof(url), "%s/q/%.*s.svg", n->public_url, (int) clen,
                 code);
        if (json_object_set_new(data, "qr_image_url", json_string(url))) {
            goto failed;
        }
    }

    if (((v = gp_hash_get(r, "unit", &len)) != NULL
         && json_object_set_new(data, "unit", json_stringn(v, len)))
        || ((v = gp_hash_get(r, "request_id", &len)) != NULL
            && json_object_set_new(data, "request_id", json_stringn(v, len)))
        || ((v = gp_hash_get(r, "item_code", &len)) != NULL
            && json_object_set_new(data, "item_code", json_stringn(v, len))))
    {
        goto failed;
    }

    v = gp_hash_get(r, "amount", &len);
    if (v == NULL || gp_parse_i64(v, len, &i64) != 0) {
        snprintf(msg, msglen, "notice without an amount");
        goto failed;
    }

    if (json_object_set_new(data, "amount", json_integer(i64))
        || gp_json_time(data, "due_at", r, "due_at") != 0
        || gp_json_time(data, "created_at", r, "created_at") != 0
        || ((v = gp_hash_get(r, "remark", &len)) != NULL
            && json_object_set_new(data, "remark", json_stringn(v, len))))
    {
        goto failed;
    }

    if ((v = gp_hash_get(r, "channel", &len)) != NULL) {
        sub = json_object();
        if (sub == NULL || json_object_set_new(data, "payment", sub)
            || json_object_set_new(sub, "channel", json_stringn(v, len)))
        {
            goto failed;
        }

        v2 = gp_hash_get(r, "channel_trade_no", &l2);
        if (v2 != NULL
            && json_object_set_new(sub, "channel_trade_no",
                                   json_stringn(v2, l2)))
        {
            goto failed;
        }

        if (gp_json_time(sub, "paid_at", r, "paid_at") != 0) {
            goto failed;
        }

        v2 = gp_hash_get(r, "paid_amount", &l2);
        if (v2 != NULL && gp_parse_i64(v2, l2, &i64) == 0
            && json_object_set_new(sub, "amount", json_integer(i64)))
        {
            goto failed;
        }
    }

    /* the notice's own refunds ("nn,nn,..."), and what came back */
    v = gp_hash_get(r, "refunds", &len);

    if (v != NULL && len >= 2) {
        list = json_array();
        if (list == NULL || json_object_set_new(data, "refunds", list)) {
            goto failed;
        }

        for (l2 = 0; l2 + 2 <= len; l2 += 3) {
            one = gp_notify_refund_json(r, code, clen, v + l2);
            if (one == NULL || json_array_append_new(list, one)) {
                goto failed;
            }
        }

        v2 = gp_hash_get(r, "refunded_amount", &l2);
        if (v2 == NULL || gp_parse_i64(v2, l2, &i64) != 0) {
            i64 = 0;
        }

        if (json_object_set_new(data, "refunded_amount", json_integer(i64))) {
            goto failed;
        }
    }

    v = gp_hash_get(r, "receipt_code", &len);
    v2 = gp_hash_get(r, "receipt_number", &l2);
    v3 = gp_hash_get(r, "receipt_check", &l3);

    if (v != NULL && v2 != NULL && v3 != NULL) {
        sub = json_object();
        if (sub == NULL || json_object_set_new(data, "receipt", sub)
            || json_object_set_new(sub, "code", json_stringn(v, len))
            || json_object_set_new(sub, "number", json_stringn(v2, l2))
            || json_object_set_new(sub, "check_code", json_stringn(v3, l3)))
        {
            goto failed;
        }

        if (n->public_url != NULL) {
            snprintf(url, sizeof(url), "%s/r/%.*s/%.*s?c=%.*s", n->public_url,
                     (int) len, v, (int) l2, v2, (int) l3, v3);
            if (json_object_set_new(sub, "verify_url", json_string(url))) {
                goto failed;
            }
        }
    }

    /* the history of its receipts, once one was reversed (docs/receipts.md) */
    v = gp_hash_get(r, "receipts", &len);

    if (v != NULL) {
        sub = json_loadb(v, len, 0, NULL);

        if (json_is_array(sub)) {
            if (json_object_set_new(data, "receipts", sub)) {
                goto failed;
            }
        } else {
            json_decref(sub);
        }
    }

    msg[0] = '\0';
    return data;

failed:

    json_decref(data);
    return NULL;
}


/*
 * Refund nn (2 digits) of the notice in r, as the unit API shows it
 * (docs/unit-integration.md, "Refunds"), with anomaly_id for a refund of
 * money recorded on the anomaly stream; NULL if the notice has no such
 * refund, or out of memory
 */
static json_t *
gp_notify_refund_json(redisReply *r, const char *code, size_t clen,
                      const char *nn)
{
    json_t     *doc;
    const char *v;
    char        f[48], id[32], t[26];
    size_t      len, i;
    int64_t     x;

    static const char *texts[] = {
        "request_id",        "reason", "status",     "origin",
        "channel_refund_no", "error",  "anomaly_id", NULL
    };
    static const char *times[] = { "created_at", "completed_at", NULL };

    snprintf(f, sizeof(f), "r%.2s.amount", nn);
    v = gp_hash_get(r, f, &len);
    if (v == NULL || gp_parse_i64(v, len, &x) != 0) {
        return NULL;
    }

    snprintf(id, sizeof(id), "%.*sR%.2s", (int) clen, code, nn);

    doc = json_pack("{s:s, s:s%, s:I}", "refund_id", id, "payment_code", code,
                    clen, "amount", (json_int_t) x);
    if (doc == NULL) {
        return NULL;
    }

    for (i = 0; texts[i] != NULL; i++) {
        snprintf(f, sizeof(f), "r%.2s.%s", nn, texts[i]);
        v = gp_hash_get(r, f, &len);

        if (v != NULL && len > 0
            && json_object_set_new(doc, texts[i], json_stringn(v, len)))
        {
            goto failed;
        }
    }

    for (i = 0; times[i] != NULL; i++) {
        snprintf(f, sizeof(f), "r%.2s.%s", nn, times[i]);
        v = gp_hash_get(r, f, &len);

        if (v != NULL && gp_parse_i64(v, len, &x) == 0) {
            gp_time_rfc3339(x, t);

            if (json_object_set_new(doc, times[i], json_string(t))) {
                goto failed;
            }
        }
    }

    return doc;

failed:

    json_decref(doc);
    return NULL;
}


gp_result_t
gp_notify_body(gp_notify_t *n, redisContext *c, const gp_event_t *ev,
               char **body, char *msg, size_t msglen)
{
    redisReply *r;
    json_t     *doc, *data, *notice;
    const char *key, *type, *code, *rid;
    char        prefix[32], evt[GP_NOTIFY_EVT_MAX], when[26];
    size_t      klen, clen, plen, rlen;
    int64_t     ms, i64;
    gp_result_t rc;
    int         refund;

    *body = NULL;
    doc = NULL;
    klen = clen = rlen = 0;

    type = gp_event_get(ev, "type", NULL);
    key = gp_event_get(ev, "notice_key", &klen);
    code = gp_event_get(ev, "payment_code", &clen);

    snprintf(prefix, sizeof(prefix), "{gp%u}:n:", ev->shard);
    plen = strlen(prefix);

    if (type == NULL || key == NULL || code == NULL || klen <= plen
        || klen > plen + 20 || memcmp(key, prefix, plen) != 0
        || gp_parse_i64(key + plen, klen - plen, &i64) != 0 || clen != 20)
    {
        snprintf(msg, msglen,
                 "event without a notice key of its shard or "
                 "without a payment code");
        return GP_FAILED;
    }

    /* a refund's event is about refund "<code>R<nn>" of the notice */
    refund = strncmp(type, "refund.", 7) == 0;
    rid = refund ? gp_event_get(ev, "refund_id", &rlen) : NULL;

    if (refund
        && (rid == NULL || rlen != 23 || memcmp(rid, code, 20) != 0
            || rid[20] != 'R' || strspn(rid + 21, "0123456789") < 2))
    {
        snprintf(msg, msglen, "refund event without a refund id of its notice");
        return GP_FAILED;
    }

    if (gp_notify_event_id(ev->shard, ev->stream, ev->id, evt, sizeof(evt)) != 0
        || gp_parse_i64(ev->id, strcspn(ev->id, "-"), &ms) != 0)
    {
        snprintf(msg, msglen, "unexpected stream entry id");
        return GP_FAILED;
    }

    r = redisCommand(c, "HGETALL %b", key, klen);
    if (r == NULL) {
        snprintf(msg, msglen, "redis HGETALL failed: %s", c->errstr);
        return GP_RETRY;
    }

    if (r->type != REDIS_REPLY_ARRAY) {
        snprintf(msg, msglen, "redis HGETALL: %.200s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        return GP_RETRY;
    }

    if (r->elements == 0) {
        freeReplyObject(r);
        snprintf(msg, msglen, "notice not found");
        return GP_FAILED;
    }

    rc = GP_FAILED;

    notice = gp_notify_notice_json(n, r, code, clen, msg, msglen);
    if (notice == NULL) {
        goto done;
    }

    if (refund) {
        /* the refund as the unit API shows it, with the notice inside */
        data = gp_notify_refund_json(r, code, clen, rid + 21);
        if (data == NULL) {
            json_decref(notice);
            snprintf(msg, msglen, "refund %.23s is not in its notice", rid);
            goto done;
        }

        if (json_object_set_new(data, "notice", notice)) {
            json_decref(data);
            snprintf(msg, msglen, "out of memory");
            goto done;
        }

    } else {
        data = notice;
    }

    snprintf(msg, msglen, "out of memory");

    doc = json_object();
    gp_time_rfc3339(ms / 1000, when);

    if (doc == NULL || json_object_set_new(doc, "id", json_string(evt))
        || json_object_set_new(doc, "type", json_string(type))
        || json_object_set_new(doc, "created_at", json_string(when))
        || json_object_set_new(doc, "data", data))
    {
        if (doc == NULL) {
            json_decref(data);
        }
        goto done;
    }

    *body = json_dumps(doc, JSON_COMPACT);
    if (*body == NULL) {
        goto done;
    }

    msg[0] = '\0';
    rc = GP_DONE;

done:

    json_decref(doc);
    freeReplyObject(r);
    return rc;
}


/* ---- queueing --------------------------------------------------------- */

int
gp_notify_enqueue(gp_notify_t *n, redisContext *c, const gp_event_t *ev,
                  const char *event_id, const char *body, const char **rkeys,
                  size_t nrkeys, const char *mode, const char *ack_group,
                  long long *queued, char *msg, size_t msglen)
{
    const char **argv;
    char       **own, now[24];
    const char  *unit, *code;
    redisReply  *r;
    size_t       i, argc;
    int          ret;

    ret = -1;
    argc = 3 + 3 + nrkeys + 9 + nrkeys;
    argv = calloc(argc, sizeof(char *));
    own = calloc(nrkeys, sizeof(char *));

    if (argv == NULL || own == NULL) {
        snprintf(msg, msglen, "out of memory");
        goto done;
    }

    unit = gp_event_get(ev, "unit", NULL);
    code = gp_event_get(ev, "payment_code", NULL);
    snprintf(now, sizeof(now), "%lld", (long long) gp_notify_now_ms());

    argc = 3;
    argv[argc++] = n->queue[ev->shard];
    argv[argc++] = n->stats[ev->shard];
    argv[argc++] = ev->stream;

    for (i = 0; i < nrkeys; i++) {
        own[i] =
            gp_strf("{gp%u}:notify:d:%s:%s", ev->shard, event_id, rkeys[i]);
        if (own[i] == NULL) {
            snprintf(msg, msglen, "out of memory");
            goto done;
        }
        argv[argc++] = own[i];
    }

    argv[argc++] = now;
    argv[argc++] = mode;
    argv[argc++] = body;
    argv[argc++] = gp_event_get(ev, "type", NULL);
    argv[argc++] = code != NULL ? code : "";
    argv[argc++] = unit != NULL ? unit : "";
    argv[argc++] = ev->id;
    argv[argc++] = event_id;
    argv[argc++] = ack_group != NULL ? ack_group : "";

    for (i = 0; i < nrkeys; i++) {
        argv[argc++] = rkeys[i];
    }

    r = gp_notify_eval(c, &n->enqueue, (int) (3 + nrkeys), (int) argc, argv,
                       NULL);
    if (r == NULL) {
        snprintf(msg, msglen, "redis EVALSHA (queue) failed: %s", c->errstr);
        goto done;
    }

    if (r->type != REDIS_REPLY_INTEGER) {
        snprintf(msg, msglen, "redis EVALSHA (queue): %.200s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        goto done;
    }

    *queued = r->integer;
    freeReplyObject(r);
    ret = 0;

done:

    if (own != NULL) {
        for (i = 0; i < nrkeys; i++) {
            free(own[i]);
        }
    }

    free(own);
    free(argv);
    return ret;
}


redisReply *
gp_notify_eval(redisContext *c, gp_notify_script_t *script, int nkeys, int argc,
               const char **argv, const size_t *argvlen)
{
    redisReply *r;
    char        numkeys[16];

    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);

    argv[0] = "EVALSHA";
    argv[1] = script->sha;
    argv[2] = numkeys;

    r = redisCommandArgv(c, argc, argv, argvlen);

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = script->src;
        r = redisCommandArgv(c, argc, argv, argvlen);
    }

    argv[0] = argv[1] = argv[2] = NULL;
    return r;
}


int
gp_notify_load_scripts(gp_notify_t *n, redisContext *c, char *err,
                       size_t errlen)
{
    gp_notify_script_t *all[4];
    redisReply         *r;
    size_t              i;

    all[0] = &n->enqueue;
    all[1] = &n->claim;
    all[2] = &n->done;
    all[3] = &n->release;

    for (i = 0; i < 4; i++) {
        r = redisCommand(c, "SCRIPT LOAD %s", all[i]->src);
        if (r == NULL) {
            snprintf(err, errlen, "redis SCRIPT LOAD failed: %s", c->errstr);
            return -1;
        }

        if (r->type != REDIS_REPLY_STRING || strcmp(r->str, all[i]->sha) != 0) {
            snprintf(err, errlen, "redis SCRIPT LOAD: %.200s",
                     r->type == REDIS_REPLY_ERROR ? r->str
                                                  : "unexpected reply");
            freeReplyObject(r);
            return -1;
        }

        freeReplyObject(r);
    }

    return 0;
}


/* ---- helpers shared by the three files -------------------------------- */

int64_t
gp_notify_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


gp_notify_rcpt_t *
gp_notify_rcpt(gp_notify_t *n, const char *rkey, size_t len)
{
    const gp_unit_t *u;
    size_t           i;

    if (len > 2 && rkey[0] == 'u' && rkey[1] == ':') {
        u = gp_registry_unit(n->env->registry, rkey + 2, len - 2);
        return u != NULL ? &n->rcpts[u - n->env->registry->units] : NULL;
    }

    for (i = n->nunits; i < n->nrcpts; i++) {
        if (strlen(n->rcpts[i].rkey) == len
            && memcmp(n->rcpts[i].rkey, rkey, len) == 0) {
            return &n->rcpts[i];
        }
    }

    return NULL;
}


int
gp_notify_event_id(uint32_t shard, const char *stream, const char *entry_id,
                   char *out, size_t outlen)
{
    const char *dash, *kind;
    size_t      a, b;
    int         k;

    dash = strchr(entry_id, '-');
    kind = stream != NULL ? strrchr(stream, ':') : NULL;

    if (dash == NULL || kind == NULL
        || (strcmp(kind, ":settled") != 0 && strcmp(kind, ":refunds") != 0))
    {
        return -1;
    }

    a = (size_t) (dash - entry_id);
    b = strlen(dash + 1);

    if (a == 0 || b == 0 || strspn(entry_id, "0123456789") != a
        || strspn(dash + 1, "0123456789") != b)
    {
        return -1;
    }

    k = snprintf(out, outlen, "evt_%s%u_%.*s_%s", kind[1] == 'r' ? "r" : "",
                 shard, (int) a, entry_id, dash + 1);

    return (k > 0 && (size_t) k < outlen) ? 0 : -1;
}


int
gp_notify_parse_event_id(const char *evt, uint32_t shards, uint32_t *shard,
                         char *stream, size_t slen, char *entry_id,
                         size_t idlen)
{
    const char   *p, *u1, *u2;
    unsigned long s;
    char         *end;
    int           k, refunds;

    if (strncmp(evt, "evt_", 4) != 0) {
        return -1;
    }

    p = evt + 4;
    refunds = *p == 'r';
    p += refunds;

    u1 = strchr(p, '_');
    u2 = u1 != NULL ? strchr(u1 + 1, '_') : NULL;

    if (u1 == NULL || u2 == NULL || u1 == p || u2 == u1 + 1 || u2[1] == '\0'
        || strspn(p, "0123456789") != (size_t) (u1 - p)
        || strspn(u1 + 1, "0123456789") != (size_t) (u2 - u1 - 1)
        || strspn(u2 + 1, "0123456789") != strlen(u2 + 1))
    {
        return -1;
    }

    errno = 0;
    s = strtoul(p, &end, 10);
    if (errno != 0 || s >= shards) {
        return -1;
    }

    k = snprintf(entry_id, idlen, "%.*s-%s", (int) (u2 - u1 - 1), u1 + 1,
                 u2 + 1);
    if (k <= 0 || (size_t) k >= idlen) {
        return -1;
    }

    k = snprintf(stream, slen, "{gp%lu}:%s", s,
                 refunds ? "refunds" : "settled");
    if (k <= 0 || (size_t) k >= slen) {
        return -1;
    }

    *shard = (uint32_t) s;
    return 0;
}


int
gp_notify_type(const char *type)
{
    static const char *types[] = { "notice.paid",      "receipt.issued",
                                   "receipt.reversed", "refund.succeeded",
                                   "refund.failed",    NULL };
    const char       **t;

    for (t = types; type != NULL && *t != NULL; t++) {
        if (strcmp(*t, type) == 0) {
            return 1;
        }
    }

    return 0;
}


/* ---- configuration ---------------------------------------------------- */

static int
gp_notify_conf_int(const json_t *conf, const char *name, long min, long max,
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
gp_notify_conf_str(const json_t *conf, const char *name, char **out, char *err,
                   size_t errlen)
{
    json_t *v;

    *out = NULL;

    v = json_object_get(conf, name);
    if (v == NULL) {
        return 0;
    }

    if (!json_is_string(v) || json_string_length(v) == 0
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


static int
gp_notify_conf_schedule(gp_notify_t *n, const json_t *conf, char *err,
                        size_t errlen)
{
    json_t *sched, *v;
    size_t  i, count;

    sched = json_object_get(conf, "schedule_s");

    if (sched == NULL) {
        count = sizeof(gp_notify_default_schedule_s)
                / sizeof(gp_notify_default_schedule_s[0]);
    } else {
        count = json_is_array(sched) ? json_array_size(sched) : 0;

        if (count == 0 || count > GP_NOTIFY_SCHEDULE_MAX) {
            snprintf(err, errlen,
                     "\"schedule_s\" must be an array of 1 to %d delays "
                     "in seconds",
                     GP_NOTIFY_SCHEDULE_MAX);
            return -1;
        }
    }

    n->schedule_ms = calloc(count, sizeof(int64_t));
    if (n->schedule_ms == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < count; i++) {
        if (sched == NULL) {
            n->schedule_ms[i] = gp_notify_default_schedule_s[i] * 1000;
            continue;
        }

        v = json_array_get(sched, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > 7 * 86400)
        {
            snprintf(err, errlen,
                     "\"schedule_s\"[%zu] must be an integer from 1 to "
                     "604800",
                     i);
            return -1;
        }

        n->schedule_ms[i] = (int64_t) json_integer_value(v) * 1000;
    }

    n->nschedule = count;
    return 0;
}


/*
 * one recipient per registry unit (same index): the key of its webhooks is
 * webhook_secret_file if the unit has one, else an HMAC unit's API secret;
 * SM3 for the SM schemes
 */
static int
gp_notify_units(gp_notify_t *n, char *err, size_t errlen)
{
    const gp_registry_t *reg;
    const gp_unit_t     *u;
    gp_notify_rcpt_t    *r;
    size_t               i;

    reg = n->env->registry;
    n->nunits = reg->nunits;

    n->rcpts = calloc(reg->nunits + GP_NOTIFY_SUBSCRIBERS_MAX,
                      sizeof(gp_notify_rcpt_t));
    if (n->rcpts == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < reg->nunits; i++) {
        u = &reg->units[i];
        r = &n->rcpts[i];
        n->nrcpts++;

        r->rkey = gp_strf("u:%s", u->id);
        if (r->rkey == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }

        r->md =
            (u->scheme == GP_SCHEME_HMAC_SM3 || u->scheme == GP_SCHEME_SM2_SM3)
                ? GP_MD_SM3
                : GP_MD_SHA256;

        if (u->webhook_secret != NULL) {
            r->key = u->webhook_secret;
            r->key_len = u->webhook_secret_len;
        } else if (u->secret != NULL) {
            r->key = u->secret;
            r->key_len = u->secret_len;
        }

        if (u->webhook == NULL) {
            continue;
        }

        if (r->key == NULL) {
            snprintf(err, errlen,
                     "unit \"%s\" has a webhook but scheme %s has no shared "
                     "secret: give it a \"webhook_secret_file\" in the "
                     "registry",
                     u->id, gp_scheme_name(u->scheme));
            return -1;
        }

        r->url = u->webhook;
    }

    return 0;
}


/*
 * "subscribers": [{"name", "url", "scheme", "secret_file"}]: systems that get
 * every event of every unit (the non-tax revenue management system)
 */
static int
gp_notify_subscribers(gp_notify_t *n, const json_t *conf, char *err,
                      size_t errlen)
{
    json_t           *subs, *s;
    gp_notify_rcpt_t *r;
    const char       *key, *name, *scheme, *file;
    gp_scheme_t       sch;
    char             *path, pe[512];
    size_t            i, j;

    subs = json_object_get(conf, "subscribers");
    if (subs == NULL) {
        return 0;
    }

    if (!json_is_array(subs)
        || json_array_size(subs) > GP_NOTIFY_SUBSCRIBERS_MAX) {
        snprintf(err, errlen,
                 "\"subscribers\" must be an array of at most %d objects",
                 GP_NOTIFY_SUBSCRIBERS_MAX);
        return -1;
    }

    json_array_foreach(subs, i, s)
    {
        if (!json_is_object(s)) {
            snprintf(err, errlen, "subscribers[%zu] must be an object", i);
            return -1;
        }

        key = gp_conf_unknown(s, gp_notify_subscriber_fields);
        if (key != NULL) {
            snprintf(err, errlen, "subscribers[%zu]: unknown field \"%s\"", i,
                     key);
            return -1;
        }

        name = json_string_value(json_object_get(s, "name"));
        if (name == NULL || strlen(name) == 0 || strlen(name) > 64
            || strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU"
                            "VWXYZ0123456789_-")
                   != strlen(name))
        {
            snprintf(err, errlen,
                     "subscribers[%zu]: \"name\" must be 1-64 of "
                     "A-Za-z0-9_-",
                     i);
            return -1;
        }

        for (j = n->nunits; j < n->nrcpts; j++) {
            if (strcmp(n->rcpts[j].rkey + 2, name) == 0) {
                snprintf(err, errlen, "subscribers[%zu]: \"%s\" listed twice",
                         i, name);
                return -1;
            }
        }

        r = &n->rcpts[n->nrcpts++];

        r->rkey = gp_strf("s:%s", name);
        if (r->rkey == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }

        r->url = json_string_value(json_object_get(s, "url"));
        if (r->url == NULL
            || (strncmp(r->url, "http://", 7) != 0
                && strncmp(r->url, "https://", 8) != 0))
        {
            snprintf(err, errlen,
                     "subscriber \"%s\": \"url\" must be an http:// or "
                     "https:// URL",
                     name);
            return -1;
        }

        r->own_url = strdup(r->url);
        if (r->own_url == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        r->url = r->own_url;

        scheme = json_string_value(json_object_get(s, "scheme"));
        if (scheme == NULL || gp_scheme_parse(scheme, strlen(scheme), &sch) != 0
            || (sch != GP_SCHEME_HMAC_SHA256 && sch != GP_SCHEME_HMAC_SM3))
        {
            snprintf(err, errlen,
                     "subscriber \"%s\": \"scheme\" must be "
                     "GOVPAY-HMAC-SHA256 or GOVPAY-HMAC-SM3",
                     name);
            return -1;
        }

        r->md = sch == GP_SCHEME_HMAC_SM3 ? GP_MD_SM3 : GP_MD_SHA256;

        file = json_string_value(json_object_get(s, "secret_file"));
        if (file == NULL || file[0] == '\0') {
            snprintf(err, errlen,
                     "subscriber \"%s\": \"secret_file\" must be a file name",
                     name);
            return -1;
        }

        path = gp_conf_path(n->env, file);

        if (path == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }

        if (gp_notify_read_secret(path, &r->own_key, &r->key_len, pe,
                                  sizeof(pe))
            != 0) {
            snprintf(err, errlen, "subscriber \"%s\": secret file \"%s\": %s",
                     name, path, pe);
            free(path);
            return -1;
        }

        free(path);
        r->key = r->own_key;
    }

    return 0;
}


/* a secret file as the registry reads them: trailing white space dropped */
static int
gp_notify_read_secret(const char *path, unsigned char **out, size_t *outlen,
                      char *err, size_t errlen)
{
    FILE         *fp;
    unsigned char buf[4097];
    size_t        len;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return -1;
    }

    len = fread(buf, 1, sizeof(buf), fp);
    fclose(fp);

    if (len == sizeof(buf)) {
        OPENSSL_cleanse(buf, sizeof(buf));
        snprintf(err, errlen, "longer than 4 KiB");
        return -1;
    }

    while (len > 0
           && (buf[len - 1] == ' ' || buf[len - 1] == '\t'
               || buf[len - 1] == '\r' || buf[len - 1] == '\n'))
    {
        len--;
    }

    if (len < 16) {
        OPENSSL_cleanse(buf, sizeof(buf));
        snprintf(err, errlen, "secret shorter than 16 bytes");
        return -1;
    }

    *out = malloc(len);
    if (*out == NULL) {
        OPENSSL_cleanse(buf, sizeof(buf));
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    memcpy(*out, buf, len);
    *outlen = len;
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}


static int
gp_notify_script(gp_notify_script_t *s, const char *src)
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


/* ---- small things ----------------------------------------------------- */

/* obj[key] = RFC 3339 of the unix seconds in field, if the field is there */
static int
gp_json_time(json_t *obj, const char *key, redisReply *h, const char *field)
{
    const char *v;
    char        buf[26];
    size_t      len;
    int64_t     t;

    v = gp_hash_get(h, field, &len);
    if (v == NULL || gp_parse_i64(v, len, &t) != 0) {
        return 0;
    }

    gp_time_rfc3339(t, buf);

    return json_object_set_new(obj, key, json_string(buf)) == 0 ? 0 : -1;
}


static char *
gp_strf(const char *fmt, ...)
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
