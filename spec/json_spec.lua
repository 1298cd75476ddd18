-- The success path's JSON decoder (src/json.c): it must accept exactly
-- what lua-cjson accepts (decode_invalid_numbers off, as topcalls.json
-- sets it) and build the same values, and a call whose 2xx answer it
-- decodes must end exactly as the Lua way (cjson) ends it.
local core = require "topcalls.core"
local cjson = require "cjson"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"

local ref = cjson.new()
ref.decode_invalid_numbers(false)

-- Equal as cjson's value: numbers by == (an integer equals cjson's
-- integral float), -0 by its sign, tables key by key.
local function same(a, b)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then
    if a ~= a then return b ~= b end
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  if type(a) ~= "table" then return a == b end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

local CASES = {
  -- values
  '{}', '[]', '[[[]]]', '{"":[]}', 'true', 'false', 'null', '[true,false,null]', '"x"', '""',
  '{"a":[1,{"b":null}],"c":"x\\ty"}', '{"a":1,"a":2}', '\t\r\n[ ]\n', ' 5 ',
  '0', '-0', '-0.0', '0.1', '1.0', '2E3', '1E+2', '-1.5e3', '1e-400', '1e400', '-1e400',
  '999999999999999', '-999999999999999', '9999999999999999', '9007199254740993',
  '123456789012345678901234567890', '[1.]', '-.5', '1.e5', '0e5',
  -- strings: escapes, surrogate pairs, raw control bytes and invalid UTF-8 as cjson passes them
  '"\\u00e9"', '"\\uD834\\uDD1E"', '"\\ud83d\\ude00"', '"\\u0000"', '["\\"\\\\\\/\\b\\f\\n\\r\\t"]',
  '"a\nb"', '"\1\31"', '"\255\192"', '"\\u12"', '"\\x"', '"\\ud800"', '"\\udc00"', '"\\ud834x"',
  '"\\ud834\\u0041"', '"\\ud834\\udbff"', '"abc', '"\\', '"\\u',
  -- what cjson refuses
  '', ' ', '[1,]', '{,}', '{"a":1,}', '[1 2]', '{1:2}', '{"a" 1}', '{"a":}', '[', ']', '{', '}',
  '\f1', '0x10', '-0x1', '01', '-01', '+1', '.5', '[.5]', '-', '-.', '-.e1', '1e', '1e+', '1.5e',
  'Infinity', '-Infinity', 'NaN', '-nan', 'inf', 'nul', 'truex', 'tru', 'falsey', 'nulll', '[1]x',
  -- a NUL ends the text for cjson; one in the first two bytes is refused
  '{}\0garbage', '5\0', '55\0', '\0', '\1\0', '[1\0]', '"a\0b"',
}

describe("the C JSON decoder", function()
  it("accepts what cjson accepts and builds the same values", function()
    for _, text in ipairs(CASES) do
      local ok, want = pcall(ref.decode, text)
      local got_ok, got = core.json_decode(text)
      assert.are.equal(ok, got_ok, ("%q"):format(text))
      if ok then assert.is_true(same(want, got), ("%q"):format(text)) end
    end
  end)

  it("nests to cjson's depth of 1000 and no further", function()
    for _, open in ipairs({ { "[", "]", "" }, { '{"a":', "}", "1" } }) do
      for depth, accepted in pairs({ [1000] = true, [1001] = false }) do
        local text = open[1]:rep(depth) .. open[3] .. open[2]:rep(depth)
        assert.are.equal(accepted, pcall(ref.decode, text))
        assert.are.equal(accepted, (core.json_decode(text)))
      end
    end
  end)

  it("decodes null to cjson.null, the light userdata of every cjson instance", function()
    local _, v = core.json_decode('{"a":null,"b":[null]}')
    assert.are.equal(cjson.null, v.a)
    assert.are.equal(cjson.null, v.b[1])
    assert.are.equal(require("topcalls.json").null, v.a)
  end)

  it("gives integers for integral literals on Lua 5.3+, floats otherwise as cjson does", function()
    if not math.type then return end
    local _, v = core.json_decode('[5060,-12,5060.0,1e3,-0,9999999999999999]')
    assert.are.same({ "integer", "integer", "float", "float", "float", "float" },
                    { math.type(v[1]), math.type(v[2]), math.type(v[3]), math.type(v[4]),
                      math.type(v[5]), math.type(v[6]) })
    assert.are.equal(-math.huge, 1 / v[5])
    assert.are.equal("5060", string.format("%.14g", v[1]))
  end)
end)

