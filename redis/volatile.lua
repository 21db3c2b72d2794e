-- Publishes a volatile frame (chat typing, node-to-node commands) unless its deadline has
-- passed: a publish the node already answered UNAVAILABLE for must not reach anyone later.
-- ARGV[1] channel   ARGV[2] frame   ARGV[3] deadline, ms in Redis time (0 = none)
-- Returns 1 when published, 2 when it ran after its deadline (nothing published).
local deadline = tonumber(ARGV[3])
if deadline > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then return 2 end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
