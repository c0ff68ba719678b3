/*
 * gp_crypto.c: the few cryptographic primitives that the nginx module and the
 * workers share, as thin wrappers over OpenSSL 3.
 *
 * - HMAC-SHA256 and HMAC-SM3 (RFC 2104) over EVP digests (unit request
 *   signatures, webhook signatures, the sandbox channel, the ID-number index,
 *   the payment code permutation).  A key used again and again is prepared
 *   once (gp_hmac_key_new): the digest states after the inner and outer
 *   padded key blocks are kept, and each HMAC copies them and hashes only the
 *   message (about 0.2 us for a short one, against 0.8 us to duplicate a keyed
 *   EVP_MAC_CTX and 1.6 us to fetch and key one).  gp_hmac() is the one-shot
 *   form for a key used once.
 * - SHA-256 and SM3 digests through EVP_Digest (idempotency body hashes, the
 *   receipt ledger, shard choice).
 * - Standard base64 (RFC 4648, with padding) and lowercase hex. The base64
 *   decoder is strict on purpose: signatures arrive in headers and form fields,
 *   and a lenient decoder would let two different strings verify as the same
 *   signature. It refuses white space, characters outside the alphabet, a
 *   length that is not a multiple of 4, misplaced padding, and non-zero bits
 *   in the unused part of the last group (RFC 4648 section 3.5).
 * - Constant-time comparison (CRYPTO_memcmp) and random bytes (RAND_bytes).
 *
 * Only the EVP interfaces are used.  The two digests are fetched once per
 * process (CRYPTO_THREAD_run_once) and kept: a fetch takes a lock and a
 * lookup in the provider's store, which no request should pay for.  What
 * the functions share is read-only after that, so every function may be
 * called from any thread; a prepared key may be used by many threads at once
 * (copying a digest state reads it only).
 */

#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "gp_crypto.h"


#define GP_HMAC_BLOCK 64 /* the block of SHA-256 and of SM3 */


struct gp_hmac_key_s {
    gp_md_t     md;
    EVP_MD_CTX *inner; /* after (key xor ipad) */
    EVP_MD_CTX *outer; /* after (key xor opad) */
};


struct gp_hmac_scratch_s {
    EVP_MD_CTX *ctx;
};


static const char gp_base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


static CRYPTO_ONCE gp_md_once = CRYPTO_ONCE_STATIC_INIT;
static EVP_MD     *gp_md_fetched[2];


static void
gp_md_fetch_all(void)
{
    gp_md_fetched[GP_MD_SHA256] = EVP_MD_fetch(NULL, "SHA256", NULL);
    gp_md_fetched[GP_MD_SM3] = EVP_MD_fetch(NULL, "SM3", NULL);
}


/* the fetched digest of md, or NULL (unknown md, or a provider without it) */
static const EVP_MD *
gp_md(gp_md_t md)
{
    if (md != GP_MD_SHA256 && md != GP_MD_SM3) {
        return NULL;
    }

    if (!CRYPTO_THREAD_run_once(&gp_md_once, gp_md_fetch_all)) {
        return NULL;
    }

    return gp_md_fetched[md];
}


int
gp_digest(gp_md_t md, const void *msg, size_t mlen, unsigned char out[32])
{
    static const unsigned char empty[1] = { 0 };
    const EVP_MD              *evp;
    unsigned int               outlen = 0;

    evp = gp_md(md);
    if (evp == NULL || (msg == NULL && mlen != 0)) {
        return -1;
    }

    if (msg == NULL) {
        msg = empty;
    }

    if (EVP_MD_get_size(evp) != 32
        || EVP_Digest(msg, mlen, out, &outlen, evp, NULL) != 1 || outlen != 32)
    {
        memset(out, 0, 32);
        return -1;
    }

    return 0;
}


