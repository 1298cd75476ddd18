-- client:perform on one kept-alive handle whose options persist between
-- calls: switching method, body, key and path must leave nothing behind.
local core = require "topcalls.core"
local emu = require "spec.support.emulator"

local BODY = '{"carrier_name":"Perform spec","sip_gateway":{"ipv4":"203.0.113.10"}}'

describe("client:perform", function()
  before_each(function() emu.reset() end)

  it("switches POST, GET, DELETE and back on one connection without carrying a body or key over", function()
    local c = assert(core.client_new{ base_url = emu.url, api_key = "tc_test_perform0123",
                                      user_agent = "perform-spec" })
    local path = "/v1/phone-numbers/carriers"
    local made = c:perform("POST", path, BODY, "perform-key-0001", 10)
    assert.are.equal(201, made.status)
    local id = require("cjson").decode(made.body).id
    c:perform("GET", path .. "/" .. id, nil, "perform-key-ignored", 10)
    assert.are.equal(204, c:perform("DELETE", path .. "/" .. id, nil, nil, 10).status)
    assert.are.equal(201, c:perform("POST", path, BODY, "perform-key-0002", 10).status)
    c:close()

    local log = emu.log()
    assert.are.same({ "POST", "GET", "DELETE", "POST" },
                    { log[1].method, log[2].method, log[3].method, log[4].method })
    assert.are.equal("perform-key-0001", log[1].idempotency_key)
    assert.is_nil(log[2].idempotency_key)     -- GET never carries one
    assert.is_nil(log[3].idempotency_key)
    assert.are.equal("perform-key-0002", log[4].idempotency_key)
    for i = 2, 3 do
      assert.is_true(log[i].body == nil or log[i].body == "", "request " .. i .. " has a body")
      assert.is_nil(log[i].headers["content-type"])
    end
    assert.are.equal("application/json", log[4].headers["content-type"])
    for i = 2, 4 do assert.are.equal(log[1].connection, log[i].connection) end
  end)

  it("refuses a method it does not send", function()
    local c = assert(core.client_new{ base_url = emu.url, user_agent = "perform-spec" })
    assert.has_error(function() c:perform("PUT", "/x", nil, nil, 1) end)
    c:close()
  end)
end)
