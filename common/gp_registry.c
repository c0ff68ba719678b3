/*
 * gp_registry.c: the collecting units and the item catalogue.
 *
 * nginx (unit authentication, notice validation, payer pages) and the workers
 * (webhooks, receipts) read the same JSON file, described in docs/internals.md:
 *
 *     {"units": [{"id", "name", "scheme", "secret_file" | "key_file",
 *                 "items": [...], "webhook", "webhook_secret_file", "kind",
 *                 "return_hosts": [...]}, ...],
 *      "items": [{"code", "name", "department",
 *                 "amount": {"rule": "fixed" | "range" | "free", ...}}, ...]}
 *
 * The file is checked strictly, as API requests are: an unknown or misspelt
 * field, a wrong type, a duplicate unit id or item code, a unit allowed an
 * item that is not in the catalogue, or an amount rule outside 1 .. 10^10 fen
 * is an error, and the message names the file and the unit or item at fault.
 * Secrets are read into memory (trailing white space is not part of a secret)
 * and are never printed; for the asymmetric schemes only the absolute path of
 * the unit's public key is kept, the module loads the key itself. Relative
 * paths are taken from the registry file's own folder.
 *
 * Required fields: unit id, name, scheme and the key file its scheme needs;
 * item code, name and amount. Optional: a unit's items (a bank is configured
 * like a unit and is allowed no item), webhook (NULL when absent) and
 * webhook_secret_file (the HMAC key of its webhooks, any scheme; required by
 * the notify plugin for RSA/SM2 units, which have no shared secret), a
 * unit's kind ("unit", the default, or "bank": a bank counter that may call
 * the /bank/v1/ routes and nothing else), return_hosts (the hosts of the
 * unit's website that the payer pages may link back to: "host[:port]" for
 * https, "http://host[:port]" to allow plain http; lower case; none when
 * absent), an item's department ("" when absent).
 *
 * After loading, units are sorted by id and items by code, so lookups are
 * binary searches. A loaded registry is never changed: a reload builds a new
 * one, and any number of threads may read it.
 */

#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "gp_registry.h"
#include "gp_util.h"


#define GP_UNIT_ID_MAX     64
#define GP_ITEM_CODE_MAX   32
#define GP_SECRET_MIN      16
#define GP_SECRET_FILE_MAX 65536


/* where we are, for error messages */
typedef struct {
    const char *path; /* the registry file as given */
    char       *dir;  /* its folder, absolute */
    char       *err;
    size_t      errlen;
} gp_reg_ctx_t;


static const char *gp_scheme_names[] = { "GOVPAY-HMAC-SHA256",
                                         "GOVPAY-HMAC-SM3", "GOVPAY-RSA-SHA256",
                                         "GOVPAY-SM2-SM3" };

static const char *gp_unit_fields[] = {
    "id",       "name",         "scheme",  "secret_file",
    "key_file", "items",        "webhook", "webhook_secret_file",
    "kind",     "return_hosts", NULL
};

static const char *gp_item_fields[] = { "code",  "name",   "department",
                                        "split", "amount", NULL };
static const char *gp_root_fields[] = { "units", "items", NULL };
static const char *gp_fixed_fields[] = { "rule", "amount", NULL };
static const char *gp_range_fields[] = { "rule", "min", "max", NULL };
static const char *gp_free_fields[] = { "rule", NULL };


#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
gp_reg_error(gp_reg_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    int     n;

    if (ctx->err == NULL || ctx->errlen == 0) {
        return;
    }

    n = snprintf(ctx->err, ctx->errlen, "registry \"%s\": ", ctx->path);
    if (n < 0 || (size_t) n >= ctx->errlen) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(ctx->err + n, ctx->errlen - (size_t) n, fmt, ap);
    va_end(ap);
}


/* ---- schemes ------------------------------------------------------------- */

const char *
gp_scheme_name(gp_scheme_t scheme)
{
    if ((unsigned) scheme
        >= sizeof(gp_scheme_names) / sizeof(gp_scheme_names[0])) {
        return "UNKNOWN";
    }

    return gp_scheme_names[scheme];
}


int
gp_scheme_parse(const char *name, size_t len, gp_scheme_t *scheme)
{
    size_t i;

    if (name == NULL) {
        return -1;
    }

    for (i = 0; i < sizeof(gp_scheme_names) / sizeof(gp_scheme_names[0]); i++) {
        if (strlen(gp_scheme_names[i]) == len
            && memcmp(gp_scheme_names[i], name, len) == 0)
        {
            *scheme = (gp_scheme_t) i;
            return 0;
        }
    }

    return -1;
}


