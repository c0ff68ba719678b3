-- refund_queue.lua: the refund plugin takes a refund in hand (handle() of a refund.requested
-- event): the refund id goes into the shard's refund queue, once (docs/internals.md, "Refund
-- plugin"). A redelivered event changes nothing: a refund in the queue (due, waiting or leased)
-- keeps its score, a dead-lettered one stays with ops, a final one is left alone.
-- KEYS[1] notice, KEYS[2] the shard's refund queue; both on the notice's shard.
-- ARGV[1] refund id, ARGV[2] nn (the refund is fields "r<nn>.*" of the notice), ARGV[3] due
-- (unix ms: now, or for a bank's refund the time it is overdue), ARGV[4] the stream entry id
-- of refund.requested (kept for the dead letter).
-- -> {'QUEUED'} | {'ALREADY'} | {'DEAD'} | {'FINAL', status} | {'NONE'}
local p = 'r' .. ARGV[2] .. '.'
local f = redis.call('HMGET', KEYS[1], p .. 'status', p .. 'dead_at')
if not f[1] then
    return {'NONE'}
end
if f[1] ~= 'REFUNDING' then
    return {'FINAL', f[1]}
end
if f[2] then
    return {'DEAD'}
end
if redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1]) == 0 then
    return {'ALREADY'}
end
redis.call('HSET', KEYS[1], p .. 'entry_id', ARGV[4])
return {'QUEUED'}
