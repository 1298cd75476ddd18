/*
 * buf.c - a byte buffer with a hard cap, filled from libcurl callbacks.
 * It never raises and never aborts: overflow and out-of-memory are flags
 * the caller turns into an error after libcurl returns. As a Lua userdata
 * (a scratch buffer reused across calls) its memory goes with __gc.
 * SPDX-License-Identifier: MIT
 */
#include <stdlib.h>
#include <string.h>
#include "tc.h"

void tc_buf_init(tc_buf_t *b, size_t limit)
{
    memset(b, 0, sizeof *b);
    b->limit = limit;
}

/* tc_buf_append's slow path: check the limit, grow, append. */
int tc_buf_grow_append(tc_buf_t *b, const void *p, size_t n)
{
    if (n > b->limit - b->len) {
        b->overflow = 1;
        return -1;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->oom = 1;
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Empty the buffer for reuse, keeping its memory. */
void tc_buf_clear(tc_buf_t *b)
{
    b->len = 0;
    b->overflow = b->oom = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Release the memory; safe to call twice. */
void tc_buf_free(tc_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

#define BUF_MT "topcalls.buf"

static int l_buf_gc(lua_State *L)
{
    tc_buf_free(luaL_checkudata(L, 1, BUF_MT));
    return 0;
}

/* The metatable of buffer userdata; once per Lua state. [-0, +0, m] */
void tc_buf_open(lua_State *L)
{
    if (luaL_newmetatable(L, BUF_MT)) {
        lua_pushcfunction(L, l_buf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
}

/* Push a new empty buffer userdata of at most `limit` bytes; needs
 * tc_buf_open first. [-0, +1, m] */
tc_buf_t *tc_buf_push(lua_State *L, size_t limit)
{
    tc_buf_t *b = tc_newuserdata(L, sizeof *b);
    tc_buf_init(b, limit);
    luaL_getmetatable(L, BUF_MT);
    lua_setmetatable(L, -2);
    return b;
}
