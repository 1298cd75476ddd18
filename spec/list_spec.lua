-- list / each of carriers and phone numbers across pages, in every page
-- shape the client accepts (the emulator's list_shape: paged, cursor,
-- array), and carriers.get by id or from the list.
local topcalls = require "topcalls"
local emu = require "spec.support.emulator"
local fx = require "spec.support.fixtures"

local MISSING_ID = "00000000-0000-4000-8000-000000000000"

before_each(function() emu.reset() end)

-- The GET requests the emulator saw, by uri.
local function get_uris()
  local out = {}
  for i, r in ipairs(fx.requests("GET")) do out[i] = r.uri end
  return out
end

-- Each resource: how to make `n` records on client c, and the field that
-- names one.
local RESOURCES = {
  { name = "carriers", path = "/v1/phone-numbers/carriers", field = "carrier_name",
    make = function(c, n)
      local names = {}
      for i = 1, n do
        names[i] = ("Carrier %02d"):format(i)
        assert(c.carriers.add(fx.carrier{ carrier_name = names[i] }))
      end
      return names
    end },
  { name = "phone_numbers", path = "/v1/phone-numbers", field = "number",
    make = function(c, n)
      local numbers = {}
      if n > 0 then assert(c.carriers.add(fx.carrier())) end   -- the default carrier
      for i = 1, n do
        numbers[i] = ("+1415555%04d"):format(200 + i)
        assert(c.phone_numbers.add{ number = numbers[i] })
      end
      return numbers
    end },
}

-- The uris a walk with page_size `size` over `n` records sends, per shape.
local function expected_uris(path, shape, size, n)
  if shape == "array" then return { path .. "?page_size=" .. size } end
  local pages = math.max(1, math.ceil(n / size))
  local uris = { path .. "?page_size=" .. size }
  for p = 2, pages do
    uris[p] = shape == "paged" and (path .. "?page_size=" .. size .. "&page=" .. p) or true
  end
  return uris, pages
end

local function names_of(list, field)
  local out = {}
  for i, r in ipairs(list) do out[i] = r[field] end
  return out
end

