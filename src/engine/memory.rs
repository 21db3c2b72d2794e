//! In-memory engine for one embedded node: the same semantics as the Redis engine (rate
//! windows, TTLs, slot caps) with maps behind one mutex. The mutex is never held across an
//! `.await`; expired entries are swept on every heartbeat so memory stays bounded by the
//! live drivers and users.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::frame;
use super::types::{
    Candidate, Claim, Deliver, History, HistoryLimits, LocationLimits, LocationOutcome, LocationWrite, Once, Presence,
    PresenceChange, PresenceInput, PresenceLimits, SlotKind, with_event_id,
};
use crate::domain::area::Cell;
use crate::domain::presence::{Availability, Facts};
use crate::domain::{EventId, Location, RoomKey, Tenant, TripId, UserId};
use crate::error::Result;

type Key = (String, String);

/// How long a driver's offer filters outlive its last `driver:subscribe` (as in Redis).
const OFFER_FILTERS_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Default)]
struct State {
    driver_loc: HashMap<Key, (Instant, Location)>,
    trip_loc: HashMap<Key, (Instant, Location)>,
    windows: HashMap<Key, VecDeque<Instant>>,
    snapshot_marks: HashMap<Key, Instant>,
    /// Live driver positions by tenant, the embedded GEO index.
    geo: HashMap<String, HashMap<String, GeoEntry>>,
    /// (kind, tenant, user) → slot → sockets holding it.
    slots: HashMap<(SlotKind, String, String), HashMap<String, HashSet<String>>>,
    /// Recoverable events per room (local room name), bounded by count and age.
    history: HashMap<String, RoomHistory>,
    /// Offer filters of drivers: (tenant, driver) → (expiry, JSON), kept as long as the
    /// Redis engine keeps them (a day after the last `driver:subscribe`).
    offer_filters: HashMap<Key, (Instant, String)>,
    /// Stored availability of drivers that are not `OFFLINE`: tenant → driver → (value,
    /// active trip).
    presence: HashMap<String, HashMap<String, (Availability, Option<String>)>>,
    /// "First one wins" marks and their expiry.
    once: HashMap<String, Instant>,
    /// Presence sweeps run so far.
    sweeps: u64,
    /// Geo cells watched by live areas, by tenant.
    watched_cells: HashSet<(String, Cell)>,
    /// This node's last stats JSON (the one node of the embedded "cluster").
    stats: String,
}

/// A driver's live position in the embedded GEO index.
struct GeoEntry {
    lat: f64,
    lng: f64,
    updated: Instant,
    expiry: Instant,
}

#[derive(Default)]
struct RoomHistory {
    /// `(id, event name, payload JSON)` in order, each with the id before it (`prev`).
    events: VecDeque<(EventId, String, String)>,
    prev: VecDeque<Option<EventId>>,
    last: Option<EventId>,
    /// Largest id dropped by a bound: a replay from before it is incomplete.
    max_deleted: Option<EventId>,
    touched: Option<Instant>,
}

impl std::hash::Hash for SlotKind {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (*self as u8).hash(h);
    }
}

/// The embedded engine.
pub struct MemoryEngine {
    state: Mutex<State>,
    deliver: Deliver,
    limits: HistoryLimits,
}

fn key(t: &Tenant, id: &str) -> Key {
    (t.0.clone(), id.to_string())
}

