-- Publishes a volatile frame (chat typing, node-to-node commands) unless its deadline has
-- passed: a publish the node already answered UNAVAILABLE for must not reach anyone later.
-- KEYS[1] the channel (declared so that a Redis Cluster routes the script to its slot)
-- ARGV[1] frame   ARGV[2] deadline, ms in Redis time (0 = none)
-- ARGV[3] publish command: PUBLISH (one Redis) or SPUBLISH (Redis Cluster: sharded pub/sub)
-- Returns 1 when published, 2 when it ran after its deadline (nothing published).
local deadline = tonumber(ARGV[2])
if deadline > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then return 2 end
end
redis.call(ARGV[3], KEYS[1], ARGV[1])
return 1
