/*
 * schema.c - the request schemas (carrier, phone number), each declared
 * once, and the walker that checks a Lua table against one. The walker reports every violation with
 * its path and code, and builds the normalized copy (defaults filled in)
 * that is encoded and sent, so what was validated is what the server gets.
 * SPDX-License-Identifier: MIT
 */
#include <math.h>
#include <string.h>
#include "tc.h"

typedef enum { T_STRING, T_INTEGER, T_BOOLEAN, T_OBJECT } field_type_t;

enum {
    F_REQUIRED  = 1 << 0,   /* absent is an error */
    F_NO_SPACE  = 1 << 1,   /* whitespace is a format error */
    F_SELECTOR  = 1 << 2,   /* its value decides which `only_when` objects apply */
    F_SENSITIVE = 1 << 3,   /* a secret: never shown (help, plans, REPL) */
};

/* String formats, each declared once with its check and message. */
typedef enum { FMT_NONE, FMT_HOST, FMT_IPV4, FMT_UUID, FMT_E164 } format_t;

static const struct {
    const char *name;
    const char *message;   /* when the value is not of the format */
} formats[] = {
    [FMT_NONE] = { NULL, NULL },
    [FMT_HOST] = { "host", "must be a DNS hostname or a dotted-quad IPv4 address" },
    [FMT_IPV4] = { "ipv4", "must be a dotted-quad IPv4 address" },
    [FMT_UUID] = { "uuid", "must be a UUID" },
    [FMT_E164] = { "e164", "must be an E.164 number: '+' and 2 to 15 digits, the first not 0" },
};

typedef enum { D_NONE, D_STRING, D_INTEGER, D_TRUE } default_t;

typedef struct field {
    const char         *name;
    field_type_t        type;
    unsigned            flags;
    long                min, max;        /* strings: code points (min 1 always); integers: range */
    format_t            format;
    const char         *strict_if;       /* the sibling boolean that, unless false, makes */
    format_t            strict_format;   /*   the value take this stricter format instead */
    const char         *why;             /*   and the reason, told with the error */
    const char *const  *choices;         /* allowed string values, NULL-terminated */
    const struct field *members;         /* T_OBJECT: its fields, ended by a NULL name */
    const char         *only_when;       /* T_OBJECT: required when the selector has this value, refused otherwise */
    const char *const  *one_true;        /* T_OBJECT: booleans of which one at least must be true */
    const char         *conflict;        /*   and the message when none is */
    default_t           def;
    const char         *def_string;
    long                def_integer;
} field_t;

/* ---- the schemas: one declaration per request body ------------------- */

static const char *const trunk_types[] = { "static_ip", "auth", "reg", NULL };
static const char *const directions[] = { "inbound", "outbound", NULL };

static const field_t gateway_members[] = {
    { .name = "ipv4",     .type = T_STRING,  .flags = F_REQUIRED | F_NO_SPACE, .format = FMT_HOST,
      .strict_if = "inbound", .strict_format = FMT_IPV4,
      .why = "the SBC matches inbound calls on source IP, so hostnames are refused" },
    { .name = "port",     .type = T_INTEGER, .min = 1, .max = 65535, .def = D_INTEGER, .def_integer = 5060 },
    { .name = "inbound",  .type = T_BOOLEAN, .def = D_TRUE },
    { .name = "outbound", .type = T_BOOLEAN, .def = D_TRUE },
    { .name = NULL }
};

static const field_t registration_members[] = {
    { .name = "username",             .type = T_STRING, .flags = F_REQUIRED | F_NO_SPACE },
    { .name = "password",             .type = T_STRING, .flags = F_REQUIRED | F_SENSITIVE },
    { .name = "sip_realm",            .type = T_STRING, .flags = F_NO_SPACE, .format = FMT_HOST },
    { .name = "from_domain",          .type = T_STRING, .flags = F_NO_SPACE, .format = FMT_HOST },
    { .name = "from_user",            .type = T_STRING },
    { .name = "public_ip_in_contact", .type = T_BOOLEAN },
    { .name = "use_tls",              .type = T_BOOLEAN },
    { .name = NULL }
};

