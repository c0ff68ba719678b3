/*
 * gp_util.c: the small, exact conversions that the edge and the workers must
 * agree on byte for byte.
 *
 * - Money: fen (int64) to a yuan string and decimal yuan strings from the
 *   channels back to fen, exactly, without ever going through a float.
 * - Time: RFC 3339. The edge always answers in China Standard Time (+08:00,
 *   no daylight saving), whatever the process time zone; parsing accepts any
 *   offset. The calendar arithmetic is done here (proleptic Gregorian, days
 *   from 1970-01-01), so neither TZ nor the C library's time functions matter.
 * - UTF-8 validation (no overlong forms, no surrogates, nothing above
 *   U+10FFFF) and masking of names and ID numbers for payer pages.
 * - Check characters of the 18-character resident identity number
 *   (GB 11643, ISO 7064 MOD 11-2) and of the unified social credit code
 *   (GB 32100-2015, MOD 31).
 * - application/x-www-form-urlencoded bodies: decode once, and build the
 *   sorted "k=v&k=v" string that Alipay and UnionPay sign. The canonical string
 *   holds the decoded values as they are, without encoding them again, which
 *   is what both channels specify.
 *
 * Nothing here keeps state between calls; everything is thread-safe.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gp_util.h"


#define GP_CST_OFFSET   (8 * 3600) /* +08:00 */
#define GP_SECS_PER_DAY 86400
#define GP_YUAN_INT_MAX 14 /* integer digits of a yuan amount */

/* unix seconds of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z */
#define GP_TIME_MIN (-62167219200LL)
#define GP_TIME_MAX 253402300799LL


/* ---- money --------------------------------------------------------------- */

int
gp_fen_to_yuan(int64_t fen, char *out, size_t n)
{
    uint64_t mag;
    int      len;

    if (out == NULL || n == 0) {
        return -1;
    }

    /* the magnitude of INT64_MIN does not fit int64_t, so negate in uint64_t */
    mag = (fen < 0) ? (uint64_t) 0 - (uint64_t) fen : (uint64_t) fen;

    len = snprintf(out, n, "%s%" PRIu64 ".%02u", (fen < 0) ? "-" : "",
                   mag / 100, (unsigned) (mag % 100));

    if (len < 0 || (size_t) len >= n) {
        out[0] = '\0';
        return -1;
    }

    return len;
}


/* counts the leading decimal digits of s[0 .. n) */
static size_t
gp_count_digits(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
    }

    return i;
}


int
gp_yuan_to_fen(const char *s, size_t n, int64_t *fen)
{
    size_t  ilen, flen, i;
    int64_t v;

    if (s == NULL) {
        return -1;
    }

    ilen = gp_count_digits(s, n);
    if (ilen == 0 || ilen > GP_YUAN_INT_MAX) {
        return -1;
    }

    flen = 0;

    if (ilen < n) {
        if (s[ilen] != '.') {
            return -1;
        }

        flen = gp_count_digits(s + ilen + 1, n - ilen - 1);
        if (flen == 0 || flen > 2 || ilen + 1 + flen != n) {
            return -1;
        }
    }

    /* at most 14 + 2 digits: no overflow is possible in int64_t */
    v = 0;
    for (i = 0; i < ilen; i++) {
        v = v * 10 + (s[i] - '0');
    }

    v *= 100;

    if (flen >= 1) {
        v += 10 * (s[ilen + 1] - '0');
    }
    if (flen == 2) {
        v += s[ilen + 2] - '0';
    }

    *fen = v;
    return 0;
}


/* ---- time ---------------------------------------------------------------- */

static int
gp_is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}


static unsigned
gp_days_in_month(int64_t y, unsigned m)
{
    static const unsigned char days[12] = { 31, 28, 31, 30, 31, 30,
                                            31, 31, 30, 31, 30, 31 };

    if (m == 2 && gp_is_leap(y)) {
        return 29;
    }

    return days[m - 1];
}


/*
 * days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)
 */
static int64_t
gp_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t era, yoe, doy, doe;

    y -= (m <= 2);
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


/* the date of a day number (days since 1970-01-01) */
static void
gp_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    *d = (unsigned) (doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned) (mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}


