-- Fork safety, as nginx and Kamailio fork their workers: a client whose
-- connection was opened by the parent must open its own in the child,
-- and the parent's connection must survive the child (also over TLS,
-- where closing it in the child would send a close_notify on it).
-- LuaJIT's FFI can call fork(2); the other Luas skip this spec.
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"

local ok_ffi, ffi = pcall(require, "ffi")

describe("a client used across fork()", function()
  if not ok_ffi then
    pending("needs LuaJIT's FFI to fork")
    return
  end
  ffi.cdef [[
    int fork(void);
    int waitpid(int pid, int *status, int options);
    void _exit(int status);
  ]]

  before_each(function() emu.reset() end)

  -- Run fn in a forked child; returns the child's exit status.
  local function in_child(fn)
    local pid = ffi.C.fork()
    assert(pid >= 0, "fork failed")
    if pid == 0 then
      local ok, res = pcall(fn)
      ffi.C._exit(ok and res and 0 or 1)   -- _exit: no atexit, no flushing the parent's buffers
    end
    local status = ffi.new("int[1]")
    assert.are.equal(pid, ffi.C.waitpid(pid, status, 0))
    return status[0]
  end

  for _, scheme in ipairs({ "http", "https" }) do
    it("opens a fresh connection in the child and keeps the parent's (" .. scheme .. ")", function()
      local opts = scheme == "https" and { base_url = emu.tls_url, ca_file = emu.ca_file } or {}
      local c = fx.client(opts)
      assert(c.carriers.add(fx.carrier{ carrier_name = "parent before" }))
      local status = in_child(function()
        return c.carriers.add(fx.carrier{ carrier_name = "child" }) ~= nil
                 and c.carriers.add(fx.carrier{ carrier_name = "child again" }) ~= nil
      end)
      assert.are.equal(0, status)
      assert(c.carriers.add(fx.carrier{ carrier_name = "parent after" }))

      local by_name = {}
      for _, r in ipairs(fx.requests("POST")) do
        by_name[r.body:match('"carrier_name":"([^"]+)"')] = r
      end
      local before, child, again, after = by_name["parent before"], by_name["child"],
                                          by_name["child again"], by_name["parent after"]
      assert.are_not.equal(before.connection, child.connection)
      assert.are.equal(child.connection, again.connection)        -- the child keeps its own alive
      assert.are.equal(before.connection, after.connection)       -- the parent's survived, untouched
      assert.are.equal(2, tonumber(after.connection_requests))
      assert.are.equal(4, #emu.carriers())
    end)
  end
end)
