-- bench/fleet.lua: plan + apply of 200 carriers x 5 numbers against the
-- emulator, as a ratio to the same number of sequential `add` calls (200
-- carriers.add + 1000 phone_numbers.add) measured in the same run,
-- alternated (A B A B ...), medians reported.
--
--   make build LUA=5.4 && eval "$(bash tools/env.sh 5.4)"
--   tools/emulator/emulator run -- lua5.4 bench/fleet.lua
--
-- Environment: FLEET_CARRIERS (200), FLEET_NUMBERS (5 per carrier),
-- FLEET_ROUNDS (3), FLEET_LATENCY (seconds the emulator waits per
-- request, 0.01: a nearby API rather than loopback), FLEET_CONCURRENCY (8).
-- SPDX-License-Identifier: MIT

package.path = "./?.lua;" .. package.path
local topcalls = require "topcalls"
local core = require "topcalls.core"
local emu = require "spec.support.emulator"

local N = tonumber(os.getenv("FLEET_CARRIERS")) or 200
local K = tonumber(os.getenv("FLEET_NUMBERS")) or 5
local ROUNDS = tonumber(os.getenv("FLEET_ROUNDS")) or 3
local LATENCY = tonumber(os.getenv("FLEET_LATENCY")) or 0.01
local CONCURRENCY = tonumber(os.getenv("FLEET_CONCURRENCY")) or 8
local KEY = "tc_test_bench_fleet0123"

local function desired()
  local carriers = {}
  for i = 1, N do
    local numbers = {}
    for j = 1, K do numbers[j] = ("+1415%03d%04d"):format(100 + i, j) end
    carriers[i] = { carrier_name = "Trunk " .. i,
                    sip_gateway = { ipv4 = ("203.0.%d.%d"):format(113 + math.floor(i / 250), i % 250 + 1) },
                    numbers = numbers }
  end
  return { carriers = carriers }
end

local function fresh()
  emu.reset()
  emu.config{ latency = LATENCY }
  return assert(topcalls.new{ api_key = KEY, base_url = emu.url })
end

-- The same work as the fleet's creates, one `add` at a time.
local function sequential(d)
  local c = fresh()
  local t0 = core.now()
  for _, carrier in ipairs(d.carriers) do
    local params = {}
    for k, v in pairs(carrier) do if k ~= "numbers" then params[k] = v end end
    local rec = assert(c.carriers.add(params))
    for _, n in ipairs(carrier.numbers) do
      assert(c.phone_numbers.add{ number = n, voip_carrier_sid = rec.voip_carrier_sid })
    end
  end
  return core.now() - t0
end

local function fleet(d)
  local c = fresh()
  local t0 = core.now()
  local plan = assert(c.fleet.plan(d))
  local t_plan = core.now() - t0
  local result = c.fleet.apply(plan, { concurrency = CONCURRENCY })
  local total = core.now() - t0
  assert(result.ok, result.failed[1] and result.failed[1].message)
  assert(#result.done == N * (K + 1))
  local t1 = core.now()
  local again = assert(c.fleet.plan(d))
  local t_again = core.now() - t1
  assert(again.changes == 0, "second plan not empty")
  assert(#emu.carriers() == N and #emu.numbers() == N * K, "wrong counts")
  return total, t_plan, t_again
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) / 2] or (t[n / 2] + t[n / 2 + 1]) / 2
end

local d = desired()
local seq, fl, pl, ag = {}, {}, {}, {}
for r = 1, ROUNDS do
  seq[r] = sequential(d)
  fl[r], pl[r], ag[r] = fleet(d)
  io.stderr:write(("round %d: sequential %.2f s, fleet plan+apply %.2f s\n"):format(r, seq[r], fl[r]))
end
local s, f = median(seq), median(fl)
print(("fleet: %d carriers x %d numbers (%d creates), emulator latency %.3f s, concurrency %d, %s, %d rounds")
      :format(N, K, N * (K + 1), LATENCY, CONCURRENCY, rawget(_G, "jit") and jit.version or _VERSION, ROUNDS))
print(("  sequential add calls     %8.2f s"):format(s))
print(("  fleet plan + apply       %8.2f s   ratio %.2f (plan on the empty account %.3f s)"):format(f, f / s, median(pl)))
print(("  second plan (no changes) %8.3f s"):format(median(ag)))
