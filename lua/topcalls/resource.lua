-- topcalls.resource: every operation of a resource, written once. A
-- resource is a short descriptor (topcalls.carriers, topcalls.phone_numbers:
-- path, schema, id rule, how its records print); this module turns one
-- into the table users call: add, add_many, get, list, each, delete,
-- validate. Functions are plain closures: call them with a dot.
--
-- The network is reached through a transport of two functions, so the
-- same front serves a plain client and topcalls.ngx (whose transport hops
-- to a pool thread):
--   transport.call(method, path, body|nil, call_opts, decoder_name, secrets|nil)
--       -> value | nil, message, err            (client.call)
--   transport.bulk(path, items, opts, on_result) (client.bulk; items
--       { body, key, index, secrets })
-- `secrets`: the request's sensitive values, redacted from every answer.
--   transport.ready() -> true | nil, message, err (has it an API key?)
-- SPDX-License-Identifier: MIT

local core   = require "topcalls.core"
local errors = require "topcalls.errors"
local json   = require "topcalls.json"
local client = require "topcalls.client"
local view   = require "topcalls.view"

local type, error, ipairs, next, pcall, tostring, format, rawget, setmetatable =
      type, error, ipairs, next, pcall, tostring, string.format, rawget, setmetatable
local sort, huge, gsub, find = table.sort, math.huge, string.gsub, string.find

local _M = {}

-- The operations of every resource, in the order help() lists them.
_M.OPERATIONS = { "add", "add_many", "get", "list", "each", "delete", "validate" }

-- What each operation's first argument must be (programmer errors raise),
-- and whether it may be absent.
local FIRST_ARG = {
  add = "table", add_many = "table", validate = "table",
  get = "string", delete = "string", list = "table", each = "table",
}
local FIRST_ARG_OPTIONAL = { list = true, each = true }
local TAKES_CALL_OPTIONS = { add = true, add_many = true, get = true, delete = true }

local DEFAULT_CONCURRENCY, MAX_CONCURRENCY = 8, core.max_concurrency   -- lanes of one curl multi run
local DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000

-- add_many's and list's options, declared like the client's.
local MANY_OPTIONS = {
  concurrency      = { kind = "count", min = 1, max = MAX_CONCURRENCY },
  idempotency_keys = { kind = "table" },
  on_progress      = { kind = "function" },
  stop_on_error    = { kind = "boolean" },
  timeout          = client.CALL_OPTIONS.timeout,
  max_retries      = client.CALL_OPTIONS.max_retries,
}
local LIST_OPTIONS = {
  limit       = { kind = "count", min = 1, max = huge },
  page_size   = { kind = "count", min = 1, max = MAX_PAGE_SIZE },
  timeout     = client.CALL_OPTIONS.timeout,
  max_retries = client.CALL_OPTIONS.max_retries,
}
local READ_OPTIONS = {   -- get and delete: no body, so no idempotency key
  timeout     = client.CALL_OPTIONS.timeout,
  max_retries = client.CALL_OPTIONS.max_retries,
}
_M.MANY_OPTIONS, _M.LIST_OPTIONS, _M.READ_OPTIONS = MANY_OPTIONS, LIST_OPTIONS, READ_OPTIONS

-- Raise the usual "bad argument" error for a programmer's mistake.
-- Level 4: the caller of the public function.
local function bad_arg(fname, n, value, expected)
  error("bad argument #" .. n .. " to '" .. fname .. "' (" .. expected .. " expected, got "
        .. (value == nil and "no value" or type(value)) .. ")", 4)
end

-- The arguments every public entry checks before anything else.
local function check_args(fname, first, call)
  local expected = FIRST_ARG[fname]
  if type(first) ~= expected and not (first == nil and FIRST_ARG_OPTIONAL[fname]) then
    bad_arg(fname, 1, first, expected)
  end
  if call ~= nil and type(call) ~= "table" and TAKES_CALL_OPTIONS[fname] then
    bad_arg(fname, 2, call, "table")
  end
