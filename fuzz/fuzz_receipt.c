/*
 * fuzz_receipt: a receipt verification URL (/r/<code>/<number>?c=<check>) as the edge takes
 * it: the path and the check code (common/gp_util.c).
 */

#include "fuzz.h"
#include "gp_util.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *q;
    size_t      n;
    char        code[9], number[11];

    q = memchr(data, '?', size);
    n = q != NULL ? (size_t) (q - (const char *) data) : size;

    if (gp_receipt_ref_parse((const char *) data, n, q != NULL ? q + 1 : "",
                             q != NULL ? size - n - 1 : 0, code, number)
        == 0)
    {
        if (strlen(code) != 8 || strlen(number) != 10) {
            abort();
        }
    }

    return 0;
}
