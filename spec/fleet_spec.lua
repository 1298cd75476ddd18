-- topcalls.fleet against the local emulator: validation with paths, an
-- empty account filled, a second plan empty, every kind of drift, a
-- replace with numbers done in order, faults and a killed process
-- mid-apply re-run without duplicates, prune, export; and the CLI's
-- plan / apply / export commands.
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local cjson = require("cjson").new()

local LUA = os.getenv("TOPCALLS_TEST_LUA") or "lua5.4"
local KEY_RE = "^fleet%-" .. ("%x"):rep(32) .. "$"

before_each(function() emu.reset() end)

-- A desired state of n carriers with k numbers each (+1415555xxxx).
local function fleet(n, k, extra)
  local carriers = {}
  for i = 1, n do
    local numbers = {}
    for j = 1, k do numbers[j] = ("+1415555%02d%02d"):format(i, j) end
    carriers[i] = { carrier_name = "Trunk " .. i, sip_gateway = { ipv4 = "203.0.113." .. i }, numbers = numbers }
  end
  for k2, v in pairs(extra or {}) do carriers[k2] = v end
  return { carriers = carriers }
end

-- action -> count of a plan's steps (unchanged included).
local function actions(plan)
  local t = {}
  for _, s in ipairs(plan.steps) do t[s.action] = (t[s.action] or 0) + 1 end
  return t
end