int
gp_digest_parts(gp_md_t md, const gp_part_t *parts, size_t n,
                unsigned char out[32])
{
    const EVP_MD *evp;
    EVP_MD_CTX   *ctx;
    unsigned int  len = 0;
    size_t        i;
    int           ok;

    evp = gp_md(md);
    if (evp == NULL || (parts == NULL && n != 0) || EVP_MD_get_size(evp) != 32)
    {
        memset(out, 0, 32);
        return -1;
    }

    ctx = EVP_MD_CTX_new();
    ok = ctx != NULL && EVP_DigestInit_ex2(ctx, evp, NULL) == 1;

    for (i = 0; ok && i < n; i++) {
        ok = parts[i].n == 0
             || (parts[i].p != NULL
                 && EVP_DigestUpdate(ctx, parts[i].p, parts[i].n) == 1);
    }

    ok = ok && EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == 32;

    EVP_MD_CTX_free(ctx);

    if (!ok) {
        memset(out, 0, 32);
        return -1;
    }

    return 0;
}


/* ---- HMAC (RFC 2104) ------------------------------------------------------ */

/* the key's padded block: the key itself, or its digest when longer */
static int
gp_hmac_block(const EVP_MD *evp, const void *key, size_t klen,
              unsigned char block[GP_HMAC_BLOCK])
{
    unsigned int n = 0;

    memset(block, 0, GP_HMAC_BLOCK);

    if (klen > GP_HMAC_BLOCK) {
        return EVP_Digest(key, klen, block, &n, evp, NULL) == 1 ? 0 : -1;
    }

    if (klen > 0) {
        memcpy(block, key, klen);
    }

    return 0;
}


/* a digest context that has hashed the block xor pad */
static EVP_MD_CTX *
gp_hmac_pad(const EVP_MD *evp, const unsigned char block[GP_HMAC_BLOCK],
            unsigned char pad)
{
    EVP_MD_CTX   *ctx;
    unsigned char x[GP_HMAC_BLOCK];
    size_t        i;
    int           ok;

    for (i = 0; i < GP_HMAC_BLOCK; i++) {
        x[i] = block[i] ^ pad;
    }

    ctx = EVP_MD_CTX_new();
    ok = ctx != NULL && EVP_DigestInit_ex2(ctx, evp, NULL) == 1
         && EVP_DigestUpdate(ctx, x, GP_HMAC_BLOCK) == 1;

    OPENSSL_cleanse(x, sizeof(x));

    if (!ok) {
        EVP_MD_CTX_free(ctx);
        return NULL;
    }

    return ctx;
}


gp_hmac_key_t *
gp_hmac_key_new(gp_md_t md, const void *key, size_t klen)
{
    const EVP_MD  *evp;
    gp_hmac_key_t *k;
    unsigned char  block[GP_HMAC_BLOCK];

    evp = gp_md(md);
    if (evp == NULL || (key == NULL && klen != 0)
        || EVP_MD_get_block_size(evp) != GP_HMAC_BLOCK
        || EVP_MD_get_size(evp) != 32)
    {
        return NULL;
    }

    k = calloc(1, sizeof(gp_hmac_key_t));
    if (k == NULL) {
        return NULL;
    }

    k->md = md;

    if (gp_hmac_block(evp, key, klen, block) != 0) {
        goto fail;
    }

    k->inner = gp_hmac_pad(evp, block, 0x36);
    k->outer = gp_hmac_pad(evp, block, 0x5c);

    if (k->inner == NULL || k->outer == NULL) {
        goto fail;
    }

    OPENSSL_cleanse(block, sizeof(block));
    return k;

fail:
    OPENSSL_cleanse(block, sizeof(block));
    gp_hmac_key_free(k);
    return NULL;
}


void
gp_hmac_key_free(gp_hmac_key_t *k)
{
    if (k == NULL) {
        return;
    }

    /* the digest's own free cleanses its state */
    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    free(k);
}


gp_hmac_scratch_t *
gp_hmac_scratch_new(void)
{
    gp_hmac_scratch_t *s;

    s = malloc(sizeof(gp_hmac_scratch_t));
    if (s == NULL) {
        return NULL;
    }

    s->ctx = EVP_MD_CTX_new();
    if (s->ctx == NULL) {
        free(s);
        return NULL;
    }

    return s;
}


void
gp_hmac_scratch_free(gp_hmac_scratch_t *s)
{
    if (s == NULL) {
        return;
    }

    EVP_MD_CTX_free(s->ctx);
    free(s);
}


