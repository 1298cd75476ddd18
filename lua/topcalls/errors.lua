-- topcalls.errors: the error table every failure returns, and the
-- three-value return `nil, message, err` built from it.
-- SPDX-License-Identifier: MIT

local setmetatable, tostring, concat, gsub = setmetatable, tostring, table.concat, string.gsub

local _M = {}

local error_mt = {
  __name = "topcalls.error",
  __tostring = function(err) return err.message end,
}

-- Server text may hold line breaks; the message stays one line.
local function one_line(s)
  return (gsub(tostring(s), "[%c]+", " "))
end
_M.one_line = one_line

-- An error table of `kind` whose message says `what`. `fields` (optional)
-- is taken over as the table itself.
function _M.new(kind, what, fields)
  local err = fields or {}
  err.kind = kind
  err.message = "topcalls: " .. kind .. ": " .. one_line(what)
  err.errors = err.errors or {}
  err.retryable = err.retryable or false
  err.attempts = err.attempts or 0
  return setmetatable(err, error_mt)
end

-- nil, message, err
function _M.fail(kind, what, fields)
  local err = _M.new(kind, what, fields)
  return nil, err.message, err
end

-- A validation (or config) failure listing every violation on one line.
function _M.violations(kind, list)
  local parts = {}
  for i, v in ipairs(list) do
    parts[i] = (v.path ~= "" and v.path .. ": " or "") .. v.message
  end
  local what = concat(parts, "; ")
  if #list > 1 then what = #list .. " problems: " .. what end
  return _M.fail(kind, what, { errors = list })
end

function _M.is_error(v)
  return getmetatable(v) == error_mt
end

return _M
