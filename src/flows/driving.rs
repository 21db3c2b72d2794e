//! What a driver's app reports (CONTRACT §2): `driver:connect` (may this driver drive the
//! trip), `driver:location:update` (the hot path: one engine round trip stores, rate-limits,
//! samples and publishes) and `driver:status` (a recoverable status event; `EMERGENCY`
//! alerts admins; `ENDED` queues the final snapshot). The edge validated the payload; the
//! checks here are role, then trip ownership, then the engine's rate windows.

use crate::app::App;
use crate::auth::Claims;
use crate::domain::{DriverStatus, Location, Role, RoomKey, TripId};
use crate::engine::{LocationLimits, LocationOutcome, LocationWrite};
use crate::error::{Error, Result};
use crate::events::{Alert, TripStatus};
use crate::fanout;

/// `driver:connect`: the caller must be the trip's driver.
pub async fn connect(app: &App, who: &Claims, trip: &TripId) -> Result<()> {
    app.access.require_driver_of(who, trip).await.map(|_| ())
}

/// `driver:location:update`: stores the position, publishes it to the trip room (to every
/// member but the sending socket `sender`, and to the driver's SSE location streams), and
/// offers a sampled update to the snapshot path.
pub async fn update_location(app: &App, who: &Claims, location: Location, sender: Option<&str>) -> Result<()> {
    if who.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    if let Some(trip) = &location.trip {
        app.access.require_driver_of(who, trip).await?;
    }
    let location_json = serde_json::to_string(&location).map_err(|_| Error::Internal)?;
    let room;
    let frame;
    let publish = match &location.trip {
        Some(t) => {
            room = RoomKey::trip_subscribers(&who.tenant, t);
            frame = fanout::location_frame(&location, sender)?;
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
    };
    match app.engine.write_location(w, &limits).await? {
        LocationOutcome::Accepted { sampled } => {
            metrics::counter!("fleetcast_locations_accepted_total").increment(1);
            if sampled {
                metrics::counter!("fleetcast_locations_sampled_total").increment(1);
                app.sampler.offer_location(&who.tenant, &location);
            }
            Ok(())
        }
        LocationOutcome::RateLimited { retry_after_ms } => Err(Error::RateLimited { retry_after_ms }),
    }
}

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