static const field_t inbound_auth_members[] = {
    { .name = "username", .type = T_STRING, .flags = F_REQUIRED },
    { .name = "password", .type = T_STRING, .flags = F_REQUIRED | F_SENSITIVE },
    { .name = NULL }
};

static const field_t carrier_members[] = {
    { .name = "carrier_name", .type = T_STRING, .flags = F_REQUIRED, .max = 100 },
    { .name = "trunk_type",   .type = T_STRING, .flags = F_SELECTOR, .choices = trunk_types, .def = D_STRING, .def_string = "static_ip" },
    { .name = "sip_gateway",  .type = T_OBJECT, .flags = F_REQUIRED, .members = gateway_members, .one_true = directions,
      .conflict = "inbound and outbound are both false: the gateway would carry no calls" },
    { .name = "registration", .type = T_OBJECT, .members = registration_members, .only_when = "reg" },
    { .name = "inbound_auth", .type = T_OBJECT, .members = inbound_auth_members, .only_when = "auth" },
    { .name = NULL }
};

static const field_t phone_number_members[] = {
    { .name = "number",           .type = T_STRING, .flags = F_REQUIRED, .format = FMT_E164 },
    { .name = "voip_carrier_sid", .type = T_STRING, .format = FMT_UUID },
    { .name = "label",            .type = T_STRING, .max = 100 },
    { .name = NULL }
};

struct tc_schema {
    const char    *name;
    const field_t *members;
};

static const tc_schema_t schemas[] = {
    { "carrier", carrier_members },
    { "phone_number", phone_number_members },
    { NULL, NULL }
};

/* The schema called name, or NULL. */
const tc_schema_t *tc_schema_find(const char *name)
{
    for (const tc_schema_t *s = schemas; s->name; s++)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

typedef struct walk {
    lua_State  *L;
    int         errors;      /* stack index of the error list (nil until the first error) */
    int         count;
    int         strict;
    const char *selector;    /* the name of the walked F_SELECTOR field */
    const char *selected;    /* its valid value, or NULL when invalid */
    tc_buf_t   *json;        /* JSON mode: the body being written */
    int         undeclared;  /* JSON mode, not strict: keys the schema does not declare */
} walk_t;

/* Where a walk puts what it accepts, with the defaults filled in: the
 * normalized table at stack index `table`, or (table == 0) the walk's
 * JSON text, members in declaration order. JSON mode validates and writes
 * the body in one pass, with no table built: the path of every `add`. */
typedef struct dest {
    int table;
    int written;             /* JSON mode: members written so far (for commas) */
} dest_t;

/* A field's place in the params, as a chain up to the top (NULL). Its
 * text ("sip_gateway.ipv4") is built only when an error needs it: valid
 * input, the common case, needs none. */
typedef struct place {
    const struct place *up;
    const char         *name;
} place_t;

/* Push the text of place p, "" at the top. [-0, +1, m] */
static const char *push_place(lua_State *L, const place_t *p)
{
    if (p == NULL) {
        lua_pushliteral(L, "");
    } else if (p->up == NULL) {
        lua_pushstring(L, p->name);
    } else {
        push_place(L, p->up);
        lua_pushfstring(L, "%s.%s", lua_tostring(L, -1), p->name);
        lua_remove(L, -2);
    }
    return lua_tostring(L, -1);
}

/* Append { path, code, message } to the error list; the message is the
 * string on the stack top, which is popped. [-1, +0, m] */
static void add_error(walk_t *w, const char *path, const char *code)
{
    lua_State *L = w->L;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "message");
    if (w->count == 0) {           /* the first error: the list is made only now */
        lua_newtable(L);
        lua_replace(L, w->errors);
    }
    lua_rawseti(L, w->errors, ++w->count);
    lua_pop(L, 1);
}

