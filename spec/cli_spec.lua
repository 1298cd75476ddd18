-- bin/topcalls run as a subprocess against the local emulator: every
-- subcommand, exit codes, file and stdin input, and no secret in argv or
-- in any output. The interpreter is $TOPCALLS_TEST_LUA (default lua5.4).
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"
local cjson = require("cjson").new()

local LUA = os.getenv("TOPCALLS_TEST_LUA") or "lua5.4"
local REG_PASSWORD = "reg-Pa55 w0rd!"
local AUTH_PASSWORD = "auth-Pa55w0rd'$"
local SECRETS = { fx.API_KEY, REG_PASSWORD, AUTH_PASSWORD }
local UUID = "^%x+%-%x+%-%x+%-%x+%-%x+$"

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local slurp, spit = fx.slurp, fx.spit

-- Run `topcalls ARGV...` and return exit code, stdout, stderr. opts.env:
-- variables to export (false unsets; the key and base URL default to the
-- emulator's); opts.stdin: text. The environment goes through a script
-- file, so secrets reach the CLI without being on any process's argv; the
-- argv the CLI gets is exactly `argv`, which must hold no secret.
local function run(argv, opts)
  opts = opts or {}
  for _, a in ipairs(argv) do
    for _, secret in ipairs(SECRETS) do assert(not a:find(secret, 1, true), "secret in argv: " .. a) end
  end
  local base = os.tmpname()
  local env = { TOPCALLS_API_KEY = fx.API_KEY, TOPCALLS_BASE_URL = emu.url }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local lines = {}
  for k, v in pairs(env) do
    lines[#lines + 1] = v and ("export " .. k .. "=" .. quote(v)) or ("unset " .. k)
  end
  spit(base .. ".in", opts.stdin or "")
  local args = {}
  for i, a in ipairs(argv) do args[i] = quote(a) end
  lines[#lines + 1] = LUA .. " bin/topcalls " .. table.concat(args, " ")
    .. " <" .. base .. ".in >" .. base .. ".out 2>" .. base .. ".err"
  lines[#lines + 1] = "echo $? >" .. base .. ".rc"
  spit(base .. ".sh", table.concat(lines, "\n") .. "\n")
  os.execute("sh " .. base .. ".sh")
  local code = tonumber(slurp(base .. ".rc"))
  local out, err = slurp(base .. ".out"), slurp(base .. ".err")
  for _, ext in ipairs({ "", ".in", ".sh", ".out", ".err", ".rc" }) do os.remove(base .. ext) end
  for _, secret in ipairs(SECRETS) do
    assert(not out:find(secret, 1, true), "secret on stdout: " .. out)
    assert(not err:find(secret, 1, true), "secret on stderr: " .. err)
  end
  return code, out, err
end

-- A temporary JSON file holding value (or text); removed by after_each.
local temp_files = {}
local function temp_file(value)
  local path = os.tmpname()
  temp_files[#temp_files + 1] = path
  spit(path, type(value) == "string" and value or cjson.encode(value))
  return path
end

local function lines_of(s)
  local t = {}
  for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
  return t
end

-- validate --output text's "FILE: path: message (code)" lines as sorted
-- "path code" strings.
local function lint_lines(out, file)
  local found = {}
  for _, line in ipairs(lines_of(out)) do
    local path, c = line:match("^" .. file:gsub("%p", "%%%0") .. ": (%S+): .* %(([%w_]+)%)$")
    found[#found + 1] = path .. " " .. c
  end
  table.sort(found)
  return found
end

before_each(function() emu.reset() end)
after_each(function()
  for _, p in ipairs(temp_files) do os.remove(p) end
  temp_files = {}
end)

describe("topcalls --help", function()
  it("documents every command with examples and exits 0", function()
    local cmds = { {} }
    for _, resource in ipairs({ "carriers", "numbers" }) do
      cmds[#cmds + 1] = { resource }
      for _, action in ipairs({ "add", "get", "list", "delete", "validate", "add-many" }) do
        cmds[#cmds + 1] = { resource, action }
      end
    end
    for _, cmd in ipairs(cmds) do
      local argv = { (table.unpack or unpack)(cmd) }
      argv[#argv + 1] = "--help"
      local code, out = run(argv)
      assert.are.equal(0, code)
      local usage = "Usage: " .. table.concat({ "topcalls", (table.unpack or unpack)(cmd) }, " ")
      assert.are.equal(usage, out:sub(1, #usage))
      if #cmd ~= 1 then assert.is_truthy(out:find("Examples:", 1, true), out) end
    end
  end)

  it("exits 2 with the usage on a bad flag, 0 with --version", function()
    local code, out, err = run({ "carriers", "add", "--bogus" })
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.is_truthy(err:find("Usage: topcalls carriers add", 1, true))
    assert.is_truthy(err:find("unknown option '--bogus'", 1, true))
    code, out = run({ "--version" })
    assert.are.equal(0, code)
    assert.is_truthy(out:find("^topcalls %d"))
  end)
end)

describe("topcalls carriers add", function()
  it("adds a carrier from flags and prints it as JSON", function()
    local code, out, err = run({ "carriers", "add", "--name", "Flags Co", "--gateway", "203.0.113.10:5080",
                                 "--no-outbound" })
    assert.are.equal(0, code, err)
    local carrier = cjson.decode(out)
    assert.is_truthy(carrier.id:match(UUID))
    assert.are.equal(carrier.id, emu.carriers()[1].id)
    assert.are.same({ carrier_name = "Flags Co", trunk_type = "static_ip",
                      sip_gateway = { ipv4 = "203.0.113.10", port = 5080, inbound = true, outbound = false } },
                    cjson.decode(fx.requests("POST")[1].body))
  end)

  it("takes the registration password from an env var and the key from --api-key-file", function()
    local keyfile = temp_file("  " .. fx.API_KEY .. "  \nsecond line\n")
    local code, out, err = run({ "carriers", "add", "--name", "Reg Co", "--trunk-type", "reg",
      "--gateway", "sip.example.net", "--no-inbound", "--reg-username", "acct1",
      "--reg-password-env", "SIP_PW", "--reg-realm", "example.net", "--reg-use-tls",
      "--api-key-file", keyfile, "--output", "text" },
      { env = { SIP_PW = REG_PASSWORD, TOPCALLS_API_KEY = false } })
    assert.are.equal(0, code, err)
    local sent = cjson.decode(fx.requests("POST")[1].body)
    assert.are.same({ username = "acct1", password = REG_PASSWORD, sip_realm = "example.net", use_tls = true },
                    sent.registration)
    assert.are.equal("Bearer " .. fx.API_KEY, fx.requests("POST")[1].headers.authorization)
    local text = lines_of(out)
    assert.is_truthy(#text > 5)
    for _, want in ipairs({ "trunk_type\treg", "sip_gateway.inbound\tfalse", "registration.username\tacct1" }) do
      assert.is_truthy(out:find(want, 1, true), out)
    end
  end)

  it("reads the carrier as JSON from stdin, password included", function()
    local code, out, err = run({ "carriers", "add", "--file", "-" }, { stdin = cjson.encode(fx.carrier{
      carrier_name = "Stdin Co", trunk_type = "auth",
      inbound_auth = { username = "carrier-in", password = AUTH_PASSWORD } }) })
    assert.are.equal(0, code, err)
    assert.are.equal("auth", cjson.decode(out).trunk_type)
    assert.are.equal(AUTH_PASSWORD, cjson.decode(fx.requests("POST")[1].body).inbound_auth.password)
  end)

  it("lays flags over a file and sends --idempotency-key", function()
    local code, out, err = run({ "carriers", "add", "--file", temp_file(fx.carrier()), "--name", "Override Co",
                                 "--idempotency-key", "cli-run-0001" })
    assert.are.equal(0, code, err)
    assert.are.equal("Override Co", cjson.decode(out).carrier_name)
    assert.are.equal("203.0.113.10", cjson.decode(out).sip_gateway.ipv4)
    assert.are.equal("cli-run-0001", fx.requests("POST")[1].headers["idempotency-key"])
  end)

  -- The server replays only for the same body bytes, so this needs the
  -- library to write JSON keys in a fixed order in every process.
  it("returns the same carrier when re-run with the same --idempotency-key", function()
    local argv = { "carriers", "add", "--name", "Rerun Co", "--gateway", "1.2.3.4", "--idempotency-key", "cli-run-0002" }
    local code1, out1, err1 = run(argv)
    local code2, out2, err2 = run(argv)
    assert.are.same({ 0, 0 }, { code1, code2 }, err1 .. err2)
    assert.are.equal(cjson.decode(out1).id, cjson.decode(out2).id)
    assert.are.equal(1, #emu.carriers())
  end)

  it("exits 2 on a validation error, sends nothing, and prints the error table with --output json", function()
    local code, out, err = run({ "carriers", "add", "--name", "Bad", "--gateway", "sip.example.net",
                                 "--output", "json" })
    assert.are.equal(2, code)
    assert.are.equal(1, #lines_of(err))
    assert.is_truthy(err:find("^topcalls: validation: sip_gateway%.ipv4: "))
    local e = cjson.decode(out)
    assert.are.equal("validation", e.kind)
    assert.are.same({ "sip_gateway.ipv4", "format" }, { e.errors[1].path, e.errors[1].code })
    assert.are.equal(0, #emu.log())
  end)

  it("exits 2 when a password variable is not set", function()
    local code, _, err = run({ "carriers", "add", "--name", "Reg", "--trunk-type", "reg", "--gateway", "1.2.3.4",
                               "--reg-username", "u", "--reg-password-env", "TOPCALLS_CLI_UNSET_VAR" },
                             { env = { TOPCALLS_CLI_UNSET_VAR = false } })
    assert.are.equal(2, code)
    assert.is_truthy(err:find("TOPCALLS_CLI_UNSET_VAR is not set", 1, true))
    assert.are.equal(0, #emu.log())
  end)

  -- kind -> exit code, each through a fault of the emulator
  for _, case in ipairs({
    { kind = "api", code = 3, fault = { status = 403 } },
    { kind = "transport", code = 4, fault = { reset = "before" } },
    { kind = "decode", code = 3, fault = { status = 201, body = "<html></html>", content_type = "text/html" } },
  }) do
    it("exits " .. case.code .. " on a " .. case.kind .. " error", function()
      emu.faults(case.fault)
      local code, out, err = run({ "carriers", "add", "--name", "F", "--gateway", "1.2.3.4",
                                   "--max-retries", "0", "--output", "json" })
      assert.are.equal(case.code, code)
      assert.are.equal(1, #lines_of(err))
      assert.is_truthy(err:find("^topcalls: " .. case.kind .. ": "), err)
      assert.are.equal(case.kind, cjson.decode(out).kind)
    end)
  end

  it("exits 5 without an API key or with an unreadable key file", function()
    local code, _, err = run({ "carriers", "add", "--name", "K", "--gateway", "1.2.3.4" },
                             { env = { TOPCALLS_API_KEY = false } })
    assert.are.equal(5, code)
    assert.is_truthy(err:find("^topcalls: config: .*%-%-api%-key%-file"), err)
    code = run({ "carriers", "add", "--name", "K", "--gateway", "1.2.3.4", "--api-key-file", "/nonexistent/key" })
    assert.are.equal(5, code)
    assert.are.equal(0, #emu.log())
  end)
end)

describe("topcalls carriers validate", function()
  it("exits 0 for a valid file, offline and without a key", function()
    local code, out = run({ "carriers", "validate", "--file", temp_file(fx.carrier()) },
                          { env = { TOPCALLS_API_KEY = false, TOPCALLS_BASE_URL = false } })
    assert.are.equal(0, code)
    assert.are.same({ valid = true }, cjson.decode(out))
  end)

  it("exits 2 and prints every violation of every item with its path", function()
    local file = temp_file({ fx.carrier{ carrier_name = "" },
                             fx.carrier{ sip_gateway = { ipv4 = "sip.example.net", prot = 5060 } } })
    local code, out, err = run({ "carriers", "validate", "--file", file, "--output", "text" })
    assert.are.equal(2, code)
    assert.are.equal(1, #lines_of(err))
    assert.are.same({ "[1].carrier_name length", "[2].sip_gateway.ipv4 format",
                      "[2].sip_gateway.prot unknown_field" }, lint_lines(out, file))
    assert.are.equal(0, #emu.log())
  end)

  it("exits 2 for JSON that does not parse, read from stdin", function()
    local code, out = run({ "carriers", "validate", "--file", "-" }, { stdin = '{"carrier_name": ' })
    assert.are.equal(2, code)
    assert.are.same({ path = "", code = "format" }, { path = cjson.decode(out).errors[1].path,
                                                      code = cjson.decode(out).errors[1].code })
  end)
end)

describe("topcalls carriers delete", function()
  it("deletes a carrier by id", function()
    local carrier = assert(fx.client().carriers.add(fx.carrier()))
    local code, out = run({ "carriers", "delete", carrier.id })
    assert.are.equal(0, code)
    assert.are.same({ id = carrier.id, deleted = true }, cjson.decode(out))
    assert.are.equal(0, #emu.carriers())
  end)

  it("exits 3 for an unknown id and 2 for an id that is not a UUID", function()
    local code, _, err = run({ "carriers", "delete", "6f1c2a7e-8c1d-4c57-9a43-2f6d9b0e1a22" })
    assert.are.equal(3, code)
    assert.is_truthy(err:find("^topcalls: api: 404"), err)
    code = run({ "carriers", "delete", "../x" })
    assert.are.equal(2, code)
  end)
end)

describe("topcalls carriers add-many", function()
  it("adds a list, prints plain progress lines when stderr is not a terminal, exits with the failure's code",
     function()
    emu.faults({ {}, { status = 403 } })
    local list = {}
    for i = 1, 3 do list[i] = fx.carrier{ carrier_name = "Many " .. i } end
    local code, out, err = run({ "carriers", "add-many", "--file", temp_file(list), "--concurrency", "2",
                                 "--max-retries", "0" })
    assert.are.equal(3, code)
    local progress = 0
    for _, line in ipairs(lines_of(err)) do
      if line:find("^add%-many: %d/3 item %d ") then progress = progress + 1 end
    end
    assert.are.equal(3, progress, err)
    assert.is_truthy(err:find("add-many: 2 added, 1 failed", 1, true), err)
    local res = cjson.decode(out)
    assert.are.same({ 2, 1 }, { res.summary.succeeded, res.summary.failed })
    local failed = 0
    for i, r in ipairs(res.results) do
      assert.are.equal(i, r.item)
      if r.error then
        failed = failed + 1
        assert.are.equal(403, r.error.status)
      end
    end
    assert.are.equal(1, failed)
    assert.are.equal(2, #emu.carriers())
  end)

  it("sends nothing when any item is invalid", function()
    local code, out = run({ "carriers", "add-many", "--file", temp_file({ fx.carrier(), { carrier_name = "x" } }) })
    assert.are.equal(2, code)
    assert.are.equal("[2].sip_gateway", cjson.decode(out).errors[1].path)
    assert.are.equal(0, #emu.log())
  end)

  it("sends no more carriers after a failure with --stop-on-error", function()
    emu.faults({ status = 403 })
    local list = { fx.carrier(), fx.carrier{ carrier_name = "Two" }, fx.carrier{ carrier_name = "Three" } }
    local code, out = run({ "carriers", "add-many", "--file", temp_file(list), "--concurrency", "1",
                            "--stop-on-error", "--output", "text" })
    assert.are.equal(3, code)
    assert.are.same({ "1\tfailed", "2\tnot sent", "3\tnot sent" },
                    { out:match("^(1\tfailed)\t"), out:match("\n(2\tnot sent)\n"), out:match("\n(3\tnot sent)\n$") })
    assert.are.equal(1, #emu.log())
  end)

  it("reads the list from stdin and prints text results", function()
    local code, out = run({ "carriers", "add-many", "--file", "-", "--output", "text" },
                          { stdin = cjson.encode({ fx.carrier(), fx.carrier{ carrier_name = "Two" } }) })
    assert.are.equal(0, code)
    local text = lines_of(out)
    assert.are.equal(2, #text)
    assert.is_truthy(text[1]:find("^1\tadded\t"))
    assert.are.equal(2, #emu.carriers())
  end)
end)

---------------------------------------------------------------------------
-- Phone numbers, and listing and getting carriers

local NUMBER = "+14155550100"
local OTHER_UUID = "6f1c2a7e-8c1d-4c57-9a43-2f6d9b0e1a22"

-- Records made through the library, not the CLI under test.
local function new_carrier(overrides) return assert(fx.client().carriers.add(fx.carrier(overrides))) end
local function new_number(number, sid, label)
  return assert(fx.client().phone_numbers.add({ number = number, voip_carrier_sid = sid, label = label }))
end

-- The URIs of the GET requests the emulator saw.
local function get_uris()
  local uris = {}
  for _, r in ipairs(fx.requests("GET")) do uris[#uris + 1] = r.uri end
  return uris
end

-- The paths of a validation error's entries, sorted.
local function error_paths(e)
  local paths = {}
  for i, x in ipairs(e.errors) do paths[i] = x.path end
  table.sort(paths)
  return paths
end

describe("topcalls numbers add", function()
  it("adds a number from flags and prints it as JSON", function()
    local carrier = new_carrier()
    local code, out, err = run({ "numbers", "add", "--number", NUMBER, "--carrier", carrier.voip_carrier_sid,
                                 "--label", "Support" })
    assert.are.equal(0, code, err)
    local n = cjson.decode(out)
    assert.is_truthy(n.id:match(UUID))
    assert.are.same({ NUMBER, "Support", carrier.voip_carrier_sid }, { n.number, n.label, n.voip_carrier_sid })
    assert.are.equal(n.id, emu.numbers()[1].id)
    assert.are.same({ number = NUMBER, voip_carrier_sid = carrier.voip_carrier_sid, label = "Support" },
                    cjson.decode(fx.requests("POST")[2].body))
  end)

  it("lays flags over a file read from stdin and prints path<TAB>value lines with --output text", function()
    new_carrier()
    local code, out, err = run({ "numbers", "add", "--file", "-", "--label", "Override", "--output", "text" },
                               { stdin = cjson.encode({ number = NUMBER, label = "From file" }) })
    assert.are.equal(0, code, err)
    local text = lines_of(out)
    local sorted = { (table.unpack or unpack)(text) }
    table.sort(sorted)
    assert.are.same(sorted, text)
    for _, line in ipairs(text) do assert.is_truthy(line:match("^[%w_.]+\t[^\t]*$"), line) end
    for _, want in ipairs({ "number\t" .. NUMBER, "label\tOverride", "status\tactive" }) do
      assert.is_truthy(out:find("\n" .. want .. "\n", 1, true), out)
    end
  end)

  it("exits 2 listing every invalid field, and sends nothing", function()
    local code, out, err = run({ "numbers", "add", "--number", "+999555", "--carrier", "not-a-uuid", "--label", "" })
    assert.are.equal(2, code)
    assert.are.equal(1, #lines_of(err))
    assert.is_truthy(err:find("^topcalls: validation: 3 problems: "), err)
    local e = cjson.decode(out)
    assert.are.equal("validation", e.kind)
    assert.are.same({ "label", "number", "voip_carrier_sid" }, error_paths(e))
    assert.are.equal(0, #emu.log())
  end)

  it("exits 3 with the server's errors for an unknown carrier and for a number added twice", function()
    new_carrier()
    local code, out = run({ "numbers", "add", "--number", NUMBER, "--carrier", OTHER_UUID })
    assert.are.equal(3, code)
    local e = cjson.decode(out)
    assert.are.same({ "api", 400, "voip_carrier_sid" }, { e.kind, e.status, e.errors[1].path })
    assert.are.equal(0, run({ "numbers", "add", "--number", NUMBER }))
    code, out = run({ "numbers", "add", "--number", NUMBER })
    assert.are.equal(3, code)
    e = cjson.decode(out)
    assert.are.same({ 422, "number" }, { e.status, e.errors[1].path })
    assert.are.equal(1, #emu.numbers())
  end)
end)

describe("topcalls numbers get", function()
  it("prints one number as JSON, and as text", function()
    local n = new_number(NUMBER, new_carrier().voip_carrier_sid, "Desk")
    local code, out = run({ "numbers", "get", n.id })
    assert.are.equal(0, code)
    local got = cjson.decode(out)
    assert.are.same({ n.id, NUMBER, "Desk", "active" }, { got.id, got.number, got.label, got.status })
    code, out = run({ "numbers", "get", n.id, "--output", "text" })
    assert.are.equal(0, code)
    assert.is_truthy(out:find("\nid\t" .. n.id .. "\n", 1, true), out)
  end)

  it("exits 3 for an unknown id, and 2 without a request for an id that is not a UUID", function()
    local code, _, err = run({ "numbers", "get", OTHER_UUID })
    assert.are.equal(3, code)
    assert.is_truthy(err:find("^topcalls: api: 404"), err)
    local out
    code, out = run({ "numbers", "get", "../x" })
    assert.are.equal(2, code)
    assert.are.same({ "phone_number_id" }, error_paths(cjson.decode(out)))
    assert.are.equal(1, #emu.log())
  end)
end)

describe("topcalls numbers list", function()
  it("prints an empty account as [] and as one line of text", function()
    local code, out = run({ "numbers", "list" })
    assert.are.same({ 0, "[]\n" }, { code, out })
    code, out = run({ "numbers", "list", "--output", "text" })
    assert.are.equal(0, code)
    assert.are.equal(1, #lines_of(out))
    assert.is_truthy(out:find("^%(no "), out)
  end)

  for _, shape in ipairs({ "paged", "cursor" }) do
    it("walks every page with --page-size 1 (" .. shape .. " pages), in order", function()
      emu.config({ list_shape = shape })
      local sid = new_carrier().voip_carrier_sid
      local ids = {}
      for i = 1, 3 do ids[i] = new_number("+1415555010" .. i, sid).id end
      local code, out, err = run({ "numbers", "list", "--page-size", "1" })
      assert.are.equal(0, code, err)
      local got = {}
      for i, n in ipairs(cjson.decode(out)) do got[i] = n.id end
      assert.are.same(ids, got)
      local uris = get_uris()
      assert.is_truthy(#uris >= 3, #uris)
      for _, uri in ipairs(uris) do assert.is_truthy(uri:find("page_size=1", 1, true), uri) end
    end)
  end

  it("stops after --limit records", function()
    local sid = new_carrier().voip_carrier_sid
    for i = 1, 3 do new_number("+1415555010" .. i, sid) end
    local code, out = run({ "numbers", "list", "--limit", "2", "--page-size", "1" })
    assert.are.equal(0, code)
    assert.are.equal(2, #cjson.decode(out))
    assert.are.equal(2, #get_uris())
  end)

  it("prints an aligned table with --output text", function()
    local sid = new_carrier().voip_carrier_sid
    local a = new_number("+14155550101", sid, "A rather long label")
    local b = new_number("+442071838750", sid)
    local code, out = run({ "numbers", "list", "--output", "text" })
    assert.are.equal(0, code)
    local text = lines_of(out)
    assert.are.equal(4, #text, out)
    assert.is_truthy(text[1]:find("^number +label +status "), text[1])
    assert.is_truthy(text[4]:find("^%(2 "), text[4])
    local col = text[1]:find("%f[%w]id%f[%W]")
    assert.are.same({ col, col }, { (text[2]:find(a.id, 1, true)), (text[3]:find(b.id, 1, true)) })
    assert.is_truthy(text[2]:find("A rather long label", 1, true))
  end)

  it("exits 4 on a transport error and 3 on a page that is not a list", function()
    emu.faults({ reset = "before" })
    local code, out = run({ "numbers", "list", "--max-retries", "0" })
    assert.are.equal(4, code)
    assert.are.equal("transport", cjson.decode(out).kind)
    emu.faults({ status = 200, body = '{"items": []}', content_type = "application/json" })
    code, out = run({ "numbers", "list", "--max-retries", "0" })
    assert.are.equal(3, code)
    assert.are.equal("decode", cjson.decode(out).kind)
  end)

  it("exits 2 on a bad --page-size or --limit, without a request", function()
    for _, argv in ipairs({ { "--page-size", "0" }, { "--page-size", "1001" }, { "--limit", "1.5" } }) do
      local code, _, err = run({ "numbers", "list", argv[1], argv[2] })
      assert.are.equal(2, code)
      assert.is_truthy(err:find(argv[1] .. " must be", 1, true), err)
    end
    assert.are.equal(0, #emu.log())
  end)
end)

describe("topcalls numbers delete", function()
  it("deletes a number by id, and exits 3 when it is gone", function()
    local n = new_number(NUMBER, new_carrier().voip_carrier_sid)
    local code, out = run({ "numbers", "delete", n.id })
    assert.are.equal(0, code)
    assert.are.same({ id = n.id, deleted = true }, cjson.decode(out))
    assert.are.equal(0, #emu.numbers())
    code, out = run({ "numbers", "delete", n.id, "--output", "text" })
    assert.are.equal(3, code)
    assert.are.equal("", out)
  end)
end)

describe("topcalls numbers validate", function()
  it("exits 0 for a valid file, offline and without a key", function()
    local code, out = run({ "numbers", "validate", "--file", temp_file({ number = NUMBER, label = "x" }) },
                          { env = { TOPCALLS_API_KEY = false, TOPCALLS_BASE_URL = false } })
    assert.are.same({ 0, { valid = true } }, { code, cjson.decode(out) })
  end)

  it("exits 2 and prints every violation of every item with its path", function()
    local file = temp_file('[{"number": "14155550100"}, {"number": "+14155550100", "label": "",'
                           .. ' "voip_carrier_sid": "x", "extra": 1}, "not an object"]')
    local code, out, err = run({ "numbers", "validate", "--file", file, "--output", "text" })
    assert.are.equal(2, code)
    assert.is_truthy(err:find("^topcalls: validation: .*: 5 problems: "), err)
    assert.are.same({ "[1].number format", "[2].extra unknown_field", "[2].label length",
                      "[2].voip_carrier_sid format", "[3] type" }, lint_lines(out, file))
    assert.are.equal(0, #emu.log())
  end)
end)

describe("topcalls numbers add-many", function()
  it("adds a list in order and exits with the code of the failed item", function()
    new_carrier()
    local list = { { number = NUMBER, label = "One" }, { number = NUMBER }, { number = "+14155550199" } }
    local code, out, err = run({ "numbers", "add-many", "--file", temp_file(list), "--concurrency", "1" })
    assert.are.equal(3, code)
    assert.is_truthy(err:find("add-many: 2 added, 1 failed, 0 not sent", 1, true), err)
    local res = cjson.decode(out)
    assert.are.same({ total = 3, succeeded = 2, failed = 1, skipped = 0 },
                    { total = res.summary.total, succeeded = res.summary.succeeded,
                      failed = res.summary.failed, skipped = res.summary.skipped })
    assert.are.same({ NUMBER, 422, "+14155550199" },
                    { res.results[1].phone_number.number, res.results[2].error.status, res.results[3].phone_number.number })
    assert.are.equal(2, #emu.numbers())
  end)

  it("sends nothing when any item is invalid, and prints text results otherwise", function()
    local code, out = run({ "numbers", "add-many", "--file", temp_file({ { number = NUMBER }, { label = "x" } }) })
    assert.are.equal(2, code)
    assert.are.same({ "[2].number" }, error_paths(cjson.decode(out)))
    assert.are.equal(0, #emu.log())
    new_carrier()
    code, out = run({ "numbers", "add-many", "--file", "-", "--output", "text" },
                    { stdin = cjson.encode({ { number = NUMBER }, { number = "+14155550199" } }) })
    assert.are.equal(0, code)
    local text = lines_of(out)
    assert.are.equal(2, #text)
    assert.is_truthy(text[2]:find("^2\tadded\t%x+%-"), text[2])
  end)
end)

describe("topcalls carriers list and get", function()
  it("lists every carrier page by page, as JSON and as an aligned table", function()
    local ids = {}
    for i = 1, 3 do ids[i] = new_carrier({ carrier_name = "Carrier " .. i }).id end
    local code, out = run({ "carriers", "list", "--page-size", "1" })
    assert.are.equal(0, code)
    local got = {}
    for i, c in ipairs(cjson.decode(out)) do got[i] = c.id end
    assert.are.same(ids, got)
    for _, uri in ipairs(get_uris()) do assert.is_truthy(uri:find("page_size=1", 1, true), uri) end
    code, out = run({ "carriers", "list", "--output", "text" })
    assert.are.equal(0, code)
    local text = lines_of(out)
    assert.are.equal(5, #text, out)
    assert.is_truthy(text[1]:find("^carrier_name +trunk_type +gateway +id "), text[1])
    assert.is_truthy(text[2]:find("^Carrier 1 +static_ip +203%.0%.113%.10:5060 +" .. ids[1]:gsub("%-", "%%-")), text[2])
  end)

  it("gets a carrier from the list, or by id when the server has that route", function()
    new_carrier({ carrier_name = "First" })
    local c = new_carrier({ carrier_name = "Second" })
    for _, by_id in ipairs({ false, true }) do
      emu.config({ carrier_get = by_id })
      local before = #get_uris()
      local code, out = run({ "carriers", "get", c.id, "--output", "text" })
      assert.are.equal(0, code)
      assert.is_truthy(out:find("\ncarrier_name\tSecond\n", 1, true), out)
      assert.is_truthy(out:find("\nid\t" .. c.id .. "\n", 1, true), out)
      assert.are.equal(by_id and 1 or 2, #get_uris() - before)   -- by id, or 404 then the list
    end
  end)

  it("exits 3 for an unknown carrier, and for deleting a carrier that has numbers", function()
    local code, _, err = run({ "carriers", "get", OTHER_UUID })
    assert.are.equal(3, code)
    assert.is_truthy(err:find("^topcalls: api: 404"), err)
    local c = new_carrier()
    new_number(NUMBER, c.voip_carrier_sid)
    local out
    code, out = run({ "carriers", "delete", c.id })
    assert.are.equal(3, code)
    local e = cjson.decode(out)
    assert.are.equal(422, e.status)
    assert.is_truthy(e.message:find("cannot delete carrier with active phone numbers", 1, true), e.message)
    assert.are.equal(1, #emu.carriers())
  end)

  -- The API never returns passwords; a server that did must still not
  -- get one printed (run() fails on any secret in the output).
  it("never prints a sensitive field a server echoes", function()
    local echoed = { id = OTHER_UUID, carrier_name = "Echo", trunk_type = "reg",
                     registration = { username = "acct1", password = REG_PASSWORD },
                     inbound_auth = { username = "in1", password = AUTH_PASSWORD } }
    local body = cjson.encode(echoed)
    for _, case in ipairs({ { "get", OTHER_UUID, body }, { "list", nil, "[" .. body .. "]" } }) do
      for _, output in ipairs({ "json", "text" }) do
        emu.faults({ status = 200, body = case[3], content_type = "application/json" })
        local argv = { "carriers", case[1], "--output", output }
        if case[2] then argv[#argv + 1] = case[2] end
        local code, out = run(argv)
        assert.are.equal(0, code, out)
        -- the rest is printed (a list's table has no registration column)
        assert.is_truthy(out:find((case[1] == "list" and output == "text") and "Echo" or "acct1", 1, true), out)
        if output == "json" then
          local got = cjson.decode(out)
          if case[1] == "list" then got = got[1] end
          assert.are.same({ username = "acct1" }, got.registration)
          assert.are.same({ username = "in1" }, got.inbound_auth)
        end
      end
    end
  end)
end)
