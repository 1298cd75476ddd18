-- topcalls.fleet: declarative sync of carriers and their phone numbers.
-- A desired-state file (Lua or JSON) says which carriers the account has
-- and which numbers each routes; plan() reads the account and lists the
-- steps that make it match, apply() runs them in a safe order. Only the
-- resources' public operations are used, so it works over any client
-- (plain, topcalls.ngx). See the README's "Fleet sync" section.
-- SPDX-License-Identifier: MIT

local core   = require "topcalls.core"
local errors = require "topcalls.errors"
local json   = require "topcalls.json"
local client = require "topcalls.client"

local type, pairs, ipairs, next, tostring, pcall, setmetatable, error, select =
      type, pairs, ipairs, next, tostring, pcall, setmetatable, error, select
local setfenv, loadstring, load, min = rawget(_G, "setfenv"), rawget(_G, "loadstring"), load, math.min
local format, byte, concat, sort, getenv, open = string.format, string.byte, table.concat, table.sort, os.getenv, io.open
local NULL = json.null
local view = require "topcalls.view"
local lower, find, sub, huge = string.lower, string.find, string.sub, math.huge
local gethook, sethook, cocreate, resume = debug.gethook, debug.sethook, coroutine.create, coroutine.resume
local jit = rawget(_G, "jit")

local _M = {}

local DEFAULT_CONCURRENCY = 8
local SENSITIVE = "(sensitive)"

-- What plan() keeps out of the plan table: the desired params (they hold
-- passwords) and the observed records. Weak keys: it goes with the plan.
local private = setmetatable({}, { __mode = "k" })

---------------------------------------------------------------------------
-- The desired state: loading and validating

-- Is t a sequence 1..n with no other keys? (raw)
local function is_list(t)
  local n = 0
  for _ in next, t do n = n + 1 end
  for i = 1, n do if t[i] == nil then return false end end
  return true
end

-- A fresh shallow copy of a library table, so a fleet file that
-- assigns to `string.upper` changes its own copy, not the process's.
local function copy(t, without)
  local out = {}
  for k, v in pairs(t) do if k ~= without then out[k] = v end end
  return out
end

-- The environment a Lua fleet file runs in: enough to build lists in a
-- loop and read secrets from the environment, nothing that writes, and
-- no way to catch the instruction limit's error (no pcall).
local function file_env()
  return {
    os = { getenv = getenv }, string = copy(string, "dump"), table = copy(table), math = copy(math),
    ipairs = ipairs, pairs = pairs, tostring = tostring, tonumber = tonumber,
    assert = assert, error = error, type = type, select = select,
  }
end

-- How long a fleet file may run: far more than any real file needs (one
-- building 10,000 carriers takes a few million), little enough that an
-- endless loop ends in well under a second or two.
local MAX_INSTRUCTIONS = 50000000

-- Run chunk with an instruction-count hook on its own coroutine, so the
-- caller's hooks are untouched. LuaJIT does not call count hooks in
-- compiled code, so the chunk (and every function in it) runs
-- interpreted; its hooks are global, so the previous one is put back.
-- Returns ok, value (the error when not ok), and whether the limit hit.
local function run_bounded(chunk)
  if jit then jit.off(chunk, true) end
  local hf, hm, hc = gethook()
  local co, exceeded = cocreate(chunk), false
  sethook(co, function()
    exceeded = true
    error("the limit", 0)
  end, "", MAX_INSTRUCTIONS)
  local ok, value = resume(co)
  if jit then
    if type(hf) == "function" then sethook(hf, hm, hc) else sethook() end
  end
  return ok, value, exceeded
end

