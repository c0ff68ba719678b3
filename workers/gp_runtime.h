/*
 * gp_runtime: the stream loop of gov-pay-worker: one thread per enabled plugin,
 * each with its own blocking Redis connection, consuming the S settled streams
 * with the plugin's consumer group (XREADGROUP, XACK, XAUTOCLAIM, delivery
 * counts, dead letters, reconnects, stop).
 */

#ifndef GP_RUNTIME_H
#define GP_RUNTIME_H

#include <stddef.h>

#include "gp_config.h"
#include "gp_plugin.h"

typedef struct gp_runtime_s gp_runtime_t;

/* test-only fault injection, from the environment (workers/README.md) */
typedef enum {
    GP_FAULT_NONE = 0,
    GP_FAULT_EXIT_BEFORE_ACK /* _exit(137) after GP_DONE, before the XACK */
} gp_fault_t;

/* a built-in plugin by name, or NULL */
const gp_plugin_t *gp_plugin_find(const char *name);

/*
 * Builds the runtime for conf (which must outlive it) and calls every plugin's
 * init(); with no Redis yet, so `-t` uses it too. 0, or -1 with a message in
 * err naming the plugin.
 */
int gp_runtime_create(gp_config_t *conf, gp_fault_t fault, gp_runtime_t **out,
                      char *err, size_t errlen);
/*
 * starts one thread per plugin; 0 or -1 (threads already started are stopped
 * and joined)
 */
int gp_runtime_start(gp_runtime_t *rt, char *err, size_t errlen);
/*
 * `gov-pay-worker -c worker.json <plugin> <args...>`: runs the enabled plugin's
 * command (env->command) with argv[0] = the first argument after the plugin's
 * name; returns the exit status (2 when the plugin is not enabled or has no
 * commands, with a message on stderr)
 */
int gp_runtime_command(gp_runtime_t *rt, const char *plugin, int argc,
                       char **argv);
/*
 * a new blocking connection to the worker's Redis with the runtime's connect
 * and command timeouts and keepalive (for ops commands); NULL with a message
 * in err. The caller redisFree()s it.
 */
redisContext *gp_redis_connect(const gp_config_t *conf, char *err,
                               size_t errlen);

/*
 * asks every thread to stop after the entry in hand; not async-signal-safe:
 * call it from the thread that waits for signals
 */
void gp_runtime_stop(gp_runtime_t *rt);
/*
 * Waits for the threads. A thread still busy after grace_ms (a Redis that
 * stopped answering) has its socket shut down, so its blocking call returns and
 * it exits; the entry in hand stays pending and is delivered again later.
 */
void gp_runtime_join(gp_runtime_t *rt, int grace_ms);
/*
 * calls every plugin's shutdown() and frees; the threads must have been joined
 */
void gp_runtime_free(gp_runtime_t *rt);

/*
 * one log line to stderr; plugin may be NULL (the runtime itself), ev may be
 * NULL
 */
void gp_log(gp_log_level_t level, const char *plugin, const gp_event_t *ev,
            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void gp_log_set_level(gp_log_level_t level);

#endif /* GP_RUNTIME_H */
