-- topcalls.new, the default client, the logger, secrets, and ownership.
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local lfs = require "lfs"

before_each(function() emu.reset() end)

-- Run a Lua snippet in a child interpreter with the given environment;
-- returns its stdout and stderr together.
local function run_lua(env, code)
  local lua = assert(os.getenv("TOPCALLS_TEST_LUA"), "run the specs through make test")
  local prefix = ""
  for k, v in pairs(env) do prefix = prefix .. k .. "='" .. v .. "' " end
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = io.popen("env -u TOPCALLS_API_KEY -u TOPCALLS_BASE_URL " .. prefix .. lua .. " " .. path .. " 2>&1")
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return out
end

describe("topcalls.new", function()
  it("exposes the version", function()
    assert.is_truthy(topcalls.VERSION:match("^%d+%.%d+%.%d+$"))
  end)

  it("reports every bad option at once, with did-you-mean", function()
    local c, msg, err = topcalls.new{ api_kye = "x", timeout = -1, max_retries = 2.5, strict = "yes",
                                      logger = "print", base_url = 5 }
    assert.is_nil(c)
    assert.are.equal("config", err.kind)
    local got = {}
    for _, e in ipairs(err.errors) do got[e.path] = e.code end
    assert.are.same({ api_kye = "unknown_field", timeout = "range", max_retries = "type",
                      strict = "type", logger = "type", base_url = "type" }, got)
    assert.is_truthy(msg:find("did you mean 'api_key'", 1, true))
    assert.is_truthy(msg:find("^topcalls: config: 6 problems: "))
  end)

  it("refuses plain http to a host that is not loopback, without any traffic", function()
    for _, url in ipairs({ "http://api.topcalls.ai", "http://10.0.0.1:8080", "http://127.0.0.1.nip.example",
                           "http://user@example.com", "ftp://127.0.0.1/" }) do
      local c, msg, err = topcalls.new{ api_key = fx.API_KEY, base_url = url }
      assert.is_nil(c, url)
      assert.are.equal("config", err.kind)
      assert.are.equal("base_url", err.errors[1].path)
      assert.is_truthy(msg:find("^topcalls: config: base_url: "))
    end
  end)

  it("allows plain http to loopback hosts", function()
    for _, url in ipairs({ "http://127.0.0.1:1", "http://127.9.8.7", "http://localhost:1", "http://[::1]:1" }) do
      assert.is_table((topcalls.new{ base_url = url }), url)
    end
  end)

  it("sends requests through the configured proxy", function()
    -- nothing listens on port 1: the refused connection proves the proxy
    -- was used, and the .invalid API host is never resolved here
    local c = fx.client({ base_url = "https://api.topcalls.invalid", proxy = "http://127.0.0.1:1",
                          max_retries = 0 })
    local _, msg, err = c.carriers.add(fx.carrier())
    assert.are.equal("transport", err.kind)
    assert.are.equal(7, err.curl_code)
    assert.is_truthy(msg:find("127.0.0.1 port 1", 1, true), msg)
  end)

  it("refuses a key with whitespace without quoting it", function()
    local _, msg, err = topcalls.new{ api_key = "tc_live_abc def" }
    assert.are.equal("config", err.kind)
    assert.are.equal("api_key", err.errors[1].path)
    assert.is_nil(msg:find("abc", 1, true))
  end)

  it("refuses a ca_file that cannot be read", function()
    local _, _, err = topcalls.new{ ca_file = "/nonexistent/ca.pem" }
    assert.are.equal("config", err.kind)
    assert.are.equal("ca_file", err.errors[1].path)
  end)

  it("raises for opts that are not a table", function()
    assert.has_error(function() topcalls.new("key") end, "bad argument #1 to 'new' (table expected, got string)")
  end)

  it("builds a client without a key: validate works, network calls say how to set it", function()
    local c = assert(topcalls.new{ base_url = emu.url })
    assert.is_true(c.carriers.validate(fx.carrier()))
    local r, msg, err = c.carriers.add(fx.carrier())
    assert.is_nil(r)
    assert.are.equal("config", err.kind)
    assert.is_truthy(msg:find("TOPCALLS_API_KEY", 1, true))
    assert.are.equal(0, #emu.log())
  end)

  it("applies strict = false: unknown fields pass validation", function()
    local c = fx.client({ strict = false })
    assert.is_true(c.carriers.validate(fx.carrier{ future_field = { nested = true } }))
    local _, _, err = fx.client().carriers.validate(fx.carrier{ future_field = 1 })
    assert.are.equal("unknown_field", err.errors[1].code)
  end)
end)

describe("the default client", function()
  it("validates without any environment", function()
    assert.is_true(topcalls.carriers.validate(fx.carrier()))
    local _, _, err = topcalls.carriers.validate({})
    assert.are.equal("validation", err.kind)
  end)

  it("is built from TOPCALLS_API_KEY and TOPCALLS_BASE_URL", function()
    local out = run_lua({ TOPCALLS_API_KEY = fx.API_KEY, TOPCALLS_BASE_URL = emu.url }, [[
      local topcalls = require "topcalls"
      local c, msg = topcalls.carriers.add{ carrier_name = "From Env", sip_gateway = { ipv4 = "192.0.2.1" } }
      print(c and ("created " .. c.voip_carrier_sid) or msg)
    ]])
    assert.is_truthy(out:match("^created %x+%-"), out)
    assert.are.equal("From Env", emu.carriers()[1].carrier_name)
    assert.are.equal("Bearer " .. fx.API_KEY, fx.requests("POST")[1].headers["authorization"])
  end)

  it("returns a config error naming the variable when no key is set", function()
    local out = run_lua({ TOPCALLS_BASE_URL = emu.url }, [[
      local topcalls = require "topcalls"
      local _, msg = topcalls.carriers.add{ carrier_name = "x", sip_gateway = { ipv4 = "192.0.2.1" } }
      print(msg)
    ]])
    assert.are.equal("topcalls: config: no API key: pass api_key to topcalls.new{} or set the "
                     .. "TOPCALLS_API_KEY environment variable\n", out)
    assert.are.equal(0, #emu.log())
  end)
end)

describe("the logger", function()
  it("gets one table per attempt, without the key", function()
    emu.faults({ { status = 503, retry_after = "0" } })
    local events = {}
    local c = fx.client({ logger = function(e) events[#events + 1] = e end })
    assert(c.carriers.add(fx.carrier()))
    assert.are.equal(2, #events)
    assert.are.same({ 1, 2 }, { events[1].attempt, events[2].attempt })
    assert.are.same({ 503, 201 }, { events[1].status, events[2].status })
    assert.are.same({ "api", "ok" }, { events[1].outcome, events[2].outcome })
    assert.is_true(events[1].retry_in >= 0.375, tostring(events[1].retry_in))   -- Retry-After: 0 keeps the backoff
    assert.are.equal(events[1].idempotency_key, events[2].idempotency_key)
    assert.are.equal("POST", events[1].method)
    assert.are.equal(emu.url .. "/v1/phone-numbers/carriers", events[1].url)
    assert.is_string(events[2].request_id)
    assert.is_true(events[1].elapsed >= 0)
  end)

  it("cannot break a call by raising", function()
    local c = fx.client({ logger = function() error("logger bug") end })
    assert.is_table((c.carriers.add(fx.carrier())))
  end)
end)

describe("secrets", function()
  -- Serialize anything to text, so a search covers every nested field.
  local function dump(v, seen)
    seen = seen or {}
    if type(v) ~= "table" then return tostring(v) end
    if seen[v] then return "" end
    seen[v] = true
    local parts = { tostring(v) }
    for k, x in pairs(v) do parts[#parts + 1] = dump(k, seen) .. "=" .. dump(x, seen) end
    local mt = getmetatable(v)
    if type(mt) == "table" then parts[#parts + 1] = dump(mt, seen) end
    return table.concat(parts, " ")
  end

  it("never shows the API key in errors, log events, tostring or tracebacks", function()
    local outputs = {}
    local function keep(...) for i = 1, select("#", ...) do outputs[#outputs + 1] = dump((select(i, ...))) end end
    local c = fx.client({ logger = function(e) keep(e, debug.traceback("in logger")) end })
    keep(tostring(c), c)
    emu.faults({
      { status = 401, content_type = "application/problem+json",
        body = '{"title":"Unauthorized","detail":"key ' .. fx.API_KEY .. ' was revoked","status":401,'
               .. '"errors":[{"path":"' .. fx.API_KEY .. '","message":"bad ' .. fx.API_KEY .. '","code":"x"}]}' },
      { status = 500, retry_after = "0" }, { status = 500, retry_after = "0" }, { status = 500, retry_after = "0" },
      { reset = "before" }, { reset = "before" }, { reset = "before" },
    })
    keep(c.carriers.add(fx.carrier()))
    keep(c.carriers.add(fx.carrier()))
    keep(c.carriers.add(fx.carrier()))
    keep(c.carriers.add({ carrier_name = fx.API_KEY, sip_gateway = { ipv4 = fx.API_KEY } }))
    keep(c.carriers.delete("not-a-uuid"))
    keep(topcalls.new{ api_key = fx.API_KEY, base_url = "http://example.com" })
    keep(topcalls.new{ api_key = fx.API_KEY .. " x" })
    keep(pcall(c.carriers.add, "x"))
    keep(fx.client({ base_url = emu.tls_url }).carriers.add(fx.carrier()))
    local all = table.concat(outputs, "\n")
    assert.is_truthy(all:find("[REDACTED]", 1, true), "server echo was redacted")
    assert.is_nil(all:find(fx.API_KEY, 1, true))
    assert.is_nil(all:find("S3cr3tK3y", 1, true))
    assert.is_true(#outputs > 10)
  end)
end)

describe("ownership", function()
  local function open_fds()
    local n = 0
    for _ in lfs.dir("/proc/self/fd") do n = n + 1 end
    return n
  end

  it("frees a client and closes its connection when it is collected", function()
    local weak = setmetatable({}, { __mode = "v" })
    collectgarbage(); collectgarbage()
    local before = open_fds()
    do
      local c = fx.client()
      assert(c.carriers.add(fx.carrier()))
      weak.client = c
    end
    local during = open_fds()
    collectgarbage(); collectgarbage()
    assert.is_nil(weak.client)
    assert.is_true(during > before)        -- the kept-alive connection (and libcurl's wakeup pair)
    assert.are.equal(before, open_fds())   -- all closed by __gc
  end)

  it("keeps a client usable across many calls without growing", function()
    local c = fx.client()
    assert(c.carriers.add(fx.carrier()))
    collectgarbage(); collectgarbage()
    local fds = open_fds()
    for _ = 1, 20 do assert(c.carriers.add(fx.carrier())) end
    assert.are.equal(fds, open_fds())
  end)
end)
