//! Every Redis key and channel name, built under the configured prefix. Nothing outside
//! `engine::redis` and this module spells a key. TTLs are next to each key's writer and in
//! `redis/README.md`.
//!
//! Tenant and id components are escaped (`%` → `%25`, `:` → `%3A`) so that `a:b` + `c` and
//! `a` + `b:c` can never name the same key.
//!
//! **Slots.** Every key and channel carries a Redis Cluster hash tag (the part between its
//! first `{` and the next `}`, the only part a cluster hashes), so that what one script or
//! command touches together lands on one slot, and different entities spread over the
//! shards. The tag names the entity the key belongs with (`%`, `{`, `}` escaped, so a
//! client-named room cannot end its tag early):
//! - a user's state, a driver's included (rate window, latest position, sampling marker,
//!   offer slots and filters, subscription and connection slots), and the driver's location
//!   room's channel and SSE streams, which the location path writes in the same step, with
//!   the user room, `{user:<id>}`;
//! - a room's history, SSE streams and channel with the room (`{trip:<id>:subscribers}`,
//!   which also holds the trip's latest position);
//! - a geo cell's watchers with the cell's room, a geo cell of the index (Redis Cluster)
//!   with `{geo:<cell>}`;
//! - the node registry and heartbeats with `{nodes}`, and tenant-wide keys with the tenant.
//!
//! The prefix may not hold a brace (`Keys::new` refuses it): a tag in the prefix would put
//! every key on one slot.

use crate::domain::RoomKey;
use crate::domain::area::Cell;
use crate::domain::{Tenant, TripId, UserId};

/// Key and channel builder for one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['%', ':', '{', '}']) {
        s.replace('%', "%25").replace(':', "%3A").replace('{', "%7B").replace('}', "%7D").into()
    } else {
        s.into()
    }
}

fn unesc(s: &str) -> String {
    s.replace("%3A", ":").replace("%7B", "{").replace("%7D", "}").replace("%25", "%")
}

/// A hash tag: `{name}` with braces (and `%`) escaped; colons stay (they are not special
/// to the cluster, and room names are not split on them).
fn tag(name: &str) -> String {
    let name: std::borrow::Cow<'_, str> = if name.contains(['%', '{', '}']) {
        name.replace('%', "%25").replace('{', "%7B").replace('}', "%7D").into()
    } else {
        name.into()
    };
    format!("{{{name}}}")
}

fn untag(s: &str) -> Option<String> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    Some(unesc_name(inner))
}

fn unesc_name(s: &str) -> String {
    s.replace("%7B", "{").replace("%7D", "}").replace("%25", "%")
}

/// A room's part of its keys: `{name}`, or `{tag}:name` (escaped as in a tag) when the
/// room's slot is another entity's (a driver's location room).
fn room_part(name: &str) -> String {
    let own = tag(name);
    let t = room_tag(name);
    if t == own { own } else { format!("{t}:{}", &own[1..own.len() - 1]) }
}

/// Inverse of [`room_part`].
fn room_name_of(part: &str) -> Option<String> {
    let close = part.find('}')?;
    match &part[close + 1..] {
        "" => untag(part),
        rest => Some(unesc_name(rest.strip_prefix(':')?)),
    }
}

/// The tag of a user's state, a driver's included (rate window, latest position, sampling
/// marker, offer slots and filters, subscription and connection slots): its user room.
fn user_tag(user: &UserId) -> String {
    tag(&format!("user:{}", user.0))
}

/// The tag of a driver's state: the driver's user tag.
fn driver_tag(driver: &UserId) -> String {
    user_tag(driver)
}

/// The tag of a room's keys and channel: its name, but a driver's location room
/// (`driver:{id}:location`) goes with the driver's state, which the location path writes in
/// the same step.
fn room_tag(name: &str) -> String {
    match name.strip_prefix("driver:").and_then(|rest| rest.strip_suffix(":location")) {
        Some(driver) if !driver.is_empty() => driver_tag(&UserId(driver.to_string())),
        _ => tag(name),
    }
}

impl Keys {
    /// Keys under `prefix`; a prefix with a brace is refused (see the module doc).
    pub fn new(prefix: &str) -> Result<Self, String> {
        if prefix.contains(['{', '}']) {
            return Err(format!("redis prefix {prefix:?} may not contain braces: they are a cluster hash tag"));
        }
        Ok(Self { prefix: prefix.to_string() })
    }