for _, R in ipairs(RESOURCES) do
  for _, shape in ipairs({ "paged", "cursor", "array" }) do
    describe(R.name .. " list/each, " .. shape .. " pages", function()
      before_each(function() emu.config{ list_shape = shape } end)

      it("list returns every record in order; page_size 1 fetches one page per record", function()
        local c = fx.client()
        local want = R.make(c, 3)   -- POSTs only: every GET below is the walk's
        local list = assert(c[R.name].list{ page_size = 1 })
        assert.are.same(want, names_of(list, R.field))
        assert.are.equal("topcalls.list", getmetatable(list).__name)
        local uris = get_uris()
        local expect = expected_uris(R.path, shape, 1, 3)
        assert.are.equal(#expect, #uris)
        for i, u in ipairs(expect) do
          if u == true then   -- cursor: opaque, URL-encoded
            assert.is_truthy(uris[i]:find("^" .. R.path:gsub("%-", "%%-") .. "%?page_size=1&cursor=[%w%%%-%._~]+$"), uris[i])
            assert.is_truthy(uris[i]:find("%3D", 1, true), uris[i])   -- base64 '=' escaped
          else
            assert.are.equal(u, uris[i])
          end
        end
      end)

      it("each fetches page by page as the loop goes", function()
        local c = fx.client()
        local want = R.make(c, 3)
        local before = #fx.requests("GET")
        local seen, gets = {}, {}
        for rec in c[R.name].each{ page_size = 1 } do
          seen[#seen + 1] = rec[R.field]
          gets[#gets + 1] = #fx.requests("GET") - before
        end
        assert.are.same(want, seen)
        if shape == "array" then
          assert.are.same({ 1, 1, 1 }, gets)
        else
          -- the page of record i is fetched when the loop reaches it
          assert.are.same({ 1, 2, 3 }, gets)
          assert.are.equal(3, #fx.requests("GET") - before)
        end
      end)

      it("an empty account: list is an empty list, each yields nothing", function()
        local c = fx.client()
        local list = assert(c[R.name].list())
        assert.are.equal(0, #list)
        assert.are.same({}, list)
        assert.are.equal("topcalls.list", getmetatable(list).__name)
        assert.are.equal("(no " .. R.name:gsub("_", " ") .. ")", tostring(list))
        local n = 0
        for _ in c[R.name].each{ page_size = 1 } do n = n + 1 end
        assert.are.equal(0, n)
        assert.are.same({ R.path .. "?page_size=100", R.path .. "?page_size=1" }, get_uris())
      end)

      it("opts.limit stops the walk early", function()
        local c = fx.client()
        local want = R.make(c, 3)
        local before = #fx.requests("GET")
        local list = assert(c[R.name].list{ limit = 2, page_size = 1 })
        assert.are.same({ want[1], want[2] }, names_of(list, R.field))
        assert.are.equal(shape == "array" and 1 or 2, #fx.requests("GET") - before)
        local big = assert(c[R.name].list{ limit = 2 })
        assert.are.same({ want[1], want[2] }, names_of(big, R.field))
        local all = assert(c[R.name].list{ limit = 10 })
        assert.are.same(want, names_of(all, R.field))
      end)

      it("follows the server's own page size when it caps ours", function()
        local c = fx.client()
        local want = R.make(c, 5)
        emu.config{ list_max_page_size = 2 }
        local before = #fx.requests("GET")
        local list = assert(c[R.name].list{ page_size = 50 })
        assert.are.same(want, names_of(list, R.field))
        assert.are.equal(shape == "array" and 1 or 3, #fx.requests("GET") - before)
      end)

      it("a failure on the 2nd page: each yields false, msg, err once then stops; list returns nil", function()
        local c = fx.client()
        local want = R.make(c, 3)
        if shape == "array" then return end   -- one request: no 2nd page
        emu.faults({ {}, { status = 400 } })
        local got = {}
        for rec, msg, err in c[R.name].each{ page_size = 1 } do
          got[#got + 1] = { rec and rec[R.field] or rec, msg, err }
        end
        assert.are.equal(2, #got)
        assert.are.equal(want[1], got[1][1])
        assert.are.equal(false, got[2][1])
        assert.are.equal("api", got[2][3].kind)
        assert.are.equal(400, got[2][3].status)
        assert.are.equal(got[2][2], got[2][3].message)
        emu.faults({ {}, { status = 400 } })
        local list, msg, err = c[R.name].list{ page_size = 1 }
        assert.is_nil(list)
        assert.are.equal("api", err.kind)
        assert.are.equal(400, err.status)
        assert.is_truthy(msg:find("^topcalls: api: 400 "), msg)
      end)

      it("a retryable failure on a page is retried and the walk goes on", function()
        local c = fx.client()
        local want = R.make(c, 2)
        local before = #fx.requests("GET")
        if shape ~= "array" then emu.faults({ {}, { status = 503, retry_after = "0" } }) end
        local list = assert(c[R.name].list{ page_size = 1 })
        assert.are.same(want, names_of(list, R.field))
        local gets = fx.requests("GET")
        for i = before + 1, #gets do assert.is_nil(gets[i].headers["idempotency-key"]) end
        if shape ~= "array" then
          assert.are.same({ 200, 503, 200 }, { gets[before + 1].status, gets[before + 2].status, gets[before + 3].status })
          assert.are.equal(gets[before + 2].uri, gets[before + 3].uri)
        end
      end)
    end)
  end

  describe(R.name .. " list/each options", function()
    it("bad options are a validation error before any request", function()
      local c = fx.client()
      local list, msg, err = c[R.name].list{ page_size = 0, limit = 1.5, pagesize = 3, timeout = "x" }
      assert.is_nil(list)
      assert.are.equal("validation", err.kind)
      local by_path, paths = {}, {}
      for i, e in ipairs(err.errors) do by_path[e.path] = e.code; paths[i] = e.path end
      assert.are.same({ page_size = "range", limit = "type", pagesize = "unknown_field", timeout = "type" }, by_path)
      assert.are.same({ "limit", "page_size", "pagesize", "timeout" }, paths)
      assert.is_truthy(msg:find("did you mean 'page_size'", 1, true), msg)
      local n, out = 0, {}
      for rec, emsg, eerr in c[R.name].each{ page_size = 1001 } do
        n = n + 1
        out = { rec, emsg, eerr }
      end
      assert.are.equal(1, n)
      assert.are.equal(false, out[1])
      assert.are.equal("validation", out[3].kind)
      assert.are.equal("page_size", out[3].errors[1].path)
      assert.are.equal("range", out[3].errors[1].code)
      assert.are.same({}, emu.log())
    end)

    it("max_retries and timeout reach every page's GET", function()
      local c = fx.client()
      R.make(c, 2)
      local before = #fx.requests("GET")
      emu.faults({ {}, { status = 503, retry_after = "0" } })
      -- a timeout other than the client's (30 s), not a tight one: a loaded
      -- machine can take seconds over a page
      local list, _, err = c[R.name].list{ page_size = 1, max_retries = 0, timeout = 20 }
      assert.is_nil(list)
      assert.are.equal(503, err.status)
      assert.are.equal(1, err.attempts)
      assert.are.equal(2, #fx.requests("GET") - before)
    end)

    it("a 2xx page that is not a list is a decode error", function()
      local c = fx.client()
      for _, body in ipairs({ '{"items":[]}', '{"data":"none"}', 'not json' }) do
        emu.faults({ { status = 200, body = body, content_type = "application/json" } })
        local list, msg, err = c[R.name].list()
        assert.is_nil(list)
        assert.are.equal("decode", err.kind, body)
        assert.are.equal(200, err.status)
        assert.is_truthy(msg:find("^topcalls: decode: list response"), msg)
      end
      emu.faults({ { status = 200, body = "[]", content_type = "application/json" } })
      assert.are.same({}, assert(c[R.name].list()))
    end)

    it("raises for a non-table opts", function()
      local c = fx.client()
      assert.has_error(function() c[R.name].list(5) end, "bad argument #1 to 'list' (table expected, got number)")
      assert.has_error(function() c[R.name].each("x") end, "bad argument #1 to 'each' (table expected, got string)")
    end)

    it("the default client's each yields a config error once without a key", function()
      if os.getenv("TOPCALLS_API_KEY") then return end
      local c = assert(topcalls.new{ base_url = emu.url })
      local n, out = 0, {}
      for rec, msg, err in c[R.name].each() do n = n + 1; out = { rec, msg, err } end
      assert.are.equal(1, n)
      assert.are.equal(false, out[1])
      assert.are.equal("config", out[3].kind)
      assert.are.same({}, emu.log())
    end)
  end)
end

describe("carriers.get", function()
  -- Both ways find the same record: by its own route when the server has
  -- it, else (the default, a 404) by walking the list.
  for _, case in ipairs({
    { "with the by-id route (carrier_get = true): one GET of .../carriers/{id}", true, { 200 } },
    { "without it (the default): the 404 falls back to walking the list", false, { 404, 200 } },
  }) do
    it(case[1], function()
      if case[2] then emu.config{ carrier_get = true } end
      local c = fx.client()
      assert(c.carriers.add(fx.carrier{ carrier_name = "First" }))
      local second = assert(c.carriers.add(fx.carrier{ carrier_name = "Second" }))
      local got = assert(c.carriers.get(second.id))
      assert.are.equal(second.id, got.id)
      assert.are.equal("Second", got.carrier_name)
      assert.are.equal("topcalls.carrier", getmetatable(got).__name)
      local want = { "/v1/phone-numbers/carriers/" .. second.id }
      if not case[2] then want[2] = "/v1/phone-numbers/carriers?page_size=100" end
      assert.are.same(want, get_uris())
      local statuses = {}
      for i, r in ipairs(fx.requests("GET")) do
        statuses[i] = r.status
        assert.is_nil(r.headers["idempotency-key"])
      end
      assert.are.same(case[3], statuses)
    end)
  end

  it("falls back to the list on a 405 too", function()
    emu.config{ carrier_get = true }
    local c = fx.client()
    local carrier = assert(c.carriers.add(fx.carrier()))
    emu.faults({ { status = 405 } })
    local got = assert(c.carriers.get(carrier.id))
    assert.are.equal(carrier.id, got.id)
    assert.are.same({ "/v1/phone-numbers/carriers/" .. carrier.id, "/v1/phone-numbers/carriers?page_size=100" },
                    get_uris())
  end)

  it("passes its call options to the fallback's GETs", function()
    local c = fx.client()
    local carrier = assert(c.carriers.add(fx.carrier()))
    emu.faults({ {}, { status = 503, retry_after = "0" } })
    local got, _, err = c.carriers.get(carrier.id, { max_retries = 0 })
    assert.is_nil(got)
    assert.are.equal(503, err.status)
    assert.are.equal(1, err.attempts)
    assert.are.equal(true, err.retryable)
    assert.are.equal(2, #get_uris())
  end)

  it("falls back across pages (cursor shape, server pages of 1)", function()
    emu.config{ list_shape = "cursor", list_max_page_size = 1 }
    local c = fx.client()
    local ids = {}
    for i = 1, 3 do ids[i] = assert(c.carriers.add(fx.carrier{ carrier_name = "C" .. i })).id end
    local got = assert(c.carriers.get(ids[2]))
    assert.are.equal("C2", got.carrier_name)
    assert.are.equal(3, #get_uris())   -- the by-id 404, then pages 1 and 2: stops when found
  end)

  it("an unknown id is the api 404, with or without the by-id route", function()
    local c = fx.client()
    assert(c.carriers.add(fx.carrier()))
    for _, by_id in ipairs({ false, true }) do
      emu.config{ carrier_get = by_id }
      local got, msg, err = c.carriers.get(MISSING_ID)
      assert.is_nil(got)
      assert.are.equal("api", err.kind)
      assert.are.equal(404, err.status)
      assert.are.equal(1, err.attempts)
      assert.is_truthy(msg:find("^topcalls: api: 404 "), msg)
    end
  end)

  it("a failing list during the fallback is reported", function()
    local c = fx.client()
    local carrier = assert(c.carriers.add(fx.carrier()))
    emu.faults({ {}, { status = 400 } })
    local got, _, err = c.carriers.get(carrier.id)
    assert.is_nil(got)
    assert.are.equal("api", err.kind)
    assert.are.equal(400, err.status)
  end)

  it("is retried like DELETE", function()
    emu.config{ carrier_get = true }
    local c = fx.client()
    local carrier = assert(c.carriers.add(fx.carrier()))
    emu.faults({ { status = 503, retry_after = "0" } })
    local got = assert(c.carriers.get(carrier.id))
    assert.are.equal(carrier.id, got.id)
    local statuses = {}
    for i, r in ipairs(fx.requests("GET")) do
      statuses[i] = r.status
      assert.is_nil(r.headers["idempotency-key"])
    end
    assert.are.same({ 503, 200 }, statuses)
  end)

  it("refuses a malformed id before any request", function()
    local got, _, err = fx.client().carriers.get("voip-carrier")
    assert.is_nil(got)
    assert.are.equal("validation", err.kind)
    assert.are.equal("carrier_id", err.errors[1].path)
    assert.are.equal("format", err.errors[1].code)
    assert.are.same({}, emu.log())
  end)
end)
