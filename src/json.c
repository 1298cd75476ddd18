/*
 * json.c - a strict JSON decoder that pushes Lua values, accepting exactly
 * what lua-cjson 2.1.0 accepts with decode_invalid_numbers off and building
 * the same values (integers for short integral literals on Lua 5.3+), so a
 * 2xx answer needs neither a body string nor cjson. Pure parsing, no I/O
 * and no malloc: every byte it builds lives on the Lua stack, so a memory
 * error may unwind out of any push and leave nothing behind.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>
#include "tc.h"

#define MAX_DEPTH 1000   /* cjson's default decode_max_depth */

typedef struct dec {
    lua_State *L;
    int depth;           /* objects and arrays open */
} dec_t;

/* cjson's whitespace: nothing else (no \f, no \v) */
static const unsigned char is_ws[256] = { [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1 };
/* where a run of plain string bytes stops; cjson takes raw control
 * characters as they are, and a NUL ends its input */
static const unsigned char ends_run[256] = { ['"'] = 1, ['\\'] = 1, [0] = 1 };

static inline const char *skip_ws(const char *p)
{
    while (is_ws[(unsigned char)*p])
        p++;
    return p;
}

static inline int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static const char *value(dec_t *d, const char *p);

/* Four hex digits at p as a number, or -1; stops at the first non-hex
 * byte, so it never reads past a NUL. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)p[i], lc = c | 0x20;
        if (is_digit((char)c))
            v = v << 4 | (c - '0');
        else if (lc >= 'a' && lc <= 'f')
            v = v << 4 | (lc - 'a' + 10);
        else
            return -1;
    }
    return v;
}

/* A code point (at most 0x10FFFF) as UTF-8 in u; returns the length. */
static size_t utf8(char *u, long cp)
{
    if (cp < 0x80) {
        u[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
** A string with escapes, from s (just past its opening quote). Pushes it
** and returns the byte after the closing quote, or returns NULL on a bad
** escape or the end of input (anything pushed is the caller's to drop).
** \u escapes as cjson reads them: a high surrogate must be followed by an
** escaped low one; a lone low surrogate is refused. noinline: luaL_Buffer
** is large (8 KiB on 5.1) and must not sit in every frame of the
** recursion. [-0, +(0|1|more on failure), m]
*/
__attribute__((noinline)) static const char *string_escaped(lua_State *L, const char *s)
{
    if (!lua_checkstack(L, LUA_MINSTACK))   /* luaL_Buffer's own slots */
        return NULL;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *p = s;
    for (;;) {
        const char *run = p;
        while (!ends_run[(unsigned char)*p])
            p++;
        luaL_addlstring(&b, run, (size_t)(p - run));
        if (*p == '"')
            break;
        if (*p == '\0')
            return NULL;
        char c;
        switch (p[1]) {   /* p[0] is the backslash */
        case '"': c = '"'; break;
        case '\\': c = '\\'; break;
        case '/': c = '/'; break;
        case 'b': c = '\b'; break;
        case 'f': c = '\f'; break;
        case 'n': c = '\n'; break;
        case 'r': c = '\r'; break;
        case 't': c = '\t'; break;
        case 'u': {
            long cp = hex4(p + 2);
            int len = 6;
            if (cp < 0)
                return NULL;
            if ((cp & 0xF800) == 0xD800) {
                if (cp & 0x400)
                    return NULL;   /* a low surrogate first */
                if (p[6] != '\\' || p[7] != 'u')
                    return NULL;
                long lo = hex4(p + 8);
                if (lo < 0 || (lo & 0xFC00) != 0xDC00)
                    return NULL;
                cp = (((cp & 0x3FF) << 10) | (lo & 0x3FF)) + 0x10000;
                len = 12;
            }
            char u[4];
            luaL_addlstring(&b, u, utf8(u, cp));
            p += len;
            continue;
        }
        default:
            return NULL;
        }
        luaL_addchar(&b, c);
        p += 2;
    }
    luaL_pushresult(&b);
    return p + 1;
}

/* A string from p (just past its opening quote): pushed straight from the
 * input when it has no escapes. Returns the byte after it, or NULL.
 * [-0, +(0|1), m] */
static const char *string(lua_State *L, const char *p)
{
    const char *s = p;
    while (!ends_run[(unsigned char)*p])
        p++;
    if (*p == '"') {
        lua_pushlstring(L, s, (size_t)(p - s));
        return p + 1;
    }
    if (*p == '\0')
        return NULL;
    return string_escaped(L, s);
}

/*
** A number at p (a '-' or a digit). cjson refuses a leading '+', hex,
** leading zeros, inf and nan, then takes what strtod takes; that is a
** decimal with an optional fraction and exponent, where "1." and "-.5"
** pass (a following byte that cannot follow a value is refused by the
** caller, as by cjson's next token). Integral literals of at most 15
** digits are exact integers (floats on 5.1); everything else, and -0, is
** strtod's double, as cjson's. [-0, +(0|1), -]
*/
static const char *number(lua_State *L, const char *p)
{
    const char *start = p;
    int neg = *p == '-';
    if (neg)
        p++;
    if (*p == '0') {
        if (is_digit(p[1]) || (p[1] | 0x20) == 'x')
            return NULL;
    } else if (*p > '9') {
        return NULL;
    }
    const char *digits = p;
    while (is_digit(*p))
        p++;
    size_t nint = (size_t)(p - digits);
    int integral = 1;
    if (*p == '.') {
        integral = 0;
        const char *frac = ++p;
        while (is_digit(*p))
            p++;
        if (nint == 0 && p == frac)
            return NULL;
    } else if (nint == 0) {
        return NULL;
    }
    if ((*p | 0x20) == 'e') {
        const char *e = p + 1;
        if (*e == '+' || *e == '-')
            e++;
        if (is_digit(*e)) {   /* else strtod stops before the 'e' */
            integral = 0;
            while (is_digit(*e))
                e++;
            p = e;
        }
    }
    if (integral && nint <= 15 && !(neg && nint == 1 && *digits == '0')) {
        lua_Integer v = 0;
        for (const char *q = digits; q < p; q++)
            v = v * 10 + (*q - '0');
        lua_pushinteger(L, neg ? -v : v);
        return p;
    }
    char *end;
    double v = strtod(start, &end);
    if (end != p)   /* a locale whose decimal point is not '.': let cjson decide */
        return NULL;
    lua_pushnumber(L, v);
    return p;
}

/* A table is made once its size is known: its pairs (values) wait on the
 * stack, at most PENDING of them, then go in with no rehash on the way
 * (rehashing a table as it grows cost more than all the rest of a typical
 * answer's decoding). Only the outer levels do it, so the stack stays
 * within what the 5.1 C API allows (LUAI_MAXCSTACK, 8000 slots) at any
 * depth that cjson accepts. */
#define PENDING 32
#define PENDING_LEVELS 16

/* Make the table of the n pairs (n values when is_array) on the stack
 * above base, and leave it alone at base + 1. [-(n|2n), +1, m] */
static void make_table(lua_State *L, int base, int n, int is_array)
{
    if (is_array) {
        lua_createtable(L, n, 0);
        for (int i = 1; i <= n; i++) {
            lua_pushvalue(L, base + i);
            lua_rawseti(L, -2, i);
        }
    } else {
        lua_createtable(L, 0, n);
        for (int i = 1; i <= 2 * n; i += 2) {
            lua_pushvalue(L, base + i);
            lua_pushvalue(L, base + i + 1);
            lua_rawset(L, -3);
        }
    }
    if (n > 0) {
        lua_replace(L, base + 1);
        lua_settop(L, base + 1);
    }
}

/* Enter an object or array: the depth limit and the stack it needs.
 * Returns how many may wait (0: make the table now), or -1. */
static int enter(dec_t *d)
{
    if (++d->depth > MAX_DEPTH)
        return -1;
    int pending = d->depth <= PENDING_LEVELS ? PENDING : 0;
    return lua_checkstack(d->L, 2 * pending + 3) ? pending : -1;
}

/* An object (is_array 0, p just past '{'; pairs set raw, the last of
 * duplicate keys wins) or an array (p just past '['; t[1..n]).
 * [-0, +(0|1|more on failure), m] */
static const char *container(dec_t *d, const char *p, int is_array)
{
    lua_State *L = d->L;
    const char close = is_array ? ']' : '}';
    int base = lua_gettop(L), room = enter(d), n = 0;
    if (room < 0)
        return NULL;
    if (room == 0)
        lua_newtable(L);
    p = skip_ws(p);
    if (*p != close) {
        for (;;) {
            if (!is_array) {
                if (*p != '"' || (p = string(L, p + 1)) == NULL)
                    return NULL;
                p = skip_ws(p);
                if (*p != ':')
                    return NULL;
                p = skip_ws(p + 1);
            }
            if ((p = value(d, p)) == NULL)
                return NULL;
            ++n;
            if (room == 0) {
                if (is_array)
                    lua_rawseti(L, base + 1, n);
                else
                    lua_rawset(L, base + 1);
            } else if (n == room) {
                make_table(L, base, n, is_array);
                room = 0;
            }
            p = skip_ws(p);
            if (*p == close)
                break;
            if (*p != ',')
                return NULL;
            p = skip_ws(p + 1);
        }
    }
    if (room > 0)
        make_table(L, base, n, is_array);
    d->depth--;
    return p + 1;
}

/* One value at p (no whitespace before it): pushes it and returns the
 * byte after it, or NULL. [-0, +(0|1|more on failure), m] */
static const char *value(dec_t *d, const char *p)
{
    lua_State *L = d->L;
    switch (*p) {
    case '{':
        return container(d, p + 1, 0);
    case '[':
        return container(d, p + 1, 1);
    case '"':
        return string(L, p + 1);
    case 't':
        if (strncmp(p, "true", 4) != 0)
            return NULL;
        lua_pushboolean(L, 1);
        return p + 4;
    case 'f':
        if (strncmp(p, "false", 5) != 0)
            return NULL;
        lua_pushboolean(L, 0);
        return p + 5;
    case 'n':
        if (strncmp(p, "null", 4) != 0)
            return NULL;
        lua_pushlightuserdata(L, NULL);   /* cjson.null */
        return p + 4;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return number(L, p);
    default:
        return NULL;
    }
}

/*
** Decode the JSON text s[0..n), where s[n] is a NUL (as in a Lua string or
** a tc_buf), and push its value. Returns TC_JSON_OBJECT, TC_JSON_ARRAY or
** TC_JSON_SCALAR for what it pushed, or 0 (nothing pushed) when cjson
** would refuse the text. Like cjson, a NUL byte ends the text, and one in
** the first two bytes is refused (its UTF-16/32 check). Raises only
** memory errors. [-0, +(0|1), m]
*/
int tc_json_push(lua_State *L, const char *s, size_t n)
{
    int top = lua_gettop(L);
    if (n >= 2 && (s[0] == '\0' || s[1] == '\0'))
        return 0;
    dec_t d = { L, 0 };
    const char *p = skip_ws(s);
    const char *end = value(&d, p);
    if (end != NULL && *skip_ws(end) == '\0')
        return *p == '{' ? TC_JSON_OBJECT : *p == '[' ? TC_JSON_ARRAY : TC_JSON_SCALAR;
    lua_settop(L, top);
    return 0;
}
