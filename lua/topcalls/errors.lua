--- The error table every failure returns, and the three-value return
-- `nil, message, err` built from it. Its fields: `kind` (validation,
-- config, api, transport, decode), `message` (the one-line string, also
-- what `tostring(err)` gives), `errors` (`{ path, message, code }` list),
-- `status`, `type`, `title`, `detail`, `instance` (from the HTTP answer),
-- `request_id`, `retryable`, `attempts`, `retry_after`, `curl_code`.
-- @module topcalls.errors
-- @license MIT

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

--- An error table of `kind` whose message says `what`.
-- @string kind
-- @string what
-- @tparam[opt] table fields taken over as the error table itself
-- @treturn table the error
function _M.new(kind, what, fields)
  local err = fields or {}
  err.kind = kind
  err.message = "topcalls: " .. kind .. ": " .. one_line(what)
  err.errors = err.errors or {}
  err.retryable = err.retryable or false
  err.attempts = err.attempts or 0
  return setmetatable(err, error_mt)
end

--- `nil, message, err` for a new error (see `new`).
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

return _M
