-- topcalls.fleet against a careless hand and a hostile account (issue 15,
-- items 6, 7, 14-17): a fleet file cannot load bytecode, patch the
-- process or run forever; server strings never become code in an export
-- nor terminal control sequences in a text rendering; nothing the file
-- does not manage is deleted without --prune, a prune never empties the
-- account by accident, a JSON file's duplicate key is refused, plan says
-- what it left alone, and --replace of an unknown name is an error.
local fleet_mod = require "topcalls.fleet"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local cjson = require("cjson").new()

local LUA = os.getenv("TOPCALLS_TEST_LUA") or "lua5.4"
local slurp, spit = fx.slurp, fx.spit

before_each(function() emu.reset() end)

local temp_files = {}
local function temp(text, ext)
  local path = os.tmpname() .. (ext or "")
  temp_files[#temp_files + 1] = path
  if text then spit(path, text) end
  return path
end
after_each(function()
  for _, p in ipairs(temp_files) do os.remove(p) end
  temp_files = {}
end)

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- Run bin/topcalls against the emulator; returns code, stdout, stderr.
local function run(argv, stdin)
  local base = os.tmpname()
  local args = {}
  for i, a in ipairs(argv) do args[i] = quote(a) end
  spit(base .. ".in", stdin or "")
  spit(base .. ".sh", table.concat({
    "export TOPCALLS_API_KEY=" .. quote(fx.API_KEY),
    "export TOPCALLS_BASE_URL=" .. quote(emu.url),
    LUA .. " bin/topcalls " .. table.concat(args, " ") .. " <" .. base .. ".in >" .. base .. ".out 2>"
      .. base .. ".err; echo $? >" .. base .. ".rc",
  }, "\n") .. "\n")
  os.execute("sh " .. base .. ".sh")
  local code, out, err = tonumber(slurp(base .. ".rc")), slurp(base .. ".out"), slurp(base .. ".err")
  for _, ext in ipairs({ "", ".in", ".sh", ".out", ".err", ".rc" }) do os.remove(base .. ext) end
  return code, out, err
end

-- The control bytes of s other than newline and tab, as "pos:byte" (empty: clean).
local function control_bytes(s)
  local found = {}
  for i = 1, #s do
    local b = s:byte(i)
    if (b < 32 and b ~= 10 and b ~= 9) or b == 127 then found[#found + 1] = i .. ":" .. b end
  end
  return table.concat(found, " ")
end

local function gateway(last)
  return { ipv4 = "203.0.113." .. last, port = 5060, inbound = true, outbound = true }
end

---------------------------------------------------------------------------
describe("fleet files are sandboxed (item 6)", function()
  it("refuses a precompiled chunk, naming the file", function()
    local path = temp(string.dump(function() return { carriers = {} } end))
    local value, msg, err = fleet_mod.load(path)
    assert.is_nil(value)
    assert.are.equal("validation", err.kind)
    assert.is_truthy(msg:find(path, 1, true), msg)
    assert.is_truthy(msg:find("binary", 1, true), msg)
  end)

  it("gives the file copies of string, table and math: patching them does not reach the caller", function()
    local upper, insert, floor = string.upper, table.insert, math.floor
    local path = temp([[
local loud = ("ok"):upper()          -- string methods still work
string.upper = nil; table.insert = nil; math.floor = nil; string.PATCHED = true
return { carriers = {}, loud = loud }]])
    local value = assert(fleet_mod.load(path))
    assert.are.equal("OK", value.loud)
    assert.are.equal(upper, string.upper)
    assert.are.equal(insert, table.insert)
    assert.are.equal(floor, math.floor)
    assert.is_nil(rawget(string, "PATCHED"))
    assert.are.equal("ABC", ("abc"):upper())
  end)

  for name, body in pairs({
    ["while true do end"] = "while true do end",
    ["a hot numeric loop (JIT-compiled on LuaJIT)"] = "local n = 0 while true do n = n + 1 end",
    ["a loop in a nested function"] = "local function spin(x) while x do x = x + 1 end end spin(1)",
  }) do
    it("ends " .. name .. " with an error naming the file, and restores the hook", function()
      local path = temp(body .. "\nreturn { carriers = {} }")
      local f0, m0, c0 = debug.gethook()
      local value, msg, err = fleet_mod.load(path)
      assert.is_nil(value)
      assert.are.equal("validation", err.kind)
      assert.is_truthy(msg:find(path, 1, true), msg)
      assert.is_truthy(msg:find("instructions", 1, true), msg)
      local f1, m1, c1 = debug.gethook()
      assert.are.same({ f0, m0, c0 }, { f1, m1, c1 })
    end)
  end

  it("still runs an ordinary file with loops", function()
    local path = temp([[
local carriers = {}
for i = 1, 500 do
  carriers[i] = { carrier_name = ("Trunk %03d"):format(i), sip_gateway = { ipv4 = "203.0.113." .. (i % 250 + 1) } }
end
table.sort(carriers, function(a, b) return a.carrier_name > b.carrier_name end)
return { carriers = carriers }]])
    local value = assert(fleet_mod.load(path))
    assert.are.equal(500, #value.carriers)
    assert.are.equal("Trunk 500", value.carriers[1].carrier_name)
  end)
end)

---------------------------------------------------------------------------
-- Strings a hostile server (or a careless portal user) may store.
local EVIL_NAME = 'Evil"\n]] error("PWNED") --[[\27[2J\r\t\0\127\\\194\155 end'
local EVIL_LABEL = "lbl\27]0;title\7\n'\"x"
local EVIL_KEY = 'x = (function() error("PWNED") end)(), y\27[2J'

-- An account holding a carrier named EVIL_NAME with two numbers: one
-- labelled EVIL_LABEL, one whose label is an object keyed by EVIL_KEY;
-- and a plain carrier "Good". Returns the evil carrier and numbers.
local function hostile_account(client)
  local evil = assert(client.carriers.add(fx.carrier{ carrier_name = "Evil", sip_gateway = gateway(66) }))
  assert(client.carriers.add(fx.carrier{ carrier_name = "Good", sip_gateway = gateway(1) }))
  local n1 = assert(client.phone_numbers.add{ number = "+14155550101", voip_carrier_sid = evil.voip_carrier_sid })
  local n2 = assert(client.phone_numbers.add{ number = "+14155550102", voip_carrier_sid = evil.voip_carrier_sid })
  emu.edit{ carrier_id = evil.id, set = { carrier_name = EVIL_NAME } }
  emu.edit{ number_id = n1.id, set = { label = EVIL_LABEL, status = "\27[2Jgone\n" } }
  emu.edit{ number_id = n2.id, set = { label = { [EVIL_KEY] = 1 } } }
  return evil, n1, n2
end

describe("export writes data, never code (item 7)", function()
  it("quotes every key and string: the file loads inert and round-trips the exact strings", function()
    hostile_account(fx.client())
    local path = temp(nil, ".lua")
    local code, _, err = run({ "export", "--file", path })
    assert.are.equal(0, code, err)
    local text = slurp(path)
    assert.are.equal("", control_bytes(text), text)
    local value, msg = fleet_mod.load(path)
    assert.is_truthy(value, msg)
    local evil
    for _, c in ipairs(value.carriers) do if c.carrier_name ~= "Good" then evil = c end end
    assert.are.equal(EVIL_NAME, evil.carrier_name)
    local labels = {}
    for _, n in ipairs(evil.numbers) do labels[n.number] = n.label end
    assert.are.equal(EVIL_LABEL, labels["+14155550101"])
    assert.are.same({ [EVIL_KEY] = 1 }, labels["+14155550102"])
    -- and planning it runs nothing (the object label is then a validation error)
    local _, out, perr = run({ "plan", "--file", path })
    assert.is_falsy((out .. perr):find("PWNED", 1, true), out .. perr)
    assert.is_truthy(perr:find("label", 1, true), perr)
  end)

  it("refuses a value that is not a string, number, boolean or a table of them, with its path", function()
    local client = fx.client()
    local c = assert(client.carriers.add(fx.carrier{ carrier_name = "Odd" }))
    local n = assert(client.phone_numbers.add{ number = "+14155550101", voip_carrier_sid = c.voip_carrier_sid })
    emu.edit{ number_id = n.id, set = { label = { a = emu.null } } }
    local state, msg, err = client.fleet.export()
    assert.is_nil(state)
    assert.are.equal("decode", err.kind)
    assert.is_truthy(msg:find("carriers[1].numbers[1].label.a", 1, true), msg)
    local code, out, stderr = run({ "export" })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.is_truthy(stderr:find("carriers[1].numbers[1].label.a", 1, true), stderr)
  end)
end)

describe("text renderings escape control characters (item 7)", function()
  it("plan, apply, list, get and the REPL views show server strings escaped", function()
    local client = fx.client()
    local evil, n1 = hostile_account(client)
    local file = temp([[return { carriers = {
  { carrier_name = "Good", sip_gateway = { ipv4 = "203.0.113.1" },
    numbers = { { number = "+14155550101", label = "plain" } } } } }]])
    local outputs = {}
    local function add(what, text) outputs[#outputs + 1] = { what, text } end

    local plan = assert(client.fleet.plan(file, { prune = true }))
    add("tostring(plan)", tostring(plan))
    add("render color", fleet_mod.render(plan, { color = true }):gsub("\27%[%d*m", ""))
    add("tostring(list)", tostring(assert(client.carriers.list())))
    add("tostring(numbers)", tostring(assert(client.phone_numbers.list())))
    for _, r in ipairs(assert(client.phone_numbers.list())) do add("tostring(number)", tostring(r)) end
    for _, r in ipairs(assert(client.carriers.list())) do add("tostring(carrier)", tostring(r)) end
    for _, argv in ipairs({
      { "plan", "--file", file, "--prune" },
      { "carriers", "list", "--output", "text" },
      { "numbers", "list", "--output", "text" },
      { "numbers", "get", n1.id, "--output", "text" },
      { "carriers", "get", evil.id, "--output", "text" },
      { "apply", "--file", file, "--prune", "--yes" },
    }) do
      local _, out, err = run(argv)
      add(table.concat(argv, " ") .. " (stdout)", out)
      add(table.concat(argv, " ") .. " (stderr)", err)
    end
    for _, o in ipairs(outputs) do
      assert.are.equal("", control_bytes(o[2]), o[1] .. ":\n" .. o[2])
      assert.is_falsy(o[2]:find("\194\155", 1, true), o[1])
    end
    -- the escapes are visible, and a value stays on its line
    assert.is_truthy(tostring(plan):find("\\027[2J", 1, true), tostring(plan))
    assert.is_truthy(outputs[#outputs - 1][2]:find("\\027[2J", 1, true), outputs[#outputs - 1][2])
    local _, get_out = run({ "numbers", "get", n1.id, "--output", "text" })
    for line in get_out:gmatch("[^\n]+") do assert.is_truthy(line:match("^[^\t]+\t[^\t]*$"), line) end
  end)
end)

---------------------------------------------------------------------------
describe("nothing the file does not manage is deleted without --prune (item 14)", function()
  local desired
  before_each(function()
    desired = { carriers = { { carrier_name = "Trunk 1", sip_gateway = { ipv4 = "203.0.113.1" },
                               numbers = { "+14155550101" } } } }
  end)

  -- The file applied, then a carrier of the same name made by hand, with a number of its own.
  local function with_hand_made_twin(client)
    assert(client.fleet.apply(assert(client.fleet.plan(desired))).ok)
    local managed = emu.carriers()[1]
    local twin = assert(client.carriers.add(fx.carrier{ carrier_name = "Trunk 1", sip_gateway = gateway(77) }))
    assert(client.phone_numbers.add{ number = "+14155559999", voip_carrier_sid = twin.voip_carrier_sid })
    return managed, twin
  end

  it("a same-name carrier made by hand stops plan with both ids and the ways out", function()
    local client = fx.client()
    local managed, twin = with_hand_made_twin(client)
    local plan, msg, err = client.fleet.plan(desired)
    assert.is_nil(plan, plan and tostring(plan))
    assert.are.equal("validation", err.kind)
    assert.are.equal("carriers[1].carrier_name", err.errors[1].path)
    assert.are.equal("ambiguous", err.errors[1].code)
    for _, s in ipairs({ managed.id, twin.id, "id = ", "--prune" }) do
      assert.is_truthy(msg:find(s, 1, true), msg)
    end
    assert.are.equal(0, #fx.requests("DELETE"))
    -- the CLI: exit 1, the same message, nothing deleted
    local file = temp(cjson.encode(desired), ".json")
    local code, _, stderr = run({ "apply", "--file", file, "--yes" })
    assert.are.equal(1, code)
    assert.is_truthy(stderr:find(twin.id, 1, true), stderr)
    assert.are.same({ 2, 2 }, { #emu.carriers(), #emu.numbers() })
  end)

  it("id = ... in the entry adopts one record; the other is left alone, or deleted with --prune", function()
    local client = fx.client()
    local managed, twin = with_hand_made_twin(client)
    desired.carriers[1].id = managed.id
    local plan = assert(client.fleet.plan(desired))
    assert.are.equal(0, plan.changes, tostring(plan))
    assert.are.same({ carriers = 1, numbers = 1 }, plan.unmanaged)
    assert.is_true(client.fleet.apply(plan).ok)
    assert.are.same({ 2, 2 }, { #emu.carriers(), #emu.numbers() })

    -- adopting the hand-made one instead: it is the one compared (and replaced), the other left alone
    desired.carriers[1].id = twin.id
    plan = assert(client.fleet.plan(desired))
    local replace = plan.steps[1]
    assert.are.same({ "replace", twin.id }, { replace.action, replace.id })
    for _, s in ipairs(plan.steps) do assert.are_not.equal("delete", s.action) end

    desired.carriers[1].id = managed.id
    plan = assert(client.fleet.plan(desired, { prune = true }))
    assert.is_true(client.fleet.apply(plan).ok)
    local left = emu.carriers()
    assert.are.same({ 1, managed.id }, { #left, left[1].id })
    assert.are.same({ "+14155550101" }, { emu.numbers()[1].number })
  end)

  it("an id that is not in the account is matched by name, with a warning", function()
    local client = fx.client()
    desired.carriers[1].id = "6f1c2a7e-8c1d-4c57-9a43-2f6d9b0e1a22"
    local plan = assert(client.fleet.plan(desired))
    assert.are.equal("create", plan.steps[1].action)
    assert.is_truthy(plan.warnings[1]:find("6f1c2a7e-8c1d-4c57-9a43-2f6d9b0e1a22", 1, true), plan.warnings[1])
  end)

  it("checks ids in the file offline", function()
    local bad = { carriers = {
      { carrier_name = "A", id = "not-a-uuid", sip_gateway = { ipv4 = "203.0.113.1" } },
      { carrier_name = "B", id = 7, sip_gateway = { ipv4 = "203.0.113.2" } },
      { carrier_name = "C", id = "6f1c2a7e-8c1d-4c57-9a43-2f6d9b0e1a22", sip_gateway = { ipv4 = "203.0.113.3" } },
      { carrier_name = "D", id = "6F1C2A7E-8C1D-4C57-9A43-2F6D9B0E1A22", sip_gateway = { ipv4 = "203.0.113.4" } },
    } }
    local ok, _, err = fleet_mod.check(bad)
    assert.is_nil(ok)
    local got = {}
    for _, e in ipairs(err.errors) do got[e.path] = e.code end
    assert.are.same({ ["carriers[1].id"] = "format", ["carriers[2].id"] = "type", ["carriers[4].id"] = "duplicate" }, got)
  end)
end)

---------------------------------------------------------------------------
describe("a prune never empties the account by accident; duplicate JSON keys refused (item 15)", function()
  it("refuses a prune that deletes every carrier unless prune_all says so", function()
    local client = fx.client()
    assert(client.carriers.add(fx.carrier{ carrier_name = "Keep me" }))
    local other = { carrier_name = "Other", sip_gateway = { ipv4 = "203.0.113.5" } }
    for _, desired in ipairs({ { carriers = {} }, { carriers = { other } } }) do
      local plan, msg, err = client.fleet.plan(desired, { prune = true })
      assert.is_nil(plan)
      assert.are.equal("validation", err.kind)
      assert.are.equal("prune_all", err.errors[1].code)
      assert.is_truthy(msg:find("--prune-all", 1, true), msg)
    end
    local plan = assert(client.fleet.plan({ carriers = {} }, { prune = true, prune_all = true }))
    assert.are.equal(1, plan.summary.delete)
    -- an empty account: nothing to protect
    emu.reset()
    plan = assert(client.fleet.plan({ carriers = {} }, { prune = true }))
    assert.are.equal(0, plan.changes)
  end)

  it("the CLI: --prune --yes with an empty file deletes nothing; --prune-all does", function()
    local client = fx.client()
    assert(client.carriers.add(fx.carrier{ carrier_name = "Keep me" }))
    local file = temp('{"carriers": {}}', ".json")
    local code, _, err = run({ "apply", "--file", file, "--prune", "--yes" })
    assert.are.equal(1, code)
    assert.is_truthy(err:find("--prune-all", 1, true), err)
    assert.are.equal(1, #emu.carriers())
    code = run({ "apply", "--file", file, "--prune-all", "--yes" })
    assert.are.equal(0, code)
    assert.are.equal(0, #emu.carriers())
  end)

  it("refuses a JSON file with a duplicate key, with its path", function()
    local cases = {
      ['{"carriers":[{"carrier_name":"A","sip_gateway":{"ipv4":"203.0.113.1"}}],"carriers":[]}'] = "carriers",
      ['{"carriers":[{"carrier_name":"A","sip_gateway":{"ipv4":"203.0.113.1","ipv4":"203.0.113.2"}}]}']
        = "carriers[1].sip_gateway.ipv4",
      ['{"carriers":[{"carrier_name":"A"},{"numbers":[], "carrier_name":"B", "carri\\u0065r_name":"C"}]}']
        = "carriers[2].carrier_name",
    }
    for text, where in pairs(cases) do
      local value, msg, err = fleet_mod.load(temp(text, ".json"))
      assert.is_nil(value, text)
      assert.are.equal("validation", err.kind)
      assert.are.equal(where, err.errors[1].path, msg)
      assert.are.equal("duplicate", err.errors[1].code)
    end
    -- the same key in different objects, and keys inside strings, are fine
    local ok = fleet_mod.load(temp('{"carriers":[{"carrier_name":"A, \\"carrier_name\\": 1"},{"carrier_name":"B"}]}', ".json"))
    assert.are.equal(2, #ok.carriers)
  end)
end)

---------------------------------------------------------------------------
describe("plan says what it left alone (item 16)", function()
  it("counts the carriers and numbers the file does not name, and says how to remove them", function()
    local client = fx.client()
    local other = assert(client.carriers.add(fx.carrier{ carrier_name = "Hand made" }))
    assert(client.phone_numbers.add{ number = "+14155559999", voip_carrier_sid = other.voip_carrier_sid })
    local desired = { carriers = { { carrier_name = "Trunk 1", sip_gateway = { ipv4 = "203.0.113.1" } } } }
    local plan = assert(client.fleet.plan(desired))
    assert.are.same({ carriers = 1, numbers = 1 }, plan.unmanaged)
    assert.is_true(client.fleet.apply(plan).ok)
    plan = assert(client.fleet.plan(desired))
    assert.are.equal(0, plan.changes)
    local text = tostring(plan)
    assert.is_falsy(text:find("The account matches the file", 1, true), text)
    assert.is_truthy(text:find("1 carrier and 1 phone number", 1, true), text)
    assert.is_truthy(text:find("--prune", 1, true), text)
    local file = temp(cjson.encode(desired), ".json")
    local code, out = run({ "plan", "--file", file, "--output", "json" })
    assert.are.equal(0, code, out)
    assert.are.same({ carriers = 1, numbers = 1 }, cjson.decode(out).unmanaged)
    -- with nothing left alone the old words stay
    assert(client.fleet.apply(assert(client.fleet.plan(desired, { prune = true }))).ok)
    text = tostring(assert(client.fleet.plan(desired)))
    assert.is_truthy(text:find("No changes. The account matches the file.", 1, true), text)
  end)
end)

---------------------------------------------------------------------------
describe("--replace of a name the file does not have is an error (item 17)", function()
  it("refuses it before any request, with a did-you-mean", function()
    local client = fx.client()
    local desired = { carriers = { { carrier_name = "Trunk 1", sip_gateway = { ipv4 = "203.0.113.1" } } } }
    local plan, msg, err = client.fleet.plan(desired, { replace = { "Trunk 11" } })
    assert.is_nil(plan)
    assert.are.equal("validation", err.kind)
    assert.are.equal("replace[1]", err.errors[1].path)
    assert.is_truthy(msg:find('did you mean "Trunk 1"', 1, true), msg)
    assert.are.equal(0, #emu.log())
    local file = temp(cjson.encode(desired), ".json")
    local code, _, stderr = run({ "plan", "--file", file, "--replace", "Trunk 11" })
    assert.are.equal(1, code)
    assert.is_truthy(stderr:find('did you mean "Trunk 1"', 1, true), stderr)
    -- a name the file has is fine even before the carrier exists
    assert(client.fleet.plan(desired, { replace = { "Trunk 1" } }))
  end)
end)
