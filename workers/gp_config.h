/*
 * gp_config: worker.json, the gov-pay-worker configuration (format in
 * docs/internals.md).
 */

#ifndef GP_CONFIG_H
#define GP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "gp_plugin.h"
#include "gp_registry.h"
#include "gp_seal.h"

#define GP_CONFIG_MAX_SHARDS 1024

/* the longest password a redis_password_file may hold */
#define GP_CONFIG_PASSWORD_MAX 1024

typedef struct {
    const gp_plugin_t *plugin;
    json_t            *conf; /* the plugin's object, a reference held */
} gp_config_plugin_t;

typedef struct {
    char    *path;         /* as given */
    char    *redis;        /* as written, "127.0.0.1:6379" (for logs) */
    char    *redis_unix;   /* "unix:<path>": the socket's path, else NULL */
    char     redis_ip[64]; /* resolved once at load, numeric */
    int      redis_port;
    char    *redis_user; /* the ACL user to AUTH as, or NULL: no AUTH */
    char    *redis_password_file; /* resolved against worker.json's folder */
    uint32_t shards;
    char    *consumer;
    char    *registry_path; /* resolved against the config file's folder */
    gp_registry_t      *registry;
    char               *pii_key_path; /* resolved, NULL when not set */
    gp_seal_keys_t     *pii_keys;     /* the payer's name and ID number */
    int                 block_ms;
    int                 claim_idle_ms;
    int                 max_deliveries;
    gp_config_plugin_t *plugins; /* in the order of the file */
    size_t              nplugins;
} gp_config_t;

/*
 * 0 and *out, or -1 with a message in err naming the file and the field at
 * fault
 */
int  gp_config_load(const char *path, gp_config_t **out, char *err,
                    size_t errlen);
void gp_config_free(gp_config_t *conf);

/*
 * The password of redis_user, read from redis_password_file into buf
 * (NUL-terminated, trailing white space removed), at load and again on every
 * connect, so a changed file is used without a restart. 0, or -1 with a
 * message in err naming the file, never its content.
 */
int gp_config_redis_password(const gp_config_t *conf, char *buf, size_t len,
                             char *err, size_t errlen);

#endif /* GP_CONFIG_H */
