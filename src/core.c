/*
 * core.c - the Lua binding of topcalls.core: the "topcalls.client"
 * userdata and the pure helpers the Lua layer calls. Private: users
 * require "topcalls".
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "tc.h"

#define CLIENT_MT "topcalls.client"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_code = CURLE_OK;

/* curl_global_init is not thread-safe; nginx pool threads may open the
 * module in several VMs at once. It is never undone by the module. */
static void init_curl_once(void)
{
    curl_init_code = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static tc_client_t *check_client(lua_State *L, int i)
{
    tc_client_t *c = luaL_checkudata(L, i, CLIENT_MT);
    if (c->settings.base_url == NULL)
        luaL_argerror(L, i, "client is closed");
    return c;
}

/* Raise Lua's memory error; never returns (luaL_error is not marked so). */
__attribute__((noreturn)) static void raise_oom(lua_State *L)
{
    luaL_error(L, "not enough memory");
    __builtin_unreachable();
}

/* malloc'd prefix .. s[0..n), NUL-terminated; raises on out of memory, so
 * the caller must already own what it allocated before. [-0, +0, m] */
static char *dup_prefixed(lua_State *L, const char *prefix, const char *s, size_t n)
{
    size_t pl = strlen(prefix);
    char *d = malloc(pl + n + 1);
    if (d == NULL)
        raise_oom(L);
    memcpy(d, prefix, pl);
    memcpy(d + pl, s, n);
    d[pl + n] = '\0';
    return d;
}

/* Copy an optional string field of the table at index t into *dst (with
 * prefix before it). Returns 0, or -1 when the field is set but not a
 * string. [-0, +0, m] */
static int copy_opt_string(lua_State *L, int t, const char *name, const char *prefix, char **dst)
{
    lua_getfield(L, t, name);
    int type = lua_type(L, -1);
    if (type == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        *dst = dup_prefixed(L, prefix, s, n);   /* on a raise the string stays on the stack: fine */
    }
    lua_pop(L, 1);
    return type == LUA_TSTRING || type == LUA_TNIL ? 0 : -1;
}

/* Seconds of a timeout as libcurl's milliseconds, at least 1 (0 would
 * mean no timeout at all) and at most TIMEOUT_MAX_MS: casting a double
 * past LONG_MAX (1e300, inf) or NaN to long is undefined behaviour. The
 * Lua layer refuses more than a day (client.MAX_SECONDS); this guards
 * every other caller. */
#define TIMEOUT_MAX_MS 2147483647L   /* fits a 32-bit long: ~24.8 days */

static long timeout_ms(double seconds)
{
    if (!(seconds > 0))
        return 1;
    double ms = ceil(seconds * 1000.0);
    return ms < (double)TIMEOUT_MAX_MS ? (long)ms : TIMEOUT_MAX_MS;
}

/* A malloc'd copy of s with '"' and '\\' escaped as JSON writes them (and
 * '/' as "\\/" when `slash`, as lua-cjson does), or NULL when that is s
 * itself or memory ran out (redaction then misses only this form). */
static char *json_escaped(const char *s, int slash)
{
    size_t n = 0, extra = 0;
    for (; s[n]; n++)
        extra += s[n] == '"' || s[n] == '\\' || (slash && s[n] == '/');
    char *d = extra ? malloc(n + extra + 1) : NULL;
    if (d == NULL)
        return NULL;
    char *p = d;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\' || (slash && s[i] == '/'))
            *p++ = '\\';
        *p++ = s[i];
    }
    *p = '\0';
    return d;
}

