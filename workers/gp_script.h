/*
 * gp_script: the Redis Lua scripts of the worker, run with EVALSHA.
 *
 * The scripts are .lua files, embedded at build time (ngx_gov_pay_module/scripts/embed.sh):
 * the module's own (the .lua files of ngx_gov_pay_module/scripts/: a refund's end,
 * refund_done.lua, is written by the edge and by the worker alike) and the worker's (the
 * .lua files of workers/scripts/).
 * gp_script_eval() sends EVALSHA and, on NOSCRIPT (a restarted Redis without AOF, SCRIPT
 * FLUSH), EVAL with the source, which loads it again: no SCRIPT LOAD round trip is needed.
 */

#ifndef GP_SCRIPT_H
#define GP_SCRIPT_H

#include <stddef.h>

#include <hiredis/hiredis.h>

typedef struct {
    const char *name;
    const char *src;
    char        sha[41]; /* hex SHA-1 of src */
} gp_script_t;

/* the embedded script of that name (file name without ".lua"), or NULL */
const gp_script_t *gp_script(const char *name);

/*
 * EVALSHA; EVAL with the source on NOSCRIPT. argv[0], argv[1] and argv[2] are
 * filled here (keep them free), the keys and arguments follow; argvlen may be
 * NULL (all NUL-terminated) or give every length from index 3 on. The reply,
 * or NULL on an I/O error (c->err set).
 */
redisReply *gp_script_eval(redisContext *c, const gp_script_t *s, int nkeys,
                           int argc, const char **argv, size_t *argvlen);

#endif /* GP_SCRIPT_H */
