//! Driver presence (CONTRACT §7): a driver's availability is derived again whenever one of
//! its facts may have changed — a connection or SSE stream opened or closed, an offer
//! subscription taken or dropped, the first fresh position after a silence, a trip accepted
//! or moved along — and by a sweep every [`SWEEP_INTERVAL`] for what changes without an
//! event (positions going stale, a node dying without notice: a tick derives the drivers
//! whose position went stale, and all of them when a node fell silent). The first fresh
//! position and `driver:connect` queue the driver in [`App::notices`] (`driver:connect`
//! waits for its batch; [`notice_loop`]); the other facts derive it on their own. One node
//! sweeps each tick cluster-wide; the engine compares and sets each value, so every change is
//! announced once: `driver.availability.changed` to `admin:events`. `GET /api/v1/drivers`
//! reads the stored values.

use std::time::Duration;

use crate::app::App;
use crate::auth::Claims;
use crate::domain::area::Cell;
use crate::domain::presence::Availability;
use crate::domain::rides::haversine_km;
use crate::domain::{Location, Role, RoomKey, Tenant, UserId};
use crate::engine::{Once, PresenceChange, PresenceInput, PresenceLimits};
use crate::error::{Error, Result};
use crate::events::AvailabilityChanged;
use crate::fanout;

/// How often the cluster sweeps presence (a killed node's drivers go `OFFLINE` within its
/// silence limit plus this).
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// The derivation's settings: positions are fresh for the location TTL; a node silent for
/// two and a half heartbeats (3.75 s by default) holds no connections.
pub fn limits(app: &App) -> PresenceLimits {
    PresenceLimits { fresh_ms: app.cfg.location_ttl_ms, node_silence_ms: app.cfg.node_heartbeat_ms * 5 / 2 }
}

/// Derives one driver's availability again (its trip read from the database) and
/// announces a change. Called after the fact changed; a failure is logged, never returned
/// (the sweep corrects what it missed within a tick, but for new trips).
pub async fn notice(app: &App, tenant: &Tenant, driver: &UserId) {
    let _ = notice_or_fail(app, tenant, driver).await;
}

/// [`notice`] that also says whether the derivation ran (a caller with no later fact
/// change to wait for — a node back from a silence — tries again).
pub async fn notice_or_fail(app: &App, tenant: &Tenant, driver: &UserId) -> Result<()> {
    let r = refresh(app, tenant, driver).await;
    if let Err(e) = &r {
        crate::telemetry::storm::warn_storm!(error = %e, driver = %driver.0, "availability not derived");
    }
    r
}

/// After a driver lost a connection or an offer subscription: derives its availability
/// again keeping its stored trip (a loss cannot start a trip, so no database read — a
/// node shutting down drops thousands of sockets at once). Nothing for other roles.
pub async fn notice_loss(app: &App, who: &Claims) {
    if who.role != Role::Driver {
        return;
    }
    let input = [PresenceInput { driver: who.user.0.clone(), trip: None }];
    match app.engine.derive_presence(&who.tenant, &input, &limits(app)).await {
        Ok(changes) => announce(app, &who.tenant, &changes).await,
        Err(e) => crate::telemetry::storm::warn_storm!(error = %e, driver = %who.user.0, "availability not derived"),
    }
}

/// The wait after a batch failed before it is tried again.
const NOTICE_RETRY: Duration = Duration::from_secs(1);

/// Derives the availability of the drivers queued in [`App::notices`] in batches while this
/// node runs (owner: the node; stops on `cancel`): what is queued is derived at once, per
/// tenant with one database read of the drivers' active trips and one derivation per 500
/// drivers, and what is queued meanwhile forms the next batch. A batch that fails is queued
/// again and tried after [`NOTICE_RETRY`] (its callers go on: nothing else derives a driver
/// that came live until the next full sweep).
pub async fn notice_loop(app: std::sync::Arc<App>, cancel: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = app.notices.queued.notified() => {}
        }
        if !derive_queued(&app).await {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(NOTICE_RETRY) => {}
            }
        }
    }
    // Shutting down: what is queued is derived once more, briefly (no node would later).
    let _ = tokio::time::timeout(NOTICE_RETRY, derive_queued(&app)).await;
}

