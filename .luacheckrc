-- luacheck settings for `make lint` (tools/check-lint).
std = "max"
max_line_length = 140
codes = true

files["spec/**/*.lua"] = { std = "+busted" }
files["spec/hosts/**"] = { std = "+busted+ngx_lua" }
files["tools/emulator/*.lua"] = { std = "+ngx_lua" }
files["lua/topcalls/ngx.lua"] = { std = "+ngx_lua" }
files["examples/openresty/**"] = { std = "+ngx_lua" }
files["examples/kamailio/**"] = { read_globals = { "KSR" }, globals = { "ksr_request_route" } }
files["bench/**"] = { std = "+ngx_lua" }
exclude_files = { "build/**", "docs/**" }

files["tools/torture/scenarios.lua"] = { globals = { "CLIENT" } }   -- shared with the C driver