/*
 * day number and second of day of unix time t seen at +08:00, without overflow
 */
static void
gp_time_split_cst(int64_t t, int64_t *days, int64_t *secs)
{
    int64_t dd, ss;

    dd = t / GP_SECS_PER_DAY;
    ss = t % GP_SECS_PER_DAY;
    if (ss < 0) {
        ss += GP_SECS_PER_DAY;
        dd--;
    }

    ss += GP_CST_OFFSET;
    if (ss >= GP_SECS_PER_DAY) {
        ss -= GP_SECS_PER_DAY;
        dd++;
    }

    *days = dd;
    *secs = ss;
}


size_t
gp_time_rfc3339(int64_t t, char out[26])
{
    int64_t  days, secs, y;
    unsigned m, d;

    if (t < GP_TIME_MIN - GP_CST_OFFSET || t > GP_TIME_MAX - GP_CST_OFFSET) {
        out[0] = '\0';
        return 0;
    }

    gp_time_split_cst(t, &days, &secs);
    gp_civil_from_days(days, &y, &m, &d);

    snprintf(out, 26, "%04u-%02u-%02uT%02u:%02u:%02u+08:00", (unsigned) y, m, d,
             (unsigned) (secs / 3600), (unsigned) (secs / 60 % 60),
             (unsigned) (secs % 60));

    return 25;
}


unsigned
gp_year2(int64_t t)
{
    int64_t  days, secs, y;
    unsigned m, d;

    gp_time_split_cst(t, &days, &secs);
    gp_civil_from_days(days, &y, &m, &d);

    y %= 100;
    if (y < 0) {
        y += 100;
    }

    return (unsigned) y;
}


/* n digits at s as a number, or -1 if any is not a digit */
static int
gp_parse_fixed(const char *s, size_t n, unsigned *v)
{
    size_t i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        *v = *v * 10 + (unsigned) (s[i] - '0');
    }

    return 0;
}


/*
 * the offset part of an RFC 3339 time: "Z" or "+hh:mm" / "-hh:mm", in seconds
 */
static int
gp_parse_offset(const char *s, size_t n, int64_t *offset)
{
    unsigned oh, om;

    if (n == 1 && (s[0] == 'Z' || s[0] == 'z')) {
        *offset = 0;
        return 0;
    }

    if (n != 6 || (s[0] != '+' && s[0] != '-') || s[3] != ':'
        || gp_parse_fixed(s + 1, 2, &oh) != 0
        || gp_parse_fixed(s + 4, 2, &om) != 0 || oh > 23 || om > 59)
    {
        return -1;
    }

    *offset = (int64_t) (oh * 3600 + om * 60);
    if (s[0] == '-') {
        *offset = -*offset;
    }

    return 0;
}


int
gp_time_parse_rfc3339(const char *s, size_t n, int64_t *t)
{
    unsigned y, mo, d, h, mi, sec;
    size_t   i;
    int64_t  offset;

    /* YYYY-MM-DDThh:mm:ss is 19 characters, the shortest offset "Z" one more */
    if (s == NULL || n < 20 || s[4] != '-' || s[7] != '-'
        || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':'
        || gp_parse_fixed(s, 4, &y) != 0 || gp_parse_fixed(s + 5, 2, &mo) != 0
        || gp_parse_fixed(s + 8, 2, &d) != 0
        || gp_parse_fixed(s + 11, 2, &h) != 0
        || gp_parse_fixed(s + 14, 2, &mi) != 0
        || gp_parse_fixed(s + 17, 2, &sec) != 0)
    {
        return -1;
    }

    if (mo < 1 || mo > 12 || d < 1 || d > gp_days_in_month(y, mo) || h > 23
        || mi > 59 || sec > 60)
    {
        return -1;
    }

    i = 19;

    /* a fraction of a second: '.' and at least one digit; ignored */
    if (s[i] == '.') {
        i++;
        if (gp_count_digits(s + i, n - i) == 0) {
            return -1;
        }
        i += gp_count_digits(s + i, n - i);
    }

    if (i >= n || gp_parse_offset(s + i, n - i, &offset) != 0) {
        return -1;
    }

    *t = gp_days_from_civil(y, mo, d) * GP_SECS_PER_DAY
         + (int64_t) (h * 3600 + mi * 60 + sec) - offset;

    return 0;
}


