
/*
 * ngx_gov_pay_redis.c: the non-blocking Redis client on nginx's event loop.
 *
 * One persistent, pipelined connection per worker process.  nginx owns
 * the socket (ngx_event_connect_peer, nginx timers); hiredis only formats
 * commands (redisFormatCommandArgv) and parses replies (redisReader).
 * This wiring was chosen over hiredis's async context because with it:
 * no name lookup can happen at request time (the address was resolved at
 * configuration time), every command has a timeout on an nginx timer,
 * a callback can be cancelled (the command just forgets its handler, and
 * its reply is still consumed in order), and reads are drained until
 * EAGAIN as edge-triggered epoll requires.
 *
 * Commands are answered in the order they were sent, so the commands in
 * flight form one FIFO queue.  While connecting, commands are queued and
 * sent once the connection is up; while disconnected (waiting for the
 * reconnect timer), a command is refused at once so that the request gets
 * its 503 fast.  On a command timeout, a connect timeout
 * (gov_pay_redis_connect_timeout), a write or read error, or a protocol
 * error, the connection is closed, every waiting handler is told (reply
 * NULL), and a reconnect is scheduled with backoff (100 ms doubling to 2 s;
 * back to 100 ms once a script has loaded, so a refused AUTH backs off too).
 *
 * On every connect, AUTH (gov_pay_redis_auth: an ACL user and its password)
 * goes first, then the scripts with SCRIPT LOAD, ahead of any other
 * command, all in one pipelined write.  A refused AUTH (WRONGPASS, NOPERM)
 * or a SCRIPT LOAD refused for want of it (NOAUTH, NOPERM) is logged at
 * [error] naming the user, never the password, and the connection is closed
 * and tried again with backoff.  A NOSCRIPT reply (Redis restarted without
 * AOF, or SCRIPT FLUSH) loads the script again and re-sends the command,
 * once.
 *
 * Two caps keep a store that falls behind from piling up work: at most
 * gov_pay_redis_max_inflight commands sent or waiting to be sent, and at
 * most gov_pay_redis_max_unsent bytes of commands not yet written to the
 * socket (one command is always let into an empty buffer).  A request's
 * command over either cap is refused (NGX_DECLINED) and the request gets
 * its "store unavailable" answer at once.  The output buffer grows with a
 * burst and is let go once a write after it is small again.
 *
 * Timers of commands that a request waits for are not cancelable: graceful
 * shutdown waits for them (at most the timeout) so that no request is cut.
 * The reconnect, connect, AUTH and script-load timers are cancelable: they
 * never hold up `nginx -s quit`.
 */


#include "ngx_gov_pay_module.h"

#include <openssl/evp.h>


#define NGX_HTTP_GOV_PAY_REDIS_BACKOFF_MIN  100
#define NGX_HTTP_GOV_PAY_REDIS_BACKOFF_MAX  2000
#define NGX_HTTP_GOV_PAY_REDIS_READ_SIZE    16384
#define NGX_HTTP_GOV_PAY_REDIS_OUT_SIZE     16384


typedef struct {
    const char    *name;
    const char    *src;
} ngx_http_gov_pay_script_src_t;

extern const ngx_http_gov_pay_script_src_t  ngx_http_gov_pay_scripts[];


static const char  *ngx_http_gov_pay_script_names[] = {
    "cache", "cancel", "create", "get", "lookup", "refund", "refund_done",
    "settle", "unclaim"
};


struct ngx_http_gov_pay_redis_cmd_s {
    ngx_queue_t                         queue;
    ngx_http_gov_pay_redis_handler_pt   handler;
    void                               *data;
    ngx_event_t                         timer;
    char                               *buf;
    size_t                              len;
    ngx_int_t                           script;     /* -1: not a script */
    unsigned                            reloaded:1;

    /* for the log: the request's log and the payment code it is about */
    ngx_log_t                          *log;
    ngx_str_t                           code;
    u_char                              word[16];   /* a command's name */
};


typedef enum {
    NGX_HTTP_GOV_PAY_REDIS_DOWN = 0,
    NGX_HTTP_GOV_PAY_REDIS_CONNECTING,
    NGX_HTTP_GOV_PAY_REDIS_UP
} ngx_http_gov_pay_redis_state_e;


