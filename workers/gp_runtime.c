/*
 * gp_runtime: the stream loop shared by every worker plugin.
 *
 * Each enabled plugin gets a thread with its own blocking hiredis connection.
 * The consumer group is the plugin's name, the consumer name comes from
 * worker.json. A thread loops over:
 *
 *   1. pending   after a (re)connect, and claim_idle_ms / 4 after a GP_RETRY:
 *                re-read this consumer's own pending entries (XREADGROUP ...
 *                0), paging with one cursor per stream so each is delivered
 *                once per pass;
 *   2. reclaim   after a (re)connect and every claim_idle_ms / 2: XAUTOCLAIM on
 *                each {gpN}:settled, taking entries that another consumer (a
 *                dead one) left pending for claim_idle_ms;
 *   3. new       otherwise: XREADGROUP ... BLOCK over all S streams at once
 *                (`>`).
 *
 * Entries from 1 and 2 have been delivered before, so their delivery count is
 * read with one XPENDING per stream and batch; new entries are on their first
 * delivery. Then, per entry: GP_DONE → XACK; GP_RETRY → left pending
 * (dead-lettered once the count reaches max_deliveries); GP_FAILED, or a count
 * above max_deliveries before handling → XADD to {gpN}:dead and XACK in one
 * MULTI/EXEC.
 *
 * Any Redis trouble (I/O error, timeout, unexpected error reply, a refused
 * AUTH) drops the connection; the thread reconnects with a backoff of 100 ms
 * doubling to 2 s, recreates the groups and starts again with step 1. It never
 * exits for that. A stop request is seen between entries, so the entry in hand
 * is finished first.
 *
 * Every connection, the threads' and those env->connect gives plugins, is
 * opened by gp_redis_open(): TCP or a Unix socket, the timeouts, and AUTH as
 * redis_user with the password read from redis_password_file right then.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gp_runtime.h"


#define GP_READ_COUNT         32
#define GP_ID_MAX             64 /* "<u64>-<u64>" is at most 41 */
#define GP_CONNECT_TIMEOUT_MS 2000
#define GP_IO_TIMEOUT_MS      5000
#define GP_BACKOFF_MIN_MS     100
#define GP_BACKOFF_MAX_MS     2000
#define GP_MSG_MAX            512
#define GP_LOG_LINE_MAX       2048


/* the built-in plugins; a dlopen'ed one would be appended (gp_plugin.h) */
static const gp_plugin_t *gp_builtin_plugins[] = { &gp_plugin_receipt,
                                                   &gp_plugin_notify,
                                                   &gp_plugin_retention,
                                                   &gp_plugin_refund,
                                                   &gp_plugin_anomaly, NULL };


typedef struct {
    gp_runtime_t      *rt;
    const gp_plugin_t *plugin;
    const json_t      *conf;
    void              *state;
    int                inited;
    int                started;
    int                joined;
    gp_plugin_env_t    env;
    pthread_t          thread;
    pthread_mutex_t    lock; /* env.redis, against gp_runtime_join() */

    /*
     * The streams read: every kind the plugin declares on every shard,
     * streams[k * S + n] = "{gpn}:<kind k>"; an index i into them is of shard
     * i % S (dead[i % S] its dead letters)
     */
    char       **streams;
    uint32_t     nstreams;
    char       **dead; /* "{gpN}:dead", by shard */
    const char **argv; /* XREADGROUP scratch: 9 + 2 nstreams */
    char (*cursor)[GP_ID_MAX];
    uint32_t *active; /* streams of a pending pass still paging */

    int     timeout_ms; /* the socket's current timeout */
    int     backoff_ms;
    int64_t next_claim; /* monotonic ms */
    int     pending_due;
    int64_t pending_at;
    int     retry_ms;
} gp_worker_t;


struct gp_runtime_s {
    gp_config_t    *conf;
    gp_fault_t      fault;
    gp_worker_t    *workers;
    size_t          nworkers;
    const char    **names; /* of the enabled plugins, NULL-terminated */
    atomic_int      stopping;
    pthread_mutex_t lock;
    pthread_cond_t  cond; /* broadcast on stop: ends backoff sleeps */
};


static atomic_int  gp_log_min = GP_LOG_INFO;
static const char *gp_log_levels[] = { "debug", "info", "warn", "error" };


static void gp_logv(gp_log_level_t level, const char *plugin,
                    const gp_event_t *ev, const char *fmt, va_list ap);
static void gp_env_log(const gp_plugin_env_t *env, gp_log_level_t level,
                       const gp_event_t *ev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int           gp_worker_prepare(gp_runtime_t *rt, gp_worker_t *w,
                                       const gp_plugin_t *plugin, const json_t *conf,
                                       char *err, size_t errlen);
static void         *gp_worker_main(void *arg);
static redisContext *gp_env_connect(const gp_plugin_env_t *env, char *err,
                                    size_t errlen);
static redisContext *gp_redis_open(const gp_config_t *conf, char *err,
                                   size_t errlen);
static int           gp_worker_connect(gp_worker_t *w);
static void          gp_worker_disconnect(gp_worker_t *w);
static void          gp_worker_backoff(gp_worker_t *w);
static int           gp_worker_timeout(gp_worker_t *w, int ms);
static int           gp_worker_groups(gp_worker_t *w);
static int           gp_worker_read_new(gp_worker_t *w, int block_ms);
static int           gp_worker_read_pending(gp_worker_t *w);
static int           gp_worker_autoclaim(gp_worker_t *w);
static int  gp_worker_batch(gp_worker_t *w, uint32_t shard, redisReply *entries,
                            int redelivered);
static int  gp_worker_deliveries(gp_worker_t *w, uint32_t shard,
                                 redisReply *entries, long long *counts);
static int  gp_worker_entry(gp_worker_t *w, uint32_t shard, redisReply *entry,
                            long long deliveries);
static int  gp_worker_ack(gp_worker_t *w, const gp_event_t *ev);
static int  gp_worker_dead(gp_worker_t *w, const gp_event_t *ev,
                           const char *error);
static void gp_worker_retry_later(gp_worker_t *w);
static redisReply *gp_worker_command(gp_worker_t *w, int argc,
                                     const char **argv, const size_t *argvlen);
static void        gp_worker_unexpected(gp_worker_t *w, const char *what,
                                        redisReply *r);
static int gp_worker_shard(gp_worker_t *w, redisReply *name, uint32_t *shard);
static const char *gp_entry_id(redisReply *entry);
static int         gp_stopping(gp_runtime_t *rt);
static void        gp_sleep(gp_runtime_t *rt, int ms);
static int64_t     gp_now_ms(void);
static char       *gp_strf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));


