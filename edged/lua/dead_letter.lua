-- Second half of a dead-lettering, run in one MULTI/EXEC right after the XADD of the dead entry
-- (scripts.py): keep the copy and ack the entry if this consumer still owns it; otherwise
-- delete the copy again (a peer owns the entry now). Nothing can run between the two commands.
-- The copy is written by a plain XADD, not from here: Lua cannot pass more than about 8 000
-- arguments to one redis.call (its C stack), and entries may have tens of thousands of fields.
-- KEYS[1] stream; KEYS[2] dead-letter stream
-- ARGV[1] group; ARGV[2] consumer; ARGV[3] id;
-- ARGV[4..] the metadata pairs the copy begins with: proof that the last entry is our copy
-- (if the XADD failed, the last entry is somebody else's and must be left alone).
local stream, dead, group, consumer, id = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local found, last = pcall(redis.call, 'XREVRANGE', dead, '+', '-', 'COUNT', 1)
if not found then
  return redis.error_reply(last.err or tostring(last))  -- e.g. no read access to the key
end
if #last == 0 then
  return redis.error_reply('the dead-letter copy of ' .. id .. ' was not written')
end
local copy = last[1]
for i = 4, #ARGV do
  if copy[2][i - 3] ~= ARGV[i] then
    return redis.error_reply('the dead-letter copy of ' .. id .. ' was not written')
  end
end
local owned, p = pcall(redis.call, 'XPENDING', stream, group, id, id, 1, consumer)
if not owned or #p == 0 then
  redis.call('XDEL', dead, copy[1])
  if not owned then
    return redis.error_reply(p.err or tostring(p))
  end
  return false
end
-- The ack refused (an ACL that allows EVAL but not XACK): no copy may stay behind, or the
-- entry, still pending, would be dead-lettered again and leave a copy each time.
local acked, err = pcall(redis.call, 'XACK', stream, group, id)
if not acked then
  redis.call('XDEL', dead, copy[1])
  return redis.error_reply(err.err or tostring(err))
end
return copy[1]
