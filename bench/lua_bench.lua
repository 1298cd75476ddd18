-- bench/lua_bench.lua MODE ... - the Lua side of `make bench`; each mode
-- prints its measurement on stdout (seconds unless said otherwise).
--   add URL N            N sequential carriers.add on one client
--   luacurl URL N        N POSTs in a hand loop: Debian's lua-curl + lua-cjson
--                        (5.1/LuaJIT; what a user writes instead of the SDK)
--   luahttp URL N        N POSTs with lua-http's http.request (LuaJIT/5.1)
--   luasocket URL N      N POSTs with LuaSocket's http.request
--   many URL N C         carriers.add_many of N items at concurrency C
--   rss URL              VmRSS (KiB) after 1k, 10k and 100k adds
--   validate N           per-call seconds: cjson.encode, validate, validate+encode
--   cost WHAT N          N calls of encode | validate | validate_body and
--                        nothing else (for callgrind: bench/instructions)
-- SPDX-License-Identifier: MIT

local mode = arg[1]
local KEY = "tc_test_bench0123456789"

local function params()
  return { carrier_name = "My VoIP Provider",
           sip_gateway = { ipv4 = "203.0.113.10", port = 5060, inbound = true, outbound = true } }
end

local function client(url, extra)
  local topcalls = require "topcalls"
  local o = { api_key = KEY, base_url = url, max_retries = 0, timeout = 10 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return assert(topcalls.new(o))
end

local now
do
  local ok, core = pcall(require, "topcalls.core")
  if ok then now = core.now else now = require("socket").gettime end
end

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s+(%d+)")
    if v then return tonumber(v) end
  end
end

if mode == "add" then
  local url, n = arg[2], tonumber(arg[3])
  local c = client(url)
  local p = params()
  for _ = 1, 50 do assert(c.carriers.add(p)) end
  local t0 = now()
  for _ = 1, n do assert(c.carriers.add(p)) end
  print(string.format("%.6f", now() - t0))

elseif mode == "luacurl" then
  -- The hand loop: one easy handle kept alive, the body from cjson, the
  -- status from the header callback (this lua-curl has no getinfo), the
  -- answer decoded. No validation, no retries.
  local curl, cjson = require "curl", require "cjson"
  local url, n = arg[2] .. "/v1/phone-numbers/carriers", tonumber(arg[3])
  local e = curl.easy_init()
  local chunks, status = {}, nil
  e:setopt(curl.OPT_URL, url)
  e:setopt(curl.OPT_POST, 1)
  e:setopt(curl.OPT_WRITEFUNCTION, function(s) chunks[#chunks + 1] = s; return #s end)
  e:setopt(curl.OPT_HEADERFUNCTION, function(s)
    local code = s:match("^HTTP/%S+ (%d+)")
    if code then status = tonumber(code) end
    return #s
  end)
  local function post(i)
    e:setopt(curl.OPT_HTTPHEADER, { "Authorization: Bearer " .. KEY, "Accept: application/json",
      "Content-Type: application/json", "Expect:", "Idempotency-Key: bench-" .. i })
    e:setopt(curl.OPT_POSTFIELDS, cjson.encode(params()))
    chunks, status = {}, nil
    e:perform()
    assert(status == 201, tostring(status))
    return cjson.decode(table.concat(chunks))
  end
  for i = 1, 50 do post(-i) end
  now = require("socket").gettime
  local t0 = now()
  for i = 1, n do post(i) end
  print(string.format("%.6f", now() - t0))

elseif mode == "luahttp" then
  local request, cjson = require "http.request", require "cjson"
  local url, n = arg[2] .. "/v1/phone-numbers/carriers", tonumber(arg[3])
  local function post(i)
    local req = request.new_from_uri(url)
    req.headers:upsert(":method", "POST")
    req.headers:upsert("authorization", "Bearer " .. KEY)
    req.headers:upsert("accept", "application/json")
    req.headers:upsert("content-type", "application/json")
    req.headers:upsert("idempotency-key", "bench-" .. i)
    req:set_body(cjson.encode(params()))
    local headers, stream = assert(req:go(10))
    assert(headers:get(":status") == "201", headers:get(":status"))
    local body = assert(stream:get_body_as_string(10))
    stream:shutdown()
    return cjson.decode(body)
  end
  for i = 1, 20 do post(-i) end
  now = require("socket").gettime
  local t0 = now()
  for i = 1, n do post(i) end
  print(string.format("%.6f", now() - t0))

elseif mode == "cost" then
  -- One kind of call N times and nothing else, for instruction counts.
  local what, n = arg[2], tonumber(arg[3])
  local cjson = require "cjson"
  local topcalls = require "topcalls"
  local core = require "topcalls.core"
  local p = params()
  local f = ({
    encode = function() return cjson.encode(p) end,
    validate = function() return core.validate(p, true) end,          -- the normalized table (strict = false path)
    body = function() return core.body(p, true) end,                  -- validate and write the body, one walk
    validate_body = function() return assert(topcalls.carriers.validate(p)) end,   -- what add does before the network
  })[what]
  for _ = 1, n do f() end

elseif mode == "luasocket" then
  local http, ltn12 = require "socket.http", require "ltn12"
  local cjson = require "cjson"
  now = require("socket").gettime
  local url, n = arg[2] .. "/v1/phone-numbers/carriers", tonumber(arg[3])
  local function post(i)
    local body = cjson.encode(params())
    local chunks = {}
    local ok, code = http.request{
      url = url, method = "POST",
      headers = { ["authorization"] = "Bearer " .. KEY, ["accept"] = "application/json",
                  ["content-type"] = "application/json", ["content-length"] = tostring(#body),
                  ["idempotency-key"] = "bench-" .. i, ["user-agent"] = "bench-luasocket" },
      source = ltn12.source.string(body), sink = ltn12.sink.table(chunks),
    }
    assert(ok and code == 201, tostring(code))
    return cjson.decode(table.concat(chunks))
  end
  for i = 1, 20 do post(-i) end
  local t0 = now()
  for i = 1, n do post(i) end
  print(string.format("%.6f", now() - t0))

elseif mode == "many" then
  local url, n, c = arg[2], tonumber(arg[3]), tonumber(arg[4])
  local cl = client(url, { max_retries = 2 })
  local list = {}
  for i = 1, n do list[i] = params(); list[i].carrier_name = "Trunk " .. i end
  local _, summary = cl.carriers.add_many(list, { concurrency = c })
  assert(summary.succeeded == n, "only " .. summary.succeeded .. " of " .. n .. " succeeded")
  print(string.format("%.6f", summary.elapsed))

elseif mode == "rss" then
  local url = arg[2]
  local c = client(url)
  local p = params()
  local marks, done, out = { 1000, 10000, 100000 }, 0, {}
  for _, m in ipairs(marks) do
    while done < m do assert(c.carriers.add(p)); done = done + 1 end
    out[#out + 1] = tostring(rss_kib())
  end
  print(table.concat(out, " "))

elseif mode == "validate" then
  local n = tonumber(arg[2])
  local cjson = require "cjson"
  local carriers = require "topcalls.carriers"
  local core = require "topcalls.core"
  local p = params()
  local cases = {
    encode = function() return cjson.encode(p) end,
    -- the C walker alone: every rule, and the normalized copy it builds
    validate = function() return core.validate(p, true) end,
    -- what add does before the network: the checks, and the body the C
    -- core writes from the normalized copy
    validate_encode = function() return select(2, carriers.validate_params(p, true)) end,
  }
  local order = { "encode", "validate", "validate_encode" }
  local samples = { encode = {}, validate = {}, validate_encode = {} }
  for _, name in ipairs(order) do for _ = 1, 2000 do cases[name]() end end   -- warm up
  for _ = 1, 9 do                                                              -- A B C A B C ...
    for _, name in ipairs(order) do
      local f = cases[name]
      local t0 = now()
      for _ = 1, n do f() end
      local s = samples[name]
      s[#s + 1] = (now() - t0) / n
    end
  end
  local out = {}
  for _, name in ipairs(order) do
    local s = samples[name]
    table.sort(s)
    out[#out + 1] = string.format("%.9f", s[math.floor((#s + 1) / 2)])
  end
  print(table.concat(out, " "))
else
  io.stderr:write("bench/lua_bench.lua: unknown mode ", tostring(mode), "\n")
  os.exit(2)
end
