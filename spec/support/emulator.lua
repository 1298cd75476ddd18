-- Drives the control API of the local TopCalls emulator from the specs.
--
--   local emu = require "spec.support.emulator"
--   emu.reset()                                -- before each test
--   emu.faults{ { status = 503, retry_after = "1" }, { reset = "before" } }
--   emu.config{ latency = 0.2 }
--   local log = emu.log()                      -- API requests, arrival order
--   local carriers = emu.carriers()            -- stored carriers
--   local numbers = emu.numbers()              -- stored phone numbers
--   emu.edit{ carrier_id = id, set = { sip_gateway = { ipv4 = "198.51.100.7" } } }
--   emu.edit{ number_id = id, set = { voip_carrier_sid = sid, label = emu.null } }
--   emu.edit{ carrier_id = id, delete = true } -- "by hand": no 422 rule
--   emu.config{ list_shape = "cursor", list_max_page_size = 2, carrier_get = true }
--   emu.url, emu.tls_url, emu.ca_file, emu.dir -- from the environment
--   emu.wrong_host_url, emu.wrong_host_ca      -- TLS, certificate for wrong.example only
--   emu.tls_reject_url                         -- TLS, every handshake refused
--
-- The emulator is started by `tools/emulator/emulator run -- CMD` (which
-- `make test` uses); it exports TOPCALLS_EMULATOR_URL and friends.
-- JSON nulls in the decoded answers become nil (so `if entry.fault then`
-- means what it says) and integral numbers are integers on Lua 5.3+.  Works on Lua 5.1-5.4 and LuaJIT (LuaSocket, cjson).

local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require("cjson").new()   -- private: never touch the global settings

local M = {
  null = cjson.null,            -- for emu.edit: a JSON null removes a field
  url = os.getenv("TOPCALLS_EMULATOR_URL"),
  tls_url = os.getenv("TOPCALLS_EMULATOR_TLS_URL"),
  ca_file = os.getenv("TOPCALLS_EMULATOR_CA"),
  dir = os.getenv("TOPCALLS_EMULATOR_DIR"),
  wrong_host_url = os.getenv("TOPCALLS_EMULATOR_WRONG_HOST_URL"),
  wrong_host_ca = os.getenv("TOPCALLS_EMULATOR_WRONG_HOST_CA"),
  tls_reject_url = os.getenv("TOPCALLS_EMULATOR_TLS_REJECT_URL"),
}

local HINT = "run the specs through `tools/emulator/emulator run -- busted ...` "
          .. "(or `make test`)"

-- JSON null -> nil; on Lua 5.3+ integral numbers -> integers (lua-cjson
-- 2.1.0 decodes every number as a float there, which prints as "201.0").
local tointeger = math.tointeger or function() return nil end
local function normalize(v)
  if type(v) ~= "table" then return v end
  for k, x in pairs(v) do
    if x == cjson.null then v[k] = nil
    elseif type(x) == "number" then v[k] = tointeger(x) or x
    else normalize(x) end
  end
  return v
end

-- One control request; errors are raised at the spec's call site (level 3).
local function call(method, path, body)
  if not M.url or M.url == "" then
    error("topcalls emulator: TOPCALLS_EMULATOR_URL is not set; " .. HINT, 3)
  end
  local chunks = {}
  local ok, code = http.request{
    url = M.url .. path,
    method = method,
    headers = body and { ["content-type"] = "application/json",
                         ["content-length"] = tostring(#body) } or nil,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(chunks),
  }
  if not ok then
    error(("topcalls emulator: cannot reach %s (%s): is it running? %s")
          :format(M.url, tostring(code), HINT), 3)
  end
  local text = table.concat(chunks)
  if code ~= 200 then
    error(("topcalls emulator: %s %s answered %s: %s"):format(method, path, tostring(code), text), 3)
  end
  local dok, v = pcall(cjson.decode, text)
  if not dok then
    error(("topcalls emulator: %s %s: bad JSON (%s)"):format(method, path, tostring(v)), 3)
  end
  return normalize(v)
end

-- Forget carriers, idempotency records, the request log, queued faults; the
-- latency goes back to the one given to `emulator start/run --latency`.
function M.reset()
  call("POST", "/_emulator/reset", "{}")
  return true
end

-- Appends faults (a list of fault tables, or one fault table) to the FIFO
-- queue; each API request pops one.  {} is a no-op spacer.  Returns the
-- queue length.
function M.faults(list)
  assert(type(list) == "table", "emu.faults expects a table")
  local body
  if next(list) == nil then
    body = "[]"                                   -- cjson would send {}
  elseif list[1] == nil then
    body = cjson.encode{ list }                   -- a single fault
  else
    local parts = {}                              -- {} elements stay objects
    for i, f in ipairs(list) do
      parts[i] = next(f) == nil and "{}" or cjson.encode(f)
    end
    body = "[" .. table.concat(parts, ",") .. "]"
  end
  return call("POST", "/_emulator/faults", body).queued
end

-- Runtime settings, e.g. { latency = 0.5 }; keys: latency, list_shape
-- ("paged", "cursor", "array"), list_max_page_size, carrier_get.  A reset
-- restores the defaults.  Returns every setting's current value.
function M.config(tbl)
  assert(type(tbl) == "table", "emu.config expects a table")
  local v = call("POST", "/_emulator/config", cjson.encode(tbl))
  return v
end

-- The API requests received since the last reset, in arrival order.
function M.log()
  local v = call("GET", "/_emulator/log")   -- not a tail call: keeps error levels right
  return v
end

-- The stored carriers, in creation order.
function M.carriers()
  local v = call("GET", "/_emulator/carriers")
  return v
end

-- The stored phone numbers (every account), in creation order: the GET
-- representation plus request_id and idempotency_key.
function M.numbers()
  local v = call("GET", "/_emulator/numbers")
  return v
end

-- A change made "by hand", to create drift; see tools/emulator/README.md.
-- { carrier_id | number_id = id, set = { field = value | emu.null } } or
-- { carrier_id | number_id = id, delete = true }.  Returns the answer
-- ({ ok, carrier | number } or { ok, deleted }); raises on a 400 / 404.
function M.edit(t)
  assert(type(t) == "table", "emu.edit expects a table")
  local v = call("POST", "/_emulator/edit", cjson.encode(t))
  return v
end

return M
