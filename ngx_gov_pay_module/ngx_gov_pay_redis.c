
/*
 * ngx_gov_pay_redis.c: the non-blocking Redis client on nginx's event loop.
 *
 * gov_pay_redis_connections persistent, pipelined connections per worker
 * process (one by default).  nginx owns the sockets (ngx_event_connect_peer,
 * nginx timers); hiredis only parses replies (redisReader).  Commands are
 * framed here (RESP: "*<argc>\r\n", then "$<len>\r\n<bytes>\r\n" per
 * argument): redisFormatCommandArgv() printed every length with sprintf()
 * and was a seventh of a callback's CPU.  This wiring was chosen over
 * hiredis's async context because with it: no name lookup can happen at request time (the
 * address was resolved at configuration time), every command has a timeout
 * on an nginx timer, a callback can be cancelled (the command just forgets
 * its handler, and its reply is still consumed in order), and reads are
 * drained until EAGAIN as edge-triggered epoll requires.
 *
 * Why several connections: Redis reads at most 16 KiB of one client's
 * commands per turn of its event loop, and with appendfsync always it
 * fsyncs once per turn, after running what it read.  On one connection, a
 * burst of creates (about 1 KiB each) shares an fsync some ten at a time,
 * however many wait; on N connections, N times as many.  A request's
 * commands go on one connection (ngx_http_gov_pay_redis_pick(): the one
 * that is up with the fewest commands in flight), so the commands a
 * request sends together keep their order; the requests are spread over
 * the connections.
 *
 * On each connection commands are answered in the order they were sent, so
 * its commands in flight form one FIFO queue.  While a connection connects,
 * commands may be queued on it and are sent once it is up; a connection
 * that is down (waiting for its reconnect timer) takes none, and when every
 * connection is down a command is refused at once so that the request gets
 * its 503 fast.  On a command timeout, a connect timeout
 * (gov_pay_redis_connect_timeout), a write or read error, or a protocol
 * error, that connection is closed, every handler waiting on it is told
 * (reply NULL), and it reconnects on its own with backoff (100 ms doubling
 * to 2 s; back to 100 ms once a script has loaded, so a refused AUTH backs
 * off too).  The other connections go on.
 *
 * On every connect, AUTH (gov_pay_redis_auth: an ACL user and its password)
 * goes first, then the scripts with SCRIPT LOAD, ahead of any other
 * command, all in one pipelined write.  A refused AUTH (WRONGPASS, NOPERM)
 * or a SCRIPT LOAD refused for want of it (NOAUTH, NOPERM) is logged at
 * [error] naming the user, never the password, and the connection is closed
 * and tried again with backoff.  A NOSCRIPT reply (Redis restarted without
 * AOF, or SCRIPT FLUSH) loads the script again on that connection and
 * re-sends the command, once.
 *
 * Two caps, for the worker as a whole, keep a store that falls behind from
 * piling up work: at most gov_pay_redis_max_inflight commands sent or
 * waiting to be sent, and at most gov_pay_redis_max_unsent bytes of
 * commands not yet written to the sockets (one command is always let in
 * while nothing waits to be written).  A request's command over either cap
 * is refused (NGX_DECLINED) and the request gets its "store unavailable"
 * answer at once.  A connection's output buffer grows with a burst and is
 * let go once a write after it is small again.
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
    ngx_http_gov_pay_redis_conn_t      *conn;       /* queued on */
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


/* the data of a SCRIPT LOAD's handler: which script, on which connection */

typedef struct {
    ngx_http_gov_pay_redis_conn_t      *conn;
    ngx_uint_t                          script;
} ngx_http_gov_pay_redis_loader_t;


struct ngx_http_gov_pay_redis_conn_s {
    ngx_uint_t                          number;     /* 1 to n, for the log */
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

    ngx_http_gov_pay_redis_loader_t     loaders[NGX_HTTP_GOV_PAY_SCRIPT_N];
};


