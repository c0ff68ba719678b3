/*
 * gp_util: money, time, masking, UTF-8, Chinese ID checks and form bodies; plain C.
 */

#ifndef GP_UTIL_H
#define GP_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define GP_FEN_MAX 10000000000LL /* one hundred million yuan */

/* "1250.00", "0.01", "-3.50"; returns length or -1 if out is too small */
int gp_fen_to_yuan(int64_t fen, char *out, size_t n);
/* exact decimal yuan ("12", "12.3", "12.30") into fen; no sign, no exponent, at most two
 * decimals, no leading '+', at most 14 integer digits (leading zeros allowed), no ".5"
 * nor "1."; 0 or -1; the caller checks the range (1 .. GP_FEN_MAX) */
int gp_yuan_to_fen(const char *s, size_t n, int64_t *fen);

/* "2026-12-31T23:59:59+08:00" (always +08:00); out needs 26 bytes; returns 25, or 0 and ""
 * if the year is outside 0000-9999 */
size_t gp_time_rfc3339(int64_t t, char out[26]);
/* RFC 3339 with 'Z' or +hh:mm / -hh:mm offset, optional fraction ignored; 0 or -1 */
int gp_time_parse_rfc3339(const char *s, size_t n, int64_t *t);
/* China Standard Time as channels write it: "yyyy-MM-dd HH:mm:ss" (sep 1) or
 * "yyyyMMddHHmmss" (sep 0), +08:00; 0 and *t, or -1 */
int gp_cst_parse(const char *s, size_t n, int sep, int64_t *t);
/* a receipt's public reference, as /r/ takes it: uri "/r/<8 digits>/<10 digits>" and the
 * check code (c=) of 6 of 0-9 a-z; 0 with the code and number copied, or -1 */
int gp_receipt_ref_parse(const char *uri, size_t n, const char *check,
                         size_t clen, char code[9], char number[11]);
/* two-digit year in +08:00 of unix time t */
unsigned gp_year2(int64_t t);

/* 1 if valid UTF-8 (no overlongs, no surrogates); number of code points in *chars if not NULL */
int gp_utf8_valid(const char *s, size_t n, size_t *chars);

/* 1 if s is UTF-8 of min to max code points, with no U+0000 */
int gp_text_ok(const char *s, size_t n, size_t min, size_t max);
/* 1 if s is a request_id of the API: 1 to 64 printable ASCII characters, no space */
int gp_request_id_ok(const char *s, size_t n);

/*
 * 1 if valid UTF-8 s holds a character that must not reach a receipt, a PDF or a page as
 * text: C0 controls (U+0000-U+001F, newline and tab too), DEL, C1 controls (U+0080-U+009F),
 * line and paragraph separators (U+2028, U+2029), and the bidirectional formatting
 * characters (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) that can make a text
 * display as another
 */
int gp_text_has_controls(const char *s, size_t n);

/*
 * A JSON string's contents (no quotes) as jansson writes them (json_dumps without flags):
 * '"' and '\\' escaped, \b \f \n \r \t, other C0 controls as \u00XX (upper-case hex),
 * everything else (UTF-8, '/', DEL) as is. out needs GP_JSON_ESCAPED_MAX(n) bytes (not
 * NUL-terminated); returns the length written. s must be valid UTF-8 (gp_utf8_valid).
 */
#define GP_JSON_ESCAPED_MAX(n) (6 * (n))
size_t gp_json_escape(const char *s, size_t n, char *out);

/* "张三" -> "张*", "欧阳娜娜" -> "欧***": first code point then one '*' per further code point;
 * out NUL-terminated; returns length or -1 if out is too small or s is not UTF-8 */
int gp_mask_name(const char *s, size_t n, char *out, size_t outlen);
/* "330106200001011234" -> "3301**********1234": first 4 and last 4 kept (8 or fewer: all
 * '*'); counted in UTF-8 code points, one '*' each; returns length or -1 as above */
int gp_mask_id(const char *s, size_t n, char *out, size_t outlen);

/* 18-character resident ID: 17 digits + MOD 11-2 check ('0'-'9' or upper-case 'X'),
 * birth date a real day in 1900-2099; 1 or 0 */
int gp_resident_id_valid(const char *s, size_t n);
/* 18-character unified social credit code (GB 32100-2015, upper case) with its check
 * character; 1 or 0 */
int gp_uscc_valid(const char *s, size_t n);

/* application/x-www-form-urlencoded */
typedef struct {
    char  *key;
    size_t key_len;
    char  *value;
    size_t value_len;
} gp_kv_t;

typedef struct {
    gp_kv_t *kv;
    size_t   n;
} gp_form_t;

/* decodes once ('+' is space, %XX); a malformed escape is an error, so is a NUL byte
 * (raw or %00); keys may repeat; empty segments are skipped, "k" alone is k with an empty
 * value; 0 or -1; free with gp_form_free (one allocation holds pairs and strings) */
int  gp_form_parse(const char *body, size_t n, gp_form_t *form);
void gp_form_free(gp_form_t *form);
/* first value of key, or NULL */
const gp_kv_t *gp_form_get(const gp_form_t *form, const char *key);
/* "k=v&k=v" of the decoded pairs, sorted by key (bytewise), leaving out the keys named in
 * skip (NULL-terminated list) and, if skip_empty, pairs with an empty value; malloc'd,
 * NUL-terminated, length in *len; NULL on failure */
char *gp_form_canonical(const gp_form_t *form, const char *const *skip,
                        int skip_empty, size_t *len);
/* percent-encodes s for a query value (unreserved kept, space as %20); malloc'd, NUL-term. */
char *gp_url_encode(const char *s, size_t n, size_t *len);

#endif /* GP_UTIL_H */
