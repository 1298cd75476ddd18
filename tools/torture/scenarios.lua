-- tools/torture/scenarios.lua - what tools/torture/torture runs with the
-- Nth Lua allocation failing. Each scenario is a function run armed; setup,
-- check and after run unarmed around it:
--   setup(name)                 prepare (require the module, make params)
--   <name>()                    the step under torture; returns its results
--   check(name, injected, ...)  judge the results; true for a returned error
--   after(name)                 what the run left behind must be usable or absent
-- SPDX-License-Identifier: MIT

local S = {}
local URL = os.getenv("TOPCALLS_EMULATOR_URL")
local KEY = "tc_test_TortureKey0123456789"
local topcalls, params, bad_params
CLIENT = false   -- the slot exists before arming: setting it allocates nothing

function S.setup(name)
  if name == "load" then return end
  assert(URL, "TOPCALLS_EMULATOR_URL is not set (run under tools/emulator/emulator run)")
  topcalls = require "topcalls"
  params = {
    carrier_name = "Torture Carrier \u{e9}",
    trunk_type = "reg",
    sip_gateway = { ipv4 = "sip.example.com", port = 5062, inbound = false },
    registration = { username = "u1", password = "p", sip_realm = "sip.example.com",
                     from_domain = "10.0.0.1", from_user = "x", public_ip_in_contact = true, use_tls = false },
  }
  bad_params = {
    carrier_name = ("x"):rep(101), trunk_type = "auth", [1] = true,
    sip_gateway = { ipv4 = "01.2.3.4", port = 0.5, prot = 1, inbound = false, outbound = false },
    registration = {}, inbound_auth = { username = "" },
  }
end

function S.load()
  local t = require "topcalls"
  return t.VERSION, type(t.carriers.add)
end

-- a full validate: a valid reg carrier, then one with every kind of error
function S.validate()
  local ok, msg1 = topcalls.carriers.validate(params)
  local v, msg, err = topcalls.carriers.validate(bad_params)
  return ok, msg1, v, msg, err
end

function S.client()
  local c, msg, err = topcalls.new{ api_key = KEY, base_url = URL, timeout = 5, connect_timeout = 2,
                                    user_agent = "torture", max_retries = 0 }
  CLIENT = c or false
  return c, msg, err
end

-- a full add: a client, a POST with its retries, the decoded carrier
function S.add()
  local c, msg, err = topcalls.new{ api_key = KEY, base_url = URL, timeout = 5, connect_timeout = 2 }
  if not c then return nil, msg, err end
  CLIENT = c
  return c.carriers.add(params)
end

local KINDS = { validation = true, config = true, api = true, transport = true, decode = true }

local function returned_error(v, msg, err)
  assert(v == nil, "a failure must return nil first")
  assert(type(msg) == "string" and msg:find("^topcalls: "), "no one-line message: " .. tostring(msg))
  assert(type(err) == "table" and KINDS[err.kind] and err.message == msg, "bad error table")
  assert(not msg:find(KEY, 1, true), "the API key leaked into an error")
  if os.getenv("TORTURE_VERBOSE") then io.stderr:write("torture: returned ", msg, "\n") end
  return true
end

function S.check(name, injected, ...)
  local a, b, c, d, e = ...
  if name == "load" then
    assert(type(a) == "string" and b == "function", "the module is half loaded")
    return false
  elseif name == "validate" then
    -- no returned error may stand in for a memory error here
    assert(a == true and b == nil, "a valid carrier was refused: " .. tostring(b))
    assert(c == nil and type(d) == "string" and type(e) == "table" and e.kind == "validation",
           "an invalid carrier was not refused cleanly")
    assert(#e.errors == 9, "expected 9 violations, got " .. #e.errors .. ": " .. d)
    for _, x in ipairs(e.errors) do
      assert(type(x.path) == "string" and type(x.code) == "string" and type(x.message) == "string")
    end
    return false
  elseif name == "client" then
    if a then assert(tostring(a):find(URL, 1, true), "client without its URL"); return false end
    assert(injected, "topcalls.new failed with no allocation failing: " .. tostring(b))
    return returned_error(a, b, c)
  else
    if a then
      assert(type(a) == "table" and type(a.voip_carrier_sid) == "string", "a success without a carrier")
      return false
    end
    assert(injected, "add failed with no allocation failing: " .. tostring(b))
    -- the emulator answers good JSON: out of memory must never read as bad JSON
    assert(type(c) ~= "table" or c.kind ~= "decode", "out of memory reported as a decode error: " .. tostring(b))
    return returned_error(a, b, c)
  end
end

-- A client that exists after the run is whole: it adds a carrier. One that
-- was half built when the allocation failed must be unreachable (and its
-- __gc, run by the collection before this, freed it).
function S.after(name)
  if CLIENT then
    local got, msg = CLIENT.carriers.add(params)
    assert(got and got.voip_carrier_sid, "the client left by the run is not usable: " .. tostring(msg))
  end
  if name ~= "load" then
    local core = require "topcalls.core"
    local h = core.client_new{ base_url = URL, user_agent = "after", api_key = KEY }
    h:close()
    assert(not pcall(h.perform, h, "DELETE", "/x", nil, nil, 1), "a closed handle still performs")
  end
end

return S
