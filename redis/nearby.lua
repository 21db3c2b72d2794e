-- Offer candidates near a point (CONTRACT §2 offers): drivers of the tenant's GEO index
-- within a radius, nearest first, whose position is fresh. (Their offer filters are
-- per-driver keys, read by the node with one MGET: a script may only touch keys it is given.)
-- KEYS[1] GEO index of the tenant   KEYS[2] freshness ZSET
-- ARGV[1] lng   ARGV[2] lat   ARGV[3] radius km   ARGV[4] freshness bound ms
-- Returns a flat list: driver, lng, lat, … (nearest first).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- GEO cells end at ±85.05112878° (location.lua indexes positions beyond at that edge).
local lat = ARGV[2]
if tonumber(lat) > 85.05112878 then lat = '85.05112878' elseif tonumber(lat) < -85.05112878 then lat = '-85.05112878' end
local found = redis.call('GEOSEARCH', KEYS[1], 'FROMLONLAT', ARGV[1], lat, 'BYRADIUS', ARGV[3], 'km', 'ASC', 'WITHCOORD')
local out = {}
local bound = tonumber(ARGV[4])
-- In chunks: unpack() of thousands of arguments overflows Lua's stack.
local chunk = 500
for start = 1, #found, chunk do
  local stop = math.min(start + chunk - 1, #found)
  local members = {}
  for i = start, stop do members[#members + 1] = found[i][1] end
  local fresh = redis.call('ZMSCORE', KEYS[2], unpack(members))
  for j = 1, #members do
    local f = found[start + j - 1]
    if fresh[j] and now - tonumber(fresh[j]) <= bound then
      out[#out + 1] = f[1]
      out[#out + 1] = f[2][1]
      out[#out + 1] = f[2][2]
    end
  end
end
return out
