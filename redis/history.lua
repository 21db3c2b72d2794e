-- Events of a room's history after `since`, oldest first, and whether that is all of them.
-- Complete means no event newer than `since` was trimmed: `since` is at least the largest
-- id ever deleted from the stream (XINFO's max-deleted-entry-id, Redis 7). A stream that no
-- longer exists (idle past the window) is complete only if it never held anything.
--
-- KEYS[1] history stream   ARGV[1] since (an event id)   ARGV[2] max events returned
-- Returns {complete(0|1), id1, event1, tail1, id2, event2, tail2, …}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local max_deleted = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then max_deleted = info[i + 1] end
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local sms, sseq = parse(ARGV[1])
local dms, dseq = parse(max_deleted)
local complete = 1
if dms > sms or (dms == sms and dseq > sseq) then complete = 0 end
local out = {complete}
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
for _, e in ipairs(entries) do
  local fields = e[2]
  local ev, tail
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then ev = fields[i + 1] elseif fields[i] == 't' then tail = fields[i + 1] end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = ev
  out[#out + 1] = tail
end
return out
