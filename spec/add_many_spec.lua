-- carriers.add_many end to end against the local emulator: order, mixed
-- input, per-item retries, bounded concurrency, keep-alive, progress,
-- stop_on_error, the batch-wide Retry-After, and ownership of the C run.
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local timing = require "spec.support.timing"
local cjson = require("cjson").new()

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

before_each(function() emu.reset() end)

-- n valid carriers named "Trunk 1".."Trunk n".
local function carriers(n)
  local list = {}
  for i = 1, n do
    list[i] = fx.carrier{ carrier_name = "Trunk " .. i,
                          sip_gateway = { ipv4 = "203.0.113." .. i } }
  end
  return list
end

-- The most API requests the emulator had in flight at once, from the
-- arrival and answer times in its log (an answer at the same instant as an
-- arrival is counted first: the client started the next one after it).
local function max_in_flight(log)
  local events = {}
  for _, r in ipairs(log) do
    assert.is_number(r.arrived_at)
    assert.is_number(r.answered_at)
    events[#events + 1] = { t = r.arrived_at, d = 1 }
    events[#events + 1] = { t = r.answered_at, d = -1 }
  end
  table.sort(events, function(a, b)
    if a.t ~= b.t then return a.t < b.t end
    return a.d < b.d
  end)
  local now, most = 0, 0
  for _, e in ipairs(events) do
    now = now + e.d
    if now > most then most = now end
  end
  return most
end

-- The "topcalls.bulk" userdata of the add_many call that is running
-- on_progress, found among the locals of the calling frames (a test-only
-- look behind the curtain; the module exposes no such hook).
local function running_bulk()
  for level = 2, 12 do
    if not debug.getinfo(level, "f") then break end
    local idx = 1
    while true do
      local name, value = debug.getlocal(level, idx)
      if not name then break end
      if type(value) == "userdata" and tostring(value):find("^topcalls%.bulk") then return value end
      idx = idx + 1
    end
  end
end

local function full_gc()
  for _ = 1, 4 do collectgarbage("collect") end
end

describe("carriers.add_many", function()
  it("returns one result per item in input order, each with its own idempotency key", function()
    local c = fx.client()
    local list = carriers(12)
    local results, summary = c.carriers.add_many(list, { concurrency = 4 })
    assert.are.equal(12, #results)
    for i = 1, 12 do
      assert.is_table(results[i].carrier, tostring(results[i].message))
      assert.are.equal("Trunk " .. i, results[i].carrier.carrier_name)
      assert.is_truthy(tostring(results[i].carrier.voip_carrier_sid):match(UUID))
    end
    assert.are.equal(12, summary.succeeded)
    assert.are.equal(0, summary.failed)
    assert.are.equal(0, summary.skipped)
    assert.are.equal(12, summary.total)
    assert.is_number(summary.elapsed)
    assert.are.same({}, summary.progress_errors)
    local reqs, keys = fx.requests("POST"), {}
    assert.are.equal(12, #reqs)
    for _, r in ipairs(reqs) do
      local key = r.headers["idempotency-key"]
      assert.is_truthy(key:match(UUID), key)
      assert.is_nil(keys[key], "keys are unique")
      keys[key] = true
      local sent = cjson.decode(r.body)
      assert.are.equal("static_ip", sent.trunk_type)          -- same defaults as add
      assert.are.equal(5060, sent.sip_gateway.port)
      assert.are.equal("Bearer " .. fx.API_KEY, r.headers["authorization"])
    end
    assert.are.equal(12, #emu.carriers())
  end)

  it("uses the caller's idempotency keys, item by item", function()
    local c = fx.client()
    local keys = { "trunk-key-0001", nil, "trunk-key-0003" }
    local results = c.carriers.add_many(carriers(3), { idempotency_keys = keys })
    local by_name = {}
    for _, r in ipairs(fx.requests("POST")) do
      by_name[cjson.decode(r.body).carrier_name] = r.headers["idempotency-key"]
    end
    assert.are.equal("trunk-key-0001", by_name["Trunk 1"])
    assert.is_truthy(by_name["Trunk 2"]:match(UUID))
    assert.are.equal("trunk-key-0003", by_name["Trunk 3"])
    -- running the batch again with the same keys replays instead of creating
    local again = c.carriers.add_many(carriers(3), { idempotency_keys = keys })
    assert.are.equal(results[1].carrier.id, again[1].carrier.id)
    assert.are.equal(results[3].carrier.id, again[3].carrier.id)
    assert.are.equal(4, #emu.carriers())
  end)

  it("validates every item first: invalid ones are reported, never sent", function()
    local c = fx.client()
    local list = carriers(6)
    list[2] = fx.carrier{ sip_gateway = { ipv4 = "sip.example.com" } }     -- inbound hostname
    list[4] = "not a table"
    list[5] = fx.carrier{ carrier_name = "" }
    local keys = { [6] = "bad key!" }
    local results, summary = c.carriers.add_many(list, { idempotency_keys = keys })
    assert.is_table(results[1].carrier)
    assert.is_table(results[3].carrier)
    for _, i in ipairs({ 2, 4, 5, 6 }) do
      local r = results[i]
      assert.is_nil(r.carrier)
      assert.are.equal("validation", r.err.kind)
      assert.are.equal(r.message, r.err.message)
      assert.are.equal(r.message, tostring(r.err))
      assert.are.equal(0, r.err.attempts)
    end
    assert.are.equal("sip_gateway.ipv4", results[2].err.errors[1].path)
    assert.are.equal("type", results[4].err.errors[1].code)
    assert.are.equal("carrier_name", results[5].err.errors[1].path)
    assert.are.equal("idempotency_key", results[6].err.errors[1].path)
    assert.are.equal(2, summary.succeeded)
    assert.are.equal(4, summary.failed)
    assert.are.equal(2, #fx.requests("POST"))
    assert.are.equal(2, #emu.carriers())
  end)

  it("refuses two items with the same idempotency key", function()
    local results = fx.client().carriers.add_many(carriers(2),
      { idempotency_keys = { "same-key-123", "same-key-123" } })
    assert.is_table(results[1].carrier)
    assert.are.equal("validation", results[2].err.kind)
    assert.are.same({ path = "idempotency_key", code = "conflict", message = "is also the key of item 1" },
                    results[2].err.errors[1])
    assert.are.equal(1, #fx.requests("POST"))
  end)

  it("maps server failures into the same error tables as add", function()
    emu.faults({ { status = 404, headers = { ["X-Request-Id"] = "req_fixed123" } } })
    local results, summary = fx.client().carriers.add_many(carriers(1))
    local err = results[1].err
    assert.are.equal("api", err.kind)
    assert.are.equal(404, err.status)
    assert.are.equal("req_fixed123", err.request_id)
    assert.are.equal(1, err.attempts)
    assert.is_false(err.retryable)
    assert.is_truthy(results[1].message:find("^topcalls: api: 404 "))
    assert.are.equal(1, summary.failed)
  end)

  it("retries each item on its own and creates exactly one carrier per item", function()
    emu.faults({
      { status = 503, retry_after = "0" },
      { reset = "before" },
      { after_process = true, status = 502, retry_after = "0" },
      { after_process = true, reset = "before" },
      { status = 500 },
    })
    local events = {}
    local c = fx.client({ logger = function(e) events[#events + 1] = e end })
    local results, summary = c.carriers.add_many(carriers(8), { concurrency = 4, max_retries = 3 })
    assert.are.equal(8, summary.succeeded, tostring(results[1].message))
    local stored = emu.carriers()
    assert.are.equal(8, #stored)
    local names = {}
    for _, s in ipairs(stored) do
      assert.is_nil(names[s.carrier_name], "one carrier per item")
      names[s.carrier_name] = s.id
    end
    for i = 1, 8 do assert.are.equal(names["Trunk " .. i], results[i].carrier.id) end
    -- one logger event per attempt: 8 finished + 5 retried, each fault
    -- seen by the client (the emulator puts the resets on fresh
    -- connections: on a reused one libcurl would re-send by itself and the
    -- client would never see it). Should a run ever disagree, its message
    -- shows both sides: the server's log (one line per request:
    -- connection, its request number, status, fault) and the client's
    -- events.
    local reqs = fx.requests("POST")
    local seen = {}
    for _, r in ipairs(reqs) do
      seen[#seen + 1] = ("server c%s#%s %s %s %s"):format(tostring(r.connection), tostring(r.connection_requests),
        tostring(r.status), r.fault and tostring(r.fault.status or r.fault.reset) or "-", r.headers["idempotency-key"])
    end
    for _, e in ipairs(events) do
      seen[#seen + 1] = ("client item %s attempt %s %s %s %s %s"):format(tostring(e.index), tostring(e.attempt),
        tostring(e.outcome), tostring(e.status or e.curl_code), tostring(e.verdict), e.idempotency_key)
    end
    local trace = table.concat(seen, "\n")
    assert.are.equal(13, #reqs, trace)
    assert.are.equal(13, #events, trace)
    local retries = 0
    for _, e in ipairs(events) do
      assert.are.equal("POST", e.method)
      assert.is_number(e.index)
      assert.are.equal(4, e.max_attempts)
      assert.is_truthy(e.idempotency_key:match(UUID))
      if e.verdict == "retry" then retries = retries + 1 else assert.are.equal("done", e.verdict) end
    end
    assert.are.equal(5, retries)
    -- per item: the server got exactly the attempts the client made, all
    -- with that item's key and body
    local by_key = {}
    for _, r in ipairs(reqs) do
      local k = r.headers["idempotency-key"]
      by_key[k] = by_key[k] or { name = cjson.decode(r.body).carrier_name, requests = 0, attempts = 0 }
      by_key[k].requests = by_key[k].requests + 1
      assert.are.equal(by_key[k].name, cjson.decode(r.body).carrier_name)
    end
    for _, e in ipairs(events) do
      local item = by_key[e.idempotency_key]
      assert.is_table(item, trace)
      item.attempts = item.attempts + 1
      assert.are.equal(item.attempts, e.attempt, trace)
      assert.are.equal("Trunk " .. e.index, item.name)
    end
    local items = 0
    for _, item in pairs(by_key) do
      items = items + 1
      assert.are.equal(item.requests, item.attempts, trace)
    end
    assert.are.equal(8, items)
  end)

  it("reports an item whose retries ran out, while the others succeed", function()
    emu.faults({ { status = 503, retry_after = "0" }, { status = 503, retry_after = "0" } })
    local results, summary = fx.client().carriers.add_many(carriers(3), { concurrency = 1, max_retries = 1 })
    local err = results[1].err
    assert.are.equal("api", err.kind)
    assert.are.equal(503, err.status)
    assert.are.equal(2, err.attempts)
    assert.is_true(err.retryable)
    assert.is_table(results[2].carrier)
    assert.is_table(results[3].carrier)
    assert.are.equal(2, summary.succeeded)
    assert.are.equal(1, summary.failed)
  end)

  it("does not let one item's backoff stall the others", function()
    -- The failed item waits out a per-item Retry-After (502 is not
    -- batch-wide) that is a generous multiple of what the other five take
    -- on this machine right now, so its retry comes last however loaded
    -- the machine is.
    local _, quiet = fx.client().carriers.add_many(carriers(5), { concurrency = 2 })
    emu.reset()
    local wait = math.ceil(timing.scaled(quiet.elapsed, 5, 1, 30))
    emu.faults({ { status = 502, retry_after = tostring(wait) } })
    local results = fx.client().carriers.add_many(carriers(6), { concurrency = 2 })
    for i = 1, 6 do assert.is_table(results[i].carrier) end
    local reqs = fx.requests("POST")
    assert.are.equal(7, #reqs)
    -- the failed item's retry came last: the other five went meanwhile
    assert.are.equal(502, reqs[1].status)
    assert.are.equal(reqs[1].headers["idempotency-key"], reqs[7].headers["idempotency-key"])
  end)

  it("holds new starts of the whole batch for a 429's Retry-After", function()
    emu.faults({ { status = 429, retry_after = "1" } })
    local results = fx.client().carriers.add_many(carriers(4), { concurrency = 1 })
    for i = 1, 4 do assert.is_table(results[i].carrier) end
    local reqs = fx.requests("POST")
    assert.are.equal(5, #reqs)
    assert.are.equal(429, reqs[1].status)
    -- nothing started before the server's time was up (a lower bound only)
    for i = 2, 5 do
      assert.is_true(reqs[i].arrived_at - reqs[1].answered_at >= 0.9,
                     "request " .. i .. " arrived " .. (reqs[i].arrived_at - reqs[1].answered_at) .. " s after the 429")
    end
  end)

  it("keeps at most `concurrency` requests in flight", function()
    -- each answer held long enough (a multiple of a plain add measured now)
    -- for the batch's next requests to arrive meanwhile, however loaded
    -- the machine is
    emu.config({ latency = timing.scaled(timing.round_trip(), 10, 0.05, 2) })
    local results, summary = fx.client().carriers.add_many(carriers(15), { concurrency = 3 })
    assert.are.equal(15, summary.succeeded, tostring(results[1].message))
    local log = emu.log()
    assert.are.equal(15, #log)
    local most = max_in_flight(log)
    assert.is_true(most <= 3, "at most 3 in flight, saw " .. most)
    assert.is_true(most >= 2, "requests overlapped (saw " .. most .. ")")
  end)

  it("reuses kept-alive connections across items", function()
    emu.config({ latency = 0.01 })
    fx.client().carriers.add_many(carriers(20), { concurrency = 4 })
    local conns, n = {}, 0
    for _, r in ipairs(fx.requests("POST")) do
      if not conns[r.connection] then conns[r.connection] = true; n = n + 1 end
    end
    assert.is_true(n <= 4, "20 requests over at most 4 connections, saw " .. n)
  end)

  it("calls on_progress once per item as it finishes, and reports its errors", function()
    local seen, dones = {}, {}
    local list = carriers(5)
    list[3] = fx.carrier{ carrier_name = "" }
    local results, summary = fx.client().carriers.add_many(list, {
      concurrency = 2,
      on_progress = function(done, total, i, result)
        assert.are.equal(5, total)
        dones[#dones + 1] = done
        seen[i] = result
        if i == 4 then error("progress bar broke") end
      end,
    })
    assert.are.same({ 1, 2, 3, 4, 5 }, dones)
    for i = 1, 5 do assert.are.equal(results[i], seen[i]) end
    assert.are.equal(1, #summary.progress_errors)
    assert.are.equal(4, summary.progress_errors[1].index)
    assert.is_truthy(summary.progress_errors[1].message:find("progress bar broke", 1, true))
    assert.are.equal(4, summary.succeeded)
    assert.are.equal(1, summary.failed)
  end)

  it("stop_on_error: starts nothing new after a failure, lets started ones finish", function()
    emu.faults({ {}, { status = 400 } })
    local results, summary = fx.client().carriers.add_many(carriers(8),
      { concurrency = 2, stop_on_error = true })
    local sent = #fx.requests("POST")
    assert.is_true(sent < 8, "sent " .. sent)
    assert.are.equal(1, summary.failed)
    assert.are.equal(8, summary.succeeded + summary.failed + summary.skipped)
    assert.are.equal(sent, summary.succeeded + summary.failed)
    local failed
    for i = 1, 8 do
      local r = results[i]
      if r.err and not r.skipped then failed = i; assert.are.equal(400, r.err.status) end
    end
    for i = 1, 8 do
      local r = results[i]
      if r.skipped then
        assert.are.equal("skipped", r.err.kind)
        assert.are.equal(0, r.err.attempts)
        assert.is_true(r.err.retryable)
        assert.are.equal("topcalls: skipped: not started: stop_on_error after item " .. failed .. " failed", r.message)
      end
    end
    assert.is_true(results[8].skipped)
  end)

  it("stop_on_error with an invalid item sends nothing", function()
    local list = carriers(3)
    list[2] = {}
    local results, summary = fx.client().carriers.add_many(list, { stop_on_error = true })
    assert.are.equal("validation", results[2].err.kind)
    assert.is_true(results[1].skipped)
    assert.is_true(results[3].skipped)
    assert.are.equal(2, summary.skipped)
    assert.are.equal(0, #emu.log())
  end)

  it("checks its options, with a did-you-mean", function()
    local c = fx.client()
    local cases = {
      { { concurrency = 0 }, "concurrency", "range" },
      { { concurrency = 65 }, "concurrency", "range" },
      { { concurrency = 2.5 }, "concurrency", "type" },
      { { on_progress = true }, "on_progress", "type" },
      { { idempotency_keys = "k" }, "idempotency_keys", "type" },
      { { stop_on_error = 1 }, "stop_on_error", "type" },
      { { max_retries = 11 }, "max_retries", "range" },
      { { concurency = 4 }, "concurency", "unknown_field" },
    }
    for _, case in ipairs(cases) do
      local results, msg, err = c.carriers.add_many(carriers(1), case[1])
      assert.is_nil(results)
      assert.are.equal("validation", err.kind)
      assert.are.equal(case[2], err.errors[1].path)
      assert.are.equal(case[3], err.errors[1].code)
      assert.is_truthy(msg:find("^topcalls: validation: "))
    end
    local _, msg = c.carriers.add_many(carriers(1), { concurency = 4 })
    assert.is_truthy(msg:find("did you mean 'concurrency'", 1, true), msg)
    assert.are.equal(0, #emu.log())
  end)

  it("raises for arguments of the wrong type, and handles an empty list", function()
    local c = fx.client()
    assert.has_error(function() c.carriers.add_many("x") end,
                     "bad argument #1 to 'add_many' (table expected, got string)")
    assert.has_error(function() c.carriers.add_many({}, 5) end,
                     "bad argument #2 to 'add_many' (table expected, got number)")
    local results, summary = c.carriers.add_many({})
    assert.are.same({}, results)
    assert.are.equal(0, summary.total)
  end)

  it("returns a config error without an API key, sending nothing", function()
    if os.getenv("TOPCALLS_API_KEY") then return end   -- the key comes from the environment
    local c = assert(topcalls.new{ base_url = emu.url })
    local results, msg, err = c.carriers.add_many(carriers(2))
    assert.is_nil(results)
    assert.are.equal("config", err.kind)
    assert.is_truthy(msg:find("TOPCALLS_API_KEY", 1, true))
    assert.are.equal(0, #emu.log())
  end)

  it("is on the default topcalls.carriers too", function()
    assert.is_function(topcalls.carriers.add_many)
    assert.has_error(function() topcalls.carriers.add_many(42) end,
                     "bad argument #1 to 'add_many' (table expected, got number)")
  end)
end)

describe("carriers.add_many ownership", function()
  it("closes its C run when the call returns, even after on_progress raised", function()
    local weak = setmetatable({}, { __mode = "k" })
    local results = fx.client().carriers.add_many(carriers(3), {
      on_progress = function()
        local bulk = running_bulk()
        if bulk then weak[bulk] = true end
        error("boom")
      end,
    })
    for i = 1, 3 do assert.is_table(results[i].carrier) end
    local found = 0
    for bulk in pairs(weak) do
      found = found + 1
      assert.are.equal("topcalls.bulk (closed)", tostring(bulk))
    end
    assert.are.equal(1, found)
    full_gc()
    assert.is_nil(next(weak))
  end)

  it("frees an aborted run (a raise outside any pcall) through __gc", function()
    emu.config({ latency = 0.05 })
    local weak = setmetatable({}, { __mode = "k" })
    local c = fx.client()
    local ok, why = pcall(c.carriers.add_many, carriers(10), {
      concurrency = 3,
      on_progress = function()
        local bulk = running_bulk()
        if bulk then weak[bulk] = true end
        -- abort at the next bulk:run(), in add_many's own frame, with
        -- transfers still on the multi handle
        debug.sethook(function()
          local info = debug.getinfo(2, "nS")
          if info and info.what == "C" and info.name == "run" then
            debug.sethook()
            error("aborted by the host")
          end
        end, "c")
      end,
    })
    debug.sethook()
    assert.is_false(ok)
    assert.is_truthy(tostring(why):find("aborted by the host", 1, true), tostring(why))
    assert.is_not_nil(next(weak), "the run was seen")
    full_gc()
    assert.is_nil(next(weak), "__gc freed the run")
    -- the client is unharmed
    assert.is_table((c.carriers.add(fx.carrier())))
  end)

  it("frees a run abandoned in a suspended coroutine", function()
    if _VERSION == "Lua 5.1" and not rawget(_G, "jit") then
      return                      -- 5.1's pcall cannot yield; the hook case above covers it
    end
    emu.config({ latency = 0.05 })
    local weak = setmetatable({}, { __mode = "k" })
    local c = fx.client()
    local co = coroutine.create(function()
      return c.carriers.add_many(carriers(6), {
        concurrency = 2,
        on_progress = function()
          local bulk = running_bulk()
          if bulk then weak[bulk] = true end
          coroutine.yield("paused")
        end,
      })
    end)
    local ok, v = coroutine.resume(co)
    assert.is_true(ok)
    assert.are.equal("paused", v)
    assert.is_not_nil(next(weak))
    co = nil   -- luacheck: ignore
    full_gc()
    assert.is_nil(next(weak), "__gc freed the run")
  end)
end)
