-- refund.lua: a unit asks for money of a paid notice back (POST /v1/notices/{code}/refunds).
-- One atomic decision: the sum of a notice's refunds never exceeds what was paid, whatever
-- arrives concurrently. The refund lives in the notice hash (fields "r<nn>.*",
-- docs/internals.md "Refunds"), so it leaves Redis with its notice.
-- KEYS[1] nonce, KEYS[2] notice, KEYS[3] the shard's refunds stream, KEYS[4] the shard's bank
-- refunds index (a hash: refund id -> "<bank id>\t<bank_trade_no>\t<amount>\t<created>\t<reason>",
-- the refunds banks must carry out); all on the notice's shard.
-- ARGV[1] nonce ttl, ARGV[2] unit, ARGV[3] division and ARGV[4] yy of the code, ARGV[5] payment
-- code, ARGV[6] request_id, ARGV[7] sha256 hex of the request body, ARGV[8] amount (fen),
-- ARGV[9] reason, ARGV[10] now (unix seconds).
-- -> {'REPLAY'} | {'NONE'} | {'CONFLICT'} | {'INVALID_STATE', status} | {'OVER', refundable}
--    | {'LIMIT'} (99 refunds) | {'CREATED', nn, field, value, ...} | {'EXISTS', nn, field, ...}
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    return {'REPLAY'}
end
local n = redis.call('HMGET', KEYS[2], 'status', 'unit', 'division', 'yy', 'channel',
                     'channel_trade_no', 'paid_amount', 'refunded_amount', 'refunding_amount',
                     'refund_seq', 'refunds')
if not n[1] or n[2] ~= ARGV[2] or n[3] ~= ARGV[3] or n[4] ~= ARGV[4] then
    return {'NONE'}
end

local function answer(word, nn)
    local reply = {word, nn}
    local fields = redis.call('HGETALL', KEYS[2])
    for i = 1, #fields do
        reply[#reply + 1] = fields[i]
    end
    return reply
end

local idem = redis.call('HGET', KEYS[2], 'rq:' .. ARGV[6])
if idem then
    local sep = string.find(idem, ':', 1, true)
    if string.sub(idem, 1, sep - 1) ~= ARGV[7] then
        return {'CONFLICT'}
    end
    return answer('EXISTS', string.sub(idem, sep + 1))
end

-- a notice was paid when its payment is recorded; its status may have moved on since
if not n[5] then
    return {'INVALID_STATE', n[1]}
end

local refunded = tonumber(n[8] or '0')
local refunding = tonumber(n[9] or '0')
local left = tonumber(n[7]) - refunded - refunding
if tonumber(ARGV[8]) > left then
    return {'OVER', tostring(left)}
end

local seq = tonumber(n[10] or '0') + 1
if seq > 99 then
    return {'LIMIT'}
end
local nn = string.format('%02d', seq)
local p = 'r' .. nn .. '.'
local id = ARGV[5] .. 'R' .. nn

redis.call('HSET', KEYS[2], 'refund_seq', seq,
           'refunds', n[11] and (n[11] .. ',' .. nn) or nn,
           'refunding_amount', refunding + tonumber(ARGV[8]), 'status', 'REFUNDING',
           'rq:' .. ARGV[6], ARGV[7] .. ':' .. nn,
           p .. 'amount', ARGV[8], p .. 'status', 'REFUNDING', p .. 'origin', 'notice',
           p .. 'request_id', ARGV[6], p .. 'reason', ARGV[9], p .. 'channel', n[5],
           p .. 'channel_trade_no', n[6], p .. 'created_at', ARGV[10])
redis.call('XADD', KEYS[3], '*', 'type', 'refund.requested', 'refund_id', id,
           'payment_code', ARGV[5], 'unit', ARGV[2], 'notice_key', KEYS[2],
           'amount', ARGV[8], 'origin', 'notice', 'channel', n[5],
           'channel_trade_no', n[6], 'paid_amount', n[7], 'created_at', ARGV[10])
-- a bank carries its own refunds: offered on the shard's index, read by GET /bank/v1/refunds
-- (its trade number is "<bank id>:<bank_trade_no>")
if n[5] == 'bank' then
    local sep = string.find(n[6], ':', 1, true)
    redis.call('HSET', KEYS[4], id, table.concat({string.sub(n[6], 1, sep - 1),
               string.sub(n[6], sep + 1), ARGV[8], ARGV[10], ARGV[9]}, '\t'))
end
return answer('CREATED', nn)