impl MemoryEngine {
    /// An empty engine delivering frames to `deliver`.
    pub fn new(deliver: Deliver, limits: HistoryLimits) -> Self {
        Self { state: Mutex::new(State::default()), deliver, limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) async fn publish(&self, room: &RoomKey, frame: &str) -> Result<()> {
        (self.deliver)(room, frame);
        Ok(())
    }

    pub(super) async fn publish_recoverable(
        &self,
        room: &RoomKey,
        event: &str,
        tail: &str,
        except: &[&RoomKey],
    ) -> Result<EventId> {
        let now_ms = crate::domain::now_ms();
        let mut s = self.lock();
        let h = s.history.entry(room.as_str().to_string()).or_default();
        let id = match h.last {
            Some(last) if last.ms >= now_ms => EventId { ms: last.ms, seq: last.seq + 1 },
            _ => EventId { ms: now_ms, seq: 0 },
        };
        let prev = h.last.replace(id);
        h.touched = Some(Instant::now());
        while h.events.len() >= self.limits.max_events
            || h.events.front().is_some_and(|(old, _, _)| old.ms + self.limits.window_ms < id.ms)
        {
            let Some((old, _, _)) = h.events.pop_front() else { break };
            h.prev.pop_front();
            h.max_deleted = Some(old);
        }
        let payload = with_event_id(id, tail);
        h.events.push_back((id, event.to_string(), payload.clone()));
        h.prev.push_back(prev);
        // Delivered under the lock: ids and delivery order agree even with concurrent
        // publishers to one room.
        let (flags, except) = match except {
            [] => (0, None),
            rooms => (frame::EXCEPT_ROOM, Some(frame::except_rooms(rooms))),
        };
        (self.deliver)(room, &frame::encode(event, flags, except.as_deref(), &payload));
        Ok(id)
    }

    pub(super) async fn history(&self, room: &RoomKey, since: EventId) -> Result<History> {
        let s = self.lock();
        let Some(h) = s.history.get(room.as_str()) else {
            return Ok(History { complete: false, events: Vec::new() });
        };
        // As `redis/history.lua`: complete when the history links back to `since`.
        let first = h.events.iter().position(|(id, _, _)| *id > since);
        let zero = EventId { ms: 0, seq: 0 };
        let complete = match first {
            Some(i) => {
                let prev = h.prev[i].unwrap_or(zero);
                prev == since || (prev != zero && prev <= since)
            }
            None => h.events.iter().any(|(id, _, _)| *id == since) || h.max_deleted.is_none_or(|d| since >= d),
        };
        Ok(History { complete, events: first.map_or_else(Vec::new, |i| h.events.range(i..).cloned().collect()) })
    }

    pub(super) async fn hold_room(&self, _room: &RoomKey) -> Result<()> {
        Ok(())
    }

    pub(super) async fn release_room(&self, _room: &RoomKey) {}

    pub(super) async fn write_location(&self, w: LocationWrite<'_>, l: &LocationLimits) -> Result<LocationOutcome> {
        let now = Instant::now();
        let sampled;
        let came_live;
        let mut cells = Vec::new();
        {
            let mut s = self.lock();
            let dkey = key(w.tenant, &w.fix.driver.0);
            let window = s.windows.entry(dkey.clone()).or_default();
            while window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
                window.pop_front();
            }
            if let Some(last) = window.back() {
                let since = now.duration_since(*last).as_millis() as u64;
                if since < l.min_interval_ms {
                    return Ok(LocationOutcome::RateLimited { retry_after_ms: l.min_interval_ms - since });
                }
            }
            if window.len() >= l.max_per_minute as usize
                && let Some(oldest) = window.front()
            {
                let wait = 60_000u64.saturating_sub(now.duration_since(*oldest).as_millis() as u64).max(1);
                return Ok(LocationOutcome::RateLimited { retry_after_ms: wait });
            }
            window.push_back(now);
            let expiry = now + Duration::from_millis(l.ttl_ms);
            let before = s.driver_loc.insert(dkey.clone(), (expiry, w.fix.clone()));
            came_live = before.as_ref().is_none_or(|(exp, _)| *exp <= now);
            let cell = w.cell;
            let previous = before.map(|(_, l)| Cell::of(l.lat, l.lng)).filter(|c| *c != cell);
            for c in std::iter::once(cell).chain(previous) {
                if s.watched_cells.contains(&(w.tenant.0.clone(), c)) {
                    cells.push(RoomKey::area_cell(w.tenant, c));
                }
            }
            if let Some(trip) = &w.fix.trip {
                s.trip_loc.insert(key(w.tenant, &trip.0), (expiry, w.fix.clone()));
            }
            s.geo
                .entry(w.tenant.0.clone())
                .or_default()
                .insert(w.fix.driver.0.clone(), GeoEntry { lat: w.fix.lat, lng: w.fix.lng, updated: now, expiry });
            sampled = match s.snapshot_marks.get(&dkey) {
                Some(until) if *until > now => false,
                _ => {
                    s.snapshot_marks.insert(dkey, now + Duration::from_millis(l.snapshot_interval_ms));
                    true
                }
            };
        }
        if let Some((room, frame)) = w.publish {
            (self.deliver)(room, frame);
        }
        (self.deliver)(w.driver_room.0, w.driver_room.1);
        if !cells.is_empty() {
            let f = frame::area_position(w.location_json);
            for room in &cells {
                (self.deliver)(room, &f);
            }
        }
        Ok(LocationOutcome::Accepted { sampled, came_live })
    }