static int
gp_scheme_is_hmac(gp_scheme_t scheme)
{
    return scheme == GP_SCHEME_HMAC_SHA256 || scheme == GP_SCHEME_HMAC_SM3;
}


/* ---- small checks and helpers -------------------------------------------- */

/*
 * bytewise order of (a, alen) and (b, blen), shorter first on a common prefix
 */
static int
gp_reg_cmp_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    int rc;

    rc = memcmp(a, b, alen < blen ? alen : blen);
    if (rc != 0) {
        return rc;
    }

    return (alen > blen) - (alen < blen);
}


static int
gp_reg_charset(const char *s, size_t max, int dash)
{
    size_t i, n;
    char   c;

    n = strlen(s);
    if (n == 0 || n > max) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || (dash && (c == '-' || c == '_'))))
        {
            return 0;
        }
    }

    return 1;
}


static int
gp_unit_id_valid(const char *s)
{
    return gp_reg_charset(s, GP_UNIT_ID_MAX, 1);
}


static int
gp_item_code_valid(const char *s)
{
    return gp_reg_charset(s, GP_ITEM_CODE_MAX, 0);
}


/* the first member of obj not named in allowed, or NULL */
static const char *
gp_reg_unknown_field(json_t *obj, const char **allowed)
{
    const char *key;
    json_t     *value;
    size_t      i;

    json_object_foreach(obj, key, value)
    {
        for (i = 0; allowed[i] != NULL; i++) {
            if (strcmp(key, allowed[i]) == 0) {
                break;
            }
        }
        if (allowed[i] == NULL) {
            return key;
        }
    }

    return NULL;
}


/*
 * a copy of the string member key of obj in *out: 0, 1 if absent and optional,
 * or -1 with the reason in *why (absent, not a string, empty, holding a NUL)
 */
static int
gp_reg_string(json_t *obj, const char *key, int required, char **out,
              const char **why)
{
    json_t *v;

    *out = NULL;

    v = json_object_get(obj, key);
    if (v == NULL) {
        *why = "is missing";
        return required ? -1 : 1;
    }

    if (!json_is_string(v)) {
        *why = "must be a string";
        return -1;
    }

    if (json_string_length(v) == 0
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        *why = "must be a non-empty string without NUL";
        return -1;
    }

    *out = strdup(json_string_value(v));
    if (*out == NULL) {
        *why = "out of memory";
        return -1;
    }

    return 0;
}


/* p if absolute, else dir "/" p; malloc'd */
static char *
gp_reg_resolve(const gp_reg_ctx_t *ctx, const char *p)
{
    size_t dlen, plen;
    char  *out;

    plen = strlen(p);

    if (p[0] == '/') {
        return strdup(p);
    }

    dlen = strlen(ctx->dir);

    out = malloc(dlen + 1 + plen + 1);
    if (out == NULL) {
        return NULL;
    }

    memcpy(out, ctx->dir, dlen);
    out[dlen] = '/';
    memcpy(out + dlen + 1, p, plen + 1);

    return out;
}


static int
gp_reg_is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v'
           || c == '\f';
}


/* ---- items --------------------------------------------------------------- */

/* an amount member as a number of fen within 1 .. 10^10, or -1 */
static int
gp_reg_fen(json_t *amount, const char *key, int64_t *out)
{
    json_t    *v;
    json_int_t x;

    v = json_object_get(amount, key);
    if (v == NULL || !json_is_integer(v)) {
        return -1;
    }

    x = json_integer_value(v);
    if (x < 1 || x > GP_FEN_MAX) {
        return -1;
    }

    *out = (int64_t) x;
    return 0;
}


