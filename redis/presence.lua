-- Derives the availability of some drivers of one tenant again (CONTRACT §7, the rule of
-- `domain::presence::Availability::derive`) and stores it, comparing and setting in one
-- step: each change is returned to exactly one caller cluster-wide.
--
-- KEYS[1] presence HASH of the tenant (driver -> "AVAILABLE" | "BUSY", then "\30" trip)
-- KEYS[2] freshness ZSET of the tenant (driver -> last accepted update, ms)
-- KEYS[3] node registry ZSET (node -> last beat, ms)
-- KEYS[4] SET of tenants with a non-empty presence HASH
-- KEYS[3 + 2i], KEYS[4 + 2i] connection slots and offer slots HASH of driver i (values:
--   owning node)
-- ARGV[1] freshness ms   ARGV[2] node silence ms   ARGV[3] this node id   ARGV[4] tenant
-- ARGV[3 + 2i] driver i   ARGV[4 + 2i] its trip: "\0" = keep the stored one, "" = none
-- Returns {driver, availability, previous, trip, ...} for the drivers whose value changed.
--
-- On a Redis Cluster the inputs live on other slots (each driver's on its own), so the node
-- reads them first and passes them in: ARGV[1] is "given", KEYS holds the presence HASH
-- only, ARGV[2..4] as above, then per driver i ARGV[3 + 3i], ARGV[4 + 3i] driver and trip
-- and ARGV[5 + 3i] three flags "FCO" ("1"/"0": a fresh position, a live connection, a live
-- offer slot). The tenants SET is then the node's to update: the reply starts with
-- "exists" or "empty" (the HASH after the call), then the changes.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fresh_ms = tonumber(ARGV[1])
local silence = tonumber(ARGV[2])
local alive = {}
alive[ARGV[3]] = true
local function live(node)
  local ok = alive[node]
  if ok == nil then
    local beat = redis.call('ZSCORE', KEYS[3], node)
    ok = beat ~= false and tonumber(beat) >= now - silence
    alive[node] = ok
  end
  return ok
end
local function holds(key)
  for _, node in ipairs(redis.call('HVALS', key)) do
    if live(node) then return true end
  end
  return false
end

local given = ARGV[1] == 'given'
local out = {}
local n = (#ARGV - 4) / 2
if given then n = (#ARGV - 4) / 3 end
for i = 1, n do
  local driver, trip_arg = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  if given then driver, trip_arg = ARGV[2 + 3 * i], ARGV[3 + 3 * i] end
  local stored = redis.call('HGET', KEYS[1], driver)
  local previous, stored_trip = 'OFFLINE', ''
  if stored then
    local sep = string.find(stored, '\30', 1, true)
    if sep then
      previous, stored_trip = string.sub(stored, 1, sep - 1), string.sub(stored, sep + 1)
    else
      previous = stored
    end
  end
  local trip = trip_arg
  if trip_arg == '\0' then trip = stored_trip end
  local fresh, conns, offers
  if given then
    local flags = ARGV[4 + 3 * i]
    fresh = string.sub(flags, 1, 1) == '1'
    conns = function() return string.sub(flags, 2, 2) == '1' end
    offers = function() return string.sub(flags, 3, 3) == '1' end
  else
    local seen = redis.call('ZSCORE', KEYS[2], driver)
    fresh = seen ~= false and tonumber(seen) >= now - fresh_ms
    conns = function() return holds(KEYS[3 + 2 * i]) end
    offers = function() return holds(KEYS[4 + 2 * i]) end
  end
  local value = 'OFFLINE'
  if trip ~= '' and (fresh or conns()) then
    value = 'BUSY'
  elseif fresh and offers() then
    value = 'AVAILABLE'
  end
  if value == 'OFFLINE' then
    if stored then redis.call('HDEL', KEYS[1], driver) end
  else
    local v = value
    if trip ~= '' then v = value .. '\30' .. trip end
    if v ~= stored then redis.call('HSET', KEYS[1], driver, v) end
  end
  if value ~= previous then
    out[#out + 1] = driver
    out[#out + 1] = value
    out[#out + 1] = previous
    out[#out + 1] = trip
  end
end
if given then
  local state = 'empty'
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('PEXPIRE', KEYS[1], 86400000)
    state = 'exists'
  end
  table.insert(out, 1, state)
  return out
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], 86400000)
  redis.call('SADD', KEYS[4], ARGV[4])
  redis.call('PEXPIRE', KEYS[4], 86400000)
else
  redis.call('SREM', KEYS[4], ARGV[4])
end
return out
