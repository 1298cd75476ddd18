-- How results read in a REPL: one line per record, an aligned table per
-- list, never a secret; cjson still sees plain tables; help() generated
-- from core.describe; and a real `lua -i` fed lines on stdin.
local topcalls = require "topcalls"
local core = require "topcalls.core"
local resource = require "topcalls.resource"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local cjson = require("cjson").new()

local PASSWORD = "Pw-NeverShown-7731"
local AUTH_PASSWORD = "In-NeverShown-4410"

before_each(function() emu.reset() end)

-- A reg carrier (with a registration password) and a static one, plus a
-- number; the records as the client returned them.
local function account()
  local c = fx.client()
  local reg = assert(c.carriers.add(fx.carrier{
    carrier_name = "Registered Trunk", trunk_type = "reg",
    sip_gateway = { ipv4 = "sip.example.net", inbound = false },
    registration = { username = "acct1", password = PASSWORD, sip_realm = "example.net" },
  }))
  local static = assert(c.carriers.add(fx.carrier{ carrier_name = "Static" }))
  local number = assert(c.phone_numbers.add{ number = "+14155550150", voip_carrier_sid = static.voip_carrier_sid,
                                             label = "Sales line" })
  return c, reg, static, number
end

-- Give a record the secrets a careless server might echo, so that what
-- is checked is the view, not the emulator's manners.
local function with_secrets(rec)
  rec.registration = { username = "acct1", password = PASSWORD }
  rec.inbound_auth = { username = "in", password = AUTH_PASSWORD }
  return rec
end

local function no_secret(text)
  assert.is_falsy(text:find(PASSWORD, 1, true), text)
  assert.is_falsy(text:find(AUTH_PASSWORD, 1, true), text)
  assert.is_falsy(text:find(fx.API_KEY, 1, true), text)
end

