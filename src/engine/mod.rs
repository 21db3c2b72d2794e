//! The seam between a node and shared state. [`Engine`] is the `Broker` (publish a frame to
//! a room, hold a node subscription per room with local members) and the `LiveState`
//! (latest locations, rate windows, subscription and connection slots, node presence).
//! Two implementations: [`memory`] for one embedded node, [`redis`] for a cluster. Both
//! behave the same to callers; the behavioural tests run against both.
//!
//! Delivery: a node hands every frame it receives for a room to the `Deliver` callback
//! (see `fanout`), which emits it to the local Socket.IO members of that room. The memory
//! engine calls it at once; the Redis engine calls it from its subscriber task.

use std::sync::Arc;

use crate::domain::{LocationFix, Tenant, TripId, UserId};
use crate::error::Result;

pub mod keys;
pub mod memory;
pub mod redis;

/// A room scoped by tenant. Its string form (`tenant \x1f name`) is the local Socket.IO
/// room name; clients never see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomKey {
    full: String,
    split: usize,
}

impl RoomKey {
    /// The room `name` (client-visible form, e.g. `trip:t1:subscribers`) of `tenant`.
    pub fn new(tenant: &Tenant, name: &str) -> Self {
        Self { full: format!("{}\u{1f}{}", tenant.0, name), split: tenant.0.len() }
    }

    /// Parses the local room name back (inverse of [`RoomKey::as_str`]).
    pub fn parse(full: &str) -> Option<Self> {
        let split = full.find('\u{1f}')?;
        Some(Self { full: full.to_string(), split })
    }

    /// Tenant part.
    pub fn tenant(&self) -> &str {
        &self.full[..self.split]
    }

    /// Client-visible name.
    pub fn name(&self) -> &str {
        &self.full[self.split + 1..]
    }

    /// Local Socket.IO room name.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

/// An event id: `"<milliseconds>-<sequence>"` (a Redis stream id; the memory engine makes
/// the same form), strictly increasing within a room. Ordered by (ms, seq).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Milliseconds since the epoch.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl EventId {
    /// Parses `"<ms>-<seq>"`.
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Bounds of a room's event history (CONTRACT §6: 100 events or 10 minutes by default).
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Most events kept per room.
    pub max_events: usize,
    /// Oldest event age kept, in milliseconds.
    pub window_ms: u64,
}

/// A room's events after some id, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// False when events newer than the asked id were already dropped (or the history
    /// expired): the client should refetch state.
    pub complete: bool,
    /// `(id, event name, payload JSON)` in order.
    pub events: Vec<(EventId, String, String)>,
}

/// The payload of a recoverable event: `{"eventId":"<id>",` followed by the stamped
/// payload's fields (`tail` is the payload JSON without its opening brace).
pub fn with_event_id(id: EventId, tail: &str) -> String {
    format!("{{\"eventId\":\"{id}\",{tail}")
}

/// Receives frames for rooms with local members. Must not block.
pub type Deliver = Arc<dyn Fn(&RoomKey, &str) + Send + Sync>;

/// Outcome of a location update in the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationOutcome {
    /// Stored and published; `sampled` = this update is due for a snapshot.
    Accepted {
        /// At most one sampled update per driver per snapshot interval.
        sampled: bool,
    },
    /// Refused by the cluster-wide window; nothing was stored.
    RateLimited {
        /// When a retry can succeed.
        retry_after_ms: u64,
    },
}

/// Rate and retention settings of the location path.
#[derive(Debug, Clone, Copy)]
pub struct LocationLimits {
    /// Minimum interval between accepted updates of one driver.
    pub min_interval_ms: u64,
    /// Accepted updates per sliding minute.
    pub max_per_minute: u32,
    /// Live position TTL.
    pub ttl_ms: u64,
    /// Snapshot sampling interval.
    pub snapshot_interval_ms: u64,
}

/// A location update ready for the engine: the validated fix, its stored JSON (the
/// contract's `Location`) and, when it names a trip, the frame to publish to the trip room.
pub struct LocationWrite<'a> {
    /// Tenant of the driver.
    pub tenant: &'a Tenant,
    /// The validated fix.
    pub fix: &'a LocationFix,
    /// `Location` JSON stored as the latest value.
    pub location_json: &'a str,
    /// Room and frame to publish (trip subscribers), if the update names a trip.
    pub publish: Option<(&'a RoomKey, &'a str)>,
    /// The driver's location room and its frame (for SSE driver-location streams; sent only
    /// while some stream follows the driver).
    pub driver_room: (&'a RoomKey, &'a str),
}

