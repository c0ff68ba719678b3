/*
 * fuzz_wechat: what the edge reads of a WeChat Pay notification (common/gp_wechat.c): the
 * envelope's resource, and the decrypted transaction or refund (the same bytes are tried as
 * each: after decryption they are the channel's, but a parser must not trust them either).
 */

#include <jansson.h>

#include "fuzz.h"
#include "gp_wechat.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t              *doc;
    const char          *why;
    gp_wechat_tx_t       tx;
    gp_wechat_refund_t   rf;
    gp_wechat_resource_t res;

    doc = json_loadb((const char *) data, size, 0, NULL);
    (void) gp_wechat_resource(doc, &res, &why);
    json_decref(doc);

    (void) gp_wechat_transaction((const char *) data, size, &tx, &why);
    (void) gp_wechat_refund((const char *) data, size, &rf, &why);

    return 0;
}
