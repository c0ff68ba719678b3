/*
 * bench/crypto.c: how fast common/ does what every request does: payment
 * codes made and read (the keyed Feistel permutation), HMACs of a unit's
 * string to sign, SHA-256 of a create body.  Prints operations per second
 * of CPU time and microseconds of CPU per operation (CPU time, not the
 * clock: the machines are shared); a figure, never a test.
 *
 *   build/bench/crypto [seconds per figure, default 1]
 *   build/bench/crypto --count N      exactly N of each (for callgrind:
 *       valgrind --tool=callgrind build/bench/crypto --count 1000, then
 *       callgrind_annotate --inclusive=yes: instructions per call, the
 *       figure that does not depend on what else the machine runs)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gp_code.h"
#include "gp_crypto.h"


static double
bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


static void
bench_print(const char *what, unsigned long n, double secs)
{
    printf("%-44s %12.0f/s %9.2f us\n", what, (double) n / secs,
           secs * 1e6 / (double) n);
}


int
main(int argc, char **argv)
{
    double         secs, t0, t;
    unsigned long  n, count;
    gp_code_key_t  k;
    char           code[GP_CODE_LEN + 1], division[7], msg[400];
    static char    codes[1024][GP_CODE_LEN + 1];
    unsigned       yy;
    uint32_t       shard;
    uint64_t       seq;
    unsigned char  out[32], key[40], ckey[GP_CODE_KEY_LEN];
    gp_hmac_key_t *hk, *hk3;
    gp_part_t      parts[5];
    size_t         i;
    volatile int   sink = 0;

    count = 0;
    secs = 1.0;

    if (argc > 2 && strcmp(argv[1], "--count") == 0) {
        count = strtoul(argv[2], NULL, 10);

    } else if (argc > 1) {
        secs = atof(argv[1]);
    }

    if (secs <= 0) {
        secs = 1.0;
    }

    for (i = 0; i < GP_CODE_KEY_LEN; i++) {
        ckey[i] = (unsigned char) i;
    }

    if (gp_code_key_init(&k, ckey) != 0) {
        fprintf(stderr, "gp_code_key_init() failed\n");
        return 1;
    }

    for (i = 0; i < sizeof(key); i++) {
        key[i] = (unsigned char) ('a' + i % 26);
    }

    /* a create's string to sign is about this long */
    memset(msg, 'x', sizeof(msg));

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_code_make(&k, "330100", 26, 16, (uint32_t) (n % 16),
                             n / 16 + 1, code);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("payment code made (gp_code_make)", n, t);

    /* codes of many sequences: the cycle walk's length varies with them */

    for (i = 0; i < 1024; i++) {
        sink += gp_code_make(&k, "330100", 26, 16, (uint32_t) (i % 16),
                             i + 1000, codes[i]);
    }

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_code_parse(&k, codes[n % 1024], GP_CODE_LEN, 16, division,
                              &yy, &shard, &seq);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("payment code read (gp_code_parse)", n, t);

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_hmac(GP_MD_SHA256, key, sizeof(key), msg, sizeof(msg), out);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("HMAC-SHA256, 400 bytes (gp_hmac)", n, t);

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_hmac(GP_MD_SM3, key, sizeof(key), msg, sizeof(msg), out);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("HMAC-SM3, 400 bytes (gp_hmac)", n, t);

    hk = gp_hmac_key_new(GP_MD_SHA256, key, sizeof(key));
    hk3 = gp_hmac_key_new(GP_MD_SM3, key, sizeof(key));
    if (hk == NULL || hk3 == NULL) {
        fprintf(stderr, "gp_hmac_key_new() failed\n");
        return 1;
    }

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_hmac_keyed(hk, msg, sizeof(msg), out);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("HMAC-SHA256, 400 bytes, prepared key", n, t);

    /* a unit's string to sign, as the edge hands it: five parts */
    for (i = 0; i < 5; i++) {
        parts[i].p = msg + 80 * i;
        parts[i].n = 80;
    }

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_hmac_keyed_parts(hk, parts, 5, out);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("HMAC-SHA256, 400 bytes in 5 parts, prepared", n, t);

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_hmac_keyed(hk3, msg, sizeof(msg), out);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("HMAC-SM3, 400 bytes, prepared key", n, t);

    gp_hmac_key_free(hk);
    gp_hmac_key_free(hk3);

    n = 0;
    t0 = bench_now();
    do {
        sink += gp_digest(GP_MD_SHA256, msg, sizeof(msg), out);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("SHA-256, 400 bytes (gp_digest)", n, t);

    n = 0;
    t0 = bench_now();
    do {
        sink += (int) gp_shard_of("330100-EDU-001", 14, msg, 24, 16);
        n++;
    } while (count ? n < count : (t = bench_now() - t0) < secs);
    t = bench_now() - t0;
    bench_print("shard of a create (gp_shard_of)", n, t);

    gp_code_key_free(&k);

    return sink == 0x7fffffff;
}
