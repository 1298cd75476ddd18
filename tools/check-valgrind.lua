-- tools/check-valgrind.lua - a soak of every code path of the module, run
-- by tools/check-valgrind under valgrind against the local emulator:
-- success (http and TLS with ca_file), every error kind (validation,
-- config, api, transport, decode), retries, TLS verification failure,
-- delete, the default client, closing and garbage collection. Each case
-- checks its result; the script prints "N passed, N failed" and exits
-- non-zero when one failed. Needs TOPCALLS_EMULATOR_URL (emulator run).
-- SPDX-License-Identifier: MIT

package.path = "./?.lua;./?/init.lua;" .. package.path
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"

local KEY = "tc_test_ValgrindSoak0123456789"
local ROUNDS = tonumber(os.getenv("SOAK_ROUNDS") or "2")
local passed, failed = 0, 0

local function carrier(over)
  local p = { carrier_name = "Soak Carrier",
              sip_gateway = { ipv4 = "203.0.113.10", port = 5060 } }
  for k, v in pairs(over or {}) do p[k] = v end
  return p
end

local function client(opts)
  -- ceilings, not margins: valgrind on a loaded machine is slow
  local o = { api_key = KEY, base_url = emu.url, timeout = 30, connect_timeout = 10 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(topcalls.new(o))
end

-- A 127.0.0.1 port nobody listens on, nor can start to while the returned
-- socket lives: bound without SO_REUSEADDR and never listening (a port
-- merely released could be taken by another process before we connect).
local function refused_url()
  local socket = require "socket"
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  return "http://127.0.0.1:" .. port, s
end

local function case(name, fn)
  emu.reset()
  local ok, why = pcall(fn)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. name .. ": " .. tostring(why))
  end
end

local function expect_err(kind, v, msg, err)
  assert(v == nil, "expected a failure, got " .. tostring(v))
  assert(type(msg) == "string", "no message")
  assert(type(err) == "table" and err.kind == kind,
         "expected kind " .. kind .. ", got " .. tostring(err and err.kind) .. ": " .. tostring(msg))
  assert(not msg:find(KEY, 1, true), "the key leaked into a message")
  return err
end

