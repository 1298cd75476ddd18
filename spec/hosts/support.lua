-- Helpers of the host tests: talk to the nginx and Kamailio instances
-- tools/check-hosts started (their addresses come from the environment),
-- and read the emulator's records.
-- SPDX-License-Identifier: MIT

local http  = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require("cjson").new()
local emu   = require "spec.support.emulator"

local M = {
  pool_url = os.getenv("TOPCALLS_HOSTS_NGINX_POOL_URL"),   -- 1 worker, thread pool
  fork_url = os.getenv("TOPCALLS_HOSTS_NGINX_FORK_URL"),   -- 2 workers, master-made client
  sip_addr = os.getenv("TOPCALLS_HOSTS_SIP_ADDR"),         -- Kamailio, 127.0.0.1:PORT
  sipsend  = "tools/hosts/sipsend",
  now = socket.gettime,
}

local function need(v, what)
  if not v or v == "" then error(what .. " is not set: run the host tests through tools/check-hosts", 3) end
  return v
end

local function decode(text)
  local ok, v = pcall(cjson.decode, text)
  return ok and v or nil
end
M.decode = decode

-- A unique name per test run, so tests never depend on an emulator reset.
local counter = 0
function M.unique(prefix)
  counter = counter + 1
  return ("%s %d-%d"):format(prefix, os.time(), counter)
end

-- One HTTP request: status, decoded JSON body (or nil), raw body.
function M.request(method, url, body, headers)
  local chunks = {}
  local h = { ["content-type"] = "application/json" }
  for k, v in pairs(headers or {}) do h[k:lower()] = v end
  if body then h["content-length"] = tostring(#body) end
  local ok, status = http.request{
    url = url, method = method, headers = h,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(chunks),
  }
  assert(ok, "cannot reach " .. url .. ": " .. tostring(status))
  local text = table.concat(chunks)
  return status, decode(text), text
end

function M.post_pool(path, params, headers)
  return M.request("POST", need(M.pool_url, "TOPCALLS_HOSTS_NGINX_POOL_URL") .. path,
                   type(params) == "string" and params or cjson.encode(params), headers)
end

-- The same POST sent by n curl processes at once; returns the list of
-- {status, body} in order and the wall time of the whole batch.  Each curl
-- gives up after max_time seconds (default 10).
function M.parallel_posts(url, bodies, max_time)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local cmd = {}
  for i, body in ipairs(bodies) do
    local f = assert(io.open(dir .. "/in" .. i, "w")); f:write(body); f:close()
    cmd[#cmd + 1] = ("curl -s -m %d -o %s/out%d -w '%%{http_code}' -H 'Content-Type: application/json' "
                    .. "--data-binary @%s/in%d '%s' > %s/code%d &"):format(math.ceil(max_time or 10), dir, i, dir, i,
                                                                           url, dir, i)
  end
  cmd[#cmd + 1] = "wait"
  local started = M.now()
  assert(os.execute(table.concat(cmd, " ")))
  local elapsed = M.now() - started
  local results = {}
  for i = 1, #bodies do
    local function slurp(path)
      local f = io.open(path)
      if not f then return "" end
      local text = f:read("*a")
      f:close()
      return text
    end
    local out = slurp(dir .. "/out" .. i)
    results[i] = { status = tonumber(slurp(dir .. "/code" .. i)), body = decode(out),
                   raw = out ~= "" and out or "(no response: curl failed or timed out)" }
  end
  os.execute("rm -rf " .. dir)
  return results, elapsed
end

-- Send one SIP request with tools/hosts/sipsend; returns its JSON answer.
-- opts: method, ruri, headers (list of "Name: value"), body, content_type,
-- timeout, retransmit.
function M.sip(opts)
  local addr = need(M.sip_addr, "TOPCALLS_HOSTS_SIP_ADDR")
  local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
  local cmd = { "python3", M.sipsend, q(addr), "--method", q(opts.method or "MESSAGE"),
                "--timeout", tostring(opts.timeout or 10) }
  if opts.ruri then cmd[#cmd + 1] = "--ruri " .. q(opts.ruri) end
  if opts.retransmit then cmd[#cmd + 1] = "--retransmit " .. tostring(opts.retransmit) end
  if opts.content_type then cmd[#cmd + 1] = "--content-type " .. q(opts.content_type) end
  for _, h in ipairs(opts.headers or {}) do cmd[#cmd + 1] = "-H " .. q(h) end
  if opts.body then
    local body = type(opts.body) == "table" and cjson.encode(opts.body) or opts.body
    cmd[#cmd + 1] = "--body " .. q(body)
  end
  local p = assert(io.popen(table.concat(cmd, " ")))
  local out = p:read("*a")
  p:close()
  local v = decode(out)
  assert(v, "sipsend printed no JSON: " .. out)
  return v
end

-- Emulator records for a carrier name: stored carriers, logged requests.
function M.carriers_named(name)
  local list = {}
  for _, c in ipairs(emu.carriers()) do
    if c.carrier_name == name then list[#list + 1] = c end
  end
  return list
end

-- The one carrier the emulator stored under `name` (asserts there is one).
function M.stored(name)
  local list = M.carriers_named(name)
  assert(#list == 1, ("expected 1 carrier named %s, found %d"):format(name, #list))
  return list[1]
end

function M.requests_named(name)
  local list = {}
  for _, r in ipairs(emu.log()) do
    local body = r.body and decode(r.body)
    if type(body) == "table" and body.carrier_name == name then list[#list + 1] = r end
  end
  return list
end

-- Pop faults nobody consumed (a test that queued a few spare ones), with
-- API requests of our own that nothing else looks at.
function M.drain_faults()
  for _ = 1, 10 do
    if emu.faults({}) == 0 then return end
    http.request(emu.url .. "/v1/phone-numbers/carriers")
  end
end

M.emu = emu
M.json = cjson
return M
