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

-- Every operation of every resource through topcalls.ngx (content phase,
-- so each call hops to a pool thread): carriers add/list/each/get/delete,
-- phone_numbers add/get/list/each/validate/delete, add_many of both with
-- on_progress. Answers what each returned; the spec checks it against the
-- emulator's records.
local function err_of(err)
  return err and { kind = err.kind, status = err.status, errors = err.errors, message = err.message,
                   detail = err.detail, tostring = tostring(err) }
end

local function ids(list)
  local out = {}
  for i, rec in ipairs(list or {}) do out[i] = rec.id end
  return out
end

function _M.resources()
  local name = ngx.unescape_uri(ngx.var.arg_name or "resources")
  local base = ngx.crc32_short(name) % 9000000 + 1000000       -- seven digits, one per test name
  local c = assert(tcngx.new{})
  local out = { phase = ngx.get_phase(), operations = {} }
  for _, desc in ipairs(topcalls.resources) do
    for _, op in ipairs(require("topcalls.resource").OPERATIONS) do
      out.operations[#out.operations + 1] = desc.name .. "." .. op .. "="
        .. type(c[desc.name][op]) .. "/" .. type(tcngx[desc.name][op])
    end
  end

  -- carriers: add, list, each, get
  local carrier, msg = c.carriers.add(params(name))
  if not carrier then return say(502, { error = msg }) end
  out.carrier = { id = carrier.id, sid = carrier.voip_carrier_sid, mt = getmetatable(carrier).__name,
                  text = tostring(carrier) }
  local list, _, lerr = c.carriers.list()
  local found
  for _, rec in ipairs(list or {}) do if rec.id == carrier.id then found = rec end end
  out.carriers_list = { n = list and #list, mt = list and getmetatable(list).__name, err = err_of(lerr),
                        found = found and getmetatable(found).__name, text = list and tostring(list) }
  local walked, each_err = {}, nil
  for rec, _, werr in c.carriers.each{ page_size = 1, limit = 3 } do
    if not rec then each_err = err_of(werr) break end
    walked[#walked + 1] = { id = rec.id, mt = getmetatable(rec).__name }
  end
  out.carriers_each = { walked = walked, err = each_err, first_ids = ids({ list and list[1], list and list[2],
                                                                          list and list[3] }) }
  local got, _, gerr = c.carriers.get(carrier.id)
  out.carriers_get = { id = got and got.id, mt = got and getmetatable(got).__name, err = err_of(gerr) }
  local _, _, missing = c.carriers.get("00000000-0000-4000-8000-000000000000")
  out.carriers_get_missing = err_of(missing)

  -- phone numbers: add, get, list, each, validate
  local number = ("+1415%07d"):format(base)
  local pn, pmsg, perr = c.phone_numbers.add{ number = number, voip_carrier_sid = carrier.voip_carrier_sid,
                                              label = "host" }
  out.pn_add = { id = pn and pn.id, number = pn and pn.number, label = pn and pn.label,
                 sid = pn and pn.voip_carrier_sid, mt = pn and getmetatable(pn).__name,
                 text = pn and tostring(pn), err = err_of(perr), msg = pmsg }
  if not pn then return say(502, out) end
  local again, _, again_err = c.phone_numbers.add{ number = number, voip_carrier_sid = carrier.voip_carrier_sid }
  out.pn_add_again = { ok = again ~= nil, err = err_of(again_err) }
  local pg, _, pgerr = c.phone_numbers.get(pn.id)
  out.pn_get = { id = pg and pg.id, number = pg and pg.number, status = pg and pg.status,
                 mt = pg and getmetatable(pg).__name, err = err_of(pgerr) }
  local plist, _, plerr = c.phone_numbers.list()
  local in_list = false
  for _, rec in ipairs(plist or {}) do if rec.id == pn.id then in_list = getmetatable(rec).__name end end
  out.pn_list = { n = plist and #plist, mt = plist and getmetatable(plist).__name, found = in_list,
                  err = err_of(plerr) }
  local pn_walked, pn_each_err = 0, nil
  local in_each = false
  for rec, _, werr in c.phone_numbers.each{ page_size = 2 } do
    if not rec then pn_each_err = err_of(werr) break end
    pn_walked = pn_walked + 1
    if rec.id == pn.id then in_each = true end
  end
  out.pn_each = { n = pn_walked, found = in_each, err = pn_each_err }
  local vok, _, verr = c.phone_numbers.validate{ number = "+999123456789", label = "" }
  out.pn_validate = { ok = vok, err = err_of(verr), good = c.phone_numbers.validate{ number = number } }

  -- the carrier cannot go while it routes a number: the server's 422
  local cdel, _, cdel_err = c.carriers.delete(carrier.id)
  out.carrier_delete_busy = { ok = cdel, err = err_of(cdel_err) }

  -- add_many: carriers, then numbers on the new carrier, each item's progress
  local progress = { carriers = {}, numbers = {} }
  local many, summary = c.carriers.add_many({ params(name .. " m1"), { carrier_name = "" }, params(name .. " m2") },
    { on_progress = function(done, total, i)
        progress.carriers[#progress.carriers + 1] = { done = done, total = total, i = i }
      end })
  out.carriers_many = { summary = summary and { total = summary.total, succeeded = summary.succeeded,
                                                failed = summary.failed },
                        ids = { many and many[1].carrier and many[1].carrier.id, nil,
                                many and many[3].carrier and many[3].carrier.id },
                        mt = many and many[1].carrier and getmetatable(many[1].carrier).__name,
                        bad = many and err_of(many[2].err), progress = progress.carriers }
  local nums, nsummary = c.phone_numbers.add_many({
    { number = ("+1415%07d"):format(base + 1), voip_carrier_sid = carrier.voip_carrier_sid },
    { number = "+28123456789" },
    { number = ("+1415%07d"):format(base + 2), voip_carrier_sid = carrier.voip_carrier_sid, label = "m" },
  }, { on_progress = function(done, total, i)
        progress.numbers[#progress.numbers + 1] = { done = done, total = total, i = i }
      end, concurrency = 2 })
  out.numbers_many = { summary = nsummary and { total = nsummary.total, succeeded = nsummary.succeeded,
                                                failed = nsummary.failed },
                       numbers = { nums and nums[1].phone_number and nums[1].phone_number.number, nil,
                                   nums and nums[3].phone_number and nums[3].phone_number.number },
                       mt = nums and nums[1].phone_number and getmetatable(nums[1].phone_number).__name,
                       bad = nums and err_of(nums[2].err), progress = progress.numbers }

  -- delete: every number, then the carriers
  out.deleted = {}
  local to_delete = { pn.id, nums and nums[1].phone_number and nums[1].phone_number.id,
                      nums and nums[3].phone_number and nums[3].phone_number.id }
  for i = 1, 3 do
    local id = to_delete[i]
    local ok, _, derr = c.phone_numbers.delete(id or "missing")
    out.deleted[#out.deleted + 1] = { ok = ok, err = err_of(derr) }
  end
  local after, _, after_err = c.phone_numbers.get(pn.id)
  out.pn_get_deleted = { ok = after ~= nil, err = err_of(after_err) }
  for _, id in ipairs({ carrier.id, out.carriers_many.ids[1] or "missing", out.carriers_many.ids[3] or "missing" }) do
    local ok, _, derr = c.carriers.delete(id)
    out.deleted[#out.deleted + 1] = { ok = ok, err = err_of(derr) }
  end
  return say(200, out)
end

-- One list call through the pool, for the non-blocking check: the
-- emulator's latency holds each request, and the worker must not wait.
function _M.list_one()
  local c = assert(tcngx.new{})
  local list, msg = c.carriers.list{ page_size = 7, limit = 1 }
  if not list then return say(502, { error = msg }) end
  return say(200, { n = #list, mt = getmetatable(list).__name })
end

-- client.fleet through the pool: one carrier with two numbers planned
-- and applied, then planned again (must be empty). ?name=&n= (n picks
-- the numbers, so each test run uses its own).
function _M.fleet()
  local name = ngx.unescape_uri(ngx.var.arg_name or "fleet")
  local n = tonumber(ngx.var.arg_n) or 1
  local c = assert(tcngx.new{ max_retries = 0 })
  local desired = { carriers = { { carrier_name = name, sip_gateway = { ipv4 = "203.0.113.10" },
    numbers = { ("+1415%07d"):format(2 * n), ("+1415%07d"):format(2 * n + 1) } } } }
  local plan, msg = c.fleet.plan(desired)
  if not plan then return say(502, { error = msg }) end
  local result = c.fleet.apply(plan)
  local again, amsg = c.fleet.plan(desired)
  return say(200, { summary = plan.summary, done = #result.done, failed = #result.failed,
                    error = result.failed[1] and result.failed[1].message,
                    again = again and again.changes, again_error = amsg })
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
