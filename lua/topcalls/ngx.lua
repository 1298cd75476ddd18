-- topcalls.ngx: the same API as `require "topcalls"` for nginx request
-- handlers, without blocking the worker's event loop: each call runs the
-- C core in a pool thread (ngx.run_worker_thread) whose Lua VM keeps its
-- own kept-alive client. Needs `thread_pool topcalls threads=N;` in the
-- main context of nginx.conf (or the pool named by the `pool` option).
-- SPDX-License-Identifier: MIT

local topcalls = require "topcalls"
local client   = require "topcalls.client"
local carriers = require "topcalls.carriers"
local errors   = require "topcalls.errors"
local json     = require "topcalls.json"
local core     = require "topcalls.core"

local type, pairs, ipairs, tostring, pcall, setmetatable, error, sort, concat =
      type, pairs, ipairs, tostring, pcall, setmetatable, error, table.sort, table.concat
local NULL = json.null

local _M = { VERSION = topcalls.VERSION, _VERSION = topcalls.VERSION }

local DEFAULT_POOL = "topcalls"

-- Phases where ngx.run_worker_thread may yield. "init" is the master
-- (init_by_lua), where blocking stalls nothing, so calls run directly.
local THREAD_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_client_hello = true, ssl_session_fetch = true,
}

-- A table marker for JSON null: cjson.null (a light userdata) cannot
-- cross the thread boundary, a plain table can.
local NULL_MARK = "\0topcalls.null"

local function copy_plain(v, from, to)
  if v == from then return to end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy_plain(x, from, to) end
  return out
end

local function null_to_mark(v) return copy_plain(v, NULL, NULL_MARK) end
local function mark_to_null(v) return copy_plain(v, NULL_MARK, NULL) end

---------------------------------------------------------------------------
-- The pool-thread side. One client per option set, per thread VM; thread
-- VMs are reused, so the connection stays alive between tasks.

local thread_clients, thread_count = {}, 0
local MAX_THREAD_CLIENTS = 32
local events   -- the running task's logger events, when its caller wants them

