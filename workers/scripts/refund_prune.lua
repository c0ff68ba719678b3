-- refund_prune.lua: a dead-lettered refund that has ended since (a late notification at the
-- edge, a bank's late answer) or whose notice is gone leaves the shard's dead refunds.
-- KEYS[1] notice, KEYS[2] the shard's dead refunds. ARGV[1] refund id, ARGV[2] nn.
-- -> 1 (pruned) | 0 (still REFUNDING: kept for ops)
local st = redis.call('HGET', KEYS[1], 'r' .. ARGV[2] .. '.status')
if st == 'REFUNDING' then
    return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
