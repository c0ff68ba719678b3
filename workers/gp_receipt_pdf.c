/*
 * gp_receipt_pdf.c: the printable fiscal e-receipt (A4, one page).
 *
 * cairo's PDF surface embeds a subset of the font it draws with, so the PDF
 * renders the same on any machine (check with `pdffonts`: "emb yes"). The
 * font is loaded once from a file with FreeType (never through fontconfig,
 * whose answer depends on the machine). The payer's ID number is printed
 * masked, as on the verification page.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cairo-ft.h>
#include <cairo-pdf.h>
#include <cairo.h>
#include <ft2build.h>
#include FT_FREETYPE_H
#include <qrencode.h>

#include "gp_receipt_pdf.h"
#include "gp_util.h"


struct gp_receipt_pdf_s {
    FT_Library         ft;
    FT_Face            face;
    cairo_font_face_t *font;
};


typedef struct {
    unsigned char *data;
    size_t         len;
    size_t         cap;
    int            failed;
} gp_pdf_buf_t;


static cairo_status_t gp_pdf_write(void *closure, const unsigned char *data,
                                   unsigned int length);
static const char    *gp_pdf_str(const json_t *o, const char *name);
static void           gp_pdf_text(cairo_t *cr, double x, double y, double size,
                                  const char *s);
static void           gp_pdf_qr(cairo_t *cr, double x, double y, double module,
                                const char *url);


gp_receipt_pdf_t *
gp_receipt_pdf_create(const char *font, char *err, size_t errlen)
{
    gp_receipt_pdf_t *pdf;

    pdf = calloc(1, sizeof(gp_receipt_pdf_t));
    if (pdf == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    if (FT_Init_FreeType(&pdf->ft) != 0) {
        snprintf(err, errlen, "FT_Init_FreeType() failed");
        free(pdf);
        return NULL;
    }

    if (FT_New_Face(pdf->ft, font, 0, &pdf->face) != 0) {
        snprintf(err, errlen, "cannot load the font \"%s\"", font);
        FT_Done_FreeType(pdf->ft);
        free(pdf);
        return NULL;
    }

    pdf->font = cairo_ft_font_face_create_for_ft_face(pdf->face, 0);
    if (cairo_font_face_status(pdf->font) != CAIRO_STATUS_SUCCESS) {
        snprintf(err, errlen, "cairo cannot use the font \"%s\"", font);
        gp_receipt_pdf_free(pdf);
        return NULL;
    }

    return pdf;
}


void
gp_receipt_pdf_free(gp_receipt_pdf_t *pdf)
{
    if (pdf == NULL) {
        return;
    }

    if (pdf->font != NULL) {
        cairo_font_face_destroy(pdf->font);
    }

    FT_Done_Face(pdf->face);
    FT_Done_FreeType(pdf->ft);
    free(pdf);
}


static cairo_status_t
gp_pdf_write(void *closure, const unsigned char *data, unsigned int length)
{
    gp_pdf_buf_t  *b = closure;
    unsigned char *p;
    size_t         cap;

    if (b->len + length > b->cap) {
        cap = b->cap ? b->cap * 2 : 65536;
        while (cap < b->len + length) {
            cap *= 2;
        }

        p = realloc(b->data, cap);
        if (p == NULL) {
            b->failed = 1;
            return CAIRO_STATUS_WRITE_ERROR;
        }

        b->data = p;
        b->cap = cap;
    }

    memcpy(b->data + b->len, data, length);
    b->len += length;

    return CAIRO_STATUS_SUCCESS;
}


static const char *
gp_pdf_str(const json_t *o, const char *name)
{
    const json_t *v;

    v = json_object_get(o, name);
    if (v == NULL) {
        return "";
    }

    if (json_is_integer(v)) {
        /* only ItemQuantity: formatted by the caller */
        return "";
    }

    return json_is_string(v) ? json_string_value(v) : "";
}


static void
gp_pdf_text(cairo_t *cr, double x, double y, double size, const char *s)
{
    cairo_set_font_size(cr, size);
    cairo_move_to(cr, x, y);
    cairo_show_text(cr, s);
}


static void
gp_pdf_qr(cairo_t *cr, double x, double y, double module, const char *url)
{
    QRcode *qr;
    int     i, j, k;

    qr = QRcode_encodeString(url, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (qr == NULL) {
        return;
    }

    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, x, y, (qr->width + 8) * module,
                    (qr->width + 8) * module);
    cairo_fill(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);

    /* one rectangle per run of dark modules in a row: fewer PDF operators */

    for (i = 0; i < qr->width; i++) {
        for (j = 0; j < qr->width; j = k) {
            for (k = j; k < qr->width && (qr->data[i * qr->width + k] & 1); k++)
            {
                /* void */
            }

            if (k > j) {
                cairo_rectangle(cr, x + (j + 4) * module, y + (i + 4) * module,
                                (k - j) * module, module);
            } else {
                k = j + 1;
            }
        }
    }

    cairo_fill(cr);
    QRcode_free(qr);
}