typedef struct {
    ngx_http_gov_pay_main_conf_t       *conf;
    ngx_log_t                          *log;
    ngx_peer_connection_t               peer;
    ngx_connection_t                   *c;
    redisReader                        *reader;
    ngx_http_gov_pay_redis_state_e      state;

    ngx_queue_t                         inflight;   /* sent or to be sent */
    ngx_uint_t                          ninflight;

    u_char                             *out;        /* bytes to send */
    size_t                              out_len;
    size_t                              out_pos;
    size_t                              out_size;

    ngx_event_t                         reconnect;
    ngx_event_t                         connect_timer;
    ngx_msec_t                          backoff;

    const char                         *src[NGX_HTTP_GOV_PAY_SCRIPT_N];
    char                                sha[NGX_HTTP_GOV_PAY_SCRIPT_N][41];
} ngx_http_gov_pay_redis_t;


static ngx_http_gov_pay_redis_t  ngx_http_gov_pay_redis;

static ngx_str_t  ngx_http_gov_pay_redis_default_user = ngx_string("default");


static void ngx_http_gov_pay_redis_connect(void);
static void ngx_http_gov_pay_redis_close(ngx_uint_t reconnect);
static void ngx_http_gov_pay_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_gov_pay_redis_read_handler(ngx_event_t *rev);
static void ngx_http_gov_pay_redis_write_handler(ngx_event_t *wev);
static void ngx_http_gov_pay_redis_timeout_handler(ngx_event_t *ev);
static void ngx_http_gov_pay_redis_connect_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_gov_pay_redis_full(ngx_http_gov_pay_redis_cmd_t *cmd,
    const char *prefix, ngx_str_t *what);
static u_char *ngx_http_gov_pay_redis_what(ngx_http_gov_pay_redis_cmd_t *cmd,
    u_char *buf, size_t len);
static ngx_int_t ngx_http_gov_pay_redis_queue(
    ngx_http_gov_pay_redis_cmd_t *cmd);
static ngx_int_t ngx_http_gov_pay_redis_append(u_char *buf, size_t len);
static ngx_int_t ngx_http_gov_pay_redis_auth(void);
static ngx_int_t ngx_http_gov_pay_redis_load_script(ngx_uint_t script);
static ngx_http_gov_pay_redis_cmd_t *ngx_http_gov_pay_redis_cmd(
    ngx_uint_t argc, const char **argv, const size_t *argvlen,
    ngx_http_gov_pay_redis_handler_pt handler, void *data);
static void ngx_http_gov_pay_redis_free(ngx_http_gov_pay_redis_cmd_t *cmd);
static void ngx_http_gov_pay_redis_authed(void *data, redisReply *reply);
static void ngx_http_gov_pay_redis_script_loaded(void *data,
    redisReply *reply);
static void ngx_http_gov_pay_redis_dispatch(redisReply *reply);


ngx_int_t
ngx_http_gov_pay_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_uint_t                 i, j;
    unsigned int               mdlen;
    unsigned char              md[EVP_MAX_MD_SIZE];
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;
    ngx_memzero(rd, sizeof(ngx_http_gov_pay_redis_t));

    rd->conf = gpmcf;
    rd->log = cycle->log;
    rd->backoff = NGX_HTTP_GOV_PAY_REDIS_BACKOFF_MIN;
    ngx_queue_init(&rd->inflight);

    for (i = 0; i < NGX_HTTP_GOV_PAY_SCRIPT_N; i++) {
        for (j = 0; ngx_http_gov_pay_scripts[j].name; j++) {
            if (ngx_strcmp(ngx_http_gov_pay_scripts[j].name,
                           ngx_http_gov_pay_script_names[i])
                == 0)
            {
                rd->src[i] = ngx_http_gov_pay_scripts[j].src;
                break;
            }
        }

        if (rd->src[i] == NULL) {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "gov_pay: redis script \"%s\" is not built in",
                          ngx_http_gov_pay_script_names[i]);
            return NGX_ERROR;
        }

        if (EVP_Digest(rd->src[i], ngx_strlen(rd->src[i]), md, &mdlen,
                       EVP_sha1(), NULL)
            != 1)
        {
            ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                          "gov_pay: EVP_Digest(sha1) failed");
            return NGX_ERROR;
        }

        gp_hex(md, mdlen, rd->sha[i]);
    }

    rd->reconnect.handler = ngx_http_gov_pay_redis_reconnect_handler;
    rd->reconnect.log = cycle->log;
    rd->reconnect.data = rd;
    rd->reconnect.cancelable = 1;

    rd->connect_timer.handler = ngx_http_gov_pay_redis_connect_timeout;
    rd->connect_timer.log = cycle->log;
    rd->connect_timer.data = rd;
    rd->connect_timer.cancelable = 1;

    ngx_http_gov_pay_redis_connect();

    return NGX_OK;
}


