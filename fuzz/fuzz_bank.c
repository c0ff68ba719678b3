/*
 * fuzz_bank: the bank API's bodies (common/gp_bank.c): a payment a bank took, and how a
 * refund it carried out ended.
 */

#include <jansson.h>

#include "fuzz.h"
#include "gp_bank.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t           *req, *fields;
    gp_bank_payment_t p;
    gp_bank_refund_t  rf;

    req = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        return 0;
    }

    fields = gp_bank_payment_check(req, 1796110625, &p);
    json_decref(fields);

    fields = gp_bank_refund_check(req, 1796110625, &rf);
    json_decref(fields);

    json_decref(req);
    return 0;
}
