/*
 * fuzz_validate.c - libFuzzer target for the schema validator (schema.c)
 * through core.validate, in a Lua 5.4 state linked into this fuzzer only.
 * A small deterministic decoder turns the input into a Lua table: nested
 * tables, shared and cyclic references, field names and values from a
 * dictionary, raw strings (invalid UTF-8, NULs, whitespace), long strings,
 * integers, floats (NaN, +-inf, -0.0, huge), booleans, non-string keys,
 * functions, light userdata, and metatables whose every metamethod raises.
 * Properties: validation never raises; every error is { path, code,
 * message } with a documented code; strict and non-strict differ exactly
 * by the unknown_field errors; a valid result has every documented field
 * in shape, its defaults filled in, and re-validates clean to itself.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <lualib.h>
#include "fuzz.h"
#include "tc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_topcalls_core(lua_State *L);

static const char *const dict[] = {
    "carrier_name", "trunk_type", "sip_gateway", "registration", "inbound_auth",
    "ipv4", "port", "inbound", "outbound", "username", "password", "sip_realm",
    "from_domain", "from_user", "public_ip_in_contact", "use_tls",
    "static_ip", "auth", "reg", "My VoIP Provider", "203.0.113.10", "127.0.0.1",
    "01.2.3.4", "256.1.1.1", "sip.example.com", "sip:sip.example.com", "SIPS:x",
    "a b", "-bad-.com", "\xc3\xa9", "\xed\xa0\x80", "\xff", "x\0y", "", " ",
    "carier_name", "sip_gatewy", "prot", "outbund", "trunk_typo", "1.2.3.999",
};
#define NDICT (sizeof dict / sizeof *dict)

static const char *const codes[] = {
    "required", "type", "length", "enum", "format", "range", "unknown_field", "not_allowed", "conflict", NULL
};

typedef struct dec {
    fz_t f;
    int  pool;     /* stack index of the list of tables built so far */
    int  npool;
    int  budget;   /* values left to build */
} dec_t;

static int trap(lua_State *L)
{
    return luaL_error(L, "trap: a metamethod ran");
}

static void push_value(lua_State *L, dec_t *d, int depth);

/* A table of up to 7 pairs; may get a metatable of traps. [-0, +1] */
static void push_table(lua_State *L, dec_t *d, int depth)
{
    int n = fz_byte(&d->f) % 8;
    lua_createtable(L, 0, n);
    int t = lua_gettop(L);
    lua_pushvalue(L, t);
    lua_rawseti(L, d->pool, ++d->npool);
    for (int i = 0; i < n && d->budget > 0; i++) {
        push_value(L, d, depth + 1);                       /* key */
        push_value(L, d, depth + 1);                       /* value */
        int kt = lua_type(L, -2);
        if (kt == LUA_TNIL || (kt == LUA_TNUMBER && isnan(lua_tonumber(L, -2))))
            lua_pop(L, 2);
        else
            lua_rawset(L, t);
    }
    if (fz_byte(&d->f) == 0xEE) {
        static const char *const events[] = { "__index", "__newindex", "__pairs", "__len", "__eq",
                                              "__lt", "__le", "__tostring", "__name", "__call", "__gc", NULL };
        lua_createtable(L, 0, 11);
        for (const char *const *e = events; *e; e++) {
            lua_pushcfunction(L, trap);
            lua_setfield(L, -2, *e);
        }
        lua_setmetatable(L, t);
    }
}

