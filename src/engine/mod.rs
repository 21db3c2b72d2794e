//! The seam between a node and shared state. [`Engine`] is the broker (publish a frame to
//! a room, hold a node subscription per room with local members, a room's history) and the
//! live state (latest locations, rate windows, subscription and connection slots, node
//! presence). Two implementations: [`memory`] for one embedded node, [`redis`] for a
//! cluster (split into its broker and its live state). Both behave the same to callers;
//! the behavioural tests run against both.
//!
//! Delivery: a node hands every frame it receives for a room to the [`Deliver`] callback
//! (`fanout::Delivery`), which hands it to the room's local sinks. The memory engine calls
//! it at once; the Redis engine calls it from its subscriber task.

use std::sync::Arc;

use crate::domain::area::Cell;
use crate::domain::{EventId, Location, RoomKey, Tenant, TripId, UserId};
use crate::error::Result;

/// How long after a node starts watching a live-area cell every node's location path
/// publishes that cell's positions (on a Redis Cluster a node reuses what it last heard of
/// a cell's watch for [`redis::WATCH_FOR`]); the watching node reads its new areas'
/// positions again then, for what was written meanwhile without a frame.
pub const WATCH_SETTLE: std::time::Duration =
    std::time::Duration::from_millis(redis::WATCH_FOR.as_millis() as u64 + 250);

pub mod frame;
pub mod keys;
pub mod memory;
pub mod redis;
mod types;

pub use types::{
    Candidate, Claim, Deliver, History, HistoryLimits, INDEX_SLACK_M, LocationLimits, LocationOutcome, LocationWrite,
    Once, Presence, PresenceChange, PresenceInput, PresenceLimits, SlotKind, WatchedCells, with_event_id,
};

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

    /// Latest live position of a trip.
    pub async fn trip_location(&self, tenant: &Tenant, trip: &TripId) -> Result<Option<Location>> {
        dispatch!(self, e => e.trip_location(tenant, trip).await)
    }

    /// Latest live position of a driver.
    pub async fn driver_location(&self, tenant: &Tenant, driver: &UserId) -> Result<Option<Location>> {
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

    /// Derives the availability of `drivers` again from the live state (CONTRACT §7), stores
    /// it and returns the changes; each change is returned to one caller cluster-wide.
    pub async fn derive_presence(
        &self,
        tenant: &Tenant,
        drivers: &[PresenceInput],
        limits: &PresenceLimits,
    ) -> Result<Vec<PresenceChange>> {
        dispatch!(self, e => e.derive_presence(tenant, drivers, limits).await)
    }

    /// Of `drivers`, whether each has a position fresher than `fresh_ms`, in order.
    pub async fn freshness(&self, tenant: &Tenant, drivers: &[String], fresh_ms: u64) -> Result<Vec<bool>> {
        dispatch!(self, e => e.freshness(tenant, drivers, fresh_ms).await)
    }

    /// Every node in the registry with its last beat (ms since the epoch); empty embedded.
    pub async fn node_beats(&self) -> Result<Vec<(String, u64)>> {
        dispatch!(self, e => e.node_beats().await)
    }

    /// The tenant's drivers that are not `OFFLINE`.
    pub async fn present_drivers(&self, tenant: &Tenant) -> Result<Vec<Presence>> {
        dispatch!(self, e => e.present_drivers(tenant).await)
    }

    /// Tenants with drivers that are not `OFFLINE` (the presence sweep's work list).
    pub async fn presence_tenants(&self) -> Result<Vec<Tenant>> {
        dispatch!(self, e => e.presence_tenants().await)
    }

    /// Latest live positions of many drivers, in order.
    pub async fn driver_locations(&self, tenant: &Tenant, drivers: &[UserId]) -> Result<Vec<Option<Location>>> {
        dispatch!(self, e => e.driver_locations(tenant, drivers).await)
    }

    /// The number of the presence sweep about to run, counted cluster-wide (each call
    /// advances it): the sweeps rotate through their parts by it, whatever ticks were missed.
    pub async fn next_sweep(&self) -> Result<u64> {
        dispatch!(self, e => e.next_sweep().await)
    }

    /// True for the first caller cluster-wide to set `mark` within `ttl_ms`.
    pub async fn once(&self, mark: Once<'_>, ttl_ms: u64) -> Result<bool> {
        dispatch!(self, e => e.once(mark, ttl_ms).await)
    }

    /// This node watches a geo cell: the location and presence paths publish into its room
    /// from now on (the node holds the room first).
    pub async fn watch_cell(&self, tenant: &Tenant, cell: Cell) -> Result<()> {
        dispatch!(self, e => e.watch_cell(tenant, cell).await)
    }

    /// This node no longer watches a geo cell.
    pub async fn unwatch_cell(&self, tenant: &Tenant, cell: Cell) {
        dispatch!(self, e => e.unwatch_cell(tenant, cell).await)
    }

    /// The tenant's live-area cells some node watches, read now (one read for a batch of
    /// drivers: presence announcements ask once, not per driver).
    pub async fn watched_cells(&self, tenant: &Tenant) -> Result<WatchedCells> {
        dispatch!(self, e => e.watched_cells(tenant).await)
    }

    /// Drivers with a position fresher than `fresh_ms` within `radius_km` of `(lat, lng)`:
    /// `(driver, lat, lng)`, nearest first.
    pub async fn drivers_near(
        &self,
        tenant: &Tenant,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<(String, f64, f64)>> {
        dispatch!(self, e => e.drivers_near(tenant, lat, lng, radius_km, fresh_ms).await)
    }

    /// The stored availability and trip of drivers, in order (`None`: `OFFLINE`).
    pub async fn presence_of(&self, tenant: &Tenant, drivers: &[String]) -> Result<Vec<Option<Presence>>> {
        dispatch!(self, e => e.presence_of(tenant, drivers).await)
    }

    /// The shared store's `INFO` text per shard: one Redis's as `redis`, each primary's of a
    /// Redis Cluster by its address; empty embedded.
    pub async fn server_infos(&self) -> Result<Vec<(String, String)>> {
        dispatch!(self, e => e.server_infos().await)
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
