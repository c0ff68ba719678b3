/*
 * gp_authz: the Authorization header of unit and bank requests (gp_authz.h).
 *
 * The grammar, strict on purpose (every unit builds the header with one line of code, and a
 * lenient parser is a parser with surprises):
 *
 *   header = scheme 1*" " pair *( *" " "," *" " pair ) *" "
 *   pair   = name "=" DQUOTE *( %x21 / %x23-5B / %x5D-7E ) DQUOTE   ; no '"', no '\'
 *   name   = "unit" / "ts" / "nonce" / "sig"                          ; each exactly once
 */

#include <string.h>

#include "gp_authz.h"


int
gp_authz_parse(const char *h, size_t n, gp_authz_t *a)
{
    const char *p, *last, *name, *value;
    size_t      nlen;
    gp_span_t  *dst;

    memset(a, 0, sizeof(gp_authz_t));

    if (h == NULL) {
        return -1;
    }

    p = h;
    last = h + n;

    /* the scheme word */

    a->scheme.p = p;
    while (p < last && *p != ' ') {
        p++;
    }
    a->scheme.n = (size_t) (p - a->scheme.p);

    if (a->scheme.n == 0 || p == last) {
        return -1;
    }

    while (p < last && *p == ' ') {
        p++;
    }

    /* k="v" pairs separated by commas; each key once */

    while (p < last) {
        name = p;
        while (p < last && *p >= 'a' && *p <= 'z') {
            p++;
        }
        nlen = (size_t) (p - name);

        if (nlen == 0 || last - p < 2 || p[0] != '=' || p[1] != '"') {
            return -1;
        }

        p += 2;
        value = p;

        while (p < last && *p != '"') {
            if (*p < 0x21 || *p > 0x7e || *p == '\\') {
                return -1;
            }
            p++;
        }

        if (p == last) {
            return -1;
        }

        if (nlen == 4 && memcmp(name, "unit", 4) == 0) {
            dst = &a->unit;
        } else if (nlen == 2 && memcmp(name, "ts", 2) == 0) {
            dst = &a->ts;
        } else if (nlen == 5 && memcmp(name, "nonce", 5) == 0) {
            dst = &a->nonce;
        } else if (nlen == 3 && memcmp(name, "sig", 3) == 0) {
            dst = &a->sig;
        } else {
            return -1;
        }

        if (dst->p != NULL) {
            return -1;
        }

        dst->p = value;
        dst->n = (size_t) (p - value);

        p++; /* closing quote */

        while (p < last && *p == ' ') {
            p++;
        }

        if (p < last) {
            if (*p != ',') {
                return -1;
            }
            p++;

            while (p < last && *p == ' ') {
                p++;
            }
        }
    }

    if (a->unit.n == 0 || a->ts.n == 0 || a->nonce.n == 0 || a->sig.n == 0) {
        return -1;
    }

    return 0;
}


int
gp_authz_nonce_ok(const char *s, size_t n)
{
    size_t i;
    char   c;

    if (n < 16 || n > 64) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


int
gp_authz_ts_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > 12) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }

    return 1;
}
