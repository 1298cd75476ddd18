-- examples/add_carrier.lua - add a static-IP carrier and print it.
-- Reads TOPCALLS_API_KEY (and TOPCALLS_BASE_URL) from the environment:
--   TOPCALLS_API_KEY=tc_live_... lua examples/add_carrier.lua
local topcalls = require "topcalls"

local carrier, msg, err = topcalls.carriers.add{
  carrier_name = "My VoIP Provider",
  trunk_type   = "static_ip",
  sip_gateway  = { ipv4 = "203.0.113.10", port = 5060, inbound = true, outbound = true },
}
if not carrier then
  io.stderr:write(msg, "\n")
  for _, e in ipairs(err.errors) do
    io.stderr:write("  ", e.path, ": ", e.message, " (", e.code, ")\n")
  end
  os.exit(1)
end

print("created carrier " .. carrier.carrier_name)
local fields = {}
for k in pairs(carrier) do fields[#fields + 1] = k end
table.sort(fields)
for _, k in ipairs(fields) do
  local v = carrier[k]
  if type(v) ~= "table" then print(string.format("  %-17s %s", k, tostring(v))) end
end
print("use voip_carrier_sid " .. carrier.voip_carrier_sid .. " to provision phone numbers")
