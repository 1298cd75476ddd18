-- topcalls.json: the module's JSON. Decoding is the C decoder's
-- (src/json.c), on every path: a 2xx answer with or without a logger, a
-- list page, add_many's answers, a problem+json error body, a fleet file;
-- so the same bytes give the same Lua values everywhere (integral
-- literals of up to 15 digits are integers on Lua 5.3+). Encoding is a
-- private lua-cjson instance (the shared `require "cjson"` table has
-- switches any other library in the process can flip; ours cannot be
-- touched from outside), which also names why a text is not JSON and is
-- the decoder's fuzz oracle.
-- SPDX-License-Identifier: MIT

local core = require "topcalls.core"
local cjson = require("cjson").new()
local pcall, type, next, rawget, ipairs, sort, concat = pcall, type, next, rawget, ipairs, table.sort, table.concat

cjson.encode_invalid_numbers(false)
cjson.decode_invalid_numbers(false)
cjson.encode_sparse_array(false)

local _M = { null = cjson.null }

-- Are the n keys of t exactly 1..n? (raw)
local function is_sequence(t, n)
  for i = 1, n do if rawget(t, i) == nil then return false end end
  return true
end

-- Write value with every object's keys sorted. cjson writes keys in table
-- order, which Lua 5.3+ varies per process (string hashes are seeded), and
-- a re-run that reuses an Idempotency-Key must send the same bytes or the
-- server answers 409 instead of replaying. Only called on a value cjson has
-- already accepted; tables that are not all-string-keyed objects or plain
-- 1..n arrays are left to cjson as they are.
-- Tables are read raw (next, rawget), as cjson reads them: a caller's
-- metamethods (__pairs, __index, __len) never run.
local function canonical(value, out)
  if type(value) ~= "table" then out[#out + 1] = cjson.encode(value); return end
  local keys, strings = {}, true
  for k in next, value do
    keys[#keys + 1] = k
    strings = strings and type(k) == "string"
  end
  if strings and #keys > 0 then
    sort(keys)
    for i, k in ipairs(keys) do
      out[#out + 1] = (i == 1 and "{" or ",") .. cjson.encode(k) .. ":"
      canonical(rawget(value, k), out)
    end
    out[#out + 1] = "}"
  elseif #keys > 0 and is_sequence(value, #keys) then
    for i = 1, #keys do
      out[#out + 1] = i == 1 and "[" or ","
      canonical(rawget(value, i), out)
    end
    out[#out + 1] = "]"
  else
    out[#out + 1] = cjson.encode(value)
  end
end

-- Running out of memory is not bad JSON: reporting it as a decode error
-- after the server created a carrier would invite a duplicate.
local function rethrow_memory(why)
  if why == "not enough memory" then error(why, 0) end
  return why
end

-- value | nil, reason
function _M.encode(value)
  local ok, res = pcall(cjson.encode, value)   -- cjson's checks: depth, sparse arrays, NaN, key types
  if not ok then return nil, rethrow_memory(res) end
  local out = {}
  canonical(value, out)
  return concat(out)
end

local c_decode = core.json_decode

-- value | nil, reason. A memory error raises (from C as from cjson).
function _M.decode(text)
  if type(text) ~= "string" or text == "" then return nil, "empty body" end
  local ok, value = c_decode(text)
  if ok then return value end
  -- refused: cjson, which refuses the same texts, says why
  local cok, why = pcall(cjson.decode, text)
  if cok then return nil, "not valid JSON" end
  return nil, rethrow_memory(why)
end

return _M
