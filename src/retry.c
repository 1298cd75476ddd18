/*
 * retry.c - which failures a retry could cure and how long to wait: pure
 * functions shared by the single call and the bulk path, and the
 * monotonic clock their delays are scheduled on.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tc.h"

/* Failures before a full response arrived: resolving, connecting, timing
 * out, or the connection dropping. TLS verification failures are not here:
 * a retry would only fail again, and must never be tempting to disable. */
int tc_curl_code_retryable(CURLcode code)
{
    switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return 1;
    default:
        return 0;
    }
}

/* 408, 429 and the 5xx codes a gateway or an overloaded server answer. */
int tc_http_status_retryable(long status)
{
    switch (status) {
    case 408: case 429: case 500: case 502: case 503: case 504:
        return 1;
    default:
        return 0;
    }
}

/* Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date
 * (curl_getdate reads all three RFC 9110 forms). A date in the past is 0.
 * Returns -1 for anything else, which callers treat as no hint. */
double tc_retry_after_parse(const char *value, size_t n, time_t now)
{
    char tmp[128];
    while (n > 0 && (*value == ' ' || *value == '\t')) { value++; n--; }
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t')) n--;
    if (n == 0 || n >= sizeof tmp)
        return -1;
    size_t digits = 0;
    while (digits < n && value[digits] >= '0' && value[digits] <= '9')
        digits++;
    if (digits == n) {
        double seconds = 0;
        for (size_t i = 0; i < n; i++)
            seconds = seconds * 10 + (value[i] - '0');
        return seconds;
    }
    memcpy(tmp, value, n);
    tmp[n] = '\0';
    time_t when = curl_getdate(tmp, NULL);
    if (when == (time_t)-1)
        return -1;
    return when > now ? (double)(when - now) : 0.0;
}

/* min(0.5 * 2^n, 8) seconds times jitter in [0.75, 1]. */
double tc_backoff(int retry_index, double jitter)
{
    double d = 0.5;
    for (int i = 0; i < retry_index && d < 8.0; i++)
        d *= 2;
    if (d > 8.0)
        d = 8.0;
    return d * jitter;
}

/* Decide what follows attempt number attempts_made (1-based). A server's
 * Retry-After up to the ceiling lengthens the backoff, never shortens it:
 * "Retry-After: 0" (or a date in the past) would otherwise make the
 * retries back to back. A longer one ends the retries, since waiting
 * minutes inside a call helps nobody. */
tc_retry_verdict_t tc_retry_plan(int attempts_made, int max_retries,
                                 int retryable, double retry_after,
                                 double jitter, double *delay)
{
    *delay = 0;
    if (!retryable)
        return TC_RETRY_NOT_RETRYABLE;
    if (attempts_made > max_retries)
        return TC_RETRY_EXHAUSTED;
    if (retry_after > TC_RETRY_AFTER_CEILING)
        return TC_RETRY_TOO_LONG;
    double backoff = tc_backoff(attempts_made - 1, jitter);
    *delay = retry_after > backoff ? retry_after : backoff;
    return TC_RETRY_AGAIN;
}

const char *tc_retry_verdict_name(tc_retry_verdict_t v)
{
    static const char *const names[] = { "retry", "not_retryable", "exhausted", "retry_after_too_long" };
    return names[v];
}

/* Monotonic seconds, for schedules and elapsed times. */
double tc_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
