-- settle.lua: a verified channel callback says money arrived for a notice.
-- KEYS[1] notice, KEYS[2] settled stream, KEYS[3] anomaly stream (one shard).
-- ARGV[1] payment code, ARGV[2] channel, ARGV[3] channel trade number, ARGV[4] amount in fen,
-- ARGV[5] paid_at (unix), ARGV[6] now (unix), ARGV[7] division and ARGV[8] yy of the code,
-- ARGV[9] the payment code that owns this trade number in the trade index (claimed just
-- before on the trade number's own shard, ngx_gov_pay_settle.c).
-- The streams are never trimmed here: an entry no consumer group has acknowledged is money.
-- UNPAID -> PAID plus one settled event, or nothing.  Money that cannot settle the notice
-- (wrong amount, notice not payable, a second payment) goes to the anomaly stream for refund,
-- once per channel trade number: the notice keeps "anomaly:<channel>:<trade no>" = reason, so
-- a channel's retry of the same payment is acknowledged without a second entry.
-- A trade number that another notice owns never settles this one: a bank is told TAKEN (the
-- edge answers DUPLICATE), any other channel's callback is recorded as anomaly
-- TRADE_NO_REUSED.
-- KEYS[4] (bank counter requests only) the bank's nonce key, ARGV[10] its ttl: spent here, so
-- a replayed request is refused in the same step.
if KEYS[4] and not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[10]) then
    return {'REPLAY'}
end
local n = redis.call('HMGET', KEYS[1], 'status', 'amount', 'due_at', 'channel',
                     'channel_trade_no', 'unit', 'item_code', 'division', 'yy')
local status, amount, due_at, channel, trade_no, unit, item = n[1], n[2], n[3], n[4], n[5], n[6], n[7]
if not status or n[8] ~= ARGV[7] or n[9] ~= ARGV[8] then
    return {'NONE'}
end

local function anomaly(reason)
    local mark = 'anomaly:' .. ARGV[2] .. ':' .. ARGV[3]
    local prev = redis.call('HGET', KEYS[1], mark)
    if prev then
        return {'ANOMALY', prev, 'DUP'}
    end
    redis.call('HSET', KEYS[1], mark, reason)
    redis.call('XADD', KEYS[3], '*',
               'reason', reason, 'payment_code', ARGV[1], 'unit', unit,
               'channel', ARGV[2], 'channel_trade_no', ARGV[3], 'amount', ARGV[4],
               'notice_amount', amount, 'notice_status', status,
               'paid_at', ARGV[5], 'recorded_at', ARGV[6])
    return {'ANOMALY', reason}
end

if ARGV[9] ~= ARGV[1] then
    if ARGV[2] == 'bank' then
        return {'TAKEN', ARGV[9]}
    end
    return anomaly('TRADE_NO_REUSED')
end
-- paid: PAID, or a refund's status after it (REFUNDING, PARTIALLY_REFUNDED, REFUNDED)
if channel then
    if channel == ARGV[2] and trade_no == ARGV[3] then
        return {'DUP'}
    end
    return anomaly('SECOND_PAYMENT')
end
if status ~= 'UNPAID' or tonumber(due_at) < tonumber(ARGV[6]) then
    return anomaly('NOT_PAYABLE')
end
if amount ~= ARGV[4] then
    return anomaly('AMOUNT_MISMATCH')
end

redis.call('HSET', KEYS[1], 'status', 'PAID', 'channel', ARGV[2], 'channel_trade_no', ARGV[3],
           'paid_at', ARGV[5], 'paid_amount', ARGV[4])
redis.call('XADD', KEYS[2], '*',
           'type', 'notice.paid', 'payment_code', ARGV[1], 'unit', unit, 'item_code', item,
           'amount', amount, 'channel', ARGV[2], 'channel_trade_no', ARGV[3],
           'paid_at', ARGV[5], 'notice_key', KEYS[1])
return {'PAID'}