int
gp_hmac_keyed_with(const gp_hmac_key_t *k, gp_hmac_scratch_t *s,
                   const gp_part_t *parts, size_t n, unsigned char out[32])
{
    unsigned char inner[32];
    unsigned int  len = 0;
    size_t        i;

    if (k == NULL || s == NULL || (parts == NULL && n != 0)) {
        return -1;
    }

    if (EVP_MD_CTX_copy_ex(s->ctx, k->inner) != 1) {
        goto fail;
    }

    for (i = 0; i < n; i++) {
        if (parts[i].n > 0
            && (parts[i].p == NULL
                || EVP_DigestUpdate(s->ctx, parts[i].p, parts[i].n) != 1))
        {
            goto fail;
        }
    }

    if (EVP_DigestFinal_ex(s->ctx, inner, &len) != 1 || len != 32
        || EVP_MD_CTX_copy_ex(s->ctx, k->outer) != 1
        || EVP_DigestUpdate(s->ctx, inner, 32) != 1
        || EVP_DigestFinal_ex(s->ctx, out, &len) != 1 || len != 32)
    {
        goto fail;
    }

    OPENSSL_cleanse(inner, sizeof(inner));
    return 0;

fail:
    OPENSSL_cleanse(inner, sizeof(inner));
    OPENSSL_cleanse(out, 32);
    return -1;
}


int
gp_hmac_keyed_parts(const gp_hmac_key_t *k, const gp_part_t *parts, size_t n,
                    unsigned char out[32])
{
    gp_hmac_scratch_t *s;
    int                rc;

    s = gp_hmac_scratch_new();
    if (s == NULL) {
        OPENSSL_cleanse(out, 32);
        return -1;
    }

    rc = gp_hmac_keyed_with(k, s, parts, n, out);

    gp_hmac_scratch_free(s);
    return rc;
}


int
gp_hmac_keyed(const gp_hmac_key_t *k, const void *msg, size_t mlen,
              unsigned char out[32])
{
    gp_part_t part;

    if (msg == NULL && mlen != 0) {
        OPENSSL_cleanse(out, 32);
        return -1;
    }

    part.p = msg;
    part.n = mlen;

    return gp_hmac_keyed_parts(k, &part, 1, out);
}


/*
 * one-shot: the padded key blocks are hashed in a single scratch context,
 * with no key state kept
 */
int
gp_hmac(gp_md_t md, const void *key, size_t klen, const void *msg, size_t mlen,
        unsigned char out[32])
{
    const EVP_MD *evp;
    EVP_MD_CTX   *ctx = NULL;
    unsigned char block[GP_HMAC_BLOCK], x[GP_HMAC_BLOCK], inner[32];
    unsigned int  len = 0;
    size_t        i;

    evp = gp_md(md);
    if (evp == NULL || (key == NULL && klen != 0) || (msg == NULL && mlen != 0)
        || EVP_MD_get_size(evp) != 32
        || EVP_MD_get_block_size(evp) != GP_HMAC_BLOCK)
    {
        OPENSSL_cleanse(out, 32);
        return -1;
    }

    ctx = EVP_MD_CTX_new();
    if (ctx == NULL || gp_hmac_block(evp, key, klen, block) != 0) {
        goto fail;
    }

    for (i = 0; i < GP_HMAC_BLOCK; i++) {
        x[i] = block[i] ^ 0x36;
    }

    if (EVP_DigestInit_ex2(ctx, evp, NULL) != 1
        || EVP_DigestUpdate(ctx, x, GP_HMAC_BLOCK) != 1
        || (mlen > 0 && EVP_DigestUpdate(ctx, msg, mlen) != 1)
        || EVP_DigestFinal_ex(ctx, inner, &len) != 1 || len != 32)
    {
        goto fail;
    }

    for (i = 0; i < GP_HMAC_BLOCK; i++) {
        x[i] = block[i] ^ 0x5c;
    }

    if (EVP_DigestInit_ex2(ctx, evp, NULL) != 1
        || EVP_DigestUpdate(ctx, x, GP_HMAC_BLOCK) != 1
        || EVP_DigestUpdate(ctx, inner, 32) != 1
        || EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != 32)
    {
        goto fail;
    }

    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(block, sizeof(block));
    OPENSSL_cleanse(x, sizeof(x));
    OPENSSL_cleanse(inner, sizeof(inner));
    return 0;

fail:
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(block, sizeof(block));
    OPENSSL_cleanse(x, sizeof(x));
    OPENSSL_cleanse(inner, sizeof(inner));
    OPENSSL_cleanse(out, 32);
    return -1;
}


