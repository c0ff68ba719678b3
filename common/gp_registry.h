/*
 * gp_registry: the units and the item catalogue, read from one JSON file that nginx and the
 * workers share (format in docs/internals.md).
 */

#ifndef GP_REGISTRY_H
#define GP_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GP_SCHEME_HMAC_SHA256 = 0,
    GP_SCHEME_HMAC_SM3,
    GP_SCHEME_RSA_SHA256,
    GP_SCHEME_SM2_SM3
} gp_scheme_t;

typedef enum {
    GP_AMOUNT_FREE = 0,
    GP_AMOUNT_FIXED,
    GP_AMOUNT_RANGE
} gp_amount_rule_t;

/* revenue split between government levels (分成): shares in percent */
typedef enum {
    GP_LEVEL_CENTRAL = 0,
    GP_LEVEL_PROVINCE,
    GP_LEVEL_CITY,
    GP_LEVEL_COUNTY,
    GP_LEVEL_N
} gp_level_t;

typedef struct {
    gp_level_t level;
    unsigned   percent; /* 1 .. 100; an item's shares sum to 100 */
} gp_split_t;

typedef struct {
    char            *code;
    char            *name;
    char            *department; /* "" when absent from the file */
    gp_split_t       split[GP_LEVEL_N];
    size_t           nsplit; /* 0: all to the collecting level */
    gp_amount_rule_t rule;
    int64_t min; /* FIXED: min == max == the amount; FREE: 1 .. 10^10 */
    int64_t max;
} gp_item_t;

typedef struct {
    char          *id;
    char          *name;
    gp_scheme_t    scheme;
    unsigned char *secret; /* HMAC schemes */
    size_t         secret_len;
    char  *key_file; /* asymmetric schemes: absolute path of the public key */
    char **items;    /* may be empty (banks) */
    size_t nitems;
    char  *webhook;      /* may be NULL */
    int    bank;         /* "kind": "bank": may use /bank/v1/ only */
    char **return_hosts; /* "host[:port]" (https) or "http://host[:port]" */
    size_t nreturn_hosts;
    unsigned char *webhook_secret; /* "webhook_secret_file"; may be NULL */
    size_t         webhook_secret_len;
} gp_unit_t;

typedef struct {
    gp_unit_t *units;
    size_t     nunits;
    gp_item_t *items;
    size_t     nitems;
} gp_registry_t;

/* 0 and *out, or -1 with a message in err naming the file and the unit/item at fault */
int  gp_registry_load(const char *path, gp_registry_t **out, char *err,
                      size_t errlen);
void gp_registry_free(gp_registry_t *reg);

const gp_unit_t *gp_registry_unit(const gp_registry_t *reg, const char *id,
                                  size_t len);
const gp_item_t *gp_registry_item(const gp_registry_t *reg, const char *code,
                                  size_t len);
int gp_unit_allows(const gp_unit_t *unit, const char *item_code, size_t len);

/* "GOVPAY-HMAC-SHA256" etc.; "UNKNOWN" for a value outside the enum */
const char *gp_scheme_name(gp_scheme_t scheme);
/* "central", "province", "city", "county" */
const char *gp_level_name(gp_level_t level);
/* 0 and *scheme, or -1 */
int gp_scheme_parse(const char *name, size_t len, gp_scheme_t *scheme);

#endif /* GP_REGISTRY_H */
