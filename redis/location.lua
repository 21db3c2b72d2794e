-- One accepted-or-refused driver location update, in one round trip (CONTRACT §2).
-- Cluster-wide rate check (minimum interval + sliding minute), latest position by driver
-- and by trip with TTL, GEO index + freshness, snapshot-sampling decision, publish.
-- Refused updates write nothing, so they never count toward a window.
--
-- KEYS[1] rate window ZSET of the driver     KEYS[2] latest position of the driver
-- KEYS[3] latest position of the trip        KEYS[4] GEO index of the tenant's drivers
-- KEYS[5] freshness ZSET of the tenant        KEYS[6] snapshot-sampling marker of the driver
-- ARGV[1] min interval ms   ARGV[2] max per minute   ARGV[3] location TTL ms
-- ARGV[4] snapshot interval ms   ARGV[5] Location JSON   ARGV[6] lng   ARGV[7] lat
-- ARGV[8] driver id (GEO member)   ARGV[9] "1" when the update names a trip
-- ARGV[10] channel to publish on ("" = none)   ARGV[11] frame to publish
-- ARGV[12] unique window entry id
-- KEYS[7] SSE streams watching the driver's location (HASH; absent = nobody watches)
-- ARGV[13] channel of the driver's location room   ARGV[14] frame for it
-- ARGV[15] deadline, ms in Redis time (0 = none): past it the update is not applied
-- KEYS[8] the tenant's area watches SET (absent = no live area watches any cell)
-- ARGV[16] cell size, degrees   ARGV[17] cell watchers key prefix   ARGV[18] cell channel
-- prefix (both end inside the hash tag: the cell name and `}` follow)   ARGV[19] the update's cell name   ARGV[20] head of the cell rooms' frame (the
-- Location JSON, ARGV[5], follows it)
-- The frame goes to the update's cell and, when the driver moved out of it, to the cell of
-- its previous position, each only while some node watches that cell (the cell formula is
-- `domain::area::Cell::of`).
-- Returns {1, sampled(0|1), came_live(0|1: the driver had no fresh position)} when accepted, {0, retryAfterMs} when refused, {2, 0} when it
-- ran after its deadline (the node has answered UNAVAILABLE; nothing written).
-- (The clock, the deadline and the rate check come first: `rate_window.lua`.)
local ttl = tonumber(ARGV[3])

local cells = {}
if redis.call('EXISTS', KEYS[8]) == 1 then
  cells[1] = ARGV[19]
  -- The previous position, from the GEO index (before this update's GEOADD below).
  local prev = redis.call('GEOPOS', KEYS[4], ARGV[8])[1]
  if prev then
    local size = tonumber(ARGV[16])
    local function idx(v)
      local i = math.floor(tonumber(v) / size)
      if i == 0 then i = 0 end
      return string.format('%d', i)
    end
    local pc = 'c' .. idx(prev[2]) .. '_' .. idx(prev[1])
    if pc ~= ARGV[19] then cells[2] = pc end
  end
end

-- The latest position lives the location TTL: none stored means the driver had no fresh
-- position (it "comes live"). One `SET … GET` stores the new one and reads the previous.
local came_live = 0
if not redis.call('SET', KEYS[2], ARGV[5], 'PX', ttl, 'GET') then came_live = 1 end
if ARGV[9] == '1' then
  redis.call('SET', KEYS[3], ARGV[5], 'PX', ttl)
end
local sampled = 0
if redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[4]) then sampled = 1 end
window_expiry(sampled)

-- GEO cells end at ±85.05112878° (Web Mercator); a valid position nearer a pole is indexed at
-- that edge (GEOADD would fail after the writes above and leave half an update).
local glat = ARGV[7]
if tonumber(glat) > 85.05112878 then glat = '85.05112878' elseif tonumber(glat) < -85.05112878 then glat = '-85.05112878' end
redis.call('GEOADD', KEYS[4], ARGV[6], glat, ARGV[8])
redis.call('ZADD', KEYS[5], now, ARGV[8])
-- Housekeeping of the tenant's index rides on sampled updates (one per driver per
-- snapshot interval, so at least one per interval while any driver is live; every update
-- when the interval is not shorter than the TTL): drivers silent for longer than the TTL
-- leave the index, and the index expires with the tenant's last sampled update. Both stay
-- bounded by the number of live drivers.
if sampled == 1 or tonumber(ARGV[4]) >= ttl then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now - ttl, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('ZREM', KEYS[5], unpack(stale))
    redis.call('ZREM', KEYS[4], unpack(stale))
  end
  redis.call('PEXPIRE', KEYS[4], ttl + tonumber(ARGV[4]))
  redis.call('PEXPIRE', KEYS[5], ttl + tonumber(ARGV[4]))
end

if ARGV[10] ~= '' then
  redis.call('PUBLISH', ARGV[10], ARGV[11])
end
for _, cell in ipairs(cells) do
  if redis.call('EXISTS', ARGV[17] .. cell .. '}') == 1 then
    redis.call('PUBLISH', ARGV[18] .. cell .. '}', ARGV[20] .. ARGV[5])
  end
end
-- The driver's SSE location stream costs one EXISTS while nobody follows it.
if redis.call('EXISTS', KEYS[7]) == 1 then
  redis.call('PUBLISH', ARGV[13], ARGV[14])
end
return {1, sampled, came_live}