/*
** core.client_new{ base_url, api_key, user_agent, ca_file, proxy,
** connect_timeout } -> client | nil, reason. The Lua layer checks types
** first; this checks the URL and owns the copies. The key is stored only
** inside the Authorization line, in C memory. [-0, +1|2, m]
*/
static int l_client_new(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    tc_client_t *c = tc_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    tc_exchange_init(&c->ex);
    luaL_getmetatable(L, CLIENT_MT);
    lua_setmetatable(L, -2);
    tc_settings_t *s = &c->settings;

    /* the key lives only inside the Authorization line */
    if (copy_opt_string(L, 1, "base_url", "", &s->base_url) != 0 || s->base_url == NULL
        || copy_opt_string(L, 1, "user_agent", "User-Agent: ", &s->user_agent) != 0 || s->user_agent == NULL
        || copy_opt_string(L, 1, "ca_file", "", &s->ca_file) != 0
        || copy_opt_string(L, 1, "proxy", "", &s->proxy) != 0
        || copy_opt_string(L, 1, "api_key", "Authorization: Bearer ", &s->auth_header) != 0) {
        tc_client_close(c);
        lua_pushnil(L);
        lua_pushliteral(L, "base_url and user_agent must be strings");
        return 2;
    }
    if (s->auth_header) {
        s->key = s->auth_header + strlen("Authorization: Bearer ");
        /* the forms a server's JSON may quote it in, for redaction */
        for (int slash = 0; slash < 2; slash++)
            s->key_json[slash] = json_escaped(s->key, slash);
    }
    const char *why;
    if (tc_client_check_url(s->base_url, &s->allow_http, &why) != 0) {
        tc_client_close(c);
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    size_t n = strlen(s->base_url);
    while (n > 0 && s->base_url[n - 1] == '/')
        s->base_url[--n] = '\0';

    lua_getfield(L, 1, "connect_timeout");
    double connect = lua_tonumber(L, -1);   /* 0 when absent */
    s->connect_timeout_ms = connect > 0 ? timeout_ms(connect) : 10000;
    lua_pop(L, 1);
    return 1;
}

/* Push the wanted headers of the last response (tc_exchange_classify
 * found them) as a table by their lower-case names: a table of every
 * header would cost each call for nothing. [-0, +1, m] */
static void push_headers(lua_State *L, const tc_outcome_t *out)
{
    lua_createtable(L, 0, out->nheaders);
    for (int i = 0; i < TC_H_COUNT; i++) {
        if (out->headers[i].p) {
            lua_pushlstring(L, out->headers[i].p, out->headers[i].n);
            lua_setfield(L, -2, tc_wanted_headers[i]);
        }
    }
}

static void set_number(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_integer(lua_State *L, const char *k, long v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* Is a Content-Type value a JSON media type: application/json or
 * application/<name>+json, any case, parameters ignored? Absent counts as
 * JSON (for a 2xx answer). The only such rule: client.lua's is_json calls
 * it (core.is_json). */
static int json_media_type(const tc_span_t *ct)
{
    static const char JSON[] = "application/json", PREFIX[] = "application/", SUFFIX[] = "+json";
    if (ct->p == NULL)
        return 1;
    const char *p = ct->p, *end = ct->p + ct->n;
    while (p < end && (*p == ' ' || (*p >= '\t' && *p <= '\r')))
        p++;
    const char *mt = p;
    while (p < end && *p != ';' && *p != ' ' && !(*p >= '\t' && *p <= '\r'))
        p++;
    size_t n = (size_t)(p - mt), pl = sizeof PREFIX - 1, sl = sizeof SUFFIX - 1;
    if (n == sizeof JSON - 1 && strncasecmp(mt, JSON, n) == 0)
        return 1;
    if (n <= pl + sl || strncasecmp(mt, PREFIX, pl) != 0 || strncasecmp(p - sl, SUFFIX, sl) != 0)
        return 0;
    for (const char *q = mt + pl; q < p - sl; q++)
        if (!((*q >= '0' && *q <= '9') || ((*q | 0x20) >= 'a' && (*q | 0x20) <= 'z') || *q == '.' || *q == '-'))
            return 0;
    return 1;
}

/* Does the string field `name` of the table at the top equal `want`?
 * [-0, +0, -] */
static int field_is(lua_State *L, const char *name, const char *want)
{
    lua_pushstring(L, name);
    lua_rawget(L, -2);
    const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int is = v != NULL && strcmp(v, want) == 0;
    lua_pop(L, 1);
    return is;
}

/* Is this answer the API's "a request with this Idempotency-Key is still
** being processed" (a 409 problem whose errors[] has the code
** idempotency_in_progress, or whose type ends so)? The first request may
** yet create the carrier, so a later attempt with the same key gets its
** replay: retryable, as Stripe retries it. Any other 409 (the key reused
** with another body) is final. [-0, +0, m] */
static int idempotency_in_progress(lua_State *L, const tc_exchange_t *ex, const tc_outcome_t *out)
{
    static const char SLUG[] = "/idempotency-in-progress";
    if (out->status != 409 || ex->body.len == 0 || !json_media_type(&out->headers[TC_H_CONTENT_TYPE]))
        return 0;
    int shape = tc_json_push(L, ex->body.data, ex->body.len);
    if (shape != TC_JSON_OBJECT) {
        if (shape)
            lua_pop(L, 1);
        return 0;
    }
    lua_getfield(L, -1, "type");
    size_t n;
    const char *type = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    int yes = type != NULL && n >= sizeof SLUG - 1 && strcmp(type + n - (sizeof SLUG - 1), SLUG) == 0;
    lua_pop(L, 1);
    lua_getfield(L, -1, "errors");
    for (int i = 1; !yes && lua_type(L, -1) == LUA_TTABLE; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pop(L, 1);
            break;
        }
        yes = field_is(L, "code", "idempotency_in_progress");
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    return yes;
}

/* Classify a finished exchange and push the outcome table that both
** client:perform and bulk:run return: { kind = "ok"|"api"|"transport",
** status, body, headers, retryable, retry_after, curl_code, error }.
** `extra`: room for fields the caller adds. [-0, +1, m] */
static void push_outcome(lua_State *L, const tc_exchange_t *ex, int extra)
{
    tc_outcome_t out;
    tc_exchange_classify(ex, &out, time(NULL));
    if (out.oom)
        raise_oom(L);

    static const char *const kinds[] = { "ok", "api", "transport" };
    lua_createtable(L, 0, 7 + extra);   /* at most 7 fields of its own */
    set_string(L, "kind", kinds[out.kind]);
    lua_pushboolean(L, out.retryable || (out.kind == TC_OUT_API && idempotency_in_progress(L, ex, &out)));
    lua_setfield(L, -2, "retryable");
    set_integer(L, "curl_code", (long)out.curl_code);
    if (out.retry_after >= 0)
        set_number(L, "retry_after", out.retry_after);
    if (out.kind == TC_OUT_TRANSPORT) {
        set_string(L, "error", out.message);
    } else {
        set_integer(L, "status", out.status);
        lua_pushlstring(L, ex->body.data ? ex->body.data : "", ex->body.len);
        lua_setfield(L, -2, "body");
    }
    push_headers(L, &out);
    lua_setfield(L, -2, "headers");
}

/* An optional Idempotency-Key argument; tc_exchange_prepare's header line
 * has room for 255 characters, the documented maximum. [-0, +0, v] */
static const char *opt_key(lua_State *L, int i)
{
    const char *key = luaL_optstring(L, i, NULL);
    if (key && strlen(key) > 255)
        luaL_argerror(L, i, "idempotency key too long");
    return key;
}

/*
** Redaction: what client:redact replaces in text that came from a server.
** The needles are the API key and its JSON-escaped forms (kept here, so
** the key never reaches Lua) and the caller's strings (a request's
** secrets in their forms). At each position the longest needle that
** matches is replaced, so a secret that contains another goes as a whole.
** A needle shorter than MIN_PART bytes (a one-letter password) would eat
** every such letter of a record, keys and ids too: it is replaced only
** where a whole string is it.
*/
#define REDACTED "[REDACTED]"
#define MAX_NEEDLES 64
#define MIN_PART 6

typedef struct needles {
    tc_span_t s[MAX_NEEDLES];
    int       n;
} needles_t;

static void add_needle(needles_t *nd, const char *p, size_t n)
{
    if (p != NULL && n > 0 && nd->n < MAX_NEEDLES) {
        nd->s[nd->n].p = p;
        nd->s[nd->n].n = n;
        nd->n++;
    }
}

/* The key's needles, then the strings of the optional list at index t
** (they stay alive: the list is an argument). [-0, +0, v] */
static void gather_needles(lua_State *L, const tc_client_t *c, int t, needles_t *nd)
{
    const tc_settings_t *s = &c->settings;
    nd->n = 0;
    if (s->key) {
        add_needle(nd, s->key, strlen(s->key));
        for (int i = 0; i < 2; i++)
            if (s->key_json[i])
                add_needle(nd, s->key_json[i], strlen(s->key_json[i]));
    }
    if (lua_isnoneornil(L, t))
        return;
    luaL_checktype(L, t, LUA_TTABLE);
    int len = (int)tc_rawlen(L, t);
    luaL_argcheck(L, len <= MAX_NEEDLES - 3, t, "too many strings to redact");
    for (int i = 1; i <= len; i++) {
        lua_rawgeti(L, t, i);
        size_t n;
        const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        lua_pop(L, 1);
        if (p)
            add_needle(nd, p, n);
    }
}

/* Does s[0..n) hold p[0..m), 0 < m <= n? (memmem is a GNU extension) */
static int holds_bytes(const char *s, size_t n, const char *p, size_t m)
{
    const char *end = s + (n - m) + 1;
    for (const char *q = s; q < end; q++) {
        q = memchr(q, p[0], (size_t)(end - q));
        if (q == NULL)
            return 0;
        if (memcmp(q, p, m) == 0)
            return 1;
    }
    return 0;
}

/* Is s[0..n) exactly a short needle (one of fewer than MIN_PART bytes)? */
static int is_short_needle(const char *s, size_t n, const needles_t *nd)
{
    for (int i = 0; i < nd->n; i++)
        if (nd->s[i].n < MIN_PART && nd->s[i].n == n && memcmp(s, nd->s[i].p, n) == 0)
            return 1;
    return 0;
}

/* Does s[0..n) contain a needle? Short needles count only when
** `anywhere` (asked of a whole JSON text, whose strings may each be one).
** The common answer, no, costs a memchr scan per needle. */
static int holds_needle_in(const char *s, size_t n, const needles_t *nd, int anywhere)
{
    for (int i = 0; i < nd->n; i++)
        if (nd->s[i].n <= n && (anywhere || nd->s[i].n >= MIN_PART)
            && holds_bytes(s, n, nd->s[i].p, nd->s[i].n))
            return 1;
    return 0;
}

/* Would push_redacted change s[0..n)? */
static int holds_needle(const char *s, size_t n, const needles_t *nd)
{
    return holds_needle_in(s, n, nd, 0) || is_short_needle(s, n, nd);
}

/* Push s[0..n) with every needle replaced by REDACTED. [-0, +1, m] */
static void push_redacted(lua_State *L, const char *s, size_t n, const needles_t *nd)
{
    if (is_short_needle(s, n, nd)) {
        lua_pushliteral(L, REDACTED);
        return;
    }
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t i = 0, kept = 0;
    while (i < n) {
        size_t best = 0;
        for (int j = 0; j < nd->n; j++)
            if (nd->s[j].n >= MIN_PART && nd->s[j].n > best && nd->s[j].n <= n - i
                && memcmp(s + i, nd->s[j].p, nd->s[j].n) == 0)
                best = nd->s[j].n;
        if (best == 0) {
            i++;
            continue;
        }
        luaL_addlstring(&b, s + kept, i - kept);
        luaL_addstring(&b, REDACTED);
        i += best;
        kept = i;
    }
    luaL_addlstring(&b, s + kept, n - kept);
    luaL_pushresult(&b);
}

/* Redact the string at index i in place on the stack, if it holds a
** needle. Returns 1 when it changed. [-0, +0, m] */
static int redact_slot(lua_State *L, int i, const needles_t *nd)
{
    if (i < 0)
        i = lua_gettop(L) + i + 1;   /* the push below would move a relative index */
    size_t n;
    const char *s = lua_tolstring(L, i, &n);
    if (!holds_needle(s, n, nd))
        return 0;
    push_redacted(L, s, n, nd);
    lua_replace(L, i);
    return 1;
}

/* Redact every string of the table at index t, keys too, at any depth
** (a decoded JSON value: no cycles, depth bounded by the decoder).
** [-0, +0, m] */
static void redact_table(lua_State *L, int t, const needles_t *nd, int depth)
{
    if (depth > 200)
        luaL_error(L, "topcalls: value too deep to redact");
    luaL_checkstack(L, 8, "redacting a value");
    int renamed = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {   /* key -2, value -1 */
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t kn;
            const char *k = lua_tolstring(L, -2, &kn);
            renamed |= holds_needle(k, kn, nd);
        }
        int vt = lua_type(L, -1);
        if (vt == LUA_TSTRING) {
            if (redact_slot(L, -1, nd)) {   /* changing an existing field's value is allowed */
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, t);
                continue;
            }
        } else if (vt == LUA_TTABLE) {
            redact_table(L, lua_gettop(L), nd, depth + 1);
        }
        lua_pop(L, 1);
    }
    if (!renamed)
        return;
    /* new keys cannot be added during a traversal: collect, then move */
    lua_newtable(L);
    int moves = lua_gettop(L), m = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        size_t kn;
        if (lua_type(L, -1) == LUA_TSTRING) {
            const char *k = lua_tolstring(L, -1, &kn);
            if (holds_needle(k, kn, nd)) {
                lua_pushvalue(L, -1);
                lua_rawseti(L, moves, ++m);
            }
        }
    }
    for (int i = 1; i <= m; i++) {
        lua_rawgeti(L, moves, i);             /* old key */
        lua_pushvalue(L, -1);
        lua_rawget(L, t);                     /* old key, value */
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, t);                     /* t[old] = nil */
        redact_slot(L, -2, nd);               /* new key, value */
        lua_rawset(L, t);
    }
    lua_pop(L, 1);
}

