-- core.check("e164", s): E.164 ^\+[1-9][0-9]{1,14}$ that begins with an
-- assigned country calling code (src/country_codes.h, from libphonenumber's
-- data). tools/check-e164 cross-checks thousands more against phonenumbers.
local core = require "topcalls.core"

local function e164(s) return core.check("e164", s) end

describe("core.check e164", function()
  local cases = {
    -- well formed, assigned code
    { "+14155550100", true },            -- 1: NANP
    { "+12", true },                     -- shortest: two digits
    { "+442071838750", true },           -- 44
    { "+4915123456789", true },          -- 49
    { "+79161234567", true },            -- 7
    { "+2125221234567", true },          -- 212
    { "+380441234567", true },           -- 380
    { "+998901234567", true },           -- 998, the highest code
    { "+123456789012345", true },        -- 15 digits, the most
    -- non-geographic codes (region 001) count: libphonenumber accepts them
    { "+80012345678", true },            -- 800 freephone
    { "+80812345678", true },            -- 808 shared cost
    { "+870773111632", true },           -- 870 Inmarsat
    { "+878101234567", true },           -- 878 UPT
    { "+881612345678", true },           -- 881 GMSS
    { "+882345678901", true },           -- 882 international networks
    { "+883510012345", true },           -- 883
    { "+888123456789", true },           -- 888 OCHA
    { "+979123456789", true },           -- 979 premium rate
    -- well formed, no assigned code
    { "+999123456789", false },          -- 999 reserved
    { "+80123456789", false },           -- 801 not assigned (800, 808 are)
    { "+8012", false },
    { "+28123456789", false },           -- 28x: none
    { "+210123456789", false },          -- 21x: only 211-213, 216, 218
    { "+21", false },                    -- too short to hold a 21x code
    { "+691234567", true },              -- 691 Micronesia
    { "+693123456", false },             -- 693 not assigned
    { "+85", false },
    -- malformed
    { "", false },
    { "+", false },
    { "+1", false },                     -- too short: one digit
    { "+1234567890123456", false },      -- 16 digits
    { "+0123456789", false },            -- leading zero
    { "+01", false },
    { "14155550100", false },            -- no plus
    { "004414155550100", false },        -- international prefix, no plus
    { "++14155550100", false },
    { "+1 415 555 0100", false },        -- spaces
    { "+1-415-555-0100", false },        -- dashes
    { "+1(415)5550100", false },
    { "+1.415.555.0100", false },
    { "+1415555010O", false },           -- letter O
    { "+1415CALLNOW", false },
    { "+14155550100\0", false },         -- embedded NUL
    { "+1415\0" .. "5550100", false },
    { "+14155550100\n", false },         -- a trailing newline is not the end
    { " +14155550100", false },
    { "+14155550100 ", false },
    { "+１4155550100", false },          -- full-width digit (UTF-8)
    { "+٤155550100", false },            -- Arabic-Indic digit
    { "sip:+14155550100", false },
    { "tel:+14155550100", false },
  }
  for _, c in ipairs(cases) do
    it(("%q -> %s"):format(c[1], tostring(c[2])), function()
      assert.are.equal(c[2], e164(c[1]))
    end)
  end

  it("accepts every length from 2 to 15 digits and no other", function()
    for len = 1, 17 do
      local s = "+1" .. ("5"):rep(len - 1)
      assert.are.equal(len >= 2 and len <= 15, e164(s), s)
    end
  end)

  it("knows codes 1 and 7 and every other code by its 1-3 digit prefix", function()
    -- at least one code for each leading digit 1-9, of each length
    local assigned = { "1", "7", "20", "30", "40", "51", "60", "81", "90", "212", "350", "420", "500",
                       "590", "670", "850", "960" }
    for _, code in ipairs(assigned) do
      local s = "+" .. code .. "12345678"
      assert.is_true(e164(s), s)
    end
  end)

  it("raises on a non-string argument like the other checks", function()
    assert.has_error(function() core.check("e164", {}) end)
    assert.has_error(function() core.check("e164") end)
  end)
end)
