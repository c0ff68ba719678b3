/*
 * test_common.c: unit tests of common/ (payment codes, crypto wrappers,
 * money, time, masking, ID checks, forms, the registry), as a TAP program.
 *
 * Every "ok N - ..." line is one assertion about one behaviour; the plan
 * "1..N" is printed at the end, so a crash shows up as a missing plan. The
 * exit status is non-zero when any test failed. Known-answer values come from
 * published test vectors (RFC 4231, RFC 4648, RFC 8998, GB/T 32905, GB 11643
 * and GB 32100 examples) or were computed by hand / by an independent Python
 * implementation, as noted beside each.
 *
 * Build (the top-level Makefile does this):
 *     gcc -Wall -Wextra -Werror -Icommon common/gp_*.c \
 *         common/tests/test_common.c -lcrypto -ljansson -lgcrypt
 */

#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "gp_authz.h"
#include "gp_code.h"
#include "gp_crypto.h"
#include "gp_ledger.h"
#include "gp_registry.h"
#include "gp_seal.h"
#include "gp_util.h"


/* ---- a minimal TAP harness ----------------------------------------------- */

typedef struct {
    int n;
    int failed;
} tap_t;

static tap_t tap;


#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
ok(int cond, const char *fmt, ...)
{
    va_list ap;

    tap.n++;
    if (!cond) {
        tap.failed++;
    }

    printf("%sok %d - ", cond ? "" : "not ", tap.n);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);

    return cond;
}


static void
diag(const char *what, const char *got)
{
    printf("#   %s: \"%s\"\n", what, got);
}


static int
is_str(const char *got, const char *want, const char *name)
{
    int rc;

    rc = ok(got != NULL && strcmp(got, want) == 0, "%s", name);
    if (!rc) {
        diag("got", got ? got : "(null)");
        diag("expected", want);
    }

    return rc;
}


/* deterministic pseudo-random numbers for the tests (xorshift64*) */
static uint64_t
rnd(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;

    return x * 0x2545F4914F6CDD1DULL;
}


static void
hex_of(const unsigned char *in, size_t n, char *out)
{
    gp_hex(in, n, out);
}


/* ---- gp_crypto ----------------------------------------------------------- */

static void
test_digests(void)
{
    unsigned char d[32];
    char          hex[65];

    /* FIPS 180-2 example */
    ok(gp_digest(GP_MD_SHA256, "abc", 3, d) == 0, "sha256 of \"abc\" succeeds");
    hex_of(d, 32, hex);
    is_str(hex,
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "sha256 of \"abc\" matches FIPS 180-2");

    ok(gp_digest(GP_MD_SHA256, NULL, 0, d) == 0,
       "sha256 of empty input succeeds");
    hex_of(d, 32, hex);
    is_str(hex,
           "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
           "sha256 of empty input is the known value");

    /* GB/T 32905-2016 example 1 */
    ok(gp_digest(GP_MD_SM3, "abc", 3, d) == 0, "sm3 of \"abc\" succeeds");
    hex_of(d, 32, hex);
    is_str(hex,
           "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",
           "sm3 of \"abc\" matches GB/T 32905");

    ok(gp_digest((gp_md_t) 7, "abc", 3, d) == -1,
       "digest with an unknown algorithm fails");
}


static void
test_hmac(void)
{
    unsigned char key[20], mac[32];
    char          hex[65];

    /* RFC 4231 test case 1 */
    memset(key, 0x0b, sizeof(key));
    ok(gp_hmac(GP_MD_SHA256, key, 20, "Hi There", 8, mac) == 0,
       "hmac-sha256 succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
           "hmac-sha256 matches RFC 4231 test case 1");

    /* RFC 4231 test case 2 */
    ok(gp_hmac(GP_MD_SHA256, "Jefe", 4, "what do ya want for nothing?", 28, mac)
           == 0,
       "hmac-sha256 with a short key succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
           "hmac-sha256 matches RFC 4231 test case 2");

    /*
     * independent HMAC construction over Python's hashlib SM3 (ipad/opad by
     * hand)
     */
    ok(gp_hmac(GP_MD_SM3, "Jefe", 4, "what do ya want for nothing?", 28, mac)
           == 0,
       "hmac-sm3 succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882",
           "hmac-sm3 matches an independent HMAC construction");

    /*
     * empty key and message: the key must not be taken as "reuse the previous
     * key"
     */
    ok(gp_hmac(GP_MD_SHA256, NULL, 0, NULL, 0, mac) == 0,
       "hmac-sha256 with empty key works");
    hex_of(mac, 32, hex);
    is_str(hex,
           "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
           "hmac-sha256 with empty key and message is the known value");

    ok(gp_hmac(GP_MD_SM3, "", 0, "", 0, mac) == 0,
       "hmac-sm3 with empty key works");
    hex_of(mac, 32, hex);
    is_str(hex,
           "0d23f72ba15e9c189a879aefc70996b06091de6e64d31b7a84004356dd915261",
           "hmac-sm3 with empty key and message is the known value");

    ok(gp_hmac((gp_md_t) 9, "k", 1, "m", 1, mac) == -1,
       "hmac with an unknown digest fails");
}


/* prepared keys (gp_hmac_key_new) give what the one-shot form gives */
static void
test_hmac_keyed(void)
{
    unsigned char  key[131], mac[32], one[32];
    char           hex[65];
    gp_hmac_key_t *k, *sm3;
    gp_part_t      parts[3];
    /* RFC 4231 test case 1, with the key prepared once */
    memset(key, 0x0b, 20);
    k = gp_hmac_key_new(GP_MD_SHA256, key, 20);
    ok(k != NULL, "a hmac-sha256 key is prepared");
    ok(gp_hmac_keyed(k, "Hi There", 8, mac) == 0, "keyed hmac-sha256 succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
           "keyed hmac-sha256 matches RFC 4231 test case 1");
    memcpy(one, mac, 32);
    ok(gp_hmac_keyed(k, "Hi There", 8, mac) == 0 && memcmp(one, mac, 32) == 0,
       "a prepared key gives the same answer when used again");
    gp_hmac_key_free(k);

    /* RFC 4231 test case 6: a key longer than the block is hashed first */
    memset(key, 0xaa, 131);
    k = gp_hmac_key_new(GP_MD_SHA256, key, 131);
    ok(k != NULL
           && gp_hmac_keyed(
                  k, "Test Using Larger Than Block-Size Key - Hash Key First",
                  54, mac)
                  == 0,
       "keyed hmac-sha256 with a 131-byte key succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
           "keyed hmac-sha256 matches RFC 4231 test case 6");
    ok(gp_hmac(GP_MD_SHA256, key, 131,
               "Test Using Larger Than Block-Size Key - Hash Key First", 54,
               one)
               == 0
           && memcmp(one, mac, 32) == 0,
       "one-shot hmac-sha256 with a 131-byte key matches RFC 4231 case 6");
    gp_hmac_key_free(k);

    /* a message in parts is the message joined */
    k = gp_hmac_key_new(GP_MD_SHA256, "Jefe", 4);
    parts[0].p = "what do ya";
    parts[0].n = 10;
    parts[1].p = NULL;
    parts[1].n = 0;
    parts[2].p = " want for nothing?";
    parts[2].n = 18;
    ok(k != NULL && gp_hmac_keyed_parts(k, parts, 3, mac) == 0,
       "keyed hmac-sha256 of a message in parts succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
           "keyed hmac-sha256 of parts matches RFC 4231 test case 2");

    parts[1].p = NULL;
    parts[1].n = 3;
    ok(gp_hmac_keyed_parts(k, parts, 3, mac) == -1,
       "a part without bytes but with a length is refused");
    ok(gp_hmac_keyed(NULL, "m", 1, mac) == -1,
       "keyed hmac without a key fails");
    gp_hmac_key_free(k);

    /* SM3 */
    sm3 = gp_hmac_key_new(GP_MD_SM3, "Jefe", 4);
    ok(sm3 != NULL
           && gp_hmac_keyed(sm3, "what do ya want for nothing?", 28, mac) == 0,
       "keyed hmac-sm3 succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "2e87f1d16862e6d964b50a5200bf2b10b764faa9680a296a2405f24bec39f882",
           "keyed hmac-sm3 matches the independent HMAC construction");
    gp_hmac_key_free(sm3);

    k = gp_hmac_key_new(GP_MD_SHA256, NULL, 0);
    ok(k != NULL && gp_hmac_keyed(k, NULL, 0, mac) == 0,
       "keyed hmac-sha256 with empty key and message works");
    hex_of(mac, 32, hex);
    is_str(hex,
           "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
           "keyed hmac-sha256 with empty key and message is the known value");
    gp_hmac_key_free(k);

    ok(gp_hmac_key_new((gp_md_t) 9, "k", 1) == NULL,
       "a key of an unknown digest is not prepared");
    gp_hmac_key_free(NULL);

    /* digests in parts */
    parts[0].p = "a";
    parts[0].n = 1;
    parts[1].p = "";
    parts[1].n = 0;
    parts[2].p = "bc";
    parts[2].n = 2;
    ok(gp_digest_parts(GP_MD_SHA256, parts, 3, mac) == 0,
       "sha256 of parts succeeds");
    hex_of(mac, 32, hex);
    is_str(hex,
           "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
           "sha256 of \"a\" \"\" \"bc\" is sha256 of \"abc\"");
}


/* one prepared HMAC key and one code key, used by several threads at once */

typedef struct {
    const gp_hmac_key_t *hmac;
    const gp_code_key_t *code;
    uint64_t             sum;
    int                  bad;
} test_thread_t;


static void *
test_thread_run(void *arg)
{
    test_thread_t *t = arg;
    unsigned char  mac[32], want[32];
    char           code[GP_CODE_LEN + 1], division[7];
    unsigned       yy;
    uint32_t       shard;
    uint64_t       seq, i;

    for (i = 1; i <= 300; i++) {
        if (gp_hmac_keyed(t->hmac, &i, sizeof(i), mac) != 0
            || gp_hmac(GP_MD_SHA256, "thread-key", 10, &i, sizeof(i), want) != 0
            || memcmp(mac, want, 32) != 0)
        {
            t->bad++;
        }

        if (gp_code_make(t->code, "330100", 26, 16, (uint32_t) (i % 16), i,
                         code)
                != 0
            || gp_code_parse(t->code, code, GP_CODE_LEN, 16, division, &yy,
                             &shard, &seq)
                   != 0
            || shard != i % 16 || seq != i)
        {
            t->bad++;
        }

        t->sum += gp_code_permute(t->code, i);
    }

    return NULL;
}


static void
test_threads(void)
{
    gp_hmac_key_t *hmac;
    gp_code_key_t  code;
    test_thread_t  t[4];
    pthread_t      th[4];
    unsigned char  key[GP_CODE_KEY_LEN];
    uint64_t       sum;
    size_t         i;
    int            bad, started;

    for (i = 0; i < GP_CODE_KEY_LEN; i++) {
        key[i] = (unsigned char) i;
    }

    hmac = gp_hmac_key_new(GP_MD_SHA256, "thread-key", 10);
    if (hmac == NULL || gp_code_key_init(&code, key) != 0) {
        ok(0, "keys for the thread test are prepared");
        gp_hmac_key_free(hmac);
        return;
    }

    sum = 0;
    for (i = 1; i <= 300; i++) {
        sum += gp_code_permute(&code, i);
    }

    bad = 0;
    started = 0;

    for (i = 0; i < 4; i++) {
        t[i].hmac = hmac;
        t[i].code = &code;
        t[i].sum = 0;
        t[i].bad = 0;

        if (pthread_create(&th[i], NULL, test_thread_run, &t[i]) != 0) {
            bad++;
            break;
        }

        started++;
    }

    for (i = 0; i < (size_t) started; i++) {
        pthread_join(th[i], NULL);
        bad += t[i].bad;
        bad += t[i].sum != sum;
    }

    ok(started == 4 && bad == 0,
       "4 threads sharing one prepared hmac key and one code key get the "
       "answers of one thread (%d wrong)",
       bad);

    gp_code_key_free(&code);
    gp_hmac_key_free(hmac);
}


static void
test_base64(void)
{
    static const char *plain[] = { "",     "f",     "fo",    "foo",
                                   "foob", "fooba", "foobar" };
    static const char *coded[] = { "",         "Zg==",     "Zm8=",    "Zm9v",
                                   "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
    static const char *bad[] = {
        "Zg=",  "Zg",   "Zg==\n", " Zg==",    "Zm9v\r\n", "Zm 9v",
        "Z===", "====", "=Zg=",   "Zg=a",     "Zm9v=Zg=", "Zg==Zm9v",
        "Zh==", "Zm9=", "Zm!v",   "Zm9v-_==", "Zm9\0"
    };
    unsigned char buf[256], back[256];
    char          enc[400];
    uint64_t      st = 42;
    size_t        i, n, len, outlen;
    int           good;

    good = 1;
    for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        len = gp_base64_encode((const unsigned char *) plain[i],
                               strlen(plain[i]), enc);
        good &= len == strlen(coded[i]) && strcmp(enc, coded[i]) == 0;
    }
    ok(good, "base64 encoding matches the RFC 4648 test vectors");

    good = 1;
    for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        good &= gp_base64_decode(coded[i], strlen(coded[i]), buf, &outlen) == 0
                && outlen == strlen(plain[i])
                && memcmp(buf, plain[i], outlen) == 0;
    }
    ok(good, "base64 decoding matches the RFC 4648 test vectors");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = (i == sizeof(bad) / sizeof(bad[0]) - 1) ? 4 : strlen(bad[i]);
        ok(gp_base64_decode(bad[i], n, buf, &outlen) == -1,
           "strict base64 decoding refuses \"%s\"", bad[i]);
    }

    good = 1;
    for (n = 0; n < 200; n++) {
        for (i = 0; i < n; i++) {
            buf[i] = (unsigned char) rnd(&st);
        }
        len = gp_base64_encode(buf, n, enc);
        good &= len == 4 * ((n + 2) / 3) && enc[len] == '\0'
                && gp_base64_decode(enc, len, back, &outlen) == 0 && outlen == n
                && memcmp(buf, back, n) == 0;
    }
    ok(good, "base64 round-trips random data of every length 0-199");
}