static int
gp_item_load_amount(gp_reg_ctx_t *ctx, json_t *amount, gp_item_t *item)
{
    const char *rule, **fields, *unknown;

    if (!json_is_object(amount)) {
        gp_reg_error(ctx, "item \"%s\": \"amount\" must be an object",
                     item->code);
        return -1;
    }

    rule = json_string_value(json_object_get(amount, "rule"));

    if (rule != NULL && strcmp(rule, "fixed") == 0) {
        item->rule = GP_AMOUNT_FIXED;
        fields = gp_fixed_fields;
    } else if (rule != NULL && strcmp(rule, "range") == 0) {
        item->rule = GP_AMOUNT_RANGE;
        fields = gp_range_fields;
    } else if (rule != NULL && strcmp(rule, "free") == 0) {
        item->rule = GP_AMOUNT_FREE;
        fields = gp_free_fields;
    } else {
        gp_reg_error(ctx,
                     "item \"%s\": \"amount.rule\" must be \"fixed\", "
                     "\"range\" or \"free\"",
                     item->code);
        return -1;
    }

    unknown = gp_reg_unknown_field(amount, fields);
    if (unknown != NULL) {
        gp_reg_error(ctx,
                     "item \"%s\": unknown field \"amount.%s\" for rule \"%s\"",
                     item->code, unknown, rule);
        return -1;
    }

    switch (item->rule) {
    case GP_AMOUNT_FIXED:
        if (gp_reg_fen(amount, "amount", &item->min) != 0) {
            goto bad_amount;
        }
        item->max = item->min;
        break;

    case GP_AMOUNT_RANGE:
        if (gp_reg_fen(amount, "min", &item->min) != 0
            || gp_reg_fen(amount, "max", &item->max) != 0
            || item->min > item->max)
        {
            goto bad_amount;
        }
        break;

    case GP_AMOUNT_FREE:
        item->min = 1;
        item->max = GP_FEN_MAX;
        break;
    }

    return 0;

bad_amount:
    gp_reg_error(ctx,
                 "item \"%s\": amounts must be integers of fen with "
                 "1 <= min <= max <= 10000000000",
                 item->code);
    return -1;
}


static const char *gp_level_names[GP_LEVEL_N] = { "central", "province", "city",
                                                  "county" };


const char *
gp_level_name(gp_level_t level)
{
    return (unsigned) level < GP_LEVEL_N ? gp_level_names[level] : "UNKNOWN";
}


/*
 * "split": [{"level": "city", "percent": 60}, {"level": "province",
 * "percent": 40}]: optional; each level at most once, whole percents of
 * 1 .. 100 that sum to exactly 100, so no fen is lost or made up when a
 * payment is divided (the remainder of the division goes to the first
 * level listed).
 */
static int
gp_item_load_split(gp_reg_ctx_t *ctx, json_t *split, gp_item_t *item)
{
    static const char *fields[] = { "level", "percent", NULL };
    const char        *level, *unknown;
    json_t            *e, *pct;
    size_t             i, l;
    unsigned           sum;

    item->nsplit = 0;

    if (split == NULL) {
        return 0;
    }

    if (!json_is_array(split) || json_array_size(split) == 0
        || json_array_size(split) > GP_LEVEL_N)
    {
        gp_reg_error(ctx,
                     "item \"%s\": \"split\" must be an array of 1 "
                     "to %d shares",
                     item->code, GP_LEVEL_N);
        return -1;
    }

    sum = 0;

    json_array_foreach(split, i, e)
    {
        unknown = json_is_object(e) ? gp_reg_unknown_field(e, fields) : NULL;
        level = json_string_value(json_object_get(e, "level"));
        pct = json_object_get(e, "percent");

        if (!json_is_object(e) || unknown != NULL || level == NULL
            || !json_is_integer(pct) || json_integer_value(pct) < 1
            || json_integer_value(pct) > 100)
        {
            gp_reg_error(ctx,
                         "item \"%s\": split[%zu] must be "
                         "{\"level\": ..., \"percent\": 1..100}",
                         item->code, i);
            return -1;
        }

        for (l = 0; l < GP_LEVEL_N; l++) {
            if (strcmp(level, gp_level_names[l]) == 0) {
                break;
            }
        }

        if (l == GP_LEVEL_N) {
            gp_reg_error(ctx,
                         "item \"%s\": split level \"%.20s\" is not "
                         "one of central, province, city, county",
                         item->code, level);
            return -1;
        }

        for (size_t j = 0; j < item->nsplit; j++) {
            if (item->split[j].level == (gp_level_t) l) {
                gp_reg_error(ctx,
                             "item \"%s\": split level \"%s\" is "
                             "listed twice",
                             item->code, level);
                return -1;
            }
        }

        item->split[item->nsplit].level = (gp_level_t) l;
        item->split[item->nsplit].percent = (unsigned) json_integer_value(pct);
        item->nsplit++;
        sum += (unsigned) json_integer_value(pct);
    }

    if (sum != 100) {
        gp_reg_error(ctx, "item \"%s\": split shares sum to %u%%, not 100%%",
                     item->code, sum);
        return -1;
    }

    return 0;
}


