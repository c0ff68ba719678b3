/*
 * seal_tool: gp_seal from the command line, for the Perl tests only (they
 * read and tamper with the sealed receipt documents in Redis).
 *
 *   seal_tool seal|open <key file> <field> <unit> <request_id> <created_at>
 *
 * reads the plain bytes (seal) or the record (open) on stdin and writes the
 * record (seal) or the plain bytes (open) on stdout; exit 0, or 1 with a
 * reason on stderr.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gp_seal.h"


int
main(int argc, char **argv)
{
    gp_seal_keys_t *keys;
    gp_seal_ctx_t   sc;
    gp_seal_rc_t    rc;
    char            err[256], *in, *out;
    size_t          n, cap, outlen, outn;
    int             ret;

    if (argc != 7
        || (strcmp(argv[1], "seal") != 0 && strcmp(argv[1], "open") != 0)) {
        fprintf(stderr, "usage: seal_tool seal|open <key file> <field> <unit> "
                        "<request_id> <created_at>\n");
        return 1;
    }

    if (gp_seal_init(err, sizeof(err)) != 0
        || gp_seal_keys_load(argv[2], &keys, err, sizeof(err)) != 0)
    {
        fprintf(stderr, "seal_tool: %s\n", err);
        return 1;
    }

    cap = 65536;
    n = 0;
    in = malloc(cap);

    while (in != NULL) {
        size_t got = fread(in + n, 1, cap - n, stdin);

        n += got;
        if (n < cap) {
            break;
        }

        cap *= 2;
        in = realloc(in, cap);
    }

    if (in == NULL) {
        fprintf(stderr, "seal_tool: out of memory\n");
        gp_seal_keys_free(keys);
        return 1;
    }

    sc.field = argv[3];
    sc.unit = argv[4];
    sc.request_id = argv[5];
    sc.created_at = strtoll(argv[6], NULL, 10);

    outlen = strcmp(argv[1], "seal") == 0 ? GP_SEAL_RECORD_MAX(n) : n + 1;
    out = malloc(outlen);

    rc = out == NULL ? GP_SEAL_ERROR
         : strcmp(argv[1], "seal") == 0
             ? gp_seal(keys, &sc, in, n, out, outlen, &outn)
             : gp_seal_open(keys, &sc, in, n, out, outlen, &outn);

    ret = 0;

    if (rc != GP_SEAL_OK) {
        fprintf(stderr, "seal_tool: %s\n", gp_seal_strerror(rc));
        ret = 1;
    } else if (fwrite(out, 1, outn, stdout) != outn) {
        ret = 1;
    }

    free(in);
    free(out);
    gp_seal_keys_free(keys);
    return ret;
}