static void
test_hex_ct_random(void)
{
    unsigned char a[32], b[32];
    char          hex[8];

    gp_hex((const unsigned char *) "\x00\xab\xff", 3, hex);
    is_str(hex, "00abff", "hex is lowercase and zero padded");

    gp_hex((const unsigned char *) "", 0, hex);
    is_str(hex, "", "hex of nothing is the empty string");

    ok(gp_ct_equal("secret", "secret", 6) == 1, "constant-time compare: equal");
    ok(gp_ct_equal("secret", "secreT", 6) == 0,
       "constant-time compare: last byte differs");
    ok(gp_ct_equal("x", "y", 0) == 1,
       "constant-time compare: empty ranges are equal");

    ok(gp_random_bytes(a, sizeof(a)) == 0 && gp_random_bytes(b, sizeof(b)) == 0,
       "random bytes are produced");
    ok(memcmp(a, b, sizeof(a)) != 0, "two random draws differ");
    ok(gp_random_bytes(a, 0) == 0, "zero random bytes is fine");

    /* drawn from a pool: many small draws, one large, never a repeat */
    {
        unsigned char seen[200][16], big[600];
        size_t        i, j, dup = 0;
        int           fd[2], status;
        pid_t         pid;
        ssize_t       got;

        for (i = 0; i < 200; i++) {
            if (gp_random_bytes(seen[i], 16) != 0) {
                dup++;
            }
        }
        for (i = 0; i < 200; i++) {
            for (j = i + 1; j < 200; j++) {
                dup += memcmp(seen[i], seen[j], 16) == 0;
            }
        }
        ok(dup == 0 && gp_random_bytes(big, sizeof(big)) == 0,
           "200 draws of 16 bytes (more than a pool) are all different");

        /* a child draws after a fork: never what the parent draws next */
        if (pipe(fd) == 0 && (pid = fork()) >= 0) {
            if (pid == 0) {
                close(fd[0]);
                if (gp_random_bytes(a, sizeof(a)) == 0
                    && write(fd[1], a, sizeof(a)) == (ssize_t) sizeof(a))
                {
                    _exit(0);
                }
                _exit(1);
            }
            close(fd[1]);
            got = read(fd[0], b, sizeof(b));
            close(fd[0]);
            waitpid(pid, &status, 0);
            ok(got == (ssize_t) sizeof(b) && gp_random_bytes(a, sizeof(a)) == 0
                   && memcmp(a, b, sizeof(a)) != 0,
               "after a fork, child and parent draw different bytes");
        } else {
            ok(0, "pipe() and fork() for the random test");
        }
    }
}


static void
test_aes_gcm(void)
{
    unsigned char key[32], iv[12], pt[16], ct[64], back[64];
    char          hex[129];
    size_t        n;

    /* the GCM specification's test case 14: zero key, IV and block */
    memset(key, 0, sizeof(key));
    memset(iv, 0, sizeof(iv));
    memset(pt, 0, sizeof(pt));

    ok(gp_aes256gcm_encrypt(key, iv, 12, NULL, 0, pt, 16, ct) == 0,
       "aes-256-gcm encrypts");
    gp_hex(ct, 32, hex);
    is_str(hex,
           "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919",
           "aes-256-gcm: ciphertext and tag of the published vector");

    ok(gp_aes256gcm_decrypt(key, iv, 12, NULL, 0, ct, 32, back, &n) == 0
           && n == 16 && memcmp(back, pt, 16) == 0,
       "aes-256-gcm decrypts its own output");

    /* as WeChat Pay: an ASCII nonce and associated data */
    memcpy(key, "0123456789abcdef0123456789ABCDEF", 32);
    ok(gp_aes256gcm_encrypt(key, "abcdefghijkl", 12, "transaction", 11,
                            "{\"a\":1}", 7, ct)
               == 0
           && gp_aes256gcm_decrypt(key, "abcdefghijkl", 12, "transaction", 11,
                                   ct, 23, back, &n)
                  == 0
           && n == 7 && memcmp(back, "{\"a\":1}", 7) == 0,
       "aes-256-gcm round trip with associated data");
    ok(gp_aes256gcm_decrypt(key, "abcdefghijkl", 12, "transactioN", 11, ct, 23,
                            back, &n)
           == -1,
       "aes-256-gcm: other associated data fails");
    ct[0] ^= 1;
    ok(gp_aes256gcm_decrypt(key, "abcdefghijkl", 12, "transaction", 11, ct, 23,
                            back, &n)
           == -1,
       "aes-256-gcm: a changed ciphertext fails");
    ok(gp_aes256gcm_decrypt(key, "abcdefghijkl", 12, NULL, 0, ct, 15, back, &n)
           == -1,
       "aes-256-gcm: shorter than a tag fails");
}


/* ---- gp_seal: SM4-GCM and sealed records --------------------------------- */

static int  write_file(const char *dir, const char *name, const char *content);
static void reg_path(const char *dir, const char *name, char *out, size_t n);


/* hex to bytes for the vectors; the count of bytes */
static size_t
unhex(const char *hex, unsigned char *out)
{
    size_t       n;
    unsigned int b;

    for (n = 0; hex[2 * n] != '\0' && hex[2 * n + 1] != '\0'; n++) {
        if (sscanf(hex + 2 * n, "%2x", &b) != 1) {
            break;
        }
        out[n] = (unsigned char) b;
    }

    return n;
}


static void
test_sm4gcm(void)
{
    unsigned char key[16], iv[12], aad[20], pt[64], ct[64], tag[16], want[64],
        wtag[16], back[64];
    char hex[129];

    /*
     * RFC 8998, Appendix A.1 (the SM4-GCM vector of the TLS 1.3 SM suites),
     * copied from the RFC; the same bytes are in nettle's and GmSSL's tests
     */
    unhex("0123456789ABCDEFFEDCBA9876543210", key);
    unhex("00001234567800000000ABCD", iv);
    unhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2", aad);
    unhex("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
          "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
          pt);
    unhex("17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
          "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D",
          want);
    unhex("83DE3541E4C2B58177E065A9BF7B62EC", wtag);

    ok(gp_sm4gcm_encrypt(key, iv, 12, aad, 20, pt, 64, ct, tag) == 0,
       "sm4-gcm encrypts the RFC 8998 vector");
    gp_hex(ct, 64, hex);
    is_str(hex,
           "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735"
           "d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d",
           "sm4-gcm: the ciphertext of RFC 8998, Appendix A.1");
    gp_hex(tag, 16, hex);
    is_str(hex, "83de3541e4c2b58177e065a9bf7b62ec",
           "sm4-gcm: the tag of RFC 8998, Appendix A.1");

    ok(gp_sm4gcm_decrypt(key, iv, 12, aad, 20, want, 64, back, wtag) == 0
           && memcmp(back, pt, 64) == 0,
       "sm4-gcm decrypts the RFC 8998 ciphertext to its plaintext");

    wtag[15] ^= 0x80;
    ok(gp_sm4gcm_decrypt(key, iv, 12, aad, 20, want, 64, back, wtag) == -1,
       "sm4-gcm: a changed tag is refused");
    wtag[15] ^= 0x80;

    want[63] ^= 1;
    ok(gp_sm4gcm_decrypt(key, iv, 12, aad, 20, want, 64, back, wtag) == -1,
       "sm4-gcm: a changed ciphertext is refused");
    want[63] ^= 1;

    aad[19] ^= 1;
    ok(gp_sm4gcm_decrypt(key, iv, 12, aad, 20, want, 64, back, wtag) == -1,
       "sm4-gcm: changed associated data is refused");
    aad[19] ^= 1;

    iv[0] ^= 1;
    ok(gp_sm4gcm_decrypt(key, iv, 12, aad, 20, want, 64, back, wtag) == -1,
       "sm4-gcm: another nonce is refused");
}


#define SEAL_KEY_A "000102030405060708090a0b0c0d0e0f"
#define SEAL_KEY_B "F0E1D2C3B4A5968778695A4B3C2D1E0F"


static gp_seal_keys_t *
seal_keys(const char *text)
{
    gp_seal_keys_t *keys;
    char            err[512];

    if (gp_seal_keys_parse("test.keys", text, strlen(text), &keys, err,
                           sizeof(err))
        != 0)
    {
        diag("keys", err);
        return NULL;
    }

    return keys;
}


/* parse text and expect an error mentioning want (and never a key) */
static void
seal_keys_bad(const char *text, const char *want, const char *name)
{
    gp_seal_keys_t *keys;
    char            err[512];
    int             rc;

    err[0] = '\0';
    keys = NULL;
    rc = gp_seal_keys_parse("test.keys", text, strlen(text), &keys, err,
                            sizeof(err));

    if (!ok(rc == -1 && keys == NULL && strstr(err, want) != NULL
                && strstr(err, "test.keys") != NULL
                && strstr(err, "0102030405") == NULL
                && strstr(err, "D2C3B4A5") == NULL,
            "%s", name))
    {
        diag("error", err);
        diag("expected in it", want);
    }

    gp_seal_keys_free(keys);
}


static void
test_seal_keys(const char *dir)
{
    gp_seal_keys_t *keys;
    char            err[512], path[4096];

    keys = seal_keys("# rotated 2026-02\n"
                     "\n"
                     "k2 " SEAL_KEY_B "\r\n"
                     "  k-1.old_x\t" SEAL_KEY_A "  \n");
    ok(keys != NULL && gp_seal_keys_count(keys) == 2,
       "a key file with a comment, a blank line, CRLF and tabs has two keys");
    is_str(keys ? gp_seal_keys_kid(keys, 0) : NULL, "k2",
           "the first line's key is the one that seals");
    is_str(keys ? gp_seal_keys_kid(keys, 1) : NULL, "k-1.old_x",
           "the second line's key id is kept as written");
    ok(keys != NULL && gp_seal_keys_kid(keys, 2) == NULL,
       "there is no third key");
    gp_seal_keys_free(keys);

    keys = seal_keys("k1 " SEAL_KEY_A);
    ok(keys != NULL && gp_seal_keys_count(keys) == 1,
       "a key file without a final newline is read");
    gp_seal_keys_free(keys);

    seal_keys_bad("", "no key", "an empty key file is refused");
    seal_keys_bad("# only a comment\n\n", "no key",
                  "a key file of comments only is refused");
    seal_keys_bad("k1 " SEAL_KEY_A "\n\nk2\n", "line 3",
                  "a key id without a key names its line");
    seal_keys_bad("k1 " SEAL_KEY_A "\nk2 " SEAL_KEY_B "0\n", "line 2",
                  "a key of 33 hex digits names its line");
    seal_keys_bad("k1 0102030405060708090a0b0c0d0e0f1\n", "32 hex digits",
                  "a key of 31 hex digits is refused");
    seal_keys_bad("k1 0102030405060708090a0b0c0d0e0fzz\n", "line 1",
                  "a key with a non-hex digit is refused");
    seal_keys_bad(SEAL_KEY_A "\n", "looks like a key",
                  "a key without a key id is refused, without quoting it");
    seal_keys_bad(SEAL_KEY_A " " SEAL_KEY_B "\n", "looks like a key",
                  "two keys on a line are refused: a key is never a key id");
    seal_keys_bad("k/1 " SEAL_KEY_A "\n", "key id",
                  "a key id with a slash is refused");
    seal_keys_bad("k:1 " SEAL_KEY_A "\n", "key id",
                  "a key id with a colon (the record separator) is refused");
    seal_keys_bad("abcdefghijabcdefghijabcdefghijabc " SEAL_KEY_A "\n",
                  "line 1", "a key id of 33 characters is refused");
    seal_keys_bad("k1 " SEAL_KEY_A "\nk1 " SEAL_KEY_B "\n",
                  "\"k1\" is listed twice", "a key id listed twice is refused");

    reg_path(dir, "pii.keys", path, sizeof(path));
    ok(write_file(dir, "pii.keys", "k9 " SEAL_KEY_B "\n") == 0
           && gp_seal_keys_load(path, &keys, err, sizeof(err)) == 0,
       "a key file is loaded from disk");
    is_str(gp_seal_keys_kid(keys, 0), "k9", "with the key id it lists");
    gp_seal_keys_free(keys);

    reg_path(dir, "no-such.keys", path, sizeof(path));
    ok(gp_seal_keys_load(path, &keys, err, sizeof(err)) == -1
           && strstr(err, "no-such.keys") != NULL
           && strstr(err, "cannot open") != NULL,
       "a missing key file is an error naming the file");

    reg_path(dir, "pii.keys", path, sizeof(path));
    ok(write_file(dir, "pii.keys", "k1 " SEAL_KEY_A "\nk2 " SEAL_KEY_B "x\n")
               == 0
           && gp_seal_keys_load(path, &keys, err, sizeof(err)) == -1
           && strstr(err, path) != NULL && strstr(err, "line 2") != NULL,
       "a malformed key file on disk is an error naming file and line");
}