local function thread_logger(event)
  if events then events[#events + 1] = event end
end

-- ngx.run_worker_thread(pool, "topcalls.ngx", "run", op, key, opts, first, call, want_events)
-- Returns true, value, events | false, plain error table, events.
-- Never raises for a call's failure; opts hold no functions.
function _M.run(op, key, opts, first, call, want_events)
  local c = thread_clients[key]
  if not c then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.logger = thread_logger
    local _, err
    c, _, err = topcalls.new(o)
    if not c then return false, null_to_mark(err) end
    if thread_count >= MAX_THREAD_CLIENTS then thread_clients, thread_count = {}, 0 end
    thread_clients[key], thread_count = c, thread_count + 1
  end
  events = want_events and {} or nil
  local ok, value, _, err = pcall(c.carriers[op], first, call)
  local ev = events
  events = nil
  if not ok then
    return false, { kind = "transport", message = "topcalls: transport: worker thread failed: "
                    .. errors.one_line(value), errors = {}, retryable = false, attempts = 0 }, ev
  end
  if value == nil then return false, null_to_mark(err), ev end
  return true, null_to_mark(value), ev
end

---------------------------------------------------------------------------
-- The worker side.

-- Rebuild an error table that crossed the boundary as plain data.
local function rebuild(t)
  local msg = t.message
  local err = errors.new(t.kind or "transport", "", mark_to_null(t))
  err.message = msg
  return nil, msg, err
end

-- A stable cache key for an option set; a digest, so the key itself is
-- never a table key in the thread VM.
local function options_key(opts)
  local names = {}
  for k in pairs(opts) do names[#names + 1] = k end
  sort(names)
  local parts = {}
  for i, k in ipairs(names) do parts[i] = k .. "=" .. type(opts[k]) .. ":" .. tostring(opts[k]) end
  return ngx.md5(concat(parts, "\0"))
end

local function no_pool_error(pool, why)
  return errors.fail("config", "nginx thread pool '" .. pool .. "' is not available (" .. errors.one_line(why)
    .. "): add `thread_pool " .. pool .. " threads=4;` to the main context of nginx.conf, "
    .. "or use require \"topcalls\" for a blocking call")
end

--- Create a client: the options of topcalls.new plus `pool` (the
-- thread_pool name, default "topcalls"). Returns the client, or nil,
-- message, err (kind "config"). Options are checked here, at once.
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local pool = opts.pool
  if pool ~= nil and (type(pool) ~= "string" or pool == "") then
    return errors.violations("config", { { path = "pool", code = "type",
      message = "must be the name of an nginx thread_pool" } })
  end
  pool = pool or DEFAULT_POOL
  local plain = {}
  for k, v in pairs(opts) do
    if k ~= "pool" and k ~= "logger" then plain[k] = v end
  end
  local logger = opts.logger
  -- Check every option (and open nothing yet) the way topcalls.new does;
  -- the state also serves calls made in the master (init_by_lua).
  local direct_opts = {}
  for k, v in pairs(plain) do direct_opts[k] = v end
  direct_opts.logger = logger
  local direct, msg, err = topcalls.new(direct_opts)
  if not direct then return nil, msg, err end
  local strict = plain.strict ~= false
  local key = options_key(plain)

  -- One call: validate here, then hop to a pool thread.
  local function call(op, first, call_opts)
    local phase = ngx.get_phase()
    if phase == "init" then return direct.carriers[op](first, call_opts) end
    if not THREAD_PHASES[phase] then
      return errors.fail("config", "topcalls.ngx cannot run in the " .. phase .. " phase (no thread "
        .. "hop possible there): call it from a content/access/rewrite handler or an ngx.timer")
    end
    local ok, success, value, ev = ngx.run_worker_thread( -- luacheck: ignore 143 (ngx_lua >= 0.10.20)
      pool, "topcalls.ngx", "run", op, key, plain, first, call_opts or {}, logger ~= nil)
    if not ok then
      if type(success) == "string" and success:find("not found", 1, true) then
        return no_pool_error(pool, success)
      end
      return errors.fail("transport", "nginx worker thread failed: " .. tostring(success),
                         { retryable = false })
    end
    if logger and ev then
      for _, e in ipairs(ev) do pcall(logger, e) end
    end
    if success then return mark_to_null(value) end
    return rebuild(value)
  end

  local res = {}
  function res.validate(params)
    carriers.check_args("validate", params)
    local ok, m, e = carriers.validate_params(params, strict)
    if not ok then return nil, m, e end
    return true
  end
  function res.add(params, call_opts)
    carriers.check_args("add", params, call_opts)
    local ok, m, e = carriers.validate_params(params, strict, call_opts or {})
    if not ok then return nil, m, e end
    return call("add", params, call_opts)
  end
  function res.delete(carrier_id, call_opts)
    carriers.check_args("delete", carrier_id, call_opts)
    local problems = client.check_options(call_opts or {}, client.CALL_OPTIONS)
    if not core.check("uuid", carrier_id) then
      problems[#problems + 1] = { path = "carrier_id", code = "format",
        message = "must be a carrier record id (a UUID)" }
    end
    if #problems > 0 then return errors.violations("validation", problems) end
    return call("delete", carrier_id, call_opts)
  end

  return setmetatable({ carriers = res, pool = pool }, {
    __name = "topcalls.ngx.client",
    __tostring = function() return "topcalls.ngx.client (pool " .. pool .. ", " .. tostring(direct) .. ")" end,
    __metatable = "topcalls.ngx.client",
  })
end

-- The default client (environment options, pool "topcalls").
_M.carriers = carriers.default_resource(_M.new, { "add", "delete" }, topcalls.carriers.validate)

return _M
