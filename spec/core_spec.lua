-- Pure functions of the C core: retry policy, Retry-After, classification.
local core = require "topcalls.core"

describe("retry policy", function()
  it("backs off min(0.5 * 2^n, 8) seconds times the jitter", function()
    local cases = { { 0, 1, 0.5 }, { 1, 1, 1 }, { 2, 1, 2 }, { 3, 1, 4 }, { 4, 1, 8 },
                    { 5, 1, 8 }, { 30, 1, 8 }, { 0, 0.75, 0.375 }, { 4, 0.75, 6 } }
    for _, c in ipairs(cases) do
      assert.are.equal(c[3], core.backoff(c[1], c[2]), "backoff(" .. c[1] .. ", " .. c[2] .. ")")
    end
  end)

  it("retries a retryable failure with a jittered delay in [0.75, 1] of the backoff", function()
    for attempt = 1, 3 do
      local delay, verdict = core.retry_plan(attempt, 5, true)
      local base = core.backoff(attempt - 1, 1)
      assert.are.equal("retry", verdict)
      assert.is_true(delay >= 0.75 * base and delay <= base, "delay " .. delay)
    end
  end)

  it("stops when not retryable, when retries ran out, and for a Retry-After over 60 s", function()
    assert.are.same({ nil, "not_retryable" }, { core.retry_plan(1, 2, false) })
    assert.are.same({ nil, "exhausted" }, { core.retry_plan(3, 2, true) })
    assert.are.same({ nil, "exhausted" }, { core.retry_plan(1, 0, true) })
    assert.are.same({ nil, "retry_after_too_long" }, { core.retry_plan(1, 2, true, 61) })
  end)

  it("lets a Retry-After up to 60 s lengthen the backoff, never shorten it", function()
    assert.are.same({ 60, "retry" }, { core.retry_plan(2, 2, true, 60) })
    assert.are.same({ 7, "retry" }, { core.retry_plan(1, 2, true, 7) })
    for attempt = 1, 3 do   -- "Retry-After: 0" keeps the exponential backoff as the floor
      local delay, verdict = core.retry_plan(attempt, 5, true, 0)
      assert.are.equal("retry", verdict)
      assert.is_true(delay >= 0.75 * core.backoff(attempt - 1, 1), "delay " .. delay)
    end
  end)
end)

describe("Retry-After parsing", function()
  local now = 1445412480 -- Wed, 21 Oct 2015 07:28:00 GMT
  local cases = {
    { "0", 0 }, { "5", 5 }, { " 12 ", 12 }, { "120", 120 },
    { "Wed, 21 Oct 2015 07:28:30 GMT", 30 },       -- IMF-fixdate
    { "Wednesday, 21-Oct-15 07:29:00 GMT", 60 },    -- RFC 850
    { "Wed Oct 21 07:28:10 2015", 10 },             -- asctime
    { "Wed, 21 Oct 2015 07:00:00 GMT", 0 },         -- in the past
    { "", nil }, { "soon", nil }, { "-5", nil }, { "1.5", nil }, { "5s", nil },
  }
  for _, c in ipairs(cases) do
    it(("reads %q as %s"):format(c[1], tostring(c[2])), function()
      assert.are.equal(c[2], core.retry_after(c[1], now))
    end)
  end
end)

describe("failure classification", function()
  it("retries statuses 408, 429, 500, 502, 503, 504 and no others", function()
    local retryable = { [408] = true, [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }
    for _, s in ipairs({ 200, 201, 301, 302, 400, 401, 403, 404, 408, 409, 422, 429, 500, 501, 502, 503, 504, 505 }) do
      assert.are.equal(retryable[s] == true, core.retryable(nil, s), "status " .. s)
    end
  end)

  it("retries resolve/connect/timeout/reset curl codes, never TLS verification", function()
    local cases = { [6] = true, [7] = true, [28] = true, [52] = true, [55] = true, [56] = true, [18] = true,
                    [60] = false, [77] = false, [1] = false, [3] = false, [23] = false, [63] = false }
    for code, want in pairs(cases) do
      assert.are.equal(want, core.retryable(code), "curl code " .. code)
    end
  end)
end)

describe("randomness", function()
  it("makes distinct version-4 UUIDs", function()
    local seen = {}
    for _ = 1, 200 do
      local u = core.uuid4()
      assert.is_truthy(u:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"), u)
      assert.is_nil(seen[u])
      seen[u] = true
    end
  end)
end)
