-- Extend leases: reset the idle time of entries this consumer still owns and is working on, so
-- that no peer's XAUTOCLAIM (min-idle = claim-idle) takes them from a long-running handler.
-- XCLAIM ... JUSTID resets the idle time without counting a delivery. Ids owned by someone
-- else are returned: those leases were lost (we were paused or slow past claim-idle). An id
-- pending for nobody was acked meanwhile (its handler finished while this script was on its
-- way): nothing to keep and nothing lost, so it is not reported.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3] space-separated entry ids
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local lost = {}
for id in string.gmatch(ARGV[3], '%S+') do
  if #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0 then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
  elseif #redis.call('XPENDING', stream, group, id, id, 1) > 0 then
    lost[#lost + 1] = id
  end
end
return lost
