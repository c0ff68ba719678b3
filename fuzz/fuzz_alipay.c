/*
 * fuzz_alipay: an Alipay notification's form body as the edge reads it: decoded once, no
 * repeated field, the canonical string that is verified (every field but sign and sign_type,
 * empty values left out, sorted), then the fields read after verification (total_amount in
 * exact fen, gmt_payment in Beijing time).
 */

#include "fuzz.h"
#include "gp_util.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gp_form_t      form;
    const gp_kv_t *kv;
    char          *canon;
    size_t         len, i, j;
    int64_t        v;

    static const char *skip[] = { "sign", "sign_type", NULL };

    if (gp_form_parse((const char *) data, size, &form) != 0) {
        return 0;
    }

    for (i = 0; i < form.n; i++) {
        for (j = i + 1; j < form.n; j++) {
            if (form.kv[i].key_len == form.kv[j].key_len
                && memcmp(form.kv[i].key, form.kv[j].key, form.kv[i].key_len) == 0)
            {
                goto done; /* a repeated field: refused */
            }
        }
    }

    canon = gp_form_canonical(&form, skip, 1, &len);
    free(canon);

    kv = gp_form_get(&form, "total_amount");
    if (kv != NULL) {
        (void) gp_yuan_to_fen(kv->value, kv->value_len, &v);
    }

    kv = gp_form_get(&form, "gmt_payment");
    if (kv != NULL) {
        (void) gp_cst_parse(kv->value, kv->value_len, 1, &v);
    }

    kv = gp_form_get(&form, "out_trade_no");
    if (kv != NULL) {
        (void) gp_text_ok(kv->value, kv->value_len, 1, 64);
    }

done:

    gp_form_free(&form);
    return 0;
}
