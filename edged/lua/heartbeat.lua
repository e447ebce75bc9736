-- Record this daemon as alive under its consumer name, unless another live daemon holds it.
-- Two daemons with one consumer name would share one pending list and ack each other's work,
-- so a name is held by one instance at a time; --takeover replaces the holder.
-- KEYS[1] daemon record (hash, with TTL); KEYS[2] last-seen hash (consumer -> ms, no TTL)
-- ARGV[1] consumer; ARGV[2] instance id; ARGV[3] ttl ms; ARGV[4] '1' to take over
-- ARGV[5] name of the instance field; ARGV[6..] field, value pairs of the record
-- Returns false when recorded, else the holder's record as a flat field/value list.
local holder = redis.call('HGET', KEYS[1], ARGV[5])
if holder and holder ~= ARGV[2] and ARGV[4] ~= '1' then
  return redis.call('HGETALL', KEYS[1])
end
if holder ~= ARGV[2] then
  redis.call('DEL', KEYS[1])
end
local fields = {}
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[2], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000)))
return false
