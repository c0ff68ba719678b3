-- cache.lua: keeps something costly to make (a signed hand-off URL or form) as a field of a
-- notice. KEYS[1] notice. ARGV[1] field, ARGV[2] value, ARGV[3] (optional) the value the caller
-- found there and could not use (signed with an old key or for an old gateway): it is replaced.
-- Otherwise the field is set only if absent (HSETNX): the first of two concurrent scans wins,
-- both values are valid. Only on an existing notice.
-- -> {'SET'} | {'KEPT'} | {'NONE'}
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'NONE'}
end
if ARGV[3] and redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[3] then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    return {'SET'}
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
    return {'SET'}
end
return {'KEPT'}
