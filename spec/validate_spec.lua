-- spec/validate_spec.lua: client-side validation of carrier params
-- (carriers.validate, core.validate, core.check), table-driven in the
-- style of lua-cjson's tests/test.lua. Offline: nothing here touches the
-- network. Runs unchanged on Lua 5.1, 5.3, 5.4 and LuaJIT.
-- SPDX-License-Identifier: MIT

local topcalls = require "topcalls"
local core     = require "topcalls.core"

local validate = topcalls.carriers.validate

local pairs, ipairs, type, tostring, setmetatable, select =
      pairs, ipairs, type, tostring, setmetatable, select
local concat, sort, rep = table.concat, table.sort, string.rep

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

-- A fresh copy of a plain table (no metatables, no cycles in our data).
local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

-- The base carrier: valid as it stands; every case starts from a copy.
local BASE = {
  carrier_name = "My VoIP Provider",
  sip_gateway  = { ipv4 = "203.0.113.10", port = 5060, inbound = true, outbound = true },
}

local REGISTRATION = { username = "alice", password = "s3cret pass" }
local INBOUND_AUTH = { username = "bob", password = "hunter2" }

local function E(path, code) return { path = path, code = code } end

-- Printable form of a string that may hold control bytes or NULs.
local function show(s)
  s = tostring(s)
  return (s:gsub("[%z\1-\31\127-\255]", function(c) return ("\\%d"):format(c:byte()) end))
end

local function pair_key(e) return show(e.path) .. "  " .. show(e.code) end

-- Sorted "path  code" lines of an error list (messages too, for actual ones).
local function listing(errs, with_message)
  local lines = {}
  for i, e in ipairs(errs or {}) do
    lines[i] = "    " .. pair_key(e) .. (with_message and ("  (" .. show(e.message) .. ")") or "")
  end
  sort(lines)
  return #lines > 0 and concat(lines, "\n") or "    (none)"
end

