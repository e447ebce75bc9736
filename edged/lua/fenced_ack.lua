-- Fenced ack: XACK only the entries this consumer still owns.
-- XACK alone does not check the owner, so a consumer that was paused past claim-idle could ack
-- an entry a live peer has claimed and is still working on; if that peer then crashed, the
-- entry would be lost. Returns the number acked; the caller counts the rest as stale.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3] how many entries besides these the
-- consumer may have pending (its concurrency); ARGV[4], ARGV[5] a range that should hold every
-- id (see below); ARGV[6] onwards the entry ids, one per argument, or all of them in ARGV[6]
-- separated by spaces (what a client that packs arguments in Python sends: one string is
-- cheaper there).
--
-- One range query over this consumer's PEL tells which ids are ours, instead of one query per
-- id. The client picks the range cheaply (scripts.py: fence_range) and may miss ids of unusual
-- shapes; an id not among the range's rows is checked on its own. A poor range therefore
-- costs time, never a wrong ack: every id is acked only after XPENDING named this consumer.
-- (Ids as arguments, and the range from the client: splitting one string and ordering the
-- ids here cost the server more than the query itself.)
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local ids, first = ARGV, 6
if #ARGV == first then
  ids, first = {}, 1
  for id in string.gmatch(ARGV[6], '%S+') do
    ids[#ids + 1] = id
  end
end
if #ids < first then
  return 0
end
local limit = #ids - first + 1 + tonumber(ARGV[3])
local rows = redis.call('XPENDING', stream, group, ARGV[4], ARGV[5], limit, consumer)
local mine = {}
for i = 1, #rows do
  mine[rows[i][1]] = true
end
local owned, n = {}, 0
for i = first, #ids do
  local id = ids[i]
  if mine[id] or #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0 then
    n = n + 1
    owned[n] = id
  end
end
local acked = 0
-- unpack() is limited by the Lua stack: ack in slices.
for i = 1, n, 500 do
  acked = acked + redis.call('XACK', stream, group, unpack(owned, i, math.min(i + 499, n)))
end
return acked