const gp_plugin_t *
gp_plugin_find(const char *name)
{
    const gp_plugin_t **p;

    for (p = gp_builtin_plugins; *p != NULL; p++) {
        if (strcmp((*p)->name, name) == 0) {
            return *p;
        }
    }

    return NULL;
}


int
gp_runtime_create(gp_config_t *conf, gp_fault_t fault, gp_runtime_t **out,
                  char *err, size_t errlen)
{
    gp_runtime_t      *rt;
    pthread_condattr_t ca;
    size_t             i;

    rt = calloc(1, sizeof(gp_runtime_t));
    if (rt == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    rt->conf = conf;
    rt->fault = fault;
    atomic_init(&rt->stopping, 0);

    if (pthread_mutex_init(&rt->lock, NULL) != 0
        || pthread_condattr_init(&ca) != 0) {
        free(rt);
        snprintf(err, errlen, "pthread_mutex_init() failed");
        return -1;
    }

    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0
        || pthread_cond_init(&rt->cond, &ca) != 0)
    {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&rt->lock);
        free(rt);
        snprintf(err, errlen, "pthread_cond_init() failed");
        return -1;
    }

    pthread_condattr_destroy(&ca);

    rt->workers = calloc(conf->nplugins, sizeof(gp_worker_t));
    rt->names = calloc(conf->nplugins + 1, sizeof(char *));
    if (rt->workers == NULL || rt->names == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }

    for (i = 0; i < conf->nplugins; i++) {
        rt->names[i] = conf->plugins[i].plugin->name;
    }

    for (i = 0; i < conf->nplugins; i++) {
        rt->nworkers++;

        if (gp_worker_prepare(rt, &rt->workers[i], conf->plugins[i].plugin,
                              conf->plugins[i].conf, err, errlen)
            != 0)
        {
            goto fail;
        }
    }

    *out = rt;
    return 0;

fail:

    gp_runtime_free(rt);
    return -1;
}


int
gp_runtime_start(gp_runtime_t *rt, char *err, size_t errlen)
{
    gp_worker_t *w;
    size_t       i;
    int          rc;
    char         perr[GP_MSG_MAX];

    /* plugins' own background work first (env->start, e.g. notify) */
    for (i = 0; i < rt->nworkers; i++) {
        w = &rt->workers[i];

        if (w->env.start != NULL) {
            perr[0] = '\0';

            if (w->env.start(w->state, perr, sizeof(perr)) != 0) {
                snprintf(err, errlen, "plugin \"%s\": %s", w->plugin->name,
                         perr[0] != '\0' ? perr : "start failed");
                return -1;
            }
        }
    }

    for (i = 0; i < rt->nworkers; i++) {
        w = &rt->workers[i];

        rc = pthread_create(&w->thread, NULL, gp_worker_main, w);
        if (rc != 0) {
            snprintf(err, errlen, "plugin \"%s\": pthread_create() failed: %s",
                     w->plugin->name, strerror(rc));
            gp_runtime_stop(rt);
            gp_runtime_join(rt, 0);
            return -1;
        }

        w->started = 1;
    }

    return 0;
}


int
gp_runtime_command(gp_runtime_t *rt, const char *plugin, int argc, char **argv)
{
    gp_worker_t *w;
    size_t       i;

    for (i = 0; i < rt->nworkers; i++) {
        w = &rt->workers[i];

        if (strcmp(w->plugin->name, plugin) != 0) {
            continue;
        }

        if (w->env.command == NULL) {
            fprintf(stderr, "gov-pay-worker: plugin \"%s\" has no commands\n",
                    plugin);
            return 2;
        }

        return w->env.command(w->state, argc, argv);
    }

    fprintf(stderr,
            "gov-pay-worker: plugin \"%s\" is not enabled in %s (or does "
            "not exist)\n",
            plugin, rt->conf->path);
    return 2;
}


void
gp_runtime_stop(gp_runtime_t *rt)
{
    pthread_mutex_lock(&rt->lock);
    atomic_store(&rt->stopping, 1);
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
}


void
gp_runtime_join(gp_runtime_t *rt, int grace_ms)
{
    gp_worker_t    *w;
    struct timespec deadline;
    size_t          i;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += grace_ms / 1000;
    deadline.tv_nsec += (long) (grace_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }

    for (i = 0; i < rt->nworkers; i++) {
        w = &rt->workers[i];

        if (w->started && !w->joined
            && pthread_timedjoin_np(w->thread, NULL, &deadline) == 0)
        {
            w->joined = 1;
        }
    }

    for (i = 0; i < rt->nworkers; i++) {
        w = &rt->workers[i];

        if (!w->started || w->joined) {
            continue;
        }

        /* the fd stays open until the thread frees the context (same lock) */
        pthread_mutex_lock(&w->lock);
        if (w->env.redis != NULL) {
            gp_log(GP_LOG_WARN, w->plugin->name, NULL,
                   "still busy %d ms after the stop "
                   "request, shutting its redis connection down",
                   grace_ms);
            shutdown(w->env.redis->fd, SHUT_RDWR);
        }
        pthread_mutex_unlock(&w->lock);

        pthread_join(w->thread, NULL);
        w->joined = 1;
    }
}


void
gp_runtime_free(gp_runtime_t *rt)
{
    gp_worker_t *w;
    size_t       i;
    uint32_t     s;

    if (rt == NULL) {
        return;
    }

    for (i = 0; i < rt->nworkers; i++) {
        w = &rt->workers[i];

        if (w->inited && w->plugin->shutdown != NULL) {
            w->plugin->shutdown(w->state);
        }

        if (w->streams != NULL) {
            for (s = 0; s < w->nstreams; s++) {
                free(w->streams[s]);
            }
        }

        if (w->dead != NULL) {
            for (s = 0; s < rt->conf->shards; s++) {
                free(w->dead[s]);
            }
        }

        free(w->streams);
        free(w->dead);
        free(w->argv);
        free(w->cursor);
        free(w->active);
        pthread_mutex_destroy(&w->lock);
    }

    free(rt->workers);
    free(rt->names);
    pthread_cond_destroy(&rt->cond);
    pthread_mutex_destroy(&rt->lock);
    free(rt);
}


void
gp_log_set_level(gp_log_level_t level)
{
    atomic_store(&gp_log_min, (int) level);
}


void
gp_log(gp_log_level_t level, const char *plugin, const gp_event_t *ev,
       const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    gp_logv(level, plugin, ev, fmt, ap);
    va_end(ap);
}


/*
 * "2026-06-01T10:00:00.123+08:00 [info] receipt {gp3}:settled 1718000000000-0
 * 33010026483920175536 done: ...": one write(2), so lines of several threads
 * never mix. Control characters become '?', so a value read from Redis cannot
 * forge a line.
 */
