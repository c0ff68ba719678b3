-- wrk-replay.lua: sends prepared raw requests (NUL-separated, in the file named after "--"),
-- each once, in order: signed unit requests carry their own nonce and may not be repeated.
local requests = {}
local i = 0

function init(args)
    local f = assert(io.open(args[1], "rb"))
    local data = f:read("*a")
    f:close()
    for r in string.gmatch(data, "([^%z]+)%z") do
        requests[#requests + 1] = r
    end
end

function request()
    i = i + 1
    if i > #requests then
        i = 1    -- past the end: replays, which wrk counts as non-2xx
    end
    return requests[i]
end
