-- topcalls inside real nginx with Debian's Lua module (LuaJIT), started by
-- tools/check-hosts with tools/hosts/nginx.conf.in: the example gateway
-- through the thread pool, plain blocking calls from handlers, timers and
-- init_by_lua, the missing-pool error, fork safety with 2 workers, and a
-- slow API not stalling the worker.
-- SPDX-License-Identifier: MIT

local h = require "spec.hosts.support"
local emu = h.emu

local UUID = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

local function params(name, extra)
  local p = { carrier_name = name, sip_gateway = { ipv4 = "203.0.113.10", port = 5062 } }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

local stored = h.stored

describe("nginx: the example gateway (topcalls.ngx, thread pool)", function()
  it("creates the carrier and answers 201 with it", function()
    local name = h.unique("ngx pool")
    local status, body, raw = h.post_pool("/carriers", params(name))
    assert.are.equal(201, status, raw)
    assert.is_truthy(body.voip_carrier_sid:match(UUID), raw)
    local c = stored(name)
    assert.are.equal(c.voip_carrier_sid, body.voip_carrier_sid)
    assert.are.equal(c.id, body.id)
    assert.are.equal(5062, body.sip_gateway.port)
  end)

  it("passes the caller's Idempotency-Key: a replay returns the same carrier", function()
    local name = h.unique("ngx idem")
    local key = "gw-" .. os.time() .. "-idem"
    local s1, b1, raw1 = h.post_pool("/carriers", params(name), { ["Idempotency-Key"] = key })
    local s2, b2, raw2 = h.post_pool("/carriers", params(name), { ["Idempotency-Key"] = key })
    assert.are.equal(201, s1, raw1)
    assert.are.equal(201, s2, raw2)
    assert.are.equal(b1.voip_carrier_sid, b2.voip_carrier_sid)
    assert.are.equal(1, #h.carriers_named(name))
    for _, r in ipairs(h.requests_named(name)) do assert.are.equal(key, r.idempotency_key) end
  end)

  it("answers validation errors as JSON, with every violation, sending nothing", function()
    local before = #emu.log()
    local status, body, raw = h.post_pool("/carriers", {
      carrier_name = "", sip_gateway = { ipv4 = "sip.example.com", port = 70000 }, trunk_typo = "x",
    })
    assert.are.equal(422, status, raw)
    assert.are.equal("validation", body.error.kind)
    assert.is_truthy(body.error.message:match("^topcalls: validation: "), raw)
    local paths = {}
    for _, e in ipairs(body.error.errors) do paths[e.path] = e.code end
    assert.are.same({ carrier_name = "length", ["sip_gateway.ipv4"] = "format",
                      ["sip_gateway.port"] = "range", trunk_typo = "unknown_field" }, paths)
    assert.are.equal(before, #emu.log())
  end)

  it("refuses a bad Idempotency-Key header at path idempotency_key", function()
    local name = h.unique("ngx badkey")
    local status, body, raw = h.post_pool("/carriers", params(name), { ["Idempotency-Key"] = "no spaces allowed" })
    assert.are.equal(422, status, raw)
    assert.are.equal("idempotency_key", body.error.errors[1].path)
    assert.are.equal(0, #h.requests_named(name))
  end)

  it("rebuilds API errors that crossed the thread boundary", function()
    local name = h.unique("ngx api error")
    emu.faults{ { status = 409, body = '{"type":"about:blank","title":"Conflict","status":409,'
                  .. '"detail":"carrier name taken","errors":[{"path":"carrier_name","message":"taken","code":"duplicate"}]}',
                  content_type = "application/problem+json" } }
    local status, body, raw = h.post_pool("/carriers", params(name))
    assert.are.equal(409, status, raw)
    assert.are.equal("api", body.error.kind)
    assert.are.equal(409, body.error.status)
    assert.are.equal("carrier_name", body.error.errors[1].path)
    assert.is_truthy(body.error.message:match("^topcalls: api: 409 Conflict: carrier name taken"), raw)
    local reqs = h.requests_named(name)
    assert.are.equal(1, #reqs)
    assert.are.equal(reqs[1].request_id, body.error.request_id)
  end)

  it("keeps one kept-alive connection per pool thread", function()
    local name = h.unique("ngx keepalive")
    for i = 1, 8 do
      local status, _, raw = h.post_pool("/carriers", params(name .. " " .. i))
      assert.are.equal(201, status, raw)
    end
    local conns, reused = {}, 0
    for _, r in ipairs(emu.log()) do
      local b = h.decode(r.body or "")
      if type(b) == "table" and type(b.carrier_name) == "string" and b.carrier_name:sub(1, #name) == name then
        conns[r.pid .. ":" .. r.connection] = true
        if r.connection_requests > 1 then reused = reused + 1 end
      end
    end
    local n = 0
    for _ in pairs(conns) do n = n + 1 end
    assert.is_true(n >= 1 and n <= 4, n .. " connections for 8 sequential adds (pool has 4 threads)")
    assert.is_true(reused >= 4, "only " .. reused .. " of 8 requests reused a connection")
  end)

  it("runs fleet plan and apply through the pool; the next plan is empty", function()
    local name = h.unique("ngx fleet")
    local n = os.time() % 1000000
    local status, body, raw = h.request("GET", h.pool_url .. "/fleet?n=" .. n .. "&name=" .. name:gsub(" ", "%%20"))
    assert.are.equal(200, status, raw)
    assert.are.same({ add = 3, replace = 0, move = 0, delete = 0 }, body.summary, raw)
    assert.are.same({ 3, 0, 0 }, { body.done, body.failed, body.again }, raw)
    assert.are.equal(1, #h.carriers_named(name))
  end)

  it("runs delete through the pool and replays the logger's events in the handler", function()
    local name = h.unique("ngx api")
    local status, body, raw = h.request("GET", h.pool_url .. "/api?name=" .. name:gsub(" ", "%%20"))
    assert.are.equal(200, status, raw)
    assert.is_true(body.deleted, raw)
    assert.are.equal(0, #h.carriers_named(name))
    -- a second delete: a 404 api error, rebuilt with its __tostring
    assert.are.equal("api", body.again_kind)
    assert.are.equal(404, body.again_status)
    assert.are.equal(body.again_message, body.again_tostring)
    assert.are.equal("carrier_id", body.bad_path)
    assert.is_true(body.valid)
    -- one event per attempt: add, delete, delete
    assert.are.equal(3, #body.events, raw)
    assert.are.equal("POST", body.events[1].method)
    assert.are.equal("done", body.events[1].verdict)
    assert.are.equal(h.requests_named(name)[1].idempotency_key, body.events[1].idempotency_key)
    assert.are.equal("DELETE", body.events[2].method)
    assert.are.equal(404, body.events[3].status)
    assert.is_nil(raw:find("tc_test_hosts", 1, true))
    assert.is_truthy(body.client:find("pool topcalls", 1, true), body.client)
  end)

  it("names the thread_pool directive when the pool is missing, without hanging", function()
    -- "hanging" is against a whole add through the pool measured now (a
    -- loaded machine slows both); a hang would last until a timeout
    local base_name = h.unique("ngx nopool baseline")
    local t0 = h.now()
    local s0, _, raw0 = h.post_pool("/carriers", params(base_name))
    local baseline = h.now() - t0
    assert.are.equal(201, s0, raw0)
    local name = h.unique("ngx nopool")
    local started = h.now()
    local status, body, raw = h.post_pool("/nopool/carriers", params(name))
    local elapsed = h.now() - started
    assert.is_true(elapsed < math.max(2, 20 * baseline),
                   ("%.3f s, a whole add took %.3f s"):format(elapsed, baseline))
    assert.are.equal(500, status, raw)
    assert.are.equal("config", body.error.kind)
    assert.is_truthy(body.error.message:find("thread_pool undeclared_pool threads=", 1, true), raw)
    assert.are.equal(0, #h.requests_named(name))
  end)

  it("does not stall the worker: 4 adds through a slow API on 1 worker take about one API latency", function()
    -- The same 4 concurrent adds against a fast API first: what the
    -- machine's overhead (4 curl processes, the pool) is right now.  The
    -- API latency is then at least 4 times that, so served one after
    -- another they would take >= 4 latencies, concurrently about 1 (+ the
    -- overhead); the bound, 3 latencies + the overhead, sits in between.
    local function four(name, latency)
      local bodies = {}
      for i = 1, 4 do bodies[i] = h.json.encode(params(name .. " " .. i)) end
      return h.parallel_posts(h.pool_url .. "/carriers", bodies, 10 + 5 * (latency or 0))
    end
    local _, overhead = four(h.unique("ngx fast"))
    local latency = math.max(1, 4 * overhead)
    local name = h.unique("ngx slow")
    emu.config{ latency = latency }
    local ok, results, elapsed = pcall(four, name, latency)
    emu.config{ latency = 0 }
    assert(ok, results)
    io.stderr:write(("\n    [nginx] 4 concurrent adds, %.2f s API latency, 1 worker: %.2f s (%.2f s without latency)\n")
                    :format(latency, elapsed, overhead))
    for i, r in ipairs(results) do
      assert.are.equal(201, r.status, r.raw)
      assert.are.equal(stored(name .. " " .. i).voip_carrier_sid, r.body.voip_carrier_sid)
    end
    assert.is_true(elapsed < 3 * latency + overhead,
                   ("took %.2f s with a %.2f s API latency, %.2f s without"):format(elapsed, latency, overhead))
    -- the emulator saw the four requests in flight together
    local first_answer, last_arrival = math.huge, 0
    for i = 1, 4 do
      local r = h.requests_named(name .. " " .. i)[1]
      first_answer = math.min(first_answer, r.answered_at)
      last_arrival = math.max(last_arrival, r.arrived_at)
    end
    assert.is_true(last_arrival < first_answer, "requests were served one after another")
  end)
end)

describe("nginx: every operation of every resource through topcalls.ngx", function()
  local OPERATIONS = { "add", "add_many", "get", "list", "each", "delete", "validate" }

  it("carriers and phone_numbers: add, get, list, each, validate, delete, add_many with on_progress", function()
    local name = h.unique("ngx resources")
    local log_before = #emu.log()
    local status, b, raw = h.request("GET", h.pool_url .. "/resources?name=" .. name:gsub(" ", "%%20"))
    assert.are.equal(200, status, raw)
    assert.are.equal("content", b.phase)
    -- every operation exists on a client and on the module's default resources
    local want_ops = {}
    for _, res in ipairs({ "carriers", "phone_numbers" }) do
      for _, op in ipairs(OPERATIONS) do want_ops[#want_ops + 1] = res .. "." .. op .. "=function/function" end
    end
    assert.are.same(want_ops, b.operations)

    -- carriers: add, list, each, get
    assert.are.equal("topcalls.carrier", b.carrier.mt)
    assert.are.equal('carrier "' .. name .. '" ', b.carrier.text:sub(1, #name + 11))
    assert.is_nil(b.carriers_list.err, raw)
    assert.are.equal("topcalls.list", b.carriers_list.mt)
    assert.are.equal("topcalls.carrier", b.carriers_list.found)
    assert.is_truthy(b.carriers_list.text:find("carrier_name", 1, true))
    assert.is_nil(b.carriers_each.err, raw)
    assert.are.equal(3, #b.carriers_each.walked)
    for i, w in ipairs(b.carriers_each.walked) do
      assert.are.equal("topcalls.carrier", w.mt)
      assert.are.equal(b.carriers_each.first_ids[i], w.id)
    end
    assert.are.equal(b.carrier.id, b.carriers_get.id)
    assert.are.equal("topcalls.carrier", b.carriers_get.mt)
    assert.are.equal("api", b.carriers_get_missing.kind)
    assert.are.equal(404, b.carriers_get_missing.status)

    -- phone numbers
    assert.is_nil(b.pn_add.err, raw)
    assert.are.equal("topcalls.phone_number", b.pn_add.mt)
    assert.are.equal(b.carrier.sid, b.pn_add.sid)
    assert.are.equal("host", b.pn_add.label)
    local head = 'phone_number "' .. b.pn_add.number .. '" label=host '
    assert.are.equal(head, b.pn_add.text:sub(1, #head))
    assert.is_false(b.pn_add_again.ok)
    assert.are.equal("api", b.pn_add_again.err.kind)
    assert.are.equal(422, b.pn_add_again.err.status)
    assert.are.equal("duplicate", b.pn_add_again.err.errors[1].code)
    assert.are.equal(b.pn_add_again.err.message, b.pn_add_again.err.tostring)
    assert.are.same({ id = b.pn_add.id, number = b.pn_add.number, status = "active", mt = "topcalls.phone_number" },
                    b.pn_get)
    assert.are.equal("topcalls.list", b.pn_list.mt)
    assert.are.equal("topcalls.phone_number", b.pn_list.found)
    assert.is_true(b.pn_each.found)
    assert.are.equal(b.pn_list.n, b.pn_each.n)
    assert.is_true(b.pn_validate.good)
    assert.are.equal("validation", b.pn_validate.err.kind)
    local codes = {}
    for _, e in ipairs(b.pn_validate.err.errors) do codes[e.path] = e.code end
    assert.are.same({ number = "format", label = "length" }, codes)

    -- the server's 422 for a carrier that routes a number
    assert.are.equal(422, b.carrier_delete_busy.err.status)
    assert.are.equal("cannot delete carrier with active phone numbers", b.carrier_delete_busy.err.detail)

    -- add_many, with on_progress once per item (in the handler's VM)
    for _, m in ipairs({ b.carriers_many, b.numbers_many }) do
      assert.are.same({ total = 3, succeeded = 2, failed = 1 }, m.summary)
      assert.are.equal("validation", m.bad.kind)
      assert.are.equal(3, #m.progress)
      local seen = {}
      for k, p in ipairs(m.progress) do
        assert.are.equal(k, p.done)
        assert.are.equal(3, p.total)
        assert.is_nil(seen[p.i])
        seen[p.i] = true
      end
      assert.are.same({ true, true, true }, seen)
    end
    assert.are.equal("topcalls.carrier", b.carriers_many.mt)
    assert.are.equal("topcalls.phone_number", b.numbers_many.mt)
    for _, m in ipairs({ " m1", " m2" }) do
      local posts = h.requests_named(name .. m)
      assert.are.equal(1, #posts)
      assert.are.equal(201, posts[1].status)
    end
    assert.are.equal("number", b.numbers_many.bad.errors[1].path)

    -- every delete went through: nothing of this test is left
    for i, d in ipairs(b.deleted) do assert.is_true(d.ok, i .. ": " .. raw) end
    assert.are.equal(404, b.pn_get_deleted.err.status)
    for _, n in ipairs(emu.numbers()) do
      assert.are_not.equal(b.pn_add.number, n.number)
      assert.are_not.equal(b.numbers_many.numbers[1], n.number)
      assert.are_not.equal(b.numbers_many.numbers[3], n.number)
    end
    assert.are.equal(0, #h.carriers_named(name))
    assert.are.equal(0, #h.carriers_named(name .. " m1"))
    assert.are.equal(0, #h.carriers_named(name .. " m2"))

    -- on the wire: GETs and DELETEs carry no Idempotency-Key, POSTs do
    local methods = {}
    for i = log_before + 1, #emu.log() do
      local r = emu.log()[i]
      methods[r.method] = (methods[r.method] or 0) + 1
      if r.method == "POST" then
        assert.is_string(r.headers["idempotency-key"])
      else
        assert.is_nil(r.headers["idempotency-key"], r.method .. " " .. r.uri)
      end
    end
    assert.is_true(methods.GET >= 7, tostring(methods.GET))
    assert.are.equal(3 + 2 + 2, methods.POST)   -- carrier, number, the same number again (422), 2 + 2 via add_many
    assert.are.equal(7, methods.DELETE)             -- the busy carrier, 3 numbers, 3 carriers
  end)

  it("does not stall the worker: 4 concurrent lists through a slow API overlap on 1 worker", function()
    local before = #emu.log()
    emu.config{ latency = 0.5 }
    local ok, results = pcall(h.parallel_posts, h.pool_url .. "/list", { "", "", "", "" })
    emu.config{ latency = 0 }
    assert(ok, results)
    for _, r in ipairs(results) do
      assert.are.equal(200, r.status, r.raw)
      assert.are.same({ n = 1, mt = "topcalls.list" }, r.body)
    end
    local first_answer, last_arrival, n = math.huge, 0, 0
    local log = emu.log()
    for i = before + 1, #log do
      local r = log[i]
      if r.uri == "/v1/phone-numbers/carriers?page_size=7" then
        n = n + 1
        first_answer = math.min(first_answer, r.answered_at)
        last_arrival = math.max(last_arrival, r.arrived_at)
      end
    end
    assert.are.equal(4, n)
    assert.is_true(last_arrival < first_answer, "the list requests were served one after another")
  end)
end)

describe("nginx: plain require \"topcalls\"", function()
  it("works (blocking) in a request handler", function()
    local name = h.unique("ngx blocking")
    local status, body, raw = h.post_pool("/blocking/carriers", params(name))
    assert.are.equal(201, status, raw)
    assert.are.equal(stored(name).voip_carrier_sid, body.voip_carrier_sid)
  end)

  it("works in an ngx.timer", function()
    local name = h.unique("ngx timer")
    local status, body, raw = h.request("GET", h.pool_url .. "/timer?name=" .. name:gsub(" ", "%%20"))
    assert.are.equal(200, status, raw)
    assert.are.equal(stored(name).voip_carrier_sid, body.sid)
  end)

  it("works in init_by_lua (the master)", function()
    local status, body, raw = h.request("GET", h.pool_url .. "/master")
    assert.are.equal(200, status, raw)
    assert.are.equal("init", body.phase)
    assert.are.equal(stored("master " .. math.floor(body.pid)).voip_carrier_sid, body.sid)
  end)
end)

describe("nginx: a client made in init_by_lua, used by 2 workers", function()
  it("never shares a connection between processes", function()
    local url = assert(h.fork_url, "TOPCALLS_HOSTS_NGINX_FORK_URL is not set")
    local worker_pids, failures = {}, {}
    for _ = 1, 4 do                          -- until both workers have answered
      local results = h.parallel_posts(url .. "/fork", { "", "", "", "", "", "", "", "" })
      for _, r in ipairs(results) do
        if r.status == 200 and r.body then
          worker_pids[math.floor(r.body.pid)] = true
        else
          failures[#failures + 1] = tostring(r.status) .. " " .. r.raw
        end
      end
      local n = 0
      for _ in pairs(worker_pids) do n = n + 1 end
      if n >= 2 then break end
    end
    -- who used which of the emulator's connections: the client's pid is in
    -- the idempotency key (forkm<pid>x.. from the master, forkw<pid>x.. from a worker)
    local users = {}
    local _, mbody = h.request("GET", url .. "/master")
    local master_pid = math.floor(mbody.pid)
    local seen = {}
    for _, r in ipairs(emu.log()) do
      local who, pid = (r.idempotency_key or ""):match("^fork([mw])(%d+)x")
      pid = tonumber(pid)
      if pid and (pid == master_pid or worker_pids[pid]) then
        seen[who .. pid] = true
        local conn = r.pid .. ":" .. r.connection
        users[conn] = users[conn] or {}
        users[conn][pid] = true
      end
    end
    assert.is_true(seen["m" .. master_pid], "the master's add is not in the emulator log")
    local workers_seen = 0
    for pid in pairs(worker_pids) do
      assert.is_true(seen["w" .. pid], "worker " .. pid .. " made no request")
      workers_seen = workers_seen + 1
    end
    assert.is_true(workers_seen >= 2, "only " .. workers_seen .. " worker(s) answered")
    for conn, pids in pairs(users) do
      local list = {}
      for pid in pairs(pids) do list[#list + 1] = pid end
      assert.are.equal(1, #list, "connection " .. conn .. " used by pids " .. table.concat(list, ", "))
    end
    assert.are.same({}, failures)
  end)
end)
