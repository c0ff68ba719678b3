/*
 * gp_script: the worker's embedded Redis scripts and EVALSHA (gp_script.h).
 *
 * The table is made once, on first use, under a pthread_once: every script's
 * SHA-1 is computed from its embedded source, so EVALSHA names exactly the
 * text this binary carries.
 */

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "gp_crypto.h"
#include "gp_script.h"


/* generated from the .lua files (Makefile: embed.sh -s gp_scripts) */
typedef struct {
    const char *name;
    const char *src;
} gp_scripts_src_t;

extern const gp_scripts_src_t gp_scripts[];


#define GP_SCRIPTS_MAX 64

static gp_script_t    gp_script_table[GP_SCRIPTS_MAX];
static size_t         gp_script_n;
static int            gp_script_ok;
static pthread_once_t gp_script_once = PTHREAD_ONCE_INIT;


static void
gp_script_load(void)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int  mdlen;
    size_t        i;

    for (i = 0; gp_scripts[i].name != NULL; i++) {
        if (i == GP_SCRIPTS_MAX
            || EVP_Digest(gp_scripts[i].src, strlen(gp_scripts[i].src), md,
                          &mdlen, EVP_sha1(), NULL)
                   != 1)
        {
            return;
        }

        gp_script_table[i].name = gp_scripts[i].name;
        gp_script_table[i].src = gp_scripts[i].src;
        gp_hex(md, mdlen, gp_script_table[i].sha);
    }

    gp_script_n = i;
    gp_script_ok = 1;
}


const gp_script_t *
gp_script(const char *name)
{
    size_t i;

    if (pthread_once(&gp_script_once, gp_script_load) != 0 || !gp_script_ok) {
        return NULL;
    }

    for (i = 0; i < gp_script_n; i++) {
        if (strcmp(gp_script_table[i].name, name) == 0) {
            return &gp_script_table[i];
        }
    }

    return NULL;
}


redisReply *
gp_script_eval(redisContext *c, const gp_script_t *s, int nkeys, int argc,
               const char **argv, size_t *argvlen)
{
    redisReply *r;
    char        numkeys[16];
    int         i;

    snprintf(numkeys, sizeof(numkeys), "%d", nkeys);

    argv[0] = "EVALSHA";
    argv[1] = s->sha;
    argv[2] = numkeys;

    if (argvlen != NULL) {
        for (i = 0; i < 3; i++) {
            argvlen[i] = strlen(argv[i]);
        }
    }

    r = redisCommandArgv(c, argc, argv, argvlen);

    if (r != NULL && r->type == REDIS_REPLY_ERROR
        && strncmp(r->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(r);

        argv[0] = "EVAL";
        argv[1] = s->src;

        if (argvlen != NULL) {
            argvlen[0] = 4;
            argvlen[1] = strlen(s->src);
        }

        r = redisCommandArgv(c, argc, argv, argvlen);
    }

    argv[0] = argv[1] = argv[2] = NULL;
    return r;
}
