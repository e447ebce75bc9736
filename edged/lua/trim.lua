-- Safe retention: trim a stream by age and/or length, never an entry a consumer group still needs.
-- The floor (the lowest id any group still needs) and the XTRIM are one step: no group can be
-- created, and no reader can move, in between. Only the stream is a key (one slot on a cluster).
--
-- A group needs every entry after its last-delivered-id (not read yet) and every entry still
-- pending in it; its floor is the lower of the first entry after last-delivered-id and its
-- lowest pending id (XPENDING summary). The stream's floor is the lowest over its groups.
-- entries-read and lag of XINFO GROUPS are not used (they may be nil).
-- The wanted trim point is the higher of "now - retention" (by the server's TIME) and the first
-- of the newest max-len entries; what is trimmed is everything below the lower of that and the
-- floor (XTRIM MINID). A stream without any group is held whole (ARGV[4] 'hold': nothing has
-- been read yet) or trimmed by the rule alone (ARGV[4] 'free': dead-letter streams).
--
-- KEYS[1] stream
-- ARGV[1] retention ms (0: none); ARGV[2] max-len (0: none);
-- ARGV[3] mode: 'trim' (trim now), 'dry' or 'probe' (only say what would go: counting it would
--          block the server for as long as a walk over it takes, so the caller counts, by pages);
-- ARGV[4] no-group rule: 'hold' | 'free'; ARGV[5] walk limit: max-len finds its cut by walking
--   the entries (streams have no index by position); past this many entries from the oldest it
--   cuts there and leaves the rest to the next call, so that one call blocks the server briefly
-- Returns {trimmed (-1 when not trimming), first id gone, last id gone, minid used,
--          floor, holding group, blocked 0/1, held-back oldest id, ms it is past retention,
--          groups, length before}; '' where there is nothing to say.
local key = KEYS[1]
local retention, maxlen = tonumber(ARGV[1]), tonumber(ARGV[2])
local mode, nogroup, walk_limit = ARGV[3], ARGV[4], tonumber(ARGV[5])
local CHUNK = 10000  -- entries per XRANGE step of a max-len walk

-- Ids compared as decimal strings: exact for every 64-bit part (Lua numbers are doubles).
local function parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if ms == nil then
    return id, '0'
  end
  return ms, seq
end
local function numcmp(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end
local function cmp(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  local c = numcmp(am, bm)
  if c ~= 0 then
    return c
  end
  return numcmp(as, bs)
end
local function lower(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if cmp(a, b) <= 0 then return a end
  return b
end
local function higher(a, b)
  if a == nil then return b end
  if b == nil then return a end
  if cmp(a, b) >= 0 then return a end
  return b
end
local function first_after(start, stop)
  local ok, rows = pcall(redis.call, 'XRANGE', key, start, stop, 'COUNT', 1)
  if ok and #rows > 0 then
    return rows[1][1]
  end
  return nil
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local len = redis.call('XLEN', key)
local oldest = first_after('-', '+')
if oldest == nil then
  return {0, '', '', '', '', '', 0, '', 0, 0, len}
end

-- The floor: the lowest id any group still needs, and the group that needs it.
local floor, holder = nil, nil
local groups = redis.call('XINFO', 'GROUPS', key)
for _, row in ipairs(groups) do
  local g = {}
  for i = 1, #row, 2 do
    g[row[i]] = row[i + 1]
  end
  local need = first_after('(' .. g['last-delivered-id'], '+')
  local summary = redis.call('XPENDING', key, g['name'])
  if summary[2] then
    need = lower(need, summary[2])
  end
  if need ~= nil and (floor == nil or cmp(need, floor) < 0) then
    floor, holder = need, g['name']
  end
end
if #groups == 0 and nogroup == 'hold' then
  floor, holder = oldest, ''
end

-- What the rule wants: below now - retention, and below the first of the newest max-len.
local wanted = nil
if retention > 0 then
  wanted = string.format('%.0f', math.max(now - retention, 0)) .. '-0'
end
local len_capped = false
if maxlen > 0 and len > maxlen and not (floor ~= nil and wanted ~= nil and cmp(wanted, floor) >= 0) then
  local excess = len - maxlen
  if maxlen <= walk_limit and maxlen < excess then
    -- walk from the newest: the max-len-th newest is the first kept (exact, maxlen steps)
    local start, seen, kept = '+', 0, nil
    while kept == nil do
      local rows = redis.call('XREVRANGE', key, start, '-', 'COUNT', math.min(CHUNK, maxlen - seen))
      seen = seen + #rows
      if seen == maxlen then
        kept = rows[#rows][1]
      end
      start = '(' .. rows[#rows][1]
    end
    wanted = higher(wanted, kept)
  else
    -- walk from the oldest, at most walk_limit entries (a larger backlog goes over several
    -- calls): the entry after the last one to go is the first kept; stop at the floor
    local take = math.min(excess, walk_limit)
    local stop = floor and ('(' .. floor) or '+'
    local start, seen, kept = '-', 0, nil
    while kept == nil do
      local rows = redis.call('XRANGE', key, start, stop, 'COUNT', math.min(CHUNK, take + 1 - seen))
      if #rows == 0 then
        break
      end
      seen = seen + #rows
      if seen == take + 1 then
        kept = rows[#rows][1]
      end
      start = '(' .. rows[#rows][1]
    end
    if kept == nil and floor ~= nil and seen == take then
      kept = floor  -- every entry to go is below the floor: cutting at the floor takes them all
    elseif kept == nil and floor ~= nil then
      len_capped = true  -- the floor came first
    end
    wanted = higher(wanted, kept)
  end
end

-- Blocked: the rule wants entries the floor keeps; the oldest of them is held back.
local blocked, held, past = 0, '', 0
if floor ~= nil and (len_capped or (wanted ~= nil and cmp(wanted, floor) > 0)) then
  local stop = len_capped and '+' or ('(' .. wanted)
  local id = first_after(floor, stop)
  if id ~= nil then
    blocked, held = 1, id
    past = math.max(now - tonumber((parts(id))) - retention, 0)
  end
end

local minid = wanted
if floor ~= nil and len_capped then
  minid = higher(minid, floor)
end
if floor ~= nil then
  minid = lower(minid, floor)
end
if minid == nil or cmp(minid, oldest) <= 0 then
  return {0, '', '', minid or '', floor or '', holder or '', blocked, held, past, #groups, len}
end
local last = redis.call('XREVRANGE', key, '(' .. minid, '-', 'COUNT', 1)
local count = -1
if mode == 'trim' then
  count = redis.call('XTRIM', key, 'MINID', minid)
end
return {count, oldest, last[1][1], minid, floor or '', holder or '', blocked, held, past, #groups,
        len}
