/*
 * check.c - pure checks on strings: IPv4 literals, hostnames, UTF-8,
 * tokens, E.164 numbers. No Lua, no I/O, no allocation, so each can be
 * tested and fuzzed alone. Every function takes an explicit length: Lua
 * strings may hold NULs.
 * SPDX-License-Identifier: MIT
 */
#include <string.h>
#include "tc.h"
#include "country_codes.h"

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }

/* A dotted quad: exactly four decimal octets 0-255, no leading zeros
 * (01.2.3.4 reads as octal to some resolvers, so it is ambiguous). */
int tc_check_ipv4(const char *s, size_t n)
{
    size_t i = 0;
    for (int octet = 0; octet < 4; octet++) {
        if (octet > 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
        size_t start = i;
        unsigned value = 0;
        while (i < n && is_digit((unsigned char)s[i]) && i - start < 3)
            value = value * 10 + (unsigned)(s[i++] - '0');
        size_t digits = i - start;
        if (digits == 0 || value > 255 || (digits > 1 && s[start] == '0'))
            return 0;
    }
    return i == n;
}

/* An RFC 1123 host name: labels of letters, digits and '-', 1-63 long, not
 * starting or ending with '-', 253 characters at most, one optional
 * trailing dot. The last label may not be all digits, so a malformed
 * dotted quad such as 256.1.1.1 is never mistaken for a name. */
int tc_check_hostname(const char *s, size_t n)
{
    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0 || n > 253)
        return 0;
    size_t label = 0;
    int all_digits = 1;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-')
                return 0;
            if (i == n && all_digits)
                return 0;
            label = 0;
            all_digits = 1;
            continue;
        }
        unsigned char c = (unsigned char)s[i];
        if (!is_alpha(c) && !is_digit(c) && c != '-')
            return 0;
        if (label == 0 && c == '-')
            return 0;
        if (!is_digit(c))
            all_digits = 0;
        label++;
    }
    return 1;
}

/* Number of code points in s, or -1 when s is not valid UTF-8 (overlong
 * forms, surrogates and values above U+10FFFF are invalid too). */
long tc_utf8_length(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    long count = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t extra;
        unsigned long cp, min;
        if (c < 0x80) { i++; count++; continue; }
        else if ((c & 0xE0) == 0xC0) { extra = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { extra = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { extra = 3; cp = c & 0x07; min = 0x10000; }
        else return -1;
        if (extra > n - i - 1)
            return -1;
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return -1;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return -1;
        i += extra + 1;
        count++;
    }
    return count;
}

/* ASCII white space: space, \t, \n, \v, \f, \r. */
int tc_has_whitespace(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))
            return 1;
    return 0;
}

/* A "sip:" or "sips:" URI prefix, in any case. */
int tc_has_sip_prefix(const char *s, size_t n)
{
    if (n >= 4 && strncasecmp(s, "sip:", 4) == 0)
        return 1;
    return n >= 5 && strncasecmp(s, "sips:", 5) == 0;
}

/* A UUID in its 8-4-4-4-12 hexadecimal form, any case. */
int tc_check_uuid(const char *s, size_t n)
{
    if (n != 36)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!is_digit(c) && !((c | 0x20) >= 'a' && (c | 0x20) <= 'f')) {
            return 0;
        }
    }
    return 1;
}

/* An E.164 number, ^\+[1-9][0-9]{1,14}$, that begins with an assigned
 * country calling code (the server checks with libphonenumber, whose data
 * country_codes.h holds). 0 when so, -1 when malformed, -2 when well formed
 * but no assigned code begins it. Codes are prefix-free, so the first
 * 1-3 digit prefix that is a code is the only one. */
int tc_check_e164(const char *s, size_t n)
{
    if (n < 3 || n > 16 || s[0] != '+' || s[1] == '0')
        return -1;
    for (size_t i = 1; i < n; i++)
        if (!is_digit((unsigned char)s[i]))
            return -1;
    unsigned code = 0;
    for (size_t i = 1; i <= 3 && i < n; i++) {
        code = code * 10 + (unsigned)(s[i] - '0');
        if (tc_country_code_bits[code >> 3] & (1u << (code & 7)))
            return 0;
    }
    return -2;
}

/* Only [A-Za-z0-9_-]: the Idempotency-Key alphabet. */
int tc_check_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alpha(c) && !is_digit(c) && c != '_' && c != '-')
            return 0;
    }
    return 1;
}

/* Hosts the API key may reach over plain http: 127.0.0.0/8, ::1 and
 * localhost (which libcurl always resolves to loopback itself). The host
 * is as libcurl's URL parser returns it: IPv6 in brackets. */
int tc_is_loopback_host(const char *host)
{
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0)
        return 1;
    return tc_check_ipv4(host, n) && strncmp(host, "127.", 4) == 0;
}

/* Levenshtein distance, for "did you mean"; strings past 64 bytes are far
 * from every field name, so they are not measured. */
size_t tc_edit_distance(const char *a, size_t na, const char *b, size_t nb)
{
    enum { MAX = 64 };
    size_t row[MAX + 1];
    if (na > MAX || nb > MAX)
        return (size_t)-1;
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[nb];
}
