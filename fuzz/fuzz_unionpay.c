/*
 * fuzz_unionpay: a UnionPay back notification's form body as the edge reads it: decoded
 * once, the canonical string that is verified (every field but signature, empty values kept,
 * sorted), then txnAmt, txnTime and the rest.
 */

#include "fuzz.h"
#include "gp_util.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gp_form_t      form;
    const gp_kv_t *kv;
    char          *canon;
    size_t         len;
    int64_t        t;

    static const char *skip[] = { "signature", NULL };

    if (gp_form_parse((const char *) data, size, &form) != 0) {
        return 0;
    }

    canon = gp_form_canonical(&form, skip, 0, &len);
    free(canon);

    kv = gp_form_get(&form, "txnTime");
    if (kv != NULL) {
        (void) gp_cst_parse(kv->value, kv->value_len, 0, &t);
    }

    kv = gp_form_get(&form, "reqReserved");
    if (kv != NULL) {
        (void) gp_utf8_valid(kv->value, kv->value_len, NULL);
    }

    gp_form_free(&form);
    return 0;
}