void
ngx_http_gov_pay_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;

    if (rd->conf == NULL) {
        return;
    }

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    ngx_http_gov_pay_redis_close(0);

    ngx_free(rd->out);
    rd->out = NULL;
    rd->conf = NULL;
}


ngx_int_t
ngx_http_gov_pay_redis_command(ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_gov_pay_redis_handler_pt handler, void *data,
    ngx_http_gov_pay_redis_cmd_t **cmdp)
{
    const char                    *a[64];
    size_t                         l[64];
    ngx_uint_t                     i;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    if (ngx_http_gov_pay_redis.state == NGX_HTTP_GOV_PAY_REDIS_DOWN
        || ngx_http_gov_pay_redis.conf == NULL)
    {
        return NGX_DECLINED;
    }

    if (argc > 64 || argc == 0) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_redis_full(NULL, "", &argv[0])) {
        return NGX_DECLINED;
    }

    for (i = 0; i < argc; i++) {
        a[i] = (const char *) argv[i].data;
        l[i] = argv[i].len;
    }

    cmd = ngx_http_gov_pay_redis_cmd(argc, a, l, handler, data);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_redis_full(cmd, NULL, NULL)) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_DECLINED;
    }

    if (ngx_http_gov_pay_redis_queue(cmd) != NGX_OK) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_ERROR;
    }

    *cmdp = cmd;

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_redis_script(ngx_http_gov_pay_script_e script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_gov_pay_redis_handler_pt handler, void *data,
    ngx_http_gov_pay_redis_cmd_t **cmdp)
{
    u_char                         nk[NGX_INT_T_LEN];
    size_t                         l[64];
    ngx_str_t                      name;
    const char                    *a[64];
    ngx_uint_t                     i;
    ngx_http_gov_pay_redis_t      *rd;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    rd = &ngx_http_gov_pay_redis;

    if (rd->state == NGX_HTTP_GOV_PAY_REDIS_DOWN || rd->conf == NULL) {
        return NGX_DECLINED;
    }

    if (argc + 3 > 64) {
        return NGX_ERROR;
    }

    name.data = (u_char *) ngx_http_gov_pay_script_names[script];
    name.len = ngx_strlen(name.data);

    if (ngx_http_gov_pay_redis_full(NULL, "EVALSHA ", &name)) {
        return NGX_DECLINED;
    }

    a[0] = "EVALSHA";
    l[0] = sizeof("EVALSHA") - 1;
    a[1] = rd->sha[script];
    l[1] = 40;
    a[2] = (const char *) nk;
    l[2] = ngx_sprintf(nk, "%ui", nkeys) - nk;

    for (i = 0; i < argc; i++) {
        a[i + 3] = (const char *) argv[i].data;
        l[i + 3] = argv[i].len;
    }

    cmd = ngx_http_gov_pay_redis_cmd(argc + 3, a, l, handler, data);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    cmd->script = script;

    if (ngx_http_gov_pay_redis_full(cmd, NULL, NULL)) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_DECLINED;
    }

    if (ngx_http_gov_pay_redis_queue(cmd) != NGX_OK) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_ERROR;
    }

    *cmdp = cmd;

    return NGX_OK;
}


/*
 * Whether a request's command must be refused: with cmd NULL, for the
 * number of commands in flight (before the command is formatted; prefix
 * and what name it for the log); with cmd, for the bytes it would add to
 * those not yet written.
 */

