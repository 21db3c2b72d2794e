//! Trips (CONTRACT §4 "Trips and bookings"): create and read a trip, and move it along the
//! status machine. Each action checks role, existence and ownership in the contract's order
//! (the edge checked the payload), commits its change in one database transaction, and only
//! then emits its events through the one publish path; an emission failure is logged and
//! counted, never returned.

use crate::app::App;
use crate::auth::Claims;
use crate::domain::rides::{TripPlan, TripStatus, TripType};
use crate::domain::rooms::trip_grant;
use crate::domain::{Role, RoomKey, Tenant, TripId, UserId};
use crate::error::{Error, Result};
use crate::events::{ExpiryReason, OfferExpired, TripCreated};
use crate::fanout;
use crate::store::rides::TripRow;

use super::offers;
use super::status_events::{emit_status, status_updated};

/// Creates a trip; emits `trip.created` to `admin:events`, and offers a PRIVATE published
/// trip without driver to drivers at once.
pub async fn create_trip(app: &App, who: &Claims, plan: TripPlan) -> Result<TripRow> {
    match (who.role, plan.trip_type) {
        (Role::Passenger, TripType::Private) | (Role::Business | Role::Admin | Role::Service, _) => {}
        _ => return Err(Error::Forbidden),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let row = app.db.insert_trip(&who.tenant, &id, &who.user.0, &plan).await?;
    metrics::counter!("fleetcast_trips_created_total").increment(1);
    let created = TripCreated {
        trip_id: &row.id,
        trip_type: &row.trip_type,
        title: &row.title,
        organizer_id: &row.organizer_id,
        status: &row.status,
    };
    if let Err(e) = fanout::publish(&app.engine, &RoomKey::admin_events(&who.tenant), &created).await {
        fanout::publish_failed(crate::events::TRIP_CREATED);
        tracing::warn!(error = %e, "trip.created not published");
    }
    if plan.trip_type == TripType::Private && plan.status == TripStatus::Published {
        // Offered at once; a failure leaves the trip for `broadcast-offer` and is logged.
        if let Err(e) = offers::offer_round(app, &who.tenant, &row.id, 0).await {
            tracing::warn!(error = %e, trip = %row.id, "automatic offer failed");
        }
    }
    Ok(row)
}

/// The trip, if the caller may see it: participants (organizer, driver, passengers with a
/// booking, conductors with a `trip:{id}` grant), or ADMIN, BUSINESS and SERVICE callers.
pub async fn get_trip(app: &App, who: &Claims, id: &str) -> Result<TripRow> {
    let row = app.db.get_trip(&who.tenant, id).await?.ok_or(Error::NotFound)?;
    let allowed = match who.role {
        Role::Admin | Role::Business | Role::Service => true,
        _ if row.organizer_id == who.user.0 => true,
        Role::Driver => row.driver_id.as_deref() == Some(who.user.0.as_str()),
        Role::Conductor => who.grants(&trip_grant(id)),
        Role::Passenger => app.db.has_active_booking(&who.tenant, &TripId(id.into()), &who.user).await?,
    };
    if allowed { Ok(row) } else { Err(Error::Forbidden) }
}

/// `PUT /api/drivers/trips/{tripId}/status`: the trip's driver or an ADMIN moves the trip
/// along the status machine.
pub async fn change_status(
    app: &App,
    who: &Claims,
    trip_id: &str,
    to: TripStatus,
    notes: Option<String>,
) -> Result<TripRow> {
    if !matches!(who.role, Role::Driver | Role::Admin) {
        return Err(Error::Forbidden);
    }
    let row = app.db.get_trip(&who.tenant, trip_id).await?.ok_or(Error::NotFound)?;
    if who.role == Role::Driver && row.driver_id.as_deref() != Some(who.user.0.as_str()) {
        return Err(Error::Forbidden);
    }
    let from = row.status();
    if !from.can_change_to(to) {
        return Err(Error::InvalidTransition(format!("{} → {} is not allowed", from.as_str(), to.as_str())));
    }
    let change = app
        .db
        .change_status(&who.tenant, trip_id, from, to, notes.as_deref(), &who.user.0)
        .await?
        .ok_or_else(|| Error::InvalidTransition("the trip status changed meanwhile; read it again".into()))?;
    app.access.invalidate(&who.tenant, &TripId(trip_id.into()));
    metrics::counter!("fleetcast_trip_status_changes_total", "status" => to.as_str()).increment(1);
    let driver_name = match &change.trip.driver_id {
        Some(d) if who.user.0 == *d => who.name.clone(),
        Some(d) => app.db.driver_name(&who.tenant, d).await.unwrap_or(None),
        None => None,
    };
    let event = status_updated(&change.trip, change.previous, notes.as_deref(), driver_name.as_deref());
    emit_status(app, &who.tenant, &change.trip, &event).await;
    if !change.cancelled_offers.is_empty() {
        let drivers: Vec<&str> = change.cancelled_offers.iter().map(String::as_str).collect();
        let expired = OfferExpired { trip_id, reason: ExpiryReason::Cancelled };
        fanout::publish_to_users(&app.engine, &who.tenant, &drivers, &expired).await;
    }
    if let Some(driver) = &change.trip.driver_id {
        if to.is_final() {
            final_snapshot(app, &who.tenant, driver, trip_id).await;
        }
        super::presence::notice(app, &who.tenant, &UserId(driver.clone())).await;
    }
    Ok(change.trip)
}

/// Queues the trip's last live position as its final snapshot (CONTRACT §5 "one at trip
/// end"); the natural key makes it a no-op when that position was already sampled.
async fn final_snapshot(app: &App, tenant: &Tenant, driver: &str, trip: &str) {
    let trip = TripId(trip.into());
    match app.engine.trip_location(tenant, &trip).await {
        Ok(Some(location)) => app.sampler.offer_final(tenant, driver, &trip, &location),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, trip = %trip, "final position not read; no final snapshot"),
    }
}
