/*
 * fuzz_checks.c - libFuzzer target for the pure string checks of check.c:
 * each runs on an exact-size heap copy of the input (so ASan sees any read
 * past the end) and is held to properties and to small reference
 * implementations written independently of the code under test.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <strings.h>
#include "fuzz.h"
#include "tc.h"
#include "country_codes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reference: code points of valid UTF-8 = bytes that are not 10xxxxxx. */
static long count_lead_bytes(const char *s, size_t n)
{
    long c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static int ref_whitespace(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] && strchr(" \t\n\v\f\r", s[i]))
            return 1;
    return 0;
}

static int ref_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c < 128 && (isalnum(c) || c == '_' || c == '-')))
            return 0;
    }
    return 1;
}

/* Reference dotted quad: parse with sscanf-free digit counting and print
 * back; a canonical literal round-trips exactly. */
static int ref_ipv4(const char *s, size_t n)
{
    unsigned o[4];
    size_t i = 0;
    char buf[32];
    for (int k = 0; k < 4; k++) {
        if (k && (i >= n || s[i++] != '.'))
            return 0;
        size_t st = i;
        unsigned v = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && i - st < 4)
            v = v * 10 + (unsigned)(s[i++] - '0');
        if (i == st || i - st > 3 || v > 255)
            return 0;
        o[k] = v;
    }
    if (i != n)
        return 0;
    int len = snprintf(buf, sizeof buf, "%u.%u.%u.%u", o[0], o[1], o[2], o[3]);
    return (size_t)len == n && memcmp(buf, s, n) == 0;
}

/* Reference E.164: counts the digits after '+', then tries every code of
 * the table as a decimal prefix (so the prefix-free claim is checked too,
 * and the bit map against its stated count). */
static int ref_e164(const char *s, size_t n)
{
    size_t d = 0;
    if (n == 0 || s[0] != '+')
        return -1;
    while (1 + d < n && s[1 + d] >= '0' && s[1 + d] <= '9')
        d++;
    if (1 + d != n || d < 2 || d > 15 || s[1] == '0')
        return -1;
    int found = 0, total = 0;
    for (unsigned c = 0; c < 1000; c++) {
        if (!(tc_country_code_bits[c / 8] >> (c % 8) & 1))
            continue;
        char code[8];
        int len = snprintf(code, sizeof code, "%u", c);
        total++;
        if ((size_t)len <= d && memcmp(code, s + 1, (size_t)len) == 0)
            found++;
    }
    FZ_ASSERT(total == TC_COUNTRY_CODE_COUNT, "%d codes in the map", total);
    FZ_ASSERT(found <= 1, "%d codes begin '%.*s'", found, (int)n, s);
    return found ? 0 : -2;
}

static void check_one(const char *s, size_t n)
{
    int ip = tc_check_ipv4(s, n);
    int host = tc_check_hostname(s, n);
    long u8 = tc_utf8_length(s, n);
    int ws = tc_has_whitespace(s, n);
    int sip = tc_has_sip_prefix(s, n);
    int uuid = tc_check_uuid(s, n);
    int tok = tc_check_token(s, n);
    int e164 = tc_check_e164(s, n);

    FZ_ASSERT(ip == ref_ipv4(s, n), "ipv4 %d vs reference", ip);
    FZ_ASSERT(!(ip && host), "a dotted quad is never a hostname");
    FZ_ASSERT(u8 >= -1 && u8 <= (long)n, "utf8_length %ld of %zu bytes", u8, n);
    if (u8 >= 0)
        FZ_ASSERT(u8 == count_lead_bytes(s, n), "utf8_length %ld", u8);
    FZ_ASSERT(ws == ref_whitespace(s, n), "whitespace %d", ws);
    FZ_ASSERT(tok == ref_token(s, n), "token %d", tok);
    FZ_ASSERT(sip == ((n >= 4 && strncasecmp(s, "sip:", 4) == 0) || (n >= 5 && strncasecmp(s, "sips:", 5) == 0)),
              "sip prefix %d", sip);
    if (host) {
        /* a hostname is plain ASCII, no blanks, no scheme, and short */
        FZ_ASSERT(n <= 254 && u8 == (long)n && !ws && !sip, "hostname of %zu bytes", n);
        FZ_ASSERT(s[0] != '-' && s[0] != '.', "hostname starts with %c", s[0]);
    }
    if (ip)
        FZ_ASSERT(n >= 7 && n <= 15 && !ws && !tok && u8 == (long)n, "ipv4 of %zu bytes", n);
    if (uuid)
        FZ_ASSERT(n == 36 && tok && !ws && u8 == 36, "uuid");
    FZ_ASSERT(e164 == ref_e164(s, n), "e164 %d vs reference", e164);
    if (e164 != -1)
        FZ_ASSERT(n >= 3 && n <= 16 && !ws && !tok && !host && !ip && u8 == (long)n, "e164 of %zu bytes", n);
}

