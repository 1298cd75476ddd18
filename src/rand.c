/*
 * rand.c - randomness from the kernel. Forked nginx workers and pool-thread
 * VMs share any user-space seed, so idempotency keys and jitter come from
 * getrandom(2), never from math.random.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdint.h>
#include <sys/random.h>
#include "tc.h"

/* Fill p with n random bytes; 0 on success, -1 if the kernel refuses. */
int tc_random_bytes(void *p, size_t n)
{
    unsigned char *out = p;
    while (n > 0) {
        ssize_t got = getrandom(out, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        out += got;
        n -= (size_t)got;
    }
    return 0;
}

/* A random (version 4, RFC 4122 variant) UUID in lower-case text. */
int tc_uuid4(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    if (tc_random_bytes(b, sizeof b) != 0)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0F) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3F) | 0x80);
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 15];
    }
    *o = '\0';
    return 0;
}

/* A factor in [0.75, 1] that spreads retries of many clients apart. */
double tc_random_jitter(void)
{
    uint32_t r = 0;
    if (tc_random_bytes(&r, sizeof r) != 0)
        return 1.0;
    return 0.75 + 0.25 * ((double)r / (double)UINT32_MAX);
}
