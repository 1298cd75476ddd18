-- topcalls.json: a private lua-cjson instance. The shared `require "cjson"`
-- table has switches any other library in the process can flip; ours
-- cannot be touched from outside.
-- SPDX-License-Identifier: MIT

local cjson = require("cjson").new()
local pcall, type = pcall, type

cjson.encode_invalid_numbers(false)
cjson.decode_invalid_numbers(false)
cjson.encode_sparse_array(false)

local _M = { null = cjson.null }

-- value | nil, reason
function _M.encode(value)
  local ok, res = pcall(cjson.encode, value)
  if ok then return res end
  return nil, res
end

-- value | nil, reason
function _M.decode(text)
  if type(text) ~= "string" or text == "" then return nil, "empty body" end
  local ok, res = pcall(cjson.decode, text)
  if ok then return res end
  return nil, res
end

return _M