/* add_error at place p. [-1, +0, m] */
static void add_place_error(walk_t *w, const place_t *p, const char *code)
{
    const char *path = push_place(w->L, p);
    lua_insert(w->L, -2);           /* the path under the message */
    add_error(w, path, code);       /* pops the message */
    lua_pop(w->L, 1);
}

/* add_error for member `name` of the object at place `at`. [-1, +0, m] */
static void add_member_error(walk_t *w, const place_t *at, const char *name, const char *code)
{
    place_t here = { at, name };
    add_place_error(w, &here, code);
}

/* The member of `members` closest to name within edit distance 2, or NULL. */
static const char *closest_member(const field_t *members, const char *name, size_t n)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (const field_t *f = members; f->name; f++) {
        size_t d = tc_edit_distance(name, n, f->name, strlen(f->name));
        if (d < best_d) {
            best_d = d;
            best = f->name;
        }
    }
    return best;
}

/* Push "must be one of 'a', 'b', 'c'". [-0, +1, m] */
static void push_choices_message(lua_State *L, const char *const *choices)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "must be one of ");
    for (const char *const *c = choices; *c; c++) {
        if (c != choices)
            luaL_addstring(&b, ", ");
        luaL_addchar(&b, '\'');
        luaL_addstring(&b, *c);
        luaL_addchar(&b, '\'');
    }
    luaL_pushresult(&b);
}

/* The sibling boolean `name` of the table at index obj: 1, 0, or -1 when
 * absent or not a boolean. Raw access: metatables are never consulted. */
static int raw_boolean(lua_State *L, int obj, const char *name)
{
    lua_pushstring(L, name);
    lua_rawget(L, obj);
    int v = lua_type(L, -1) == LUA_TBOOLEAN ? lua_toboolean(L, -1) : -1;
    lua_pop(L, 1);
    return v;
}

/* Is s (n bytes) of the format? */
static int format_ok(format_t format, const char *s, size_t n)
{
    switch (format) {
    case FMT_NONE: return 1;
    case FMT_HOST: return tc_check_ipv4(s, n) || tc_check_hostname(s, n);
    case FMT_IPV4: return tc_check_ipv4(s, n);
    case FMT_UUID: return tc_check_uuid(s, n);
    case FMT_E164: return tc_check_e164(s, n) == 0;
    }
    return 0;
}

/* Does s hold a C0 control character (NUL to US) or DEL? No field of any
 * schema may: a NUL cuts C strings short, CR and LF split SIP header
 * lines, ESC drives terminals. The rule of every string field, declared
 * here once rather than as a flag each field could forget. */
static int has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F)
            return 1;
    }
    return 0;
}

/* Check a string value against the field's length, whitespace, control
 * character, choice and format rules; on failure push the message and return its code, else
 * return NULL. The value's text is never echoed: it may be a secret.
 * [-0, +(0|1), m] */
static const char *check_string(lua_State *L, const field_t *f, const char *s, size_t n, int parent)
{
    long cps = tc_utf8_length(s, n);
    if (cps < 0) {
        lua_pushliteral(L, "must be valid UTF-8");
        return "format";
    }
    if (cps < (f->min > 0 ? f->min : 1)) {
        lua_pushliteral(L, "must not be empty");
        return "length";
    }
    if (f->max > 0 && cps > f->max) {
        lua_pushfstring(L, "must be at most %d characters (got %d)", (int)f->max, (int)cps);
        return "length";
    }
    if ((f->flags & F_NO_SPACE) && tc_has_whitespace(s, n)) {
        lua_pushliteral(L, "must not contain whitespace");
        return "format";
    }
    if (has_control(s, n)) {
        lua_pushliteral(L, "must not contain control characters (C0 or DEL)");
        return "format";
    }
    if (f->choices) {
        for (const char *const *c = f->choices; *c; c++)
            if (strlen(*c) == n && memcmp(*c, s, n) == 0)
                return NULL;
        push_choices_message(L, f->choices);
        return "enum";
    }
    if (f->strict_if && raw_boolean(L, parent, f->strict_if) != 0) {
        if (format_ok(f->strict_format, s, n))
            return NULL;
        lua_pushfstring(L, "%s while %s is true (%s)", formats[f->strict_format].message, f->strict_if, f->why);
        return "format";
    }
    if (f->format == FMT_HOST && tc_has_sip_prefix(s, n)) {
        lua_pushliteral(L, "must be a bare host, without a 'sip:' prefix");
        return "format";
    }
    if (f->format == FMT_E164 && tc_check_e164(s, n) == -2) {
        lua_pushliteral(L, "has no assigned country calling code (E.164: '+', country code, subscriber number)");
        return "format";
    }
    if (!format_ok(f->format, s, n)) {
        lua_pushstring(L, formats[f->format].message);
        return "format";
    }
    return NULL;
}

