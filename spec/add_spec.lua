-- carriers.add end to end against the local emulator: what goes on the
-- wire, what comes back, retries, failures of every kind.
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local timing = require "spec.support.timing"
local cjson = require("cjson").new()

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

before_each(function() emu.reset() end)

describe("carriers.add on the wire", function()
  it("sends the documented headers and the validated body with defaults filled in", function()
    local c = fx.client({ user_agent = "provisioner/2.0" })
    local carrier = assert(c.carriers.add{
      carrier_name = "Wire Test", sip_gateway = { ipv4 = "198.51.100.7" },
    })
    local reqs = fx.requests("POST")
    assert.are.equal(1, #reqs)
    local r = reqs[1]
    assert.are.equal("/v1/phone-numbers/carriers", r.uri)
    assert.are.equal("Bearer " .. fx.API_KEY, r.headers["authorization"])
    assert.are.equal("application/json", r.headers["content-type"])
    assert.are.equal("application/json", r.headers["accept"])
    local ua = "^topcalls%-lua/" .. topcalls.VERSION:gsub("%.", "%%.") .. " %((.-); libcurl/[%d.]+%) provisioner/2%.0$"
    local luav = r.headers["user-agent"]:match(ua)
    assert.is_truthy(luav, r.headers["user-agent"])
    assert.are.equal(rawget(_G, "jit") and jit.version or _VERSION, luav)
    assert.is_truthy(r.headers["idempotency-key"]:match(UUID), r.headers["idempotency-key"])
    assert.are.same({
      carrier_name = "Wire Test", trunk_type = "static_ip",
      sip_gateway = { ipv4 = "198.51.100.7", port = 5060, inbound = true, outbound = true },
    }, cjson.decode(r.body))
    assert.are.equal("Wire Test", carrier.carrier_name)
  end)

  it("returns every documented field, and passes extra server fields through", function()
    local carrier = assert(fx.client().carriers.add(fx.carrier()))
    for _, k in ipairs({ "id", "voip_carrier_sid", "sip_gateway_sid" }) do
      assert.is_truthy(tostring(carrier[k]):match(UUID), k .. " = " .. tostring(carrier[k]))
    end
    assert.is_string(carrier.account_id)
    assert.are.equal("My VoIP Provider", carrier.carrier_name)
    assert.are.equal("static_ip", carrier.trunk_type)
    assert.is_truthy(carrier.created_at:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d"), carrier.created_at)
    assert.are.equal("carrier", carrier.object)          -- extra field, passed through
    local stored = emu.carriers()
    assert.are.equal(1, #stored)
    assert.are.equal(carrier.voip_carrier_sid, stored[1].voip_carrier_sid)
  end)

  it("creates carriers of all three trunk types", function()
    local c = fx.client()
    local reg = assert(c.carriers.add(fx.carrier{
      carrier_name = "Registered", trunk_type = "reg",
      sip_gateway = { ipv4 = "sip.example.net", inbound = false },
      registration = { username = "acct1", password = "p4ss word", sip_realm = "example.net",
                       from_domain = "example.net", from_user = "acct1", use_tls = true,
                       public_ip_in_contact = false },
    }))
    local auth = assert(c.carriers.add(fx.carrier{
      carrier_name = "Digest", trunk_type = "auth",
      inbound_auth = { username = "carrier-in", password = "s3cret" },
    }))
    local static = assert(c.carriers.add(fx.carrier()))
    assert.are.same({ "reg", "auth", "static_ip" }, { reg.trunk_type, auth.trunk_type, static.trunk_type })
    assert.are.equal(3, #emu.carriers())
    local sent = cjson.decode(fx.requests("POST")[1].body)
    assert.are.same({ username = "acct1", password = "p4ss word", sip_realm = "example.net",
                      from_domain = "example.net", from_user = "acct1", use_tls = true,
                      public_ip_in_contact = false }, sent.registration)
  end)

  it("rejects the seed's own example before any request is made", function()
    local carrier, msg, err = fx.client().carriers.add{
      carrier_name = "My VoIP Provider",
      sip_gateway = { ipv4 = "sip.myprovider.com", inbound = true },
    }
    assert.is_nil(carrier)
    assert.are.equal("validation", err.kind)
    assert.are.equal(1, #err.errors)
    assert.are.equal("sip_gateway.ipv4", err.errors[1].path)
    assert.are.equal("format", err.errors[1].code)
    assert.are.equal(msg, tostring(err))
    assert.are.equal(0, #emu.log())
  end)

  it("reports a bad idempotency_key together with the params' violations, offline", function()
    local _, msg, err = fx.client().carriers.add({ sip_gateway = { ipv4 = "1.2.3.4" } },
                                                 { idempotency_key = "has space!" })
    assert.are.equal("validation", err.kind)
    local paths = {}
    for _, e in ipairs(err.errors) do paths[e.path] = e.code end
    assert.are.same({ carrier_name = "required", idempotency_key = "format" }, paths)
    assert.is_truthy(msg:find("^topcalls: validation: 2 problems: "))
    assert.are.equal(0, #emu.log())
  end)

  it("raises for a params argument that is not a table", function()
    local c = fx.client()
    assert.has_error(function() c.carriers.add("carrier") end,
                     "bad argument #1 to 'add' (table expected, got string)")
    assert.has_error(function() c.carriers.add({}, 5) end,
                     "bad argument #2 to 'add' (table expected, got number)")
  end)
end)

describe("idempotency", function()
  it("sends the caller's key, and a replay returns the same carrier without a second one", function()
    local c = fx.client()
    local key = "provision-trunk-42"
    local first = assert(c.carriers.add(fx.carrier(), { idempotency_key = key }))
    local again = assert(c.carriers.add(fx.carrier(), { idempotency_key = key }))
    assert.are.equal(first.id, again.id)
    local reqs = fx.requests("POST")
    assert.are.equal(key, reqs[1].headers["idempotency-key"])
    assert.are.equal(key, reqs[2].headers["idempotency-key"])
    assert.is_true(reqs[2].replayed)
    assert.are.equal(1, #emu.carriers())
  end)

  it("makes a fresh key for each logical call", function()
    local c = fx.client()
    assert(c.carriers.add(fx.carrier()))
    assert(c.carriers.add(fx.carrier()))
    local reqs = fx.requests("POST")
    assert.are_not.equal(reqs[1].headers["idempotency-key"], reqs[2].headers["idempotency-key"])
    assert.are.equal(2, #emu.carriers())
  end)
end)

describe("retries", function()
  it("retries a 503 with the same idempotency key and creates exactly one carrier", function()
    emu.faults({ { status = 503, retry_after = "0" } })
    local carrier, _, err = fx.client().carriers.add(fx.carrier())
    assert.is_nil(err)
    local reqs = fx.requests("POST")
    assert.are.equal(2, #reqs)
    assert.are.equal(reqs[1].headers["idempotency-key"], reqs[2].headers["idempotency-key"])
    assert.are.equal(1, #emu.carriers())
    assert.are.equal(emu.carriers()[1].id, carrier.id)
  end)

  it("never creates two carriers when the response to a processed request is lost", function()
    emu.faults({ { after_process = true, status = 502, retry_after = "0" },
                 { after_process = true, reset = "before" } })
    local c = fx.client({ max_retries = 2 })
    local carrier = assert(c.carriers.add(fx.carrier()))
    local reqs = fx.requests("POST")
    assert.are.equal(3, #reqs)
    assert.is_true(reqs[3].replayed)
    assert.are.equal(1, #emu.carriers())
    assert.are.equal(emu.carriers()[1].id, carrier.id)
  end)

  it("retries a connection closed before any response", function()
    emu.faults({ { reset = "before" } })
    assert(fx.client().carriers.add(fx.carrier()))
    assert.are.equal(2, #fx.requests("POST"))
    assert.are.equal(1, #emu.carriers())
  end)

  it("retries 429 after a Retry-After given as an HTTP-date in the past", function()
    emu.faults({ { status = 429, retry_after = "Wed, 21 Oct 2015 07:28:00 GMT" } })
    assert(fx.client().carriers.add(fx.carrier()))
    assert.are.equal(2, #fx.requests("POST"))
  end)

  it("gives up after max_retries + 1 attempts, reporting a retryable api error", function()
    emu.faults({ { status = 503, retry_after = "0" }, { status = 503, retry_after = "0" },
                 { status = 503, retry_after = "0" } })
    local carrier, msg, err = fx.client().carriers.add(fx.carrier())
    assert.is_nil(carrier)
    assert.are.equal("api", err.kind)
    assert.are.equal(503, err.status)
    assert.are.equal(3, err.attempts)
    assert.is_true(err.retryable)
    assert.are.equal(0, err.retry_after)
    assert.is_truthy(msg:find("^topcalls: api: 503 "))
    assert.are.equal(0, #emu.carriers())
  end)

  it("honours call_opts.max_retries", function()
    emu.faults({ { status = 500 }, { status = 500 } })
    local _, _, err = fx.client().carriers.add(fx.carrier(), { max_retries = 0 })
    assert.are.equal(1, err.attempts)
    assert.are.equal(1, #fx.requests("POST"))
  end)

  it("stops at a Retry-After over 60 s and reports it", function()
    emu.faults({ { status = 429, retry_after = "120" } })
    local _, _, err = fx.client().carriers.add(fx.carrier())
    assert.are.equal("api", err.kind)
    assert.are.equal(429, err.status)
    assert.are.equal(120, err.retry_after)
    assert.are.equal(1, err.attempts)
    assert.is_true(err.retryable)
    assert.are.equal(1, #fx.requests("POST"))
  end)

  it("never retries a 401", function()
    local c = fx.client({ api_key = "not-a-topcalls-key" })
    local _, msg, err = c.carriers.add(fx.carrier())
    assert.are.equal("api", err.kind)
    assert.are.equal(401, err.status)
    assert.is_false(err.retryable)
    assert.are.equal(1, err.attempts)
    assert.are.equal(1, #fx.requests("POST"))
    assert.is_truthy(msg:find("^topcalls: api: 401 "))
  end)

  it("waits the jittered backoff when the server gives no Retry-After", function()
    emu.faults({ { status = 500 } })
    local events = {}
    local c = fx.client({ logger = function(e) events[#events + 1] = e end })
    assert(c.carriers.add(fx.carrier()))
    assert.are.equal(2, #events)
    assert.is_true(events[1].retry_in >= 0.375 and events[1].retry_in <= 0.5, tostring(events[1].retry_in))
    assert.are.equal("retry", events[1].verdict)
    assert.are.equal("done", events[2].verdict)
  end)
end)

describe("failures", function()
  it("maps a problem+json answer into the error table", function()
    local c = fx.client({ strict = false })
    local _, msg, err = c.carriers.add(fx.carrier{ carrier_label = "x" })
    assert.are.equal("api", err.kind)
    assert.are.equal(422, err.status)
    assert.is_false(err.retryable)
    assert.is_string(err.type)
    assert.is_string(err.title)
    assert.is_truthy(err.instance:find(err.request_id, 1, true))
    local r = fx.requests("POST")[1]
    assert.are.equal(1, #fx.requests("POST"))
    local found = false
    for _, e in ipairs(err.errors) do
      if e.path == "carrier_label" and e.code == "unknown_field" then found = true end
    end
    assert.is_true(found, "server's errors[] carried over")
    assert.is_truthy(msg:find("^topcalls: api: 422 "))
    assert.are.equal(1, select(2, msg:gsub("\n", "")) + 1)
    assert.is_truthy(r.body:find("carrier_label", 1, true))  -- strict=false sent it as given
  end)

  it("takes request_id from X-Request-Id", function()
    emu.faults({ { status = 404, headers = { ["X-Request-Id"] = "req_fixed123" } } })
    local _, _, err = fx.client().carriers.add(fx.carrier())
    assert.are.equal("req_fixed123", err.request_id)
  end)

  it("takes request_id from the problem's instance when there is no X-Request-Id", function()
    local instance = "urn:topcalls:request:req_from_instance"
    emu.faults({ { status = 409, headers = { ["X-Request-Id"] = "" }, content_type = "application/problem+json",
                   body = '{"title":"Conflict","status":409,"instance":"' .. instance .. '"}' } })
    local _, _, err = fx.client().carriers.add(fx.carrier())
    assert.are.equal(409, err.status)
    assert.are.equal(instance, err.instance)
    assert.are.equal(instance, err.request_id)
  end)

  it("reports a malformed success body as a decode error", function()
    local cases = {
      { status = 201, body = "{not json", content_type = "application/json" },
      { status = 201, body = "[1, 2]", content_type = "application/json" },
      { status = 201, body = "<html>ok</html>", content_type = "text/html" },
      { status = 201, body = "", content_type = "application/json" },
    }
    for _, fault in ipairs(cases) do
      emu.faults({ fault })
      local carrier, msg, err = fx.client().carriers.add(fx.carrier())
      assert.is_nil(carrier)
      assert.are.equal("decode", err.kind, fault.body)
      assert.are.equal(201, err.status)
      assert.is_truthy(msg:find("^topcalls: decode: "))
    end
  end)

  it("refuses a response body over 1 MiB, with or without Content-Length", function()
    for _, chunked in ipairs({ false, true }) do
      emu.faults({ { oversize = 2 * 1024 * 1024, chunked = chunked } })
      local _, msg, err = fx.client().carriers.add(fx.carrier())
      assert.are.equal("transport", err.kind)
      assert.is_false(err.retryable)
      assert.is_truthy(msg:find("1 MiB", 1, true), msg)
      assert.are.equal(1, err.attempts)
    end
  end)

  it("accepts a body just under the cap", function()
    emu.faults({ { oversize = 1024 * 1024 - 100 } })
    local carrier = assert(fx.client().carriers.add(fx.carrier()))
    assert.is_table(carrier)
  end)

  it("does not follow a redirect", function()
    emu.faults({ { status = 307, redirect = emu.url .. "/elsewhere" } })
    local _, msg, err = fx.client().carriers.add(fx.carrier())
    assert.are.equal("api", err.kind)
    assert.are.equal(307, err.status)
    assert.are.equal(1, #emu.log())
    assert.is_truthy(msg:find("not followed", 1, true))
  end)

  it("times out an attempt, and reports it as a retryable transport error", function()
    -- long enough for the request to reach the server (5 x a plain add
    -- measured now), so that it is the answer that is waited for, and the
    -- answer held 10 times longer than that
    local timeout = timing.scaled(timing.round_trip(), 5, 0.3, 5)
    emu.faults({ { delay = 10 * timeout } })
    local _, _, err = fx.client().carriers.add(fx.carrier(), { timeout = timeout, max_retries = 0 })
    assert.are.equal("transport", err.kind)
    assert.are.equal(28, err.curl_code)
    assert.is_true(err.retryable)
  end)

  it("reports a connection reset during the body as a transport error", function()
    emu.faults({ { reset = "during_body" } })
    local _, _, err = fx.client().carriers.add(fx.carrier(), { max_retries = 0 })
    assert.are.equal("transport", err.kind)
    assert.are.equal(18, err.curl_code)
    assert.is_true(err.retryable)
  end)

  it("reports a refused connection after retrying it", function()
    local c = fx.client({ base_url = "http://127.0.0.1:1", max_retries = 1 })
    local _, msg, err = c.carriers.add(fx.carrier())
    assert.are.equal("transport", err.kind)
    assert.are.equal(7, err.curl_code)
    assert.are.equal(2, err.attempts)
    assert.is_true(err.retryable)
    assert.is_truthy(msg:find("gave up after 2 attempts", 1, true))
  end)
end)

describe("TLS", function()
  it("verifies the server certificate by default", function()
    local c = fx.client({ base_url = emu.tls_url })
    local _, _, err = c.carriers.add(fx.carrier())
    assert.are.equal("transport", err.kind)
    assert.are.equal(60, err.curl_code)
    assert.is_false(err.retryable)
    assert.are.equal(1, err.attempts)
    assert.are.equal(0, #emu.carriers())
  end)

  it("trusts the CA given in ca_file", function()
    local c = fx.client({ base_url = emu.tls_url, ca_file = emu.ca_file })
    local carrier = assert(c.carriers.add(fx.carrier()))
    assert.are.equal(1, #emu.carriers())
    assert.are.equal(emu.carriers()[1].id, carrier.id)
  end)
end)

describe("connections", function()
  it("keeps one connection alive for 50 adds", function()
    local c = fx.client()
    for i = 1, 50 do assert(c.carriers.add(fx.carrier{ carrier_name = "Trunk " .. i })) end
    local reqs = fx.requests("POST")
    assert.are.equal(50, #reqs)
    for i = 2, 50 do assert.are.equal(reqs[1].connection, reqs[i].connection) end
    assert.are.equal(50, tonumber(reqs[50].connection_requests))
    assert.are.equal(50, #emu.carriers())
  end)

  it("opens a new connection after the server closed the kept one", function()
    local c = fx.client()
    assert(c.carriers.add(fx.carrier()))
    -- the kept-alive connection dies under the next request (connection =
    -- "any": the emulator would otherwise keep the fault for a fresh one)
    emu.faults({ { reset = "before", connection = "any" } })
    assert(c.carriers.add(fx.carrier()))
    assert(c.carriers.add(fx.carrier()))
    local reqs = fx.requests("POST")
    assert.are.equal(4, #reqs)                 -- libcurl re-sent the lost request itself
    assert.are.same({ 2, "reset:before" }, { reqs[2].connection_requests, reqs[2].status })
    assert.are_not.equal(reqs[1].connection, reqs[3].connection)
    assert.are.equal(reqs[3].connection, reqs[4].connection)
    assert.are.equal(3, #emu.carriers())
  end)
end)

describe("carriers.delete", function()
  it("deletes a carrier by its record id", function()
    local c = fx.client()
    local carrier = assert(c.carriers.add(fx.carrier()))
    assert.are.equal(true, c.carriers.delete(carrier.id))
    assert.are.equal(0, #emu.carriers())
    local del = fx.requests("DELETE")[1]
    assert.are.equal("/v1/phone-numbers/carriers/" .. carrier.id, del.uri)
    assert.is_nil(del.headers["idempotency-key"])
  end)

  it("reports an unknown carrier as a 404 api error", function()
    local _, _, err = fx.client().carriers.delete("00000000-0000-4000-8000-000000000000")
    assert.are.equal("api", err.kind)
    assert.are.equal(404, err.status)
    assert.are.equal(1, err.attempts)
  end)

  it("refuses an id that is not a UUID before any request", function()
    local _, _, err = fx.client().carriers.delete("../../carriers")
    assert.are.equal("validation", err.kind)
    assert.are.same({ { path = "carrier_id", code = "format", message = "must be a carrier record id (a UUID)" } },
                    err.errors)
    assert.are.equal(0, #emu.log())
    assert.has_error(function() fx.client().carriers.delete(42) end,
                     "bad argument #1 to 'delete' (string expected, got number)")
  end)
end)
