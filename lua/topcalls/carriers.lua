-- topcalls.carriers: the carriers resource (add, delete, validate) of a
-- client. Functions are plain closures: call them with a dot.
-- SPDX-License-Identifier: MIT

local core    = require "topcalls.core"
local errors  = require "topcalls.errors"
local json    = require "topcalls.json"
local client  = require "topcalls.client"

local type, error, ipairs, pcall, tostring = type, error, ipairs, pcall, tostring
local sort = table.sort

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

-- The request body for validated params: the C core writes it in schema
-- order (the same bytes every run, so a reused Idempotency-Key replays);
-- with strict = false and undeclared fields, the generic encoder writes
-- it with sorted keys. body | nil, message, err
function _M.encode_body(normalized)
  local body = core.encode(normalized)
  if body then return body end
  local why
  body, why = json.encode(normalized)
  if body then return body end
  return errors.fail("validation", "params cannot be encoded as JSON: " .. why,
                     { errors = { { path = "", code = "type", message = why } } })
end

-- Validate params (and call options): the normalized table and its body,
-- or nil, message, err with every violation. No network. Encoding is part
-- of validating: with strict = false an undeclared field may hold what JSON
-- cannot carry, and validate must refuse what add would.
function _M.validate_params(params, strict, call)
  local normalized, problems = core.validate(params, strict)
  problems = problems or {}
  if call then client.check_options(call, client.CALL_OPTIONS, problems) end
  if #problems > 0 then return errors.violations("validation", problems) end
  local body, msg, err = _M.encode_body(normalized)
  if not body then return nil, msg, err end
  return normalized, body
end

-- add_many's options, declared like the client's: its own, plus add's
-- timeout and max_retries.
local MANY_DEFAULT_CONCURRENCY, MANY_MAX_CONCURRENCY = 8, 64
local MANY_OPTIONS = {
  concurrency      = { kind = "count", min = 1, max = MANY_MAX_CONCURRENCY },
  idempotency_keys = { kind = "table" },
  on_progress      = { kind = "function" },
  stop_on_error    = { kind = "boolean" },
  timeout          = client.CALL_OPTIONS.timeout,
  max_retries      = client.CALL_OPTIONS.max_retries,
}
-- A Retry-After on these answers is meant for the whole batch (the
-- account is rate limited, or the service is unavailable): new starts wait.
local BATCH_WIDE_STATUS = { [429] = true, [503] = true }

-- Check add_many's options: the list of violations (empty when good).
local function check_many_options(opts)
  local problems = client.check_options(opts, MANY_OPTIONS)
  sort(problems, function(a, b) return a.path < b.path end)
  return problems
end

-- Validate and encode one item of add_many: body, or nil, message, err.
-- `seen` maps the batch's idempotency keys to the item that uses them.
local function prepare_item(params, key, strict, seen, i)
  if type(params) ~= "table" then
    return errors.violations("validation", { { path = "", code = "type",
      message = "params must be a table, got " .. type(params) } })
  end
  local normalized, body, err = _M.validate_params(params, strict,
                                                   key ~= nil and { idempotency_key = key } or nil)
  if not normalized then return nil, body, err end
  if key ~= nil then
    if seen[key] then
      return errors.violations("validation", { { path = "idempotency_key", code = "conflict",
        message = "is also the key of item " .. seen[key] } })
    end
    seen[key] = i
  end
  return body
end