int
gp_receipt_pdf_render(gp_receipt_pdf_t *pdf, const json_t *doc,
                      const json_t *seal, const char *url, unsigned char **out,
                      size_t *len, char *err, size_t errlen)
{
    cairo_surface_t *s;
    cairo_t         *cr;
    gp_pdf_buf_t     b;
    const json_t    *items, *it, *q;
    const char      *id, *related;
    char             line[512], masked[128];
    size_t           i;
    double           y;

    memset(&b, 0, sizeof(b));

    s = cairo_pdf_surface_create_for_stream(gp_pdf_write, &b, 595, 842);
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_TITLE,
                                   gp_pdf_str(doc, "EInvoiceName"));
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_CREATOR,
                                   "gov-pay-worker");
    cr = cairo_create(s);

    cairo_set_font_face(cr, pdf->font);
    cairo_set_source_rgb(cr, 0, 0, 0);

    gp_pdf_text(cr, 180, 70, 22, gp_pdf_str(doc, "EInvoiceName"));

    related = gp_pdf_str(doc, "RelatedInvoiceNumber");
    cairo_set_source_rgb(cr, related[0] ? 0.75 : 0, 0, 0);

    y = 110;
    snprintf(line, sizeof(line), "票据代码：%s",
             gp_pdf_str(doc, "EInvoiceCode"));
    gp_pdf_text(cr, 50, y, 11, line);
    snprintf(line, sizeof(line), "票据号码：%s",
             gp_pdf_str(doc, "EInvoiceNumber"));
    gp_pdf_text(cr, 50, y += 18, 11, line);
    snprintf(line, sizeof(line), "校验码：%s", gp_pdf_str(doc, "RandomNumber"));
    gp_pdf_text(cr, 50, y += 18, 11, line);
    snprintf(line, sizeof(line), "开票日期：%s %s",
             gp_pdf_str(doc, "IssueDate"), gp_pdf_str(doc, "IssueTime"));
    gp_pdf_text(cr, 50, y += 18, 11, line);

    if (related[0]) {
        snprintf(line, sizeof(line), "冲红原票据：%s / %s",
                 gp_pdf_str(doc, "RelatedInvoiceCode"), related);
        gp_pdf_text(cr, 50, y += 18, 11, line);
    }

    id = gp_pdf_str(doc, "PayerPartyCode");
    if (gp_mask_id(id, strlen(id), masked, sizeof(masked)) < 0) {
        masked[0] = '\0';
    }

    snprintf(line, sizeof(line), "交款人：%s",
             gp_pdf_str(doc, "PayerPartyName"));
    gp_pdf_text(cr, 50, y += 30, 12, line);
    snprintf(line, sizeof(line), "交款人代码：%s", masked);
    gp_pdf_text(cr, 50, y += 20, 12, line);
    snprintf(line, sizeof(line), "缴款码：%s    交款方式：%s",
             gp_pdf_str(doc, "BizCode"), gp_pdf_str(doc, "PayMode"));
    gp_pdf_text(cr, 50, y += 20, 12, line);

    y += 34;
    gp_pdf_text(cr, 50, y, 11, "项目编码");
    gp_pdf_text(cr, 130, y, 11, "项目名称");
    gp_pdf_text(cr, 300, y, 11, "数量");
    gp_pdf_text(cr, 360, y, 11, "标准（元）");
    gp_pdf_text(cr, 460, y, 11, "金额（元）");
    cairo_move_to(cr, 50, y + 6);
    cairo_line_to(cr, 545, y + 6);
    cairo_set_line_width(cr, 0.5);
    cairo_stroke(cr);

    items = json_object_get(doc, "Items");

    for (i = 0; i < json_array_size(items) && i < 20; i++) {
        it = json_array_get(items, i);
        y += 20;
        gp_pdf_text(cr, 50, y, 11, gp_pdf_str(it, "ItemCode"));
        gp_pdf_text(cr, 130, y, 11, gp_pdf_str(it, "ItemName"));
        q = json_object_get(it, "ItemQuantity");
        snprintf(line, sizeof(line), "%lld",
                 q != NULL ? (long long) json_integer_value(q) : 0LL);
        gp_pdf_text(cr, 300, y, 11, line);
        gp_pdf_text(cr, 360, y, 11, gp_pdf_str(it, "ItemStd"));
        gp_pdf_text(cr, 460, y, 11, gp_pdf_str(it, "ItemAmount"));
    }

    snprintf(line, sizeof(line), "金额合计：¥%s",
             gp_pdf_str(doc, "TotalAmount"));
    gp_pdf_text(cr, 50, y += 34, 14, line);
    snprintf(line, sizeof(line), "备注：%s", gp_pdf_str(doc, "Remark"));
    gp_pdf_text(cr, 50, y += 24, 11, line);
    snprintf(line, sizeof(line), "收款单位（章）：%s  %s",
             gp_pdf_str(doc, "InvoicingPartyName"),
             gp_pdf_str(doc, "InvoicingPartyCode"));
    gp_pdf_text(cr, 50, y += 24, 11, line);

    snprintf(line, sizeof(line), "电子签章：%s  证书序列号：%s  签章时间：%s",
             gp_pdf_str(seal, "SealAlgorithm"), gp_pdf_str(seal, "SealKeySN"),
             gp_pdf_str(seal, "SealTime"));
    gp_pdf_text(cr, 50, y += 24, 9, line);

    gp_pdf_text(cr, 50, 620, 10, "扫码或访问以下地址查验本票据：");
    gp_pdf_text(cr, 50, 636, 8, url);
    gp_pdf_qr(cr, 400, 560, 3, url);

    cairo_show_page(cr);
    cairo_destroy(cr);
    cairo_surface_finish(s);

    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS || b.failed) {
        snprintf(err, errlen, "cairo failed to write the PDF: %s",
                 cairo_status_to_string(cairo_surface_status(s)));
        cairo_surface_destroy(s);
        free(b.data);
        return -1;
    }

    cairo_surface_destroy(s);

    *out = b.data;
    *len = b.len;
    return 0;
}