/* Could a value decoded from the JSON text b hold a needle? A string
** without escapes decodes to a piece of the text, so a text without a
** backslash and without a needle gives none: the common answer, found
** without walking the value. */
static int text_may_hold(const char *b, size_t n, const needles_t *nd)
{
    return nd->n > 0 && n > 0 && (memchr(b, '\\', n) != NULL || holds_needle_in(b, n, nd, 1));
}

/* What client:perform's `decode` argument asks of a 2xx answer. */
enum { DECODE_NOTHING, DECODE_OBJECT, DECODE_PAGE, DECODE_NONE };

/* The value of a 2xx answer for decode mode `mode`, decoded here rather
** than in Lua: pushes value, shape ("object", "array", "none") and
** returns 2, or returns 0 with nothing pushed when the answer is anything
** else (not 2xx, not JSON, not the shape wanted, not what cjson accepts),
** which then goes the Lua way unchanged. [-0, +(0|2), m] */
static int push_decoded(lua_State *L, const tc_exchange_t *ex, int mode)
{
    /* what tc_exchange_classify calls "ok", without its work for failures */
    if (ex->code != CURLE_OK || ex->status < 200 || ex->status >= 300 || ex->body.oom || ex->head.oom)
        return 0;
    if (mode == DECODE_NONE) {
        lua_pushboolean(L, 1);
        lua_pushliteral(L, "none");
        return 2;
    }
    tc_span_t ct = { NULL, 0 };
    if (ex->head.data)
        ct.p = tc_header_find(ex->head.data, ex->head.len, "content-type", &ct.n);
    if (ex->body.len == 0 || !json_media_type(&ct))
        return 0;
    int shape = tc_json_push(L, ex->body.data, ex->body.len);
    if (shape == TC_JSON_OBJECT || (shape == TC_JSON_ARRAY && mode == DECODE_PAGE)) {
        if (shape == TC_JSON_OBJECT)
            lua_pushliteral(L, "object");
        else
            lua_pushliteral(L, "array");
        return 2;
    }
    if (shape)
        lua_pop(L, 1);
    return 0;
}

