-- Events of a room's history after `since`, oldest first, and whether that is all of them.
-- Complete means the history still links back to `since`: the first entry after it names
-- as the entry before it (publish.lua's `p`) `since` itself or an entry older than `since`
-- (a client's last id may be a volatile frame's, which is no entry), but not "0-0" (the
-- stream began after `since`); or, when nothing is newer, `since` is still there. The
-- chain breaks wherever events are gone — trimmed by a bound, expired with the key, or
-- lost by a Redis that restarted without its data — so a replay across any of those says
-- so. Entries written before the chain fall back to the stream's
-- max-deleted-entry-id (Redis 7): no event newer than `since` was deleted. A stream that
-- no longer exists is not complete (whether it held anything is unknown): -1.
--
-- KEYS[1] history stream   ARGV[1] since (an event id)   ARGV[2] max events returned
-- Returns {complete(1|0|-1), id1, event1, tail1, flags1, except1, id2, …}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function le(a, b) -- id a <= id b
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq <= bseq)
end
local function no_newer_deleted()
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local max_deleted = '0-0'
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then max_deleted = info[i + 1] end
  end
  return le(max_deleted, ARGV[1])
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
local out = {0}
for n, e in ipairs(entries) do
  local fields = e[2]
  local ev, tail, prev, flags, except = nil, nil, nil, '0', ''
  for i = 1, #fields, 2 do
    local k = fields[i]
    if k == 'e' then ev = fields[i + 1]
    elseif k == 't' then tail = fields[i + 1]
    elseif k == 'p' then prev = fields[i + 1]
    elseif k == 'f' then flags = fields[i + 1]
    elseif k == 'x' then except = fields[i + 1] end
  end
  if n == 1 then
    if prev then
      if prev == ARGV[1] or (prev ~= '0-0' and le(prev, ARGV[1])) then out[1] = 1 end
    elseif no_newer_deleted() then
      out[1] = 1
    end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = ev
  out[#out + 1] = tail
  out[#out + 1] = flags
  out[#out + 1] = except
end
if #entries == 0 then
  if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0 or no_newer_deleted() then out[1] = 1 end
end
return out
