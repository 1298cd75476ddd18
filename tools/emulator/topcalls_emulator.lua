-- A local emulator of the TopCalls BYOC API, for tests.  Runs inside a
-- private nginx (see ./emulator); every request goes through M.handle().
--
--   /v1/phone-numbers/carriers[/{id}]   carriers: add, list, get (config), delete
--   /v1/phone-numbers[/{id}]            phone numbers: add, list, get, delete
--   /_emulator/*                        control API for tests (no auth, not logged)
--
-- All state lives in the shared dict `topcalls_emulator` as JSON strings, so
-- it is shared by every worker:
--   config:<name>      runtime settings (absent: the default)
--   faults             list (rpush/lpop): FIFO of JSON fault objects
--   fresh_faults       how many queued faults wait for a fresh connection
--   log_seq, log:<n>   the API request log
--   <kind>_seq, <kind>:<id>        stored records {seq, data, ...}; kind is
--                                  carrier or number
--   index:<kind>:<account_id>[:<pos>]  that account's ids, creation order
--   live:<kind>:<account_id>       how many of them are still there
--   sid:<voip_carrier_sid>         -> carrier id
--   e164:<account_id>:<number>     -> the number's record id
--   numbers_on:<voip_carrier_sid>  how many numbers the carrier routes
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
-- Runtime settings (POST /_emulator/config); a reset restores the defaults
---------------------------------------------------------------------------

local DEFAULT_PAGE_SIZE = 25
local LIST_SHAPES = { paged = true, cursor = true, array = true }

-- name -> { default, ok = predicate, want = what ok accepts }.  Stored as
-- JSON under "config:<name>"; absent means the default.
local CONFIG = {
  latency = { default = function() return default_latency end,
              ok = function(v) return type(v) == "number" and v >= 0 end,
              want = "a number >= 0" },
  list_shape = { default = "paged", ok = function(v) return LIST_SHAPES[v] == true end,
                 want = "'paged', 'cursor' or 'array'" },
  list_max_page_size = { default = 100, want = "an integer >= 1",
    ok = function(v) return type(v) == "number" and v >= 1 and math.floor(v) == v end },
  carrier_get = { default = false, want = "a boolean",
                  ok = function(v) return type(v) == "boolean" end },
}
local CONFIG_NAMES = { "latency", "list_shape", "list_max_page_size", "carrier_get" }

local function config(name)
  local v = dict:get("config:" .. name)
  if v ~= nil then return cjson.decode(v) end
  local d = CONFIG[name].default
  if type(d) == "function" then return d() end
  return d
end

local function all_config()
  local out = {}
  for _, name in ipairs(CONFIG_NAMES) do out[name] = config(name) end
  return out
end

---------------------------------------------------------------------------
-- Storage
--
-- Read-modify-write sequences below never yield (no sleep, no socket I/O
-- between the read and the write) and nginx runs one worker, so each is
-- atomic without a lock.
---------------------------------------------------------------------------

local function load(key)
  local v = dict:get(key)
  return v and cjson.decode(v)
end

local function save(key, v) return dict:safe_set(key, json(v)) end

-- Per-account creation order, O(1) to add and remove: index:<kind>:<account>
-- counts positions, index:<kind>:<account>:<pos> holds the id (deleted with
-- the record, so a gap is a deletion), live:<kind>:<account> counts the
-- records still there.
local function index_base(kind, account) return "index:" .. kind.name .. ":" .. account end

local function index_add(kind, account, id)
  local base = index_base(kind, account)
  local pos = dict:incr(base, 1, 0)
  local ok, err = dict:safe_set(base .. ":" .. pos, id)
  if not ok then return nil, err end
  dict:incr("live:" .. kind.name .. ":" .. account, 1, 0)
  return pos
end

local function index_remove(kind, account, pos)
  dict:delete(index_base(kind, account) .. ":" .. pos)
  dict:incr("live:" .. kind.name .. ":" .. account, -1, 0)
end

local function index_count(kind, account)
  return tonumber(dict:get("live:" .. kind.name .. ":" .. account)) or 0
end

-- Calls fn(pos, id) for the account's records from position `from` on, in
-- creation order, until fn returns true.
local function index_walk(kind, account, from, fn)
  local base = index_base(kind, account)
  for pos = from, tonumber(dict:get(base)) or 0 do
    local id = dict:get(base .. ":" .. pos)
    if id and fn(pos, id) then return end
  end
end

-- A stored record: { seq, pos, data, api_key_hash, request_id, idempotency_key }.
-- `data` is the resource as the server knows it (carrier passwords
-- included); kind.view() makes what a client is shown.
local function record_key(kind, id) return kind.name .. ":" .. id:lower() end

local function store(kind, ctx, api_key, data, ikey)
  local pos, err = index_add(kind, data.account_id, data.id)
  if not pos then return nil, err end
  local ok
  ok, err = save(record_key(kind, data.id), {
    seq = dict:incr(kind.name .. "_seq", 1, 0), pos = pos, data = data,
    api_key_hash = ngx.md5(api_key), request_id = ctx.request_id,
    idempotency_key = ikey or null })
  if not ok then return nil, err end
  kind.link(data)
  return true
end

local function unstore(kind, rec)
  dict:delete(record_key(kind, rec.data.id))
  index_remove(kind, rec.data.account_id, rec.pos)
  kind.unlink(rec.data)
end

-- The record with this id if the caller's account owns it (another
-- account's record is as invisible as a missing one).
local function owned(kind, api_key, id)
  local rec = load(record_key(kind, id))
  if rec and rec.api_key_hash == ngx.md5(api_key) then return rec end
end

-- The carrier record routing `voip_carrier_sid`, if any.
local function carrier_by_sid(sid)
  local id = type(sid) == "string" and dict:get("sid:" .. sid:lower())
  return id and load("carrier:" .. id)
end

---------------------------------------------------------------------------
-- Resources
---------------------------------------------------------------------------

local function account_user_id(api_key)
  local h = ngx.md5("user:" .. api_key)
  return ("%s-%s-%s-%s-%s"):format(h:sub(1, 8), h:sub(9, 12), h:sub(13, 16),
                                   h:sub(17, 20), h:sub(21, 32))
end

local function without_password(obj)
  if type(obj) ~= "table" then return nil end
  local out = {}
  for k, v in pairs(obj) do
    if k ~= "password" then out[k] = v end
  end
  return out
end

-- A carrier as clients see it: the stored one, passwords left out (real
-- APIs do not echo secrets).
local function carrier_view(c)
  local out = {}
  for k, v in pairs(c) do out[k] = v end
  out.registration = without_password(c.registration)
  out.inbound_auth = without_password(c.inbound_auth)
  return out
end

local function carrier_from(doc, api_key)
  local gw = type(doc.sip_gateway) == "table" and doc.sip_gateway or {}
  return {
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
    registration = type(doc.registration) == "table" and doc.registration or nil,
    inbound_auth = type(doc.inbound_auth) == "table" and doc.inbound_auth or nil,
  }
end

-- A phone number as clients see it: the 201 fields, plus the GET-only ones
-- when `full`.  carrier_name is looked up (a join), so a renamed or deleted
-- carrier shows; label and error_message are JSON null when absent.
local function number_view(n, full)
  local carrier = carrier_by_sid(n.voip_carrier_sid)
  local out = {
    id = n.id, object = "phone_number", number = n.number,
    voip_carrier_sid = n.voip_carrier_sid,
    carrier_name = carrier and carrier.data.carrier_name or null,
    source = n.source, phone_number_sid = n.phone_number_sid, status = n.status,
    label = n.label == nil and null or n.label,
    account_id = n.account_id, created_at = n.created_at,
  }
  if full then
    out.error_message = n.error_message == nil and null or n.error_message
    out.created_by_user_id = n.created_by_user_id
    out.updated_at = n.updated_at
  end
  return out
end

local function number_from(doc, api_key, sid)
  local now = now_rfc3339()
  return {
    id = uuid4(), number = doc.number, voip_carrier_sid = sid,
    source = "byoc",                  -- every emulated carrier is the account's own
    phone_number_sid = uuid4(), status = "active",
    label = doc.label ~= null and doc.label or nil,
    account_id = account_id(api_key), created_at = now,
    created_by_user_id = account_user_id(api_key), updated_at = now,
  }
end

-- One descriptor per resource: what the generic routes below need.
--   name        storage prefix;  path  collection URL;  schema  rules.lua's
--   id_param    how a bad id is reported;  noun  for messages
--   view(data, full)   the client's representation
--   link/unlink(data)  secondary indexes kept with the record
--   editable    fields POST /_emulator/edit may set
--   fake(doc, api_key) a well-formed unstored 201 body (faults)
local KINDS = {}

KINDS.carrier = {
  name = "carrier", path = "/v1/phone-numbers/carriers", schema = "carrier",
  id_param = "carrier_id", noun = "carrier",
  view = carrier_view,
  link = function(c) dict:set("sid:" .. c.voip_carrier_sid, c.id) end,
  unlink = function(c) dict:delete("sid:" .. c.voip_carrier_sid) end,
  editable = { "carrier_name", "trunk_type", "sip_gateway", "registration", "inbound_auth" },
  fake = function(doc, api_key) return carrier_view(carrier_from(doc, api_key)) end,
}

-- numbers_on:<sid> counts a carrier's numbers (the delete rule);
-- e164:<account>:<number> says which record holds a number (one carrier
-- routes a number, so one record per account).
KINDS.number = {
  name = "number", path = "/v1/phone-numbers", schema = "phone_number",
  id_param = "phone_number_id", noun = "phone number",
  view = number_view,
  link = function(n)
    dict:set("e164:" .. n.account_id .. ":" .. n.number, n.id)
    dict:incr("numbers_on:" .. n.voip_carrier_sid, 1, 0)
  end,
  unlink = function(n)
    dict:delete("e164:" .. n.account_id .. ":" .. n.number)
    dict:incr("numbers_on:" .. n.voip_carrier_sid, -1, 0)
  end,
  editable = { "voip_carrier_sid", "label", "status", "error_message" },
  fake = function(doc, api_key)
    return number_view(number_from(doc, api_key,
      type(doc.voip_carrier_sid) == "string" and doc.voip_carrier_sid or uuid4()))
  end,
}

---------------------------------------------------------------------------
-- Creating (shared by every resource): media type, Idempotency-Key, JSON,
-- schema; then the resource's own rules (kind.create)
---------------------------------------------------------------------------

local function created_response(kind, data, view)
  return response(201, json(view), "application/json",
                  { Location = kind.path .. "/" .. data.id })
end

local function storage_full(ctx, err)
  return problem(ctx, 500, nil, "emulator storage full: " .. tostring(err))
end

function KINDS.carrier.create(ctx, api_key, doc, ikey)
  local carrier = carrier_from(doc, api_key)
  local res = created_response(KINDS.carrier, carrier, carrier_view(carrier))
  if stale(ctx) then return res end          -- answered, not stored
  local ok, err = store(KINDS.carrier, ctx, api_key, carrier, ikey)
  if not ok then return storage_full(ctx, err) end
  return res
end

function KINDS.number.create(ctx, api_key, doc, ikey)
  local acct = account_id(api_key)
  local carrier
  if doc.voip_carrier_sid then
    carrier = carrier_by_sid(doc.voip_carrier_sid)
    if not carrier or carrier.api_key_hash ~= ngx.md5(api_key) then
      local msg = "voip_carrier_sid does not name a carrier of this account"
      return problem(ctx, 400, "unknown-carrier", msg,
        { { path = "voip_carrier_sid", code = "not_found", message = msg } })
    end
  else
    -- The account's default carrier: its first (oldest) one.
    index_walk(KINDS.carrier, acct, 1, function(_, id)
      carrier = load(record_key(KINDS.carrier, id))
      return true
    end)
    if not carrier then
      local msg = "voip_carrier_sid is required: the account has no carrier to use by default"
      return problem(ctx, 400, "no-default-carrier", msg,
        { { path = "voip_carrier_sid", code = "required", message = msg } })
    end
  end
  local sid = carrier.data.voip_carrier_sid

  local taken_id = dict:get("e164:" .. acct .. ":" .. doc.number)
  local taken = taken_id and load("number:" .. taken_id)
  if taken then
    local same = taken.data.voip_carrier_sid == sid
    local msg = same
      and ("phone number %s already exists on this carrier"):format(doc.number)
      or ("phone number %s is already routed by carrier %s; release it first")
         :format(doc.number, taken.data.voip_carrier_sid)
    return problem(ctx, 422, same and "phone-number-exists" or "phone-number-on-other-carrier",
      msg, { { path = "number", code = same and "duplicate" or "conflict", message = msg } })
  end

  local number = number_from(doc, api_key, sid)
  local res = created_response(KINDS.number, number, number_view(number))
  if stale(ctx) then return res end
  local ok, err = store(KINDS.number, ctx, api_key, number, ikey)
  if not ok then return storage_full(ctx, err) end
  return res
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

local function create(ctx, api_key, kind)
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
    errors, doc = rules.validate(doc, null, kind.schema)   -- also fills the defaults
    if #errors > 0 then
      return problem(ctx, 422, "validation-error",
        ("The request has %d invalid field%s"):format(#errors, #errors == 1 and "" or "s"),
        errors)
    end
    return kind.create(ctx, api_key, doc, ikey)
  end

  if not ikey then return process() end

  -- Idempotency, scoped per API key.  Only successful (201) answers are
  -- remembered (like Stripe: a rejected request may be fixed and retried
  -- with the same key).  The request is compared by its path and raw body
  -- bytes: the same key sent to another endpoint is a conflict too.
  local rkey = "idem:" .. ngx.md5(api_key) .. ":" .. ikey
  local hash = ngx.md5(kind.path .. "\n" .. ctx.body)
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

---------------------------------------------------------------------------
-- Reading, listing, deleting
---------------------------------------------------------------------------

local UUID_RE = [[^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$]]

-- The caller's record with this id, or nil and a 400 / 404 problem.
local function find(ctx, api_key, kind, id)
  if not ngx.re.find(id, UUID_RE, "joi") then
    local msg = kind.id_param .. " must be a UUID"
    return nil, problem(ctx, 400, "invalid-" .. kind.id_param:gsub("_", "-"), msg,
      { { path = kind.id_param, code = "format", message = msg } })
  end
  local rec = owned(kind, api_key, id)
  if not rec then return nil, problem(ctx, 404, nil, "No " .. kind.noun .. " with id " .. id) end
  return rec
end

local function ok_json(v) return response(200, json(v), "application/json") end

local function get_one(ctx, api_key, kind, id)
  local rec, res = find(ctx, api_key, kind, id)
  if not rec then return res end
  return ok_json(kind.view(rec.data, true))
end

local function delete_one(ctx, api_key, kind, id)
  local rec, res = find(ctx, api_key, kind, id)
  if not rec then return res end
  if kind == KINDS.carrier
     and (tonumber(dict:get("numbers_on:" .. rec.data.voip_carrier_sid)) or 0) > 0 then
    -- jambonz's wording
    local msg = "cannot delete carrier with active phone numbers"
    return problem(ctx, 422, "carrier-in-use", msg,
      { { path = kind.id_param, code = "in_use", message = msg } })
  end
  unstore(kind, rec)
  return response(204, "")
end

-- Cursors are opaque to clients: base64 of "after:<pos>" (the last record
-- returned), so records deleted during a walk shift nothing.  Standard
-- base64 ('+', '/', '=') keeps clients honest about URL-encoding it.
local function encode_cursor(seq) return ngx.encode_base64("after:" .. seq) end
local function decode_cursor(s)
  local plain = type(s) == "string" and ngx.decode_base64(s)
  return plain and tonumber(plain:match("^after:(%d+)$"))
end

-- ?page=&page_size=&cursor=: the values, or nil and the errors.
local function list_args()
  local args, errors, out = ngx.req.get_uri_args(), {}, {}
  local function positive(name)
    local v = args[name]
    if v == nil then return end
    if type(v) ~= "string" or not v:find("^%d+$") then
      errors[#errors + 1] = { path = name, code = "type", message = name .. " must be an integer" }
    elseif tonumber(v) < 1 then
      errors[#errors + 1] = { path = name, code = "range", message = name .. " must be at least 1" }
    else
      out[name] = tonumber(v)
    end
  end
  positive("page")
  positive("page_size")
  if args.cursor ~= nil then
    out.after = decode_cursor(args.cursor)
    if not out.after then
      errors[#errors + 1] = { path = "cursor", code = "format",
                              message = "cursor is not one this server returned" }
    end
  end
  if #errors > 0 then return nil, errors end
  return out
end

local function list_records(ctx, api_key, kind)
  local shape, account = config("list_shape"), account_id(api_key)
  local data = {}
  local function take(id)
    local rec = load(record_key(kind, id))
    data[#data + 1] = rec and kind.view(rec.data, true) or nil
  end
  if shape == "array" then                     -- everything, paging ignored
    index_walk(kind, account, 1, function(_, id) take(id) end)
    return ok_json(arr(data))
  end

  local args, errors = list_args()
  if not args then
    return problem(ctx, 400, "invalid-query", "Invalid paging parameters", errors)
  end
  local size = math.min(args.page_size or DEFAULT_PAGE_SIZE, config("list_max_page_size"))
  if shape == "cursor" then
    local last, more = nil, false
    index_walk(kind, account, (args.after or 0) + 1, function(pos, id)
      if #data == size then more = true return true end
      take(id)
      last = pos
    end)
    return ok_json{ data = arr(data), next = more and encode_cursor(last) or null }
  end
  local page, skip = args.page or 1, ((args.page or 1) - 1) * size
  index_walk(kind, account, 1, function(_, id)
    if skip > 0 then skip = skip - 1 return false end
    take(id)
    return #data == size
  end)
  return ok_json{ data = arr(data), total = index_count(kind, account), page = page,
                  page_size = size }
end

---------------------------------------------------------------------------
-- Routing
---------------------------------------------------------------------------

-- First match wins (".../carriers" before "/v1/phone-numbers/{id}").
-- `gated`: a method served only while that config key is true; otherwise
-- the route answers as if it did not exist (404 "No route").
local ROUTES = {
  { "^/v1/phone%-numbers/carriers$", KINDS.carrier, GET = list_records, POST = create },
  { "^/v1/phone%-numbers/carriers/([^/]+)$", KINDS.carrier,
    GET = get_one, DELETE = delete_one, gated = { GET = "carrier_get" } },
  { "^/v1/phone%-numbers$", KINDS.number, GET = list_records, POST = create },
  { "^/v1/phone%-numbers/([^/]+)$", KINDS.number, GET = get_one, DELETE = delete_one },
}
local METHODS = { "DELETE", "GET", "POST" }

-- handler, kind, id | nil, nil, nil, allow ("" when there is no route)
local function route(method, uri)
  for _, r in ipairs(ROUTES) do
    local id = uri:match(r[1])
    if id then
      local allow = {}
      for _, m in ipairs(METHODS) do
        if r[m] and not (r.gated and r.gated[m] and not config(r.gated[m])) then
          allow[#allow + 1] = m
        end
      end
      for _, m in ipairs(allow) do
        if m == method then
          return r[m], r[2], id ~= uri and id or nil
        end
      end
      if r.gated and r.gated[method] then return nil, nil, nil, "" end
      return nil, nil, nil, table.concat(allow, ", ")
    end
  end
  return nil, nil, nil, ""
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
  local handler, kind, id, allow = route(method, uri)
  if handler then return handler(ctx, token, kind, id) end
  if allow ~= "" then
    return problem(ctx, 405, nil, method .. " is not allowed here", nil, { Allow = allow })
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

-- What a 2xx fault without a body answers when the request is not
-- processed: a well-formed 201 for a record that was never stored (POST),
-- the real answer (GET: reads change nothing), 204 with nothing deleted
-- (DELETE).  A POST to no route gets a carrier, as it always did.
local function fake_success(ctx, doc, api_key)
  local method = ngx.req.get_method()
  if method == "GET" then return process(ctx) end
  if method == "DELETE" then return response(204, "") end
  local _, kind = route(method, ngx.var.uri)
  kind = kind or KINDS.carrier
  local view = kind.fake(doc, api_key)
  return created_response(kind, view, view)
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
    res = fake_success(ctx, doc_for_fake, api_key)
    if status then res.status = status end
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

-- Faults that lose the connection before the first byte of an answer.
-- On a kept-alive connection libcurl re-sends such a request by itself (it
-- cannot tell a lost answer from an idle connection the server closed just
-- as the request went out), so the client would never see the fault and
-- every count of attempts would depend on the connection it landed on.
-- Unless the fault says `connection = "any"`, it is only ever applied on a
-- fresh connection: while one is queued (counted in "fresh_faults") every
-- answer closes its connection, and a request on a reused connection that
-- pops one is closed unanswered, the fault put back for libcurl's re-send.
local function fresh_only(f)
  return (f.reset == "before" or f.reset == "during_request" or f.raw == "")
    and f.connection ~= "any"
end

local function api()
  local ctx = { request_id = "req_" .. hex(random_bytes(16)),
                epoch = tonumber(dict:get("epoch")) or 0 }
  local fault = dict:lpop("faults")             -- popped on arrival: FIFO
  ctx.fault = fault and cjson.decode(fault)
  if ctx.fault and fresh_only(ctx.fault) then
    if tonumber(ngx.var.connection_requests) > 1 then
      dict:lpush("faults", fault)               -- for the re-send, on a new connection
      ctx.fault = nil
      ctx.body = read_request_body()            -- the whole request was sent: libcurl re-sends it
      log_arrival(ctx)
      ctx.entry.status = "closed:reused"
      save_log(ctx)
      return ngx.exit(444)
    end
    dict:incr("fresh_faults", -1, 0)
  end
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

  local latency = config("latency")
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
  trickle = "number", connection = "string",
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
  if f.connection and f.connection ~= "fresh" and f.connection ~= "any" then
    return ("fault %d: connection must be 'fresh' or 'any'"):format(i)
  end
end


local function control_json(status, v)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(type(v) == "string" and v or json(v))
end

local function is_object(v)
  return type(v) == "table" and (next(v) == nil or type(next(v)) == "string")
end

-- Stored records of one kind, every account, creation order: what clients
-- see plus who created them.
local function stored(kind)
  local recs = {}
  for _, k in ipairs(dict:get_keys(0)) do
    if k:sub(1, #kind.name + 1) == kind.name .. ":" then
      local r = load(k)
      if r then recs[#recs + 1] = r end
    end
  end
  table.sort(recs, function(a, b) return a.seq < b.seq end)
  local out = {}
  for i, r in ipairs(recs) do
    local v = kind.view(r.data, true)
    v.request_id, v.idempotency_key = r.request_id, r.idempotency_key
    out[i] = v
  end
  return arr(out)
end

-- POST /_emulator/edit: a change made "by hand" (the portal, another
-- tool), so that specs can create drift.  No API rule applies except that a
-- number's voip_carrier_sid must name a carrier of its account.
--   { "carrier_id" | "number_id": id, "set": { field: value|null, ... } }
--   { "carrier_id" | "number_id": id, "delete": true }
-- `set` replaces whole top-level fields (null removes one); the schema's
-- defaults are filled in as the API would store them (a gateway without a
-- port gets 5060).  Returns status, answer.
local function edit(req)
  if not is_object(req) then return 400, { error = "body must be a JSON object" } end
  local kind = (req.carrier_id ~= nil) and KINDS.carrier or (req.number_id ~= nil) and KINDS.number
  local id = req.carrier_id or req.number_id
  if not kind or (req.carrier_id ~= nil and req.number_id ~= nil) or type(id) ~= "string" then
    return 400, { error = "give one of carrier_id or number_id (a string)" }
  end
  local set, delete = req.set, req.delete == true
  if (set == nil) == (not delete) or (set ~= nil and not is_object(set)) then
    return 400, { error = "give either set (an object) or delete: true" }
  end
  for k in pairs(req) do
    if k ~= "carrier_id" and k ~= "number_id" and k ~= "set" and k ~= "delete" then
      return 400, { error = "unknown key '" .. tostring(k) .. "'" }
    end
  end
  local rec = load(record_key(kind, id))
  if not rec then return 404, { error = "no " .. kind.noun .. " with id " .. id } end
  if delete then
    unstore(kind, rec)          -- carriers: even with numbers (left orphaned)
    return 200, { ok = true, deleted = true }
  end

  local editable = {}
  for _, f in ipairs(kind.editable) do editable[f] = true end
  for k in pairs(set) do
    if not editable[k] then
      return 400, { error = ("%s field '%s' cannot be edited (editable: %s)")
                            :format(kind.noun, k, table.concat(kind.editable, ", ")) }
    end
  end
  if kind == KINDS.number and set.voip_carrier_sid ~= nil then
    local carrier = carrier_by_sid(set.voip_carrier_sid)
    if not carrier or carrier.api_key_hash ~= rec.api_key_hash then
      return 400, { error = "voip_carrier_sid must name a carrier of the number's account" }
    end
    set.voip_carrier_sid = carrier.data.voip_carrier_sid
  end
  kind.unlink(rec.data)
  for k, v in pairs(set) do
    if v == null then rec.data[k] = nil else rec.data[k] = v end
  end
  rules.defaults(rec.data, kind.schema)   -- as the API would store it
  if kind == KINDS.number then rec.data.updated_at = now_rfc3339() end
  kind.link(rec.data)
  local ok, err = save(record_key(kind, id), rec)
  if not ok then return 500, { error = "emulator storage full: " .. tostring(err) } end
  return 200, { ok = true, [kind.name] = kind.view(rec.data, true) }
end

-- "METHOD /_emulator/name" -> function(body) returning status, answer
-- (an answer that is a string is sent as it is: JSON already).
local CONTROL = {
  ["GET /_emulator/ping"] = function()
    return 200, { ok = true, pid = ngx.worker.pid() }
  end,

  ["POST /_emulator/reset"] = function()
    local epoch = (tonumber(dict:get("epoch")) or 0) + 1
    dict:flush_all()             -- config keys too: defaults again
    dict:set("epoch", epoch)
    return 200, { ok = true }
  end,

  ["GET /_emulator/config"] = function()
    local out = all_config()
    out.ok = true
    return 200, out
  end,

  ["POST /_emulator/config"] = function(body)
    local cfg = decode(body)
    if not is_object(cfg) then return 400, { error = "body must be a JSON object" } end
    for k, v in pairs(cfg) do
      local spec = CONFIG[k]
      if not spec then return 400, { error = "unknown config key '" .. tostring(k) .. "'" } end
      if not spec.ok(v) then return 400, { error = k .. " must be " .. spec.want } end
    end
    for k, v in pairs(cfg) do dict:set("config:" .. k, json(v)) end
    local out = all_config()
    out.ok = true
    return 200, out
  end,

  ["POST /_emulator/faults"] = function(body)
    local list = decode(body)
    if type(list) == "table" and body:find("^%s*{") then list = { list } end  -- one object
    if type(list) ~= "table" then return 400, { error = "body must be a JSON array of faults" } end
    for i, f in ipairs(list) do
      local err = check_fault(f, i)
      if err then return 400, { error = err } end
    end
    for _, f in ipairs(list) do
      if fresh_only(f) then dict:incr("fresh_faults", 1, 0) end   -- before it can be popped
      dict:rpush("faults", json(f))
    end
    return 200, { ok = true, queued = dict:llen("faults") or 0 }
  end,

  ["GET /_emulator/log"] = function()
    local out = {}   -- entries are stored as JSON already: just join them
    for i = 1, tonumber(dict:get("log_seq")) or 0 do
      out[#out + 1] = dict:get("log:" .. i)
    end
    return 200, "[" .. table.concat(out, ",") .. "]"
  end,

  ["GET /_emulator/carriers"] = function() return 200, json(stored(KINDS.carrier)) end,
  ["GET /_emulator/numbers"] = function() return 200, json(stored(KINDS.number)) end,
  ["POST /_emulator/edit"] = function(body) return edit(decode(body)) end,
}

local function control()
  local method, uri = ngx.req.get_method(), ngx.var.uri
  local body = read_request_body()
  local handler = CONTROL[method .. " " .. uri]
  if handler then return control_json(handler(body)) end
  local allow = {}
  for _, m in ipairs(METHODS) do
    if CONTROL[m .. " " .. uri] then allow[#allow + 1] = m end
  end
  if #allow > 0 then
    ngx.header["Allow"] = table.concat(allow, ", ")
    return control_json(405, { error = "use " .. allow[1] .. " " .. uri })
  end
  return control_json(404, { error = "unknown control endpoint " .. uri })
end

---------------------------------------------------------------------------
-- Entry points
---------------------------------------------------------------------------

-- Called from init_by_lua (master, before the fork).
function M.init(opts)
  default_latency = tonumber(opts and opts.latency) or 0
end

-- `closing`: called from the location that answers with keepalive off.
function M.handle(closing)
  if ngx.var.uri:sub(1, 11) == "/_emulator/" then return control() end
  if not closing and (tonumber(dict:get("fresh_faults")) or 0) > 0 then
    return ngx.exec("@closing")                 -- see fresh_only()
  end
  return api()
end

return M
