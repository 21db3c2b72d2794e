-- Claims slots for one socket in a per-user HASH, all or nothing, under a cap counted in
-- distinct slots (trip subscriptions: slot = trip id; connections: slot = socket id).
-- Fields are "<slot>\30<node>\31<sid>" with the owning node as value. Entries whose node no
-- longer has a heartbeat key are dropped first, so a dead node's slots free themselves.
--
-- KEYS[1] the user's HASH
-- ARGV[1] node heartbeat key prefix   ARGV[2] cap   ARGV[3] this node id   ARGV[4] socket id
-- ARGV[5] HASH TTL ms   ARGV[6] this node's heartbeat TTL ms
-- ARGV[7] deadline, ms in Redis time (0 = none): past it the script does nothing
-- ARGV[8..] slots to claim
-- Returns {1, active} when granted, {0, active} when the cap would be exceeded, {2, 0} when
-- it ran after its deadline (nothing written).
local deadline = tonumber(ARGV[7])
if deadline > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then return {2, 0} end
end
local prefix = ARGV[1]
local cap = tonumber(ARGV[2])
-- Our own node is alive by definition (its heartbeat key may be briefly missing after a
-- Redis restart): make sure its key exists so our entries are not dropped.
redis.call('SET', prefix .. ARGV[3], '{}', 'NX', 'PX', ARGV[6])

local all = redis.call('HGETALL', KEYS[1])
local alive = {}
local active = {}
local n = 0
for i = 1, #all, 2 do
  local field, node = all[i], all[i + 1]
  local ok = alive[node]
  if ok == nil then
    ok = redis.call('EXISTS', prefix .. node) == 1
    alive[node] = ok
  end
  if ok then
    local slot = string.match(field, '^(.-)\30')
    if slot and not active[slot] then
      active[slot] = true
      n = n + 1
    end
  else
    redis.call('HDEL', KEYS[1], field)
  end
end

local new = 0
local seen = {}
for i = 8, #ARGV do
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
for i = 8, #ARGV do
  redis.call('HSET', KEYS[1], ARGV[i] .. owner, ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, n + new}