size_t
gp_base64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t   i, o;
    uint32_t w;

    o = 0;

    for (i = 0; i + 3 <= n; i += 3) {
        w = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8 | in[i + 2];
        out[o++] = gp_base64_alphabet[w >> 18 & 0x3f];
        out[o++] = gp_base64_alphabet[w >> 12 & 0x3f];
        out[o++] = gp_base64_alphabet[w >> 6 & 0x3f];
        out[o++] = gp_base64_alphabet[w & 0x3f];
    }

    if (n - i == 1) {
        w = (uint32_t) in[i] << 16;
        out[o++] = gp_base64_alphabet[w >> 18 & 0x3f];
        out[o++] = gp_base64_alphabet[w >> 12 & 0x3f];
        out[o++] = '=';
        out[o++] = '=';

    } else if (n - i == 2) {
        w = (uint32_t) in[i] << 16 | (uint32_t) in[i + 1] << 8;
        out[o++] = gp_base64_alphabet[w >> 18 & 0x3f];
        out[o++] = gp_base64_alphabet[w >> 12 & 0x3f];
        out[o++] = gp_base64_alphabet[w >> 6 & 0x3f];
        out[o++] = '=';
    }

    out[o] = '\0';
    return o;
}


/* the 6-bit value of a base64 character, or -1 */
static int
gp_base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }

    return -1;
}


/*
 * decodes one group of 4 characters; pad is how many '=' the group may end with
 */
static int
gp_base64_group(const char *in, int last, unsigned char *out, size_t *written)
{
    int      v[4], i, pad;
    uint32_t w;

    pad = 0;
    if (last && in[3] == '=') {
        pad = (in[2] == '=') ? 2 : 1;
    }

    for (i = 0; i < 4 - pad; i++) {
        v[i] = gp_base64_value((unsigned char) in[i]);
        if (v[i] < 0) {
            return -1;
        }
    }
    for (; i < 4; i++) {
        v[i] = 0;
    }

    w = (uint32_t) v[0] << 18 | (uint32_t) v[1] << 12 | (uint32_t) v[2] << 6
        | v[3];

    /* the bits that padding leaves unused must be zero (canonical encoding) */
    if ((pad == 1 && (w & 0xff) != 0) || (pad == 2 && (w & 0xffff) != 0)) {
        return -1;
    }

    out[0] = (unsigned char) (w >> 16);
    out[1] = (unsigned char) (w >> 8);
    out[2] = (unsigned char) w;
    *written = 3 - pad;

    return 0;
}


int
gp_base64_decode(const char *in, size_t n, unsigned char *out, size_t *outlen)
{
    size_t i, o, w;

    *outlen = 0;

    if (n % 4 != 0) {
        return -1;
    }

    o = 0;

    for (i = 0; i < n; i += 4) {
        if (gp_base64_group(in + i, i + 4 == n, out + o, &w) != 0) {
            return -1;
        }
        o += w;
    }

    *outlen = o;
    return 0;
}


void
gp_hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t            i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }

    out[2 * n] = '\0';
}


int
gp_ct_equal(const void *a, const void *b, size_t n)
{
    if (n == 0) {
        return 1;
    }

    return CRYPTO_memcmp(a, b, n) == 0;
}


/*
 * Random bytes are drawn from OpenSSL's DRBG a pool at a time, per thread:
 * one RAND_bytes() costs about 2 us whatever its size (a lock, the
 * generator's state, a fork check), and a request wants 12 to 32 bytes
 * (a seal's nonce, an answer's nonce).  Each byte is handed out once and
 * wiped from the pool; a fork empties the child's pools (pthread_atfork),
 * so a child never hands out what its parent will.
 */

#define GP_RANDOM_POOL   1024
#define GP_RANDOM_DIRECT 256 /* larger requests go to RAND_bytes() itself */

static __thread unsigned char gp_random_pool[GP_RANDOM_POOL];
static __thread size_t        gp_random_left;
static __thread unsigned long gp_random_gen;

static volatile unsigned long gp_random_forks = 1;
static pthread_once_t         gp_random_once = PTHREAD_ONCE_INIT;
static int                    gp_random_atfork_ok;


static void
gp_random_forked(void)
{
    gp_random_forks++;
}


