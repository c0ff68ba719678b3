/*
 * gp_plugin: the interface between the gov-pay-worker runtime and its plugins.
 *
 * A plugin is a struct of four members, in the spirit of hiredis's adapters: a
 * name, init, handle and shutdown. The runtime runs each enabled plugin on a
 * thread of its own with a consumer group named after the plugin, reads the
 * streams it declares on every shard ({gp0}:settled .. {gpS-1}:settled by
 * default; see streams below), and calls handle() once per delivery of an
 * entry:
 *
 *   GP_DONE    the entry is finished: the runtime XACKs it.
 *   GP_RETRY   a transient failure: the entry stays pending and is delivered
 *              again later; after max_deliveries deliveries it is
 *              dead-lettered.
 *   GP_FAILED  a permanent failure: the entry goes to {gpN}:dead with the
 *              error, and is XACKed, atomically.
 *
 * Every entry may be delivered more than once (a crash between handle and XACK,
 * a consumer declared dead by XAUTOCLAIM), so handle() must be idempotent.
 *
 * Threading: init() and shutdown() run on the main thread; handle() runs on the
 * plugin's own thread, never concurrently with itself. The state belongs to the
 * plugin.
 *
 * Built-in plugins are listed in the static table of gp_runtime.c. A plugin
 * loaded as a shared object would be registered the same way: the runtime would
 * dlopen() it, dlsym() a `const gp_plugin_t gp_plugin` symbol, check
 * GP_PLUGIN_ABI against a `gp_plugin_abi` symbol the object exports, and append
 * it to the table before the configuration is read. Nothing else in this
 * interface would change (gp_event_get() is inline so a shared object needs no
 * symbol from the executable); dlopen is not implemented yet.
 */

#ifndef GP_PLUGIN_H
#define GP_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "gp_registry.h"
#include "gp_seal.h"

#define GP_PLUGIN_ABI 1

typedef enum { GP_DONE = 0, GP_RETRY, GP_FAILED } gp_result_t;

typedef enum {
    GP_LOG_DEBUG = 0,
    GP_LOG_INFO,
    GP_LOG_WARN,
    GP_LOG_ERROR
} gp_log_level_t;

/*
 * one field/value pair of a stream entry; both NUL-terminated, may hold binary
 */
typedef struct {
    const char *name;
    size_t      name_len;
    const char *value;
    size_t      value_len;
} gp_field_t;

/* one delivery of a stream entry; valid only during the handle() call */
typedef struct {
    const char       *stream; /* "{gp3}:settled" */
    uint32_t          shard;  /* 3 */
    const char       *id;     /* stream entry id, "1718000000000-0" */
    const gp_field_t *fields; /* in stream order */
    size_t            nfields;
    long long         deliveries; /* 1 on the first delivery */
} gp_event_t;

typedef struct gp_plugin_env_s gp_plugin_env_t;