static int
gp_item_load(gp_reg_ctx_t *ctx, json_t *obj, size_t index, gp_item_t *item)
{
    const char *unknown, *why;
    int         rc;

    if (!json_is_object(obj)) {
        gp_reg_error(ctx, "items[%zu] must be an object", index);
        return -1;
    }

    if (gp_reg_string(obj, "code", 1, &item->code, &why) != 0) {
        gp_reg_error(ctx, "items[%zu]: \"code\" %s", index, why);
        return -1;
    }

    if (!gp_item_code_valid(item->code)) {
        gp_reg_error(ctx,
                     "items[%zu]: item code \"%.40s\" must be 1-32 of "
                     "A-Za-z0-9",
                     index, item->code);
        return -1;
    }

    unknown = gp_reg_unknown_field(obj, gp_item_fields);
    if (unknown != NULL) {
        gp_reg_error(ctx, "item \"%s\": unknown field \"%s\"", item->code,
                     unknown);
        return -1;
    }

    if (gp_reg_string(obj, "name", 1, &item->name, &why) != 0) {
        gp_reg_error(ctx, "item \"%s\": \"name\" %s", item->code, why);
        return -1;
    }

    rc = gp_reg_string(obj, "department", 0, &item->department, &why);
    if (rc == 1) {
        item->department = strdup("");
        rc = (item->department == NULL) ? -1 : 0;
        why = "out of memory";
    }
    if (rc != 0) {
        gp_reg_error(ctx, "item \"%s\": \"department\" %s", item->code, why);
        return -1;
    }

    if (gp_item_load_split(ctx, json_object_get(obj, "split"), item) != 0) {
        return -1;
    }

    if (json_object_get(obj, "amount") == NULL) {
        gp_reg_error(ctx, "item \"%s\": \"amount\" is missing", item->code);
        return -1;
    }

    return gp_item_load_amount(ctx, json_object_get(obj, "amount"), item);
}


static int
gp_item_cmp(const void *a, const void *b)
{
    const gp_item_t *x = a, *y = b;

    return strcmp(x->code, y->code);
}


/* loads the catalogue into reg, sorted by code, refusing duplicates */
static int
gp_items_load(gp_reg_ctx_t *ctx, json_t *items, gp_registry_t *reg)
{
    size_t i, n;

    n = json_array_size(items);
    if (n == 0) {
        return 0;
    }

    reg->items = calloc(n, sizeof(gp_item_t));
    if (reg->items == NULL) {
        gp_reg_error(ctx, "out of memory");
        return -1;
    }
    reg->nitems = n;

    for (i = 0; i < n; i++) {
        if (gp_item_load(ctx, json_array_get(items, i), i, &reg->items[i]) != 0)
        {
            return -1;
        }
    }

    qsort(reg->items, n, sizeof(gp_item_t), gp_item_cmp);

    for (i = 1; i < n; i++) {
        if (strcmp(reg->items[i - 1].code, reg->items[i].code) == 0) {
            gp_reg_error(ctx, "item \"%s\": duplicate item code",
                         reg->items[i].code);
            return -1;
        }
    }

    return 0;
}


/* ---- units --------------------------------------------------------------- */

/*
 * reads a secret file: contents without trailing white space, at least 16 bytes
 */
static int
gp_unit_read_secret(gp_reg_ctx_t *ctx, const char *file, gp_unit_t *unit,
                    unsigned char **out, size_t *outlen)
{
    unsigned char *buf = NULL;
    char          *path;
    FILE          *fp = NULL;
    size_t         n;

    path = gp_reg_resolve(ctx, file);
    buf = malloc(GP_SECRET_FILE_MAX + 1);
    if (path == NULL || buf == NULL) {
        gp_reg_error(ctx, "unit \"%s\": out of memory", unit->id);
        goto fail;
    }

    fp = fopen(path, "rb");
    if (fp == NULL) {
        gp_reg_error(ctx, "unit \"%s\": secret file \"%s\": cannot open: %s",
                     unit->id, path, strerror(errno));
        goto fail;
    }

    n = fread(buf, 1, GP_SECRET_FILE_MAX + 1, fp);
    if (ferror(fp) || n > GP_SECRET_FILE_MAX) {
        gp_reg_error(ctx, "unit \"%s\": secret file \"%s\": %s", unit->id, path,
                     ferror(fp) ? "read failed" : "longer than 64 KiB");
        goto fail;
    }

    while (n > 0 && gp_reg_is_space(buf[n - 1])) {
        n--;
    }

    if (n < GP_SECRET_MIN) {
        gp_reg_error(
            ctx,
            "unit \"%s\": secret file \"%s\": secret shorter than %d bytes",
            unit->id, path, GP_SECRET_MIN);
        goto fail;
    }

    *out = malloc(n + 1);
    if (*out == NULL) {
        gp_reg_error(ctx, "unit \"%s\": out of memory", unit->id);
        goto fail;
    }

    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *outlen = n;

    fclose(fp);
    OPENSSL_cleanse(buf, GP_SECRET_FILE_MAX + 1);
    free(buf);
    free(path);
    return 0;

fail:
    if (fp != NULL) {
        fclose(fp);
    }
    if (buf != NULL) {
        OPENSSL_cleanse(buf, GP_SECRET_FILE_MAX + 1);
    }
    free(buf);
    free(path);
    return -1;
}