static void
gp_random_init(void)
{
    gp_random_atfork_ok = pthread_atfork(NULL, NULL, gp_random_forked) == 0;
}


static int
gp_random_direct(unsigned char *p, size_t n)
{
    size_t chunk;

    while (n > 0) {
        chunk = n > INT_MAX ? INT_MAX : n;

        if (RAND_bytes(p, (int) chunk) != 1) {
            return -1;
        }

        p += chunk;
        n -= chunk;
    }

    return 0;
}


int
gp_random_bytes(void *buf, size_t n)
{
    unsigned char *pool;

    if (n == 0) {
        return 0;
    }

    if (pthread_once(&gp_random_once, gp_random_init) != 0
        || !gp_random_atfork_ok || n > GP_RANDOM_DIRECT)
    {
        return gp_random_direct(buf, n);
    }

    if (gp_random_gen != gp_random_forks) {
        OPENSSL_cleanse(gp_random_pool, sizeof(gp_random_pool));
        gp_random_left = 0;
        gp_random_gen = gp_random_forks;
    }

    if (gp_random_left < n) {
        if (RAND_bytes(gp_random_pool, GP_RANDOM_POOL) != 1) {
            gp_random_left = 0;
            return -1;
        }

        gp_random_left = GP_RANDOM_POOL;
    }

    /* from the end of what is left; what is handed out is wiped */

    gp_random_left -= n;
    pool = gp_random_pool + gp_random_left;

    memcpy(buf, pool, n);
    OPENSSL_cleanse(pool, n);

    return 0;
}


/*
 * AES-256-GCM, the tag after the ciphertext.  One function for both ways:
 * decrypting, the last 16 bytes of in are the tag to check.
 */
static int
gp_aes256gcm(int enc, const unsigned char key[32], const void *iv, size_t ivlen,
             const void *aad, size_t aadlen, const void *in, size_t n,
             unsigned char *out, size_t *outlen)
{
    EVP_CIPHER_CTX      *c;
    int                  len, rc;
    size_t               body;
    const unsigned char *p = in;

    if (ivlen == 0 || ivlen > 64 || aadlen > INT_MAX || n > INT_MAX - 32
        || (!enc && n < GP_GCM_TAG_LEN))
    {
        return -1;
    }

    body = enc ? n : n - GP_GCM_TAG_LEN;

    c = EVP_CIPHER_CTX_new();
    if (c == NULL) {
        return -1;
    }

    rc = -1;

    if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1
        || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int) ivlen, NULL)
               != 1
        || EVP_CipherInit_ex(c, NULL, NULL, key, iv, enc) != 1)
    {
        goto done;
    }

    if (aadlen > 0 && EVP_CipherUpdate(c, NULL, &len, aad, (int) aadlen) != 1) {
        goto done;
    }

    len = 0;
    if (body > 0 && EVP_CipherUpdate(c, out, &len, p, (int) body) != 1) {
        goto done;
    }

    if (!enc
        && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GP_GCM_TAG_LEN,
                               (void *) (p + body))
               != 1)
    {
        goto done;
    }

    {
        int fin = 0;

        if (EVP_CipherFinal_ex(c, out + len, &fin) != 1) {
            goto done;
        }

        len += fin;
    }

    if (enc) {
        if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, GP_GCM_TAG_LEN,
                                out + len)
            != 1)
        {
            goto done;
        }
        len += GP_GCM_TAG_LEN;
    }

    if (outlen != NULL) {
        *outlen = (size_t) len;
    }

    rc = 0;

done:

    EVP_CIPHER_CTX_free(c);
    return rc;
}


int
gp_aes256gcm_encrypt(const unsigned char key[32], const void *iv, size_t ivlen,
                     const void *aad, size_t aadlen, const void *in, size_t n,
                     unsigned char *out)
{
    return gp_aes256gcm(1, key, iv, ivlen, aad, aadlen, in, n, out, NULL);
}


int
gp_aes256gcm_decrypt(const unsigned char key[32], const void *iv, size_t ivlen,
                     const void *aad, size_t aadlen, const void *in, size_t n,
                     unsigned char *out, size_t *outlen)
{
    return gp_aes256gcm(0, key, iv, ivlen, aad, aadlen, in, n, out, outlen);
}
