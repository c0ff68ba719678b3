-- refund_done.lua: a channel says how a refund ended (WeChat's refund notification,
-- UnionPay's refund back notification, a bank's answer at the edge; Alipay's synchronous
-- answer, a query, the sandbox in the worker's refund plugin). Idempotent: the first final
-- word wins, a repeat changes nothing.
-- KEYS[1] notice, KEYS[2] the shard's refunds stream, KEYS[3] the refund plugin's queue,
-- KEYS[4] the bank refunds index (a hash, refund.lua); all on the notice's shard.
-- ARGV[1] payment code, ARGV[2] nn (the refund is "<code>R<nn>"), ARGV[3] SUCCEEDED | FAILED,
-- ARGV[4] the amount the channel states (fen; '' when it states none), ARGV[5] the channel's
-- refund number ('' if none), ARGV[6] when (unix seconds), ARGV[7] the channel's reason for
-- a failure (''), ARGV[8] division and ARGV[9] yy of the code.
-- A bank's answer (POST /bank/v1/refunds/{id}) adds KEYS[5] the bank's nonce key, ARGV[10]
-- its ttl and ARGV[11] the bank's id: the nonce is spent here, and a refund that the bank
-- did not take the payment of is 'NONE' to it.
-- -> {'REPLAY'} | {'NONE'} | {'DUP', status} | {'MISMATCH', amount} | {'DONE', status of the
--    notice}
local p = 'r' .. ARGV[2] .. '.'
local n = redis.call('HMGET', KEYS[1], p .. 'status', p .. 'amount', p .. 'origin',
                     'paid_amount', 'refunded_amount', 'refunding_amount', 'unit',
                     'division', 'yy', p .. 'channel', p .. 'reason', 'status', p .. 'anomaly_id')
if KEYS[5] and not redis.call('SET', KEYS[5], '1', 'NX', 'EX', ARGV[10]) then
    return {'REPLAY'}
end
if not n[1] or n[8] ~= ARGV[8] or n[9] ~= ARGV[9] then
    return {'NONE'}
end
if ARGV[11] then
    local trade = redis.call('HGET', KEYS[1], p .. 'channel_trade_no') or ''
    if n[10] ~= 'bank' or string.sub(trade, 1, #ARGV[11] + 1) ~= ARGV[11] .. ':' then
        return {'NONE'}
    end
end
if n[1] ~= 'REFUNDING' then
    return {'DUP', n[1]}
end
if ARGV[4] ~= '' and ARGV[4] ~= n[2] then
    return {'MISMATCH', n[2]}
end

local amount = tonumber(n[2])
local refunded = tonumber(n[5] or '0')
local status = n[12]

if n[3] == 'notice' then
    local refunding = tonumber(n[6] or '0') - amount
    if ARGV[3] == 'SUCCEEDED' then
        refunded = refunded + amount
    end
    if refunding > 0 then
        status = 'REFUNDING'
    elseif refunded == 0 then
        status = 'PAID'
    elseif refunded >= tonumber(n[4]) then
        status = 'REFUNDED'
    else
        status = 'PARTIALLY_REFUNDED'
    end
    redis.call('HSET', KEYS[1], 'refunding_amount', refunding, 'refunded_amount', refunded,
               'status', status)
end

redis.call('HSET', KEYS[1], p .. 'status', ARGV[3], p .. 'completed_at', ARGV[6])
if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], p .. 'channel_refund_no', ARGV[5])
end
if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[1], p .. 'error', ARGV[7])
end

local id = ARGV[1] .. 'R' .. ARGV[2]
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
redis.call('XADD', KEYS[2], '*',
           'type', ARGV[3] == 'SUCCEEDED' and 'refund.succeeded' or 'refund.failed',
           'refund_id', id, 'payment_code', ARGV[1], 'unit', n[7], 'notice_key', KEYS[1],
           'amount', n[2], 'origin', n[3], 'anomaly_id', n[13] or '', 'reason', n[11] or '',
           'error', ARGV[7], 'channel', n[10] or '', 'channel_refund_no', ARGV[5],
           'refunded_total', tostring(refunded), 'paid_amount', n[4] or '', 'at', ARGV[6])
return {'DONE', status}
