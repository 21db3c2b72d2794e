//! What a driver's app reports (CONTRACT §2): `driver:connect` (may this driver drive the
//! trip), `driver:location:update` (the hot path: one engine round trip stores, rate-limits,
//! samples and publishes) and `driver:status` (a recoverable status event; `EMERGENCY`
//! alerts admins; `ENDED` queues the final snapshot). The edge validated the payload; the
//! checks here are role, then trip ownership, then the engine's rate windows.

use crate::app::App;
use crate::auth::Claims;
use crate::domain::area::Cell;
use crate::domain::progress::{Progress, Target};
use crate::domain::{DriverStatus, Location, Role, RoomKey, Tenant, TripId};
use crate::engine::{Engine, LocationLimits, LocationOutcome, LocationWrite, Once};
use crate::error::{Error, Result};
use crate::events::{Alert, DriverArriving, TripStatus};
use crate::fanout;
use crate::store::{Db, TripMembership};

/// `driver:connect`: the caller must be the trip's driver.
pub async fn connect(app: &App, who: &Claims, trip: &TripId) -> Result<()> {
    app.access.require_driver_of(who, trip).await?;
    // The driver's trip connection may make it BUSY: derived in the node's batch (a fleet
    // reconnecting at once costs a read and a derivation per batch, not per driver).
    app.notices.derived(app.notices.push(&who.tenant, &who.user)).await;
    Ok(())
}

/// `driver:location:update`: stores the position, publishes it to the trip room (to every
/// member but the sending socket `sender`, and to the driver's SSE location streams) with
/// the trip's progress, offers a sampled update to the snapshot path, and sends
/// `trip.driver.arriving` the first time the driver is within the arrival radius of its
/// target. The first fresh position after a silence derives the driver's availability.
pub async fn update_location(app: &App, who: &Claims, location: Location, sender: Option<&str>) -> Result<()> {
    if who.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    let trip = match &location.trip {
        Some(t) => Some(app.access.require_driver_of(who, t).await?),
        None => None,
    };
    // Every update the node sees counts toward the pace, a refused one too: it was driven.
    let pace = app.pace.observe(&who.tenant.0, &who.user.0, location.lat, location.lng, location.speed);
    let progress = trip.as_ref().and_then(|m| {
        let target = Target::of_status(&m.status)?;
        let to = match target {
            Target::Pickup => m.origin,
            Target::Destination => m.destination,
        };
        Some(Progress::towards(target, (location.lat, location.lng), to, pace))
    });
    let location_json = serde_json::to_string(&location).map_err(|_| Error::Internal)?;
    let room;
    let frame;
    let publish = match &location.trip {
        Some(t) => {
            room = RoomKey::trip_subscribers(&who.tenant, t);
            frame = fanout::location_frame(&location, progress.as_ref(), sender)?;
            Some((&room, frame.as_str()))
        }
        None => None,
    };
    let limits = LocationLimits {
        min_interval_ms: app.cfg.location_min_interval_ms,
        max_per_minute: app.cfg.location_max_per_minute,
        ttl_ms: app.cfg.location_ttl_ms,
        snapshot_interval_ms: app.cfg.snapshot_interval_ms,
    };
    let driver_room = RoomKey::driver_location(&who.tenant, &who.user);
    let driver_frame = fanout::driver_location_frame(&location)?;
    let w = LocationWrite {
        tenant: &who.tenant,
        fix: &location,
        location_json: &location_json,
        publish,
        driver_room: (&driver_room, &driver_frame),
        cell: Cell::of(location.lat, location.lng),
    };
    match app.engine.write_location(w, &limits).await? {
        LocationOutcome::Accepted { sampled, came_live } => {
            metrics::counter!("fleetcast_locations_accepted_total").increment(1);
            if sampled {
                metrics::counter!("fleetcast_locations_sampled_total").increment(1);
                app.sampler.offer_location(&who.tenant, &location);
            }
            if came_live {
                // Derived in the node's batch (one read and one derivation for all the
                // drivers coming live meanwhile), not waited for: the update is applied, and
                // a wait here could run past the ack deadline and answer UNAVAILABLE for it.
                drop(app.notices.push(&who.tenant, &who.user));
            }
            if let (Some(p), Some(t), Some(m)) = (progress, &location.trip, trip)
                && p.distance_km * 1000.0 <= app.cfg.arrival_radius_m
            {
                // Not waited for either: the update is applied; the arrival's mark, read and
                // publish must not hold its ack past the deadline.
                let (engine, db, tenant, t) = (app.engine.clone(), app.db.clone(), who.tenant.clone(), t.clone());
                tokio::spawn(async move { arriving(&engine, &db, &tenant, &t, &m, &p).await });
            }
            Ok(())
        }
        LocationOutcome::RateLimited { retry_after_ms } => Err(Error::RateLimited { retry_after_ms }),
    }
}