static void
test_seal_records(void)
{
    gp_seal_keys_t *ab, *a, *b;
    gp_seal_ctx_t   ctx, other;
    char rec[GP_SEAL_RECORD_MAX(64)], rec2[GP_SEAL_RECORD_MAX(64)], back[256],
        kid[GP_SEAL_KID_MAX + 1], *big, *bigrec, *bigback;
    unsigned char key[16], blob[128], aad[256], pt[64];
    size_t        n, n2, m, blen, alen;
    const char   *name = "\xe6\xac\xa7\xe9\x98\xb3\xe5\xa8\x9c\xe5\xa8\x9c";

    ab = seal_keys("kb " SEAL_KEY_B "\nka " SEAL_KEY_A "\n");
    a = seal_keys("ka " SEAL_KEY_A "\n");
    b = seal_keys("kb " SEAL_KEY_B "\n");

    if (ab == NULL || a == NULL || b == NULL) {
        ok(0, "test keys parse");
        return;
    }

    ctx.field = "payer_name";
    ctx.unit = "330100-EDU-001";
    ctx.request_id = "REQ-1";
    ctx.created_at = 1780000000;

    ok(gp_seal(ab, &ctx, name, strlen(name), rec, sizeof(rec), &n)
           == GP_SEAL_OK,
       "a name is sealed");
    ok(n == strlen(rec) && strncmp(rec, "kb:", 3) == 0,
       "the record starts with the sealing key's id and a colon");
    ok(strstr(rec, name) == NULL, "the record does not hold the name");
    ok(n == 3 + 4 * ((12 + strlen(name) + 16 + 2) / 3),
       "the record is base64 of nonce, ciphertext and tag");

    ok(gp_seal_open(ab, &ctx, rec, n, back, sizeof(back), &m) == GP_SEAL_OK
           && m == strlen(name) && strcmp(back, name) == 0,
       "the record opens to the name");

    /* an independent reading of the documented format */
    m = 0;
    ok(gp_base64_decode(rec + 3, n - 3, blob, &blen) == 0
           && blen == 12 + strlen(name) + 16,
       "the record's base64 is nonce (12) + ciphertext + tag (16)");
    alen = 0;
    memcpy(aad + alen, "gov-pay-pii/1\0kb\0payer_name\0", 28);
    alen += 28;
    memcpy(aad + alen,
           "330100-EDU-001\0REQ-1\0"
           "1780000000",
           31);
    alen += 31;
    unhex(SEAL_KEY_B, key);
    ok(gp_sm4gcm_decrypt(key, blob, 12, aad, alen, blob + 12, blen - 28, pt,
                         blob + blen - 16)
               == 0
           && memcmp(pt, name, strlen(name)) == 0,
       "the record is SM4-GCM under the key with the documented associated "
       "data");

    ok(gp_seal(ab, &ctx, name, strlen(name), rec2, sizeof(rec2), &n2)
               == GP_SEAL_OK
           && n2 == n && strcmp(rec, rec2) != 0
           && memcmp(rec + 3, rec2 + 3, 16) != 0,
       "sealing the same name again uses a fresh nonce");

    other = ctx;
    other.field = "payer_id";
    ok(gp_seal_open(ab, &other, rec, n, back, sizeof(back), &m)
           == GP_SEAL_FORGED,
       "a record moved to another field does not open");
    ok(back[0] == '\0', "and nothing of the plaintext is left in the output");

    other = ctx;
    other.unit = "330100-EDU-002";
    ok(gp_seal_open(ab, &other, rec, n, back, sizeof(back), &m)
           == GP_SEAL_FORGED,
       "a record moved to another unit's notice does not open");

    other = ctx;
    other.request_id = "REQ-2";
    ok(gp_seal_open(ab, &other, rec, n, back, sizeof(back), &m)
           == GP_SEAL_FORGED,
       "a record moved to another notice of the unit does not open");

    other = ctx;
    other.created_at = ctx.created_at + 1;
    ok(gp_seal_open(ab, &other, rec, n, back, sizeof(back), &m)
           == GP_SEAL_FORGED,
       "a record moved to a later notice of the same request_id does not "
       "open");

    memcpy(rec2, rec, n + 1);
    rec2[10] = rec2[10] == 'A' ? 'B' : 'A';
    ok(gp_seal_open(ab, &ctx, rec2, n, back, sizeof(back), &m)
           == GP_SEAL_FORGED,
       "a record with one character changed does not open");

    memcpy(rec2, rec, n + 1);
    rec2[1] = 'a';
    ok(gp_seal_open(ab, &ctx, rec2, n, back, sizeof(back), &m)
           == GP_SEAL_FORGED,
       "a record relabelled with another listed key id does not open");

    ok(gp_seal_open(ab, &ctx, rec, n - 4, back, sizeof(back), &m)
           == GP_SEAL_FORGED,
       "a record cut by one base64 group does not open");
    ok(gp_seal_open(ab, &ctx, rec, n - 1, back, sizeof(back), &m)
           == GP_SEAL_MALFORMED,
       "a record cut inside a base64 group is malformed");
    ok(gp_seal_open(ab, &ctx, rec, 3, back, sizeof(back), &m)
           == GP_SEAL_MALFORMED,
       "a key id and a colon alone are malformed");
    ok(gp_seal_open(ab, &ctx, "kb:AAAA", 7, back, sizeof(back), &m)
           == GP_SEAL_MALFORMED,
       "a record shorter than nonce and tag is malformed");
    ok(gp_seal_open(ab, &ctx, name, strlen(name), back, sizeof(back), &m)
           == GP_SEAL_MALFORMED,
       "a name in clear is not a record");
    ok(gp_seal_open(ab, &ctx, "", 0, back, sizeof(back), &m)
           == GP_SEAL_MALFORMED,
       "an empty value is not a record");
    memcpy(rec2, rec, n + 1);
    rec2[n - 5] = '!';
    ok(gp_seal_open(ab, &ctx, rec2, n, back, sizeof(back), &m)
           == GP_SEAL_MALFORMED,
       "a record with a character outside base64 is malformed");
    ok(gp_seal_open(ab, &ctx, rec, n, back, 4, &m) == GP_SEAL_ERROR,
       "opening into too small a buffer is an error, not a cut name");

    ok(gp_seal_record_kid(rec, n, kid) == 0 && strcmp(kid, "kb") == 0,
       "the key id of a record is read without opening it");
    ok(gp_seal_record_kid("no colon", 8, kid) == -1,
       "a value without a key id is not a record");

    /* rotation: kb seals, ka still opens */
    ok(gp_seal(a, &ctx, name, strlen(name), rec2, sizeof(rec2), &n2)
           == GP_SEAL_OK,
       "a record sealed under the old key ka");
    ok(gp_seal_open(ab, &ctx, rec2, n2, back, sizeof(back), &m) == GP_SEAL_OK
           && strcmp(back, name) == 0,
       "opens with a key file that lists the new key first and ka second");
    ok(gp_seal_open(b, &ctx, rec2, n2, back, sizeof(back), &m)
           == GP_SEAL_UNKNOWN_KEY,
       "does not open once ka is no longer listed");
    ok(gp_seal_open(a, &ctx, rec, n, back, sizeof(back), &m)
           == GP_SEAL_UNKNOWN_KEY,
       "a record of the new key does not open with the old key file");

    ok(gp_seal(ab, &ctx, name, strlen(name), rec2, GP_SEAL_RECORD_MAX(12) - 1,
               &n2)
           == GP_SEAL_ERROR,
       "sealing into too small a buffer is an error");

    big = malloc(GP_SEAL_PLAIN_MAX + 1);
    bigrec = malloc(GP_SEAL_RECORD_MAX(GP_SEAL_PLAIN_MAX + 1));
    bigback = malloc(GP_SEAL_RECORD_MAX(GP_SEAL_PLAIN_MAX + 1));
    if (big == NULL || bigrec == NULL || bigback == NULL) {
        ok(0, "memory for the big records");
        return;
    }

    memset(big, 'x', GP_SEAL_PLAIN_MAX + 1);
    ok(gp_seal(ab, &ctx, big, GP_SEAL_PLAIN_MAX + 1, bigrec,
               GP_SEAL_RECORD_MAX(GP_SEAL_PLAIN_MAX + 1), &n2)
           == GP_SEAL_ERROR,
       "more than GP_SEAL_PLAIN_MAX bytes are not sealed");

    /* a receipt's PDF: longer than the stack buffer, sealed and opened */
    big[100000] = 'y';
    ok(gp_seal(ab, &ctx, big, 200000, bigrec, GP_SEAL_RECORD_MAX(200000), &n2)
               == GP_SEAL_OK
           && gp_seal_open(ab, &ctx, bigrec, n2, bigback, n2, &m) == GP_SEAL_OK
           && m == 200000 && memcmp(bigback, big, m) == 0,
       "200 000 bytes seal and open back to the same bytes");
    bigrec[n2 / 2] = bigrec[n2 / 2] == 'A' ? 'B' : 'A';
    ok(gp_seal_open(ab, &ctx, bigrec, n2, bigback, n2, &m) == GP_SEAL_FORGED,
       "a long record with one character changed does not open");

    free(big);
    free(bigrec);
    free(bigback);

    other = ctx;
    other.unit = NULL;
    ok(gp_seal(ab, &other, name, strlen(name), rec2, sizeof(rec2), &n2)
           == GP_SEAL_ERROR,
       "a record is not sealed without its notice's unit");

    ok(strstr(gp_seal_strerror(GP_SEAL_FORGED), "another notice") != NULL,
       "the reason of a record that does not authenticate reads as such");

    gp_seal_keys_free(ab);
    gp_seal_keys_free(a);
    gp_seal_keys_free(b);
}


/* ---- gp_code ------------------------------------------------------------- */

static void
test_mod11_10(void)
{
    /*
     * "0794" by hand: p=10;
     *   0: s=(10+0) mod 10=0 -> 10, p=20 mod 11=9;
     *   7: s=(9+7) mod 10=6, p=12 mod 11=1;
     *   9: s=(1+9) mod 10=0 -> 10, p=20 mod 11=9;
     *   4: s=(9+4) mod 10=3, p=6;
     * check = (11-6) mod 10 = 5.
     */
    ok(gp_mod11_10("0794", 4) == '5',
       "MOD 11-10 of 0794 is 5 (hand computation)");

    /*
     * German VAT number DE136695976 uses MOD 11-10: check digit 6 over 13669597
     */
    ok(gp_mod11_10("13669597", 8) == '6',
       "MOD 11-10 matches the German VAT example");

    /*
     * p = 1 before the check: (11 - 1) mod 10 = 0; "5" gives s=5, p=10 -> check
     * 1
     */
    ok(gp_mod11_10("5", 1) == '1', "MOD 11-10 of 5 is 1 (hand computation)");
    ok(gp_mod11_10("", 0) == '1', "MOD 11-10 of nothing is (11-10) mod 10 = 1");

    ok(gp_mod11_10("07a4", 4) == -1, "MOD 11-10 refuses a non-digit");
    ok(gp_mod11_10("0794 ", 5) == -1, "MOD 11-10 refuses a trailing space");
}


static void
test_key(gp_code_key_t *k, unsigned char start)
{
    unsigned char key[GP_CODE_KEY_LEN];
    size_t        i;

    for (i = 0; i < GP_CODE_KEY_LEN; i++) {
        key[i] = (unsigned char) (start + i);
    }

    if (gp_code_key_init(k, key) != 0) {
        ok(0, "gp_code_key_init() prepares a key");
    }
}


static void
test_permutation(void)
{
    /*
     * known answers from an independent Python implementation of the
     * construction
     */
    static const uint64_t in[] = { 0, 1, 2, 12345, 99999999999ULL };
    static const uint64_t out[] = { 21222083456ULL, 20362282927ULL,
                                    87169142974ULL, 99188664310ULL,
                                    25188187531ULL };
    gp_code_key_t         k, k2;
    uint64_t              st = 7, v, p, *seen, prev;
    size_t                i, same, dup;
    int                   good;

    test_key(&k, 0);
    test_key(&k2, 1);

    good = 1;
    for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        good &= gp_code_permute(&k, in[i]) == out[i];
    }
    ok(good,
       "permutation matches the reference implementation's known answers");

    ok(gp_code_unpermute(&k, gp_code_permute(&k, 0)) == 0,
       "permutation round-trips 0");
    ok(gp_code_unpermute(&k, gp_code_permute(&k, GP_CODE_DOMAIN - 1))
           == GP_CODE_DOMAIN - 1,
       "permutation round-trips 10^11 - 1");
    ok(gp_code_permute(&k, GP_CODE_DOMAIN - 1) < GP_CODE_DOMAIN
           && gp_code_unpermute(&k, GP_CODE_DOMAIN - 1) < GP_CODE_DOMAIN,
       "permutation stays inside the domain at its edge");

    ok(gp_code_permute(&k, GP_CODE_DOMAIN) == UINT64_MAX
           && gp_code_unpermute(&k, UINT64_MAX) == UINT64_MAX,
       "values outside the domain are refused (UINT64_MAX)");

    seen = malloc(3000 * sizeof(uint64_t));
    if (seen == NULL) {
        ok(0, "malloc");
        return;
    }

    good = 1;
    for (i = 0; i < 3000; i++) {
        v = rnd(&st) % GP_CODE_DOMAIN;
        p = gp_code_permute(&k, v);
        seen[i] = p;
        good &= p < GP_CODE_DOMAIN && gp_code_unpermute(&k, p) == v;
        good &= gp_code_permute(&k, gp_code_unpermute(&k, v)) == v;
    }
    ok(good, "permutation round-trips 3000 random values both ways");

    /* distinct inputs (0..2999) must give distinct outputs */
    for (i = 0; i < 3000; i++) {
        seen[i] = gp_code_permute(&k, i);
    }
    dup = 0;
    for (i = 0; i < 3000; i++) {
        size_t j;
        for (j = i + 1; j < 3000; j++) {
            dup += seen[i] == seen[j];
        }
    }
    ok(dup == 0, "3000 consecutive inputs give 3000 distinct outputs");

    same = 0;
    for (i = 0; i < 1000; i++) {
        same += gp_code_permute(&k, i) == gp_code_permute(&k2, i);
    }
    ok(same <= 1, "another key gives another permutation (%zu of 1000 equal)",
       same);

    free(seen);
    gp_code_key_free(&k2);

    /* neighbouring inputs: bodies should differ in most of their 11 digits */
    {
        char     a[12], b[12];
        size_t   close = 0, d;
        unsigned digits;

        prev = gp_code_permute(&k, 16);
        for (i = 2; i <= 1000; i++) {
            v = gp_code_permute(&k, i * 16);
            snprintf(a, sizeof(a), "%011" PRIu64, prev);
            snprintf(b, sizeof(b), "%011" PRIu64, v);
            digits = 0;
            for (d = 0; d < 11; d++) {
                digits += a[d] != b[d];
            }
            close += digits < 5;
            prev = v;
        }
        ok(close <= 2,
           "neighbouring sequences give unrelated bodies (%zu close pairs)",
           close);
    }

    gp_code_key_free(&k);

    /* a key that was freed (or never made) makes nothing */
    ok(gp_code_permute(&k, 1) == UINT64_MAX
           && gp_code_unpermute(&k, 1) == UINT64_MAX,
       "a freed key permutes nothing (UINT64_MAX)");
}


