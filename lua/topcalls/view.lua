-- topcalls.view: how results read in a REPL. A record (a carrier, a phone
-- number) prints as one line with its name or number and its ids; a list
-- as an aligned table; help() describes resources and their fields from
-- the schema the validator uses, so it cannot drift. Metatables only add
-- __name and __tostring: cjson still encodes the tables as plain JSON, and
-- no secret is ever shown (columns are declared, never "every field").
-- SPDX-License-Identifier: MIT

local core = require "topcalls.core"
local json = require "topcalls.json"

local type, tostring, ipairs, pairs, setmetatable, format, rep, concat =
      type, tostring, ipairs, pairs, setmetatable, string.format, string.rep, table.concat
local gsub, find, max = string.gsub, string.find, math.max

local _M = {}

---------------------------------------------------------------------------
-- Escaping: the one function every text rendering (REPL views, the
-- fleet plan, the CLI's text output) and the fleet export use for
-- strings that came from a server or a file. A server string must not
-- clear the screen, retitle the terminal, forge an output line or split a
-- "path<TAB>value" line: every C0 control byte, DEL, and the UTF-8 form
-- of a C1 control (U+0080-U+009F, e.g. CSI) is written as an escape:
-- \n \r \t by name, others as \ddd (always three digits, so a digit
-- that follows cannot join it). Valid Lua string escapes on 5.1-5.4 and
-- LuaJIT, so the quoted form reads back as the exact same bytes.

local NAMED = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function escape_byte(c) return NAMED[c] or format("\\%03d", c:byte()) end
local function escape_c1(c) return format("\\%03d\\%03d", c:byte(1, 2)) end

--- s with its control characters escaped, for display (backslashes and
-- quotes as they are). Non-strings go through tostring first.
function _M.printable(s)
  s = gsub(tostring(s), "[%c]", escape_byte)   -- %c: bytes 0-31 and 127
  return (gsub(s, "\194[\128-\159]", escape_c1))
end

--- s as a double-quoted Lua string literal that reads back as s exactly
-- and holds no control byte (unlike %q, which on 5.1 leaves them raw and
-- everywhere writes a newline as a backslash-newline).
function _M.quote(s)
  s = gsub(tostring(s), '[\\"]', "\\%0")
  return '"' .. _M.printable(s) .. '"'
end

-- One cell: nil and JSON null as "-", integral floats (cjson decodes
-- every number as a float on 5.3+) without ".0", control characters
-- escaped so a cell stays on one line and cannot drive the terminal.
local function cell(v)
  if v == nil or v == json.null then return "-" end
  if type(v) == "number" then return format("%.14g", v) end
  if type(v) == "table" then return "{...}" end
  return _M.printable(v)
end

-- The value of column `col` ({ name [, function(record)] }) of a
-- record, as it is and as a cell.
local function column_raw(col, record)
  if col[2] then return col[2](record) end
  return record[col[1]]
end
local function column_value(col, record) return cell(column_raw(col, record)) end

-- A value quoted: a string from its own bytes (not its cell, whose
-- escapes would be escaped again), anything else from its cell.
local function quoted_cell(v)
  return _M.quote(type(v) == "string" and v or cell(v))
end

local record_mts, list_mts = {}, {}

-- The metatable of desc's records: __name, and a one-line __tostring:
-- `carrier "Acme" trunk_type=static_ip gateway=203.0.113.10:5060 id=...`.
local function record_mt(desc)
  local mt = record_mts[desc]
  if mt then return mt end
  mt = {
    __name = desc.record_name,
    __tostring = function(r)
      local cols = desc.columns
      local parts = { desc.noun .. " " .. quoted_cell(column_raw(cols[1], r)) }
      for i = 2, #cols do
        local raw = column_raw(cols[i], r)
        local v = cell(raw)
        parts[#parts + 1] = cols[i][1] .. "=" .. (find(v, '[%s"\\]') and quoted_cell(raw) or v)
      end
      return concat(parts, " ")
    end,
  }
  record_mts[desc] = mt
  return mt
end

--- Give a decoded record its REPL face. Returns t.
function _M.record(desc, t)
  if type(t) ~= "table" then return t end
  return setmetatable(t, record_mt(desc))
end

-- The length of a cell in characters (UTF-8 code points, not bytes), so
-- that "Café" pads like "Cafe": count the bytes that start a character.
local function chars(s)
  local _, continuation = gsub(s, "[\128-\191]", "")
  return #s - continuation
end

-- Rows as text, columns padded to their widest cell.
local function table_text(header, rows)
  local widths = {}
  for c, h in ipairs(header) do widths[c] = chars(h) end
  for _, row in ipairs(rows) do
    for c, v in ipairs(row) do widths[c] = max(widths[c], chars(v)) end
  end
  local lines = {}
  local function line(row)
    local cells = {}
    for c, v in ipairs(row) do
      cells[c] = c < #row and v .. rep(" ", widths[c] - chars(v)) or v
    end
    lines[#lines + 1] = concat(cells, "  ")
  end
  line(header)
  for _, row in ipairs(rows) do line(row) end
  return concat(lines, "\n")
end

-- desc's records as an aligned table with a header and a count line.
function _M.list_text(desc, list)
  local one = desc.noun:gsub("_", " ")   -- "phone number"
  if #list == 0 then return "(no " .. one .. "s)" end
  local header, rows = {}, {}
  for c, col in ipairs(desc.columns) do header[c] = col[1] end
  for r, record in ipairs(list) do
    local row = {}
    for c, col in ipairs(desc.columns) do row[c] = column_value(col, record) end
    rows[r] = row
  end
  return table_text(header, rows) .. "\n(" .. #list .. " " .. one .. (#list == 1 and "" or "s") .. ")"
end

--- Give a list of desc's records its REPL face (`topcalls.list`). Returns list.
function _M.list(desc, list)
  local mt = list_mts[desc]
  if not mt then
    mt = { __name = "topcalls.list", __tostring = function(l) return _M.list_text(desc, l) end }
    list_mts[desc] = mt
  end
  return setmetatable(list, mt)
end

---------------------------------------------------------------------------
-- help

-- The rules of one described field, as one phrase.
local function rules_text(f)
  local parts = { f.type }
  if f.required then parts[#parts + 1] = "required" end
  if f.only_when then
    parts[#parts + 1] = format("required when %s is '%s', refused otherwise", f.only_when.field, f.only_when.value)
  end
  if f.type == "string" then
    if f.max then parts[#parts + 1] = format("%d-%d characters", f.min, f.max) end
    if not f.max and not f.choices then parts[#parts + 1] = "not empty" end
  elseif f.type == "integer" then
    parts[#parts + 1] = format("%d-%d", f.min, f.max)
  end
  if f.no_whitespace then parts[#parts + 1] = "no whitespace" end
  if f.choices then
    local q = {}
    for i, c in ipairs(f.choices) do q[i] = "'" .. c .. "'" end
    parts[#parts + 1] = "one of " .. concat(q, ", ")
  end
  if f.format then parts[#parts + 1] = "format " .. f.format end
  if f.strict_format then
    local s = f.strict_format
    parts[#parts + 1] = format("format %s while %s is true (%s)", s.format, s.when, s.why)
  end
  if f.default ~= nil then parts[#parts + 1] = "default " .. tostring(f.default) end
  if f.sensitive then parts[#parts + 1] = "secret (never shown)" end
  if f.conflict then parts[#parts + 1] = "error when " .. f.conflict:gsub(":.*", "") end
  return concat(parts, ", ")
end

-- Lines describing fields (nested objects indented).
local function field_lines(fields, indent, lines)
  local width = 0
  for _, f in ipairs(fields) do width = max(width, #f.name) end
  for _, f in ipairs(fields) do
    lines[#lines + 1] = indent .. f.name .. rep(" ", width - #f.name) .. "  " .. rules_text(f)
    if f.members then field_lines(f.members, indent .. "  ", lines) end
  end
  return lines
end

-- The names of a declared options table, sorted.
local function option_names(declared)
  local names = {}
  for k in pairs(declared) do names[#names + 1] = k end
  table.sort(names)
  return concat(names, ", ")
end

-- What each operation takes and returns, and its HTTP request.
local function signatures(resource)
  return {
    add      = { "(params [, call_opts]) -> record | nil, message, err", "POST %s",
                 "call_opts: idempotency_key, timeout, max_retries" },
    add_many = { "(list [, opts]) -> results, summary", "POST %s, concurrently",
                 "opts: " .. option_names(resource.MANY_OPTIONS) },
    get      = { "(id [, call_opts]) -> record | nil, message, err", "GET %s/{id}",
                 "call_opts: " .. option_names(resource.READ_OPTIONS) },
    list     = { "([opts]) -> list | nil, message, err", "GET %s, every page",
                 "opts: " .. option_names(resource.LIST_OPTIONS) },
    each     = { "([opts]) -> iterator: for record in each() do ... end", "GET %s, page by page",
                 "opts: " .. option_names(resource.LIST_OPTIONS)
                 .. "; on a failure the loop gets false, message, err once" },
    delete   = { "(id [, call_opts]) -> true | nil, message, err", "DELETE %s/{id}",
                 "call_opts: " .. option_names(resource.READ_OPTIONS) },
    validate = { "(params) -> true | nil, message, err", "no network", nil },
  }
end

--- The help text for topic: nil (everything), a resource name
-- ("carriers"), or an operation ("carriers.add"). Returns text, or nil
-- and a message naming the topics.
function _M.help_text(resources, resource, topic)
  local sig = signatures(resource)
  local lines = {}
  local found = topic == nil
  for _, desc in ipairs(resources) do
    local whole = topic == nil or topic == desc.name
    if whole then
      found = true
      lines[#lines + 1] = desc.name .. ": " .. desc.title .. " (" .. desc.path .. ")"
    end
    for _, op in ipairs(resource.OPERATIONS) do
      local s = sig[op]
      if whole then
        lines[#lines + 1] = "  " .. desc.name .. "." .. op .. s[1]
      elseif topic == desc.name .. "." .. op then
        found = true
        lines[#lines + 1] = desc.name .. "." .. op .. s[1]
        lines[#lines + 1] = "  " .. format(s[2], desc.path)
        if s[3] then lines[#lines + 1] = "  " .. s[3] end
        if op == "add" or op == "validate" or op == "add_many" then
          lines[#lines + 1] = "  params (" .. desc.schema .. "):"
          field_lines(core.describe(desc.schema), "    ", lines)
        elseif op == "get" or op == "delete" then
          lines[#lines + 1] = "  id: " .. desc.id_what
        end
      end
    end
  end
  if not found then
    local topics = {}
    for _, desc in ipairs(resources) do
      topics[#topics + 1] = desc.name
      for _, op in ipairs(resource.OPERATIONS) do topics[#topics + 1] = desc.name .. "." .. op end
    end
    return nil, "no help for '" .. tostring(topic) .. "'; topics: " .. concat(topics, ", ")
  end
  if topic == nil then
    lines[#lines + 1] = "topcalls.help(\"carriers.add\") shows an operation's fields and rules."
  end
  return concat(lines, "\n")
end

return _M