end

-- Options checked against a declaration, sorted by path: a list of
-- violations (empty when good).
local function option_problems(opts, declared, problems)
  problems = client.check_options(opts, declared, problems)
  sort(problems, function(a, b) return a.path < b.path end)
  return problems
end

-- Validate params (and call options) against the resource's schema: the
-- body to send, or nil, message, err with every violation. No network.
-- The C core validates and writes the body in one walk, in schema order
-- (the same bytes every run, so a reused Idempotency-Key replays). With
-- strict = false and undeclared fields it answers false: the normalized
-- table then goes to the generic encoder (sorted keys). Encoding is part
-- of validating: such a field may hold what JSON cannot carry, and
-- validate must refuse what add would.
local function prepare(desc, params, strict, call)
  local body, problems = core.body(params, strict, desc.schema)
  if call and next(call) ~= nil then problems = client.check_options(call, client.CALL_OPTIONS, problems) end
  if problems and #problems > 0 then return errors.violations("validation", problems) end
  if body then return body end
  local why
  body, why = json.encode((core.validate(params, strict, desc.schema)))
  if body then return body end
  return errors.fail("validation", "params cannot be encoded as JSON: " .. why,
                     { errors = { { path = "", code = "type", message = why } } })
end

-- The request's secrets: the non-empty strings of params at the paths the
-- schema marks sensitive (passwords), read raw as the validator reads
-- them. The transport redacts them from everything the server answers.
-- On every add: numeric loops over paths listed once per resource.
local secret_paths = setmetatable({}, { __mode = "k" })   -- desc -> list of paths (lists of names)

