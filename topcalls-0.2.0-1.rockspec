package = "topcalls"
version = "0.2.0-1"
-- The release tarball `make dist` builds from the tagged commit (git
-- archive); the .src.rock beside it carries both, so it installs offline.
source = {
  url = "https://github.com/topcalls/topcalls-lua/releases/download/v0.2.0/topcalls-0.2.0.tar.gz",
  dir = "topcalls-0.2.0",
}
description = {
  summary = "Provision SIP carriers on the TopCalls voice-AI platform",
  detailed = [[
    topcalls.carriers.add{...} validates a Bring-Your-Own-Carrier request
    against every documented rule, then sends it with libcurl: keep-alive,
    safe retries with idempotency keys, fork-safe connections, and secrets
    that never reach an error or a log. Lua 5.1-5.4, LuaJIT, nginx, Kamailio.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1",
  "argparse >= 0.6",   -- bin/topcalls only
}
external_dependencies = {
  -- Only the library: Debian keeps curl.h in the multiarch include dir,
  -- which LuaRocks 3.8's header probe does not search (gcc finds it).
  CURL = { library = "curl" },
  CRYPTO = { library = "crypto" },   -- OpenSSL's libcrypto: HMAC-SHA-256 (fleet keys)
}
build = {
  type = "builtin",
  modules = {
    ["topcalls.core"] = {
      sources = {
        "src/core.c", "src/client.c", "src/http.c", "src/schema.c",
        "src/check.c", "src/retry.c", "src/rand.c", "src/buf.c", "src/multi.c",
        "src/json.c",
      },
      incdirs = { "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(CRYPTO_LIBDIR)" },
      libraries = { "curl", "crypto", "pthread", "m" },
    },
    ["topcalls"]          = "lua/topcalls/init.lua",
    ["topcalls.client"]   = "lua/topcalls/client.lua",
    ["topcalls.carriers"] = "lua/topcalls/carriers.lua",
    ["topcalls.phone_numbers"] = "lua/topcalls/phone_numbers.lua",
    ["topcalls.resource"] = "lua/topcalls/resource.lua",
    ["topcalls.view"]     = "lua/topcalls/view.lua",
    ["topcalls.errors"]   = "lua/topcalls/errors.lua",
    ["topcalls.json"]     = "lua/topcalls/json.lua",
    ["topcalls.ngx"]      = "lua/topcalls/ngx.lua",
    ["topcalls.fleet"]    = "lua/topcalls/fleet.lua",
  },
  install = { bin = { topcalls = "bin/topcalls" } },
}