/* ---- UTF-8 and masking --------------------------------------------------- */

/*
 * length of the well-formed UTF-8 sequence at s (RFC 3629, table 3-7 of
 * Unicode), or 0
 */
static size_t
gp_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c, lo, hi;
    size_t        len, i;

    c = s[0];

    if (c < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) {
            lo = 0xa0; /* overlong below U+0800 */
        } else if (c == 0xed) {
            hi = 0x9f; /* surrogates U+D800 .. U+DFFF */
        }
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) {
            lo = 0x90; /* overlong below U+10000 */
        } else if (c == 0xf4) {
            hi = 0x8f; /* above U+10FFFF */
        }
    } else {
        return 0; /* continuation byte, 0xc0, 0xc1, 0xf5 .. 0xff */
    }

    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }

    for (i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 0;
        }
    }

    return len;
}


int
gp_utf8_valid(const char *s, size_t n, size_t *chars)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t               i, len, count;

    count = 0;

    for (i = 0; i < n; i += len) {
        len = gp_utf8_seq(p + i, n - i);
        if (len == 0) {
            return 0;
        }
        count++;
    }

    if (chars != NULL) {
        *chars = count;
    }

    return 1;
}


int
gp_cst_parse(const char *s, size_t n, int sep, int64_t *t)
{
    char   buf[32];
    size_t i;

    /* to RFC 3339 and through its parser */

    if (s == NULL || n != (sep ? 19u : 14u)) {
        return -1;
    }

    if (!sep) {
        for (i = 0; i < 14; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return -1;
            }
        }

        snprintf(buf, sizeof(buf), "%.4s-%.2s-%.2sT%.2s:%.2s:%.2s+08:00", s,
                 s + 4, s + 6, s + 8, s + 10, s + 12);

    } else {
        if (s[10] != ' ' || memchr(s, '\0', n) != NULL) {
            return -1;
        }

        snprintf(buf, sizeof(buf), "%.10sT%.8s+08:00", s, s + 11);
    }

    return gp_time_parse_rfc3339(buf, strlen(buf), t);
}


int
gp_receipt_ref_parse(const char *uri, size_t n, const char *check, size_t clen,
                     char code[9], char number[11])
{
    size_t i;

    if (uri == NULL || check == NULL || n != 3 + 8 + 1 + 10
        || memcmp(uri, "/r/", 3) != 0 || uri[11] != '/' || clen != 6)
    {
        return -1;
    }

    for (i = 3; i < n; i++) {
        if (i != 11 && (uri[i] < '0' || uri[i] > '9')) {
            return -1;
        }
    }

    for (i = 0; i < 6; i++) {
        if (!((check[i] >= '0' && check[i] <= '9')
              || (check[i] >= 'a' && check[i] <= 'z')))
        {
            return -1;
        }
    }

    memcpy(code, uri + 3, 8);
    code[8] = '\0';
    memcpy(number, uri + 12, 10);
    number[10] = '\0';

    return 0;
}


int
gp_text_ok(const char *s, size_t n, size_t min, size_t max)
{
    size_t chars;

    return s != NULL && memchr(s, '\0', n) == NULL
           && gp_utf8_valid(s, n, &chars) && chars >= min && chars <= max;
}


int
gp_request_id_ok(const char *s, size_t n)
{
    size_t i;

    if (s == NULL || n < 1 || n > 64) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e) {
            return 0;
        }
    }

    return 1;
}


size_t
gp_json_escape(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char     c;
    size_t            i, o;

    o = 0;

    for (i = 0; i < n; i++) {
        c = (unsigned char) s[i];

        if (c >= 0x20 && c != '"' && c != '\\') {
            out[o++] = (char) c;
            continue;
        }

        out[o++] = '\\';

        switch (c) {
        case '"':
        case '\\':
            out[o++] = (char) c;
            break;
        case '\b':
            out[o++] = 'b';
            break;
        case '\f':
            out[o++] = 'f';
            break;
        case '\n':
            out[o++] = 'n';
            break;
        case '\r':
            out[o++] = 'r';
            break;
        case '\t':
            out[o++] = 't';
            break;
        default:
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0x0f];
        }
    }

    return o;
}


