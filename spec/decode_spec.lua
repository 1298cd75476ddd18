-- One decoder for every answer (src/json.c): the same bytes give the same
-- Lua values, integers included, whichever way they came (add with or
-- without a logger, get, list, add_many, an error body), and an integral
-- float count option goes on the wire as an integer.
local topcalls = require "topcalls"
local json = require "topcalls.json"
local hostile = require "spec.support.hostile"
local fx = require "spec.support.fixtures"

local CARRIERS = "/v1/phone-numbers/carriers"
local ID = "7f1c2d3e-4b5a-4c6d-8e9f-0a1b2c3d4e5f"
local JSON = { { "Content-Type", "application/json" } }
local RECORD = '{"id":"' .. ID .. '","carrier_name":"X","port":5060,"zero":0,"neg":-7,"f":1.5,'
               .. '"e":1e2,"big":1234567890123456789,"nested":{"n":[1,2.0,3]}}'

-- A description of a value with every number's subtype (math.type on
-- 5.3+, where 5060 and 5060.0 differ), keys sorted, metatables skipped.
local function typed(v)
  if type(v) == "number" then return (math.type and math.type(v) or "number") .. ":" .. tostring(v) end
  if type(v) ~= "table" then return type(v) .. ":" .. tostring(v) end
  local keys = {}
  for k in next, v do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = tostring(k) .. "=" .. typed(rawget(v, k)) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local h
setup(function() h = hostile.start() end)
teardown(function() h.stop() end)
before_each(function() h.reset() end)

local function client(opts)
  local o = { api_key = fx.API_KEY, base_url = h.url, timeout = 10, connect_timeout = 5, max_retries = 0 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(topcalls.new(o))
end

describe("every answer decodes through the C decoder", function()
  it("gives identical values (integers on 5.3+) on every path, with or without a logger", function()
    h.script{
      { method = "POST", path = CARRIERS, status = 201, headers = JSON, body = RECORD },
      { method = "GET", path = CARRIERS .. "/", status = 200, headers = JSON, body = RECORD },
      { method = "GET", path = CARRIERS, status = 200, headers = JSON, body = '{"data":[' .. RECORD .. ']}' },
    }
    local want = typed(json.decode(RECORD))
    if math.type then assert.is_truthy(want:find("port=integer:5060", 1, true), want) end
    for _, opts in ipairs({ {}, { logger = function() end } }) do
      local c = client(opts)
      local how = opts.logger and "with a logger" or "without a logger"
      assert.are.equal(want, typed(assert(c.carriers.add(fx.carrier()))), "add " .. how)
      assert.are.equal(want, typed(assert(c.carriers.get(ID))), "get " .. how)
      assert.are.equal(want, typed(assert(c.carriers.list())[1]), "list " .. how)
      local results = c.carriers.add_many({ fx.carrier() })
      assert.are.equal(want, typed(results[1].carrier), "add_many " .. how)
    end
  end)

  it("decodes an error body the same way", function()
    if math.type then
      assert.are.equal("integer", math.type(json.decode('{"status":422}').status))
      assert.are.equal("float", math.type(json.decode('{"status":422.0}').status))
    end
    h.script{ { method = "POST", path = CARRIERS, status = 422, headers = { { "Content-Type", "application/problem+json" } },
                body = '{"title":"Unprocessable","status":422,"errors":[{"path":"x","message":"bad","code":"type"}]}' } }
    local _, _, err = client{ logger = function() end }.carriers.add(fx.carrier())
    assert.are.equal(422, err.status)
    if math.type then assert.are.equal("integer", math.type(err.status)) end
    assert.are.equal("bad", err.errors[1].message)
  end)

  it("has one media-type rule, C's, for every path", function()
    local core = require "topcalls.core"
    for ct, yes in pairs({ ["application/json"] = true, [" APPLICATION/JSON ;x=y"] = true,
                           ["application/problem+json"] = true, ["application/vnd.topcalls+json; charset=utf-8"] = true,
                           ["text/plain"] = false, ["application/a+b+json"] = false, ["application/jsonx"] = false,
                           [""] = false }) do
      assert.are.equal(yes, core.is_json(ct), ct)
    end
  end)
end)

describe("an integral float count option", function()
  it("page_size = 50.0 (from a JSON config) is sent as page_size=50", function()
    h.script{ { method = "GET", path = CARRIERS, status = 200, headers = JSON, body = '{"data":[]}' } }
    assert(client().carriers.list{ page_size = 50.0 })
    assert.are.equal("page_size=50", h.log()[1].query)
  end)
end)