static ngx_int_t
ngx_http_gov_pay_redis_full(ngx_http_gov_pay_redis_cmd_t *cmd,
    const char *prefix, ngx_str_t *what)
{
    u_char                    *p, buf[64];
    size_t                     unsent;
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;

    if (cmd == NULL) {
        if (rd->ninflight < rd->conf->redis_max_inflight) {
            return 0;
        }

        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "gov_pay: redis %V has %ui commands in flight "
                      "(gov_pay_redis_max_inflight), refusing %s%V",
                      &rd->conf->redis, rd->ninflight, prefix, what);
        return 1;
    }

    unsent = rd->out_len - rd->out_pos;

    /* one command always fits into an empty buffer, however large */

    if (unsent == 0 || unsent + cmd->len <= rd->conf->redis_max_unsent) {
        return 0;
    }

    p = ngx_http_gov_pay_redis_what(cmd, buf, sizeof(buf));

    ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                  "gov_pay: redis %V has %uz bytes not yet sent "
                  "(gov_pay_redis_max_unsent), refusing %*s",
                  &rd->conf->redis, unsent, p - buf, buf);
    return 1;
}


void
ngx_http_gov_pay_redis_abandon(ngx_http_gov_pay_redis_cmd_t *cmd)
{
    /* the reply, if it comes, is read and dropped in its turn */

    cmd->handler = NULL;
    cmd->data = NULL;
    cmd->log = ngx_http_gov_pay_redis.log;
    ngx_str_null(&cmd->code);
}


void
ngx_http_gov_pay_redis_describe(ngx_http_gov_pay_redis_cmd_t *cmd,
    ngx_log_t *log, ngx_str_t *code)
{
    cmd->log = log;
    cmd->code = *code;
}


/* "EVALSHA settle" or the command's first word, for a log line */

static u_char *
ngx_http_gov_pay_redis_what(ngx_http_gov_pay_redis_cmd_t *cmd, u_char *buf,
    size_t len)
{
    if (cmd->script >= 0) {
        return ngx_snprintf(buf, len, "EVALSHA %s",
                            ngx_http_gov_pay_script_names[cmd->script]);
    }

    return ngx_snprintf(buf, len, "%s", cmd->word);
}


static ngx_http_gov_pay_redis_cmd_t *
ngx_http_gov_pay_redis_cmd(ngx_uint_t argc, const char **argv,
    const size_t *argvlen, ngx_http_gov_pay_redis_handler_pt handler,
    void *data)
{
    int                            n;
    char                          *buf;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    n = redisFormatCommandArgv(&buf, (int) argc, argv, argvlen);
    if (n < 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_gov_pay_redis.log, 0,
                      "gov_pay: redisFormatCommandArgv() failed");
        return NULL;
    }

    cmd = ngx_calloc(sizeof(ngx_http_gov_pay_redis_cmd_t),
                     ngx_http_gov_pay_redis.log);
    if (cmd == NULL) {
        redisFreeCommand(buf);
        return NULL;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->buf = buf;
    cmd->len = n;
    cmd->script = -1;
    cmd->log = ngx_http_gov_pay_redis.log;
    ngx_cpystrn(cmd->word, (u_char *) argv[0],
                ngx_min(argvlen[0] + 1, sizeof(cmd->word)));

    cmd->timer.handler = ngx_http_gov_pay_redis_timeout_handler;
    cmd->timer.data = cmd;
    cmd->timer.log = ngx_http_gov_pay_redis.log;

    /* a request waits on this timer, so graceful shutdown waits too */
    cmd->timer.cancelable = (handler == NULL
                             || handler == ngx_http_gov_pay_redis_authed
                             || handler
                                == ngx_http_gov_pay_redis_script_loaded);

    return cmd;
}


static void
ngx_http_gov_pay_redis_free(ngx_http_gov_pay_redis_cmd_t *cmd)
{
    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    redisFreeCommand(cmd->buf);
    ngx_free(cmd);
}


