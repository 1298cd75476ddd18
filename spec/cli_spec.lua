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

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function spit(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

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

before_each(function() emu.reset() end)
after_each(function()
  for _, p in ipairs(temp_files) do os.remove(p) end
  temp_files = {}
end)

describe("topcalls --help", function()
  it("documents every command with examples and exits 0", function()
    for _, cmd in ipairs({ {}, { "carriers" }, { "carriers", "add" }, { "carriers", "validate" },
                           { "carriers", "delete" }, { "carriers", "add-many" } }) do
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
    local paths = {}
    for _, line in ipairs(lines_of(out)) do
      local path, c = line:match("^" .. file:gsub("%p", "%%%0") .. ": (%S+): .* %(([%w_]+)%)$")
      paths[#paths + 1] = path .. " " .. c
    end
    table.sort(paths)
    assert.are.same({ "[1].carrier_name length", "[2].sip_gateway.ipv4 format",
                      "[2].sip_gateway.prot unknown_field" }, paths)
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
