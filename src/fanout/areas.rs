//! Live areas on this node (CONTRACT §7 "Live areas"): the [`AreaHub`] holds the node's
//! area subscriptions (sockets' and SSE streams'), the geo cells they cover, and the latest
//! state of each driver seen in those cells; it is a delivery [`Sink`] for the cells' rooms.
//!
//! How a position reaches an area subscriber: the one location path publishes each
//! accepted update into the room of its geo cell (and of the cell it left) only while some
//! node watches that cell; a watching node receives it here and keeps it as the driver's
//! latest state (latest wins: a position costs one map update, whatever the number of
//! subscribers). Every tick, each subscription whose interval has passed gets one frame
//! with the drivers that moved, entered or changed availability since its last frame and
//! those that left, and nothing when both are empty. Availability comes from
//! `driver.availability.changed` published into the driver's cell room, and for a driver
//! first seen here from the engine's stored value (looked up in one batch per tick).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::delivery::{Control, LocalCounts, Sink};
use crate::domain::area::{AreaSpec, Cell, MIN_INTERVAL_MS};
use crate::domain::presence::Availability;
use crate::domain::rooms::AREA_CELL;
use crate::domain::{EventId, Location, RoomKey, Tenant};
use crate::engine::Presence;
use crate::engine::frame::{self, Frame};
use crate::events;

/// The hub's tick: the smallest `intervalMs`.
pub const TICK: Duration = Duration::from_millis(MIN_INTERVAL_MS);

/// Most drivers in a subscription's first snapshot.
pub const MAX_SNAPSHOT: usize = 5_000;

/// Most areas one socket may hold.
pub const MAX_PER_SOCKET: usize = 4;

/// Frames waiting per subscription before it is skipped for a tick (its changes are kept
/// and sent in the next frame it can take).
pub const SUB_BUFFER: usize = 8;

/// Most drivers whose availability one tick looks up.
const LOOKUP_BATCH: usize = 2_000;

/// `AreaDriver` (CONTRACT §7).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AreaDriver {
    pub driver_id: String,
    pub lat: f64,
    pub lng: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    pub availability: Availability,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trip_id: Option<String>,
    pub updated_at: String,
}

/// One conflated frame of a subscription: `{areaId, drivers, left, at, emittedAt}` (the
/// `server:area:update` payload, serialized as is: a whole-city frame holds thousands of
/// drivers, too many to go through a `Value` for its `emittedAt`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AreaFrame {
    pub area_id: String,
    pub drivers: Vec<AreaDriver>,
    pub left: Vec<String>,
    pub at: String,
    pub emitted_at: String,
}

/// What a subscription's edge receives.
#[derive(Debug, Clone)]
pub enum AreaMsg {
    /// A `server:area:update` frame.
    Update(AreaFrame),
    /// A `driver.availability.changed` payload (JSON) of a driver inside the area.
    Availability(String),
}

/// A subscription's id on this node.
pub type SubId = u64;

/// A driver as this node last saw it in a watched cell.
struct Tracked {
    lat: f64,
    lng: f64,
    heading: Option<f64>,
    speed: Option<f64>,
    updated_at: String,
    /// From the driver's stored presence; else the trip its last update named.
    trip: Option<String>,
    /// `None` until known (looked up at the next tick).
    availability: Option<Availability>,
    lookup_pending: bool,
    /// When its last position arrived here.
    seen_at: Instant,
    /// The tenant clock at its last change.
    version: u64,
    cell: Cell,
}