static void
gp_logv(gp_log_level_t level, const char *plugin, const gp_event_t *ev,
        const char *fmt, va_list ap)
{
    char            line[GP_LOG_LINE_MAX], zone[8];
    const char     *code;
    size_t          n, i, start, code_len;
    ssize_t         w;
    int             k;
    struct timespec ts;
    struct tm       tm;

    if ((int) level < atomic_load(&gp_log_min)) {
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);

    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    if (strftime(zone, sizeof(zone), "%z", &tm) != 5) {
        strcpy(zone, "+0000");
    }

    k = snprintf(line + n, sizeof(line) - n, ".%03ld%.3s:%.2s [%s] %s",
                 ts.tv_nsec / 1000000, zone, zone + 3, gp_log_levels[level],
                 plugin != NULL ? plugin : "worker");
    n += (k > 0) ? (size_t) k : 0;
    start = n;

    if (ev != NULL && n < sizeof(line)) {
        code = gp_event_get(ev, "payment_code", &code_len);
        if (code == NULL) {
            code = "-";
            code_len = 1;
        }

        k = snprintf(line + n, sizeof(line) - n, " %s %s %.*s", ev->stream,
                     ev->id, (int) (code_len > 32 ? 32 : code_len), code);
        n += (k > 0) ? (size_t) k : 0;
    }

    if (n < sizeof(line)) {
        k = snprintf(line + n, sizeof(line) - n, "%s", ev != NULL ? " " : ": ");
        n += (k > 0) ? (size_t) k : 0;
    }

    if (n < sizeof(line)) {
        k = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        n += (k > 0) ? (size_t) k : 0;
    }

    if (n > sizeof(line) - 2) {
        n = sizeof(line) - 2;
    }

    for (i = start; i < n; i++) {
        if ((unsigned char) line[i] < 0x20 || line[i] == 0x7f) {
            line[i] = '?';
        }
    }

    line[n++] = '\n';

    for (i = 0; i < n; i += (size_t) w) {
        w = write(STDERR_FILENO, line + i, n - i);
        if (w <= 0) {
            if (w < 0 && errno == EINTR) {
                w = 0;
                continue;
            }
            break;
        }
    }
}


static void
gp_env_log(const gp_plugin_env_t *env, gp_log_level_t level,
           const gp_event_t *ev, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    gp_logv(level, env->plugin, ev, fmt, ap);
    va_end(ap);
}


