-- A hostile server for the specs (spec/support/hostile.py): answers what a
-- misbehaving or malicious API, proxy or gateway could answer, on
-- 127.0.0.1 only.
--
--   local hostile = require "spec.support.hostile"
--   local h = hostile.start()          -- h.url = "http://127.0.0.1:PORT"
--   hostile.start{ host = "127.0.0.2" }  -- another loopback address
--   h.script{                          -- rules, first match answers
--     { method = "POST", path = "/v1/phone-numbers/carriers", status = 422,
--       headers = { { "Content-Type", "application/problem+json" },
--                   { "X-Request-Id", "{{key}}" } },
--       body = '{"detail":"you sent {{auth}} and {{json:inbound_auth.password}}"}' },
--     { method = "GET", status = 200, times = 1, action = "close" },
--   }
--   local log = h.log()                -- { {method, path, query, headers, body}, ... }
--   h.reset()                          -- no rules, empty log
--   h.stop()                           -- also when the spec process dies
--
-- Rule fields and templates: see hostile.py. Works on Lua 5.1-5.4 and
-- LuaJIT (LuaSocket, cjson).

local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require("cjson").new()

local M = {}

local HERE = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec/support"

local function sh_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- A shell command run without the sanitizer runtimes tools/check-sanitize
-- preloads into the spec process: mktemp, python3, kill and rm are not
-- ours, and their leak reports would fail the check.
local function clean(cmd) return "env -u LD_PRELOAD " .. cmd end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- The pid of this Lua process: the server exits when it is gone.
local function my_pid()
  local stat = read_file("/proc/self/stat")
  return tonumber(stat and stat:match("^(%d+)")) or 1
end

local function request(base, method, path, body)
  local chunks = {}
  local ok, code = http.request{
    url = base .. path, method = method,
    source = body and ltn12.source.string(body) or nil,
    headers = body and { ["content-type"] = "application/json", ["content-length"] = #body } or nil,
    sink = ltn12.sink.table(chunks),
  }
  if not ok or code ~= 200 then
    error("hostile server: " .. method .. " " .. path .. " failed: " .. tostring(code), 3)
  end
  return cjson.decode(table.concat(chunks))
end

-- Rules are arrays of { name, value } pairs for headers, so their order
-- and duplicates survive; cjson would turn an empty list into {}.
local function encode_rules(rules)
  for _, rule in ipairs(rules) do
    if rule.headers and next(rule.headers) == nil then rule.headers = nil end
  end
  return cjson.encode({ rules = rules })
end

function M.start(opts)
  local host = opts and opts.host or "127.0.0.1"
  local dir = io.popen(clean("mktemp -d")):read("*l")
  local cmd = ("python3 %s %s %d %s </dev/null >%s 2>&1 &"):format(
    sh_quote(HERE .. "/hostile.py"), sh_quote(dir), my_pid(), sh_quote(host), sh_quote(dir .. "/log"))
  os.execute(clean(cmd))
  local port, pid
  local deadline = socket.gettime() + 30
  repeat
    port, pid = read_file(dir .. "/port"), read_file(dir .. "/pid")
    if not (port and pid) then socket.sleep(0.02) end
  until (port and pid) or socket.gettime() > deadline
  if not (port and pid) then
    error("hostile server did not start: " .. (read_file(dir .. "/log") or "no log"), 2)
  end
  local h = { url = "http://" .. host .. ":" .. port, port = tonumber(port), pid = tonumber(pid), dir = dir }
  function h.script(rules) request(h.url, "POST", "/_hostile/script", encode_rules(rules)) end
  function h.reset() request(h.url, "POST", "/_hostile/reset", "{}") end
  function h.log() return request(h.url, "GET", "/_hostile/log").log end
  function h.stop()
    if h.pid then os.execute(clean("kill " .. h.pid .. " 2>/dev/null")); h.pid = nil end
    os.execute(clean("rm -rf " .. sh_quote(dir)))
  end
  return h
end

return M
