-- What a misbehaving server (spec/support/hostile.lua) must not make the
-- client do: loop on a page walk, give up on an add the server is still
-- creating, retry back to back, lose a 404, or misreport a huge header.
local topcalls = require "topcalls"
local hostile = require "spec.support.hostile"
local fx = require "spec.support.fixtures"

local CARRIERS = "/v1/phone-numbers/carriers"
local ID = "11111111-1111-4111-8111-111111111111"
local MISSING_ID = "00000000-0000-4000-8000-000000000000"
local JSON = { { "Content-Type", "application/json" } }
local PROBLEM = { { "Content-Type", "application/problem+json" } }

-- The emulator's answer to a key whose first request is still running.
local IN_PROGRESS = '{"type":"https://api.topcalls.ai/problems/idempotency-in-progress","title":"Conflict",'
  .. '"status":409,"detail":"A request with this Idempotency-Key is still being processed",'
  .. '"errors":[{"path":"Idempotency-Key","code":"idempotency_in_progress",'
  .. '"message":"A request with this Idempotency-Key is still being processed"}]}'
-- A looping rule answers this many times, then the server's 404 ends a
-- walk that would otherwise never end (so the old code fails, not hangs).
local LOOP_GUARD = 50
local CREATED = '{"id":"' .. ID .. '","voip_carrier_sid":"' .. ID .. '","carrier_name":"My VoIP Provider"}'

local h
setup(function() h = hostile.start() end)
teardown(function() h.stop() end)
before_each(function() h.reset() end)