/* resolves a public key file to an absolute path of an existing regular file */
static int
gp_unit_resolve_key(gp_reg_ctx_t *ctx, const char *file, gp_unit_t *unit)
{
    struct stat st;
    char       *path;

    path = gp_reg_resolve(ctx, file);
    if (path == NULL) {
        gp_reg_error(ctx, "unit \"%s\": out of memory", unit->id);
        return -1;
    }

    unit->key_file = realpath(path, NULL);
    if (unit->key_file == NULL) {
        gp_reg_error(ctx, "unit \"%s\": key file \"%s\": %s", unit->id, path,
                     strerror(errno));
        free(path);
        return -1;
    }

    if (stat(unit->key_file, &st) != 0 || !S_ISREG(st.st_mode)) {
        gp_reg_error(ctx, "unit \"%s\": key file \"%s\": not a regular file",
                     unit->id, path);
        free(path);
        return -1;
    }

    free(path);
    return 0;
}


/*
 * the key material of the unit's scheme: a secret, or the path of a public key
 */
static int
gp_unit_load_key(gp_reg_ctx_t *ctx, json_t *obj, gp_unit_t *unit)
{
    const char *want, *other, *why;
    char       *file;
    int         rc;

    want = gp_scheme_is_hmac(unit->scheme) ? "secret_file" : "key_file";
    other = gp_scheme_is_hmac(unit->scheme) ? "key_file" : "secret_file";

    if (json_object_get(obj, other) != NULL) {
        gp_reg_error(ctx, "unit \"%s\": \"%s\" does not apply to scheme %s",
                     unit->id, other, gp_scheme_name(unit->scheme));
        return -1;
    }

    if (gp_reg_string(obj, want, 1, &file, &why) != 0) {
        gp_reg_error(ctx, "unit \"%s\": \"%s\" %s (scheme %s)", unit->id, want,
                     why, gp_scheme_name(unit->scheme));
        return -1;
    }

    if (gp_scheme_is_hmac(unit->scheme)) {
        rc = gp_unit_read_secret(ctx, file, unit, &unit->secret,
                                 &unit->secret_len);
    } else {
        rc = gp_unit_resolve_key(ctx, file, unit);
    }

    free(file);
    return rc;
}


static int
gp_unit_load_items(gp_reg_ctx_t *ctx, json_t *obj, const gp_registry_t *reg,
                   gp_unit_t *unit)
{
    json_t     *items, *v;
    const char *code;
    size_t      i, j, n;

    items = json_object_get(obj, "items");
    if (items == NULL) {
        return 0;
    }

    if (!json_is_array(items)) {
        gp_reg_error(ctx,
                     "unit \"%s\": \"items\" must be an array of item codes",
                     unit->id);
        return -1;
    }

    n = json_array_size(items);
    if (n == 0) {
        return 0;
    }

    unit->items = calloc(n, sizeof(char *));
    if (unit->items == NULL) {
        gp_reg_error(ctx, "unit \"%s\": out of memory", unit->id);
        return -1;
    }

    for (i = 0; i < n; i++) {
        v = json_array_get(items, i);
        code = json_string_value(v);

        if (code == NULL || strlen(code) != json_string_length(v)
            || gp_registry_item(reg, code, strlen(code)) == NULL)
        {
            gp_reg_error(ctx,
                         "unit \"%s\": items[%zu]%s%s%s is not a code in the "
                         "item catalogue",
                         unit->id, i, code ? " \"" : "", code ? code : "",
                         code ? "\"" : "");
            return -1;
        }

        for (j = 0; j < unit->nitems; j++) {
            if (strcmp(unit->items[j], code) == 0) {
                gp_reg_error(ctx, "unit \"%s\": item \"%s\" listed twice",
                             unit->id, code);
                return -1;
            }
        }

        unit->items[unit->nitems] = strdup(code);
        if (unit->items[unit->nitems] == NULL) {
            gp_reg_error(ctx, "unit \"%s\": out of memory", unit->id);
            return -1;
        }
        unit->nitems++;
    }

    return 0;
}


