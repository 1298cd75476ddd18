/*
 * fuzz_retry_after.c - libFuzzer target for retry.c: Retry-After parsing
 * (delta-seconds or an HTTP-date, read by curl_getdate), the backoff and
 * the retry plan, with the input's first bytes choosing "now", the attempt
 * numbers and the jitter.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include "fuzz.h"
#include "tc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_t f = { data, size };
    time_t now = (time_t)(int64_t)fz_u64(&f, 5);   /* about +-17000 years of seconds */
    int attempts = fz_byte(&f) % 16, max_retries = fz_byte(&f) % 12;
    int retryable = fz_byte(&f) & 1;
    double jitter = 0.75 + 0.25 * fz_byte(&f) / 255.0;

    char *v = fz_dup(f.p, f.n, 0);
    double ra = tc_retry_after_parse(v, f.n, now);
    FZ_ASSERT(ra == -1 || (ra >= 0 && !isnan(ra)), "retry_after %g", ra);

    /* all digits after trimming blanks: exactly that many seconds */
    size_t a = 0, b = f.n;
    while (a < b && (v[a] == ' ' || v[a] == '\t')) a++;
    while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t')) b--;
    int digits = b > a && b - a < 128;
    for (size_t i = a; digits && i < b; i++)
        digits = v[i] >= '0' && v[i] <= '9';
    if (digits) {
        double want = 0;
        for (size_t i = a; i < b; i++)
            want = want * 10 + (v[i] - '0');
        FZ_ASSERT(ra == want, "delta-seconds %g, want %g", ra, want);
    } else if (b - a >= 128 || a == b) {
        FZ_ASSERT(ra == -1, "long or blank value gave %g", ra);
    }
    free(v);

    double backoff = tc_backoff(attempts, jitter);
    FZ_ASSERT(backoff >= 0.375 - 1e-9 && backoff <= 8.0 + 1e-9, "backoff %g", backoff);

    double delay = -1;
    tc_retry_verdict_t verdict = tc_retry_plan(attempts + 1, max_retries, retryable, ra, jitter, &delay);
    FZ_ASSERT(verdict >= TC_RETRY_AGAIN && verdict <= TC_RETRY_TOO_LONG, "verdict %d", (int)verdict);
    FZ_ASSERT(tc_retry_verdict_name(verdict) != NULL, "no verdict name");
    if (verdict == TC_RETRY_AGAIN) {
        FZ_ASSERT(retryable && attempts + 1 <= max_retries, "retried past the limit");
        FZ_ASSERT(delay >= 0 && delay <= TC_RETRY_AFTER_CEILING, "delay %g", delay);
        FZ_ASSERT(delay >= backoff, "delay %g under the backoff %g", delay, backoff);
        if (ra >= 0)
            FZ_ASSERT(delay == (ra > backoff ? ra : backoff), "Retry-After lengthens the backoff only");
    } else {
        FZ_ASSERT(delay == 0, "no delay without a retry");
        if (verdict == TC_RETRY_TOO_LONG)
            FZ_ASSERT(ra > TC_RETRY_AFTER_CEILING, "too long at %g", ra);
    }
    return 0;
}
