-- ngx_host: handlers of the nginx used by the host tests (spec/hosts);
-- see tools/hosts/nginx.conf.in. Each answer is JSON the specs check
-- against the emulator's own records.
-- SPDX-License-Identifier: MIT
-- luacheck: std +ngx_lua

local topcalls = require "topcalls"
local tcngx    = require "topcalls.ngx"
local gateway  = require "topcalls_gateway"
local cjson    = require("cjson.safe").new()

local _M = {}

local function say(status, value)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode(value), "\n")
  return ngx.exit(ngx.OK)
end

local function params(name)
  return { carrier_name = name, sip_gateway = { ipv4 = "203.0.113.10", port = 5060 } }
end

-- init_by_lua (the master, before fork): a client that opens its
-- connection here, then is inherited by every worker.
local forked, master_result
function _M.init_master()
  local msg
  forked, msg = topcalls.new{ user_agent = "host-test-fork" }
  if not forked then master_result = { error = msg } return end
  local pid = ngx.worker.pid()
  local c, m = forked.carriers.add(params("master " .. pid), { idempotency_key = "forkm" .. pid .. "x00" })
  master_result = c and { sid = c.voip_carrier_sid, pid = pid, phase = ngx.get_phase() } or { error = m }
end

function _M.master() return say(200, master_result or { error = "init_master did not run" }) end

-- The example gateway, with a plain (blocking) client instead.
function _M.blocking() return gateway.handle(topcalls.carriers) end

-- topcalls.ngx with a pool that nginx.conf does not declare.
local nopool
function _M.nopool()
  nopool = nopool or assert(tcngx.new{ pool = "undeclared_pool" })
  return gateway.handle(nopool.carriers)
end

-- A plain require "topcalls" call inside an ngx.timer; the handler waits
-- (without blocking) for the timer's result in a shared dict.
function _M.timer()
  local name = ngx.unescape_uri(ngx.var.arg_name or "timer")
  local dict = ngx.shared.host_results
  local ok, why = ngx.timer.at(0, function(premature)
    if premature then return end
    local c, msg = topcalls.carriers.add(params(name))
    dict:safe_set(name, cjson.encode(c and { sid = c.voip_carrier_sid, pid = ngx.worker.pid() } or { error = msg }))
  end)
  if not ok then return say(500, { error = why }) end
  -- a ceiling for a broken timer, not a margin: a loaded machine is slow
  local deadline = ngx.now() + 30
  repeat
    local v = dict:get(name)
    if v then dict:delete(name) return say(200, cjson.decode(v)) end
    ngx.sleep(0.025)
  until ngx.now() >= deadline
  return say(504, { error = "the timer did not finish in 30 s" })
end

-- topcalls.ngx beyond the gateway: a logger (events replayed in this VM),
-- delete, validate, and tostring, all through the pool.
function _M.api()
  local name = ngx.unescape_uri(ngx.var.arg_name or "api")
  local events = {}
  local c = assert(tcngx.new{ logger = function(e) events[#events + 1] = e end, max_retries = 0 })
  local carrier, msg, err = c.carriers.add(params(name))
  if not carrier then return say(502, { error = msg }) end
  local deleted, dmsg = c.carriers.delete(carrier.id)
  local again, _, again_err = c.carriers.delete(carrier.id)
  local bad, _, bad_err = c.carriers.delete("../x")
  return say(200, {
    id = carrier.id, deleted = deleted, delete_error = dmsg,
    again = again, again_kind = again_err and again_err.kind, again_status = again_err and again_err.status,
    again_tostring = again_err and tostring(again_err), again_message = again_err and again_err.message,
    bad = bad, bad_path = bad_err and bad_err.errors[1].path,
    valid = c.carriers.validate(params(name)),
    events = events, client = tostring(c), err = err,
  })
end

-- The master's client, used from this worker (blocking, on purpose).
function _M.fork()
  if not forked then return say(500, master_result) end
  local pid = ngx.worker.pid()
  local key = "forkw" .. pid .. "x" .. ngx.var.request_id
  local c, msg = forked.carriers.add(params("fork " .. pid), { idempotency_key = key })
  if not c then return say(502, { error = msg, pid = pid }) end
  return say(200, { sid = c.voip_carrier_sid, pid = pid, key = key })
end

return _M
