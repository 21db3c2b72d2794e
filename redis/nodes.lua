-- Cluster registry of nodes for `GET /api/v1/admin/stats` (CONTRACT §4).
-- KEYS[1] registry ZSET (member: node id, score: last beat in ms)
-- ARGV[1] "beat" or "list"   ARGV[2] node key prefix   ARGV[3] heartbeat TTL ms
-- ARGV[4] (beat) this node's id   ARGV[5] (beat) its stats JSON
-- beat: writes the node's stats key with the TTL and its registry entry; returns 1.
-- list: drops nodes silent longer than the TTL; returns the live nodes' stats JSONs.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if ARGV[1] == 'beat' then
  redis.call('SET', ARGV[2] .. ARGV[4], ARGV[5], 'PX', ttl)
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], 24 * 3600 * 1000)
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('GET', ARGV[2] .. id)
  if v then out[#out + 1] = v end
end
return out
