/*
 * gp_seal.c: personal data sealed at rest with SM4-GCM.
 *
 * OpenSSL 3.0 (Debian bookworm) has SM4 but no SM4-GCM mode, so the AEAD is
 * libgcrypt's (GCRY_CIPHER_SM4 in GCRY_CIPHER_MODE_GCM, libgcrypt >= 1.9):
 * nothing of GCM is written here. gp_seal_init() runs the known answer of
 * RFC 8998, Appendix A.1, so a process that starts seals with real SM4-GCM.
 *
 * Key file (docs/internals.md, "Personal data at rest"):
 *
 *     # comments and blank lines are skipped
 *     2026-02 8f0c...   (32 hex digits: an SM4 key of 128 bits)
 *     2025-11 41ab...
 *
 * The first key seals; every key listed opens, so keys rotate: a new first
 * line seals new records, old records open while their key is listed, and
 * `gov-pay-worker pii reseal` moves them to the first key.
 *
 * Record: "<key id>:<base64(nonce ‖ ciphertext ‖ tag)>", standard base64
 * with padding; the nonce is 12 fresh random bytes (OpenSSL's RAND_bytes,
 * which is fork-safe), the tag 16 bytes. The additional authenticated data
 *
 *     "gov-pay-pii/1" 0x00 kid 0x00 field 0x00 unit 0x00 request_id 0x00
 *     created_at (decimal)
 *
 * binds a record to its key id and to one field of one notice: the notice is
 * named by what its create knew and stored (unit, request_id, created_at;
 * the sequence is allocated later, inside the create script). created_at
 * tells apart two notices of one request_id made more than the idempotency
 * window apart. A record copied to another field or notice, or altered, does
 * not open. Every part is a C string, so the NUL separators are unambiguous.
 *
 * Key material is wiped (OPENSSL_cleanse) when freed and from every buffer
 * it passed through. No message ever carries a key or a plaintext.
 */

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gcrypt.h>
#include <openssl/crypto.h>

#include "gp_crypto.h"
#include "gp_seal.h"


#define GP_SEAL_GCRYPT_MIN "1.9.0" /* the first with SM4 */
#define GP_SEAL_FILE_MAX   65536
#define GP_SEAL_AAD_MAX    1024
#define GP_SEAL_AAD_LABEL  "gov-pay-pii/1"
#define GP_SEAL_BLOB_MAX                                                       \
    (GP_SEAL_NONCE_LEN + GP_SEAL_PLAIN_MAX + GP_SEAL_TAG_LEN)
#define GP_SEAL_B64_MAX (4 * ((GP_SEAL_BLOB_MAX + 2) / 3))
/* a blob up to this size is on the stack, a longer one (a receipt) malloc'd */
#define GP_SEAL_STACK_MAX 4096


typedef struct {
    char          kid[GP_SEAL_KID_MAX + 1];
    unsigned char key[GP_SEAL_KEY_LEN];
} gp_seal_key_t;

struct gp_seal_keys_s {
    size_t        n;
    gp_seal_key_t k[GP_SEAL_KEYS_MAX];
};


/* RFC 8998, Appendix A.1: the SM4-GCM test vector */
static const unsigned char gp_kat_key[16] = { 0x01, 0x23, 0x45, 0x67,
                                              0x89, 0xab, 0xcd, 0xef,
                                              0xfe, 0xdc, 0xba, 0x98,
                                              0x76, 0x54, 0x32, 0x10 };
static const unsigned char gp_kat_iv[12] = {
    0x00, 0x00, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0xab, 0xcd
};
static const unsigned char gp_kat_aad[20] = { 0xfe, 0xed, 0xfa, 0xce, 0xde,
                                              0xad, 0xbe, 0xef, 0xfe, 0xed,
                                              0xfa, 0xce, 0xde, 0xad, 0xbe,
                                              0xef, 0xab, 0xad, 0xda, 0xd2 };
