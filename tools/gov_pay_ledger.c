/*
 * gov-pay-ledger: checks receipt ledgers and receipts offline, with public
 * keys only (docs/receipts.md).
 *
 *   gov-pay-ledger verify <ledger file> [--pubkey <pem>]...
 *       walks the chain: every line well formed, one code, numbers 1, 2, 3…
 *       without a gap, prev_hash = the previous entry_hash (zeros first),
 *       entry_hash = SM3(prev_hash ‖ document ‖ seal), and with --pubkey
 *       every seal verifies over its document (the key is chosen by the
 *       seal's algorithm). Exit 0 and "ok: …", or exit 1 naming the first
 *       broken entry.
 *
 *   gov-pay-ledger check-receipt <document.json> <seal.json> --pubkey <pem>
 *       verifies one receipt's seal over the document's exact bytes.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gp_crypto.h"
#include "gp_ledger.h"
#include "gp_pkey.h"


typedef struct {
    EVP_PKEY *key[2]; /* by gp_sigalg_t */
} gp_keys_t;


static int gp_usage(void);
static int gp_load_pubkey(gp_keys_t *keys, const char *path);
static int gp_check_seal(gp_keys_t *keys, const unsigned char *doc,
                         size_t doc_len, const unsigned char *seal,
                         size_t seal_len, char *why, size_t whylen);
static int gp_verify(const char *path, gp_keys_t *keys);
static int gp_check_receipt(const char *doc, const char *seal, gp_keys_t *keys);
static char *gp_read_all(const char *path, size_t *len);


int
main(int argc, char **argv)
{
    gp_keys_t keys;
    int       i, rc, npos;
    char     *pos[2];

    memset(&keys, 0, sizeof(keys));
    npos = 0;

    if (argc < 3) {
        return gp_usage();
    }

    for (i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--pubkey") == 0 && i + 1 < argc) {
            if (gp_load_pubkey(&keys, argv[++i]) != 0) {
                return 2;
            }
        } else if (npos < 2 && argv[i][0] != '-') {
            pos[npos++] = argv[i];
        } else {
            return gp_usage();
        }
    }

    if (strcmp(argv[1], "verify") == 0 && npos == 1) {
        rc = gp_verify(pos[0], &keys);

    } else if (strcmp(argv[1], "check-receipt") == 0 && npos == 2
               && (keys.key[0] != NULL || keys.key[1] != NULL))
    {
        rc = gp_check_receipt(pos[0], pos[1], &keys);

    } else {
        rc = gp_usage();
    }

    EVP_PKEY_free(keys.key[0]);
    EVP_PKEY_free(keys.key[1]);
    return rc;
}


static int
gp_usage(void)
{
    fprintf(stderr,
            "usage: gov-pay-ledger verify <ledger> [--pubkey <pem>]...\n"
            "       gov-pay-ledger check-receipt <document.json> <seal.json> "
            "--pubkey <pem>\n");
    return 2;
}


static int
gp_load_pubkey(gp_keys_t *keys, const char *path)
{
    char      err[512];
    EVP_PKEY *k;

    k = gp_pkey_load(path, 0, GP_SIG_SM2_SM3, err, sizeof(err));
    if (k != NULL) {
        EVP_PKEY_free(keys->key[GP_SIG_SM2_SM3]);
        keys->key[GP_SIG_SM2_SM3] = k;
        return 0;
    }

    k = gp_pkey_load(path, 0, GP_SIG_RSA_SHA256, err, sizeof(err));
    if (k != NULL) {
        EVP_PKEY_free(keys->key[GP_SIG_RSA_SHA256]);
        keys->key[GP_SIG_RSA_SHA256] = k;
        return 0;
    }

    fprintf(stderr, "gov-pay-ledger: %s is not an SM2 or RSA public key\n",
            path);
    return -1;
}


/* 1 verifies, 0 does not (why says why) */
static int
gp_check_seal(gp_keys_t *keys, const unsigned char *doc, size_t doc_len,
              const unsigned char *seal, size_t seal_len, char *why,
              size_t whylen)
{
    json_t       *s;
    json_error_t  jerr;
    const char   *alg_s, *value;
    gp_sigalg_t   alg;
    unsigned char sig[GP_SIG_MAX + 4];
    size_t        siglen, vlen;
    int           ok;

    s = json_loadb((const char *) seal, seal_len, 0, &jerr);
    if (s == NULL
        || json_unpack(s, "{s:s, s:s}", "SealAlgorithm", &alg_s, "SealValue",
                       &value)
               != 0)
    {
        json_decref(s);
        snprintf(why, whylen, "the seal is not a seal object");
        return 0;
    }

    if (strcmp(alg_s, "SM2-SM3") == 0) {
        alg = GP_SIG_SM2_SM3;
    } else if (strcmp(alg_s, "RSA-SHA256") == 0) {
        alg = GP_SIG_RSA_SHA256;
    } else {
        json_decref(s);
        snprintf(why, whylen, "unknown seal algorithm");
        return 0;
    }

    if (keys->key[alg] == NULL) {
        json_decref(s);
        snprintf(why, whylen, "no %s public key given", alg_s);
        return 0;
    }

    vlen = strlen(value);
    if (vlen > 4 * (GP_SIG_MAX / 3) + 4
        || gp_base64_decode(value, vlen, sig, &siglen) != 0)
    {
        json_decref(s);
        snprintf(why, whylen, "SealValue is not base64");
        return 0;
    }

    ok = gp_pkey_verify(keys->key[alg], alg, doc, doc_len, sig, siglen) == 1;
    json_decref(s);

    if (!ok) {
        snprintf(why, whylen, "the seal does not verify over the document");
    }

    return ok;
}