/* Levenshtein properties on three strings cut from the input. */
static void check_distance(const char *a, size_t na, const char *b, size_t nb, const char *c, size_t nc)
{
    size_t ab = tc_edit_distance(a, na, b, nb);
    size_t ba = tc_edit_distance(b, nb, a, na);
    FZ_ASSERT(ab == ba, "d(a,b)=%zu d(b,a)=%zu", ab, ba);
    if (na > 64 || nb > 64) {
        FZ_ASSERT(ab == (size_t)-1, "long strings are not measured");
        return;
    }
    size_t lo = na > nb ? na - nb : nb - na, hi = na > nb ? na : nb;
    FZ_ASSERT(ab >= lo && ab <= hi, "d=%zu outside [%zu, %zu]", ab, lo, hi);
    FZ_ASSERT(tc_edit_distance(a, na, a, na) == 0, "d(a,a) != 0");
    FZ_ASSERT((ab == 0) == (na == nb && memcmp(a, b, na) == 0), "d=0 iff equal");
    if (nc <= 64) {
        size_t ac = tc_edit_distance(a, na, c, nc), cb = tc_edit_distance(c, nc, b, nb);
        FZ_ASSERT(ab <= ac + cb, "triangle: %zu > %zu + %zu", ab, ac, cb);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fz_dup(data, size, 0);
    check_one(s, size);
    free(s);

    /* loopback needs a C string: up to the first NUL */
    char *z = fz_dup(data, size, 1);
    size_t zn = strlen(z);
    int lb = tc_is_loopback_host(z);
    if (lb)
        FZ_ASSERT(strcasecmp(z, "localhost") == 0 || strcmp(z, "[::1]") == 0
                  || (tc_check_ipv4(z, zn) && strncmp(z, "127.", 4) == 0), "loopback '%s'", z);
    if (tc_check_ipv4(z, zn))
        FZ_ASSERT(lb == (strncmp(z, "127.", 4) == 0), "127/8 is loopback");
    free(z);

    /* edit distance: the input cut in three at its first two '\n' */
    const char *p = (const char *)data, *end = p + size;
    const char *n1 = memchr(p, '\n', size);
    const char *n2 = n1 ? memchr(n1 + 1, '\n', (size_t)(end - n1 - 1)) : NULL;
    size_t na = n1 ? (size_t)(n1 - p) : size;
    size_t nb = n1 ? (size_t)((n2 ? n2 : end) - n1 - 1) : 0;
    size_t nc = n2 ? (size_t)(end - n2 - 1) : 0;
    char *a = fz_dup((const uint8_t *)p, na, 0);
    char *b = fz_dup((const uint8_t *)(n1 ? n1 + 1 : end), nb, 0);
    char *c = fz_dup((const uint8_t *)(n2 ? n2 + 1 : end), nc, 0);
    check_distance(a, na, b, nb, c, nc);
    free(a); free(b); free(c);
    return 0;
}
