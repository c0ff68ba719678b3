/*
 * fuzz_authz: the Authorization header of unit and bank requests (common/gp_authz.c), as the
 * edge reads it before anything else: shape, scheme, nonce and ts syntax.
 */

#include "fuzz.h"
#include "gp_authz.h"
#include "gp_registry.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gp_authz_t  a;
    gp_scheme_t scheme;

    if (gp_authz_parse((const char *) data, size, &a) != 0) {
        return 0;
    }

    (void) gp_scheme_parse(a.scheme.p, a.scheme.n, &scheme);
    (void) gp_authz_nonce_ok(a.nonce.p, a.nonce.n);
    (void) gp_authz_ts_ok(a.ts.p, a.ts.n);

    /* the spans lie inside the header */
    if (a.unit.p < (const char *) data || a.unit.p + a.unit.n > (const char *) data + size) {
        abort();
    }

    return 0;
}
