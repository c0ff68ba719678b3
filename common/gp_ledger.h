/*
 * gp_ledger: the receipt ledger, an append-only, hash-chained text file, one
 * per EInvoiceCode (docs/receipts.md). Plain C over POSIX and OpenSSL; used by
 * the receipt plugin (append) and by gov-pay-ledger (verify).
 *
 * One line per receipt, fields separated by a TAB, ending in "\n":
 *
 *   <EInvoiceCode> <EInvoiceNumber> <prev_hash> <entry_hash> <doc> <seal>
 *
 * prev_hash and entry_hash are 64 lowercase hex digits (SM3); the first
 * entry's prev_hash is 64 zeros; doc and seal are base64 of the canonical
 * document and of the canonical InvoicingPartySeal, and
 *
 *   entry_hash = SM3(prev_hash as 32 bytes || doc bytes || seal bytes)
 */

#ifndef GP_LEDGER_H
#define GP_LEDGER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define GP_LEDGER_HASH_LEN 32
#define GP_LEDGER_LINE_MAX (4 * 1024 * 1024)

typedef struct {
    char           code[9];
    uint64_t       number;
    unsigned char  prev[GP_LEDGER_HASH_LEN];
    unsigned char  hash[GP_LEDGER_HASH_LEN];
    unsigned char *doc; /* malloc'd, NUL-terminated */
    size_t         doc_len;
    unsigned char *seal; /* malloc'd, NUL-terminated */
    size_t         seal_len;
} gp_ledger_entry_t;

/* an open ledger file, as a writer sees it */
typedef struct {
    int           fd;
    char          code[9];
    off_t         size; /* bytes scanned so far (whole lines) */
    uint64_t      last; /* number of the last entry; 0: empty */
    unsigned char head[GP_LEDGER_HASH_LEN]; /* its entry_hash; zeros */
} gp_ledger_t;

/* SM3(prev || doc || seal); 0 or -1 */
int gp_ledger_hash(const unsigned char prev[GP_LEDGER_HASH_LEN],
                   const void *doc, size_t doc_len, const void *seal,
                   size_t seal_len, unsigned char out[GP_LEDGER_HASH_LEN]);

/*
 * parses one line (without its "\n"); 0, or -1 with a reason in err; free
 * with gp_ledger_entry_free()
 */
int  gp_ledger_parse(const char *line, size_t len, gp_ledger_entry_t *e,
                     char *err, size_t errlen);
void gp_ledger_entry_free(gp_ledger_entry_t *e);

/* the line of an entry (malloc'd, with its "\n"); NULL when out of memory */
char *gp_ledger_format(const char *code, uint64_t number,
                       const unsigned char prev[GP_LEDGER_HASH_LEN],
                       const unsigned char hash[GP_LEDGER_HASH_LEN],
                       const void *doc, size_t doc_len, const void *seal,
                       size_t seal_len, size_t *len);

/* opens (creates, mode 0640) the ledger of code; 0 or -1 with err */
int  gp_ledger_open(gp_ledger_t *l, const char *path, const char *code,
                    char *err, size_t errlen);
void gp_ledger_close(gp_ledger_t *l);
/* flock(LOCK_EX) / LOCK_UN: the single writer of a ledger; 0 or -1 */
int gp_ledger_lock(gp_ledger_t *l);
int gp_ledger_unlock(gp_ledger_t *l);
/*
 * With the lock held: reads what other writers appended since the last call
 * (last, head), checking numbering and chain continuity; a partial last line
 * (a writer died in the middle of a write, before its fsync) is cut off. 0, or
 * -1 with err.
 */
int gp_ledger_sync(gp_ledger_t *l, char *err, size_t errlen);
/* appends one line and fsyncs; with the lock held; 0 or -1 with err */
int gp_ledger_append(gp_ledger_t *l, const char *line, size_t len, char *err,
                     size_t errlen);

#endif /* GP_LEDGER_H */