static ngx_int_t
ngx_http_gov_pay_redis_queue(ngx_http_gov_pay_redis_cmd_t *cmd)
{
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;

    if (ngx_http_gov_pay_redis_append((u_char *) cmd->buf, cmd->len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_queue_insert_tail(&rd->inflight, &cmd->queue);
    rd->ninflight++;

    if (!cmd->timer.timer_set) {
        ngx_add_timer(&cmd->timer, rd->conf->redis_timeout);
    }

    /* flushed once per event loop turn: commands of many requests share
     * one write */

    if (rd->state == NGX_HTTP_GOV_PAY_REDIS_UP && !rd->c->write->posted) {
        ngx_post_event(rd->c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_redis_append(u_char *buf, size_t len)
{
    u_char                    *p;
    size_t                     size;
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;

    if (rd->out_pos == rd->out_len) {
        rd->out_pos = 0;
        rd->out_len = 0;
    }

    if (rd->out_len + len > rd->out_size) {

        if (rd->out_pos) {
            ngx_memmove(rd->out, rd->out + rd->out_pos,
                        rd->out_len - rd->out_pos);
            rd->out_len -= rd->out_pos;
            rd->out_pos = 0;
        }

        if (rd->out_len + len > rd->out_size) {
            size = ngx_max(rd->out_size * 2, rd->out_len + len);
            size = ngx_max(size, NGX_HTTP_GOV_PAY_REDIS_OUT_SIZE);

            p = ngx_alloc(size, rd->log);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (rd->out_len) {
                ngx_memcpy(p, rd->out, rd->out_len);
            }

            ngx_free(rd->out);
            rd->out = p;
            rd->out_size = size;
        }
    }

    ngx_memcpy(rd->out + rd->out_len, buf, len);
    rd->out_len += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_redis_auth(void)
{
    const char                    *argv[3];
    size_t                         argvlen[3];
    ngx_http_gov_pay_redis_t      *rd;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    rd = &ngx_http_gov_pay_redis;

    argv[0] = "AUTH";
    argvlen[0] = sizeof("AUTH") - 1;
    argv[1] = (const char *) rd->conf->redis_user.data;
    argvlen[1] = rd->conf->redis_user.len;
    argv[2] = (const char *) rd->conf->redis_password.data;
    argvlen[2] = rd->conf->redis_password.len;

    cmd = ngx_http_gov_pay_redis_cmd(3, argv, argvlen,
                                     ngx_http_gov_pay_redis_authed, NULL);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_redis_queue(cmd) != NGX_OK) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_gov_pay_redis_authed(void *data, redisReply *reply)
{
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    /* Redis's own words (WRONGPASS, NOPERM, ...) never echo the password */

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "gov_pay: redis %V refused AUTH as user \"%V\": %*s",
                  &rd->conf->redis, &rd->conf->redis_user,
                  (size_t) reply->len, reply->str);

    ngx_http_gov_pay_redis_close(1);
}


static ngx_int_t
ngx_http_gov_pay_redis_load_script(ngx_uint_t script)
{
    const char                    *argv[3];
    size_t                         argvlen[3];
    ngx_http_gov_pay_redis_t      *rd;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    rd = &ngx_http_gov_pay_redis;

    argv[0] = "SCRIPT";
    argvlen[0] = sizeof("SCRIPT") - 1;
    argv[1] = "LOAD";
    argvlen[1] = sizeof("LOAD") - 1;
    argv[2] = rd->src[script];
    argvlen[2] = ngx_strlen(rd->src[script]);

    cmd = ngx_http_gov_pay_redis_cmd(3, argv, argvlen,
                                     ngx_http_gov_pay_redis_script_loaded,
                                     (void *) (uintptr_t) script);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_redis_queue(cmd) != NGX_OK) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_gov_pay_redis_script_loaded(void *data, redisReply *reply)
{
    ngx_str_t                 *user;
    ngx_uint_t                 script;
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;
    script = (uintptr_t) data;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING && reply->len == 40
        && ngx_strncmp(reply->str, rd->sha[script], 40) == 0)
    {
        /* the connection works: the next failure starts a new backoff */
        rd->backoff = NGX_HTTP_GOV_PAY_REDIS_BACKOFF_MIN;
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && ((reply->len >= 6 && ngx_strncmp(reply->str, "NOAUTH", 6) == 0)
            || (reply->len >= 6
                && ngx_strncmp(reply->str, "NOPERM", 6) == 0)))
    {
        /* no user, or one without SCRIPT LOAD: nothing would work */

        user = rd->conf->redis_user.len ? &rd->conf->redis_user
                                        : &ngx_http_gov_pay_redis_default_user;

        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "gov_pay: redis %V refused SCRIPT LOAD of \"%s\" "
                      "(user \"%V\"): %*s", &rd->conf->redis,
                      ngx_http_gov_pay_script_names[script], user,
                      (size_t) reply->len, reply->str);

        ngx_http_gov_pay_redis_close(1);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && reply->len >= 7
        && ngx_strncmp(reply->str, "LOADING", 7) == 0)
    {
        /* a restarted Redis replays its AOF: try again a little later */

        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "gov_pay: redis %V is loading its data",
                      &rd->conf->redis);

        ngx_http_gov_pay_redis_close(1);
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                  "gov_pay: SCRIPT LOAD of \"%s\" failed: %*s",
                  ngx_http_gov_pay_script_names[script],
                  (size_t) (reply->str ? reply->len : 0),
                  reply->str ? reply->str : "");
}


static void
ngx_http_gov_pay_redis_connect(void)
{
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_addr_t                *addr;
    ngx_connection_t          *c;
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;
    addr = rd->conf->redis_addr;

    ngx_memzero(&rd->peer, sizeof(ngx_peer_connection_t));
    rd->peer.sockaddr = addr->sockaddr;
    rd->peer.socklen = addr->socklen;
    rd->peer.name = &addr->name;
    rd->peer.get = ngx_event_get_peer;
    rd->peer.log = rd->log;
    rd->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&rd->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "gov_pay: connect() to redis %V failed",
                      &rd->conf->redis);
        /* ngx_event_connect_peer() has closed the socket itself */
        rd->peer.connection = NULL;
        ngx_http_gov_pay_redis_close(1);
        return;
    }

    c = rd->peer.connection;
    c->data = rd;
    c->read->handler = ngx_http_gov_pay_redis_read_handler;
    c->write->handler = ngx_http_gov_pay_redis_write_handler;
    c->pool = NULL;

    rd->c = c;
    rd->reader = redisReaderCreate();
    if (rd->reader == NULL) {
        ngx_http_gov_pay_redis_close(1);
        return;
    }

    rd->state = NGX_HTTP_GOV_PAY_REDIS_CONNECTING;

    /* AUTH and the scripts go first, ahead of any command that needs them */

    if (rd->conf->redis_user.len && ngx_http_gov_pay_redis_auth() != NGX_OK) {
        ngx_http_gov_pay_redis_close(1);
        return;
    }

    for (i = 0; i < NGX_HTTP_GOV_PAY_SCRIPT_N; i++) {
        if (ngx_http_gov_pay_redis_load_script(i) != NGX_OK) {
            ngx_http_gov_pay_redis_close(1);
            return;
        }
    }

    if (rc == NGX_OK) {
        rd->state = NGX_HTTP_GOV_PAY_REDIS_UP;
        ngx_post_event(c->write, &ngx_posted_events);
        return;
    }

    /* NGX_AGAIN: the handshake is bounded by a timer of its own */

    ngx_add_timer(&rd->connect_timer, rd->conf->redis_connect_timeout);
}