int
gp_text_has_controls(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *) s;
    size_t               i, len;
    uint32_t             c;

    for (i = 0; i < n; i += len) {
        len = gp_utf8_seq(p + i, n - i);
        if (len == 0) {
            return 1; /* not UTF-8: refused elsewhere, never clean */
        }

        switch (len) {
        case 1:
            c = p[i];
            break;
        case 2:
            c = ((uint32_t) (p[i] & 0x1f) << 6) | (p[i + 1] & 0x3f);
            break;
        case 3:
            c = ((uint32_t) (p[i] & 0x0f) << 12)
                | ((uint32_t) (p[i + 1] & 0x3f) << 6) | (p[i + 2] & 0x3f);
            break;
        default:
            c = 0x10000; /* astral planes hold no such character */
        }

        if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c == 0x61c
            || c == 0x200e || c == 0x200f || c == 0x2028 || c == 0x2029
            || (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069))
        {
            return 1;
        }
    }

    return 0;
}


/* byte offset of code point number k (0-based) of valid UTF-8 s */
static size_t
gp_utf8_offset(const char *s, size_t n, size_t k)
{
    size_t i = 0;

    while (k > 0 && i < n) {
        i += gp_utf8_seq((const unsigned char *) s + i, n - i);
        k--;
    }

    return i;
}


int
gp_mask_name(const char *s, size_t n, char *out, size_t outlen)
{
    size_t chars, first, len;

    if (s == NULL || out == NULL || outlen == 0 || !gp_utf8_valid(s, n, &chars))
    {
        return -1;
    }

    first = (chars > 0) ? gp_utf8_offset(s, n, 1) : 0;
    len = first + (chars > 0 ? chars - 1 : 0);

    if (len >= outlen) {
        out[0] = '\0';
        return -1;
    }

    memcpy(out, s, first);
    memset(out + first, '*', len - first);
    out[len] = '\0';

    return (int) len;
}


int
gp_mask_id(const char *s, size_t n, char *out, size_t outlen)
{
    size_t chars, head, tail, stars, len;

    if (s == NULL || out == NULL || outlen == 0 || !gp_utf8_valid(s, n, &chars))
    {
        return -1;
    }

    if (chars <= 8) {
        head = 0;
        tail = n;
        stars = chars;
    } else {
        head = gp_utf8_offset(s, n, 4);
        tail = gp_utf8_offset(s, n, chars - 4);
        stars = chars - 8;
    }

    len = head + stars + (n - tail);

    if (len >= outlen) {
        out[0] = '\0';
        return -1;
    }

    memcpy(out, s, head);
    memset(out + head, '*', stars);
    memcpy(out + head + stars, s + tail, n - tail);
    out[len] = '\0';

    return (int) len;
}


/* ---- Chinese identifiers ------------------------------------------------- */

/* YYYYMMDD of a birth date between 1900-01-01 and 2099-12-31 */
static int
gp_birth_date_valid(const char *s)
{
    unsigned y, m, d;

    if (gp_parse_fixed(s, 4, &y) != 0 || gp_parse_fixed(s + 4, 2, &m) != 0
        || gp_parse_fixed(s + 6, 2, &d) != 0)
    {
        return 0;
    }

    return y >= 1900 && y <= 2099 && m >= 1 && m <= 12 && d >= 1
           && d <= gp_days_in_month(y, m);
}


int
gp_resident_id_valid(const char *s, size_t n)
{
    static const unsigned char weights[17] = { 7, 9, 10, 5,  8, 4, 2, 1, 6,
                                               3, 7, 9,  10, 5, 8, 4, 2 };
    static const char          checks[] = "10X98765432";
    unsigned                   sum;
    size_t                     i;

    if (s == NULL || n != 18 || gp_count_digits(s, 17) != 17
        || !gp_birth_date_valid(s + 6))
    {
        return 0;
    }

    sum = 0;
    for (i = 0; i < 17; i++) {
        sum += weights[i] * (unsigned) (s[i] - '0');
    }

    return s[17] == checks[sum % 11];
}


