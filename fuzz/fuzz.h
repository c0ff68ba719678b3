/*
 * fuzz.h: what the libFuzzer targets of fuzz/ share (make fuzz; t/fuzz_smoke.t).
 *
 * Each target is one parser of outside input, fed bytes exactly as they arrive on the wire
 * (a header value, a request body, a channel's form, a URL); a crash, a sanitizer report or a
 * leak is a finding. The targets call the plain C in common/, the code the edge itself runs.
 */

#ifndef GP_FUZZ_H
#define GP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* a NUL-terminated copy (the parsers take lengths; some callers need a C string) */
static inline char *
gp_fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s;

    s = malloc(size + 1);
    if (s != NULL) {
        memcpy(s, data, size);
        s[size] = '\0';
    }

    return s;
}

#endif /* GP_FUZZ_H */