local function changed(plan)
  local out = {}
  for _, s in ipairs(plan.steps) do if s.action ~= "unchanged" then out[#out + 1] = s end end
  return out
end

-- The emulator's carriers by name and numbers by E.164.
local function account()
  local by_name, by_number, by_sid = {}, {}, {}
  local carriers, numbers = emu.carriers(), emu.numbers()
  for _, c in ipairs(carriers) do
    by_name[c.carrier_name] = (by_name[c.carrier_name] or 0) + 1
    by_sid[c.voip_carrier_sid] = c.carrier_name
  end
  for _, n in ipairs(numbers) do
    by_number[n.number] = by_sid[n.voip_carrier_sid] or "(none)"
  end
  return { carriers = #carriers, numbers = #numbers, names = by_name, on = by_number }
end

local slurp, spit = fx.slurp, fx.spit

describe("fleet.check (offline)", function()
  it("reports every violation with its path, duplicates included, and sends nothing", function()
    local ok, msg, err = topcalls.fleet.check{
      carriers = {
        { carrier_name = "A", sip_gateway = { ipv4 = "203.0.113.1" },
          numbers = { "+14155550100", "12", { number = "+14155550101", label = "" }, "+14155550100" } },
        { carrier_name = "A", sip_gateway = { ipv4 = "sip.example.com" }, trunk_typo = 1 },
        "nope",
        { carrier_name = "C", sip_gateway = { ipv4 = "203.0.113.3" },
          numbers = { { number = "+14155550102", voip_carrier_sid = "x" }, 7 } },
      },
      extra = true,
    }
    assert.is_nil(ok)
    assert.is_truthy(msg:match("^topcalls: validation: "))
    local got = {}
    for _, e in ipairs(err.errors) do got[e.path] = e.code end
    assert.are.same({
      extra = "unknown_field",
      ["carriers[1].numbers[2]"] = "format",
      ["carriers[1].numbers[3].label"] = "length",
      ["carriers[1].numbers[4]"] = "duplicate",
      ["carriers[2].carrier_name"] = "duplicate",
      ["carriers[2].sip_gateway.ipv4"] = "format",
      ["carriers[2].trunk_typo"] = "unknown_field",
      ["carriers[3]"] = "type",
      ["carriers[4].numbers[1].voip_carrier_sid"] = "not_allowed",
      ["carriers[4].numbers[2]"] = "type",
    }, got)
  end)

  it("plan refuses an invalid file before any request", function()
    local client = fx.client()
    local plan, _, err = client.fleet.plan{ carriers = { { carrier_name = "" } } }
    assert.is_nil(plan)
    assert.are.equal("validation", err.kind)
    assert.are.equal(0, #emu.log())
  end)

  it("reads Lua and JSON fleet files, with their errors", function()
    local lua_path, json_path = os.tmpname(), os.tmpname() .. ".json"
    spit(lua_path, [[
local numbers = {}
for i = 1, 3 do numbers[i] = ("+1415555010%d"):format(i) end
return { carriers = { { carrier_name = "Loop", sip_gateway = { ipv4 = "203.0.113.9" }, numbers = numbers } } }]])
    spit(json_path, '{"carriers":[{"carrier_name":"J","sip_gateway":{"ipv4":"203.0.113.8"},"numbers":["+14155550109"]}]}')
    local l = assert(topcalls.fleet.load(lua_path))
    assert.are.same({ "+14155550101", "+14155550102", "+14155550103" }, l.carriers[1].numbers)
    local j = assert(topcalls.fleet.load(json_path))
    assert.are.equal("J", j.carriers[1].carrier_name)
    spit(lua_path, "return { carriers = io.open('/etc/passwd') }")
    local bad, msg = topcalls.fleet.load(lua_path)
    assert.is_nil(bad)
    assert.is_truthy(msg:find("raised an error", 1, true), msg)
    os.remove(lua_path); os.remove(json_path)
  end)
end)

describe("fleet.plan / fleet.apply", function()
  it("fills an empty account, then the next plan is empty", function()
    local client = fx.client()
    local desired = fleet(3, 2)
    desired.carriers[2].numbers[1] = { number = desired.carriers[2].numbers[1], label = "Support" }
    local plan = assert(client.fleet.plan(desired))
    assert.are.same({ create = 3, add_number = 6 }, actions(plan))
    assert.are.same({ add = 9, replace = 0, move = 0, delete = 0 }, plan.summary)
    local seen = {}
    local result = client.fleet.apply(plan, { on_progress = function(done, total, step, outcome)
      seen[#seen + 1] = { done, total, step.action, outcome.ok }
    end })
    assert.is_true(result.ok)
    assert.are.equal(9, #result.done)
    assert.are.equal(9, #seen)
    assert.are.same({ 9, 9 }, { seen[9][1], seen[9][2] })
    local a = account()
    assert.are.same({ carriers = 3, numbers = 6 }, { carriers = a.carriers, numbers = a.numbers })
    assert.are.equal("Trunk 2", a.on["+14155550201"])
    for _, n in ipairs(emu.numbers()) do
      if n.number == "+14155550201" then assert.are.equal("Support", n.label) end
    end
    for _, r in ipairs(fx.requests("POST")) do assert.is_truthy(r.idempotency_key:match(KEY_RE), r.idempotency_key) end
    local again = assert(client.fleet.plan(desired))
    assert.are.equal(0, again.changes)
    assert.are.same({ unchanged = 9 }, actions(again))
    assert.is_truthy(tostring(again):find("No changes", 1, true))
  end)

  it("derives the same idempotency keys for the same desired state", function()
    local desired = fleet(2, 1)
    local client = fx.client()
    client.fleet.apply(assert(client.fleet.plan(desired)))
    local first = {}
    for _, r in ipairs(fx.requests("POST")) do first[#first + 1] = r.idempotency_key end
    table.sort(first)
    emu.reset()
    client = fx.client()
    client.fleet.apply(assert(client.fleet.plan(desired)))
    local second = {}
    for _, r in ipairs(fx.requests("POST")) do second[#second + 1] = r.idempotency_key end
    table.sort(second)
    -- number bodies carry the new carriers' sids, so only carrier keys repeat
    local carrier_keys = 0
    for _, k in ipairs(first) do for _, k2 in ipairs(second) do if k == k2 then carrier_keys = carrier_keys + 1 end end end
    assert.are.equal(2, carrier_keys)   -- how keys are derived: spec/secrets_spec.lua
  end)

  it("drift: a carrier deleted by hand is created again, its numbers moved onto it", function()
    local client = fx.client()
    local desired = fleet(2, 2)
    client.fleet.apply(assert(client.fleet.plan(desired)))
    local victim
    for _, c in ipairs(emu.carriers()) do if c.carrier_name == "Trunk 1" then victim = c end end
    emu.edit{ carrier_id = victim.id, delete = true }   -- its numbers are left orphaned
    local plan = assert(client.fleet.plan(desired))
    local steps = changed(plan)
    assert.are.equal(3, #steps)
    assert.are.same({ "create", "Trunk 1" }, { steps[1].action, steps[1].carrier })
    assert.are.same({ "move", "move" }, { steps[2].action, steps[3].action })
    assert.is_nil(steps[2].from)
    -- the create's key was used before (24 h replay): apply must still create
    local result = client.fleet.apply(plan)
    assert.is_true(result.ok)
    local a = account()
    assert.are.same({ 2, 4, "Trunk 1" }, { a.carriers, a.numbers, a.on["+14155550101"] })
    assert.are.equal(0, assert(client.fleet.plan(desired)).changes)
  end)

  it("drift: a number moved by hand is moved back, nothing else", function()
    local client = fx.client()
    local desired = fleet(2, 2)
    client.fleet.apply(assert(client.fleet.plan(desired)))
    local sids, nid = {}, nil
    for _, c in ipairs(emu.carriers()) do sids[c.carrier_name] = c.voip_carrier_sid end
    for _, n in ipairs(emu.numbers()) do if n.number == "+14155550102" then nid = n.id end end
    emu.edit{ number_id = nid, set = { voip_carrier_sid = sids["Trunk 2"] } }
    local plan = assert(client.fleet.plan(desired))
    local steps = changed(plan)
    assert.are.equal(1, #steps)
    assert.are.same({ "move", "+14155550102", "Trunk 2", "Trunk 1" },
                    { steps[1].action, steps[1].number, steps[1].from, steps[1].to })
    assert.are.equal(1, plan.summary.move)
    local before = #emu.log()
    local result = client.fleet.apply(plan)
    assert.is_true(result.ok)
    -- release, then add (the back-move's body was sent once before: it must not replay)
    local log = emu.log()
    local methods = {}
    for i = before + 1, #log do
      if not log[i].uri:find("?", 1, true) then methods[#methods + 1] = log[i].method end
    end
    assert.are.same({ "DELETE", "POST" }, methods)
    assert.are.equal("Trunk 1", account().on["+14155550102"])
    assert.are.equal(0, assert(client.fleet.plan(desired)).changes)
  end)

  it("drift: a gateway edited by hand replaces the carrier in order: create, move numbers, delete", function()
    local client = fx.client()
    local desired = fleet(2, 3)
    client.fleet.apply(assert(client.fleet.plan(desired)))
    local old
    for _, c in ipairs(emu.carriers()) do if c.carrier_name == "Trunk 1" then old = c end end
    emu.edit{ carrier_id = old.id, set = { sip_gateway = { ipv4 = "198.51.100.7", port = 5060, inbound = true, outbound = true } } }
    local plan = assert(client.fleet.plan(desired))
    local steps = changed(plan)
    assert.are.equal(1, #steps)
    local s = steps[1]
    assert.are.same({ "replace", "carrier", old.id, "changed" }, { s.action, s.type, s.id, s.reason })
    assert.are.same({ { path = "sip_gateway.ipv4", before = "198.51.100.7", after = "203.0.113.1" } }, s.changes)
    assert.are.equal(3, #s.numbers)
    assert.is_truthy(tostring(plan):find("-/+ carrier \"Trunk 1\"", 1, true))
    assert.is_truthy(tostring(plan):find("Plan: 0 to add, 1 to replace, 0 to move, 0 to delete.", 1, true))

    local before = #emu.log()
    local result = client.fleet.apply(plan, { concurrency = 2 })
    assert.is_true(result.ok, result.failed[1] and result.failed[1].message)
    local log = emu.log()
    local seq, created_at, deleted_at = {}, nil, nil
    for i = before + 1, #log do
      local r = log[i]
      if r.method == "POST" and r.uri == "/v1/phone-numbers/carriers" then created_at = i end
      if r.method == "DELETE" and r.uri == "/v1/phone-numbers/carriers/" .. old.id then deleted_at = i end
      if r.uri:find("^/v1/phone%-numbers/?") and not r.uri:find("carriers") and not r.uri:find("?", 1, true) then
        seq[#seq + 1] = { i = i, method = r.method }
      end
    end
    assert.is_number(created_at)
    assert.is_number(deleted_at)
    -- batches of 2: release 2, add 2, release 1, add 1; all after the create, before the delete
    local methods = {}
    for _, e in ipairs(seq) do
      methods[#methods + 1] = e.method
      assert.is_true(e.i > created_at and e.i < deleted_at)
    end
    assert.are.same({ "DELETE", "DELETE", "POST", "POST", "DELETE", "POST" }, methods)
    local a = account()
    assert.are.same({ 2, 6 }, { a.carriers, a.numbers })
    for _, c in ipairs(emu.carriers()) do assert.are_not.equal(old.id, c.id) end
    assert.are.equal(0, assert(client.fleet.plan(desired)).changes)
  end)

  it("never compares passwords; replace = { name } forces a replace (a password change)", function()
    local client = fx.client()
    local desired = { carriers = { {
      carrier_name = "Reg", trunk_type = "reg", sip_gateway = { ipv4 = "sip.reg.example", inbound = false },
      registration = { username = "u1", password = "first-Secret" }, numbers = { "+14155550100" } } } }
    client.fleet.apply(assert(client.fleet.plan(desired)))
    desired.carriers[1].registration.password = "second-Secret"
    local plan = assert(client.fleet.plan(desired))
    assert.are.equal(0, plan.changes)
    plan = assert(client.fleet.plan(desired, { replace = { "Reg" } }))
    local steps = changed(plan)
    assert.are.same({ "replace", "requested" }, { steps[1].action, steps[1].reason })
    local text = tostring(plan)
    assert.is_falsy(text:find("Secret", 1, true))
    assert.is_falsy(cjson.encode(plan.steps):find("Secret", 1, true))
    assert.is_true(client.fleet.apply(plan).ok)
    local bodies = {}
    for _, r in ipairs(fx.requests("POST")) do bodies[#bodies + 1] = r.body end
    assert.is_truthy(bodies[#bodies - 1]:find("second-Secret", 1, true))
    assert.are.same({ 1, 1 }, { account().carriers, account().numbers })
  end)

  it("prune off never deletes; prune on releases and deletes what the file does not name", function()
    local client = fx.client()
    local extra = assert(client.carriers.add(fx.carrier{ carrier_name = "Hand made" }))
    assert(client.phone_numbers.add{ number = "+14155559999", voip_carrier_sid = extra.voip_carrier_sid })
    local desired = fleet(1, 1)
    local plan = assert(client.fleet.plan(desired))
    assert.are.same({ create = 1, add_number = 1 }, actions(plan))
    assert.is_true(client.fleet.apply(plan).ok)
    assert.are.equal(0, assert(client.fleet.plan(desired)).changes)
    local deletes = fx.requests("DELETE")
    assert.are.equal(0, #deletes)
    assert.are.same({ 2, 2 }, { account().carriers, account().numbers })

    plan = assert(client.fleet.plan(desired, { prune = true }))
    local steps = changed(plan)
    assert.are.same({ "release_number", "delete" }, { steps[1].action, steps[2].action })
    assert.are.equal(2, plan.summary.delete)
    assert.is_true(client.fleet.apply(plan).ok)
    local a = account()
    assert.are.same({ 1, 1, nil }, { a.carriers, a.numbers, a.names["Hand made"] })
  end)

  it("a carrier that still routes a number is never deleted", function()
    local client = fx.client()
    local extra = assert(client.carriers.add(fx.carrier{ carrier_name = "Hand made" }))
    assert(client.phone_numbers.add{ number = "+14155559999", voip_carrier_sid = extra.voip_carrier_sid })
    local plan = assert(client.fleet.plan({ carriers = {} }, { prune = true, prune_all = true }))
    emu.faults{ { status = 500 } }   -- the release fails
    local result = client.fleet.apply(plan, { max_retries = 0 })
    assert.is_false(result.ok)
    assert.are.equal(2, #result.failed)
    assert.are.equal("skipped", result.failed[2].err.kind)
    assert.is_truthy(result.failed[2].message:find("still routes +14155559999", 1, true))
    assert.are.same({ 1, 1 }, { account().carriers, account().numbers })
    -- applying the same plan again finishes it
    assert.is_true(client.fleet.apply(plan).ok)
    assert.are.same({ 0, 0 }, { account().carriers, account().numbers })
  end)

  it("faults mid-apply (the server did it, the client never heard): a re-run makes no duplicates", function()
    local client = fx.client()
    local desired = fleet(3, 2)
    local plan = assert(client.fleet.plan(desired))
    -- requests: 3 carrier POSTs, the check list GET, then number POSTs
    emu.faults{ {}, { status = 500, after_process = true }, {}, {}, { reset = "during_body", after_process = true } }
    local result = client.fleet.apply(plan, { max_retries = 0, concurrency = 1 })
    assert.is_false(result.ok)
    assert.is_true(#result.failed >= 2)
    -- the same plan again: failed steps re-sent under the same keys, replayed
    result = client.fleet.apply(plan)
    assert.is_true(result.ok, result.failed[1] and result.failed[1].message)
    local a = account()
    assert.are.same({ 3, 6 }, { a.carriers, a.numbers })
    for name, n in pairs(a.names) do assert.are.equal(1, n, name) end
    assert.are.equal(0, assert(client.fleet.plan(desired)).changes)
  end)

  it("a process killed mid-replace: plan names the twins; a fresh plan with prune finishes it, no duplicates", function()
    local client = fx.client()
    client.fleet.apply(assert(client.fleet.plan(fleet(2, 2))))
    local old
    for _, c in ipairs(emu.carriers()) do if c.carrier_name == "Trunk 1" then old = c end end
    emu.edit{ carrier_id = old.id, set = { sip_gateway = { ipv4 = "198.51.100.7", port = 5060, inbound = true, outbound = true } } }
    local desired = fleet(3, 2)
    local file, script = os.tmpname() .. ".json", os.tmpname()
    spit(file, cjson.encode(desired))
    -- dies right after the first step is over: the carriers are created
    -- (Trunk 3, and the new Trunk 1), no number has moved, nothing deleted
    spit(script, ([[
local topcalls = require "topcalls"
local c = assert(topcalls.new{ api_key = %q, base_url = %q })
local plan = assert(c.fleet.plan(%q))
c.fleet.apply(plan, { on_progress = function(done) if done == 1 then os.exit(3) end end })
os.exit(0)
]]):format(fx.API_KEY, emu.url, file))
    local r1, _, r3 = os.execute(LUA .. " " .. script)
    assert.are.equal(3, type(r1) == "number" and r1 / 256 or r3)
    local mid = account()
    assert.are.same({ 4, 4, 2 }, { mid.carriers, mid.numbers, mid.names["Trunk 1"] })

    -- two carriers named "Trunk 1": without prune the plan stops (the
    -- second could be one made by hand), naming both ids
    local none, msg = client.fleet.plan(desired)
    assert.is_nil(none)
    assert.is_truthy(msg:find(old.id, 1, true), msg)
    local plan = assert(client.fleet.plan(desired, { prune = true }))
    local kinds = {}
    for _, st in ipairs(changed(plan)) do kinds[#kinds + 1] = st.action .. ":" .. (st.carrier or st.number) end
    assert.are.same({ "move:+14155550101", "move:+14155550102", "add_number:+14155550301",
                      "add_number:+14155550302", "delete:Trunk 1" }, kinds)
    assert.is_true(client.fleet.apply(plan).ok)
    local a = account()
    assert.are.same({ 3, 6 }, { a.carriers, a.numbers })
    for name, n in pairs(a.names) do assert.are.equal(1, n, name) end
    for _, c in ipairs(emu.carriers()) do assert.are_not.equal(old.id, c.id) end
    assert.are.equal(0, assert(client.fleet.plan(desired)).changes)
    os.remove(file); os.remove(script)
  end)

  it("export writes the account as a fleet file that plans empty", function()
    local client = fx.client()
    local desired = fleet(2, 2)
    desired.carriers[1].numbers[2] = { number = desired.carriers[1].numbers[2], label = "Desk" }
    client.fleet.apply(assert(client.fleet.plan(desired)))
    local exported = assert(client.fleet.export())
    assert.are.equal(2, #exported.carriers)
    local plan = assert(client.fleet.plan(exported))
    assert.are.equal(0, plan.changes)
  end)

  it("works on the default client (topcalls.fleet)", function()
    assert.is_function(topcalls.fleet.plan)
    assert.is_function(topcalls.fleet.apply)
    assert.has_error(function() topcalls.fleet.apply({}) end)
    assert.has_error(function() topcalls.fleet.plan(42) end)
  end)
end)

describe("topcalls plan / apply / export (CLI)", function()
  local PASSWORD = "cli-Beta-Pa55"
  local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

  -- Run bin/topcalls with the emulator's key and URL; secrets travel in
  -- the environment (through a script file), never in argv.
  local function run(argv, opts)
    opts = opts or {}
    local base = os.tmpname()
    local env = { TOPCALLS_API_KEY = fx.API_KEY, TOPCALLS_BASE_URL = emu.url, BETA_PASSWORD = PASSWORD }
    for k, v in pairs(opts.env or {}) do env[k] = v end
    local lines = {}
    for k, v in pairs(env) do lines[#lines + 1] = "export " .. k .. "=" .. quote(v) end
    spit(base .. ".in", opts.stdin or "")
    local args = {}
    for i, a in ipairs(argv) do args[i] = quote(a) end
    lines[#lines + 1] = LUA .. " bin/topcalls " .. table.concat(args, " ")
      .. " <" .. base .. ".in >" .. base .. ".out 2>" .. base .. ".err; echo $? >" .. base .. ".rc"
    spit(base .. ".sh", table.concat(lines, "\n") .. "\n")
    os.execute("sh " .. base .. ".sh")
    local code, out, err = tonumber(slurp(base .. ".rc")), slurp(base .. ".out"), slurp(base .. ".err")
    for _, ext in ipairs({ "", ".in", ".sh", ".out", ".err", ".rc" }) do os.remove(base .. ext) end
    for _, secret in ipairs({ fx.API_KEY, PASSWORD }) do
      assert(not out:find(secret, 1, true), "secret on stdout: " .. out)
      assert(not err:find(secret, 1, true), "secret on stderr: " .. err)
    end
    return code, out, err
  end

  local FILE = [[
return { carriers = {
  { carrier_name = "Acme", sip_gateway = { ipv4 = "203.0.113.10" },
    numbers = { "+14155550100", { number = "+14155550101", label = "Support" } } },
  { carrier_name = "Beta", trunk_type = "reg", sip_gateway = { ipv4 = "sip.beta.example", inbound = false },
    registration = { username = "beta1", password = os.getenv("BETA_PASSWORD") },
    numbers = { "+442071838750" } },
} }]]
  local path
  before_each(function() path = os.tmpname(); spit(path, FILE) end)
  after_each(function() os.remove(path) end)

  local function last_line(s) return s:match("([^\n]*)\n?$") end

  it("plan: the diff, secrets as (sensitive), no colors off a terminal, exit 2 then 0", function()
    local code, out = run({ "plan", "--file", path })
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find('  + carrier "Acme" {', 1, true), out)
    assert.is_truthy(out:find('  + number +14155550101 on "Acme" (label "Support")', 1, true), out)
    assert.is_truthy(out:find("password = (sensitive)", 1, true), out)
    assert.is_falsy(out:find("\27[", 1, true))
    assert.are.equal("Plan: 5 to add, 0 to replace, 0 to move, 0 to delete.", last_line(out))
    assert.are.equal(0, #fx.requests("POST"))

    local jcode, jout = run({ "plan", "--file", path, "--output", "json" })
    assert.are.equal(2, jcode)
    local doc = cjson.decode(jout)
    assert.are.same({ add = 5, replace = 0, move = 0, delete = 0 }, doc.summary)
    assert.are.equal(5, #doc.steps)
    assert.are.equal("(sensitive)", doc.steps[4].after.registration.password)

    assert.are.equal(0, (run({ "apply", "--file", path, "--yes" })))
    code, out = run({ "plan", "--file", path })
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("No changes.", 1, true))
    assert.are.equal("Plan: 0 to add, 0 to replace, 0 to move, 0 to delete.", last_line(out))
  end)

  it("plan: a bad file exits 1 with every path, before any request", function()
    spit(path, 'return { carriers = { { carrier_name = "A", sip_gateway = { ipv4 = "1.2.3" }, numbers = { "555" } } } }')
    local code, out, err = run({ "plan", "--file", path })
    assert.are.equal(1, code, out)
    assert.is_truthy(err:find("carriers[1].sip_gateway.ipv4", 1, true), err)
    assert.is_truthy(err:find("carriers[1].numbers[1]", 1, true), err)
    assert.are.equal(0, #emu.log())
    code = run({ "plan", "--file", "/nonexistent/fleet.lua" })
    assert.are.equal(1, code)
  end)

  it("plan: drift reads like Terraform (-/+ replace, ~ move)", function()
    assert.are.equal(0, (run({ "apply", "--file", path, "--yes" })))
    local sids, acme, nid = {}, nil, nil
    for _, c in ipairs(emu.carriers()) do
      sids[c.carrier_name] = c.voip_carrier_sid
      if c.carrier_name == "Acme" then acme = c end
    end
    for _, n in ipairs(emu.numbers()) do if n.number == "+442071838750" then nid = n.id end end
    emu.edit{ number_id = nid, set = { voip_carrier_sid = sids.Acme } }
    emu.edit{ carrier_id = acme.id, set = { sip_gateway = { ipv4 = "198.51.100.7", port = 5060, inbound = true, outbound = true } } }
    local code, out = run({ "plan", "--file", path })
    assert.are.equal(2, code, out)
    assert.is_truthy(out:find('-/+ carrier "Acme" (id ' .. acme.id .. ") {", 1, true), out)
    assert.is_truthy(out:find('sip_gateway.ipv4 = "198.51.100.7" -> "203.0.113.10"  # forces replacement', 1, true), out)
    assert.is_truthy(out:find('  ~ number +442071838750: "Acme" -> "Beta"', 1, true), out)
    assert.are.equal("Plan: 0 to add, 1 to replace, 1 to move, 0 to delete.", last_line(out))
  end)

  it("apply: asks, and only 'yes' proceeds; progress on stderr; exit 0", function()
    local code, out = run({ "apply", "--file", path }, { stdin = "no\n" })
    assert.are.equal(1, code)
    assert.is_truthy(out:find("Only 'yes' will be accepted", 1, true))
    assert.are.equal(0, #fx.requests("POST"))
    local err
    code, out, err = run({ "apply", "--file", path }, { stdin = "yes\n" })
    assert.are.equal(0, code, err)
    assert.are.equal("Apply complete! 5 added, 0 replaced, 0 moved, 0 deleted.", last_line(out))
    assert.is_truthy(err:find('apply: 1/5 create carrier "Acme": done', 1, true), err)
    assert.is_truthy(err:find("apply: 5/5 ", 1, true), err)
    assert.are.same({ 2, 3 }, { account().carriers, account().numbers })
    code, out = run({ "apply", "--file", path })   -- nothing to do: no question
    assert.are.equal(0, code)
    assert.is_truthy(out:find("No changes.", 1, true))
  end)

  it("apply: a failure exits 1 and a second run finishes", function()
    emu.faults{ {}, {}, { status = 422 } }   -- plan's two GETs, then the first carrier POST
    local code, out, err = run({ "apply", "--file", path, "--yes", "--concurrency", "1" })
    assert.are.equal(1, code, out)
    assert.is_truthy(out:find("Apply incomplete:", 1, true), out)
    assert.is_truthy(err:find(": topcalls: api: 422", 1, true), err)
    code = run({ "apply", "--file", path, "--yes" })
    assert.are.equal(0, code)
    assert.are.same({ 2, 3 }, { account().carriers, account().numbers })
  end)

  it("export: a Lua fleet file (passwords from the environment) that plans empty; JSON too", function()
    assert.are.equal(0, (run({ "apply", "--file", path, "--yes" })))
    local out_path = os.tmpname()
    local code, _, err = run({ "export", "--file", out_path })
    assert.are.equal(0, code, err)
    assert.is_truthy(err:find("TOPCALLS_BETA_REGISTRATION_PASSWORD", 1, true), err)
    assert.is_truthy(slurp(out_path):find('password = os.getenv("TOPCALLS_BETA_REGISTRATION_PASSWORD")', 1, true))
    local out
    code, out = run({ "plan", "--file", out_path }, { env = { TOPCALLS_BETA_REGISTRATION_PASSWORD = PASSWORD } })
    assert.are.equal(0, code, out)
    code, out = run({ "export", "--output", "json" })
    assert.are.equal(0, code)
    local doc = cjson.decode(out)
    assert.are.equal(2, #doc.carriers)
    assert.are.equal("Beta", doc.carriers[2].carrier_name)
    os.remove(out_path)
  end)
end)
