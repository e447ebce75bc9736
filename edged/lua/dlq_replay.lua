-- Replay one dead-letter entry: XADD its original fields to its original stream, then XDEL it
-- from the dead-letter stream, in one step, so that an entry is never lost (deleted but not
-- re-published) nor left behind after a successful re-publish.
-- KEYS[1] dead-letter stream; KEYS[2] original stream (the client read it from edged-stream,
-- and it must be a declared key); ARGV[1] dead entry id (full ms-seq);
-- ARGV[2] name of the field that names the original stream;
-- ARGV[3..] names of the metadata fields edged added, stripped before the re-publish.
-- Returns the new id, or false when the entry is not (or no longer) in the dead-letter stream.
local dead, origin, dead_id = KEYS[1], KEYS[2], ARGV[1]
local rows = redis.call('XRANGE', dead, dead_id, dead_id)
if #rows == 0 then
  return false
end
local strip = {}
for i = 3, #ARGV do
  strip[ARGV[i]] = true
end
local kv, fields, from = rows[1][2], {}, nil
for i = 1, #kv, 2 do
  if kv[i] == ARGV[2] then
    from = kv[i + 1]
  end
  if not strip[kv[i]] then
    fields[#fields + 1] = kv[i]
    fields[#fields + 1] = kv[i + 1]
  end
end
-- The entry cannot change (stream entries are immutable), but the caller's idea of it could be
-- stale or wrong: never publish to a stream the entry does not name.
if from ~= origin then
  return redis.error_reply('entry names stream ' .. tostring(from) .. ', not ' .. origin)
end
if #fields == 0 then
  return redis.error_reply('entry has no original fields to replay')
end
local new_id = redis.call('XADD', origin, '*', unpack(fields))
redis.call('XDEL', dead, rows[1][1])
return new_id
