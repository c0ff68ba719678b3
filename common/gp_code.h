/*
 * gp_code: the 20-digit payment code (缴款码).
 *
 * division (6) | year (2) | body (11) | check (1, ISO/IEC 7064 MOD 11-10 over the first 19).
 * The body is a keyed permutation of v = seq * shards + shard over [0, 10^11), so codes are
 * not enumerable and the shard is recovered from the code alone.
 */

#ifndef GP_CODE_H
#define GP_CODE_H

#include <stddef.h>
#include <stdint.h>

#include "gp_crypto.h"

#define GP_CODE_LEN     20
#define GP_CODE_KEY_LEN 32
#define GP_CODE_DOMAIN  100000000000ULL /* 10^11 */

/*
 * The permutation's key, prepared once (the HMAC's keyed state, gp_crypto.h) and then
 * read-only: any number of threads may make and read codes with one key at once. Made by
 * gp_code_key_init() or gp_code_key_load(), released by gp_code_key_free(); a key that was
 * not made (or was freed) makes and reads no code.
 */
typedef struct {
    gp_hmac_key_t *hmac;
} gp_code_key_t;

/* prepares k from the 32 key bytes; 0 or -1 (OpenSSL failed) */
int gp_code_key_init(gp_code_key_t      *k,
                     const unsigned char key[GP_CODE_KEY_LEN]);
/* releases what init made (the key state is cleansed); k is left unusable */
void gp_code_key_free(gp_code_key_t *k);

/* reads a file holding 64 hex digits (trailing white space allowed) and prepares k;
 * 0 or -1 with err set */
int gp_code_key_load(const char *path, gp_code_key_t *k, char *err,
                     size_t errlen);

/* ISO/IEC 7064 MOD 11-10 check digit ('0'..'9') over n ASCII digits; -1 if not digits */
int gp_mod11_10(const char *digits, size_t n);

/* writes 20 digits + NUL to out; -1 if division is not a NUL-terminated string of 6 digits,
 * yy > 99, shard >= shards, seq == 0, or seq * shards + shard does not fit the domain */
int gp_code_make(const gp_code_key_t *k, const char *division, unsigned yy,
                 uint32_t shards, uint32_t shard, uint64_t seq,
                 char out[GP_CODE_LEN + 1]);

/* 0 and the parts, or -1: not 20 digits, bad check digit, or a body that maps to seq 0 */
int gp_code_parse(const gp_code_key_t *k, const char *code, size_t len,
                  uint32_t shards, char division[7], unsigned *yy,
                  uint32_t *shard, uint64_t *seq);

/* shard of a new notice: first 4 bytes of SHA-256(unit "\n" request_id), big-endian, mod S;
 * 0 when shards is 0 or 1 */
uint32_t gp_shard_of(const char *unit, size_t ulen, const char *request_id,
                     size_t rlen, uint32_t shards);

/* the permutation itself (exposed for tests): values must be < GP_CODE_DOMAIN; UINT64_MAX
 * for a value outside the domain (or if OpenSSL fails) */
uint64_t gp_code_permute(const gp_code_key_t *k, uint64_t v);
uint64_t gp_code_unpermute(const gp_code_key_t *k, uint64_t v);

#endif /* GP_CODE_H */