describe("a 2xx answer decoded in C", function()
  before_each(function() emu.reset() end)

  -- The same fault answered to a client without a logger (decoded in C)
  -- and to one with a logger (the Lua way, cjson): the same result.
  local function both(fault, call)
    local out = {}
    for i, opts in ipairs({ {}, { logger = function() end } }) do
      emu.faults({ fault })
      out[i] = { call(fx.client(opts)) }
      -- the emulator makes up a request id per answer unless the fault sets one
      if out[i][3] and not fault.headers then out[i][3].request_id = nil end
    end
    assert.is_true(same(out[2], out[1]), require("cjson").encode(fault))
    return out[1]
  end

  local RECORD = '{"id":"7f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f","carrier_name":"X","n":5060,'
                 .. '"f":1.5,"t":true,"z":null,"s":"a\\u00e9\\n","l":[1,[2]]}'

  it("ends like the Lua way for every body and content type", function()
    local add = function(c) return c.carriers.add(fx.carrier()) end
    local cases = {
      { status = 201, body = RECORD, decoded = true },
      { status = 200, body = RECORD, content_type = "application/vnd.topcalls+json; charset=utf-8", decoded = true },
      { status = 201, body = RECORD, content_type = " APPLICATION/JSON ;x=y", decoded = true },
      { status = 201, body = RECORD, content_type = "application/problem+json", decoded = true },
      { status = 201, body = RECORD, content_type = "text/plain" },
      { status = 201, body = RECORD, content_type = "application/a+b+json" },
      { status = 201, body = "[1, 2]" },
      { status = 201, body = "5" },
      { status = 201, body = '"x"' },
      { status = 201, body = "{not json" },
      { status = 201, body = "" },
      { status = 201, body = '{"a":1} x' },
      { status = 201, body = '{"a":"raw\ncontrol"}' },
      { status = 201, body = '{"a":1e400}' },
      { status = 201, body = RECORD, headers = { ["X-Request-Id"] = "req-123" }, decoded = true },
      { status = 201, body = "[]", headers = { ["X-Request-Id"] = "req-124" } },
      { status = 422, body = '{"title":"Unprocessable","errors":[{"path":"x","message":"bad"}]}',
        content_type = "application/problem+json", headers = { ["X-Request-Id"] = "req-125" } },
    }
    for _, fault in ipairs(cases) do
      local decoded = fault.decoded
      fault.decoded = nil
      local r = both(fault, add)
      if decoded then assert.are.equal("X", r[1].carrier_name, fault.content_type) end
    end
    local r = both({ status = 201, body = "[1, 2]" }, add)
    assert.are.equal("topcalls: decode: response body is not a JSON object: got a JSON array", r[2])
    r = both({ status = 201, body = "", headers = { ["X-Request-Id"] = "req-9" } }, add)
    assert.are.equal("req-9", r[3].request_id)
    assert.are.equal("topcalls: decode: response body is not a JSON object: empty body", r[2])
  end)

  it("decodes list pages and record answers alike", function()
    local list = function(c) return c.carriers.list() end
    for _, body in ipairs({ "[]", '[{"id":"a"},{"id":"b","n":1}]', '{"data":[{"id":"a"}],"total":1,"page":1,"page_size":100}',
                            '{"items":[]}', '{"data":"none"}', "not json", "5", '{"data":[1]}' }) do
      both({ status = 200, body = body }, list)
    end
  end)

  it("returns the value and its shape from client:perform with a decode mode", function()
    emu.config{ carrier_get = true }
    local c = assert(core.client_new{ base_url = emu.url, api_key = fx.API_KEY, user_agent = "json-spec" })
    local body = '{"carrier_name":"Json spec","sip_gateway":{"ipv4":"203.0.113.10"}}'
    local v, shape = c:perform("POST", "/v1/phone-numbers/carriers", body, "json-spec-key-1", 5, "object")
    assert.are.equal("object", shape)
    assert.are.equal("Json spec", v.carrier_name)
    v, shape = c:perform("GET", "/v1/phone-numbers/carriers/" .. v.id, nil, nil, 5, "object")
    assert.are.equal("object", shape)
    assert.are.equal("Json spec", v.carrier_name)
    emu.faults({ { status = 200, body = "[1]" } })
    v, shape = c:perform("GET", "/v1/phone-numbers/carriers", nil, nil, 5, "page")
    assert.are.same({ 1 }, v)
    assert.are.equal("array", shape)
    emu.faults({ { status = 200, body = "[1]" } })
    local res
    res, shape = c:perform("GET", "/v1/phone-numbers/carriers", nil, nil, 5, "object")
    assert.is_nil(shape)
    assert.are.equal("ok", res.kind)
    assert.are.equal("[1]", res.body)
    res, shape = c:perform("GET", "/v1/phone-numbers/carriers/7f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f", nil, nil, 5, "object")
    assert.is_nil(shape)
    assert.are.equal("api", res.kind)
    assert.are.equal(404, res.status)
    assert.has_error(function() c:perform("GET", "/x", nil, nil, 5, "xml") end)
    c:close()
  end)
end)
