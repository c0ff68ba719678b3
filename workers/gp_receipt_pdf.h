/*
 * gp_receipt_pdf: the printable receipt, a one-page PDF drawn with cairo, the
 * Chinese text in a TrueType font loaded with FreeType and embedded (subset)
 * in the PDF, the verification URL as a QR code (libqrencode).
 */

#ifndef GP_RECEIPT_PDF_H
#define GP_RECEIPT_PDF_H

#include <stddef.h>

#include <jansson.h>

typedef struct gp_receipt_pdf_s gp_receipt_pdf_t;

/* loads the font file (face 0 of a .ttf / .ttc); NULL with err */
gp_receipt_pdf_t *gp_receipt_pdf_create(const char *font, char *err,
                                        size_t errlen);
void              gp_receipt_pdf_free(gp_receipt_pdf_t *pdf);

/*
 * The PDF of doc (the receipt document) and seal (InvoicingPartySeal) with
 * the QR code of url; *out is malloc'd. 0, or -1 with err.
 */
int gp_receipt_pdf_render(gp_receipt_pdf_t *pdf, const json_t *doc,
                          const json_t *seal, const char *url,
                          unsigned char **out, size_t *len, char *err,
                          size_t errlen);

#endif /* GP_RECEIPT_PDF_H */