local function client(opts)
  local o = { api_key = fx.API_KEY, base_url = h.url, timeout = 10, connect_timeout = 5 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(topcalls.new(o))
end

-- The API requests the server saw, as "METHOD path?query".
local function requests()
  local out = {}
  for i, r in ipairs(h.log()) do out[i] = r.method .. " " .. r.path .. (r.query ~= "" and "?" .. r.query or "") end
  return out
end

local function record(n) return ('{"id":"%s","carrier_name":"C%d"}'):format(ID, n) end

describe("a page walk against a server that repeats itself", function()
  it("stops on a repeated cursor with a decode error naming it, after two requests", function()
    h.script{ { method = "GET", path = CARRIERS, headers = JSON,
                times = LOOP_GUARD, body = '{"data":[' .. record(1) .. '],"next":"same"}' } }
    local c = client()
    local list, msg, err = c.carriers.list()
    assert.is_nil(list)
    assert.are.equal("decode", err.kind)
    assert.is_truthy(msg:find("page 2 repeats the cursor of page 1", 1, true), msg)
    assert.are.same({ "GET " .. CARRIERS .. "?page_size=100", "GET " .. CARRIERS .. "?page_size=100&cursor=same" },
                    requests())
  end)

  it("stops on a cursor seen earlier in the walk (a cycle a, b, a)", function()
    h.script{
      { method = "GET", path = CARRIERS, headers = JSON, times = 1, body = '{"data":[' .. record(1) .. '],"next":"a"}' },
      { method = "GET", path = CARRIERS, headers = JSON, times = 1, body = '{"data":[' .. record(2) .. '],"next":"b"}' },
      { method = "GET", path = CARRIERS, headers = JSON, times = LOOP_GUARD, body = '{"data":[' .. record(3) .. '],"next":"a"}' },
    }
    local n, last = 0, nil
    for item, msg, err in client().carriers.each() do
      n = n + 1
      if not item then last = { msg, err } end
    end
    assert.are.equal(4, n)   -- three records, then the failure
    assert.are.equal("decode", last[2].kind)
    assert.is_truthy(last[1]:find("page 3 repeats the cursor of page 1", 1, true), last[1])
    assert.are.equal(3, #requests())
  end)

  it("counts pages itself: a `page` that never advances is refused on the second page", function()
    h.script{ { method = "GET", path = CARRIERS, headers = JSON,
                times = LOOP_GUARD, body = '{"data":[' .. record(1) .. '],"total":1000000,"page":1,"page_size":1}' } }
    local list, msg, err = client().carriers.list()
    assert.is_nil(list)
    assert.are.equal("decode", err.kind)
    assert.is_truthy(msg:find("answered page 1 when page 2 was asked", 1, true), msg)
    assert.are.same({ "GET " .. CARRIERS .. "?page_size=100", "GET " .. CARRIERS .. "?page_size=100&page=2" },
                    requests())
  end)

  it("carriers.get's list fallback ends too (by-id 405, then a cursor loop)", function()
    h.script{
      { method = "GET", path = CARRIERS .. "/", status = 405, headers = PROBLEM, body = '{"title":"Method Not Allowed"}' },
      { method = "GET", path = CARRIERS, headers = JSON, times = LOOP_GUARD, body = '{"data":[' .. record(1) .. '],"next":"same"}' },
    }
    local got, _, err = client().carriers.get(MISSING_ID)
    assert.is_nil(got)
    assert.are.equal("decode", err.kind)
    assert.are.equal(3, #requests())
  end)
end)

describe("carriers.get of an unknown id", function()
  it("is the api 404 saying there is no such carrier when the by-id route answers 405", function()
    h.script{
      { method = "GET", path = CARRIERS .. "/", status = 405, headers = PROBLEM, body = '{"title":"Method Not Allowed"}' },
      { method = "GET", path = CARRIERS, headers = JSON, body = '{"data":[' .. record(1) .. ']}' },
    }
    local got, msg, err = client().carriers.get(MISSING_ID)
    assert.is_nil(got)
    assert.are.equal("api", err.kind)
    assert.are.equal(404, err.status)
    assert.are.equal(false, err.retryable)
    assert.is_truthy(msg:find("^topcalls: api: 404 "), msg)
    assert.is_truthy(msg:find("no carrier with id " .. MISSING_ID, 1, true), msg)
  end)
end)

describe("an add whose first attempt is still being processed", function()
  local function script()
    h.script{
      { method = "POST", path = CARRIERS, times = 1, action = "close" },   -- created, answer lost
      { method = "POST", path = CARRIERS, times = 1, status = 409, reason = "Conflict", headers = PROBLEM,
        body = IN_PROGRESS },
      { method = "POST", path = CARRIERS, status = 201, reason = "Created", headers = JSON, body = CREATED },
    }
  end

  it("retries the 409 idempotency-in-progress answer and succeeds on attempt 3 (add)", function()
    script()
    local events = {}
    local c = client{ logger = function(e) events[#events + 1] = e end }
    local carrier = assert(c.carriers.add(fx.carrier()))
    assert.are.equal(ID, carrier.id)
    assert.are.same({ "transport", "api", "ok" }, { events[1].outcome, events[2].outcome, events[3].outcome })
    assert.are.equal(409, events[2].status)
    assert.are.equal("retry", events[2].verdict)
    local keys = {}
    for i, r in ipairs(h.log()) do
      for _, hd in ipairs(r.headers) do if hd[1]:lower() == "idempotency-key" then keys[i] = hd[2] end end
    end
    assert.are.equal(3, #keys)
    assert.are.equal(keys[1], keys[2])
    assert.are.equal(keys[1], keys[3])
  end)

  it("the same through add_many", function()
    script()
    local results, summary = client().carriers.add_many({ fx.carrier() })
    assert.are.equal(1, summary.succeeded)
    assert.are.equal(ID, results[1].carrier.id)
    assert.are.equal(3, #requests())
  end)

  it("another 409 (a key reused with another body) is still final", function()
    h.script{ { method = "POST", path = CARRIERS, status = 409, headers = PROBLEM,
                body = '{"title":"Conflict","status":409,"errors":[{"path":"Idempotency-Key",'
                       .. '"code":"idempotency_conflict","message":"used with a different body"}]}' } }
    local _, _, err = client().carriers.add(fx.carrier())
    assert.are.equal(409, err.status)
    assert.are.equal(false, err.retryable)
    assert.are.equal(1, err.attempts)
  end)
end)

describe("Retry-After that asks for no wait", function()
  for _, value in ipairs({ "0", "Thu, 01 Jan 1970 00:00:00 GMT" }) do
    it("keeps the exponential backoff as the floor (Retry-After: " .. value .. ")", function()
      h.script{ { method = "POST", path = CARRIERS, status = 503, headers = { { "Retry-After", value } },
                  body = "" } }
      local waits = {}
      local c = client{ max_retries = 2, logger = function(e) waits[#waits + 1] = e.retry_in end }
      local _, _, err = c.carriers.add(fx.carrier())
      assert.are.equal(3, err.attempts)
      assert.are.equal(2, #waits)           -- the last attempt has no retry_in
      assert.is_true(waits[1] >= 0.5 * 0.75, tostring(waits[1]))
      assert.is_true(waits[2] >= 1.0 * 0.75, tostring(waits[2]))
    end)
  end
end)

describe("a huge response header", function()
  it("is reported as a header too large, not as out of memory", function()
    h.script{ { method = "POST", path = CARRIERS, status = 201,
                headers = { { "Content-Type", "application/json" }, { "X-Huge", string.rep("x", 200 * 1024) } },
                body = CREATED } }
    local _, msg, err = client{ max_retries = 0 }.carriers.add(fx.carrier())
    assert.are.equal("transport", err.kind)
    assert.is_falsy(msg:lower():find("memory", 1, true), msg)
    assert.is_truthy(msg:find("header", 1, true), msg)
    assert.are.equal(false, err.retryable)
  end)
end)

describe("add_many's on_progress", function()
  it("never loses the results, even when its error's __tostring raises", function()
    h.script{ { method = "POST", path = CARRIERS, status = 201, headers = JSON, body = CREATED } }
    local nasty = setmetatable({}, { __tostring = function() error("tostring exploded") end })
    local function on_progress() error(nasty) end
    local ok, results, summary = pcall(client().carriers.add_many, { fx.carrier(), fx.carrier() },
                                       { on_progress = on_progress })
    assert.is_true(ok, tostring(results))
    assert.are.equal(2, summary.succeeded)
    assert.are.equal(ID, results[1].carrier.id)
    assert.are.equal(ID, results[2].carrier.id)
    assert.are.equal(2, #summary.progress_errors)
    for _, pe in ipairs(summary.progress_errors) do
      assert.are.equal("string", type(pe.message))
      assert.is_truthy(pe.message:find("on_progress", 1, true), pe.message)
    end
  end)
end)