/// Which per-user slot set a claim counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Active trip subscriptions (slot = trip id).
    Subscriptions,
    /// Open connections (slot = socket id).
    Connections,
    /// Open SSE streams of a room, counted across the cluster (slot = stream id; the
    /// "user" is the room's local name).
    SseStreams,
    /// A driver's sockets subscribed to trip offers (slot = socket id).
    Offers,
}

/// A driver near a point who subscribed to offers, with a fresh position.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The driver.
    pub driver: String,
    /// Latitude of the live position.
    pub lat: f64,
    /// Longitude of the live position.
    pub lng: f64,
    /// The driver's offer filters (JSON as stored by `driver:subscribe`).
    pub filters: String,
}

/// Answer to a slot claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// All slots claimed.
    Granted,
    /// The cap would be exceeded; nothing claimed.
    Refused,
}

/// The engine of a node.
pub enum Engine {
    /// Embedded, single node.
    Memory(Box<memory::MemoryEngine>),
    /// Cluster over Redis.
    Redis(Arc<redis::RedisEngine>),
}

macro_rules! dispatch {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            Engine::Memory($e) => $body,
            Engine::Redis($e) => $body,
        }
    };
}

impl Engine {
    /// Publishes `frame` to every node with members in `room` (this one included).
    pub async fn publish(&self, room: &RoomKey, frame: &str) -> Result<()> {
        dispatch!(self, e => e.publish(room, frame).await)
    }

    /// Publishes a recoverable event: appended to the room's bounded history and published
    /// in one step; returns its id. `tail` is the stamped payload JSON without its `{`.
    /// Members of the `except` rooms do not receive it through this one (they get the same
    /// emission through those rooms).
    pub async fn publish_recoverable(
        &self,
        room: &RoomKey,
        event: &str,
        tail: &str,
        except: &[&RoomKey],
    ) -> Result<EventId> {
        dispatch!(self, e => e.publish_recoverable(room, event, tail, except).await)
    }

    /// The room's events after `since`, oldest first, and whether that is all of them.
    pub async fn history(&self, room: &RoomKey, since: EventId) -> Result<History> {
        dispatch!(self, e => e.history(room, since).await)
    }

    /// A local socket joined `room`: make sure this node receives the room's frames before
    /// returning (so an event published right after the ack is not missed).
    pub async fn hold_room(&self, room: &RoomKey) -> Result<()> {
        dispatch!(self, e => e.hold_room(room).await)
    }

    /// A local socket left `room`; the last one releases the node's subscription.
    pub async fn release_room(&self, room: &RoomKey) {
        dispatch!(self, e => e.release_room(room).await)
    }

    /// Applies a location update: rate window, latest value, sampling, publish.
    pub async fn write_location(&self, w: LocationWrite<'_>, limits: &LocationLimits) -> Result<LocationOutcome> {
        dispatch!(self, e => e.write_location(w, limits).await)
    }

    /// Latest live `Location` JSON of a trip.
    pub async fn trip_location(&self, tenant: &Tenant, trip: &TripId) -> Result<Option<String>> {
        dispatch!(self, e => e.trip_location(tenant, trip).await)
    }

    /// Latest live `Location` JSON of a driver.
    pub async fn driver_location(&self, tenant: &Tenant, driver: &UserId) -> Result<Option<String>> {
        dispatch!(self, e => e.driver_location(tenant, driver).await)
    }

    /// Claims `slots` for socket `sid` of `user`, all or nothing, under `cap` distinct slots.
    pub async fn claim(
        &self,
        kind: SlotKind,
        tenant: &Tenant,
        user: &UserId,
        sid: &str,
        slots: &[&str],
        cap: u32,
    ) -> Result<Claim> {
        dispatch!(self, e => e.claim(kind, tenant, user, sid, slots, cap).await)
    }

    /// Live slots held in a set (entries of dead nodes not counted).
    pub async fn count_slots(&self, kind: SlotKind, tenant: &Tenant, user: &UserId) -> Result<u64> {
        dispatch!(self, e => e.count_slots(kind, tenant, user).await)
    }

    /// Releases `slots` held by socket `sid`.
    pub async fn release(
        &self,
        kind: SlotKind,
        tenant: &Tenant,
        user: &UserId,
        sid: &str,
        slots: &[&str],
    ) -> Result<()> {
        dispatch!(self, e => e.release(kind, tenant, user, sid, slots).await)
    }

