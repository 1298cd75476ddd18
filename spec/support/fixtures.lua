-- Shared fixtures for the specs that talk to the emulator.
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"

local _M = {}

-- A distinctive key: the secret-leak specs search every output for it.
_M.API_KEY = "tc_test_S3cr3tK3yNeverPrinted0123456789"

-- The request secrets of spec/secrets_spec.lua (its hostile server echoes
-- them back); tools/secret-scan looks for their "Pw5ecret..." middle too.
-- '"', '/' and '\' make their JSON-escaped forms differ from the raw ones.
_M.REG_PASSWORD = 'reg-Pw5ecretReg/"q\\z'
_M.AUTH_PASSWORD = "auth-Pw5ecretAuth'$ zz"

-- A valid static-IP carrier; a fresh copy each call.
function _M.carrier(overrides)
  local p = {
    carrier_name = "My VoIP Provider",
    sip_gateway = { ipv4 = "203.0.113.10", port = 5060, inbound = true, outbound = true },
  }
  for k, v in pairs(overrides or {}) do p[k] = v end
  return p
end

-- A client of the emulator (plain http on loopback) with the test key.
-- The timeouts are the library's defaults: ceilings for a broken run, not
-- margins (a loaded machine can stall a loopback request for seconds); a
-- case about timeouts passes its own, derived from what it measures.
function _M.client(opts)
  local o = { api_key = _M.API_KEY, base_url = emu.url, timeout = 30, connect_timeout = 10 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(topcalls.new(o))
end

-- Log entries for API requests of the given method (all when nil).
function _M.requests(method)
  local out = {}
  for _, r in ipairs(emu.log()) do
    if method == nil or r.method == method then out[#out + 1] = r end
  end
  return out
end

-- A whole file's bytes, and writing them.
function _M.slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

function _M.spit(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

return _M