static void
test_code_make_parse(void)
{
    gp_code_key_t k, k2;
    char          code[GP_CODE_LEN + 1], division[7], bad[GP_CODE_LEN + 1];
    unsigned      yy;
    uint32_t      shard, shards, sh;
    uint64_t      seq, st = 99, sq, maxseq, body;
    int           good, c;
    size_t        i;

    test_key(&k, 0);
    test_key(&k2, 1);

    /* known answer from the Python reference: v = 1 * 16 + 7 = 23 */
    ok(gp_code_make(&k, "330100", 26, 16, 7, 1, code) == 0, "code is made");
    is_str(code, "33010026080826647442",
           "code matches the reference implementation");

    ok(gp_code_parse(&k, code, strlen(code), 16, division, &yy, &shard, &seq)
               == 0
           && strcmp(division, "330100") == 0 && yy == 26 && shard == 7
           && seq == 1,
       "code parses back to division, year, shard and sequence");

    ok(gp_code_make(&k, "330100", 26, 1, 0, 1, code) == 0
           && strcmp(code, "33010026203622829277") == 0,
       "code with a single shard matches the reference implementation");

    ok(gp_code_make(&k, "110000", 5, 16, 0, 2, code) == 0
           && strncmp(code, "11000005", 8) == 0,
       "year is zero padded to two digits");

    good = 1;
    for (i = 0; i < 500; i++) {
        shards = 1 + (uint32_t) (rnd(&st) % 1024);
        sh = (uint32_t) (rnd(&st) % shards);
        maxseq = (GP_CODE_DOMAIN - 1 - sh) / shards;
        sq = 1 + rnd(&st) % maxseq;
        good &=
            gp_code_make(&k, "440300", (unsigned) (i % 100), shards, sh, sq,
                         code)
                == 0
            && strlen(code) == 20
            && gp_code_parse(&k, code, 20, shards, division, &yy, &shard, &seq)
                   == 0
            && shard == sh && seq == sq && yy == i % 100
            && strcmp(division, "440300") == 0;
    }
    ok(good, "500 random (shards, shard, seq) survive make and parse");

    shards = 16;
    maxseq = (GP_CODE_DOMAIN - 1 - 15) / 16;
    ok(gp_code_make(&k, "330100", 26, 16, 15, maxseq, code) == 0
           && gp_code_parse(&k, code, 20, 16, division, &yy, &shard, &seq) == 0
           && shard == 15 && seq == maxseq,
       "the largest sequence that fits the domain works");
    ok(gp_code_make(&k, "330100", 26, 16, 15, maxseq + 1, code) == -1,
       "a sequence that overflows the domain is refused");
    ok(gp_code_make(&k, "330100", 26, 16, 0, UINT64_MAX, code) == -1,
       "a huge sequence is refused without overflow");

    ok(gp_code_make(&k, "330100", 26, 16, 16, 1, code) == -1,
       "shard >= shards is refused");
    ok(gp_code_make(&k, "330100", 26, 0, 0, 1, code) == -1,
       "zero shards is refused");
    ok(gp_code_make(&k, "330100", 26, 16, 0, 0, code) == -1,
       "sequence 0 is refused");
    ok(gp_code_make(&k, "330100", 100, 16, 0, 1, code) == -1,
       "year 100 is refused");
    ok(gp_code_make(&k, "33010", 26, 16, 0, 1, code) == -1,
       "a 5-digit division is refused");
    ok(gp_code_make(&k, "3301001", 26, 16, 0, 1, code) == -1,
       "a 7-digit division is refused");
    ok(gp_code_make(&k, "33010a", 26, 16, 0, 1, code) == -1,
       "a non-digit division is refused");

    /* every single-digit change of a valid code is caught by the check digit */
    gp_code_make(&k, "330100", 26, 16, 7, 1, code);
    good = 1;
    for (i = 0; i < 20; i++) {
        for (c = '0'; c <= '9'; c++) {
            if (code[i] == c) {
                continue;
            }
            memcpy(bad, code, sizeof(bad));
            bad[i] = (char) c;
            good &= gp_code_parse(&k, bad, 20, 16, division, &yy, &shard, &seq)
                    == -1;
        }
    }
    ok(good, "every single-digit change of a code is refused");

    /* neighbouring transpositions are caught too (MOD 11-10 detects them) */
    good = 1;
    for (i = 0; i < 19; i++) {
        if (code[i] == code[i + 1]) {
            continue;
        }
        memcpy(bad, code, sizeof(bad));
        bad[i] = code[i + 1];
        bad[i + 1] = code[i];
        good &=
            gp_code_parse(&k, bad, 20, 16, division, &yy, &shard, &seq) == -1;
    }
    ok(good, "every transposition of neighbouring digits is refused");

    ok(gp_code_parse(&k, code, 19, 16, division, &yy, &shard, &seq) == -1,
       "a 19-digit code is refused");
    ok(gp_code_parse(&k, "330100260808266474420", 21, 16, division, &yy, &shard,
                     &seq)
           == -1,
       "a 21-digit code is refused");
    ok(gp_code_parse(&k, "3301002608082664744a", 20, 16, division, &yy, &shard,
                     &seq)
           == -1,
       "a code with a letter is refused");
    ok(gp_code_parse(&k, "33010026 80826647442", 20, 16, division, &yy, &shard,
                     &seq)
           == -1,
       "a code with a space is refused");
    ok(gp_code_parse(&k, code, 20, 0, division, &yy, &shard, &seq) == -1,
       "parsing with zero shards is refused");

    /* a well-formed code whose body decodes to sequence 0 (v = shard 5) */
    body = gp_code_permute(&k, 5);
    snprintf(bad, sizeof(bad), "33010026%011" PRIu64, body);
    bad[19] = (char) gp_mod11_10(bad, 19);
    bad[20] = '\0';
    ok(gp_code_parse(&k, bad, 20, 16, division, &yy, &shard, &seq) == -1,
       "a code whose body maps to sequence 0 is refused");

    /* the same body under another key gives another (shard, seq) */
    gp_code_make(&k, "330100", 26, 16, 7, 1, code);
    ok(gp_code_parse(&k2, code, 20, 16, division, &yy, &shard, &seq) != 0
           || shard != 7 || seq != 1,
       "a code made under one key means something else under another");

    ok(gp_code_make(&k, "330100", 26, 16, 7, 1, code) == 0
           && gp_code_make(&k, "330100", 26, 16, 7, 1, bad) == 0
           && strcmp(code, bad) == 0,
       "making a code is deterministic");

    gp_code_key_free(&k);
    gp_code_key_free(&k2);

    ok(gp_code_make(&k, "330100", 26, 16, 7, 1, code) == -1
           && gp_code_parse(&k, bad, 20, 16, division, &yy, &shard, &seq) == -1,
       "a freed key makes and reads no code");
}


static void
test_shard_of(void)
{
    uint32_t s, i;
    int      good;
    char     rid[32];

    /*
     * SHA-256("330100-EDU-001\nEDU-2026-000123")[0..4] mod 16, computed in
     * Python
     */
    s = gp_shard_of("330100-EDU-001", 14, "EDU-2026-000123", 15, 16);
    ok(s == 1, "shard of a known (unit, request_id) is the reference value");

    ok(gp_shard_of("330100-EDU-001", 14, "EDU-2026-000123", 15, 16) == s,
       "shard choice is deterministic");
    ok(gp_shard_of("a", 1, "b", 1, 1) == 0,
       "with one shard every notice is on shard 0");
    ok(gp_shard_of("a", 1, "b", 1, 0) == 0,
       "zero shards gives shard 0, not a crash");

    good = 1;
    for (i = 0; i < 1000; i++) {
        snprintf(rid, sizeof(rid), "R-%u", (unsigned) i);
        good &= gp_shard_of("u", 1, rid, strlen(rid), 7) < 7;
    }
    ok(good, "shards are always below S");

    ok(gp_shard_of("ab", 2, "c", 1, 1u << 31)
           != gp_shard_of("a", 1, "bc", 2, 1u << 31),
       "the separator keeps (ab, c) and (a, bc) apart");
}


static int
write_file(const char *dir, const char *name, const char *content)
{
    char  path[4096];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, name);

    fp = fopen(path, "wb");
    if (fp == NULL) {
        return -1;
    }

    if (fwrite(content, 1, strlen(content), fp) != strlen(content)) {
        fclose(fp);
        return -1;
    }

    return fclose(fp);
}


static void
test_code_key_load(const char *dir)
{
    static const char *hex64 =
        "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F";
    gp_code_key_t k, want;
    char          path[4096], err[512], *big;
    size_t        i;

    test_key(&want, 0);

    write_file(
        dir, "code.key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F"
        "\n \t\r\n");
    snprintf(path, sizeof(path), "%s/code.key", dir);
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == 0
           && gp_code_permute(&k, 0) == gp_code_permute(&want, 0)
           && gp_code_permute(&k, 12345) == gp_code_permute(&want, 12345)
           && gp_code_permute(&k, 0) == 21222083456ULL,
       "key file with mixed-case hex and trailing white space loads");
    gp_code_key_free(&k);

    write_file(dir, "code.key", hex64);
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == 0,
       "key file without newline loads");
    gp_code_key_free(&k);
    gp_code_key_free(&want);

    write_file(
        dir, "code.key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1");
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1
           && strstr(err, path) != NULL,
       "key file of 63 hex digits is refused, naming the file");

    write_file(
        dir, "code.key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0");
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1,
       "key file of 65 hex digits is refused");

    write_file(
        dir, "code.key",
        "g00102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1
           && strstr(err, path) != NULL,
       "key file with a non-hex character is refused");

    write_file(
        dir, "code.key",
        " 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1,
       "key file with leading space is refused");

    write_file(
        dir, "code.key",
        "00010203040506070809 a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1,
       "key file with inner space is refused");

    write_file(dir, "code.key", "");
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1,
       "empty key file is refused");

    big = malloc(10001);
    if (big != NULL) {
        for (i = 0; i < 10000; i++) {
            big[i] = 'a';
        }
        big[10000] = '\0';
        write_file(dir, "code.key", big);
        ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1,
           "a huge key file is refused");
        free(big);
    }

    snprintf(path, sizeof(path), "%s/missing.key", dir);
    ok(gp_code_key_load(path, &k, err, sizeof(err)) == -1
           && strstr(err, path) != NULL,
       "a missing key file is refused, naming the file");
}


/* ---- gp_util: money ------------------------------------------------------ */

static void
test_fen_to_yuan(void)
{
    char buf[32];

    ok(gp_fen_to_yuan(125000, buf, sizeof(buf)) == 7
           && strcmp(buf, "1250.00") == 0,
       "125000 fen is 1250.00");
    is_str((gp_fen_to_yuan(1, buf, sizeof(buf)), buf), "0.01", "1 fen is 0.01");
    is_str((gp_fen_to_yuan(0, buf, sizeof(buf)), buf), "0.00", "0 fen is 0.00");
    is_str((gp_fen_to_yuan(-350, buf, sizeof(buf)), buf), "-3.50",
           "-350 fen is -3.50");
    is_str((gp_fen_to_yuan(-5, buf, sizeof(buf)), buf), "-0.05",
           "-5 fen is -0.05");
    is_str((gp_fen_to_yuan(GP_FEN_MAX, buf, sizeof(buf)), buf), "100000000.00",
           "the largest notice amount");
    is_str((gp_fen_to_yuan(INT64_MIN, buf, sizeof(buf)), buf),
           "-92233720368547758.08", "INT64_MIN does not overflow");
    ok(gp_fen_to_yuan(125000, buf, 7) == -1,
       "a buffer one byte short is refused");
    ok(gp_fen_to_yuan(125000, buf, 8) == 7, "an exact buffer is enough");
    ok(gp_fen_to_yuan(1, buf, 0) == -1, "a zero-length buffer is refused");
}


static void
test_yuan_to_fen(void)
{
    static const struct {
        const char *s;
        int64_t     fen;
    } good[] = {
        {"0.1",                10                },
        { "12.30",             1230              },
        { "12.3",              1230              },
        { "12",                1200              },
        { "0.01",              1                 },
        { "0",                 0                 },
        { "0.00",              0                 },
        { "1250.00",           125000            },
        { "100000000.00",      10000000000LL     },
        { "00.10",             10                },
        { "99999999999999.99", 9999999999999999LL}
    };
    static const char *bad[] = { "",
                                 ".5",
                                 "1.",
                                 "1.234",
                                 "-1",
                                 "+1",
                                 "1e3",
                                 " 1",
                                 "1 ",
                                 "1,00",
                                 "1..2",
                                 "1.2.3",
                                 "0x10",
                                 "1.-1",
                                 "100000000000000",
                                 "999999999999999999999999",
                                 ".",
                                 "1.2a",
                                 "\xef\xbc\x91",
                                 "NaN",
                                 "inf" };
    int64_t            fen;
    size_t             i;
    int                all;

    all = 1;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        fen = -1;
        if (!(gp_yuan_to_fen(good[i].s, strlen(good[i].s), &fen) == 0
              && fen == good[i].fen))
        {
            diag("failed on", good[i].s);
            all = 0;
        }
    }
    ok(all, "decimal yuan strings are parsed exactly into fen");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(gp_yuan_to_fen(bad[i], strlen(bad[i]), &fen) == -1,
           "yuan \"%s\" is refused", bad[i]);
    }

    ok(gp_yuan_to_fen("12\0", 3, &fen) == -1,
       "a NUL inside the length is refused");
    ok(gp_yuan_to_fen("12.345", 4, &fen) == 0 && fen == 1230,
       "only n bytes are read");
}


/* ---- gp_util: time ------------------------------------------------------- */

static void
test_time_format(void)
{
    char     buf[26];
    uint64_t st = 5;
    int64_t  t, back;
    size_t   i;
    int      good;

    /* unix times from Python's datetime with tz=+08:00 */
    ok(gp_time_rfc3339(1798732799, buf) == 25, "rfc3339 formatting returns 25");
    is_str(buf, "2026-12-31T23:59:59+08:00", "a time is formatted in +08:00");
    is_str((gp_time_rfc3339(0, buf), buf), "1970-01-01T08:00:00+08:00",
           "the epoch in +08:00");
    is_str((gp_time_rfc3339(-1, buf), buf), "1970-01-01T07:59:59+08:00",
           "negative times use floor division");
    is_str((gp_time_rfc3339(951825600, buf), buf), "2000-02-29T20:00:00+08:00",
           "a leap day");
    is_str((gp_time_rfc3339(253402300799LL - 28800, buf), buf),
           "9999-12-31T23:59:59+08:00", "the last representable second");
    ok(gp_time_rfc3339(253402300799LL - 28800 + 1, buf) == 0 && buf[0] == '\0',
       "a time past year 9999 gives an empty string");
    ok(gp_time_rfc3339(INT64_MIN, buf) == 0
           && gp_time_rfc3339(INT64_MAX, buf) == 0,
       "extreme times do not overflow");

    setenv("TZ", "America/New_York", 1);
    tzset();
    is_str((gp_time_rfc3339(0, buf), buf), "1970-01-01T08:00:00+08:00",
           "formatting ignores the process time zone");
    unsetenv("TZ");
    tzset();

    good = 1;
    for (i = 0; i < 2000; i++) {
        t = (int64_t) (rnd(&st) % 8000000000ULL) - 2000000000LL;
        good &= gp_time_rfc3339(t, buf) == 25
                && gp_time_parse_rfc3339(buf, 25, &back) == 0 && back == t;
    }
    ok(good, "2000 random times survive formatting and parsing");
}