/// Sends `trip.driver.arriving` once per trip and target cluster-wide: the first node to
/// set the mark confirms the status in the database (this node's cache may be seconds
/// old; statuses only move forward, so a mark taken for a target the trip has passed is
/// one that must never fire) and emits. Failures are logged: the location was accepted.
async fn arriving(engine: &Engine, db: &Db, tenant: &Tenant, trip: &TripId, cached: &TripMembership, p: &Progress) {
    match engine.once(Once::Arrival(tenant, trip, p.target.as_str()), ARRIVAL_MARK_MS).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, trip = %trip.0, "arrival not checked");
            return;
        }
    }
    let current = match db.trip_membership(tenant, trip).await {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, trip = %trip.0, "arrival not sent: trip not read");
            return;
        }
    };
    if Target::of_status(&current.status) != Some(p.target) {
        return;
    }
    let passengers = db.trip_passengers(tenant, &trip.0).await.unwrap_or_default();
    let mut users: Vec<&str> = vec![cached.organizer.0.as_str()];
    users.extend(passengers.iter().map(String::as_str));
    let at = crate::domain::now_iso();
    let event = DriverArriving { trip_id: &trip.0, target: p.target, distance_km: p.distance_km, at: &at };
    let room = RoomKey::trip_subscribers(tenant, trip);
    fanout::publish_to_room_and_users(engine, tenant, Some(&room), &users, &event).await;
    metrics::counter!("fleetcast_arrivals_total", "target" => p.target.as_str()).increment(1);
}

/// How long an arrival mark is kept: longer than any trip.
const ARRIVAL_MARK_MS: u64 = 7 * 24 * 3600 * 1000;

/// `driver:status`: publishes `server:trip:status` to the trip room; `EMERGENCY` also
/// `server:alert` to `admin:alerts` with the driver's last position; `ENDED` queues that
/// position as the trip's final snapshot.
pub async fn report_status(
    app: &App,
    who: &Claims,
    trip: &TripId,
    status: DriverStatus,
    timestamp: &str,
) -> Result<()> {
    app.access.require_driver_of(who, trip).await?;
    // Read the trip's final position before anything is published, so a Redis failure
    // answers UNAVAILABLE for a status nobody has seen yet.
    let final_position = match status {
        DriverStatus::Ended => app.engine.driver_location(&who.tenant, &who.user).await?,
        _ => None,
    };
    let event = TripStatus { trip_id: &trip.0, driver_id: &who.user.0, status: status.as_str(), timestamp };
    fanout::publish(&app.engine, &RoomKey::trip_subscribers(&who.tenant, trip), &event).await?;
    // The trip's final position is stored whatever the sampling interval says; the natural
    // key makes it a no-op when that update was already sampled.
    if let Some(location) = final_position {
        app.sampler.offer_final(&who.tenant, &who.user.0, trip, &location);
    }
    if status == DriverStatus::Emergency {
        // The alert carries the driver's last live position when there is one.
        let last = app.engine.driver_location(&who.tenant, &who.user).await.ok().flatten();
        let alert = Alert {
            kind: "EMERGENCY",
            trip_id: &trip.0,
            driver_id: &who.user.0,
            lat: last.as_ref().map(|l| l.lat),
            lng: last.as_ref().map(|l| l.lng),
            message: "driver reported an emergency",
            at: timestamp,
        };
        fanout::publish(&app.engine, &RoomKey::admin_alerts(&who.tenant), &alert).await?;
    }
    Ok(())
}
