-- topcalls.carriers: the carriers resource, declared. Its operations are
-- topcalls.resource's; its rules are the "carrier" schema in src/schema.c.
-- SPDX-License-Identifier: MIT

return {
  name = "carriers",
  noun = "carrier",
  title = "SIP carriers (Bring Your Own Carrier)",
  path = "/v1/phone-numbers/carriers",
  schema = "carrier",
  record_name = "topcalls.carrier",
  result_field = "carrier",                      -- add_many's results[i].carrier
  id_name = "carrier_id",
  id_what = "a carrier record id (a UUID)",
  get_from_list = true,                          -- GET .../carriers/{id} is not documented
  columns = {                                    -- what a REPL shows: never a secret
    { "carrier_name" },
    { "trunk_type" },
    { "gateway", function(c)
        local g = c.sip_gateway
        if type(g) ~= "table" or type(g.ipv4) ~= "string" then return nil end
        return g.ipv4 .. (type(g.port) == "number" and (":" .. string.format("%.14g", g.port)) or "")
      end },
    { "id" },
    { "voip_carrier_sid" },
  },
}
