-- topcalls.carriers: the carriers resource, declared. Its operations are
-- topcalls.resource's (which derives the rest of the descriptor from
-- `noun`); its rules are the "carrier" schema in src/schema.c.
-- SPDX-License-Identifier: MIT

return {
  name = "carriers", noun = "carrier", schema = "carrier",
  title = "SIP carriers (Bring Your Own Carrier)",
  path = "/v1/phone-numbers/carriers",
  get_from_list = true,           -- GET .../carriers/{id} is not documented: fall back to the list
  columns = {                     -- what a REPL shows: never a secret
    { "carrier_name" }, { "trunk_type" },
    { "gateway", function(c)
        local g = c.sip_gateway
        if type(g) ~= "table" or type(g.ipv4) ~= "string" then return nil end
        return g.ipv4 .. (type(g.port) == "number" and (":" .. string.format("%.14g", g.port)) or "")
      end },
    { "id" }, { "voip_carrier_sid" },
  },
}
