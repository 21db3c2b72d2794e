-- The head of `location.lua` and `location_driver.lua` (joined in front of each by
-- `engine::redis`, after a line that sets `DEADLINE` and `ENTRY` to the script's ARGV of
-- those): Redis's clock as `now`; past the deadline nothing runs ({2, 0}); then the
-- cluster-wide location rate check of KEYS[1] (the driver's window ZSET) with ARGV[1]
-- minimum interval ms and ARGV[2] per-minute cap. A refused update returns {0, retryAfterMs}
-- before writing anything; an accepted one is entered in the window as ENTRY.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(DEADLINE) > 0 and now > tonumber(DEADLINE) then return {2, 0} end
local min_interval = tonumber(ARGV[1])
local max_per_minute = tonumber(ARGV[2])

if min_interval > 0 then
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #last > 0 then
    local wait = tonumber(last[2]) + min_interval - now
    if wait > 0 then return {0, wait} end
  end
end
-- Entries older than the minute are pruned only when the window looks full: the set stays
-- bounded by the cap (plus one), and most updates skip the range delete.
local count = redis.call('ZCARD', KEYS[1])
if count >= max_per_minute then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  count = redis.call('ZCARD', KEYS[1])
  if count >= max_per_minute then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local wait = tonumber(oldest[2]) + 60000 - now
    if wait < 1 then wait = 1 end
    return {0, wait}
  end
end
redis.call('ZADD', KEYS[1], now, ENTRY)
local WINDOW_NEW = count == 0

-- The window's expiry, set by the script once it knows whether the update is sampled
-- (`sampled` 1 when the snapshot-sampling marker, which lives ARGV[4] ms, was absent): a
-- minute plus the snapshot interval, renewed only when the window was empty or the update
-- is sampled. Every entry still lives its minute: an update that renews nothing came within
-- the snapshot interval of the last renewal (else the marker would have expired and the
-- update been sampled). One command fewer on most updates than renewing on every one.
local function window_expiry(sampled)
  if sampled == 1 or WINDOW_NEW then
    redis.call('PEXPIRE', KEYS[1], 60000 + tonumber(ARGV[4]))
  end
end
