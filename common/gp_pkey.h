/*
 * gp_pkey: asymmetric keys and signatures through OpenSSL 3 EVP:
 * RSA-SHA256 (PKCS#1 v1.5) and SM2-with-SM3 (distinguishing ID 1234567812345678).
 * Keys are PEM files, loaded once (at configuration time) and reused.
 */

#ifndef GP_PKEY_H
#define GP_PKEY_H

#include <stddef.h>

#include <openssl/evp.h>

#define GP_SM2_DEFAULT_ID "1234567812345678"
#define GP_SIG_MAX        512

typedef enum { GP_SIG_RSA_SHA256 = 0, GP_SIG_SM2_SM3 } gp_sigalg_t;

/* loads a PEM public (private = 0) or private key and checks that it fits alg (RSA of at
 * least 2048 bits; an SM2 key); NULL with err naming the file on any failure */
EVP_PKEY *gp_pkey_load(const char *path, int private_key, gp_sigalg_t alg,
                       char *err, size_t errlen);

/* 1: the signature verifies; 0: it does not; -1: error */
int gp_pkey_verify(EVP_PKEY *pkey, gp_sigalg_t alg, const void *msg, size_t n,
                   const unsigned char *sig, size_t siglen);

/* sig must hold GP_SIG_MAX bytes; 0 or -1 */
int gp_pkey_sign(EVP_PKEY *pkey, gp_sigalg_t alg, const void *msg, size_t n,
                 unsigned char *sig, size_t *siglen);

#endif /* GP_PKEY_H */
