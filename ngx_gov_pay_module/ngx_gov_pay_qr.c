
/*
 * ngx_gov_pay_qr.c: the QR images of the pay URLs (GET /q/{code}.svg for
 * screens, .png?s=<1-12> for printing), made once per notice and kept.
 *
 * A code's pay URL (gov_pay_public_url + "/q/" + code) never changes, so
 * neither does its image.  Each worker keeps the images it made in memory
 * (gov_pay_qr_cache bytes of them, least recently used first out): an image
 * asked for again is answered from there, with no Redis command, no
 * encoding, no drawing.  An image is kept at most an hour: the notice
 * behind it is looked up again after that, so a notice that the retention
 * plugin deleted stops having an image within the hour.
 *
 * Clients may keep them too: Cache-Control "public, max-age=2592000,
 * immutable" and a strong ETag made of the code, the format, the scale and
 * a tag of the public URL and of this drawing's version; nginx's
 * not_modified filter answers 304 to an If-None-Match that names it.
 */


#include "ngx_gov_pay_module.h"

#include <qrencode.h>
#include <zlib.h>


#define NGX_HTTP_GOV_PAY_QR_KEEP       3600        /* s, in a worker */
#define NGX_HTTP_GOV_PAY_QR_MAX_AGE    "2592000"   /* s, in clients: 30 d */

/* part of every ETag: a new way of drawing gets a new version */
#define NGX_HTTP_GOV_PAY_QR_VERSION    "qr1"


typedef struct {
    ngx_rbtree_node_t              node;       /* key: crc32 of name */
    ngx_queue_t                    queue;      /* most recently used first */
    time_t                         expires;
    size_t                         size;       /* what it holds in all */
    ngx_str_t                      name;       /* "<code>.svg", ".png8" */
    ngx_str_t                      body;
} ngx_http_gov_pay_qr_entry_t;


typedef struct {
    ngx_rbtree_t                   tree;
    ngx_rbtree_node_t              sentinel;
    ngx_queue_t                    lru;
    size_t                         used;
    size_t                         max;
    u_char                         tag[8];     /* of the public URL */
    ngx_uint_t                     ready;
} ngx_http_gov_pay_qr_cache_t;


static ngx_http_gov_pay_qr_cache_t  ngx_http_gov_pay_qr_cache;


static ngx_int_t ngx_http_gov_pay_qr_name(ngx_str_t *code, ngx_uint_t png,
    ngx_uint_t scale, u_char *buf, ngx_str_t *name);
static ngx_http_gov_pay_qr_entry_t *ngx_http_gov_pay_qr_find(ngx_str_t *name,
    uint32_t hash);
static void ngx_http_gov_pay_qr_keep(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *body);
static void ngx_http_gov_pay_qr_drop(ngx_http_gov_pay_qr_entry_t *e);
static ngx_int_t ngx_http_gov_pay_qr_send(ngx_http_request_t *r,
    ngx_str_t *name, ngx_uint_t png, ngx_str_t *body);
static ngx_int_t ngx_http_gov_pay_svg(ngx_http_request_t *r, QRcode *qr,
    ngx_str_t *body);
static ngx_int_t ngx_http_gov_pay_png(ngx_http_request_t *r, QRcode *qr,
    ngx_uint_t scale, ngx_str_t *body);


void
ngx_http_gov_pay_qr_init_process(ngx_cycle_t *cycle,
    ngx_http_gov_pay_main_conf_t *gpmcf)
{
    uint32_t                      crc;
    ngx_http_gov_pay_qr_cache_t  *qc;

    qc = &ngx_http_gov_pay_qr_cache;

    ngx_rbtree_init(&qc->tree, &qc->sentinel, ngx_rbtree_insert_value);
    ngx_queue_init(&qc->lru);
    qc->used = 0;
    qc->max = gpmcf->qr_cache;

    ngx_crc32_init(crc);
    ngx_crc32_update(&crc, gpmcf->public_url.data, gpmcf->public_url.len);
    ngx_crc32_update(&crc, (u_char *) NGX_HTTP_GOV_PAY_QR_VERSION,
                     sizeof(NGX_HTTP_GOV_PAY_QR_VERSION) - 1);
    ngx_crc32_final(crc);

    ngx_sprintf(qc->tag, "%08xD", crc);
    qc->ready = 1;
}


void
ngx_http_gov_pay_qr_exit_process(ngx_cycle_t *cycle)
{
    ngx_queue_t                  *q;
    ngx_http_gov_pay_qr_cache_t  *qc;

    qc = &ngx_http_gov_pay_qr_cache;

    if (!qc->ready) {
        return;
    }

    while (!ngx_queue_empty(&qc->lru)) {
        q = ngx_queue_head(&qc->lru);
        ngx_http_gov_pay_qr_drop(ngx_queue_data(q,
                                     ngx_http_gov_pay_qr_entry_t, queue));
    }

    qc->ready = 0;
}