    /// Pub/sub channel of a room: `{p}:room:{tenant}:{{room}}` (the room is the tag).
    pub fn room_channel(&self, room: &RoomKey) -> String {
        format!("{}:room:{}:{}", self.prefix, esc(room.tenant()), room_part(room.name()))
    }

    /// Prefix shared by every room channel (to map a message back to its room).
    pub fn room_channel_prefix(&self) -> String {
        format!("{}:room:", self.prefix)
    }

    /// Inverse of [`Keys::room_channel`].
    pub fn room_from_channel(&self, channel: &str) -> Option<RoomKey> {
        let rest = channel.strip_prefix(&self.room_channel_prefix())?;
        let (tenant, name) = rest.split_once(':')?;
        Some(RoomKey::named(&Tenant(unesc(tenant)), &room_name_of(name)?))
    }

    /// Bounded history of a room's recoverable events (stream; count-bounded, TTL = the
    /// history window, refreshed by each event).
    pub fn history(&self, room: &RoomKey) -> String {
        format!("{}:hist:{}:{}", self.prefix, esc(room.tenant()), room_part(room.name()))
    }

    /// Sliding rate window of a driver's location updates (ZSET, TTL 60 s).
    pub fn location_window(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:rl:loc:{}:{}", self.prefix, esc(&tenant.0), driver_tag(driver))
    }

    /// Latest position of a driver (string, TTL = location TTL).
    pub fn driver_location(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:loc:drv:{}:{}", self.prefix, esc(&tenant.0), driver_tag(driver))
    }

    /// Latest position on a trip (string, TTL = location TTL), on its room's slot.
    pub fn trip_location(&self, tenant: &Tenant, trip: &TripId) -> String {
        let room = RoomKey::trip_subscribers(tenant, trip);
        format!("{}:loc:trip:{}:{}", self.prefix, esc(&tenant.0), tag(room.name()))
    }

    /// GEO index of a tenant's live drivers (TTL = location TTL, refreshed by updates).
    pub fn geo(&self, tenant: &Tenant) -> String {
        format!("{}:geo:{}", self.prefix, tag(&tenant.0))
    }

    /// Last-update time of each driver in the GEO index (ZSET, same TTL).
    pub fn geo_fresh(&self, tenant: &Tenant) -> String {
        format!("{}:geofresh:{}", self.prefix, tag(&tenant.0))
    }

    /// On a Redis Cluster, the GEO index of one geo cell of a tenant's drivers (`cells`;
    /// TTL as [`Keys::geo`]).
    pub fn geo_cell(&self, tenant: &Tenant, cell: &str) -> String {
        format!("{}:geo:{}:{}", self.prefix, esc(&tenant.0), tag(&format!("geo:{cell}")))
    }

    /// The freshness ZSET of one geo cell (as [`Keys::geo_fresh`], on the cell's slot).
    pub fn geo_cell_fresh(&self, tenant: &Tenant, cell: &str) -> String {
        format!("{}:geofresh:{}:{}", self.prefix, esc(&tenant.0), tag(&format!("geo:{cell}")))
    }

    /// On a Redis Cluster, the nodes watching the live-area cell a geo cell belongs to (HASH
    /// node → `1`; TTL 24 h refreshed by each watch), on the geo cell's slot: the cell's
    /// location script tells from it whether to publish the area frame.
    pub fn geo_cell_watchers(&self, tenant: &Tenant, cell: &str) -> String {
        format!("{}:gwatch:{}:{}", self.prefix, esc(&tenant.0), tag(&format!("geo:{cell}")))
    }

    /// On a Redis Cluster, the geo cells of a tenant that hold drivers (SET; TTL 24 h
    /// refreshed when a cell is added): the live-driver count sums their freshness sets.
    pub fn geo_cells(&self, tenant: &Tenant) -> String {
        format!("{}:geocells:{}", self.prefix, tag(&tenant.0))
    }

    /// Snapshot-sampling marker of a driver (string, TTL = snapshot interval).
    pub fn snapshot_marker(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:snap:{}:{}", self.prefix, esc(&tenant.0), driver_tag(driver))
    }

    /// On a Redis Cluster, a driver's geo-index marker (string, TTL = the index refresh
    /// interval): while it lives, an update that stays in the driver's geo cell skips the
    /// cell's index write (`location_driver.lua` sets it when the write is due).
    pub fn geo_index_marker(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:gidx:{}:{}", self.prefix, esc(&tenant.0), driver_tag(driver))
    }