/*
** client:perform(method, path, body|nil, idempotency_key|nil, timeout
** [, decode]) -> outcome table { kind = "ok"|"api"|"transport", status,
** body, headers, retryable, retry_after, curl_code, error }. One attempt,
** no retries. method: "POST", "DELETE" or "GET" (GET sends no body and no
** key). decode ("object", "page" or "none") asks for a 2xx answer's value
** instead: then a 2xx JSON object (for "page" also an array) that
** lua-cjson would accept returns value, "object"|"array" (for "none":
** true, "none") without a body string or a headers table; every other
** answer is the outcome table as without it. Such a value comes back
** redacted (see client:redact) of the key and of the optional list of
** strings `secrets` (argument 8).
** Three phases: read arguments, run libcurl without touching Lua, push.
** [-0, +1|2, m]
*/
static int l_client_perform(lua_State *L)
{
    static const char *const methods[] = { "GET", "POST", "DELETE", NULL };
    static const tc_method_t codes[] = { TC_GET, TC_POST, TC_DELETE };
    tc_client_t *c = check_client(L, 1);
    tc_request_t rq;
    rq.method = codes[luaL_checkoption(L, 2, NULL, methods)];
    rq.base = c->settings.base_url;
    rq.path = luaL_checkstring(L, 3);
    rq.body = luaL_optlstring(L, 4, NULL, &rq.body_len);
    rq.idempotency_key = opt_key(L, 5);
    rq.timeout_ms = timeout_ms(luaL_checknumber(L, 6));
    static const char *const decodes[] = { "object", "page", "none", NULL };
    int decode = lua_isnoneornil(L, 7) ? DECODE_NOTHING : 1 + luaL_checkoption(L, 7, NULL, decodes);
    needles_t nd;
    gather_needles(L, c, 8, &nd);

    int prepared = tc_client_ensure_handle(c) == 0
                   && tc_exchange_prepare(&c->ex, &c->settings, &c->sockets, &rq) == 0;
    if (prepared) {
        tc_sigpipe_t guard;
        tc_sigpipe_block(&guard);
        c->ex.code = curl_easy_perform(c->ex.easy);
        tc_sigpipe_restore(&guard);
        curl_easy_getinfo(c->ex.easy, CURLINFO_RESPONSE_CODE, &c->ex.status);
    }

    if (!prepared)
        return luaL_error(L, "not enough memory");
    if (decode != DECODE_NOTHING && push_decoded(L, &c->ex, decode) == 2) {
        if (lua_type(L, -2) == LUA_TTABLE && text_may_hold(c->ex.body.data, c->ex.body.len, &nd))
            redact_table(L, lua_gettop(L) - 1, &nd, 0);
        return 2;
    }
    push_outcome(L, &c->ex, 0);
    return 1;
}