typedef struct {
    ngx_http_gov_pay_main_conf_t       *conf;
    ngx_log_t                          *log;

    ngx_http_gov_pay_redis_conn_t      *conns;
    ngx_uint_t                          nconns;
    ngx_uint_t                          next;       /* where picking starts */
    ngx_uint_t                          ninflight;  /* on all connections */

    const char                         *src[NGX_HTTP_GOV_PAY_SCRIPT_N];
    char                                sha[NGX_HTTP_GOV_PAY_SCRIPT_N][41];
} ngx_http_gov_pay_redis_t;


static ngx_http_gov_pay_redis_t  ngx_http_gov_pay_redis;

static ngx_str_t  ngx_http_gov_pay_redis_default_user = ngx_string("default");


static void ngx_http_gov_pay_redis_connect(
    ngx_http_gov_pay_redis_conn_t *cn);
static void ngx_http_gov_pay_redis_close(ngx_http_gov_pay_redis_conn_t *cn,
    ngx_uint_t reconnect);
static void ngx_http_gov_pay_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_gov_pay_redis_read_handler(ngx_event_t *rev);
static void ngx_http_gov_pay_redis_write_handler(ngx_event_t *wev);
static void ngx_http_gov_pay_redis_timeout_handler(ngx_event_t *ev);
static void ngx_http_gov_pay_redis_connect_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_gov_pay_redis_full(ngx_http_gov_pay_redis_cmd_t *cmd,
    const char *prefix, ngx_str_t *what);
static u_char *ngx_http_gov_pay_redis_what(ngx_http_gov_pay_redis_cmd_t *cmd,
    u_char *buf, size_t len);
static u_char *ngx_http_gov_pay_redis_which(ngx_http_gov_pay_redis_conn_t *cn,
    u_char *buf, size_t len);
static ngx_int_t ngx_http_gov_pay_redis_queue(
    ngx_http_gov_pay_redis_conn_t *cn, ngx_http_gov_pay_redis_cmd_t *cmd);
static ngx_int_t ngx_http_gov_pay_redis_append(
    ngx_http_gov_pay_redis_conn_t *cn, u_char *buf, size_t len);
static ngx_int_t ngx_http_gov_pay_redis_auth(
    ngx_http_gov_pay_redis_conn_t *cn);
static ngx_int_t ngx_http_gov_pay_redis_load_script(
    ngx_http_gov_pay_redis_conn_t *cn, ngx_uint_t script);
static ngx_http_gov_pay_redis_cmd_t *ngx_http_gov_pay_redis_cmd(
    ngx_uint_t argc, const char **argv, const size_t *argvlen,
    ngx_http_gov_pay_redis_handler_pt handler, void *data);
static void ngx_http_gov_pay_redis_free(ngx_http_gov_pay_redis_cmd_t *cmd);
static void ngx_http_gov_pay_redis_authed(void *data, redisReply *reply);
static void ngx_http_gov_pay_redis_script_loaded(void *data,
    redisReply *reply);
static void ngx_http_gov_pay_redis_dispatch(ngx_http_gov_pay_redis_conn_t *cn,
    redisReply *reply);