int
gp_uscc_valid(const char *s, size_t n)
{
    static const char          charset[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    static const unsigned char weights[17] = { 1,  3,  9,  27, 19, 26,
                                               16, 17, 20, 29, 25, 13,
                                               8,  24, 10, 30, 28 };
    const char                *p;
    unsigned                   sum, v[18], check;
    size_t                     i;

    if (s == NULL || n != 18) {
        return 0;
    }

    for (i = 0; i < 18; i++) {
        p = (s[i] != '\0') ? strchr(charset, s[i]) : NULL;
        if (p == NULL) {
            return 0;
        }
        v[i] = (unsigned) (p - charset);
    }

    sum = 0;
    for (i = 0; i < 17; i++) {
        sum += weights[i] * v[i];
    }

    check = 31 - sum % 31;
    if (check == 31) {
        check = 0;
    }

    return v[17] == check;
}


/* ---- forms --------------------------------------------------------------- */

static int
gp_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }

    return -1;
}


/*
 * decodes s[0 .. n) once into dst ('+' is a space, %XX a byte), terminates it
 * and sets *dlen; 0, or -1 on a malformed escape or a NUL byte (raw or %00),
 * which no channel sends and which would cut C strings short further on
 */
static int
gp_form_decode(const char *s, size_t n, char *dst, size_t *dlen)
{
    size_t i, o;
    int    hi, lo;

    o = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '+') {
            dst[o++] = ' ';

        } else if (s[i] == '%') {
            if (n - i < 3) {
                return -1;
            }

            hi = gp_hex_digit((unsigned char) s[i + 1]);
            lo = gp_hex_digit((unsigned char) s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                return -1;
            }

            dst[o++] = (char) (hi << 4 | lo);
            i += 2;

        } else if (s[i] == '\0') {
            return -1;

        } else {
            dst[o++] = s[i];
        }
    }

    dst[o] = '\0';
    *dlen = o;

    return 0;
}


/*
 * decodes one "key=value" (or "key") segment into the pair kv, strings at *buf
 */
static int
gp_form_pair(const char *seg, size_t n, gp_kv_t *kv, char **buf)
{
    const char *eq;
    size_t      klen;

    eq = memchr(seg, '=', n);
    klen = (eq != NULL) ? (size_t) (eq - seg) : n;

    kv->key = *buf;
    if (gp_form_decode(seg, klen, kv->key, &kv->key_len) != 0) {
        return -1;
    }
    *buf += kv->key_len + 1;

    kv->value = *buf;
    if (eq == NULL) {
        kv->value[0] = '\0';
        kv->value_len = 0;
    } else if (gp_form_decode(eq + 1, n - klen - 1, kv->value, &kv->value_len)
               != 0) {
        return -1;
    }
    *buf += kv->value_len + 1;

    return 0;
}


/*
 * One allocation holds the pairs and, after them, every decoded string: a
 * decoded string is never longer than its source, so n + 2 bytes per pair
 * suffice.
 * gp_form_free() frees it through form->kv.
 */
int
gp_form_parse(const char *body, size_t n, gp_form_t *form)
{
    const char *seg, *end, *amp;
    size_t      npairs, i, size;
    char       *buf;
    gp_kv_t    *kv;

    form->kv = NULL;
    form->n = 0;

    if (body == NULL || n == 0) {
        return (body == NULL && n != 0) ? -1 : 0;
    }

    npairs = 1;
    for (i = 0; i < n; i++) {
        npairs += (body[i] == '&');
    }

    size = npairs * sizeof(gp_kv_t) + n + 2 * npairs;
    kv = malloc(size);
    if (kv == NULL) {
        return -1;
    }

    buf = (char *) (kv + npairs);
    end = body + n;
    i = 0;

    seg = body;

    for (;;) {
        amp = memchr(seg, '&', (size_t) (end - seg));
        if (amp == NULL) {
            amp = end;
        }

        /* empty segments ("a=1&&b=2", a trailing '&') carry nothing */
        if (amp != seg
            && gp_form_pair(seg, (size_t) (amp - seg), &kv[i++], &buf) != 0) {
            free(kv);
            return -1;
        }

        if (amp == end) {
            break;
        }

        seg = amp + 1;
    }

    form->kv = kv;
    form->n = i;

    return 0;
}


