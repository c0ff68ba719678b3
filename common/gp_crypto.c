/*
 * gp_crypto.c: the few cryptographic primitives that the nginx module and the
 * workers share, as thin wrappers over OpenSSL 3.
 *
 * - HMAC-SHA256 and HMAC-SM3 through EVP_MAC (unit request signatures, webhook
 *   signatures, the sandbox channel, the payment code permutation).
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
 * Only the EVP interfaces are used; every algorithm is fetched explicitly and
 * released before returning, so there is no global state and every function
 * may be called from any thread.
 */

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "gp_crypto.h"


static const char gp_base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* not const: OSSL_PARAM_construct_utf8_string() takes (and keeps) a char * */
static char *
gp_md_name(gp_md_t md)
{
    switch (md) {
    case GP_MD_SHA256:
        return "SHA256";
    case GP_MD_SM3:
        return "SM3";
    }

    return NULL;
}


int
gp_hmac(gp_md_t md, const void *key, size_t klen, const void *msg, size_t mlen,
        unsigned char out[32])
{
    static const unsigned char empty_key[1] = { 0 };
    char                      *name;
    EVP_MAC                   *mac = NULL;
    EVP_MAC_CTX               *ctx = NULL;
    OSSL_PARAM                 params[2];
    size_t                     outlen = 0;

    name = gp_md_name(md);
    if (name == NULL || (key == NULL && klen != 0)
        || (msg == NULL && mlen != 0)) {
        return -1;
    }

    /* to EVP_MAC_init() a NULL key means "keep the previous key" */
    if (key == NULL) {
        key = empty_key;
    }

    params[0] =
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, name, 0);
    params[1] = OSSL_PARAM_construct_end();

    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac == NULL) {
        goto fail;
    }

    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL) {
        goto fail;
    }

    if (EVP_MAC_init(ctx, key, klen, params) != 1
        || EVP_MAC_update(ctx, msg, mlen) != 1
        || EVP_MAC_final(ctx, out, &outlen, 32) != 1 || outlen != 32)
    {
        goto fail;
    }

    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return 0;

fail:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    OPENSSL_cleanse(out, 32);
    return -1;
}


int
gp_digest(gp_md_t md, const void *msg, size_t mlen, unsigned char out[32])
{
    static const unsigned char empty[1] = { 0 };
    const char                *name;
    EVP_MD                    *evp = NULL;
    unsigned int               outlen = 0;

    name = gp_md_name(md);
    if (name == NULL || (msg == NULL && mlen != 0)) {
        return -1;
    }

    if (msg == NULL) {
        msg = empty;
    }

    evp = EVP_MD_fetch(NULL, name, NULL);
    if (evp == NULL) {
        goto fail;
    }

    if (EVP_MD_get_size(evp) != 32
        || EVP_Digest(msg, mlen, out, &outlen, evp, NULL) != 1 || outlen != 32)
    {
        goto fail;
    }

    EVP_MD_free(evp);
    return 0;

fail:
    EVP_MD_free(evp);
    memset(out, 0, 32);
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


int
gp_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t         chunk;

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
