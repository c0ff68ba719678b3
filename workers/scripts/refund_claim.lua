-- refund_claim.lua: the refund plugin's delivery thread takes one due refund: a lease (its
-- queue score moves to the lease's end, so no other worker takes it meanwhile, and a worker
-- that dies only delays it), and the refund's fields for the try.
-- A refund about to be sent is marked "query" here, before anything reaches the channel: a
-- worker killed after the channel answered asks the channel first on the next try, so a
-- refund is never sent twice without asking (docs/internals.md, "Refund plugin").
-- KEYS[1] notice, KEYS[2] the shard's refund queue.
-- ARGV[1] refund id, ARGV[2] nn, ARGV[3] now (unix ms), ARGV[4] end of the lease (unix ms),
-- ARGV[5] lease token, ARGV[6] the txnTime (now, Beijing time) of a UnionPay refund sent for the
-- first time: UnionPay knows a transaction by merId + orderId + txnTime, so the refund keeps it
-- for its queries and for a send again (UnionPay answers a repeat with respCode 12).
-- -> {'TAKEN'} (not due, or gone from the queue) | {'FINAL', status} (out of the queue) |
--    {'CLAIMED', phase, amount, channel, channel_trade_no, origin, reason, attempts, waits,
--     txn_time, paid_amount, created_at}
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[3]) then
    return {'TAKEN'}
end
local p = 'r' .. ARGV[2] .. '.'
local f = redis.call('HMGET', KEYS[1], p .. 'status', p .. 'phase', p .. 'amount',
                     p .. 'channel', p .. 'channel_trade_no', p .. 'origin', p .. 'reason',
                     p .. 'attempts', p .. 'waits', p .. 'txn_time', 'paid_amount',
                     p .. 'created_at')
if f[1] ~= 'REFUNDING' then
    redis.call('ZREM', KEYS[2], ARGV[1])
    return {'FINAL', f[1] or ''}
end
local phase = f[2] or 'send'
redis.call('ZADD', KEYS[2], 'XX', ARGV[4], ARGV[1])
redis.call('HSET', KEYS[1], p .. 'lease', ARGV[5])
if phase == 'send' then
    redis.call('HSET', KEYS[1], p .. 'phase', 'query')
    if f[4] == 'unionpay' and (not f[10] or f[10] == '') then
        redis.call('HSET', KEYS[1], p .. 'txn_time', ARGV[6])
        f[10] = ARGV[6]
    end
end
return {'CLAIMED', phase, f[3] or '', f[4] or '', f[5] or '', f[6] or '', f[7] or '',
        f[8] or '0', f[9] or '0', f[10] or '', f[11] or '', f[12] or ''}
