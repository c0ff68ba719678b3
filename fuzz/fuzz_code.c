/*
 * fuzz_code: a payment code as the payer routes, callbacks and the API take it (common/
 * gp_code.c): check digit, division, year, the keyed permutation back to shard and
 * sequence; a code that parses must be made again, digit for digit, from what it names.
 */

#include "fuzz.h"
#include "gp_code.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gp_code_key_t k;
    char          division[7], again[21];
    unsigned      yy;
    uint32_t      shard;
    uint64_t      seq;

    memset(&k, 0x5a, sizeof(k));

    if (gp_code_parse(&k, (const char *) data, size, 16, division, &yy, &shard, &seq) != 0) {
        return 0;
    }

    if (gp_code_make(&k, division, yy, 16, shard, seq, again) != 0
        || memcmp(again, data, 20) != 0)
    {
        abort(); /* a parsed code must round-trip */
    }

    return 0;
}
