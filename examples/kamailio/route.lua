-- route.lua: Kamailio KEMI routing for the edge of a carrier interconnect.
-- The orchestration system announces a new trunk with a SIP MESSAGE to
-- sip:carrier-provisioning@<this edge> whose body is the carrier as JSON
-- (the parameters of topcalls carriers.add); this edge provisions the
-- TopCalls carrier and answers 200 with its sids in X-TopCalls-* headers,
-- or an error reply whose X-TopCalls-Error header says what went wrong.
-- SPDX-License-Identifier: MIT

-- Top-level code runs in every Kamailio process, before and after fork,
-- and KSR is not usable here: load modules only, create nothing.
local topcalls = require "topcalls"
local cjson    = require("cjson.safe").new()   -- private: never flip the shared instance

local type, pcall, tostring, pairs = type, pcall, tostring, pairs

-- Who may provision: the orchestration system's addresses.
local ORCHESTRATORS = {}
for ip in (os.getenv("TOPCALLS_ORCHESTRATORS") or "127.0.0.1"):gmatch("[^,%s]+") do
  ORCHESTRATORS[ip] = true
end

-- One client per SIP worker process, made on first use inside a route
-- (never at top level, which the main process runs before forking).
-- The key and base URL come from TOPCALLS_API_KEY / TOPCALLS_BASE_URL.
local client
local function get_client()
  if client then return client end
  local c, msg, err = topcalls.new{ user_agent = "kamailio-edge", timeout = 10, max_retries = 1 }
  if not c then return nil, msg, err end
  client = c
  return c
end

-- A header value: one line, printable, bounded.
local function header_value(s)
  s = tostring(s):gsub("[%c]+", " ")
  if #s > 800 then s = s:sub(1, 797) .. "..." end
  return s
end

-- Reply with extra headers: statefully (absorbing retransmissions) once
-- t_newtran made a transaction, else statelessly.
local function reply(code, reason, headers, stateless)
  for name, value in pairs(headers or {}) do
    KSR.hdr.append_to_reply(name .. ": " .. header_value(value) .. "\r\n")
  end
  if stateless then KSR.sl.sl_send_reply(code, reason) else KSR.tm.t_reply(code, reason) end
end

-- SIP reply for each kind of failure.
local FAILURE = {
  validation = { 400, "Invalid Carrier" },
  config     = { 500, "Provisioning Misconfigured" },
  api        = { 502, "TopCalls Rejected" },
  decode     = { 502, "TopCalls Bad Answer" },
  transport  = { 503, "TopCalls Unavailable" },
}

local function fail_reply(msg, err)
  local f = FAILURE[err and err.kind] or { 500, "Server Internal Error" }
  local headers = { ["X-TopCalls-Error"] = msg }
  if err and err.status then headers["X-TopCalls-Status"] = err.status end
  if err and err.request_id then headers["X-TopCalls-Request-Id"] = err.request_id end
  if err and err.retry_after then headers["Retry-After"] = math.ceil(err.retry_after) end
  KSR.err("provisioning failed: " .. header_value(msg) .. "\n")      -- one line, never the API key
  reply(f[1], f[2], headers)
end

-- The provisioning request itself. Returns nothing; every outcome is a reply.
local function provision()
  if not ORCHESTRATORS[KSR.pv.get("$si")] then
    return reply(403, "Not An Orchestrator")
  end
  local ctype = KSR.pv.get("$hdr(Content-Type)") or ""
  if not ctype:lower():find("^%s*application/json") then
    return reply(415, "Unsupported Media Type", { Accept = "application/json" })
  end
  local body = KSR.pv.get("$rb") or ""
  local params = cjson.decode(body)
  if type(params) ~= "table" or not body:find("^%s*{") then
    return reply(400, "Bad Carrier JSON", { ["X-TopCalls-Error"] = "the body must be a JSON object" })
  end
  -- The same trunk announced twice (a retry, a UDP retransmission that
  -- reached another worker) must not create two carriers: the idempotency
  -- key comes from the trunk's id, else from the SIP transaction.
  local trunk = KSR.pv.get("$hdr(X-Trunk-Id)")
  local key = trunk and ("trunk-" .. trunk)
              or ("sip-" .. KSR.pv.get("$(ci{s.md5})") .. "-" .. KSR.pv.get("$cs"))

  local c, msg, err = get_client()
  if not c then return fail_reply(msg, err) end
  local carrier
  carrier, msg, err = c.carriers.add(params, { idempotency_key = key })
  if not carrier then return fail_reply(msg, err) end
  KSR.info("topcalls: provisioned carrier " .. tostring(carrier.voip_carrier_sid) .. " for "
           .. header_value(params.carrier_name) .. "\n")
  return reply(200, "Carrier Provisioned", {
    ["X-TopCalls-Carrier-Id"] = carrier.id,
    ["X-TopCalls-Voip-Carrier-Sid"] = carrier.voip_carrier_sid,
    ["X-TopCalls-Sip-Gateway-Sid"] = carrier.sip_gateway_sid,
  })
end

-- Kamailio calls this for every SIP request.
function ksr_request_route()
  if KSR.is_ACK() then return end
  -- Absorb retransmissions: of a transaction this process already answered,
  -- and of one another worker is still provisioning (the API call blocks
  -- that worker for up to `timeout`, longer than SIP's T1 retransmit timer).
  if KSR.tmx.t_precheck_trans() > 0 then
    KSR.tm.t_check_trans()
    return
  end
  if KSR.tm.t_check_trans() == 0 then return end

  if KSR.is_OPTIONS() then return reply(200, "Alive", nil, true) end
  if KSR.is_MESSAGE() and KSR.pv.get("$rU") == "carrier-provisioning" then
    KSR.tm.t_newtran()
    local ok, why = pcall(provision)
    if not ok then
      -- a bug must still answer, never drop the request or kill the worker
      KSR.err("topcalls: provisioning route failed: " .. header_value(why) .. "\n")
      reply(500, "Server Internal Error", { ["X-TopCalls-Error"] = "internal error in the provisioning route" })
    end
    return
  end
  -- The rest of the edge's routing (relaying calls to and from the
  -- carrier) would go here.
  return reply(404, "Not Here", nil, true)
end