static void
test_time_parse(void)
{
    static const struct {
        const char *s;
        int64_t     t;
    } good[] = {
        {"2026-12-31T23:59:59+08:00",    1798732799        },
        { "2026-12-31T15:59:59Z",        1798732799        },
        { "2026-12-31T15:59:59z",        1798732799        },
        { "2026-12-31t10:59:59-05:00",   1798732799        },
        { "2026-12-31T15:59:59.999999Z", 1798732799        },
        { "2026-12-31T23:59:59.5+08:00", 1798732799        },
        { "1970-01-01T00:00:00Z",        0                 },
        { "1969-12-31T23:59:59Z",        -1                },
        { "2000-02-29T12:00:00Z",        951825600         },
        { "2016-12-31T23:59:60Z",        1483228800        },
        { "2026-01-01T00:00:00+14:00",   1767175200        },
        { "2026-01-01T00:00:00-00:00",   1767225600        },
        { "2026-01-01T00:00:00+23:59",   1767225600 - 86340}
    };
    static const char *bad[] = { "",
                                 "2026",
                                 "2026-12-31",
                                 "2026-12-31T23:59:59",
                                 "2026-12-31 23:59:59+08:00",
                                 "2026-13-01T00:00:00Z",
                                 "2026-00-01T00:00:00Z",
                                 "2026-01-00T00:00:00Z",
                                 "2026-04-31T00:00:00Z",
                                 "2023-02-29T00:00:00Z",
                                 "1900-02-29T00:00:00Z",
                                 "2026-01-01T24:00:00Z",
                                 "2026-01-01T23:60:00Z",
                                 "2026-01-01T23:59:61Z",
                                 "2026-01-01T00:00:00+08:60",
                                 "2026-01-01T00:00:00+24:00",
                                 "2026-01-01T00:00:00+0800",
                                 "2026-01-01T00:00:00+08",
                                 "2026-1-01T00:00:00Z",
                                 "2026-01-01T00:00:00ZZ",
                                 "2026-01-01T00:00:00.Z",
                                 "2026-01-01T00:00:00.",
                                 "2026-01-01T00:00:00Z ",
                                 " 2026-01-01T00:00:00Z",
                                 "2026-01-01T00:00:00+08:00x",
                                 "+2026-01-01T00:00:00Z",
                                 "2026/01/01T00:00:00Z",
                                 "2026-01-01T0a:00:00Z",
                                 "2026-01-01T00:00:00UTC",
                                 "2026-01-01T00:00:00.1.2Z" };
    int64_t            t;
    size_t             i;
    int                all;

    all = 1;
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        t = 12345;
        if (!(gp_time_parse_rfc3339(good[i].s, strlen(good[i].s), &t) == 0
              && t == good[i].t))
        {
            diag("failed on", good[i].s);
            all = 0;
        }
    }
    ok(all, "RFC 3339 times with Z, lowercase, offsets, fractions and leap "
            "days parse");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(gp_time_parse_rfc3339(bad[i], strlen(bad[i]), &t) == -1,
           "time \"%s\" is refused", bad[i]);
    }

    ok(gp_time_parse_rfc3339("2026-12-31T23:59:59+08:00", 24, &t) == -1,
       "a time cut short by n is refused");
    ok(gp_time_parse_rfc3339("2026-12-31T23:59:59+08:00\0", 26, &t) == -1,
       "a NUL after the time is refused");
}


static void
test_year2(void)
{
    ok(gp_year2(1798732799) == 26, "year of 2026-12-31T23:59:59+08:00 is 26");
    ok(gp_year2(1798732800) == 27, "one second later (2027 in +08:00) is 27");
    ok(gp_year2(1735660799) == 24 && gp_year2(1735660800) == 25,
       "new year is taken in +08:00 (2024-12-31T16:00:00Z is 2025 there)");
    ok(gp_year2(0) == 70, "the epoch is 70");
    ok(gp_year2(-2208988800LL) == 0, "1900 is 00");
    ok(gp_year2(INT64_MAX) < 100 && gp_year2(INT64_MIN) < 100,
       "extreme times give 0-99");
}


/* ---- gp_util: UTF-8 and masking ------------------------------------------ */

static void
test_utf8(void)
{
    static const struct {
        const char *s;
        size_t      n;
        const char *why;
    } bad[] = {
        {"\xc0\xaf",                  2, "an overlong 2-byte '/'"      },
        { "\xc1\xbf",                 2, "an overlong 2-byte form (C1)"},
        { "\xe0\x80\xaf",             3, "an overlong 3-byte '/'"      },
        { "\xe0\x9f\xbf",             3, "an overlong 3-byte U+07FF"   },
        { "\xf0\x80\x80\xaf",         4, "an overlong 4-byte '/'"      },
        { "\xf0\x8f\xbf\xbf",         4, "an overlong 4-byte U+FFFF"   },
        { "\xed\xa0\x80",             3, "the surrogate U+D800"        },
        { "\xed\xbf\xbf",             3, "the surrogate U+DFFF"        },
        { "\xed\xa0\xbd\xed\xb8\x80", 6, "a CESU-8 surrogate pair"     },
        { "\xf4\x90\x80\x80",         4, "U+110000"                    },
        { "\xf5\x80\x80\x80",         4, "a lead byte F5"              },
        { "\xff",                     1, "the byte FF"                 },
        { "\x80",                     1, "a lone continuation byte"    },
        { "\xe5\xbc",                 2, "a truncated 3-byte sequence" },
        { "a\xe5",                    2, "a lead byte at the end"      },
        { "\xe5\x41\x80",             3, "a missing continuation byte" },
        { "\xf8\x88\x80\x80\x80",     5, "a 5-byte sequence"           }
    };
    size_t chars, i;

    ok(gp_utf8_valid("hello", 5, &chars) == 1 && chars == 5,
       "ASCII is valid UTF-8");
    ok(gp_utf8_valid("\xe5\xbc\xa0\xe4\xb8\x89", 6, &chars) == 1 && chars == 2,
       "\"张三\" is 2 code points");
    ok(gp_utf8_valid("\xf0\x9f\x98\x80x", 5, &chars) == 1 && chars == 2,
       "a 4-byte emoji is one code point");
    ok(gp_utf8_valid("\xf4\x8f\xbf\xbf", 4, &chars) == 1 && chars == 1,
       "U+10FFFF is valid");
    ok(gp_utf8_valid("\xee\x80\x80\xef\xbf\xbf", 6, &chars) == 1 && chars == 2,
       "U+E000 and U+FFFF (next to the surrogates) are valid");
    ok(gp_utf8_valid("\xc2\x80\xdf\xbf", 4, NULL) == 1,
       "the 2-byte range edges are valid");
    ok(gp_utf8_valid("", 0, &chars) == 1 && chars == 0,
       "the empty string is valid");
    ok(gp_utf8_valid("a\0b", 3, &chars) == 1 && chars == 3,
       "U+0000 is valid UTF-8");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(gp_utf8_valid(bad[i].s, bad[i].n, &chars) == 0, "UTF-8 refuses %s",
           bad[i].why);
    }
}


static void
test_authz(void)
{
    gp_authz_t  a;
    const char *h = "GOVPAY-HMAC-SHA256 unit=\"U-1\",ts=\"1796110625\","
                    "nonce=\"abcdefghijklmnop\",sig=\"AAAA\"";

    ok(gp_authz_parse(h, strlen(h), &a) == 0 && a.scheme.n == 18
           && a.unit.n == 3 && memcmp(a.unit.p, "U-1", 3) == 0 && a.sig.n == 4,
       "an Authorization header parses into scheme, unit, ts, nonce, sig");
    ok(gp_authz_parse(h, strlen(h) - 1, &a) == -1,
       "a value without its closing quote is refused");
    ok(gp_authz_parse(
           "X unit=\"a\",unit=\"b\",ts=\"1\",nonce=\"n\",sig=\"s\"",
           strlen("X unit=\"a\",unit=\"b\",ts=\"1\",nonce=\"n\",sig=\"s\""), &a)
           == -1,
       "a repeated name is refused");
    ok(gp_authz_parse("X unit=\"a\",ts=\"1\",nonce=\"n\"",
                      strlen("X unit=\"a\",ts=\"1\",nonce=\"n\""), &a)
           == -1,
       "a missing sig is refused");
    ok(gp_authz_parse("X unit=\"a\\\",ts=\"1\",nonce=\"n\",sig=\"s\"",
                      strlen("X unit=\"a\\\",ts=\"1\",nonce=\"n\",sig=\"s\""),
                      &a)
           == -1,
       "a backslash in a value is refused");
    ok(gp_authz_parse(
           "X extra=\"1\",unit=\"a\",ts=\"1\",nonce=\"n\",sig=\"s\"",
           strlen("X extra=\"1\",unit=\"a\",ts=\"1\",nonce=\"n\",sig=\"s\""),
           &a)
           == -1,
       "an unknown name is refused");
    ok(gp_authz_parse("", strlen(""), &a) == -1, "an empty header is refused");
    ok(gp_authz_nonce_ok("abcdefghijklmnop", 16) == 1,
       "a 16-character nonce is good");
    ok(gp_authz_nonce_ok("abcdefghijklmno", 15) == 0,
       "a 15-character nonce is refused");
    ok(gp_authz_nonce_ok("abcdefghijklmno!", 16) == 0,
       "a nonce with '!' is refused");
    ok(gp_authz_ts_ok("1796110625", 10) == 1, "ts of digits is good");
    ok(gp_authz_ts_ok("-1", 2) == 0 && gp_authz_ts_ok("1234567890123", 13) == 0,
       "a negative or 13-digit ts is refused");
}


static void
test_cst_and_receipt_ref(void)
{
    int64_t t;
    char    code[9], number[11];

    ok(gp_cst_parse("2026-11-24 09:59:58", 19, 1, &t) == 0 && t == 1795485598,
       "\"2026-11-24 09:59:58\" is Beijing time");
    ok(gp_cst_parse("20261124095958", 14, 0, &t) == 0 && t == 1795485598,
       "\"20261124095958\" too");
    ok(gp_cst_parse("2026-11-24T09:59:58", 19, 1, &t) == -1,
       "a 'T' where the space goes is refused");
    ok(gp_cst_parse("2026-13-24 09:59:58", 19, 1, &t) == -1,
       "month 13 is refused");
    ok(gp_cst_parse("2026112409595", 13, 0, &t) == -1, "13 digits are refused");
    ok(gp_receipt_ref_parse("/r/33010126/0000000001", 22, "ab12cd", 6, code,
                            number)
               == 0
           && strcmp(code, "33010126") == 0
           && strcmp(number, "0000000001") == 0,
       "/r/<code>/<number> with a check code parses");
    ok(gp_receipt_ref_parse("/r/33010126/000000000a", 22, "ab12cd", 6, code,
                            number)
           == -1,
       "a letter in the number is refused");
    ok(gp_receipt_ref_parse("/r/33010126/0000000001", 22, "AB12CD", 6, code,
                            number)
           == -1,
       "an upper-case check code is refused");
    ok(gp_receipt_ref_parse("/r/33010126-0000000001", 22, "ab12cd", 6, code,
                            number)
           == -1,
       "a path without its slash is refused");
}


static void
test_text_rules(void)
{
    ok(gp_text_ok("\xe5\xbc\xa0\xe4\xb8\x89", 6, 1, 2) == 1,
       "\"张三\" is 1 to 2 characters");
    ok(gp_text_ok("\xe5\xbc\xa0\xe4\xb8\x89", 6, 1, 1) == 0,
       "\"张三\" is not at most 1");
    ok(gp_text_ok("", 0, 0, 200) == 1, "an empty text may be allowed");
    ok(gp_text_ok("", 0, 1, 200) == 0, "or required");
    ok(gp_text_ok("a\0b", 3, 1, 200) == 0, "a text with U+0000 is refused");
    ok(gp_text_ok("\xff", 1, 1, 200) == 0,
       "a text that is not UTF-8 is refused");
    ok(gp_request_id_ok("EDU-2026-000123", 15) == 1,
       "a request_id of printable ASCII");
    ok(gp_request_id_ok("a b", 3) == 0, "a request_id with a space is refused");
    ok(gp_request_id_ok("", 0) == 0, "an empty request_id is refused");
    ok(gp_request_id_ok(
           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
           65)
           == 0,
       "a request_id of 65 characters is refused");
    ok(gp_request_id_ok("\xe5\xbc\xa0", 3) == 0,
       "a request_id with non-ASCII is refused");
}


static void
test_text_controls(void)
{
    static const struct {
        const char *s;
        size_t      n;
        const char *why;
    } bad[] = {
        {"a\nb",          3, "a newline"                     },
        { "a\tb",         3, "a tab"                         },
        { "a\0b",         3, "U+0000"                        },
        { "a\x1f",        2, "U+001F"                        },
        { "a\x7f",        2, "DEL"                           },
        { "a\xc2\x85",    3, "U+0085 (a C1 next line)"       },
        { "\xe2\x80\xae"
          "abc", 6, "U+202E RIGHT-TO-LEFT OVERRIDE" },
        { "\xe2\x80\xaa", 3, "U+202A LEFT-TO-RIGHT EMBEDDING"},
        { "\xe2\x81\xa6", 3, "U+2066 LEFT-TO-RIGHT ISOLATE"  },
        { "\xe2\x81\xa9", 3, "U+2069 POP DIRECTIONAL ISOLATE"},
        { "\xe2\x80\x8f", 3, "U+200F RIGHT-TO-LEFT MARK"     },
        { "\xd8\x9c",     2, "U+061C ARABIC LETTER MARK"     },
        { "\xe2\x80\xa8", 3, "U+2028 LINE SEPARATOR"         },
        { "\xff",         1, "bytes that are not UTF-8"      }
    };
    size_t i;

    ok(gp_text_has_controls("\xe5\xbc\xa0\xe4\xb8\x89 Zhang-San (2026)",
                            strlen("\xe5\xbc\xa0\xe4\xb8\x89 Zhang-San (2026)"))
           == 0,
       "a name with spaces, punctuation and Chinese is clean");
    ok(gp_text_has_controls("\xe2\x80\x94\xe3\x80\x82\xf0\x9f\x98\x80", 10)
           == 0,
       "an em dash, an ideographic full stop and an emoji are clean");
    ok(gp_text_has_controls("\xe2\x80\xad\xe2\x80\xa9", 3) == 1,
       "U+202D LEFT-TO-RIGHT OVERRIDE is refused");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(gp_text_has_controls(bad[i].s, bad[i].n) == 1,
           "a text with %s is refused", bad[i].why);
    }
}


