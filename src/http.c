/*
 * http.c - one HTTP exchange: set up an easy handle for a request, collect
 * the response within caps, and classify the result. No Lua here, so the
 * single call and a curl-multi bulk path share it unchanged.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "tc.h"

static const char CONTENT_TYPE_LINE[] = "Content-Type: application/json";
static const char IDEM_PREFIX[] = "Idempotency-Key: ";

void tc_exchange_init(tc_exchange_t *ex)
{
    memset(ex, 0, sizeof *ex);
    tc_buf_init(&ex->body, TC_BODY_LIMIT);
    tc_buf_init(&ex->head, TC_HEAD_LIMIT);
    memcpy(ex->ctype.line, CONTENT_TYPE_LINE, sizeof CONTENT_TYPE_LINE);
    ex->ctype.node.data = ex->ctype.line;
    ex->idem.node.data = ex->idem.line;
}

/* The handle was replaced (or is about to be): nothing is set on it. */
void tc_exchange_forget(tc_exchange_t *ex)
{
    if (ex->last)
        ex->last->next = NULL;   /* our own lines are not libcurl's to free */
    curl_slist_free_all(ex->headers);
    ex->headers = ex->last = NULL;
    free(ex->url);
    ex->url = NULL;
    ex->set_for = NULL;
    ex->timeout_ms = 0;
    ex->method = 0;
}

/* Free what the exchange owns except the easy handle, whose connections
 * belong to the client (see tc_client_close). Safe to call twice. */
void tc_exchange_free(tc_exchange_t *ex)
{
    tc_exchange_forget(ex);
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

/* The options that are the same for every request of settings s, set
 * once per handle: the fixed header lines, TLS, proxy, limits, callbacks,
 * and the socket table. Returns 0, or -1 when memory ran out. */
static int set_constant_options(tc_exchange_t *ex, const tc_settings_t *s, tc_sockets_t *sockets)
{
    CURL *h = ex->easy;
    if (ex->set_for)   /* set for other settings: start from libcurl's defaults */
        curl_easy_reset(h);
    tc_exchange_forget(ex);
    struct curl_slist *list = NULL;
    if ((s->auth_header && add_header(&list, s->auth_header) != 0)
        || add_header(&list, "Accept: application/json") != 0
        || add_header(&list, s->user_agent) != 0
        || add_header(&list, "Expect:") != 0) {
        curl_slist_free_all(list);
        return -1;
    }
    ex->headers = list;
    for (ex->last = list; ex->last->next; ex->last = ex->last->next)
        ;
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, ex->headers);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, s->allow_http ? "http,https" : "https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (s->ca_file)   /* else libcurl's default bundle (setting NULL would drop it) */
        curl_easy_setopt(h, CURLOPT_CAINFO, s->ca_file);
    if (s->proxy)     /* else the environment's */
        curl_easy_setopt(h, CURLOPT_PROXY, s->proxy);
    /* A loopback base URL (the only kind that may be plain http, see
     * tc_client_check_url) never goes through a proxy, whatever the
     * option or the environment says: "*" covers every 127/8 address,
     * which a list of names would not, and the key would cross the proxy
     * in clear. Other hosts: https, so a proxy only sees a CONNECT. */
    curl_easy_setopt(h, CURLOPT_NOPROXY, s->allow_http ? "*" : "localhost,127.0.0.1,::1");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)TC_BODY_LIMIT);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ex->errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, ex);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, ex);
    tc_sockets_adopt(sockets, h);
    ex->set_for = s;
    return 0;
}

/* Set CURLOPT_URL to base .. path unless it is that already: libcurl
 * parses a URL each time it is set. Returns 0, or -1 out of memory. */
static int set_url(tc_exchange_t *ex, const char *base, const char *path)
{
    size_t bl = strlen(base);
    if (ex->url && strncmp(ex->url, base, bl) == 0 && strcmp(ex->url + bl, path) == 0)
        return 0;
    size_t pl = strlen(path);
    char *url = malloc(bl + pl + 1);
    if (url == NULL)
        return -1;
    memcpy(url, base, bl + 1);
    memcpy(url + bl, path, pl + 1);   /* overwrites base's NUL */
    if (curl_easy_setopt(ex->easy, CURLOPT_URL, url) != CURLE_OK) {   /* libcurl keeps a copy */
        free(url);
        return -1;
    }
    free(ex->url);
    ex->url = url;
    return 0;
}

/* Sets the options of request rq on ex->easy (which must exist), keeping
 * those already set by the previous request of the same settings. Returns
 * 0, or -1 when memory ran out. Everything allocated is owned by ex. */
