/*
 * gp_crypto: thin wrappers over OpenSSL 3 EVP for what module and workers share:
 * HMAC-SHA256 / HMAC-SM3 (one-shot, or with a key prepared once and used from any thread),
 * SHA-256, SM3, base64, hex, constant-time compare, random bytes.
 */

#ifndef GP_CRYPTO_H
#define GP_CRYPTO_H

#include <stddef.h>

#define GP_SHA256_LEN 32

typedef enum { GP_MD_SHA256 = 0, GP_MD_SM3 } gp_md_t;

/* out receives 32 bytes; 0 or -1 */
int gp_hmac(gp_md_t md, const void *key, size_t klen, const void *msg,
            size_t mlen, unsigned char out[32]);
int gp_digest(gp_md_t md, const void *msg, size_t mlen, unsigned char out[32]);

/* a piece of a message given in parts (no copy into one buffer) */
typedef struct {
    const void *p;
    size_t      n;
} gp_part_t;

/* the digest of the concatenation of n parts; out receives 32 bytes; 0 or -1 */
int gp_digest_parts(gp_md_t md, const gp_part_t *parts, size_t n,
                    unsigned char out[32]);

/*
 * A key prepared once: the HMAC's inner and outer digest states after the padded key, so
 * each use hashes only the message. Read-only once made: any number of threads may use one
 * key at once. NULL when OpenSSL fails (or md is unknown).
 */
typedef struct gp_hmac_key_s gp_hmac_key_t;

gp_hmac_key_t *gp_hmac_key_new(gp_md_t md, const void *key, size_t klen);
/* the key states are cleansed; NULL is fine */
void gp_hmac_key_free(gp_hmac_key_t *k);

/* HMAC of msg, or of the concatenation of n parts; out receives 32 bytes; 0 or -1 */
int gp_hmac_keyed(const gp_hmac_key_t *k, const void *msg, size_t mlen,
                  unsigned char out[32]);
int gp_hmac_keyed_parts(const gp_hmac_key_t *k, const gp_part_t *parts,
                        size_t n, unsigned char out[32]);

/*
 * Many HMACs in a row on one thread (the payment code's rounds) share one scratch
 * context: gp_hmac_scratch_new() (NULL on failure), gp_hmac_keyed_with(), free it.
 * A scratch context belongs to one thread at a time.
 */
typedef struct gp_hmac_scratch_s gp_hmac_scratch_t;

gp_hmac_scratch_t *gp_hmac_scratch_new(void);
void               gp_hmac_scratch_free(gp_hmac_scratch_t *s);
int gp_hmac_keyed_with(const gp_hmac_key_t *k, gp_hmac_scratch_t *s,
                       const gp_part_t *parts, size_t n, unsigned char out[32]);

/* standard base64 with padding, NUL-terminated; out needs 4 * ((n + 2) / 3) + 1 bytes;
 * returns the length written */
size_t gp_base64_encode(const unsigned char *in, size_t n, char *out);
/* strict: padding required, no white space, unused bits of the last group zero;
 * out needs 3 * (n / 4) bytes; 0 or -1 */
int gp_base64_decode(const char *in, size_t n, unsigned char *out,
                     size_t *outlen);

/* lowercase hex, NUL-terminated; out needs 2n + 1 */
void gp_hex(const unsigned char *in, size_t n, char *out);

/* 1 when equal, in time independent of the contents */
int gp_ct_equal(const void *a, const void *b, size_t n);

/* 0 or -1 */
int gp_random_bytes(void *buf, size_t n);

/* AES-256-GCM with a 16-byte tag appended to the ciphertext (as WeChat Pay APIv3 sends it):
 * encrypt writes n + 16 bytes; decrypt takes n >= 16 bytes, writes n - 16 and fails (-1)
 * unless the tag verifies; 0 or -1 */
#define GP_GCM_TAG_LEN 16
int gp_aes256gcm_encrypt(const unsigned char key[32], const void *iv,
                         size_t ivlen, const void *aad, size_t aadlen,
                         const void *in, size_t n, unsigned char *out);
int gp_aes256gcm_decrypt(const unsigned char key[32], const void *iv,
                         size_t ivlen, const void *aad, size_t aadlen,
                         const void *in, size_t n, unsigned char *out,
                         size_t *outlen);

#endif /* GP_CRYPTO_H */