static void walk_object(walk_t *w, const field_t *members, const place_t *at, int src, dest_t *d);

/* Append s (n bytes) as a JSON string. */
static void json_string(tc_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    tc_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        tc_buf_append(b, s + run, i - run);
        char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            tc_buf_append(b, esc, 2);
        } else {
            tc_buf_append(b, esc, 6);
        }
        run = i + 1;
    }
    tc_buf_append(b, s + run, n - run);
    tc_buf_append(b, "\"", 1);
}

/* JSON mode: start member `name` of the object being written. */
static void json_key(walk_t *w, dest_t *d, const char *name)
{
    /* declared names need no escaping */
    if (d->written++)
        tc_buf_append(w->json, ",\"", 2);
    else
        tc_buf_append(w->json, "\"", 1);
    tc_buf_append(w->json, name, strlen(name));
    tc_buf_append(w->json, "\":", 2);
}

/* Append integer i in decimal; no printf: it runs for every port of
 * every add. */
static void json_integer(tc_buf_t *b, lua_Integer i)
{
    char num[24], *p = num + sizeof num;
    unsigned long long v = i < 0 ? 0ull - (unsigned long long)i : (unsigned long long)i;
    do { *--p = (char)('0' + v % 10); v /= 10; } while (v);
    if (i < 0)
        *--p = '-';
    tc_buf_append(b, p, (size_t)(num + sizeof num - p));
}

/* Put the accepted value at stack index idx into d as member `name`: a
 * string, a boolean, or a number the walker found integral (stored as an
 * integer: 5060.0 is sent as 5060). JSON mode writes it straight from the
 * stack. [-0, +0, m] */
static void store(walk_t *w, dest_t *d, const char *name, int idx)
{
    lua_State *L = w->L;
    int t = lua_type(L, idx);
    if (d->table) {
        if (t == LUA_TNUMBER)
            lua_pushinteger(L, (lua_Integer)lua_tonumber(L, idx));
        else
            lua_pushvalue(L, idx);
        lua_setfield(L, d->table, name);
        return;
    }
    json_key(w, d, name);
    if (t == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        json_string(w->json, s, n);
    } else if (t == LUA_TBOOLEAN) {
        int v = lua_toboolean(L, idx);
        tc_buf_append(w->json, v ? "true" : "false", v ? 4 : 5);
    } else {
        json_integer(w->json, (lua_Integer)lua_tonumber(L, idx));
    }
}

/* Put field f's default into d. [-0, +0, m] */
static void store_default(walk_t *w, dest_t *d, const field_t *f)
{
    lua_State *L = w->L;
    if (d->table) {
        if (f->def == D_STRING) lua_pushstring(L, f->def_string);
        else if (f->def == D_INTEGER) lua_pushinteger(L, (lua_Integer)f->def_integer);
        else lua_pushboolean(L, 1);
        lua_setfield(L, d->table, f->name);
        return;
    }
    json_key(w, d, f->name);
    if (f->def == D_STRING) json_string(w->json, f->def_string, strlen(f->def_string));
    else if (f->def == D_INTEGER) json_integer(w->json, (lua_Integer)f->def_integer);
    else tc_buf_append(w->json, "true", 4);
}

