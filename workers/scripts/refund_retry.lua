-- refund_retry.lua: `gov-pay-worker refund retry <refund id>`: a refund that is still
-- REFUNDING goes back into the queue, due at ARGV[4], with its attempts and waits counted from
-- zero again; a dead-lettered one leaves the dead refunds. Its phase is kept, so a refund that
-- may have reached the channel is asked about before it is sent again.
-- KEYS[1] notice, KEYS[2] the shard's refund queue, KEYS[3] the shard's dead refunds.
-- ARGV[1] refund id, ARGV[2] nn, ARGV[3] now (unix ms), ARGV[4] due (unix ms), ARGV[5] '1' to
-- send it again without asking first (--resend: ops found, in the channel's statement, that
-- the channel never had it; UnionPay's refund then gets a new txnTime).
-- -> {'NONE'} | {'FINAL', status} | {'LEASED'} (a worker is trying it right now) |
--    {'QUEUED', '1' if it was dead-lettered, else '0'}
local p = 'r' .. ARGV[2] .. '.'
local f = redis.call('HMGET', KEYS[1], p .. 'status', p .. 'lease', p .. 'dead_at')
if not f[1] then
    redis.call('ZREM', KEYS[3], ARGV[1])
    return {'NONE'}
end
if f[1] ~= 'REFUNDING' then
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[3], ARGV[1])
    return {'FINAL', f[1]}
end
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if f[2] and f[2] ~= '' and s and tonumber(s) > tonumber(ARGV[3]) then
    return {'LEASED'}
end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], p .. 'dead_at')
redis.call('HSET', KEYS[1], p .. 'attempts', 0, p .. 'waits', 0, p .. 'lease', '')
if ARGV[5] == '1' then
    redis.call('HSET', KEYS[1], p .. 'phase', 'send')
    redis.call('HDEL', KEYS[1], p .. 'txn_time')
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return {'QUEUED', f[3] and '1' or '0'}