ngx_int_t
ngx_http_gov_pay_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    ngx_uint_t                      i, j;
    unsigned int                    mdlen;
    unsigned char                   md[EVP_MAX_MD_SIZE];
    ngx_http_gov_pay_redis_t       *rd;
    ngx_http_gov_pay_redis_conn_t  *cn;

    rd = &ngx_http_gov_pay_redis;
    ngx_memzero(rd, sizeof(ngx_http_gov_pay_redis_t));

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

    rd->conns = ngx_pcalloc(cycle->pool, gpmcf->redis_connections
                                         * sizeof(ngx_http_gov_pay_redis_conn_t));
    if (rd->conns == NULL) {
        return NGX_ERROR;
    }

    rd->nconns = gpmcf->redis_connections;
    rd->log = cycle->log;
    rd->conf = gpmcf;

    for (i = 0; i < rd->nconns; i++) {
        cn = &rd->conns[i];

        cn->number = i + 1;
        cn->backoff = NGX_HTTP_GOV_PAY_REDIS_BACKOFF_MIN;
        ngx_queue_init(&cn->inflight);

        for (j = 0; j < NGX_HTTP_GOV_PAY_SCRIPT_N; j++) {
            cn->loaders[j].conn = cn;
            cn->loaders[j].script = j;
        }

        cn->reconnect.handler = ngx_http_gov_pay_redis_reconnect_handler;
        cn->reconnect.log = cycle->log;
        cn->reconnect.data = cn;
        cn->reconnect.cancelable = 1;

        cn->connect_timer.handler = ngx_http_gov_pay_redis_connect_timeout;
        cn->connect_timer.log = cycle->log;
        cn->connect_timer.data = cn;
        cn->connect_timer.cancelable = 1;
    }

    for (i = 0; i < rd->nconns; i++) {
        ngx_http_gov_pay_redis_connect(&rd->conns[i]);
    }

    return NGX_OK;
}


void
ngx_http_gov_pay_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                      i;
    ngx_http_gov_pay_redis_t       *rd;
    ngx_http_gov_pay_redis_conn_t  *cn;

    rd = &ngx_http_gov_pay_redis;

    if (rd->conf == NULL) {
        return;
    }

    for (i = 0; i < rd->nconns; i++) {
        cn = &rd->conns[i];

        if (cn->reconnect.timer_set) {
            ngx_del_timer(&cn->reconnect);
        }

        ngx_http_gov_pay_redis_close(cn, 0);

        ngx_free(cn->out);
        cn->out = NULL;
    }

    rd->conf = NULL;
}


/*
 * The connection for a request's next commands: of those that are up, the
 * one with the fewest commands in flight (ties: in turn); else one that is
 * connecting; NULL when every connection is down.
 */

ngx_http_gov_pay_redis_conn_t *
ngx_http_gov_pay_redis_pick(void)
{
    ngx_uint_t                      i;
    ngx_http_gov_pay_redis_t       *rd;
    ngx_http_gov_pay_redis_conn_t  *cn, *best;

    rd = &ngx_http_gov_pay_redis;

    if (rd->conf == NULL) {
        return NULL;
    }

    best = NULL;

    for (i = 0; i < rd->nconns; i++) {
        cn = &rd->conns[(rd->next + i) % rd->nconns];

        if (cn->state == NGX_HTTP_GOV_PAY_REDIS_UP) {
            if (best == NULL || best->state != NGX_HTTP_GOV_PAY_REDIS_UP
                || cn->ninflight < best->ninflight)
            {
                best = cn;
            }

        } else if (cn->state == NGX_HTTP_GOV_PAY_REDIS_CONNECTING
                   && best == NULL)
        {
            best = cn;
        }
    }

    rd->next = (rd->next + 1) % rd->nconns;

    return best;
}


ngx_int_t
ngx_http_gov_pay_redis_command(ngx_http_gov_pay_redis_conn_t *cn,
    ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_gov_pay_redis_handler_pt handler, void *data,
    ngx_http_gov_pay_redis_cmd_t **cmdp)
{
    const char                    *a[64];
    size_t                         l[64];
    ngx_uint_t                     i;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    if (cn == NULL) {
        cn = ngx_http_gov_pay_redis_pick();
    }

    if (cn == NULL || cn->state == NGX_HTTP_GOV_PAY_REDIS_DOWN) {
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

    if (ngx_http_gov_pay_redis_queue(cn, cmd) != NGX_OK) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_ERROR;
    }

    *cmdp = cmd;

    return NGX_OK;
}


