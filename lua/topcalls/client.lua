-- topcalls.client: a client's settings, the attempt loop with retries and
-- logging, and the mapping of a finished exchange to a result or error.
-- The API key lives only inside the C handle; nothing here holds it.
-- SPDX-License-Identifier: MIT

local core    = require "topcalls.core"
local errors  = require "topcalls.errors"
local json    = require "topcalls.json"

local type, pairs, ipairs, next, tostring, pcall, setmetatable, getenv, open =
      type, pairs, ipairs, next, tostring, pcall, setmetatable, os.getenv, io.open
local floor, huge, find, byte = math.floor, math.huge, string.find, string.byte

local _M = { VERSION = "0.2.0" }   -- the one place the version is written (tools/check-dist)

local DEFAULT_BASE_URL = "https://api.topcalls.ai"

local function is_number(v) return type(v) == "number" and v == v and v > -huge and v < huge end

-- Each option declared once: what it must be, and its default.
local OPTIONS = {
  api_key         = { kind = "token" },
  base_url        = { kind = "url" },
  timeout         = { kind = "seconds", default = 30 },
  connect_timeout = { kind = "seconds", default = 10 },
  max_retries     = { kind = "count", default = 2 },
  ca_file         = { kind = "file" },
  proxy           = { kind = "url" },
  user_agent      = { kind = "line" },
  strict          = { kind = "boolean", default = true },
  logger          = { kind = "function" },
}

-- The same kinds serve the per-call options of carriers.add/delete.
local CALL_OPTIONS = {
  idempotency_key = { kind = "idempotency_key" },
  timeout         = { kind = "seconds" },
  max_retries     = { kind = "count" },
}
_M.CALL_OPTIONS = CALL_OPTIONS

local MAX_RETRIES_LIMIT = 10

-- The largest number of seconds any `seconds` option takes (a day): past
-- it libcurl's milliseconds would overflow, and no answer is worth a
-- longer wait. One rule for every such option, client-wide or per call.
local MAX_SECONDS = 86400
_M.MAX_SECONDS = MAX_SECONDS

local tointeger = math.tointeger or function(v) return v end   -- 5.1/LuaJIT: every number is a float

-- Check one value of a declared kind: nil when good, else code, message.
-- Messages never quote the value: it may be a key. A good value that
-- must change form comes back as nil, nil, value (check_options stores
-- it): an integral float, what a JSON config file gives, is a count as
-- the integer it equals, so `page_size = 50.0` is sent as `50`.
local CHECKS = {
  string = function(v)
    if type(v) ~= "string" then return "type", "must be a string" end
    if v == "" then return "length", "must not be empty" end
  end,
  -- the C core checks the URL's shape (tc_client_check_url); a NUL would
  -- cut its copy short there, so text that is not one line stops here
  url = function(v)
    if type(v) ~= "string" then return "type", "must be a string" end
    if v == "" then return "length", "must not be empty" end
    if find(v, "[%s%c]") then return "format", "must not contain whitespace or control characters" end
  end,
  token = function(v)
    if type(v) ~= "string" then return "type", "must be a string" end
    if v == "" then return "length", "must not be empty" end
    if find(v, "[%s%c]") then return "format", "must not contain whitespace or control characters" end
  end,
  line = function(v)
    if type(v) ~= "string" then return "type", "must be a string" end
    if find(v, "%c") then return "format", "must not contain control characters" end
  end,
  file = function(v)
    if type(v) ~= "string" then return "type", "must be a string" end
    local f = open(v, "rb")
    if not f then return "format", "cannot be read: " .. v end
    f:close()
  end,
  seconds = function(v)
    if not is_number(v) then return "type", "must be a number of seconds" end
    if v <= 0 or v > MAX_SECONDS then return "range", "must be greater than 0 and at most " .. MAX_SECONDS end
  end,
  count = function(v, decl)
    local min, max = decl.min or 0, decl.max or MAX_RETRIES_LIMIT
    if not is_number(v) or floor(v) ~= v then return "type", "must be an integer" end
    if v < min or v > max then return "range", "must be from " .. min .. " to " .. max end
    return nil, nil, tointeger(v) or v   -- tointeger: nil past 2^63 (a huge `limit`)
  end,
  table = function(v)
    if type(v) ~= "table" then return "type", "must be a table" end
  end,
  boolean = function(v)
    if type(v) ~= "boolean" then return "type", "must be a boolean" end
  end,
  ["function"] = function(v)
    if type(v) ~= "function" then return "type", "must be a function" end
  end,
  idempotency_key = function(v)
    if type(v) ~= "string" then return "type", "must be a string" end
    if #v < 8 or #v > 255 then return "length", "must be 8 to 255 characters" end
    if not core.check("token", v) then return "format", "may only contain A-Z, a-z, 0-9, '_' and '-'" end
  end,
}

