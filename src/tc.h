/*
 * tc.h - internal interfaces of the topcalls C core. Nothing here is
 * exported: the module's only public symbol is luaopen_topcalls_core.
 * SPDX-License-Identifier: MIT
 */
#ifndef TC_H
#define TC_H

#include <stddef.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <curl/curl.h>
#include "tc_compat.h"

/* Everything declared from here on stays inside the module, even when a
 * build (a plain `luarocks make`) does not pass -fvisibility=hidden. */
#pragma GCC visibility push(hidden)

#define TC_BODY_LIMIT   (1024u * 1024u)   /* contract: bodies over 1 MiB refused */
#define TC_HEAD_LIMIT   (64u * 1024u)     /* response headers kept per attempt */
#define TC_MAX_SOCKETS  160               /* sockets one client (or bulk run, at
                                            concurrency 64) may hold open */

/* ---- buf.c: a growable byte buffer with a hard cap ------------------- */
typedef struct tc_buf {
    char  *data;
    size_t len, cap, limit;
    int    overflow;   /* an append would have passed limit */
    int    oom;        /* realloc failed */
} tc_buf_t;

void tc_buf_init(tc_buf_t *b, size_t limit);
int  tc_buf_grow_append(tc_buf_t *b, const void *p, size_t n);

/* Append n bytes. Returns 0, or -1 (and sets overflow or oom) when the
 * result would pass the limit or memory runs out; the buffer is unchanged
 * then. Keeps one spare byte so data is always NUL-terminated. Inline:
 * the JSON writer appends a few bytes at a time, and a call per piece
 * cost more than the copy. */