static int
gp_worker_prepare(gp_runtime_t *rt, gp_worker_t *w, const gp_plugin_t *plugin,
                  const json_t *conf, char *err, size_t errlen)
{
    uint32_t           s, k, shards, nkinds;
    char               perr[GP_MSG_MAX];
    const char *const *kinds;

    shards = rt->conf->shards;
    kinds = gp_plugin_streams(plugin);

    for (nkinds = 0; kinds[nkinds] != NULL; nkinds++) { /* void */
    }

    w->rt = rt;
    w->plugin = plugin;
    w->conf = conf;
    w->retry_ms = rt->conf->claim_idle_ms / 4;

    if (pthread_mutex_init(&w->lock, NULL) != 0) {
        snprintf(err, errlen, "pthread_mutex_init() failed");
        return -1;
    }

    w->nstreams = nkinds * shards;
    w->streams = calloc(w->nstreams, sizeof(char *));
    w->dead = calloc(shards, sizeof(char *));
    w->argv = calloc(9 + 2 * (size_t) w->nstreams, sizeof(char *));
    w->cursor = calloc(w->nstreams, GP_ID_MAX);
    w->active = calloc(w->nstreams, sizeof(uint32_t));

    if (w->streams == NULL || w->dead == NULL || w->argv == NULL
        || w->cursor == NULL || w->active == NULL)
    {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (k = 0; k < nkinds; k++) {
        for (s = 0; s < shards; s++) {
            w->streams[k * shards + s] = gp_strf("{gp%u}:%s", s, kinds[k]);

            if (w->streams[k * shards + s] == NULL) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
        }
    }

    for (s = 0; s < shards; s++) {
        w->dead[s] = gp_strf("{gp%u}:dead", s);

        if (w->dead[s] == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }

    w->env.plugin = plugin->name;
    w->env.redis = NULL;
    w->env.registry = rt->conf->registry;
    w->env.shards = shards;
    w->env.log = gp_env_log;
    w->env.runtime = w;
    w->env.config_path = rt->conf->path;
    w->env.connect = gp_env_connect;
    w->env.start = NULL;
    w->env.command = NULL;
    w->env.plugins = rt->names;
    w->env.pii_keys = rt->conf->pii_keys;

    perr[0] = '\0';

    if (plugin->init(conf, &w->env, &w->state, perr, sizeof(perr)) != 0) {
        snprintf(err, errlen, "plugin \"%s\": %s", plugin->name,
                 perr[0] != '\0' ? perr : "init failed");
        return -1;
    }

    w->inited = 1;
    return 0;
}


static void *
gp_worker_main(void *arg)
{
    gp_worker_t *w;
    int64_t      now;
    int          rc, block;

    w = arg;
    w->backoff_ms = GP_BACKOFF_MIN_MS;

    gp_log(GP_LOG_INFO, w->plugin->name, NULL,
           "started: group %s, consumer %s, "
           "%u streams",
           w->plugin->name, w->rt->conf->consumer, w->nstreams);

    while (!gp_stopping(w->rt)) {
        if (w->env.redis == NULL && gp_worker_connect(w) != 0) {
            gp_worker_backoff(w);
            continue;
        }

        now = gp_now_ms();

        if (w->pending_due && now >= w->pending_at) {
            rc = gp_worker_read_pending(w);

        } else if (now >= w->next_claim) {
            rc = gp_worker_autoclaim(w);
            w->next_claim = gp_now_ms() + w->rt->conf->claim_idle_ms / 2;

        } else {
            block = w->rt->conf->block_ms;

            if (w->next_claim - now < block) {
                block = (int) (w->next_claim - now);
            }

            if (w->pending_due && w->pending_at - now < block) {
                block = (int) (w->pending_at - now);
            }

            rc = gp_worker_read_new(w, block > 0 ? block : 1);
        }

        if (rc != 0) {
            gp_worker_disconnect(w);
            gp_worker_backoff(w);
        }
    }

    gp_worker_disconnect(w);
    gp_log(GP_LOG_INFO, w->plugin->name, NULL, "stopped");

    return NULL;
}


/*
 * env->connect: a connection of the plugin's own, with the runtime's connect
 * and command timeouts, keepalive and AUTH
 */
static redisContext *
gp_env_connect(const gp_plugin_env_t *env, char *err, size_t errlen)
{
    gp_worker_t *w;

    w = env->runtime;

    return gp_redis_open(w->rt->conf, err, errlen);
}


/* gp_runtime.h: the same, for an ops command of the worker's own (gp_pii.c) */
redisContext *
gp_redis_connect(const gp_config_t *conf, char *err, size_t errlen)
{
    return gp_redis_open(conf, err, errlen);
}


/*
 * A new blocking connection: TCP (keepalive on) or a Unix socket, the connect
 * and command timeouts, then AUTH when redis_user is set. NULL with a message
 * in err that names the address and the user, never the password.
 */
static redisContext *
gp_redis_open(const gp_config_t *conf, char *err, size_t errlen)
{
    redisContext  *c;
    redisReply    *r;
    struct timeval tv;
    char           password[GP_CONFIG_PASSWORD_MAX + 1];
    char           perr[512];
    const char    *argv[3];
    size_t         argvlen[3];

    tv.tv_sec = GP_CONNECT_TIMEOUT_MS / 1000;
    tv.tv_usec = (GP_CONNECT_TIMEOUT_MS % 1000) * 1000;

    if (conf->redis_unix != NULL) {
        c = redisConnectUnixWithTimeout(conf->redis_unix, tv);
    } else {
        c = redisConnectWithTimeout(conf->redis_ip, conf->redis_port, tv);
    }

    if (c == NULL) {
        snprintf(err, errlen, "cannot connect to redis at %s: out of memory",
                 conf->redis);
        return NULL;
    }

    if (c->err) {
        snprintf(err, errlen, "cannot connect to redis at %s: %s", conf->redis,
                 c->errstr);
        goto fail;
    }

    tv.tv_sec = GP_IO_TIMEOUT_MS / 1000;
    tv.tv_usec = (GP_IO_TIMEOUT_MS % 1000) * 1000;

    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(err, errlen, "redisSetTimeout() failed for redis at %s",
                 conf->redis);
        goto fail;
    }

    /* TCP only: hiredis's keepalive sets TCP options, which a Unix socket
     * refuses, and that error would make the context unusable */
    if (conf->redis_unix == NULL && redisEnableKeepAlive(c) != REDIS_OK) {
        snprintf(err, errlen,
                 "redisEnableKeepAlive() failed for redis at %s: %s",
                 conf->redis, c->errstr);
        goto fail;
    }

    if (conf->redis_user == NULL) {
        return c;
    }

    if (gp_config_redis_password(conf, password, sizeof(password), perr,
                                 sizeof(perr))
        != 0)
    {
        snprintf(err, errlen, "cannot AUTH to redis at %s as user \"%s\": %s",
                 conf->redis, conf->redis_user, perr);
        goto fail;
    }

    argv[0] = "AUTH";
    argvlen[0] = 4;
    argv[1] = conf->redis_user;
    argvlen[1] = strlen(conf->redis_user);
    argv[2] = password;
    argvlen[2] = strlen(password);

    r = redisCommandArgv(c, 3, argv, argvlen);
    explicit_bzero(password, sizeof(password));

    if (r == NULL) {
        snprintf(err, errlen, "redis at %s: AUTH as user \"%s\" failed: %s",
                 conf->redis, conf->redis_user,
                 c->errstr[0] != '\0' ? c->errstr : "no reply");
        goto fail;
    }

    if (r->type != REDIS_REPLY_STATUS) {
        /* Redis's own words (WRONGPASS, ...) never echo the password */
        snprintf(err, errlen, "redis at %s refused AUTH as user \"%s\": %.200s",
                 conf->redis, conf->redis_user,
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        goto fail;
    }

    freeReplyObject(r);
    return c;

fail:

    redisFree(c);
    return NULL;
}


static int
gp_worker_connect(gp_worker_t *w)
{
    gp_config_t  *conf;
    redisContext *c;
    char          err[1024];

    conf = w->rt->conf;

    c = gp_redis_open(conf, err, sizeof(err));

    if (c == NULL) {
        gp_log(GP_LOG_ERROR, w->plugin->name, NULL, "%s; retrying in %d ms",
               err, w->backoff_ms);
        return -1;
    }

    pthread_mutex_lock(&w->lock);
    w->env.redis = c;
    pthread_mutex_unlock(&w->lock);

    w->timeout_ms = GP_IO_TIMEOUT_MS; /* set by gp_redis_open() */

    if (gp_worker_groups(w) != 0) {
        gp_worker_disconnect(w);
        return -1;
    }

    /*
     * first thing on every connection: this consumer's own pending entries
     * (which also makes them fresh, so the autoclaim that follows leaves them
     * alone), then autoclaim
     */
    w->next_claim = gp_now_ms();
    w->pending_due = 1;
    w->pending_at = 0;

    gp_log(GP_LOG_INFO, w->plugin->name, NULL, "connected to redis at %s%s%s",
           conf->redis, conf->redis_user != NULL ? " as " : "",
           conf->redis_user != NULL ? conf->redis_user : "");

    return 0;
}


static void
gp_worker_disconnect(gp_worker_t *w)
{
    redisContext *c;

    pthread_mutex_lock(&w->lock);
    c = w->env.redis;
    w->env.redis = NULL;
    pthread_mutex_unlock(&w->lock);

    if (c != NULL) {
        redisFree(c);
    }
}


static void
gp_worker_backoff(gp_worker_t *w)
{
    gp_sleep(w->rt, w->backoff_ms);

    w->backoff_ms *= 2;
    if (w->backoff_ms > GP_BACKOFF_MAX_MS) {
        w->backoff_ms = GP_BACKOFF_MAX_MS;
    }
}


static int
gp_worker_timeout(gp_worker_t *w, int ms)
{
    struct timeval tv;

    if (w->timeout_ms == ms) {
        return 0;
    }

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;

    if (redisSetTimeout(w->env.redis, tv) != REDIS_OK) {
        gp_log(GP_LOG_ERROR, w->plugin->name, NULL, "redisSetTimeout() failed");
        return -1;
    }

    w->timeout_ms = ms;
    return 0;
}


/*
 * XGROUP CREATE <stream> <plugin> 0 MKSTREAM on every shard; BUSYGROUP is fine
 */
static int
gp_worker_groups(gp_worker_t *w)
{
    const char *argv[6];
    redisReply *r;
    uint32_t    s;

    argv[0] = "XGROUP";
    argv[1] = "CREATE";
    argv[3] = w->plugin->name;
    argv[4] = "0";
    argv[5] = "MKSTREAM";

    for (s = 0; s < w->nstreams; s++) {
        argv[2] = w->streams[s];

        r = gp_worker_command(w, 6, argv, NULL);
        if (r == NULL) {
            return -1;
        }

        if (!(r->type == REDIS_REPLY_STATUS
              || (r->type == REDIS_REPLY_ERROR
                  && strncmp(r->str, "BUSYGROUP", 9) == 0)))
        {
            gp_worker_unexpected(w, "XGROUP CREATE", r);
            freeReplyObject(r);
            return -1;
        }

        freeReplyObject(r);
    }

    return 0;
}


/*
 * XREADGROUP GROUP <plugin> <consumer> COUNT 32 BLOCK <ms>
 *     STREAMS s0 .. sS-1 > .. >
 */
static int
gp_worker_read_new(gp_worker_t *w, int block_ms)
{
    redisReply *r, *s;
    uint32_t    shards, i, shard;
    size_t      k;
    char        count[16], block[16];
    int         argc;

    shards = w->nstreams;

    snprintf(count, sizeof(count), "%d", GP_READ_COUNT);
    snprintf(block, sizeof(block), "%d", block_ms);

    argc = 0;
    w->argv[argc++] = "XREADGROUP";
    w->argv[argc++] = "GROUP";
    w->argv[argc++] = w->plugin->name;
    w->argv[argc++] = w->rt->conf->consumer;
    w->argv[argc++] = "COUNT";
    w->argv[argc++] = count;
    w->argv[argc++] = "BLOCK";
    w->argv[argc++] = block;
    w->argv[argc++] = "STREAMS";

    for (i = 0; i < shards; i++) {
        w->argv[argc++] = w->streams[i];
    }

    for (i = 0; i < shards; i++) {
        w->argv[argc++] = ">";
    }

    if (gp_worker_timeout(w, block_ms + GP_IO_TIMEOUT_MS) != 0) {
        return -1;
    }

    r = gp_worker_command(w, argc, w->argv, NULL);
    if (r == NULL) {
        return -1;
    }

    if (gp_worker_timeout(w, GP_IO_TIMEOUT_MS) != 0) {
        freeReplyObject(r);
        return -1;
    }

    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        w->backoff_ms = GP_BACKOFF_MIN_MS;
        return 0;
    }

    if (r->type != REDIS_REPLY_ARRAY) {
        gp_worker_unexpected(w, "XREADGROUP", r);
        freeReplyObject(r);
        return -1;
    }

    w->backoff_ms = GP_BACKOFF_MIN_MS;

    for (k = 0; k < r->elements && !gp_stopping(w->rt); k++) {
        s = r->element[k];

        if (s->type != REDIS_REPLY_ARRAY || s->elements != 2
            || gp_worker_shard(w, s->element[0], &shard) != 0
            || s->element[1]->type != REDIS_REPLY_ARRAY)
        {
            gp_worker_unexpected(w, "XREADGROUP", s);
            freeReplyObject(r);
            return -1;
        }

        gp_log(GP_LOG_DEBUG, w->plugin->name, NULL, "%s: read %zu new entries",
               w->streams[shard], s->element[1]->elements);

        if (gp_worker_batch(w, shard, s->element[1], 0) != 0) {
            freeReplyObject(r);
            return -1;
        }
    }

    freeReplyObject(r);
    return 0;
}


/*
 * Re-reads this consumer's own pending entries: XREADGROUP ... STREAMS s..
 * <cursor>.., starting at 0 and moving each stream's cursor past what it
 * returned, until every stream returned less than a full page. An entry left
 * pending again (GP_RETRY) is not seen twice in one pass;
 * gp_worker_retry_later() schedules the next pass.
 */
static int
gp_worker_read_pending(gp_worker_t *w)
{
    redisReply *r, *s, *entries;
    uint32_t    shards, nactive, nnext, i, shard;
    size_t      k;
    const char *id;
    char        count[16];
    int         argc;

    shards = w->nstreams;
    snprintf(count, sizeof(count), "%d", GP_READ_COUNT);

    for (i = 0; i < shards; i++) {
        w->active[i] = i;
        strcpy(w->cursor[i], "0");
    }

    nactive = shards;

    /* entries handled below that return GP_RETRY schedule the next pass */
    w->pending_due = 0;

    while (nactive > 0 && !gp_stopping(w->rt)) {
        argc = 0;
        w->argv[argc++] = "XREADGROUP";
        w->argv[argc++] = "GROUP";
        w->argv[argc++] = w->plugin->name;
        w->argv[argc++] = w->rt->conf->consumer;
        w->argv[argc++] = "COUNT";
        w->argv[argc++] = count;
        w->argv[argc++] = "STREAMS";

        for (i = 0; i < nactive; i++) {
            w->argv[argc++] = w->streams[w->active[i]];
        }

        for (i = 0; i < nactive; i++) {
            w->argv[argc++] = w->cursor[w->active[i]];
        }

        r = gp_worker_command(w, argc, w->argv, NULL);
        if (r == NULL) {
            goto fail;
        }

        if (r->type == REDIS_REPLY_NIL) {
            freeReplyObject(r);
            break;
        }

        if (r->type != REDIS_REPLY_ARRAY) {
            gp_worker_unexpected(w, "XREADGROUP (pending)", r);
            freeReplyObject(r);
            goto fail;
        }

        nnext = 0;

        for (k = 0; k < r->elements && !gp_stopping(w->rt); k++) {
            s = r->element[k];

            if (s->type != REDIS_REPLY_ARRAY || s->elements != 2
                || gp_worker_shard(w, s->element[0], &shard) != 0
                || s->element[1]->type != REDIS_REPLY_ARRAY)
            {
                gp_worker_unexpected(w, "XREADGROUP (pending)", s);
                freeReplyObject(r);
                goto fail;
            }

            entries = s->element[1];

            if (entries->elements == 0) {
                continue;
            }

            id = gp_entry_id(entries->element[entries->elements - 1]);
            if (id == NULL || strlen(id) >= GP_ID_MAX) {
                gp_worker_unexpected(w, "XREADGROUP (pending)", s);
                freeReplyObject(r);
                goto fail;
            }

            strcpy(w->cursor[shard], id);

            gp_log(GP_LOG_DEBUG, w->plugin->name, NULL,
                   "%s: re-read %zu pending entries", w->streams[shard],
                   entries->elements);

            if (entries->elements >= GP_READ_COUNT) {
                w->active[nnext++] = shard;
            }

            if (gp_worker_batch(w, shard, entries, 1) != 0) {
                freeReplyObject(r);
                goto fail;
            }
        }

        freeReplyObject(r);
        nactive = nnext;
    }

    return 0;

fail:

    /* read them again after the reconnect */
    w->pending_due = 1;
    w->pending_at = 0;
    return -1;
}


/*
 * XAUTOCLAIM <stream> <plugin> <consumer> <claim_idle_ms> <cursor> COUNT 32,
 * per stream
 */
static int
gp_worker_autoclaim(gp_worker_t *w)
{
    const char *argv[8];
    redisReply *r, *entries, *deleted;
    uint32_t    s;
    size_t      k;
    char        idle[16], start[GP_ID_MAX], count[16];

    snprintf(idle, sizeof(idle), "%d", w->rt->conf->claim_idle_ms);
    snprintf(count, sizeof(count), "%d", GP_READ_COUNT);

    argv[0] = "XAUTOCLAIM";
    argv[2] = w->plugin->name;
    argv[3] = w->rt->conf->consumer;
    argv[4] = idle;
    argv[5] = start;
    argv[6] = "COUNT";
    argv[7] = count;

    for (s = 0; s < w->nstreams && !gp_stopping(w->rt); s++) {
        argv[1] = w->streams[s];
        strcpy(start, "0-0");

        do {
            r = gp_worker_command(w, 8, argv, NULL);
            if (r == NULL) {
                return -1;
            }

            /*
             * Redis 7: [cursor, entries, deleted ids]; 6.2: [cursor, entries]
             */
            if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
                || r->element[0]->type != REDIS_REPLY_STRING
                || r->element[0]->len >= GP_ID_MAX
                || r->element[1]->type != REDIS_REPLY_ARRAY)
            {
                gp_worker_unexpected(w, "XAUTOCLAIM", r);
                freeReplyObject(r);
                return -1;
            }

            memcpy(start, r->element[0]->str, r->element[0]->len + 1);
            entries = r->element[1];

            if (r->elements > 2 && r->element[2]->type == REDIS_REPLY_ARRAY) {
                deleted = r->element[2];

                for (k = 0; k < deleted->elements; k++) {
                    if (deleted->element[k]->type == REDIS_REPLY_STRING) {
                        gp_log(GP_LOG_WARN, w->plugin->name, NULL,
                               "%s %s: pending entry "
                               "no longer in the stream, dropped by XAUTOCLAIM",
                               w->streams[s], deleted->element[k]->str);
                    }
                }
            }

            if (entries->elements > 0) {
                gp_log(GP_LOG_INFO, w->plugin->name, NULL,
                       "%s: claimed %zu entries "
                       "pending for more than %d ms",
                       w->streams[s], entries->elements,
                       w->rt->conf->claim_idle_ms);

                if (gp_worker_batch(w, s, entries, 1) != 0) {
                    freeReplyObject(r);
                    return -1;
                }
            }

            freeReplyObject(r);

        } while (strcmp(start, "0-0") != 0 && !gp_stopping(w->rt));
    }

    return 0;
}


