/*
 * gp_notice: the rules of a create request's body (POST /v1/notices), plain C (jansson).
 *
 * Two steps, as the contract answers them: wrong JSON types are 400 BAD_REQUEST
 * (gp_notice_types), broken rules are 422 VALIDATION_FAILED naming every field
 * (gp_notice_check); an item the unit may not collect is 403 FORBIDDEN. The edge calls both
 * (ngx_gov_pay_api.c); fuzz/ calls them with hostile bodies.
 */

#ifndef GP_NOTICE_H
#define GP_NOTICE_H

#include <stdint.h>

#include <jansson.h>

#include "gp_registry.h"

/* the paths of present fields of the wrong JSON type ("amount", "payer.name", ...); an
 * empty array when none; NULL when out of memory */
json_t *gp_notice_types(const json_t *req);

/*
 * The fields that break a rule, as the contract's "fields" ([{"field","reason"}, ...]):
 * empty when none; NULL when out of memory. *forbidden is set when the item is known but the
 * unit may not collect it (a 403, answered only when no rule is broken). now: unix seconds.
 */
json_t *gp_notice_check(const gp_registry_t *reg, const gp_unit_t *unit,
                        const json_t *req, int64_t now, int *forbidden);

#endif /* GP_NOTICE_H */
