/*
 * gp_code.c: the 20-digit payment code (缴款码) and how a notice is placed on
 * a shard.
 *
 *     division (6) | yy (2) | body (11) | check (1)
 *
 * The check digit is ISO/IEC 7064 MOD 11-10 (pure system, as in the German VAT
 * number) over the first 19 digits, so a mistyped code is refused before any
 * lookup.
 *
 * The body
 * --------
 *
 * A notice is identified inside the edge by its shard and the shard's running
 * sequence number (Redis INCR on {gpN}:seq). Both go into one number
 *
 *     v = seq * S + shard,        0 <= shard < S,  seq >= 1,  v < 10^11
 *
 * and the body is P_k(v), where P_k is a permutation of [0, 10^11) keyed by
 * the 32-byte payment code key (a file shared by nginx and the workers).
 *
 * P_k is built in two layers:
 *
 * 1. A balanced Feistel network on 38-bit values (2^38 > 10^11), split into
 *    two 19-bit halves L | R, with 8 rounds:
 *
 *        L, R  <-  R, L xor F(r, R)          for r = 0 .. 7
 *
 *    F(r, R) is the first 4 bytes, big-endian, of
 *    HMAC-SHA256(k, r as 1 byte || R as 4 bytes big-endian), masked to 19 bits.
 *    A Feistel network is a permutation whatever F is; it is inverted by
 *    running the rounds backwards (L, R <- R xor F(r, L), L).
 *
 * 2. Cycle walking (Black and Rogaway): apply the 38-bit permutation again
 *    and again until the value falls below 10^11. Since the starting value is
 *    in the domain and a permutation's cycles are closed, the walk always ends,
 *    after 2^38 / 10^11 = 2.75 steps on average, and the result is a
 *    permutation of [0, 10^11). The inverse walks the inverse permutation the
 *    same way.
 *
 * Why codes are not enumerable: without k, F is a pseudo-random function, so
 * P_k is a pseudo-random permutation; neighbouring sequence numbers give
 * unrelated bodies, and seeing any number of codes says nothing useful about
 * which other bodies are in use. Issued codes are a tiny, scattered fraction
 * of 10^11, so guessing one costs on average 10^11 / (notices alive) tries,
 * and the payer routes are rate-limited by nginx. The check digit is public
 * and only catches typing errors.
 *
 * Why the shard is recoverable: P_k is a bijection and whoever holds k can
 * invert it, so any code gives back v, and v mod S, v div S are the shard and
 * the sequence, hence the notice key {gpN}:n:<seq>, without any read. The key
 * and S are therefore fixed for the life of a deployment: changing either
 * would make existing codes point at other notices.
 *
 * The key is prepared once (gp_code_key_init): the HMAC's inner and outer
 * digest states after the padded key, so a round hashes only its 5 bytes (a
 * code is made or read in about 5 us; rebuilding the keyed HMAC each round
 * cost about 29 us).  A prepared key is read-only; each call has its own
 * scratch context, so all functions are thread-safe.
 */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "gp_code.h"


#define GP_FEISTEL_HALF_BITS 19
#define GP_FEISTEL_HALF_MASK ((1U << GP_FEISTEL_HALF_BITS) - 1)
#define GP_FEISTEL_ROUNDS    8
#define GP_CODE_FAIL         UINT64_MAX

/* a key file is 64 hex digits; anything much longer is not a key file */
#define GP_CODE_KEY_FILE_MAX 4096


/* ---- ISO/IEC 7064 MOD 11-10 ---------------------------------------------- */

int
gp_mod11_10(const char *digits, size_t n)
{
    unsigned p, s;
    size_t   i;

    p = 10;

    for (i = 0; i < n; i++) {
        if (digits[i] < '0' || digits[i] > '9') {
            return -1;
        }

        s = (p + (unsigned) (digits[i] - '0')) % 10;
        if (s == 0) {
            s = 10;
        }
        p = (2 * s) % 11;
    }

    return '0' + (int) ((11 - p) % 10);
}


/* ---- the keyed Feistel permutation --------------------------------------- */

int
gp_code_key_init(gp_code_key_t *k, const unsigned char key[GP_CODE_KEY_LEN])
{
    k->hmac = gp_hmac_key_new(GP_MD_SHA256, key, GP_CODE_KEY_LEN);

    return k->hmac ? 0 : -1;
}


void
gp_code_key_free(gp_code_key_t *k)
{
    if (k == NULL) {
        return;
    }

    gp_hmac_key_free(k->hmac);
    k->hmac = NULL;
}


