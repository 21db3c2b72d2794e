-- Claims slots for one socket in a per-user HASH, all or nothing, under a cap counted in
-- distinct slots (trip subscriptions: slot = trip id; connections: slot = socket id).
-- Fields are "<slot>\30<node>\31<sid>" with the owning node as value. Entries of nodes that
-- are no longer alive are dropped first, so a dead node's slots free themselves.
--
-- Liveness comes in as the node's view of the registry (ARGV[8]: live node ids, "\31"
-- separated, this node among them): the script touches only the user's HASH, one slot on a
-- Redis Cluster. An entry of a node missing from that list is not dropped on the node's
-- word alone: unless ARGV[9] is "1" the script writes nothing and returns those nodes, and
-- the node asks again with a fresh read of the registry (a node that started a moment ago
-- is not taken for dead).
--
-- KEYS[1] the user's HASH
-- ARGV[1] (unused)   ARGV[2] cap   ARGV[3] this node id   ARGV[4] socket id
-- ARGV[5] HASH TTL ms   ARGV[6] (unused)
-- ARGV[7] deadline, ms in Redis time (0 = none): past it the script does nothing
-- ARGV[8] live node ids   ARGV[9] "1" = the list is fresh: drop entries of other nodes
-- ARGV[10..] slots to claim
-- Returns {1, active} when granted, {0, active} when the cap would be exceeded, {2, 0} when
-- it ran after its deadline (nothing written), {3, node, …} when entries of nodes not in the
-- list were found and the list was not fresh (nothing written).
local deadline = tonumber(ARGV[7])
if deadline > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then return {2, 0} end
end
local cap = tonumber(ARGV[2])
local alive = {}
alive[ARGV[3]] = true
for node in string.gmatch(ARGV[8], '[^\31]+') do alive[node] = true end
local fresh = ARGV[9] == '1'

local all = redis.call('HGETALL', KEYS[1])
local active = {}
local dead = {}
local unknown = {}
local n = 0
for i = 1, #all, 2 do
  local field, node = all[i], all[i + 1]
  if alive[node] then
    local slot = string.match(field, '^(.-)\30')
    if slot and not active[slot] then
      active[slot] = true
      n = n + 1
    end
  else
    dead[#dead + 1] = field
    unknown[node] = true
  end
end
if #dead > 0 then
  if not fresh then
    local out = {3}
    for node in pairs(unknown) do out[#out + 1] = node end
    return out
  end
  for _, field in ipairs(dead) do redis.call('HDEL', KEYS[1], field) end
end

local new = 0
local seen = {}
for i = 10, #ARGV do
  local s = ARGV[i]
  if not active[s] and not seen[s] then
    seen[s] = true
    new = new + 1
  end
end
if n + new > cap then
  return {0, n}
end
local owner = '\30' .. ARGV[3] .. '\31' .. ARGV[4]
for i = 10, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i] .. owner, ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, n + new}
