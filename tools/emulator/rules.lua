-- Server-side validation of request bodies (POST /v1/phone-numbers/carriers
-- and POST /v1/phone-numbers), written from the shared CONTRACT.md, issue 9
-- and the README's "Choices where the contract is silent" only (an
-- independent cross-check of the SDK's own validator in C).
--
-- Each schema is a declarative table: every documented rule lives in exactly
-- one place, either as a field spec or as an object-level check.  The walker
-- below interprets it.  Pure Lua 5.1 (runs in nginx's LuaJIT and in PUC Lua).
--
--   local rules = require "rules"
--   local errors, body = rules.validate(decoded_json, json_null [, "phone_number"])
--   -- errors: list of { path, message, code } (empty when valid)
--   -- body:   the input with the documented defaults filled in
--   -- the schema name defaults to "carrier"

local M = {}

---------------------------------------------------------------------------
-- Formats (return true when the string is acceptable)
---------------------------------------------------------------------------

-- Whitespace per DECISIONS: ASCII space, \t, \n, \v, \f, \r.
local function has_space(s) return s:find("[ \t\n\v\f\r]") ~= nil end

-- Exactly four decimal octets 0-255, no leading zeros, nothing else.
local function is_dotted_quad(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return false end
  for _, o in ipairs{ a, b, c, d } do
    if #o > 3 or (#o > 1 and o:sub(1, 1) == "0") or tonumber(o) > 255 then
      return false
    end
  end
  return true
end

-- RFC 1123 hostname; one optional trailing dot; the last label is not all
-- digits (so a malformed dotted quad is never mistaken for a hostname).
local function is_hostname(s)
  s = s:gsub("%.$", "", 1)
  if #s == 0 or #s > 253 then return false end
  local last
  for label in (s .. "."):gmatch("([^.]*)%.") do
    if #label < 1 or #label > 63 or label:find("[^A-Za-z0-9-]")
       or label:sub(1, 1) == "-" or label:sub(-1) == "-" then
      return false
    end
    last = label
  end
  return not last:find("^%d+$")
end

-- Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF).  Returns the
-- number of code points, or nil when the bytes are not valid UTF-8.
local function utf8_len(s)
  local i, n, len = 1, 0, #s
  while i <= len do
    local c = s:byte(i)
    local extra, min
    if c < 0x80 then extra, min = 0, 0
    elseif c >= 0xC2 and c <= 0xDF then extra, min = 1, 0x80
    elseif c >= 0xE0 and c <= 0xEF then extra, min = 2, 0x800
    elseif c >= 0xF0 and c <= 0xF4 then extra, min = 3, 0x10000
    else return nil end
    local cp = extra == 0 and c or c % (2 ^ (6 - extra))
    for k = 1, extra do
      local cc = s:byte(i + k)
      if not cc or cc < 0x80 or cc > 0xBF then return nil end
      cp = cp * 64 + cc % 64
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
      return nil
    end
    i, n = i + extra + 1, n + 1
  end
  return n
end

-- E.164 (^\+[1-9]\d{1,14}$) beginning with an assigned country calling code.
-- Returns nil when fine, else "malformed" or "unassigned".
local COUNTRY_CODES = {}
for _, cc in ipairs(require "country_codes") do COUNTRY_CODES[tostring(cc)] = true end

local function e164_problem(s)
  local digits = s:match("^%+([1-9]%d*)$")
  if not digits or #digits < 2 or #digits > 15 then return "malformed" end
  for n = 1, 3 do
    if COUNTRY_CODES[digits:sub(1, n)] then return nil end
  end
  return "unassigned"
end

local UUID_PATTERN = "^" .. ("%x"):rep(8) .. "%-" .. ("%x"):rep(4) .. "%-" .. ("%x"):rep(4)
                     .. "%-" .. ("%x"):rep(4) .. "%-" .. ("%x"):rep(12) .. "$"
local function is_uuid(s) return s:find(UUID_PATTERN) ~= nil end

-- Named formats used by the schemas.  Each gets the value and the object
-- holding it (the gateway address rule depends on its sibling `inbound`).
-- They return nil when fine, else the error message.
local formats = {
  no_space = function(v)
    if has_space(v) then return "must not contain whitespace" end
  end,
  -- sip_gateway.ipv4: dotted quad when inbound is true or absent (defaulted
  -- to true before formats run); outbound-only gateways may use a hostname.
  gateway_address = function(v, parent)
    if has_space(v) then return "must not contain whitespace" end
    if parent.inbound ~= false then
      if not is_dotted_quad(v) then
        return "must be a dotted-quad IPv4 address for an inbound gateway"
      end
    elseif not (is_dotted_quad(v) or is_hostname(v)) then
      return "must be a dotted-quad IPv4 address or a DNS hostname"
    end
  end,
  e164 = function(v)
    local p = e164_problem(v)
    if p == "malformed" then
      return "must be an E.164 number: '+' then 2-15 digits, the first not 0"
    elseif p == "unassigned" then
      return "must begin with an assigned country calling code"
    end
  end,
  uuid = function(v)
    if not is_uuid(v) then return "must be a UUID" end
  end,
  -- sip_realm / from_domain: hostname or dotted quad, no sip:/sips: prefix.
  domain = function(v)
    if has_space(v) then return "must not contain whitespace" end
    local lower = v:lower()
    if lower:find("^sips?:") then return "must not have a 'sip:' prefix" end
    if not (is_dotted_quad(v) or is_hostname(v)) then
      return "must be a domain name or IPv4 address"
    end
  end,
}

---------------------------------------------------------------------------
-- The schema.  Field order is the order errors are reported in.
--   type      string | integer | boolean | object
--   required  true, or a function(root) -> true when conditionally required
--   allowed   function(root) -> false when the field must be absent
--             (not_allowed); nil when undecidable (then neither required nor
--             not_allowed is reported)
--   default   filled in when absent
--   nullable  JSON null is accepted (kept as the null sentinel)
--   enum, min/max (integer range), max_len (code points), format (name above)
--   checks    object-level rules: function(obj, path, add)
---------------------------------------------------------------------------

local TRUNK_TYPES = { "static_ip", "auth", "reg" }

-- "Does trunk_type select this object?"  nil when trunk_type is invalid.
local function trunk_is(wanted)
  return function(root)
    local t = root.trunk_type
    if type(t) ~= "string" then return nil end
    for _, v in ipairs(TRUNK_TYPES) do
      if v == t then return t == wanted end
    end
    return nil
  end
end

local carrier = { type = "object", fields = {
  { "carrier_name", type = "string", required = true, max_len = 100 },
  { "trunk_type", type = "string", enum = TRUNK_TYPES, default = "static_ip" },
  { "sip_gateway", type = "object", required = true, fields = {
      { "ipv4", type = "string", required = true, format = "gateway_address" },
      { "port", type = "integer", min = 1, max = 65535, default = 5060 },
      { "inbound", type = "boolean", default = true },
      { "outbound", type = "boolean", default = true },
    },
    checks = {
      function(gw, path, add)
        if gw.inbound == false and gw.outbound == false then
          add(path, "conflict", "sip_gateway must be inbound, outbound or both")
        end
      end,
    } },
  { "registration", type = "object", required = trunk_is("reg"),
    allowed = trunk_is("reg"), fields = {
      { "username", type = "string", required = true, format = "no_space" },
      { "password", type = "string", required = true },
      { "sip_realm", type = "string", format = "domain" },
      { "from_domain", type = "string", format = "domain" },
      { "from_user", type = "string" },
      { "public_ip_in_contact", type = "boolean" },
      { "use_tls", type = "boolean" },
    } },
  { "inbound_auth", type = "object", required = trunk_is("auth"),
    allowed = trunk_is("auth"), fields = {
      { "username", type = "string", required = true },
      { "password", type = "string", required = true },
    } },
} }

-- POST /v1/phone-numbers.  Whether voip_carrier_sid names a carrier of the
-- account (400) and whether the number is taken (422) are the server's
-- business (they need its state), not the schema's.
local phone_number = { type = "object", fields = {
  { "number", type = "string", required = true, format = "e164" },
  { "voip_carrier_sid", type = "string", format = "uuid" },
  { "label", type = "string", max_len = 100, nullable = true },
} }

local schemas = { carrier = carrier, phone_number = phone_number }

---------------------------------------------------------------------------
-- Walker
---------------------------------------------------------------------------

local function edit_distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

local function join(path, key)
  return path == "" and key or path .. "." .. key
end

local function is_object(v)
  -- cjson decodes both {} and [] to a table; a non-empty array has integer
  -- keys.  (An empty [] cannot be told apart from {} with lua-cjson 2.1.0.)
  if type(v) ~= "table" then return false end
  local k = next(v)
  return k == nil or type(k) == "string"
end

-- Checks one value against its spec; returns nothing, reports through add.
local function check_value(spec, v, parent, path, add)
  local function bad(code, text) add(path, code, path .. " " .. text) end
  local t = spec.type
  if v == add.null then
    if spec.nullable then return end
    return bad("type", "must not be null")
  end
  if t == "object" then
    if not is_object(v) then return bad("type", "must be an object") end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then return bad("type", "must be a boolean") end
  elseif t == "integer" then
    -- v ~= v catches NaN; infinities are integral for math.floor, so test them
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge
       or math.floor(v) ~= v then
      return bad("type", "must be an integer")
    end
    if v < spec.min or v > spec.max then
      return bad("range", ("must be between %d and %d"):format(spec.min, spec.max))
    end
  elseif t == "string" then
    if type(v) ~= "string" then return bad("type", "must be a string") end
    if v == "" then return bad("length", "must not be empty") end
    local n = utf8_len(v)
    if not n then return bad("format", "must be valid UTF-8") end
    if spec.max_len and n > spec.max_len then
      return bad("length", ("must be at most %d characters"):format(spec.max_len))
    end
    if spec.enum then
      for _, e in ipairs(spec.enum) do if e == v then return end end
      return bad("enum", "must be one of: " .. table.concat(spec.enum, ", "))
    end
    if spec.format then
      local msg = formats[spec.format](v, parent)
      if msg then return bad("format", msg) end
    end
  end
end

-- Walks an object spec: defaults, known fields, unknown fields, checks.
local function walk_object(spec, obj, root, path, add)
  local known = {}
  for _, f in ipairs(spec.fields) do
    known[f[1]] = true
    if obj[f[1]] == nil and f.default ~= nil then obj[f[1]] = f.default end
  end
  for _, f in ipairs(spec.fields) do
    local name, v = f[1], obj[f[1]]
    local p = join(path, name)
    local allowed = f.allowed and f.allowed(root)
    local required = f.required
    if type(required) == "function" then required = required(root) end
    if v == nil then
      if required then add(p, "required", p .. " is required") end
    elseif allowed == false then
      add(p, "not_allowed", p .. (" is not allowed when trunk_type is '%s'"):format(root.trunk_type))
    else
      local before = #add.errors
      check_value(f, v, obj, p, add)
      if f.type == "object" and #add.errors == before then
        walk_object(f, v, root, p, add)
      end
    end
  end
  -- Unknown fields, in a stable order, with a did-you-mean for near misses.
  local unknown = {}
  for k in pairs(obj) do
    if not known[k] then unknown[#unknown + 1] = k end
  end
  table.sort(unknown, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(unknown) do
    local p = type(k) == "string" and join(path, k) or ("[" .. tostring(k) .. "]")
    local msg = ("unknown field '%s'"):format(p)
    if type(k) == "string" then
      local best, bestd
      for _, f in ipairs(spec.fields) do
        local d = edit_distance(k, f[1])
        if d <= 2 and (not bestd or d < bestd) then best, bestd = f[1], d end
      end
      if best then msg = msg .. (" (did you mean '%s'?)"):format(best) end
    end
    add(p, "unknown_field", msg)
  end
  for _, check in ipairs(spec.checks or {}) do check(obj, path, add) end
end

-- Validates a decoded body (a table).  `null` is the JSON null sentinel
-- (cjson.null): a null value is reported as a wrong type, not as absent.
function M.validate(body, null, schema_name)
  local schema = assert(schemas[schema_name or "carrier"], "unknown schema")
  local errors = {}
  local add = { errors = errors, null = null }
  setmetatable(add, { __call = function(_, path, code, message)
    errors[#errors + 1] = { path = path, code = code, message = message }
  end })
  walk_object(schema, body, body, "", add)
  return errors, body
end

-- Fills the documented defaults into a body without judging it (the
-- emulator's "edit by hand" control stores what the API would store).
local function fill_defaults(spec, obj)
  for _, f in ipairs(spec.fields) do
    if obj[f[1]] == nil and f.default ~= nil then obj[f[1]] = f.default end
    if f.type == "object" and is_object(obj[f[1]]) then fill_defaults(f, obj[f[1]]) end
  end
  return obj
end

function M.defaults(body, schema_name)
  return fill_defaults(assert(schemas[schema_name or "carrier"], "unknown schema"), body)
end

-- Exposed for the emulator's own use and for unit tests.
M.is_dotted_quad, M.is_hostname, M.utf8_len = is_dotted_quad, is_hostname, utf8_len
M.e164_problem, M.is_uuid = e164_problem, is_uuid
M.schema, M.schemas = carrier, schemas

return M
