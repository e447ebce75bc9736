-- Delete a consumer from a group only when that is safe, checked in the same step as the delete.
-- XGROUP DELCONSUMER drops the consumer's pending entries for good, so it must own none; and it
-- must be dead: no live heartbeat record, and not seen for `expiry` ms.
-- KEYS[1] stream; KEYS[2] the consumer's daemon record; KEYS[3] last-seen hash
-- ARGV[1] group; ARGV[2] consumer; ARGV[3] expiry ms
-- Returns 'deleted', 'alive', 'recent' or 'pending'.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 'alive'
end
local seen = redis.call('HGET', KEYS[3], consumer)
if seen then
  local now = redis.call('TIME')
  if now[1] * 1000 + math.floor(now[2] / 1000) - tonumber(seen) < tonumber(ARGV[3]) then
    return 'recent'
  end
end
if #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) > 0 then
  return 'pending'
end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
return 'deleted'
