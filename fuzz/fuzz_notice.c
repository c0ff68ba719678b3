/*
 * fuzz_notice: a create request's body (POST /v1/notices) as the edge reads it: JSON that
 * must be one object (duplicate keys refused, U+0000 let through to the rules), the wrong
 * types, then every rule (common/gp_notice.c) against a small registry.
 */

#include <stdio.h>
#include <unistd.h>

#include <jansson.h>

#include "fuzz.h"
#include "gp_notice.h"
#include "gp_registry.h"

static gp_registry_t *reg;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char  dir[] = "/tmp/gp-fuzz-notice-XXXXXX", path[64], err[256];
    FILE *f;

    (void) argc;
    (void) argv;

    if (mkdtemp(dir) == NULL) {
        abort();
    }

    snprintf(path, sizeof(path), "%s/u.secret", dir);
    f = fopen(path, "w");
    if (f == NULL) {
        abort();
    }
    fputs("0123456789abcdef0123456789abcdef\n", f);
    fclose(f);

    snprintf(path, sizeof(path), "%s/registry.json", dir);
    f = fopen(path, "w");
    if (f == NULL) {
        abort();
    }
    fputs("{\"units\":[{\"id\":\"U-1\",\"name\":\"单位\",\"scheme\":\"GOVPAY-HMAC-SHA256\","
          "\"secret_file\":\"u.secret\",\"items\":[\"103001\",\"103002\"]}],"
          "\"items\":[{\"code\":\"103001\",\"name\":\"学费\",\"department\":\"局\","
          "\"amount\":{\"rule\":\"range\",\"min\":1,\"max\":10000000000}},"
          "{\"code\":\"103002\",\"name\":\"工本费\",\"department\":\"局\","
          "\"amount\":{\"rule\":\"fixed\",\"amount\":2000}},"
          "{\"code\":\"103003\",\"name\":\"考试费\",\"department\":\"局\","
          "\"amount\":{\"rule\":\"free\"}}]}",
          f);
    fclose(f);

    if (gp_registry_load(path, &reg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_notice: %s\n", err);
        abort();
    }

    unlink(path);
    snprintf(path, sizeof(path), "%s/u.secret", dir);
    unlink(path);
    rmdir(dir);

    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *req, *types, *fields;
    int     forbidden;

    req = json_loadb((const char *) data, size, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        return 0;
    }

    types = gp_notice_types(req);

    if (types != NULL && json_array_size(types) == 0) {
        fields = gp_notice_check(reg, &reg->units[0], req, 1796110625, &forbidden);
        json_decref(fields);
    }

    json_decref(types);
    json_decref(req);
    return 0;
}
