
/*
 * ngx_gov_pay_wait.c: the one owner of a request's reference while it
 * waits for something asynchronous: its body, Redis, a subrequest.
 *
 * Every route is written as steps.  A step either answers (it returns what
 * ngx_http_finalize_request() takes: a status, NGX_OK after sending,
 * NGX_ERROR) or starts one wait through this file and returns what this
 * file returned, NGX_DONE while the wait is on.  The content handler
 * returns its first step's result to nginx, as every content handler does.
 *
 * The rule, kept here and nowhere else: a wait that starts takes one
 * reference on the request (r->main->count++; for the body nginx's own
 * ngx_http_read_client_request_body() takes it), and the NGX_DONE that
 * its caller returns gives one back (ngx_http_finalize_request(r,
 * NGX_DONE) drops a reference).  When the wait ends, the next step runs
 * and its result goes to ngx_http_finalize_request(): a final answer
 * finishes the request on the request's own reference, NGX_DONE (another
 * wait started, with its own reference) just drops one.  So NGX_DONE
 * always means "exactly one reference was taken for it", whoever returns
 * it, and no other file touches r->main->count or finalizes a request
 * that waited.  It is how nginx's own modules resume a request
 * (ngx_http_upstream, auth_request's subrequest, limit_req's delay): the
 * request is parked with its reference held and resumed by an event.
 *
 * A Redis command that cannot be sent (the store is down, the client's
 * limits are reached) does not wait: the next step runs at once with the
 * reply NULL, the same as a command that failed later, so each route
 * answers "store unavailable" in one place.  A request that goes away
 * while Redis still owes it replies (client abort, worker shutdown) has
 * its commands abandoned by the request's pool cleanup: their replies are
 * read in turn and dropped.
 */


#include "ngx_gov_pay_module.h"


typedef struct {
    ngx_http_gov_pay_ctx_t      *ctx;
    ngx_uint_t                   index;
} ngx_http_gov_pay_waiter_t;


static void ngx_http_gov_pay_body_done(ngx_http_request_t *r);
static ngx_int_t ngx_http_gov_pay_body_string(ngx_http_request_t *r,
    ngx_str_t *body);
static void ngx_http_gov_pay_redis_done(void *data, redisReply *reply);
static void ngx_http_gov_pay_subrequest_resume(ngx_http_request_t *r);
static void ngx_http_gov_pay_resume(ngx_http_request_t *r, ngx_int_t rc);
static void ngx_http_gov_pay_wait_cleanup(void *data);


ngx_http_gov_pay_ctx_t *
ngx_http_gov_pay_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t      *cln;
    ngx_http_gov_pay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_gov_pay_wait_cleanup;
    cln->data = ctx;

    ctx->request = r;
    ngx_http_set_ctx(r, ctx, ngx_http_gov_pay_module);

    return ctx;
}


/* the body: ctx->body holds it (NUL-terminated) when next runs */

ngx_int_t
ngx_http_gov_pay_read_body(ngx_http_request_t *r,
    ngx_http_gov_pay_step_pt next)
{
    ngx_int_t                rc;
    ngx_http_gov_pay_ctx_t  *ctx;

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->step = next;

    r->request_body_in_single_buf = 1;

    /* nginx takes the wait's reference itself (and gives it back on error) */

    rc = ngx_http_read_client_request_body(r, ngx_http_gov_pay_body_done);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_gov_pay_body_done(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_gov_pay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);

    if (ngx_http_gov_pay_body_string(r, &ctx->body) != NGX_OK) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else {
        rc = ctx->step(r, ctx);
    }

    /* called from nginx's body reading, which runs the posted requests */

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_gov_pay_body_string(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len, size;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        size = ngx_buf_size(b);

        /* a chunked body leaves empty buffers (pos may be NULL) */

        if (size == 0) {
            continue;
        }

        if (b->in_file) {
            /* a body larger than client_body_buffer_size was spooled */
            n = ngx_read_file(b->file, p, size, b->file_pos);
            if (n == NGX_ERROR) {
                return NGX_ERROR;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, size);
        }
    }

    *p = '\0';
    body->len = p - body->data;

    return NGX_OK;
}


/* one Redis command (script >= 0: EVALSHA of that script) */

ngx_int_t
ngx_http_gov_pay_query(ngx_http_request_t *r, ngx_int_t script,
    ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *argv,
    ngx_http_gov_pay_reply_pt next)
{
    ngx_http_gov_pay_ctx_t    *ctx;
    ngx_http_gov_pay_query_t   q;

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    q.script = script;
    q.nkeys = nkeys;
    q.argc = argc;
    q.argv = argv;

    ctx->reply = next;
    ctx->part = NULL;
    ctx->step = NULL;

    return ngx_http_gov_pay_query_all(r, 1, &q, NULL, NULL);
}


/*
 * Several commands sent at once (pipelined: one round trip): part() sees
 * each reply as it arrives, next() runs once all are in.
 */

