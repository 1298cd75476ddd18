/*
 * fuzz_headers.c - libFuzzer target for the two readers of a raw response
 * header block: tc_header_find (http.c) and tc_exchange_classify's one
 * pass that push_headers (core.c, static, so core.c is included here)
 * turns into the Lua `headers` table. The block is an exact-size heap copy ended by a NUL,
 * as tc_buf keeps it, so ASan sees any read past it. The two readers must
 * agree: a wanted header tc_header_find finds is in the table with exactly
 * that (first) value, and no other header is.
 * The input is "name\n" then the block; a fixed set of names is asked too.
 * SPDX-License-Identifier: MIT
 */
#include "fuzz.h"
#include "../../src/core.c"
#include <lualib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

/* The block classified as a 200's headers (tc_exchange_classify finds
 * the wanted ones), then push_headers, under lua_pcall: [-0, +1] the table */
static int run_push_headers(lua_State *Ls)
{
    tc_exchange_t ex;
    tc_outcome_t out;
    memset(&ex, 0, sizeof ex);
    ex.head = *(const tc_buf_t *)lua_touserdata(Ls, 1);
    ex.status = 200;
    tc_exchange_classify(&ex, &out, 0);
    push_headers(Ls, &out);
    return 1;
}

static void agree(const tc_buf_t *head, int table, const char *name)
{
    size_t nlen = strlen(name), vlen = 0;
    if (nlen == 0 || strchr(name, ':') || strncmp(name, "HTTP/", 5) == 0)
        return;
    const char *v = tc_header_find(head->data, head->len, name, &vlen);
    if (v == NULL)
        return;
    FZ_ASSERT(v >= head->data && v + vlen <= head->data + head->len, "value outside the block");
    if (vlen > 0) {
        FZ_ASSERT(v[0] != ' ' && v[0] != '\t', "value starts with a blank");
        FZ_ASSERT(v[vlen - 1] != ' ' && v[vlen - 1] != '\t' && v[vlen - 1] != '\r', "value ends with a blank");
    }
    FZ_ASSERT(memchr(v, '\n', vlen) == NULL, "value spans lines");
    char lower[256];
    int wanted = 0;
    for (size_t i = 0; i <= nlen; i++)
        lower[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    for (int i = 0; i < TC_H_COUNT; i++)
        wanted |= strcmp(tc_wanted_headers[i], lower) == 0;
    lua_pushlstring(L, lower, nlen);
    lua_rawget(L, table);
    size_t tlen;
    const char *t = lua_tolstring(L, -1, &tlen);
    if (!wanted) {
        FZ_ASSERT(t == NULL, "header '%s' is not wanted but in the table", name);
    } else {
        FZ_ASSERT(t != NULL, "header '%s' found but not in the table", name);
        FZ_ASSERT(tlen == vlen && memcmp(t, v, vlen) == 0, "header '%s': table value differs", name);
    }
    lua_pop(L, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (L == NULL) {
        L = luaL_newstate();
        if (L == NULL) abort();
    }
    const uint8_t *nl = memchr(data, '\n', size);
    size_t name_len = nl && (size_t)(nl - data) < 200 ? (size_t)(nl - data) : 0;
    const uint8_t *block = nl && name_len ? nl + 1 : data;
    size_t block_len = size - (size_t)(block - data);

    char name[256];
    memcpy(name, data, name_len);
    name[name_len] = '\0';

    tc_buf_t head;
    tc_buf_init(&head, TC_HEAD_LIMIT);
    head.data = fz_dup(block, block_len, 1);
    head.len = block_len;
    head.cap = block_len + 1;

    int top = lua_gettop(L);
    lua_pushcfunction(L, run_push_headers);
    lua_pushlightuserdata(L, &head);
    FZ_ASSERT(lua_pcall(L, 1, 1, 0) == LUA_OK, "push_headers raised: %s", lua_tostring(L, -1));
    int table = lua_gettop(L);
    /* every key is lower case and every value a string */
    lua_pushnil(L);
    while (lua_next(L, table)) {
        size_t kl;
        const char *k = lua_tolstring(L, -2, &kl);
        FZ_ASSERT(lua_type(L, -2) == LUA_TSTRING && kl > 0, "bad key");
        for (size_t i = 0; i < kl; i++)
            FZ_ASSERT(!(k[i] >= 'A' && k[i] <= 'Z'), "key not lower case");
        FZ_ASSERT(lua_type(L, -1) == LUA_TSTRING, "value not a string");
        lua_pop(L, 1);
    }
    static const char *const names[] = { "Retry-After", "X-Request-Id", "Content-Type", "Location", "content-length" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        agree(&head, table, names[i]);
    if (name_len && strlen(name) == name_len)
        agree(&head, table, name);
    lua_settop(L, top);
    tc_buf_free(&head);
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
