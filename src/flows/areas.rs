//! Live areas (CONTRACT §7): `area:subscribe` / `area:unsubscribe` and the SSE area
//! stream share this flow. A subscription registers with the node's
//! [`AreaHub`](crate::fanout::areas::AreaHub), makes the node watch the geo cells it covers
//! (so the location path starts publishing into them), then reads its first snapshot from
//! the engine's GEO index and stored presence. The hub's tick runs here: conflated frames,
//! and availability lookups for drivers first seen.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::auth::Claims;
use crate::domain::area::AreaSpec;
use crate::domain::presence::Availability;
use crate::domain::{Location, Role, Tenant, UserId};
use crate::error::{Error, Result};
use crate::fanout::areas::{AreaDriver, AreaMsg, MAX_SNAPSHOT, SUB_BUFFER, SubId, TICK};

/// A subscription just made: its id, the drivers inside now, and whether there were more
/// than [`MAX_SNAPSHOT`].
pub struct Subscribed {
    /// Pass to [`unsubscribe`].
    pub id: SubId,
    /// The drivers inside now.
    pub drivers: Vec<AreaDriver>,
    /// More than [`MAX_SNAPSHOT`] were inside.
    pub truncated: bool,
    /// Its frames; the hub drops the subscription when this is dropped.
    pub rx: mpsc::Receiver<AreaMsg>,
}

/// Areas are for ADMIN and BUSINESS callers (checked before an edge's own limits).
pub fn require_viewer(who: &Claims) -> Result<()> {
    if matches!(who.role, Role::Admin | Role::Business) { Ok(()) } else { Err(Error::Forbidden) }
}

/// Subscribes an ADMIN or BUSINESS caller to an area.
pub async fn subscribe(app: &App, who: &Claims, spec: AreaSpec) -> Result<Subscribed> {
    require_viewer(who)?;
    let (tx, rx) = mpsc::channel(SUB_BUFFER);
    let added = app.areas.add(&who.tenant, spec.clone(), tx);
    let mut watched = Ok(());
    for c in &added.new_cells {
        watched = app.engine.watch_cell(&who.tenant, *c).await;
        if watched.is_err() {
            break;
        }
    }
    let snapshot = match watched {
        Ok(()) => snapshot(app, &who.tenant, &spec).await,
        Err(e) => Err(e),
    };
    let mut drivers = match snapshot {
        Ok(d) => d,
        Err(e) => {
            unsubscribe(app, added.id).await;
            return Err(e);
        }
    };
    let truncated = drivers.len() > MAX_SNAPSHOT;
    drivers.truncate(MAX_SNAPSHOT);
    app.areas.seed(added.id, &drivers);
    if !added.new_cells.is_empty() {
        app.areas.schedule_catch_up(added.id, Instant::now() + crate::engine::WATCH_SETTLE);
    }
    metrics::counter!("fleetcast_area_subscribes_total").increment(1);
    Ok(Subscribed { id: added.id, drivers, truncated, rx })
}

/// The live drivers whose indexed position is within the index's slack
/// ([`crate::engine::INDEX_SLACK_M`]) of the area: every driver whose latest position is
/// inside is among them (the callers keep those, by their latest positions).
async fn indexed_near(app: &App, tenant: &Tenant, spec: &AreaSpec) -> Result<Vec<String>> {
    let slack_km = crate::engine::INDEX_SLACK_M / 1000.0;
    let (lat, lng, radius) = spec.area.enclosing_circle();
    let mut near = app.engine.drivers_near(tenant, lat, lng, radius + slack_km, app.cfg.location_ttl_ms).await?;
    let wider = spec.area.grown(slack_km);
    near.retain(|(_, lat, lng)| wider.contains(*lat, *lng));
    Ok(near.into_iter().map(|(d, _, _)| d).collect())
}

/// The latest positions of the live drivers inside the area now.
async fn positions(app: &App, tenant: &Tenant, spec: &AreaSpec) -> Result<Vec<Location>> {
    let users: Vec<UserId> = indexed_near(app, tenant, spec).await?.into_iter().map(UserId).collect();
    let locations = app.engine.driver_locations(tenant, &users).await?;
    Ok(locations.into_iter().flatten().filter(|l| spec.area.contains(l.lat, l.lng)).collect())
}

/// The live drivers inside the area now, nearest to its centre first.
async fn snapshot(app: &App, tenant: &Tenant, spec: &AreaSpec) -> Result<Vec<AreaDriver>> {
    let ids = indexed_near(app, tenant, spec).await?;
    let presence = app.engine.presence_of(tenant, &ids).await?;
    let users: Vec<UserId> = ids.iter().map(|d| UserId(d.clone())).collect();
    let locations = app.engine.driver_locations(tenant, &users).await?;
    let wanted = |a: Availability| spec.availability.as_ref().is_none_or(|w| w.contains(&a));
    Ok(presence
        .into_iter()
        .zip(locations)
        .filter_map(|(p, l)| {
            let (p, l) = (p?, l?);
            if !wanted(p.availability) || !spec.area.contains(l.lat, l.lng) {
                return None;
            }
            Some(AreaDriver {
                driver_id: p.driver,
                lat: l.lat,
                lng: l.lng,
                heading: l.heading,
                speed: l.speed,
                availability: p.availability,
                trip_id: p.trip.or(l.trip.map(|t| t.0)),
                updated_at: l.updated_at,
            })
        })
        .collect())
}

/// Ends a subscription; the node stops watching cells no other local one covers.
pub async fn unsubscribe(app: &App, id: SubId) {
    let (tenant, gone) = app.areas.remove(id);
    for c in gone {
        app.engine.unwatch_cell(&tenant, c).await;
    }
}

/// The hub's tick every [`TICK`] (owner: the node; stops on `cancel`).
pub async fn tick_loop(app: Arc<App>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let fresh = std::time::Duration::from_millis(app.cfg.location_ttl_ms);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if app.areas.is_empty() {
            continue;
        }
        // New areas' positions again once their watch has settled cluster-wide (positions
        // written meanwhile by a node that had not yet seen the watch came without a frame).
        for (tenant, spec) in app.areas.due_catch_ups(Instant::now()) {
            match positions(&app, &tenant, &spec).await {
                Ok(found) => app.areas.catch_up(&tenant, found),
                Err(e) => tracing::debug!(error = %e, "area catch-up not read"),
            }
        }
        let (lookups, closed) = app.areas.tick(Instant::now(), fresh);
        for id in closed {
            unsubscribe(&app, id).await;
        }
        for (tenant, drivers) in lookups {
            match app.engine.presence_of(&tenant, &drivers).await {
                Ok(found) => app.areas.resolve(&tenant, &drivers, found),
                Err(_) => app.areas.lookup_failed(&tenant, &drivers),
            }
        }
    }
}