/*
 * handles the entries of one stream; redelivered: read their delivery counts
 * first
 */
static int
gp_worker_batch(gp_worker_t *w, uint32_t shard, redisReply *entries,
                int redelivered)
{
    long long counts[GP_READ_COUNT];
    size_t    k;

    if (entries->elements > GP_READ_COUNT) {
        gp_worker_unexpected(w, "a batch of entries", entries);
        return -1;
    }

    for (k = 0; k < entries->elements; k++) {
        counts[k] = 0;

        if (entries->element[k]->type == REDIS_REPLY_NIL) {
            continue; /* Redis 6.2 XAUTOCLAIM: deleted entry */
        }

        if (gp_entry_id(entries->element[k]) == NULL) {
            gp_worker_unexpected(w, "a stream entry", entries->element[k]);
            return -1;
        }

        counts[k] = 1;
    }

    if (redelivered && gp_worker_deliveries(w, shard, entries, counts) != 0) {
        return -1;
    }

    for (k = 0; k < entries->elements; k++) {
        if (gp_stopping(w->rt)) {
            return 0; /* the rest stays pending */
        }

        if (entries->element[k]->type == REDIS_REPLY_NIL) {
            continue;
        }

        if (counts[k] == 0) {
            gp_log(GP_LOG_INFO, w->plugin->name, NULL,
                   "%s %s: no longer pending for "
                   "this consumer, skipped",
                   w->streams[shard], gp_entry_id(entries->element[k]));
            continue;
        }

        if (gp_worker_entry(w, shard, entries->element[k], counts[k]) != 0) {
            return -1;
        }
    }

    return 0;
}


