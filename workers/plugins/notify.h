/*
 * notify.h: what the three files of the notify plugin share (notify.c: the
 * configuration, the consumer side and the notice body; notify_send.c: the
 * delivery thread on libcurl's multi interface; notify_cmd.c: the ops
 * commands `notify status` and `notify resend`). Nothing here is seen by the
 * runtime: it knows the plugin only as gp_plugin_notify.
 */

#ifndef GP_NOTIFY_H
#define GP_NOTIFY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>

#include "gp_crypto.h"
#include "gp_plugin.h"


#define GP_NOTIFY_EVT_MAX    80 /* "evt_[r]<shard>_<ms>_<seq>" */
#define GP_NOTIFY_RKEY_MAX   72 /* "u:<unit id>" / "s:<name>" */
#define GP_NOTIFY_MEMBER_MAX (GP_NOTIFY_EVT_MAX + 1 + GP_NOTIFY_RKEY_MAX)


/* a recipient of webhooks: a unit (by registry index) or a subscriber */
typedef struct {
    char                *rkey; /* "u:<unit id>" or "s:<name>" */
    const char          *url;  /* NULL: a unit without a webhook */
    gp_md_t              md;
    const unsigned char *key;
    size_t               key_len;
    unsigned char       *own_key; /* a subscriber's secret */
    char                *own_url;
    int                  inflight; /* delivery thread only */
} gp_notify_rcpt_t;


typedef struct {
    const char *src;
    char        sha[41];
} gp_notify_script_t;


typedef struct gp_notify_xfer_s gp_notify_xfer_t;


typedef struct {
    gp_plugin_env_t *env;

    /* configuration */
    int64_t *schedule_ms;
    size_t   nschedule;
    long     timeout_ms;
    long     connect_timeout_ms;
    int      max_in_flight;
    int      per_recipient;
    int      poll_ms;
    long     keep_delivered_s;
    long     keep_dead_s;
    char    *public_url; /* may be NULL */
    char    *ca_file;    /* may be NULL */

    /* registry units first (same index), then the subscribers */
    gp_notify_rcpt_t *rcpts;
    size_t            nunits;
    size_t            nrcpts;

    gp_notify_script_t enqueue, claim, done, release;

    /* per shard: "{gpN}:notify:queue", "{gpN}:notify:stats" */
    char **queue;
    char **stats;

    int curl_inited;

    /* the delivery thread (notify_send.c) */
    pthread_t          thread;
    int                started;
    atomic_int         stop;
    CURLM             *multi;
    atomic_uchar      *dirty; /* per shard: new deliveries queued by handle() */
    atomic_int         any_dirty;
    unsigned char     *backlog; /* per shard: due deliveries left for lack of
                               room */
    redisContext      *redis;
    gp_notify_xfer_t  *flying; /* in curl's hands */
    gp_notify_xfer_t  *landed; /* outcome not yet recorded in redis */
    int                nflying;
    int                freed;     /* a transfer finished: look at backlogs */
    int64_t            next_scan; /* wall-clock ms */
    int64_t            last_woken_scan;
    int                backoff_ms;
    char               token_prefix[17];
    unsigned long long token_seq;
} gp_notify_t;


/* notify.c */
int64_t gp_notify_now_ms(void);
/* the recipient of rkey ("u:.." / "s:.."), or NULL */
gp_notify_rcpt_t *gp_notify_rcpt(gp_notify_t *n, const char *rkey, size_t len);
/*
 * The event id of stream entry entry_id of stream ("{gpN}:settled" or
 * "{gpN}:refunds"): "evt_<shard>_<ms>_<seq>" for the settled stream,
 * "evt_r<shard>_<ms>_<seq>" for the refunds stream, so ids stay unique
 * across the streams of a shard; 0 or -1
 */
int gp_notify_event_id(uint32_t shard, const char *stream, const char *entry_id,
                       char *out, size_t outlen);
/* shard, stream ("{gpN}:settled" | "{gpN}:refunds") and entry id of an event
 * id; 0 or -1 */
int gp_notify_parse_event_id(const char *evt, uint32_t shards, uint32_t *shard,
                             char *stream, size_t slen, char *entry_id,
                             size_t idlen);
/* 1 if events of this type are sent: notice.paid, receipt.issued,
 * receipt.reversed, refund.succeeded, refund.failed */
int gp_notify_type(const char *type);
/*
 * The webhook body of an event: reads the notice named by the event's
 * notice_key on c (a refund's event: the refund is in the notice too).
 * GP_DONE and *body (malloc'ed), or GP_RETRY (redis trouble) / GP_FAILED (no
 * such notice, bad event) with a reason in msg.
 */
gp_result_t gp_notify_body(gp_notify_t *n, redisContext *c,
                           const gp_event_t *ev, char **body, char *msg,
                           size_t msglen);
/*
 * Queues the event for the recipients rkeys in one script: mode "new" only
 * creates the deliveries that do not exist (a redelivered stream entry
 * changes nothing); mode "resend" also resets existing ones to a fresh
 * schedule, due now. ack_group (not NULL): the entry is acknowledged for
 * that consumer group in the same script. *queued: how many were created or
 * reset. 0, or -1 with a reason in msg (the connection may be broken).
 */
int gp_notify_enqueue(gp_notify_t *n, redisContext *c, const gp_event_t *ev,
                      const char *event_id, const char *body,
                      const char **rkeys, size_t nrkeys, const char *mode,
                      const char *ack_group, long long *queued, char *msg,
                      size_t msglen);
/* EVALSHA, then EVAL on NOSCRIPT; NULL on an I/O error */
redisReply *gp_notify_eval(redisContext *c, gp_notify_script_t *script,
                           int nkeys, int argc, const char **argv,
                           const size_t *argvlen);
/* SCRIPT LOAD of every script on c; 0 or -1 */
int gp_notify_load_scripts(gp_notify_t *n, redisContext *c, char *err,
                           size_t errlen);

/* notify_send.c */
int  gp_notify_start(void *state, char *err, size_t errlen);
void gp_notify_stop(gp_notify_t *n);
void gp_notify_wake(gp_notify_t *n, uint32_t shard);

/* notify_cmd.c */
int gp_notify_command(void *state, int argc, char **argv);

#endif /* GP_NOTIFY_H */
