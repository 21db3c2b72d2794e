-- Redis Cluster: the trip's part of an accepted location update, on the trip room's slot:
-- the trip's latest position and the frame to its room, in one step, so the stored value
-- and the broadcast never diverge.
-- KEYS[1] latest position of the trip   KEYS[2] the trip room's channel
-- ARGV[1] Location JSON   ARGV[2] location TTL ms   ARGV[3] frame
-- ARGV[4] deadline, ms in Redis time (0 = none)
-- Returns 1, or 2 when it ran after its deadline (nothing written).
local deadline = tonumber(ARGV[4])
if deadline > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then return 2 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SPUBLISH', KEYS[2], ARGV[3])
return 1
