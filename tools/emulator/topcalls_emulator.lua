-- A local emulator of the TopCalls carriers API, for tests.  Runs inside a
-- private nginx (see ./emulator); every request goes through M.handle().
--
--   /v1/phone-numbers/carriers[/{id}]   the API (auth, validation, idempotency)
--   /_emulator/*                        control API for tests (no auth, not logged)
--
-- All state lives in the shared dict `topcalls_emulator` as JSON strings, so
-- it is shared by every worker:
--   latency            seconds every API request sleeps first
--   faults             list (rpush/lpop): FIFO of JSON fault objects
--   log_seq, log:<n>   the API request log
--   carrier_seq, carrier:<id>      stored carriers {seq, carrier, ...}
--   idem:<keyhash>:<key>           first 201 answer for an Idempotency-Key
--   lock:idem:<keyhash>:<key>      claimed while that key is being processed
--   epoch              bumped by every reset: a request that arrived before
--                      a reset (held by a delay, say) leaves no trace after it

local bit = require "bit"
local rules = require "rules"
local cjson = require("cjson").new()   -- private instance: our settings only
cjson.decode_invalid_numbers(false)    -- NaN / Infinity / hex are not JSON

local M = {}

local dict = ngx.shared.topcalls_emulator
local null = cjson.null
local default_latency = 0              -- from `emulator start --latency`
local IDEMPOTENCY_TTL = 24 * 3600

local REASONS = {
  [200] = "OK", [201] = "Created", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
  [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
  [409] = "Conflict", [413] = "Payload Too Large", [415] = "Unsupported Media Type",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

-- lua-cjson 2.1.0 (Debian) has no empty_array: an empty Lua table encodes as
-- {}.  Lists that may be empty are passed through arr(), which swaps an empty
-- one for a marker that json() turns into [] after encoding.
local EMPTY_MARK = "__topcalls_emulator_empty_array__"
local function arr(t) return (t == nil or #t == 0) and EMPTY_MARK or t end

local function json(v)
  local s = cjson.encode(v)
  s = s:gsub('"' .. EMPTY_MARK .. '"', "[]")
  -- cjson 2.1.0 escapes "/" as "\/"; valid JSON but ugly in URLs.  Every
  -- "\/" in cjson output is that escape (a data backslash is "\\").
  return (s:gsub("\\/", "/"))
end

-- Kernel randomness: forked workers share any Lua PRNG state (HOSTS.md).
-- The handle is opened lazily, i.e. once per worker after the fork.
local urandom
local function random_bytes(n)
  if not urandom then urandom = assert(io.open("/dev/urandom", "rb")) end
  return urandom:read(n)
end

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function uuid4()
  local b = { random_bytes(16):byte(1, 16) }
  b[7] = bit.bor(bit.band(b[7], 0x0f), 0x40)   -- version 4
  b[9] = bit.bor(bit.band(b[9], 0x3f), 0x80)   -- RFC 4122 variant
  local h = hex(string.char(unpack(b)))
  return ("%s-%s-%s-%s-%s"):format(h:sub(1, 8), h:sub(9, 12), h:sub(13, 16),
                                   h:sub(17, 20), h:sub(21, 32))
end

local function account_id(api_key) return "acc_" .. ngx.md5(api_key):sub(1, 12) end

local function now_rfc3339() return os.date("!%Y-%m-%dT%H:%M:%SZ", ngx.time()) end

local function decode(s)
  local ok, v = pcall(cjson.decode, s)
  if ok then return v end
  return nil, v
end

-- A response is { status, headers = {name = value}, body = string }.
local function response(status, body, content_type, headers)
  headers = headers or {}
  if content_type then headers["Content-Type"] = content_type end
  return { status = status, headers = headers, body = body or "" }
end

-- RFC 7807 problem details; `errors` is always a JSON array.
local function problem(ctx, status, slug, detail, errors, headers)
  local title = REASONS[status] or "Error"
  slug = slug or title:lower():gsub("[^a-z0-9]+", "-")
  return response(status, json{
    type = "https://api.topcalls.ai/problems/" .. slug,
    title = title,
    status = status,
    detail = detail or title,
    instance = "urn:topcalls:request:" .. ctx.request_id,
    errors = arr(errors),
  }, "application/problem+json", headers)
end

local function read_request_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()   -- only if it outgrew the buffer
    if file then
      local f = assert(io.open(file, "rb"))
      body = f:read("*a")
      f:close()
    end
  end
  return body or ""
end

-- Request headers as an object: lowercased names, repeats joined by ", ".
local function request_headers()
  local out = {}
  for k, v in pairs(ngx.req.get_headers(0)) do
    out[k] = type(v) == "table" and table.concat(v, ", ") or v
  end
  return out
end

---------------------------------------------------------------------------
-- Request log
---------------------------------------------------------------------------

-- Saved on arrival and again when answered; the two times let tests see
-- how many requests were in flight at once.
-- Did a reset happen since this request arrived?  Then it belongs to the
-- world before the reset: nothing of it is stored any more.
local function stale(ctx)
  return (tonumber(dict:get("epoch")) or 0) ~= ctx.epoch
end

local function save_log(ctx)
  if stale(ctx) then return end
  ngx.update_time()
  if ctx.entry.status ~= null then ctx.entry.answered_at = ngx.now() end
  local ok, err = dict:safe_set("log:" .. ctx.entry.seq, json(ctx.entry))
  if not ok then ngx.log(ngx.ERR, "emulator: cannot store log entry: ", err) end
end

local function log_arrival(ctx)
  local seq = dict:incr("log_seq", 1, 0)
  local key = ngx.var.http_idempotency_key
  ctx.entry = {
    seq = seq,
    request_id = ctx.request_id,
    method = ngx.req.get_method(),
    uri = ngx.var.request_uri,
    headers = request_headers(),
    body = ctx.body,
    connection = tonumber(ngx.var.connection),
    connection_requests = tonumber(ngx.var.connection_requests),
    pid = ngx.worker.pid(),
    remote_port = tonumber(ngx.var.remote_port),
    status = null,            -- filled in when answered
    idempotency_key = key or null,
    replayed = false,
    fault = ctx.fault or null,
    arrived_at = ngx.now(),
  }
  save_log(ctx)
end

---------------------------------------------------------------------------
-- The API proper
---------------------------------------------------------------------------

-- The public representation of a carrier (never contains passwords).
local function carrier_from(doc, api_key)
  local gw = type(doc.sip_gateway) == "table" and doc.sip_gateway or {}
  local c = {
    id = uuid4(),
    object = "carrier",
    account_id = account_id(api_key),
    voip_carrier_sid = uuid4(),
    sip_gateway_sid = uuid4(),
    carrier_name = doc.carrier_name,
    trunk_type = doc.trunk_type or "static_ip",
    created_at = now_rfc3339(),
    sip_gateway = { ipv4 = gw.ipv4, port = gw.port or 5060,
                    inbound = gw.inbound ~= false, outbound = gw.outbound ~= false },
  }
  if type(doc.registration) == "table" then
    local r = {}
    for k, v in pairs(doc.registration) do
      if k ~= "password" then r[k] = v end
    end
    c.registration = r
  end
  if type(doc.inbound_auth) == "table" then
    c.inbound_auth = { username = doc.inbound_auth.username }
  end
  return c
end

local function created_response(carrier)
  return response(201, json(carrier), "application/json",
                  { Location = "/v1/phone-numbers/carriers/" .. carrier.id })
end

-- Runs `fn` while holding the in-progress lock of an idempotency record.
local function with_lock(lock_key, fn)
  local ok, err = dict:add(lock_key, true, 120)
  if not ok then return nil, err end
  local pok, res = pcall(fn)
  dict:delete(lock_key)
  if not pok then error(res, 0) end
  return res
end

local function create(ctx, api_key)
  local media = (ngx.var.content_type or ""):match("^%s*([^;%s]+)")
  if not media or media:lower() ~= "application/json" then
    return problem(ctx, 415, nil, "Content-Type must be application/json")
  end

  local ikey = ngx.req.get_headers()["idempotency-key"]
  if type(ikey) == "table" then ikey = "" end   -- repeated header: invalid
  if ikey and not (#ikey >= 8 and #ikey <= 255 and ikey:find("^[A-Za-z0-9_-]+$")) then
    return problem(ctx, 400, "invalid-idempotency-key",
      "Idempotency-Key must be 8-255 characters of A-Z a-z 0-9 _ -",
      { { path = "Idempotency-Key", code = "format",
          message = "Idempotency-Key must be 8-255 characters of A-Z a-z 0-9 _ -" } })
  end

  local doc, err = decode(ctx.body)
  if not doc or type(doc) ~= "table" or not ctx.body:find("^%s*{") then
    return problem(ctx, 400, "invalid-json",
      "The request body must be a JSON object" .. (err and (": " .. err) or ""))
  end

  local function process()
    local errors
    errors, doc = rules.validate(doc, null)     -- also fills the defaults
    if #errors > 0 then
      return problem(ctx, 422, "validation-error",
        ("The request has %d invalid field%s"):format(#errors, #errors == 1 and "" or "s"),
        errors)
    end
    local carrier = carrier_from(doc, api_key)
    if stale(ctx) then return created_response(carrier) end   -- answered, not stored
    local seq = dict:incr("carrier_seq", 1, 0)
    local ok, serr = dict:safe_set("carrier:" .. carrier.id, json{
      seq = seq, carrier = carrier, api_key_hash = ngx.md5(api_key),
      request_id = ctx.request_id, idempotency_key = ikey or null })
    if not ok then
      return problem(ctx, 500, nil, "emulator storage full: " .. tostring(serr))
    end
    return created_response(carrier)
  end

  if not ikey then return process() end

  -- Idempotency, scoped per API key.  Only successful (201) answers are
  -- remembered (like Stripe: a rejected request may be fixed and retried
  -- with the same key).  The body is compared by its raw bytes.
  local rkey = "idem:" .. ngx.md5(api_key) .. ":" .. ikey
  local hash = ngx.md5(ctx.body)
  local res, lerr = with_lock("lock:" .. rkey, function()
    local stored = dict:get(rkey)
    if stored then
      stored = cjson.decode(stored)
      if stored.hash ~= hash then
        return problem(ctx, 409, "idempotency-conflict",
          "This Idempotency-Key was already used with a different request body",
          { { path = "Idempotency-Key", code = "idempotency_conflict",
              message = "Idempotency-Key was already used with a different request body" } })
      end
      stored.headers["Idempotent-Replayed"] = "true"
      ctx.entry.replayed = true
      return response(stored.status, stored.body, nil, stored.headers)
    end
    -- `hold`: keep the key claimed for a while (to test concurrent retries).
    if ctx.fault and tonumber(ctx.fault.hold) then ngx.sleep(tonumber(ctx.fault.hold)) end
    local r = process()
    if r.status == 201 and not stale(ctx) then
      dict:safe_set(rkey, json{ hash = hash, status = r.status,
                                headers = r.headers, body = r.body }, IDEMPOTENCY_TTL)
    end
    return r
  end)
  if res then return res end
  if lerr == "exists" then
    return problem(ctx, 409, "idempotency-in-progress",
      "A request with this Idempotency-Key is still being processed",
      { { path = "Idempotency-Key", code = "idempotency_in_progress",
          message = "A request with this Idempotency-Key is still being processed" } })
  end
  return problem(ctx, 500, nil, "emulator lock failed: " .. tostring(lerr))
end

local UUID_RE = [[^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$]]

local function delete(ctx, api_key, id)
  if not ngx.re.find(id, UUID_RE, "joi") then
    return problem(ctx, 400, "invalid-carrier-id", "carrier_id must be a UUID",
      { { path = "carrier_id", code = "format", message = "carrier_id must be a UUID" } })
  end
  local skey = "carrier:" .. id:lower()
  local stored = dict:get(skey)
  -- Another account's carrier is as invisible as a missing one.
  if not stored or cjson.decode(stored).api_key_hash ~= ngx.md5(api_key) then
    return problem(ctx, 404, nil, "No carrier with id " .. id)
  end
  dict:delete(skey)
  return response(204, "")
end

-- Auth first, then routing.  Returns a response table.
local function process(ctx)
  local auth = ngx.var.http_authorization or ""
  local scheme, token = auth:match("^(%S+) +(%S+)%s*$")
  if not (scheme and scheme:lower() == "bearer"
          and ngx.re.find(token, [[^tc_(live|test)_[A-Za-z0-9_]+$]], "jo")) then
    return problem(ctx, 401, nil, "A valid API key is required (Authorization: Bearer tc_live_...)",
                   nil, { ["WWW-Authenticate"] = 'Bearer realm="topcalls"' })
  end
  local method, uri = ngx.req.get_method(), ngx.var.uri
  if uri == "/v1/phone-numbers/carriers" then
    if method ~= "POST" then
      return problem(ctx, 405, nil, method .. " is not allowed here", nil, { Allow = "POST" })
    end
    return create(ctx, token)
  end
  local id = uri:match("^/v1/phone%-numbers/carriers/([^/]+)$")
  if id then
    if method ~= "DELETE" then
      return problem(ctx, 405, nil, method .. " is not allowed here", nil, { Allow = "DELETE" })
    end
    return delete(ctx, token, id)
  end
  return problem(ctx, 404, nil, "No route for " .. method .. " " .. uri)
end

---------------------------------------------------------------------------
-- Sending: normally, or misbehaving as a fault asks
---------------------------------------------------------------------------

local function send(ctx, res, chunked)
  ctx.entry.status = res.status
  save_log(ctx)
  ngx.status = res.status
  ngx.header["X-Request-Id"] = ctx.request_id
  for k, v in pairs(res.headers) do ngx.header[k] = v end
  local body = res.body or ""
  if chunked then
    -- No Content-Length: nginx uses chunked transfer encoding (HTTP/1.1).
    ngx.header["Content-Length"] = nil
    for i = 1, #body, 65536 do
      ngx.print(body:sub(i, i + 65535))
      ngx.flush(true)
    end
  elseif res.status ~= 204 and res.status ~= 304 then
    ngx.header["Content-Length"] = #body
    if #body > 0 then ngx.print(body) end
  end
  ngx.eof()
end

-- Status line and headers for responses written on the raw socket.
local function raw_head(ctx, res, content_length)
  local lines = {
    ("HTTP/1.1 %d %s"):format(res.status, REASONS[res.status] or "Unknown"),
    "Date: " .. ngx.http_time(ngx.time()),
    "X-Request-Id: " .. ctx.request_id,
  }
  for k, v in pairs(res.headers) do
    local lk = k:lower()
    if lk ~= "content-length" and lk ~= "connection" then
      lines[#lines + 1] = k .. ": " .. tostring(v)
    end
  end
  lines[#lines + 1] = "Content-Length: " .. content_length
  lines[#lines + 1] = "Connection: close"
  return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

-- The raw downstream socket: whatever we write is the whole response.  The
-- body was read already (a requirement).  When the handler returns, ngx_lua
-- closes the connection (no keep-alive after a raw socket).
local function raw_socket()
  local sock, err = ngx.req.socket(true)
  if not sock then
    ngx.log(ngx.ERR, "emulator: no raw socket: ", err)
    return ngx.exit(444)
  end
  sock:settimeout(60000)
  return sock
end

-- A JSON object of exactly n bytes (n >= 2).
local function json_of_size(n)
  local prefix, suffix = '{"object":"carrier","padding":"', '"}'
  local room = n - #prefix - #suffix
  if room < 0 then return "{}" .. (" "):rep(math.max(0, n - 2)) end
  return prefix .. ("x"):rep(room) .. suffix
end

-- What a response-shaping fault answers.  `real` is the processed response
-- when after_process was set, else nil (and nothing was stored).
local function fault_payload(ctx, fault, real, doc_for_fake, api_key)
  local status = tonumber(fault.status)
  local res
  if fault.oversize then
    res = response(status or 201, json_of_size(tonumber(fault.oversize)), "application/json")
  elseif fault.redirect then
    res = response(status or 302, "Redirecting to " .. fault.redirect .. "\n",
                   "text/plain", { Location = fault.redirect })
  elseif fault.body then
    res = response(status or 200, fault.body, "application/json")
  elseif status and status >= 300 then
    res = problem(ctx, status, nil, "Injected fault: " .. status)
  elseif real then
    res = { status = status or real.status, headers = real.headers, body = real.body }
  else
    -- A well-formed 201 for a carrier that was never stored.
    res = created_response(carrier_from(doc_for_fake, api_key))
    res.status = status or 201
  end
  if fault.content_type then res.headers["Content-Type"] = fault.content_type end
  if fault.retry_after then res.headers["Retry-After"] = tostring(fault.retry_after) end
  for k, v in pairs(type(fault.headers) == "table" and fault.headers or {}) do
    res.headers[k] = v
  end
  return res
end

local SHAPING = { "status", "body", "raw", "reset", "oversize", "redirect",
                  "trickle", "chunked" }

local function apply_fault(ctx, fault)
  local shaping = false
  for _, k in ipairs(SHAPING) do
    if fault[k] ~= nil and fault[k] ~= false then shaping = true end
  end
  if not shaping then return send(ctx, process(ctx)) end   -- delay / hold only

  local real = fault.after_process and process(ctx) or nil

  if fault.reset == "before" then
    ctx.entry.status = "reset:before"
    save_log(ctx)
    return ngx.exit(444)        -- close without a single response byte
  end
  if fault.raw then
    ctx.entry.status = "raw"
    save_log(ctx)
    local sock = raw_socket()
    sock:send(fault.raw)
    return
  end

  local res = fault_payload(ctx, fault, real, decode(ctx.body) or {},
    (ngx.var.http_authorization or ""):match("^%S+ +(%S+)") or "tc_test_anonymous")

  if fault.reset == "during_body" then
    -- Promise more bytes than we send, send half of the body, close.
    ctx.entry.status = "reset:during_body"
    save_log(ctx)
    local sock = raw_socket()
    local body = res.body
    sock:send(raw_head(ctx, res, #body + 100) .. body:sub(1, math.floor(#body / 2)))
    return
  end

  if fault.trickle then
    -- The whole response (head too), `trickle` bytes per second, 30 s max.
    ctx.entry.status = res.status
    save_log(ctx)
    local sock = raw_socket()
    local data = raw_head(ctx, res, #res.body) .. res.body
    local rate = math.max(tonumber(fault.trickle) or 1, 0.01)
    local step = math.max(1, math.floor(rate / 10))
    ngx.update_time()
    local deadline = ngx.now() + 30
    for i = 1, #data, step do
      local _, err = sock:send(data:sub(i, i + step - 1))
      if err then return end                    -- client gave up
      ngx.update_time()
      if ngx.now() >= deadline then return end  -- bounded: cut it off
      if i + step <= #data then ngx.sleep(step / rate) end
    end
    return
  end

  return send(ctx, res, fault.chunked)
end

local function api()
  local ctx = { request_id = "req_" .. hex(random_bytes(16)),
                epoch = tonumber(dict:get("epoch")) or 0 }
  local fault = dict:lpop("faults")             -- popped on arrival: FIFO
  ctx.fault = fault and cjson.decode(fault)
  if ctx.fault and ctx.fault.reset == "during_request" then
    -- Close while the client is still sending: the head was read, the body
    -- is left unread, so the kernel answers the client's next bytes with a
    -- RST (a large body is still being written when it arrives).
    ctx.body = ""
    log_arrival(ctx)
    ctx.entry.status = "reset:during_request"
    save_log(ctx)
    return ngx.exit(444)
  end
  ctx.body = read_request_body()
  log_arrival(ctx)

  local latency = tonumber(dict:get("latency")) or 0
  if latency > 0 then ngx.sleep(latency) end
  if ctx.fault and tonumber(ctx.fault.delay) then ngx.sleep(tonumber(ctx.fault.delay)) end

  if ctx.fault then return apply_fault(ctx, ctx.fault) end
  return send(ctx, process(ctx))
end

---------------------------------------------------------------------------
-- Control API
---------------------------------------------------------------------------

local FAULT_KEYS = {
  delay = "number", hold = "number", status = "number", body = "string",
  headers = "table", retry_after = "string", content_type = "string",
  after_process = "boolean", reset = "string", raw = "string",
  oversize = "number", chunked = "boolean", redirect = "string",
  trickle = "number",
}

local function check_fault(f, i)
  if type(f) ~= "table" then return ("fault %d is not an object"):format(i) end
  for k, v in pairs(f) do
    local want = FAULT_KEYS[k]
    if not want then return ("fault %d: unknown key '%s'"):format(i, tostring(k)) end
    if k == "retry_after" and type(v) == "number" then v = tostring(v) end
    if type(v) ~= want then
      return ("fault %d: '%s' must be a %s"):format(i, k, want == "table" and "object" or want)
    end
  end
  if f.reset and f.reset ~= "before" and f.reset ~= "during_body" and f.reset ~= "during_request" then
    return ("fault %d: reset must be 'before', 'during_body' or 'during_request'"):format(i)
  end
  if f.reset == "during_request" and f.after_process then
    return ("fault %d: reset 'during_request' cannot be combined with after_process"):format(i)
  end
end


local function control_json(status, v)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(type(v) == "string" and v or json(v))
end

local function control()
  local method, uri = ngx.req.get_method(), ngx.var.uri
  local route = method .. " " .. uri
  local body = read_request_body()

  if route == "GET /_emulator/ping" then
    return control_json(200, { ok = true, pid = ngx.worker.pid() })

  elseif route == "POST /_emulator/reset" then
    local epoch = (tonumber(dict:get("epoch")) or 0) + 1
    dict:flush_all()
    dict:set("epoch", epoch)
    dict:set("latency", default_latency)
    return control_json(200, { ok = true })

  elseif route == "POST /_emulator/config" then
    local cfg = decode(body)
    if type(cfg) ~= "table" then return control_json(400, { error = "body must be a JSON object" }) end
    for k, v in pairs(cfg) do
      if k ~= "latency" then return control_json(400, { error = "unknown config key '" .. tostring(k) .. "'" }) end
      if type(v) ~= "number" or v < 0 then return control_json(400, { error = "latency must be a number >= 0" }) end
    end
    if cfg.latency then dict:set("latency", cfg.latency) end
    return control_json(200, { ok = true, latency = tonumber(dict:get("latency")) or 0 })

  elseif route == "POST /_emulator/faults" then
    local list = decode(body)
    if type(list) == "table" and body:find("^%s*{") then list = { list } end  -- one object
    if type(list) ~= "table" then return control_json(400, { error = "body must be a JSON array of faults" }) end
    for i, f in ipairs(list) do
      local err = check_fault(f, i)
      if err then return control_json(400, { error = err }) end
    end
    for _, f in ipairs(list) do dict:rpush("faults", json(f)) end
    return control_json(200, { ok = true, queued = dict:llen("faults") or 0 })

  elseif route == "GET /_emulator/log" then
    local out = {}   -- entries are stored as JSON already: just join them
    for i = 1, tonumber(dict:get("log_seq")) or 0 do
      out[#out + 1] = dict:get("log:" .. i)
    end
    return control_json(200, "[" .. table.concat(out, ",") .. "]")

  elseif route == "GET /_emulator/carriers" then
    local recs = {}
    for _, k in ipairs(dict:get_keys(0)) do
      if k:sub(1, 8) == "carrier:" then
        local v = dict:get(k)
        if v then recs[#recs + 1] = cjson.decode(v) end
      end
    end
    table.sort(recs, function(a, b) return a.seq < b.seq end)
    local out = {}
    for i, r in ipairs(recs) do
      -- the public representation plus who created it
      local c = r.carrier
      c.request_id, c.idempotency_key = r.request_id, r.idempotency_key
      out[i] = c
    end
    return control_json(200, json(arr(out)))
  end
  local known = { ping = "GET", reset = "POST", config = "POST", faults = "POST",
                  log = "GET", carriers = "GET" }
  local want = known[uri:sub(#"/_emulator/" + 1)]
  if want then
    ngx.header["Allow"] = want
    return control_json(405, { error = "use " .. want .. " " .. uri })
  end
  return control_json(404, { error = "unknown control endpoint " .. uri })
end

---------------------------------------------------------------------------
-- Entry points
---------------------------------------------------------------------------

-- Called from init_by_lua (master, before the fork).
function M.init(opts)
  default_latency = tonumber(opts and opts.latency) or 0
  dict:set("latency", default_latency)
end

function M.handle()
  if ngx.var.uri:sub(1, 11) == "/_emulator/" then return control() end
  return api()
end

return M