/*
 * Delivery counts of redelivered entries: one XPENDING <stream> <group> <first>
 * <last> <n> <consumer> for the batch; entries the range missed (other pending
 * entries of this consumer in between) are asked one by one. 0: not pending for
 * this consumer any more.
 */
static int
gp_worker_deliveries(gp_worker_t *w, uint32_t shard, redisReply *entries,
                     long long *counts)
{
    const char *argv[7], *id, *first, *last;
    redisReply *r, *p;
    size_t      k, j, n;
    char        count[24];
    int         found;

    first = NULL;
    last = NULL;
    n = 0;

    for (k = 0; k < entries->elements; k++) {
        if (entries->element[k]->type != REDIS_REPLY_NIL) {
            id = gp_entry_id(entries->element[k]);
            first = (first == NULL) ? id : first;
            last = id;
            counts[k] = 0;
            n++;
        }
    }

    if (n == 0) {
        return 0;
    }

    snprintf(count, sizeof(count), "%zu", n);

    argv[0] = "XPENDING";
    argv[1] = w->streams[shard];
    argv[2] = w->plugin->name;
    argv[3] = first;
    argv[4] = last;
    argv[5] = count;
    argv[6] = w->rt->conf->consumer;

    r = gp_worker_command(w, 7, argv, NULL);
    if (r == NULL) {
        return -1;
    }

    if (r->type != REDIS_REPLY_ARRAY) {
        gp_worker_unexpected(w, "XPENDING", r);
        freeReplyObject(r);
        return -1;
    }

    for (j = 0; j < r->elements; j++) {
        p = r->element[j];

        if (p->type != REDIS_REPLY_ARRAY || p->elements != 4
            || p->element[0]->type != REDIS_REPLY_STRING
            || p->element[3]->type != REDIS_REPLY_INTEGER)
        {
            gp_worker_unexpected(w, "XPENDING", p);
            freeReplyObject(r);
            return -1;
        }

        for (k = 0; k < entries->elements; k++) {
            if (entries->element[k]->type != REDIS_REPLY_NIL
                && strcmp(gp_entry_id(entries->element[k]), p->element[0]->str)
                       == 0)
            {
                counts[k] = p->element[3]->integer;
                break;
            }
        }
    }

    freeReplyObject(r);

    for (k = 0; k < entries->elements; k++) {
        if (entries->element[k]->type == REDIS_REPLY_NIL || counts[k] != 0) {
            continue;
        }

        id = gp_entry_id(entries->element[k]);
        argv[3] = id;
        argv[4] = id;
        argv[5] = "1";

        r = gp_worker_command(w, 7, argv, NULL);
        if (r == NULL) {
            return -1;
        }

        if (r->type != REDIS_REPLY_ARRAY) {
            gp_worker_unexpected(w, "XPENDING", r);
            freeReplyObject(r);
            return -1;
        }

        found = r->elements == 1 && r->element[0]->type == REDIS_REPLY_ARRAY
                && r->element[0]->elements == 4
                && r->element[0]->element[3]->type == REDIS_REPLY_INTEGER;

        counts[k] = found ? r->element[0]->element[3]->integer : 0;
        freeReplyObject(r);
    }

    return 0;
}


