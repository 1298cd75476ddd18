-- topcalls.carriers: the carriers resource (add, delete, validate) of a
-- client. Functions are plain closures: call them with a dot.
-- SPDX-License-Identifier: MIT

local core    = require "topcalls.core"
local errors  = require "topcalls.errors"
local json    = require "topcalls.json"
local client  = require "topcalls.client"

local type, error = type, error

local _M = {}

local PATH = "/v1/phone-numbers/carriers"

-- Programmer errors raise in the usual Lua form.
local function check_arg(fname, n, value, expected, optional)
  local t = type(value)
  if t ~= expected and not (optional and value == nil) then
    error("bad argument #" .. n .. " to '" .. fname .. "' (" .. expected .. " expected, got "
          .. (value == nil and "no value" or t) .. ")", 4)
  end
end

-- The arguments every public entry checks before anything else.
function _M.check_args(fname, first, call)
  check_arg(fname, 1, first, fname == "delete" and "string" or "table")
  if fname ~= "validate" then check_arg(fname, 2, call, "table", true) end
end

-- Validate params (and call options): normalized table, or nil, message,
-- err with every violation. No network.
function _M.validate_params(params, strict, call)
  local normalized, problems = core.validate(params, strict)
  problems = problems or {}
  if call then client.check_options(call, client.CALL_OPTIONS, problems) end
  if #problems > 0 then return errors.violations("validation", problems) end
  return normalized
end

-- The carriers resource bound to a client state.
function _M.new(state)
  local res = {}

  function res.validate(params)
    _M.check_args("validate", params)
    local ok, msg, err = _M.validate_params(params, state.settings.strict)
    if not ok then return nil, msg, err end
    return true
  end

  function res.add(params, call)
    _M.check_args("add", params, call)
    call = call or {}
    local normalized, msg, err = _M.validate_params(params, state.settings.strict, call)
    if not normalized then return nil, msg, err end
    local body, why = json.encode(normalized)
    if not body then
      return errors.fail("validation", "params cannot be encoded as JSON: " .. why,
                         { errors = { { path = "", code = "type", message = why } } })
    end
    return client.call(state, "POST", PATH, body, call, client.decode_object)
  end

  function res.delete(carrier_id, call)
    _M.check_args("delete", carrier_id, call)
    call = call or {}
    local problems = client.check_options(call, client.CALL_OPTIONS)
    if not core.check("uuid", carrier_id) then
      problems[#problems + 1] = { path = "carrier_id", code = "format",
        message = "must be a carrier record id (a UUID)" }
    end
    if #problems > 0 then return errors.violations("validation", problems) end
    return client.call(state, "DELETE", PATH .. "/" .. carrier_id, nil, call, function() return true end)
  end

  return res
end

return _M
