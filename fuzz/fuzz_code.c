/*
 * fuzz_code: a payment code as the payer routes, callbacks and the API take it (common/
 * gp_code.c): check digit, division, year, the keyed permutation back to shard and
 * sequence; a code that parses must be made again, digit for digit, from what it names.
 */

#include "fuzz.h"
#include "gp_code.h"

/* the key is prepared once, as nginx and the worker do at start */
static gp_code_key_t *
fuzz_code_key(void)
{
    static gp_code_key_t k;
    static int           ready;
    unsigned char        key[GP_CODE_KEY_LEN];

    if (!ready) {
        memset(key, 0x5a, sizeof(key));

        if (gp_code_key_init(&k, key) != 0) {
            abort();
        }

        ready = 1;
    }

    return &k;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gp_code_key_t *k;
    char           division[7], again[21];
    unsigned       yy;
    uint32_t       shard;
    uint64_t       seq;

    k = fuzz_code_key();

    if (gp_code_parse(k, (const char *) data, size, 16, division, &yy, &shard, &seq) != 0) {
        return 0;
    }

    if (gp_code_make(k, division, yy, 16, shard, seq, again) != 0
        || memcmp(again, data, 20) != 0)
    {
        abort(); /* a parsed code must round-trip */
    }

    return 0;
}
