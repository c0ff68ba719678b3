-- create.lua: store a new payment notice, atomically with its nonce and idempotency record.
-- KEYS[1] nonce key, KEYS[2] idempotency key, KEYS[3] shard sequence; all on one shard.
-- KEYS[4], optional: the payer's ID-number index of the item (lookup.lua), gets the new sequence.
-- ARGV[1] nonce ttl, ARGV[2] sha256 of the body, ARGV[3] idempotency ttl,
-- ARGV[4] notice key prefix ("{gpN}:n:"), ARGV[5..] notice field/value pairs.
-- The notice key is made from the prefix and the new sequence: it carries the same hash tag.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    return {'REPLAY'}
end
local idem = redis.call('GET', KEYS[2])
if idem then
    local sep = string.find(idem, ':', 1, true)
    local seq = string.sub(idem, sep + 1)
    if string.sub(idem, 1, sep - 1) ~= ARGV[2] then
        return {'CONFLICT'}
    end
    local reply = {'EXISTS', seq}
    local fields = redis.call('HGETALL', ARGV[4] .. seq)
    for i = 1, #fields do
        reply[#reply + 1] = fields[i]
    end
    return reply
end
local seq = tostring(redis.call('INCR', KEYS[3]))
local pairs = {}
for i = 5, #ARGV do
    pairs[#pairs + 1] = ARGV[i]
end
redis.call('HSET', ARGV[4] .. seq, unpack(pairs))
redis.call('SET', KEYS[2], ARGV[2] .. ':' .. seq, 'EX', ARGV[3])
if KEYS[4] then
    redis.call('SADD', KEYS[4], seq)
end
return {'CREATED', seq}
