--- Provision SIP carriers on the TopCalls voice-AI platform.
--
--    local topcalls = require "topcalls"
--    local carrier, msg, err = topcalls.carriers.add{
--      carrier_name = "My VoIP Provider",
--      sip_gateway  = { ipv4 = "203.0.113.10", port = 5060 },
--    }
--    if not carrier then error(msg) end
--    print(carrier.voip_carrier_sid)
--
-- Every failure a caller can cause returns `nil, message, err`: a one-line
-- `message` ("topcalls: <kind>: ...") and the error table `err`
-- (see `topcalls.errors`). Only programmer errors (an argument of the wrong
-- type) raise. Call resource functions with a dot, never a colon.
-- `topcalls.VERSION` is the module's version string.
-- @module topcalls
-- @license MIT

local client   = require "topcalls.client"
local resource = require "topcalls.resource"
local view     = require "topcalls.view"
local fleet    = require "topcalls.fleet"

local type, error, setmetatable, tostring, ipairs = type, error, setmetatable, tostring, ipairs

local _M = { VERSION = client.VERSION, _VERSION = client.VERSION }

--- The resources, in the order help() lists them: each a descriptor
-- (`name`, `path`, `schema`, ...) whose operations every client has.
_M.resources = {
  resource.declare(require "topcalls.carriers"),
  resource.declare(require "topcalls.phone_numbers"),
}

local client_mt = {
  __name = "topcalls.client",
  __tostring = function(self) return tostring(self._handle) end,
  __metatable = "topcalls.client",
}

--- Create a client.
-- @tparam[opt] table opts every field optional:
--  `api_key` (default env `TOPCALLS_API_KEY`),
--  `base_url` (default env `TOPCALLS_BASE_URL`, else `https://api.topcalls.ai`),
--  `timeout` (seconds per attempt, 30), `connect_timeout` (10),
--  `max_retries` (2), `ca_file`, `proxy`, `user_agent` (appended to the
--  module's own), `strict` (true: unknown fields are errors),
--  `logger` (a function given one table per attempt; never the key)
-- @treturn table a client, whose `carriers` field is its carriers resource
-- @return[2] nil
-- @treturn[2] string message
-- @treturn[2] table err, with `kind = "config"` and `errors`
-- @usage local client = assert(topcalls.new{ max_retries = 3 })
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", 2)
  end
  local state, msg, err = client.new_state(opts or {})
  if not state then return nil, msg, err end
  local c = { _handle = state.handle }
  local transport = resource.direct(state)
  for _, desc in ipairs(_M.resources) do
    c[desc.name] = resource.front(desc, transport, state.settings.strict)
  end
  c.fleet = fleet.bind(c, state.settings.base_url, function(data) return state.handle:mac(data) end)
  return setmetatable(c, client_mt)
end

--- The carriers resource.
-- Of the default client (built from the
-- environment on first use) as `topcalls.carriers`, of a client as
-- `client.carriers`. `validate` needs no key.
-- @section carriers

--- Add a carrier: validate every documented rule, then `POST
-- /v1/phone-numbers/carriers` with retries that share one Idempotency-Key.
-- @function carriers.add
-- @tparam table params `carrier_name`, `trunk_type`, `sip_gateway`,
--  `registration`, `inbound_auth` (see the README for every rule)
-- @tparam[opt] table call_opts `idempotency_key`, `timeout`, `max_retries`
-- @treturn table the created carrier (`id`, `voip_carrier_sid`, ...)
-- @return[2] nil
-- @treturn[2] string message
-- @treturn[2] table err (`kind`: validation, config, api, transport, decode)

--- Add many carriers concurrently on one curl multi handle.
-- @function carriers.add_many
-- @tparam table list a sequence of `add` params tables
-- @tparam[opt] table opts `concurrency` (1-64, default 8),
--  `idempotency_keys`, `on_progress(done, total, i, result)`,
--  `stop_on_error`, `timeout`, `max_retries`
-- @treturn table results: `results[i]` is `{ carrier = ... }` or
--  `{ message = ..., err = ... }`
-- @treturn table summary: `total`, `succeeded`, `failed`, `skipped`,
--  `elapsed`, `progress_errors`

--- Delete a carrier by its record `id` (not its `voip_carrier_sid`).
-- @function carriers.delete
-- @string carrier_id a UUID
-- @tparam[opt] table call_opts `timeout`, `max_retries`
-- @return `true`, or `nil, message, err`

--- Check params against every documented rule; no network.
-- @function carriers.validate
-- @tparam table params
-- @return `true`, or `nil, message, err` with `kind = "validation"` and
--  every violation in `err.errors` as `{ path, message, code }`

for _, desc in ipairs(_M.resources) do
  _M[desc.name] = resource.default(desc, _M.new)
end

--- Declarative sync of carriers and their numbers (topcalls.fleet) on
-- the default client; `client.fleet` is a client's own.
_M.fleet = fleet.bind(_M)

--- Print help: the resources and their operations, or one topic
-- ("carriers", "carriers.add" with every field and its rules).
-- @string[opt] topic
function _M.help(topic)
  local text, why = view.help_text(_M.resources, resource, topic)
  print(text or why)   -- the global print of the moment: a REPL or host may have replaced it
end

return _M
