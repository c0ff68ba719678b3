-- cache.lua: keeps something costly to make (a signed hand-off URL) as a field of a notice.
-- KEYS[1] notice. ARGV[1] field, ARGV[2] value. The field is set only on an existing notice
-- and only once (HSETNX): the first of two concurrent scans wins, both URLs are valid.
-- -> {'SET'} | {'KEPT'} | {'NONE'}
if redis.call('EXISTS', KEYS[1]) == 0 then
    return {'NONE'}
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
    return {'SET'}
end
return {'KEPT'}