/* the JSON writer's strings are what jansson writes */
static void
test_json_escape(void)
{
    char    in[140], out[GP_JSON_ESCAPED_MAX(140)], *want;
    size_t  n, len, i;
    json_t *str;

    n = 0;
    for (i = 1; i < 128; i++) {
        in[n++] = (char) i;
    }
    memcpy(in + n, "\xe4\xb8\xad\xe2\x80\xa8/", 7); /* 中, U+2028, / */
    n += 7;

    len = gp_json_escape(in, n, out);

    str = json_stringn(in, n);
    want = str ? json_dumps(str, JSON_ENCODE_ANY) : NULL;

    ok(want != NULL && strlen(want) == len + 2
           && memcmp(want + 1, out, len) == 0,
       "JSON strings are escaped as jansson escapes them (every ASCII byte, "
       "UTF-8, U+2028, slash)");

    free(want);
    json_decref(str);

    ok(gp_json_escape("", 0, out) == 0, "an empty string escapes to nothing");
    len = gp_json_escape("a\"b", 3, out);
    ok(len == 4 && memcmp(out, "a\\\"b", 4) == 0, "a quote is escaped");
}


static void
test_mask(void)
{
    char buf[64];

    ok(gp_mask_name("\xe5\xbc\xa0\xe4\xb8\x89", 6, buf, sizeof(buf)) == 4
           && strcmp(buf, "\xe5\xbc\xa0*") == 0,
       "\"张三\" is masked as \"张*\"");
    ok(gp_mask_name("\xe6\xac\xa7\xe9\x98\xb3\xe5\xa8\x9c\xe5\xa8\x9c", 12, buf,
                    sizeof(buf))
               == 6
           && strcmp(buf, "\xe6\xac\xa7***") == 0,
       "\"欧阳娜娜\" is masked as \"欧***\"");
    is_str((gp_mask_name("Li Lei", 6, buf, sizeof(buf)), buf), "L*****",
           "a Latin name keeps its first letter");
    is_str((gp_mask_name("\xe6\x9d\x8e", 3, buf, sizeof(buf)), buf),
           "\xe6\x9d\x8e", "a one-character name is kept");
    ok(gp_mask_name("", 0, buf, sizeof(buf)) == 0 && buf[0] == '\0',
       "an empty name is empty");
    ok(gp_mask_name("\xf0\x9f\x98\x80\xe4\xb8\x89", 7, buf, sizeof(buf)) == 5,
       "a 4-byte first code point is kept whole");
    ok(gp_mask_name("\xe5\xbc\xa0\xed\xa0\x80", 6, buf, sizeof(buf)) == -1,
       "a name with a surrogate is refused");
    ok(gp_mask_name("\xe5\xbc", 2, buf, sizeof(buf)) == -1,
       "a cut name is refused");
    ok(gp_mask_name("\xe5\xbc\xa0\xe4\xb8\x89", 6, buf, 4) == -1,
       "a buffer without room for the NUL is refused");
    ok(gp_mask_name("\xe5\xbc\xa0\xe4\xb8\x89", 6, buf, 5) == 4,
       "an exact buffer is enough");

    is_str((gp_mask_id("330106200001011234", 18, buf, sizeof(buf)), buf),
           "3301**********1234", "an ID number keeps its first and last 4");
    ok(gp_mask_id("330106200001011234", 18, buf, sizeof(buf)) == 18,
       "mask keeps the length");
    is_str((gp_mask_id("12345678", 8, buf, sizeof(buf)), buf), "********",
           "8 characters or fewer are all masked");
    is_str((gp_mask_id("123456789", 9, buf, sizeof(buf)), buf), "1234*6789",
           "9 characters mask the middle one");
    is_str((gp_mask_id("91350100M000100Y43", 18, buf, sizeof(buf)), buf),
           "9135**********0Y43", "a credit code is masked the same way");
    ok(gp_mask_id("", 0, buf, sizeof(buf)) == 0 && buf[0] == '\0',
       "an empty ID is empty");
    ok(gp_mask_id("330106200001011234", 18, buf, 18) == -1,
       "a short buffer is refused");
    ok(gp_mask_id("1234\xff"
                  "6789",
                  9, buf, sizeof(buf))
           == -1,
       "invalid UTF-8 is refused");
    ok(gp_mask_id("\xe4\xb8\x80\xe4\xb8\x80\xe4\xb8\x80\xe4\xb8\x80x"
                  "\xe4\xb8\x80\xe4\xb8\x80\xe4\xb8\x80\xe4\xb8\x80",
                  25, buf, sizeof(buf))
           == 25,
       "a non-ASCII ID is masked by code point, never cutting a character");
}


/* ---- gp_util: identifiers ------------------------------------------------ */

static void
test_resident_id(void)
{
    /* check characters computed with an independent Python implementation */
    static const char *bad_dates[] = {
        "110105189912310023", "110105210001010023", "110105194902300020",
        "110105202302290022", "110105194913000023", "110105194901000026",
        "110105194912320025", "110105190002290025"
    };
    size_t i;

    ok(gp_resident_id_valid("11010519491231002X", 18) == 1,
       "the GB 11643 example 11010519491231002X is valid");
    ok(gp_resident_id_valid("11010519491231002x", 18) == 0,
       "a lowercase x is refused");
    ok(gp_resident_id_valid("110105194912310021", 18) == 0,
       "a wrong check digit is refused");
    ok(gp_resident_id_valid("330106200001011235", 18) == 1,
       "330106200001011235 is valid");
    ok(gp_resident_id_valid("330106200001011234", 18) == 0,
       "330106200001011234 (the API example) has a wrong check digit");
    ok(gp_resident_id_valid("110105200002290021", 18) == 1,
       "a birth on 2000-02-29 is valid");
    ok(gp_resident_id_valid("110105209912310029", 18) == 1,
       "a birth in 2099 is valid");
    ok(gp_resident_id_valid("110105190001010028", 18) == 1,
       "a birth on 1900-01-01 is valid");

    for (i = 0; i < sizeof(bad_dates) / sizeof(bad_dates[0]); i++) {
        ok(gp_resident_id_valid(bad_dates[i], 18) == 0,
           "ID %s with a good check but impossible birth date is refused",
           bad_dates[i]);
    }

    ok(gp_resident_id_valid("11010519491231002", 17) == 0,
       "17 characters are refused");
    ok(gp_resident_id_valid("11010519491231002X1", 19) == 0,
       "19 characters are refused");
    ok(gp_resident_id_valid("1101051949123100AX", 18) == 0,
       "a letter in the body is refused");
    ok(gp_resident_id_valid("11010519491231002X", 17) == 0,
       "only n characters are read");
}


static void
test_uscc(void)
{
    static const char charset[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
    char              s[19];
    size_t            i, j;
    int               good;

    ok(strlen(charset) == 31, "the GB 32100 character set has 31 characters");

    /*
     * the GB 32100-2015 example, check verified with an independent
     * implementation
     */
    ok(gp_uscc_valid("91350100M000100Y43", 18) == 1,
       "91350100M000100Y43 is valid");
    /* sum mod 31 == 0: 31 - 0 = 31 maps to '0' */
    ok(gp_uscc_valid("913301060000000000", 18) == 1,
       "913301060000000000 is valid (check 31 maps to 0)");

    good = 1;
    for (i = 0; i < 18; i++) {
        for (j = 0; j < 31; j++) {
            memcpy(s, "91350100M000100Y43", 19);
            if (s[i] == charset[j]) {
                continue;
            }
            s[i] = charset[j];
            good &= gp_uscc_valid(s, 18) == 0;
        }
    }
    ok(good, "every single-character change of a credit code is refused");

    ok(gp_uscc_valid("91350100m000100Y43", 18) == 0, "lowercase is refused");
    ok(gp_uscc_valid("91350100I000100Y43", 18) == 0,
       "the letter I is not in the set");
    ok(gp_uscc_valid("91350100O000100Y43", 18) == 0,
       "the letter O is not in the set");
    ok(gp_uscc_valid("91350100Z000100Y43", 18) == 0,
       "the letter Z is not in the set");
    ok(gp_uscc_valid("91350100M000100Y4", 17) == 0,
       "17 characters are refused");
    ok(gp_uscc_valid("91350100M000100Y43\0", 19) == 0,
       "19 characters are refused");
    ok(gp_uscc_valid("9135010\0M000100Y43", 18) == 0, "a NUL is refused");
}


/* ---- gp_util: forms ------------------------------------------------------ */

static void
test_form_parse(void)
{
    static const char *bad[] = { "a=%",       "a=%2",  "a=%G0", "a=%zz",
                                 "a=1%",      "%=1",   "a=%0",  "a%2=1",
                                 "a=%2x&b=1", "a=%00", "a=%%41" };
    gp_form_t          f;
    const gp_kv_t     *kv;
    size_t             i;

    ok(gp_form_parse("a=1&b=2", 7, &f) == 0 && f.n == 2
           && strcmp(f.kv[0].key, "a") == 0 && strcmp(f.kv[0].value, "1") == 0
           && strcmp(f.kv[1].key, "b") == 0 && strcmp(f.kv[1].value, "2") == 0,
       "a simple form parses into pairs in order");
    gp_form_free(&f);

    ok(gp_form_parse("subject=a+b%2Bc%2bd", 19, &f) == 0 && f.n == 1
           && strcmp(f.kv[0].value, "a b+c+d") == 0 && f.kv[0].value_len == 7,
       "'+' is a space and %%2B / %%2b are '+'");
    gp_form_free(&f);

    ok(gp_form_parse("s=%E4%B8%AD%e6%96%87", 20, &f) == 0
           && strcmp(f.kv[0].value, "\xe4\xb8\xad\xe6\x96\x87") == 0,
       "UTF-8 escapes in both hex cases decode");
    gp_form_free(&f);

    ok(gp_form_parse("x=%2541", 7, &f) == 0
           && strcmp(f.kv[0].value, "%41") == 0,
       "forms are decoded once, not twice");
    gp_form_free(&f);

    ok(gp_form_parse("k%3D1=v%26w", 11, &f) == 0
           && strcmp(f.kv[0].key, "k=1") == 0
           && strcmp(f.kv[0].value, "v&w") == 0,
       "escaped '=' and '&' do not split");
    gp_form_free(&f);

    ok(gp_form_parse("a&b=&=c&d==", 11, &f) == 0 && f.n == 4
           && strcmp(f.kv[0].key, "a") == 0 && f.kv[0].value_len == 0
           && strcmp(f.kv[1].key, "b") == 0 && f.kv[1].value_len == 0
           && f.kv[2].key_len == 0 && strcmp(f.kv[2].value, "c") == 0
           && strcmp(f.kv[3].key, "d") == 0 && strcmp(f.kv[3].value, "=") == 0,
       "missing '=', empty values, empty keys and a second '=' are handled");
    gp_form_free(&f);

    ok(gp_form_parse("&&a=1&&", 7, &f) == 0 && f.n == 1,
       "empty segments are skipped");
    gp_form_free(&f);

    ok(gp_form_parse("", 0, &f) == 0 && f.n == 0,
       "an empty body is an empty form");
    gp_form_free(&f);

    ok(gp_form_parse("a=1&b=2", 3, &f) == 0 && f.n == 1,
       "only n bytes are read");
    gp_form_free(&f);

    ok(gp_form_parse("a=1&a=2&a=3", 11, &f) == 0 && f.n == 3
           && (kv = gp_form_get(&f, "a")) != NULL
           && strcmp(kv->value, "1") == 0,
       "repeated keys are kept and get() returns the first");
    ok(gp_form_get(&f, "b") == NULL && gp_form_get(&f, "") == NULL
           && gp_form_get(&f, "aa") == NULL,
       "get() of an absent key is NULL");
    gp_form_free(&f);
    gp_form_free(&f);
    ok(f.kv == NULL && f.n == 0, "freeing a form twice is harmless");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ok(gp_form_parse(bad[i], strlen(bad[i]), &f) == -1 && f.kv == NULL,
           "a malformed form \"%s\" is refused", bad[i]);
    }

    ok(gp_form_parse("a=1\0b", 5, &f) == -1, "a raw NUL byte is refused");
}


static void
test_form_canonical(void)
{
    static const char *const alipay_skip[] = { "sign", "sign_type", NULL };
    static const char       *body = "total_amount=2.00&sign_type=RSA2&buyer_id="
                                    "2088102116773037&body=%E5%A4%A7%E4%B9%90"
                                    "&sign=abc%2Bdef%3D%3D&subject=a+b&app_id="
                                    "2014072300007148&passback_params=";
    gp_form_t                f;
    char                    *s;
    size_t                   len;

    ok(gp_form_parse(body, strlen(body), &f) == 0,
       "an Alipay-style callback parses");
    s = gp_form_canonical(&f, alipay_skip, 1, &len);
    is_str(s,
           "app_id=2014072300007148&body=\xe5\xa4\xa7\xe4\xb9\x90&buyer_id="
           "2088102116773037"
           "&subject=a b&total_amount=2.00",
           "canonical string: sorted, sign and empty values left out, values "
           "decoded");
    ok(s != NULL && len == strlen(s), "canonical length is reported");
    free(s);

    s = gp_form_canonical(&f, NULL, 0, &len);
    ok(s != NULL && strstr(s, "passback_params=&") != NULL
           && strstr(s, "sign=abc+def==") != NULL,
       "without skipping, empty values and sign are kept");
    free(s);
    gp_form_free(&f);

    ok(gp_form_parse("b=1&a=2&B=3&aa=4&a=5&_=6&a=0", 28, &f) == 0,
       "a form with equal keys");
    s = gp_form_canonical(&f, NULL, 0, &len);
    is_str(s, "B=3&_=6&a=2&a=5&a=0&aa=4&b=1",
           "sorting is bytewise (upper case first) and stable for equal keys");
    free(s);
    gp_form_free(&f);

    ok(gp_form_parse("", 0, &f) == 0, "an empty form");
    s = gp_form_canonical(&f, NULL, 1, &len);
    ok(s != NULL && len == 0 && s[0] == '\0',
       "the canonical string of nothing is empty");
    free(s);
    gp_form_free(&f);

    ok(gp_form_parse("x=a%26b%3Dc&y=%25", 17, &f) == 0,
       "a form with escaped delimiters");
    s = gp_form_canonical(&f, NULL, 1, &len);
    is_str(s, "x=a&b=c&y=%", "values are not encoded again");
    free(s);
    gp_form_free(&f);
}


