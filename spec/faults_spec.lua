-- The fault matrix: every way the network or the server can fail, each
-- against the local emulator.  Every case ends with the right err.kind (and
-- curl code where libcurl's is stable), the process alive (this file
-- running to its end proves no SIGPIPE death; a child process checks it
-- explicitly where a peer closes while we write) and the emulator holding
-- exactly one carrier per successful logical add, never two.
-- Traffic goes to 127.0.0.1 only (the .invalid name reaches no further
-- than the local resolver).
local socket = require "socket"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local leakscan = require "spec.support.leakscan"
local timing = require "spec.support.timing"

local MiB = 1024 * 1024

before_each(function() emu.reset() end)

-- A client of the emulator whose every error is kept for the secret scan.
local function client(opts)
  local c = fx.client(opts)
  return {
    add = function(...) return leakscan.record(c.carriers.add(...)) end,
    delete = function(...) return leakscan.record(c.carriers.delete(...)) end,
  }
end

-- The common shape of a failure: nil, the one-line message, the table.
local function failed(kind, carrier, msg, err)
  assert.is_nil(carrier, "expected a failure")
  assert.is_table(err, msg)
  assert.are.equal(kind, err.kind, msg)
  assert.are.equal(msg, err.message)
  assert.are.equal(msg, tostring(err))
  assert.is_truthy(msg:find("^topcalls: " .. kind .. ": "), msg)
  assert.is_nil(msg:find("[\r\n]"), "one line")
  assert.is_nil(msg:find(fx.API_KEY, 1, true), "no key in the message")
  return err
end

local function transport(code, carrier, msg, err)
  failed("transport", carrier, msg, err)
  if type(code) == "table" then
    local ok = false
    for _, c in ipairs(code) do ok = ok or c == err.curl_code end
    assert.is_true(ok, ("curl code %s not in {%s}: %s"):format(tostring(err.curl_code), table.concat(code, ", "), msg))
  else
    assert.are.equal(code, err.curl_code, msg)
  end
  return err
end