/// Derives what is queued; false when some batch failed (it is queued again).
/// The batch's callers go on once it is stored, before its changes are announced.
async fn derive_queued(app: &App) -> bool {
    let mut all = true;
    let (batch, queued) = app.notices.drain();
    let mut derived = Vec::new();
    for (tenant, drivers) in queued {
        for chunk in drivers.chunks(500) {
            match derive_batch(app, &tenant, chunk).await {
                Ok(changes) => derived.push((tenant.clone(), changes)),
                Err(e) => {
                    crate::telemetry::storm::warn_storm!(error = %e, drivers = chunk.len(), "availability not derived");
                    chunk.iter().for_each(|d| drop(app.notices.push(&tenant, d)));
                    all = false;
                }
            }
        }
    }
    app.notices.finished(batch);
    for (tenant, changes) in derived {
        announce(app, &tenant, &changes).await;
    }
    all
}

async fn derive_batch(app: &App, tenant: &Tenant, drivers: &[UserId]) -> Result<Vec<PresenceChange>> {
    let ids: Vec<String> = drivers.iter().map(|d| d.0.clone()).collect();
    let mut trips = app.db.driver_active_trips(tenant, &ids).await?;
    let inputs: Vec<PresenceInput> =
        ids.into_iter().map(|d| PresenceInput { trip: Some(trips.remove(&d)), driver: d }).collect();
    app.engine.derive_presence(tenant, &inputs, &limits(app)).await
}

async fn refresh(app: &App, tenant: &Tenant, driver: &UserId) -> Result<()> {
    let changes = derive_batch(app, tenant, std::slice::from_ref(driver)).await?;
    announce(app, tenant, &changes).await;
    Ok(())
}

/// Most announcements of one derivation in flight at once (a driver is in a derivation's
/// changes at most once, so no driver's two changes are reordered).
const ANNOUNCE_AT_ONCE: usize = 32;

async fn announce(app: &App, tenant: &Tenant, changes: &[PresenceChange]) {
    use futures_util::StreamExt as _;
    if changes.is_empty() {
        return;
    }
    // One read of the tenant's watched cells for the whole batch: while no live area
    // watches any, a change costs its `admin:events` publish only.
    let watched = app.engine.watched_cells(tenant).await.unwrap_or_default();
    futures_util::stream::iter(changes)
        .for_each_concurrent(ANNOUNCE_AT_ONCE, |c| announce_one(app, tenant, c, &watched))
        .await;
}

async fn announce_one(app: &App, tenant: &Tenant, c: &PresenceChange, watched: &crate::engine::WatchedCells) {
    metrics::counter!("fleetcast_availability_changes_total", "availability" => c.availability.as_str()).increment(1);
    let at = crate::domain::now_iso();
    let event = AvailabilityChanged {
        driver_id: &c.driver,
        availability: c.availability,
        previous: c.previous,
        trip_id: c.trip.as_deref(),
        at: &at,
    };
    if fanout::publish(&app.engine, &RoomKey::admin_events(tenant), &event).await.is_err() {
        fanout::publish_failed(crate::events::AVAILABILITY_CHANGED);
    }
    // Area subscribers whose area holds the driver: into the room of its cell, while
    // some node watches it. (A driver gone stale has no stored position left: each
    // node's areas notice that on their own.)
    if watched.is_empty() {
        return;
    }
    let driver = UserId(c.driver.clone());
    if let Ok(Some(l)) = app.engine.driver_location(tenant, &driver).await {
        let cell = Cell::of(l.lat, l.lng);
        if watched.contains(&cell.name())
            && fanout::publish(&app.engine, &RoomKey::area_cell(tenant, cell), &event).await.is_err()
        {
            fanout::publish_failed(crate::events::AVAILABILITY_CHANGED);
        }
    }
}