impl Tracked {
    fn row(&self, driver: &str, availability: Availability) -> AreaDriver {
        AreaDriver {
            driver_id: driver.to_string(),
            lat: self.lat,
            lng: self.lng,
            heading: self.heading,
            speed: self.speed,
            availability,
            trip_id: self.trip.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}

#[derive(Default)]
struct CellState {
    /// Drivers whose latest position is in the cell.
    members: HashSet<String>,
    /// Local subscriptions covering the cell.
    subs: HashSet<SubId>,
    /// Changes of drivers in (or leaving) the cell: `(tenant clock, driver)`, oldest first,
    /// kept until every subscription covering the cell has framed them. A subscription
    /// reads the logs of its cells from its last frame on: work per change, not per driver.
    log: VecDeque<(u64, String)>,
    /// Clock up to which entries were dropped by [`MAX_LOG`] before every subscription read
    /// them: one behind that scans the cell's members instead.
    dropped_to: u64,
}

impl CellState {
    fn record(&mut self, version: u64, driver: &str) {
        if self.log.len() >= MAX_LOG
            && let Some((v, _)) = self.log.pop_front()
        {
            self.dropped_to = v;
        }
        self.log.push_back((version, driver.to_string()));
    }
}

/// Most changes a cell's log keeps (a subscriber that cannot take frames for long falls
/// back to scanning the cell).
const MAX_LOG: usize = 100_000;

/// Records a change of `driver` in the logs of the watched cells among `cells`.
fn record(t: &mut TenantState, version: u64, driver: &str, cells: &[Cell]) {
    for c in cells {
        if let Some(state) = t.cells.get_mut(c) {
            state.record(version, driver);
        }
    }
}

#[derive(Default)]
struct TenantState {
    drivers: HashMap<String, Tracked>,
    /// Watched cells only.
    cells: HashMap<Cell, CellState>,
    /// Advances with every change of a tracked driver.
    clock: u64,
}

struct Sub {
    tenant: String,
    spec: AreaSpec,
    cells: Vec<Cell>,
    /// Drivers the subscriber currently shows.
    shown: HashSet<String>,
    /// The tenant clock its last frame covered.
    seen: u64,
    /// No frame before this.
    due: Instant,
    tx: mpsc::Sender<AreaMsg>,
}

impl Sub {
    fn admits(&self, a: Option<Availability>) -> Option<Availability> {
        let a = a.filter(|a| *a != Availability::Offline)?;
        self.spec.availability.as_ref().is_none_or(|want| want.contains(&a)).then_some(a)
    }
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<String, TenantState>,
    subs: HashMap<SubId, Sub>,
    next: SubId,
    /// Ticks so far (housekeeping runs every [`HOUSEKEEPING_EVERY`] ticks).
    ticks: u64,
    /// Subscriptions whose area's positions are read again at the given time (after their
    /// cells' watch has settled cluster-wide).
    catch_ups: Vec<(SubId, Instant)>,
}

/// Ticks between two housekeeping passes (stale drivers, forgetting): 2 s.
const HOUSEKEEPING_EVERY: u64 = 8;

/// The node's live areas. The lock is never held across an `.await`.
#[derive(Default)]
pub struct AreaHub {
    inner: Mutex<Inner>,
}

/// What a new subscription needs from the engine: cells no node of ours watched before.
pub struct Added {
    /// The subscription.
    pub id: SubId,
    /// Cells to watch now.
    pub new_cells: Vec<Cell>,
}

/// The drivers whose availability a tick needs: `(tenant, driver ids)`.
pub type Lookups = Vec<(Tenant, Vec<String>)>;

fn now_iso() -> String {
    crate::domain::now_iso()
}

impl AreaHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a subscription of `tenant`; frames go to `tx`.
    pub fn add(&self, tenant: &Tenant, spec: AreaSpec, tx: mpsc::Sender<AreaMsg>) -> Added {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.next += 1;
        let id = inner.next;
        let cells = spec.area.cells();
        let t = inner.tenants.entry(tenant.0.clone()).or_default();
        let mut new_cells = Vec::new();
        for c in &cells {
            let state = t.cells.entry(*c).or_insert_with(|| {
                new_cells.push(*c);
                CellState::default()
            });
            state.subs.insert(id);
        }
        // Drivers already tracked in a cell that was not watched yet.
        if !new_cells.is_empty() {
            let fresh: HashSet<Cell> = new_cells.iter().copied().collect();
            for (d, tr) in &t.drivers {
                if fresh.contains(&tr.cell)
                    && let Some(c) = t.cells.get_mut(&tr.cell)
                {
                    c.members.insert(d.clone());
                }
            }
        }
        let seen = t.clock;
        let due = Instant::now() + spec.interval;
        inner.subs.insert(id, Sub { tenant: tenant.0.clone(), spec, cells, shown: HashSet::new(), seen, due, tx });
        metrics::gauge!("fleetcast_area_subscriptions").increment(1.0);
        Added { id, new_cells }
    }

    /// Seeds a new subscription with its first snapshot: the drivers it shows from now on
    /// (their state is kept unless this node already saw newer).
    pub fn seed(&self, id: SubId, snapshot: &[AreaDriver]) {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(sub) = inner.subs.get_mut(&id) else { return };
        let Some(t) = inner.tenants.get_mut(&sub.tenant) else { return };
        for d in snapshot {
            sub.shown.insert(d.driver_id.clone());
            if t.drivers.contains_key(&d.driver_id) {
                continue;
            }
            let cell = Cell::of(d.lat, d.lng);
            if let Some(c) = t.cells.get_mut(&cell) {
                c.members.insert(d.driver_id.clone());
            }
            t.drivers.insert(
                d.driver_id.clone(),
                Tracked {
                    lat: d.lat,
                    lng: d.lng,
                    heading: d.heading,
                    speed: d.speed,
                    updated_at: d.updated_at.clone(),
                    trip: d.trip_id.clone(),
                    availability: Some(d.availability),
                    lookup_pending: false,
                    seen_at: Instant::now(),
                    version: 0,
                    cell,
                },
            );
        }
    }

    /// Removes a subscription; returns the cells no local subscription covers any more.
    pub fn remove(&self, id: SubId) -> (Tenant, Vec<Cell>) {
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(sub) = inner.subs.remove(&id) else { return (Tenant(String::new()), Vec::new()) };
        metrics::gauge!("fleetcast_area_subscriptions").decrement(1.0);
        let mut gone = Vec::new();
        if let Some(t) = inner.tenants.get_mut(&sub.tenant) {
            for c in &sub.cells {
                if let Some(state) = t.cells.get_mut(c) {
                    state.subs.remove(&id);
                    if state.subs.is_empty() {
                        t.cells.remove(c);
                        gone.push(*c);
                    }
                }
            }
            if t.cells.is_empty() {
                inner.tenants.remove(&sub.tenant);
            }
        }
        (Tenant(sub.tenant), gone)
    }

    /// Reads `sub`'s area again at `at` ([`Self::due_catch_ups`]).
    pub fn schedule_catch_up(&self, sub: SubId, at: Instant) {
        self.lock().catch_ups.push((sub, at));
    }

    /// The catch-ups due by `now`: each subscription's tenant and area (gone ones dropped).
    pub fn due_catch_ups(&self, now: Instant) -> Vec<(Tenant, AreaSpec)> {
        let mut g = self.lock();
        let inner = &mut *g;
        let mut due = Vec::new();
        inner.catch_ups.retain(|(id, at)| {
            if *at > now {
                return true;
            }
            if let Some(sub) = inner.subs.get(id) {
                due.push((Tenant(sub.tenant.clone()), sub.spec.clone()));
            }
            false
        });
        due
    }

    /// Positions read from the engine after a watch settled: each is taken as a frame
    /// would be, unless the driver's tracked position is as new or newer.
    pub fn catch_up(&self, tenant: &Tenant, positions: Vec<Location>) {
        for l in positions {
            self.apply_position(&tenant.0, l, true);
        }
    }

    fn on_position(&self, tenant: &str, json: &str) {
        let Ok(l) = serde_json::from_str::<Location>(json) else {
            tracing::warn!("unreadable area position dropped");
            return;
        };
        self.apply_position(tenant, l, false);
    }

    fn apply_position(&self, tenant: &str, l: Location, only_newer: bool) {
        let mut g = self.lock();
        let Some(t) = g.tenants.get_mut(tenant) else { return };
        // A driver moving between two cells this node watches sends the update into both
        // rooms: the second copy changes nothing.
        if t.drivers
            .get(&l.driver.0)
            .is_some_and(|tr| tr.updated_at == l.updated_at && tr.lat == l.lat && tr.lng == l.lng)
        {
            return;
        }
        let time = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
        if only_newer && t.drivers.get(&l.driver.0).is_some_and(|tr| time(&tr.updated_at) > time(&l.updated_at)) {
            return;
        }
        metrics::counter!("fleetcast_area_positions_received_total").increment(1);
        t.clock += 1;
        let version = t.clock;
        let cell = Cell::of(l.lat, l.lng);
        let driver = l.driver.0;
        let previous = t.drivers.get(&driver).map(|tr| tr.cell).filter(|c| *c != cell);
        record(t, version, &driver, &[Some(cell), previous].into_iter().flatten().collect::<Vec<_>>());
        match t.drivers.get_mut(&driver) {
            Some(tr) => {
                if tr.cell != cell {
                    if let Some(c) = t.cells.get_mut(&tr.cell) {
                        c.members.remove(&driver);
                    }
                    if let Some(c) = t.cells.get_mut(&cell) {
                        c.members.insert(driver.clone());
                    }
                }
                tr.lat = l.lat;
                tr.lng = l.lng;
                tr.heading = l.heading;
                tr.speed = l.speed;
                tr.updated_at = l.updated_at;
                if tr.trip.is_none() {
                    tr.trip = l.trip.map(|t| t.0);
                }
                tr.cell = cell;
                tr.seen_at = Instant::now();
                tr.version = version;
            }
            None => {
                if let Some(c) = t.cells.get_mut(&cell) {
                    c.members.insert(driver.clone());
                }
                let tracked = Tracked {
                    lat: l.lat,
                    lng: l.lng,
                    heading: l.heading,
                    speed: l.speed,
                    updated_at: l.updated_at,
                    trip: l.trip.map(|t| t.0),
                    availability: None,
                    lookup_pending: false,
                    seen_at: Instant::now(),
                    version,
                    cell,
                };
                t.drivers.insert(driver, tracked);
            }
        }
    }

    fn on_availability(&self, tenant: &str, cell: Cell, json: &str) {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Changed {
            driver_id: String,
            availability: String,
            trip_id: Option<String>,
        }
        let Ok(c) = serde_json::from_str::<Changed>(json) else { return };
        let Some(a) = Availability::parse(&c.availability) else { return };
        let mut g = self.lock();
        let inner = &mut *g;
        let Some(t) = inner.tenants.get_mut(tenant) else { return };
        t.clock += 1;
        let version = t.clock;
        let Some(tr) = t.drivers.get_mut(&c.driver_id) else {
            // Not seen here yet: its next position brings it, and a lookup its value.
            return;
        };
        tr.availability = Some(a);
        tr.trip = c.trip_id;
        tr.version = version;
        let (lat, lng, at) = (tr.lat, tr.lng, tr.cell);
        record(t, version, &c.driver_id, &[at]);
        // Subscribers whose area holds the driver get the event itself too.
        let Some(state) = t.cells.get(&cell) else { return };
        for id in &state.subs {
            if let Some(sub) = inner.subs.get(id)
                && sub.spec.area.contains(lat, lng)
            {
                let _ = sub.tx.try_send(AreaMsg::Availability(json.to_string()));
            }
        }
    }

    /// Applies looked-up availability (`None`: `OFFLINE`).
    pub fn resolve(&self, tenant: &Tenant, drivers: &[String], found: Vec<Option<Presence>>) {
        let mut g = self.lock();
        let Some(t) = g.tenants.get_mut(&tenant.0) else { return };
        for (d, p) in drivers.iter().zip(found) {
            t.clock += 1;
            let version = t.clock;
            if let Some(tr) = t.drivers.get_mut(d) {
                tr.lookup_pending = false;
                if tr.availability.is_none() {
                    tr.availability = Some(p.as_ref().map_or(Availability::Offline, |p| p.availability));
                    if let Some(p) = p {
                        tr.trip = p.trip.or(tr.trip.take());
                    }
                    tr.version = version;
                    let at = tr.cell;
                    record(t, version, d, &[at]);
                }
            }
        }
    }

    /// Drivers whose availability is wanted, marked as looked up.
    fn lookups(inner: &mut Inner) -> Lookups {
        let mut out = Vec::new();
        for (tenant, t) in &mut inner.tenants {
            let mut ids = Vec::new();
            for (d, tr) in &mut t.drivers {
                if tr.availability.is_none() && !tr.lookup_pending && ids.len() < LOOKUP_BATCH {
                    tr.lookup_pending = true;
                    ids.push(d.clone());
                }
            }
            if !ids.is_empty() {
                out.push((Tenant(tenant.clone()), ids));
            }
        }
        out
    }

    /// Lookups that failed: tried again at the next tick.
    pub fn lookup_failed(&self, tenant: &Tenant, drivers: &[String]) {
        let mut g = self.lock();
        let Some(t) = g.tenants.get_mut(&tenant.0) else { return };
        for d in drivers {
            if let Some(tr) = t.drivers.get_mut(d) {
                tr.lookup_pending = false;
            }
        }
    }

    /// One tick: every due subscription gets its frame; every [`HOUSEKEEPING_EVERY`] ticks,
    /// drivers silent for longer than `fresh` count as `OFFLINE` (their stored position
    /// expired with them, so no presence event can name their cell) and drivers no
    /// subscription can need are forgotten.
    /// Returns the availability lookups to run (then [`AreaHub::resolve`]) and the
    /// subscriptions whose edge went away.
    pub fn tick(&self, now: Instant, fresh: Duration) -> (Lookups, Vec<SubId>) {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.ticks += 1;
        let housekeeping = inner.ticks.is_multiple_of(HOUSEKEEPING_EVERY);
        for t in inner.tenants.values_mut().filter(|_| housekeeping) {
            let mut clock = t.clock;
            let mut gone = Vec::new();
            for (d, tr) in &mut t.drivers {
                if tr.availability != Some(Availability::Offline) && now.saturating_duration_since(tr.seen_at) > fresh {
                    clock += 1;
                    tr.availability = Some(Availability::Offline);
                    tr.version = clock;
                    gone.push((clock, d.clone(), tr.cell));
                }
            }
            t.clock = clock;
            for (v, d, c) in gone {
                record(t, v, &d, &[c]);
            }
        }
        let mut closed = Vec::new();
        let mut delivered = 0u64;
        for (id, sub) in &mut inner.subs {
            if sub.due > now {
                continue;
            }
            let Some(t) = inner.tenants.get(&sub.tenant) else { continue };
            let mut drivers = Vec::new();
            let mut entered = Vec::new();
            let mut left = Vec::new();
            let mut look = |d: &String, tr: Option<&Tracked>| match tr {
                Some(tr) if tr.version <= sub.seen => {}
                Some(tr) => match sub.admits(tr.availability) {
                    Some(a) if sub.spec.area.contains(tr.lat, tr.lng) => {
                        drivers.push(tr.row(d, a));
                        entered.push(d.clone());
                    }
                    _ if tr.availability.is_none() && !sub.shown.contains(d) => {}
                    _ => {
                        if sub.shown.contains(d) {
                            left.push(d.clone());
                        }
                    }
                },
                None => {
                    if sub.shown.contains(d) {
                        left.push(d.clone());
                    }
                }
            };
            let behind = sub.cells.iter().any(|c| t.cells.get(c).is_some_and(|s| s.dropped_to > sub.seen));
            if behind {
                // Its logs no longer reach back: every driver of its cells, and those it
                // shows elsewhere.
                for c in &sub.cells {
                    if let Some(state) = t.cells.get(c) {
                        for d in &state.members {
                            look(d, t.drivers.get(d));
                        }
                    }
                }
                for d in &sub.shown {
                    let tr = t.drivers.get(d);
                    if tr.is_none_or(|tr| !sub.cells.contains(&tr.cell)) {
                        look(d, tr);
                    }
                }
            } else {
                // The drivers changed in its cells since its last frame, once each (a driver
                // that left a cell is in that cell's log too).
                let mut changed: Vec<&String> = Vec::new();
                for c in &sub.cells {
                    if let Some(state) = t.cells.get(c) {
                        let fresh = state.log.iter().rev().take_while(|(v, _)| *v > sub.seen);
                        changed.extend(fresh.map(|(_, d)| d));
                    }
                }
                changed.sort_unstable();
                changed.dedup();
                for d in changed {
                    look(d, t.drivers.get(d));
                }
            }
            if drivers.is_empty() && left.is_empty() {
                sub.seen = t.clock;
                continue;
            }
            let n = drivers.len() as u64;
            let at = now_iso();
            let frame = AreaFrame { area_id: sub.spec.area_id.clone(), drivers, left, emitted_at: at.clone(), at };
            let left_ids = frame.left.clone();
            match sub.tx.try_send(AreaMsg::Update(frame)) {
                Ok(()) => {
                    delivered += n;
                    sub.seen = t.clock;
                    sub.due = now + sub.spec.interval;
                    for d in left_ids {
                        sub.shown.remove(&d);
                    }
                    sub.shown.extend(entered);
                }
                // Busy: the changes stay unseen and go in its next frame.
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => closed.push(*id),
            }
        }
        metrics::counter!("fleetcast_area_positions_delivered_total").increment(delivered);
        // Logs keep what some subscription covering the cell has not framed yet.
        for t in inner.tenants.values_mut() {
            for state in t.cells.values_mut() {
                let oldest = state.subs.iter().filter_map(|id| inner.subs.get(id)).map(|s| s.seen).min();
                let keep_after = oldest.unwrap_or(t.clock);
                while state.log.front().is_some_and(|(v, _)| *v <= keep_after) {
                    state.log.pop_front();
                }
            }
        }
        // Forget drivers outside every watched cell that no subscriber shows.
        if housekeeping {
            let shown: HashSet<&String> = inner.subs.values().flat_map(|s| s.shown.iter()).collect();
            for t in inner.tenants.values_mut() {
                let cells = &t.cells;
                t.drivers.retain(|d, tr| cells.contains_key(&tr.cell) || shown.contains(d));
            }
        }
        (Self::lookups(inner), closed)
    }

    /// Local subscriptions (for the node's stats).
    pub fn len(&self) -> usize {
        self.lock().subs.len()
    }

    /// True without subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Sink for AreaHub {
    fn deliver(&self, room: &RoomKey, f: &Frame<'_>, _raw: &RawValue, _id: Option<EventId>) {
        let Some(cell) = room.name().strip_prefix(AREA_CELL) else { return };
        match f.event {
            frame::AREA_POSITION => self.on_position(room.tenant(), f.json),
            events::AVAILABILITY_CHANGED => {
                if let Some(cell) = parse_cell(cell) {
                    self.on_availability(room.tenant(), cell, f.json);
                }
            }
            _ => {}
        }
    }

    fn control(&self, _room: &RoomKey, _command: &Control) {}

    fn counts(&self) -> HashMap<String, LocalCounts> {
        HashMap::new()
    }

    fn takes_area_cells(&self) -> bool {
        true
    }
}

/// Inverse of [`Cell::name`].
fn parse_cell(name: &str) -> Option<Cell> {
    let (a, b) = name.strip_prefix('c')?.split_once('_')?;
    Some(Cell(a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        Tenant("t".into())
    }

    fn position(hub: &AreaHub, driver: &str, lat: f64, lng: f64) {
        let json = format!(r#"{{"driverId":"{driver}","lat":{lat},"lng":{lng},"updatedAt":"2026-01-01T00:00:00Z"}}"#);
        let room = RoomKey::area_cell(&tenant(), Cell::of(lat, lng));
        let text = frame::area_position(&json);
        let f = frame::decode(&text).expect("frame");
        let raw: &RawValue = serde_json::from_str(f.json).expect("json");
        hub.deliver(&room, &f, raw, None);
    }

    use crate::domain::area::Area;

    fn spec(interval_ms: u64) -> AreaSpec {
        AreaSpec {
            area_id: "a1".into(),
            area: Area::bbox([2.0, 48.0, 2.2, 48.2]).expect("valid"),
            interval: Duration::from_millis(interval_ms),
            availability: None,
        }
    }

    fn update(rx: &mut mpsc::Receiver<AreaMsg>) -> Option<AreaFrame> {
        match rx.try_recv() {
            Ok(AreaMsg::Update(f)) => Some(f),
            _ => None,
        }
    }

    impl AreaHub {
        fn tick_at(&self, now: Instant) -> (Lookups, Vec<SubId>) {
            self.tick(now, Duration::from_secs(3_600))
        }
    }

    #[test]
    fn positions_are_conflated_into_one_frame_per_interval_with_the_latest() {
        let hub = AreaHub::default();
        let (tx, mut rx) = mpsc::channel(8);
        let added = hub.add(&tenant(), spec(1_000), tx);
        assert_eq!(added.new_cells, Area::bbox([2.0, 48.0, 2.2, 48.2]).expect("valid").cells());
        for i in 0..10 {
            position(&hub, "d1", 48.1, 2.1 + f64::from(i) * 0.001);
        }
        let start = Instant::now();
        let (lookups, _) = hub.tick_at(start + Duration::from_millis(1_000));
        assert_eq!(lookups.len(), 1, "d1's availability is unknown");
        assert!(update(&mut rx).is_none(), "nothing until its availability is known");
        let (t, ids) = &lookups[0];
        let p = Presence { driver: "d1".into(), availability: Availability::Available, trip: None };
        hub.resolve(t, ids, vec![Some(p)]);
        hub.tick_at(start + Duration::from_millis(1_000));
        let f = update(&mut rx).expect("one frame");
        assert_eq!(f.drivers.len(), 1);
        assert!((f.drivers[0].lng - 2.109).abs() < 1e-9, "latest wins");
        position(&hub, "d1", 48.1, 2.15);
        hub.tick_at(start + Duration::from_millis(1_500));
        assert!(update(&mut rx).is_none(), "not before the interval");
        hub.tick_at(start + Duration::from_millis(2_100));
        assert_eq!(update(&mut rx).expect("next frame").drivers[0].lng, 2.15);
        // Leaving the area.
        position(&hub, "d1", 48.5, 2.15);
        hub.tick_at(start + Duration::from_millis(3_200));
        let f = update(&mut rx).expect("frame");
        assert_eq!((f.drivers.len(), f.left), (0, vec!["d1".to_string()]));
        hub.tick_at(start + Duration::from_millis(4_300));
        assert!(update(&mut rx).is_none(), "no empty frames");
        let (_, gone) = hub.remove(added.id);
        assert_eq!(gone.len(), added.new_cells.len());
    }

    #[test]
    fn offline_drivers_are_not_shown_and_availability_filters() {
        let hub = AreaHub::default();
        let (tx, mut rx) = mpsc::channel(8);
        let mut s = spec(250);
        s.availability = Some(vec![Availability::Busy]);
        hub.add(&tenant(), s, tx);
        position(&hub, "free", 48.1, 2.1);
        position(&hub, "gone", 48.1, 2.1);
        position(&hub, "busy", 48.1, 2.1);
        let now = Instant::now() + Duration::from_secs(1);
        let (lookups, _) = hub.tick_at(now);
        let (t, ids) = &lookups[0];
        let found = ids
            .iter()
            .map(|d| match d.as_str() {
                "free" => Some(Presence { driver: d.clone(), availability: Availability::Available, trip: None }),
                "busy" => {
                    Some(Presence { driver: d.clone(), availability: Availability::Busy, trip: Some("t1".into()) })
                }
                _ => None,
            })
            .collect();
        hub.resolve(t, ids, found);
        hub.tick_at(now);
        let f = update(&mut rx).expect("frame");
        assert_eq!(f.drivers.len(), 1);
        assert_eq!((f.drivers[0].driver_id.as_str(), f.drivers[0].trip_id.as_deref()), ("busy", Some("t1")));
    }

    #[test]
    fn cell_names_parse_back() {
        for c in [Cell(0, 0), Cell(-3, 17), Cell(360, -720)] {
            assert_eq!(parse_cell(&c.name()), Some(c));
        }
    }
}
