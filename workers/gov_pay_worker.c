/*
 * gov-pay-worker: runs the worker plugins (receipt, later notify, ...) over the
 * settled streams. This file is the process: arguments, configuration, signals,
 * threads.
 *
 *   gov-pay-worker -c worker.json      run until SIGTERM or SIGINT, exit 0
 *   gov-pay-worker -t -c worker.json   check the configuration, exit 0 or 1
 *   gov-pay-worker -c worker.json <plugin> <args...>
 *                                      a plugin's ops command (notify resend,
 *                                      notify status, retention run, retention
 *                                      status, refund status|show|retry,
 *                                      anomaly list|show|refund|resolve), exit
 *                                      status its own
 *   gov-pay-worker -c worker.json pii status | reseal
 *                                      personal data at rest (gp_pii.c)
 *
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait(), so no code runs in a signal handler: a stop request sets the
 * runtime's flag, every plugin thread finishes the entry in hand and returns
 * within block_ms, and the main thread joins them.
 */

#define _GNU_SOURCE

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "gp_config.h"
#include "gp_pii.h"
#include "gp_runtime.h"


#define GP_WORKER_NAME   "gov-pay-worker"
#define GP_STOP_GRACE_MS 500


static void gp_usage(FILE *f);
static int  gp_fault_from_env(gp_fault_t *fault);
static int  gp_run(gp_config_t *conf, gp_fault_t fault);
static int  gp_command(gp_config_t *conf, int argc, char **argv);


int
main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        { "test",  no_argument,       NULL, 't'},
        { "help",  no_argument,       NULL, 'h'},
        { NULL,    0,                 NULL, 0  }
    };

    const char   *path, *debug;
    gp_config_t  *conf;
    gp_runtime_t *rt;
    gp_fault_t    fault;
    char          err[1024];
    int           opt, test, rc;

    path = NULL;
    test = 0;

    /* '+': options end at the first operand (a plugin's command) */
    while ((opt = getopt_long(argc, argv, "+c:th", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test = 1;
            break;
        case 'h':
            gp_usage(stdout);
            return 0;
        default:
            gp_usage(stderr);
            return 1;
        }
    }

    if (path == NULL || (test && optind != argc)) {
        gp_usage(stderr);
        return 1;
    }

    tzset();
    json_object_seed(0); /* once, before any thread builds an object */

    debug = getenv("GOV_PAY_WORKER_DEBUG");
    if (debug != NULL && strcmp(debug, "1") == 0) {
        gp_log_set_level(GP_LOG_DEBUG);
    }

    if (gp_fault_from_env(&fault) != 0) {
        return 1;
    }

    if (gp_config_load(path, &conf, err, sizeof(err)) != 0) {
        fprintf(stderr, GP_WORKER_NAME ": %s\n", err);
        if (test) {
            fprintf(stderr,
                    GP_WORKER_NAME ": configuration file %s test failed\n",
                    path);
        }
        return 1;
    }

    if (test) {
        /*
         * plugins check their own configuration in init(), which needs no Redis
         */
        if (gp_runtime_create(conf, GP_FAULT_NONE, &rt, err, sizeof(err)) != 0)
        {
            fprintf(stderr, GP_WORKER_NAME ": %s: %s\n", path, err);
            fprintf(stderr,
                    GP_WORKER_NAME ": configuration file %s test failed\n",
                    path);
            gp_config_free(conf);
            return 1;
        }

        gp_runtime_free(rt);
        gp_config_free(conf);
        fprintf(stderr,
                GP_WORKER_NAME ": configuration file %s test is successful\n",
                path);
        return 0;
    }

    if (optind < argc) {
        rc = gp_command(conf, argc - optind, argv + optind);
    } else {
        rc = gp_run(conf, fault);
    }

    gp_config_free(conf);

    return rc;
}