static int
gp_unit_load_webhook(gp_reg_ctx_t *ctx, json_t *obj, gp_unit_t *unit)
{
    const char *why;
    int         rc;

    rc = gp_reg_string(obj, "webhook", 0, &unit->webhook, &why);
    if (rc == 1) {
        return 0;
    }

    if (rc != 0) {
        gp_reg_error(ctx, "unit \"%s\": \"webhook\" %s", unit->id, why);
        return -1;
    }

    if (strncmp(unit->webhook, "http://", 7) != 0
        && strncmp(unit->webhook, "https://", 8) != 0)
    {
        gp_reg_error(
            ctx, "unit \"%s\": \"webhook\" must be an http:// or https:// URL",
            unit->id);
        return -1;
    }

    return 0;
}


/* "host[:port]" or "http://host[:port]": lower-case host characters only */
static int
gp_return_host_valid(const char *s)
{
    size_t i, n;

    if (strncmp(s, "http://", 7) == 0) {
        s += 7;
    }

    n = strlen(s);
    if (n == 0 || n > 253 + 6) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '-' || s[i] == '.' || s[i] == ':'))
        {
            return 0;
        }
    }

    return s[0] != ':' && s[0] != '.';
}


static int
gp_unit_load_return_hosts(gp_reg_ctx_t *ctx, json_t *obj, gp_unit_t *unit)
{
    json_t     *hosts, *v;
    const char *h;
    size_t      i, n;

    hosts = json_object_get(obj, "return_hosts");
    if (hosts == NULL) {
        return 0;
    }

    if (!json_is_array(hosts)) {
        gp_reg_error(ctx,
                     "unit \"%s\": \"return_hosts\" must be an array of "
                     "host names",
                     unit->id);
        return -1;
    }

    n = json_array_size(hosts);
    if (n == 0) {
        return 0;
    }

    unit->return_hosts = calloc(n, sizeof(char *));
    if (unit->return_hosts == NULL) {
        gp_reg_error(ctx, "unit \"%s\": out of memory", unit->id);
        return -1;
    }

    for (i = 0; i < n; i++) {
        v = json_array_get(hosts, i);
        h = json_string_value(v);

        if (h == NULL || strlen(h) != json_string_length(v)
            || !gp_return_host_valid(h)) {
            gp_reg_error(ctx,
                         "unit \"%s\": return_hosts[%zu] must be a lower-case "
                         "\"host[:port]\" or \"http://host[:port]\"",
                         unit->id, i);
            return -1;
        }

        unit->return_hosts[unit->nreturn_hosts] = strdup(h);
        if (unit->return_hosts[unit->nreturn_hosts] == NULL) {
            gp_reg_error(ctx, "unit \"%s\": out of memory", unit->id);
            return -1;
        }
        unit->nreturn_hosts++;
    }

    return 0;
}


/* optional: the HMAC key of the unit's webhooks (any scheme) */
static int
gp_unit_load_webhook_secret(gp_reg_ctx_t *ctx, json_t *obj, gp_unit_t *unit)
{
    const char *why;
    char       *file;
    int         rc;

    rc = gp_reg_string(obj, "webhook_secret_file", 0, &file, &why);
    if (rc == 1) {
        return 0;
    }

    if (rc != 0) {
        gp_reg_error(ctx, "unit \"%s\": \"webhook_secret_file\" %s", unit->id,
                     why);
        return -1;
    }

    rc = gp_unit_read_secret(ctx, file, unit, &unit->webhook_secret,
                             &unit->webhook_secret_len);
    free(file);
    return rc;
}


