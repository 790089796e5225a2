-- Reserve (or settle) a request's token budgets, its key's and its tenant's, atomically.
-- The arithmetic is memory.py's, transliterated; `period.py` says what a bucket is.
--
-- KEYS: one hash per budget (a key's, then its tenant's: one hash tag, one slot). Fields:
--   "<bucket>" = tokens charged in that bucket; "t" = their total; "o" = the oldest bucket
--   that may still hold tokens. Every bucket in the hash lies in [o, o + span - 1].
-- ARGV[1]: "reserve" | "settle", then 5 numbers per key:
--   reserve: limit, bucket (now's), span, cost, ttl (ms: until the window has passed)
--   settle:  bucket charged, bucket (now's), span, delta (used - reserved), ttl (ms)
-- The caller gives the buckets, from its own clock: calendar periods are wall-clock time
-- in the edge's zone, which Redis does not know (and tests inject the clock).
-- Returns (reserve) {allowed, total1, oldest1, total2, oldest2}: totals after the charge
-- when allowed, without it when refused; oldest -1 when none. Settle returns 1.

-- Drops the buckets that left the window (and empty ones at the front); returns the total
-- and the oldest bucket still holding tokens (nil: none).
local function tidy(key, bucket, span)
    local oldest = tonumber(redis.call('HGET', key, 'o'))
    if not oldest then
        return 0, nil
    end
    local cutoff = bucket - span
    if oldest + span - 1 <= cutoff then
        redis.call('DEL', key)
        return 0, nil
    end
    local total = tonumber(redis.call('HGET', key, 't') or '0')
    local before = total
    local i = oldest
    while i <= bucket and i < oldest + span do
        local value = tonumber(redis.call('HGET', key, i))
        if value then
            if value > 0 and i > cutoff then
                break
            end
            redis.call('HDEL', key, i)
            total = total - value
        end
        i = i + 1
    end
    if i == oldest then
        return total, oldest
    end
    if redis.call('HLEN', key) <= 2 then -- only "t" and "o" are left
        redis.call('DEL', key)
        return 0, nil
    end
    redis.call('HSET', key, 'o', i, 't', total)
    return total, i
end

local n = #KEYS

if ARGV[1] == 'settle' then
    for k = 1, n do
        local a = 1 + (k - 1) * 5
        local charged = tonumber(ARGV[a + 1])
        local bucket = tonumber(ARGV[a + 2])
        local span = tonumber(ARGV[a + 3])
        local delta = tonumber(ARGV[a + 4])
        local key = KEYS[k]
        local exists = redis.call('HEXISTS', key, charged) == 1
        if charged > bucket - span and (exists or delta > 0) then
            local value = redis.call('HINCRBY', key, charged, delta)
            if value < 0 then -- a refund never takes a bucket below zero
                redis.call('HSET', key, charged, 0)
                delta = delta - value
            end
            redis.call('HINCRBY', key, 't', delta)
            local oldest = tonumber(redis.call('HGET', key, 'o'))
            if not oldest or charged < oldest then
                redis.call('HSET', key, 'o', charged)
            end
            if redis.call('PTTL', key) == -1 then -- recreated: it must expire all the same
                redis.call('PEXPIRE', key, ARGV[a + 5])
            end
        end
    end
    return 1
end

local allowed = 1
local totals, oldests = {}, {}
for k = 1, n do
    local a = 1 + (k - 1) * 5
    local total, oldest = tidy(KEYS[k], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
    totals[k], oldests[k] = total, oldest
    -- A spent budget refuses even a request costing nothing (base.admits).
    if total + math.max(tonumber(ARGV[a + 4]), 1) > tonumber(ARGV[a + 1]) then
        allowed = 0
    end
end
local result = {allowed}
for k = 1, n do
    local a = 1 + (k - 1) * 5
    local bucket = tonumber(ARGV[a + 2])
    local cost = tonumber(ARGV[a + 4])
    -- All or nothing: a refusal writes nothing.
    if allowed == 1 and cost > 0 then
        local key = KEYS[k]
        redis.call('HINCRBY', key, bucket, cost)
        totals[k] = redis.call('HINCRBY', key, 't', cost)
        if not oldests[k] or bucket < oldests[k] then
            oldests[k] = bucket
            redis.call('HSET', key, 'o', bucket)
        end
        -- Never shortened: a replica whose clock is behind must not expire newer buckets.
        if redis.call('PTTL', key) < tonumber(ARGV[a + 5]) then
            redis.call('PEXPIRE', key, ARGV[a + 5])
        end
    end
    result[#result + 1] = totals[k]
    result[#result + 1] = oldests[k] or -1
end
return result
