//! The trip inspector (the console's, `GET /api/v1/admin/trips/{id}`, ADMIN and BUSINESS):
//! one trip as an operator debugs it — the trip, its status log, its bookings, its live
//! position, how many SSE streams watch it across the cluster, and the recent events of its
//! room from the room's history (what a reconnecting subscriber would be replayed).

use crate::app::App;
use crate::auth::Claims;
use crate::domain::{EventId, Location, Role, RoomKey, TripId};
use crate::error::{Error, Result};
use crate::flows::publish::sse_streams;
use crate::store::rides::{BookingRow, StatusLogRow, TripRow};

/// Most history events the inspector shows (the newest).
pub const RECENT_EVENTS: usize = 50;

/// One trip, inspected.
pub struct Inspection {
    /// The trip.
    pub trip: TripRow,
    /// Its status changes, oldest first.
    pub status_log: Vec<StatusLogRow>,
    /// Its bookings, oldest first.
    pub bookings: Vec<BookingRow>,
    /// Its driver's latest position on this trip, while live.
    pub location: Option<Location>,
    /// SSE streams of the trip room across the cluster.
    pub sse_streams: u64,
    /// The newest events of the trip room's history, oldest first: `(id, name, payload)`.
    pub recent: Vec<(EventId, String, String)>,
    /// False when the history no longer reaches back to the room's first event.
    pub history_complete: bool,
}

/// Inspects `trip` for an ADMIN or BUSINESS caller of its tenant.
pub async fn inspect(app: &App, who: &Claims, trip: &str) -> Result<Inspection> {
    if !matches!(who.role, Role::Admin | Role::Business) {
        return Err(Error::Forbidden);
    }
    let row = app.db.get_trip(&who.tenant, trip).await?.ok_or(Error::NotFound)?;
    let id = TripId(row.id.clone());
    let room = RoomKey::trip_subscribers(&who.tenant, &id);
    let status_log = app.db.status_log(&who.tenant, trip).await?;
    let bookings = app.db.trip_bookings(&who.tenant, trip, None).await?;
    let location = app.engine.trip_location(&who.tenant, &id).await?;
    let history = app.engine.history(&room, EventId { ms: 0, seq: 0 }).await?;
    let skip = history.events.len().saturating_sub(RECENT_EVENTS);
    let recent = history.events.into_iter().skip(skip).collect();
    Ok(Inspection {
        trip: row,
        status_log,
        bookings,
        location,
        sse_streams: sse_streams(app, &room).await,
        recent,
        history_complete: history.complete,
    })
}