-- A plain copy of a caller's options table, read raw (next): a metatable's
-- __index or __pairs never runs, as for params.
local NO_OPTIONS = setmetatable({}, { __newindex = function() error("topcalls: options are read-only", 2) end })

function _M.plain(t)
  if t == nil then return NO_OPTIONS end
  local out = {}
  for k, v in next, t do out[k] = v end
  return out
end

-- Check a table of options against a declaration; returns the list of
-- violations (empty when all are good).
local sorted_names = setmetatable({}, { __mode = "k" })

function _M.check_options(opts, declared, list)
  list = list or {}
  if next(opts) == nil then return list end   -- the common case: no options
  local names = sorted_names[declared]
  if not names then
    names = {}
    for name in pairs(declared) do names[#names + 1] = name end
    table.sort(names)
    sorted_names[declared] = names
  end
  for _, name in ipairs(names) do
    local v = opts[name]
    if v ~= nil then
      local code, message, value = CHECKS[declared[name].kind](v, declared[name])
      if code then
        list[#list + 1] = { path = name, code = code, message = message }
      elseif value ~= nil then
        opts[name] = value
      end
    end
  end
  for k in pairs(opts) do
    if declared[k] == nil then
      -- never tostring() a key: its __tostring would be the caller's code
      local key = type(k) == "string" and k or "[" .. (type(k) == "number" and tostring(k) or type(k)) .. "]"
      local hint = type(k) == "string" and core.suggest(k, names)
      list[#list + 1] = { path = key, code = "unknown_field",
        message = "is not a known option" .. (hint and " (did you mean '" .. hint .. "'?)" or "") }
    end
  end
  return list
end

local function env(name)
  local v = getenv(name)
  if v ~= nil and v ~= "" then return v end
end

local function lua_version()
  local jit = rawget(_G, "jit")
  return type(jit) == "table" and jit.version or _VERSION
end

-- The resolved settings of a client: options over environment over
-- defaults. Returns settings, or nil, message, err (kind "config").
function _M.settings(opts)
  opts = _M.plain(opts)
  local problems = _M.check_options(opts, OPTIONS)
  if #problems > 0 then return errors.violations("config", problems) end
  local s = {}
  for name, decl in pairs(OPTIONS) do
    local v = opts[name]
    if v == nil then v = decl.default end
    s[name] = v
  end
  s.api_key = opts.api_key or env("TOPCALLS_API_KEY")
  s.base_url = opts.base_url or env("TOPCALLS_BASE_URL") or DEFAULT_BASE_URL
  s.user_agent = "topcalls-lua/" .. _M.VERSION .. " (" .. lua_version() .. "; libcurl/"
                 .. core.curl_version .. ")" .. (opts.user_agent and " " .. opts.user_agent or "")
  -- what came from the environment is checked as the options were
  local from_env = {
    { name = "api_key", check = CHECKS.token, env = "TOPCALLS_API_KEY" },
    { name = "base_url", check = CHECKS.url, env = "TOPCALLS_BASE_URL" },
  }
  for _, f in ipairs(from_env) do
    if s[f.name] and opts[f.name] == nil then
      local code, message = f.check(s[f.name])
      if code then
        return errors.violations("config", { { path = f.name, code = code, message = message .. " (from " .. f.env .. ")" } })
      end
    end
  end
  return s
end

-- Open the C handle for settings s: handle, or nil, message, err.
function _M.open(s)
  local handle, why = core.client_new(s)
  if not handle then
    return errors.violations("config", { { path = "base_url", code = "format", message = why } })
  end
  return handle
end

local function call_logger(s, event)
  if s.logger then pcall(s.logger, event) end   -- a broken logger must not break a call
end

-- Is this a JSON media type? ("application/json", "application/problem+json",
-- "application/<x>+json", parameters ignored). The rule is C's alone
-- (core.c's json_media_type), the one the C decoding path applies.
local core_is_json = core.is_json
local function is_json(content_type)
  return type(content_type) == "string" and core_is_json(content_type)
end

local REASONS = {
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other", [307] = "Temporary Redirect",
  [308] = "Permanent Redirect", [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict",
  [413] = "Content Too Large", [415] = "Unsupported Media Type", [422] = "Unprocessable Content",
  [429] = "Too Many Requests", [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

-- The redactor of one call. Everything a server sends (bodies, headers,
-- curl's messages about the exchange) goes through one before it reaches
-- a result, an error or the logger: it replaces by "[REDACTED]" the API
-- key (which only the C handle holds, with its JSON-escaped forms) and
-- every secret of the request (the values the schema marks sensitive),
-- as sent and JSON-escaped (with and without "\/"), for a server that
-- quotes the request back. At each place the longest match wins.
-- redact(v): a string gives a new one; a decoded table is redacted in
-- place, keys too, at any depth (`json`, the text it was decoded from,
-- lets C skip the walk when that text cannot hold a secret). A 2xx
-- answer decoded in C (client:perform) is redacted there with the same
-- forms.
local function secret_forms(secrets)
  if not (secrets and secrets[1] ~= nil) then return nil end
  local forms = {}
  for _, secret in ipairs(secrets) do
    local escaped = json.encode(secret):sub(2, -2)
    forms[#forms + 1] = secret
    if escaped ~= secret then
      forms[#forms + 1] = escaped
      forms[#forms + 1] = (escaped:gsub("\\/", "/"))
    end
  end
  return forms
end

local function redactor(handle, forms)
  return function(v, json_text) return handle:redact(v, forms, json_text) end
end

-- Copy the server's `errors` list, keeping only well-formed entries.
local function problem_errors(list, redact)
  local out = {}
  if type(list) ~= "table" then return out end
  for _, e in ipairs(list) do
    if type(e) == "table" then
      out[#out + 1] = {
        path = type(e.path) == "string" and redact(e.path) or "",
        message = type(e.message) == "string" and redact(e.message) or "",
        code = type(e.code) == "string" and redact(e.code) or nil,
      }
    end
  end
  return out
end

-- Turn a non-2xx response into an `api` error, reading problem+json.
local function api_error(res, fields, redact)
  local headers = res.headers
  local problem = is_json(headers["content-type"]) and json.decode(res.body) or nil
  if type(problem) ~= "table" then problem = {} end
  local function text(v) return type(v) == "string" and redact(v) or nil end
  fields.status = res.status
  fields.type, fields.title = text(problem.type), text(problem.title)
  fields.detail, fields.instance = text(problem.detail), text(problem.instance)
  fields.errors = problem_errors(problem.errors, redact)
  fields.request_id = fields.request_id or fields.instance   -- both redacted already
  local what = res.status .. " " .. (fields.title or REASONS[res.status] or "HTTP error")
  if fields.detail then what = what .. ": " .. fields.detail end
  local first = fields.errors[1]
  if first then
    what = what .. " (" .. (first.path ~= "" and first.path .. ": " or "") .. first.message
           .. (#fields.errors > 1 and "; and " .. (#fields.errors - 1) .. " more" or "") .. ")"
  end
  if res.status >= 300 and res.status < 400 and headers.location then
    what = what .. " (redirect to " .. redact(headers.location) .. " not followed)"
  end
  return errors.fail("api", what, fields)
end

-- The error fields of a finished attempt; built only for a failure.
local function fields_of(res, attempts, redact)
  return {
    attempts = attempts,
    status = res.status,
    retryable = res.retryable,
    retry_after = res.retry_after,
    request_id = redact(res.headers["x-request-id"]),
  }
end

-- Map one finished attempt to value | nil, message, err. `on_ok` turns a
-- 2xx response into the value; `redact` is the call's redactor.
local function finish(res, attempts, verdict, on_ok, redact)
  if res.kind == "ok" then return on_ok(res, attempts, redact) end
  local fields = fields_of(res, attempts, redact)
  if res.kind == "transport" then
    fields.curl_code = res.curl_code
    local what = redact(res.error)
    if verdict == "exhausted" and attempts > 1 then what = what .. " (gave up after " .. attempts .. " attempts)" end
    return errors.fail("transport", what, fields)
  end
  return api_error(res, fields, redact)
end

-- A 2xx body that must be a JSON object, redacted.
function _M.decode_object(res, attempts, redact)
  local ct = res.headers["content-type"]
  if ct and not is_json(ct) then
    return errors.fail("decode", "expected a JSON response but got " .. redact(ct), fields_of(res, attempts, redact))
  end
  local body = res.body
  local value, why = json.decode(body)
  -- cjson decodes arrays to tables too; an object starts with '{'
  if type(value) == "table" and byte(body, 1) ~= 123 and not find(body, "^%s*{") then why = "got a JSON array" end
  if type(value) ~= "table" or why then
    return errors.fail("decode", "response body is not a JSON object: " .. (why or "got a " .. type(value)),
                       fields_of(res, attempts, redact))
  end
  return redact(value, body)
end

-- The config error of a network call on a client without a key.
function _M.no_key()
  return errors.fail("config", "no API key: pass api_key to topcalls.new{} or set the "
                     .. "TOPCALLS_API_KEY environment variable")
end

-- A 2xx body of a list request: a bare JSON array or an object (with
-- `data` and paging fields); the resource layer reads the shape.
local function decode_page(res, attempts, redact)
  local ct = res.headers["content-type"]
  if ct and not is_json(ct) then
    return errors.fail("decode", "expected a JSON response but got " .. redact(ct), fields_of(res, attempts, redact))
  end
  local value, why = json.decode(res.body)
  if type(value) ~= "table" then
    return errors.fail("decode", "list response is not JSON: " .. (why or "got a " .. type(value)),
                       fields_of(res, attempts, redact))
  end
  return { body = redact(value, res.body), array = find(res.body, "^%s*%[") ~= nil }
end

-- How a successful answer becomes a value, by name: names, not
-- functions, cross nginx's thread boundary (topcalls.ngx).
_M.DECODERS = {
  object = _M.decode_object,
  page = decode_page,
  none = function() return true end,
}

-- One finished attempt of a request `rq` (method, path, key, max_retries,
-- index, redact): log it and decide. Both the single call and the bulk
-- engine go through here, so they retry and log alike. The event's
-- strings from the exchange are redacted (a path may hold a server's
-- cursor). Returns delay (try again after it) or nil, verdict.
local function step(s, rq, res, attempt, elapsed)
  local delay, verdict = nil, "done"
  if res.kind ~= "ok" then
    delay, verdict = core.retry_plan(attempt, rq.max_retries, res.retryable, res.retry_after)
  end
  if s.logger then
    local redact = rq.redact
    call_logger(s, {
      method = rq.method, url = redact(s.base_url .. rq.path), attempt = attempt, max_attempts = rq.max_retries + 1,
      outcome = res.kind, status = res.status, curl_code = res.kind == "transport" and res.curl_code or nil,
      error = redact(res.error), elapsed = elapsed, retry_in = delay,
      verdict = verdict,
      request_id = redact(res.headers["x-request-id"]), idempotency_key = rq.key, index = rq.index,
    })
  end
  return delay, verdict
end

-- Run one logical call: attempts with retries, one idempotency key for
-- all of them (POST). `decode` names a DECODERS entry; `secrets` lists
-- the request's sensitive values (see redactor). Returns its value, or
-- nil, message, err.
function _M.call(state, method, path, body, call, decode, secrets)
  local handle, s = state.handle, state.settings
  if not handle:has_key() then return _M.no_key() end
  local forms = secret_forms(secrets)
  local key = method == "POST" and (call.idempotency_key or core.uuid4()) or nil
  local timeout = call.timeout or s.timeout
  -- the logger wants every attempt's status and request id: the Lua way
  -- Every DECODERS name has a twin in client:perform: a 2xx JSON answer
  -- then comes back decoded in C as value, shape (the value the Lua
  -- decoder would give); any other answer as the outcome table.
  local in_c = not s.logger and decode or nil
  local rq
  local attempt = 0
  while true do
    attempt = attempt + 1
    local started = s.logger and core.now()
    local res, shape = handle:perform(method, path, body, key, timeout, in_c, forms)
    if shape then   -- a 2xx answer, decoded (and redacted) in C
      if decode == "page" then return { body = res, array = shape == "array" } end
      return res
    end
    rq = rq or { method = method, path = path, key = key, max_retries = call.max_retries or s.max_retries,
                 redact = redactor(handle, forms) }
    local delay, verdict = step(s, rq, res, attempt, started and core.now() - started)
    if not delay then
      return finish(res, attempt, verdict, _M.DECODERS[decode], rq.redact)
    end
    core.sleep(delay)
  end
end

-- A Retry-After on these answers is meant for the whole batch (the
-- account is rate limited, or the service is unavailable): new starts wait.
local BATCH_WIDE_STATUS = { [429] = true, [503] = true }

-- POST every item of `items` ({ body, key, index, secrets }) to path concurrently
-- on one curl multi handle (multi.c). Every finished item is handed to
-- on_result(k, value | nil, message, err) in completion order; `index`
-- is what the logger calls the item (its place in the caller's list).
-- opts: concurrency, timeout, max_retries, stop_on_error (start nothing
-- new after a failure; what never started gets no result).
function _M.bulk(state, path, items, opts, on_result)
  if not state.handle:has_key() then return _M.no_key() end
  local s = state.settings
  local max_retries = opts.max_retries or s.max_retries
  local bulk = state.handle:bulk(path, opts.timeout or s.timeout, opts.concurrency, #items)
  for k = 1, #items do bulk:add(items[k].body, items[k].key) end
  local rq = { method = "POST", path = path, max_retries = max_retries }
  while true do
    local batch = bulk:run()
    if batch[1] == nil then break end
    for _, out in ipairs(batch) do
      local k = out.index
      rq.key, rq.index = items[k].key, items[k].index
      rq.redact = redactor(state.handle, secret_forms(items[k].secrets))
      local delay, verdict = step(s, rq, out, out.attempt, out.elapsed)
      if delay then
        if out.retry_after and BATCH_WIDE_STATUS[out.status] then bulk:hold(delay) end
        bulk:retry(k, delay)
      else
        local value, msg, err = finish(out, out.attempt, verdict, _M.decode_object, rq.redact)
        on_result(k, value, msg, err)
        if not value and opts.stop_on_error then bulk:stop() end
      end
    end
  end
  bulk:close()
  return true
end

-- Build the client state for opts: state, or nil, message, err.
function _M.new_state(opts)
  local s, msg, err = _M.settings(opts)
  if not s then return nil, msg, err end
  local handle
  handle, msg, err = _M.open(s)
  if not handle then return nil, msg, err end
  s.api_key = nil   -- from here on only the C handle holds the key
  return { settings = s, handle = handle }
end


return _M
