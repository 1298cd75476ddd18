/*
 * torture.c - allocation-failure torture of the topcalls module, in the
 * manner of curl's torture tests. It embeds Lua 5.4 (linked here, never
 * into the module) with an allocator that fails the Nth allocation, and
 * for every N up to the number a scenario needs (scenarios.lua: a full
 * validate, a full add against the emulator, loading the module, building
 * a client) runs the scenario in a fresh state. Every run must end in
 * success, a returned error, or a raised "not enough memory" - never a
 * crash or another error - and leave no client half-built and usable.
 * Built with ASan/UBSan and the module's sources compiled in, so any leak
 * or memory error in the C core fails the run at exit.
 * Only the Lua allocator is failed: malloc inside libcurl and in the C
 * core (its own buffers) is not covered here.
 *   torture SCENARIOS_LUA [SCENARIO...]
 * Prints a line per scenario and mode and ends with "N passed, N failed".
 * SPDX-License-Identifier: MIT
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

int luaopen_topcalls_core(lua_State *L);

typedef struct ctx {
    int           armed;
    unsigned long burst;      /* fail this many from the Nth on (0: all) */
    unsigned long count;      /* growing allocations since arming */
    unsigned long fail_at;
    unsigned long failed;     /* allocations refused */
} ctx_t;

/* Only allocations that grow can fail: Lua assumes shrinking never does. */
static void *torture_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    ctx_t *c = ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (c->armed && (ptr == NULL || nsize > osize)) {
        c->count++;
        if (c->fail_at && c->count >= c->fail_at
            && (c->burst == 0 || c->count < c->fail_at + c->burst)) {
            c->failed++;
            return NULL;
        }
    }
    return realloc(ptr, nsize);
}

static const char *scenarios_file;
static int verbose;

/* A fresh state with the libraries, the module preloaded and the scenario
 * table loaded (unarmed). Leaves the scenario table on the stack. */
static lua_State *new_state(ctx_t *c)
{
    lua_State *L = lua_newstate(torture_alloc, c);
    if (L == NULL) {
        fprintf(stderr, "FAIL: torture: cannot create a Lua state\n");
        exit(2);
    }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_topcalls_core);
    lua_setfield(L, -2, "topcalls.core");
    lua_pop(L, 1);
    if (luaL_dofile(L, scenarios_file) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "FAIL: torture: %s: %s\n", scenarios_file, lua_tostring(L, -1));
        exit(2);
    }
    return L;
}

/* Lua dlcloses C modules (lua-cjson) when a state closes; pinning them
 * keeps their symbols for the leak report at exit. */