static inline int tc_buf_append(tc_buf_t *b, const void *p, size_t n)
{
    if (n >= b->cap - b->len || n > b->limit - b->len)   /* cap > len always once allocated */
        return tc_buf_grow_append(b, p, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}
void tc_buf_clear(tc_buf_t *b);
void tc_buf_free(tc_buf_t *b);
void tc_buf_open(lua_State *L);
tc_buf_t *tc_buf_push(lua_State *L, size_t limit);

/* ---- check.c: pure string checks (no Lua, no I/O) -------------------- */
int    tc_check_ipv4(const char *s, size_t n);
int    tc_check_hostname(const char *s, size_t n);
long   tc_utf8_length(const char *s, size_t n);
int    tc_has_whitespace(const char *s, size_t n);
int    tc_has_sip_prefix(const char *s, size_t n);
int    tc_check_uuid(const char *s, size_t n);
int    tc_check_token(const char *s, size_t n);
int    tc_check_e164(const char *s, size_t n);   /* 0, -1 malformed, -2 unassigned code */
int    tc_is_loopback_host(const char *host);
size_t tc_edit_distance(const char *a, size_t na, const char *b, size_t nb);

/* ---- retry.c: pure retry policy -------------------------------------- */
#define TC_RETRY_AFTER_CEILING 60.0
int    tc_curl_code_retryable(CURLcode code);
int    tc_http_status_retryable(long status);
double tc_retry_after_parse(const char *value, size_t n, time_t now);
double tc_backoff(int retry_index, double jitter);
double tc_monotonic(void);   /* seconds, for schedules and elapsed times */

typedef enum {
    TC_RETRY_AGAIN = 0,      /* sleep *delay seconds, then try again */
    TC_RETRY_NOT_RETRYABLE,  /* the failure is final */
    TC_RETRY_EXHAUSTED,      /* retryable, but no retries left */
    TC_RETRY_TOO_LONG        /* the server asked for more than the ceiling */
} tc_retry_verdict_t;

tc_retry_verdict_t tc_retry_plan(int attempts_made, int max_retries,
                                 int retryable, double retry_after,
                                 double jitter, double *delay);
const char *tc_retry_verdict_name(tc_retry_verdict_t v);

/* ---- rand.c: kernel randomness --------------------------------------- */
int    tc_random_bytes(void *p, size_t n);
int    tc_uuid4(char out[37]);
double tc_random_jitter(void);

/* ---- http.c: one request/response exchange on one easy handle -------- */

/* What every request of a client needs from its settings; http.c reads
 * nothing else of the client. */
typedef struct tc_settings {
    char  *base_url;        /* no trailing slash; NULL once closed */
    char  *auth_header;     /* "Authorization: Bearer <key>", or NULL */
    char  *key;             /* points into auth_header, for redaction */
    char  *key_json[2];     /* the key JSON-escaped (without, with "\/"), or NULL when the same */
    char  *user_agent;      /* full "User-Agent: ..." line */
    char  *ca_file, *proxy;
    long   connect_timeout_ms;
    int    allow_http;      /* base_url's host is loopback */
} tc_settings_t;

/* The sockets a set of easy handles opened, known so a forked child can
 * disown them without a byte on the wire. */
typedef struct tc_sockets {
    curl_socket_t fds[TC_MAX_SOCKETS];
    int           n;
} tc_sockets_t;

typedef enum { TC_OUT_OK, TC_OUT_API, TC_OUT_TRANSPORT } tc_outcome_kind_t;

typedef enum { TC_GET = 1, TC_POST, TC_DELETE } tc_method_t;

/* A header line we own, chained after the list libcurl allocated (the
 * curl_slist layout is public); never freed by curl_slist_free_all. */
typedef struct tc_header_line {
    struct curl_slist node;
    char line[300];         /* "Idempotency-Key: " + at most 255 characters */
} tc_header_line_t;

/* Everything one in-flight request owns. The bulk path (curl multi) keeps
 * one of these per lane; `add` keeps one in its client. Options that do
 * not change between requests stay set on the handle: libcurl re-reads
 * them for free, while setting them again costs (a URL is re-parsed, a
 * protocol list re-scanned), so prepare only sets what changed. */
typedef struct tc_exchange {
    CURL              *easy;
    tc_buf_t           body, head;
    char               errbuf[CURL_ERROR_SIZE];
    CURLcode           code;
    long               status;
    /* what is set on `easy` now (tc_exchange_forget clears it) */
    const tc_settings_t *set_for;  /* settings whose options are set, or NULL */
    struct curl_slist *headers;    /* Authorization .. Expect (libcurl's) */
    struct curl_slist *last;       /* its last node */
    tc_header_line_t   ctype, idem;   /* chained after `last` when needed */
    char              *url;        /* copy of CURLOPT_URL, or NULL */
    long               timeout_ms;
    int                method;     /* tc_method_t, or 0 */
} tc_exchange_t;

/* Where a wanted response header is in the header block. */
typedef struct tc_span { const char *p; size_t n; } tc_span_t;

/* The response headers the Lua layer reads, in tc_outcome_t.headers order. */
enum { TC_H_REQUEST_ID, TC_H_CONTENT_TYPE, TC_H_LOCATION, TC_H_RETRY_AFTER,
       TC_H_IDEMPOTENT_REPLAYED, TC_H_COUNT };
extern const char *const tc_wanted_headers[TC_H_COUNT];

/* What a finished exchange means, decided without Lua. */
typedef struct tc_outcome {
    tc_outcome_kind_t kind;
    int         retryable;
    double      retry_after;      /* seconds, or -1 when absent/garbage */
    long        status;
    CURLcode    curl_code;
    const char *message;          /* transport failures: static or errbuf */
    int         oom;              /* a buffer or list could not be allocated */
    tc_span_t   headers[TC_H_COUNT];   /* p NULL when absent */
    int         nheaders;         /* how many were found */
} tc_outcome_t;

typedef struct tc_request {
    tc_method_t method;
    const char *base, *path;      /* the URL is base .. path */
    const char *body;             /* NULL for none (POST sends an empty body) */
    size_t      body_len;
    const char *idempotency_key;  /* NULL for none; at most 255 characters */
    long        timeout_ms;
} tc_request_t;

void tc_exchange_init(tc_exchange_t *ex);
void tc_exchange_forget(tc_exchange_t *ex);
void tc_exchange_free(tc_exchange_t *ex);
int  tc_exchange_prepare(tc_exchange_t *ex, const tc_settings_t *s, tc_sockets_t *sockets,
                         const tc_request_t *rq);
void tc_exchange_classify(const tc_exchange_t *ex, tc_outcome_t *out, time_t now);
const char *tc_header_find(const char *head, size_t len, const char *name, size_t *vlen);

/* ---- client.c: settings, the kept-alive handle, fork safety ---------- */
typedef struct tc_client {
    tc_settings_t settings;
    pid_t  owner_pid;       /* process whose sockets `ex.easy` holds */
    tc_sockets_t sockets;   /* what its connections use */
    tc_exchange_t ex;       /* the single kept-alive exchange of `add` */
} tc_client_t;

int  tc_client_check_url(const char *url, int *loopback, const char **why);
int  tc_client_ensure_handle(tc_client_t *c);
void tc_client_close(tc_client_t *c);
void tc_sockets_adopt(tc_sockets_t *t, CURL *easy);
void tc_sockets_disown(tc_sockets_t *t);

/* sigpipe guard around libcurl calls that may write to a dead peer */
typedef struct tc_sigpipe { int pending_before; sigset_t old; } tc_sigpipe_t;
void tc_sigpipe_block(tc_sigpipe_t *s);
void tc_sigpipe_restore(const tc_sigpipe_t *s);

/* ---- multi.c: the bulk engine, many exchanges on one curl multi ------ */
#define TC_BULK_MAX_CONCURRENCY 64

typedef enum {
    TC_ITEM_FRESH = 0,   /* never started */
    TC_ITEM_WAITING,     /* a retry is scheduled at not_before */
    TC_ITEM_RUNNING,     /* an attempt is on the multi handle */
    TC_ITEM_IDLE         /* an attempt finished; retried or settled by the caller */
} tc_item_state_t;

typedef struct tc_bulk_item {
    char   *body;          /* owned copy of the JSON body */
    size_t  body_len;
    char   *key;           /* owned copy of the Idempotency-Key */
    double  not_before;    /* monotonic seconds: no attempt before this */
    int     state;         /* tc_item_state_t */
    int     attempts;
} tc_bulk_item_t;

/* One concurrent lane: its own easy handle and buffers, reused by the
 * items that pass through it. */
typedef struct tc_bulk_slot {
    tc_exchange_t ex;
    int    item;           /* index into items, or -1 when free */
    int    done;           /* finished; the outcome awaits the caller */
    double started, finished;
} tc_bulk_slot_t;

typedef struct tc_bulk {
    CURLM          *multi;
    const tc_settings_t *settings;  /* of every request; its client must outlive the run */
    tc_sockets_t    sockets;    /* the connections this run opened */
    char           *url;
    long            timeout_ms;
    tc_bulk_slot_t *slots;
    int             nslots, running;
    tc_bulk_item_t *items;
    int             nitems, capitems;
    int            *waiting;    /* items with a retry scheduled */
    int             nwaiting;
    int             next_fresh; /* the first item never started */
    int             stopped;    /* start no fresh items */
    double          hold_until; /* start nothing before this */
    pid_t           owner_pid;
} tc_bulk_t;

int  tc_bulk_init(tc_bulk_t *b, const tc_settings_t *s, const char *url, long timeout_ms,
                  int concurrency, int capacity);
int  tc_bulk_add(tc_bulk_t *b, const char *body, size_t len, const char *key);
int  tc_bulk_retry(tc_bulk_t *b, int item, double delay);
void tc_bulk_hold(tc_bulk_t *b, double delay);
void tc_bulk_stop(tc_bulk_t *b);
int  tc_bulk_run(tc_bulk_t *b, const char **why);
void tc_bulk_free(tc_bulk_t *b);

/* ---- json.c: a strict JSON decoder, lua-cjson's semantics ------------ */
enum { TC_JSON_OBJECT = 1, TC_JSON_ARRAY, TC_JSON_SCALAR };
int  tc_json_push(lua_State *L, const char *s, size_t n);   /* s[n] == '\0' */

/* ---- schema.c: the declarative request schema and its walker --------- */
typedef struct tc_schema tc_schema_t;   /* one request body: "carrier", "phone_number" */
const tc_schema_t *tc_schema_find(const char *name);
int  tc_schema_validate(lua_State *L, const tc_schema_t *s, int params, int strict);
int  tc_schema_write_json(lua_State *L, const tc_schema_t *s, int params, int strict, tc_buf_t *json);
void tc_schema_push_description(lua_State *L, const tc_schema_t *s);
void tc_schema_push_names(lua_State *L);
int  tc_schema_push_suggestion(lua_State *L, const char *name, int list);

#pragma GCC visibility pop

#endif