static const unsigned char gp_kat_ct[64] = {
    0x17, 0xf3, 0x99, 0xf0, 0x8c, 0x67, 0xd5, 0xee, 0x19, 0xd0, 0xdc,
    0x99, 0x69, 0xc4, 0xbb, 0x7d, 0x5f, 0xd4, 0x6f, 0xd3, 0x75, 0x64,
    0x89, 0x06, 0x91, 0x57, 0xb2, 0x82, 0xbb, 0x20, 0x07, 0x35, 0xd8,
    0x27, 0x10, 0xca, 0x5c, 0x22, 0xf0, 0xcc, 0xfa, 0x7c, 0xbf, 0x93,
    0xd4, 0x96, 0xac, 0x15, 0xa5, 0x68, 0x34, 0xcb, 0xcf, 0x98, 0xc3,
    0x97, 0xb4, 0x02, 0x4a, 0x26, 0x91, 0x23, 0x3b, 0x8d
};
static const unsigned char gp_kat_tag[16] = { 0x83, 0xde, 0x35, 0x41,
                                              0xe4, 0xc2, 0xb5, 0x81,
                                              0x77, 0xe0, 0x65, 0xa9,
                                              0xbf, 0x7b, 0x62, 0xec };


static int                  gp_seal_kat(void);
static int                  gp_seal_kid_char(int c);
static int                  gp_seal_hex(int c);
static const gp_seal_key_t *gp_seal_find(const gp_seal_keys_t *keys,
                                         const char           *kid);
static int gp_seal_aad(const char *kid, const gp_seal_ctx_t *ctx,
                       unsigned char *buf, size_t *len);


int
gp_seal_init(char *err, size_t errlen)
{
    if (!gcry_control(GCRYCTL_INITIALIZATION_FINISHED_P)) {
        if (gcry_check_version(GP_SEAL_GCRYPT_MIN) == NULL) {
            snprintf(err, errlen,
                     "libgcrypt %s is older than " GP_SEAL_GCRYPT_MIN
                     ", the first with SM4",
                     gcry_check_version(NULL));
            return -1;
        }

        /* keys live in our own memory; libgcrypt's is not needed */
        gcry_control(GCRYCTL_DISABLE_SECMEM, 0);
        gcry_control(GCRYCTL_INITIALIZATION_FINISHED, 0);
    }

    if (gcry_cipher_test_algo(GCRY_CIPHER_SM4) != 0) {
        snprintf(err, errlen,
                 "libgcrypt offers no SM4 (is the system in FIPS mode?)");
        return -1;
    }

    if (gp_seal_kat() != 0) {
        snprintf(err, errlen,
                 "libgcrypt's SM4-GCM does not give the known answer of "
                 "RFC 8998, Appendix A.1");
        return -1;
    }

    return 0;
}


/* the RFC 8998 vector both ways, and a forged tag refused */
static int
gp_seal_kat(void)
{
    unsigned char pt[64], ct[64], tag[16];
    int           rc;

    /* AAAA… BBBB… CCCC… DDDD… EEEE… FFFF… EEEE… AAAA…, 8 bytes each */
    memset(pt, 0xaa, 8);
    memset(pt + 8, 0xbb, 8);
    memset(pt + 16, 0xcc, 8);
    memset(pt + 24, 0xdd, 8);
    memset(pt + 32, 0xee, 8);
    memset(pt + 40, 0xff, 8);
    memset(pt + 48, 0xee, 8);
    memset(pt + 56, 0xaa, 8);

    if (gp_sm4gcm_encrypt(gp_kat_key, gp_kat_iv, sizeof(gp_kat_iv), gp_kat_aad,
                          sizeof(gp_kat_aad), pt, sizeof(pt), ct, tag)
            != 0
        || memcmp(ct, gp_kat_ct, sizeof(ct)) != 0
        || memcmp(tag, gp_kat_tag, sizeof(tag)) != 0)
    {
        return -1;
    }

    if (gp_sm4gcm_decrypt(gp_kat_key, gp_kat_iv, sizeof(gp_kat_iv), gp_kat_aad,
                          sizeof(gp_kat_aad), gp_kat_ct, sizeof(gp_kat_ct), ct,
                          gp_kat_tag)
            != 0
        || memcmp(ct, pt, sizeof(pt)) != 0)
    {
        return -1;
    }

    tag[0] ^= 1;

    rc = gp_sm4gcm_decrypt(gp_kat_key, gp_kat_iv, sizeof(gp_kat_iv), gp_kat_aad,
                           sizeof(gp_kat_aad), gp_kat_ct, sizeof(gp_kat_ct), ct,
                           tag);

    return rc == 0 ? -1 : 0;
}