/* How many members an object declares: the size of its normalized table,
 * made once at that size rather than grown (and rehashed) field by field. */
static int member_count(const field_t *members)
{
    int n = 0;
    while (members[n].name)
        n++;
    return n;
}

/* Check the value at vidx against field f (member of the table at parent)
 * and, when it is good, store its normalized form in d. [-0, +0, m] */
static void walk_field(walk_t *w, const field_t *f, const place_t *at, int vidx, int parent, dest_t *d)
{
    lua_State *L = w->L;
    int t = lua_type(L, vidx);
    const char *code = NULL;

    if (f->only_when && w->selected) {
        int wanted = strcmp(w->selected, f->only_when) == 0;
        if (t == LUA_TNIL && wanted) {
            lua_pushfstring(L, "is required when %s is '%s'", w->selector, f->only_when);
            add_member_error(w, at, f->name, "required");
            return;
        }
        if (t != LUA_TNIL && !wanted) {
            lua_pushfstring(L, "is only allowed when %s is '%s'", w->selector, f->only_when);
            add_member_error(w, at, f->name, "not_allowed");
            return;
        }
    }
    if (t == LUA_TNIL) {
        if (f->flags & F_REQUIRED) {
            lua_pushliteral(L, "is required");
            add_member_error(w, at, f->name, "required");
        } else if (f->def != D_NONE) {
            store_default(w, d, f);
        }
        return;
    }

    switch (f->type) {
    case T_STRING: {
        if (t != LUA_TSTRING) {
            lua_pushliteral(L, "must be a string");
            code = "type";
            break;
        }
        size_t n;
        const char *s = lua_tolstring(L, vidx, &n);
        code = check_string(L, f, s, n, parent);
        break;
    }
    case T_INTEGER: {
        lua_Number v = t == LUA_TNUMBER ? lua_tonumber(L, vidx) : 0;
        if (t != LUA_TNUMBER || !isfinite(v) || floor(v) != v) {
            lua_pushliteral(L, "must be an integer");
            code = "type";
        } else if (v < (lua_Number)f->min || v > (lua_Number)f->max) {
            lua_pushfstring(L, "must be from %d to %d", (int)f->min, (int)f->max);
            code = "range";
        } else {
            store(w, d, f->name, vidx);
            return;
        }
        break;
    }
    case T_BOOLEAN:
        if (t != LUA_TBOOLEAN) {
            lua_pushliteral(L, "must be a boolean");
            code = "type";
        }
        break;
    case T_OBJECT: {
        if (t != LUA_TTABLE) {
            lua_pushliteral(L, "must be a table");
            code = "type";
            break;
        }
        place_t here = { at, f->name };
        dest_t sub = { 0, 0 };
        if (d->table) {
            lua_createtable(L, 0, member_count(f->members));
            sub.table = lua_gettop(L);
        } else {
            json_key(w, d, f->name);
            tc_buf_append(w->json, "{", 1);
        }
        walk_object(w, f->members, &here, vidx, &sub);
        if (f->one_true) {
            /* only when every one is a real false: absent ones default
             * to true, mistyped ones were reported already */
            int all_false = 1;
            for (const char *const *b = f->one_true; *b; b++)
                all_false &= raw_boolean(L, vidx, *b) == 0;
            if (all_false) {
                lua_pushstring(L, f->conflict);
                add_place_error(w, &here, "conflict");
            }
        }
        if (d->table)
            lua_setfield(L, d->table, f->name);
        else
            tc_buf_append(w->json, "}", 1);
        return;
    }
    }
    if (code) {
        add_member_error(w, at, f->name, code);
        return;
    }
    store(w, d, f->name, vidx);
}

