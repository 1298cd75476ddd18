-- Secrets against a hostile server (spec/support/hostile.lua): a server
-- that echoes the Authorization header, the API key and the request's
-- passwords into every field it answers must not get any of them into a
-- message, an error, a logger event, a returned record or the CLI's
-- output; fleet idempotency keys are HMAC-SHA-256 keyed by the API key; a
-- plain-http URL never goes through a proxy; base_url refuses userinfo,
-- a query, a fragment and NUL bytes.
local topcalls = require "topcalls"
local tjson = require "topcalls.json"
local hostile = require "spec.support.hostile"
local leakscan = require "spec.support.leakscan"
local fx = require "spec.support.fixtures"
local cjson = require("cjson").new()

local LUA = os.getenv("TOPCALLS_TEST_LUA") or "lua5.4"
local REG_PASSWORD, AUTH_PASSWORD = fx.REG_PASSWORD, fx.AUTH_PASSWORD
local UUID = "3f8e6a4c-8d2b-4a51-9c1e-2b7f0d9a6e13"

-- Every form a secret may take in server text: raw, JSON-escaped (with
-- and without "\/"), and for the key its secret part alone.
local NEEDLES = {}
for _, s in ipairs({ fx.API_KEY, fx.API_KEY:gsub("^tc_%a+_", ""), REG_PASSWORD, AUTH_PASSWORD }) do
  local escaped = cjson.encode(s):sub(2, -2)
  for _, form in ipairs({ s, escaped, (escaped:gsub("\\/", "/")) }) do NEEDLES[#NEEDLES + 1] = form end
end

-- What a hostile server writes into every string it can.
local ECHO = "k={{key}} a={{auth}} r={{json:registration.password}} i={{json:inbound_auth.password}}"
local ECHOED = "k=[REDACTED] a=Bearer [REDACTED] r=%s i=%s"   -- with the request's passwords in place

local function reg_carrier()
  return fx.carrier{ carrier_name = "Reg Co", trunk_type = "reg",
                     registration = { username = "acct1", password = REG_PASSWORD } }
end
local function auth_carrier()
  return fx.carrier{ carrier_name = "Auth Co", trunk_type = "auth",
                     inbound_auth = { username = "in1", password = AUTH_PASSWORD } }
end

-- A problem+json 422 (or other status) echoing into every field.
local function problem_rule(method, path, status)
  return { method = method, path = path, status = status or 422, reason = "Unprocessable " .. ECHO,
    headers = { { "Content-Type", "application/problem+json" }, { "X-Request-Id", "rid " .. ECHO },
                { "Location", "http://127.0.0.1/{{key}}" } },
    body = '{"type":"https://x.example/' .. ECHO .. '","title":"T ' .. ECHO .. '","detail":"D ' .. ECHO
           .. '","instance":"/i/' .. ECHO .. '","errors":[{"path":"P ' .. ECHO .. '","message":"M ' .. ECHO
           .. '","code":"C ' .. ECHO .. '"},{"path":"p2","message":"m2","code":"c2"}]}' }
end

-- A 2xx record echoing at every depth, and in a key.
local RECORD = '{"id":"' .. UUID .. '","voip_carrier_sid":"' .. UUID .. '","carrier_name":"N ' .. ECHO
  .. '","sip_gateway":{"ipv4":"203.0.113.10","note":"G ' .. ECHO .. '","tags":["T ' .. ECHO .. '"]},'
  .. '"{{key}}":"named by the key"}'
local function record_rule(method, path, status)
  return { method = method, path = path, status = status or 201,
           headers = { { "Content-Type", "application/json" }, { "X-Request-Id", "rid " .. ECHO } },
           body = RECORD }
end

-- Every byte of the values given, as text (error tables through their
-- __tostring too); also kept for tools/secret-scan.
local function text_of(...)
  leakscan.record(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    parts[#parts + 1] = table.concat(leakscan.dump(v), "")
    if type(v) == "table" then
      local ok, encoded = pcall(cjson.encode, v)
      if ok then parts[#parts + 1] = encoded end
    end
  end
  return table.concat(parts, "\n")
end

local function assert_no_secret(what, text)
  for _, needle in ipairs(NEEDLES) do
    assert.is_nil(text:find(needle, 1, true), what .. " holds a secret (" .. #needle .. " bytes)")
  end
end

local function logged_client(events, opts)
  local o = { api_key = fx.API_KEY, base_url = opts and opts.base_url, max_retries = 0,
              logger = events and function(e) events[#events + 1] = e end }
  return assert(topcalls.new(o))
end

describe("a server that echoes the API key and the request's passwords", function()
  local h
  setup(function() h = hostile.start() end)
  teardown(function() h.stop() end)
  before_each(function() h.reset() end)

  local function client(events) return logged_client(events, { base_url = h.url }) end

  it("gets none of them into an api error of add, its fields, its message or the logger", function()
    h.script{ problem_rule("POST", "/v1/phone-numbers/carriers") }
    for _, params in ipairs({ reg_carrier(), auth_carrier() }) do
      local events = {}
      local value, msg, err = client(events).carriers.add(params)
      assert.is_nil(value)
      assert.are.equal("api", err.kind)
      assert.are.equal(1, #events)
      assert_no_secret("add's error", text_of(msg, err, tostring(err), events))
      local r = params.registration and "[REDACTED]" or ""
      local i = params.inbound_auth and "[REDACTED]" or ""
      local echoed = ECHOED:format(r, i)
      assert.are.equal("rid " .. echoed, err.request_id)
      assert.are.equal("rid " .. echoed, events[1].request_id)
      assert.are.equal("D " .. echoed, err.detail)
      assert.are.equal("T " .. echoed, err.title)
      assert.are.equal("https://x.example/" .. echoed, err.type)
      assert.are.equal("/i/" .. echoed, err.instance)
      assert.are.same({ path = "P " .. echoed, message = "M " .. echoed, code = "C " .. echoed }, err.errors[1])
      assert.is_truthy(msg:find("D " .. echoed, 1, true), msg)
    end
  end)

  it("gets none of them into a created record, with and without a logger (both decoders)", function()
    h.script{ record_rule("POST", "/v1/phone-numbers/carriers") }
    for _, events in ipairs({ false, {} }) do
      local c = client(events or nil)
      for _, params in ipairs({ reg_carrier(), auth_carrier() }) do
        local record = assert(c.carriers.add(params))
        assert_no_secret("the record", text_of(record, events or nil))
        local echoed = ECHOED:format(params.registration and "[REDACTED]" or "",
                                     params.inbound_auth and "[REDACTED]" or "")
        assert.are.equal("N " .. echoed, record.carrier_name)
        assert.are.equal("G " .. echoed, record.sip_gateway.note)
        assert.are.equal("T " .. echoed, record.sip_gateway.tags[1])
        assert.are.equal("named by the key", record["[REDACTED]"])
      end
    end
  end)

  it("gets the key into nothing get, delete, list or each return", function()
    local function script()
      h.reset()
      h.script{
        problem_rule("DELETE", "/v1/phone-numbers/carriers/", 409),
        { method = "GET", path = "/v1/phone-numbers/carriers/", status = 200,
          headers = { { "Content-Type", "application/json" } }, body = RECORD },
        -- a first page whose cursor echoes the key, then the end
        { method = "GET", path = "/v1/phone-numbers/carriers", status = 200, times = 1,
          headers = { { "Content-Type", "application/json" }, { "X-Request-Id", ECHO } },
          body = '{"data":[' .. RECORD .. '],"next":"' .. ECHO .. '"}' },
        { method = "GET", path = "/v1/phone-numbers/carriers", status = 200,
          headers = { { "Content-Type", "application/json" }, { "X-Request-Id", "{{query:cursor}}" } },
          body = '{"data":[]}' },
      }
    end
    for _, events in ipairs({ false, {} }) do
      script()
      local c = client(events or nil)
      local got = assert(c.carriers.get(UUID))
      local _, dmsg, derr = c.carriers.delete(UUID)
      local list = assert(c.carriers.list())
      script()
      local each = {}
      for item, emsg, eerr in c.carriers.each() do each[#each + 1] = { item, emsg, eerr } end
      assert_no_secret("get/delete/list/each", text_of(got, dmsg, derr, list, each, events or nil))
      assert.are.equal("N " .. ECHOED:format("", ""), got.carrier_name)
      assert.are.equal("D " .. ECHOED:format("", ""), derr.detail)
      assert.are.equal(1, #list)
      assert.are.equal(1, #each)
      assert.are.equal("G " .. ECHOED:format("", ""), list[1].sip_gateway.note)
      assert.are.equal("T " .. ECHOED:format("", ""), each[1][1].sip_gateway.tags[1])
    end
  end)

  it("gets none of them into add_many's results, item errors or the logger", function()
    h.script{
      problem_rule("POST", "/v1/phone-numbers/carriers"),
    }
    local events = {}
    local results, summary = client(events).carriers.add_many({ reg_carrier(), auth_carrier() })
    assert.are.equal(2, summary.failed)
    assert_no_secret("add_many", text_of(results, summary, events))
    assert.are.equal("D " .. ECHOED:format("[REDACTED]", ""), results[1].err.detail)
    assert.are.equal("rid " .. ECHOED:format("", "[REDACTED]"), results[2].err.request_id)
    assert.are.equal(2, #events)
    h.reset()
    h.script{ record_rule("POST", "/v1/phone-numbers/carriers") }
    results = client(events).carriers.add_many({ reg_carrier(), auth_carrier() })
    assert_no_secret("add_many's records", text_of(results, events))
    assert.are.equal("N " .. ECHOED:format("", "[REDACTED]"), results[2].carrier.carrier_name)
  end)

  it("gets none of them into a redirect's message or a non-JSON answer's error", function()
    h.script{
      { method = "POST", status = 307, times = 1,
        headers = { { "Location", "http://127.0.0.1/" .. ECHO }, { "X-Request-Id", ECHO } } },
      { method = "POST", status = 201, headers = { { "Content-Type", "text/plain; k={{key}}" } }, body = "x" },
    }
    local events = {}
    local c = client(events)
    local _, msg, err = c.carriers.add(reg_carrier())
    local _, msg2, err2 = c.carriers.add(reg_carrier())
    assert_no_secret("redirect and decode errors", text_of(msg, err, msg2, err2, events))
    assert.is_truthy(msg:find("redirect to http://127.0.0.1/k=[REDACTED]", 1, true), msg)
    assert.are.equal("decode", err2.kind)
  end)

  -- bin/topcalls as a subprocess, the key and the password in its
  -- environment only; stdout and stderr both.
  local function cli(argv, env)
    local base = os.tmpname()
    local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
    local lines = { "export TOPCALLS_API_KEY=" .. q(fx.API_KEY), "export TOPCALLS_BASE_URL=" .. q(h.url) }
    for k, v in pairs(env or {}) do lines[#lines + 1] = "export " .. k .. "=" .. q(v) end
    local args = {}
    for i, a in ipairs(argv) do args[i] = q(a) end
    lines[#lines + 1] = LUA .. " bin/topcalls " .. table.concat(args, " ") .. " </dev/null >" .. base
                        .. ".out 2>" .. base .. ".err; echo $? >" .. base .. ".rc"
    fx.spit(base .. ".sh", table.concat(lines, "\n") .. "\n")
    os.execute("sh " .. base .. ".sh")
    local code, out, err = tonumber(fx.slurp(base .. ".rc")), fx.slurp(base .. ".out"), fx.slurp(base .. ".err")
    for _, ext in ipairs({ "", ".sh", ".out", ".err", ".rc" }) do os.remove(base .. ext) end
    io.stdout:write(out, err)   -- into the test output tools/secret-scan reads
    return code, out, err
  end

  it("gets none of them onto the CLI's stdout or stderr, --output json and text", function()
    local file = os.tmpname()
    fx.spit(file, cjson.encode(reg_carrier()))
    for _, rule in ipairs({ problem_rule("POST", "/v1/phone-numbers/carriers"),
                            record_rule("POST", "/v1/phone-numbers/carriers") }) do
      for _, output in ipairs({ "json", "text" }) do
        h.reset()
        h.script{ rule }
        local code, out, err = cli({ "carriers", "add", "--file", file, "--output", output })
        assert.are.equal(rule.status == 422 and 3 or 0, code, err)
        assert.is_truthy((out .. err):find("[REDACTED]", 1, true), out .. err)
        assert_no_secret("CLI " .. output .. " output", out .. err)
      end
    end
    os.remove(file)
  end)
  it("gets none of them into apply's failure lines or progress", function()
    h.reset()
    h.script{
      { method = "GET", status = 200, headers = { { "Content-Type", "application/json" } }, body = '{"data":[]}' },
      problem_rule("POST", "/v1/phone-numbers/carriers"),
    }
    local file = os.tmpname()
    local reg, auth = reg_carrier(), auth_carrier()
    reg.numbers, auth.numbers = {}, {}
    fx.spit(file, cjson.encode({ carriers = { reg, auth } }))
    local code, out, err = cli({ "apply", "--file", file, "--yes" })
    os.remove(file)
    assert.are.equal(1, code, err)
    assert.is_truthy(err:find("D " .. ECHOED:format("[REDACTED]", ""), 1, true), err)
    assert.is_truthy(err:find("D " .. ECHOED:format("", "[REDACTED]"), 1, true), err)
    assert_no_secret("apply's output", out .. err)
  end)

  -- A one-letter password redacted wherever it occurs would eat every "p"
  -- of the record (trunk_type, voip_carrier_sid): a secret too short to
  -- mean anything inside other text is redacted where a whole string is it.
  it("keeps the record whole when a password is too short to stand for itself inside text", function()
    local body = '{"id":"' .. UUID .. '","voip_carrier_sid":"' .. UUID .. '","carrier_name":"Short Co",'
      .. '"trunk_type":"reg","sip_gateway":{"ipv4":"sip.example.com","port":5062},'
      .. '"registration":{"username":"u1","password":"{{json:registration.password}}"}}'
    h.script{ { method = "POST", path = "/v1/phone-numbers/carriers", status = 201,
                headers = { { "Content-Type", "application/json" } }, body = body } }
    for _, events in ipairs({ false, {} }) do
      local c = client(events or nil)
      local params = fx.carrier{ carrier_name = "Short Co", trunk_type = "reg",
                                 registration = { username = "u1", password = "p" } }
      local record = assert(c.carriers.add(params))
      assert.are.equal(UUID, record.voip_carrier_sid)
      assert.are.equal("reg", record.trunk_type)
      assert.are.equal("sip.example.com", record.sip_gateway.ipv4)
      assert.are.equal("[REDACTED]", record.registration.password)
    end
  end)
end)

describe("fleet idempotency keys", function()
  local h
  setup(function() h = hostile.start() end)
  teardown(function() h.stop() end)

  -- HMAC-SHA-256 by an independent implementation (python3's hmac).
  local function hmac_hex(key, data)
    local kf, df = os.tmpname(), os.tmpname()
    fx.spit(kf, key)
    fx.spit(df, data)
    local p = io.popen("env -u LD_PRELOAD python3 -c 'import hmac,hashlib,sys; print(hmac.new(open(sys.argv[1],\"rb\").read(),"
                       .. "open(sys.argv[2],\"rb\").read(),hashlib.sha256).hexdigest())' " .. kf .. " " .. df)
    local hex = p:read("*l")
    p:close()
    os.remove(kf)
    os.remove(df)
    return hex
  end

  -- Apply a one-carrier fleet with `password` on a client with `api_key`:
  -- the Idempotency-Key and body of its first POST.
  local function first_post(api_key, password)
    h.reset()
    h.script{
      { method = "GET", status = 200, headers = { { "Content-Type", "application/json" } }, body = '{"data":[]}' },
      { method = "POST", status = 201, headers = { { "Content-Type", "application/json" } },
        body = '{"id":"' .. UUID .. '","voip_carrier_sid":"' .. UUID .. '","carrier_name":"Reg Co"}' },
    }
    local c = assert(topcalls.new{ api_key = api_key, base_url = h.url, max_retries = 0 })
    local p = reg_carrier()
    p.registration.password = password
    p.numbers = {}
    c.fleet.apply(assert(c.fleet.plan({ carriers = { p } })))
    for _, r in ipairs(h.log()) do
      if r.method == "POST" then
        for _, hv in ipairs(r.headers) do
          if hv[1]:lower() == "idempotency-key" then return hv[2], r.body end
        end
      end
    end
  end

  it("are HMAC-SHA-256 keyed by the API key: not a function of the body alone", function()
    local k1, body = first_post(fx.API_KEY, "password-one")
    local k2 = first_post(fx.API_KEY, "password-two")
    local k3 = first_post(fx.API_KEY .. "X", "password-one")
    assert.is_truthy(k1:match("^fleet%-" .. ("%x"):rep(32) .. "$"), k1)
    assert.are.equal(k1, (first_post(fx.API_KEY, "password-one")))   -- deterministic: re-runs replay
    assert.are_not.equal(k1, k2)
    assert.are_not.equal(k1, k3)
    -- the message: scope, action, the params as fleet encodes them (sorted keys), what it replaces
    local message = table.concat({ h.url, "create", tjson.encode(cjson.decode(body)), "" }, "\n")
    assert.are.equal("fleet-" .. hmac_hex(fx.API_KEY, message):sub(1, 32), k1)
  end)

  it("come from client:mac, which is HMAC-SHA-256 of the API key held in C", function()
    local c = assert(topcalls.new{ api_key = fx.API_KEY, base_url = h.url })
    for _, data in ipairs({ "", "a\nb", ("x"):rep(5000), "\0bin\255" }) do
      assert.are.equal(hmac_hex(fx.API_KEY, data), c._handle:mac(data))
    end
    assert.is_nil(assert(topcalls.new{ base_url = h.url })._handle:mac("x"))   -- no key, no MAC
  end)
end)

describe("a plain-http base_url", function()
  local proxy, target
  setup(function()
    proxy = hostile.start()
    target = hostile.start{ host = "127.0.0.2" }
  end)
  teardown(function() proxy.stop(); target.stop() end)
  before_each(function()
    proxy.reset()
    target.reset()
    local rule = { method = "GET", status = 200, headers = { { "Content-Type", "application/json" } }, body = RECORD }
    proxy.script{ rule }
    target.script{ rule }
  end)

  local function assert_not_proxied()
    assert.are.same({}, proxy.log())
    assert.are.equal(1, #target.log())
  end

  it("on any loopback address never goes through the `proxy` option", function()
    local c = assert(topcalls.new{ api_key = fx.API_KEY, base_url = target.url, proxy = proxy.url, max_retries = 0 })
    assert(c.carriers.get(UUID))
    assert_not_proxied()
  end)

  it("never goes through the http_proxy environment variable", function()
    local base = os.tmpname()
    fx.spit(base .. ".sh", table.concat({
      "export TOPCALLS_API_KEY='" .. fx.API_KEY .. "'", "export TOPCALLS_BASE_URL='" .. target.url .. "'",
      "export http_proxy='" .. proxy.url .. "' HTTP_PROXY='" .. proxy.url .. "' ALL_PROXY='" .. proxy.url .. "'",
      LUA .. " bin/topcalls carriers get " .. UUID .. " >/dev/null 2>&1; echo $? >" .. base .. ".rc" }, "\n"))
    os.execute("sh " .. base .. ".sh")
    local code = tonumber(fx.slurp(base .. ".rc"))
    os.remove(base .. ".sh"); os.remove(base .. ".rc"); os.remove(base)
    assert.are.equal(0, code)
    assert_not_proxied()
  end)
end)

describe("base_url", function()
  it("refuses userinfo, a query, a fragment and a NUL byte with config errors that never echo them", function()
    for _, url in ipairs({ "https://user:hunter2pw@api.example.com", "https://hunter2pw@api.example.com/v1",
                           "http://user:hunter2pw@127.0.0.1:9", "https://api.example.com/?hunter2pw=1",
                           "https://api.example.com/base?", "https://api.example.com/#hunter2pw",
                           "https://api.example.com\0.evil.example/hunter2pw" }) do
      local c, msg, err = topcalls.new{ api_key = fx.API_KEY, base_url = url }
      assert.is_nil(c, url)
      assert.are.equal("config", err.kind)
      assert.are.equal(1, #err.errors)
      assert.are.equal("base_url", err.errors[1].path)
      assert.is_nil(text_of(msg, err):find("hunter2pw", 1, true), msg)
    end
    assert.is_truthy(topcalls.new{ base_url = "https://api.example.com/base/" })
  end)
end)
