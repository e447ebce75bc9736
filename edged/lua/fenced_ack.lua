-- Fenced ack: XACK only the entries this consumer still owns.
-- XACK alone does not check the owner, so a consumer that was paused past claim-idle could ack
-- an entry a live peer has claimed and is still working on; if that peer then crashed, the
-- entry would be lost. Returns the number acked; the caller counts the rest as stale.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3] space-separated entry ids
-- (one argument: packing hundreds of arguments costs the client more than the split costs us);
-- ARGV[4] how many entries besides these the consumer may have pending (its concurrency).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
-- Stream ids compare as (ms, seq); both parts can exceed Lua's 2^53 exact integers, so they
-- are compared as digit strings (Redis never writes leading zeros): shorter is smaller.
local function less(a_ms, a_seq, b_ms, b_seq)
  if a_ms ~= b_ms then
    if #a_ms ~= #b_ms then return #a_ms < #b_ms end
    return a_ms < b_ms
  end
  if #a_seq ~= #b_seq then return #a_seq < #b_seq end
  return a_seq < b_seq
end
local ids, lo, hi, lo_ms, lo_seq, hi_ms, hi_seq = {}, nil, nil, nil, nil, nil, nil
for id in string.gmatch(ARGV[3], '%S+') do
  ids[#ids + 1] = id
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if lo == nil or less(ms, seq, lo_ms, lo_seq) then lo, lo_ms, lo_seq = id, ms, seq end
  if hi == nil or less(hi_ms, hi_seq, ms, seq) then hi, hi_ms, hi_seq = id, ms, seq end
end
if #ids == 0 then
  return 0
end
-- One range query over this consumer's PEL instead of one per id. If the range holds more of
-- our entries than the limit, the ids it did not reach are checked one by one.
local limit = #ids + tonumber(ARGV[4])
local rows = redis.call('XPENDING', stream, group, lo, hi, limit, consumer)
local mine = {}
for _, row in ipairs(rows) do
  mine[row[1]] = true
end
local complete = #rows < limit
local owned = {}
for _, id in ipairs(ids) do
  if mine[id] or (not complete and #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0) then
    owned[#owned + 1] = id
  end
end
local acked = 0
-- unpack() is limited by the Lua stack: ack in slices.
for i = 1, #owned, 500 do
  acked = acked + redis.call('XACK', stream, group, unpack(owned, i, math.min(i + 499, #owned)))
end
return acked