/// Sweeps presence every [`SWEEP_INTERVAL`] while this node runs (owner: the node; stops on
/// `cancel`). Each tick one node of the cluster wins the tick's mark and sweeps.
pub async fn sweep_loop(app: std::sync::Arc<App>, cancel: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = Sweep::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let n = crate::domain::now_ms() / SWEEP_INTERVAL.as_millis() as u64;
        match app.engine.once(Once::PresenceSweep(n), 10 * SWEEP_INTERVAL.as_millis() as u64).await {
            Ok(true) => {
                let seq = app.engine.next_sweep().await;
                if let Err(e) = match seq {
                    Ok(seq) => sweep.run(&app, seq).await,
                    Err(e) => Err(e),
                } {
                    tracing::debug!(error = %e, "presence sweep failed");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "presence sweep not claimed"),
        }
    }
}

/// A full sweep at least every this many sweeps cluster-wide (30 s at one sweep per tick),
/// whatever happened (a backstop): the sweep whose number (`Engine::next_sweep`) is a
/// multiple of it, whichever node runs it.
const FULL_SWEEP_EVERY: u64 = 60;

/// Each sweep checks the freshness of one part of the present drivers (by a hash of the
/// driver id, the part the sweep's cluster-wide number names, so missed ticks skip no
/// part): a driver's position is checked every `FRESHNESS_PARTS` sweeps (2 s), so a stale
/// one turns `OFFLINE` well within the contract's 5 s, and a sweep reads a quarter of the
/// positions.
const FRESHNESS_PARTS: u64 = 4;

/// The freshness part of a driver: its presence bucket's (the same on every node; on a
/// Redis Cluster a part is whole buckets).
fn freshness_part(driver: &str) -> u64 {
    u64::from(crate::engine::keys::presence_bucket_of(driver)) % FRESHNESS_PARTS
}

/// What the sweeping node remembers between ticks.
#[derive(Default)]
struct Sweep {
    /// Nodes that counted as alive at the last tick this node swept.
    alive: std::collections::HashSet<String>,
    /// Whether this node swept before (its first sweep is a full one: it has no `alive`
    /// of its own to compare with).
    swept: bool,
}

impl Sweep {
    /// Sweep number `seq`: the present drivers of its freshness part whose position went
    /// stale are derived again; all present drivers when a node fell silent since this
    /// node's last sweep (its connections and offer slots no longer count), at this node's
    /// first sweep, and every [`FULL_SWEEP_EVERY`]. So a quiet sweep costs a read of the
    /// present drivers and of a quarter of their positions, not a derivation per driver.
    async fn run(&mut self, app: &App, seq: u64) -> Result<()> {
        let silence = limits(app).node_silence_ms;
        let now = crate::domain::now_ms();
        let alive: std::collections::HashSet<String> = app
            .engine
            .node_beats()
            .await?
            .into_iter()
            .filter(|(_, beat)| now.saturating_sub(*beat) <= silence)
            .map(|(node, _)| node)
            .collect();
        let node_gone = self.alive.iter().any(|n| !alive.contains(n));
        self.alive = alive;
        let full = node_gone || !self.swept || seq.is_multiple_of(FULL_SWEEP_EVERY);
        self.swept = true;
        for tenant in app.engine.presence_tenants().await? {
            let present = app.engine.present_drivers(&tenant).await?;
            let ids: Vec<String> = present.into_iter().map(|p| p.driver).collect();
            let due: Vec<String> = if full {
                ids
            } else {
                let part = seq % FRESHNESS_PARTS;
                let ids: Vec<String> = ids.into_iter().filter(|d| freshness_part(d) == part).collect();
                let fresh = app.engine.freshness(&tenant, &ids, app.cfg.location_ttl_ms).await?;
                ids.into_iter().zip(fresh).filter(|(_, f)| !f).map(|(d, _)| d).collect()
            };
            if due.is_empty() {
                continue;
            }
            let inputs: Vec<PresenceInput> =
                due.into_iter().map(|driver| PresenceInput { driver, trip: None }).collect();
            let changes = app.engine.derive_presence(&tenant, &inputs, &limits(app)).await?;
            announce(app, &tenant, &changes).await;
        }
        Ok(())
    }
}