/* One value from the input. [-0, +1] */
static void push_value(lua_State *L, dec_t *d, int depth)
{
    static const double specials[] = { NAN, INFINITY, -INFINITY, -0.0, 0.5, 1e300, -1e300, 5060.0,
                                       65535.0, 65536.0, 9.2233720368547758e18, 4.9e-324, 1.0, 0.0 };
    d->budget--;
    uint8_t op = fz_byte(&d->f);
    switch (op % 16) {
    case 0: lua_pushnil(L); break;
    case 1: case 2: {
        const char *s = dict[fz_byte(&d->f) % NDICT];
        /* "x\0y" is the one entry with an embedded NUL (strcmp sees "x") */
        lua_pushlstring(L, s, strcmp(s, "x") == 0 ? 3 : strlen(s));
        break;
    }
    case 3: {
        size_t n;
        const char *s = fz_bytes(&d->f, 255, &n);
        lua_pushlstring(L, s, n);
        break;
    }
    case 4: {   /* a long run of one ASCII or two-byte character around the 100 limit */
        int count = 90 + fz_byte(&d->f) % 20 + (fz_byte(&d->f) == 1 ? 1000 : 0);
        int two = op & 0x10;
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 0; i < count; i++)
            luaL_addstring(&b, two ? "\xc3\xa9" : "a");
        luaL_pushresult(&b);
        break;
    }
    case 5: lua_pushinteger(L, (int8_t)fz_byte(&d->f)); break;
    case 6: lua_pushinteger(L, (lua_Integer)fz_u64(&d->f, 8)); break;
    case 7: lua_pushnumber(L, specials[fz_byte(&d->f) % (sizeof specials / sizeof *specials)]); break;
    case 8: {
        uint64_t bits = fz_u64(&d->f, 8);
        double v;
        memcpy(&v, &bits, sizeof v);
        lua_pushnumber(L, v);
        break;
    }
    case 9: lua_pushboolean(L, 1); break;
    case 10: lua_pushboolean(L, 0); break;
    case 11: case 12: case 13:
        if (depth < 5 && d->budget > 0) push_table(L, d, depth);
        else lua_pushinteger(L, 5060);
        break;
    case 14:   /* a table built before: shared, or a cycle */
        if (d->npool > 0) lua_rawgeti(L, d->pool, 1 + fz_byte(&d->f) % d->npool);
        else lua_pushboolean(L, 1);
        break;
    default:
        if (op & 0x10) lua_pushlightuserdata(L, d);
        else lua_pushcfunction(L, trap);
        break;
    }
}

static int in_codes(const char *c)
{
    for (const char *const *p = codes; *p; p++)
        if (strcmp(*p, c) == 0)
            return 1;
    return 0;
}

/* Check the error list at index errs; returns the number of unknown_field
 * errors. */
static int check_errors(lua_State *L, int errs, int count)
{
    int unknown = 0;
    FZ_ASSERT((int)lua_rawlen(L, errs) == count, "count %d, list %d", count, (int)lua_rawlen(L, errs));
    for (int i = 1; i <= count; i++) {
        lua_rawgeti(L, errs, i);
        FZ_ASSERT(lua_type(L, -1) == LUA_TTABLE, "error %d is not a table", i);
        lua_getfield(L, -1, "path");
        lua_getfield(L, -2, "code");
        lua_getfield(L, -3, "message");
        FZ_ASSERT(lua_type(L, -3) == LUA_TSTRING, "error %d: path", i);
        FZ_ASSERT(lua_type(L, -2) == LUA_TSTRING && in_codes(lua_tostring(L, -2)), "error %d: code", i);
        FZ_ASSERT(lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0, "error %d: message", i);
        unknown += strcmp(lua_tostring(L, -2), "unknown_field") == 0;
        lua_pop(L, 4);
    }
    return unknown;
}

/* t[name] of the table at idx, raw. [-0, +1] */
static int field(lua_State *L, int idx, const char *name)
{
    lua_pushstring(L, name);
    return lua_rawget(L, idx);
}

static size_t nkeys(lua_State *L, int idx)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) { n++; lua_pop(L, 1); }
    return n;
}