static int
gp_unit_load(gp_reg_ctx_t *ctx, json_t *obj, size_t index,
             const gp_registry_t *reg, gp_unit_t *unit)
{
    const char *unknown, *why, *scheme;
    json_t     *kind;

    if (!json_is_object(obj)) {
        gp_reg_error(ctx, "units[%zu] must be an object", index);
        return -1;
    }

    if (gp_reg_string(obj, "id", 1, &unit->id, &why) != 0) {
        gp_reg_error(ctx, "units[%zu]: \"id\" %s", index, why);
        return -1;
    }

    if (!gp_unit_id_valid(unit->id)) {
        gp_reg_error(ctx,
                     "units[%zu]: unit id \"%.80s\" must be 1-64 of "
                     "A-Za-z0-9_-",
                     index, unit->id);
        return -1;
    }

    unknown = gp_reg_unknown_field(obj, gp_unit_fields);
    if (unknown != NULL) {
        gp_reg_error(ctx, "unit \"%s\": unknown field \"%s\"", unit->id,
                     unknown);
        return -1;
    }

    if (gp_reg_string(obj, "name", 1, &unit->name, &why) != 0) {
        gp_reg_error(ctx, "unit \"%s\": \"name\" %s", unit->id, why);
        return -1;
    }

    scheme = json_string_value(json_object_get(obj, "scheme"));
    if (scheme == NULL
        || gp_scheme_parse(scheme, strlen(scheme), &unit->scheme) != 0)
    {
        gp_reg_error(
            ctx,
            "unit \"%s\": \"scheme\" must be one of GOVPAY-HMAC-SHA256, "
            "GOVPAY-HMAC-SM3, GOVPAY-RSA-SHA256, GOVPAY-SM2-SM3",
            unit->id);
        return -1;
    }

    kind = json_object_get(obj, "kind");
    if (kind != NULL) {
        if (json_is_string(kind)
            && strcmp(json_string_value(kind), "bank") == 0) {
            unit->bank = 1;
        } else if (!json_is_string(kind)
                   || strcmp(json_string_value(kind), "unit") != 0)
        {
            gp_reg_error(ctx,
                         "unit \"%s\": \"kind\" must be \"unit\" or \"bank\"",
                         unit->id);
            return -1;
        }
    }

    if (gp_unit_load_key(ctx, obj, unit) != 0
        || gp_unit_load_items(ctx, obj, reg, unit) != 0
        || gp_unit_load_webhook(ctx, obj, unit) != 0
        || gp_unit_load_return_hosts(ctx, obj, unit) != 0
        || gp_unit_load_webhook_secret(ctx, obj, unit) != 0)
    {
        return -1;
    }

    return 0;
}


static int
gp_unit_cmp(const void *a, const void *b)
{
    const gp_unit_t *x = a, *y = b;

    return strcmp(x->id, y->id);
}


/*
 * loads the units into reg (after the items), sorted by id, refusing duplicates
 */
static int
gp_units_load(gp_reg_ctx_t *ctx, json_t *units, gp_registry_t *reg)
{
    size_t i, n;

    n = json_array_size(units);
    if (n == 0) {
        return 0;
    }

    reg->units = calloc(n, sizeof(gp_unit_t));
    if (reg->units == NULL) {
        gp_reg_error(ctx, "out of memory");
        return -1;
    }
    reg->nunits = n;

    for (i = 0; i < n; i++) {
        if (gp_unit_load(ctx, json_array_get(units, i), i, reg, &reg->units[i])
            != 0) {
            return -1;
        }
    }

    qsort(reg->units, n, sizeof(gp_unit_t), gp_unit_cmp);

    for (i = 1; i < n; i++) {
        if (strcmp(reg->units[i - 1].id, reg->units[i].id) == 0) {
            gp_reg_error(ctx, "unit \"%s\": duplicate unit id",
                         reg->units[i].id);
            return -1;
        }
    }

    return 0;
}


/* ---- the file ------------------------------------------------------------ */

/* the absolute folder of the registry file, malloc'd */
static char *
gp_reg_dir(const char *path)
{
    char *abs, *slash;

    abs = realpath(path, NULL);
    if (abs == NULL) {
        return NULL;
    }

    slash = strrchr(abs, '/');
    if (slash == abs) {
        slash[1] = '\0'; /* a file in "/" */
    } else if (slash != NULL) {
        *slash = '\0';
    }

    return abs;
}


