/*
 * tc_compat.h - the few Lua C API differences between 5.1/LuaJIT, 5.3 and
 * 5.4 that the core uses, in one place.
 * SPDX-License-Identifier: MIT
 */
#ifndef TC_COMPAT_H
#define TC_COMPAT_H

#include <signal.h>
#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 502
/* Lua 5.1 and LuaJIT */
#define tc_rawlen(L, i) lua_objlen((L), (i))
static inline void tc_setfuncs(lua_State *L, const luaL_Reg *l)
{
    for (; l->name != NULL; l++) {
        lua_pushcfunction(L, l->func);
        lua_setfield(L, -2, l->name);
    }
}
static inline void *tc_testudata(lua_State *L, int i, const char *tname)
{
    void *p = lua_touserdata(L, i);
    if (p == NULL || !lua_getmetatable(L, i))
        return NULL;
    luaL_getmetatable(L, tname);
    if (!lua_rawequal(L, -1, -2))
        p = NULL;
    lua_pop(L, 2);
    return p;
}
#else
#define tc_rawlen(L, i) lua_rawlen((L), (i))
#define tc_setfuncs(L, l) luaL_setfuncs((L), (l), 0)
#define tc_testudata(L, i, t) luaL_testudata((L), (i), (t))
#endif

#if LUA_VERSION_NUM >= 504
#define tc_newuserdata(L, sz) lua_newuserdatauv((L), (sz), 0)
#else
#define tc_newuserdata(L, sz) lua_newuserdata((L), (sz))
#endif

#endif
