-- Move one entry to the dead-letter stream and ack it, atomically, if this consumer owns it.
-- The delivery count written is Redis's own (from XPENDING), not one we kept.
-- KEYS[1] stream; KEYS[2] dead-letter stream
-- ARGV[1] group; ARGV[2] consumer; ARGV[3] id; ARGV[4] name of the delivery-count field;
-- ARGV[5..] field, value pairs to write
local stream, dead, group, consumer, id = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local p = redis.call('XPENDING', stream, group, id, id, 1, consumer)
if #p == 0 then
  return false
end
local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
fields[#fields + 1] = ARGV[4]
fields[#fields + 1] = tostring(p[1][4])
local dead_id = redis.call('XADD', dead, '*', unpack(fields))
redis.call('XACK', stream, group, id)
return dead_id
