-- topcalls: provision SIP carriers on the TopCalls voice-AI platform.
--   local topcalls = require "topcalls"
--   local carrier, msg, err = topcalls.carriers.add{ ... }
-- SPDX-License-Identifier: MIT

local client   = require "topcalls.client"
local carriers = require "topcalls.carriers"

local type, error, setmetatable, tostring = type, error, setmetatable, tostring

local _M = { VERSION = client.VERSION, _VERSION = client.VERSION }

local client_mt = {
  __name = "topcalls.client",
  __tostring = function(self) return tostring(self._handle) end,
  __metatable = "topcalls.client",
}

--- Create a client. opts (all optional): api_key, base_url, timeout,
-- connect_timeout, max_retries, ca_file, proxy, user_agent, strict, logger.
-- Returns the client, or nil, message, err (kind "config").
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", 2)
  end
  local state, msg, err = client.new_state(opts or {})
  if not state then return nil, msg, err end
  return setmetatable({ carriers = carriers.new(state), _handle = state.handle }, client_mt)
end

-- The default client, built from the environment on first use. A failed
-- build is not cached, so fixing the environment fixes the next call.
local default_client
local function default()
  if default_client then return default_client end
  local c, msg, err = _M.new()
  default_client = c
  return c, msg, err
end

-- topcalls.carriers: the default client's resource. validate needs no
-- client (and no key), so it works even when the environment is unset.
_M.carriers = {
  validate = function(params)
    carriers.check_args("validate", params)
    local ok, msg, err = carriers.validate_params(params, true)
    if not ok then return nil, msg, err end
    return true
  end,
}
for _, name in ipairs({ "add", "add_many", "delete" }) do
  _M.carriers[name] = function(first, call)
    carriers.check_args(name, first, call)
    local c, msg, err = default()
    if not c then return nil, msg, err end
    return c.carriers[name](first, call)
  end
end

return _M