/* client:redact(v [, strings [, json]]) -> v with every occurrence of the
** API key (as is or JSON-escaped) and of each of `strings` replaced by
** "[REDACTED]", for what came from a server: a string gives a new string,
** a table is redacted in place (keys and values, at any depth) and
** returned, anything else comes back as it is. `json`: the text a table
** was decoded from, which can spare the walk (text_may_hold). Works on a
** closed client too (the key is gone; the strings are not). [-0, +1, m] */
static int l_client_redact(lua_State *L)
{
    tc_client_t *c = luaL_checkudata(L, 1, CLIENT_MT);
    luaL_checkany(L, 2);
    needles_t nd;
    gather_needles(L, c, 3, &nd);
    size_t n = 0;
    const char *json = lua_type(L, 4) == LUA_TSTRING ? lua_tolstring(L, 4, &n) : NULL;
    /* the arguments stay on the stack: they own the needles' bytes */
    if (nd.n > 0 && !(json && !text_may_hold(json, n, &nd))) {
        if (lua_type(L, 2) == LUA_TSTRING)
            redact_slot(L, 2, &nd);
        else if (lua_type(L, 2) == LUA_TTABLE)
            redact_table(L, 2, &nd, 0);
    }
    lua_pushvalue(L, 2);
    return 1;
}

