-- Fenced ack: XACK only the entries this consumer still owns.
-- XACK alone does not check the owner, so a consumer that was paused past claim-idle could ack
-- an entry a live peer has claimed and is still working on; if that peer then crashed, the
-- entry would be lost. Returns the number acked; the caller counts the rest as stale.
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3..] entry ids
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local owned = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if #redis.call('XPENDING', stream, group, id, id, 1, consumer) > 0 then
    owned[#owned + 1] = id
  end
end
local acked = 0
-- unpack() is limited by the Lua stack: ack in slices.
for i = 1, #owned, 500 do
  acked = acked + redis.call('XACK', stream, group, unpack(owned, i, math.min(i + 499, #owned)))
end
return acked
