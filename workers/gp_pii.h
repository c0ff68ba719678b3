/*
 * gp_pii: `gov-pay-worker -c worker.json pii <command>`, the ops commands of
 * personal data at rest (docs/internals.md, "Personal data at rest").
 */

#ifndef GP_PII_H
#define GP_PII_H

#include "gp_config.h"

/*
 * argv[0] is "status" or "reseal"; output on stdout, errors on stderr.
 * Returns the exit status: 0, 1 (a notice could not be opened or resealed,
 * Redis failed), 2 (usage, no "pii_key").
 */
int gp_pii_command(gp_config_t *conf, int argc, char **argv);

#endif /* GP_PII_H */