-- Exactly n carriers stored, each from a different logical call
-- (idempotency key); returns them.
local function carriers(n)
  local list = emu.carriers()
  assert.are.equal(n, #list, "carriers stored")
  local keys = {}
  for _, c in ipairs(list) do
    assert.is_nil(keys[c.idempotency_key], "two carriers from one logical add")
    keys[c.idempotency_key] = true
  end
  return list
end

-- The POST log entries; all of one logical call carry one key.
local function posts(n)
  local reqs = fx.requests("POST")
  if n then assert.are.equal(n, #reqs, "requests received") end
  for i = 2, #reqs do
    assert.are.equal(reqs[1].headers["idempotency-key"], reqs[i].headers["idempotency-key"])
  end
  return reqs
end

-- A logical add that must succeed through the faults queued before it,
-- creating exactly one carrier: the one it returns.
local function add_succeeds_once(c, params, call)
  local carrier, msg = c.add(params or fx.carrier(), call)
  assert.is_table(carrier, msg)
  local list = carriers(1)
  assert.are.equal(list[1].id, carrier.id)
  assert.are.equal(list[1].voip_carrier_sid, carrier.voip_carrier_sid)
  return carrier
end

-- A port on 127.0.0.1 that nobody listens on, and nobody can start to
-- while the returned socket lives: bound without SO_REUSEADDR and never
-- listening, so a connection is refused and no other process (an emulator
-- of a test run next door, say) can bind the port in the meantime.
local function closed_port()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  return port, s
end

-- A valid carrier whose JSON body is about `size` bytes (the registration
-- password has no length limit).
local function big_carrier(size)
  return fx.carrier{
    trunk_type = "reg",
    sip_gateway = { ipv4 = "sip.example.net", inbound = false },
    registration = { username = "bulk", password = ("p"):rep(size) },
  }
end

describe("fault matrix", function()
  it("connection refused: a retryable transport error (7) after every attempt", function()
    local port, holder = closed_port()
    local c = client{ base_url = "http://127.0.0.1:" .. port, max_retries = 1 }
    local err = transport(7, c.add(fx.carrier()))
    holder:close()
    assert.is_true(err.retryable)
    assert.are.equal(2, err.attempts)
    carriers(0)
  end)

  it("DNS failure (.invalid): a retryable transport error (6)", function()
    -- 28 only if the local resolver itself hangs past connect_timeout
    local c = client{ base_url = "https://api.topcalls.invalid", max_retries = 0, connect_timeout = 2 }
    local err = transport({ 6, 28 }, c.add(fx.carrier()))
    assert.is_true(err.retryable)
    assert.are.equal(1, err.attempts)
    assert.are.equal(0, #emu.log())
  end)

  it("reset before the response: 52, retryable; retried, one carrier even when the server had processed it", function()
    emu.faults{ { reset = "before" } }
    local err = transport(52, client().add(fx.carrier(), { max_retries = 0 }))
    assert.is_true(err.retryable)
    carriers(0)

    emu.reset()
    emu.faults{ { after_process = true, reset = "before" }, { after_process = true, reset = "before" } }
    add_succeeds_once(client())
    local reqs = posts(3)
    assert.is_true(reqs[3].replayed)
  end)

  it("reset before every response: exhausted, never two carriers, and a re-run with the key gets the one", function()
    local lost = { after_process = true, reset = "before" }
    emu.faults{ lost, lost, lost }
    local c = client()
    local err = transport(52, c.add(fx.carrier(), { idempotency_key = "rerun-after-outage-1" }))
    assert.are.equal(3, err.attempts)
    assert.is_true(err.retryable)
    assert.is_truthy(err.message:find("gave up after 3 attempts", 1, true))
    carriers(1)                                   -- processed three times, stored once
    add_succeeds_once(c, fx.carrier(), { idempotency_key = "rerun-after-outage-1" })
    posts(4)
  end)

  it("reset during the response body: 18, retryable; retried, one carrier", function()
    emu.faults{ { reset = "during_body" } }
    local err = transport(18, client().add(fx.carrier(), { max_retries = 0 }))
    assert.is_true(err.retryable)
    carriers(0)

    emu.reset()
    emu.faults{ { after_process = true, reset = "during_body" } }
    add_succeeds_once(client())
    assert.is_true(posts(2)[2].replayed)
  end)

  it("server closing while the request is sent: 55/56, retryable; retried, one carrier", function()
    local params = big_carrier(4 * MiB)           -- still being written when the RST comes
    emu.faults{ { reset = "during_request" } }
    local err = transport({ 55, 56 }, client().add(params, { max_retries = 0 }))
    assert.is_true(err.retryable)
    carriers(0)
    assert.are.equal("reset:during_request", emu.log()[1].status)

    emu.reset()
    emu.faults{ { reset = "during_request" } }
    add_succeeds_once(client(), params)
    local reqs = posts(2)
    assert.are.equal(201, reqs[2].status)
    assert.is_true(#reqs[2].body > 4 * MiB)
  end)

  it("server closing while the request is sent, http and https: the process survives (no SIGPIPE)", function()
    -- LuaSocket (which busted and spec.support.emulator load) sets SIGPIPE
    -- to SIG_IGN, so surviving inside this process would prove nothing.  A
    -- child process with SIGPIPE at its default action (death) and without
    -- LuaSocket makes the writes to a closed connection, and must live on
    -- to print its report.
    local lua = os.getenv("TOPCALLS_TEST_LUA") or "lua"
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      local topcalls = require "topcalls"
      local function sigpipe()   -- SIGPIPE = 13: bit 12 of the masks
        local st = io.open("/proc/self/status"):read("*a")
        local function bit(mask) return tonumber(mask:sub(-4, -4), 16) %% 2 end
        return "ignored=" .. bit(st:match("SigIgn:%%s*(%%x+)")) .. " blocked=" .. bit(st:match("SigBlk:%%s*(%%x+)"))
      end
      io.write("sigpipe ", sigpipe(), "\n")
      local params = { carrier_name = "Bulk", trunk_type = "reg", sip_gateway = { ipv4 = "sip.example.net", inbound = false },
                       registration = { username = "bulk", password = ("p"):rep(4 * 1024 * 1024) } }
      local env = os.getenv
      for _, o in ipairs{ { base_url = env("TOPCALLS_EMULATOR_URL") },
                          { base_url = env("TOPCALLS_EMULATOR_TLS_URL"), ca_file = env("TOPCALLS_EMULATOR_CA") } } do
        o.api_key, o.timeout, o.connect_timeout = %q, 30, 10
        local c = assert(topcalls.new(o))
        local _, _, err = c.carriers.add(params, { max_retries = 0 })
        io.write("failed kind=", tostring(err and err.kind), " code=", tostring(err and err.curl_code), "\n")
        local ok = c.carriers.add({ carrier_name = "After", sip_gateway = { ipv4 = "203.0.113.10" } }, { max_retries = 0 })
        io.write("then ", ok and "added" or "failed", "\n")
      end
      io.write("sigpipe ", sigpipe(), " after\n", "ALIVE\n")
    ]]):format(fx.API_KEY))
    f:close()
    emu.faults{ { reset = "during_request" }, {}, { reset = "during_request" }, {} }
    local p = assert(io.popen("env --default-signal=PIPE " .. lua .. " " .. script .. " 2>&1; echo \"exit=$?\""))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    leakscan.record(out)
    assert.is_truthy(out:find("^sigpipe ignored=0 blocked=0\n"), out)
    assert.is_truthy(out:find("sigpipe ignored=0 blocked=0 after", 1, true), out)
    local n = 0
    for kind, code in out:gmatch("failed kind=(%w+) code=(%d+)") do
      n = n + 1
      assert.are.equal("transport", kind, out)
      assert.is_truthy(code == "55" or code == "56", out)
    end
    assert.are.equal(2, n, out)
    assert.are.equal(2, select(2, out:gsub("then added", "")), out)
    assert.is_truthy(out:find("ALIVE\nexit=0", 1, true), out)
    carriers(2)
    local statuses = {}
    for _, r in ipairs(emu.log()) do statuses[#statuses + 1] = tostring(r.status) end
    assert.are.same({ "reset:during_request", "201", "reset:during_request", "201" }, statuses)
  end)

  it("a 1-byte-per-second trickle: the per-attempt timeout fires (28), retryable; retried, one carrier", function()
    -- The retry must fit in the same per-attempt timeout: a generous
    -- multiple of a plain add measured now.  The trickled answer (a head of
    -- 100+ bytes at 1 byte/s, cut off by the emulator after 30 s) can never
    -- arrive within it.
    local timeout = timing.scaled(timing.round_trip(), 20, 0.5, 10)
    emu.faults{ { trickle = 1 } }
    local err = transport(28, client().add(fx.carrier(), { max_retries = 0, timeout = timeout }))
    assert.is_true(err.retryable)
    assert.are.equal(1, err.attempts)
    carriers(0)

    emu.reset()
    emu.faults{ { after_process = true, trickle = 1 } }
    add_succeeds_once(client(), fx.carrier(), { timeout = timeout })
    assert.is_true(posts(2)[2].replayed)
  end)

  it("a 2 MiB response body: refused (transport, not retried) with or without Content-Length", function()
    for _, chunked in ipairs{ false, true } do
      emu.reset()
      emu.faults{ { oversize = 2 * MiB, chunked = chunked } }
      local err = transport(chunked and 23 or 63, client().add(fx.carrier()))
      assert.is_false(err.retryable)
      assert.are.equal(1, err.attempts)
      assert.is_truthy(err.message:find("exceeds the 1 MiB limit", 1, true), err.message)
      posts(1)
    end
  end)

  it("a 2 MiB response to a processed add: one carrier, which a re-run with the same key returns", function()
    emu.faults{ { after_process = true, oversize = 2 * MiB } }
    local c = client()
    transport(63, c.add(fx.carrier(), { idempotency_key = "oversize-rerun-1" }))
    carriers(1)
    add_succeeds_once(c, fx.carrier(), { idempotency_key = "oversize-rerun-1" })
  end)

  it("a 2 MiB request body: sent whole, one carrier", function()
    add_succeeds_once(client(), big_carrier(2 * MiB))
    assert.is_true(#posts(1)[1].body > 2 * MiB)
  end)

  it("invalid chunked encoding: 56, retryable; retried, one carrier", function()
    local bad = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
             .. "Transfer-Encoding: chunked\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n"
    emu.faults{ { raw = bad } }
    local err = transport(56, client().add(fx.carrier(), { max_retries = 0 }))
    assert.is_true(err.retryable)
    carriers(0)

    emu.reset()
    emu.faults{ { after_process = true, raw = bad } }
    add_succeeds_once(client())
    assert.is_true(posts(2)[2].replayed)
  end)

  it("invalid status line: a transport error (1), not retried", function()
    for _, raw in ipairs{ "HTTX/9 banana\r\n\r\n", "HTTP/1.1 2O1 Created\r\n\r\n",
                          "HTTP/1.1 99999999999 X\r\nContent-Length: 0\r\n\r\n" } do
      emu.reset()
      emu.faults{ { raw = raw } }
      local err = transport(1, client().add(fx.carrier()))
      assert.is_false(err.retryable)
      assert.are.equal(1, err.attempts)
      posts(1)
      carriers(0)
    end
  end)

  it("TLS handshake failure: 35, retried as documented, nothing reaches the API", function()
    local c = client{ base_url = emu.tls_reject_url, ca_file = emu.ca_file, max_retries = 1 }
    local err = transport(35, c.add(fx.carrier()))
    assert.is_true(err.retryable)
    assert.are.equal(2, err.attempts)
    assert.are.equal(0, #emu.log())
  end)

  it("wrong host name on a trusted certificate: 60 (or 51), never retried", function()
    local c = client{ base_url = emu.wrong_host_url, ca_file = emu.wrong_host_ca, max_retries = 2 }
    local err = transport({ 60, 51 }, c.add(fx.carrier()))
    assert.is_false(err.retryable)
    assert.are.equal(1, err.attempts)
    assert.is_truthy(err.message:lower():find("name", 1, true), err.message)
    assert.are.equal(0, #emu.log())
    -- the same server with its right certificate takes the add
    add_succeeds_once(client{ base_url = emu.tls_url, ca_file = emu.ca_file })
  end)

  it("Retry-After in the past (HTTP-date): retried after the usual backoff, one carrier", function()
    emu.faults{ { status = 503, retry_after = "Thu, 01 Jan 1970 00:00:00 GMT" },
                { status = 429, retry_after = "Sun, 06 Nov 1994 08:49:37 GMT" } }
    local events = {}
    add_succeeds_once(client{ logger = function(e) events[#events + 1] = e end })
    posts(3)
    assert.are.same({ "retry", "retry", "done" }, { events[1].verdict, events[2].verdict, events[3].verdict })
    assert.is_true(events[1].retry_in >= 0.5 * 0.75, tostring(events[1].retry_in))
    assert.is_true(events[2].retry_in >= 1.0 * 0.75, tostring(events[2].retry_in))
  end)

  it("Retry-After in the far future: the retries stop, the hint is reported", function()
    for _, ra in ipairs{ "86400", "Fri, 31 Dec 9999 23:59:59 GMT", "99999999999999999999999999", "61" } do
      emu.reset()
      emu.faults{ { status = 503, retry_after = ra } }
      local err = failed("api", client().add(fx.carrier()))
      assert.are.equal(503, err.status)
      assert.are.equal(1, err.attempts, ra)
      assert.is_true(err.retryable)
      assert.is_number(err.retry_after, ra)
      assert.is_true(err.retry_after > 60 and err.retry_after < math.huge, ra)
      carriers(0)
    end
  end)

  it("Retry-After garbage: ignored (no hint, the usual backoff); retried, one carrier", function()
    for _, ra in ipairs{ "soon", "-1", "1.5", "0x10", "1e3", "Wed, 99 Foo 2015", "12:00", "1 2" } do
      emu.reset()
      emu.faults{ { status = 503, retry_after = ra } }
      local err = failed("api", client().add(fx.carrier(), { max_retries = 0 }))
      assert.is_nil(err.retry_after, ra)
      assert.is_true(err.retryable)
    end
    emu.reset()
    emu.faults{ { status = 429, retry_after = "garbage, really" } }
    local events = {}
    add_succeeds_once(client{ logger = function(e) events[#events + 1] = e end })
    assert.is_true(events[1].retry_in >= 0.375 and events[1].retry_in <= 0.5, tostring(events[1].retry_in))
  end)

  it("a 429 storm: every attempt 429 ends exhausted after max_retries + 1 attempts", function()
    for _, max in ipairs{ 0, 2, 10 } do
      emu.reset()
      local storm = {}
      for i = 1, max + 1 do storm[i] = { status = 429, retry_after = "0" } end
      emu.faults(storm)
      local events = {}
      local err = failed("api", client{ max_retries = max, logger = function(e) events[#events + 1] = e end }
                                  .add(fx.carrier()))
      assert.are.equal(429, err.status)
      assert.are.equal(max + 1, err.attempts)
      assert.is_true(err.retryable)
      assert.are.equal("exhausted", events[#events].verdict)
      posts(max + 1)
      carriers(0)
    end
  end)

  it("a 429 storm that passes: 429 x2 then 201 is exactly one carrier", function()
    emu.faults{ { status = 429, retry_after = "0" }, { status = 429, retry_after = "0" } }
    add_succeeds_once(client())
    posts(3)
  end)

  it("a 429 storm over processed requests: still exactly one carrier", function()
    local busy = { after_process = true, status = 429, retry_after = "0" }
    emu.faults{ busy, busy }
    add_succeeds_once(client())
    local reqs = posts(3)
    assert.is_true(reqs[2].replayed)
    assert.is_true(reqs[3].replayed)
  end)

  it("many logical adds through a mix of faults: one carrier each, never two", function()
    local lost = { after_process = true, reset = "before" }
    emu.faults{ lost, {}, { status = 429, retry_after = "0" }, {}, { after_process = true, reset = "during_body" },
                {}, { after_process = true, status = 503, retry_after = "0" }, {}, { reset = "before" } }
    local c = client()
    local ids = {}
    for i = 1, 6 do
      local carrier, msg = c.add(fx.carrier{ carrier_name = "Trunk " .. i })
      assert.is_table(carrier, msg)
      ids[#ids + 1] = carrier.id
    end
    local list = carriers(6)
    for i, stored in ipairs(list) do assert.are.equal(ids[i], stored.id) end
  end)
end)

-- libcurl re-sends a request by itself when a kept-alive connection dies
-- before the first byte of the answer (it cannot tell that from a server
-- that closed an idle connection just as the request went out). A fault
-- that loses the connection that way on a reused connection would be
-- consumed without the client ever seeing it, and every count of attempts
-- would depend on which connection the fault happened to land on. The
-- emulator puts such faults on fresh connections only.
describe("faults that lose the connection before the answer", function()
  -- A client whose logger keeps each attempt (one event per attempt).
  local function logged_client(opts)
    local events = {}
    opts = opts or {}
    opts.logger = function(e) events[#events + 1] = e end
    return fx.client(opts), events
  end

  it("land on a fresh connection when queued behind an answer: the client sees each one", function()
    emu.faults{ {}, { reset = "before" } }
    local c, events = logged_client()
    assert.is_table((c.carriers.add(fx.carrier{ carrier_name = "Trunk 1" })))
    assert.is_table((c.carriers.add(fx.carrier{ carrier_name = "Trunk 2" })))
    local reqs = fx.requests("POST")
    assert.are.same({ 201, "reset:before", 201 }, { reqs[1].status, reqs[2].status, reqs[3].status })
    assert.are.equal(3, #reqs)
    assert.are.equal(1, reqs[2].connection_requests, "the reset came on a fresh connection")
    assert.are.equal(3, #events, "one client-visible attempt per request")
    assert.are.same({ 1, "transport", 52, "retry" },
                    { events[2].attempt, events[2].outcome, events[2].curl_code, events[2].verdict })
    assert.are.same({ 2, "ok" }, { events[3].attempt, events[3].outcome })
    assert.are.equal(2, #emu.carriers())
  end)

  it("land on a fresh connection when queued while the client keeps one alive", function()
    local c, events = logged_client()
    assert.is_table((c.carriers.add(fx.carrier{ carrier_name = "Trunk 1" })))
    emu.faults{ { reset = "during_request" } }
    assert.is_table((c.carriers.add(fx.carrier{ carrier_name = "Trunk 2" })))
    local reqs = fx.requests("POST")
    -- the kept-alive connection is closed unanswered (libcurl re-sends on
    -- a new one, as it would for an idle connection the server closed),
    -- the fault waits for that re-send
    assert.are.same({ 201, "closed:reused", "reset:during_request", 201 },
                    { reqs[1].status, reqs[2].status, reqs[3].status, reqs[4].status })
    assert.are.equal(2, reqs[2].connection_requests)
    assert.are.equal(1, reqs[3].connection_requests)
    assert.are.equal(3, #events)
    assert.are.same({ 1, "transport", "retry" }, { events[2].attempt, events[2].outcome, events[2].verdict })
    assert.are.same({ 2, "ok" }, { events[3].attempt, events[3].outcome })
    assert.are.equal(2, #emu.carriers())
  end)

  it("may land on a reused connection when asked to: libcurl re-sends, the key keeps it one carrier", function()
    emu.faults{ {}, { after_process = true, reset = "before", connection = "any" } }
    local c, events = logged_client()
    local first = assert(c.carriers.add(fx.carrier{ carrier_name = "Trunk 1" }))
    local second = assert(c.carriers.add(fx.carrier{ carrier_name = "Trunk 2" }))
    local reqs = fx.requests("POST")
    assert.are.equal(3, #reqs)
    assert.are.same({ 201, "reset:before", 201 }, { reqs[1].status, reqs[2].status, reqs[3].status })
    assert.are.equal(2, reqs[2].connection_requests, "the fault hit the kept-alive connection")
    -- the client never saw the lost answer: one attempt per add
    assert.are.equal(2, #events)
    assert.are.same({ 1, 1 }, { events[1].attempt, events[2].attempt })
    -- libcurl's re-send carried the same key and got the replay
    assert.are.equal(reqs[2].headers["idempotency-key"], reqs[3].headers["idempotency-key"])
    assert.is_true(reqs[3].replayed)
    local list = carriers(2)
    assert.are.same({ first.id, second.id }, { list[1].id, list[2].id })
  end)
end)