/* client:mac(data) -> lower-case hex of HMAC-SHA-256(API key, data)
** (OpenSSL's libcrypto), or nil without a key: what topcalls.fleet
** derives idempotency keys from. The key never leaves C. [-0, +1, m] */
static int l_client_mac(lua_State *L)
{
    tc_client_t *c = check_client(L, 1);
    size_t n;
    const unsigned char *data = (const unsigned char *)luaL_checklstring(L, 2, &n);
    const char *key = c->settings.key;
    if (key == NULL) {
        lua_pushnil(L);
        return 1;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (HMAC(EVP_sha256(), key, (int)strlen(key), data, n, md, &len) == NULL)
        return luaL_error(L, "topcalls: HMAC-SHA-256 failed (libcrypto)");
    static const char hex[] = "0123456789abcdef";
    char out[2 * EVP_MAX_MD_SIZE];
    for (unsigned int i = 0; i < len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, 2 * (size_t)len);
    return 1;
}

/* client:has_key() -> boolean. [-0, +1, -] */
static int l_client_has_key(lua_State *L)
{
    tc_client_t *c = check_client(L, 1);
    lua_pushboolean(L, c->settings.auth_header != NULL);
    return 1;
}

/* __gc and __close: free everything; safe twice. [-0, +0, -] */
static int l_client_close(lua_State *L)
{
    tc_client_t *c = luaL_checkudata(L, 1, CLIENT_MT);
    tc_client_close(c);
    return 0;
}

/* __tostring: the base URL, never the key. [-0, +1, m] */
static int l_client_tostring(lua_State *L)
{
    tc_client_t *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (c->settings.base_url)
        lua_pushfstring(L, "topcalls.client (%s)", c->settings.base_url);
    else
        lua_pushliteral(L, "topcalls.client (closed)");
    return 1;
}

/*
** The "topcalls.bulk" userdata: one carriers.add_many run (multi.c). It
** holds a registry reference to its client, whose settings every request
** of the run uses, so the client outlives it.
*/
#define BULK_MT "topcalls.bulk"

typedef struct bulk_ud {
    tc_bulk_t b;
    int client_ref;
    int closed;
} bulk_ud_t;

static bulk_ud_t *check_bulk(lua_State *L, int i)
{
    bulk_ud_t *u = luaL_checkudata(L, i, BULK_MT);
    if (u->closed)
        luaL_argerror(L, i, "bulk run is closed");
    return u;
}

/*
** client:bulk(path, timeout, concurrency, capacity) -> bulk: an empty run
** of POSTs to base_url..path on `concurrency` lanes (1-64), room for
** `capacity` items. The userdata exists, zeroed and with its __gc, before
** anything is allocated. [-0, +1, m]
*/
static int l_client_bulk(lua_State *L)
{
    tc_client_t *c = check_client(L, 1);
    const char *path = luaL_checkstring(L, 2);
    double timeout = luaL_checknumber(L, 3);
    lua_Integer conc = luaL_checkinteger(L, 4);
    lua_Integer cap = luaL_checkinteger(L, 5);
    luaL_argcheck(L, conc >= 1 && conc <= TC_BULK_MAX_CONCURRENCY, 4, "concurrency out of range");
    luaL_argcheck(L, cap >= 0 && cap <= INT_MAX / 64, 5, "capacity out of range");

    bulk_ud_t *u = tc_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    u->client_ref = LUA_NOREF;
    luaL_getmetatable(L, BULK_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 1);
    u->client_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    const char *url = lua_pushfstring(L, "%s%s", c->settings.base_url, path);
    if (tc_bulk_init(&u->b, &c->settings, url, timeout_ms(timeout), (int)conc, (int)cap) != 0)
        return luaL_error(L, "not enough memory");
    lua_pop(L, 1);
    return 1;
}

/* bulk:add(body, idempotency_key|nil) -> item index (1-based); the body
** and key are copied. [-0, +1, v] */
static int l_bulk_add(lua_State *L)
{
    bulk_ud_t *u = check_bulk(L, 1);
    size_t n;
    const char *body = luaL_checklstring(L, 2, &n);
    const char *key = opt_key(L, 3);
    int i = tc_bulk_add(&u->b, body, n, key);
    if (i == -2)
        return luaL_error(L, "bulk run is full");
    if (i < 0)
        return luaL_error(L, "not enough memory");
    lua_pushinteger(L, (lua_Integer)i + 1);
    return 1;
}

/*
** bulk:run() -> list of finished attempts, each an outcome table as from
** client:perform plus `index` (the item), `attempt` (1-based) and
** `elapsed` (seconds); an empty list once nothing is left to run. Three
** phases: check arguments, run libcurl without touching Lua (multi.c),
** push. Between two calls no libcurl call is in progress, so the caller
** may run any Lua code (progress callbacks, loggers). [-0, +1, v]
*/
static int l_bulk_run(lua_State *L)
{
    bulk_ud_t *u = check_bulk(L, 1);
    if (u->b.settings->base_url == NULL)
        return luaL_error(L, "topcalls: the client is closed");
    const char *why = "";
    int n = tc_bulk_run(&u->b, &why);
    if (n < 0)
        return luaL_error(L, "topcalls: %s", why);
    lua_createtable(L, n, 0);
    int j = 0;
    for (int k = 0; k < u->b.nslots; k++) {
        const tc_bulk_slot_t *s = &u->b.slots[k];
        if (!s->done)
            continue;
        push_outcome(L, &s->ex, 3);
        set_integer(L, "index", (long)s->item + 1);
        set_integer(L, "attempt", (long)u->b.items[s->item].attempts);
        set_number(L, "elapsed", s->finished - s->started);
        lua_rawseti(L, -2, ++j);
    }
    return 1;
}

/* bulk:retry(index, delay): run the item again, not before `delay`
** seconds from now, without holding up the others. [-0, +0, v] */
static int l_bulk_retry(lua_State *L)
{
    bulk_ud_t *u = check_bulk(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    double delay = luaL_checknumber(L, 3);
    if (i < 1 || i > u->b.nitems || tc_bulk_retry(&u->b, (int)i - 1, delay) != 0)
        luaL_argerror(L, 2, "item is not waiting for a decision");
    return 0;
}

/* bulk:hold(delay): start no attempt of any item for `delay` seconds
** (a Retry-After meant for the whole batch). [-0, +0, v] */
static int l_bulk_hold(lua_State *L)
{
    bulk_ud_t *u = check_bulk(L, 1);
    tc_bulk_hold(&u->b, luaL_checknumber(L, 2));
    return 0;
}

/* bulk:stop(): start no fresh item (stop_on_error). [-0, +0, v] */
static int l_bulk_stop(lua_State *L)
{
    tc_bulk_stop(&check_bulk(L, 1)->b);
    return 0;
}

/* __gc, __close and bulk:close(): abort what runs, free everything, let
** go of the client; safe twice. [-0, +0, -] */
static int l_bulk_close(lua_State *L)
{
    bulk_ud_t *u = luaL_checkudata(L, 1, BULK_MT);
    tc_bulk_free(&u->b);
    if (u->client_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, u->client_ref);
        u->client_ref = LUA_NOREF;
    }
    u->closed = 1;
    return 0;
}

/* __tostring: "topcalls.bulk (N items)" or "topcalls.bulk (closed)". [-0, +1, m] */
static int l_bulk_tostring(lua_State *L)
{
    bulk_ud_t *u = luaL_checkudata(L, 1, BULK_MT);
    if (u->closed)
        lua_pushliteral(L, "topcalls.bulk (closed)");
    else
        lua_pushfstring(L, "topcalls.bulk (%d items)", u->b.nitems);
    return 1;
}

/* The schema named by the optional argument i ("carrier" when absent).
 * [-0, +0, v] */
static const tc_schema_t *opt_schema(lua_State *L, int i)
{
    const char *name = luaL_optstring(L, i, "carrier");
    const tc_schema_t *s = tc_schema_find(name);
    if (s == NULL)
        luaL_argerror(L, i, lua_pushfstring(L, "no schema called '%s'", name));
    return s;
}

/* core.validate(params, strict [, schema]) -> normalized | nil, errors.
** [-0, +2, m] */
static int l_validate(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int strict = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
    if (tc_schema_validate(L, opt_schema(L, 3), 1, strict) == 0) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return 2;
    }
    lua_remove(L, -2);
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* core.body(params, strict [, schema]) -> the JSON body of valid params,
** written while validating (no normalized table) | nil, errors | false
** when, not strict, params hold undeclared fields (then core.validate
** builds the normalized table for the generic encoder). [-0, +1|2, m] */
static int l_body(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int strict = lua_isnoneornil(L, 2) || lua_toboolean(L, 2);
    tc_buf_t *json = lua_touserdata(L, lua_upvalueindex(1));
    int n = tc_schema_write_json(L, opt_schema(L, 3), 1, strict, json);
    if (n > 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    if (json->oom)
        return luaL_error(L, "not enough memory");
    if (n < 0)
        lua_pushboolean(L, 0);
    else
        lua_pushlstring(L, json->data, json->len);
    return 1;
}

/* core.describe(schema) -> the schema's fields as data (schema.c);
** core.describe() -> the list of schema names. [-0, +1, m] */
static int l_describe(lua_State *L)
{
    if (lua_isnoneornil(L, 1))
        tc_schema_push_names(L);
    else
        tc_schema_push_description(L, opt_schema(L, 1));
    return 1;
}

/* core.retry_plan(attempts_made, max_retries, retryable, retry_after|nil)
** -> delay | nil, verdict. [-0, +2, -] */
static int l_retry_plan(lua_State *L)
{
    double delay;
    int retryable = lua_toboolean(L, 3);
    /* jitter costs a getrandom(2): only a retry needs it */
    tc_retry_verdict_t v = tc_retry_plan((int)luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2),
                                         retryable, luaL_optnumber(L, 4, -1),
                                         retryable ? tc_random_jitter() : 1.0, &delay);
    if (v == TC_RETRY_AGAIN)
        lua_pushnumber(L, delay);
    else
        lua_pushnil(L);
    lua_pushstring(L, tc_retry_verdict_name(v));
    return 2;
}

/* core.retry_after(text) -> seconds | nil. [-0, +1, -] */
static int l_retry_after(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    double v = tc_retry_after_parse(s, n, (time_t)luaL_optnumber(L, 2, (lua_Number)time(NULL)));
    if (v < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, v);
    return 1;
}

/* core.backoff(retry_index, jitter) -> seconds. [-0, +1, -] */
static int l_backoff(lua_State *L)
{
    lua_pushnumber(L, tc_backoff((int)luaL_checkinteger(L, 1), luaL_checknumber(L, 2)));
    return 1;
}

/* core.retryable(curl_code|nil, status|nil) -> boolean. [-0, +1, -] */
static int l_retryable(lua_State *L)
{
    int r = 0;
    if (!lua_isnoneornil(L, 1))
        r = tc_curl_code_retryable((CURLcode)luaL_checkinteger(L, 1));
    if (!lua_isnoneornil(L, 2))
        r = r || tc_http_status_retryable((long)luaL_checkinteger(L, 2));
    lua_pushboolean(L, r);
    return 1;
}

/* core.check(what, s) -> result of one pure check, for tests and the Lua
** layer: "ipv4", "hostname", "uuid", "token", "whitespace", "e164" -> boolean;
** "utf8_length" -> count | nil. [-0, +1, -] */
static int l_check(lua_State *L)
{
    static const char *const what[] = { "ipv4", "hostname", "uuid", "token", "whitespace", "utf8_length", "e164", NULL };
    int w = luaL_checkoption(L, 1, NULL, what);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    switch (w) {
    case 0: lua_pushboolean(L, tc_check_ipv4(s, n)); break;
    case 1: lua_pushboolean(L, tc_check_hostname(s, n)); break;
    case 2: lua_pushboolean(L, tc_check_uuid(s, n)); break;
    case 3: lua_pushboolean(L, tc_check_token(s, n)); break;
    case 4: lua_pushboolean(L, tc_has_whitespace(s, n)); break;
    case 6: lua_pushboolean(L, tc_check_e164(s, n) == 0); break;
    default: {
        long len = tc_utf8_length(s, n);
        if (len < 0) lua_pushnil(L); else lua_pushinteger(L, (lua_Integer)len);
    }
    }
    return 1;
}

/* core.json_decode(text) -> true, value | false: the decoder (json.c),
** which topcalls.json.decode is. [-0, +1|2, m] */
static int l_json_decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushboolean(L, 1);
    if (tc_json_push(L, s, n) == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return 2;
}

/* core.is_json(content_type) -> boolean: json_media_type of a present
** Content-Type value. [-0, +1, -] */
static int l_is_json(lua_State *L)
{
    tc_span_t ct;
    ct.p = luaL_checklstring(L, 1, &ct.n);
    lua_pushboolean(L, json_media_type(&ct));
    return 1;
}

/* core.suggest(name, list) -> closest entry of list | nil. [-0, +1, -] */
static int l_suggest(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    return tc_schema_push_suggestion(L, name, 2);
}

/* core.uuid4() -> a random UUID from the kernel's CSPRNG. [-0, +1, -] */
static int l_uuid4(lua_State *L)
{
    char u[37];
    if (tc_uuid4(u) != 0)
        return luaL_error(L, "topcalls: the kernel refused random bytes");
    lua_pushstring(L, u);
    return 1;
}

/* core.sleep(seconds): blocks the calling thread. [-0, +0, -] */
static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    if (s > 0) {
        struct timespec ts = { (time_t)s, (long)((s - floor(s)) * 1e9) };
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    return 0;
}

/* core.now() -> monotonic seconds, for elapsed times. [-0, +1, -] */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, tc_monotonic());
    return 1;
}