/* Push the path of the unknown string key k (n bytes) under path: "path.k",
 * or, for a key that is empty or holds a NUL, path["k"] with NUL, '"' and
 * '\' escaped, so a path is never empty and never names another field.
 * [-0, +1, m] */
static const char *push_key_path(lua_State *L, const char *path, const char *k, size_t n)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, path);
    if (n > 0 && memchr(k, '\0', n) == NULL) {
        if (*path)
            luaL_addchar(&b, '.');
        luaL_addlstring(&b, k, n);
    } else {
        luaL_addstring(&b, "[\"");
        for (size_t i = 0; i < n; i++) {
            if (k[i] == '\0') {
                luaL_addstring(&b, "\\0");
                continue;
            }
            if (k[i] == '"' || k[i] == '\\')
                luaL_addchar(&b, '\\');
            luaL_addchar(&b, k[i]);
        }
        luaL_addstring(&b, "\"]");
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

/* The index in members of the key at stack index k, or -1 when it is not
 * a declared name. Lengths are compared, so a key with an embedded NUL
 * never passes for a field. [-0, +0, -] */
static int member_index(lua_State *L, const field_t *members, int k)
{
    if (lua_type(L, k) != LUA_TSTRING)
        return -1;
    size_t n;
    const char *key = lua_tolstring(L, k, &n);
    for (int i = 0; members[i].name; i++) {
        const char *name = members[i].name;
        if (name[0] == key[0] && strlen(name) == n && memcmp(name, key, n) == 0)
            return i;
    }
    return -1;
}

/* Report (strict) or pass through (not strict; JSON mode only counts
 * them) the keys of src that the schema does not declare. [-0, +0, m] */
static void walk_unknown(walk_t *w, const field_t *members, const place_t *at, int src, dest_t *d)
{
    lua_State *L = w->L;
    lua_pushnil(L);
    while (lua_next(L, src) != 0) {
        if (member_index(L, members, -2) >= 0) {
            lua_pop(L, 1);
            continue;
        }
        if (!w->strict) {
            if (d->table) {
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, d->table);   /* pops key copy and value; the key stays for lua_next */
            } else {
                w->undeclared++;
                lua_pop(L, 1);
            }
            continue;
        }
        /* work on a copy: lua_tolstring on a number key would confuse lua_next */
        lua_pushvalue(L, -2);
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t n;
            const char *k = lua_tolstring(L, -1, &n);
            const char *hint = closest_member(members, k, n);
            const char *p = push_key_path(L, push_place(L, at), k, n);
            lua_remove(L, -2);   /* the place's text */
            if (hint)
                lua_pushfstring(L, "is not a known field (did you mean '%s'?)", hint);
            else
                lua_pushliteral(L, "is not a known field");
            add_error(w, p, "unknown_field");
            lua_pop(L, 1);
        } else {
            const char *k = lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1)
                                                           : luaL_typename(L, -1);
            const char *p = lua_pushfstring(L, "%s[%s]", push_place(L, at), k);
            lua_remove(L, -2);   /* the place's text */
            lua_pushliteral(L, "is not a known field (keys must be field names)");
            add_error(w, p, "unknown_field");
            lua_pop(L, 1);
        }
        lua_pop(L, 2);   /* key copy and value */
    }
}

/* The choice the selector field f holds (the value at idx; its default
 * when absent), or NULL when it is not a valid one. [-0, +0, -] */
static const char *selected_choice(lua_State *L, const field_t *f, int idx)
{
    const char *chosen = NULL;
    if (lua_isnil(L, idx)) {
        chosen = f->def_string;
    } else if (lua_type(L, idx) == LUA_TSTRING) {
        size_t n;
        const char *v = lua_tolstring(L, idx, &n);
        for (const char *const *c = f->choices; *c; c++)
            if (strlen(*c) == n && memcmp(*c, v, n) == 0)
                chosen = *c;
    }
    return chosen;
}