int tc_exchange_prepare(tc_exchange_t *ex, const tc_settings_t *s, tc_sockets_t *sockets,
                        const tc_request_t *rq)
{
    CURL *h = ex->easy;

    tc_buf_clear(&ex->body);
    tc_buf_clear(&ex->head);
    ex->errbuf[0] = '\0';
    ex->code = CURLE_OK;
    ex->status = 0;

    if (ex->set_for != s && set_constant_options(ex, s, sockets) != 0)
        return -1;
    if (set_url(ex, rq->base, rq->path) != 0)
        return -1;
    if (ex->timeout_ms != rq->timeout_ms) {
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
        ex->timeout_ms = rq->timeout_ms;
    }

    /* the per-request header lines, chained after the fixed ones: a body
     * has a Content-Type; GET never carries an Idempotency-Key */
    const char *key = rq->method == TC_GET ? NULL : rq->idempotency_key;
    struct curl_slist **next = &ex->last->next;
    if (rq->method == TC_POST) {
        *next = &ex->ctype.node;
        next = &ex->ctype.node.next;
    }
    if (key) {
        size_t kl = strlen(key), pl = sizeof IDEM_PREFIX - 1;
        if (kl > sizeof ex->idem.line - pl - 1)
            return -1;   /* the caller checks the length; never truncate a key */
        memcpy(ex->idem.line, IDEM_PREFIX, pl);
        memcpy(ex->idem.line + pl, key, kl + 1);
        *next = &ex->idem.node;
        next = &ex->idem.node.next;
    }
    *next = NULL;

    if (rq->method == TC_POST) {
        if (ex->method != TC_POST) {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, NULL);
            curl_easy_setopt(h, CURLOPT_POST, 1L);
        }
        /* the body is new every time: two pointer stores in libcurl */
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_len);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
    } else if (ex->method != (int)rq->method) {
        /* no body: POSTFIELDS (which implies POST) first, then HTTPGET */
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, rq->method == TC_DELETE ? "DELETE" : NULL);
    }
    ex->method = (int)rq->method;
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

const char *const tc_wanted_headers[TC_H_COUNT] = {
    "x-request-id", "content-type", "location", "retry-after", "idempotent-replayed"
};

/* One pass over the header block: where each wanted header's value is
 * (its first occurrence, blanks trimmed as tc_header_find does). */
static void find_wanted(const char *head, size_t len, tc_outcome_t *out)
{
    static size_t wlen[TC_H_COUNT];
    if (wlen[0] == 0)   /* benign race: every thread stores the same values */
        for (int i = 0; i < TC_H_COUNT; i++)
            wlen[i] = strlen(tc_wanted_headers[i]);
    const char *end = head + len;
    for (const char *line = head; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon != NULL) {
            size_t nlen = (size_t)(colon - line);
            for (int i = 0; i < TC_H_COUNT; i++) {
                if (nlen == wlen[i] && out->headers[i].p == NULL
                    && strncasecmp(line, tc_wanted_headers[i], nlen) == 0) {
                    const char *v = colon + 1, *e = eol;
                    while (v < e && (*v == ' ' || *v == '\t')) v++;
                    while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
                    out->headers[i].p = v;
                    out->headers[i].n = (size_t)(e - v);
                    out->nheaders++;
                    break;
                }
            }
        }
        line = eol + 1;
    }
}

/* Did the answer stop inside its header block (a status line came, the
 * blank line ending the headers did not)? libcurl reports a header line
 * over CURL_MAX_HTTP_HEADER (100 KiB) as CURLE_OUT_OF_MEMORY, which would
 * send the reader hunting a leak, while the server sent a giant header. */
static int header_cut_short(const tc_exchange_t *ex)
{
    const tc_buf_t *h = &ex->head;
    if (ex->status <= 0 || h->data == NULL || h->len == 0 || h->oom || ex->body.len > 0)
        return 0;
    int ended = (h->len >= 2 && memcmp(h->data + h->len - 2, "\n\n", 2) == 0)
                || (h->len >= 3 && memcmp(h->data + h->len - 3, "\n\r\n", 3) == 0);
    return !ended;
}

/* Decides what a finished exchange means: success, an API answer, or a
 * transport failure, and whether a later attempt could cure it; and
 * where the wanted response headers are (valid while ex->head is). */
void tc_exchange_classify(const tc_exchange_t *ex, tc_outcome_t *out, time_t now)
{
    memset(out, 0, sizeof *out);
    out->status = ex->status;
    out->curl_code = ex->code;
    out->retry_after = -1;
    out->oom = ex->body.oom || ex->head.oom;
    if (ex->head.data)
        find_wanted(ex->head.data, ex->head.len, out);
    const tc_span_t *ra = &out->headers[TC_H_RETRY_AFTER];
    if (ra->p)
        out->retry_after = tc_retry_after_parse(ra->p, ra->n, now);

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
    if (ex->code == CURLE_OUT_OF_MEMORY && header_cut_short(ex))
        out->message = "a response header line exceeds libcurl's 100 KiB limit";
}