/* "?s=": pixels per module of a PNG, 1 to 12; 8 when absent or wrong */

ngx_uint_t
ngx_http_gov_pay_qr_scale(ngx_http_request_t *r)
{
    ngx_int_t  scale;
    ngx_str_t  arg;

    if (ngx_http_arg(r, (u_char *) "s", 1, &arg) != NGX_OK) {
        return 8;
    }

    scale = ngx_atoi(arg.data, arg.len);

    return (scale < 1 || scale > 12) ? 8 : (ngx_uint_t) scale;
}


/*
 * The image of code from this worker's cache: what the request gets, or
 * NGX_DECLINED when it is not there (the notice is looked up)
 */

ngx_int_t
ngx_http_gov_pay_qr_cached(ngx_http_request_t *r, ngx_http_gov_pay_ctx_t *ctx,
    ngx_str_t *code, ngx_uint_t png)
{
    u_char                        buf[64];
    uint32_t                      hash;
    ngx_str_t                     name, body;
    ngx_http_gov_pay_qr_cache_t  *qc;
    ngx_http_gov_pay_qr_entry_t  *e;

    qc = &ngx_http_gov_pay_qr_cache;

    if (!qc->ready || qc->max == 0
        || ngx_http_gov_pay_qr_name(code, png,
                                    png ? ngx_http_gov_pay_qr_scale(r) : 0,
                                    buf, &name)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    hash = ngx_crc32_short(name.data, name.len);

    e = ngx_http_gov_pay_qr_find(&name, hash);
    if (e == NULL) {
        return NGX_DECLINED;
    }

    if (e->expires < ngx_time()) {
        ngx_http_gov_pay_qr_drop(e);
        return NGX_DECLINED;
    }

    ngx_queue_remove(&e->queue);
    ngx_queue_insert_head(&qc->lru, &e->queue);

    ctx->code = *code;          /* $gov_pay_payment_code, as after a lookup */

    /* a copy: the entry may go while the answer is still being written */

    body.len = e->body.len;
    body.data = ngx_pnalloc(r->pool, body.len);
    if (body.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(body.data, e->body.data, body.len);

    return ngx_http_gov_pay_qr_send(r, &name, png, &body);
}


/* the image of ctx->code, whose notice was found: drawn, kept, sent */

ngx_int_t
ngx_http_gov_pay_qr_image(ngx_http_request_t *r,
    ngx_http_gov_pay_main_conf_t *gpmcf, ngx_http_gov_pay_ctx_t *ctx,
    ngx_uint_t png)
{
    u_char      url[512], buf[64];
    QRcode     *qr;
    ngx_int_t   rc;
    ngx_str_t   body, name;
    ngx_uint_t  scale;

    scale = png ? ngx_http_gov_pay_qr_scale(r) : 0;

    if (ngx_http_gov_pay_qr_name(&ctx->code, png, scale, buf, &name)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    *ngx_snprintf(url, sizeof(url) - 1, "%V/q/%V", &gpmcf->public_url,
                  &ctx->code) = '\0';

    qr = QRcode_encodeString((const char *) url, 0, QR_ECLEVEL_M,
                             QR_MODE_8, 1);
    if (qr == NULL) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, ngx_errno,
                      "gov_pay: QRcode_encodeString() failed");
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = png ? ngx_http_gov_pay_png(r, qr, scale, &body)
             : ngx_http_gov_pay_svg(r, qr, &body);

    QRcode_free(qr);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_gov_pay_qr_keep(r, &name, &body);

    return ngx_http_gov_pay_qr_send(r, &name, png, &body);
}


/* the cache's name of an image, also the start of its ETag */

static ngx_int_t
ngx_http_gov_pay_qr_name(ngx_str_t *code, ngx_uint_t png, ngx_uint_t scale,
    u_char *buf, ngx_str_t *name)
{
    if (code->len != GP_CODE_LEN) {
        return NGX_ERROR;
    }

    name->data = buf;
    name->len = png ? ngx_sprintf(buf, "%V.png%ui", code, scale) - buf
                    : ngx_sprintf(buf, "%V.svg", code) - buf;

    return NGX_OK;
}


static ngx_http_gov_pay_qr_entry_t *
ngx_http_gov_pay_qr_find(ngx_str_t *name, uint32_t hash)
{
    ngx_int_t                     rc;
    ngx_rbtree_node_t            *node, *sentinel;
    ngx_http_gov_pay_qr_entry_t  *e;

    node = ngx_http_gov_pay_qr_cache.tree.root;
    sentinel = ngx_http_gov_pay_qr_cache.tree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        /* hash == node->key */

        e = (ngx_http_gov_pay_qr_entry_t *) node;

        rc = ngx_memn2cmp(name->data, e->name.data, name->len, e->name.len);

        if (rc == 0) {
            return e;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/*
 * Keeps a copy of an image that was just drawn, making room by dropping the
 * least recently used; an image larger than the whole cache is not kept.
 * Nothing is kept when memory runs out: the image is drawn again next time.
 */

static void
ngx_http_gov_pay_qr_keep(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *body)
{
    size_t                        size;
    uint32_t                      hash;
    ngx_queue_t                  *q;
    ngx_http_gov_pay_qr_cache_t  *qc;
    ngx_http_gov_pay_qr_entry_t  *e;

    qc = &ngx_http_gov_pay_qr_cache;

    size = sizeof(ngx_http_gov_pay_qr_entry_t) + name->len + body->len;

    if (!qc->ready || size > qc->max) {
        return;
    }

    hash = ngx_crc32_short(name->data, name->len);

    e = ngx_http_gov_pay_qr_find(name, hash);
    if (e) {
        ngx_http_gov_pay_qr_drop(e);
    }

    while (qc->used + size > qc->max && !ngx_queue_empty(&qc->lru)) {
        q = ngx_queue_last(&qc->lru);
        ngx_http_gov_pay_qr_drop(ngx_queue_data(q,
                                     ngx_http_gov_pay_qr_entry_t, queue));
    }

    e = ngx_alloc(size, r->connection->log);
    if (e == NULL) {
        return;
    }

    e->name.data = (u_char *) e + sizeof(ngx_http_gov_pay_qr_entry_t);
    e->name.len = name->len;
    ngx_memcpy(e->name.data, name->data, name->len);

    e->body.data = e->name.data + name->len;
    e->body.len = body->len;
    ngx_memcpy(e->body.data, body->data, body->len);

    e->size = size;
    e->expires = ngx_time() + NGX_HTTP_GOV_PAY_QR_KEEP;
    e->node.key = hash;

    ngx_rbtree_insert(&qc->tree, &e->node);
    ngx_queue_insert_head(&qc->lru, &e->queue);
    qc->used += size;
}


static void
ngx_http_gov_pay_qr_drop(ngx_http_gov_pay_qr_entry_t *e)
{
    ngx_http_gov_pay_qr_cache_t  *qc;

    qc = &ngx_http_gov_pay_qr_cache;

    ngx_rbtree_delete(&qc->tree, &e->node);
    ngx_queue_remove(&e->queue);
    qc->used -= e->size;

    ngx_free(e);
}


/* the answer: the image with its cache headers (or 304, nginx decides) */

static ngx_int_t
ngx_http_gov_pay_qr_send(ngx_http_request_t *r, ngx_str_t *name,
    ngx_uint_t png, ngx_str_t *body)
{
    ngx_str_t         v;
    ngx_table_elt_t  *etag;

    ngx_str_set(&v, "public, max-age=" NGX_HTTP_GOV_PAY_QR_MAX_AGE
                    ", immutable");
    if (ngx_http_gov_pay_add_header(r, "Cache-Control", &v) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_str_set(&v, "default-src 'none'; style-src 'unsafe-inline'");
    if (ngx_http_gov_pay_add_header(r, "Content-Security-Policy", &v)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* "<code>.svg-<tag>": the tag changes with the public URL and drawing */

    etag = ngx_list_push(&r->headers_out.headers);
    if (etag == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    etag->value.data = ngx_pnalloc(r->pool, name->len + 12);
    if (etag->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    etag->value.len = ngx_sprintf(etag->value.data, "\"%V-%*s\"", name,
                                  (size_t) 8, ngx_http_gov_pay_qr_cache.tag)
                      - etag->value.data;
    etag->hash = 1;
    ngx_str_set(&etag->key, "ETag");
    r->headers_out.etag = etag;

    return ngx_http_gov_pay_send(r, NGX_HTTP_OK,
                                 png ? "image/png" : "image/svg+xml", body);
}


/* a coordinate of a QR code (4 to 184: version 40 is 177 modules wide) */

static u_char *
ngx_http_gov_pay_svg_num(u_char *p, int n)
{
    if (n >= 100) {
        *p++ = (u_char) ('0' + n / 100);
        n %= 100;
        *p++ = (u_char) ('0' + n / 10);

    } else if (n >= 10) {
        *p++ = (u_char) ('0' + n / 10);
    }

    *p++ = (u_char) ('0' + n % 10);

    return p;
}


static ngx_int_t
ngx_http_gov_pay_svg(ngx_http_request_t *r, QRcode *qr, ngx_str_t *body)
{
    u_char  *p, *last;
    int      x, y, w;

    w = qr->width;

    body->len = 512 + (size_t) w * w * 24;
    body->data = ngx_pnalloc(r->pool, body->len);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = body->data;
    last = body->data + body->len;

    /* a 4-module quiet zone, one path of unit squares for the dark modules */

    p = ngx_slprintf(p, last,
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" "
                     "viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" "
                     "shape-rendering=\"crispEdges\" role=\"img\" "
                     "aria-label=\"缴费二维码\">"
                     "<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>"
                     "<path fill=\"#000\" d=\"",
                     w + 8, w + 8, (w + 8) * 8, (w + 8) * 8);

    /* "M<x> <y>h1v1h-1z" per dark module, the numbers written by hand:
       ngx_slprintf() per module was a sixth of an image's cost */

    for (y = 0; y < w; y++) {
        for (x = 0; x < w; x++) {
            if (qr->data[y * w + x] & 1) {
                *p++ = 'M';
                p = ngx_http_gov_pay_svg_num(p, x + 4);
                *p++ = ' ';
                p = ngx_http_gov_pay_svg_num(p, y + 4);
                p = ngx_cpymem(p, "h1v1h-1z", 8);
            }
        }
    }

    p = ngx_slprintf(p, last, "\"/></svg>");
    body->len = p - body->data;

    return NGX_OK;
}


static u_char *
ngx_http_gov_pay_png_chunk(u_char *p, const char *type, u_char *data,
    size_t len)
{
    u_char  *start;
    uLong    crc;

    p[0] = (u_char) (len >> 24);
    p[1] = (u_char) (len >> 16);
    p[2] = (u_char) (len >> 8);
    p[3] = (u_char) len;

    start = p + 4;
    p = ngx_cpymem(start, type, 4);

    if (data != p && len) {
        ngx_memmove(p, data, len);
    }

    p += len;

    crc = crc32(0L, start, (uInt) (len + 4));

    p[0] = (u_char) (crc >> 24);
    p[1] = (u_char) (crc >> 16);
    p[2] = (u_char) (crc >> 8);
    p[3] = (u_char) crc;

    return p + 4;
}


/*
 * A 1-bit greyscale PNG, scale pixels per module, with
 * a 4-module quiet zone: (width + 8) * s pixels square; written with zlib.
 */

static ngx_int_t
ngx_http_gov_pay_png(ngx_http_request_t *r, QRcode *qr, ngx_uint_t scale,
    ngx_str_t *body)
{
    u_char     *raw, *row, *p, ihdr[13];
    size_t      side, stride, rawlen, x, y;
    uLongf      zlen;

    side = (size_t) (qr->width + 8) * scale;
    stride = 1 + (side + 7) / 8;
    rawlen = stride * side;

    raw = ngx_pnalloc(r->pool, rawlen);
    if (raw == NULL) {
        return NGX_ERROR;
    }

    /* white (1) everywhere, then the dark modules */

    ngx_memset(raw, 0xff, rawlen);

    for (y = 0; y < side; y++) {
        row = raw + y * stride;
        row[0] = 0;                         /* filter: none */

        for (x = 0; x < side; x++) {
            size_t  mx = x / scale, my = y / scale;

            if (mx >= 4 && my >= 4
                && mx < (size_t) qr->width + 4 && my < (size_t) qr->width + 4
                && (qr->data[(my - 4) * qr->width + (mx - 4)] & 1))
            {
                row[1 + x / 8] &= (u_char) ~(0x80 >> (x % 8));
            }
        }
    }

    zlen = compressBound(rawlen);

    body->data = ngx_pnalloc(r->pool, 8 + 25 + 12 + zlen + 12);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(body->data, "\x89PNG\r\n\x1a\n", 8);

    ihdr[0] = (u_char) (side >> 24);
    ihdr[1] = (u_char) (side >> 16);
    ihdr[2] = (u_char) (side >> 8);
    ihdr[3] = (u_char) side;
    ngx_memcpy(&ihdr[4], ihdr, 4);
    ihdr[8] = 1;                            /* bit depth */
    ihdr[9] = 0;                            /* greyscale */
    ihdr[10] = 0;
    ihdr[11] = 0;
    ihdr[12] = 0;

    p = ngx_http_gov_pay_png_chunk(p, "IHDR", ihdr, 13);

    /* the compressed rows go straight where the IDAT chunk's data belongs */

    if (compress2(p + 8, &zlen, raw, rawlen, Z_BEST_COMPRESSION) != Z_OK) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "gov_pay: compress2() failed");
        return NGX_ERROR;
    }

    p = ngx_http_gov_pay_png_chunk(p, "IDAT", p + 8, zlen);
    p = ngx_http_gov_pay_png_chunk(p, "IEND", NULL, 0);

    body->len = p - body->data;

    return NGX_OK;
}