/* F(r, half): 19 bits of HMAC-SHA256(k, r || half as 4 bytes big-endian) */
static int
gp_feistel_round(const gp_code_key_t *k, gp_hmac_scratch_t *s, unsigned r,
                 uint32_t half, uint32_t *out)
{
    unsigned char msg[5], mac[32];
    gp_part_t     part;

    msg[0] = (unsigned char) r;
    msg[1] = (unsigned char) (half >> 24);
    msg[2] = (unsigned char) (half >> 16);
    msg[3] = (unsigned char) (half >> 8);
    msg[4] = (unsigned char) half;

    part.p = msg;
    part.n = sizeof(msg);

    if (gp_hmac_keyed_with(k->hmac, s, &part, 1, mac) != 0) {
        return -1;
    }

    *out = ((uint32_t) mac[0] << 24 | (uint32_t) mac[1] << 16
            | (uint32_t) mac[2] << 8 | mac[3])
           & GP_FEISTEL_HALF_MASK;

    return 0;
}


/* one pass of the 38-bit permutation, forwards or backwards */
static int
gp_feistel_apply(const gp_code_key_t *k, gp_hmac_scratch_t *s, uint64_t x,
                 int inverse, uint64_t *y)
{
    uint32_t l, r, t, fr;
    unsigned i, round;

    l = (uint32_t) (x >> GP_FEISTEL_HALF_BITS) & GP_FEISTEL_HALF_MASK;
    r = (uint32_t) x & GP_FEISTEL_HALF_MASK;

    for (i = 0; i < GP_FEISTEL_ROUNDS; i++) {
        round = inverse ? GP_FEISTEL_ROUNDS - 1 - i : i;

        if (!inverse) {
            if (gp_feistel_round(k, s, round, r, &fr) != 0) {
                return -1;
            }
            t = r;
            r = l ^ fr;
            l = t;

        } else {
            if (gp_feistel_round(k, s, round, l, &fr) != 0) {
                return -1;
            }
            t = l;
            l = r ^ fr;
            r = t;
        }
    }

    *y = (uint64_t) l << GP_FEISTEL_HALF_BITS | r;
    return 0;
}


/*
 * cycle walking: repeat the 38-bit permutation until the value is in the domain
 */
static uint64_t
gp_code_walk(const gp_code_key_t *k, uint64_t v, int inverse)
{
    gp_hmac_scratch_t *s;
    uint64_t           x;

    if (k == NULL || k->hmac == NULL || v >= GP_CODE_DOMAIN) {
        return GP_CODE_FAIL;
    }

    s = gp_hmac_scratch_new();
    if (s == NULL) {
        return GP_CODE_FAIL;
    }

    x = v;

    do {
        if (gp_feistel_apply(k, s, x, inverse, &x) != 0) {
            x = GP_CODE_FAIL;
            break;
        }
    } while (x >= GP_CODE_DOMAIN);

    gp_hmac_scratch_free(s);
    return x;
}


uint64_t
gp_code_permute(const gp_code_key_t *k, uint64_t v)
{
    return gp_code_walk(k, v, 0);
}


uint64_t
gp_code_unpermute(const gp_code_key_t *k, uint64_t v)
{
    return gp_code_walk(k, v, 1);
}


/* ---- making and parsing codes -------------------------------------------- */

