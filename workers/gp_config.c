/*
 * gp_config: reads worker.json (docs/internals.md, "Worker configuration").
 *
 * Strict like the API: unknown top-level fields, wrong types and out-of-range
 * numbers are errors, each message naming the file and the field. Relative
 * paths are relative to the folder of worker.json. The Redis address is
 * resolved once, here, so the runtime never calls the resolver again, and
 * `gov-pay-worker -t` catches a bad name; "unix:<path>" names a Unix socket.
 * redis_user and redis_password_file (both or neither) make every connection
 * AUTH as that ACL user; the file is read here to check it, and again on every
 * connect.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gp_config.h"
#include "gp_runtime.h"


static const char *gp_config_fields[] = { "redis",
                                          "redis_user",
                                          "redis_password_file",
                                          "shards",
                                          "consumer",
                                          "registry",
                                          "block_ms",
                                          "claim_idle_ms",
                                          "max_deliveries",
                                          "pii_key",
                                          "plugins",
                                          NULL };


static void gp_config_error(char *err, size_t errlen, const char *path,
                            const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int   gp_config_int(json_t *root, const char *name, int def, int min,
                           int max, int *out, const char *path, char *err,
                           size_t errlen);
static int   gp_config_string(json_t *root, const char *name, int required,
                              const char **out, const char *path, char *err,
                              size_t errlen);
static int   gp_config_redis(gp_config_t *conf, const char *addr, char *err,
                             size_t errlen);
static int   gp_config_auth(gp_config_t *conf, json_t *root, char *err,
                            size_t errlen);
static int   gp_config_consumer_valid(const char *s);
static char *gp_config_relative(const char *base, const char *path);
static int   gp_config_plugins(gp_config_t *conf, json_t *plugins, char *err,
                               size_t errlen);


int
gp_config_load(const char *path, gp_config_t **out, char *err, size_t errlen)
{
    const char  *key, *s;
    json_t      *root, *plugins;
    json_error_t jerr;
    gp_config_t *conf;
    char         rerr[512];
    int          shards;

    root = NULL;

    conf = calloc(1, sizeof(gp_config_t));
    if (conf == NULL) {
        gp_config_error(err, errlen, path, "out of memory");
        return -1;
    }

    conf->path = strdup(path);
    if (conf->path == NULL) {
        gp_config_error(err, errlen, path, "out of memory");
        goto fail;
    }

    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        if (jerr.line > 0) {
            gp_config_error(err, errlen, path, "line %d: %s", jerr.line,
                            jerr.text);
        } else {
            gp_config_error(err, errlen, path, "%s", jerr.text);
        }
        goto fail;
    }

    if (!json_is_object(root)) {
        gp_config_error(err, errlen, path,
                        "the top level is not a JSON object");
        goto fail;
    }

    key = gp_conf_unknown(root, gp_config_fields);
    if (key != NULL) {
        gp_config_error(err, errlen, path, "unknown field \"%s\"", key);
        goto fail;
    }

    if (gp_config_string(root, "redis", 1, &s, path, err, errlen) != 0
        || gp_config_redis(conf, s, err, errlen) != 0
        || gp_config_auth(conf, root, err, errlen) != 0)
    {
        goto fail;
    }

    if (gp_config_int(root, "shards", -1, 1, GP_CONFIG_MAX_SHARDS, &shards,
                      path, err, errlen)
        != 0)
    {
        goto fail;
    }

    conf->shards = (uint32_t) shards;

    if (gp_config_string(root, "consumer", 1, &s, path, err, errlen) != 0) {
        goto fail;
    }

    if (!gp_config_consumer_valid(s)) {
        gp_config_error(err, errlen, path,
                        "\"consumer\" must be 1 to 64 characters of "
                        "A-Z a-z 0-9 . _ : -");
        goto fail;
    }

    conf->consumer = strdup(s);
    if (conf->consumer == NULL) {
        gp_config_error(err, errlen, path, "out of memory");
        goto fail;
    }

    /* block_ms > 0: BLOCK 0 would wait forever and a stop could hang */
    if (gp_config_int(root, "block_ms", 1000, 10, 60000, &conf->block_ms, path,
                      err, errlen)
            != 0
        || gp_config_int(root, "claim_idle_ms", 30000, 100, 86400000,
                         &conf->claim_idle_ms, path, err, errlen)
               != 0
        || gp_config_int(root, "max_deliveries", 5, 1, 1000,
                         &conf->max_deliveries, path, err, errlen)
               != 0)
    {
        goto fail;
    }

    if (gp_config_string(root, "registry", 1, &s, path, err, errlen) != 0) {
        goto fail;
    }

    conf->registry_path = gp_config_relative(path, s);
    if (conf->registry_path == NULL) {
        gp_config_error(err, errlen, path, "out of memory");
        goto fail;
    }

    if (gp_registry_load(conf->registry_path, &conf->registry, rerr,
                         sizeof(rerr))
        != 0)
    {
        gp_config_error(err, errlen, path, "%s", rerr);
        goto fail;
    }

    /*
     * the keys that open the payer's name and ID number (sealed in the notice
     * by the module) and re-seal them (`pii reseal`): optional here, required
     * by the plugins that open them
     */
    if (gp_config_string(root, "pii_key", 0, &s, path, err, errlen) != 0) {
        goto fail;
    }

    if (s != NULL) {
        conf->pii_key_path = gp_config_relative(path, s);
        if (conf->pii_key_path == NULL) {
            gp_config_error(err, errlen, path, "out of memory");
            goto fail;
        }

        if (gp_seal_init(rerr, sizeof(rerr)) != 0
            || gp_seal_keys_load(conf->pii_key_path, &conf->pii_keys, rerr,
                                 sizeof(rerr))
                   != 0)
        {
            gp_config_error(err, errlen, path, "\"pii_key\": %s", rerr);
            goto fail;
        }
    }

    plugins = json_object_get(root, "plugins");
    if (plugins == NULL) {
        gp_config_error(err, errlen, path, "\"plugins\" is missing");
        goto fail;
    }

    if (gp_config_plugins(conf, plugins, err, errlen) != 0) {
        goto fail;
    }

    json_decref(root);
    *out = conf;
    return 0;

