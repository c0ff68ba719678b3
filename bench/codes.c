/*
 * bench/codes.c: the payment codes of notices the benchmark made, from their
 * shard and sequence (bench/edge.pl pays them with sandbox callbacks); the
 * edge's own common/gp_code.c, so the codes are exactly the edge's.
 *
 *   build/bench/codes <code key file> <division> <yy> <shards>
 *       stdin: "<shard> <seq>" per line; stdout: one code per line
 */

#include <stdio.h>
#include <stdlib.h>

#include "gp_code.h"


int
main(int argc, char **argv)
{
    gp_code_key_t      k;
    char               err[512], code[GP_CODE_LEN + 1];
    unsigned long      shards, yy;
    unsigned long long seq;
    unsigned           shard;
    int                rc;

    if (argc != 5) {
        fprintf(stderr,
                "usage: codes <code key file> <division> <yy> <shards>\n");
        return 2;
    }

    if (gp_code_key_load(argv[1], &k, err, sizeof(err)) != 0) {
        fprintf(stderr, "codes: %s\n", err);
        return 1;
    }

    yy = strtoul(argv[3], NULL, 10);
    shards = strtoul(argv[4], NULL, 10);
    rc = 0;

    while (scanf("%u %llu", &shard, &seq) == 2) {
        if (gp_code_make(&k, argv[2], (unsigned) yy, (uint32_t) shards, shard,
                         seq, code)
            != 0)
        {
            fprintf(stderr, "codes: no code for shard %u seq %llu\n", shard,
                    seq);
            rc = 1;
            break;
        }

        puts(code);
    }

    gp_code_key_free(&k);
    return rc;
}