static const luaL_Reg client_methods[] = {
    { "perform", l_client_perform },
    { "redact", l_client_redact },
    { "mac", l_client_mac },
    { "has_key", l_client_has_key },
    { "bulk", l_client_bulk },
    { "close", l_client_close },
    { NULL, NULL }
};

/* The metamethods of a class: __gc and __close are the same close, safe
 * twice (STYLE: ownership across longjmp), and __tostring. */
#define CLASS_META(close, tostring) \
    { { "__gc", close }, { "__close", close }, { "__tostring", tostring }, { NULL, NULL } }

static const luaL_Reg client_meta[] = CLASS_META(l_client_close, l_client_tostring);

static const luaL_Reg bulk_methods[] = {
    { "add", l_bulk_add }, { "run", l_bulk_run }, { "retry", l_bulk_retry },
    { "hold", l_bulk_hold }, { "stop", l_bulk_stop }, { "close", l_bulk_close },
    { NULL, NULL }
};

static const luaL_Reg bulk_meta[] = CLASS_META(l_bulk_close, l_bulk_tostring);

static const luaL_Reg core_functions[] = {
    { "client_new", l_client_new },
    { "validate", l_validate },
    { "describe", l_describe },
    { "retry_plan", l_retry_plan },
    { "retry_after", l_retry_after },
    { "backoff", l_backoff },
    { "retryable", l_retryable },
    { "check", l_check },
    { "suggest", l_suggest },
    { "json_decode", l_json_decode },
    { "is_json", l_is_json },
    { "uuid4", l_uuid4 },
    { "sleep", l_sleep },
    { "now", l_now },
    { NULL, NULL }
};