fail:

    json_decref(root);
    gp_config_free(conf);
    return -1;
}


void
gp_config_free(gp_config_t *conf)
{
    size_t i;

    if (conf == NULL) {
        return;
    }

    for (i = 0; i < conf->nplugins; i++) {
        json_decref(conf->plugins[i].conf);
    }

    free(conf->plugins);

    if (conf->registry != NULL) {
        gp_registry_free(conf->registry);
    }

    gp_seal_keys_free(conf->pii_keys);
    free(conf->pii_key_path);
    free(conf->registry_path);
    free(conf->consumer);
    free(conf->redis_password_file);
    free(conf->redis_user);
    free(conf->redis_unix);
    free(conf->redis);
    free(conf->path);
    free(conf);
}


static void
gp_config_error(char *err, size_t errlen, const char *path, const char *fmt,
                ...)
{
    va_list ap;
    int     n;

    n = snprintf(err, errlen, "%s: ", path);
    if (n < 0 || (size_t) n >= errlen) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t) n, fmt, ap);
    va_end(ap);
}


/* def < 0: required */
static int
gp_config_int(json_t *root, const char *name, int def, int min, int max,
              int *out, const char *path, char *err, size_t errlen)
{
    json_t    *v;
    json_int_t n;

    v = json_object_get(root, name);

    if (v == NULL) {
        if (def < 0) {
            gp_config_error(err, errlen, path, "\"%s\" is missing", name);
            return -1;
        }

        *out = def;
        return 0;
    }

    if (!json_is_integer(v)) {
        gp_config_error(err, errlen, path, "\"%s\" must be an integer", name);
        return -1;
    }

    n = json_integer_value(v);

    if (n < min || n > max) {
        gp_config_error(err, errlen, path, "\"%s\" must be from %d to %d", name,
                        min, max);
        return -1;
    }

    *out = (int) n;
    return 0;
}


static int
gp_config_string(json_t *root, const char *name, int required, const char **out,
                 const char *path, char *err, size_t errlen)
{
    json_t *v;

    v = json_object_get(root, name);

    if (v == NULL) {
        if (required) {
            gp_config_error(err, errlen, path, "\"%s\" is missing", name);
            return -1;
        }

        *out = NULL;
        return 0;
    }

    if (!json_is_string(v) || json_string_length(v) == 0
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        gp_config_error(err, errlen, path, "\"%s\" must be a non-empty string",
                        name);
        return -1;
    }

    *out = json_string_value(v);
    return 0;
}


