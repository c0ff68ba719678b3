
/*
 * ngx_gov_pay_settle.c: money arrived for a notice (a verified channel
 * callback, a bank's payment): one channel trade number pays one notice,
 * ever, and the notice is settled at most once.
 *
 * Two steps, each one single-slot Redis command, so nothing is cross-slot
 * and everything runs unchanged on Redis Cluster:
 *
 *   1. claim: "{gpM}:trade:<channel>:<trade no>" = payment code, set only
 *      if absent (SET NX GET), on the shard M of the trade number (not of
 *      the notice: two notices' callbacks with one trade number meet
 *      there).  The answer says whose it is.
 *   2. settle.lua on the notice's shard, told the owner found in step 1:
 *      the notice's own trade number pays it (UNPAID -> PAID plus the
 *      settled event, or DUP, or an anomaly); another notice's trade
 *      number is refused (bank: TAKEN, answered DUPLICATE) or recorded as
 *      an anomaly (TRADE_NO_REUSED) and acknowledged as the channel
 *      expects.
 *
 * A crash between the steps is finished by the channel's retry: the claim
 * is found to be this notice's and the settle runs (or says DUP).  A
 * callback for an unknown notice gives its claim back (compare-and-delete,
 * sent without waiting: the request does not wait for it); if that is
 * lost, the trade number stays taken and the channel's later callback for
 * another notice is refused, which ops see in the log.  Claims expire with
 * the notices' retention (gov_pay_retention).
 */


#include "ngx_gov_pay_channel.h"


static ngx_int_t ngx_http_gov_pay_claim_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_settled(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply);
static ngx_int_t ngx_http_gov_pay_num_arg(ngx_http_request_t *r,
    ngx_str_t *arg, int64_t value);


/*
 * s: verified; nonce: the bank's nonce, spent by the settle (NULL for a
 * channel callback).  next runs with ctx->outcome set (empty: the store
 * failed).
 */

