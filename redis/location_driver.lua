-- Redis Cluster: the driver's part of an accepted-or-refused location update, on the
-- driver's slot (every key here is tagged with its location room). The cluster-wide rate
-- check (minimum interval + sliding minute) decides first; a refused update writes nothing.
-- An accepted one stores the driver's latest position, decides snapshot sampling and
-- publishes to the driver's location room while SSE streams follow it. The node then writes
-- the trip's and the geo cell's parts on their own slots (`location_trip.lua`,
-- `location_cell.lua`), concurrently.
--
-- KEYS[1] rate window ZSET   KEYS[2] latest position   KEYS[3] snapshot-sampling marker
-- KEYS[4] SSE streams watching the driver's location (HASH; absent = nobody watches)
-- KEYS[5] the driver's location room channel (declared: SPUBLISH on the script's slot)
-- ARGV[1] min interval ms   ARGV[2] max per minute   ARGV[3] location TTL ms
-- ARGV[4] snapshot interval ms   ARGV[5] Location JSON   ARGV[6] unique window entry id
-- ARGV[7] deadline, ms in Redis time (0 = none): past it the update is not applied
-- ARGV[8] frame for the driver's location room
-- KEYS[6] the driver's geo-index marker: the position last written to the geo cell's index,
-- "lat,lng", living ARGV[9] ms (0: the index is written on every update)
-- ARGV[10] lat   ARGV[11] lng   ARGV[12] index slack, metres   ARGV[13] geo cell side, degrees
-- Returns {1, sampled(0|1), came_live(0|1), previous Location JSON or "", index_due(0|1)}
-- when accepted (index_due: the node writes the geo cell's index — the marker was absent,
-- the update is sampled, or the driver moved more than the slack from its indexed position
-- or into another geo cell; the marker then holds this position, so the index never lags
-- the driver by more than the slack),
-- {0, retryAfterMs} when refused, {2, 0} when it ran after its deadline (nothing written).
-- (The clock, the deadline and the rate check come first: `rate_window.lua`.)

-- The latest position lives the location TTL: none stored means the driver had no fresh
-- position (it "comes live"). One `SET … GET` stores the new one and reads the previous.
local previous = redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[3], 'GET')
local came_live = 0
if not previous then
  came_live = 1
  previous = ''
end
local sampled = 0
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[4]) then sampled = 1 end
window_expiry(sampled)
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('SPUBLISH', KEYS[5], ARGV[8])
end
local index_due = 1
if tonumber(ARGV[9]) > 0 then
  local here = ARGV[10] .. ',' .. ARGV[11]
  local indexed = redis.call('SET', KEYS[6], here, 'NX', 'PX', ARGV[9], 'GET')
  if indexed then
    local lat, lng = tonumber(ARGV[10]), tonumber(ARGV[11])
    local ilat, ilng = string.match(indexed, '^([^,]+),(.+)$')
    ilat, ilng = tonumber(ilat), tonumber(ilng)
    local moved = true
    if ilat and ilng then
      local size = tonumber(ARGV[13])
      local same_cell = math.floor(lat / size) == math.floor(ilat / size)
        and math.floor(lng / size) == math.floor(ilng / size)
      -- Metres on the local plane (exact enough within a slack of tens of metres).
      local dy = (lat - ilat) * 111195
      local dx = (lng - ilng) * 111195 * math.cos(math.rad(lat))
      local slack = tonumber(ARGV[12])
      moved = not same_cell or dx * dx + dy * dy > slack * slack
    end
    if moved or sampled == 1 then
      redis.call('SET', KEYS[6], here, 'KEEPTTL')
    else
      index_due = 0
    end
  end
end
return {1, sampled, came_live, previous, index_due}
