-- cancel.lua: a unit cancels one of its notices; idempotent.
-- KEYS[1] nonce key, KEYS[2] notice key, KEYS[3] the shard's final set ("{gpN}:final",
-- member seq, score = unix time the notice became final: the retention job archives and
-- deletes it after the retention period); all on one shard.
-- ARGV[1] nonce ttl, ARGV[2] unit, ARGV[3] division, ARGV[4] yy (both from the code).
-- -> {'REPLAY'} | {'NONE'} (absent, another unit's, another division or year) |
--    {'INVALID_STATE', status} | {'OK', field, value, ...}
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    return {'REPLAY'}
end
local n = redis.call('HMGET', KEYS[2], 'status', 'unit', 'division', 'yy')
if not n[1] or n[2] ~= ARGV[2] or n[3] ~= ARGV[3] or n[4] ~= ARGV[4] then
    return {'NONE'}
end
if n[1] == 'UNPAID' then
    redis.call('HSET', KEYS[2], 'status', 'CANCELLED')
    -- the server's clock (scripts replicate by effects): the same for every edge node
    redis.call('ZADD', KEYS[3], redis.call('TIME')[1], string.match(KEYS[2], '(%d+)$'))
elseif n[1] ~= 'CANCELLED' then
    return {'INVALID_STATE', n[1]}
end
local fields = redis.call('HGETALL', KEYS[2])
local reply = {'OK'}
for i = 1, #fields do
    reply[#reply + 1] = fields[i]
end
return reply