-- Compare two lists of { path, code } as multisets: nil when equal, else
-- a readable diff.
local function diff_errors(expected, actual)
  local want, missing, unexpected = {}, {}, {}
  for _, e in ipairs(expected) do
    local k = pair_key(e)
    want[k] = (want[k] or 0) + 1
  end
  for _, e in ipairs(actual) do
    local k = pair_key(e)
    if (want[k] or 0) > 0 then
      want[k] = want[k] - 1
    else
      unexpected[#unexpected + 1] = "    " .. k .. "  (" .. show(e.message) .. ")"
    end
  end
  for k, n in pairs(want) do
    for _ = 1, n do missing[#missing + 1] = "    " .. k end
  end
  if #missing == 0 and #unexpected == 0 and #expected == #actual then return nil end
  sort(missing)
  sort(unexpected)
  return "expected " .. #expected .. " error(s):\n" .. listing(expected)
      .. "\ngot " .. #actual .. ":\n" .. listing(actual, true)
      .. (#missing > 0 and ("\nmissing:\n" .. concat(missing, "\n")) or "")
      .. (#unexpected > 0 and ("\nunexpected:\n" .. concat(unexpected, "\n")) or "")
end

-- The shape every validation failure has, whatever the violations.
local function check_envelope(msg, err)
  assert.is_string(msg)
  assert.equals("topcalls: validation: ", msg:sub(1, 22))
  assert.is_nil(msg:find("[\r\n]"), "message must be one line: " .. show(msg))
  assert.is_table(err)
  assert.equals("validation", err.kind)
  assert.equals(msg, err.message)
  assert.equals(msg, tostring(err))
  assert.is_table(err.errors)
  for i, e in ipairs(err.errors) do
    assert.is_string(e.path, "errors[" .. i .. "].path")
    assert.is_string(e.code, "errors[" .. i .. "].code")
    assert.is_string(e.message, "errors[" .. i .. "].message")
    assert.is_true(#e.message > 0, "errors[" .. i .. "].message is empty")
  end
  if #err.errors > 1 then
    assert.equals("topcalls: validation: " .. #err.errors .. " problems: ",
                  msg:sub(1, #("topcalls: validation: " .. #err.errors .. " problems: ")))
  end
end

-- The params of a case: its own table, or a copy of BASE passed to mutate.
local function case_params(case)
  if case.params then return copy(case.params) end
  local p = copy(BASE)
  if case.mutate then case.mutate(p) end
  return p
end

-- Run one case through carriers.validate and compare with what it expects.
local function run_case(case)
  local params = case_params(case)
  local n = select("#", validate(params))
  local ok, msg, err = validate(params)
  local problem
  if case.ok then
    if ok ~= true then
      problem = "expected success, got " .. tostring(ok) .. "\n" .. show(msg) .. "\n"
             .. listing(err and err.errors, true)
    elseif n ~= 1 then
      problem = "success must return exactly one value (true), got " .. n
    end
  else
    if ok ~= nil then
      problem = "expected failure with:\n" .. listing(case.errors) .. "\ngot " .. tostring(ok)
    else
      check_envelope(msg, err)
      problem = diff_errors(case.errors, err.errors)
    end
  end
  assert(problem == nil, "case '" .. case.name .. "'\n" .. tostring(problem))
end

-- Mutators shared by many cases.
local function set_gw(fields)
  return function(p) for k, v in pairs(fields) do p.sip_gateway[k] = v end end
end
local function drop_gw(name) return function(p) p.sip_gateway[name] = nil end end
local function set_top(name, value) return function(p) p[name] = value end end

-- trunk_type "reg" with a valid registration, then field = value (value
-- may be nil to remove the field; extra fields via a table).
local function reg_with(field, value, more)
  return function(p)
    p.trunk_type = "reg"
    p.registration = copy(REGISTRATION)
    if field then p.registration[field] = value end
    for k, v in pairs(more or {}) do p.registration[k] = v end
  end
end

local function auth_with(field, value)
  return function(p)
    p.trunk_type = "auth"
    p.inbound_auth = copy(INBOUND_AUTH)
    if field then p.inbound_auth[field] = value end
  end
end

-- An outbound-only gateway at a host name (hostnames are allowed there).
local function outbound_host(host)
  return set_gw{ ipv4 = host, inbound = false, outbound = true }
end

local L63 = rep("a", 63)
local HOST_253 = L63 .. "." .. L63 .. "." .. L63 .. "." .. rep("b", 61)   -- 253 bytes
local HOST_254 = L63 .. "." .. L63 .. "." .. L63 .. "." .. rep("b", 62)   -- 254 bytes
assert(#HOST_253 == 253 and #HOST_254 == 254)

---------------------------------------------------------------------------
-- The cases
---------------------------------------------------------------------------

local cases = {
  -- the base and its variants
  { name = "base carrier", ok = true },
  { name = "contract example verbatim", ok = true, params = {
      carrier_name = "My VoIP Provider", trunk_type = "static_ip",
      sip_gateway = { ipv4 = "203.0.113.10", port = 5060, inbound = true, outbound = true } } },
  { name = "minimal: defaults fill the rest", ok = true, params = {
      carrier_name = "x", sip_gateway = { ipv4 = "203.0.113.10" } } },
  { name = "empty params", params = {},
    errors = { E("carrier_name", "required"), E("sip_gateway", "required") } },

  -- carrier_name
  { name = "carrier_name missing", mutate = set_top("carrier_name", nil),
    errors = { E("carrier_name", "required") } },
  { name = "carrier_name a number", mutate = set_top("carrier_name", 42),
    errors = { E("carrier_name", "type") } },
  { name = "carrier_name a table", mutate = set_top("carrier_name", { "x" }),
    errors = { E("carrier_name", "type") } },
  { name = "carrier_name a boolean", mutate = set_top("carrier_name", true),
    errors = { E("carrier_name", "type") } },
  { name = "carrier_name empty", mutate = set_top("carrier_name", ""),
    errors = { E("carrier_name", "length") } },
  { name = "carrier_name 1 character", ok = true, mutate = set_top("carrier_name", "A") },
  { name = "carrier_name 1 multi-byte code point", ok = true, mutate = set_top("carrier_name", "€") },
  { name = "carrier_name 100 ASCII characters", ok = true, mutate = set_top("carrier_name", rep("n", 100)) },
  { name = "carrier_name 100 two-byte code points (200 bytes)", ok = true,
    mutate = set_top("carrier_name", rep("é", 100)) },
  { name = "carrier_name 100 four-byte code points (400 bytes)", ok = true,
    mutate = set_top("carrier_name", rep("😀", 100)) },
  { name = "carrier_name 100 mixed code points", ok = true,
    mutate = set_top("carrier_name", rep("aé€😀", 25)) },
  { name = "carrier_name 101 ASCII characters", mutate = set_top("carrier_name", rep("n", 101)),
    errors = { E("carrier_name", "length") } },
  { name = "carrier_name 101 two-byte code points", mutate = set_top("carrier_name", rep("é", 101)),
    errors = { E("carrier_name", "length") } },
  { name = "carrier_name 101 four-byte code points", mutate = set_top("carrier_name", rep("😀", 101)),
    errors = { E("carrier_name", "length") } },
  { name = "carrier_name with spaces is fine", ok = true,
    mutate = set_top("carrier_name", "Acme Telecom  (EU)") },
  { name = "carrier_name invalid byte 0xFF", mutate = set_top("carrier_name", "Acme\255"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name lone continuation byte", mutate = set_top("carrier_name", "abc\128"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name truncated 3-byte sequence", mutate = set_top("carrier_name", "x\226\130"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name overlong 2-byte '/' (C0 AF)", mutate = set_top("carrier_name", "\192\175"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name overlong 3-byte '/' (E0 80 AF)", mutate = set_top("carrier_name", "\224\128\175"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name overlong 4-byte (F0 80 80 AF)", mutate = set_top("carrier_name", "\240\128\128\175"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name UTF-16 surrogate U+D800 (ED A0 80)", mutate = set_top("carrier_name", "a\237\160\128"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name surrogate U+DFFF (ED BF BF)", mutate = set_top("carrier_name", "\237\191\191"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name above U+10FFFF (F4 90 80 80)", mutate = set_top("carrier_name", "\244\144\128\128"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name 5-byte lead (F8)", mutate = set_top("carrier_name", "\248\136\128\128\128"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name too long and invalid UTF-8: one format error",
    mutate = set_top("carrier_name", rep("n", 150) .. "\255"),
    errors = { E("carrier_name", "format") } },

  -- trunk_type
  { name = "trunk_type static_ip", ok = true, mutate = set_top("trunk_type", "static_ip") },
  { name = "trunk_type auth with inbound_auth", ok = true, mutate = auth_with() },
  { name = "trunk_type reg with minimal registration", ok = true, mutate = reg_with() },
  { name = "trunk_type reg with every registration field", ok = true,
    mutate = reg_with(nil, nil, { sip_realm = "sip.example.com", from_domain = "203.0.113.7",
                                  from_user = "+15551234567", public_ip_in_contact = true, use_tls = false }) },
  { name = "trunk_type upper case", mutate = set_top("trunk_type", "REG"),
    errors = { E("trunk_type", "enum") } },
  { name = "trunk_type unknown value", mutate = set_top("trunk_type", "sip"),
    errors = { E("trunk_type", "enum") } },
  { name = "trunk_type empty", mutate = set_top("trunk_type", ""),
    errors = { E("trunk_type", "length") } },
  { name = "trunk_type a number", mutate = set_top("trunk_type", 1),
    errors = { E("trunk_type", "type") } },
  { name = "trunk_type a boolean", mutate = set_top("trunk_type", true),
    errors = { E("trunk_type", "type") } },
  { name = "trunk_type reg without registration", mutate = set_top("trunk_type", "reg"),
    errors = { E("registration", "required") } },
  { name = "trunk_type auth without inbound_auth", mutate = set_top("trunk_type", "auth"),
    errors = { E("inbound_auth", "required") } },
  { name = "invalid trunk_type with a valid registration: only the enum error",
    mutate = function(p) reg_with()(p); p.trunk_type = "regg" end,
    errors = { E("trunk_type", "enum") } },
  { name = "invalid trunk_type with a bad registration: enum plus inner errors",
    mutate = function(p) p.trunk_type = "regg"; p.registration = { username = "" } end,
    errors = { E("trunk_type", "enum"), E("registration.username", "length"),
               E("registration.password", "required") } },
  { name = "trunk_type of the wrong type with inbound_auth: only the type error",
    mutate = function(p) auth_with()(p); p.trunk_type = 7 end,
    errors = { E("trunk_type", "type") } },
  { name = "invalid trunk_type with both objects: only the enum error",
    mutate = function(p) reg_with()(p); p.inbound_auth = copy(INBOUND_AUTH); p.trunk_type = "both" end,
    errors = { E("trunk_type", "enum") } },

  -- sip_gateway
  { name = "sip_gateway missing", mutate = set_top("sip_gateway", nil),
    errors = { E("sip_gateway", "required") } },
  { name = "sip_gateway a string", mutate = set_top("sip_gateway", "203.0.113.10"),
    errors = { E("sip_gateway", "type") } },
  { name = "sip_gateway a boolean", mutate = set_top("sip_gateway", true),
    errors = { E("sip_gateway", "type") } },
  { name = "sip_gateway empty table", mutate = set_top("sip_gateway", {}),
    errors = { E("sip_gateway.ipv4", "required") } },

  -- sip_gateway.ipv4
  { name = "ipv4 missing", mutate = drop_gw("ipv4"), errors = { E("sip_gateway.ipv4", "required") } },
  { name = "ipv4 0.0.0.0", ok = true, mutate = set_gw{ ipv4 = "0.0.0.0" } },
  { name = "ipv4 255.255.255.255", ok = true, mutate = set_gw{ ipv4 = "255.255.255.255" } },
  { name = "ipv4 10.0.0.1", ok = true, mutate = set_gw{ ipv4 = "10.0.0.1" } },
  { name = "ipv4 1.22.200.0", ok = true, mutate = set_gw{ ipv4 = "1.22.200.0" } },
  { name = "ipv4 first octet 256", mutate = set_gw{ ipv4 = "256.1.1.1" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 last octet 256", mutate = set_gw{ ipv4 = "1.2.3.256" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 leading zero 01.2.3.4", mutate = set_gw{ ipv4 = "01.2.3.4" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 leading zero 1.2.3.00", mutate = set_gw{ ipv4 = "1.2.3.00" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 three octets", mutate = set_gw{ ipv4 = "1.2.3" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 five octets", mutate = set_gw{ ipv4 = "1.2.3.4.5" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 trailing dot", mutate = set_gw{ ipv4 = "1.2.3.4." },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 with a port", mutate = set_gw{ ipv4 = "1.2.3.4:5060" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 leading space", mutate = set_gw{ ipv4 = " 1.2.3.4" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 trailing space", mutate = set_gw{ ipv4 = "1.2.3.4 " },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 trailing tab", mutate = set_gw{ ipv4 = "1.2.3.4\t" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 trailing newline", mutate = set_gw{ ipv4 = "1.2.3.4\n" },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "ipv4 empty", mutate = set_gw{ ipv4 = "" }, errors = { E("sip_gateway.ipv4", "length") } },
  { name = "ipv4 a number", mutate = set_gw{ ipv4 = 16909060 }, errors = { E("sip_gateway.ipv4", "type") } },
  { name = "contract example: hostname with inbound = true",
    mutate = set_gw{ ipv4 = "sip.myprovider.com", inbound = true },
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "hostname with inbound absent (defaults to true)",
    mutate = function(p) p.sip_gateway.ipv4 = "sip.myprovider.com"; p.sip_gateway.inbound = nil end,
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "hostname with inbound = false", ok = true, mutate = outbound_host("sip.myprovider.com") },
  { name = "dotted quad with inbound = false", ok = true, mutate = outbound_host("203.0.113.10") },
  { name = "outbound-only hostname with a trailing dot", ok = true, mutate = outbound_host("sip.example.com.") },
  { name = "outbound-only single-label hostname", ok = true, mutate = outbound_host("sbc1") },
  { name = "outbound-only hostname with a 63-character label", ok = true,
    mutate = outbound_host(L63 .. ".example.com") },
  { name = "outbound-only hostname of 253 characters", ok = true, mutate = outbound_host(HOST_253) },
  { name = "outbound-only hostname with a 64-character label", mutate = outbound_host(rep("a", 64) .. ".example.com"),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only hostname of 254 characters", mutate = outbound_host(HOST_254),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only hostname with a leading '-'", mutate = outbound_host("-sip.example.com"),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only hostname with a label ending in '-'", mutate = outbound_host("sip-.example.com"),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only hostname a..b", mutate = outbound_host("a..b"),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only all-numeric last label 1.2.3.999", mutate = outbound_host("1.2.3.999"),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only 256.1.1.1 is neither quad nor name", mutate = outbound_host("256.1.1.1"),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only hostname with an underscore", mutate = outbound_host("sip_proxy.example.com"),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only hostname with a space", mutate = outbound_host("sip.example.com "),
    errors = { E("sip_gateway.ipv4", "format") } },
  { name = "outbound-only hostname with a sip: prefix", mutate = outbound_host("sip:sip.example.com"),
    errors = { E("sip_gateway.ipv4", "format") } },

  -- sip_gateway.port
  { name = "port absent (default 5060)", ok = true, mutate = drop_gw("port") },
  { name = "port 1", ok = true, mutate = set_gw{ port = 1 } },
  { name = "port 65535", ok = true, mutate = set_gw{ port = 65535 } },
  { name = "port 5060.0 is an integer", ok = true, mutate = set_gw{ port = 5060.0 } },
  { name = "port 0", mutate = set_gw{ port = 0 }, errors = { E("sip_gateway.port", "range") } },
  { name = "port 65536", mutate = set_gw{ port = 65536 }, errors = { E("sip_gateway.port", "range") } },
  { name = "port -1", mutate = set_gw{ port = -1 }, errors = { E("sip_gateway.port", "range") } },
  { name = "port 2^53", mutate = set_gw{ port = 2 ^ 53 }, errors = { E("sip_gateway.port", "range") } },
  { name = "port 5060.5", mutate = set_gw{ port = 5060.5 }, errors = { E("sip_gateway.port", "type") } },
  { name = "port 0.5", mutate = set_gw{ port = 0.5 }, errors = { E("sip_gateway.port", "type") } },
  { name = "port a string", mutate = set_gw{ port = "5060" }, errors = { E("sip_gateway.port", "type") } },
  { name = "port NaN", mutate = set_gw{ port = 0 / 0 }, errors = { E("sip_gateway.port", "type") } },
  { name = "port math.huge", mutate = set_gw{ port = math.huge }, errors = { E("sip_gateway.port", "type") } },
  { name = "port -math.huge", mutate = set_gw{ port = -math.huge }, errors = { E("sip_gateway.port", "type") } },
  { name = "port a boolean", mutate = set_gw{ port = true }, errors = { E("sip_gateway.port", "type") } },

  -- sip_gateway.inbound / .outbound
  { name = "inbound absent, outbound absent", ok = true,
    mutate = function(p) p.sip_gateway.inbound = nil; p.sip_gateway.outbound = nil end },
  { name = "inbound a string", mutate = set_gw{ inbound = "true" }, errors = { E("sip_gateway.inbound", "type") } },
  { name = "inbound a number", mutate = set_gw{ inbound = 1 }, errors = { E("sip_gateway.inbound", "type") } },
  { name = "outbound a number", mutate = set_gw{ outbound = 0 }, errors = { E("sip_gateway.outbound", "type") } },
  { name = "outbound a string", mutate = set_gw{ outbound = "false" }, errors = { E("sip_gateway.outbound", "type") } },
  { name = "inbound only", ok = true, mutate = set_gw{ inbound = true, outbound = false } },
  { name = "outbound only", ok = true, mutate = set_gw{ inbound = false, outbound = true } },
  { name = "outbound only, outbound absent (default true)", ok = true,
    mutate = function(p) p.sip_gateway.inbound = false; p.sip_gateway.outbound = nil end },
  { name = "inbound and outbound both false", mutate = set_gw{ inbound = false, outbound = false },
    errors = { E("sip_gateway", "conflict") } },
  { name = "both false with a hostname: conflict only", mutate = set_gw{ ipv4 = "sip.example.com", inbound = false, outbound = false },
    errors = { E("sip_gateway", "conflict") } },
  { name = "inbound of the wrong type, outbound false: no claim that both are false",
    mutate = set_gw{ inbound = "yes", outbound = false },
    errors = { E("sip_gateway.inbound", "type") } },
  { name = "inbound and outbound of the wrong type: two type errors",
    mutate = set_gw{ inbound = "yes", outbound = "no" },
    errors = { E("sip_gateway.inbound", "type"), E("sip_gateway.outbound", "type") } },

  -- registration
  { name = "registration with the default trunk_type", mutate = set_top("registration", copy(REGISTRATION)),
    errors = { E("registration", "not_allowed") } },
  { name = "registration with static_ip", mutate = function(p) p.trunk_type = "static_ip"; p.registration = copy(REGISTRATION) end,
    errors = { E("registration", "not_allowed") } },
  { name = "registration with auth", mutate = function(p) auth_with()(p); p.registration = copy(REGISTRATION) end,
    errors = { E("registration", "not_allowed") } },
  { name = "registration not a table, with static_ip: not_allowed only", mutate = set_top("registration", "alice"),
    errors = { E("registration", "not_allowed") } },
  { name = "registration not a table, with reg", mutate = function(p) p.trunk_type = "reg"; p.registration = "alice" end,
    errors = { E("registration", "type") } },
  { name = "registration empty table", mutate = function(p) p.trunk_type = "reg"; p.registration = {} end,
    errors = { E("registration.username", "required"), E("registration.password", "required") } },
  { name = "registration.username missing", mutate = reg_with("username", nil),
    errors = { E("registration.username", "required") } },
  { name = "registration.username empty", mutate = reg_with("username", ""),
    errors = { E("registration.username", "length") } },
  { name = "registration.username with a space", mutate = reg_with("username", "alice smith"),
    errors = { E("registration.username", "format") } },
  { name = "registration.username with a leading tab", mutate = reg_with("username", "\talice"),
    errors = { E("registration.username", "format") } },
  { name = "registration.username only whitespace", mutate = reg_with("username", " "),
    errors = { E("registration.username", "format") } },
  { name = "registration.username a number", mutate = reg_with("username", 1001),
    errors = { E("registration.username", "type") } },
  { name = "registration.password missing", mutate = reg_with("password", nil),
    errors = { E("registration.password", "required") } },
  { name = "registration.password empty", mutate = reg_with("password", ""),
    errors = { E("registration.password", "length") } },
  { name = "registration.password a number", mutate = reg_with("password", 1234),
    errors = { E("registration.password", "type") } },
  { name = "registration.password any printable characters", ok = true, mutate = reg_with("password", " p@ss word!~") },
  { name = "registration.password with a tab (a control character)", mutate = reg_with("password", "p@ss\tword"),
    errors = { E("registration.password", "format") } },
  { name = "sip_realm domain", ok = true, mutate = reg_with("sip_realm", "sip.example.com") },
  { name = "sip_realm IPv4", ok = true, mutate = reg_with("sip_realm", "203.0.113.5") },
  { name = "from_domain domain", ok = true, mutate = reg_with("from_domain", "example.com") },
  { name = "from_domain IPv4", ok = true, mutate = reg_with("from_domain", "10.0.0.1") },
  { name = "sip_realm with sip: prefix", mutate = reg_with("sip_realm", "sip:example.com"),
    errors = { E("registration.sip_realm", "format") } },
  { name = "sip_realm with SIPS: prefix", mutate = reg_with("sip_realm", "SIPS:x"),
    errors = { E("registration.sip_realm", "format") } },
  { name = "from_domain with sip: prefix", mutate = reg_with("from_domain", "sip:example.com"),
    errors = { E("registration.from_domain", "format") } },
  { name = "from_domain with Sips: prefix", mutate = reg_with("from_domain", "Sips:example.com"),
    errors = { E("registration.from_domain", "format") } },
  { name = "sip_realm with a space", mutate = reg_with("sip_realm", "example .com"),
    errors = { E("registration.sip_realm", "format") } },
  { name = "from_domain with a trailing newline", mutate = reg_with("from_domain", "example.com\n"),
    errors = { E("registration.from_domain", "format") } },
  { name = "sip_realm bad host", mutate = reg_with("sip_realm", "bad_host!"),
    errors = { E("registration.sip_realm", "format") } },
  { name = "from_domain all-numeric last label", mutate = reg_with("from_domain", "1.2.3.999"),
    errors = { E("registration.from_domain", "format") } },
  { name = "from_domain malformed quad", mutate = reg_with("from_domain", "256.1.1.1"),
    errors = { E("registration.from_domain", "format") } },
  { name = "sip_realm empty", mutate = reg_with("sip_realm", ""),
    errors = { E("registration.sip_realm", "length") } },
  { name = "sip_realm a number", mutate = reg_with("sip_realm", 5),
    errors = { E("registration.sip_realm", "type") } },
  { name = "from_user a string", ok = true, mutate = reg_with("from_user", "alice") },
  { name = "from_user empty", mutate = reg_with("from_user", ""),
    errors = { E("registration.from_user", "length") } },
  { name = "from_user a number", mutate = reg_with("from_user", 1001),
    errors = { E("registration.from_user", "type") } },
  { name = "public_ip_in_contact and use_tls booleans", ok = true,
    mutate = reg_with("public_ip_in_contact", false, { use_tls = true }) },
  { name = "public_ip_in_contact a string", mutate = reg_with("public_ip_in_contact", "yes"),
    errors = { E("registration.public_ip_in_contact", "type") } },
  { name = "use_tls a number", mutate = reg_with("use_tls", 1),
    errors = { E("registration.use_tls", "type") } },
  { name = "unknown field inside registration", mutate = reg_with("xxx", 1),
    errors = { E("registration.xxx", "unknown_field") } },
  { name = "near-miss field inside registration", mutate = reg_with("usernme", "alice"),
    errors = { E("registration.usernme", "unknown_field") } },

  -- inbound_auth
  { name = "inbound_auth with the default trunk_type", mutate = set_top("inbound_auth", copy(INBOUND_AUTH)),
    errors = { E("inbound_auth", "not_allowed") } },
  { name = "inbound_auth with reg", mutate = function(p) reg_with()(p); p.inbound_auth = copy(INBOUND_AUTH) end,
    errors = { E("inbound_auth", "not_allowed") } },
  { name = "inbound_auth not a table, with auth", mutate = function(p) p.trunk_type = "auth"; p.inbound_auth = "bob" end,
    errors = { E("inbound_auth", "type") } },
  { name = "inbound_auth empty table", mutate = function(p) p.trunk_type = "auth"; p.inbound_auth = {} end,
    errors = { E("inbound_auth.username", "required"), E("inbound_auth.password", "required") } },
  { name = "inbound_auth.username missing", mutate = auth_with("username", nil),
    errors = { E("inbound_auth.username", "required") } },
  { name = "inbound_auth.username empty", mutate = auth_with("username", ""),
    errors = { E("inbound_auth.username", "length") } },
  { name = "inbound_auth.password missing", mutate = auth_with("password", nil),
    errors = { E("inbound_auth.password", "required") } },
  { name = "inbound_auth.password empty", mutate = auth_with("password", ""),
    errors = { E("inbound_auth.password", "length") } },
  { name = "inbound_auth.password a table", mutate = auth_with("password", {}),
    errors = { E("inbound_auth.password", "type") } },
  { name = "unknown field inside inbound_auth", mutate = auth_with("realm", "x"),
    errors = { E("inbound_auth.realm", "unknown_field") } },

  -- unknown fields
  { name = "misspelt carrier_name", mutate = function(p) p.carrier_nmae = p.carrier_name; p.carrier_name = nil end,
    errors = { E("carrier_name", "required"), E("carrier_nmae", "unknown_field") } },
  { name = "unknown top-level field", mutate = set_top("description", "x"),
    errors = { E("description", "unknown_field") } },
  { name = "numeric key at the top", mutate = set_top(1, "x"),
    errors = { E("[1]", "unknown_field") } },
  { name = "numeric key inside sip_gateway", mutate = function(p) p.sip_gateway[1] = "x" end,
    errors = { E("sip_gateway[1]", "unknown_field") } },
  { name = "unknown field inside sip_gateway", mutate = set_gw{ prot = 5060 },
    errors = { E("sip_gateway.prot", "unknown_field") } },
  { name = "two unknown fields at two levels", mutate = function(p) p.extra = 1; p.sip_gateway.extra = 2 end,
    errors = { E("extra", "unknown_field"), E("sip_gateway.extra", "unknown_field") } },

  -- several violations at once
  { name = "six violations at once",
    params = { carrier_name = "", trunk_type = "reg", foo = 1,
               sip_gateway = { ipv4 = "1.2.3", port = 0, inbound = "y" } },
    errors = { E("carrier_name", "length"), E("registration", "required"), E("foo", "unknown_field"),
               E("sip_gateway.ipv4", "format"), E("sip_gateway.port", "range"),
               E("sip_gateway.inbound", "type") } },
  { name = "every registration field wrong",
    params = { carrier_name = "x", trunk_type = "reg", sip_gateway = { ipv4 = "203.0.113.10" },
               registration = { username = "a b", password = "", sip_realm = "sip:x", from_domain = "a..b",
                                from_user = 7, public_ip_in_contact = "no", use_tls = 0, tls = true } },
    errors = { E("registration.username", "format"), E("registration.password", "length"),
               E("registration.sip_realm", "format"), E("registration.from_domain", "format"),
               E("registration.from_user", "type"), E("registration.public_ip_in_contact", "type"),
               E("registration.use_tls", "type"), E("registration.tls", "unknown_field") } },

  -- control characters: refused in every string field (one schema rule)
  { name = "carrier_name with a NUL", mutate = set_top("carrier_name", "Acme\0Evil"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name with ESC", mutate = set_top("carrier_name", "Acme\27[2J"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name with CR LF", mutate = set_top("carrier_name", "Acme\r\nX-Evil: 1"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name with a tab", mutate = set_top("carrier_name", "Acme\tTel"),
    errors = { E("carrier_name", "format") } },
  { name = "carrier_name with DEL", mutate = set_top("carrier_name", "Acme\127"),
    errors = { E("carrier_name", "format") } },
  { name = "registration username and password with control characters",
    mutate = reg_with("username", "alice\1", { password = "pw\nINVITE" }),
    errors = { E("registration.username", "format"), E("registration.password", "format") } },
  { name = "inbound_auth username and password with control characters",
    params = { carrier_name = "x", trunk_type = "auth", sip_gateway = { ipv4 = "203.0.113.10" },
               inbound_auth = { username = "bob\31", password = "\0hunter2" } },
    errors = { E("inbound_auth.username", "format"), E("inbound_auth.password", "format") } },
  { name = "from_user with ESC", mutate = reg_with("from_user", "\27]0;x\7"),
    errors = { E("registration.from_user", "format") } },
}

---------------------------------------------------------------------------
-- Specs
---------------------------------------------------------------------------

describe("carriers.validate (table-driven)", function()
  it("has enough cases", function()
    assert.is_true(#cases >= 60, "only " .. #cases .. " cases")
  end)

  for i, case in ipairs(cases) do
    it(("%03d %s"):format(i, case.name), function() run_case(case) end)
  end
end)

describe("carriers.validate error details", function()
  local function errors_of(mutate)
    local p = copy(BASE)
    mutate(p)
    local ok, msg, err = validate(p)
    assert.is_nil(ok)
    check_envelope(msg, err)
    return msg, err
  end

  it("gives one violation as 'topcalls: validation: <path>: <message>'", function()
    local msg, err = errors_of(set_gw{ port = 0 })
    assert.equals(1, #err.errors)
    assert.equals("topcalls: validation: sip_gateway.port: " .. err.errors[1].message, msg)
  end)

  it("counts several violations in the message", function()
    local msg, err = errors_of(function(p) p.carrier_name = nil; p.sip_gateway.port = "x"; p.foo = 1 end)
    assert.equals(3, #err.errors)
    assert.equals("topcalls: validation: 3 problems: ", msg:sub(1, 34))
    for _, e in ipairs(err.errors) do
      assert.is_truthy(msg:find(e.path .. ": " .. e.message, 1, true), "message lacks " .. e.path)
    end
  end)

  it("suggests carrier_name for carrier_nmae", function()
    local _, err = errors_of(function(p) p.carrier_nmae = p.carrier_name; p.carrier_name = nil end)
    local found
    for _, e in ipairs(err.errors) do if e.path == "carrier_nmae" then found = e end end
    assert.is_table(found)
    assert.equals("unknown_field", found.code)
    assert.is_truthy(found.message:find("did you mean 'carrier_name'", 1, true), found.message)
  end)

  it("suggests nested fields at their own level", function()
    local _, err = errors_of(set_gw{ prot = 5060 })
    assert.equals("sip_gateway.prot", err.errors[1].path)
    assert.is_truthy(err.errors[1].message:find("did you mean 'port'", 1, true), err.errors[1].message)
    _, err = errors_of(reg_with("usernme", "alice"))
    assert.equals("registration.usernme", err.errors[1].path)
    assert.is_truthy(err.errors[1].message:find("did you mean 'username'", 1, true), err.errors[1].message)
  end)

  it("does not suggest anything for a distant name", function()
    local _, err = errors_of(set_top("zzzzzzzz", 1))
    assert.equals("zzzzzzzz", err.errors[1].path)
    assert.equals("unknown_field", err.errors[1].code)
    assert.is_nil(err.errors[1].message:find("did you mean", 1, true))
  end)

  it("reports the length it counted for a long carrier_name", function()
    local _, err = errors_of(set_top("carrier_name", rep("é", 101)))
    assert.is_truthy(err.errors[1].message:find("100", 1, true), err.errors[1].message)
    assert.is_truthy(err.errors[1].message:find("101", 1, true), err.errors[1].message)
  end)

  it("explains why a hostname is refused for an inbound gateway", function()
    local _, err = errors_of(set_gw{ ipv4 = "sip.myprovider.com", inbound = true })
    assert.is_truthy(err.errors[1].message:find("inbound", 1, true), err.errors[1].message)
  end)

  it("returns exactly one value, true, on success", function()
    assert.equals(1, select("#", validate(copy(BASE))))
    assert.equals(true, (validate(copy(BASE))))
  end)

  it("reports a key with an embedded NUL as unknown", function()
    local p = copy(BASE)
    p["carrier_name\0junk"] = "x"
    local ok, msg, err = validate(p)
    local problem
    if ok ~= nil then
      problem = "validate returned " .. tostring(ok) .. ": the key 'carrier_name\\0junk' was silently dropped"
    else
      check_envelope(msg, err)
      if #err.errors ~= 1 or err.errors[1].code ~= "unknown_field" then
        problem = listing(err.errors, true)
      end
    end
    assert.is_nil(problem)
  end)
end)

describe("validation messages and secrets", function()
  local SECRET = "Tr0ub4dor&3-not-in-messages"

  local secret_cases = {
    { "a bad sibling of the password", reg_with("password", SECRET, { username = "a b", sip_realm = "sip:x" }) },
    { "registration not allowed", function(p) p.registration = { username = "u", password = SECRET } end },
    { "inbound_auth not allowed", function(p) p.inbound_auth = { username = "u", password = SECRET } end },
    { "password invalid UTF-8", reg_with("password", SECRET .. "\255") },
    { "inbound_auth password invalid UTF-8", auth_with("password", SECRET .. "\192\175") },
    { "password under an invalid trunk_type", function(p)
        p.trunk_type = "regg"; p.registration = { username = "", password = SECRET } end },
    { "password in an unknown field", reg_with("passwd", SECRET) },
    { "password put in from_user of the wrong type", reg_with("password", SECRET, { from_user = {} }) },
  }

  for _, sc in ipairs(secret_cases) do
    it("never echo a password value: " .. sc[1], function()
      local p = copy(BASE)
      sc[2](p)
      local ok, msg, err = validate(p)
      assert.is_nil(ok)
      check_envelope(msg, err)
      assert.is_true(#err.errors >= 1)
      assert.is_nil(msg:find("Tr0ub4dor", 1, true), msg)
      assert.is_nil(tostring(err):find("Tr0ub4dor", 1, true))
      for _, e in ipairs(err.errors) do
        assert.is_nil(e.message:find("Tr0ub4dor", 1, true), e.message)
        assert.is_nil(e.path:find("Tr0ub4dor", 1, true), e.path)
      end
    end)
  end
end)

describe("core.validate normalization", function()
  it("fills the defaults", function()
    local params = { carrier_name = "x", sip_gateway = { ipv4 = "203.0.113.10" } }
    local n, errs = core.validate(params, true)
    assert.is_nil(errs)
    assert.is_table(n)
    assert.equals("x", n.carrier_name)
    assert.equals("static_ip", n.trunk_type)
    assert.equals("203.0.113.10", n.sip_gateway.ipv4)
    assert.equals(5060, n.sip_gateway.port)
    assert.equals(true, n.sip_gateway.inbound)
    assert.equals(true, n.sip_gateway.outbound)
    if math.type then assert.equals("integer", math.type(n.sip_gateway.port)) end
    assert.is_nil(n.registration)
    assert.is_nil(n.inbound_auth)
  end)

  it("does not modify the caller's table", function()
    local params = { carrier_name = "x", sip_gateway = { ipv4 = "203.0.113.10" } }
    local n = core.validate(params, true)
    assert.are_not.equal(params, n)
    assert.are_not.equal(params.sip_gateway, n.sip_gateway)
    assert.is_nil(params.trunk_type)
    assert.is_nil(params.sip_gateway.port)
    assert.is_nil(params.sip_gateway.inbound)
    assert.is_nil(params.sip_gateway.outbound)
  end)

  it("keeps given values and sends 5060.0 as the integer 5060", function()
    local n = core.validate({ carrier_name = "x", trunk_type = "reg",
      sip_gateway = { ipv4 = "sip.example.com", port = 5080.0, inbound = false, outbound = true },
      registration = { username = "u", password = "p", use_tls = false } }, true)
    assert.is_table(n)
    assert.equals("reg", n.trunk_type)
    assert.equals(5080, n.sip_gateway.port)
    if math.type then assert.equals("integer", math.type(n.sip_gateway.port)) end
    assert.equals(false, n.sip_gateway.inbound)
    assert.equals(true, n.sip_gateway.outbound)
    assert.same({ username = "u", password = "p", use_tls = false }, n.registration)
  end)

  it("is strict when the flag is absent", function()
    local n, errs = core.validate({ carrier_name = "x", sip_gateway = { ipv4 = "203.0.113.10" }, foo = 1 })
    assert.is_nil(n)
    assert.equals(1, #errs)
    assert.equals("foo", errs[1].path)
    assert.equals("unknown_field", errs[1].code)
  end)

  it("returns nil and the list of every violation", function()
    local n, errs = core.validate({ sip_gateway = { port = 0 } }, true)
    assert.is_nil(n)
    assert.is_nil(diff_errors({ E("carrier_name", "required"), E("sip_gateway.ipv4", "required"),
                                E("sip_gateway.port", "range") }, errs))
  end)

  it("raises 'bad argument #1' for a non-table", function()
    -- the function name in the message depends on the Lua version ('?' on
    -- 5.1 under pcall, 'topcalls.core.validate' on 5.4): not asserted
    local ok, why = pcall(core.validate, "x", true)
    assert.is_false(ok)
    assert.is_truthy(tostring(why):find("bad argument #1 to '[^']*' %(table expected"), why)
  end)
end)

describe("strict = false", function()
  it("passes unknown fields through unvalidated, at every level", function()
    local extra = { nested = 0 / 0, deep = { "anything" } }
    local n, errs = core.validate({ carrier_name = "x", extra = extra, [1] = "one",
      sip_gateway = { ipv4 = "203.0.113.10", transport = "udp", prot = -1 } }, false)
    assert.is_nil(errs)
    assert.is_table(n)
    assert.equals(extra, n.extra)            -- sent as given
    assert.equals("one", n[1])
    assert.equals("udp", n.sip_gateway.transport)
    assert.equals(-1, n.sip_gateway.prot)
    assert.equals(5060, n.sip_gateway.port)  -- defaults still filled
    assert.equals("static_ip", n.trunk_type)
  end)

  it("still enforces every known rule", function()
    local n, errs = core.validate({ carrier_name = "", extra = 1,
      sip_gateway = { ipv4 = "sip.example.com", port = 0 } }, false)
    assert.is_nil(n)
    assert.is_nil(diff_errors({ E("carrier_name", "length"), E("sip_gateway.ipv4", "format"),
                                E("sip_gateway.port", "range") }, errs))
  end)

  it("is a client option, and a client needs no API key to validate", function()
    local client, msg = topcalls.new{ strict = false, api_key = nil }
    assert.is_table(client, msg)
    assert.equals(true, client.carriers.validate{ carrier_name = "x", foo = "bar",
      sip_gateway = { ipv4 = "203.0.113.10", bar = 1 } })
    local ok, emsg, err = client.carriers.validate{ carrier_name = "x", foo = "bar",
      sip_gateway = { ipv4 = "203.0.113.10", port = 65536 } }
    assert.is_nil(ok)
    check_envelope(emsg, err)
    assert.is_nil(diff_errors({ E("sip_gateway.port", "range") }, err.errors))
  end)

  it("is not the default: topcalls.carriers.validate and a default client are strict", function()
    local params = { carrier_name = "x", foo = "bar", sip_gateway = { ipv4 = "203.0.113.10" } }
    local ok, _, err = validate(params)
    assert.is_nil(ok)
    assert.is_nil(diff_errors({ E("foo", "unknown_field") }, err.errors))
    local client, msg = topcalls.new{}
    assert.is_table(client, msg)
    ok, _, err = client.carriers.validate(params)
    assert.is_nil(ok)
    assert.is_nil(diff_errors({ E("foo", "unknown_field") }, err.errors))
  end)
end)

describe("metatables are ignored", function()
  it("a carrier_name provided by __index is still required", function()
    local p = setmetatable({ sip_gateway = { ipv4 = "203.0.113.10" } },
                           { __index = { carrier_name = "from metatable" } })
    local ok, msg, err = validate(p)
    assert.is_nil(ok)
    check_envelope(msg, err)
    assert.is_nil(diff_errors({ E("carrier_name", "required") }, err.errors))
  end)

  it("a nested ipv4 provided by __index is still required", function()
    local p = { carrier_name = "x",
                sip_gateway = setmetatable({}, { __index = { ipv4 = "203.0.113.10" } }) }
    local ok, _, err = validate(p)
    assert.is_nil(ok)
    assert.is_nil(diff_errors({ E("sip_gateway.ipv4", "required") }, err.errors))
  end)

  it("a raising __index or __pairs is never called", function()
    local calls = 0
    local mt = {
      __index = function() calls = calls + 1; error("__index must not be called") end,
      __pairs = function() calls = calls + 1; error("__pairs must not be called") end,
    }
    local p = setmetatable({ carrier_name = "x", trunk_type = "reg",
      sip_gateway = setmetatable({ ipv4 = "203.0.113.10" }, mt),
      registration = setmetatable({ username = "u", password = "p" }, mt) }, mt)
    assert.equals(true, validate(p))
    local n = core.validate(p, true)
    assert.is_table(n)
    assert.equals(5060, n.sip_gateway.port)
    assert.is_nil(getmetatable(n))
    assert.equals(0, calls)
    -- and with violations to report
    p.sip_gateway.port = 0
    local ok, _, err = validate(p)
    assert.is_nil(ok)
    assert.is_nil(diff_errors({ E("sip_gateway.port", "range") }, err.errors))
    assert.equals(0, calls)
  end)
end)

describe("programmer errors raise", function()
  local bad = { { "a string", "x" }, { "a number", 1 }, { "nil", nil }, { "a boolean", true } }
  for _, b in ipairs(bad) do
    it("carriers.validate(" .. b[1] .. ") raises bad argument #1 to 'validate'", function()
      local ok, why = pcall(validate, b[2])
      assert.is_false(ok)
      assert.is_truthy(tostring(why):find("bad argument #1 to 'validate' (table expected", 1, true), why)
    end)
  end

  it("a client's validate raises the same way", function()
    local client = assert(topcalls.new{})
    local ok, why = pcall(client.carriers.validate, "x")
    assert.is_false(ok)
    assert.is_truthy(tostring(why):find("bad argument #1 to 'validate' (table expected, got string)", 1, true), why)
  end)
end)

describe("core.check (pure checks)", function()
  local check = core.check
  local checks = {
    -- what, input, expected
    { "ipv4", "0.0.0.0", true },
    { "ipv4", "255.255.255.255", true },
    { "ipv4", "192.168.1.10", true },
    { "ipv4", "256.0.0.0", false },
    { "ipv4", "1.2.3.04", false },
    { "ipv4", "1.2.3", false },
    { "ipv4", "1.2.3.4.5", false },
    { "ipv4", "1.2.3.4\0", false },
    { "ipv4", "1..2.3", false },
    { "ipv4", "1234.1.1.1", false },
    { "ipv4", "", false },
    { "ipv4", "-1.2.3.4", false },
    { "hostname", "sip.example.com", true },
    { "hostname", "sip.example.com.", true },
    { "hostname", "a", true },
    { "hostname", "1.2.3.4a", true },
    { "hostname", "1.2.3.999", false },
    { "hostname", "123", false },
    { "hostname", "", false },
    { "hostname", ".", false },
    { "hostname", "a..b", false },
    { "hostname", "-a.com", false },
    { "hostname", "a-.com", false },
    { "hostname", "a_b.com", false },
    { "hostname", L63 .. ".com", true },
    { "hostname", rep("a", 64) .. ".com", false },
    { "hostname", HOST_253, true },
    { "hostname", HOST_253 .. ".", true },
    { "hostname", HOST_254, false },
    { "hostname", "ex\0ample.com", false },
    { "uuid", "0b7a3c52-3c8e-4f7e-9d8e-1a2b3c4d5e6f", true },
    { "uuid", "0B7A3C52-3C8E-4F7E-9D8E-1A2B3C4D5E6F", true },
    { "uuid", "0b7a3c523c8e4f7e9d8e1a2b3c4d5e6f", false },
    { "uuid", "0b7a3c52-3c8e-4f7e-9d8e-1a2b3c4d5e6g", false },
    { "uuid", "{0b7a3c52-3c8e-4f7e-9d8e-1a2b3c4d5e6f}", false },
    { "token", "abc_DEF-123", true },
    { "token", "abc def", false },
    { "token", "abc.def", false },
    { "whitespace", "abc", false },
    { "whitespace", "a b", true },
    { "whitespace", "\t", true },
    { "whitespace", "a\vb", true },
    { "whitespace", "a\fb", true },
    { "whitespace", "a\rb", true },
    { "whitespace", "a\nb", true },
    { "whitespace", "a\0b", false },
    { "utf8_length", "", 0 },
    { "utf8_length", "abc", 3 },
    { "utf8_length", "é", 1 },
    { "utf8_length", "aé€😀", 4 },
    { "utf8_length", "a\0b", 3 },
    { "utf8_length", "\244\143\191\191", 1 },   -- U+10FFFF, the last code point
    { "utf8_length", "\255", nil },
    { "utf8_length", "\192\175", nil },
    { "utf8_length", "\237\160\128", nil },
    { "utf8_length", "\244\144\128\128", nil },
    { "utf8_length", "\226\130", nil },
  }
  for _, c in ipairs(checks) do
    it(("%s(%q) == %s"):format(c[1], show(c[2]), tostring(c[3])), function()
      assert.equals(c[3], check(c[1], c[2]))
    end)
  end
end)

describe("phone_numbers.validate and control characters", function()
  it("refuses a label with ESC, CR or NUL at its path, and takes a plain one", function()
    local pn = topcalls.phone_numbers.validate
    for _, label in ipairs({ "office\27[2J", "a\r\nb", "x\0y" }) do
      local ok, _, err = pn{ number = "+14155550100", label = label }
      assert.is_nil(ok, show(label))
      assert.are.same({ { path = "label", code = "format" } }, { { path = err.errors[1].path, code = err.errors[1].code } })
      assert.are.equal(1, #err.errors)
    end
    assert.is_true(pn{ number = "+14155550100", label = "Front desk (2nd floor)" })
  end)
end)

describe("option bounds", function()
  -- a client that would fail on any request: nothing here may reach it
  local OFFLINE = "http://127.0.0.1:9"

  it("refuses a timeout or connect_timeout past the declared maximum with a config error", function()
    for _, name in ipairs({ "timeout", "connect_timeout" }) do
      for _, v in ipairs({ 1e300, 1e20, 86400.5 }) do
        local c, msg, err = topcalls.new{ api_key = "tc_test_x", base_url = OFFLINE, [name] = v }
        assert.is_nil(c)
        assert.are.equal("config", err.kind)
        assert.are.same({ path = name, code = "range" }, { path = err.errors[1].path, code = err.errors[1].code })
        assert.is_truthy(msg:find("86400", 1, true), msg)
      end
      assert.is_truthy(topcalls.new{ api_key = "tc_test_x", base_url = OFFLINE, [name] = 86400 })
    end
  end)

  it("refuses a per-call timeout past the maximum as validation, before any I/O", function()
    local c = assert(topcalls.new{ api_key = "tc_test_x", base_url = OFFLINE, max_retries = 0 })
    local calls = {
      function() return c.carriers.add(BASE, { timeout = 1e300 }) end,
      function() return c.carriers.get("00000000-0000-4000-8000-000000000000", { timeout = 1e300 }) end,
      function() return c.carriers.delete("00000000-0000-4000-8000-000000000000", { timeout = 1e300 }) end,
      function() return c.carriers.list{ timeout = 1e300 } end,
      function() return c.carriers.add_many({ BASE }, { timeout = 1e300 }) end,
    }
    for i, call in ipairs(calls) do
      local ok, _, err = call()
      assert.is_nil(ok, "call " .. i)
      assert.are.equal("validation", err.kind, "call " .. i)
      assert.are.equal("timeout", err.errors[1].path)
      assert.are.equal("range", err.errors[1].code)
    end
  end)

  it("takes an integral float for every count option and keeps it an integer", function()
    local c = assert(topcalls.new{ api_key = "tc_test_x", base_url = OFFLINE, max_retries = 2.0 })
    assert.is_truthy(c)
    local client = require "topcalls.client"
    local opts = { page_size = 50.0, limit = 3.0 }
    assert.are.same({}, client.check_options(opts, require("topcalls.resource").LIST_OPTIONS))
    assert.are.equal("50", tostring(opts.page_size))
    assert.are.equal("3", tostring(opts.limit))
    local bad = client.check_options({ page_size = 50.5 }, require("topcalls.resource").LIST_OPTIONS)
    assert.are.equal("type", bad[1].code)
  end)
end)