/* Walk every declared member of the table at src in declaration order,
 * then its other keys. One raw pass (lua_next) puts each member's value
 * in a stack slot of its own: no field name is pushed and looked up, and
 * metatables are never consulted. [-0, +0, m] */
static void walk_object(walk_t *w, const field_t *members, const place_t *at, int src, dest_t *d)
{
    lua_State *L = w->L;
    int n = member_count(members), undeclared = 0;
    luaL_checkstack(L, n + 12, "topcalls: validation nests too deep");
    int base = lua_gettop(L) + 1;
    for (int i = 0; i < n; i++)
        lua_pushnil(L);
    lua_pushnil(L);
    while (lua_next(L, src) != 0) {
        int i = member_index(L, members, -2);
        if (i >= 0) {
            lua_replace(L, base + i);   /* pops the value; the key stays for lua_next */
        } else {
            undeclared++;
            lua_pop(L, 1);
        }
    }
    for (int i = 0; i < n; i++) {
        const field_t *f = &members[i];
        walk_field(w, f, at, base + i, src, d);
        if (f->flags & F_SELECTOR) {
            w->selector = f->name;
            w->selected = selected_choice(L, f, base + i);
        }
    }
    lua_settop(L, base - 1);
    if (undeclared)
        walk_unknown(w, members, at, src, d);
}

/* Validate the table at index params against schema s. Pushes the
 * normalized copy and the error list (nil when valid); returns the
 * number of errors. Only memory errors raise. [-0, +2, m] */
int tc_schema_validate(lua_State *L, const tc_schema_t *s, int params, int strict)
{
    walk_t w = { L, 0, 0, strict, NULL, NULL, NULL, 0 };
    params = params < 0 ? lua_gettop(L) + params + 1 : params;
    lua_createtable(L, 0, member_count(s->members));
    dest_t out = { lua_gettop(L), 0 };
    lua_pushnil(L);
    w.errors = lua_gettop(L);
    walk_object(&w, s->members, NULL, params, &out);
    return w.count;
}

/* Validate the table at index params against schema s and write its
 * JSON body into json (cleared first) in the same walk: declaration
 * order, defaults filled in, so the same params are the same bytes in
 * every process (a re-run reusing an Idempotency-Key must send identical
 * bytes or the server answers 409). Pushes the error list (nil when
 * valid); returns the number of errors, or -1 when, not strict, params
 * hold keys the schema does not declare (the caller then builds the
 * normalized table: tc_schema_validate). json->oom tells of a failed
 * allocation. Only memory errors raise. [-0, +1, m] */
int tc_schema_write_json(lua_State *L, const tc_schema_t *s, int params, int strict, tc_buf_t *json)
{
    walk_t w = { L, 0, 0, strict, NULL, NULL, json, 0 };
    dest_t out = { 0, 0 };
    tc_buf_clear(json);
    lua_pushnil(L);
    w.errors = lua_gettop(L);
    tc_buf_append(json, "{", 1);
    walk_object(&w, s->members, NULL, params, &out);
    tc_buf_append(json, "}", 1);
    return w.count > 0 ? w.count : w.undeclared > 0 ? -1 : 0;
}

/* Push the entry of the Lua array at index list closest to name (edit
 * distance 2 at most), or nil. [-0, +1, -] */
int tc_schema_push_suggestion(lua_State *L, const char *name, int list)
{
    size_t best_d = 3, n = strlen(name);
    int best = 0;
    for (int i = 1; i <= (int)tc_rawlen(L, list); i++) {
        lua_rawgeti(L, list, i);
        size_t cn;
        const char *c = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &cn) : NULL;
        size_t d = c ? tc_edit_distance(name, n, c, cn) : (size_t)-1;
        if (d < best_d) {
            best_d = d;
            best = i;
        }
        lua_pop(L, 1);
    }
    if (best)
        lua_rawgeti(L, list, best);
    else
        lua_pushnil(L);
    return 1;
}

