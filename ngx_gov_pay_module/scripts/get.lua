-- get.lua: a unit reads a notice: the nonce is spent and the notice read in one step.
-- KEYS[1] nonce key, KEYS[2] notice key (same shard). ARGV[1] nonce ttl.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    return {'REPLAY'}
end
local fields = redis.call('HGETALL', KEYS[2])
if #fields == 0 then
    return {'NONE'}
end
local reply = {'OK'}
for i = 1, #fields do
    reply[#reply + 1] = fields[i]
end
return reply
