-- create.lua: store a new payment notice, atomically with its nonce and idempotency record.
-- KEYS[1] nonce key, KEYS[2] idempotency key, KEYS[3] shard sequence, KEYS[4] the shard's
-- due set ("{gpN}:due", member seq, score due_at: the retention job finds expired notices
-- there without scanning); all on one shard.
-- KEYS[5], optional: the payer's ID-number index of the item (lookup.lua), gets the new
-- sequence; the notice keeps its name in field "pidx", so the retention job can take the
-- notice out of the index without the lookup key.
-- ARGV[1] nonce ttl, ARGV[2] sha256 of the body, ARGV[3] idempotency ttl,
-- ARGV[4] notice key prefix ("{gpN}:n:"), ARGV[5..] notice field/value pairs (due_at among them).
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
local due
for i = 5, #ARGV, 2 do
    pairs[#pairs + 1] = ARGV[i]
    pairs[#pairs + 1] = ARGV[i + 1]
    if ARGV[i] == 'due_at' then
        due = ARGV[i + 1]
    end
end
if KEYS[5] then
    pairs[#pairs + 1] = 'pidx'
    pairs[#pairs + 1] = KEYS[5]
end
redis.call('HSET', ARGV[4] .. seq, unpack(pairs))
redis.call('SET', KEYS[2], ARGV[2] .. ':' .. seq, 'EX', ARGV[3])
redis.call('ZADD', KEYS[4], due, seq)
if KEYS[5] then
    redis.call('SADD', KEYS[5], seq)
end
return {'CREATED', seq}