    /// A user's trip-subscription slots (HASH, TTL 24 h refreshed on claim).
    pub fn subscriptions(&self, tenant: &Tenant, user: &UserId) -> String {
        format!("{}:subs:{}:{}", self.prefix, esc(&tenant.0), user_tag(user))
    }

    /// A user's connection slots (HASH, TTL 24 h refreshed on claim).
    pub fn connections(&self, tenant: &Tenant, user: &UserId) -> String {
        format!("{}:conns:{}:{}", self.prefix, esc(&tenant.0), user_tag(user))
    }

    /// SSE streams open on a room, by owning node (HASH, TTL 24 h refreshed on claim), on
    /// the room's slot. `room` is the slot owner the streams are claimed under: the room's
    /// local name (`RoomKey::as_str`).
    pub fn sse_streams(&self, tenant: &Tenant, room: &UserId) -> String {
        let name = RoomKey::parse(&room.0).map(|r| r.name().to_string()).unwrap_or_else(|| room.0.clone());
        format!("{}:sse:{}:{}", self.prefix, esc(&tenant.0), room_part(&name))
    }

    /// A driver's offer subscriptions, one slot per subscribed socket (HASH, TTL 24 h
    /// refreshed on claim; entries of dead nodes do not count).
    pub fn offer_slots(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:offers:{}:{}", self.prefix, esc(&tenant.0), driver_tag(driver))
    }

    /// A driver's offer filters (JSON string, TTL 24 h from the last `driver:subscribe`:
    /// the lifetime of the driver's offer slots, without which the filters grant nothing).
    pub fn offer_filters(&self, tenant: &Tenant, driver: &UserId) -> String {
        format!("{}:offerf:{}:{}", self.prefix, esc(&tenant.0), driver_tag(driver))
    }

    /// Stored availability of the tenant's drivers that are not `OFFLINE` (HASH driver →
    /// `AVAILABLE` or `BUSY`, then `\x1e` and the active trip when there is one; TTL 24 h
    /// refreshed by each derivation that leaves it non-empty).
    pub fn presence(&self, tenant: &Tenant) -> String {
        format!("{}:presence:{}", self.prefix, tag(&tenant.0))
    }

    /// Tenants with a non-empty presence HASH (SET of tenant names; TTL 24 h refreshed
    /// like the HASHes).
    pub fn presence_tenants(&self) -> String {
        format!("{}:presence-tenants", self.prefix)
    }

    /// On a Redis Cluster, bucket `bucket` of a tenant's presence (as [`Keys::presence`],
    /// for the drivers of [`presence_bucket_of`] that bucket), each on its own slot.
    pub fn presence_bucket(&self, tenant: &Tenant, bucket: u16) -> String {
        format!("{}:presence:{}:{}", self.prefix, esc(&tenant.0), tag(&format!("presence:{}:{bucket}", tenant.0)))
    }

    /// On a Redis Cluster, the tenants whose presence was lately seen non-empty (ZSET tenant
    /// → when, ms; written by the node that saw it, at most every few seconds per tenant;
    /// entries older than 24 h removed when read; TTL 24 h refreshed by each write). It
    /// replaces [`Keys::presence_tenants`], which one script kept exact beside the one HASH.
    pub fn presence_tenants_seen(&self) -> String {
        format!("{}:presence-tenants-seen", self.prefix)
    }

    /// A "first one wins" mark (string, TTL given by its user): one presence sweep per
    /// tick, one arrival event per trip and target.
    pub fn once_sweep(&self, tick: u64) -> String {
        format!("{}:once:sweep:{tick}", self.prefix)
    }

    /// The presence sweeps' counter (integer, TTL 24 h refreshed by each sweep): which part
    /// of the drivers a sweep checks.
    pub fn sweep_seq(&self) -> String {
        format!("{}:sweep-seq", self.prefix)
    }

    /// The arrival mark of a trip and target.
    pub fn once_arrival(&self, tenant: &Tenant, trip: &TripId, target: &str) -> String {
        format!("{}:once:arrival:{}:{}:{target}", self.prefix, esc(&tenant.0), esc(&trip.0))
    }

    /// Nodes watching a geo cell of a tenant (HASH node → `1`; TTL 24 h refreshed by each
    /// watch): the location path publishes to the cell's room while it exists.
    pub fn cell_watchers(&self, tenant: &Tenant, cell: Cell) -> String {
        format!("{}{}}}", self.cell_watchers_prefix(tenant), cell.name())
    }