static void
ngx_http_gov_pay_redis_close(ngx_uint_t reconnect)
{
    ngx_queue_t                   *q, pending;
    ngx_http_gov_pay_redis_t      *rd;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    rd = &ngx_http_gov_pay_redis;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->c) {
        ngx_close_connection(rd->c);
        rd->c = NULL;
    }

    if (rd->reader) {
        redisReaderFree(rd->reader);
        rd->reader = NULL;
    }

    rd->state = NGX_HTTP_GOV_PAY_REDIS_DOWN;
    rd->out_len = 0;
    rd->out_pos = 0;
    rd->ninflight = 0;

    /* detach first: a handler may queue a command, which is then refused */

    ngx_queue_init(&pending);

    if (!ngx_queue_empty(&rd->inflight)) {
        pending = rd->inflight;
        pending.next->prev = &pending;
        pending.prev->next = &pending;
        ngx_queue_init(&rd->inflight);
    }

    while (!ngx_queue_empty(&pending)) {
        q = ngx_queue_head(&pending);
        ngx_queue_remove(q);
        cmd = ngx_queue_data(q, ngx_http_gov_pay_redis_cmd_t, queue);

        if (cmd->timer.timer_set) {
            ngx_del_timer(&cmd->timer);
        }

        if (cmd->handler) {
            cmd->handler(cmd->data, NULL);
        }

        ngx_http_gov_pay_redis_free(cmd);
    }

    if (reconnect && !ngx_exiting && !ngx_terminate && !ngx_quit
        && !rd->reconnect.timer_set)
    {
        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "gov_pay: redis %V unavailable, reconnecting in %M ms",
                      &rd->conf->redis, rd->backoff);

        ngx_add_timer(&rd->reconnect, rd->backoff);

        rd->backoff = ngx_min(rd->backoff * 2,
                              NGX_HTTP_GOV_PAY_REDIS_BACKOFF_MAX);
    }
}


