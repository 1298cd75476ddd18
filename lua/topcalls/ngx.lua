-- topcalls.ngx: the same API as `require "topcalls"` for nginx request
-- handlers, without blocking the worker's event loop: each call runs the
-- C core in a pool thread (ngx.run_worker_thread) whose Lua VM keeps its
-- own kept-alive client. Needs `thread_pool topcalls threads=N;` in the
-- main context of nginx.conf (or the pool named by the `pool` option).
-- SPDX-License-Identifier: MIT

local topcalls = require "topcalls"
local client   = require "topcalls.client"
local resource = require "topcalls.resource"
local errors   = require "topcalls.errors"
local json     = require "topcalls.json"
local fleet    = require "topcalls.fleet"

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
-- The pool-thread side. One client state per option set, per thread VM;
-- thread VMs are reused, so the connection stays alive between tasks.

local thread_states, thread_count = {}, 0
local MAX_THREAD_CLIENTS = 32
local events   -- the running task's logger events, when its caller wants them

local function thread_logger(event)
  if events then events[#events + 1] = event end
end

-- The two transport functions, run in a pool thread: their arguments
-- and results are plain data.
local THREAD_WORK = {
  call = function(state, a)
    local value, _, err = client.call(state, a.method, a.path, a.body, a.call, a.decoder, a.secrets)
    if value == nil then return false, null_to_mark(err) end
    return true, null_to_mark(value)
  end,
  bulk = function(state, a)
    local results = {}
    local ok, _, err = client.bulk(state, a.path, a.items, a.opts, function(k, value, _, verr)
      results[#results + 1] = { k = k, value = null_to_mark(value), err = null_to_mark(verr) }
    end)
    if not ok then return false, null_to_mark(err) end
    return true, results
  end,
}

-- ngx.run_worker_thread(pool, "topcalls.ngx", "run", work, key, opts, args, want_events)
-- Returns true, value, events | false, plain error table, events.
-- Never raises for a call's failure; opts hold no functions.
function _M.run(work, key, opts, args, want_events)
  local state = thread_states[key]
  if not state then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.logger = thread_logger
    local _, err
    state, _, err = client.new_state(o)
    if not state then return false, null_to_mark(err) end
    if thread_count >= MAX_THREAD_CLIENTS then thread_states, thread_count = {}, 0 end
    thread_states[key], thread_count = state, thread_count + 1
  end
  events = want_events and {} or nil
  local ok, success, value = pcall(THREAD_WORK[work], state, args)
  local ev = events
  events = nil
  if not ok then
    return false, { kind = "transport", message = "topcalls: transport: worker thread failed: "
                    .. errors.one_line(success), errors = {}, retryable = false, attempts = 0 }, ev
  end
  return success, value, ev
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

-- The transport that runs each request in a pool thread (or directly in
-- the master, where blocking stalls nothing). `direct` is the transport
-- of a state built from the same options, used in init_by_lua.
local function thread_transport(pool, key, plain, logger, direct)
  -- Run `work` in a pool thread: ok, value | false, plain error.
  local function hop(work, args)
    local ok, success, value, ev = ngx.run_worker_thread( -- luacheck: ignore 143 (ngx_lua >= 0.10.20)
      pool, "topcalls.ngx", "run", work, key, plain, args, logger ~= nil)
    if not ok then
      if type(success) == "string" and success:find("not found", 1, true) then
        return false, select(3, no_pool_error(pool, success))
      end
      return false, select(3, errors.fail("transport", "nginx worker thread failed: " .. tostring(success),
                                          { retryable = false }))
    end
    if logger and ev then
      for _, e in ipairs(ev) do pcall(logger, e) end
    end
    return success, value
  end

  -- Where the call may run: "direct", "thread", or nil, message, err.
  local function where()
    local phase = ngx.get_phase()
    if phase == "init" then return "direct" end
    if THREAD_PHASES[phase] then return "thread" end
    return errors.fail("config", "topcalls.ngx cannot run in the " .. phase .. " phase (no thread "
      .. "hop possible there): call it from a content/access/rewrite handler or an ngx.timer")
  end

  return {
    ready = direct.ready,
    call = function(method, path, body, call, decoder, secrets)
      local w, msg, err = where()
      if w ~= "thread" then
        if w == "direct" then return direct.call(method, path, body, call, decoder, secrets) end
        return nil, msg, err
      end
      local ok, value = hop("call", { method = method, path = path, body = body, call = call, decoder = decoder,
                                      secrets = secrets })
      if not ok then return rebuild(value) end
      return mark_to_null(value)
    end,
    -- The whole run happens in one pool thread; its results reach
    -- on_result (and so on_progress) when it is over.
    bulk = function(path, items, opts, on_result)
      local w, msg, err = where()
      if w ~= "thread" then
        if w == "direct" then return direct.bulk(path, items, opts, on_result) end
        return nil, msg, err
      end
      local ok, value = hop("bulk", { path = path, items = items, opts = opts })
      if not ok then return rebuild(value) end
      for _, r in ipairs(value) do
        if r.value ~= nil then
          on_result(r.k, mark_to_null(r.value))
        else
          on_result(r.k, rebuild(r.err))
        end
      end
      return true
    end,
  }
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
  local plain, direct_opts = {}, {}
  for k, v in pairs(opts) do
    if k ~= "pool" and k ~= "logger" then plain[k] = v end
    if k ~= "pool" then direct_opts[k] = v end
  end
  -- Check every option the way topcalls.new does; the state also serves
  -- calls made in the master (init_by_lua).
  local state, msg, err = client.new_state(direct_opts)
  if not state then return nil, msg, err end
  local transport = thread_transport(pool, options_key(plain), plain, opts.logger, resource.direct(state))

  local c = { pool = pool }
  for _, desc in ipairs(topcalls.resources) do
    c[desc.name] = resource.front(desc, transport, state.settings.strict)
  end
  c.fleet = fleet.bind(c, state.settings.base_url, function(data) return state.handle:mac(data) end)
  return setmetatable(c, {
    __name = "topcalls.ngx.client",
    __tostring = function() return "topcalls.ngx.client (pool " .. pool .. ", " .. tostring(state.handle) .. ")" end,
    __metatable = "topcalls.ngx.client",
  })
end

-- The default client's resources (environment options, pool "topcalls").
for _, desc in ipairs(topcalls.resources) do
  _M[desc.name] = resource.default(desc, _M.new)
end
_M.fleet = fleet.bind(_M)

return _M
