/*
 * fuzz.h - shared by the libFuzzer targets: a reader that takes bytes off
 * the fuzz input (zeros once it runs dry) and an assertion that aborts
 * with a message, so a broken property is a crash libFuzzer keeps.
 * SPDX-License-Identifier: MIT
 */
#ifndef TC_FUZZ_H
#define TC_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct fz { const uint8_t *p; size_t n; } fz_t;

static inline uint8_t fz_byte(fz_t *f)
{
    if (f->n == 0)
        return 0;
    f->n--;
    return *f->p++;
}

static inline uint64_t fz_u64(fz_t *f, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | fz_byte(f);
    return v;
}

/* Up to `max` bytes (the count taken from the input); *len gets the count. */
static inline const char *fz_bytes(fz_t *f, size_t max, size_t *len)
{
    size_t want = fz_byte(f);
    if (want > max) want = max;
    if (want > f->n) want = f->n;
    const char *s = (const char *)f->p;
    f->p += want;
    f->n -= want;
    *len = want;
    return s;
}

#define FZ_ASSERT(cond, ...)                                              \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: property failed: %s: ", __FILE__,    \
                    __LINE__, #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            abort();                                                      \
        }                                                                 \
    } while (0)

/* A heap copy of exactly n bytes (plus a NUL when nul is set), so ASan
 * sees every read past the end. The caller frees it. */
static inline char *fz_dup(const uint8_t *p, size_t n, int nul)
{
    size_t size = n + (nul ? 1 : 0);
    char *d = malloc(size ? size : 1);
    if (d == NULL) abort();
    if (n) memcpy(d, p, n);
    if (nul) d[n] = '\0';
    return d;
}

#endif