-- The path of the first key that appears twice in one object of JSON
-- `text` (already known to decode), or nil. cjson keeps the last value of
-- a repeated key without a word; a declarative file must not. A small
-- scanner over the structure: strings are skipped as wholes, so a key
-- inside a string value is no key; keys are compared decoded.
local function duplicate_key(text)
  local stack = {}                -- { path, keys (objects), index (arrays), key }
  local top
  local function child_path()
    local p = top.path
    if top.keys then return p == "" and top.key or p .. "." .. top.key end
    return p .. "[" .. top.index .. "]"
  end
  local i = 1
  while true do
    i = find(text, '[{}%[%],:"]', i)
    if not i then return nil end
    local c = sub(text, i, i)
    if c == '"' then
      local j = i + 1
      while true do
        local k = find(text, '["\\]', j)
        if sub(text, k, k) == '"' then j = k break end
        j = k + 2
      end
      if top and top.keys and top.expect_key then
        local key = sub(text, i + 1, j - 1)
        if find(key, "\\", 1, true) then key = json.decode("[" .. sub(text, i, j) .. "]")[1] end
        top.key, top.expect_key = key, false
        if top.keys[key] then return child_path() end
        top.keys[key] = true
      end
      i = j + 1
    else
      if c == "{" or c == "[" then
        local path = top and child_path() or ""
        top = { path = path, keys = c == "{" and {} or nil, index = 1, expect_key = true }
        stack[#stack + 1] = top
      elseif c == "}" or c == "]" then
        stack[#stack] = nil
        top = stack[#stack]
      elseif c == "," then
        if top.keys then top.expect_key = true else top.index = top.index + 1 end
      end
      i = i + 1
    end
  end
end

--- Read a fleet file: Lua (`return { carriers = ... }`, run in a small
-- sandbox: os.getenv and copies of string, table, math; source text only,
-- never bytecode; at most MAX_INSTRUCTIONS) or JSON (by the `.json`
-- extension or a first character `{`; a key repeated in an object is an
-- error). Returns the table, or nil, message, err (kind "validation", or
-- "config" for an unreadable file).
function _M.load(path)
  if type(path) ~= "string" then
    error("bad argument #1 to 'load' (string expected, got " .. type(path) .. ")", 2)
  end
  local f, why = open(path, "rb")
  if not f then return errors.fail("config", "cannot read fleet file: " .. why) end
  local text = f:read("*a") or ""
  f:close()
  local function bad(what, at, code)
    return errors.violations("validation", { { path = at or "", code = code or "format", message = path .. ": " .. what } })
  end
  if path:match("%.json$") or text:match("^%s*{") then
    local value, jwhy = json.decode(text)
    if type(value) ~= "table" then return bad("not a JSON object: " .. tostring(jwhy or type(value))) end
    local dup = duplicate_key(text)
    if dup then return bad("this key is given twice in its object (JSON would keep only the last)", dup, "duplicate") end
    return value
  end
  -- Bytecode is refused before it reaches the loader: 5.1 and LuaJIT
  -- have no text-only mode, and a crafted chunk can crash the process.
  if byte(text, 1) == 27 then
    return bad("is a precompiled (binary) chunk; a fleet file must be Lua source text")
  end
  local chunk, lwhy
  local env = file_env()
  if setfenv then   -- Lua 5.1 / LuaJIT
    chunk, lwhy = loadstring(text, "@" .. path)
    if chunk then setfenv(chunk, env) end
  else
    chunk, lwhy = load(text, "@" .. path, "t", env)
  end
  if not chunk then return bad(lwhy) end
  local ok, value, exceeded = run_bounded(chunk)
  if exceeded then
    return bad(format("ran for more than %d instructions (an endless loop?) and was stopped", MAX_INSTRUCTIONS))
  end
  if not ok then return bad("raised an error: " .. tostring(value)) end
  if type(value) ~= "table" then return bad("must return a table, got " .. type(value)) end
  return value
end

-- Append violations `list` (paths relative to an item) under prefix.
local function prefixed(list, prefix, out, whole)
  for _, e in ipairs(list) do
    local p = e.path
    if whole and p == whole then p = "" end   -- a string number: the entry is the field
    out[#out + 1] = { path = prefix .. (p ~= "" and "." .. p or ""), code = e.code, message = e.message }
  end
end

local TOP_FIELDS = { carriers = true }
local NUMBER_FIELDS = { number = true, label = true }

-- One number entry of carrier ci at position ni: a string or { number, label }.
local function check_number(entry, path, problems)
  local params
  if type(entry) == "string" then
    params = { number = entry }
  elseif type(entry) == "table" then
    params = {}
    for k, v in next, entry do
      if NUMBER_FIELDS[k] then
        params[k] = v
      elseif k == "voip_carrier_sid" then
        problems[#problems + 1] = { path = path .. "." .. k, code = "not_allowed",
          message = "is set by the carrier the number is listed under" }
      else
        problems[#problems + 1] = { path = path .. "." .. tostring(k), code = "unknown_field",
          message = "is not a known field (number, label)" }
      end
    end
  else
    problems[#problems + 1] = { path = path, code = "type",
      message = "must be an E.164 string or a table { number = ..., label = ... }" }
    return nil
  end
  local normalized, list = core.validate(params, true, "phone_number")
  if list and #list > 0 then
    prefixed(list, path, problems, type(entry) == "string" and "number" or nil)
    return nil
  end
  return { number = normalized.number, label = normalized.label, label_given = normalized.label ~= nil }
end

--- Validate a desired state offline, all of it: every violation with its
-- path (`carriers[2].numbers[1]`), duplicate carrier names, ids and
-- numbers. A carrier entry may hold `id` (the record it manages, see
-- make_plan). Returns the normalized state { carriers = { { name, id,
-- params, numbers, path } } } (params with the defaults filled in, without `numbers`), or
-- nil, message, err (kind "validation").
function _M.check(desired)
  if type(desired) ~= "table" then
    return errors.violations("validation", { { path = "", code = "type",
      message = "the desired state must be a table { carriers = { ... } }" } })
  end
  local problems = {}
  for k in next, desired do
    if not TOP_FIELDS[k] then
      problems[#problems + 1] = { path = tostring(k), code = "unknown_field", message = "is not a known field (carriers)" }
    end
  end
  local list = desired.carriers
  if list == nil then
    problems[#problems + 1] = { path = "carriers", code = "required", message = "is required" }
  elseif type(list) ~= "table" or not is_list(list) then
    problems[#problems + 1] = { path = "carriers", code = "type", message = "must be a list of carriers" }
    list = nil
  end
  local out, names, numbers, ids = { carriers = {} }, {}, {}, {}
  for ci, c in ipairs(list or {}) do
    local path = "carriers[" .. ci .. "]"
    if type(c) ~= "table" then
      problems[#problems + 1] = { path = path, code = "type", message = "must be a table (a carrier)" }
    else
      local params, nums = {}, c.numbers
      for k, v in next, c do if k ~= "numbers" and k ~= "id" then params[k] = v end end
      local normalized, plist = core.validate(params, true, "carrier")
      if plist and #plist > 0 then prefixed(plist, path, problems) end
      -- `id`: which record of the account this entry manages (adoption),
      -- needed only while the account has several carriers of its name
      local id = c.id
      if id ~= nil then
        if type(id) ~= "string" then
          problems[#problems + 1] = { path = path .. ".id", code = "type", message = "must be a carrier record id (a UUID string)" }
          id = nil
        elseif not core.check("uuid", id) then
          problems[#problems + 1] = { path = path .. ".id", code = "format", message = "must be a carrier record id (a UUID)" }
          id = nil
        else
          id = lower(id)
          if ids[id] then
            problems[#problems + 1] = { path = path .. ".id", code = "duplicate",
              message = "is also the id of " .. ids[id] .. " (a record is managed by one entry)" }
          else
            ids[id] = path
          end
        end
      end
      local name = type(c.carrier_name) == "string" and c.carrier_name or nil
      if name and names[name] then
        problems[#problems + 1] = { path = path .. ".carrier_name", code = "duplicate",
          message = "is also the name of " .. names[name] .. " (carriers are matched by name)" }
      elseif name then
        names[name] = path
      end
      local entry = { name = name, id = id, params = normalized, numbers = {}, path = path }
      if nums ~= nil and (type(nums) ~= "table" or not is_list(nums)) then
        problems[#problems + 1] = { path = path .. ".numbers", code = "type", message = "must be a list of numbers" }
        nums = nil
      end
      for ni, n in ipairs(nums or {}) do
        local npath = path .. ".numbers[" .. ni .. "]"
        local num = check_number(n, npath, problems)
        if num then
          if numbers[num.number] then
            problems[#problems + 1] = { path = npath, code = "duplicate",
              message = num.number .. " is also " .. numbers[num.number] .. " (a number is routed by one carrier)" }
          else
            numbers[num.number] = npath
            num.path = npath
            entry.numbers[#entry.numbers + 1] = num
          end
        end
      end
      out.carriers[ci] = entry
    end
  end
  if #problems > 0 then return errors.violations("validation", problems) end
  return out
end

---------------------------------------------------------------------------
-- Comparing, and what may be shown

local carrier_fields   -- core.describe("carrier"), read once

local function fields()
  carrier_fields = carrier_fields or core.describe("carrier")
  return carrier_fields
end

local function plain(v) if v == NULL then return nil end return v end

-- The differences between desired params `want` and an observed record
-- `have`, over the declared fields, skipping sensitive ones (the server
-- never returns passwords, so they cannot be compared): a list of
-- { path, before, after } with sensitive members masked.
local function mask(decl, v)
  if type(v) ~= "table" or not decl.members then return v end
  local out = {}
  for _, m in ipairs(decl.members) do
    local x = plain(v[m.name])
    if x ~= nil then out[m.name] = m.sensitive and SENSITIVE or mask(m, x) end
  end
  return out
end

local function diff(decls, want, have, prefix, out)
  for _, f in ipairs(decls) do
    if not f.sensitive then
      local w, h = want and plain(want[f.name]), have and plain(have[f.name])
      local path = prefix .. f.name
      if f.members and (type(w) == "table" or type(h) == "table") then
        if type(w) == "table" and type(h) == "table" then
          diff(f.members, w, h, path .. ".", out)
        else
          out[#out + 1] = { path = path, before = mask(f, h), after = mask(f, w) }
        end
      elseif w ~= h then
        out[#out + 1] = { path = path, before = h, after = w }
      end
    end
  end
  return out
end

--- params with every sensitive field shown as "(sensitive)": what a plan
-- and its output may carry.
function _M.redact(params)
  local out = {}
  for _, f in ipairs(fields()) do
    local v = plain(params[f.name])
    if v ~= nil then out[f.name] = f.sensitive and SENSITIVE or mask(f, v) end
  end
  return out
end

---------------------------------------------------------------------------
-- Idempotency keys

-- The Idempotency-Key of a step: HMAC-SHA-256 (OpenSSL, in the C core)
-- keyed by the API key, over the scope's base URL, the action, the
-- request body and what the step replaces (an old record id), cut to 128
-- bits. The same step of the same desired state on the same account
-- always sends the same key, so a re-run replays instead of creating
-- twice; and the body's passwords cannot be recovered from a logged key
-- without the API key. 38 characters of [a-z0-9-]. `scope` is
-- { base_url, mac } (see key_scope in bind).
local function step_key(scope, action, body, extra)
  local mac = scope.mac(concat({ scope.base_url or "", action, body, extra or "" }, "\n"))
  return "fleet-" .. mac:sub(1, 32)
end

---------------------------------------------------------------------------
-- plan

local COUNTS = {   -- which "Plan:" column each action counts in
  create = "add", add_number = "add", replace = "replace", move = "move",
  delete = "delete", release_number = "delete",
}

local plan_mt   -- set below (needs render)

-- Read the account: carriers (page by page) and phone numbers.
local function observe(target)
  local carriers = {}
  for c, msg, err in target.carriers.each() do
    if not c then return nil, msg, err end
    carriers[#carriers + 1] = c
  end
  local numbers, msg, err = target.phone_numbers.list()
  if not numbers then return nil, msg, err end
  return carriers, numbers
end

-- The plan for a checked desired state `doc` against the observed
-- account. See plan() for the rules.
local function make_plan(doc, carriers, numbers, opts)
  local prune = opts.prune == true
  local force = {}
  for _, name in ipairs(opts.replace or {}) do force[name] = true end
  local steps, warnings = {}, {}
  local by_name, by_sid = {}, {}
  for _, c in ipairs(carriers) do
    local name = plain(c.carrier_name)
    if name ~= nil then
      by_name[name] = by_name[name] or {}
      local l = by_name[name]
      l[#l + 1] = c
    end
    if type(c.voip_carrier_sid) == "string" then by_sid[c.voip_carrier_sid] = c end
  end

  -- 1. carriers: each desired one matched by the id the file gives it
  -- (adoption), else by name. Several carriers of one name and no id to
  -- choose: without prune an error (deleting the others would delete
  -- records the file does not manage); with prune the one equal to the
  -- file (else the first listed) is kept and the others are deleted.
  local target_of = {}   -- desired index -> { observed = record | nil, new = bool }
  local fate = {}        -- observed carrier -> "keep" | "replace" | "duplicate" | "prune" | "unmanaged"
  local owner_of = {}    -- observed carrier -> desired index (the record it manages)
  local desired_of = {}  -- E.164 -> { ci, num }
  local carrier_steps = {}
  local by_id, claimed, ambiguous = {}, {}, {}
  for _, c in ipairs(carriers) do
    if type(c.id) == "string" then by_id[lower(c.id)] = c end
  end
  for _, d in ipairs(doc.carriers) do
    if d.id and by_id[d.id] then claimed[by_id[d.id]] = true end
  end
  for ci, d in ipairs(doc.carriers) do
    for _, num in ipairs(d.numbers) do desired_of[num.number] = { ci = ci, num = num } end
    local candidates = {}   -- same name, not adopted by an entry's id
    for _, c in ipairs(by_name[d.name] or {}) do
      if not claimed[c] then candidates[#candidates + 1] = c end
    end
    local match, changes
    if d.id and by_id[d.id] then
      match = by_id[d.id]
    else
      if d.id then
        warnings[#warnings + 1] = d.path .. ".id: the account has no carrier " .. d.id
          .. " (deleted, or replaced by an apply); matched by name instead: update or remove the id"
      end
      if #candidates > 1 and not prune then ambiguous[#ambiguous + 1] = { d = d, candidates = candidates } end
      for _, c in ipairs(candidates) do   -- prefer one that already matches
        local ch = diff(fields(), d.params, c, "", {})
        if #ch == 0 then match, changes = c, ch break end
      end
      match = match or candidates[1]
    end
    changes = changes or (match and diff(fields(), d.params, match, "", {}))
    local step
    if not match then
      step = { action = "create", type = "carrier", carrier = d.name, index = ci, after = _M.redact(d.params) }
      target_of[ci] = { new = true }
    elseif #changes > 0 or force[d.name] then
      step = { action = "replace", type = "carrier", carrier = d.name, index = ci, id = match.id,
               reason = #changes > 0 and "changed" or "requested", changes = changes,
               after = _M.redact(d.params), numbers = {} }
      target_of[ci] = { observed = match, new = true }
      fate[match] = "replace"
    else
      step = { action = "unchanged", type = "carrier", carrier = d.name, index = ci, id = match.id }
      target_of[ci] = { observed = match }
      fate[match] = "keep"
    end
    carrier_steps[ci] = step
    if match then owner_of[match] = ci end
    for _, c in ipairs(candidates) do
      if c ~= match then fate[c] = prune and "duplicate" or "unmanaged" end
    end
  end
  if #ambiguous > 0 then
    local problems = {}
    for _, a in ipairs(ambiguous) do
      local ids = {}
      for i, c in ipairs(a.candidates) do ids[i] = tostring(c.id) end
      problems[#problems + 1] = { path = a.d.path .. ".carrier_name", code = "ambiguous", message = format(
        "the account has %d carriers named %s (ids %s) and the file manages one: add id = %s to %s "
        .. "to manage that one and leave the others alone, or plan with prune (--prune) to keep "
        .. "the one that matches the file and delete the others",
        #ids, view.quote(a.d.name), concat(ids, ", "), view.quote(ids[1]), a.d.path) }
    end
    return errors.violations("validation", problems)
  end
  local kept, unmanaged = 0, { carriers = 0, numbers = 0 }
  for _, c in ipairs(carriers) do
    if not fate[c] then fate[c] = prune and "prune" or "unmanaged" end
    if fate[c] == "keep" or fate[c] == "replace" then kept = kept + 1 end
    if fate[c] == "unmanaged" then unmanaged.carriers = unmanaged.carriers + 1 end
  end
  -- An empty file (or the wrong one) with prune would empty the account.
  if prune and kept == 0 and #carriers > 0 and not opts.prune_all then
    return errors.violations("validation", { { path = "prune", code = "prune_all", message = format(
      "would delete all %d carriers of the account (the file manages none of them); if that is "
      .. "what you want, ask for it with prune_all (--prune-all)", #carriers) } })
  end

  -- 2. numbers: matched by their E.164 value
  local number_steps = {}    -- desired index -> list of steps
  local leaving = {}         -- observed carrier -> list of its number steps (moves, releases)
  local function add_step(ci, step)
    number_steps[ci] = number_steps[ci] or {}
    local l = number_steps[ci]
    l[#l + 1] = step
  end
  local function leaves(owner, step)
    if not owner then return end
    leaving[owner] = leaving[owner] or {}
    local l = leaving[owner]
    l[#l + 1] = step
  end
  local seen = {}
  for _, r in ipairs(numbers) do
    local e164 = plain(r.number)
    local owner = by_sid[plain(r.voip_carrier_sid) or ""]
    local from = owner and plain(owner.carrier_name) or nil
    local label = plain(r.label)
    if type(e164) ~= "string" or seen[e164] then
      if seen[e164] then
        warnings[#warnings + 1] = "number " .. e164 .. " is listed twice; record " .. tostring(r.id) .. " is left alone"
      end
    else
      seen[e164] = true
      local want = desired_of[e164]
      if want then
        local ci, num = want.ci, want.num
        local t = target_of[ci]
        local new_label = num.label_given and num.label or label
        if owner and owner == t.observed and not t.new then
          if num.label_given and label ~= num.label then
            local s = { action = "replace", type = "number", number = e164, carrier = doc.carriers[ci].name,
                        index = ci, id = r.id, label = num.label, changes = { { path = "label", before = label, after = num.label } } }
            add_step(ci, s)
          else
            add_step(ci, { action = "unchanged", type = "number", number = e164, carrier = from, id = r.id })
          end
        elseif owner and owner == t.observed then
          -- its carrier is replaced: it moves with it
          local rs = carrier_steps[ci]
          rs.numbers[#rs.numbers + 1] = { number = e164, id = r.id, label = new_label }
          leaves(owner, rs)
        else
          local s = { action = "move", type = "number", number = e164, from = from, to = doc.carriers[ci].name,
                      index = ci, id = r.id, label = new_label, from_id = owner and owner.id or nil }
          if not owner then s.from_sid = plain(r.voip_carrier_sid) end
          add_step(ci, s)
          leaves(owner, s)
        end
      elseif owner and fate[owner] == "replace" then
        -- not in the file, but its carrier goes away: it moves with it
        local rs = carrier_steps[owner_of[owner]]
        rs.numbers[#rs.numbers + 1] = { number = e164, id = r.id, label = label, unmanaged = true }
        leaves(owner, rs)
      elseif prune then
        local s = { action = "release_number", type = "number", number = e164, from = from, id = r.id }
        leaves(owner, s)
        if owner and owner_of[owner] and fate[owner] ~= "duplicate" then
          add_step(owner_of[owner], s)        -- listed with the carrier that keeps its name
        elseif not owner then
          number_steps.orphans = number_steps.orphans or {}
          number_steps.orphans[#number_steps.orphans + 1] = s
        end
      else
        unmanaged.numbers = unmanaged.numbers + 1
      end
      if r.status and plain(r.status) ~= "active" and want then
        warnings[#warnings + 1] = "number " .. e164 .. " has status " .. tostring(plain(r.status))
      end
    end
  end
  for ci, d in ipairs(doc.carriers) do
    for _, num in ipairs(d.numbers) do
      if not seen[num.number] then
        add_step(ci, { action = "add_number", type = "number", number = num.number, to = d.name,
                       index = ci, label = num.label })
      end
    end
  end

  -- 3. the steps in reading order: each desired carrier with its
  -- numbers, then what goes away (numbers released before their carrier)
  for ci in ipairs(doc.carriers) do
    steps[#steps + 1] = carrier_steps[ci]
    for _, s in ipairs(number_steps[ci] or {}) do steps[#steps + 1] = s end
  end
  for _, s in ipairs(number_steps.orphans or {}) do steps[#steps + 1] = s end
  for _, c in ipairs(carriers) do
    if fate[c] == "duplicate" or fate[c] == "prune" then
      local held = {}
      for _, s in ipairs(leaving[c] or {}) do
        if s.action == "release_number" then steps[#steps + 1] = s end
        held[#held + 1] = s
      end
      steps[#steps + 1] = { action = "delete", type = "carrier", carrier = plain(c.carrier_name), id = c.id,
                            reason = fate[c] == "duplicate" and "duplicate" or "prune", numbers = #held }
    end
  end

  local summary = { add = 0, replace = 0, move = 0, delete = 0 }
  local changes = 0
  for _, s in ipairs(steps) do
    local col = COUNTS[s.action]
    if col then summary[col] = summary[col] + 1; changes = changes + 1 end
  end
  local plan = setmetatable({ steps = steps, summary = summary, changes = changes, prune = prune,
                              unmanaged = unmanaged, warnings = warnings }, plan_mt)
  private[plan] = { doc = doc, leaving = leaving, carriers = carriers, state = {} }
  return plan
end

---------------------------------------------------------------------------
-- Rendering a plan, Terraform style

local COLORS = { ["+"] = "\27[32m", ["-"] = "\27[31m", ["~"] = "\27[33m", ["-/+"] = "\27[35m" }
local RESET = "\27[0m"

-- A value as plan output shows it (JSON-like, sorted keys).
local function show(v)
  if v == nil then return "null" end
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = k .. " = " .. show(v[k]) end
    return "{ " .. concat(parts, ", ") .. " }"
  end
  if type(v) == "string" then return v == SENSITIVE and v or view.quote(v) end
  if type(v) == "number" then return format("%.14g", v) end
  return tostring(v)
end

local function attr_lines(sign, t, indent, lines)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys)
  local width = 0
  for _, k in ipairs(keys) do if #k > width then width = #k end end
  for _, k in ipairs(keys) do
    lines[#lines + 1] = { sign, indent .. k .. (" "):rep(width - #k) .. " = " .. show(t[k]) }
  end
  return lines
end

local function quoted(s) return s and view.quote(s) or "(unknown carrier)" end

-- "1 carrier", "2 phone numbers".
local function count_of(n, what) return n .. " " .. what .. (n == 1 and "" or "s") end

-- The plan as text: one block per change, then the "Plan:" line.
-- opts.color: ANSI colors (a terminal). Every line goes through
-- view.printable, so a server string cannot drive the terminal; the
-- colors are added after.
function _M.render(plan, opts)
  local color = opts and opts.color
  local out = {}
  -- One line: a sign right-aligned in three columns (four more inside a block).
  local function emit(sign, text, inner)
    text = view.printable(text)
    if sign == "" then out[#out + 1] = text return end
    local pad = (" "):rep(3 - #sign + (inner and 4 or 0))
    out[#out + 1] = pad .. (color and COLORS[sign] .. sign .. RESET or sign) .. " " .. text
  end
  local function gap() if out[#out] ~= "" then out[#out + 1] = "" end end
  local function block(lines)
    for _, l in ipairs(lines) do emit(l[1], l[2], true) end
  end
  for _, w in ipairs(plan.warnings) do emit("", "Warning: " .. w) end
  if #plan.warnings > 0 then out[#out + 1] = "" end
  local left = plan.unmanaged or { carriers = 0, numbers = 0 }
  local left_alone = left.carriers + left.numbers > 0
  if plan.changes == 0 then
    out[#out + 1] = left_alone and "No changes to what the file manages."
                    or "No changes. The account matches the file."
  else
    out[#out + 1] = "topcalls will perform the following actions:"
    out[#out + 1] = ""
  end
  for _, s in ipairs(plan.steps) do
    local a = s.action
    if a == "create" then
      gap(); emit("", "  # carrier " .. quoted(s.carrier) .. " will be created")
      emit("+", "carrier " .. quoted(s.carrier) .. " {")
      local lines = {}
      attr_lines("+", s.after, "", lines)
      block(lines)
      emit("", "    }")
    elseif a == "replace" and s.type == "carrier" then
      gap(); emit("", "  # carrier " .. quoted(s.carrier) .. " must be replaced (no update endpoint)"
             .. (s.reason == "requested" and ", as requested" or ""))
      emit("-/+", "carrier " .. quoted(s.carrier) .. " (id " .. tostring(s.id) .. ") {")
      for _, c in ipairs(s.changes) do
        emit("~", c.path .. " = " .. show(c.before) .. " -> " .. show(c.after) .. "  # forces replacement", true)
      end
      if #s.numbers > 0 then
        local n = {}
        for i, x in ipairs(s.numbers) do n[i] = x.number end
        emit("", "        # numbers moved to the new carrier: " .. concat(n, ", "))
      end
      emit("", "    }")
    elseif a == "replace" then
      emit("-/+", "number " .. s.number .. " on " .. quoted(s.carrier) .. ": label "
             .. show(s.changes[1].before) .. " -> " .. show(s.changes[1].after) .. "  # released and added again")
    elseif a == "add_number" then
      emit("+", "number " .. s.number .. " on " .. quoted(s.to) .. (s.label and " (label " .. show(s.label) .. ")" or ""))
    elseif a == "move" then
      emit("~", "number " .. s.number .. ": " .. quoted(s.from) .. " -> " .. quoted(s.to)
)
    elseif a == "release_number" then
      emit("-", "number " .. s.number .. " on " .. quoted(s.from) .. " (released)")
    elseif a == "delete" then
      gap(); emit("", "  # carrier " .. quoted(s.carrier) .. " will be deleted"
             .. (s.reason == "duplicate" and " (another carrier of this name is the one in the file)" or " (not in the file; --prune)"))
      emit("-", "carrier " .. quoted(s.carrier) .. " (id " .. tostring(s.id) .. ")")
    end
  end
  local m = plan.summary
  if plan.changes > 0 or left_alone then gap() end
  if left_alone then
    local what = {}
    if left.carriers > 0 then what[#what + 1] = count_of(left.carriers, "carrier") end
    if left.numbers > 0 then what[#what + 1] = count_of(left.numbers, "phone number") end
    out[#out + 1] = "Left alone: " .. concat(what, " and ") .. " the file does not name."
    out[#out + 1] = "  To delete them plan with --prune (opts.prune); to keep them, add them to the file."
  end
  out[#out + 1] = format("Plan: %d to add, %d to replace, %d to move, %d to delete.", m.add, m.replace, m.move, m.delete)
  return concat(out, "\n")
end

plan_mt = {
  __name = "topcalls.fleet.plan",
  __tostring = function(p) return _M.render(p) end,
}

---------------------------------------------------------------------------
-- apply

local function count_problems(opts)
  local problems = {}
  local c = opts.concurrency
  if c ~= nil and (type(c) ~= "number" or c < 1 or c > 64 or c % 1 ~= 0) then
    problems[#problems + 1] = { path = "concurrency", code = "range", message = "must be an integer from 1 to 64" }
  end
  if opts.on_progress ~= nil and type(opts.on_progress) ~= "function" then
    problems[#problems + 1] = { path = "on_progress", code = "type", message = "must be a function" }
  end
  return problems
end

-- Apply: carriers created first (concurrently), then numbers added and
-- moved (moves in batches: release, then add at once), then numbers
-- released and carriers deleted, a carrier only once every number it
-- held has left it. See apply() below.
local function run(target, scope, plan, opts)
  local p = private[plan]
  local doc, state = p.doc, p.state
  state.steps = state.steps or {}          -- step -> "done" | "failed"
  state.created = state.created or {}      -- desired index -> new carrier record
  state.numbers = state.numbers or {}      -- E.164 -> "released" | "moved"
  local concurrency = opts.concurrency or DEFAULT_CONCURRENCY
  local call = { timeout = opts.timeout, max_retries = opts.max_retries }
  local many = { concurrency = concurrency, timeout = call.timeout, max_retries = call.max_retries }
  local t0 = core.now()
  local result = { done = {}, failed = {}, total = 0, progress_errors = {} }
  local todo, observed_sid, old_record = {}, {}, {}
  for _, c in ipairs(p.carriers) do old_record[c.id] = c end
  for _, s in ipairs(plan.steps) do
    if s.action == "unchanged" then
      if s.type == "carrier" then observed_sid[s.index] = old_record[s.id].voip_carrier_sid end
    else
      result.total = result.total + 1
      if state.steps[s] ~= "done" then todo[#todo + 1] = s end
    end
  end
  local progress_n = result.total - #todo

  -- A step is over: record it, tell on_progress (which cannot break the run).
  local function settle(s, ok, msg, err)
    state.steps[s] = ok and "done" or "failed"
    if ok then
      result.done[#result.done + 1] = s
    else
      result.failed[#result.failed + 1] = { step = s, message = msg, err = err }
    end
    progress_n = progress_n + 1
    if opts.on_progress then
      local pok, why = pcall(opts.on_progress, progress_n, result.total, s,
                             ok and { ok = true } or { message = msg, err = err })
      if not pok then result.progress_errors[#result.progress_errors + 1] = tostring(why) end
    end
  end
  local function skipped(why)   -- message, err of a step that was not run
    local _, msg, err = errors.fail("skipped", why, { retryable = true })
    return msg, err
  end

  -- POST entries ({ params, key }) concurrently with add_many; each gets
  -- .record or .message/.err.
  local function post(res, field, entries)
    if #entries == 0 then return end
    local list, keys = {}, {}
    for i, e in ipairs(entries) do list[i], keys[i] = e.params, e.key end
    local results, _, merr = res.add_many(list, { idempotency_keys = keys, concurrency = many.concurrency,
                                                  timeout = many.timeout, max_retries = many.max_retries })
    for i, e in ipairs(entries) do
      local r = results and results[i] or { message = merr.message, err = merr }
      e.record, e.message, e.err = r[field], r.message, r.err
    end
  end

  -- An Idempotency-Key lives 24 h on the server: a record created under
  -- it and deleted since (by hand, or by an earlier plan) would be
  -- replayed, not created. After posting, list once; an answered record
  -- that is not there is sent again under a key derived from it.
  local function verify(res, field, entries)
    local answered = {}
    for _, e in ipairs(entries) do if e.record then answered[#answered + 1] = e end end
    if #answered == 0 then return end
    local present = {}
    for rec in res.each() do
      if not rec then return end   -- cannot list: trust the answers
      present[rec.id] = true
    end
    local again = {}
    for _, e in ipairs(answered) do
      if not present[e.record.id] then
        e.key = step_key(scope, "again", e.key, tostring(e.record.id))
        again[#again + 1] = e
      end
    end
    post(res, field, again)
  end

  local function body_of(params) return (json.encode(params)) end

  -- The voip_carrier_sid desired carrier ci routes through, or nil (not created).
  local function sid_of(ci) return state.created[ci] and state.created[ci].voip_carrier_sid or observed_sid[ci] end

  -- 1. carriers: creates and the new halves of replaces, concurrently
  local creates = {}
  for _, s in ipairs(todo) do
    if s.type == "carrier" and (s.action == "create" or s.action == "replace") and not state.created[s.index] then
      local params = doc.carriers[s.index].params
      creates[#creates + 1] = { step = s, params = params, key = step_key(scope, s.action, body_of(params), s.id) }
    end
  end
  post(target.carriers, "carrier", creates)
  verify(target.carriers, "carrier", creates)
  for _, e in ipairs(creates) do
    if e.record then
      state.created[e.step.index] = e.record
      if e.step.action == "create" then settle(e.step, true) end
    else
      settle(e.step, false, e.message, e.err)
    end
  end

  -- 2. numbers: plain adds at once; moves in batches of `concurrency`,
  -- each batch released then added at once, so no number waits
  -- unassigned longer than one batch
  local adds, moves = {}, {}
  for _, s in ipairs(todo) do
    if s.action == "add_number" then
      local sid = sid_of(s.index)
      if sid then
        local params = { number = s.number, voip_carrier_sid = sid, label = s.label }
        adds[#adds + 1] = { step = s, params = params, key = step_key(scope, "add_number", body_of(params)) }
      else
        settle(s, false, skipped("not started: carrier \"" .. s.to .. "\" was not created"))
      end
    elseif s.action == "move" or (s.action == "replace" and s.type == "number") then
      moves[#moves + 1] = { step = s, number = s.number, label = s.label, id = s.id, ci = s.index }
    elseif s.action == "replace" and s.type == "carrier" then
      for _, n in ipairs(s.numbers) do
        moves[#moves + 1] = { step = s, number = n.number, label = n.label, id = n.id, ci = s.index, part = true }
      end
    end
  end
  post(target.phone_numbers, "phone_number", adds)

  local part_failed = {}   -- replace step -> { message, err } of its first failed number
  local function move_failed(m, msg, err)
    if m.part then part_failed[m.step] = part_failed[m.step] or { msg, err }
    else settle(m.step, false, msg, err) end
  end
  local posted = {}
  for first = 1, #moves, concurrency do
    local batch = {}
    for k = first, min(first + concurrency - 1, #moves) do
      local m = moves[k]
      local sid = sid_of(m.ci)
      if not sid then
        move_failed(m, skipped("not started: carrier \"" .. doc.carriers[m.ci].name
                               .. "\" was not created; the number stays where it is"))
      elseif state.numbers[m.number] ~= "moved" then
        local ok, msg, err = true, nil, nil
        if state.numbers[m.number] ~= "released" then
          ok, msg, err = target.phone_numbers.delete(m.id, call)
          if not ok and err.status == 404 then ok = true end   -- gone already
        end
        if ok then
          state.numbers[m.number] = "released"
          m.params = { number = m.number, voip_carrier_sid = sid, label = m.label }
          m.key = step_key(scope, m.step.action == "move" and "move" or "readd", body_of(m.params), m.id)
          batch[#batch + 1] = m
        else
          move_failed(m, msg, err)
        end
      end
    end
    post(target.phone_numbers, "phone_number", batch)
    for _, m in ipairs(batch) do posted[#posted + 1] = m end
  end
  local all = {}
  for _, e in ipairs(adds) do all[#all + 1] = e end
  for _, e in ipairs(posted) do all[#all + 1] = e end
  verify(target.phone_numbers, "phone_number", all)
  for _, e in ipairs(adds) do settle(e.step, e.record ~= nil, e.message, e.err) end
  for _, m in ipairs(posted) do
    if m.record then
      state.numbers[m.number] = "moved"
      if not m.part then settle(m.step, true) end
    else
      move_failed(m, m.message, m.err)
    end
  end

  -- 3. releases, then deletes of carriers every number has left
  for _, s in ipairs(todo) do
    if s.action == "release_number" then
      local ok, msg, err = target.phone_numbers.delete(s.id, call)
      if ok or err.status == 404 then
        state.numbers[s.number] = "released"
        settle(s, true)
      else
        settle(s, false, msg, err)
      end
    end
  end
  local function delete_carrier(s)
    local held = {}
    for _, l in ipairs(p.leaving[old_record[s.id]] or {}) do
      local list = l.action == "replace" and l.numbers or { l }
      for _, n in ipairs(list) do
        if not state.numbers[n.number] or (l.action ~= "release_number" and state.numbers[n.number] ~= "moved") then
          held[#held + 1] = n.number
        end
      end
    end
    if #held > 0 then
      return settle(s, false, skipped("not deleted: it still routes " .. concat(held, ", ")))
    end
    local ok, msg, err = target.carriers.delete(s.id, call)
    if ok or err.status == 404 then settle(s, true) else settle(s, false, msg, err) end
  end
  for _, s in ipairs(todo) do
    if s.type == "carrier" and s.action == "replace" and state.created[s.index] then
      if part_failed[s] then settle(s, false, part_failed[s][1], part_failed[s][2])
      else delete_carrier(s) end
    end
  end
  for _, s in ipairs(todo) do
    if s.action == "delete" then delete_carrier(s) end
  end
  result.elapsed = core.now() - t0
  result.ok = #result.failed == 0
  return result
end

---------------------------------------------------------------------------
-- The public face: bound to a client (anything with `carriers` and
-- `phone_numbers` resources)

--- fleet functions over `target` (a client, or the topcalls module for
-- the default client). `scope` (the client's base URL) and `mac` (its
-- handle's HMAC, client:mac) derive every idempotency key; both nil: the
-- default client's, from the environment.
-- The optional options table of fname, raising the usual bad-argument
-- error (at the caller of fname) when it is not a table.
local function options_arg(fname, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to '" .. fname .. "' (table expected, got " .. type(opts) .. ")", 3)
  end
  return opts or {}
end

-- The path of the first value in v that a fleet file cannot hold (a
-- JSON null inside a table, a NaN or an infinity, a key that is neither a
-- string nor a positive integer), and what it is; nil when all is data.
local function not_data(v, path)
  local t = type(v)
  if t == "string" or t == "boolean" then return nil end
  if t == "number" then
    if v ~= v or v == huge or v == -huge then return path, "the number " .. tostring(v) end
    return nil
  end
  if t ~= "table" then return path, v == NULL and "a JSON null" or "a " .. t end
  for k, x in next, v do
    local kp
    if type(k) == "string" then kp = path .. "." .. k
    elseif type(k) == "number" and k >= 1 and k % 1 == 0 then kp = path .. "[" .. k .. "]"
    else return path, "a table with a " .. type(k) .. " key" end
    local where, what = not_data(x, kp)
    if where then return where, what end
  end
  return nil
end

-- opts.replace must name carriers of the file: a replace that matches
-- nothing (a typo in a password rotation) must not pass in silence.
local function replace_problems(doc, replace)
  if replace == nil then return {} end
  if type(replace) ~= "table" or not is_list(replace) then
    return { { path = "replace", code = "type", message = "must be a list of carrier names" } }
  end
  local names, known = {}, {}
  for i, d in ipairs(doc.carriers) do names[i], known[d.name] = d.name, true end
  local problems = {}
  for i, name in ipairs(replace) do
    if type(name) ~= "string" then
      problems[#problems + 1] = { path = "replace[" .. i .. "]", code = "type", message = "must be a carrier name (a string)" }
    elseif not known[name] then
      local hint = core.suggest(name, names)
      problems[#problems + 1] = { path = "replace[" .. i .. "]", code = "unknown",
        message = "the file has no carrier named " .. view.quote(name)
                  .. (hint and "; did you mean " .. view.quote(hint) .. "?" or "") }
    end
  end
  return problems
end

function _M.bind(target, scope, mac)
  local f = { check = _M.check, load = _M.load, render = _M.render, redact = _M.redact }
  -- What keys are derived with: the base URL and the MAC of the client's
  -- C handle (for the default client, of one built from the environment
  -- like the resources' own), or nil, message, err without a key.
  local function key_scope()
    local base_url, keyed = scope, mac
    if not keyed then
      local state, msg, err = client.new_state({})
      if not state then return nil, msg, err end
      base_url, keyed = state.settings.base_url, function(data) return state.handle:mac(data) end
    end
    if keyed("") == nil then return client.no_key() end
    return { base_url = base_url, mac = keyed }
  end

  --- Plan: read the account and list the steps that make it match
  -- `desired` (a table, or the path of a fleet file). opts: `prune`
  -- (delete carriers the file does not manage, release numbers it does
  -- not list), `prune_all` (prune even when that deletes every carrier of
  -- the account; implies prune), `replace` (names of carriers of the file
  -- to replace even when unchanged, e.g. after a password change).
  -- Returns the plan, or nil, message, err.
  function f.plan(desired, opts)
    if type(desired) ~= "table" and type(desired) ~= "string" then
      error("bad argument #1 to 'plan' (table or file name expected, got " .. type(desired) .. ")", 2)
    end
    opts = options_arg("plan", opts)
    if type(desired) == "string" then
      local value, msg, err = _M.load(desired)
      if not value then return nil, msg, err end
      desired = value
    end
    local doc, msg, err = _M.check(desired)
    if not doc then return nil, msg, err end
    local problems = replace_problems(doc, opts.replace)
    if #problems > 0 then return errors.violations("validation", problems) end
    opts = { prune = opts.prune == true or opts.prune_all == true, prune_all = opts.prune_all == true,
             replace = opts.replace }
    local carriers, numbers
    carriers, numbers, err = observe(target)
    if not carriers then return nil, numbers, err end
    return make_plan(doc, carriers, numbers, opts)
  end

  --- Apply a plan from plan(). opts: `concurrency` (1-64, default 8),
  -- `on_progress(done, total, step, outcome)`, `timeout`, `max_retries`.
  -- Returns { done = steps, failed = { { step, message, err } }, total,
  -- elapsed, ok }. Applying the same plan again runs only what has not
  -- been done (with the same idempotency keys).
  function f.apply(plan, opts)
    if type(plan) ~= "table" or not private[plan] then
      error("bad argument #1 to 'apply' (a plan from fleet.plan expected, got " .. type(plan) .. ")", 2)
    end
    opts = options_arg("apply", opts)
    local problems = count_problems(opts)
    if #problems > 0 then return errors.violations("validation", problems) end
    local keys, kmsg, kerr = key_scope()
    if not keys then return nil, kmsg, kerr end
    return run(target, keys, plan, opts)
  end

  --- The account as a desired state (adoption): every carrier with its
  -- numbers; passwords are not returned by the API and so are absent.
  -- Only strings, finite numbers, booleans and tables of them are
  -- exported: anything else the server sent is a `decode` error naming
  -- its path. Returns the table, or nil, message, err.
  function f.export()
    local carriers, numbers, err = observe(target)
    if not carriers then return nil, numbers, err end
    local out, by_sid = { carriers = {} }, {}
    for _, c in ipairs(carriers) do
      local params = {}
      for _, d in ipairs(fields()) do
        local v = plain(c[d.name])
        if type(v) == "table" and d.members then
          local o = {}
          for _, m in ipairs(d.members) do
            if not m.sensitive then o[m.name] = plain(v[m.name]) end
          end
          v = o
        end
        params[d.name] = v
      end
      params.numbers = {}
      out.carriers[#out.carriers + 1] = params
      if type(c.voip_carrier_sid) == "string" then by_sid[c.voip_carrier_sid] = params end
    end
    for _, n in ipairs(numbers) do
      local c = by_sid[plain(n.voip_carrier_sid) or ""]
      if c then
        local label = plain(n.label)
        c.numbers[#c.numbers + 1] = label and { number = n.number, label = label } or n.number
      end
    end
    for i, c in ipairs(out.carriers) do
      local where, what = not_data(c, "carriers[" .. i .. "]")
      if where then
        local message = "is " .. what .. " (a fleet file holds only strings, numbers, booleans and tables of them)"
        return errors.fail("decode", "cannot export the account: the server's " .. where .. " " .. message,
                           { errors = { { path = where, code = "type", message = message } } })
      end
    end
    return out
  end

  return f
end

return _M
