/*
 * anomaly.h: what the two files of the anomaly plugin share (anomaly.c: the
 * configuration and the consumer side; anomaly_cmd.c: the ops commands
 * `anomaly list | show | refund | resolve`). Nothing here is seen by the
 * runtime: it knows the plugin only as gp_plugin_anomaly.
 */

#ifndef GP_ANOMALY_H
#define GP_ANOMALY_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "gp_code.h"
#include "gp_plugin.h"
#include "gp_script.h"


#define GP_ANOMALY_ID_MAX      48 /* "A<shard>-<ms>-<seq>" */
#define GP_ANOMALY_EID_MAX     44 /* "<ms>-<seq>" */
#define GP_ANOMALY_REASONS_MAX 16


typedef struct {
    gp_plugin_env_t   *env;
    gp_code_key_t      code_key;
    char              *auto_refund[GP_ANOMALY_REASONS_MAX]; /* reasons */
    size_t             nauto;
    char              *owner;  /* NULL: the notice's unit */
    const gp_script_t *script; /* anomaly_case.lua */
} gp_anomaly_t;


/* anomaly.c */

/*
 * anomaly_case.lua on the shard's keys for the case eid ("<ms>-<seq>") of
 * notice seq: argv holds ARGV[1] (the action) onward, argc of them. The
 * reply, or NULL on an I/O error (c->err set).
 */
redisReply *gp_anomaly_case(gp_anomaly_t *a, redisContext *c, uint32_t shard,
                            const char *seq, int argc, const char **argv);
/* the text of a refund of money recorded with reason (its r<nn>.reason) */
const char *gp_anomaly_refund_reason(const char *reason);
/* "A<shard>-<eid>" */
void gp_anomaly_case_id(uint32_t shard, const char *eid, char *out,
                        size_t outlen);
/* shard and "<ms>-<seq>" of a case id; 0 or -1 (not a case id of a shard of
 * this deployment) */
int gp_anomaly_parse_id(const char *id, uint32_t shards, uint32_t *shard,
                        char *eid, size_t eidlen);
/* 1 if s is an entry id "<ms>-<seq>" (digits) of at most
 * GP_ANOMALY_EID_MAX - 1 characters */
int gp_anomaly_eid_ok(const char *s, size_t len);

/* anomaly_cmd.c */
int gp_anomaly_command(void *state, int argc, char **argv);

#endif /* GP_ANOMALY_H */
