-- refund_step.lua: the refund plugin records a try that did not end the refund (ending one is
-- refund_done.lua), only while it still holds the claim's lease.
-- KEYS[1] notice, KEYS[2] the shard's refund queue, KEYS[3] the shard's dead letters
-- ({gpN}:dead), KEYS[4] the shard's dead refunds (sorted set: refund id, score = when, ms).
-- ARGV[1] refund id, ARGV[2] nn, ARGV[3] lease token, ARGV[4] now (unix ms), ARGV[5] kind:
--   retry  a transient failure: attempts + 1, next try at ARGV[6]
--   wait   the channel is still at work: waits + 1, ask again at ARGV[6]
--   again  the channel has no such refund: send it at ARGV[6] (nothing counted)
--   dead   give up: out of the queue, a dead letter, the refund stays REFUNDING for ops
--   release  a graceful stop gives the lease back: due at ARGV[6], nothing counted
-- ARGV[6] next try (unix ms), ARGV[7] phase of the next try (send | query), ARGV[8] what
-- happened (logged and kept as r<nn>.last_error), ARGV[9] '1' if this try counts as an
-- attempt (dead), ARGV[10] payment code, ARGV[11] the refunds stream (named in the dead letter),
-- ARGV[12] '1' to forget UnionPay's txnTime (the channel did not take the refund: the next send
-- is a new transaction).
-- -> {'STALE'} (the lease was lost: someone else has the refund now) | {'FINAL', status} |
--    {'RETRY', attempts} | {'WAIT', waits} | {'AGAIN'} (again, release) |
--    {'DEAD', attempts, dead letter id}
local p = 'r' .. ARGV[2] .. '.'
local f = redis.call('HMGET', KEYS[1], p .. 'status', p .. 'lease')
if f[1] ~= 'REFUNDING' then
    redis.call('ZREM', KEYS[2], ARGV[1])
    return {'FINAL', f[1] or ''}
end
if f[2] ~= ARGV[3] then
    return {'STALE'}
end
redis.call('HSET', KEYS[1], p .. 'lease', '', p .. 'phase', ARGV[7], p .. 'last_error', ARGV[8],
           p .. 'last_at', ARGV[4])
if ARGV[12] == '1' then
    redis.call('HDEL', KEYS[1], p .. 'txn_time')
end
if ARGV[5] == 'retry' then
    local a = redis.call('HINCRBY', KEYS[1], p .. 'attempts', 1)
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
    return {'RETRY', a}
elseif ARGV[5] == 'wait' then
    local w = redis.call('HINCRBY', KEYS[1], p .. 'waits', 1)
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
    return {'WAIT', w}
elseif ARGV[5] == 'again' or ARGV[5] == 'release' then
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
    return {'AGAIN'}
end
local a = tonumber(redis.call('HGET', KEYS[1], p .. 'attempts') or '0')
if ARGV[9] == '1' then
    a = redis.call('HINCRBY', KEYS[1], p .. 'attempts', 1)
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[1], p .. 'dead_at', ARGV[4])
local g = redis.call('HMGET', KEYS[1], p .. 'entry_id', p .. 'channel', p .. 'amount',
                     p .. 'origin', 'unit')
local id = redis.call('XADD', KEYS[3], '*', 'plugin', 'refund', 'entry_id', g[1] or '',
                      'stream', ARGV[11], 'error', ARGV[8], 'deliveries', tostring(a),
                      'refund_id', ARGV[1], 'payment_code', ARGV[10], 'notice_key', KEYS[1],
                      'channel', g[2] or '', 'amount', g[3] or '', 'origin', g[4] or '',
                      'unit', g[5] or '')
return {'DEAD', a, id}