    /// Stores a driver's offer filters (JSON).
    pub async fn set_offer_filters(&self, tenant: &Tenant, driver: &UserId, filters: &str) -> Result<()> {
        dispatch!(self, e => e.set_offer_filters(tenant, driver, filters).await)
    }

    /// Drivers with offer filters and a position fresher than `fresh_ms` within `radius_km`
    /// of `(lat, lng)`, nearest first (the GEO index: Redis GEO or the embedded map).
    pub async fn offer_candidates(
        &self,
        tenant: &Tenant,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<Candidate>> {
        dispatch!(self, e => e.offer_candidates(tenant, lat, lng, radius_km, fresh_ms).await)
    }

    /// Refreshes this node's presence with its stats; also expires stale memory entries.
    pub async fn heartbeat(&self, stats_json: &str) -> Result<()> {
        dispatch!(self, e => e.heartbeat(stats_json).await)
    }

    /// The stats JSON of every live node (this one included).
    pub async fn cluster_nodes(&self) -> Result<Vec<String>> {
        dispatch!(self, e => e.cluster_nodes().await)
    }

    /// Drivers of the tenant with a position fresher than `fresh_ms`.
    pub async fn live_drivers(&self, tenant: &Tenant, fresh_ms: u64) -> Result<u64> {
        dispatch!(self, e => e.live_drivers(tenant, fresh_ms).await)
    }

    /// The shared store's `INFO` text (Redis), or `None` embedded.
    pub async fn server_info(&self) -> Result<Option<String>> {
        dispatch!(self, e => e.server_info().await)
    }

    /// True when shared state answers and every held room is subscribed.
    pub async fn ready(&self) -> bool {
        dispatch!(self, e => e.ready().await)
    }

    /// Stops background tasks and leaves the cluster registry.
    pub async fn shutdown(&self) {
        dispatch!(self, e => e.shutdown().await)
    }
}

/// Frames carried on room channels: `event \n flags \n except-sid \n json`. The payload is
/// last so it may contain anything; event names and sids contain no newline.
pub mod frame {
    /// Flag: deliver as volatile (may be dropped for a slow socket, never queued).
    pub const VOLATILE: u8 = 1;
    /// Flag: the except field names local rooms (separated by `\x1e`) whose members are
    /// skipped (instead of one socket id).
    pub const EXCEPT_ROOM: u8 = 2;

    /// The except field for `rooms`.
    pub fn except_rooms(rooms: &[&super::RoomKey]) -> String {
        rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("\u{1e}")
    }
    /// Flag: a node-to-node command for the room's local sockets, never sent to clients.
    pub const CONTROL: u8 = 4;

    /// Encodes a frame.
    pub fn encode(event: &str, flags: u8, except: Option<&str>, json: &str) -> String {
        let except = except.unwrap_or("");
        let mut s = String::with_capacity(event.len() + except.len() + json.len() + 6);
        s.push_str(event);
        s.push('\n');
        s.push((b'0' + flags) as char);
        s.push('\n');
        s.push_str(except);
        s.push('\n');
        s.push_str(json);
        s
    }

    /// A decoded frame borrowing from its text.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Frame<'a> {
        /// Event name.
        pub event: &'a str,
        /// Flags (see [`VOLATILE`]).
        pub flags: u8,
        /// Socket id that must not receive it (the sender), if any.
        pub except: Option<&'a str>,
        /// JSON payload.
        pub json: &'a str,
    }

    /// Decodes a frame; `None` for anything malformed.
    pub fn decode(s: &str) -> Option<Frame<'_>> {
        let mut parts = s.splitn(4, '\n');
        let event = parts.next()?;
        let flags = parts.next()?.bytes().next()?.checked_sub(b'0')?;
        let except = parts.next()?;
        let json = parts.next()?;
        Some(Frame { event, flags, except: (!except.is_empty()).then_some(except), json })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn frames_round_trip() {
            let s = super::encode("server:alert", super::VOLATILE, Some("sid1"), "{\"a\":\"x\\ny\"}");
            let f = super::decode(&s).expect("decodes");
            assert_eq!(f.event, "server:alert");
            assert_eq!(f.flags, super::VOLATILE);
            assert_eq!(f.except, Some("sid1"));
            assert_eq!(f.json, "{\"a\":\"x\\ny\"}");
            assert!(super::decode("nonsense").is_none());
        }
    }
}