void
gp_form_free(gp_form_t *form)
{
    if (form == NULL) {
        return;
    }

    free(form->kv);
    form->kv = NULL;
    form->n = 0;
}


static int
gp_kv_key_is(const gp_kv_t *kv, const char *key, size_t len)
{
    return kv->key_len == len && memcmp(kv->key, key, len) == 0;
}


const gp_kv_t *
gp_form_get(const gp_form_t *form, const char *key)
{
    size_t i, len;

    if (form == NULL || key == NULL) {
        return NULL;
    }

    len = strlen(key);

    for (i = 0; i < form->n; i++) {
        if (gp_kv_key_is(&form->kv[i], key, len)) {
            return &form->kv[i];
        }
    }

    return NULL;
}


/*
 * bytewise by key; equal keys keep their order in the body (the pointers are in
 * order)
 */
static int
gp_kv_cmp(const void *a, const void *b)
{
    const gp_kv_t *x = *(const gp_kv_t *const *) a;
    const gp_kv_t *y = *(const gp_kv_t *const *) b;
    size_t         len;
    int            rc;

    len = x->key_len < y->key_len ? x->key_len : y->key_len;

    rc = memcmp(x->key, y->key, len);
    if (rc != 0) {
        return rc;
    }

    if (x->key_len != y->key_len) {
        return x->key_len < y->key_len ? -1 : 1;
    }

    return (x < y) ? -1 : (x > y);
}


static int
gp_form_skipped(const gp_kv_t *kv, const char *const *skip, int skip_empty)
{
    size_t i;

    if (skip_empty && kv->value_len == 0) {
        return 1;
    }

    for (i = 0; skip != NULL && skip[i] != NULL; i++) {
        if (gp_kv_key_is(kv, skip[i], strlen(skip[i]))) {
            return 1;
        }
    }

    return 0;
}


char *
gp_form_canonical(const gp_form_t *form, const char *const *skip,
                  int skip_empty, size_t *len)
{
    const gp_kv_t **sorted = NULL;
    size_t          i, m, size, o;
    char           *out = NULL;

    if (form == NULL || len == NULL) {
        return NULL;
    }

    sorted = malloc((form->n + 1) * sizeof(*sorted));
    if (sorted == NULL) {
        goto fail;
    }

    m = 0;
    size = 1;

    for (i = 0; i < form->n; i++) {
        if (!gp_form_skipped(&form->kv[i], skip, skip_empty)) {
            sorted[m++] = &form->kv[i];
            size += form->kv[i].key_len + form->kv[i].value_len + 2;
        }
    }

    qsort(sorted, m, sizeof(*sorted), gp_kv_cmp);

    out = malloc(size);
    if (out == NULL) {
        goto fail;
    }

    o = 0;

    for (i = 0; i < m; i++) {
        if (i > 0) {
            out[o++] = '&';
        }
        memcpy(out + o, sorted[i]->key, sorted[i]->key_len);
        o += sorted[i]->key_len;
        out[o++] = '=';
        memcpy(out + o, sorted[i]->value, sorted[i]->value_len);
        o += sorted[i]->value_len;
    }

    out[o] = '\0';
    *len = o;

    free(sorted);
    return out;

fail:
    free(sorted);
    free(out);
    return NULL;
}


static int
gp_url_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
           || c == '~';
}


char *
gp_url_encode(const char *s, size_t n, size_t *len)
{
    static const char hex[] = "0123456789ABCDEF";
    unsigned char     c;
    size_t            i, o;
    char             *out;

    if ((s == NULL && n != 0) || n > (SIZE_MAX - 1) / 3) {
        return NULL;
    }

    out = malloc(3 * n + 1);
    if (out == NULL) {
        return NULL;
    }

    o = 0;

    for (i = 0; i < n; i++) {
        c = (unsigned char) s[i];

        if (gp_url_unreserved(c)) {
            out[o++] = (char) c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0x0f];
        }
    }

    out[o] = '\0';
    if (len != NULL) {
        *len = o;
    }

    return out;
}
