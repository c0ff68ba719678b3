-- anomaly_case.lua: the anomaly plugin's cases (docs/internals.md, "Anomaly plugin"). Money
-- that reached the platform for a notice but could not pay it (settle.lua's anomaly stream:
-- SECOND_PAYMENT, AMOUNT_MISMATCH, NOT_PAYABLE, TRADE_NO_REUSED) becomes a case, kept in the
-- notice's hash as fields "case:<id>.*" (so it leaves Redis with its notice, archived with
-- it), <id> the anomaly's stream entry id. States: OPEN -> REFUNDING -> REFUNDED, or OPEN ->
-- RESOLVED (with a note); a failed refund takes REFUNDING back to OPEN.
-- KEYS[1] notice, KEYS[2] the shard's refunds stream, KEYS[3] the shard's bank refunds index
-- (refund.lua), KEYS[4] {gpN}:anomaly:cases (hash: case id -> notice seq, every case of the
-- shard whose notice is in Redis), KEYS[5] {gpN}:anomaly:open (sorted set of the cases not
-- closed, score the entry id's ms), KEYS[6] {gpN}:final; all on the notice's shard.
-- ARGV[1] action, ARGV[2] case id, ARGV[3] now (unix seconds), then per action:
--   open        ARGV[4] payment code, [5] reason, [6] channel, [7] channel trade no, [8] amount
--               (fen), [9] paid_at, [10] recorded_at, [11] owner, [12] '1' to refund at once
--               (the policy), [13] the refund's reason (text), [14] who refunds
--               -> {'OPENED', state, refund id | '', refund's answer | ''} | {'EXISTS', state,
--                  refund id | ''} | {'NONE'} (no such notice)
--   refund      ARGV[4] who, [5] the refund's reason (text)
--               -> {'REFUNDING', refund id} | {'EXISTS', refund id} (in flight already) |
--                  {'INVALID_STATE', state} | {'LIMIT'} (99 refunds) | {'NONE'}
--   resolve     ARGV[4] who, [5] note -> {'RESOLVED'} | {'INVALID_STATE', state} | {'NONE'}
--   refund_done ARGV[4] refund id, [5] SUCCEEDED | FAILED, [6] the channel's reason
--               -> {'MOVED', state} | {'DUP', state} | {'STALE', state} (another refund of
--                  the case) | {'NONE'}
-- A refund of a case is made exactly as refund.lua makes a unit's: fields "r<nn>.*" of the
-- notice (origin 'anomaly', anomaly_id, the anomaly's own channel, trade number and amount;
-- not counted in the notice's refunding/refunded amounts, not in its "refunds" list),
-- refund.requested on the refunds stream, and for a bank payment the bank refunds index.
local id, now = ARGV[2], ARGV[3]
local p = 'case:' .. id .. '.'
local seq = string.match(KEYS[1], '(%d+)$')

local function log(what, who)
    local old = redis.call('HGET', KEYS[1], p .. 'log')
    local line = now .. ' ' .. what .. ' ' .. who
    redis.call('HSET', KEYS[1], p .. 'log', old and (old .. '\n' .. line) or line)
end

local function close(state)
    redis.call('HSET', KEYS[1], p .. 'state', state, p .. 'closed_at', now)
    redis.call('ZREM', KEYS[5], id)
    -- a final notice waits keep_s from now: the closed case stays to be seen
    redis.call('ZADD', KEYS[6], 'XX', now, seq)
end

local function refund(who, text)
    local f = redis.call('HMGET', KEYS[1], p .. 'state', p .. 'payment_code', p .. 'channel',
                         p .. 'channel_trade_no', p .. 'amount', p .. 'refund_id')
    if not f[1] then
        return {'NONE'}
    end
    if f[1] == 'REFUNDING' then
        return {'EXISTS', f[6]}
    end
    if f[1] ~= 'OPEN' then
        return {'INVALID_STATE', f[1]}
    end
    local n = redis.call('HMGET', KEYS[1], 'refund_seq', 'unit')
    local s = tonumber(n[1] or '0') + 1
    if s > 99 then
        return {'LIMIT'}
    end
    local nn = string.format('%02d', s)
    local q = 'r' .. nn .. '.'
    local rid = f[2] .. 'R' .. nn
    redis.call('HSET', KEYS[1], 'refund_seq', s,
               q .. 'amount', f[5], q .. 'status', 'REFUNDING', q .. 'origin', 'anomaly',
               q .. 'anomaly_id', id, q .. 'reason', text, q .. 'channel', f[3],
               q .. 'channel_trade_no', f[4], q .. 'created_at', now,
               p .. 'state', 'REFUNDING', p .. 'refund_id', rid)
    log('refund ' .. rid, who)
    redis.call('XADD', KEYS[2], '*', 'type', 'refund.requested', 'refund_id', rid,
               'payment_code', f[2], 'unit', n[2] or '', 'notice_key', KEYS[1],
               'amount', f[5], 'origin', 'anomaly', 'anomaly_id', id, 'channel', f[3],
               'channel_trade_no', f[4], 'paid_amount', f[5], 'created_at', now)
    -- a bank carries its own refunds (refund.lua): "<bank id>:<bank_trade_no>"
    if f[3] == 'bank' then
        local sep = string.find(f[4], ':', 1, true)
        if sep then
            redis.call('HSET', KEYS[3], rid, table.concat({string.sub(f[4], 1, sep - 1),
                       string.sub(f[4], sep + 1), f[5], now, text}, '\t'))
        end
    end
    return {'REFUNDING', rid}
end

local action = ARGV[1]

if action == 'open' then
    if redis.call('EXISTS', KEYS[1]) == 0 then
        return {'NONE'}
    end
    local st = redis.call('HGET', KEYS[1], p .. 'state')
    if st then
        return {'EXISTS', st, redis.call('HGET', KEYS[1], p .. 'refund_id') or ''}
    end
    redis.call('HSET', KEYS[1], p .. 'state', 'OPEN', p .. 'payment_code', ARGV[4],
               p .. 'reason', ARGV[5], p .. 'channel', ARGV[6], p .. 'channel_trade_no', ARGV[7],
               p .. 'amount', ARGV[8], p .. 'paid_at', ARGV[9], p .. 'recorded_at', ARGV[10],
               p .. 'owner', ARGV[11], p .. 'opened_at', now)
    log('opened', 'worker')
    redis.call('HSET', KEYS[4], id, seq)
    redis.call('ZADD', KEYS[5], tonumber(string.match(id, '^(%d+)')), id)
    if ARGV[12] == '1' then
        local r = refund(ARGV[14], ARGV[13])
        if r[1] == 'REFUNDING' then
            return {'OPENED', 'REFUNDING', r[2], 'REFUNDING'}
        end
        return {'OPENED', 'OPEN', '', r[1]}
    end
    return {'OPENED', 'OPEN', '', ''}
end

if action == 'refund' then
    return refund(ARGV[4], ARGV[5])
end

if action == 'resolve' then
    local st = redis.call('HGET', KEYS[1], p .. 'state')
    if not st then
        return {'NONE'}
    end
    if st ~= 'OPEN' then
        return {'INVALID_STATE', st}
    end
    redis.call('HSET', KEYS[1], p .. 'note', ARGV[5], p .. 'resolved_by', ARGV[4])
    close('RESOLVED')
    log('resolved', ARGV[4])
    return {'RESOLVED'}
end

if action == 'refund_done' then
    local f = redis.call('HMGET', KEYS[1], p .. 'state', p .. 'refund_id')
    if not f[1] then
        return {'NONE'}
    end
    if f[2] ~= ARGV[4] then
        return {'STALE', f[1]}
    end
    if f[1] ~= 'REFUNDING' then
        return {'DUP', f[1]}
    end
    if ARGV[5] == 'SUCCEEDED' then
        close('REFUNDED')
        log('refunded ' .. ARGV[4], 'channel')
        return {'MOVED', 'REFUNDED'}
    end
    redis.call('HSET', KEYS[1], p .. 'state', 'OPEN', p .. 'error', ARGV[6])
    log('refund_failed ' .. ARGV[4], 'channel')
    return {'MOVED', 'OPEN'}
end

return redis.error_reply('anomaly_case.lua: unknown action')