static void keep_c_modules_loaded(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchpath");
    lua_pushliteral(L, "cjson");
    lua_getfield(L, -3, "cpath");
    lua_call(L, 2, 1);
    if (lua_isstring(L, -1))
        dlopen(lua_tostring(L, -1), RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    lua_close(L);
}

typedef struct tally {
    unsigned long runs, injected, ok, returned, oom, bad;
} tally_t;

/* One run of scenario with the Nth allocation failing (0: none). Returns
 * the number of allocations the scenario made, or 0 on a failed check. */
static const char *const mode_names[] = { "fail-from", "fail-once", "fail-twice" };
static const unsigned long mode_burst[] = { 0, 1, 2 };

static unsigned long run(const char *scenario, unsigned long n, int mode, tally_t *t)
{
    ctx_t c = { 0, mode_burst[mode], 0, n, 0 };
    lua_State *L = new_state(&c);
    int tab = lua_gettop(L);

    /* setup (unarmed): scenarios.setup(name) prepares what the step uses */
    lua_getfield(L, tab, "setup");
    lua_pushstring(L, scenario);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "FAIL: torture: setup of %s: %s\n", scenario, lua_tostring(L, -1));
        exit(2);
    }
    lua_getfield(L, tab, scenario);
    if (!lua_isfunction(L, -1)) {
        fprintf(stderr, "FAIL: torture: no scenario %s\n", scenario);
        exit(2);
    }
    int base = lua_gettop(L) - 1;
    c.armed = 1;
    int status = lua_pcall(L, 0, LUA_MULTRET, 0);
    c.armed = 0;
    unsigned long used = c.count;
    int nres = lua_gettop(L) - base;
    int ok = 1;
    const char *what;

    t->runs++;
    if (c.failed)
        t->injected++;
    if (status == LUA_ERRMEM
        || (status == LUA_ERRRUN && lua_type(L, -1) == LUA_TSTRING
            && strstr(lua_tostring(L, -1), "not enough memory"))) {
        what = "oom";
        t->oom++;
    } else if (status != LUA_OK) {
        what = "bad error";
        fprintf(stderr, "FAIL: torture: %s N=%lu %s: raised %s (status %d)\n", scenario, n, mode_names[mode],
                lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1), status);
        ok = 0;
    } else {
        /* scenarios.check(name, injected, results...) judges the results */
        lua_getfield(L, tab, "check");
        lua_pushstring(L, scenario);
        lua_pushboolean(L, c.failed > 0);
        for (int i = 1; i <= nres; i++)
            lua_pushvalue(L, base + i);
        if (lua_pcall(L, 2 + nres, 1, 0) != LUA_OK) {
            fprintf(stderr, "FAIL: torture: %s N=%lu %s: %s\n", scenario, n, mode_names[mode], lua_tostring(L, -1));
            ok = 0;
            what = "bad result";
        } else {
            what = lua_toboolean(L, -1) ? "returned error" : "success";
            if (lua_toboolean(L, -1)) t->returned++; else t->ok++;
        }
    }
    lua_settop(L, tab);

    /* after (unarmed): collect, so a half-built client's __gc runs now,
     * then scenarios.after checks that what is left is usable or absent */
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    lua_getfield(L, tab, "after");
    lua_pushstring(L, scenario);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "FAIL: torture: %s N=%lu %s after a run ending in %s: %s\n", scenario, n,
                mode_names[mode], what, lua_tostring(L, -1));
        ok = 0;
    }
    if (verbose)
        fprintf(stderr, "torture: %s N=%lu %s: %s, %lu allocations\n", scenario, n, mode_names[mode], what, used);
    lua_close(L);
    if (!ok) {
        t->bad++;
        return 0;
    }
    return used ? used : 1;
}

int main(int argc, char **argv)
{
    static const char *const all[] = { "load", "validate", "client", "add", NULL };
    if (argc < 2) {
        fprintf(stderr, "usage: torture SCENARIOS_LUA [SCENARIO...]\n");
        return 2;
    }
    scenarios_file = argv[1];
    verbose = getenv("TORTURE_VERBOSE") != NULL;
    keep_c_modules_loaded();
    const char *const *names = argc > 2 ? (const char *const *)argv + 2 : all;
    unsigned long passed = 0, failed = 0, points = 0;

    for (const char *const *s = names; *s; s++) {
        /* a clean run first: it must succeed, and says how many
         * allocations there are to fail */
        tally_t dry = { 0 };
            unsigned long need = run(*s, 0, 0, &dry);
        if (need == 0 || dry.ok != 1) {
            fprintf(stderr, "FAIL: torture: %s fails without any allocation failing\n", *s);
            failed++;
            continue;
        }
        /* the count varies a little between runs (hash seeds, GC steps) */
        unsigned long upto = need + need / 20 + 5;
        for (int mode = 0; mode < 3; mode++) {
            tally_t t = { 0 };
            for (unsigned long n = 1; n <= upto; n++)
                run(*s, n, mode, &t);
            printf("torture: %-8s %-9s %5lu allocation points, %5lu runs: %lu injected, %lu success, "
                   "%lu returned error, %lu out-of-memory error, %lu bad\n",
                   *s, mode_names[mode], need, t.runs, t.injected, t.ok, t.returned,
                   t.oom, t.bad);
            passed += t.runs - t.bad;
            failed += t.bad;
        }
        points += need;
        fflush(stdout);
    }
    printf("torture: %lu allocation points covered\n", points);
    printf("%lu passed, %lu failed\n", passed, failed);
    return failed ? 1 : 0;
}
