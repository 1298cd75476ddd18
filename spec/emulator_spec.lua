-- The emulator's own API surface, driven over HTTP with LuaSocket (not
-- through the topcalls client): phone numbers, carrier listing and its page
-- shapes, the switchable carrier GET, the control endpoints that create
-- drift, and faults on GET / DELETE.  Plus table-driven checks of the
-- server-side rules (tools/emulator/rules.lua) where they are new.
-- Runs on Lua 5.1-5.4 and LuaJIT; traffic goes to 127.0.0.1 only.
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require("cjson").new()
local emu = require "spec.support.emulator"

package.path = "tools/emulator/?.lua;" .. package.path
local rules = require "rules"

local KEY = "tc_test_emulator_spec_account_1"
local OTHER_KEY = "tc_test_emulator_spec_account_2"
local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
local NO_SUCH_ID = "00000000-0000-4000-8000-000000000000"

before_each(function() emu.reset() end)

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

-- One API request.  opts: body (a table, JSON-encoded, or a string sent as
-- it is), key (default KEY), headers.  Returns { status, headers, text,
-- json }, or nil and LuaSocket's error (a fault closed the connection).
local function api(method, path, opts)
  opts = opts or {}
  local body = opts.body
  if type(body) == "table" then body = cjson.encode(body) end
  local headers = { authorization = "Bearer " .. (opts.key or KEY) }
  if body then
    headers["content-type"] = "application/json"
    headers["content-length"] = tostring(#body)
  end
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  local chunks = {}
  local ok, status, resp_headers = http.request{
    url = emu.url .. path, method = method, headers = headers,
    source = body and ltn12.source.string(body) or nil,
    sink = ltn12.sink.table(chunks),
  }
  if not ok then return nil, status end
  local text = table.concat(chunks)
  local dok, decoded = pcall(cjson.decode, text)
  return { status = status, headers = resp_headers, text = text, json = dok and decoded or nil }
end

local function urlencode(s)
  return (s:gsub("[^A-Za-z0-9_.~-]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function carrier_body(name, extra)
  local b = { carrier_name = name, sip_gateway = { ipv4 = "203.0.113.10" } }
  for k, v in pairs(extra or {}) do b[k] = v end
  return b
end

-- Adds a carrier; returns its 201 body.
local function add_carrier(name, opts)
  opts = opts or {}
  local res = assert(api("POST", "/v1/phone-numbers/carriers",
                         { body = carrier_body(name, opts.extra), key = opts.key }))
  assert.are.equal(201, res.status, res.text)
  return res.json
end

-- Adds a phone number; returns its 201 body.
local function add_number(number, sid, opts)
  opts = opts or {}
  local res = assert(api("POST", "/v1/phone-numbers",
                         { body = { number = number, voip_carrier_sid = sid }, key = opts.key }))
  assert.are.equal(201, res.status, res.text)
  return res.json
end

-- The response is a problem with this status; returns "path:code" strings.
local function problem(res, status)
  assert.are.equal(status, res.status, res.text)
  assert.are.equal("application/problem+json", res.headers["content-type"])
  local out = {}
  for i, e in ipairs(res.json.errors) do out[i] = e.path .. ":" .. e.code end
  return out
end

local function ids(list)
  local out = {}
  for i, r in ipairs(list) do out[i] = r.id end
  return out
end

local function keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

---------------------------------------------------------------------------
-- Server-side rules
---------------------------------------------------------------------------

describe("emulator rules: phone_number schema", function()
  local null = cjson.null
  local function paths(body)
    local out = {}
    for i, e in ipairs((rules.validate(body, null, "phone_number"))) do
      out[i] = e.path .. ":" .. e.code
    end
    return out
  end

  it("takes E.164 numbers that begin with an assigned country calling code", function()
    for _, n in ipairs{ "+14155550100", "+442071838750", "+8613800138000", "+2125551234",
                        "+881612345678", "+44", "+123456789012345" } do
      assert.are.same({}, paths{ number = n }, n)
    end
  end)

  it("refuses malformed numbers and unassigned country codes", function()
    for _, n in ipairs{ "14155550100", "+1", "+0123456", "+1234567890123456", "+1 415",
                        "+1-415", "++1415", "+１4155550100", "" } do
      local want = n == "" and "number:length" or "number:format"
      assert.are.same({ want }, paths{ number = n }, n)
    end
    for _, n in ipairs{ "+2155550100", "+8095550100", "+999123", "+2891234" } do
      assert.are.equal("unassigned", rules.e164_problem(n), n)
      assert.are.same({ "number:format" }, paths{ number = n }, n)
    end
  end)

  it("checks voip_carrier_sid and label, and takes a null label", function()
    assert.are.same({ "number:required", "voip_carrier_sid:format", "label:length", "lable:unknown_field" },
      paths{ voip_carrier_sid = "nope", label = ("é"):rep(101), lable = "x" })
    assert.are.same({}, paths{ number = "+14155550100", label = null, voip_carrier_sid = NO_SUCH_ID })
    assert.are.same({}, paths{ number = "+14155550100", label = ("é"):rep(100) })
    assert.are.same({ "label:length" }, paths{ number = "+14155550100", label = "" })
    assert.are.same({ "voip_carrier_sid:type" }, paths{ number = "+14155550100", voip_carrier_sid = null })
  end)
end)

---------------------------------------------------------------------------
-- Carriers: listing and get
---------------------------------------------------------------------------

describe("emulator: GET /v1/phone-numbers/carriers", function()
  it("answers an empty account with a real empty array in every shape", function()
    local res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.are.equal(200, res.status)
    assert.are.equal("application/json", res.headers["content-type"])
    assert.is_truthy(res.text:find('"data":[]', 1, true), res.text)
    assert.are.same({ data = {}, total = 0, page = 1, page_size = 25 }, res.json)

    emu.config{ list_shape = "cursor" }
    res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.is_truthy(res.text:find('"data":[]', 1, true), res.text)
    assert.are.same({ "data", "next" }, keys(res.json))
    assert.are.equal(cjson.null, res.json.next)

    emu.config{ list_shape = "array" }
    res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.are.equal("[]", res.text)
  end)

  it("pages through the account in creation order, one per page", function()
    local made = { add_carrier("A").id, add_carrier("B").id, add_carrier("C").id }
    local seen = {}
    for page = 1, 4 do
      local res = assert(api("GET", "/v1/phone-numbers/carriers?page_size=1&page=" .. page))
      assert.are.equal(200, res.status, res.text)
      assert.are.equal(3, res.json.total)
      assert.are.equal(page, res.json.page)
      assert.are.equal(1, res.json.page_size)
      assert.are.equal(page <= 3 and 1 or 0, #res.json.data)
      for _, c in ipairs(res.json.data) do seen[#seen + 1] = c.id end
    end
    assert.are.same(made, seen)
    -- a deleted record leaves no hole in the pages
    assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/carriers/" .. made[2])).status)
    local res = assert(api("GET", "/v1/phone-numbers/carriers?page_size=1&page=2"))
    assert.are.same({ made[3] }, ids(res.json.data))
    assert.are.equal(2, res.json.total)
  end)

  it("walks the cursor shape to a null next, unshaken by a delete mid-walk", function()
    emu.config{ list_shape = "cursor" }
    local made = { add_carrier("A").id, add_carrier("B").id, add_carrier("C").id, add_carrier("D").id }
    local seen, path, pages = {}, "/v1/phone-numbers/carriers?page_size=1", 0
    while path do
      local res = assert(api("GET", path))
      assert.are.equal(200, res.status, res.text)
      pages = pages + 1
      for _, c in ipairs(res.json.data) do seen[#seen + 1] = c.id end
      if pages == 1 then   -- the walk's first record goes: the rest still follow
        assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/carriers/" .. made[1])).status)
      end
      local nxt = res.json.next
      path = nxt ~= cjson.null and "/v1/phone-numbers/carriers?page_size=1&cursor=" .. urlencode(nxt) or nil
    end
    assert.are.same(made, seen)
    assert.are.equal(4, pages)   -- the last full page knows it is the last
  end)

  it("answers the array shape with every carrier, paging ignored", function()
    emu.config{ list_shape = "array" }
    local made = { add_carrier("A").id, add_carrier("B").id, add_carrier("C").id }
    local res = assert(api("GET", "/v1/phone-numbers/carriers?page_size=1&page=2"))
    assert.are.equal(200, res.status)
    assert.are.same(made, ids(res.json))
  end)

  it("defaults to 25 a page and caps page_size at list_max_page_size", function()
    for i = 1, 26 do add_carrier("C" .. i) end
    local res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.are.equal(25, #res.json.data)
    assert.are.equal(26, res.json.total)
    res = assert(api("GET", "/v1/phone-numbers/carriers?page=2"))
    assert.are.same({ "C26" }, { res.json.data[1].carrier_name, res.json.data[2] })

    assert.are.equal(2, emu.config{ list_max_page_size = 2 }.list_max_page_size)
    res = assert(api("GET", "/v1/phone-numbers/carriers?page_size=50"))
    assert.are.equal(2, res.json.page_size)
    assert.are.equal(2, #res.json.data)
    emu.config{ list_shape = "cursor" }
    res = assert(api("GET", "/v1/phone-numbers/carriers?page_size=50"))
    assert.are.equal(2, #res.json.data)
    assert.are.equal("string", type(res.json.next))
  end)

  it("refuses bad paging parameters with every violation", function()
    local res = assert(api("GET", "/v1/phone-numbers/carriers?page=0&page_size=x"))
    assert.are.same({ "page:range", "page_size:type" }, problem(res, 400))
    emu.config{ list_shape = "cursor" }
    res = assert(api("GET", "/v1/phone-numbers/carriers?cursor=bm9wZQ%3D%3D"))
    assert.are.same({ "cursor:format" }, problem(res, 400))
  end)

  it("shows only the caller's account", function()
    local mine = add_carrier("Mine").id
    add_carrier("Theirs", { key = OTHER_KEY })
    local res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.are.same({ mine }, ids(res.json.data))
    assert.are.equal(1, res.json.total)
  end)

  it("returns the stored body, passwords left out, and edits made by hand", function()
    local reg = add_carrier("Reg", { extra = { trunk_type = "reg",
      registration = { username = "u1", password = "pw-never-shown", sip_realm = "sip.example.net", use_tls = true } } })
    local auth = add_carrier("Auth", { extra = { trunk_type = "auth",
      inbound_auth = { username = "in1", password = "pw-never-shown" } } })
    local res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.is_nil(res.text:find("pw-never-shown", 1, true))
    local r, a = res.json.data[1], res.json.data[2]
    assert.are.same({ username = "u1", sip_realm = "sip.example.net", use_tls = true }, r.registration)
    assert.are.same({ ipv4 = "203.0.113.10", port = 5060, inbound = true, outbound = true }, r.sip_gateway)
    assert.are.same({ username = "in1" }, a.inbound_auth)
    assert.are.equal("auth", a.trunk_type)
    assert.are.same(reg, r)                      -- the 201 body, as stored
    for _, c in ipairs(emu.carriers()) do assert.is_nil((c.registration or c.inbound_auth).password) end

    -- Drift: a gateway edited by hand (the API's defaults filled in).
    local edited = emu.edit{ carrier_id = auth.id, set = { sip_gateway = { ipv4 = "198.51.100.7", port = 5080 } } }
    local want = { ipv4 = "198.51.100.7", port = 5080, inbound = true, outbound = true }
    assert.are.same(want, edited.carrier.sip_gateway)
    res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.are.same(want, res.json.data[2].sip_gateway)
  end)
end)

describe("emulator: GET /v1/phone-numbers/carriers/{id}", function()
  it("is no route by default (the documented API does not list it)", function()
    local c = add_carrier("A")
    local res = assert(api("GET", "/v1/phone-numbers/carriers/" .. c.id))
    problem(res, 404)
    assert.is_truthy(res.json.detail:find("^No route"), res.json.detail)
    res = assert(api("PUT", "/v1/phone-numbers/carriers/" .. c.id))
    problem(res, 405)
    assert.are.equal("DELETE", res.headers.allow)
  end)

  it("serves the stored record when carrier_get is on", function()
    assert.is_true(emu.config{ carrier_get = true }.carrier_get)
    local c = add_carrier("A", { extra = { trunk_type = "auth",
      inbound_auth = { username = "in1", password = "pw-never-shown" } } })
    local res = assert(api("GET", "/v1/phone-numbers/carriers/" .. c.id))
    assert.are.equal(200, res.status)
    assert.are.same(c, res.json)
    assert.is_nil(res.text:find("pw-never-shown", 1, true))
    assert.are.same({ "carrier_id:format" }, problem(assert(api("GET", "/v1/phone-numbers/carriers/nope")), 400))
    problem(assert(api("GET", "/v1/phone-numbers/carriers/" .. NO_SUCH_ID)), 404)
    problem(assert(api("GET", "/v1/phone-numbers/carriers/" .. c.id, { key = OTHER_KEY })), 404)
    res = assert(api("PUT", "/v1/phone-numbers/carriers/" .. c.id))
    assert.are.equal("DELETE, GET", res.headers.allow)
  end)
end)

---------------------------------------------------------------------------
-- Phone numbers
---------------------------------------------------------------------------

describe("emulator: phone numbers", function()
  local CREATED = { "account_id", "carrier_name", "created_at", "id", "label", "number", "object",
                    "phone_number_sid", "source", "status", "voip_carrier_sid" }

  it("adds a number on the given carrier (201, label null, Location)", function()
    add_carrier("First")
    local c = add_carrier("Second")
    local res = assert(api("POST", "/v1/phone-numbers",
      { body = { number = "+14155550100", voip_carrier_sid = c.voip_carrier_sid } }))
    assert.are.equal(201, res.status, res.text)
    local n = res.json
    assert.are.same(CREATED, keys(n))
    assert.is_truthy(res.text:find('"label":null', 1, true))
    assert.is_truthy(n.id:find(UUID))
    assert.is_truthy(n.phone_number_sid:find(UUID))
    assert.are.same({ "+14155550100", c.voip_carrier_sid, "Second", "byoc", "active", c.account_id },
                    { n.number, n.voip_carrier_sid, n.carrier_name, n.source, n.status, n.account_id })
    assert.is_truthy(n.created_at:find("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$"))
    assert.are.equal("/v1/phone-numbers/" .. n.id, res.headers.location)
  end)

  it("uses the account's first carrier when voip_carrier_sid is absent", function()
    local first, second = add_carrier("First"), add_carrier("Second")
    add_carrier("Other account", { key = OTHER_KEY })
    local n = add_number("+14155550100")
    assert.are.equal(first.voip_carrier_sid, n.voip_carrier_sid)
    assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/" .. n.id)).status)
    assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/carriers/" .. first.id)).status)
    assert.are.equal(second.voip_carrier_sid, add_number("+14155550100").voip_carrier_sid)
  end)

  it("answers 400 when there is no carrier to default to, or the sid is unknown", function()
    local res = assert(api("POST", "/v1/phone-numbers", { body = { number = "+14155550100" } }))
    assert.are.same({ "voip_carrier_sid:required" }, problem(res, 400))
    assert.is_truthy(res.json.detail:find("no carrier"), res.json.detail)
    local theirs = add_carrier("Theirs", { key = OTHER_KEY })
    add_carrier("Mine")
    for _, sid in ipairs{ NO_SUCH_ID, theirs.voip_carrier_sid } do
      res = assert(api("POST", "/v1/phone-numbers",
                       { body = { number = "+14155550100", voip_carrier_sid = sid } }))
      assert.are.same({ "voip_carrier_sid:not_found" }, problem(res, 400))
    end
    assert.are.same({}, emu.numbers())
  end)

  it("reports every invalid field with 422", function()
    add_carrier("A")
    local res = assert(api("POST", "/v1/phone-numbers",
      { body = { number = "+9991234", voip_carrier_sid = "x", label = "", extra = 1 } }))
    assert.are.same({ "number:format", "voip_carrier_sid:format", "label:length", "extra:unknown_field" },
                    problem(res, 422))
    res = assert(api("POST", "/v1/phone-numbers", { body = { label = ("x"):rep(101) } }))
    assert.are.same({ "number:required", "label:length" }, problem(res, 422))
    res = assert(api("POST", "/v1/phone-numbers", { body = "[1]" }))
    problem(res, 400)
    res = assert(api("POST", "/v1/phone-numbers", { body = "{}", headers = { ["content-type"] = "text/plain" } }))
    problem(res, 415)
  end)

  it("keeps one carrier per number: 422 on the same carrier and on another", function()
    local a, b = add_carrier("A"), add_carrier("B")
    add_number("+14155550100", a.voip_carrier_sid)
    local res = assert(api("POST", "/v1/phone-numbers",
      { body = { number = "+14155550100", voip_carrier_sid = a.voip_carrier_sid } }))
    assert.are.same({ "number:duplicate" }, problem(res, 422))
    res = assert(api("POST", "/v1/phone-numbers",
      { body = { number = "+14155550100", voip_carrier_sid = b.voip_carrier_sid } }))
    assert.are.same({ "number:conflict" }, problem(res, 422))
    assert.is_truthy(res.json.detail:find(a.voip_carrier_sid, 1, true))
    -- another account is another world
    local theirs = add_carrier("Theirs", { key = OTHER_KEY })
    add_number("+14155550100", theirs.voip_carrier_sid, { key = OTHER_KEY })
    assert.are.equal(2, #emu.numbers())
  end)

  it("replays the first 201 for the same Idempotency-Key and body, 409 otherwise", function()
    local c = add_carrier("A")
    local body = cjson.encode{ number = "+14155550100", voip_carrier_sid = c.voip_carrier_sid, label = "Support" }
    local h = { ["idempotency-key"] = "number-key-0001" }
    local first = assert(api("POST", "/v1/phone-numbers", { body = body, headers = h }))
    assert.are.equal(201, first.status)
    local again = assert(api("POST", "/v1/phone-numbers", { body = body, headers = h }))
    assert.are.equal(201, again.status)
    assert.are.equal("true", again.headers["idempotent-replayed"])
    assert.are.equal(first.text, again.text)
    assert.are.equal(1, #emu.numbers())
    assert.are.equal("number-key-0001", emu.numbers()[1].idempotency_key)

    local other = assert(api("POST", "/v1/phone-numbers",
      { body = body:gsub("Support", "Sales"), headers = h }))
    assert.are.same({ "Idempotency-Key:idempotency_conflict" }, problem(other, 409))
    other = assert(api("POST", "/v1/phone-numbers/carriers", { body = body, headers = h }))
    assert.are.same({ "Idempotency-Key:idempotency_conflict" }, problem(other, 409))
    local bad = assert(api("POST", "/v1/phone-numbers", { body = body, headers = { ["idempotency-key"] = "short" } }))
    assert.are.same({ "Idempotency-Key:format" }, problem(bad, 400))
  end)

  it("gets one number with the GET-only fields", function()
    local c = add_carrier("A")
    local n = add_number("+14155550100", c.voip_carrier_sid)
    local res = assert(api("GET", "/v1/phone-numbers/" .. n.id))
    assert.are.equal(200, res.status)
    local got = res.json
    assert.are.same({ "account_id", "carrier_name", "created_at", "created_by_user_id", "error_message",
                      "id", "label", "number", "object", "phone_number_sid", "source", "status",
                      "updated_at", "voip_carrier_sid" }, keys(got))
    assert.are.equal(cjson.null, got.error_message)
    assert.is_truthy(got.created_by_user_id:find(UUID))
    for _, k in ipairs(CREATED) do assert.are.same(n[k], got[k], k) end
    assert.are.same({ "phone_number_id:format" }, problem(assert(api("GET", "/v1/phone-numbers/nope")), 400))
    problem(assert(api("GET", "/v1/phone-numbers/" .. NO_SUCH_ID)), 404)
    problem(assert(api("GET", "/v1/phone-numbers/" .. n.id, { key = OTHER_KEY })), 404)
    assert.are.equal("DELETE, GET", assert(api("PUT", "/v1/phone-numbers/" .. n.id)).headers.allow)
    assert.are.equal("GET, POST", assert(api("DELETE", "/v1/phone-numbers")).headers.allow)
  end)

  it("lists numbers with the same paging and shapes", function()
    local c = add_carrier("A")
    local made = {}
    for i = 1, 3 do made[i] = add_number("+1415555010" .. i, c.voip_carrier_sid).id end
    local res = assert(api("GET", "/v1/phone-numbers?page_size=1&page=3"))
    assert.are.same({ made[3] }, ids(res.json.data))
    assert.are.equal(3, res.json.total)
    assert.are.equal(cjson.null, res.json.data[1].error_message)   -- the GET shape

    emu.config{ list_shape = "cursor" }
    local seen, path = {}, "/v1/phone-numbers?page_size=2"
    while path do
      res = assert(api("GET", path))
      for _, n in ipairs(res.json.data) do seen[#seen + 1] = n.id end
      path = res.json.next ~= cjson.null and "/v1/phone-numbers?page_size=2&cursor=" .. urlencode(res.json.next) or nil
    end
    assert.are.same(made, seen)

    emu.config{ list_shape = "array" }
    assert.are.same(made, ids(assert(api("GET", "/v1/phone-numbers")).json))
    assert.are.equal("[]", assert(api("GET", "/v1/phone-numbers", { key = OTHER_KEY })).text)
  end)

  it("releases a number; a carrier with numbers cannot be deleted", function()
    local a, b = add_carrier("A"), add_carrier("B")
    local n = add_number("+14155550100", a.voip_carrier_sid)
    local res = assert(api("DELETE", "/v1/phone-numbers/carriers/" .. a.id))
    assert.are.same({ "carrier_id:in_use" }, problem(res, 422))
    assert.are.equal("cannot delete carrier with active phone numbers", res.json.detail)

    -- The move: release, then add on the other carrier.
    assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/" .. n.id)).status)
    problem(assert(api("DELETE", "/v1/phone-numbers/" .. n.id)), 404)
    problem(assert(api("GET", "/v1/phone-numbers/" .. n.id)), 404)
    assert.are.equal(b.voip_carrier_sid, add_number("+14155550100", b.voip_carrier_sid).voip_carrier_sid)
    assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/carriers/" .. a.id)).status)
    problem(assert(api("DELETE", "/v1/phone-numbers/carriers/" .. b.id)), 422)
  end)
end)

---------------------------------------------------------------------------
-- Control API
---------------------------------------------------------------------------

describe("emulator control API", function()
  it("lists every account's numbers with who created them", function()
    local c = add_carrier("A")
    local theirs = add_carrier("T", { key = OTHER_KEY })
    local mine = add_number("+14155550100", c.voip_carrier_sid)
    add_number("+14155550101", theirs.voip_carrier_sid, { key = OTHER_KEY })
    local stored = emu.numbers()
    assert.are.equal(2, #stored)
    assert.are.equal(mine.id, stored[1].id)
    assert.are.equal("A", stored[1].carrier_name)
    assert.is_truthy(stored[1].request_id:find("^req_%x+$"))
    assert.is_nil(stored[1].label)   -- JSON null -> nil in emu's answers
  end)

  it("moves a number by hand: the delete rule follows it", function()
    local a, b = add_carrier("A"), add_carrier("B")
    local n = add_number("+14155550100", a.voip_carrier_sid)
    local moved = emu.edit{ number_id = n.id, set = { voip_carrier_sid = b.voip_carrier_sid, label = "Moved" } }
    assert.are.equal("B", moved.number.carrier_name)
    local got = assert(api("GET", "/v1/phone-numbers/" .. n.id)).json
    assert.are.same({ b.voip_carrier_sid, "B", "Moved" }, { got.voip_carrier_sid, got.carrier_name, got.label })
    assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/carriers/" .. a.id)).status)
    problem(assert(api("DELETE", "/v1/phone-numbers/carriers/" .. b.id)), 422)
    emu.edit{ number_id = n.id, set = { label = emu.null } }
    assert.are.equal(cjson.null, assert(api("GET", "/v1/phone-numbers/" .. n.id)).json.label)
  end)

  it("deletes a carrier by hand despite its numbers, which stay orphaned", function()
    local a = add_carrier("A")
    local n = add_number("+14155550100", a.voip_carrier_sid)
    assert.is_true(emu.edit{ carrier_id = a.id, delete = true }.deleted)
    assert.are.same({}, assert(api("GET", "/v1/phone-numbers/carriers")).json.data)
    local got = assert(api("GET", "/v1/phone-numbers/" .. n.id)).json
    assert.are.equal(cjson.null, got.carrier_name)
    assert.are.equal(a.voip_carrier_sid, got.voip_carrier_sid)
    emu.edit{ number_id = n.id, delete = true }
    assert.are.same({}, emu.numbers())
  end)

  it("refuses edits it cannot make", function()
    local a = add_carrier("A")
    local theirs = add_carrier("T", { key = OTHER_KEY })
    local n = add_number("+14155550100", a.voip_carrier_sid)
    assert.has_error(function() emu.edit{ carrier_id = a.id, set = { id = "x" } } end)
    assert.has_error(function() emu.edit{ carrier_id = NO_SUCH_ID, delete = true } end)
    assert.has_error(function() emu.edit{ number_id = n.id, set = { voip_carrier_sid = theirs.voip_carrier_sid } } end)
    assert.has_error(function() emu.edit{ number_id = n.id } end)
    assert.has_error(function() emu.edit{ carrier_id = a.id, number_id = n.id, delete = true } end)
    assert.are.equal(a.voip_carrier_sid, emu.numbers()[1].voip_carrier_sid)
  end)

  it("validates config values; a reset restores the defaults and clears numbers", function()
    assert.are.same({ ok = true, latency = 0, list_shape = "paged", list_max_page_size = 100, carrier_get = false },
                    emu.config{})
    assert.has_error(function() emu.config{ list_shape = "pages" } end)
    assert.has_error(function() emu.config{ list_max_page_size = 0 } end)
    assert.has_error(function() emu.config{ carrier_get = "yes" } end)
    assert.has_error(function() emu.config{ bogus = 1 } end)
    emu.config{ list_shape = "array", list_max_page_size = 5, carrier_get = true }
    add_number("+14155550100", add_carrier("A").voip_carrier_sid)
    emu.reset()
    assert.are.same({ ok = true, latency = 0, list_shape = "paged", list_max_page_size = 100, carrier_get = false },
                    emu.config{})
    assert.are.same({}, emu.numbers())
    assert.are.same({}, emu.carriers())
  end)
end)

---------------------------------------------------------------------------
-- Faults on the new routes
---------------------------------------------------------------------------

describe("emulator faults on GET, DELETE and phone numbers", function()
  it("shapes a GET's answer, then serves the next one for real", function()
    add_carrier("A")
    emu.faults{ { status = 503, retry_after = "2" }, { reset = "before" }, { status = 200 } }
    local res = assert(api("GET", "/v1/phone-numbers/carriers"))
    assert.are.same({}, problem(res, 503))
    assert.are.equal("2", res.headers["retry-after"])
    local none, err = api("GET", "/v1/phone-numbers/carriers")
    assert.is_nil(none)
    assert.are.equal("closed", err)
    res = assert(api("GET", "/v1/phone-numbers/carriers"))   -- {status=200}: the real answer
    assert.are.equal(1, res.json.total)
    assert.are.equal(1, assert(api("GET", "/v1/phone-numbers/carriers")).json.total)
    local log = emu.log()
    assert.are.same({ 503, "reset:before", 200, 200 }, { log[2].status, log[3].status, log[4].status, log[5].status })
    assert.are.equal("GET", log[2].method)
  end)

  it("does not process a faulted DELETE unless after_process", function()
    local c = add_carrier("A")
    local n = add_number("+14155550100", c.voip_carrier_sid)
    emu.faults{ { status = 503 }, { status = 204 }, { status = 503, after_process = true } }
    problem(assert(api("DELETE", "/v1/phone-numbers/" .. n.id)), 503)
    assert.are.equal(204, assert(api("DELETE", "/v1/phone-numbers/" .. n.id)).status)
    assert.are.equal(1, #emu.numbers())
    problem(assert(api("DELETE", "/v1/phone-numbers/" .. n.id)), 503)
    assert.are.same({}, emu.numbers())
  end)

  it("fakes an unstored 201 number, and stores one with after_process", function()
    local c = add_carrier("A")
    emu.faults{ { status = 201 }, { after_process = true, status = 500 } }
    local res = assert(api("POST", "/v1/phone-numbers",
      { body = { number = "+14155550100", voip_carrier_sid = c.voip_carrier_sid } }))
    assert.are.equal(201, res.status)
    assert.are.equal("+14155550100", res.json.number)
    assert.are.equal("phone_number", res.json.object)
    assert.are.same({}, emu.numbers())
    local body = cjson.encode{ number = "+14155550100", voip_carrier_sid = c.voip_carrier_sid }
    local h = { ["idempotency-key"] = "number-key-0002" }
    problem(assert(api("POST", "/v1/phone-numbers", { body = body, headers = h })), 500)
    assert.are.equal(1, #emu.numbers())
    res = assert(api("POST", "/v1/phone-numbers", { body = body, headers = h }))   -- the retry replays
    assert.are.equal("true", res.headers["idempotent-replayed"])
    assert.are.equal(emu.numbers()[1].id, res.json.id)
  end)
end)