    pub(super) async fn trip_location(&self, tenant: &Tenant, trip: &TripId) -> Result<Option<Location>> {
        let s = self.lock();
        Ok(s.trip_loc.get(&key(tenant, &trip.0)).filter(|(exp, _)| *exp > Instant::now()).map(|(_, j)| j.clone()))
    }

    pub(super) async fn driver_location(&self, tenant: &Tenant, driver: &UserId) -> Result<Option<Location>> {
        let s = self.lock();
        Ok(s.driver_loc.get(&key(tenant, &driver.0)).filter(|(exp, _)| *exp > Instant::now()).map(|(_, j)| j.clone()))
    }

    pub(super) async fn claim(
        &self,
        kind: SlotKind,
        tenant: &Tenant,
        user: &UserId,
        sid: &str,
        slots: &[&str],
        cap: u32,
    ) -> Result<Claim> {
        let mut s = self.lock();
        let held = s.slots.entry((kind, tenant.0.clone(), user.0.clone())).or_default();
        let new: HashSet<&str> = slots.iter().copied().filter(|x| !held.contains_key(*x)).collect();
        if held.len() + new.len() > cap as usize {
            return Ok(Claim::Refused);
        }
        for slot in slots {
            held.entry((*slot).to_string()).or_default().insert(sid.to_string());
        }
        Ok(Claim::Granted)
    }

    pub(super) async fn count_slots(&self, kind: SlotKind, tenant: &Tenant, user: &UserId) -> Result<u64> {
        let s = self.lock();
        Ok(s.slots.get(&(kind, tenant.0.clone(), user.0.clone())).map_or(0, |h| h.len() as u64))
    }

    pub(super) async fn release(
        &self,
        kind: SlotKind,
        tenant: &Tenant,
        user: &UserId,
        sid: &str,
        slots: &[&str],
    ) -> Result<()> {
        let mut s = self.lock();
        let k = (kind, tenant.0.clone(), user.0.clone());
        if let Some(held) = s.slots.get_mut(&k) {
            for slot in slots {
                if let Some(socks) = held.get_mut(*slot) {
                    socks.remove(sid);
                    if socks.is_empty() {
                        held.remove(*slot);
                    }
                }
            }
            if held.is_empty() {
                s.slots.remove(&k);
            }
        }
        Ok(())
    }

    pub(super) async fn set_offer_filters(&self, tenant: &Tenant, driver: &UserId, filters: &str) -> Result<()> {
        let expiry = Instant::now() + OFFER_FILTERS_TTL;
        self.lock().offer_filters.insert(key(tenant, &driver.0), (expiry, filters.to_string()));
        Ok(())
    }

