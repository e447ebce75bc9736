-- One XAUTOCLAIM step plus the delivery count of every entry it claimed, in one round trip.
-- No lock: XAUTOCLAIM's min-idle check is the guard (a live owner keeps its entries' idle time
-- low with lease extensions), and Redis's delivery counter is the one that decides poison.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3] min-idle ms; ARGV[4] cursor; ARGV[5] count
-- Returns {next cursor, entries, delivery counts, ids deleted from the stream (7.0+)}.
local stream, group = KEYS[1], ARGV[1]
local r = redis.call('XAUTOCLAIM', stream, group, ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, entry in ipairs(r[2]) do
  local p = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
  counts[i] = (p[1] and p[1][4]) or 1
end
return {r[1], r[2], counts, r[3] or {}}
