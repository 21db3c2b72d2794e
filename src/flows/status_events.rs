//! `trip.status.updated` (CONTRACT §2): built from the trip after a change, and emitted to
//! the trip's subscribers (so its SSE trip-status streams) and the user rooms of driver,
//! organizer and passengers. Shared by the status API and the accepted offer.

use crate::app::App;
use crate::domain::rides::TripStatus;
use crate::domain::{RoomKey, Tenant, TripId};
use crate::events::TripStatusUpdated;
use crate::fanout;
use crate::store::rides::TripRow;

/// `trip.status.updated` of a trip after a change from `previous`.
pub(super) fn status_updated<'a>(
    row: &'a TripRow,
    previous: TripStatus,
    notes: Option<&'a str>,
    driver_name: Option<&'a str>,
) -> TripStatusUpdated<'a> {
    TripStatusUpdated {
        trip_id: &row.id,
        trip_title: &row.title,
        previous_status: previous.as_str(),
        new_status: &row.status,
        driver_name,
        notes,
        origin_name: &row.origin_name,
        dest_name: &row.dest_name,
        updated_at: &row.updated_at,
    }
}

/// Emits `trip.status.updated` to the trip's subscribers (and so its SSE trip-status
/// streams) and the user rooms of driver, organizer and passengers.
pub(super) async fn emit_status(app: &App, tenant: &Tenant, row: &TripRow, event: &TripStatusUpdated<'_>) {
    let passengers = app.db.trip_passengers(tenant, &row.id).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "passengers not read; status event goes to the trip room only");
        Vec::new()
    });
    let mut users: Vec<&str> = vec![row.organizer_id.as_str()];
    users.extend(row.driver_id.as_deref());
    users.extend(passengers.iter().map(String::as_str));
    let room = RoomKey::trip_subscribers(tenant, &TripId(row.id.clone()));
    fanout::publish_to_room_and_users(&app.engine, tenant, Some(&room), &users, event).await;
}
