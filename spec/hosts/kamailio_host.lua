-- topcalls inside real Kamailio (app_lua, KEMI, PUC Lua 5.1), started by
-- tools/check-hosts with examples/kamailio/kamailio.cfg + route.lua: SIP
-- MESSAGEs from tools/hosts/sipsend provision carriers; every failure is a
-- SIP reply and the workers keep answering.
-- SPDX-License-Identifier: MIT

local h = require "spec.hosts.support"
local emu = h.emu

local function trunk(name, extra)
  local p = { carrier_name = name, sip_gateway = { ipv4 = "198.51.100.20", port = 5060 } }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

local stored = h.stored

local function provision(name, headers, extra)
  return h.sip{ body = trunk(name, extra), headers = headers }
end

describe("Kamailio: the example edge route", function()
  it("provisions the carrier and returns its sids in reply headers", function()
    local name = h.unique("kam trunk")
    local trunk_id = "tr" .. os.time() .. "a"
    local r = provision(name, { "X-Trunk-Id: " .. trunk_id })
    assert.are.equal(200, r.status, r.error)
    local c = stored(name)
    assert.are.equal(c.voip_carrier_sid, r.headers["x-topcalls-voip-carrier-sid"])
    assert.are.equal(c.id, r.headers["x-topcalls-carrier-id"])
    assert.are.equal(c.sip_gateway_sid, r.headers["x-topcalls-sip-gateway-sid"])
    local reqs = h.requests_named(name)
    assert.are.equal(1, #reqs)
    assert.are.equal("trunk-" .. trunk_id, reqs[1].idempotency_key)
    assert.is_truthy(reqs[1].headers["user-agent"]:match("%(Lua 5%.1; libcurl/[%d.]+%) kamailio%-edge$"),
                     reqs[1].headers["user-agent"])
  end)

  it("answers a validation error with 400 and its message, sending nothing", function()
    local before = #emu.log()
    local r = h.sip{ body = { carrier_name = "", sip_gateway = { ipv4 = "sip.example.com" } } }
    assert.are.equal(400, r.status, r.error)
    assert.are.equal("Invalid Carrier", r.reason)
    local msg = r.headers["x-topcalls-error"]
    assert.is_truthy(msg:match("^topcalls: validation: 2 problems: carrier_name: "), msg)
    assert.is_truthy(msg:find("sip_gateway.ipv4", 1, true), msg)
    assert.are.equal(before, #emu.log())
  end)

  it("answers a body that is not a JSON object with 400", function()
    local r = h.sip{ body = "[1, 2" }
    assert.are.equal(400, r.status, r.error)
    assert.are.equal("the body must be a JSON object", r.headers["x-topcalls-error"])
  end)

  it("answers an API rejection with 502 and the API's status and request id", function()
    local name = h.unique("kam rejected")
    emu.faults{ { status = 400 } }
    local r = provision(name)
    assert.are.equal(502, r.status, r.error)
    assert.are.equal("400", r.headers["x-topcalls-status"])
    assert.is_truthy(r.headers["x-topcalls-error"]:match("^topcalls: api: 400 "), r.headers["x-topcalls-error"])
    local reqs = h.requests_named(name)
    assert.are.equal(1, #reqs)
    assert.are.equal(reqs[1].request_id, r.headers["x-topcalls-request-id"])
    assert.are.equal(0, #h.carriers_named(name))
  end)

  it("answers a dead API with 503 and keeps the worker alive", function()
    local name = h.unique("kam dead api")
    -- route.lua makes 2 attempts (max_retries = 1), both reset. The
    -- emulator keeps the resets for fresh connections: should the worker's
    -- kept-alive one be used first, it is closed unanswered ("closed:reused",
    -- re-sent by libcurl itself, not an attempt)
    emu.faults{ { reset = "before" }, { reset = "before" } }
    local ok, r = pcall(provision, name)
    local left = emu.faults({})
    h.drain_faults()
    assert(ok, r)
    assert.are.equal(503, r.status, r.error)
    assert.are.equal("TopCalls Unavailable", r.reason)
    assert.is_truthy(r.headers["x-topcalls-error"]:match("^topcalls: transport: "), r.headers["x-topcalls-error"])
    local attempts = {}
    for _, req in ipairs(h.requests_named(name)) do
      if req.status ~= "closed:reused" then attempts[#attempts + 1] = req.status end
    end
    assert.are.same({ "reset:before", "reset:before" }, attempts)
    assert.are.equal(0, left, "every fault reached the client")
    assert.are.equal(0, #h.carriers_named(name))
  end)

  it("keeps answering after failures: every worker still provisions", function()
    for i = 1, 4 do
      local name = h.unique("kam after")
      local r = provision(name)
      assert.are.equal(200, r.status, r.error)
      assert.are.equal(stored(name).voip_carrier_sid, r.headers["x-topcalls-voip-carrier-sid"])
      assert.are.equal(200, h.sip{ method = "OPTIONS" }.status, "OPTIONS " .. i)
    end
  end)

  it("creates one carrier for a request retransmitted while the API is slow", function()
    local name = h.unique("kam retransmit")
    emu.config{ latency = 1 }
    local ok, r = pcall(h.sip, { body = trunk(name), retransmit = 0.25 })
    emu.config{ latency = 0 }
    assert(ok, r)
    assert.are.equal(200, r.status, r.error)
    -- at least one retransmission reached Kamailio while the API was slow
    -- (about 4 at this rate; a loaded machine may wake sipsend late)
    assert.is_true(r.sent >= 2, "sent " .. tostring(r.sent))
    assert.are.equal(stored(name).voip_carrier_sid, r.headers["x-topcalls-voip-carrier-sid"])
    assert.are.equal(1, #h.requests_named(name))
  end)

  it("leaves other request URIs to the rest of the routing (404 here)", function()
    local before = #emu.log()
    local r = h.sip{ method = "MESSAGE", ruri = "sip:someone@" .. h.sip_addr, body = trunk("x") }
    assert.are.equal(404, r.status, r.error)
    assert.are.equal(before, #emu.log())
  end)
end)