    /// [`Keys::cell_watchers`] up to the cell name, inside the tag (`redis/location.lua`
    /// appends the name of a driver's previous cell and the closing `}`).
    pub fn cell_watchers_prefix(&self, tenant: &Tenant) -> String {
        format!("{}:watch:{}:{{{}", self.prefix, esc(&tenant.0), crate::domain::rooms::AREA_CELL)
    }

    /// The room channel of a geo cell up to the cell name, inside the tag (as
    /// [`Keys::room_channel`] of `RoomKey::area_cell`; the cell name and `}` follow).
    pub fn cell_channel_prefix(&self, tenant: &Tenant) -> String {
        format!("{}:room:{}:{{{}", self.prefix, esc(&tenant.0), crate::domain::rooms::AREA_CELL)
    }

    /// Every (cell, node) watch of a tenant (SET of `cell \x1f node`; TTL 24 h refreshed by
    /// each watch): while it is absent, a location update spends one `EXISTS` on areas.
    pub fn area_watches(&self, tenant: &Tenant) -> String {
        format!("{}:areas:{}", self.prefix, tag(&tenant.0))
    }

    /// Prefix of node heartbeat keys; `{p}:{nodes}:node:{id}` holds the node's stats JSON
    /// with a TTL of three heartbeat intervals (on the registry's slot).
    pub fn node_prefix(&self) -> String {
        format!("{}:{{nodes}}:node:", self.prefix)
    }

    /// Registry of nodes (ZSET node id → last beat in ms; entries older than the heartbeat
    /// TTL are dropped when read; TTL 24 h refreshed by every beat).
    pub fn nodes(&self) -> String {
        format!("{}:{{nodes}}:registry", self.prefix)
    }

    /// Heartbeat key of a node.
    pub fn node(&self, node: &str) -> String {
        format!("{}{}", self.node_prefix(), node)
    }
}

/// Redis Cluster's hash slot of a key or channel: CRC16 (XMODEM) of its hash tag, or of the
/// whole key when it has none, mod 16384 (the cluster specification's `HASH_SLOT`).
pub fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let hashed = match b.iter().position(|&c| c == b'{') {
        Some(open) => match b[open + 1..].iter().position(|&c| c == b'}') {
            Some(len) if len > 0 => &b[open + 1..open + 1 + len],
            _ => b,
        },
        None => b,
    };
    crc16(hashed) % 16384
}

/// CRC16 (XMODEM), the cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// On a Redis Cluster a tenant's presence is split over this many HASHes, by driver
/// ([`presence_bucket_of`]): drivers coming live at once spread their compare-and-sets over
/// the shards instead of queueing on the tenant's slot.
pub const PRESENCE_BUCKETS: u16 = 32;