struct gp_plugin_env_s {
    const char *plugin; /* the plugin's name */
    /*
     * The plugin thread's blocking hiredis connection, owned by the runtime.
     * NULL during init() (which must not talk to Redis: `gov-pay-worker -t`
     * calls it with no Redis) and replaced after a reconnect, so read
     * env->redis at every use and never keep it. A plugin never frees or
     * reconnects it: on an I/O error it returns GP_RETRY and the runtime
     * reconnects.
     */
    redisContext        *redis;
    const gp_registry_t *registry;
    uint32_t             shards;
    /*
     * One line to stderr: time, level, plugin, and, if ev is not NULL, the
     * stream, entry id and payment code of ev. Never pass a secret, a key or a
     * payer's ID number.
     */
    void (*log)(const gp_plugin_env_t *env, gp_log_level_t level,
                const gp_event_t *ev, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
    void *runtime; /* private to the runtime */

    /*
     * Added for plugins with work of their own beside handle() (notify's
     * webhook deliveries); a plugin that needs none of this ignores them.
     *
     * config_path: worker.json as given; a plugin resolves the relative
     * paths of its configuration against its folder.
     *
     * connect: set by the runtime. A new blocking connection to the worker's
     * Redis (the runtime's connect and command timeouts), for a thread of the
     * plugin's own or an ops command; NULL with a message in err. The caller
     * owns it and redisFree()s it.
     */
    const char *config_path;
    redisContext *(*connect)(const gp_plugin_env_t *env, char *err,
                             size_t errlen);
    /*
     * start: optional, set by the plugin's init(). Called once on the main
     * thread when the worker starts running (never under -t, nor for a
     * command), before the plugin's consumer thread starts; 0, or -1 with a
     * message in err (the worker then exits 1). What it starts, shutdown()
     * stops.
     */
    int (*start)(void *state, char *err, size_t errlen);
    /*
     * command: optional, set by the plugin's init(). Runs
     * `gov-pay-worker -c worker.json <plugin> <args...>` on the main thread
     * (argv[0] is the first argument after the plugin's name) and returns the
     * exit status; output to stdout, errors to stderr.
     */
    int (*command)(void *state, int argc, char **argv);
    /*
     * plugins: the names of the plugins enabled in worker.json, in its
     * order, NULL-terminated; each is the consumer group the plugin reads
     * the settled streams with (the retention plugin's default trim_groups).
     */
    const char *const *plugins;
    /*
     * pii_keys: the keys of worker.json's "pii_key" (NULL when it has none),
     * owned by the runtime: gp_seal_open() the payer's sealed name and ID
     * number with them (docs/internals.md, "Personal data at rest"). Only a
     * plugin that must show them in full opens them, and never logs them.
     */
    const gp_seal_keys_t *pii_keys;
};

typedef struct {
    const char *name;
    /*
     * Checks conf (the plugin's object in worker.json; unknown fields are an
     * error) and builds *state. 0, or -1 with a message in err. Keep env: it
     * stays valid until shutdown().
     */
    int (*init)(const json_t *conf, gp_plugin_env_t *env, void **state,
                char *err, size_t errlen);
    /*
     * GP_DONE, optionally with a short note in msg for the log line; or
     * GP_RETRY / GP_FAILED with a one-line reason in msg (logged, and stored in
     * the dead letter: no secrets, no ID numbers, no personal data)
     */
    gp_result_t (*handle)(void *state, const gp_event_t *ev, char *msg,
                          size_t msglen);
    void (*shutdown)(void *state);
    /*
     * The kinds of stream the plugin reads, NULL-terminated: "settled"
     * ({gpN}:settled, payments and receipts), "refunds" ({gpN}:refunds),
     * "anomaly" ({gpN}:anomaly). NULL: {"settled"}. The runtime reads every
     * kind on every shard with the plugin's consumer group; ev->stream says
     * which one an event came from.
     */
    const char *const *streams;
} gp_plugin_t;


/* the kinds of stream of a plugin (its streams, or "settled") */
static inline const char *const *
gp_plugin_streams(const gp_plugin_t *p)
{
    static const char *const settled[] = { "settled", NULL };

    return p->streams != NULL ? p->streams : settled;
}


/*
 * the value of the first field called name, or NULL; its length in *len if len
 * is not NULL
 */
static inline const char *
gp_event_get(const gp_event_t *ev, const char *name, size_t *len)
{
    size_t i, n;

    n = strlen(name);

    for (i = 0; i < ev->nfields; i++) {
        if (ev->fields[i].name_len == n
            && memcmp(ev->fields[i].name, name, n) == 0) {
            if (len != NULL) {
                *len = ev->fields[i].value_len;
            }
            return ev->fields[i].value;
        }
    }

    return NULL;
}


/*
 * the value of field in an HGETALL reply (NUL-terminated by hiredis), or
 * NULL; its length in *len if len is not NULL (0 when there is none)
 */
static inline const char *
gp_hash_get(redisReply *h, const char *field, size_t *len)
{
    size_t i, n;

    n = strlen(field);

    for (i = 0; i + 1 < h->elements; i += 2) {
        if (h->element[i]->type == REDIS_REPLY_STRING && h->element[i]->len == n
            && memcmp(h->element[i]->str, field, n) == 0
            && h->element[i + 1]->type == REDIS_REPLY_STRING)
        {
            if (len != NULL) {
                *len = h->element[i + 1]->len;
            }
            return h->element[i + 1]->str;
        }
    }

    if (len != NULL) {
        *len = 0;
    }

    return NULL;
}


/* a decimal integer of 1 to 18 digits, no sign: 0, or -1 */
static inline int
gp_parse_i64(const char *s, size_t n, int64_t *v)
{
    size_t  i;
    int64_t x;

    if (n == 0 || n > 18) {
        return -1;
    }

    x = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        x = x * 10 + (s[i] - '0');
    }

    *v = x;
    return 0;
}


/*
 * the first member of a configuration object whose name is not in allowed
 * (NULL-terminated), or NULL: unknown fields are errors, as in the API
 */
static inline const char *
gp_conf_unknown(const json_t *obj, const char **allowed)
{
    const char *key, **f;
    json_t     *value;

    json_object_foreach((json_t *) obj, key, value)
    {
        (void) value;

        for (f = allowed; *f != NULL; f++) {
            if (strcmp(*f, key) == 0) {
                break;
            }
        }

        if (*f == NULL) {
            return key;
        }
    }

    return NULL;
}


/*
 * a file named in worker.json: relative to worker.json's folder, as every path
 * in it; absolute as it is. malloc'd, or NULL
 */
static inline char *
gp_conf_path(const gp_plugin_env_t *env, const char *file)
{
    const char *slash;
    size_t      dir;
    char       *p;

    slash = env->config_path != NULL ? strrchr(env->config_path, '/') : NULL;

    if (file[0] == '/' || slash == NULL) {
        return strdup(file);
    }

    dir = (size_t) (slash - env->config_path);

    p = malloc(dir + 1 + strlen(file) + 1);
    if (p == NULL) {
        return NULL;
    }

    memcpy(p, env->config_path, dir);
    p[dir] = '/';
    strcpy(p + dir + 1, file);

    return p;
}


/* the built-in plugins (workers/plugins/) */
extern const gp_plugin_t gp_plugin_receipt;
extern const gp_plugin_t gp_plugin_notify;
extern const gp_plugin_t gp_plugin_retention;
extern const gp_plugin_t gp_plugin_refund;
extern const gp_plugin_t gp_plugin_anomaly;

#endif /* GP_PLUGIN_H */