/// Most drivers `GET /api/v1/drivers` returns.
pub const MAX_LIST: usize = 1_000;

/// `GET /api/v1/drivers`'s question.
#[derive(Debug, Clone)]
pub struct DriverQuery {
    /// Wanted values (`AVAILABLE`, `BUSY` or both).
    pub availability: Vec<Availability>,
    /// Sort by distance from here `(lat, lng)`.
    pub near: Option<(f64, f64)>,
    /// With `near`: keep only drivers within this many km.
    pub radius_km: Option<f64>,
    /// Most drivers returned (1–1000).
    pub limit: usize,
}

/// One listed driver.
#[derive(Debug, Clone)]
pub struct ListedDriver {
    /// The driver.
    pub driver_id: String,
    /// Its display name, if known.
    pub name: Option<String>,
    /// `AVAILABLE` or `BUSY`.
    pub availability: Availability,
    /// Its active trip.
    pub trip_id: Option<String>,
    /// Its latest live position.
    pub location: Option<Location>,
}

/// `GET /api/v1/drivers` (ADMIN, BUSINESS, SERVICE): the matching drivers (after `limit`)
/// and how many matched (before it).
pub async fn list(app: &App, who: &Claims, q: &DriverQuery) -> Result<(Vec<ListedDriver>, usize)> {
    if !matches!(who.role, Role::Admin | Role::Business | Role::Service) {
        return Err(Error::Forbidden);
    }
    let mut present = app.engine.present_drivers(&who.tenant).await?;
    present.retain(|p| q.availability.contains(&p.availability));
    let ids: Vec<UserId> = present.iter().map(|p| UserId(p.driver.clone())).collect();
    let locations = app.engine.driver_locations(&who.tenant, &ids).await?;
    let mut rows: Vec<(f64, ListedDriver)> = present
        .into_iter()
        .zip(locations)
        .filter_map(|(p, location)| {
            let distance = match (q.near, &location) {
                (Some(at), Some(l)) => haversine_km(at, (l.lat, l.lng)),
                (Some(_), None) if q.radius_km.is_some() => return None,
                _ => f64::INFINITY,
            };
            if q.radius_km.is_some_and(|r| distance > r) {
                return None;
            }
            let row = ListedDriver {
                driver_id: p.driver,
                name: None,
                availability: p.availability,
                trip_id: p.trip,
                location,
            };
            Some((distance, row))
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.driver_id.cmp(&b.1.driver_id)));
    let total = rows.len();
    rows.truncate(q.limit);
    let mut drivers: Vec<ListedDriver> = rows.into_iter().map(|(_, d)| d).collect();
    let ids: Vec<String> = drivers.iter().map(|d| d.driver_id.clone()).collect();
    let names: std::collections::HashMap<String, String> =
        app.db.driver_names(&who.tenant, &ids).await?.into_iter().collect();
    for d in &mut drivers {
        d.name = names.get(&d.driver_id).cloned();
    }
    Ok((drivers, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_parts_are_stable_and_even() {
        assert_eq!(freshness_part("driver-1"), freshness_part("driver-1"));
        let mut parts = [0u32; FRESHNESS_PARTS as usize];
        for i in 0..4_000 {
            parts[freshness_part(&format!("d{i}")) as usize] += 1;
        }
        assert!(parts.iter().all(|&n| (800..=1200).contains(&n)), "{parts:?}");
    }
}
