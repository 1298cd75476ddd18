-- topcalls.phone_numbers: the phone numbers resource, declared. Its
-- operations are topcalls.resource's (which derives the rest of the
-- descriptor from `noun`); its rules are the "phone_number" schema in
-- src/schema.c.
-- SPDX-License-Identifier: MIT

return {
  name = "phone_numbers", noun = "phone_number", schema = "phone_number",
  title = "phone numbers, routed through a carrier",
  path = "/v1/phone-numbers",
  columns = { { "number" }, { "label" }, { "status" }, { "carrier_name" }, { "id" }, { "voip_carrier_sid" } },
}
