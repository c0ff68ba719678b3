/*
 * gp_seal: personal data sealed at rest with SM4-GCM (libgcrypt), under keys
 * that rotate. Shared by the module (seals at create, opens for the creating
 * unit's GET) and the worker (opens for the receipt, re-seals for ops).
 *
 * Key file: one key a line, "<key id> <32 hex digits>"; the first key seals,
 * every key opens. Record: "<key id>:<base64(nonce ‖ ciphertext ‖ tag)>"
 * with a fresh 96-bit nonce. The additional data binds a record to one field
 * of one notice. docs/internals.md ("Personal data at rest") has the formats.
 */

#ifndef GP_SEAL_H
#define GP_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define GP_SEAL_KEY_LEN   16 /* SM4: 128 bits */
#define GP_SEAL_NONCE_LEN 12 /* 96 bits */
#define GP_SEAL_TAG_LEN   16
#define GP_SEAL_KID_MAX   32
#define GP_SEAL_KEYS_MAX  64
#define GP_SEAL_PLAIN_MAX (8 * 1024 * 1024) /* a receipt's PDF too */

/* the longest record of a plaintext of n bytes, with its NUL */
#define GP_SEAL_RECORD_MAX(n)                                                  \
    (GP_SEAL_KID_MAX + 1                                                       \
     + 4 * ((GP_SEAL_NONCE_LEN + (n) + GP_SEAL_TAG_LEN + 2) / 3) + 1)

typedef struct gp_seal_keys_s gp_seal_keys_t;

/* what a record is bound to: one field of one notice */
typedef struct {
    const char *field;      /* "payer_name", "payer_id" */
    const char *unit;       /* the notice's unit */
    const char *request_id; /* the unit's request_id of the create */
    int64_t     created_at; /* the notice's created_at (unix seconds) */
} gp_seal_ctx_t;

typedef enum {
    GP_SEAL_OK = 0,
    GP_SEAL_ERROR,       /* out of memory, libgcrypt, output too small */
    GP_SEAL_MALFORMED,   /* not a record */
    GP_SEAL_UNKNOWN_KEY, /* sealed under a key id the key file does not list */
    GP_SEAL_FORGED       /* does not authenticate: another notice's or field's,
                            or altered */
} gp_seal_rc_t;

/*
 * Once per process, before the first thread and before any other call:
 * initialises libgcrypt (no secure memory) and runs the RFC 8998 SM4-GCM
 * known answer. 0, or -1 with a message in err (libgcrypt too old, SM4-GCM
 * missing or wrong, e.g. in FIPS mode).
 */
int gp_seal_init(char *err, size_t errlen);

/*
 * Reads a key file. 0 and *out, or -1 with a message in err naming the file
 * and the line (never a key). Blank lines and lines starting with '#' are
 * skipped; a key id is 1 to 32 of A-Z a-z 0-9 . _ -, listed once.
 */
int gp_seal_keys_load(const char *path, gp_seal_keys_t **out, char *err,
                      size_t errlen);
/* the same from text (name is what messages call it) */
int gp_seal_keys_parse(const char *name, const char *text, size_t len,
                       gp_seal_keys_t **out, char *err, size_t errlen);
/* wipes the keys and frees; NULL is fine */
void   gp_seal_keys_free(gp_seal_keys_t *keys);
size_t gp_seal_keys_count(const gp_seal_keys_t *keys);
/* the key id of key i; 0 is the one that seals */
const char *gp_seal_keys_kid(const gp_seal_keys_t *keys, size_t i);

/*
 * Seals n bytes (at most GP_SEAL_PLAIN_MAX) under the first key: out gets the
 * record, NUL-terminated, *outn its length (out needs GP_SEAL_RECORD_MAX(n)).
 * Thread-safe.
 */
gp_seal_rc_t gp_seal(const gp_seal_keys_t *keys, const gp_seal_ctx_t *ctx,
                     const void *plain, size_t n, char *out, size_t outlen,
                     size_t *outn);

/*
 * Opens a record sealed for ctx under any listed key: out gets the
 * plaintext, NUL-terminated, *outn its length (out needs as many bytes as the
 * record is long). On failure out holds nothing. Thread-safe.
 */
gp_seal_rc_t gp_seal_open(const gp_seal_keys_t *keys, const gp_seal_ctx_t *ctx,
                          const char *rec, size_t reclen, char *out,
                          size_t outlen, size_t *outn);

/* the key id of a record, NUL-terminated: 0, or -1 when it is not a record */
int gp_seal_record_kid(const char *rec, size_t reclen,
                       char kid[GP_SEAL_KID_MAX + 1]);

/* a short English phrase for a result, for logs */
const char *gp_seal_strerror(gp_seal_rc_t rc);

/*
 * SM4-GCM itself, as libgcrypt does it, with a 16-byte tag: for the known
 * answer tests. decrypt fails (-1, out wiped) unless the tag verifies. 0 or -1.
 */
int gp_sm4gcm_encrypt(const unsigned char key[GP_SEAL_KEY_LEN], const void *iv,
                      size_t ivlen, const void *aad, size_t aadlen,
                      const void *in, size_t n, unsigned char *out,
                      unsigned char tag[GP_SEAL_TAG_LEN]);
int gp_sm4gcm_decrypt(const unsigned char key[GP_SEAL_KEY_LEN], const void *iv,
                      size_t ivlen, const void *aad, size_t aadlen,
                      const void *in, size_t n, unsigned char *out,
                      const unsigned char tag[GP_SEAL_TAG_LEN]);

#endif /* GP_SEAL_H */
