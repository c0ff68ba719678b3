/*
 * gp_ledger.c: the hash-chained receipt ledger file (format in gp_ledger.h and
 * docs/receipts.md).
 *
 * Writers serialise on flock(2) of the file; an entry is one write(2) of a
 * whole line followed by fsync(2), so after a crash the file ends either with
 * the whole entry or with a partial line that gp_ledger_sync() cuts off (the
 * receipt plugin has the entry staged in Redis and appends it again).
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "gp_crypto.h"
#include "gp_ledger.h"


static int gp_ledger_unhex(const char *s, size_t n, unsigned char *out);
static int gp_ledger_b64(const char *s, size_t n, unsigned char **out,
                         size_t *outlen);


int
gp_ledger_hash(const unsigned char prev[GP_LEDGER_HASH_LEN], const void *doc,
               size_t doc_len, const void *seal, size_t seal_len,
               unsigned char out[GP_LEDGER_HASH_LEN])
{
    EVP_MD_CTX  *md;
    unsigned int n;
    int          rc;

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return -1;
    }

    rc = -1;

    if (EVP_DigestInit_ex(md, EVP_sm3(), NULL) == 1
        && EVP_DigestUpdate(md, prev, GP_LEDGER_HASH_LEN) == 1
        && EVP_DigestUpdate(md, doc, doc_len) == 1
        && EVP_DigestUpdate(md, seal, seal_len) == 1
        && EVP_DigestFinal_ex(md, out, &n) == 1 && n == GP_LEDGER_HASH_LEN)
    {
        rc = 0;
    }

    EVP_MD_CTX_free(md);
    return rc;
}


static int
gp_ledger_unhex(const char *s, size_t n, unsigned char *out)
{
    size_t i;
    int    hi, lo;

    if (n != 2 * GP_LEDGER_HASH_LEN) {
        return -1;
    }

    for (i = 0; i < n; i += 2) {
        hi = (s[i] >= '0' && s[i] <= '9')   ? s[i] - '0'
             : (s[i] >= 'a' && s[i] <= 'f') ? s[i] - 'a' + 10
                                            : -1;
        lo = (s[i + 1] >= '0' && s[i + 1] <= '9')   ? s[i + 1] - '0'
             : (s[i + 1] >= 'a' && s[i + 1] <= 'f') ? s[i + 1] - 'a' + 10
                                                    : -1;
        if (hi < 0 || lo < 0) {
            return -1;
        }
        out[i / 2] = (unsigned char) (hi * 16 + lo);
    }

    return 0;
}


static int
gp_ledger_b64(const char *s, size_t n, unsigned char **out, size_t *outlen)
{
    unsigned char *p;

    if (n == 0 || n % 4 != 0) {
        return -1;
    }

    p = malloc(3 * (n / 4) + 1);
    if (p == NULL) {
        return -1;
    }

    if (gp_base64_decode(s, n, p, outlen) != 0) {
        free(p);
        return -1;
    }

    p[*outlen] = '\0';
    *out = p;
    return 0;
}


int
gp_ledger_parse(const char *line, size_t len, gp_ledger_entry_t *e, char *err,
                size_t errlen)
{
    const char *f[6], *p, *last;
    size_t      flen[6], i;

    memset(e, 0, sizeof(*e));

    p = line;
    last = line + len;

    for (i = 0; i < 6; i++) {
        f[i] = p;
        while (p < last && *p != '\t') {
            p++;
        }
        flen[i] = (size_t) (p - f[i]);

        if (i < 5) {
            if (p == last) {
                snprintf(err, errlen, "not 6 tab-separated fields");
                return -1;
            }
            p++;
        }
    }

    if (p != last) {
        snprintf(err, errlen, "more than 6 fields");
        return -1;
    }

    if (flen[0] != 8 || strspn(f[0], "0123456789") < 8) {
        snprintf(err, errlen, "bad EInvoiceCode");
        return -1;
    }

    memcpy(e->code, f[0], 8);
    e->code[8] = '\0';

    if (flen[1] != 10 || strspn(f[1], "0123456789") < 10) {
        snprintf(err, errlen, "bad EInvoiceNumber");
        return -1;
    }

    e->number = strtoull(f[1], NULL, 10);

    if (gp_ledger_unhex(f[2], flen[2], e->prev) != 0
        || gp_ledger_unhex(f[3], flen[3], e->hash) != 0)
    {
        snprintf(err, errlen, "bad prev_hash or entry_hash");
        return -1;
    }

    if (gp_ledger_b64(f[4], flen[4], &e->doc, &e->doc_len) != 0) {
        snprintf(err, errlen, "document is not base64");
        return -1;
    }

    if (gp_ledger_b64(f[5], flen[5], &e->seal, &e->seal_len) != 0) {
        gp_ledger_entry_free(e);
        snprintf(err, errlen, "seal is not base64");
        return -1;
    }

    return 0;
}


void
gp_ledger_entry_free(gp_ledger_entry_t *e)
{
    free(e->doc);
    free(e->seal);
    e->doc = NULL;
    e->seal = NULL;
}


char *
gp_ledger_format(const char *code, uint64_t number,
                 const unsigned char prev[GP_LEDGER_HASH_LEN],
                 const unsigned char hash[GP_LEDGER_HASH_LEN], const void *doc,
                 size_t doc_len, const void *seal, size_t seal_len, size_t *len)
{
    char  *line, *p;
    size_t n;

    n = 8 + 1 + 10 + 1 + 64 + 1 + 64 + 1 + 4 * ((doc_len + 2) / 3) + 1
        + 4 * ((seal_len + 2) / 3) + 2;

    line = malloc(n);
    if (line == NULL) {
        return NULL;
    }

    p = line;
    p += sprintf(p, "%.8s\t%010llu\t", code, (unsigned long long) number);
    gp_hex(prev, GP_LEDGER_HASH_LEN, p);
    p += 64;
    *p++ = '\t';
    gp_hex(hash, GP_LEDGER_HASH_LEN, p);
    p += 64;
    *p++ = '\t';
    p += gp_base64_encode(doc, doc_len, p);
    *p++ = '\t';
    p += gp_base64_encode(seal, seal_len, p);
    *p++ = '\n';
    *p = '\0';

    *len = (size_t) (p - line);
    return line;
}


int
gp_ledger_open(gp_ledger_t *l, const char *path, const char *code, char *err,
               size_t errlen)
{
    memset(l, 0, sizeof(*l));

    l->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (l->fd == -1) {
        snprintf(err, errlen, "open(\"%s\") failed: %s", path, strerror(errno));
        return -1;
    }

    snprintf(l->code, sizeof(l->code), "%s", code);
    return 0;
}


void
gp_ledger_close(gp_ledger_t *l)
{
    if (l->fd > 0) {
        close(l->fd);
    }
    l->fd = -1;
}


int
gp_ledger_lock(gp_ledger_t *l)
{
    while (flock(l->fd, LOCK_EX) == -1) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return 0;
}


int
gp_ledger_unlock(gp_ledger_t *l)
{
    return flock(l->fd, LOCK_UN);
}


int
gp_ledger_sync(gp_ledger_t *l, char *err, size_t errlen)
{
    struct stat       st;
    char             *buf, *p, *nl, *end, why[128];
    size_t            n;
    ssize_t           got;
    gp_ledger_entry_t e;
    int               rc;

    if (fstat(l->fd, &st) == -1) {
        snprintf(err, errlen, "fstat() of the ledger failed: %s",
                 strerror(errno));
        return -1;
    }

    if (st.st_size == l->size) {
        return 0;
    }

    if (st.st_size < l->size) {
        /* the file shrank under us: read it again from the start */
        l->size = 0;
        l->last = 0;
        memset(l->head, 0, sizeof(l->head));
    }

    n = (size_t) (st.st_size - l->size);
    buf = malloc(n + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory reading the ledger");
        return -1;
    }

    got = pread(l->fd, buf, n, l->size);
    if (got < 0 || (size_t) got != n) {
        free(buf);
        snprintf(err, errlen, "pread() of the ledger failed");
        return -1;
    }

    buf[n] = '\0';
    p = buf;
    end = buf + n;
    rc = 0;

    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));

        if (nl == NULL) {
            /* a writer died in the middle of its write, before the fsync */
            if (ftruncate(l->fd, l->size) == -1 || fsync(l->fd) == -1) {
                snprintf(err, errlen, "cutting a partial ledger line failed");
                rc = -1;
            }
            break;
        }

        if (gp_ledger_parse(p, (size_t) (nl - p), &e, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "ledger entry after %llu: %s",
                     (unsigned long long) l->last, why);
            rc = -1;
            break;
        }

        gp_ledger_entry_free(&e);

        if (strcmp(e.code, l->code) != 0 || e.number != l->last + 1
            || memcmp(e.prev, l->head, GP_LEDGER_HASH_LEN) != 0)
        {
            snprintf(
                err, errlen, "ledger entry %llu does not follow entry %llu",
                (unsigned long long) e.number, (unsigned long long) l->last);
            rc = -1;
            break;
        }

        l->last = e.number;
        memcpy(l->head, e.hash, GP_LEDGER_HASH_LEN);
        l->size += (off_t) (nl + 1 - p);
        p = nl + 1;
    }

    free(buf);
    return rc;
}


int
gp_ledger_append(gp_ledger_t *l, const char *line, size_t len, char *err,
                 size_t errlen)
{
    ssize_t n;
    size_t  done;

    done = 0;

    while (done < len) {
        n = write(l->fd, line + done, len - done);
        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            snprintf(err, errlen, "write() to the ledger failed: %s",
                     strerror(errno));
            goto fail;
        }
        done += (size_t) n;
    }

    if (fsync(l->fd) == -1) {
        snprintf(err, errlen, "fsync() of the ledger failed: %s",
                 strerror(errno));
        goto fail;
    }

    l->size += (off_t) len;
    return 0;

fail:

    /* cut what was written, so the file ends on a whole line */
    if (ftruncate(l->fd, l->size) == -1) {
        /* gp_ledger_sync() cuts it next time */
    }
    return -1;
}
