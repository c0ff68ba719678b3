/*
 * gp_pkey.c: RSA-SHA256 and SM2-with-SM3 keys and signatures over OpenSSL 3 EVP.
 *
 * SM2 signatures use the distinguishing ID 1234567812345678 (GB/T 35276), set on the key
 * context before the digest starts, as the openssl CLI does with -pkeyopt distid:... .
 * Signatures are DER (SM2) or raw PKCS#1 v1.5 (RSA) bytes; callers base64 them.
 */

#include "gp_pkey.h"

#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>

static int gp_pkey_init(EVP_MD_CTX *md, EVP_PKEY *pkey, gp_sigalg_t alg,
                        int sign);

EVP_PKEY *
gp_pkey_load(const char *path, int private_key, gp_sigalg_t alg, char *err,
             size_t errlen)
{
    FILE     *f;
    EVP_PKEY *pkey;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot open key file \"%s\"", path);
        return NULL;
    }

    pkey = private_key ? PEM_read_PrivateKey(f, NULL, NULL, NULL)
                       : PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);

    if (pkey == NULL) {
        snprintf(err, errlen, "\"%s\" holds no PEM %s key", path,
                 private_key ? "private" : "public");
        return NULL;
    }

    if (alg == GP_SIG_RSA_SHA256) {
        if (!EVP_PKEY_is_a(pkey, "RSA") || EVP_PKEY_get_bits(pkey) < 2048) {
            snprintf(err, errlen,
                     "\"%s\" is not an RSA key of at least 2048 bits", path);
            goto fail;
        }

    } else if (!EVP_PKEY_is_a(pkey, "SM2")) {
        snprintf(err, errlen, "\"%s\" is not an SM2 key", path);
        goto fail;
    }

    return pkey;

fail:

    EVP_PKEY_free(pkey);
    return NULL;
}

static int
gp_pkey_init(EVP_MD_CTX *md, EVP_PKEY *pkey, gp_sigalg_t alg, int sign)
{
    EVP_PKEY_CTX *pctx;

    if (alg == GP_SIG_RSA_SHA256) {
        return sign ? EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey)
                    : EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey);
    }

    pctx = EVP_PKEY_CTX_new(pkey, NULL);
    if (pctx == NULL) {
        return 0;
    }

    if (EVP_PKEY_CTX_set1_id(pctx, GP_SM2_DEFAULT_ID,
                             sizeof(GP_SM2_DEFAULT_ID) - 1)
        <= 0)
    {
        EVP_PKEY_CTX_free(pctx);
        return 0;
    }

    /* the MD context uses pctx but does not free it: the callers do */
    EVP_MD_CTX_set_pkey_ctx(md, pctx);

    return sign ? EVP_DigestSignInit(md, NULL, EVP_sm3(), NULL, pkey)
                : EVP_DigestVerifyInit(md, NULL, EVP_sm3(), NULL, pkey);
}

int
gp_pkey_verify(EVP_PKEY *pkey, gp_sigalg_t alg, const void *msg, size_t n,
               const unsigned char *sig, size_t siglen)
{
    int         rc;
    EVP_MD_CTX *md;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return -1;
    }

    if (gp_pkey_init(md, pkey, alg, 0) != 1) {
        rc = -1;
        goto done;
    }

    rc = EVP_DigestVerify(md, sig, siglen, msg, n) == 1 ? 1 : 0;

done:

    if (alg == GP_SIG_SM2_SM3) {
        EVP_PKEY_CTX_free(EVP_MD_CTX_get_pkey_ctx(md));
    }
    EVP_MD_CTX_free(md);
    return rc;
}

int
gp_pkey_sign(EVP_PKEY *pkey, gp_sigalg_t alg, const void *msg, size_t n,
             unsigned char *sig, size_t *siglen)
{
    int         rc;
    size_t      len;
    EVP_MD_CTX *md;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return -1;
    }

    rc = -1;
    len = GP_SIG_MAX;

    if (gp_pkey_init(md, pkey, alg, 1) == 1
        && EVP_DigestSign(md, NULL, &len, msg, n) == 1 && len <= GP_SIG_MAX
        && EVP_DigestSign(md, sig, &len, msg, n) == 1)
    {
        *siglen = len;
        rc = 0;
    }

    if (alg == GP_SIG_SM2_SM3) {
        EVP_PKEY_CTX_free(EVP_MD_CTX_get_pkey_ctx(md));
    }
    EVP_MD_CTX_free(md);
    return rc;
}