local function soak()
  case("validate ok", function()
    assert(topcalls.carriers.validate(carrier()) == true)
    assert(topcalls.carriers.validate(carrier{ trunk_type = "reg",
      registration = { username = "u1", password = "p", sip_realm = "sip.example.com",
                       from_domain = "10.0.0.1", from_user = "x", use_tls = true } }) == true)
  end)
  case("validation errors, all codes", function()
    local err = expect_err("validation", topcalls.carriers.validate{
      carrier_name = ("x"):rep(101), trunk_type = "bogus",
      sip_gateway = { ipv4 = "01.2.3.4", port = 70000.5, inbound = "yes", prot = 1 },
      registration = { username = "a b" }, [1] = true, [false] = 1, extra = {},
    })
    assert(#err.errors >= 6)
    err = expect_err("validation", topcalls.carriers.validate{
      carrier_name = "\255", sip_gateway = { ipv4 = "sip:h", inbound = false, outbound = false },
      inbound_auth = {},
    })
    assert(#err.errors >= 3)
    expect_err("validation", topcalls.carriers.validate{ carrier_name = "", sip_gateway = 1 })
    expect_err("validation", topcalls.carriers.validate{ carrier_name = 0 / 0,
      sip_gateway = { ipv4 = "1.2.3.4", port = 1 / 0 } })
    assert(not pcall(topcalls.carriers.validate, "not a table"))
  end)
  case("config errors", function()
    expect_err("config", topcalls.new{ base_url = "http://203.0.113.1" })
    expect_err("config", topcalls.new{ base_url = "ftp://x" })
    expect_err("config", topcalls.new{ base_url = "::::" })
    expect_err("config", topcalls.new{ timeot = 3 })
    expect_err("config", topcalls.new{ api_key = "a b" })
    expect_err("config", topcalls.new{ ca_file = "/nonexistent/ca.pem" })
  end)
  case("add, delete, replay", function()
    local c = client({ logger = function() error("a broken logger") end })
    local got = assert(c.carriers.add(carrier(), { idempotency_key = "soak-key-0001" }))
    assert(got.voip_carrier_sid)
    local again = assert(c.carriers.add(carrier(), { idempotency_key = "soak-key-0001" }))
    assert(again.id == got.id)
    assert(c.carriers.delete(got.id) == true)
    local err = expect_err("api", c.carriers.delete(got.id))
    assert(err.status == 404)
    expect_err("validation", c.carriers.delete("../x"))
    expect_err("validation", c.carriers.add(carrier(), { idempotency_key = "short" }))
  end)
  case("phone numbers, lists across pages, get, add_many", function()
    local c = client()
    local got = assert(c.carriers.add(carrier()))
    local n = assert(c.phone_numbers.add{ number = "+14155550100", voip_carrier_sid = got.voip_carrier_sid,
                                         label = "Soak" })
    assert(c.phone_numbers.get(n.id).number == "+14155550100")
    expect_err("validation", c.phone_numbers.add{ number = "+999123", label = "" })
    local results, summary = c.phone_numbers.add_many({ { number = "+14155550101" }, { number = "+0123" } })
    assert(summary.succeeded == 1 and results[2].err.kind == "validation", tostring(summary.succeeded))
    local seen = 0
    for rec in c.phone_numbers.each{ page_size = 1 } do seen = seen + 1; assert(tostring(rec):find("+1415", 1, true)) end
    assert(seen == 2, "each saw " .. seen)
    assert(#assert(c.carriers.list{ page_size = 1 }) == 1)
    assert(c.carriers.get(got.id).id == got.id)                    -- the list fallback
    expect_err("api", c.carriers.delete(got.id))                   -- 422: it has numbers
    for rec in c.phone_numbers.each() do assert(c.phone_numbers.delete(rec.id)) end
    assert(c.carriers.delete(got.id))
  end)
  case("api errors", function()
    local c = client({ max_retries = 0 })
    emu.faults({ { status = 422, content_type = "application/problem+json",
      body = '{"type":"about:blank","title":"Unprocessable","status":422,"detail":"' .. KEY .. '",'
          .. '"errors":[{"path":"carrier_name","message":"bad","code":"format"},{"path":1}]}' } })
    local err = expect_err("api", c.carriers.add(carrier()))
    assert(err.status == 422 and #err.errors == 2)
    emu.faults({ { status = 409, headers = { ["X-Request-Id"] = "req_soak" } } })
    err = expect_err("api", c.carriers.add(carrier()))
    assert(err.request_id == "req_soak")
    emu.faults({ { status = 302, redirect = emu.url .. "/elsewhere" } })
    err = expect_err("api", c.carriers.add(carrier()))
    assert(err.status == 302)
    local bad = client({ api_key = "tc_nope" })
    err = expect_err("api", bad.carriers.add(carrier()))
    assert(err.status == 401)
  end)
  case("retries", function()
    local events = {}
    local c = client({ logger = function(e) events[#events + 1] = e end })
    -- a reset first; the emulator applies it on a fresh connection (on a
    -- reused one libcurl would re-send by itself, invisibly)
    emu.faults({ { reset = "before" }, { status = 503, retry_after = "0" },
                 { status = 429, retry_after = "0" } })
    local err = expect_err("api", c.carriers.add(carrier()))
    assert(err.attempts == 3 and err.retryable and err.status == 429)
    emu.faults({ { after_process = true, status = 502, retry_after = "0" } })
    assert(c.carriers.add(carrier()))
    emu.faults({ { status = 429, retry_after = "120" } })
    err = expect_err("api", c.carriers.add(carrier()))
    assert(err.retry_after == 120 and err.attempts == 1)
    emu.faults({ { status = 503, retry_after = "garbage" }, { status = 503, retry_after = "Wed, 21 Oct 2015 07:28:00 GMT" } })
    assert(c.carriers.add(carrier(), { max_retries = 2 }))
    assert(#events >= 8)
  end)
  case("transport errors", function()
    local c = client({ max_retries = 0, timeout = 1 })
    emu.faults({ { reset = "during_body" } })
    expect_err("transport", c.carriers.add(carrier()))
    emu.faults({ { oversize = 2 * 1024 * 1024 } })
    expect_err("transport", c.carriers.add(carrier()))
    emu.faults({ { oversize = 2 * 1024 * 1024, chunked = true } })
    expect_err("transport", c.carriers.add(carrier()))
    emu.faults({ { raw = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" } })
    expect_err("transport", c.carriers.add(carrier()))
    emu.faults({ { raw = "garbage\r\n\r\n" } })
    expect_err("transport", c.carriers.add(carrier()))
    emu.faults({ { trickle = 1 } })
    local err = expect_err("transport", c.carriers.add(carrier()))
    assert(err.curl_code == 28, "expected a timeout, got " .. tostring(err.curl_code))
    local url, holder = refused_url()
    local r = client({ base_url = url, max_retries = 1 })
    err = expect_err("transport", r.carriers.add(carrier()))
    holder:close()
    assert(err.attempts == 2)
    local d = client({ base_url = "https://topcalls-soak.invalid", max_retries = 0 })
    expect_err("transport", d.carriers.add(carrier()))
  end)
  case("decode errors", function()
    local c = client({ max_retries = 0 })
    emu.faults({ { status = 201, body = "not json", content_type = "application/json" } })
    expect_err("decode", c.carriers.add(carrier()))
    emu.faults({ { status = 201, body = "<html/>", content_type = "text/html" } })
    expect_err("decode", c.carriers.add(carrier()))
    emu.faults({ { status = 201, body = "[1,2]", content_type = "application/json" } })
    expect_err("decode", c.carriers.add(carrier()))
  end)
  case("TLS with ca_file, TLS verification failure", function()
    -- handshakes are slow under valgrind: generous timeouts
    local function tls_client(o) o.timeout, o.connect_timeout = 60, 30; return client(o) end
    local c = tls_client({ base_url = emu.tls_url, ca_file = emu.ca_file })
    local got = assert(c.carriers.add(carrier()))
    assert(c.carriers.delete(got.id))
    local u = tls_client({ base_url = emu.tls_url, max_retries = 2 })
    local err = expect_err("transport", u.carriers.add(carrier()))
    assert(err.attempts == 1 and not err.retryable,
           "a TLS verification failure was retried: " .. err.message)
    local h = tls_client({ base_url = (emu.tls_url:gsub("127%.0%.0%.1", "localhost")), ca_file = emu.ca_file })
    assert(h.carriers.add(carrier()))
  end)
  case("default client from the environment, without a key", function()
    -- tools/check-valgrind sets TOPCALLS_BASE_URL, never TOPCALLS_API_KEY
    local err = expect_err("config", topcalls.carriers.add(carrier()))
    assert(err.message:find("TOPCALLS_API_KEY", 1, true))
    expect_err("validation", topcalls.carriers.delete("nope"))
    local c = assert(topcalls.new{ base_url = emu.url })
    expect_err("config", c.carriers.delete("00000000-0000-4000-8000-000000000000"))
  end)
  case("close, gc, closed client", function()
    local weak = setmetatable({}, { __mode = "v" })
    for i = 1, 20 do
      local c = client()
      if i % 2 == 0 then assert(c.carriers.add(carrier())) end
      weak[i] = c
    end
    collectgarbage(); collectgarbage()
    assert(next(weak) == nil, "clients were not collected")
    local core = require "topcalls.core"
    local h = assert(core.client_new{ base_url = emu.url, user_agent = "soak", api_key = KEY })
    h:close(); h:close()
    assert(not pcall(h.perform, h, "POST", "/x", "{}", nil, 1))
    assert(tostring(h) == "topcalls.client (closed)")
  end)
end

for _ = 1, ROUNDS do soak() end
collectgarbage(); collectgarbage()
print(("valgrind soak: %d rounds"):format(ROUNDS))
print(("%d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1, true)