/* The metatable `name` with its metamethods and an __index of methods;
 * its __metatable hides it from getmetatable. Once per Lua state.
 * [-0, +0, m] */
static void register_class(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods)
{
    if (luaL_newmetatable(L, name)) {
        tc_setfuncs(L, meta);
        lua_newtable(L);
        tc_setfuncs(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushstring(L, name);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_topcalls_core(lua_State *L);

int luaopen_topcalls_core(lua_State *L)
{
    pthread_once(&curl_once, init_curl_once);
    if (curl_init_code != CURLE_OK)
        return luaL_error(L, "topcalls: curl_global_init failed: %s", curl_easy_strerror(curl_init_code));

    tc_buf_open(L);
    register_class(L, CLIENT_MT, client_meta, client_methods);
    register_class(L, BULK_MT, bulk_meta, bulk_methods);

    lua_newtable(L);
    tc_setfuncs(L, core_functions);
    tc_buf_push(L, (size_t)-1 / 2);   /* one body buffer per Lua state, reused */
    lua_pushcclosure(L, l_body, 1);
    lua_setfield(L, -2, "body");
    curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, vi->version);
    lua_setfield(L, -2, "curl_version");
    lua_pushinteger(L, TC_BODY_LIMIT);
    lua_setfield(L, -2, "body_limit");
    lua_pushinteger(L, TC_BULK_MAX_CONCURRENCY);
    lua_setfield(L, -2, "max_concurrency");
    return 1;
}
