-- client.phone_numbers end to end against the local emulator: add, get,
-- list, each, delete, validate, add_many; client-side rules before any
-- request; server answers (404, 400, 422) mapped to api errors; GETs
-- retried like DELETE and never carrying an Idempotency-Key.
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local cjson = require("cjson").new()

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local MISSING_ID = "00000000-0000-4000-8000-000000000000"   -- well formed, never stored

before_each(function() emu.reset() end)

-- A client and one carrier of its account.
local function setup(opts)
  local c = fx.client(opts)
  local carrier = assert(c.carriers.add(fx.carrier()))
  return c, carrier
end

-- path -> code of an error table's errors, and its paths in order.
local function codes(err)
  local by_path, paths = {}, {}
  for i, e in ipairs(err.errors) do
    by_path[e.path] = e.code
    paths[i] = e.path
  end
  return by_path, paths
end

describe("phone_numbers.add", function()
  it("posts the validated body with an Idempotency-Key and returns the record", function()
    local c, carrier = setup()
    local n = assert(c.phone_numbers.add{ number = "+14155550100", voip_carrier_sid = carrier.voip_carrier_sid,
                                          label = "front desk" })
    local reqs = fx.requests("POST")
    assert.are.equal(2, #reqs)
    local r = reqs[2]
    assert.are.equal("/v1/phone-numbers", r.uri)
    assert.are.equal(201, r.status)
    assert.are.equal("application/json", r.headers["content-type"])
    assert.is_truthy(r.headers["idempotency-key"]:match(UUID), r.headers["idempotency-key"])
    assert.are.same({ number = "+14155550100", voip_carrier_sid = carrier.voip_carrier_sid, label = "front desk" },
                    cjson.decode(r.body))
    assert.are.equal("+14155550100", n.number)
    assert.are.equal(carrier.voip_carrier_sid, n.voip_carrier_sid)
    assert.are.equal("My VoIP Provider", n.carrier_name)
    assert.are.equal("front desk", n.label)
    assert.are.equal("active", n.status)
    for _, k in ipairs({ "id", "phone_number_sid" }) do
      assert.is_truthy(tostring(n[k]):match(UUID), k .. " = " .. tostring(n[k]))
    end
    assert.are.equal(carrier.account_id, n.account_id)
    assert.are.equal("topcalls.phone_number", getmetatable(n).__name)
    local stored = emu.numbers()
    assert.are.equal(1, #stored)
    assert.are.equal(n.id, stored[1].id)
  end)

  it("leaves voip_carrier_sid and label out when absent (the account's default carrier)", function()
    local c, carrier = setup()
    local n = assert(c.phone_numbers.add{ number = "+442071838750" })
    assert.are.same({ number = "+442071838750" }, cjson.decode(fx.requests("POST")[2].body))
    assert.are.equal(carrier.voip_carrier_sid, n.voip_carrier_sid)
    assert.are.equal(cjson.null, n.label)
  end)

  it("reports bad input of every field at once, before any request", function()
    local c = fx.client()
    local n, msg, err = c.phone_numbers.add({
      number = "+1 415 555 0100", voip_carrier_sid = "not-a-uuid", label = "", nickname = "x",
    }, { idempotency_key = "short" })
    assert.is_nil(n)
    assert.are.equal("validation", err.kind)
    assert.are.equal(msg, err.message)
    assert.is_truthy(msg:find("^topcalls: validation: 5 problems: "), msg)
    local by_path = codes(err)
    assert.are.same({ number = "format", voip_carrier_sid = "format", label = "length",
                      nickname = "unknown_field", idempotency_key = "length" }, by_path)
    assert.are.same({}, emu.log())
  end)

  -- Each bad value of each field, alone: path and code.
  local BAD = {
    { "number missing",            {},                                       "number", "required" },
    { "number not a string",       { number = 14155550100 },                 "number", "type" },
    { "number empty",              { number = "" },                          "number", "length" },
    { "number without +",          { number = "14155550100" },               "number", "format" },
    { "number with spaces",        { number = "+1 415 555 0100" },           "number", "format" },
    { "number with a leading 0",   { number = "+0123456789" },               "number", "format" },
    { "number of 16 digits",       { number = "+1234567890123456" },         "number", "format" },
    { "number +1 (one digit)",     { number = "+1" },                        "number", "format" },
    { "unassigned code 999",       { number = "+999123456789" },             "number", "format" },
    { "unassigned code 28x",       { number = "+28123456789" },              "number", "format" },
    { "unassigned code 801",       { number = "+80123456789" },              "number", "format" },
    { "voip_carrier_sid not UUID", { number = "+14155550100", voip_carrier_sid = "abc" }, "voip_carrier_sid", "format" },
    { "voip_carrier_sid a number", { number = "+14155550100", voip_carrier_sid = 7 },     "voip_carrier_sid", "type" },
    { "label empty",               { number = "+14155550100", label = "" },  "label", "length" },
    { "label of 101 code points",  { number = "+14155550100", label = ("é"):rep(101) }, "label", "length" },
    { "label invalid UTF-8",       { number = "+14155550100", label = "a\255b" }, "label", "format" },
    { "label a table",             { number = "+14155550100", label = {} },  "label", "type" },
    { "an unknown field",          { number = "+14155550100", lable = "x" }, "lable", "unknown_field" },
  }
  for _, case in ipairs(BAD) do
    it("refuses " .. case[1] .. " (" .. case[3] .. ": " .. case[4] .. ") without a request", function()
      local c = fx.client()
      local n, msg, err = c.phone_numbers.add(case[2])
      assert.is_nil(n)
      assert.are.equal("validation", err.kind, msg)
      assert.are.same({ [case[3]] = case[4] }, (codes(err)))
      assert.are.equal(false, err.retryable)
      local vok, _, verr = c.phone_numbers.validate(case[2])
      assert.is_nil(vok)
      assert.are.same(err.errors, verr.errors)
      assert.are.same({}, emu.log())
    end)
  end

  it("says which rule an unassigned country code breaks", function()
    local _, _, err = fx.client().phone_numbers.add{ number = "+999123456789" }
    assert.are.equal("number", err.errors[1].path)
    assert.are.equal("format", err.errors[1].code)
    assert.is_truthy(err.errors[1].message:find("country calling code", 1, true), err.errors[1].message)
    local _, _, malformed = fx.client().phone_numbers.add{ number = "+1-415" }
    assert.are_not.equal(err.errors[1].message, malformed.errors[1].message)
  end)

  it("accepts the edges: 100 code points of label, 15 digits, non-geographic codes", function()
    local c, carrier = setup()
    for _, p in ipairs({
      { number = "+123456789012345", label = ("é"):rep(100) },
      { number = "+80012345678", voip_carrier_sid = carrier.voip_carrier_sid },
      { number = "+12", label = "x" },
    }) do
      assert.are.equal(true, c.phone_numbers.validate(p))
      local n = assert(c.phone_numbers.add(p))
      assert.are.equal(p.number, n.number)
    end
    assert.are.equal(3, #emu.numbers())
  end)

  it("replays the first answer when an idempotency key is reused", function()
    local c, carrier = setup()
    local p = { number = "+14155550101", voip_carrier_sid = carrier.voip_carrier_sid }
    local a = assert(c.phone_numbers.add(p, { idempotency_key = "pn-key-0001" }))
    local b = assert(c.phone_numbers.add(p, { idempotency_key = "pn-key-0001" }))
    assert.are.equal(a.id, b.id)
    assert.are.equal(1, #emu.numbers())
    local reqs = fx.requests("POST")
    assert.are.equal("pn-key-0001", reqs[2].headers["idempotency-key"])
    assert.are.equal("pn-key-0001", reqs[3].headers["idempotency-key"])
    assert.is_falsy(reqs[2].replayed)
    assert.are.equal(true, reqs[3].replayed)
    -- the same key with another body is the server's 409
    local n, _, err = c.phone_numbers.add({ number = "+14155550102" }, { idempotency_key = "pn-key-0001" })
    assert.is_nil(n)
    assert.are.equal("api", err.kind)
    assert.are.equal(409, err.status)
    assert.are.equal("idempotency_conflict", err.errors[1].code)
  end)

  it("retries a 503 with the same key and creates one number", function()
    local c, carrier = setup()
    emu.faults({ { status = 503, retry_after = "0" } })
    local n = assert(c.phone_numbers.add{ number = "+14155550103", voip_carrier_sid = carrier.voip_carrier_sid })
    local reqs = fx.requests("POST")
    assert.are.equal(3, #reqs)
    assert.are.equal(503, reqs[2].status)
    assert.are.equal(201, reqs[3].status)
    assert.are.equal(reqs[2].headers["idempotency-key"], reqs[3].headers["idempotency-key"])
    assert.are.equal(1, #emu.numbers())
    assert.are.equal(emu.numbers()[1].id, n.id)
  end)

  it("maps the same number twice on a carrier to a 422 api error with the server's errors", function()
    local c, carrier = setup()
    local p = { number = "+14155550104", voip_carrier_sid = carrier.voip_carrier_sid }
    assert(c.phone_numbers.add(p))
    local n, msg, err = c.phone_numbers.add(p)
    assert.is_nil(n)
    assert.are.equal("api", err.kind)
    assert.are.equal(422, err.status)
    assert.are.equal(false, err.retryable)
    assert.are.equal(1, err.attempts)
    assert.are.equal("phone number +14155550104 already exists on this carrier", err.detail)
    assert.are.same({ { path = "number", code = "duplicate",
                        message = "phone number +14155550104 already exists on this carrier" } }, err.errors)
    assert.is_truthy(msg:find("^topcalls: api: 422 "), msg)
    assert.is_truthy(err.request_id:match("^req_%x+$"), err.request_id)
    assert.are.equal(1, #emu.numbers())
  end)

  it("maps an unknown carrier sid to a 400 api error", function()
    local c = setup()
    local n, _, err = c.phone_numbers.add{ number = "+14155550105", voip_carrier_sid = MISSING_ID }
    assert.is_nil(n)
    assert.are.equal("api", err.kind)
    assert.are.equal(400, err.status)
    assert.are.equal("voip_carrier_sid", err.errors[1].path)
    assert.are.equal("not_found", err.errors[1].code)
    assert.are.same({}, emu.numbers())
  end)

  it("raises for arguments of the wrong type", function()
    local c = fx.client()
    assert.has_error(function() c.phone_numbers.add("+14155550100") end,
                     "bad argument #1 to 'add' (table expected, got string)")
    assert.has_error(function() c.phone_numbers.add({ number = "+14155550100" }, "k") end,
                     "bad argument #2 to 'add' (table expected, got string)")
    assert.are.same({}, emu.log())
  end)
end)

describe("phone_numbers.get", function()
  it("GETs the record by id, with no Idempotency-Key", function()
    local c, carrier = setup()
    local added = assert(c.phone_numbers.add{ number = "+14155550110", voip_carrier_sid = carrier.voip_carrier_sid })
    local n = assert(c.phone_numbers.get(added.id))
    assert.are.equal(added.id, n.id)
    assert.are.equal("+14155550110", n.number)
    assert.are.equal("active", n.status)
    assert.are.equal(carrier.voip_carrier_sid, n.voip_carrier_sid)
    assert.is_string(n.updated_at)
    assert.are.equal("topcalls.phone_number", getmetatable(n).__name)
    local gets = fx.requests("GET")
    assert.are.equal(1, #gets)
    assert.are.equal("/v1/phone-numbers/" .. added.id, gets[1].uri)
    assert.is_nil(gets[1].headers["idempotency-key"])
    assert.is_nil(gets[1].headers["content-type"])
    assert.are.equal("", gets[1].body)
    assert.are.equal("Bearer " .. fx.API_KEY, gets[1].headers["authorization"])
  end)

  it("refuses a malformed id and bad call options before any request", function()
    local c = fx.client()
    local n, msg, err = c.phone_numbers.get("42", { timeout = -1, idempotency_key = "abcdefgh1" })
    assert.is_nil(n)
    assert.are.equal("validation", err.kind, msg)
    local by_path = codes(err)
    assert.are.same({ phone_number_id = "format", timeout = "range", idempotency_key = "unknown_field" }, by_path)
    assert.are.same({}, emu.log())
  end)

  it("maps an unknown id to a 404 api error, not retried", function()
    local c = fx.client()
    local n, msg, err = c.phone_numbers.get(MISSING_ID)
    assert.is_nil(n)
    assert.are.equal("api", err.kind)
    assert.are.equal(404, err.status)
    assert.are.equal(1, err.attempts)
    assert.are.equal(false, err.retryable)
    assert.is_truthy(msg:find("^topcalls: api: 404 "), msg)
    assert.are.equal(1, #fx.requests("GET"))
  end)

  it("is retried like DELETE: a 503 then the record, attempts 2", function()
    local events = {}
    local c, carrier = setup({ logger = function(e) events[#events + 1] = e end })
    local added = assert(c.phone_numbers.add{ number = "+14155550111", voip_carrier_sid = carrier.voip_carrier_sid })
    events = {}
    emu.faults({ { status = 503, retry_after = "0" } })
    local n = assert(c.phone_numbers.get(added.id))
    assert.are.equal(added.id, n.id)
    local gets = fx.requests("GET")
    assert.are.equal(2, #gets)
    assert.are.same({ 503, 200 }, { gets[1].status, gets[2].status })
    for _, g in ipairs(gets) do assert.is_nil(g.headers["idempotency-key"]) end
    assert.are.equal(2, #events)
    assert.are.same({ 1, 2 }, { events[1].attempt, events[2].attempt })
    assert.are.same({ "GET", "GET" }, { events[1].method, events[2].method })
    assert.are.same({ 503, 200 }, { events[1].status, events[2].status })
    assert.are.equal("retry", events[1].verdict)
    assert.are.equal("done", events[2].verdict)
    assert.are.equal(emu.url .. "/v1/phone-numbers/" .. added.id, events[2].url)
    assert.is_nil(events[1].idempotency_key)
    assert.is_nil(events[2].idempotency_key)
    assert.are.equal(3, events[1].max_attempts)
  end)

  it("gives up after max_retries, reporting attempts and retryable", function()
    local c = fx.client()
    emu.faults({ { status = 503, retry_after = "0" }, { status = 503, retry_after = "0" } })
    local n, _, err = c.phone_numbers.get(MISSING_ID, { max_retries = 1 })
    assert.is_nil(n)
    assert.are.equal("api", err.kind)
    assert.are.equal(503, err.status)
    assert.are.equal(2, err.attempts)
    assert.are.equal(true, err.retryable)
    assert.are.equal(2, #fx.requests("GET"))
  end)
end)

describe("phone_numbers.delete", function()
  it("DELETEs by id and returns true; the number is gone", function()
    local c, carrier = setup()
    local added = assert(c.phone_numbers.add{ number = "+14155550120", voip_carrier_sid = carrier.voip_carrier_sid })
    assert.are.equal(true, c.phone_numbers.delete(added.id))
    assert.are.same({}, emu.numbers())
    local dels = fx.requests("DELETE")
    assert.are.equal(1, #dels)
    assert.are.equal("/v1/phone-numbers/" .. added.id, dels[1].uri)
    assert.is_nil(dels[1].headers["idempotency-key"])
    local n, _, err = c.phone_numbers.get(added.id)
    assert.is_nil(n)
    assert.are.equal(404, err.status)
    local ok, _, derr = c.phone_numbers.delete(added.id)
    assert.is_nil(ok)
    assert.are.equal("api", derr.kind)
    assert.are.equal(404, derr.status)
  end)

  it("is retried on a 503 like GET", function()
    local c, carrier = setup()
    local added = assert(c.phone_numbers.add{ number = "+14155550121", voip_carrier_sid = carrier.voip_carrier_sid })
    emu.faults({ { status = 503, retry_after = "0" } })
    assert.are.equal(true, c.phone_numbers.delete(added.id))
    local dels = fx.requests("DELETE")
    assert.are.same({ 503, 204 }, { dels[1].status, dels[2].status })
  end)

  it("refuses a malformed id before any request", function()
    local ok, _, err = fx.client().phone_numbers.delete("+14155550121")
    assert.is_nil(ok)
    assert.are.equal("validation", err.kind)
    assert.are.same({ phone_number_id = "format" }, (codes(err)))
    assert.are.same({}, emu.log())
  end)

  it("a carrier with numbers cannot be deleted: 422 with the server's errors and detail", function()
    local c, carrier = setup()
    local added = assert(c.phone_numbers.add{ number = "+14155550122", voip_carrier_sid = carrier.voip_carrier_sid })
    local ok, msg, err = c.carriers.delete(carrier.id)
    assert.is_nil(ok)
    assert.are.equal("api", err.kind)
    assert.are.equal(422, err.status)
    assert.are.equal("cannot delete carrier with active phone numbers", err.detail)
    assert.are.same({ { path = "carrier_id", code = "in_use",
                        message = "cannot delete carrier with active phone numbers" } }, err.errors)
    assert.is_truthy(msg:find("cannot delete carrier with active phone numbers", 1, true), msg)
    assert.are.equal(1, #emu.carriers())
    -- release the number, then the carrier goes
    assert.are.equal(true, c.phone_numbers.delete(added.id))
    assert.are.equal(true, c.carriers.delete(carrier.id))
    assert.are.same({}, emu.carriers())
  end)
end)

describe("phone_numbers.list and each", function()
  it("lists the account's numbers in creation order, and each walks the same", function()
    local c, carrier = setup()
    local want = { "+14155550130", "+14155550131", "+14155550132" }
    for _, num in ipairs(want) do
      assert(c.phone_numbers.add{ number = num, voip_carrier_sid = carrier.voip_carrier_sid })
    end
    local list = assert(c.phone_numbers.list())
    assert.are.equal("topcalls.list", getmetatable(list).__name)
    local got = {}
    for i, n in ipairs(list) do
      got[i] = n.number
      assert.are.equal("topcalls.phone_number", getmetatable(n).__name)
    end
    assert.are.same(want, got)
    local walked = {}
    for n in c.phone_numbers.each() do walked[#walked + 1] = n.number end
    assert.are.same(want, walked)
    for _, g in ipairs(fx.requests("GET")) do
      assert.are.equal("/v1/phone-numbers?page_size=100", g.uri)
      assert.is_nil(g.headers["idempotency-key"])
    end
  end)

  it("logs one event per GET, without an idempotency key", function()
    local events = {}
    local c, carrier = setup({ logger = function(e) events[#events + 1] = e end })
    local added = assert(c.phone_numbers.add{ number = "+14155550133", voip_carrier_sid = carrier.voip_carrier_sid })
    events = {}
    local list = assert(c.phone_numbers.list())
    assert.are.equal(1, #list)
    assert(c.phone_numbers.get(added.id))
    assert.are.equal(2, #events)
    assert.are.same({ emu.url .. "/v1/phone-numbers?page_size=100", emu.url .. "/v1/phone-numbers/" .. added.id },
                    { events[1].url, events[2].url })
    for _, e in ipairs(events) do
      assert.are.equal("GET", e.method)
      assert.are.equal(1, e.attempt)
      assert.are.equal(200, e.status)
      assert.are.equal("ok", e.outcome)
      assert.are.equal("done", e.verdict)
      assert.is_number(e.elapsed)
      assert.is_nil(e.idempotency_key)
    end
  end)
end)

describe("phone_numbers.add_many", function()
  it("adds numbers concurrently: results in order, invalid items never sent", function()
    local c, carrier = setup()
    local calls = {}
    local results, summary = c.phone_numbers.add_many({
      { number = "+14155550140", voip_carrier_sid = carrier.voip_carrier_sid },
      { number = "+999123456789" },
      { number = "+14155550141", label = "second" },
    }, { on_progress = function(done, total, i) calls[#calls + 1] = { done, total, i } end })
    assert.are.same({ total = 3, succeeded = 2, failed = 1, skipped = 0 },
                    { total = summary.total, succeeded = summary.succeeded, failed = summary.failed,
                      skipped = summary.skipped })
    assert.are.equal("+14155550140", results[1].phone_number.number)
    assert.are.equal("topcalls.phone_number", getmetatable(results[1].phone_number).__name)
    assert.are.equal("validation", results[2].err.kind)
    assert.are.same({ number = "format" }, (codes(results[2].err)))
    assert.are.equal("second", results[3].phone_number.label)
    assert.are.equal(3, #calls)
    local seen = {}
    for k, call in ipairs(calls) do
      assert.are.equal(k, call[1])
      assert.are.equal(3, call[2])
      seen[call[3]] = true
    end
    assert.are.same({ true, true, true }, seen)
    assert.are.equal(2, #emu.numbers())
    assert.are.equal(2, #fx.requests("POST") - 1)
  end)

  it("maps a server 422 of one item to its result", function()
    local c, carrier = setup()
    local p = { number = "+14155550142", voip_carrier_sid = carrier.voip_carrier_sid }
    assert(c.phone_numbers.add(p))
    local results, summary = c.phone_numbers.add_many({ p, { number = "+14155550143" } }, { concurrency = 1 })
    assert.are.equal(1, summary.failed)
    assert.are.equal("api", results[1].err.kind)
    assert.are.equal(422, results[1].err.status)
    assert.are.equal("duplicate", results[1].err.errors[1].code)
    assert.are.equal("+14155550143", results[2].phone_number.number)
  end)
end)

describe("topcalls.phone_numbers (the default client)", function()
  it("has every operation, and validate needs no key", function()
    for _, op in ipairs({ "add", "add_many", "get", "list", "each", "delete", "validate" }) do
      assert.is_function(topcalls.phone_numbers[op], op)
    end
    assert.are.equal(true, topcalls.phone_numbers.validate{ number = "+14155550100" })
    local ok, _, err = topcalls.phone_numbers.validate{ number = "+999123456789" }
    assert.is_nil(ok)
    assert.are.same({ number = "format" }, (codes(err)))
  end)
end)
