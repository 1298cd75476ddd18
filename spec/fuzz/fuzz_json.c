/*
 * fuzz_json.c - differential libFuzzer target for the JSON decoder of the
 * success path (json.c) against lua-cjson itself: Debian's cjson.so for
 * Lua 5.4, loaded into a Lua 5.4 state linked into this fuzzer only, with
 * decode_invalid_numbers off as topcalls.json sets it. Properties, for any
 * bytes: both accept or both refuse; an accepted text gives the same value
 * (numbers equal, -0 by its sign, an integer equal to cjson's integral
 * float, tables key by key, null the same light userdata); a refusal
 * leaves the stack as it was.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <lualib.h>
#include "fuzz.h"
#include "tc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CJSON_CPATH "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so"

static lua_State *L;

/* The Lua state with cjson.new().decode (invalid numbers off) in the
 * registry as "decode"; made once, kept for the whole run. */
static void open_state(void)
{
    L = luaL_newstate();
    FZ_ASSERT(L != NULL, "no Lua state");
    luaL_openlibs(L);
    const char *boot =
        "package.cpath = '" CJSON_CPATH ";' .. package.cpath\n"
        "local c = require('cjson').new()\n"
        "c.decode_invalid_numbers(false)\n"
        "return c.decode";
    if (luaL_dostring(L, boot) != 0)
        FZ_ASSERT(0, "cannot load cjson: %s", lua_tostring(L, -1));
    lua_setfield(L, LUA_REGISTRYINDEX, "decode");
}

/* Are the values at a (ours) and b (cjson's) the same? [-0, +0, m] */
static int same(int a, int b, int depth)
{
    int ta = lua_type(L, a), tb = lua_type(L, b);
    if (ta != tb)
        return 0;
    switch (ta) {
    case LUA_TNUMBER: {
        double x = lua_tonumber(L, a), y = lua_tonumber(L, b);
        if (lua_isinteger(L, a) && !lua_isinteger(L, b)
            && (double)lua_tointeger(L, a) != y)
            return 0;
        return x == y && signbit(x) == signbit(y);
    }
    case LUA_TSTRING: {
        size_t na, nb;
        const char *sa = lua_tolstring(L, a, &na), *sb = lua_tolstring(L, b, &nb);
        return na == nb && memcmp(sa, sb, na) == 0;
    }
    case LUA_TBOOLEAN:
        return lua_toboolean(L, a) == lua_toboolean(L, b);
    case LUA_TLIGHTUSERDATA:
        return lua_touserdata(L, a) == NULL && lua_touserdata(L, b) == NULL;
    case LUA_TTABLE:
        break;
    default:
        return 0;
    }
    luaL_checkstack(L, 4, "same");
    /* every pair of a in b, and b has no more pairs than a */
    long na = 0, nb = 0;
    lua_pushnil(L);
    while (lua_next(L, a) != 0) {
        na++;
        lua_pushvalue(L, -2);
        lua_rawget(L, b);
        int ok = same(lua_gettop(L) - 1, lua_gettop(L), depth + 1);
        lua_pop(L, 2);
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
    }
    lua_pushnil(L);
    while (lua_next(L, b) != 0) {
        nb++;
        lua_pop(L, 1);
    }
    return na == nb && lua_getmetatable(L, a) == 0 && lua_getmetatable(L, b) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (L == NULL)
        open_state();
    lua_settop(L, 0);
    char *text = fz_dup(data, size, 1);   /* exactly n bytes and the NUL json.c relies on */

    int shape = tc_json_push(L, text, size);
    FZ_ASSERT(lua_gettop(L) == (shape ? 1 : 0), "stack %d after shape %d", lua_gettop(L), shape);

    lua_getfield(L, LUA_REGISTRYINDEX, "decode");
    lua_pushlstring(L, (const char *)data, size);
    int accepted = lua_pcall(L, 1, 1, 0) == LUA_OK;
    FZ_ASSERT(accepted == (shape != 0), "cjson %s, json.c %s: %.*s",
              accepted ? "accepts" : lua_tostring(L, -1), shape ? "accepts" : "refuses",
              (int)(size < 200 ? size : 200), text);
    if (accepted) {
        FZ_ASSERT(same(1, 2, 0), "different values for %.*s", (int)(size < 200 ? size : 200), text);
        int t = lua_type(L, 1);
        FZ_ASSERT(shape == TC_JSON_OBJECT || shape == TC_JSON_ARRAY ? t == LUA_TTABLE : t != LUA_TTABLE,
                  "shape %d for a %s", shape, lua_typename(L, t));
    }
    lua_settop(L, 0);
    /* free this input's values now: libFuzzer runs LeakSanitizer after any
     * input that leaves more mallocs than frees, which is slow */
    lua_gc(L, LUA_GCCOLLECT, 0);
    free(text);
    return 0;
}