/*
 * "host:port" or "[v6 address]:port", resolved once, to the first address
 * found; or "unix:<path>", relative to worker.json's folder unless absolute
 */
static int
gp_config_redis(gp_config_t *conf, const char *addr, char *err, size_t errlen)
{
    const char        *colon, *host_start, *host_end;
    char               host[256], *end;
    long               port;
    int                rc;
    struct addrinfo    hints, *res;
    struct sockaddr_un sun;
    void              *a;

    conf->redis = strdup(addr);
    if (conf->redis == NULL) {
        gp_config_error(err, errlen, conf->path, "out of memory");
        return -1;
    }

    if (strncmp(addr, "unix:", 5) == 0) {
        if (addr[5] == '\0') {
            goto invalid;
        }

        conf->redis_unix = gp_config_relative(conf->path, addr + 5);
        if (conf->redis_unix == NULL) {
            gp_config_error(err, errlen, conf->path, "out of memory");
            return -1;
        }

        if (strlen(conf->redis_unix) >= sizeof(sun.sun_path)) {
            gp_config_error(err, errlen, conf->path,
                            "\"redis\": the socket path \"%s\" is longer "
                            "than %zu bytes",
                            conf->redis_unix, sizeof(sun.sun_path) - 1);
            return -1;
        }

        return 0;
    }

    colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr) {
        goto invalid;
    }

    host_start = addr;
    host_end = colon;

    if (addr[0] == '[') {
        if (colon[-1] != ']') {
            goto invalid;
        }
        host_start = addr + 1;
        host_end = colon - 1;
    }

    if (host_end <= host_start
        || (size_t) (host_end - host_start) >= sizeof(host)) {
        goto invalid;
    }

    memcpy(host, host_start, (size_t) (host_end - host_start));
    host[host_end - host_start] = '\0';

    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0
        || port < 1 || port > 65535)
    {
        goto invalid;
    }

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;

    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        gp_config_error(err, errlen, conf->path,
                        "\"redis\": cannot resolve \"%s\": %s", host,
                        gai_strerror(rc));
        return -1;
    }

    if (res->ai_family == AF_INET6) {
        a = &((struct sockaddr_in6 *) (void *) res->ai_addr)->sin6_addr;
    } else {
        a = &((struct sockaddr_in *) (void *) res->ai_addr)->sin_addr;
    }

    if (inet_ntop(res->ai_family, a, conf->redis_ip, sizeof(conf->redis_ip))
        == NULL)
    {
        freeaddrinfo(res);
        gp_config_error(err, errlen, conf->path,
                        "\"redis\": inet_ntop() failed for "
                        "\"%s\"",
                        host);
        return -1;
    }

    freeaddrinfo(res);
    conf->redis_port = (int) port;
    return 0;

invalid:

    gp_config_error(err, errlen, conf->path,
                    "\"redis\" must be \"host:port\", "
                    "\"[ipv6]:port\" or \"unix:<path>\"");
    return -1;
}


/* "redis_user" and "redis_password_file": both or neither */
static int
gp_config_auth(gp_config_t *conf, json_t *root, char *err, size_t errlen)
{
    const char *user, *file;
    char        password[GP_CONFIG_PASSWORD_MAX + 1];
    size_t      i;
    int         rc;

    if (gp_config_string(root, "redis_user", 0, &user, conf->path, err, errlen)
            != 0
        || gp_config_string(root, "redis_password_file", 0, &file, conf->path,
                            err, errlen)
               != 0)
    {
        return -1;
    }

    if (user == NULL && file == NULL) {
        return 0;
    }

    if (user == NULL || file == NULL) {
        gp_config_error(err, errlen, conf->path,
                        "\"redis_user\" and \"redis_password_file\" go "
                        "together");
        return -1;
    }

    /* a name that an ACL file can hold: 1 to 128 visible characters */
    for (i = 0; user[i] != '\0'; i++) {
        if (user[i] <= ' ' || user[i] >= 0x7f) {
            break;
        }
    }

    if (user[i] != '\0' || i > 128) {
        gp_config_error(err, errlen, conf->path,
                        "\"redis_user\" must be 1 to 128 visible ASCII "
                        "characters");
        return -1;
    }

    conf->redis_user = strdup(user);
    conf->redis_password_file = gp_config_relative(conf->path, file);

    if (conf->redis_user == NULL || conf->redis_password_file == NULL) {
        gp_config_error(err, errlen, conf->path, "out of memory");
        return -1;
    }

    rc =
        gp_config_redis_password(conf, password, sizeof(password), err, errlen);
    explicit_bzero(password, sizeof(password));

    return rc;
}