-- The resource of a default client that new() builds on first use; a
-- failed build is not cached, so fixing the environment fixes the next
-- call. `validate` needs no client (and no key).
function _M.default_resource(new, names, validate)
  local default_client
  local res = { validate = validate }
  for _, name in ipairs(names) do
    res[name] = function(first, call)
      _M.check_args(name, first, call)
      if not default_client then
        local c, msg, err = new()
        if not c then return nil, msg, err end
        default_client = c
      end
      return default_client.carriers[name](first, call)
    end
  end
  return res
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
    call = client.plain(call)
    local normalized, body, err = _M.validate_params(params, state.settings.strict, call)
    if not normalized then return nil, body, err end
    return client.call(state, "POST", PATH, body, call, client.decode_object)
  end

  -- Add many carriers concurrently on one curl multi handle (multi.c):
  -- results[i] in input order, and a summary. See the README.
  function res.add_many(list, opts)
    _M.check_args("add_many", list, opts)
    opts = client.plain(opts)
    local t0 = core.now()
    local problems = check_many_options(opts)
    if #problems > 0 then return errors.violations("validation", problems) end
    if not state.handle:has_key() then return client.no_key() end
    local s = state.settings
    local n = #list
    local keys = opts.idempotency_keys or {}
    local timeout = opts.timeout or s.timeout
    local max_retries = opts.max_retries or s.max_retries
    local on_progress, stop_on_error = opts.on_progress, opts.stop_on_error
    local results = {}
    local summary = { total = n, succeeded = 0, failed = 0, skipped = 0, progress_errors = {} }
    local done, first_failure = 0, nil

    -- Record an item's result; the progress callback can never break the run.
    local function settle(i, result)
      results[i] = result
      done = done + 1
      if result.carrier then
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
          pe[#pe + 1] = { index = i, message = tostring(why) }
        end
      end
    end

    -- 1. every item validated before anything is sent
    local valid, bodies, item_keys, seen = {}, {}, {}, {}
    for i = 1, n do
      local body, msg, err = prepare_item(list[i], keys[i], s.strict, seen, i)
      if body then
        local k = #valid + 1
        valid[k], bodies[k], item_keys[k] = i, body, keys[i] or core.uuid4()
      else
        settle(i, { message = msg, err = err })
      end
    end

    -- 2. the valid ones, concurrently; each finished attempt comes back
    -- here to be logged, retried or settled exactly as `add` does
    if #valid > 0 and not (stop_on_error and first_failure) then
      local bulk = state.handle:bulk(PATH, timeout, opts.concurrency or MANY_DEFAULT_CONCURRENCY, #valid)
      for k = 1, #valid do bulk:add(bodies[k], item_keys[k]) end
      local url = s.base_url .. PATH
      while true do
        local batch = bulk:run()
        if batch[1] == nil then break end
        for _, out in ipairs(batch) do
          local k = out.index
          local i = valid[k]
          local delay, verdict = core.retry_plan(out.attempt, max_retries, out.retryable, out.retry_after)
          if s.logger then
            pcall(s.logger, {
              method = "POST", url = url, attempt = out.attempt, max_attempts = max_retries + 1,
              outcome = out.kind, status = out.status,
              curl_code = out.kind == "transport" and out.curl_code or nil,
              error = out.error, elapsed = out.elapsed, retry_in = delay,
              verdict = out.kind == "ok" and "done" or verdict,
              request_id = out.headers["x-request-id"], idempotency_key = item_keys[k], index = i,
            })
          end
          if delay then
            if out.retry_after and BATCH_WIDE_STATUS[out.status] then bulk:hold(delay) end
            bulk:retry(k, delay)
          else
            local carrier, msg, err = client.finish(state.handle, out, out.attempt, verdict, client.decode_object)
            settle(i, carrier and { carrier = carrier } or { message = msg, err = err })
            if not carrier and stop_on_error then bulk:stop() end
          end
        end
      end
      bulk:close()
    end

    -- 3. what stop_on_error kept from starting
    for k = 1, #valid do
      local i = valid[k]
      if results[i] == nil then
        local _, msg, err = errors.fail("skipped", "not started: stop_on_error after item "
                                        .. tostring(first_failure) .. " failed", { retryable = true })
        settle(i, { message = msg, err = err, skipped = true })
      end
    end
    summary.elapsed = core.now() - t0
    return results, summary
  end

  function res.delete(carrier_id, call)
    _M.check_args("delete", carrier_id, call)
    call = client.plain(call)
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