local function sensitive_paths(fields, prefix, out)
  for _, f in ipairs(fields) do
    local path = {}
    for i = 1, #prefix do path[i] = prefix[i] end
    path[#path + 1] = f.name
    if f.sensitive then out[#out + 1] = path end
    if f.members then sensitive_paths(f.members, path, out) end
  end
  return out
end

local function secrets_of(desc, params)
  local paths = secret_paths[desc]
  if not paths then
    paths = sensitive_paths(core.describe(desc.schema), {}, {})
    secret_paths[desc] = paths
  end
  local out
  for i = 1, #paths do
    local path, v = paths[i], params
    for j = 1, #path do
      if type(v) ~= "table" then v = nil; break end
      v = rawget(v, path[j])
    end
    if type(v) == "string" and v ~= "" then
      out = out or {}
      out[#out + 1] = v
    end
  end
  return out
end

-- Problems with a record id argument and its call options.
local function id_problems(desc, id, call)
  local problems = option_problems(call, READ_OPTIONS)
  if not core.check("uuid", id) then
    problems[#problems + 1] = { path = desc.id_name, code = "format", message = "must be " .. desc.id_what }
  end
  return problems
end

-- Percent-encode a query value (cursors are opaque server text).
local function escape(s)
  return (gsub(s, "[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end

-- A walk ends with a decode error after this many pages: at the largest
-- page_size that is 10 million records, and a server that hands out a
-- fresh cursor forever cannot keep us busy for ever either.
local MAX_PAGES = 10000
_M.MAX_PAGES = MAX_PAGES

-- The next page's query after page number `n` of a walk, whose decoded
-- body is `page` (see client.decode_page), or nil at the end, or false,
-- why when the server repeats itself. The shapes real APIs of this
-- family answer with: a bare array (everything at once); an object with
-- `data` and a cursor `next`; an object with `data` and `total`, `page`,
-- `page_size`. An empty `data` always ends the walk. Every cursor of the
-- walk is remembered in `cursors` (cursor -> the page that gave it): one
-- given again would start a loop. Page numbers are counted here, never
-- taken from the server.
local function next_query(page, items, page_size, n, cursors)
  if page.array or #items == 0 then return nil end
  local body = page.body
  local cursor = body.next
  if type(cursor) == "string" and cursor ~= "" then
    local first = cursors[cursor]
    if first then
      return false, format("list page %d repeats the cursor of page %d: the server is not advancing", n, first)
    end
    cursors[cursor] = n
    return "page_size=" .. page_size .. "&cursor=" .. escape(cursor)
  end
  local total, size = body.total, body.page_size
  if type(total) == "number" and type(size) == "number" and size > 0 and n * size < total then
    return format("page_size=%d&page=%d", page_size, n + 1)
  end
  return nil
end

-- The items of a decoded list page, or nil, message, err.
local function page_items(page, fields)
  local items = page.array and page.body or page.body.data
  if type(items) ~= "table" then
    return errors.fail("decode", "list response has no `data` array", fields)
  end
  for i = 1, #items do
    if type(items[i]) ~= "table" then
      return errors.fail("decode", "list item " .. i .. " is not a JSON object", fields)
    end
  end
  return items
end

-- The walker's answer for a walk that must end: false, message, err.
local function walk_failed(why)
  local _, msg, err = errors.fail("decode", why, { status = 200 })
  return false, msg, err
end

-- A page walker over the transport: each call returns the next page's
-- items (a table, maybe empty at the end), nil when done, or
-- false, message, err. A page-numbered server must answer the page asked
-- (when it says which); a repeated cursor or more than MAX_PAGES pages
-- end the walk after the items already fetched.
local function pages(desc, transport, opts)
  local page_size = opts.page_size or DEFAULT_PAGE_SIZE
  local query, n, cursors = "page_size=" .. page_size, 0, {}
  local call = { timeout = opts.timeout, max_retries = opts.max_retries }
  local stop   -- why the walk must end before the next request
  return function()
    if stop then
      local why = stop
      stop, query = nil, nil
      return walk_failed(why .. "; stopped after " .. n .. " pages")
    end
    if not query then return nil end
    if n == MAX_PAGES then
      query = nil
      return walk_failed("list has more than " .. MAX_PAGES .. " pages; stopped (pass a limit)")
    end
    n = n + 1
    local page, msg, err = transport.call("GET", desc.path .. "?" .. query, nil, call, "page")
    if not page then query = nil; return false, msg, err end
    local items
    items, msg, err = page_items(page, { status = 200 })
    if not items then query = nil; return false, msg, err end
    local answered = not page.array and page.body.page
    if n > 1 and type(answered) == "number" and answered ~= n and find(query, "&page=", 1, true) then
      query = nil
      return walk_failed(format("list server answered page %.14g when page %d was asked: it is not "
                         .. "advancing; stopped after %d pages", answered, n, n))
    end
    query, stop = next_query(page, items, page_size, n, cursors)
    return items
  end
end

-- The text of an error a callback raised: its string, else what its
-- tostring gives, else a description by type. The error value is the
-- caller's, so its __tostring may itself raise or answer a non-string;
-- neither may break the run that reports it.
local function error_text(why)
  if type(why) == "string" then return why end
  local ok, text = pcall(tostring, why)
  if ok and type(text) == "string" then return text end
  return "on_progress raised a " .. type(why) .. " that cannot be shown"
end

-- Complete a resource descriptor (topcalls.carriers) with what follows
-- from its noun: the records' metatable name, add_many's result field,
-- the id argument's name and description. Returns desc.
function _M.declare(desc)
  local noun = desc.noun
  desc.record_name = desc.record_name or "topcalls." .. noun
  desc.result_field = desc.result_field or noun                  -- add_many's results[i].carrier
  desc.id_name = desc.id_name or noun .. "_id"
  desc.id_what = desc.id_what or "a " .. noun:gsub("_", " ") .. " record id (a UUID)"
  return desc
end

-- Build the public resource `desc` over `transport`; `strict` is the
-- client's setting. Every runtime failure returns nil, message, err.
function _M.front(desc, transport, strict)
  local res = {}
  local record = function(t) return view.record(desc, t) end

  function res.validate(params)
    check_args("validate", params)
    local body, msg, err = prepare(desc, params, strict)
    if not body then return nil, msg, err end
    return true
  end

  function res.add(params, call)
    check_args("add", params, call)
    call = client.plain(call)
    local body, msg, err = prepare(desc, params, strict, call)
    if not body then return nil, msg, err end
    local value
    value, msg, err = transport.call("POST", desc.path, body, call, "object", secrets_of(desc, params))
    if not value then return nil, msg, err end
    return record(value)
  end

  -- A request on one record: the id is checked first (a UUID, so it can
  -- never change the path), then `method path/id`.
  local function on_record(method, id, call, decoder)
    call = client.plain(call)
    local problems = id_problems(desc, id, call)
    if #problems > 0 then return errors.violations("validation", problems) end
    return transport.call(method, desc.path .. "/" .. id, nil, call, decoder)
  end

  function res.get(id, call)
    check_args("get", id, call)
    local value, msg, err = on_record("GET", id, call, "object")
    if value then return record(value) end
    -- A server without the by-id route: find the record in the list.
    if desc.get_from_list and err.kind == "api" and (err.status == 404 or err.status == 405) then
      for item, lmsg, lerr in res.each(call) do
        if not item then return nil, lmsg, lerr end
        if item.id == id then return item end
      end
      -- Not in the list either: the promised 404, whichever way the
      -- lookup went (the route's own 404 may only say "no route").
      return errors.fail("api", "404 Not Found: no " .. gsub(desc.noun, "_", " ") .. " with id " .. id
                         .. " (the by-id route answered " .. err.status .. " and the list has none)",
                         { status = 404, attempts = err.attempts, request_id = err.request_id })
    end
    return nil, msg, err
  end

  function res.delete(id, call)
    check_args("delete", id, call)
    return on_record("DELETE", id, call, "none")
  end

  -- A generic-for iterator over every record, fetched page by page. On a
  -- failure it yields false, message, err once, then stops.
  function res.each(opts)
    check_args("each", opts)
    opts = client.plain(opts)
    local problems = option_problems(opts, LIST_OPTIONS)
    local failed
    if #problems > 0 then
      local _, msg, err = errors.violations("validation", problems)
      failed = { msg, err }
    end
    local next_page = not failed and pages(desc, transport, opts)
    local items, i, seen, limit = {}, 0, 0, opts.limit or huge
    return function()
      if failed then
        local f = failed
        failed, next_page = nil, nil
        return false, f[1], f[2]
      end
      while next_page and seen < limit do
        i = i + 1
        if items[i] ~= nil then
          seen = seen + 1
          return record(items[i])
        end
        local page, msg, err = next_page()
        if page == false then next_page = nil; return false, msg, err end
        if page == nil then next_page = nil; break end
        items, i = page, 0
      end
      return nil
    end
  end

  -- Every record (up to opts.limit) as one list, or nil, message, err.
  function res.list(opts)
    check_args("list", opts)
    local out = {}
    for item, msg, err in res.each(opts) do
      if not item then return nil, msg, err end
      out[#out + 1] = item
    end
    return view.list(desc, out)
  end

  -- Add many records concurrently (client.bulk): results[i] in input
  -- order, and a summary. See the README.
  function res.add_many(list, opts)
    check_args("add_many", list, opts)
    opts = client.plain(opts)
    local t0 = core.now()
    local problems = option_problems(opts, MANY_OPTIONS)
    if #problems > 0 then return errors.violations("validation", problems) end
    local ready, rmsg, rerr = transport.ready()
    if not ready then return nil, rmsg, rerr end
    local n = #list
    local keys = opts.idempotency_keys or {}
    local on_progress = opts.on_progress
    local results = {}
    local summary = { total = n, succeeded = 0, failed = 0, skipped = 0, progress_errors = {} }
    local done, first_failure = 0, nil

    -- Record an item's result; the progress callback can never break the run.
    local function settle(i, result)
      results[i] = result
      done = done + 1
      if result[desc.result_field] then
        summary.succeeded = summary.succeeded + 1
      elseif result.skipped then
        summary.skipped = summary.skipped + 1
      else
        summary.failed = summary.failed + 1
        first_failure = first_failure or i
      end
      if on_progress then
        local ok, why = pcall(on_progress, done, n, i, result)
        if not ok then
          local pe = summary.progress_errors
          pe[#pe + 1] = { index = i, message = error_text(why) }
        end
      end
    end

    -- 1. every item validated before anything is sent
    local items, seen = {}, {}
    for i = 1, n do
      local params, key = list[i], keys[i]
      local body, msg, err
      if type(params) ~= "table" then
        body, msg, err = errors.violations("validation", { { path = "", code = "type",
          message = "params must be a table, got " .. type(params) } })
      else
        body, msg, err = prepare(desc, params, strict, key ~= nil and { idempotency_key = key } or nil)
      end
      if body and key ~= nil and seen[key] then
        body, msg, err = errors.violations("validation", { { path = "idempotency_key", code = "conflict",
          message = "is also the key of item " .. seen[key] } })
      end
      if body then
        if key ~= nil then seen[key] = i end
        items[#items + 1] = { body = body, key = key or core.uuid4(), index = i, secrets = secrets_of(desc, params) }
      else
        settle(i, { message = msg, err = err })
      end
    end

    -- 2. the valid ones, concurrently; each finished item settles here
    if #items > 0 and not (opts.stop_on_error and first_failure) then
      local ok, msg, err = transport.bulk(desc.path, items, {
        concurrency = opts.concurrency or DEFAULT_CONCURRENCY, timeout = opts.timeout,
        max_retries = opts.max_retries, stop_on_error = opts.stop_on_error,
      }, function(k, value, vmsg, verr)
        settle(items[k].index, value and { [desc.result_field] = record(value) } or { message = vmsg, err = verr })
      end)
      if not ok then return nil, msg, err end
    end

    -- 3. what stop_on_error kept from starting
    for _, item in ipairs(items) do
      if results[item.index] == nil then
        local _, msg, err = errors.fail("skipped", "not started: stop_on_error after item "
                                        .. tostring(first_failure) .. " failed", { retryable = true })
        settle(item.index, { message = msg, err = err, skipped = true })
      end
    end
    summary.elapsed = core.now() - t0
    return results, summary
  end

  return res
end

-- The transport of a plain client state: the calls run right here.
function _M.direct(state)
  return {
    call = function(method, path, body, call, decoder, secrets)
      return client.call(state, method, path, body, call, decoder, secrets)
    end,
    bulk = function(path, items, opts, on_result)
      return client.bulk(state, path, items, opts, on_result)
    end,
    ready = function()
      if state.handle:has_key() then return true end
      return client.no_key()
    end,
  }
end

-- The resource of a default client that new() builds on first use; a
-- failed build is not cached, so fixing the environment fixes the next
-- call. `validate` needs no client (and no key): it is strict.
function _M.default(desc, new)
  local default_client
  local res = {}
  local offline = _M.front(desc, nil, true)
  res.validate = offline.validate
  for _, name in ipairs(_M.OPERATIONS) do
    if name ~= "validate" then
      res[name] = function(first, call)
        check_args(name, first, call)
        if not default_client then
          local c, msg, err = new()
          if not c then
            if name == "each" then
              return function() if msg then local m, e = msg, err; msg = nil; return false, m, e end end
            end
            return nil, msg, err
          end
          default_client = c
        end
        return default_client[desc.name][name](first, call)
      end
    end
  end
  return res
end

return _M
