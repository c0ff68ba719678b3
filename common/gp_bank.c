/*
 * gp_bank: the bank API's request bodies (gp_bank.h).
 */

#include <string.h>

#include "gp_bank.h"
#include "gp_util.h"


static void
gp_bank_fail(json_t *fields, const char *field, const char *reason)
{
    json_array_append_new(
        fields, json_pack("{s:s,s:s}", "field", field, "reason", reason));
}


/* every member's name is one of allowed (NULL-terminated) */
static void
gp_bank_unknown(json_t *fields, const json_t *req, const char *const *allowed)
{
    const char        *key;
    const char *const *a;
    json_t            *v;

    json_object_foreach((json_t *) req, key, v)
    {
        (void) v;

        for (a = allowed; *a != NULL; a++) {
            if (strcmp(*a, key) == 0) {
                break;
            }
        }

        if (*a == NULL) {
            gp_bank_fail(fields, key, "unknown field");
        }
    }
}


/* 1-64 of A-Za-z0-9_- */
static int
gp_bank_token(const char *s, size_t n)
{
    size_t i;
    char   c;

    if (s == NULL || n == 0 || n > 64) {
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


/* an RFC 3339 time not after latest */
static int
gp_bank_time(const json_t *v, int64_t latest, int64_t *t)
{
    return json_is_string(v)
           && gp_time_parse_rfc3339(json_string_value(v), json_string_length(v),
                                    t)
                  == 0
           && *t <= latest;
}


json_t *
gp_bank_payment_check(const json_t *req, int64_t latest, gp_bank_payment_t *p)
{
    json_t       *fields;
    const json_t *v;

    static const char *const allowed[] = { "payment_code", "amount",
                                           "bank_trade_no", "paid_at", NULL };

    memset(p, 0, sizeof(gp_bank_payment_t));

    fields = json_array();
    if (fields == NULL) {
        return NULL;
    }

    gp_bank_unknown(fields, req, allowed);

    v = json_object_get(req, "payment_code");

    if (!json_is_string(v) || json_string_length(v) != 20) {
        gp_bank_fail(fields, "payment_code", "must be a 20-digit payment code");
    } else {
        memcpy(p->payment_code, json_string_value(v), 20);
    }

    v = json_object_get(req, "amount");
    p->amount = json_is_integer(v) ? json_integer_value(v) : 0;

    if (p->amount < 1 || p->amount > GP_FEN_MAX) {
        gp_bank_fail(fields, "amount",
                     "must be an integer number of fen, 1 to 10000000000");
    }

    v = json_object_get(req, "bank_trade_no");

    if (!json_is_string(v)
        || !gp_bank_token(json_string_value(v), json_string_length(v)))
    {
        gp_bank_fail(fields, "bank_trade_no", "must be 1-64 of A-Za-z0-9_-");
    } else {
        memcpy(p->bank_trade_no, json_string_value(v), json_string_length(v));
    }

    if (!gp_bank_time(json_object_get(req, "paid_at"), latest, &p->paid_at)) {
        gp_bank_fail(fields, "paid_at",
                     "must be an RFC 3339 time, not in the future");
    }

    return fields;
}


json_t *
gp_bank_refund_check(const json_t *req, int64_t latest, gp_bank_refund_t *rf)
{
    json_t       *fields;
    const json_t *v;
    const char   *s;
    size_t        n;

    static const char *const allowed[] = { "result",      "bank_refund_no",
                                           "refunded_at", "reason",
                                           "amount",      NULL };

    memset(rf, 0, sizeof(gp_bank_refund_t));
    rf->amount = -1;

    fields = json_array();
    if (fields == NULL) {
        return NULL;
    }

    gp_bank_unknown(fields, req, allowed);

    s = json_string_value(json_object_get(req, "result"));

    if (s == NULL || (strcmp(s, "SUCCEEDED") != 0 && strcmp(s, "FAILED") != 0))
    {
        gp_bank_fail(fields, "result", "must be \"SUCCEEDED\" or \"FAILED\"");
    } else {
        rf->succeeded = (s[0] == 'S');
    }

    v = json_object_get(req, "bank_refund_no");

    if (!json_is_string(v)
        || !gp_request_id_ok(json_string_value(v), json_string_length(v)))
    {
        gp_bank_fail(fields, "bank_refund_no",
                     "required: 1 to 64 printable ASCII characters");
    } else {
        memcpy(rf->bank_refund_no, json_string_value(v), json_string_length(v));
    }

    if (!gp_bank_time(json_object_get(req, "refunded_at"), latest,
                      &rf->refunded_at))
    {
        gp_bank_fail(fields, "refunded_at",
                     "must be an RFC 3339 time, not in the future");
    }

    v = json_object_get(req, "reason");

    if (v != NULL) {
        n = json_is_string(v) ? json_string_length(v) : 0;

        if (!json_is_string(v) || n >= sizeof(rf->reason)
            || !gp_text_ok(json_string_value(v), n, 1, 200)
            || gp_text_has_controls(json_string_value(v), n))
        {
            gp_bank_fail(fields, "reason",
                         "1 to 200 characters, no control characters");
        } else {
            memcpy(rf->reason, json_string_value(v), n);
        }
    }

    v = json_object_get(req, "amount");

    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > GP_FEN_MAX)
        {
            gp_bank_fail(fields, "amount", "an integer number of fen");
        } else {
            rf->amount = json_integer_value(v);
        }
    }

    return fields;
}