static int
gp_reg_load_root(gp_reg_ctx_t *ctx, json_t *root, gp_registry_t *reg)
{
    const char *unknown;
    json_t     *units, *items;

    if (!json_is_object(root)) {
        gp_reg_error(ctx, "the top level must be an object");
        return -1;
    }

    unknown = gp_reg_unknown_field(root, gp_root_fields);
    if (unknown != NULL) {
        gp_reg_error(ctx, "unknown field \"%s\"", unknown);
        return -1;
    }

    units = json_object_get(root, "units");
    items = json_object_get(root, "items");

    if (!json_is_array(units) || !json_is_array(items)) {
        gp_reg_error(ctx, "\"units\" and \"items\" must both be arrays");
        return -1;
    }

    if (gp_items_load(ctx, items, reg) != 0
        || gp_units_load(ctx, units, reg) != 0) {
        return -1;
    }

    return 0;
}


int
gp_registry_load(const char *path, gp_registry_t **out, char *err,
                 size_t errlen)
{
    gp_reg_ctx_t   ctx;
    gp_registry_t *reg = NULL;
    json_error_t   jerr;
    json_t        *root = NULL;

    ctx.path = path;
    ctx.err = err;
    ctx.errlen = errlen;
    *out = NULL;

    ctx.dir = gp_reg_dir(path);
    if (ctx.dir == NULL) {
        gp_reg_error(&ctx, "cannot open: %s", strerror(errno));
        return -1;
    }

    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        gp_reg_error(&ctx, "line %d, column %d: %s", jerr.line, jerr.column,
                     jerr.text);
        goto fail;
    }

    reg = calloc(1, sizeof(gp_registry_t));
    if (reg == NULL) {
        gp_reg_error(&ctx, "out of memory");
        goto fail;
    }

    if (gp_reg_load_root(&ctx, root, reg) != 0) {
        goto fail;
    }

    json_decref(root);
    free(ctx.dir);
    *out = reg;
    return 0;

fail:
    gp_registry_free(reg);
    json_decref(root);
    free(ctx.dir);
    return -1;
}


static void
gp_unit_free(gp_unit_t *unit)
{
    size_t i;

    free(unit->id);
    free(unit->name);

    if (unit->secret != NULL) {
        OPENSSL_cleanse(unit->secret, unit->secret_len);
        free(unit->secret);
    }

    free(unit->key_file);

    if (unit->webhook_secret != NULL) {
        OPENSSL_cleanse(unit->webhook_secret, unit->webhook_secret_len);
        free(unit->webhook_secret);
    }

    for (i = 0; i < unit->nitems; i++) {
        free(unit->items[i]);
    }

    free(unit->items);
    free(unit->webhook);

    for (i = 0; i < unit->nreturn_hosts; i++) {
        free(unit->return_hosts[i]);
    }
    free(unit->return_hosts);
}


void
gp_registry_free(gp_registry_t *reg)
{
    size_t i;

    if (reg == NULL) {
        return;
    }

    for (i = 0; i < reg->nunits; i++) {
        gp_unit_free(&reg->units[i]);
    }

    for (i = 0; i < reg->nitems; i++) {
        free(reg->items[i].code);
        free(reg->items[i].name);
        free(reg->items[i].department);
    }

    free(reg->units);
    free(reg->items);
    free(reg);
}


/* ---- lookups ------------------------------------------------------------- */

const gp_unit_t *
gp_registry_unit(const gp_registry_t *reg, const char *id, size_t len)
{
    size_t lo, hi, mid;
    int    rc;

    if (reg == NULL || id == NULL) {
        return NULL;
    }

    lo = 0;
    hi = reg->nunits;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = gp_reg_cmp_bytes(id, len, reg->units[mid].id,
                              strlen(reg->units[mid].id));

        if (rc == 0) {
            return &reg->units[mid];
        }

        if (rc < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


const gp_item_t *
gp_registry_item(const gp_registry_t *reg, const char *code, size_t len)
{
    size_t lo, hi, mid;
    int    rc;

    if (reg == NULL || code == NULL) {
        return NULL;
    }

    lo = 0;
    hi = reg->nitems;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = gp_reg_cmp_bytes(code, len, reg->items[mid].code,
                              strlen(reg->items[mid].code));

        if (rc == 0) {
            return &reg->items[mid];
        }

        if (rc < 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


int
gp_unit_allows(const gp_unit_t *unit, const char *item_code, size_t len)
{
    size_t i;

    if (unit == NULL || item_code == NULL) {
        return 0;
    }

    for (i = 0; i < unit->nitems; i++) {
        if (strlen(unit->items[i]) == len
            && memcmp(unit->items[i], item_code, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}
