/*
 * fuzz_classify.c - libFuzzer target for tc_exchange_classify (http.c): a
 * finished exchange made of fuzzed parts (curl code, HTTP status, buffer
 * flags, error buffer, raw header block) must be classified consistently
 * with the retry policy, and never read past what it was given.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include "fuzz.h"
#include "tc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_t f = { data, size };
    tc_exchange_t ex;
    tc_exchange_init(&ex);
    uint8_t c = fz_byte(&f);
    ex.code = (CURLcode)(c < 128 ? c % 100 : 0);               /* half the time OK */
    ex.status = (long)(int16_t)fz_u64(&f, 2);
    uint8_t flags = fz_byte(&f);
    ex.body.overflow = flags & 1;
    ex.body.oom = (flags >> 1) & 1;
    ex.head.oom = (flags >> 2) & 1;
    size_t elen;
    const char *e = fz_bytes(&f, CURL_ERROR_SIZE - 1, &elen);
    memcpy(ex.errbuf, e, elen);
    ex.errbuf[elen] = '\0';
    time_t now = (time_t)(int64_t)fz_u64(&f, 4);
    if (flags & 8) {   /* no header block at all */
        ex.head.data = NULL;
        ex.head.len = 0;
    } else {
        ex.head.data = fz_dup(f.p, f.n, 1);
        ex.head.len = ex.head.cap = f.n;
        ex.head.cap++;
    }

    tc_outcome_t out;
    memset(&out, 0xA5, sizeof out);
    tc_exchange_classify(&ex, &out, now);

    FZ_ASSERT(out.status == ex.status && out.curl_code == ex.code, "copied fields");
    FZ_ASSERT(out.oom == (ex.body.oom || ex.head.oom), "oom flag");
    FZ_ASSERT(out.retry_after == -1 || (out.retry_after >= 0 && !isnan(out.retry_after)),
              "retry_after %g", out.retry_after);
    if (ex.code == CURLE_OK) {
        int ok = ex.status >= 200 && ex.status < 300;
        FZ_ASSERT(out.kind == (ok ? TC_OUT_OK : TC_OUT_API), "kind %d for status %ld", out.kind, ex.status);
        FZ_ASSERT(out.retryable == tc_http_status_retryable(ex.status), "status retryable");
    } else {
        FZ_ASSERT(out.kind == TC_OUT_TRANSPORT, "kind %d for curl code %d", out.kind, (int)ex.code);
        FZ_ASSERT(out.message != NULL && strlen(out.message) < CURL_ERROR_SIZE, "message");
        if (ex.body.overflow || ex.code == CURLE_FILESIZE_EXCEEDED)
            FZ_ASSERT(!out.retryable, "an oversize body is never retried");
        else
            FZ_ASSERT(out.retryable == tc_curl_code_retryable(ex.code), "curl code retryable");
        if (ex.code == CURLE_PEER_FAILED_VERIFICATION || ex.code == CURLE_SSL_CACERT_BADFILE)
            FZ_ASSERT(!out.retryable, "TLS verification failures are never retried");
    }
    tc_exchange_free(&ex);
    return 0;
}