int
gp_sm4gcm_encrypt(const unsigned char key[GP_SEAL_KEY_LEN], const void *iv,
                  size_t ivlen, const void *aad, size_t aadlen, const void *in,
                  size_t n, unsigned char *out,
                  unsigned char tag[GP_SEAL_TAG_LEN])
{
    gcry_cipher_hd_t h;
    int              rc;

    if (gcry_cipher_open(&h, GCRY_CIPHER_SM4, GCRY_CIPHER_MODE_GCM, 0) != 0) {
        return -1;
    }

    rc = -1;

    if (gcry_cipher_setkey(h, key, GP_SEAL_KEY_LEN) != 0
        || gcry_cipher_setiv(h, iv, ivlen) != 0
        || (aadlen > 0 && gcry_cipher_authenticate(h, aad, aadlen) != 0)
        || gcry_cipher_final(h) != 0
        || (n > 0 && gcry_cipher_encrypt(h, out, n, in, n) != 0)
        || gcry_cipher_gettag(h, tag, GP_SEAL_TAG_LEN) != 0)
    {
        goto done;
    }

    rc = 0;

done:

    gcry_cipher_close(h);
    return rc;
}


int
gp_sm4gcm_decrypt(const unsigned char key[GP_SEAL_KEY_LEN], const void *iv,
                  size_t ivlen, const void *aad, size_t aadlen, const void *in,
                  size_t n, unsigned char *out,
                  const unsigned char tag[GP_SEAL_TAG_LEN])
{
    gcry_cipher_hd_t h;
    int              rc;

    if (gcry_cipher_open(&h, GCRY_CIPHER_SM4, GCRY_CIPHER_MODE_GCM, 0) != 0) {
        return -1;
    }

    rc = -1;

    if (gcry_cipher_setkey(h, key, GP_SEAL_KEY_LEN) != 0
        || gcry_cipher_setiv(h, iv, ivlen) != 0
        || (aadlen > 0 && gcry_cipher_authenticate(h, aad, aadlen) != 0)
        || gcry_cipher_final(h) != 0
        || (n > 0 && gcry_cipher_decrypt(h, out, n, in, n) != 0)
        || gcry_cipher_checktag(h, tag, GP_SEAL_TAG_LEN) != 0)
    {
        if (n > 0) {
            OPENSSL_cleanse(out, n);
        }
        goto done;
    }

    rc = 0;

done:

    gcry_cipher_close(h);
    return rc;
}


/* ---- key files ---------------------------------------------------------- */

int
gp_seal_keys_load(const char *path, gp_seal_keys_t **out, char *err,
                  size_t errlen)
{
    FILE  *fp;
    char  *buf;
    size_t n;
    int    rc;

    buf = malloc(GP_SEAL_FILE_MAX + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "pii key file \"%s\": out of memory", path);
        return -1;
    }

    rc = -1;

    fp = fopen(path, "rb");
    if (fp == NULL) {
        snprintf(err, errlen, "pii key file \"%s\": cannot open: %s", path,
                 strerror(errno));
        goto done;
    }

    n = fread(buf, 1, GP_SEAL_FILE_MAX + 1, fp);

    if (ferror(fp)) {
        snprintf(err, errlen, "pii key file \"%s\": read failed", path);
        fclose(fp);
        goto done;
    }

    fclose(fp);

    if (n > GP_SEAL_FILE_MAX) {
        snprintf(err, errlen,
                 "pii key file \"%s\": longer than %d bytes, not a key file",
                 path, GP_SEAL_FILE_MAX);
        goto done;
    }

    rc = gp_seal_keys_parse(path, buf, n, out, err, errlen);

