//! Watching trips (CONTRACT §2 `passenger:subscribe` / `passenger:unsubscribe`): who may
//! watch, the per-user cap on active trip subscriptions (slots claimed all or nothing across
//! sockets and nodes), and the trips' current positions. Joining the rooms (and replaying
//! what a client missed) is the Socket.IO edge's part.

use crate::app::App;
use crate::auth::Claims;
use crate::domain::{Location, Role, Tenant, TripId};
use crate::engine::{Claim, SlotKind};
use crate::error::{Error, Result};

/// Checks that `who` may watch every trip, then claims one subscription slot per trip for
/// socket `sid` (`SUBSCRIPTION_LIMIT` past the cap; nothing claimed then).
pub async fn claim(app: &App, who: &Claims, sid: &str, trips: &[TripId]) -> Result<()> {
    if who.role == Role::Service {
        return Err(Error::Forbidden);
    }
    for trip in trips {
        app.access.require_watch(who, trip).await?;
    }
    let slots: Vec<&str> = trips.iter().map(|t| t.0.as_str()).collect();
    match app
        .engine
        .claim(SlotKind::Subscriptions, &who.tenant, &who.user, sid, &slots, app.cfg.max_trip_subscriptions)
        .await?
    {
        Claim::Granted => Ok(()),
        Claim::Refused => Err(Error::SubscriptionLimit),
    }
}

/// Frees the subscription slots of `trips` held by socket `sid`.
pub async fn release(app: &App, who: &Claims, sid: &str, trips: &[&TripId]) -> Result<()> {
    let slots: Vec<&str> = trips.iter().map(|t| t.0.as_str()).collect();
    app.engine.release(SlotKind::Subscriptions, &who.tenant, &who.user, sid, &slots).await
}

/// The trip's latest live position.
pub async fn current(app: &App, tenant: &Tenant, trip: &TripId) -> Result<Option<Location>> {
    app.engine.trip_location(tenant, trip).await
}
