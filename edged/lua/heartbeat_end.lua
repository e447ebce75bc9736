-- Remove this daemon's record at a clean stop, if it is still ours (not taken over).
-- KEYS[1] daemon record; ARGV[1] instance id; ARGV[2] name of the instance field
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
