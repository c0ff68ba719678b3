-- create.lua: store a new payment notice, atomically with its nonce and idempotency record.
-- KEYS[1] nonce key, KEYS[2] idempotency key, KEYS[3] shard sequence ("{gpN}:seq"), KEYS[4] the
-- shard's due set ("{gpN}:due", member seq, score due_at: the retention job finds expired
-- notices there without scanning); all on one shard.
-- KEYS[5], optional: the payer's ID-number index of the item (lookup.lua), gets the new
-- sequence; the notice keeps its name in field "pidx", so the retention job can take the
-- notice out of the index without the lookup key.
-- ARGV[1] nonce ttl, ARGV[2] sha256 of the body (the idempotency record's and the notice's
-- body_sha256), ARGV[3] idempotency ttl, ARGV[4..16] the notice's values, in this order: unit,
-- request_id, item_code, amount, payer_type, payer_name_masked, payer_name_sealed,
-- payer_id_masked, payer_id_sealed, due_at, created_at, division, yy; ARGV[17..] optional
-- field/value pairs (remark, lines). The field names are the script's own (status UNPAID).
-- The notice key "{gpN}:n:<seq>" is made here from KEYS[3]'s hash tag and the sequence just
-- taken: it cannot be in KEYS, since the sequence is known only now (docs/internals.md,
-- "Why create.lua names the notice key"); it carries KEYS[3]'s tag, so the script touches
-- one slot.
local tag = string.match(KEYS[3], '^({gp%d+}):seq$')
if not tag then
    return redis.error_reply('create.lua: KEYS[3] must be {gpN}:seq')
end
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
    local fields = redis.call('HGETALL', tag .. ':n:' .. seq)
    for i = 1, #fields do
        reply[#reply + 1] = fields[i]
    end
    return reply
end
local seq = tostring(redis.call('INCR', KEYS[3]))
local f = {'unit', ARGV[4], 'request_id', ARGV[5], 'item_code', ARGV[6], 'amount', ARGV[7],
           'payer_type', ARGV[8], 'payer_name_masked', ARGV[9], 'payer_name_sealed', ARGV[10],
           'payer_id_masked', ARGV[11], 'payer_id_sealed', ARGV[12], 'due_at', ARGV[13],
           'created_at', ARGV[14], 'division', ARGV[15], 'yy', ARGV[16], 'status', 'UNPAID',
           'body_sha256', ARGV[2]}
for i = 17, #ARGV do
    f[#f + 1] = ARGV[i]
end
if KEYS[5] then
    f[#f + 1] = 'pidx'
    f[#f + 1] = KEYS[5]
end
redis.call('HSET', tag .. ':n:' .. seq, unpack(f))
redis.call('SET', KEYS[2], ARGV[2] .. ':' .. seq, 'EX', ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[13], seq)
if KEYS[5] then
    redis.call('SADD', KEYS[5], seq)
end
return {'CREATED', seq}