/* A valid, normalized carrier at idx is in shape (strict: nothing else). */
static void check_normalized(lua_State *L, int idx, int strict)
{
    size_t n;
    int top = lua_gettop(L);
    FZ_ASSERT(field(L, idx, "carrier_name") == LUA_TSTRING, "carrier_name");
    const char *s = lua_tolstring(L, -1, &n);
    long cps = tc_utf8_length(s, n);
    FZ_ASSERT(cps >= 1 && cps <= 100, "carrier_name of %ld code points", cps);
    FZ_ASSERT(field(L, idx, "trunk_type") == LUA_TSTRING, "trunk_type default");
    const char *tt = lua_tostring(L, -1);
    FZ_ASSERT(!strcmp(tt, "static_ip") || !strcmp(tt, "auth") || !strcmp(tt, "reg"), "trunk_type %s", tt);
    FZ_ASSERT(field(L, idx, "sip_gateway") == LUA_TTABLE, "sip_gateway");
    int gw = lua_gettop(L);
    FZ_ASSERT(field(L, gw, "ipv4") == LUA_TSTRING, "ipv4");
    const char *ip = lua_tolstring(L, -1, &n);
    FZ_ASSERT(!tc_has_whitespace(ip, n), "ipv4 has whitespace");
    FZ_ASSERT(field(L, gw, "port") == LUA_TNUMBER && lua_isinteger(L, -1), "port not an integer");
    lua_Integer port = lua_tointeger(L, -1);
    FZ_ASSERT(port >= 1 && port <= 65535, "port %lld", (long long)port);
    FZ_ASSERT(field(L, gw, "inbound") == LUA_TBOOLEAN, "inbound default");
    int in = lua_toboolean(L, -1);
    FZ_ASSERT(field(L, gw, "outbound") == LUA_TBOOLEAN, "outbound default");
    FZ_ASSERT(in || lua_toboolean(L, -1), "a gateway with no direction passed");
    if (in)
        FZ_ASSERT(tc_check_ipv4(ip, n), "inbound gateway with a hostname");
    else
        FZ_ASSERT(tc_check_ipv4(ip, n) || tc_check_hostname(ip, n), "malformed gateway host");
    int reg = field(L, idx, "registration") == LUA_TTABLE;
    int auth = field(L, idx, "inbound_auth") == LUA_TTABLE;
    FZ_ASSERT(reg == (strcmp(tt, "reg") == 0), "registration vs trunk_type %s", tt);
    FZ_ASSERT(auth == (strcmp(tt, "auth") == 0), "inbound_auth vs trunk_type %s", tt);
    if (strict) {
        FZ_ASSERT(nkeys(L, gw) == 4, "gateway keys");
        FZ_ASSERT(nkeys(L, idx) == 3 + (size_t)reg + (size_t)auth, "top-level keys");
    }
    lua_settop(L, top);
}

/* Deep equality of two acyclic normalized tables (strings, numbers with
 * their integer subtype, booleans, nested tables). */
static int same(lua_State *L, int a, int b)
{
    if (lua_type(L, a) != lua_type(L, b))
        return 0;
    if (lua_type(L, a) == LUA_TNUMBER && lua_isinteger(L, a) != lua_isinteger(L, b))
        return 0;
    if (lua_type(L, a) != LUA_TTABLE)
        return lua_rawequal(L, a, b);
    if (nkeys(L, a) != nkeys(L, b))
        return 0;
    lua_pushnil(L);
    while (lua_next(L, a)) {
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        int ok = same(L, lua_gettop(L) - 1, lua_gettop(L));
        lua_pop(L, 2);
        if (!ok) { lua_pop(L, 1); return 0; }
    }
    return 1;
}

/* validate(params, strict) through the real core.validate. Leaves
 * normalized|nil, errors|nil on the stack. */
static void call_validate(lua_State *L, int validate, int params, int strict)
{
    lua_pushvalue(L, validate);
    lua_pushvalue(L, params);
    lua_pushboolean(L, strict);
    FZ_ASSERT(lua_pcall(L, 2, 2, 0) == LUA_OK, "validate raised: %s", lua_tostring(L, -1));
    FZ_ASSERT(lua_isnil(L, -2) != lua_isnil(L, -1), "exactly one of normalized, errors");
}

/* body(params, strict) through the real core.body: leaves exactly two
 * values, body|false|nil and errors|nil. */
static void call_body(lua_State *L, int body, int params, int strict)
{
    int top = lua_gettop(L);
    lua_pushvalue(L, body);
    lua_pushvalue(L, params);
    lua_pushboolean(L, strict);
    FZ_ASSERT(lua_pcall(L, 2, LUA_MULTRET, 0) == LUA_OK, "body raised: %s", lua_tostring(L, -1));
    lua_settop(L, top + 2);
}

