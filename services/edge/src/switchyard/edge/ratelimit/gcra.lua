-- GCRA check-and-charge (or settle) for one subject's two limits, atomically in Redis.
-- The arithmetic is gcra.py's, transliterated; see its docstring for the units.
--
-- KEYS[1]: the subject's requests key, KEYS[2]: its tokens key (one hash tag: one slot).
-- Each holds "<level> <at>": the level (integer) as written at <at> (ms, Redis clock).
-- ARGV[1]: "acquire" | "settle"; ARGV[2]: period (ms); ARGV[3]: rpm; ARGV[4]: tpm
--   (0 = unlimited); ARGV[5]: the request's tokens (acquire) or used - reserved (settle);
--   ARGV[6]: settle only: the most debt a key may carry (a level).
-- Returns {allowed (0|1), requests level, tokens level}: the levels after the charge when
-- allowed, without it when refused, -1 for an unlimited limit.

-- Redis's own clock: every edge replica sees the same time, synced or not.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local period = tonumber(ARGV[2])

local function load(key, limit)
    local value = redis.call('GET', key)
    if not value then
        return 0
    end
    local space = string.find(value, ' ', 1, true)
    local level = tonumber(string.sub(value, 1, space - 1))
    local elapsed = now - tonumber(string.sub(value, space + 1))
    -- A clock that went back (a failover to another server) drains nothing.
    if elapsed > 0 then
        level = level - elapsed * limit
        if level < 0 then
            return 0
        end
    end
    return level
end

local function store(key, level, limit)
    if level <= 0 then
        redis.call('DEL', key)
    else
        -- The key lives until its TAT: from then on an absent key means the same.
        redis.call('SET', key, string.format('%.0f %.0f', level, now),
            'PX', math.ceil(level / limit))
    end
end

local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])

if ARGV[1] == 'settle' then
    local level = load(KEYS[2], tpm) + cost * period
    local cap = tonumber(ARGV[6])
    if level > cap then
        level = cap
    end
    store(KEYS[2], level, tpm)
    return {1, -1, math.max(level, 0)}
end

local requests, tokens = -1, -1
local allowed = 1
if rpm > 0 then
    requests = load(KEYS[1], rpm)
    if requests + period > rpm * period then
        allowed = 0
    end
end
if tpm > 0 then
    tokens = load(KEYS[2], tpm)
    if tokens + cost * period > tpm * period then
        allowed = 0
    end
end
-- All or nothing: a refusal writes nothing.
if allowed == 1 then
    if rpm > 0 then
        requests = requests + period
        store(KEYS[1], requests, rpm)
    end
    if tpm > 0 and cost > 0 then
        tokens = tokens + cost * period
        store(KEYS[2], tokens, tpm)
    end
end
return {allowed, requests, tokens}