done:

    OPENSSL_cleanse(buf, GP_SEAL_FILE_MAX + 1);
    free(buf);
    return rc;
}


int
gp_seal_keys_parse(const char *name, const char *text, size_t len,
                   gp_seal_keys_t **out, char *err, size_t errlen)
{
    gp_seal_keys_t *keys;
    gp_seal_key_t  *k;
    const char     *p, *end, *eol, *q, *e, *kid;
    size_t          kidlen, i;
    unsigned        line;
    int             hi, lo;

    keys = calloc(1, sizeof(gp_seal_keys_t));
    if (keys == NULL) {
        snprintf(err, errlen, "pii key file \"%s\": out of memory", name);
        return -1;
    }

    p = text;
    end = text + len;
    line = 0;

    while (p < end) {
        line++;

        eol = memchr(p, '\n', (size_t) (end - p));
        if (eol == NULL) {
            eol = end;
        }

        q = p;
        e = eol;
        p = (eol < end) ? eol + 1 : end;

        while (q < e && (*q == ' ' || *q == '\t')) {
            q++;
        }

        while (e > q && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) {
            e--;
        }

        if (q == e || *q == '#') {
            continue;
        }

        kid = q;

        while (q < e && gp_seal_kid_char((unsigned char) *q)) {
            q++;
        }

        kidlen = (size_t) (q - kid);

        if (kidlen == 0 || kidlen > GP_SEAL_KID_MAX
            || (q < e && *q != ' ' && *q != '\t'))
        {
            snprintf(err, errlen,
                     "pii key file \"%s\" line %u: expected \"<key id> <32 hex "
                     "digits>\", a key id being 1 to %d of A-Z a-z 0-9 . _ -",
                     name, line, GP_SEAL_KID_MAX);
            goto fail;
        }

        /* a line of a key alone must not make the key a key id */
        for (i = 0; i < kidlen && gp_seal_hex((unsigned char) kid[i]) >= 0; i++)
        {
            /* void */
        }

        if (kidlen == 2 * GP_SEAL_KEY_LEN && i == kidlen) {
            snprintf(err, errlen,
                     "pii key file \"%s\" line %u: the key id looks like a "
                     "key (32 hex digits); write \"<key id> <key>\"",
                     name, line);
            goto fail;
        }

        while (q < e && (*q == ' ' || *q == '\t')) {
            q++;
        }

        /* messages about the key never quote the line: it holds the key */

        if (e - q != 2 * GP_SEAL_KEY_LEN) {
            snprintf(err, errlen,
                     "pii key file \"%s\" line %u: the key must be 32 hex "
                     "digits (an SM4 key of 128 bits)",
                     name, line);
            goto fail;
        }

        if (keys->n == GP_SEAL_KEYS_MAX) {
            snprintf(err, errlen,
                     "pii key file \"%s\" line %u: more than %d keys", name,
                     line, GP_SEAL_KEYS_MAX);
            goto fail;
        }

        k = &keys->k[keys->n];
        memcpy(k->kid, kid, kidlen);
        k->kid[kidlen] = '\0';

        if (gp_seal_find(keys, k->kid) != NULL) {
            snprintf(err, errlen,
                     "pii key file \"%s\" line %u: key id \"%s\" is listed "
                     "twice",
                     name, line, k->kid);
            goto fail;
        }

        for (i = 0; i < GP_SEAL_KEY_LEN; i++) {
            hi = gp_seal_hex((unsigned char) q[2 * i]);
            lo = gp_seal_hex((unsigned char) q[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                snprintf(err, errlen,
                         "pii key file \"%s\" line %u: the key must be 32 hex "
                         "digits (an SM4 key of 128 bits)",
                         name, line);
                goto fail;
            }

            k->key[i] = (unsigned char) (hi << 4 | lo);
        }

        keys->n++;
    }

    if (keys->n == 0) {
        snprintf(err, errlen,
                 "pii key file \"%s\": no key in it (one a line: \"<key id> "
                 "<32 hex digits>\")",
                 name);
        goto fail;
    }

    *out = keys;
    return 0;

fail:

    gp_seal_keys_free(keys);
    return -1;
}


void
gp_seal_keys_free(gp_seal_keys_t *keys)
{
    if (keys == NULL) {
        return;
    }

    OPENSSL_cleanse(keys, sizeof(gp_seal_keys_t));
    free(keys);
}


size_t
gp_seal_keys_count(const gp_seal_keys_t *keys)
{
    return keys->n;
}


const char *
gp_seal_keys_kid(const gp_seal_keys_t *keys, size_t i)
{
    return i < keys->n ? keys->k[i].kid : NULL;
}


/* ---- records ------------------------------------------------------------ */

gp_seal_rc_t
gp_seal(const gp_seal_keys_t *keys, const gp_seal_ctx_t *ctx, const void *plain,
        size_t n, char *out, size_t outlen, size_t *outn)
{
    const gp_seal_key_t *k;
    unsigned char        stack[GP_SEAL_STACK_MAX], *blob, aad[GP_SEAL_AAD_MAX];
    size_t               aadlen, kidlen, blen;
    gp_seal_rc_t         rc;

    if (keys == NULL || keys->n == 0 || n > GP_SEAL_PLAIN_MAX
        || outlen < GP_SEAL_RECORD_MAX(n))
    {
        return GP_SEAL_ERROR;
    }

    k = &keys->k[0];
    kidlen = strlen(k->kid);
    blen = GP_SEAL_NONCE_LEN + n + GP_SEAL_TAG_LEN;
    rc = GP_SEAL_ERROR;

    blob = blen <= sizeof(stack) ? stack : malloc(blen);
    if (blob == NULL) {
        return GP_SEAL_ERROR;
    }

    if (gp_seal_aad(k->kid, ctx, aad, &aadlen) != 0
        || gp_random_bytes(blob, GP_SEAL_NONCE_LEN) != 0
        || gp_sm4gcm_encrypt(k->key, blob, GP_SEAL_NONCE_LEN, aad, aadlen,
                             plain, n, blob + GP_SEAL_NONCE_LEN,
                             blob + GP_SEAL_NONCE_LEN + n)
               != 0)
    {
        goto done;
    }

    memcpy(out, k->kid, kidlen);
    out[kidlen] = ':';
    *outn = kidlen + 1 + gp_base64_encode(blob, blen, out + kidlen + 1);
    rc = GP_SEAL_OK;

done:

    OPENSSL_cleanse(blob, blen);
    if (blob != stack) {
        free(blob);
    }

    return rc;
}


gp_seal_rc_t
gp_seal_open(const gp_seal_keys_t *keys, const gp_seal_ctx_t *ctx,
             const char *rec, size_t reclen, char *out, size_t outlen,
             size_t *outn)
{
    const gp_seal_key_t *k;
    const char          *b64;
    char                 kid[GP_SEAL_KID_MAX + 1];
    unsigned char        stack[GP_SEAL_STACK_MAX], *blob, aad[GP_SEAL_AAD_MAX];
    size_t               b64len, blen, bmax, aadlen, n;
    gp_seal_rc_t         rc;

    if (gp_seal_record_kid(rec, reclen, kid) != 0) {
        return GP_SEAL_MALFORMED;
    }

    b64 = rec + strlen(kid) + 1;
    b64len = reclen - strlen(kid) - 1;

    if (b64len > GP_SEAL_B64_MAX) {
        return GP_SEAL_MALFORMED;
    }

    bmax = 3 * ((b64len + 3) / 4);
    blob = bmax <= sizeof(stack) ? stack : malloc(bmax);
    if (blob == NULL) {
        return GP_SEAL_ERROR;
    }

    blen = 0;

    if (gp_base64_decode(b64, b64len, blob, &blen) != 0
        || blen < GP_SEAL_NONCE_LEN + GP_SEAL_TAG_LEN)
    {
        rc = GP_SEAL_MALFORMED;
        goto done;
    }

    k = gp_seal_find(keys, kid);
    if (k == NULL) {
        rc = GP_SEAL_UNKNOWN_KEY;
        goto done;
    }

    n = blen - GP_SEAL_NONCE_LEN - GP_SEAL_TAG_LEN;

    if (outlen < n + 1 || gp_seal_aad(kid, ctx, aad, &aadlen) != 0) {
        rc = GP_SEAL_ERROR;
        goto done;
    }

    rc = GP_SEAL_FORGED;

    if (gp_sm4gcm_decrypt(k->key, blob, GP_SEAL_NONCE_LEN, aad, aadlen,
                          blob + GP_SEAL_NONCE_LEN, n, (unsigned char *) out,
                          blob + GP_SEAL_NONCE_LEN + n)
        != 0)
    {
        out[0] = '\0';
        goto done;
    }

    out[n] = '\0';
    *outn = n;
    rc = GP_SEAL_OK;

done:

    OPENSSL_cleanse(blob, bmax);
    if (blob != stack) {
        free(blob);
    }

    return rc;
}


int
gp_seal_record_kid(const char *rec, size_t reclen,
                   char kid[GP_SEAL_KID_MAX + 1])
{
    size_t i;

    for (i = 0; i < reclen && i <= GP_SEAL_KID_MAX; i++) {
        if (rec[i] == ':') {
            break;
        }

        if (!gp_seal_kid_char((unsigned char) rec[i])) {
            return -1;
        }
    }

    if (i == 0 || i > GP_SEAL_KID_MAX || i == reclen || rec[i] != ':') {
        return -1;
    }

    memcpy(kid, rec, i);
    kid[i] = '\0';

    return 0;
}


const char *
gp_seal_strerror(gp_seal_rc_t rc)
{
    switch (rc) {
    case GP_SEAL_OK:
        return "sealed";
    case GP_SEAL_MALFORMED:
        return "not a sealed record";
    case GP_SEAL_UNKNOWN_KEY:
        return "sealed under a key id that the pii key file does not list";
    case GP_SEAL_FORGED:
        return "does not authenticate: sealed for another notice or field, "
               "or altered";
    case GP_SEAL_ERROR:
    default:
        return "internal error (out of memory or libgcrypt)";
    }
}


/* ---- helpers ------------------------------------------------------------ */

static int
gp_seal_kid_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}


