-- Hand entries back at shutdown without burning a delivery: reset their idle time far into the
-- past and their delivery counter to what it was before we fetched them, so that a peer's
-- XAUTOCLAIM takes them at once. Only entries this consumer still owns are touched.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3] idle ms; ARGV[4..] id, retrycount pairs
local stream, group, consumer, idle = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local released = 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0 then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'IDLE', idle,
      'RETRYCOUNT', ARGV[i + 1], 'JUSTID')
    released = released + 1
  end
end
return released
