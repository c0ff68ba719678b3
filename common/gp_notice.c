/*
 * gp_notice: the rules of a create request's body (gp_notice.h); every rule of the contract,
 * each failure named in the fields list.
 */

#include <string.h>

#include "gp_notice.h"
#include "gp_util.h"


#define GP_NOTICE_NO_CONTROLS                                                  \
    "must not contain control characters (newline, tab, U+0000-U+001F, "       \
    "U+007F-U+009F) or "                                                       \
    "bidirectional formatting characters"


static void
gp_notice_fail(json_t *fields, const char *field, const char *reason)
{
    json_array_append_new(
        fields, json_pack("{s:s,s:s}", "field", field, "reason", reason));
}


static int
gp_notice_text_ok(const json_t *v, size_t min, size_t max)
{
    return json_is_string(v)
           && gp_text_ok(json_string_value(v), json_string_length(v), min, max);
}


/* wrong JSON types: present fields only; a missing field is a broken rule. A fractional
 * amount is a number, and so a broken rule, not a wrong type */
static void
gp_notice_type(json_t *types, const json_t *obj, const char *key,
               const char *path, json_type type)
{
    const json_t *v;

    v = json_object_get(obj, key);

    if (v == NULL) {
        return;
    }

    if (type == JSON_REAL ? !json_is_number(v) : json_typeof(v) != type) {
        json_array_append_new(types, json_string(path));
    }
}


json_t *
gp_notice_types(const json_t *req)
{
    size_t        i;
    json_t       *types;
    const json_t *payer, *lines, *line;

    types = json_array();
    if (types == NULL) {
        return NULL;
    }

    gp_notice_type(types, req, "request_id", "request_id", JSON_STRING);
    gp_notice_type(types, req, "item_code", "item_code", JSON_STRING);
    gp_notice_type(types, req, "amount", "amount", JSON_REAL);
    gp_notice_type(types, req, "payer", "payer", JSON_OBJECT);
    gp_notice_type(types, req, "due_at", "due_at", JSON_STRING);
    gp_notice_type(types, req, "remark", "remark", JSON_STRING);
    gp_notice_type(types, req, "lines", "lines", JSON_ARRAY);

    payer = json_object_get(req, "payer");
    if (json_is_object(payer)) {
        gp_notice_type(types, payer, "type", "payer.type", JSON_STRING);
        gp_notice_type(types, payer, "name", "payer.name", JSON_STRING);
        gp_notice_type(types, payer, "id_no", "payer.id_no", JSON_STRING);
    }

    lines = json_object_get(req, "lines");
    if (json_is_array(lines)) {
        for (i = 0; i < json_array_size(lines); i++) {
            line = json_array_get(lines, i);

            if (!json_is_object(line)) {
                json_array_append_new(types, json_string("lines"));
                break;
            }

            gp_notice_type(types, line, "item_code", "lines.item_code",
                           JSON_STRING);
            gp_notice_type(types, line, "quantity", "lines.quantity",
                           JSON_REAL);
            gp_notice_type(types, line, "unit_price", "lines.unit_price",
                           JSON_REAL);
        }
    }

    return types;
}


/* the payer object: type, name, id_no (checked against the type) */
static void
gp_notice_payer(json_t *fields, const json_t *payer)
{
    const char   *key, *type;
    const json_t *v;

    json_object_foreach((json_t *) payer, key, v)
    {
        if (strcmp(key, "type") != 0 && strcmp(key, "name") != 0
            && strcmp(key, "id_no") != 0)
        {
            gp_notice_fail(fields, "payer", "unknown field");
            break;
        }
    }

    type = json_string_value(json_object_get(payer, "type"));

    if (type == NULL
        || (strcmp(type, "person") != 0 && strcmp(type, "org") != 0)) {
        gp_notice_fail(fields, "payer.type", "must be \"person\" or \"org\"");
        type = NULL;
    }

    v = json_object_get(payer, "name");

    if (json_is_string(v)
        && gp_text_has_controls(json_string_value(v), json_string_length(v)))
    {
        gp_notice_fail(fields, "payer.name", GP_NOTICE_NO_CONTROLS);

    } else if (!gp_notice_text_ok(v, 1, 100)) {
        gp_notice_fail(fields, "payer.name", "required, 1 to 100 characters");
    }

    v = json_object_get(payer, "id_no");

    if (!json_is_string(v)) {
        gp_notice_fail(fields, "payer.id_no", "required string");

    } else if (type != NULL && strcmp(type, "person") == 0
               && !gp_resident_id_valid(json_string_value(v),
                                        json_string_length(v)))
    {
        gp_notice_fail(fields, "payer.id_no",
                       "not a valid 18-character resident ID");

    } else if (type != NULL && strcmp(type, "org") == 0
               && !gp_uscc_valid(json_string_value(v), json_string_length(v)))
    {
        gp_notice_fail(fields, "payer.id_no",
                       "not a valid unified social credit code");
    }
}