static int
gp_worker_entry(gp_worker_t *w, uint32_t shard, redisReply *entry,
                long long deliveries)
{
    gp_event_t  ev;
    gp_field_t *fields;
    redisReply *kv, *name, *value;
    gp_result_t rc;
    size_t      i;
    int         max, ret;
    char        msg[GP_MSG_MAX], why[GP_MSG_MAX + 64];

    max = w->rt->conf->max_deliveries;
    fields = NULL;

    ev.stream = w->streams[shard];
    ev.shard = shard % w->rt->conf->shards;
    ev.id = gp_entry_id(entry);
    ev.fields = NULL;
    ev.nfields = 0;
    ev.deliveries = deliveries;

    kv = entry->element[1];

    if (kv->type == REDIS_REPLY_NIL) {
        gp_log(GP_LOG_WARN, w->plugin->name, &ev,
               "entry no longer in the stream "
               "(trimmed or deleted), acknowledged without handling");
        return gp_worker_ack(w, &ev);
    }

    if (kv->type != REDIS_REPLY_ARRAY || kv->elements % 2 != 0) {
        gp_worker_unexpected(w, "a stream entry", entry);
        return -1;
    }

    if (kv->elements > 0) {
        fields = calloc(kv->elements / 2, sizeof(gp_field_t));
        if (fields == NULL) {
            gp_log(GP_LOG_ERROR, w->plugin->name, &ev, "out of memory");
            return -1;
        }
    }

    for (i = 0; i < kv->elements / 2; i++) {
        name = kv->element[2 * i];
        value = kv->element[2 * i + 1];

        if (name->type != REDIS_REPLY_STRING
            || value->type != REDIS_REPLY_STRING) {
            gp_worker_unexpected(w, "a stream entry", entry);
            free(fields);
            return -1;
        }

        fields[i].name = name->str;
        fields[i].name_len = name->len;
        fields[i].value = value->str;
        fields[i].value_len = value->len;
    }

    ev.fields = fields;
    ev.nfields = kv->elements / 2;

    if (deliveries > max) {
        /* e.g. an entry that crashes the worker every time it is handled */
        snprintf(why, sizeof(why),
                 "delivered %lld times, more than max_deliveries %d",
                 deliveries, max);
        ret = gp_worker_dead(w, &ev, why);
        goto done;
    }

    msg[0] = '\0';
    rc = w->plugin->handle(w->state, &ev, msg, sizeof(msg));
    msg[sizeof(msg) - 1] = '\0';

    if (w->env.redis == NULL || w->env.redis->err) {
        gp_log(GP_LOG_WARN, w->plugin->name, &ev,
               "redis connection lost while handling "
               "(%s), entry stays pending",
               msg[0] != '\0' ? msg : "no message");
        ret = -1;
        goto done;
    }

    switch (rc) {
    case GP_DONE:
        if (w->rt->fault == GP_FAULT_EXIT_BEFORE_ACK) {
            gp_log(GP_LOG_WARN, w->plugin->name, &ev,
                   "fault injection "
                   "exit_before_ack: exiting before XACK");
            _exit(137);
        }

        ret = gp_worker_ack(w, &ev);
        if (ret == 0) {
            gp_log(GP_LOG_INFO, w->plugin->name, &ev, "done%s%s",
                   msg[0] != '\0' ? ": " : "", msg);
        }
        break;

    case GP_RETRY:
        if (deliveries >= max) {
            snprintf(why, sizeof(why), "gave up after %lld deliveries: %s",
                     deliveries, msg[0] != '\0' ? msg : "retry");
            ret = gp_worker_dead(w, &ev, why);
            break;
        }

        gp_log(GP_LOG_WARN, w->plugin->name, &ev,
               "retry later (delivery %lld of %d): %s", deliveries, max,
               msg[0] != '\0' ? msg : "no message");
        gp_worker_retry_later(w);
        ret = 0;
        break;

    case GP_FAILED:
        ret = gp_worker_dead(w, &ev, msg[0] != '\0' ? msg : "failed");
        break;

    default:
        ret = gp_worker_dead(w, &ev, "the plugin returned an unknown result");
        break;
    }

done:

    free(fields);
    return ret;
}


static int
gp_worker_ack(gp_worker_t *w, const gp_event_t *ev)
{
    const char *argv[4];
    redisReply *r;

    argv[0] = "XACK";
    argv[1] = ev->stream;
    argv[2] = w->plugin->name;
    argv[3] = ev->id;

    r = gp_worker_command(w, 4, argv, NULL);
    if (r == NULL) {
        return -1;
    }

    if (r->type != REDIS_REPLY_INTEGER) {
        gp_worker_unexpected(w, "XACK", r);
        freeReplyObject(r);
        return -1;
    }

    if (r->integer == 0) {
        gp_log(GP_LOG_DEBUG, w->plugin->name, ev, "XACK: already acknowledged");
    }

    freeReplyObject(r);
    return 0;
}


/*
 * MULTI; XADD {gpN}:dead * plugin .. entry_id .. stream .. error .. deliveries
 * .. <the entry's fields>; XACK {gpN}:settled <group> <id>; EXEC. Both keys
 * carry {gpN}.
 */