/* ---- the schema as data, for help() and the CLI ---------------------- */

static const char *const type_names[] = { "string", "integer", "boolean", "object" };

/* Push the description of members: a list of { name, type, required,
 * min, max, format, strict_format = { when, format, why }, choices,
 * default, members, only_when = { field, value }, conflict, sensitive,
 * no_whitespace }. Read from the same declarations the walker obeys, so
 * help can never drift from validation. [-0, +1, m] */
static void push_members(lua_State *L, const field_t *members)
{
    const char *selector = NULL;
    for (const field_t *f = members; f->name; f++)
        if (f->flags & F_SELECTOR)
            selector = f->name;
    lua_createtable(L, member_count(members), 0);
    for (int i = 0; members[i].name; i++) {
        const field_t *f = &members[i];
        lua_createtable(L, 0, 8);
        lua_pushstring(L, f->name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, type_names[f->type]);
        lua_setfield(L, -2, "type");
        lua_pushboolean(L, (f->flags & F_REQUIRED) != 0);
        lua_setfield(L, -2, "required");
        if (f->flags & F_SENSITIVE) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "sensitive");
        }
        if (f->flags & F_NO_SPACE) {
            lua_pushboolean(L, 1);
            lua_setfield(L, -2, "no_whitespace");
        }
        if (f->type == T_STRING || f->type == T_INTEGER) {
            lua_pushinteger(L, f->type == T_STRING ? (f->min > 0 ? f->min : 1) : f->min);
            lua_setfield(L, -2, "min");
            if (f->max > 0) {
                lua_pushinteger(L, f->max);
                lua_setfield(L, -2, "max");
            }
        }
        if (f->format != FMT_NONE) {
            lua_pushstring(L, formats[f->format].name);
            lua_setfield(L, -2, "format");
        }
        if (f->strict_if) {
            lua_createtable(L, 0, 3);
            lua_pushstring(L, f->strict_if);
            lua_setfield(L, -2, "when");
            lua_pushstring(L, formats[f->strict_format].name);
            lua_setfield(L, -2, "format");
            lua_pushstring(L, f->why);
            lua_setfield(L, -2, "why");
            lua_setfield(L, -2, "strict_format");
        }
        if (f->choices) {
            lua_newtable(L);
            for (int c = 0; f->choices[c]; c++) {
                lua_pushstring(L, f->choices[c]);
                lua_rawseti(L, -2, c + 1);
            }
            lua_setfield(L, -2, "choices");
        }
        if (f->def != D_NONE) {
            if (f->def == D_STRING) lua_pushstring(L, f->def_string);
            else if (f->def == D_INTEGER) lua_pushinteger(L, (lua_Integer)f->def_integer);
            else lua_pushboolean(L, 1);
            lua_setfield(L, -2, "default");
        }
        if (f->only_when && selector) {
            lua_createtable(L, 0, 2);
            lua_pushstring(L, selector);
            lua_setfield(L, -2, "field");
            lua_pushstring(L, f->only_when);
            lua_setfield(L, -2, "value");
            lua_setfield(L, -2, "only_when");
        }
        if (f->conflict) {
            lua_pushstring(L, f->conflict);
            lua_setfield(L, -2, "conflict");
        }
        if (f->members) {
            luaL_checkstack(L, 8, "topcalls: schema nests too deep");
            push_members(L, f->members);
            lua_setfield(L, -2, "members");
        }
        lua_rawseti(L, -2, i + 1);
    }
}

/* Push the description of schema s (see push_members). [-0, +1, m] */
void tc_schema_push_description(lua_State *L, const tc_schema_t *s)
{
    push_members(L, s->members);
}

/* Push the list of schema names. [-0, +1, m] */
void tc_schema_push_names(lua_State *L)
{
    lua_newtable(L);
    for (int i = 0; schemas[i].name; i++) {
        lua_pushstring(L, schemas[i].name);
        lua_rawseti(L, -2, i + 1);
    }
}