static void
test_url_encode(void)
{
    char  *s;
    size_t len;

    s = gp_url_encode("a b&c=d/\xc3\xa9~._-+%", 16, &len);
    is_str(s, "a%20b%26c%3Dd%2F%C3%A9~._-%2B%25",
           "unreserved characters are kept and the rest is %XX in upper case");
    ok(s != NULL && len == strlen(s), "encoded length is reported");
    free(s);

    s = gp_url_encode("AZaz09", 6, &len);
    is_str(s, "AZaz09", "letters and digits are kept");
    free(s);

    s = gp_url_encode("", 0, &len);
    ok(s != NULL && len == 0 && s[0] == '\0',
       "the empty string encodes to the empty string");
    free(s);

    s = gp_url_encode("\0\xff", 2, &len);
    is_str(s, "%00%FF", "NUL and 0xFF are encoded");
    free(s);
}


/* ---- gp_registry --------------------------------------------------------- */

#define SECRET_SHA "s3cr3t-sha-0123456789abcdef"
#define SECRET_SM3 "s3cr3t-sm3-16byt" /* exactly 16 bytes: the minimum */

#define ITEMS                                                                  \
    "\"items\":[{\"code\":\"103001\",\"name\":\"\xe5\xad\xa6\xe8\xb4\xb9\","   \
    "\"amount\":{\"rule\":\"free\"}}]"

#define ID64 "u-3456789_123456789-123456789_123456789-123456789_123456789-1234"

#define UNIT_OK(id)                                                            \
    "{\"id\":\"" id "\",\"name\":\"n\",\"scheme\":\"GOVPAY-HMAC-SHA256\","     \
    "\"secret_file\":\"keys/sha.secret\",\"items\":[\"103001\"]}"


static void
reg_path(const char *dir, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", dir, name);
}


static void
test_registry_good(const char *dir)
{
    char           path[4096], keypath[4096], err[1024], cwd[4096], json[8192];
    gp_registry_t *reg = NULL;
    const gp_unit_t *u;
    const gp_item_t *it;
    int              rc;

    reg_path(dir, "keys/rsa.pem", keypath, sizeof(keypath));

    snprintf(
        json, sizeof(json),
        "{\"units\":["
        "{\"id\":\"330100-EDU-001\",\"name\":\"\xe6\x9d\xad\xe5\xb7\x9e\","
        " \"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/"
        "sha.secret\","
        " \"items\":[\"103001\",\"A7\"],\"webhook\":\"http://127.0.0.1:9000/"
        "hooks/govpay\","
        " \"return_hosts\":[\"www.school.example\",\"http://intranet:8080\"]},"
        "{\"id\":\"unit_sm3\",\"name\":\"u2\",\"scheme\":\"GOVPAY-HMAC-SM3\","
        " \"secret_file\":\"keys/sm3.secret\",\"items\":[]},"
        "{\"id\":\"a-rsa\",\"name\":\"u3\",\"scheme\":\"GOVPAY-RSA-SHA256\","
        " \"key_file\":\"keys/../keys/rsa.pem\",\"items\":[\"203\"],"
        " \"webhook\":\"https://unit.example/h\","
        " \"webhook_secret_file\":\"keys/sm3.secret\"},"
        "{\"id\":\"BANK-ICBC\",\"name\":\"bank\",\"scheme\":\"GOVPAY-SM2-SM3\","
        " \"key_file\":\"%s\",\"kind\":\"bank\"}"
        "],\"items\":["
        "{\"code\":\"103001\",\"name\":\"tuition\",\"department\":\"edu\","
        " \"split\":[{\"level\":\"city\",\"percent\":60},"
        "{\"level\":\"province\",\"percent\":40}],"
        " \"amount\":{\"rule\":\"range\",\"min\":1,\"max\":10000000000}},"
        "{\"code\":\"A7\",\"name\":\"fine\",\"amount\":{\"rule\":\"fixed\","
        "\"amount\":20000}},"
        "{\"code\":\"203\",\"name\":\"cert\",\"amount\":{\"rule\":\"free\"}}"
        "]}",
        keypath);

    write_file(dir, "registry.json", json);
    reg_path(dir, "registry.json", path, sizeof(path));

    rc = gp_registry_load(path, &reg, err, sizeof(err));
    if (!ok(rc == 0 && reg != NULL, "a valid registry loads")) {
        diag("error", err);
        return;
    }

    ok(reg->nunits == 4 && reg->nitems == 3, "all units and items are there");

    u = gp_registry_unit(reg, "330100-EDU-001", 14);
    ok(u != NULL && u->scheme == GP_SCHEME_HMAC_SHA256
           && u->secret_len == strlen(SECRET_SHA)
           && memcmp(u->secret, SECRET_SHA, u->secret_len) == 0
           && u->key_file == NULL,
       "an HMAC unit holds its secret without the trailing white space");
    ok(u != NULL && u->webhook != NULL
           && strcmp(u->webhook, "http://127.0.0.1:9000/hooks/govpay") == 0
           && strcmp(u->name, "\xe6\x9d\xad\xe5\xb7\x9e") == 0,
       "name and webhook are read");
    ok(u != NULL && u->nreturn_hosts == 2
           && strcmp(u->return_hosts[0], "www.school.example") == 0
           && strcmp(u->return_hosts[1], "http://intranet:8080") == 0,
       "return_hosts are read in order");
    ok(u != NULL && gp_unit_allows(u, "103001", 6) && gp_unit_allows(u, "A7", 2)
           && !gp_unit_allows(u, "203", 3) && !gp_unit_allows(u, "10300", 5)
           && !gp_unit_allows(u, "1030011", 7),
       "a unit is allowed exactly its items");

    u = gp_registry_unit(reg, "unit_sm3", 8);
    ok(u != NULL && u->scheme == GP_SCHEME_HMAC_SM3 && u->secret_len == 16
           && memcmp(u->secret, SECRET_SM3, 16) == 0 && u->nitems == 0
           && u->webhook == NULL && u->nreturn_hosts == 0,
       "a 16-byte secret is enough; no items, webhook or return_hosts are "
       "fine");

    u = gp_registry_unit(reg, "a-rsa", 5);
    ok(u != NULL && u->scheme == GP_SCHEME_RSA_SHA256 && u->secret == NULL
           && u->key_file != NULL && u->key_file[0] == '/'
           && strstr(u->key_file, "..") == NULL
           && strstr(u->key_file, "/keys/rsa.pem") != NULL,
       "a relative key file becomes an absolute path");
    ok(u != NULL && u->webhook_secret_len == 16
           && memcmp(u->webhook_secret, SECRET_SM3, 16) == 0,
       "an RSA unit's webhook secret is read from webhook_secret_file");

    u = gp_registry_unit(reg, "BANK-ICBC", 9);
    ok(u != NULL && u->scheme == GP_SCHEME_SM2_SM3 && u->nitems == 0
           && u->key_file != NULL && u->key_file[0] == '/' && u->bank,
       "a bank with an absolute key file and no items loads");
    ok(gp_registry_unit(reg, "a-rsa", 5) != NULL
           && !gp_registry_unit(reg, "a-rsa", 5)->bank,
       "a unit without \"kind\" is no bank");

    ok(gp_registry_unit(reg, "330100-EDU-00", 13) == NULL
           && gp_registry_unit(reg, "330100-EDU-0011", 15) == NULL
           && gp_registry_unit(reg, "", 0) == NULL
           && gp_registry_unit(reg, "BANK-ICBCx", 9) != NULL,
       "unit lookup matches exactly n bytes");

    it = gp_registry_item(reg, "103001", 6);
    ok(it != NULL && it->rule == GP_AMOUNT_RANGE && it->min == 1
           && it->max == 10000000000LL && strcmp(it->department, "edu") == 0
           && strcmp(it->name, "tuition") == 0,
       "a range item is read");
    ok(it != NULL && it->nsplit == 2 && it->split[0].level == GP_LEVEL_CITY
           && it->split[0].percent == 60
           && it->split[1].level == GP_LEVEL_PROVINCE
           && it->split[1].percent == 40
           && strcmp(gp_level_name(it->split[1].level), "province") == 0,
       "an item's revenue split is read in order: city 60%%, province 40%%");
    it = gp_registry_item(reg, "A7", 2);
    ok(it != NULL && it->rule == GP_AMOUNT_FIXED && it->min == 20000
           && it->max == 20000 && it->department != NULL
           && it->department[0] == '\0',
       "a fixed item has min == max; a missing department is empty");
    it = gp_registry_item(reg, "203", 3);
    ok(it != NULL && it->rule == GP_AMOUNT_FREE && it->min == 1
           && it->max == GP_FEN_MAX,
       "a free item spans 1 .. 10^10 fen");
    ok(gp_registry_item(reg, "20", 2) == NULL
           && gp_registry_item(reg, "a7", 2) == NULL,
       "item lookup is exact and case-sensitive");

    gp_registry_free(reg);
    reg = NULL;

    /* a relative registry path: key files still become absolute */
    if (getcwd(cwd, sizeof(cwd)) != NULL && chdir(dir) == 0) {
        rc = gp_registry_load("registry.json", &reg, err, sizeof(err));
        u = (rc == 0) ? gp_registry_unit(reg, "a-rsa", 5) : NULL;
        ok(u != NULL && u->key_file[0] == '/',
           "a registry loaded by a relative path works");
        gp_registry_free(reg);
        if (chdir(cwd) != 0) {
            ok(0, "chdir back");
        }
    }

    gp_registry_free(NULL);
    ok(1, "freeing a NULL registry is harmless");
}


/*
 * loads json as a registry and expects an error that mentions each of want1,
 * want2
 */
static void
reg_expect_error(const char *dir, const char *json, const char *want1,
                 const char *want2, const char *name)
{
    char           path[4096], err[1024];
    gp_registry_t *reg = (gp_registry_t *) 1;
    int            rc;

    write_file(dir, "bad.json", json);
    reg_path(dir, "bad.json", path, sizeof(path));

    err[0] = '\0';
    rc = gp_registry_load(path, &reg, err, sizeof(err));
    printf("# %s\n", err);

    if (!ok(rc == -1 && reg == NULL && strstr(err, path) != NULL
                && (want1 == NULL || strstr(err, want1) != NULL)
                && (want2 == NULL || strstr(err, want2) != NULL)
                && strstr(err, "s3cr3t") == NULL
                && strstr(err, "tiny-secret") == NULL,
            "registry error: %s", name))
    {
        if (rc == 0) {
            gp_registry_free(reg);
        }
    }
}


