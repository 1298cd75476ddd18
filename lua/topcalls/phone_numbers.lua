-- topcalls.phone_numbers: the phone numbers resource, declared. Its
-- operations are topcalls.resource's; its rules are the "phone_number"
-- schema in src/schema.c.
-- SPDX-License-Identifier: MIT

return {
  name = "phone_numbers",
  noun = "phone_number",
  title = "phone numbers, routed through a carrier",
  path = "/v1/phone-numbers",
  schema = "phone_number",
  record_name = "topcalls.phone_number",
  result_field = "phone_number",                 -- add_many's results[i].phone_number
  id_name = "phone_number_id",
  id_what = "a phone number record id (a UUID)",
  get_from_list = false,                         -- GET /v1/phone-numbers/{id} is documented
  columns = {
    { "number" },
    { "label" },
    { "status" },
    { "carrier_name" },
    { "id" },
    { "voip_carrier_sid" },
  },
}