ngx_int_t
ngx_http_gov_pay_query_all(ngx_http_request_t *r, ngx_uint_t n,
    ngx_http_gov_pay_query_t *q, ngx_http_gov_pay_part_pt part,
    ngx_http_gov_pay_step_pt next)
{
    ngx_int_t                       rc;
    ngx_uint_t                      i, k;
    ngx_http_gov_pay_ctx_t         *ctx;
    ngx_http_gov_pay_waiter_t      *w;
    ngx_http_gov_pay_redis_conn_t  *conn;

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL || ctx->pending) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (part) {
        ctx->part = part;
        ctx->step = next;
        ctx->reply = NULL;
    }

    if (ctx->ncmds < n) {
        ctx->cmds = ngx_pcalloc(r->pool,
                                n * sizeof(ngx_http_gov_pay_redis_cmd_t *));
        if (ctx->cmds == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->ncmds = n;
    }

    w = ngx_palloc(r->pool, n * sizeof(ngx_http_gov_pay_waiter_t));
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the commands sent together go on one connection, in order */

    conn = ngx_http_gov_pay_redis_pick();
    rc = conn ? NGX_OK : NGX_DECLINED;

    for (i = 0; rc == NGX_OK && i < n; i++) {
        w[i].ctx = ctx;
        w[i].index = i;

        if (q[i].script >= 0) {
            rc = ngx_http_gov_pay_redis_script(conn, q[i].script, q[i].nkeys,
                                               q[i].argc, q[i].argv,
                                               ngx_http_gov_pay_redis_done,
                                               &w[i], &ctx->cmds[i]);
        } else {
            rc = ngx_http_gov_pay_redis_command(conn, q[i].argc, q[i].argv,
                                                ngx_http_gov_pay_redis_done,
                                                &w[i], &ctx->cmds[i]);
        }

        if (rc != NGX_OK) {
            break;
        }

        ngx_http_gov_pay_redis_describe(ctx->cmds[i], r->connection->log,
                                        &ctx->code);
    }

    if (rc == NGX_OK) {
        /* the wait's reference; the caller's NGX_DONE gives one back */
        ctx->pending = n;
        r->main->count++;
        return NGX_DONE;
    }

    /* not sent: the replies of those already queued are never wanted */

    for (k = 0; k < i; k++) {
        ngx_http_gov_pay_redis_abandon(ctx->cmds[k]);
        ctx->cmds[k] = NULL;
    }

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: a redis command could not be formatted");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the store is unavailable: the next step answers that, now */

    if (ctx->reply) {
        return ctx->reply(r, ctx, NULL);
    }

    for (k = 0; k < n; k++) {
        ctx->part(r, ctx, k, NULL);
    }

    return ctx->step(r, ctx);
}


static void
ngx_http_gov_pay_redis_done(void *data, redisReply *reply)
{
    ngx_http_gov_pay_waiter_t *w = data;

    ngx_int_t                rc;
    ngx_http_request_t      *r;
    ngx_http_gov_pay_ctx_t  *ctx;

    ctx = w->ctx;
    r = ctx->request;

    ctx->cmds[w->index] = NULL;
    ctx->pending--;

    ngx_http_set_log_request(r->connection->log, r);

    if (ctx->reply) {
        rc = ctx->reply(r, ctx, reply);

    } else {
        ctx->part(r, ctx, w->index, reply);

        if (ctx->pending) {
            return;
        }

        rc = ctx->step(r, ctx);
    }

    ngx_http_gov_pay_resume(r, rc);
}


/*
 * A subrequest whose answer the route reads in memory (done() is its
 * post_subrequest handler); next() runs in the parent once it is in.
 */

ngx_int_t
ngx_http_gov_pay_subrequest(ngx_http_request_t *r, ngx_str_t *uri,
    ngx_str_t *args, ngx_http_post_subrequest_pt done, void *data,
    ngx_http_gov_pay_step_pt next)
{
    ngx_http_request_t          *sr;
    ngx_http_gov_pay_ctx_t      *ctx;
    ngx_http_post_subrequest_t  *ps;

    ctx = ngx_http_gov_pay_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ps->handler = done;
    ps->data = data;

    if (ngx_http_subrequest(r, uri, args, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * The subrequest holds a reference of its own while it runs; the wait
     * holds this one until the parent resumes.  nginx wakes the parent
     * (a posted request) when the subrequest is done.
     */

    ctx->step = next;
    ctx->subrequest = sr;
    r->main->count++;
    r->write_event_handler = ngx_http_gov_pay_subrequest_resume;

    return NGX_DONE;
}


static void
ngx_http_gov_pay_subrequest_resume(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_gov_pay_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_gov_pay_module);

    if (ctx == NULL || ctx->subrequest == NULL || !ctx->subrequest->done) {
        return;
    }

    ctx->subrequest = NULL;
    r->write_event_handler = ngx_http_request_empty_handler;

    rc = ctx->step(r, ctx);

    /* a posted request: ngx_http_run_posted_requests() called us */

    ngx_http_finalize_request(r, rc);
}


/* a Redis reply's event: the request goes on, then what it posted runs */

static void
ngx_http_gov_pay_resume(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_gov_pay_wait_cleanup(void *data)
{
    ngx_http_gov_pay_ctx_t  *ctx = data;

    ngx_uint_t  i;

    /* the request is gone while Redis still owes it replies */

    for (i = 0; i < ctx->ncmds; i++) {
        if (ctx->cmds[i]) {
            ngx_http_gov_pay_redis_abandon(ctx->cmds[i]);
            ctx->cmds[i] = NULL;
        }
    }

    ctx->pending = 0;
}