ngx_int_t
ngx_http_gov_pay_settle(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx,
    ngx_http_gov_pay_settlement_t *s, ngx_str_t *nonce,
    ngx_http_gov_pay_step_pt next)
{
    uint32_t                        shard;
    ngx_str_t                      *argv;
    ngx_http_gov_pay_settle_t      *st;
    ngx_http_gov_pay_main_conf_t   *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);

    st = ngx_pcalloc(r->pool, sizeof(ngx_http_gov_pay_settle_t));
    argv = ngx_palloc(r->pool, 7 * sizeof(ngx_str_t));
    if (st == NULL || argv == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->s = *s;
    st->next = next;

    if (nonce) {
        st->nonce = *nonce;
    }

    ctx->settle = st;
    ngx_str_null(&ctx->outcome);
    ngx_str_null(&ctx->reason);

    shard = gp_shard_of((const char *) ctx->channel.data, ctx->channel.len,
                        (const char *) s->trade_no.data, s->trade_no.len,
                        (uint32_t) gpmcf->shards);

    ngx_str_set(&argv[0], "SET");

    if (ngx_http_gov_pay_key(r->pool, &argv[1], shard, "trade:%V:%V",
                             &ctx->channel, &s->trade_no)
        != NGX_OK
        || ngx_http_gov_pay_num_arg(r, &argv[5], gpmcf->retention)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    st->claim_key = argv[1];
    argv[2] = ctx->code;
    ngx_str_set(&argv[3], "NX");
    ngx_str_set(&argv[4], "EX");
    ngx_str_set(&argv[6], "GET");

    return ngx_http_gov_pay_query(r, -1, 0, 7, argv,
                                  ngx_http_gov_pay_claim_done);
}


static ngx_int_t
ngx_http_gov_pay_claim_done(ngx_http_request_t *r,
    ngx_http_gov_pay_ctx_t *ctx, redisReply *reply)
{
    u_char                        *p;
    ngx_str_t                     *argv;
    ngx_uint_t                     nkeys, argc;
    ngx_http_gov_pay_settle_t     *st;
    ngx_http_gov_pay_main_conf_t  *gpmcf;

    gpmcf = ngx_http_get_module_main_conf(r, ngx_http_gov_pay_module);
    st = ctx->settle;

    /* nil: claimed now; the code: claimed before by this notice */

    if (reply == NULL
        || (reply->type != REDIS_REPLY_NIL
            && reply->type != REDIS_REPLY_STRING))
    {
        return st->next(r, ctx);
    }

    if (reply->type == REDIS_REPLY_NIL) {
        st->owner = ctx->code;

    } else {
        st->owner.len = reply->len;
        st->owner.data = ngx_pnalloc(r->pool, reply->len);
        if (st->owner.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(st->owner.data, reply->str, reply->len);
    }

    argv = ngx_palloc(r->pool, 14 * sizeof(ngx_str_t));
    p = ngx_pnalloc(r->pool, 3 * NGX_INT64_LEN + 2 * NGX_TIME_T_LEN);
    if (argv == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * KEYS: notice, settled stream, anomaly stream[, bank nonce]
     * ARGV: code, channel, trade no, amount, paid_at, now, division, yy,
     *       owner of the trade number[, nonce ttl]
     */

    if (ngx_http_gov_pay_key(r->pool, &argv[0], ctx->shard, "n:%uL",
                             ctx->seq) != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[1], ctx->shard, "settled")
           != NGX_OK
        || ngx_http_gov_pay_key(r->pool, &argv[2], ctx->shard, "anomaly")
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    nkeys = 3;

    if (st->nonce.len) {
        if (ngx_http_gov_pay_key(r->pool, &argv[3], ctx->shard,
                                 "nonce:%s:%V", ctx->unit->id, &st->nonce)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        nkeys = 4;
    }

    argc = nkeys;

    argv[argc++] = ctx->code;
    argv[argc++] = ctx->channel;
    argv[argc++] = st->s.trade_no;

    argv[argc].data = p;
    argv[argc].len = ngx_sprintf(p, "%L", st->s.amount) - p;
    p += argv[argc++].len;

    argv[argc].data = p;
    argv[argc].len = ngx_sprintf(p, "%L", st->s.paid_at) - p;
    p += argv[argc++].len;

    argv[argc].data = p;
    argv[argc].len = ngx_sprintf(p, "%T", ngx_time()) - p;
    p += argv[argc++].len;

    /* the code's division and year must be the notice's */

    argv[argc].data = ctx->code.data;
    argv[argc++].len = 6;
    argv[argc].data = ctx->code.data + 6;
    argv[argc++].len = 2;

    argv[argc++] = st->owner;

    if (st->nonce.len) {
        argv[argc].data = p;
        argv[argc].len = ngx_sprintf(p, "%T", 2 * gpmcf->auth_window) - p;
        argc++;
    }

    return ngx_http_gov_pay_query(r, NGX_HTTP_GOV_PAY_SCRIPT_SETTLE, nkeys,
                                  argc, argv, ngx_http_gov_pay_settled);
}


static ngx_int_t
ngx_http_gov_pay_settled(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx,
    redisReply *reply)
{
    ngx_str_t                      argv[2], word;
    ngx_http_gov_pay_settle_t     *st;
    ngx_http_gov_pay_redis_cmd_t  *cmd;

    st = ctx->settle;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_STRING)
    {
        return st->next(r, ctx);
    }

    /* both NUL-terminated: the routes compare them with ngx_strcmp() */

    word.data = (u_char *) reply->element[0]->str;
    word.len = reply->element[0]->len;

    ctx->outcome.data = ngx_http_gov_pay_cstr(r->pool, &word);
    if (ctx->outcome.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->outcome.len = word.len;

    if (reply->elements > 1 && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        word.data = (u_char *) reply->element[1]->str;
        word.len = reply->element[1]->len;

        ctx->reason.data = ngx_http_gov_pay_cstr(r->pool, &word);
        if (ctx->reason.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->reason.len = word.len;
    }

    /* this anomaly was recorded before: nothing was added now */

    ctx->again = (reply->elements > 2);

    if (ctx->outcome.len == 4
        && ngx_strncmp(ctx->outcome.data, "NONE", 4) == 0
        && st->owner.len == ctx->code.len
        && ngx_strncmp(st->owner.data, ctx->code.data, ctx->code.len) == 0)
    {
        /*
         * no such notice: give back the claim made for it, if still ours;
         * nothing waits for the answer
         */

        argv[0] = st->claim_key;
        argv[1] = ctx->code;

        (void) ngx_http_gov_pay_redis_script(NULL,
                                             NGX_HTTP_GOV_PAY_SCRIPT_UNCLAIM,
                                             1, 2, argv, NULL, NULL, &cmd);
    }

    return st->next(r, ctx);
}


static ngx_int_t
ngx_http_gov_pay_num_arg(ngx_http_request_t *r, ngx_str_t *arg,
    int64_t value)
{
    arg->data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (arg->data == NULL) {
        return NGX_ERROR;
    }

    arg->len = ngx_sprintf(arg->data, "%L", value) - arg->data;

    return NGX_OK;
}