static int
gp_worker_dead(gp_worker_t *w, const gp_event_t *ev, const char *error)
{
    redisContext *c;
    redisReply   *r[4];
    const char  **argv, *ack[4];
    size_t       *argvlen;
    size_t        i;
    char          deliveries[24];
    int           argc, k, ok;

    c = w->env.redis;
    ok = 0;

    argv = calloc(13 + 2 * ev->nfields, sizeof(char *));
    argvlen = calloc(13 + 2 * ev->nfields, sizeof(size_t));

    if (argv == NULL || argvlen == NULL) {
        free(argv);
        free(argvlen);
        gp_log(GP_LOG_ERROR, w->plugin->name, ev, "out of memory");
        return -1;
    }

    snprintf(deliveries, sizeof(deliveries), "%lld", ev->deliveries);

    argc = 0;
    argv[argc++] = "XADD";
    argv[argc++] = w->dead[ev->shard];
    argv[argc++] = "*";
    argv[argc++] = "plugin";
    argv[argc++] = w->plugin->name;
    argv[argc++] = "entry_id";
    argv[argc++] = ev->id;
    argv[argc++] = "stream";
    argv[argc++] = ev->stream;
    argv[argc++] = "error";
    argv[argc++] = error;
    argv[argc++] = "deliveries";
    argv[argc++] = deliveries;

    for (k = 0; k < argc; k++) {
        argvlen[k] = strlen(argv[k]);
    }

    for (i = 0; i < ev->nfields; i++) {
        argv[argc] = ev->fields[i].name;
        argvlen[argc++] = ev->fields[i].name_len;
        argv[argc] = ev->fields[i].value;
        argvlen[argc++] = ev->fields[i].value_len;
    }

    ack[0] = "XACK";
    ack[1] = ev->stream;
    ack[2] = w->plugin->name;
    ack[3] = ev->id;

    memset(r, 0, sizeof(r));

    if (redisAppendCommand(c, "MULTI") != REDIS_OK
        || redisAppendCommandArgv(c, argc, argv, argvlen) != REDIS_OK
        || redisAppendCommandArgv(c, 4, ack, NULL) != REDIS_OK
        || redisAppendCommand(c, "EXEC") != REDIS_OK)
    {
        gp_log(GP_LOG_ERROR, w->plugin->name, ev,
               "dead letter: redisAppendCommand() "
               "failed: %s",
               c->errstr);
        goto done;
    }

    /*
     * read all four replies, whatever they are, to stay in step with the
     * connection
     */
    for (k = 0; k < 4; k++) {
        if (redisGetReply(c, (void **) &r[k]) != REDIS_OK) {
            gp_log(GP_LOG_ERROR, w->plugin->name, ev,
                   "dead letter: redis failed: %s", c->errstr);
            goto done;
        }
    }

    if (r[0]->type != REDIS_REPLY_STATUS || r[1]->type != REDIS_REPLY_STATUS
        || r[2]->type != REDIS_REPLY_STATUS)
    {
        gp_worker_unexpected(
            w, "MULTI/XADD/XACK",
            r[0]->type != REDIS_REPLY_STATUS
                ? r[0]
                : (r[1]->type != REDIS_REPLY_STATUS ? r[1] : r[2]));
        goto done;
    }

    if (r[3]->type != REDIS_REPLY_ARRAY || r[3]->elements != 2
        || r[3]->element[0]->type != REDIS_REPLY_STRING
        || r[3]->element[1]->type != REDIS_REPLY_INTEGER)
    {
        gp_worker_unexpected(w, "EXEC (dead letter)", r[3]);
        goto done;
    }

    gp_log(GP_LOG_ERROR, w->plugin->name, ev,
           "dead-lettered to %s as %s after %lld "
           "deliveries: %s",
           w->dead[ev->shard], r[3]->element[0]->str, ev->deliveries, error);
    ok = 1;

done:

    for (k = 0; k < 4; k++) {
        if (r[k] != NULL) {
            freeReplyObject(r[k]);
        }
    }

    free(argv);
    free(argvlen);

    return ok ? 0 : -1;
}


static void
gp_worker_retry_later(gp_worker_t *w)
{
    if (!w->pending_due) {
        w->pending_due = 1;
        w->pending_at = gp_now_ms() + w->retry_ms;
    }
}


static redisReply *
gp_worker_command(gp_worker_t *w, int argc, const char **argv,
                  const size_t *argvlen)
{
    redisReply *r;

    r = redisCommandArgv(w->env.redis, argc, argv, argvlen);

    if (r == NULL) {
        /* hiredis 0.14 reports a socket timeout as the text of EAGAIN */
        gp_log(GP_LOG_ERROR, w->plugin->name, NULL, "redis %s failed: %s%s",
               argv[0],
               w->env.redis->errstr[0] != '\0' ? w->env.redis->errstr
                                               : "unknown error",
               strcmp(w->env.redis->errstr, strerror(EAGAIN)) == 0
                   ? " (timed out)"
                   : "");
    }

    return r;
}


static void
gp_worker_unexpected(gp_worker_t *w, const char *what, redisReply *r)
{
    if (r->type == REDIS_REPLY_ERROR) {
        gp_log(GP_LOG_ERROR, w->plugin->name, NULL, "redis %s failed: %.200s",
               what, r->str);
    } else {
        gp_log(GP_LOG_ERROR, w->plugin->name, NULL,
               "redis %s: unexpected reply of type "
               "%d",
               what, r->type);
    }
}


/*
 * The index of a stream name in a reply into w->streams (of shard index %
 * S): it must be one of ours
 */
static int
gp_worker_shard(gp_worker_t *w, redisReply *name, uint32_t *shard)
{
    unsigned long n;
    uint32_t      i, shards;

    if (name->type != REDIS_REPLY_STRING || name->len < 5
        || strncmp(name->str, "{gp", 3) != 0 || name->str[3] < '0'
        || name->str[3] > '9')
    {
        return -1;
    }

    shards = w->rt->conf->shards;
    n = strtoul(name->str + 3, NULL, 10);

    if (n >= shards) {
        return -1;
    }

    for (i = (uint32_t) n; i < w->nstreams; i += shards) {
        if (strcmp(w->streams[i], name->str) == 0) {
            *shard = i;
            return 0;
        }
    }

    return -1;
}


/* the id of a [id, fields] entry, or NULL if the entry is not of that shape */
static const char *
gp_entry_id(redisReply *entry)
{
    if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2
        || entry->element[0]->type != REDIS_REPLY_STRING
        || entry->element[0]->len == 0 || entry->element[0]->len >= GP_ID_MAX)
    {
        return NULL;
    }

    return entry->element[0]->str;
}


static int
gp_stopping(gp_runtime_t *rt)
{
    return atomic_load(&rt->stopping);
}


/* sleeps ms, or less if a stop is requested meanwhile */
static void
gp_sleep(gp_runtime_t *rt, int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long) (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }

    pthread_mutex_lock(&rt->lock);

    while (!atomic_load(&rt->stopping)) {
        if (pthread_cond_timedwait(&rt->cond, &rt->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }

    pthread_mutex_unlock(&rt->lock);
}


static int64_t
gp_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
