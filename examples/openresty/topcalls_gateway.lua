-- topcalls_gateway: a small provisioning gateway for nginx with the Lua
-- module. POST /carriers with the carrier as JSON; the answer is the created
-- carrier (201) or {"error": {...}} with a fitting status. The call to the
-- TopCalls API runs in the nginx thread pool, so the worker keeps serving
-- other requests meanwhile.
--   location = /carriers { content_by_lua_block { require("topcalls_gateway").handle() } }
-- SPDX-License-Identifier: MIT

local topcalls = require "topcalls.ngx"
local cjson    = require("cjson.safe").new()   -- private instance: never flip the shared one

local ngx, type, pairs, tostring, find, ceil = ngx, type, pairs, tostring, string.find, math.ceil

local _M = {}

-- HTTP status for each error kind. Problems the TopCalls API found in the
-- request itself keep their status; the rest mean our upstream failed.
local function status_for(err)
  if err.kind == "validation" then return 422 end
  if err.kind == "api" and (err.status == 409 or err.status == 422) then return err.status end
  if err.kind == "api" and err.status == 429 then return 503 end
  if err.kind == "transport" then return err.retryable and 503 or 502 end
  if err.kind == "config" then return 500 end
  return 502
end

local function send(status, value, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.print(cjson.encode(value), "\n")
  return ngx.exit(ngx.OK)
end

local function fail(status, kind, message)
  return send(status, { error = { kind = kind, message = message } })
end

-- The handler. `carriers` (optional) is the resource to use: by default
-- the non-blocking `require("topcalls.ngx").carriers`, whose client is
-- built from TOPCALLS_API_KEY / TOPCALLS_BASE_URL (declare both with `env`).
function _M.handle(carriers)
  carriers = carriers or topcalls.carriers
  if ngx.req.get_method() ~= "POST" then
    return send(405, { error = { kind = "request", message = "use POST" } }, { Allow = "POST" })
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    return fail(ngx.req.get_body_file() and 413 or 400, "request",
                ngx.req.get_body_file() and "request body too large" or "a JSON body is required")
  end
  local params, why = cjson.decode(body)
  if type(params) ~= "table" or not find(body, "^%s*{") then
    return fail(400, "request", "the body must be a JSON object" .. (why and ": " .. why or ""))
  end
  -- JSON null means "absent" here, as in most JSON APIs
  for k, v in pairs(params) do if v == cjson.null then params[k] = nil end end

  local key = ngx.req.get_headers()["Idempotency-Key"]
  local carrier, msg, err = carriers.add(params, { idempotency_key = type(key) == "string" and key or nil })
  if not carrier then
    ngx.log(ngx.WARN, msg)                     -- one line, never the API key
    local headers = err.retry_after and { ["Retry-After"] = tostring(ceil(err.retry_after)) } or nil
    return send(status_for(err), { error = {
      kind = err.kind, message = err.message, errors = #err.errors > 0 and err.errors or nil,
      status = err.status, request_id = err.request_id, retryable = err.retryable,
    } }, headers)
  end
  return send(201, carrier)
end

return _M