/* lines: 1 to 50 of {item_code, quantity, unit_price}, known items, summing to amount */
static void
gp_notice_lines(json_t *fields, const gp_registry_t *reg, const json_t *lines,
                int64_t amount)
{
    size_t        i;
    int64_t       sum, q, p;
    const json_t *line, *code;

    if (!json_is_array(lines) || json_array_size(lines) == 0
        || json_array_size(lines) > 50)
    {
        gp_notice_fail(fields, "lines", "must be an array of 1 to 50 lines");
        return;
    }

    sum = 0;

    for (i = 0; i < json_array_size(lines); i++) {
        line = json_array_get(lines, i);
        code = json_object_get(line, "item_code");
        q = json_integer_value(json_object_get(line, "quantity"));
        p = json_integer_value(json_object_get(line, "unit_price"));

        if (!json_is_object(line) || json_object_size(line) != 3
            || !json_is_string(code)
            || gp_registry_item(reg, json_string_value(code),
                                json_string_length(code))
                   == NULL
            || !json_is_integer(json_object_get(line, "quantity"))
            || !json_is_integer(json_object_get(line, "unit_price")) || q < 1
            || q > 1000000 || p < 1 || p > GP_FEN_MAX || p > GP_FEN_MAX / q)
        {
            gp_notice_fail(fields, "lines",
                           "each line needs a known item_code, quantity >= 1 "
                           "and unit_price "
                           ">= 1 fen, and nothing else");
            return;
        }

        sum += q * p;

        if (sum > GP_FEN_MAX) {
            break;
        }
    }

    if (sum != amount) {
        gp_notice_fail(fields, "lines", "lines do not sum to amount");
    }
}


json_t *
gp_notice_check(const gp_registry_t *reg, const gp_unit_t *unit,
                const json_t *req, int64_t now, int *forbidden)
{
    json_t          *fields;
    const json_t    *v, *payer;
    size_t           i;
    int64_t          due, amount;
    const char      *key;
    const gp_item_t *item;

    static const char *allowed[] = { "request_id", "item_code", "amount",
                                     "payer",      "due_at",    "lines",
                                     "remark",     NULL };

    *forbidden = 0;

    fields = json_array();
    if (fields == NULL) {
        return NULL;
    }

    item = NULL;
    amount = 0;

    json_object_foreach((json_t *) req, key, v)
    {
        for (i = 0; allowed[i] != NULL; i++) {
            if (strcmp(key, allowed[i]) == 0) {
                break;
            }
        }

        if (allowed[i] == NULL) {
            gp_notice_fail(fields, key, "unknown field");
        }
    }

    v = json_object_get(req, "request_id");

    if (!json_is_string(v)
        || !gp_request_id_ok(json_string_value(v), json_string_length(v)))
    {
        gp_notice_fail(fields, "request_id",
                       "required: 1 to 64 printable ASCII characters");
    }

    v = json_object_get(req, "item_code");
    if (!json_is_string(v)) {
        gp_notice_fail(fields, "item_code", "required string");

    } else {
        item =
            gp_registry_item(reg, json_string_value(v), json_string_length(v));

        if (item == NULL) {
            gp_notice_fail(fields, "item_code", "not in the item catalogue");

        } else if (unit != NULL
                   && !gp_unit_allows(unit, json_string_value(v),
                                      json_string_length(v)))
        {
            *forbidden = 1;
        }
    }

    v = json_object_get(req, "amount");
    if (!json_is_integer(v)) {
        gp_notice_fail(fields, "amount", "required integer number of fen");

    } else {
        amount = json_integer_value(v);

        if (amount < 1 || amount > GP_FEN_MAX) {
            gp_notice_fail(fields, "amount", "must be 1 to 10000000000 fen");

        } else if (item != NULL && (amount < item->min || amount > item->max)) {
            gp_notice_fail(fields, "amount",
                           item->rule == GP_AMOUNT_FIXED
                               ? "must equal the item's fixed amount"
                               : "outside the item's allowed range");
        }
    }

    payer = json_object_get(req, "payer");
    if (!json_is_object(payer)) {
        gp_notice_fail(fields, "payer", "required object");
    } else {
        gp_notice_payer(fields, payer);
    }

    v = json_object_get(req, "due_at");
    if (v != NULL) {
        if (!json_is_string(v)
            || gp_time_parse_rfc3339(json_string_value(v),
                                     json_string_length(v), &due)
                   != 0)
        {
            gp_notice_fail(fields, "due_at",
                           "must be an RFC 3339 time with offset");

        } else if (due <= now) {
            gp_notice_fail(fields, "due_at", "must be in the future");
        }
    }

    v = json_object_get(req, "remark");
    if (json_is_string(v)
        && gp_text_has_controls(json_string_value(v), json_string_length(v)))
    {
        gp_notice_fail(fields, "remark", GP_NOTICE_NO_CONTROLS);

    } else if (v != NULL && !gp_notice_text_ok(v, 0, 200)) {
        gp_notice_fail(fields, "remark",
                       "must be a string of at most 200 characters");
    }

    v = json_object_get(req, "lines");
    if (v != NULL) {
        gp_notice_lines(fields, reg, v, amount);
    }

    return fields;
}
