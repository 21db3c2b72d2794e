//! Every Redis key and channel name, built under the configured prefix. Nothing outside
//! `engine::redis` and this module spells a key. TTLs are next to each key's writer and in
//! `redis/README.md`.
//!
//! Tenant and id components are escaped (`%` → `%25`, `:` → `%3A`) so that `a:b` + `c` and
//! `a` + `b:c` can never name the same key.

use crate::domain::RoomKey;
use crate::domain::area::Cell;
use crate::domain::{Tenant, TripId, UserId};

/// Key and channel builder for one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['%', ':']) { s.replace('%', "%25").replace(':', "%3A").into() } else { s.into() }
}

fn unesc(s: &str) -> String {
    s.replace("%3A", ":").replace("%25", "%")
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    /// Pub/sub channel of a room: `{p}:room:{tenant}:{room}`.
    pub fn room_channel(&self, room: &RoomKey) -> String {
        format!("{}:room:{}:{}", self.prefix, esc(room.tenant()), room.name())
    }

    /// Prefix shared by every room channel (to map a message back to its room).
    pub fn room_channel_prefix(&self) -> String {
        format!("{}:room:", self.prefix)
    }

    /// Inverse of [`Keys::room_channel`].
    pub fn room_from_channel(&self, channel: &str) -> Option<RoomKey> {
        let rest = channel.strip_prefix(&self.room_channel_prefix())?;
        let (tenant, name) = rest.split_once(':')?;
        Some(RoomKey::named(&Tenant(unesc(tenant)), name))
    }

    /// Bounded history of a room's recoverable events (stream; count-bounded, TTL = the
    /// history window, refreshed by each event).
    pub fn history(&self, room: &RoomKey) -> String {
        format!("{}:hist:{}:{}", self.prefix, esc(room.tenant()), room.name())
    }

    /// Sliding rate window of a driver's location updates (ZSET, TTL 60 s).
    pub fn location_window(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:rl:loc:{}:{}", self.prefix, esc(&tenant.0), esc(&driver.0))
    }

    /// Latest position of a driver (string, TTL = location TTL).
    pub fn driver_location(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:loc:drv:{}:{}", self.prefix, esc(&tenant.0), esc(&driver.0))
    }

    /// Latest position on a trip (string, TTL = location TTL).
    pub fn trip_location(&self, tenant: &Tenant, trip: &TripId) -> String {
        format!("{}:loc:trip:{}:{}", self.prefix, esc(&tenant.0), esc(&trip.0))
    }

    /// GEO index of a tenant's live drivers (TTL = location TTL, refreshed by updates).
    pub fn geo(&self, tenant: &Tenant) -> String {
        format!("{}:geo:{}", self.prefix, esc(&tenant.0))
    }

    /// Last-update time of each driver in the GEO index (ZSET, same TTL).
    pub fn geo_fresh(&self, tenant: &Tenant) -> String {
        format!("{}:geofresh:{}", self.prefix, esc(&tenant.0))
    }

    /// Snapshot-sampling marker of a driver (string, TTL = snapshot interval).
    pub fn snapshot_marker(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:snap:{}:{}", self.prefix, esc(&tenant.0), esc(&driver.0))
    }

    /// A user's trip-subscription slots (HASH, TTL 24 h refreshed on claim).
    pub fn subscriptions(&self, tenant: &Tenant, user: &UserId) -> String {
        format!("{}:subs:{}:{}", self.prefix, esc(&tenant.0), esc(&user.0))
    }

    /// A user's connection slots (HASH, TTL 24 h refreshed on claim).
    pub fn connections(&self, tenant: &Tenant, user: &UserId) -> String {
        format!("{}:conns:{}:{}", self.prefix, esc(&tenant.0), esc(&user.0))
    }

    /// SSE streams open on a room, by owning node (HASH, TTL 24 h refreshed on claim).
    pub fn sse_streams(&self, tenant: &Tenant, room: &UserId) -> String {
        format!("{}:sse:{}:{}", self.prefix, esc(&tenant.0), room.0)
    }

    /// A driver's offer subscriptions, one slot per subscribed socket (HASH, TTL 24 h
    /// refreshed on claim; entries of dead nodes do not count).
    pub fn offer_slots(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:offers:{}:{}", self.prefix, esc(&tenant.0), esc(&driver.0))
    }

    /// A driver's offer filters (JSON string, TTL 24 h from the last `driver:subscribe`:
    /// the lifetime of the driver's offer slots, without which the filters grant nothing).
    pub fn offer_filters(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:offerf:{}:{}", self.prefix, esc(&tenant.0), esc(&driver.0))
    }

    /// Stored availability of the tenant's drivers that are not `OFFLINE` (HASH driver →
    /// `AVAILABLE` or `BUSY`, then `\x1e` and the active trip when there is one; TTL 24 h
    /// refreshed by each derivation that leaves it non-empty).
    pub fn presence(&self, tenant: &Tenant) -> String {
        format!("{}:presence:{}", self.prefix, esc(&tenant.0))
    }

    /// Tenants with a non-empty presence HASH (SET of tenant names; TTL 24 h refreshed
    /// like the HASHes).
    pub fn presence_tenants(&self) -> String {
        format!("{}:presence-tenants", self.prefix)
    }

    /// A "first one wins" mark (string, TTL given by its user): one presence sweep per
    /// tick, one arrival event per trip and target.
    pub fn once_sweep(&self, tick: u64) -> String {
        format!("{}:once:sweep:{tick}", self.prefix)
    }

    /// The arrival mark of a trip and target.
    pub fn once_arrival(&self, tenant: &Tenant, trip: &TripId, target: &str) -> String {
        format!("{}:once:arrival:{}:{}:{target}", self.prefix, esc(&tenant.0), esc(&trip.0))
    }

    /// Nodes watching a geo cell of a tenant (HASH node → `1`; TTL 24 h refreshed by each
    /// watch): the location path publishes to the cell's room while it exists.
    pub fn cell_watchers(&self, tenant: &Tenant, cell: Cell) -> String {
        format!("{}{}", self.cell_watchers_prefix(tenant), cell.name())
    }

    /// [`Keys::cell_watchers`] without the cell name (`redis/location.lua` appends the
    /// name of a driver's previous cell).
    pub fn cell_watchers_prefix(&self, tenant: &Tenant) -> String {
        format!("{}:watch:{}:", self.prefix, esc(&tenant.0))
    }

    /// The room channel of a geo cell without the cell name (as [`Keys::room_channel`] of
    /// `RoomKey::area_cell`).
    pub fn cell_channel_prefix(&self, tenant: &Tenant) -> String {
        format!("{}:room:{}:{}", self.prefix, esc(&tenant.0), crate::domain::rooms::AREA_CELL)
    }

    /// Every (cell, node) watch of a tenant (SET of `cell \x1f node`; TTL 24 h refreshed by
    /// each watch): while it is absent, a location update spends one `EXISTS` on areas.
    pub fn area_watches(&self, tenant: &Tenant) -> String {
        format!("{}:areas:{}", self.prefix, esc(&tenant.0))
    }

    /// Prefix of node heartbeat keys; `{p}:node:{id}` holds the node's stats JSON with a
    /// TTL of three heartbeat intervals.
    pub fn node_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    /// Registry of nodes (ZSET node id → last beat in ms; entries older than the heartbeat
    /// TTL are dropped when read; TTL 24 h refreshed by every beat).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Heartbeat key of a node.
    pub fn node(&self, node: &str) -> String {
        format!("{}{}", self.node_prefix(), node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_cannot_collide_and_channels_map_back_to_rooms() {
        let k = Keys::new("fc");
        let a = k.driver_location(&Tenant("a:b".into()), &UserId("c".into()));
        let b = k.driver_location(&Tenant("a".into()), &UserId("b:c".into()));
        assert_ne!(a, b);
        let room = RoomKey::named(&Tenant("t:1%".into()), "trip:x:subscribers");
        let ch = k.room_channel(&room);
        assert_eq!(ch, "fc:room:t%3A1%25:trip:x:subscribers");
        assert_eq!(k.room_from_channel(&ch), Some(room));
        let tenant = Tenant("t:1".into());
        let cell = Cell(-3, 7);
        let ch = k.room_channel(&RoomKey::area_cell(&tenant, cell));
        assert_eq!(ch, format!("{}{}", k.cell_channel_prefix(&tenant), cell.name()));
        assert_eq!(k.room_from_channel(&ch), Some(RoomKey::area_cell(&tenant, cell)));
    }
}
