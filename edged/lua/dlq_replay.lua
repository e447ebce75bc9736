-- Second half of a replay, run in one MULTI/EXEC right after the XADD that re-published the
-- entry's original fields to its stream (admin/dlq.py): delete the dead-letter entry and keep
-- the copy; or, if the dead-letter entry is gone already (replayed or purged meanwhile), delete
-- the copy again. Nothing can run between the XADD and this script. The copy is written by a
-- plain XADD, not from here: Lua cannot pass more than about 8 000 arguments to one
-- redis.call, and entries may have tens of thousands of fields.
-- KEYS[1] dead-letter stream; KEYS[2] original stream
-- ARGV[1] dead entry id (full ms-seq); ARGV[2] how many names and values the copy has;
-- ARGV[3], ARGV[4] its first name and value: proof the last entry is the copy (if the XADD
-- failed, the last entry is somebody else's and must be left alone).
-- Returns the copy's id, or false when the dead-letter entry was gone.
local dead, origin, dead_id = KEYS[1], KEYS[2], ARGV[1]
local found, last = pcall(redis.call, 'XREVRANGE', origin, '+', '-', 'COUNT', 1)
if not found or #last == 0 then
  return redis.error_reply('the replayed copy of ' .. dead_id .. ' was not written')
end
local copy = last[1]
local kv = copy[2]
if #kv ~= tonumber(ARGV[2]) or kv[1] ~= ARGV[3] or kv[2] ~= ARGV[4] then
  return redis.error_reply('the replayed copy of ' .. dead_id .. ' was not written')
end
if redis.call('XDEL', dead, dead_id) == 0 then
  redis.call('XDEL', origin, copy[1])
  return false
end
return copy[1]
