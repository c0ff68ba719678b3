/*
 * gp_authz: the Authorization header of unit and bank requests, parsed; plain C.
 *
 *   <SCHEME> unit="<id>",ts="<unix>",nonce="<16-64>",sig="<base64>"
 *
 * Parsing checks only the shape (the scheme word, the four quoted values, each once, nothing
 * else, printable ASCII without backslash); what the values mean (a known unit, the window,
 * the signature) is the edge's to check (ngx_gov_pay_auth.c).
 */

#ifndef GP_AUTHZ_H
#define GP_AUTHZ_H

#include <stddef.h>

typedef struct {
    const char *p;
    size_t      n;
} gp_span_t;

/* pointers into the header value: valid as long as it is */
typedef struct {
    gp_span_t scheme;
    gp_span_t unit;
    gp_span_t ts;
    gp_span_t nonce;
    gp_span_t sig;
} gp_authz_t;

/* 0, or -1 when the header is not of that shape (a, partly filled, is then meaningless) */
int gp_authz_parse(const char *h, size_t n, gp_authz_t *a);

/* 1 if the nonce is 16 to 64 of A-Z a-z 0-9 _ - */
int gp_authz_nonce_ok(const char *s, size_t n);

/* 1 if ts is 1 to 12 decimal digits (unix seconds) */
int gp_authz_ts_ok(const char *s, size_t n);

#endif /* GP_AUTHZ_H */
