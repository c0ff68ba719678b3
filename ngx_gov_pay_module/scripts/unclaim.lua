-- unclaim.lua: gives back a channel trade number claimed for a notice that does not exist
-- (ngx_gov_pay_settle.c), so that the channel's corrected callback can claim it.
-- KEYS[1] the trade index entry "{gpM}:trade:<channel>:<trade no>". ARGV[1] the payment code
-- that claimed it. Deleted only if it is still that code's. -> 1 (deleted) | 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
