/*
 * http.c - one HTTP exchange: set up an easy handle for a request, collect
 * the response within caps, and classify the result. No Lua here, so the
 * single call and a curl-multi bulk path share it unchanged.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "tc.h"

void tc_exchange_init(tc_exchange_t *ex)
{
    memset(ex, 0, sizeof *ex);
    tc_buf_init(&ex->body, TC_BODY_LIMIT);
    tc_buf_init(&ex->head, TC_HEAD_LIMIT);
}

/* Free what the exchange owns except the easy handle, whose connections
 * belong to the client (see tc_client_close). Safe to call twice. */
void tc_exchange_free(tc_exchange_t *ex)
{
    curl_slist_free_all(ex->headers);
    ex->headers = NULL;
    tc_buf_free(&ex->body);
    tc_buf_free(&ex->head);
}

/* libcurl write callback: append or abort. Returning a short count makes
 * libcurl fail with CURLE_WRITE_ERROR; the buffer's flags say why. */
static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    tc_exchange_t *ex = ud;
    size_t n = size * nmemb;
    return tc_buf_append(&ex->body, p, n) == 0 ? n : 0;
}

/* libcurl header callback: keep the header block of the last response
 * only (a 100 Continue or a proxy's CONNECT reply come before it).
 * Headers past the cap are dropped rather than failing the request. */
static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    tc_exchange_t *ex = ud;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0)
        tc_buf_clear(&ex->head);
    tc_buf_append(&ex->head, p, n);
    return n;
}

/* Append through a temporary so a failed append leaks nothing. */
static int add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *t = curl_slist_append(*list, line);
    if (t == NULL)
        return -1;
    *list = t;
    return 0;
}

/* Sets every option of the request on ex->easy (which must exist). Returns
 * 0, or -1 when memory ran out. Everything allocated is owned by ex. */
int tc_exchange_prepare(tc_exchange_t *ex, tc_client_t *c, const tc_request_t *rq)
{
    CURL *h = ex->easy;

    /* reset clears options but keeps live connections and caches */
    curl_easy_reset(h);
    curl_slist_free_all(ex->headers);
    ex->headers = NULL;
    tc_buf_clear(&ex->body);
    tc_buf_clear(&ex->head);
    ex->errbuf[0] = '\0';
    ex->code = CURLE_OK;
    ex->status = 0;

    struct curl_slist **hl = &ex->headers;
    if ((c->auth_header && add_header(hl, c->auth_header) != 0)
        || add_header(hl, "Accept: application/json") != 0
        || add_header(hl, c->user_agent) != 0
        || add_header(hl, "Expect:") != 0
        || (rq->body && add_header(hl, "Content-Type: application/json") != 0))
        return -1;
    if (rq->idempotency_key) {
        char idem[300];   /* the key is at most 255 characters (checked by the caller) */
        snprintf(idem, sizeof idem, "Idempotency-Key: %s", rq->idempotency_key);
        if (add_header(hl, idem) != 0)
            return -1;
    }

    curl_easy_setopt(h, CURLOPT_URL, rq->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, ex->headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, c->allow_http ? "http,https" : "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
    if (c->proxy)
        curl_easy_setopt(h, CURLOPT_PROXY, c->proxy);
    /* loopback is never proxied, whatever the environment says */
    curl_easy_setopt(h, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)TC_BODY_LIMIT);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ex->errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, ex);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, ex);
    tc_sockets_adopt(&c->sockets, h);
    if (strcmp(rq->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
    } else {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method);
    }
    return 0;
}

/* Finds header `name` (case-insensitive) in a raw header block; returns
 * its value with surrounding blanks trimmed, or NULL. */
const char *tc_header_find(const char *head, size_t len, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *end = head + len;
    for (const char *line = head; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - line) > nlen && line[nlen] == ':'
            && strncasecmp(line, name, nlen) == 0) {
            const char *v = line + nlen + 1, *e = eol;
            while (v < e && (*v == ' ' || *v == '\t')) v++;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
            *vlen = (size_t)(e - v);
            return v;
        }
        line = eol + 1;
    }
    return NULL;
}

/* Decides what a finished exchange means: success, an API answer, or a
 * transport failure, and whether a later attempt could cure it. */
void tc_exchange_classify(const tc_exchange_t *ex, tc_outcome_t *out, time_t now)
{
    size_t vlen;
    const char *v;

    memset(out, 0, sizeof *out);
    out->status = ex->status;
    out->curl_code = ex->code;
    out->retry_after = -1;
    out->oom = ex->body.oom || ex->head.oom;
    if ((v = tc_header_find(ex->head.data ? ex->head.data : "", ex->head.len,
                            "Retry-After", &vlen)) != NULL)
        out->retry_after = tc_retry_after_parse(v, vlen, now);

    if (ex->code == CURLE_OK) {
        out->kind = (ex->status >= 200 && ex->status < 300) ? TC_OUT_OK : TC_OUT_API;
        out->retryable = tc_http_status_retryable(ex->status);
        return;
    }
    out->kind = TC_OUT_TRANSPORT;
    if (ex->body.overflow || ex->code == CURLE_FILESIZE_EXCEEDED) {
        out->message = "response body exceeds the 1 MiB limit";
        out->retryable = 0;
        return;
    }
    out->retryable = tc_curl_code_retryable(ex->code);
    out->message = ex->errbuf[0] ? ex->errbuf : curl_easy_strerror(ex->code);
}