static void
test_registry_errors(const char *dir)
{
    char           json[4096], path[4096], err[512];
    gp_registry_t *reg;

    reg_expect_error(dir, "{\"units\":[", NULL, NULL, "not JSON");
    reg_expect_error(dir, "[]", "top level", NULL,
                     "top level is not an object");
    reg_expect_error(dir, "{\"units\":[]," ITEMS ",\"extra\":1}", "extra", NULL,
                     "unknown top-level field");
    reg_expect_error(dir, "{\"units\":{}," ITEMS "}", "units", NULL,
                     "units is not an array");
    reg_expect_error(dir, "{" ITEMS "}", "units", NULL, "units is missing");
    reg_expect_error(dir, "{\"units\":[],\"units\":[]," ITEMS "}", "units",
                     NULL, "a duplicate JSON key");

#define SPLIT_ITEM(split)                                                      \
    "{\"units\":[],\"items\":[{\"code\":\"S1\",\"name\":\"s\","                \
    "\"split\":" split ",\"amount\":{\"rule\":\"free\"}}]}"
    reg_expect_error(dir,
                     SPLIT_ITEM("[{\"level\":\"city\",\"percent\":60},"
                                "{\"level\":\"province\",\"percent\":30}]"),
                     "S1", "90%", "split shares that do not sum to 100");
    reg_expect_error(dir,
                     SPLIT_ITEM("[{\"level\":\"city\",\"percent\":50},"
                                "{\"level\":\"city\",\"percent\":50}]"),
                     "S1", "twice", "a split level listed twice");
    reg_expect_error(dir, SPLIT_ITEM("[{\"level\":\"town\",\"percent\":100}]"),
                     "S1", "town", "an unknown split level");
    reg_expect_error(dir,
                     SPLIT_ITEM("[{\"level\":\"city\",\"percent\":0},"
                                "{\"level\":\"county\",\"percent\":100}]"),
                     "S1", "split[0]", "a split share of 0%");
    reg_expect_error(dir,
                     SPLIT_ITEM("[{\"level\":\"city\",\"percent\":"
                                "99.5}]"),
                     "S1", "split[0]", "a fractional split share");
    reg_expect_error(dir, SPLIT_ITEM("[]"), "S1", "split", "an empty split");
    reg_expect_error(dir,
                     SPLIT_ITEM("[{\"level\":\"city\",\"percent\":100,"
                                "\"x\":1}]"),
                     "S1", "split[0]", "an unknown field in a split share");
#undef SPLIT_ITEM

    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"secrets\":\"x\"}]," ITEMS "}",
        "u1", "secrets", "an unknown unit field names the unit and the field");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"kind\":\"branch\"}]," ITEMS "}",
        "u1", "kind", "a unit kind other than unit or bank");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"return_hosts\":[\"https://Evil.example/x\"]}]," ITEMS "}",
        "u1", "return_hosts[0]", "a return host that is a URL is refused");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"return_hosts\":\"www.school.example\"}]," ITEMS "}",
        "u1", "return_hosts", "return_hosts that is not an array is refused");
    reg_expect_error(dir,
                     "{\"units\":[{\"id\":\"\",\"name\":\"n\"}]," ITEMS "}",
                     "units[0]", NULL, "an empty unit id");
    reg_expect_error(dir,
                     "{\"units\":[{\"id\":\"a b\",\"name\":\"n\"}]," ITEMS "}",
                     "units[0]", "\"a b\"", "a unit id with a space");
    reg_expect_error(
        dir,
        "{\"units\":[" UNIT_OK(
            "ok1") ",{\"id\":\"\xe5\x8d\x95\",\"name\":\"n\"}]," ITEMS "}",
        "units[1]", NULL, "a unit id that is not ASCII");
    reg_expect_error(
        dir, "{\"units\":[{\"id\":\"" ID64 "X\",\"name\":\"n\"}]," ITEMS "}",
        "units[0]", "1-64", "a 65-character unit id");
    reg_expect_error(dir, "{\"units\":[{\"id\":7}]," ITEMS "}", "units[0]",
                     NULL, "a numeric unit id");
    reg_expect_error(dir, "{\"units\":[\"u1\"]," ITEMS "}", "units[0]", NULL,
                     "a unit that is not an object");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"scheme\":\"GOVPAY-HMAC-SHA256\","
        "\"secret_file\":\"keys/sha.secret\"}]," ITEMS "}",
        "u1", "name", "a unit without a name");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\",\"scheme\":\"HMAC\","
        "\"secret_file\":\"keys/sha.secret\"}]," ITEMS "}",
        "u1", "scheme", "an unknown scheme");
    reg_expect_error(dir,
                     "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
                     "\"scheme\":\"GOVPAY-HMAC-SM3\"}]," ITEMS "}",
                     "u1", "secret_file", "an HMAC unit without a secret file");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"key_file\":\"keys/rsa.pem\"}]," ITEMS "}",
        "u1", "key_file", "an HMAC unit with a key file");
    reg_expect_error(dir,
                     "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
                     "\"scheme\":\"GOVPAY-RSA-SHA256\"}]," ITEMS "}",
                     "u1", "key_file", "an RSA unit without a key file");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-SM2-SM3\",\"key_file\":\"keys/rsa.pem\","
        "\"secret_file\":\"keys/sha.secret\"}]," ITEMS "}",
        "u1", "secret_file", "an SM2 unit with a secret file");
    reg_expect_error(dir,
                     "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
                     "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/"
                     "none.secret\"}]," ITEMS "}",
                     "u1", "none.secret", "a missing secret file");
    reg_expect_error(dir,
                     "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
                     "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/"
                     "short.secret\"}]," ITEMS "}",
                     "u1", "short.secret",
                     "a 15-byte secret is refused without printing it");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"\"}]," ITEMS "}",
        "u1", "secret_file", "an empty secret file name");
    reg_expect_error(dir,
                     "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
                     "\"scheme\":\"GOVPAY-RSA-SHA256\",\"key_file\":\"keys/"
                     "none.pem\"}]," ITEMS "}",
                     "u1", "none.pem", "a missing key file");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-RSA-SHA256\",\"key_file\":\"keys\"}]," ITEMS "}",
        "u1", "regular file", "a key file that is a folder");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"items\":[\"999\"]}]," ITEMS "}",
        "u1", "999", "a unit allowed an item that is not in the catalogue");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"items\":[\"103001\",\"103001\"]}]," ITEMS "}",
        "u1", "103001", "a unit listing an item twice");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"items\":\"103001\"}]," ITEMS "}",
        "u1", "items", "unit items that are not an array");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"items\":[103001]}]," ITEMS "}",
        "u1", "items[0]", "a unit item that is not a string");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"webhook\":\"ftp://x\"}]," ITEMS "}",
        "u1", "webhook", "a webhook that is not http(s)");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-HMAC-SHA256\",\"secret_file\":\"keys/sha.secret\","
        "\"webhook\":5}]," ITEMS "}",
        "u1", "webhook", "a numeric webhook");
    reg_expect_error(
        dir,
        "{\"units\":[{\"id\":\"u1\",\"name\":\"n\","
        "\"scheme\":\"GOVPAY-RSA-SHA256\",\"key_file\":\"keys/rsa.pem\","
        "\"webhook_secret_file\":\"keys/none.secret\"}]," ITEMS "}",
        "u1", "none.secret", "a webhook secret file that does not exist");
    reg_expect_error(dir,
                     "{\"units\":[" UNIT_OK("dup") "," UNIT_OK("x") "," UNIT_OK(
                         "dup") "]," ITEMS "}",
                     "dup", "duplicate", "a duplicate unit id");

    reg_expect_error(
        dir,
        "{\"units\":[],\"items\":[{\"code\":\"1\",\"name\":\"a\","
        "\"amount\":{\"rule\":\"free\"}},{\"code\":\"1\",\"name\":\"b\","
        "\"amount\":{\"rule\":\"free\"}}]}",
        "\"1\"", "duplicate", "a duplicate item code");
    reg_expect_error(
        dir,
        "{\"units\":[],\"items\":[{\"code\":\"10-30\",\"name\":\"a\","
        "\"amount\":{\"rule\":\"free\"}}]}",
        "items[0]", "\"10-30\"", "an item code with a dash");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"free\"}}]}",
                     "items[0]", NULL, "an empty item code");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":"
                     "\"123456789012345678901234567890123\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"free\"}}]}",
                     "items[0]", NULL, "a 33-character item code");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"price\":1,\"amount\":{\"rule\":\"free\"}}]}",
                     "\"7\"", "price", "an unknown item field");
    reg_expect_error(
        dir, "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\"}]}",
        "\"7\"", "amount", "an item without an amount");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"any\"}}]}",
                     "\"7\"", "rule", "an unknown rule");
    reg_expect_error(
        dir,
        "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
        "\"amount\":{\"rule\":\"fixed\",\"amount\":100,\"min\":1}}]}",
        "\"7\"", "min", "a fixed rule with a min");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"free\",\"max\":5}}]}",
                     "\"7\"", "max", "a free rule with a max");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"fixed\",\"amount\":0}}]}",
                     "\"7\"", NULL, "a fixed amount of 0");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"fixed\",\"amount\":1.5}}]}",
                     "\"7\"", NULL, "a fractional amount");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"fixed\",\"amount\":\"100\"}}]}",
                     "\"7\"", NULL, "an amount given as a string");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"range\",\"min\":5,\"max\":4}}]}",
                     "\"7\"", NULL, "a range with min > max");
    reg_expect_error(
        dir,
        "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
        "\"amount\":{\"rule\":\"range\",\"min\":1,\"max\":10000000001}}]}",
        "\"7\"", NULL, "a range above 10^10 fen");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"range\",\"min\":-1,\"max\":10}}]}",
                     "\"7\"", NULL, "a negative minimum");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"range\",\"min\":1,"
                     "\"max\":99999999999999999999999}}]}",
                     NULL, NULL, "a huge number");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\","
                     "\"amount\":{\"rule\":\"range\",\"min\":1}}]}",
                     "\"7\"", NULL, "a range without a max");
    reg_expect_error(dir,
                     "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"\","
                     "\"amount\":{\"rule\":\"free\"}}]}",
                     "\"7\"", "name", "an empty item name");
    reg_expect_error(
        dir,
        "{\"units\":[],\"items\":[{\"code\":\"7\",\"name\":\"a\\u0000b\","
        "\"amount\":{\"rule\":\"free\"}}]}",
        "line 1", NULL, "an item name with a NUL (refused by the JSON parser)");

    reg_path(dir, "missing.json", path, sizeof(path));
    reg = NULL;
    ok(gp_registry_load(path, &reg, err, sizeof(err)) == -1 && reg == NULL
           && strstr(err, path) != NULL,
       "a missing registry file is an error naming it");

    write_file(dir, "empty.json", "{\"units\":[" UNIT_OK(ID64) "]," ITEMS "}");
    reg_path(dir, "empty.json", path, sizeof(path));
    reg = NULL;
    ok(strlen(ID64) == 64 && gp_registry_load(path, &reg, err, sizeof(err)) == 0
           && gp_registry_unit(reg, ID64, 64) != NULL,
       "a 64-character unit id is fine");
    gp_registry_free(reg);

    snprintf(json, sizeof(json), "%s", "{\"units\":[],\"items\":[]}");
    write_file(dir, "empty.json", json);
    reg_path(dir, "empty.json", path, sizeof(path));
    ok(gp_registry_load(path, &reg, err, sizeof(err)) == 0 && reg->nunits == 0
           && gp_registry_unit(reg, "x", 1) == NULL
           && gp_registry_item(reg, "x", 1) == NULL,
       "an empty registry loads and finds nothing");
    gp_registry_free(reg);

    ok(gp_registry_load(path, &reg, err, 0) == 0,
       "a zero-length error buffer is fine");
    gp_registry_free(reg);
}


/* the receipt ledger: line format, chain hash, writer's view of the file */
static void
test_ledger(const char *dir)
{
    unsigned char     zero[32], h1[32], h2[32];
    char              path[512], err[256], *l1, *l2;
    size_t            n1, n2;
    gp_ledger_entry_t e;
    gp_ledger_t       l;
    FILE             *f;

    memset(zero, 0, sizeof(zero));

    ok(gp_ledger_hash(zero, "{\"a\":1}", 7, "{}", 2, h1) == 0
           && gp_ledger_hash(h1, "{\"b\":2}", 7, "{}", 2, h2) == 0,
       "ledger: SM3 entry hashes");

    l1 =
        gp_ledger_format("33010126", 1, zero, h1, "{\"a\":1}", 7, "{}", 2, &n1);
    l2 = gp_ledger_format("33010126", 2, h1, h2, "{\"b\":2}", 7, "{}", 2, &n2);
    ok(l1 != NULL && l2 != NULL && l1[n1 - 1] == '\n',
       "ledger: a formatted entry is one line");

    ok(gp_ledger_parse(l1, n1 - 1, &e, err, sizeof(err)) == 0 && e.number == 1
           && strcmp(e.code, "33010126") == 0 && e.doc_len == 7
           && memcmp(e.doc, "{\"a\":1}", 7) == 0 && memcmp(e.hash, h1, 32) == 0,
       "ledger: parse gives back code, number, hash and document");
    gp_ledger_entry_free(&e);

    ok(gp_ledger_parse("33010126\t0000000001\tzz", 23, &e, err, sizeof(err))
           == -1,
       "ledger: a short line is refused");

    snprintf(path, sizeof(path), "%s/33010126.ledger", dir);
    f = fopen(path, "w");
    if (f != NULL) {
        fwrite(l1, 1, n1, f);
        fwrite(l2, 1, n2 / 2, f); /* a writer died in the middle */
        fclose(f);
    }

    ok(gp_ledger_open(&l, path, "33010126", err, sizeof(err)) == 0
           && gp_ledger_lock(&l) == 0
           && gp_ledger_sync(&l, err, sizeof(err)) == 0 && l.last == 1
           && memcmp(l.head, h1, 32) == 0 && l.size == (off_t) n1,
       "ledger: sync reads the entries and cuts a partial last line");

    ok(gp_ledger_append(&l, l2, n2, err, sizeof(err)) == 0
           && gp_ledger_sync(&l, err, sizeof(err)) == 0,
       "ledger: append, then sync sees nothing new");

    l.size = 0;
    l.last = 0;
    memset(l.head, 0, 32);
    ok(gp_ledger_sync(&l, err, sizeof(err)) == 0 && l.last == 2
           && memcmp(l.head, h2, 32) == 0,
       "ledger: a fresh read follows the chain to entry 2");

    gp_ledger_unlock(&l);
    gp_ledger_close(&l);
    unlink(path);
    free(l1);
    free(l2);
}


static void
test_schemes(void)
{
    gp_scheme_t s;
    int         i, good;

    good = 1;
    for (i = GP_SCHEME_HMAC_SHA256; i <= GP_SCHEME_SM2_SM3; i++) {
        const char *name = gp_scheme_name((gp_scheme_t) i);
        good &= name != NULL && gp_scheme_parse(name, strlen(name), &s) == 0
                && (int) s == i;
    }
    ok(good, "every scheme name parses back to its scheme");

    is_str(gp_scheme_name(GP_SCHEME_SM2_SM3), "GOVPAY-SM2-SM3",
           "the SM2 scheme name");
    is_str(gp_scheme_name((gp_scheme_t) 42), "UNKNOWN",
           "an unknown scheme has a printable name");
    ok(gp_scheme_parse("GOVPAY-HMAC-SHA25", 17, &s) == -1,
       "a cut scheme name is refused");
    ok(gp_scheme_parse("govpay-hmac-sha256", 18, &s) == -1,
       "scheme names are case-sensitive");
    ok(gp_scheme_parse("GOVPAY-SM2-SM3 trailing", 14, &s) == 0
           && s == GP_SCHEME_SM2_SM3,
       "scheme parsing reads exactly len bytes");
    ok(gp_scheme_parse("", 0, &s) == -1, "an empty scheme is refused");
}


/* ---- main ---------------------------------------------------------------- */

static void
remove_tree(const char *dir)
{
    static const char *files[] = { "keys/sha.secret",   "keys/sm3.secret",
                                   "keys/short.secret", "keys/rsa.pem",
                                   "registry.json",     "bad.json",
                                   "empty.json",        "code.key",
                                   "pii.keys" };
    char               path[4096];
    size_t             i;

    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        reg_path(dir, files[i], path, sizeof(path));
        unlink(path);
    }

    reg_path(dir, "keys", path, sizeof(path));
    rmdir(path);
    rmdir(dir);
}


int
main(void)
{
    char tmpl[] = "/tmp/gp_test_common.XXXXXX", *dir, keys[4096];

    dir = mkdtemp(tmpl);
    if (dir == NULL) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }

    reg_path(dir, "keys", keys, sizeof(keys));
    if (mkdir(keys, 0700) != 0
        || write_file(keys, "sha.secret", SECRET_SHA "\n\t \r\n") != 0
        || write_file(keys, "sm3.secret", SECRET_SM3 "\n") != 0
        || write_file(keys, "short.secret", "tiny-secret-15b\n\n") != 0
        || write_file(keys, "rsa.pem", "-----BEGIN PUBLIC KEY-----\n") != 0)
    {
        printf("Bail out! cannot write test files under %s\n", dir);
        return 1;
    }

    test_digests();
    test_hmac();
    test_hmac_keyed();
    test_threads();
    test_base64();
    test_hex_ct_random();
    test_aes_gcm();

    {
        char err[512];

        if (!ok(gp_seal_init(err, sizeof(err)) == 0,
                "libgcrypt is initialised and passes the SM4-GCM known "
                "answer"))
        {
            diag("error", err);
        }
    }

    test_sm4gcm();
    test_seal_keys(dir);
    test_seal_records();

    test_mod11_10();
    test_permutation();
    test_code_make_parse();
    test_shard_of();
    test_code_key_load(dir);

    test_fen_to_yuan();
    test_yuan_to_fen();
    test_time_format();
    test_time_parse();
    test_year2();
    test_utf8();
    test_text_controls();
    test_text_rules();
    test_authz();
    test_cst_and_receipt_ref();
    test_mask();
    test_json_escape();
    test_resident_id();
    test_uscc();
    test_form_parse();
    test_form_canonical();
    test_url_encode();

    test_registry_good(dir);
    test_registry_errors(dir);
    test_schemes();
    test_ledger(dir);

    remove_tree(dir);

    printf("1..%d\n", tap.n);
    if (tap.failed) {
        printf("# failed %d of %d\n", tap.failed, tap.n);
    }

    return tap.failed ? 1 : 0;
}