ngx_int_t
ngx_http_gov_pay_redis_script(ngx_http_gov_pay_redis_conn_t *cn,
    ngx_http_gov_pay_script_e script, ngx_uint_t nkeys, ngx_uint_t argc,
    ngx_str_t *argv, ngx_http_gov_pay_redis_handler_pt handler, void *data,
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

    if (cn == NULL) {
        cn = ngx_http_gov_pay_redis_pick();
    }

    if (cn == NULL || cn->state == NGX_HTTP_GOV_PAY_REDIS_DOWN) {
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

    if (ngx_http_gov_pay_redis_queue(cn, cmd) != NGX_OK) {
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
 * those not yet written.  Both caps are the worker's, over all its
 * connections.
 */

static ngx_int_t
ngx_http_gov_pay_redis_full(ngx_http_gov_pay_redis_cmd_t *cmd,
    const char *prefix, ngx_str_t *what)
{
    u_char                         *p, buf[64];
    size_t                          unsent;
    ngx_uint_t                      i;
    ngx_http_gov_pay_redis_t       *rd;
    ngx_http_gov_pay_redis_conn_t  *cn;

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

    unsent = 0;

    for (i = 0; i < rd->nconns; i++) {
        cn = &rd->conns[i];
        unsent += cn->out_len - cn->out_pos;
    }

    /* one command always fits while nothing waits, however large */

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


/* " (connection 2 of 4)" for a log line; nothing with one connection */

static u_char *
ngx_http_gov_pay_redis_which(ngx_http_gov_pay_redis_conn_t *cn, u_char *buf,
    size_t len)
{
    if (ngx_http_gov_pay_redis.nconns == 1) {
        return buf;
    }

    return ngx_snprintf(buf, len, " (connection %ui of %ui)", cn->number,
                        ngx_http_gov_pay_redis.nconns);
}


/* a length in RESP: decimal digits, then CR LF */

static u_char *
ngx_http_gov_pay_redis_len(u_char *p, size_t n)
{
    u_char   digits[NGX_SIZE_T_LEN], *d;

    d = digits + sizeof(digits);

    do {
        *--d = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    p = ngx_cpymem(p, d, digits + sizeof(digits) - d);
    *p++ = CR;
    *p++ = LF;

    return p;
}


/* a command and what it is for; its bytes are kept to send it again */

static ngx_http_gov_pay_redis_cmd_t *
ngx_http_gov_pay_redis_cmd(ngx_uint_t argc, const char **argv,
    const size_t *argvlen, ngx_http_gov_pay_redis_handler_pt handler,
    void *data)
{
    u_char                        *p;
    size_t                         len;
    ngx_uint_t                     i;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    len = 1 + NGX_SIZE_T_LEN + 2;

    for (i = 0; i < argc; i++) {
        len += 1 + NGX_SIZE_T_LEN + 2 + argvlen[i] + 2;
    }

    /* the command and its bytes in one allocation */

    cmd = ngx_alloc(sizeof(ngx_http_gov_pay_redis_cmd_t) + len,
                    ngx_http_gov_pay_redis.log);
    if (cmd == NULL) {
        return NULL;
    }

    ngx_memzero(cmd, sizeof(ngx_http_gov_pay_redis_cmd_t));

    p = (u_char *) cmd + sizeof(ngx_http_gov_pay_redis_cmd_t);
    cmd->buf = (char *) p;

    *p++ = '*';
    p = ngx_http_gov_pay_redis_len(p, argc);

    for (i = 0; i < argc; i++) {
        *p++ = '$';
        p = ngx_http_gov_pay_redis_len(p, argvlen[i]);

        /* an empty argument may have no bytes at all (NULL) */
        if (argvlen[i]) {
            p = ngx_cpymem(p, argv[i], argvlen[i]);
        }

        *p++ = CR;
        *p++ = LF;
    }

    cmd->handler = handler;
    cmd->data = data;
    cmd->len = p - (u_char *) cmd->buf;
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

    ngx_free(cmd);
}


static ngx_int_t
ngx_http_gov_pay_redis_queue(ngx_http_gov_pay_redis_conn_t *cn,
    ngx_http_gov_pay_redis_cmd_t *cmd)
{
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;

    if (ngx_http_gov_pay_redis_append(cn, (u_char *) cmd->buf, cmd->len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmd->conn = cn;
    ngx_queue_insert_tail(&cn->inflight, &cmd->queue);
    cn->ninflight++;
    rd->ninflight++;

    if (!cmd->timer.timer_set) {
        ngx_add_timer(&cmd->timer, rd->conf->redis_timeout);
    }

    /* flushed once per event loop turn: commands of many requests share
     * one write */

    if (cn->state == NGX_HTTP_GOV_PAY_REDIS_UP && !cn->c->write->posted) {
        ngx_post_event(cn->c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_redis_append(ngx_http_gov_pay_redis_conn_t *cn, u_char *buf,
    size_t len)
{
    u_char  *p;
    size_t   size;

    if (cn->out_pos == cn->out_len) {
        cn->out_pos = 0;
        cn->out_len = 0;
    }

    if (cn->out_len + len > cn->out_size) {

        if (cn->out_pos) {
            ngx_memmove(cn->out, cn->out + cn->out_pos,
                        cn->out_len - cn->out_pos);
            cn->out_len -= cn->out_pos;
            cn->out_pos = 0;
        }

        if (cn->out_len + len > cn->out_size) {
            size = ngx_max(cn->out_size * 2, cn->out_len + len);
            size = ngx_max(size, NGX_HTTP_GOV_PAY_REDIS_OUT_SIZE);

            p = ngx_alloc(size, ngx_http_gov_pay_redis.log);
            if (p == NULL) {
                return NGX_ERROR;
            }

            if (cn->out_len) {
                ngx_memcpy(p, cn->out, cn->out_len);
            }

            ngx_free(cn->out);
            cn->out = p;
            cn->out_size = size;
        }
    }

    ngx_memcpy(cn->out + cn->out_len, buf, len);
    cn->out_len += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_gov_pay_redis_auth(ngx_http_gov_pay_redis_conn_t *cn)
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
                                     ngx_http_gov_pay_redis_authed, cn);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_redis_queue(cn, cmd) != NGX_OK) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_gov_pay_redis_authed(void *data, redisReply *reply)
{
    ngx_http_gov_pay_redis_conn_t *cn = data;

    u_char                    *p, which[32];
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    /* Redis's own words (WRONGPASS, NOPERM, ...) never echo the password */

    p = ngx_http_gov_pay_redis_which(cn, which, sizeof(which));

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "gov_pay: redis %V refused AUTH as user \"%V\": %*s%*s",
                  &rd->conf->redis, &rd->conf->redis_user,
                  (size_t) reply->len, reply->str, p - which, which);

    ngx_http_gov_pay_redis_close(cn, 1);
}


static ngx_int_t
ngx_http_gov_pay_redis_load_script(ngx_http_gov_pay_redis_conn_t *cn,
    ngx_uint_t script)
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
                                     &cn->loaders[script]);
    if (cmd == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_gov_pay_redis_queue(cn, cmd) != NGX_OK) {
        ngx_http_gov_pay_redis_free(cmd);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_gov_pay_redis_script_loaded(void *data, redisReply *reply)
{
    ngx_http_gov_pay_redis_loader_t *ld = data;

    u_char                         *p, which[32];
    ngx_str_t                      *user;
    ngx_uint_t                      script;
    ngx_http_gov_pay_redis_t       *rd;
    ngx_http_gov_pay_redis_conn_t  *cn;

    rd = &ngx_http_gov_pay_redis;
    cn = ld->conn;
    script = ld->script;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING && reply->len == 40
        && ngx_strncmp(reply->str, rd->sha[script], 40) == 0)
    {
        /* the connection works: the next failure starts a new backoff */
        cn->backoff = NGX_HTTP_GOV_PAY_REDIS_BACKOFF_MIN;
        return;
    }

    p = ngx_http_gov_pay_redis_which(cn, which, sizeof(which));

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
                      "(user \"%V\"): %*s%*s", &rd->conf->redis,
                      ngx_http_gov_pay_script_names[script], user,
                      (size_t) reply->len, reply->str, p - which, which);

        ngx_http_gov_pay_redis_close(cn, 1);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && reply->len >= 7
        && ngx_strncmp(reply->str, "LOADING", 7) == 0)
    {
        /* a restarted Redis replays its AOF: try again a little later */

        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "gov_pay: redis %V is loading its data%*s",
                      &rd->conf->redis, p - which, which);

        ngx_http_gov_pay_redis_close(cn, 1);
        return;
    }

    ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                  "gov_pay: SCRIPT LOAD of \"%s\" failed: %*s%*s",
                  ngx_http_gov_pay_script_names[script],
                  (size_t) (reply->str ? reply->len : 0),
                  reply->str ? reply->str : "", p - which, which);
}


static void
ngx_http_gov_pay_redis_connect(ngx_http_gov_pay_redis_conn_t *cn)
{
    u_char                    *p, which[32];
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_addr_t                *addr;
    ngx_connection_t          *c;
    ngx_http_gov_pay_redis_t  *rd;

    rd = &ngx_http_gov_pay_redis;
    addr = rd->conf->redis_addr;

    ngx_memzero(&cn->peer, sizeof(ngx_peer_connection_t));
    cn->peer.sockaddr = addr->sockaddr;
    cn->peer.socklen = addr->socklen;
    cn->peer.name = &addr->name;
    cn->peer.get = ngx_event_get_peer;
    cn->peer.log = rd->log;
    cn->peer.log_error = NGX_ERROR_ERR;

    rc = ngx_event_connect_peer(&cn->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        p = ngx_http_gov_pay_redis_which(cn, which, sizeof(which));

        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "gov_pay: connect() to redis %V failed%*s",
                      &rd->conf->redis, p - which, which);
        /* ngx_event_connect_peer() has closed the socket itself */
        cn->peer.connection = NULL;
        ngx_http_gov_pay_redis_close(cn, 1);
        return;
    }

    c = cn->peer.connection;
    c->data = cn;
    c->read->handler = ngx_http_gov_pay_redis_read_handler;
    c->write->handler = ngx_http_gov_pay_redis_write_handler;
    c->pool = NULL;

    cn->c = c;
    cn->reader = redisReaderCreate();
    if (cn->reader == NULL) {
        ngx_http_gov_pay_redis_close(cn, 1);
        return;
    }

    cn->state = NGX_HTTP_GOV_PAY_REDIS_CONNECTING;

    /* AUTH and the scripts go first, ahead of any command that needs them */

    if (rd->conf->redis_user.len
        && ngx_http_gov_pay_redis_auth(cn) != NGX_OK)
    {
        ngx_http_gov_pay_redis_close(cn, 1);
        return;
    }

    for (i = 0; i < NGX_HTTP_GOV_PAY_SCRIPT_N; i++) {
        if (ngx_http_gov_pay_redis_load_script(cn, i) != NGX_OK) {
            ngx_http_gov_pay_redis_close(cn, 1);
            return;
        }
    }

    if (rc == NGX_OK) {
        cn->state = NGX_HTTP_GOV_PAY_REDIS_UP;
        ngx_post_event(c->write, &ngx_posted_events);
        return;
    }

    /* NGX_AGAIN: the handshake is bounded by a timer of its own */

    ngx_add_timer(&cn->connect_timer, rd->conf->redis_connect_timeout);
}


static void
ngx_http_gov_pay_redis_close(ngx_http_gov_pay_redis_conn_t *cn,
    ngx_uint_t reconnect)
{
    u_char                        *p, which[32];
    ngx_queue_t                   *q, pending;
    ngx_http_gov_pay_redis_t      *rd;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    rd = &ngx_http_gov_pay_redis;

    if (cn->connect_timer.timer_set) {
        ngx_del_timer(&cn->connect_timer);
    }

    if (cn->c) {
        ngx_close_connection(cn->c);
        cn->c = NULL;
    }

    if (cn->reader) {
        redisReaderFree(cn->reader);
        cn->reader = NULL;
    }

    cn->state = NGX_HTTP_GOV_PAY_REDIS_DOWN;
    cn->out_len = 0;
    cn->out_pos = 0;
    rd->ninflight -= cn->ninflight;
    cn->ninflight = 0;

    /* detach first: a handler may queue a command, which then goes on
     * another connection or is refused */

    ngx_queue_init(&pending);

    if (!ngx_queue_empty(&cn->inflight)) {
        pending = cn->inflight;
        pending.next->prev = &pending;
        pending.prev->next = &pending;
        ngx_queue_init(&cn->inflight);
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
        && !cn->reconnect.timer_set)
    {
        p = ngx_http_gov_pay_redis_which(cn, which, sizeof(which));

        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "gov_pay: redis %V unavailable, reconnecting in %M ms"
                      "%*s", &rd->conf->redis, cn->backoff, p - which, which);

        ngx_add_timer(&cn->reconnect, cn->backoff);

        cn->backoff = ngx_min(cn->backoff * 2,
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

    ngx_http_gov_pay_redis_connect(ev->data);
}


static void
ngx_http_gov_pay_redis_connect_timeout(ngx_event_t *ev)
{
    u_char                         *p, which[32];
    ngx_http_gov_pay_redis_conn_t  *cn;

    cn = ev->data;

    p = ngx_http_gov_pay_redis_which(cn, which, sizeof(which));

    ngx_log_error(NGX_LOG_ERR, ngx_http_gov_pay_redis.log, NGX_ETIMEDOUT,
                  "gov_pay: connect() to redis %V timed out "
                  "(gov_pay_redis_connect_timeout)%*s",
                  &ngx_http_gov_pay_redis.conf->redis, p - which, which);

    ngx_http_gov_pay_redis_close(cn, 1);
}


static void
ngx_http_gov_pay_redis_timeout_handler(ngx_event_t *ev)
{
    u_char                        *p, what[64], *w, which[32];
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    cmd = ev->data;

    p = ngx_http_gov_pay_redis_what(cmd, what, sizeof(what));
    w = ngx_http_gov_pay_redis_which(cmd->conn, which, sizeof(which));

    ngx_log_error(NGX_LOG_ERR, cmd->log, 0,
                  "gov_pay: redis %V timed out on %*s%s%V%*s",
                  &ngx_http_gov_pay_redis.conf->redis, p - what, what,
                  cmd->code.len ? " for " : "", &cmd->code, w - which, which);

    /*
     * A command that timed out leaves the pipeline out of step with the
     * requests; start this connection afresh.  Every command is
     * idempotent, so a request that got its 503 may be retried by its
     * sender whatever Redis did.
     */

    ngx_http_gov_pay_redis_close(cmd->conn, 1);
}


static void
ngx_http_gov_pay_redis_write_handler(ngx_event_t *wev)
{
    int                             err;
    u_char                         *p, which[32];
    ssize_t                         n;
    socklen_t                       len;
    ngx_connection_t               *c;
    ngx_http_gov_pay_redis_t       *rd;
    ngx_http_gov_pay_redis_conn_t  *cn;

    c = wev->data;
    cn = c->data;
    rd = &ngx_http_gov_pay_redis;

    if (cn->state == NGX_HTTP_GOV_PAY_REDIS_CONNECTING) {

        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        p = ngx_http_gov_pay_redis_which(cn, which, sizeof(which));

        if (err) {
            ngx_log_error(NGX_LOG_ERR, rd->log, err,
                          "gov_pay: connect() to redis %V failed%*s",
                          &rd->conf->redis, p - which, which);
            ngx_http_gov_pay_redis_close(cn, 1);
            return;
        }

        if (cn->connect_timer.timer_set) {
            ngx_del_timer(&cn->connect_timer);
        }

        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "gov_pay: connected to redis %V%*s",
                      &rd->conf->redis, p - which, which);

        cn->state = NGX_HTTP_GOV_PAY_REDIS_UP;
    }

    while (cn->out_pos < cn->out_len) {
        n = c->send(c, cn->out + cn->out_pos, cn->out_len - cn->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(wev, 0) != NGX_OK) {
                ngx_http_gov_pay_redis_close(cn, 1);
            }
            return;
        }

        if (n == NGX_ERROR || n == 0) {
            ngx_http_gov_pay_redis_close(cn, 1);
            return;
        }

        cn->out_pos += n;
    }

    /*
     * All sent.  A buffer that a burst made larger than it started is let
     * go once a write is a quarter of it or less: the burst is over (a
     * steady load that fills it keeps it, with no churn of allocations).
     */

    if (cn->out_size > NGX_HTTP_GOV_PAY_REDIS_OUT_SIZE
        && cn->out_len <= cn->out_size / 4)
    {
        ngx_log_error(NGX_LOG_INFO, rd->log, 0,
                      "gov_pay: redis output buffer of %uz bytes released "
                      "after a burst", cn->out_size);

        ngx_free(cn->out);
        cn->out = NULL;
        cn->out_size = 0;
    }

    cn->out_pos = 0;
    cn->out_len = 0;
}


static void
ngx_http_gov_pay_redis_read_handler(ngx_event_t *rev)
{
    void                           *reply;
    u_char                         *p, which[32];
    ssize_t                         n;
    u_char                          buf[NGX_HTTP_GOV_PAY_REDIS_READ_SIZE];
    ngx_connection_t               *c;
    ngx_http_gov_pay_redis_t       *rd;
    ngx_http_gov_pay_redis_conn_t  *cn;

    c = rev->data;
    cn = c->data;
    rd = &ngx_http_gov_pay_redis;

    if (cn->state != NGX_HTTP_GOV_PAY_REDIS_UP) {
        /* connect completion is seen by the write handler */
        if (cn->state == NGX_HTTP_GOV_PAY_REDIS_CONNECTING) {
            ngx_http_gov_pay_redis_write_handler(c->write);
        }

        if (cn->c != c || cn->state != NGX_HTTP_GOV_PAY_REDIS_UP) {
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
            p = ngx_http_gov_pay_redis_which(cn, which, sizeof(which));

            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "gov_pay: redis %V closed the connection%*s",
                          &rd->conf->redis, p - which, which);
            ngx_http_gov_pay_redis_close(cn, 1);
            return;
        }

        if (redisReaderFeed(cn->reader, (const char *) buf, n)
            != REDIS_OK)
        {
            ngx_http_gov_pay_redis_close(cn, 1);
            return;
        }

        for ( ;; ) {
            if (redisReaderGetReply(cn->reader, &reply) != REDIS_OK) {
                ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                              "gov_pay: redis protocol error: %s",
                              cn->reader->errstr);
                ngx_http_gov_pay_redis_close(cn, 1);
                return;
            }

            if (reply == NULL) {
                break;
            }

            ngx_http_gov_pay_redis_dispatch(cn, reply);

            if (cn->c != c) {
                /* a handler closed the connection */
                return;
            }
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_gov_pay_redis_close(cn, 1);
    }
}


static void
ngx_http_gov_pay_redis_dispatch(ngx_http_gov_pay_redis_conn_t *cn,
    redisReply *reply)
{
    u_char                        *p, what[64];
    ngx_queue_t                   *q;
    ngx_http_gov_pay_redis_t      *rd;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    rd = &ngx_http_gov_pay_redis;

    if (ngx_queue_empty(&cn->inflight)) {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "gov_pay: redis reply with no command waiting");
        freeReplyObject(reply);
        ngx_http_gov_pay_redis_close(cn, 1);
        return;
    }

    q = ngx_queue_head(&cn->inflight);
    ngx_queue_remove(q);
    cn->ninflight--;
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

        if (ngx_http_gov_pay_redis_load_script(cn, cmd->script) != NGX_OK
            || ngx_http_gov_pay_redis_queue(cn, cmd) != NGX_OK)
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