static int
gp_verify(const char *path, gp_keys_t *keys)
{
    FILE             *f;
    char             *line, why[256], code[9], hex[65];
    size_t            cap;
    ssize_t           n;
    unsigned long     lineno;
    uint64_t          expect;
    unsigned char     head[GP_LEDGER_HASH_LEN], h[GP_LEDGER_HASH_LEN];
    gp_ledger_entry_t e;
    int               check_seals, rc;

    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "gov-pay-ledger: cannot open %s\n", path);
        return 1;
    }

    check_seals = keys->key[0] != NULL || keys->key[1] != NULL;
    line = NULL;
    cap = 0;
    lineno = 0;
    expect = 1;
    code[0] = '\0';
    memset(head, 0, sizeof(head));
    rc = 0;

    while ((n = getline(&line, &cap, f)) != -1) {
        lineno++;

        if (n == 0 || line[n - 1] != '\n') {
            printf("broken: entry %llu (line %lu): partial last line\n",
                   (unsigned long long) expect, lineno);
            rc = 1;
            break;
        }

        if (gp_ledger_parse(line, (size_t) n - 1, &e, why, sizeof(why)) != 0) {
            printf("broken: entry %llu (line %lu): %s\n",
                   (unsigned long long) expect, lineno, why);
            rc = 1;
            break;
        }

        why[0] = '\0';

        if (code[0] == '\0') {
            memcpy(code, e.code, sizeof(code));
        }

        if (strcmp(code, e.code) != 0) {
            snprintf(why, sizeof(why), "EInvoiceCode %s, not %s", e.code, code);
        } else if (e.number != expect) {
            snprintf(why, sizeof(why), "number %llu where %llu was due",
                     (unsigned long long) e.number,
                     (unsigned long long) expect);
        } else if (memcmp(e.prev, head, GP_LEDGER_HASH_LEN) != 0) {
            snprintf(why, sizeof(why),
                     "prev_hash is not the entry_hash of entry %llu",
                     (unsigned long long) expect - 1);
        } else if (gp_ledger_hash(e.prev, e.doc, e.doc_len, e.seal, e.seal_len,
                                  h)
                       != 0
                   || memcmp(h, e.hash, GP_LEDGER_HASH_LEN) != 0)
        {
            snprintf(why, sizeof(why),
                     "entry_hash is not SM3(prev_hash || document || seal)");
        } else if (check_seals) {
            if (!gp_check_seal(keys, e.doc, e.doc_len, e.seal, e.seal_len, why,
                               sizeof(why)))
            {
                /* why is set */
            } else {
                why[0] = '\0';
            }
        }

        if (why[0] != '\0') {
            printf("broken: entry %s/%010llu (line %lu): %s\n", e.code,
                   (unsigned long long) e.number, lineno, why);
            gp_ledger_entry_free(&e);
            rc = 1;
            break;
        }

        memcpy(head, e.hash, GP_LEDGER_HASH_LEN);
        gp_ledger_entry_free(&e);
        expect++;
    }

    free(line);
    fclose(f);

    if (rc == 0) {
        gp_hex(head, GP_LEDGER_HASH_LEN, hex);
        printf("ok: %s, %llu entries, head %s%s\n", code[0] ? code : "(empty)",
               (unsigned long long) expect - 1, hex,
               check_seals ? ", every seal verifies" : "");
    }

    return rc;
}


static int
gp_check_receipt(const char *doc_path, const char *seal_path, gp_keys_t *keys)
{
    char  *doc, *seal, why[256];
    size_t doc_len, seal_len;
    int    ok;

    doc = gp_read_all(doc_path, &doc_len);
    seal = gp_read_all(seal_path, &seal_len);

    if (doc == NULL || seal == NULL) {
        free(doc);
        free(seal);
        fprintf(stderr, "gov-pay-ledger: cannot read the receipt files\n");
        return 1;
    }

    ok = gp_check_seal(keys, (unsigned char *) doc, doc_len,
                       (unsigned char *) seal, seal_len, why, sizeof(why));

    printf(ok ? "ok: the seal verifies\n" : "invalid: %s\n", why);

    free(doc);
    free(seal);
    return ok ? 0 : 1;
}


static char *
gp_read_all(const char *path, size_t *len)
{
    FILE  *f;
    char  *buf, *p;
    size_t cap, n;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }

    cap = 65536;
    n = 0;
    buf = malloc(cap);

    while (buf != NULL) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) {
            break;
        }
        cap *= 2;
        p = realloc(buf, cap);
        if (p == NULL) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = p;
    }

    fclose(f);
    *len = n;
    return buf;
}