/// The presence bucket of a driver (see [`Keys::presence_bucket`]).
pub fn presence_bucket_of(driver: &str) -> u16 {
    crc16(driver.as_bytes()) % PRESENCE_BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_function_matches_redis() {
        // `CLUSTER KEYSLOT` of these, asked of a redis-server 7.0 cluster (an empty `{}` is
        // no tag; the tag ends at the first `}`).
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("foo{}{bar}"), 8363);
        assert_eq!(slot("foo{{bar}}zap"), 4015);
        assert_eq!(slot("fc:loc:drv:acme:{driver:driver-7:location}"), 1134);
        assert_eq!(slot("fc:room:t:{a%7Db%7Bc%25}"), 11494);
    }

    #[test]
    fn components_cannot_collide_and_channels_map_back_to_rooms() {
        let k = Keys::new("fc").expect("prefix");
        let a = k.driver_location(&Tenant("a:b".into()), &UserId("c".into()));
        let b = k.driver_location(&Tenant("a".into()), &UserId("b:c".into()));
        assert_ne!(a, b);
        let room = RoomKey::named(&Tenant("t:1%".into()), "trip:x:subscribers");
        let ch = k.room_channel(&room);
        assert_eq!(ch, "fc:room:t%3A1%25:{trip:x:subscribers}");
        assert_eq!(k.room_from_channel(&ch), Some(room));
        // A client-named room cannot end its tag early.
        let odd = RoomKey::named(&Tenant("t".into()), "a}b{c%");
        let ch = k.room_channel(&odd);
        assert_eq!(ch, "fc:room:t:{a%7Db%7Bc%25}");
        assert_eq!(k.room_from_channel(&ch), Some(odd));
        // A driver's location room is on the driver's slot, and still maps back.
        let t = Tenant("t".into());
        let dl = RoomKey::driver_location(&t, &UserId("d{1}".into()));
        let ch = k.room_channel(&dl);
        assert_eq!(ch, "fc:room:t:{user:d%7B1%7D}:driver:d%7B1%7D:location");
        assert_eq!(k.room_from_channel(&ch), Some(dl));
        let user = RoomKey::user(&t, &UserId("d{1}".into()));
        assert_eq!(k.room_from_channel(&k.room_channel(&user)), Some(user));
        let tenant = Tenant("t:1".into());
        let cell = Cell(-3, 7);
        let ch = k.room_channel(&RoomKey::area_cell(&tenant, cell));
        assert_eq!(ch, format!("{}{}}}", k.cell_channel_prefix(&tenant), cell.name()));
        assert_eq!(k.room_from_channel(&ch), Some(RoomKey::area_cell(&tenant, cell)));
        assert!(Keys::new("{fc}").is_err());
    }

    /// What one script or command touches together shares a slot (CROSSSLOT otherwise on a
    /// Redis Cluster), and different entities spread.
    #[test]
    fn keys_used_together_share_a_slot() {
        let k = Keys::new("fc").expect("prefix");
        let t = Tenant("acme".into());
        let d = UserId("driver-7".into());
        let trip = TripId("trip-9".into());
        let same = |keys: &[String]| {
            let first = slot(&keys[0]);
            assert!(keys.iter().all(|key| slot(key) == first), "{keys:?} span several slots");
            first
        };
        let driver_room = RoomKey::driver_location(&t, &d);
        let driver = same(&[
            k.location_window(&t, &d),
            k.driver_location(&t, &d),
            k.snapshot_marker(&t, &d),
            k.offer_slots(&t, &d),
            k.offer_filters(&t, &d),
            k.room_channel(&driver_room),
            k.sse_streams(&t, &UserId(driver_room.as_str().to_string())),
        ]);
        let trip_room = RoomKey::trip_subscribers(&t, &trip);
        let trip_slot = same(&[
            k.trip_location(&t, &trip),
            k.room_channel(&trip_room),
            k.history(&trip_room),
            k.sse_streams(&t, &UserId(trip_room.as_str().to_string())),
        ]);
        let user = same(&[k.subscriptions(&t, &d), k.connections(&t, &d), k.location_window(&t, &d)]);
        let cell = same(&[k.cell_watchers(&t, Cell(1, 2)), k.room_channel(&RoomKey::area_cell(&t, Cell(1, 2)))]);
        same(&[k.nodes(), k.node("n1"), k.node("n2")]);
        same(&[k.geo(&t), k.geo_fresh(&t), k.presence(&t), k.area_watches(&t)]);
        assert_eq!(driver, user, "a driver's state is on its user's slot");
        let mut distinct = vec![driver, trip_slot, cell];
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "entities spread over slots");
        // A thousand drivers spread over the slots (within a few of uniform per quarter).
        let mut quarters = [0u32; 4];
        for i in 0..1000 {
            quarters[usize::from(slot(&k.driver_location(&t, &UserId(format!("d{i}")))) / 4096)] += 1;
        }
        assert!(quarters.iter().all(|&q| (200..=300).contains(&q)), "{quarters:?}");
    }

    #[test]
    fn a_tenants_presence_buckets_spread_over_slots_and_drivers_over_buckets() {
        let k = Keys::new("fc").expect("prefix");
        let t = Tenant("acme".into());
        let slots: std::collections::HashSet<u16> =
            (0..PRESENCE_BUCKETS).map(|b| slot(&k.presence_bucket(&t, b))).collect();
        assert_eq!(slots.len(), usize::from(PRESENCE_BUCKETS), "one slot per bucket");
        // Thirds of the slot space stand for the three primaries of a fresh cluster.
        let mut thirds = [0u32; 3];
        for s in &slots {
            thirds[usize::from(*s) * 3 / 16384] += 1;
        }
        assert!(thirds.iter().all(|&n| n >= 6), "buckets spread over the shards: {thirds:?}");
        let mut per_bucket = vec![0u32; usize::from(PRESENCE_BUCKETS)];
        for i in 0..3200 {
            per_bucket[usize::from(presence_bucket_of(&format!("driver-{i}")))] += 1;
        }
        assert!(per_bucket.iter().all(|&n| (60..=140).contains(&n)), "{per_bucket:?}");
        assert_ne!(k.presence_bucket(&t, 0), k.presence_bucket(&Tenant("acme2".into()), 0));
    }
}