static void
ngx_http_gov_pay_redis_reconnect_handler(ngx_event_t *ev)
{
    if (ngx_exiting || ngx_terminate || ngx_quit
        || ngx_http_gov_pay_redis.conf == NULL)
    {
        return;
    }

    ngx_http_gov_pay_redis_connect();
}


static void
ngx_http_gov_pay_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_gov_pay_redis_t  *rd;

    rd = ev->data;

    ngx_log_error(NGX_LOG_ERR, rd->log, NGX_ETIMEDOUT,
                  "gov_pay: connect() to redis %V timed out "
                  "(gov_pay_redis_connect_timeout)", &rd->conf->redis);

    ngx_http_gov_pay_redis_close(1);
}


static void
ngx_http_gov_pay_redis_timeout_handler(ngx_event_t *ev)
{
    u_char                        *p, what[64];
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    cmd = ev->data;

    p = ngx_http_gov_pay_redis_what(cmd, what, sizeof(what));

    ngx_log_error(NGX_LOG_ERR, cmd->log, 0,
                  "gov_pay: redis %V timed out on %*s%s%V",
                  &ngx_http_gov_pay_redis.conf->redis, p - what, what,
                  cmd->code.len ? " for " : "", &cmd->code);

    /*
     * A command that timed out leaves the pipeline out of step with the
     * requests; start afresh.  Every command is idempotent, so a request
     * that got its 503 may be retried by its sender whatever Redis did.
     */

    ngx_http_gov_pay_redis_close(1);
}


static void
ngx_http_gov_pay_redis_write_handler(ngx_event_t *wev)
{
    int                        err;
    ssize_t                    n;
    socklen_t                  len;
    ngx_connection_t          *c;
    ngx_http_gov_pay_redis_t  *rd;

    c = wev->data;
    rd = c->data;

    if (rd->state == NGX_HTTP_GOV_PAY_REDIS_CONNECTING) {

        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_log_error(NGX_LOG_ERR, rd->log, err,
                          "gov_pay: connect() to redis %V failed",
                          &rd->conf->redis);
            ngx_http_gov_pay_redis_close(1);
            return;
        }

        if (rd->connect_timer.timer_set) {
            ngx_del_timer(&rd->connect_timer);
        }

        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "gov_pay: connected to redis %V", &rd->conf->redis);

        rd->state = NGX_HTTP_GOV_PAY_REDIS_UP;
    }

    while (rd->out_pos < rd->out_len) {
        n = c->send(c, rd->out + rd->out_pos, rd->out_len - rd->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_gov_pay_redis_close(1);
            }
            return;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_gov_pay_redis_close(1);
            return;
        }

        rd->out_pos += n;
    }

    /*
     * All sent.  A buffer that a burst made larger than it started is let
     * go once a write is a quarter of it or less: the burst is over (a
     * steady load that fills it keeps it, with no churn of allocations).
     */

    if (rd->out_size > NGX_HTTP_GOV_PAY_REDIS_OUT_SIZE
        && rd->out_len <= rd->out_size / 4)
    {
        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "gov_pay: redis output buffer of %uz bytes released "
                      "after a burst", rd->out_size);

        ngx_free(rd->out);
        rd->out = NULL;
        rd->out_size = 0;
    }

    rd->out_pos = 0;
    rd->out_len = 0;
}


