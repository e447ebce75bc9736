-- Delete a consumer from a group only when that is safe, checked in the same step as the delete.
-- XGROUP DELCONSUMER drops the consumer's pending entries for good, so it must own none; and it
-- must have done nothing in the group for `expiry` ms. The caller has already found it dead in
-- the registry (no heartbeat record, not seen for `expiry`): those keys live in another hash
-- slot on a cluster, so they cannot be read here. A daemon that came back since then either
-- read (its idle time is short: kept) or did not read yet (nothing pending: deleting it loses
-- nothing, and its next read recreates it).
-- KEYS[1] stream; ARGV[1] group; ARGV[2] consumer; ARGV[3] expiry ms
-- Returns 'deleted', 'recent', 'pending' or 'gone'.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local idle = nil
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local fields = {}
  for i = 1, #info, 2 do
    fields[info[i]] = info[i + 1]
  end
  if fields['name'] == consumer then
    idle = tonumber(fields['idle'])
  end
end
if idle == nil then
  return 'gone'
end
if idle < tonumber(ARGV[3]) then
  return 'recent'
end
if #redis.call('XPENDING', stream, group, '-', '+', 1, consumer) > 0 then
  return 'pending'
end
redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
return 'deleted'