    pub(super) async fn offer_candidates(
        &self,
        tenant: &Tenant,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<Candidate>> {
        // As in Redis: the drivers near, then those with offer filters.
        let near = self.drivers_near(tenant, lat, lng, radius_km, fresh_ms).await?;
        let now = Instant::now();
        let s = self.lock();
        Ok(near
            .into_iter()
            .filter_map(|(driver, lat, lng)| {
                let (_, filters) = s.offer_filters.get(&key(tenant, &driver)).filter(|(exp, _)| *exp > now)?;
                Some(Candidate { driver, lat, lng, filters: filters.clone() })
            })
            .collect())
    }

    pub(super) async fn cluster_nodes(&self) -> Result<Vec<String>> {
        let s = self.lock();
        Ok(if s.stats.is_empty() { Vec::new() } else { vec![s.stats.clone()] })
    }

    pub(super) async fn live_drivers(&self, tenant: &Tenant, fresh_ms: u64) -> Result<u64> {
        let now = Instant::now();
        let s = self.lock();
        let fresh = |g: &&GeoEntry| g.expiry > now && now.duration_since(g.updated).as_millis() as u64 <= fresh_ms;
        Ok(s.geo.get(&tenant.0).map_or(0, |d| d.values().filter(fresh).count() as u64))
    }

    pub(super) async fn server_infos(&self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    pub(super) async fn derive_presence(
        &self,
        tenant: &Tenant,
        drivers: &[PresenceInput],
        _limits: &PresenceLimits,
    ) -> Result<Vec<PresenceChange>> {
        let now = Instant::now();
        let mut s = self.lock();
        let mut changes = Vec::new();
        for input in drivers {
            let holds = |s: &State, kind| s.slots.contains_key(&(kind, tenant.0.clone(), input.driver.clone()));
            let stored = s.presence.get(&tenant.0).and_then(|p| p.get(&input.driver)).cloned();
            let previous = stored.as_ref().map_or(Availability::Offline, |(a, _)| *a);
            let trip = match &input.trip {
                Some(read) => read.clone(),
                None => stored.and_then(|(_, t)| t),
            };
            let facts = Facts {
                on_trip: trip.is_some(),
                connected: holds(&s, SlotKind::Connections),
                offers: holds(&s, SlotKind::Offers),
                fresh: s.driver_loc.get(&key(tenant, &input.driver)).is_some_and(|(exp, _)| *exp > now),
            };
            let availability = Availability::derive(facts);
            let entry = s.presence.entry(tenant.0.clone()).or_default();
            if availability == Availability::Offline {
                entry.remove(&input.driver);
                if entry.is_empty() {
                    s.presence.remove(&tenant.0);
                }
            } else {
                entry.insert(input.driver.clone(), (availability, trip.clone()));
            }
            if availability != previous {
                changes.push(PresenceChange { driver: input.driver.clone(), availability, previous, trip });
            }
        }
        Ok(changes)
    }

    pub(super) async fn present_drivers(&self, tenant: &Tenant) -> Result<Vec<Presence>> {
        let s = self.lock();
        let Some(p) = s.presence.get(&tenant.0) else { return Ok(Vec::new()) };
        Ok(p.iter()
            .map(|(driver, (availability, trip))| Presence {
                driver: driver.clone(),
                availability: *availability,
                trip: trip.clone(),
            })
            .collect())
    }

    pub(super) async fn freshness(&self, tenant: &Tenant, drivers: &[String], _fresh_ms: u64) -> Result<Vec<bool>> {
        let now = Instant::now();
        let s = self.lock();
        Ok(drivers.iter().map(|d| s.driver_loc.get(&key(tenant, d)).is_some_and(|(exp, _)| *exp > now)).collect())
    }

    pub(super) async fn node_beats(&self) -> Result<Vec<(String, u64)>> {
        Ok(Vec::new())
    }

    pub(super) async fn presence_tenants(&self) -> Result<Vec<Tenant>> {
        Ok(self.lock().presence.keys().map(|t| Tenant(t.clone())).collect())
    }

    pub(super) async fn driver_locations(&self, tenant: &Tenant, drivers: &[UserId]) -> Result<Vec<Option<Location>>> {
        let now = Instant::now();
        let s = self.lock();
        Ok(drivers
            .iter()
            .map(|d| s.driver_loc.get(&key(tenant, &d.0)).filter(|(exp, _)| *exp > now).map(|(_, l)| l.clone()))
            .collect())
    }

    pub(super) async fn watch_cell(&self, tenant: &Tenant, cell: Cell) -> Result<()> {
        self.lock().watched_cells.insert((tenant.0.clone(), cell));
        Ok(())
    }

    pub(super) async fn unwatch_cell(&self, tenant: &Tenant, cell: Cell) {
        self.lock().watched_cells.remove(&(tenant.0.clone(), cell));
    }

    pub(super) async fn watched_cells(&self, tenant: &Tenant) -> Result<super::types::WatchedCells> {
        let s = self.lock();
        Ok(std::sync::Arc::new(s.watched_cells.iter().filter(|(t, _)| *t == tenant.0).map(|(_, c)| c.name()).collect()))
    }

    pub(super) async fn drivers_near(
        &self,
        tenant: &Tenant,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<(String, f64, f64)>> {
        let now = Instant::now();
        let s = self.lock();
        let Some(drivers) = s.geo.get(&tenant.0) else { return Ok(Vec::new()) };
        let mut found: Vec<(f64, (String, f64, f64))> = drivers
            .iter()
            .filter(|(_, g)| g.expiry > now && now.duration_since(g.updated).as_millis() as u64 <= fresh_ms)
            .filter_map(|(driver, g)| {
                let d = crate::domain::rides::haversine_km((lat, lng), (g.lat, g.lng));
                (d <= radius_km).then(|| (d, (driver.clone(), g.lat, g.lng)))
            })
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.0.cmp(&b.1.0)));
        Ok(found.into_iter().map(|(_, f)| f).collect())
    }

    pub(super) async fn presence_of(&self, tenant: &Tenant, drivers: &[String]) -> Result<Vec<Option<Presence>>> {
        let s = self.lock();
        let p = s.presence.get(&tenant.0);
        Ok(drivers
            .iter()
            .map(|d| {
                let (availability, trip) = p?.get(d)?;
                Some(Presence { driver: d.clone(), availability: *availability, trip: trip.clone() })
            })
            .collect())
    }

    pub(super) async fn next_sweep(&self) -> Result<u64> {
        let mut s = self.lock();
        s.sweeps += 1;
        Ok(s.sweeps)
    }

    pub(super) async fn once(&self, mark: Once<'_>, ttl_ms: u64) -> Result<bool> {
        let name = match mark {
            Once::PresenceSweep(tick) => format!("sweep:{tick}"),
            Once::Arrival(tenant, trip, target) => format!("arrival:{}\u{1f}{}\u{1f}{target}", tenant.0, trip.0),
        };
        let now = Instant::now();
        let mut s = self.lock();
        if s.once.get(&name).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        s.once.insert(name, now + Duration::from_millis(ttl_ms));
        Ok(true)
    }

    pub(super) async fn heartbeat(&self, stats: &str) -> Result<()> {
        let now = Instant::now();
        let mut s = self.lock();
        s.stats = stats.to_string();
        s.driver_loc.retain(|_, (exp, _)| *exp > now);
        s.trip_loc.retain(|_, (exp, _)| *exp > now);
        s.windows.retain(|_, w| w.back().is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60)));
        s.snapshot_marks.retain(|_, until| *until > now);
        s.offer_filters.retain(|_, (until, _)| *until > now);
        s.once.retain(|_, until| *until > now);
        let window = Duration::from_millis(self.limits.window_ms);
        s.history.retain(|_, h| h.touched.is_some_and(|t| now.duration_since(t) < window));
        s.geo.retain(|_, drivers| {
            drivers.retain(|_, g| g.expiry > now);
            !drivers.is_empty()
        });
        Ok(())
    }

    pub(super) async fn ready(&self) -> bool {
        true
    }

    pub(super) async fn shutdown(&self) {}
}
