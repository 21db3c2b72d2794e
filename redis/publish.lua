-- Publishes a recoverable event: appends it to the room's bounded history stream and
-- publishes the frame, in one round trip, so the stream id is the event's `eventId` on
-- every transport and replay can never miss what live delivery saw.
--
-- Each entry names the entry before it (`p`, "0-0" for the first of a stream): a chain
-- that history.lua follows to tell a complete replay from one that no longer reaches back,
-- whatever broke it (a bound, the key's expiry, a Redis that restarted without its data).
-- It also keeps the frame's flags and except field (`f`, `x`), so that a node catching up
-- after a pub/sub gap delivers each event exactly as it was published.
-- Bounds (count and age) are applied with XDEL rather than XADD MAXLEN / XTRIM: only XDEL
-- advances the stream's max-deleted-entry-id, history.lua's fallback for entries written
-- before the chain.
--
-- KEYS[1] history stream of the room
-- ARGV[1] max events kept   ARGV[2] window ms   ARGV[3] channel   ARGV[4] event name
-- ARGV[5] frame flags digit ARGV[7] except field of the frame ("" = none)
-- ARGV[6] payload tail: the JSON object without its opening
--         brace, e.g. `"emittedAt":"…","tripId":"t1"}`; the payload is
--         `{"eventId":"<id>",` .. tail
-- ARGV[8] deadline, ms in Redis time (0 = none): past it nothing is appended or published
-- ARGV[9] publish command: PUBLISH (one Redis) or SPUBLISH (Redis Cluster; the channel has
--         the history's hash tag, so both are on the script's slot)
-- Returns the event id, or "late" when it ran after its deadline.
local deadline = tonumber(ARGV[8])
if deadline > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then return 'late' end
end
local max = tonumber(ARGV[1])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if #last > 0 then prev = last[1][1] end
local len = redis.call('XLEN', KEYS[1])
if len >= max then
  for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - max + 1)) do
    redis.call('XDEL', KEYS[1], e[1])
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[4], 't', ARGV[6], 'p', prev, 'f', ARGV[5], 'x', ARGV[7])
local ms = tonumber(string.match(id, '^(%d+)'))
local cutoff = string.format('%.0f', ms - tonumber(ARGV[2]))
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '(' .. cutoff, 'COUNT', 100)) do
  redis.call('XDEL', KEYS[1], e[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local frame = ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. ARGV[7] .. '\n' .. '{"eventId":"' .. id .. '",' .. ARGV[6]
redis.call(ARGV[9], ARGV[3], frame)
return id
