-- lookup.lua: the open per-item code (一费一码): one payer's unpaid notices of one item, on one
-- shard. The module asks every shard at once (pipelined, one round trip).
-- KEYS[1] the item's ID-number index on this shard ("{gpN}:pidx:<item>:<keyed hash of the ID>",
-- a set of sequences, filled by create.lua). ARGV[1] notice key prefix ("{gpN}:n:"),
-- ARGV[2] now (unix seconds), ARGV[3] at most this many notices.
-- -> {seq, amount, payer_name_masked, due_at, division, yy, ...} of the unpaid, unexpired
-- notices: the masked name only (the sealed one is never read here).
local reply = {}
local max = tonumber(ARGV[3])
for _, seq in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local n = redis.call('HMGET', ARGV[1] .. seq,
                         'status', 'amount', 'payer_name_masked', 'due_at', 'division',
                         'yy')
    if n[1] == 'UNPAID' and tonumber(n[4]) >= tonumber(ARGV[2]) then
        reply[#reply + 1] = seq
        for i = 2, 6 do
            reply[#reply + 1] = n[i]
        end
        if #reply >= 6 * max then
            break
        end
    end
end
return reply
