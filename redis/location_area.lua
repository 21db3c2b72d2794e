-- Redis Cluster: an `area.position` frame to a geo cell's room while some node watches the
-- cell (live areas), on the cell room's slot: one round trip, nothing sent to nobody.
-- KEYS[1] the cell's watchers HASH   KEYS[2] the cell room's channel
-- ARGV[1] the frame
-- Returns 1 when published, 0 when nobody watches the cell.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SPUBLISH', KEYS[2], ARGV[1])
return 1