-- Everything print() is given while fn runs, as one string.
local function captured(fn, ...)
  local saved, out = _G.print, {}
  _G.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    out[#out + 1] = table.concat(parts, "\t")
  end
  local ok, why = pcall(fn, ...)
  _G.print = saved
  assert(ok, why)
  return table.concat(out, "\n")
end

describe("a record", function()
  it("prints as one line with its name and ids, never a password", function()
    local _, reg, static = account()
    for _, rec in ipairs({ reg, static }) do
      with_secrets(rec)
      local line = tostring(rec)
      assert.is_falsy(line:find("\n"), line)
      assert.is_truthy(line:find('^carrier "' .. rec.carrier_name .. '" '), line)
      assert.is_truthy(line:find(" id=" .. rec.id, 1, true), line)
      assert.is_truthy(line:find(" voip_carrier_sid=" .. rec.voip_carrier_sid, 1, true), line)
      assert.is_truthy(line:find(" trunk_type=" .. rec.trunk_type, 1, true), line)
      no_secret(line)
    end
    assert.is_truthy(tostring(reg):find(" gateway=sip.example.net:5060 ", 1, true), tostring(reg))
  end)

  it("a phone number prints its number, label, status and ids", function()
    local _, _, static, number = account()
    local line = tostring(number)
    assert.are.equal(('phone_number "+14155550150" label="Sales line" status=active carrier_name=Static id=%s '
                      .. 'voip_carrier_sid=%s'):format(number.id, static.voip_carrier_sid), line)
  end)

  it("keeps one line whatever the server's text holds", function()
    local c = fx.client()
    local rec = assert(c.carriers.add(fx.carrier()))
    rec.carrier_name = "two\nlines\r\tand \"quotes\""
    local line = tostring(rec)
    assert.is_falsy(line:find("[\r\n]"), line)
    assert.is_truthy(line:find('carrier "two\\nlines\\r\\tand \\"quotes\\""', 1, true), line)
  end)

  it("has __name set: topcalls.carrier, topcalls.phone_number, topcalls.list", function()
    local c, reg, _, number = account()
    assert.are.equal("topcalls.carrier", getmetatable(reg).__name)
    assert.are.equal("topcalls.phone_number", getmetatable(number).__name)
    assert.are.equal("topcalls.list", getmetatable(assert(c.carriers.list())).__name)
    assert.are.equal("topcalls.list", getmetatable(assert(c.phone_numbers.list())).__name)
    assert.are.equal("topcalls.carrier", getmetatable(assert(c.carriers.get(reg.id))).__name)
    assert.are.equal("topcalls.phone_number", getmetatable(assert(c.phone_numbers.get(number.id))).__name)
  end)

  it("cjson encodes records and lists as plain JSON objects and arrays", function()
    local c, reg, _, number = account()
    local enc = cjson.decode(cjson.encode(reg))
    assert.are.equal(reg.id, enc.id)
    assert.are.equal("Registered Trunk", enc.carrier_name)
    assert.are.equal("sip.example.net", enc.sip_gateway.ipv4)
    assert.is_truthy(cjson.encode(number):find("^{"))
    local list = assert(c.carriers.list())
    local text = cjson.encode(list)
    assert.is_truthy(text:find("^%[{"), text)
    local back = cjson.decode(text)
    assert.are.equal(2, #back)
    assert.are.same({ "Registered Trunk", "Static" }, { back[1].carrier_name, back[2].carrier_name })
    local numbers = assert(c.phone_numbers.list())   -- luassert's assert returns extra values
    local nums = cjson.decode(cjson.encode(numbers))
    assert.are.equal("+14155550150", nums[1].number)
  end)
end)

describe("a list", function()
  -- The start column of each header name, and the header names.
  local function header_starts(header, names)
    local starts, from = {}, 1
    for k, name in ipairs(names) do
      local s, e = header:find(name, from, true)
      assert.is_truthy(s, name)
      starts[k], from = s, e + 1
    end
    return starts
  end

  it("prints as an aligned table with a header and a count, never a password", function()
    local c, _, _ = account()
    local list = assert(c.carriers.list())
    for _, rec in ipairs(list) do with_secrets(rec) end
    local text = tostring(list)
    no_secret(text)
    local lines = {}
    for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
    assert.are.equal(4, #lines)
    assert.are.equal("(2 carriers)", lines[4])
    local names = { "carrier_name", "trunk_type", "gateway", "id", "voip_carrier_sid" }
    local starts = header_starts(lines[1], names)
    for r, rec in ipairs(list) do
      local row = lines[r + 1]
      local cells = { rec.carrier_name, rec.trunk_type,
                      rec.sip_gateway.ipv4 .. ":" .. ("%d"):format(rec.sip_gateway.port), rec.id, rec.voip_carrier_sid }
      for k, v in ipairs(cells) do
        assert.are.equal(v, row:sub(starts[k], starts[k] + #v - 1), "row " .. r .. " column " .. names[k])
        if k > 1 then assert.are.equal("  ", row:sub(starts[k] - 2, starts[k] - 1)) end
      end
      assert.are.equal(starts[5] + #rec.voip_carrier_sid - 1, #row)   -- no trailing blanks
    end
  end)

  it("phone numbers print aligned too, with '-' for a null label", function()
    local c, _, static = account()
    assert(c.phone_numbers.add{ number = "+442071838750", voip_carrier_sid = static.voip_carrier_sid })
    local text = tostring(assert(c.phone_numbers.list()))
    local lines = {}
    for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
    assert.are.equal("(2 phone numbers)", lines[4])
    local starts = header_starts(lines[1], { "number", "label", "status", "carrier_name", "id" })
    assert.are.equal("Sales line", lines[2]:sub(starts[2], starts[2] + 9))
    assert.are.equal("- ", lines[3]:sub(starts[2], starts[2] + 1))
    assert.are.equal("active", lines[3]:sub(starts[3], starts[3] + 5))
  end)

  it("aligns by characters, not bytes: non-ASCII names pad like ASCII ones", function()
    local c = fx.client()
    assert(c.carriers.add(fx.carrier{ carrier_name = "Café Telecom ü" }))
    assert(c.carriers.add(fx.carrier{ carrier_name = "Plain" }))
    local text = tostring(assert(c.carriers.list()))
    local lines = {}
    for l in (text .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
    -- the column (in characters) where "static_ip" / "trunk_type" starts on each line
    local function column(line, word)
      local s = assert(line:find(word, 1, true), line)
      local _, cont = line:sub(1, s - 1):gsub("[\128-\191]", "")
      return s - cont
    end
    local col = column(lines[1], "trunk_type")
    assert.are.equal(col, column(lines[2], "static_ip"), text)
    assert.are.equal(col, column(lines[3], "static_ip"), text)
    assert.are.equal("Café Telecom ü  static_ip", lines[2]:sub(1, #"Café Telecom ü  static_ip"))
  end)

  it("one record says so; none says so", function()
    local c = fx.client()
    assert.are.equal("(no carriers)", tostring(assert(c.carriers.list())))
    assert(c.carriers.add(fx.carrier()))
    local text = tostring(assert(c.carriers.list()))
    assert.is_truthy(text:find("\n%(1 carrier%)$"), text)
  end)
end)

describe("help", function()
  it("lists every resource and every operation", function()
    local text = captured(topcalls.help)
    for _, desc in ipairs(topcalls.resources) do
      assert.is_truthy(text:find("\n?" .. desc.name .. ": "), desc.name)
      assert.is_truthy(text:find(desc.path, 1, true), desc.path)
      for _, op in ipairs(resource.OPERATIONS) do
        assert.is_truthy(text:find("  " .. desc.name .. "." .. op .. "(", 1, true), desc.name .. "." .. op)
      end
    end
    assert.are.same({ "carriers", "phone_numbers" }, { topcalls.resources[1].name, topcalls.resources[2].name })
  end)

  -- Every described field appears, indented by depth, with its rules.
  local function check_fields(text, fields, indent)
    for _, f in ipairs(fields) do
      local line = text:match("\n" .. indent .. f.name .. " +([^\n]*)")
      assert.is_truthy(line, "field " .. f.name .. " missing:\n" .. text)
      assert.are.equal(f.type, line:match("^(%a+)"), f.name)
      local says_required = line:find("^%a+, required,") ~= nil or line:find("^%a+, required$") ~= nil
      assert.are.equal(f.required == true, says_required, f.name .. ": " .. line)
      if f.default ~= nil then
        assert.is_truthy(line:find("default " .. tostring(f.default), 1, true), f.name .. ": " .. line)
      end
      if f.type == "integer" then
        assert.is_truthy(line:find(f.min .. "-" .. f.max, 1, true), f.name .. ": " .. line)
      elseif f.max then
        assert.is_truthy(line:find(f.min .. "-" .. f.max .. " characters", 1, true), f.name .. ": " .. line)
      end
      for _, choice in ipairs(f.choices or {}) do
        assert.is_truthy(line:find("'" .. choice .. "'", 1, true), f.name .. ": " .. line)
      end
      if f.format then assert.is_truthy(line:find("format " .. f.format, 1, true), f.name .. ": " .. line) end
      if f.only_when then
        assert.is_truthy(line:find(("required when %s is '%s'"):format(f.only_when.field, f.only_when.value), 1, true),
                         f.name .. ": " .. line)
      end
      assert.are.equal(f.sensitive == true, line:find("secret", 1, true) ~= nil, f.name .. ": " .. line)
      if f.members then check_fields(text, f.members, indent .. "  ") end
    end
  end

  for _, desc in ipairs(topcalls.resources) do
    for _, op in ipairs({ "add", "validate", "add_many" }) do
      it(desc.name .. "." .. op .. " lists every field of core.describe(\"" .. desc.schema .. "\") with its rules", function()
        local text = captured(topcalls.help, desc.name .. "." .. op)
        assert.is_truthy(text:find("^" .. desc.name .. "%." .. op .. "%("), text)
        assert.is_truthy(text:find("params (" .. desc.schema .. "):", 1, true), text)
        check_fields(text, core.describe(desc.schema), "    ")
        no_secret(text)
      end)
    end
    it(desc.name .. ".get and .delete describe their id and options", function()
      for _, op in ipairs({ "get", "delete" }) do
        local text = captured(topcalls.help, desc.name .. "." .. op)
        assert.is_truthy(text:find("id: " .. desc.id_what, 1, true), text)
        assert.is_truthy(text:find("call_opts: max_retries, timeout", 1, true), text)
      end
    end)
  end

  it("lists and each name their options; an unknown topic names the topics", function()
    local text = captured(topcalls.help, "phone_numbers.list")
    assert.is_truthy(text:find("opts: limit, max_retries, page_size, timeout", 1, true), text)
    text = captured(topcalls.help, "nope")
    assert.is_truthy(text:find("^no help for 'nope'; topics: carriers, carriers.add, "), text)
    assert.is_truthy(text:find("phone_numbers.validate$"), text)
  end)
end)

describe("an interactive interpreter", function()
  -- Feed lines to `<lua> -i` on stdin; its whole output.
  local function repl(lines)
    local lua = assert(os.getenv("TOPCALLS_TEST_LUA"), "run the specs through make test")
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    local p = io.popen("env TOPCALLS_API_KEY='" .. fx.API_KEY .. "' TOPCALLS_BASE_URL='" .. emu.url .. "' "
                       .. lua .. " -i < " .. path .. " 2>&1")
    local out = p:read("*a")
    p:close()
    os.remove(path)
    return out
  end

  it("prints lists as tables and records as lines (=expr, and bare expressions on 5.3+)", function()
    local _, reg, static = account()
    local setup = { "c = require'topcalls'.new()" }   -- key and URL from the environment
    local forms = { "=" }
    if _VERSION >= "Lua 5.3" and not rawget(_G, "jit") then forms[2] = "" end
    for _, form in ipairs(forms) do
      local lines = { setup[1],
        form .. "c.carriers.list()",
        form .. ("c.carriers.get(%q)"):format(static.id),
        form .. "c.phone_numbers.list()",
        "print('END')" }
      local out = repl(lines)
      assert.is_truthy(out:find("carrier_name +trunk_type +gateway +id +voip_carrier_sid\n"), out)
      assert.is_truthy(out:find("Registered Trunk +reg +sip%.example%.net:5060 +" .. reg.id:gsub("%-", "%%-")), out)
      assert.is_truthy(out:find("\n%(2 carriers%)"), out)
      assert.is_truthy(out:find(('carrier "Static" trunk_type=static_ip gateway=203.0.113.10:5060 id=%s')
                                :format(static.id), 1, true), out)
      assert.is_truthy(out:find("+14155550150  Sales line  active", 1, true), out)
      assert.is_truthy(out:find("\n%(1 phone number%)"), out)
      assert.is_truthy(out:find("END", 1, true), out)
      assert.is_falsy(out:find("table: 0x", 1, true), out)
      no_secret(out)
    end
  end)
end)