int
gp_config_redis_password(const gp_config_t *conf, char *buf, size_t len,
                         char *err, size_t errlen)
{
    int     fd, eof;
    ssize_t n;
    size_t  got;
    char    extra;

    fd = open(conf->redis_password_file, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        gp_config_error(err, errlen, conf->path,
                        "\"redis_password_file\": cannot open \"%s\": %s",
                        conf->redis_password_file, strerror(errno));
        return -1;
    }

    got = 0;
    eof = 0;

    while (got < len - 1) {
        n = read(fd, buf + got, len - 1 - got);

        if (n == -1 && errno == EINTR) {
            continue;
        }

        if (n == -1) {
            gp_config_error(err, errlen, conf->path,
                            "\"redis_password_file\": cannot read \"%s\": "
                            "%s",
                            conf->redis_password_file, strerror(errno));
            goto fail;
        }

        if (n == 0) {
            eof = 1;
            break;
        }

        got += (size_t) n;
    }

    if (!eof && read(fd, &extra, 1) != 0) {
        gp_config_error(err, errlen, conf->path,
                        "\"redis_password_file\": \"%s\" is larger than "
                        "%zu bytes",
                        conf->redis_password_file, len - 1);
        goto fail;
    }

    close(fd);

    while (got > 0
           && (buf[got - 1] == '\n' || buf[got - 1] == '\r'
               || buf[got - 1] == ' ' || buf[got - 1] == '\t'))
    {
        got--;
    }

    buf[got] = '\0';

    if (got == 0 || strlen(buf) != got) {
        gp_config_error(err, errlen, conf->path,
                        "\"redis_password_file\": \"%s\" %s",
                        conf->redis_password_file,
                        got == 0 ? "is empty" : "holds a NUL byte");
        explicit_bzero(buf, len);
        return -1;
    }

    return 0;

fail:

    close(fd);
    explicit_bzero(buf, len);
    return -1;
}


static int
gp_config_consumer_valid(const char *s)
{
    size_t i;
    char   c;

    for (i = 0; s[i] != '\0'; i++) {
        c = s[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':'
              || c == '-'))
        {
            return 0;
        }
    }

    return i >= 1 && i <= 64;
}


/* path relative to the folder of base (the config file), malloc'd */
static char *
gp_config_relative(const char *base, const char *path)
{
    const char *slash;
    char       *out;
    size_t      dlen, plen;

    slash = strrchr(base, '/');

    if (path[0] == '/' || slash == NULL) {
        return strdup(path);
    }

    dlen = (size_t) (slash - base) + 1; /* with the '/' */
    plen = strlen(path);

    out = malloc(dlen + plen + 1);
    if (out == NULL) {
        return NULL;
    }

    memcpy(out, base, dlen);
    memcpy(out + dlen, path, plen + 1);

    return out;
}


static int
gp_config_plugins(gp_config_t *conf, json_t *plugins, char *err, size_t errlen)
{
    const char        *name;
    json_t            *pconf;
    const gp_plugin_t *plugin;
    size_t             n;

    if (!json_is_object(plugins) || json_object_size(plugins) == 0) {
        gp_config_error(err, errlen, conf->path,
                        "\"plugins\" must be an object naming "
                        "at least one plugin");
        return -1;
    }

    n = json_object_size(plugins);

    conf->plugins = calloc(n, sizeof(gp_config_plugin_t));
    if (conf->plugins == NULL) {
        gp_config_error(err, errlen, conf->path, "out of memory");
        return -1;
    }

    json_object_foreach(plugins, name, pconf)
    {
        plugin = gp_plugin_find(name);

        if (plugin == NULL) {
            gp_config_error(err, errlen, conf->path,
                            "\"plugins\": unknown plugin \"%s\"", name);
            return -1;
        }

        if (!json_is_object(pconf)) {
            gp_config_error(err, errlen, conf->path,
                            "\"plugins\": \"%s\" must be an "
                            "object",
                            name);
            return -1;
        }

        conf->plugins[conf->nplugins].plugin = plugin;
        conf->plugins[conf->nplugins].conf = json_incref(pconf);
        conf->nplugins++;
    }

    return 0;
}
