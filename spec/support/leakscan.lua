-- Keeps every error string a spec sees, for tools/secret-scan.
--
--   local leakscan = require "spec.support.leakscan"
--   leakscan.record(c.carriers.add(params))   -- any values: all is written
--   local text = leakscan.dump(v)             -- v as text, nested tables too
--
-- Each busted process appends to its own file build/leak-scan/errors-*.log
-- (TOPCALLS_LEAK_SCAN_DIR overrides the directory).  tools/secret-scan
-- greps those files, with the test output and the emulator's logs, for the
-- test API key; a clean scan deletes them.  Works on Lua 5.1-5.4, LuaJIT.

local M = {}

local DIR = os.getenv("TOPCALLS_LEAK_SCAN_DIR") or "build/leak-scan"

-- Everything reachable from v as text: keys, values, metatables (raw
-- access only, so a trap in a test table never runs here).
function M.dump(v, seen, out)
  out = out or {}
  seen = seen or {}
  if type(v) ~= "table" then
    if type(v) == "string" then out[#out + 1] = v
    else out[#out + 1] = type(v) == "number" and tostring(v) or type(v) end
    return out
  end
  if seen[v] then return out end
  seen[v] = true
  for k, x in next, v do
    M.dump(k, seen, out)
    out[#out + 1] = "="
    M.dump(x, seen, out)
    out[#out + 1] = " "
  end
  local mt = debug.getmetatable(v)
  if type(mt) == "table" then
    local ts = rawget(mt, "__tostring")
    -- an error table's __tostring is the module's: exactly what a user prints
    if ts and rawget(mt, "__name") == "topcalls.error" then out[#out + 1] = tostring(v) end
  end
  return out
end

local file, failed

local function open_file()
  if file or failed then return file end
  local ok, lfs = pcall(require, "lfs")
  if ok then
    local parent = DIR:match("^(.*)/[^/]+$")
    if parent then lfs.mkdir(parent) end
    lfs.mkdir(DIR)
  else
    os.execute("mkdir -p '" .. DIR:gsub("'", "'\\''") .. "'")
  end
  local r = io.open("/dev/urandom", "rb")
  local tag = r and r:read(6):gsub(".", function(c) return ("%02x"):format(c:byte()) end) or tostring(os.time())
  if r then r:close() end
  local lua = (rawget(_G, "jit") and jit.version or _VERSION):gsub("[^%w.]+", "")
  file = io.open(("%s/errors-%s-%s.log"):format(DIR, lua, tag), "ab")
  failed = file == nil
  return file
end

-- Write every argument (nils included) as one record.
function M.record(...)
  local f = open_file()
  if not f then return ... end
  local out = {}
  for i = 1, select("#", ...) do
    M.dump((select(i, ...)), {}, out)
    out[#out + 1] = "\t"
  end
  out[#out + 1] = "\n"
  f:write(table.concat(out))
  f:flush()
  return ...
end

return M