static void
gp_usage(FILE *f)
{
    fprintf(f, "usage: " GP_WORKER_NAME " [-t] -c <worker.json>\n"
               "       " GP_WORKER_NAME " -c <worker.json> <plugin> <command> "
               "[args]\n"
               "\n"
               "Consumes the gov-pay settled streams with the plugins named in "
               "worker.json\n"
               "(format: docs/internals.md). Stops on SIGTERM or SIGINT after "
               "the entries in\n"
               "hand, exit status 0.\n"
               "\n"
               "  -c, --config <file>  the worker configuration\n"
               "  -t, --test           check the configuration (and the "
               "registry it names),\n"
               "                       then exit: 0 if valid, 1 if not\n"
               "  -h, --help           this text\n"
               "\n"
               "Plugin commands (the plugin must be enabled in worker.json):\n"
               "  notify status [--json]\n"
               "  notify resend <event-id> [--to <unit-id|subscriber>]\n"
               "  notify resend --unit <unit-id> --since <time> [--until "
               "<time>]\n"
               "                [--to <unit-id|subscriber>]\n"
               "  retention run                one retention pass now (streams, "
               "expiry, archive)\n"
               "  retention status\n"
               "  refund status [--json]       refunds queued, due and "
               "dead-lettered\n"
               "  refund show <refund-id>\n"
               "  refund retry <refund-id> [--resend]\n"
               "  anomaly list [--all] [--json]  the anomaly cases not closed "
               "(--all: every one)\n"
               "  anomaly show <case> [--json]\n"
               "  anomaly refund <case> [--by <who>]\n"
               "  anomaly resolve <case> --note \"<text>\" [--by <who>]\n"
               "\n"
               "Personal data at rest (needs \"pii_key\" in worker.json):\n"
               "  pii status   notices by the key their payer is sealed under\n"
               "  pii reseal   re-seal them all under the first key (and seal "
               "any in clear)\n");
}


/* GOV_PAY_WORKER_FAULT: test-only fault injection (workers/README.md) */
static int
gp_fault_from_env(gp_fault_t *fault)
{
    const char *v;

    *fault = GP_FAULT_NONE;

    v = getenv("GOV_PAY_WORKER_FAULT");
    if (v == NULL || v[0] == '\0') {
        return 0;
    }

    if (strcmp(v, "exit_before_ack") == 0) {
        *fault = GP_FAULT_EXIT_BEFORE_ACK;
        return 0;
    }

    fprintf(stderr,
            GP_WORKER_NAME ": GOV_PAY_WORKER_FAULT: unknown fault \"%s\"\n", v);
    return 1;
}


/* `-c worker.json <plugin> <args...>`: no threads, no stream consumption */
static int
gp_command(gp_config_t *conf, int argc, char **argv)
{
    gp_runtime_t *rt;
    char          err[1024];
    int           rc;

    signal(SIGPIPE, SIG_IGN);

    /* the runtime's own command: no plugin is involved */
    if (strcmp(argv[0], "pii") == 0) {
        return gp_pii_command(conf, argc - 1, argv + 1);
    }

    if (gp_runtime_create(conf, GP_FAULT_NONE, &rt, err, sizeof(err)) != 0) {
        fprintf(stderr, GP_WORKER_NAME ": %s: %s\n", conf->path, err);
        return 1;
    }

    rc = gp_runtime_command(rt, argv[0], argc - 1, argv + 1);
    gp_runtime_free(rt);

    return rc;
}


static int
gp_run(gp_config_t *conf, gp_fault_t fault)
{
    gp_runtime_t *rt;
    sigset_t      set;
    char          err[1024];
    int           sig;

    /* blocked before any thread starts, so every thread inherits the mask */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);

    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        fprintf(stderr, GP_WORKER_NAME ": pthread_sigmask() failed\n");
        return 1;
    }

    if (gp_runtime_create(conf, fault, &rt, err, sizeof(err)) != 0) {
        fprintf(stderr, GP_WORKER_NAME ": %s: %s\n", conf->path, err);
        return 1;
    }

    if (fault != GP_FAULT_NONE) {
        gp_log(GP_LOG_WARN, NULL, NULL,
               "GOV_PAY_WORKER_FAULT is set: test-only fault "
               "injection is active");
    }

    if (gp_runtime_start(rt, err, sizeof(err)) != 0) {
        gp_log(GP_LOG_ERROR, NULL, NULL, "%s", err);
        gp_runtime_free(rt);
        return 1;
    }

    gp_log(GP_LOG_INFO, NULL, NULL,
           "running %zu plugin(s) on %u shards, redis %s", conf->nplugins,
           conf->shards, conf->redis);

    for (;;) {
        if (sigwait(&set, &sig) != 0) {
            continue;
        }

        if (sig == SIGTERM || sig == SIGINT) {
            gp_log(GP_LOG_INFO, NULL, NULL, "%s received, stopping",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }

        if (sig == SIGHUP) {
            gp_log(GP_LOG_INFO, NULL, NULL,
                   "SIGHUP ignored: reload is not implemented, "
                   "restart the worker");
        }

        /* SIGPIPE: a write to a closed socket fails with EPIPE instead */
    }

    gp_runtime_stop(rt);
    gp_runtime_join(rt, conf->block_ms + GP_STOP_GRACE_MS);
    gp_runtime_free(rt);

    gp_log(GP_LOG_INFO, NULL, NULL, "stopped");

    return 0;
}
