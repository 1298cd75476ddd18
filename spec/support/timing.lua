-- Margins for the timing-dependent specs, derived from what this machine
-- does right now instead of a fixed wall-clock guess: `make test` runs on
-- loaded 2-core machines (other builds, sanitizers) where one plain add can
-- take many times its quiet-machine duration.
--
--   local timing = require "spec.support.timing"
--   local rt = timing.round_trip()       -- seconds of one plain add, worst of a few
--   local t  = timing.scaled(rt, 20, 0.5, 10)   -- 20 x rt, kept within [0.5, 10]
--
-- round_trip() adds carriers through the emulator and then resets it, so
-- call it at the start of a test, before queuing faults.
local socket = require "socket"
local emu = require "spec.support.emulator"

local M = {}

M.now = socket.gettime

-- The slowest of n (default 3) sequential plain adds through a fresh client
-- of the emulator, in seconds (the first includes the connection set-up, as
-- a test's first attempt does).  Leaves the emulator reset.
function M.round_trip(n)
  local fx = require "spec.support.fixtures"
  local c = fx.client()
  local worst = 0
  for _ = 1, n or 3 do
    local t0 = M.now()
    assert(c.carriers.add(fx.carrier()))
    worst = math.max(worst, M.now() - t0)
  end
  emu.reset()
  return worst
end

-- factor * measured, clamped to [lo, hi] (either may be nil).
function M.scaled(measured, factor, lo, hi)
  local v = measured * factor
  if lo and v < lo then v = lo end
  if hi and v > hi then v = hi end
  return v
end

return M