static int
gp_seal_hex(int c)
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


static const gp_seal_key_t *
gp_seal_find(const gp_seal_keys_t *keys, const char *kid)
{
    size_t i;

    for (i = 0; i < keys->n; i++) {
        if (strcmp(keys->k[i].kid, kid) == 0) {
            return &keys->k[i];
        }
    }

    return NULL;
}


/* label 0 kid 0 field 0 unit 0 request_id 0 created_at */
static int
gp_seal_aad(const char *kid, const gp_seal_ctx_t *ctx, unsigned char *buf,
            size_t *len)
{
    const char *parts[5];
    char        when[24];
    size_t      i, n, off;

    if (ctx == NULL || ctx->field == NULL || ctx->unit == NULL
        || ctx->request_id == NULL)
    {
        return -1;
    }

    snprintf(when, sizeof(when), "%" PRId64, ctx->created_at);

    parts[0] = GP_SEAL_AAD_LABEL;
    parts[1] = kid;
    parts[2] = ctx->field;
    parts[3] = ctx->unit;
    parts[4] = ctx->request_id;

    off = 0;

    for (i = 0; i < 5; i++) {
        n = strlen(parts[i]);

        if (off + n + 1 > GP_SEAL_AAD_MAX) {
            return -1;
        }

        memcpy(buf + off, parts[i], n);
        buf[off + n] = '\0';
        off += n + 1;
    }

    n = strlen(when);

    if (off + n > GP_SEAL_AAD_MAX) {
        return -1;
    }

    memcpy(buf + off, when, n);
    *len = off + n;

    return 0;
}