/* The one-walk writer (core.body) and the table walker (core.validate)
 * must agree: the same errors (paths and codes, in order), a body exactly
 * when the table is valid, and the same bytes for params and for their
 * normalized copy (defaults written as if given). v is validate's pair. */
static void check_body_agrees(lua_State *L, int body, int params, int strict, int v)
{
    call_body(L, body, params, strict);
    int b = lua_gettop(L) - 1;
    if (!lua_isnil(L, v + 1)) {
        FZ_ASSERT(lua_isnil(L, b) && !lua_isnil(L, b + 1), "validate refused, body did not");
        int n = (int)lua_rawlen(L, v + 1);
        FZ_ASSERT((int)lua_rawlen(L, b + 1) == n, "error counts differ");
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, v + 1, i);
            lua_rawgeti(L, b + 1, i);
            int e1 = lua_gettop(L) - 1;
            lua_getfield(L, e1, "path");
            lua_getfield(L, e1 + 1, "path");
            lua_getfield(L, e1, "code");
            lua_getfield(L, e1 + 1, "code");
            FZ_ASSERT(lua_rawequal(L, -4, -3) && lua_rawequal(L, -2, -1), "error %d differs", i);
            lua_pop(L, 6);
        }
    } else if (lua_type(L, b) == LUA_TSTRING) {
        call_body(L, body, v, 1);
        FZ_ASSERT(lua_type(L, -2) == LUA_TSTRING, "the normalized copy has no body");
        FZ_ASSERT(lua_rawequal(L, b, -2), "params and their normalized copy give other bytes");
        lua_pop(L, 2);
    } else {
        FZ_ASSERT(!strict && lua_type(L, b) == LUA_TBOOLEAN, "valid, but neither a body nor the undeclared-fields answer");
    }
    lua_pop(L, 2);
}

static int build(lua_State *L)
{
    dec_t *d = lua_touserdata(L, 1);
    lua_newtable(L);
    d->pool = lua_gettop(L);
    push_table(L, d, 0);
    return 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) abort();
    luaL_requiref(L, "topcalls.core", luaopen_topcalls_core, 0);
    lua_getfield(L, -1, "validate");
    int validate = lua_gettop(L);
    lua_getfield(L, -2, "body");
    int body = lua_gettop(L);

    dec_t d = { { data, size }, 0, 0, 400 };
    lua_pushcfunction(L, build);
    lua_pushlightuserdata(L, &d);
    FZ_ASSERT(lua_pcall(L, 1, 2, 0) == LUA_OK, "decoder raised: %s", lua_tostring(L, -1));
    int params = lua_gettop(L);

    call_validate(L, validate, params, 1);
    check_body_agrees(L, body, params, 1, lua_gettop(L) - 1);
    int strict_ok = !lua_isnil(L, -2);
    int strict_count = 0, unknown = 0;
    if (!strict_ok) {
        strict_count = (int)lua_rawlen(L, -1);
        FZ_ASSERT(strict_count > 0, "an empty error list");
        unknown = check_errors(L, lua_gettop(L), strict_count);
    } else {
        int norm = lua_gettop(L) - 1;
        check_normalized(L, norm, 1);
        /* the normalized copy re-validates clean, to itself */
        call_validate(L, validate, norm, 1);
        FZ_ASSERT(!lua_isnil(L, -2), "the normalized copy does not re-validate");
        FZ_ASSERT(same(L, norm, lua_gettop(L) - 1), "normalizing twice changes the table");
        lua_pop(L, 2);
    }
    lua_pop(L, 2);

    call_validate(L, validate, params, 0);
    check_body_agrees(L, body, params, 0, lua_gettop(L) - 1);
    if (lua_isnil(L, -2)) {
        int n = (int)lua_rawlen(L, -1);
        FZ_ASSERT(check_errors(L, lua_gettop(L), n) == 0, "unknown_field while not strict");
        FZ_ASSERT(n == strict_count - unknown, "non-strict %d errors, strict %d - %d unknown",
                  n, strict_count, unknown);
    } else {
        FZ_ASSERT(strict_count == unknown, "non-strict valid, strict had %d other errors",
                  strict_count - unknown);
        check_normalized(L, lua_gettop(L) - 1, 0);
    }
    lua_close(L);
    return 0;
}
