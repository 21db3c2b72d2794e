//! The engine's vocabulary, shared by both implementations and their callers: history
//! bounds and replies, the location write and its outcome, slot claims, offer candidates,
//! and the delivery callback.

use std::sync::Arc;

use crate::domain::area::Cell;
use crate::domain::presence::Availability;
use crate::domain::{EventId, Location, RoomKey, Tenant, TripId};

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
        /// The driver had no fresh position before this one (its availability may change).
        came_live: bool,
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
    /// The validated position.
    pub fix: &'a Location,
    /// `Location` JSON stored as the latest value.
    pub location_json: &'a str,
    /// Room and frame to publish (trip subscribers), if the update names a trip.
    pub publish: Option<(&'a RoomKey, &'a str)>,
    /// The driver's location room and its frame (for SSE driver-location streams; sent only
    /// while some stream follows the driver).
    pub driver_room: (&'a RoomKey, &'a str),
    /// The driver's geo cell: `frame::area_position` goes to the cell's room, and to the
    /// room of the cell of the driver's previous position when it moved out of it, each
    /// only while some node watches that cell (live areas).
    pub cell: Cell,
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

/// How far, in metres, a driver's position in the geo index may lie from its latest
/// position: a Redis Cluster writes a driver's geo cell again only when the driver moved
/// further than this from its indexed position, changed cell, came live or was sampled (or
/// a quarter of the location TTL passed). A search that shows or measures positions reads
/// the index this much wider and uses the latest positions.
pub const INDEX_SLACK_M: f64 = 50.0;

/// The live-area cells of a tenant some node watches, by name (`domain::area::Cell::name`).
pub type WatchedCells = std::sync::Arc<std::collections::HashSet<String>>;

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

/// One driver whose availability is to be derived again, and what the caller knows of its
/// trip: `Some(trip)` read from the database just now (`Some(None)`: no active trip),
/// `None` to keep the trip stored with the driver's last availability (the sweep).
#[derive(Debug, Clone)]
pub struct PresenceInput {
    /// The driver.
    pub driver: String,
    /// Its active trip, when the caller read it.
    pub trip: Option<Option<String>>,
}

/// A driver's stored availability (never `OFFLINE`: offline drivers are not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The driver.
    pub driver: String,
    /// `AVAILABLE` or `BUSY`.
    pub availability: Availability,
    /// Its active trip, if any.
    pub trip: Option<String>,
}

/// A change of availability, reported to exactly one caller cluster-wide (the derivation
/// compares and sets in one step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// The driver.
    pub driver: String,
    /// The new value.
    pub availability: Availability,
    /// The value before.
    pub previous: Availability,
    /// The driver's active trip, if any.
    pub trip: Option<String>,
}

/// Settings of the derivation.
#[derive(Debug, Clone, Copy)]
pub struct PresenceLimits {
    /// A position older than this is not fresh (the location TTL).
    pub fresh_ms: u64,
    /// A node silent for longer than this no longer holds connections for presence (less
    /// than the slot expiry, so a killed node's drivers go `OFFLINE` within 5 s).
    pub node_silence_ms: u64,
}

/// A cluster-wide "first one wins" mark.
#[derive(Debug, Clone, Copy)]
pub enum Once<'a> {
    /// The presence sweep of one tick (one node sweeps each tick).
    PresenceSweep(u64),
    /// `trip.driver.arriving` of a trip and target.
    Arrival(&'a Tenant, &'a TripId, &'a str),
}
