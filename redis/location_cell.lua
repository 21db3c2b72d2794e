-- Redis Cluster: the geo index's part of an accepted location update, on the slot of the
-- driver's geo cell (the tenant's GEO index and freshness set are split in cells of
-- `engine::redis::cells::GEO_CELL_DEG` degrees, so no one key takes every update).
-- KEYS[1] the cell's GEO index   KEYS[2] the cell's freshness ZSET
-- KEYS[3] the nodes watching this cell's live-area cell (HASH; absent = nobody)
-- ARGV[1] lng   ARGV[2] lat   ARGV[3] driver id   ARGV[4] location TTL ms
-- ARGV[5] snapshot interval ms   ARGV[6] "1" when the update was sampled
-- ARGV[7] "leave": the driver left this cell (it is removed; nothing else)
-- Returns {was_empty, watched}: was_empty 1 when the cell had no driver before (the node
-- registers it for the tenant), watched 1 when some node watches its area cell (the node
-- publishes the area frame to that cell's room).
local watched = redis.call('EXISTS', KEYS[3])
if ARGV[7] == 'leave' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZREM', KEYS[1], ARGV[3])
  return {0, watched}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local was_empty = 0
if redis.call('EXISTS', KEYS[2]) == 0 then was_empty = 1 end
-- GEO cells end at ±85.05112878° (Web Mercator): a position nearer a pole is indexed at that edge.
local glat = ARGV[2]
if tonumber(glat) > 85.05112878 then glat = '85.05112878' elseif tonumber(glat) < -85.05112878 then glat = '-85.05112878' end
redis.call('GEOADD', KEYS[1], ARGV[1], glat, ARGV[3])
redis.call('ZADD', KEYS[2], now, ARGV[3])
-- Housekeeping rides on sampled updates, as in location.lua: drivers silent past the TTL
-- leave the cell, and the cell expires with its last sampled update.
if ARGV[6] == '1' or tonumber(ARGV[5]) >= ttl or was_empty == 1 then
  local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('ZREM', KEYS[2], unpack(stale))
    redis.call('ZREM', KEYS[1], unpack(stale))
  end
  redis.call('PEXPIRE', KEYS[1], ttl + tonumber(ARGV[5]))
  redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[5]))
end
return {was_empty, watched}