static void
ngx_http_gov_pay_redis_read_handler(ngx_event_t *rev)
{
    void                      *reply;
    ssize_t                    n;
    u_char                     buf[NGX_HTTP_GOV_PAY_REDIS_READ_SIZE];
    ngx_connection_t          *c;
    ngx_http_gov_pay_redis_t  *rd;

    c = rev->data;
    rd = c->data;

    if (rd->state != NGX_HTTP_GOV_PAY_REDIS_UP) {
        /* connect completion is seen by the write handler */
        if (rd->state == NGX_HTTP_GOV_PAY_REDIS_CONNECTING) {
            ngx_http_gov_pay_redis_write_handler(c->write);
        }

        if (rd->c != c || rd->state != NGX_HTTP_GOV_PAY_REDIS_UP) {
            return;
        }
    }

    /* drain the socket: epoll is edge-triggered */

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "gov_pay: redis %V closed the connection",
                          &rd->conf->redis);
            ngx_http_gov_pay_redis_close(1);
            return;
        }

        if (redisReaderFeed(rd->reader, (const char *) buf, n)
            != REDIS_OK)
        {
            ngx_http_gov_pay_redis_close(1);
            return;
        }

        for ( ;; ) {
            if (redisReaderGetReply(rd->reader, &reply) != REDIS_OK) {
                ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                              "gov_pay: redis protocol error: %s",
                              rd->reader->errstr);
                ngx_http_gov_pay_redis_close(1);
                return;
            }

            if (reply == NULL) {
                break;
            }

            ngx_http_gov_pay_redis_dispatch(reply);

            if (rd->c != c) {
                /* a handler closed the connection */
                return;
            }
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_gov_pay_redis_close(1);
    }
}


static void
ngx_http_gov_pay_redis_dispatch(redisReply *reply)
{
    u_char                        *p, what[64];
    ngx_queue_t                   *q;
    ngx_http_gov_pay_redis_t      *rd;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    rd = &ngx_http_gov_pay_redis;

    if (ngx_queue_empty(&rd->inflight)) {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "gov_pay: redis reply with no command waiting");
        freeReplyObject(reply);
        ngx_http_gov_pay_redis_close(1);
        return;
    }

    q = ngx_queue_head(&rd->inflight);
    ngx_queue_remove(q);
    rd->ninflight--;
    cmd = ngx_queue_data(q, ngx_http_gov_pay_redis_cmd_t, queue);

    if (reply->type == REDIS_REPLY_ERROR && cmd->script >= 0
        && !cmd->reloaded && reply->len >= 8
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        /* the script cache was flushed: load it and send again, once */

        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "gov_pay: redis lost script \"%s\", loading it again",
                      ngx_http_gov_pay_script_names[cmd->script]);

        freeReplyObject(reply);
        cmd->reloaded = 1;

        if (ngx_http_gov_pay_redis_load_script(cmd->script) != NGX_OK
            || ngx_http_gov_pay_redis_queue(cmd) != NGX_OK)
        {
            if (cmd->handler) {
                cmd->handler(cmd->data, NULL);
            }
            ngx_http_gov_pay_redis_free(cmd);
        }

        return;
    }

    if (reply->type == REDIS_REPLY_ERROR
        && cmd->handler != ngx_http_gov_pay_redis_authed)
    {
        /* a refused AUTH is logged by its handler, naming the user */

        p = ngx_http_gov_pay_redis_what(cmd, what, sizeof(what));

        ngx_log_error(NGX_LOG_ERR, cmd->log, 0,
                      "gov_pay: redis error on %*s%s%V: %*s", p - what, what,
                      cmd->code.len ? " for " : "", &cmd->code,
                      reply->len, reply->str);
    }

    if (cmd->timer.timer_set) {
        ngx_del_timer(&cmd->timer);
    }

    if (cmd->handler) {
        cmd->handler(cmd->data, reply);
    }

    freeReplyObject(reply);
    ngx_http_gov_pay_redis_free(cmd);
}