static int
gp_code_digits(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/* 1 if s is a NUL-terminated string of exactly 6 digits */
static int
gp_code_division_valid(const char *s)
{
    size_t i;

    if (s == NULL) {
        return 0;
    }

    for (i = 0; i < 6; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return s[6] == '\0';
}


/* writes v as exactly n decimal digits, zero padded */
static void
gp_code_put_digits(char *out, size_t n, uint64_t v)
{
    while (n > 0) {
        out[--n] = (char) ('0' + v % 10);
        v /= 10;
    }
}


int
gp_code_make(const gp_code_key_t *k, const char *division, unsigned yy,
             uint32_t shards, uint32_t shard, uint64_t seq,
             char out[GP_CODE_LEN + 1])
{
    uint64_t v, body;
    int      check;

    if (k == NULL || !gp_code_division_valid(division) || yy > 99 || shards == 0
        || shard >= shards || seq == 0
        || seq > (GP_CODE_DOMAIN - 1 - shard) / shards)
    {
        return -1;
    }

    v = seq * shards + shard;

    body = gp_code_permute(k, v);
    if (body >= GP_CODE_DOMAIN) {
        return -1;
    }

    memcpy(out, division, 6);
    gp_code_put_digits(out + 6, 2, yy);
    gp_code_put_digits(out + 8, 11, body);

    check = gp_mod11_10(out, GP_CODE_LEN - 1);
    if (check < 0) {
        return -1;
    }

    out[GP_CODE_LEN - 1] = (char) check;
    out[GP_CODE_LEN] = '\0';

    return 0;
}


static uint64_t
gp_code_get_digits(const char *s, size_t n)
{
    uint64_t v = 0;
    size_t   i;

    for (i = 0; i < n; i++) {
        v = v * 10 + (uint64_t) (s[i] - '0');
    }

    return v;
}


int
gp_code_parse(const gp_code_key_t *k, const char *code, size_t len,
              uint32_t shards, char division[7], unsigned *yy, uint32_t *shard,
              uint64_t *seq)
{
    uint64_t body, v;

    if (k == NULL || code == NULL || len != GP_CODE_LEN || shards == 0
        || !gp_code_digits(code, len)
        || gp_mod11_10(code, GP_CODE_LEN - 1) != code[GP_CODE_LEN - 1])
    {
        return -1;
    }

    body = gp_code_get_digits(code + 8, 11);

    v = gp_code_unpermute(k, body);
    if (v >= GP_CODE_DOMAIN || v / shards == 0) {
        return -1;
    }

    memcpy(division, code, 6);
    division[6] = '\0';
    *yy = (unsigned) gp_code_get_digits(code + 6, 2);
    *shard = (uint32_t) (v % shards);
    *seq = v / shards;

    return 0;
}


/* ---- shard of a new notice ----------------------------------------------- */

uint32_t
gp_shard_of(const char *unit, size_t ulen, const char *request_id, size_t rlen,
            uint32_t shards)
{
    unsigned char h[32];
    gp_part_t     parts[3];
    uint32_t      x;

    if (shards <= 1) {
        return 0;
    }

    parts[0].p = unit;
    parts[0].n = ulen;
    parts[1].p = "\n";
    parts[1].n = 1;
    parts[2].p = request_id;
    parts[2].n = rlen;

    if (gp_digest_parts(GP_MD_SHA256, parts, 3, h) != 0) {
        /* only on allocation failure in OpenSSL; shard 0 is still a valid
         * shard */
        return 0;
    }

    x = (uint32_t) h[0] << 24 | (uint32_t) h[1] << 16 | (uint32_t) h[2] << 8
        | h[3];
    return x % shards;
}


/* ---- the key file -------------------------------------------------------- */

static int
gp_code_hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


static int
gp_code_is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v'
           || c == '\f';
}


/*
 * reads at most GP_CODE_KEY_FILE_MAX bytes; -1 with err set on error or a
 * longer file
 */
static int
gp_code_read_small(const char *path, char *buf, size_t *len, char *err,
                   size_t errlen)
{
    FILE  *fp;
    size_t n;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, errlen, "payment code key file \"%s\": cannot open: %s",
                 path, strerror(errno));
        return -1;
    }

    n = fread(buf, 1, GP_CODE_KEY_FILE_MAX + 1, fp);

    if (ferror(fp)) {
        snprintf(err, errlen, "payment code key file \"%s\": read failed",
                 path);
        fclose(fp);
        return -1;
    }

    fclose(fp);

    if (n > GP_CODE_KEY_FILE_MAX) {
        snprintf(
            err, errlen,
            "payment code key file \"%s\": too long, expected 64 hex digits",
            path);
        return -1;
    }

    *len = n;
    return 0;
}


int
gp_code_key_load(const char *path, gp_code_key_t *k, char *err, size_t errlen)
{
    char          buf[GP_CODE_KEY_FILE_MAX + 1];
    unsigned char key[GP_CODE_KEY_LEN];
    size_t        n, i;
    int           hi, lo;

    k->hmac = NULL;

    if (gp_code_read_small(path, buf, &n, err, errlen) != 0) {
        goto fail;
    }

    while (n > 0 && gp_code_is_space((unsigned char) buf[n - 1])) {
        n--;
    }

    if (n != 2 * GP_CODE_KEY_LEN) {
        snprintf(
            err, errlen,
            "payment code key file \"%s\": expected 64 hex digits, found %zu "
            "characters",
            path, n);
        goto fail;
    }

    for (i = 0; i < GP_CODE_KEY_LEN; i++) {
        hi = gp_code_hex_value((unsigned char) buf[2 * i]);
        lo = gp_code_hex_value((unsigned char) buf[2 * i + 1]);

        if (hi < 0 || lo < 0) {
            snprintf(
                err, errlen,
                "payment code key file \"%s\": not a hex digit at offset %zu",
                path, (hi < 0) ? 2 * i : 2 * i + 1);
            goto fail;
        }

        key[i] = (unsigned char) (hi << 4 | lo);
    }

    if (gp_code_key_init(k, key) != 0) {
        snprintf(err, errlen,
                 "payment code key file \"%s\": preparing the key failed "
                 "(OpenSSL)",
                 path);
        goto fail;
    }

    OPENSSL_cleanse(buf, sizeof(buf));
    OPENSSL_cleanse(key, sizeof(key));
    return 0;

fail:
    OPENSSL_cleanse(buf, sizeof(buf));
    OPENSSL_cleanse(key, sizeof(key));
    return -1;
}
