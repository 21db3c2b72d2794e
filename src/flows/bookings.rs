//! Bookings (CONTRACT §4): book seats, cancel a booking. Seats are decremented in one
//! conditional write (never oversold); `booking.confirmed` / `booking.cancelled` go to the
//! trip room and the user rooms of driver and organizer after commit. A cancelled
//! passenger's sockets leave the trip room on every node (a control message on the publish
//! path) unless another booking keeps them there.

use crate::app::App;
use crate::auth::Claims;
use crate::domain::rides::BookingRequest;
use crate::domain::{Role, RoomKey, Tenant, TripId, UserId};
use crate::error::{Error, Result};
use crate::events::BookingChanged;
use crate::fanout::{self, Control};
use crate::store::rides::{BookOutcome, BookingRow, CancelOutcome, NewBooking, TripRow};

fn booking_event<'a>(
    b: &'a BookingRow,
    t: &'a TripRow,
    tenant: &'a Tenant,
    cancelled: Option<Option<&'a str>>,
) -> BookingChanged<'a> {
    BookingChanged {
        cancelled: cancelled.is_some(),
        trip_id: &t.id,
        trip_type: &t.trip_type,
        booking_id: &b.id,
        passenger_id: &b.passenger_id,
        passenger_name: b.passenger_name.as_deref().unwrap_or(&b.passenger_id),
        seats_booked: cancelled.is_none().then_some(b.seats_booked),
        seats_freed: cancelled.is_some().then_some(b.seats_booked),
        available_seats: t.available_seats,
        total_seats: t.total_seats,
        reason: cancelled.flatten(),
        tenant_id: &tenant.0,
    }
}

async fn emit_booking(app: &App, tenant: &Tenant, trip: &TripRow, event: &BookingChanged<'_>) {
    let mut users: Vec<&str> = vec![trip.organizer_id.as_str()];
    users.extend(trip.driver_id.as_deref());
    let room = RoomKey::trip_subscribers(tenant, &TripId(trip.id.clone()));
    fanout::publish_to_room_and_users(&app.engine, tenant, Some(&room), &users, event).await;
}

/// `POST /api/bookings`: a passenger books seats.
pub async fn book(app: &App, who: &Claims, input: BookingRequest) -> Result<BookingRow> {
    if who.role != Role::Passenger {
        return Err(Error::Forbidden);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let ticket = app.tickets.sign(&who.tenant, &id, &input.trip_id).map_err(|e| {
        tracing::error!(error = %e, "ticket not signed");
        Error::Internal
    })?;
    let new = NewBooking {
        id,
        trip_id: input.trip_id,
        passenger_id: who.user.0.clone(),
        passenger_name: who.name.clone(),
        seats: input.seats,
        reference_code: crate::domain::rides::reference_code(),
        ticket_token: ticket,
        pickup_point: input.pickup_point,
        drop_point: input.drop_point,
    };
    let (b, trip) = match app.db.book(&who.tenant, &new, |t| t.price_per_seat).await? {
        BookOutcome::Booked(b, t) => (*b, *t),
        BookOutcome::NoTrip => return Err(Error::NotFound),
        BookOutcome::NotBookable => return Err(Error::Conflict("the trip is not open for booking".into())),
        BookOutcome::NoSeats => return Err(Error::NoSeats),
    };
    metrics::counter!("fleetcast_bookings_total").increment(1);
    emit_booking(app, &who.tenant, &trip, &booking_event(&b, &trip, &who.tenant, None)).await;
    Ok(b)
}

/// Cancels a booking (its passenger or an ADMIN): seats returned; the passenger's sockets
/// leave the trip room unless another booking of theirs keeps them there.
pub async fn cancel_booking(app: &App, who: &Claims, id: &str, reason: Option<String>) -> Result<BookingRow> {
    if !matches!(who.role, Role::Passenger | Role::Admin) {
        return Err(Error::Forbidden);
    }
    let existing = app.db.get_booking(&who.tenant, id).await?.ok_or(Error::NotFound)?;
    if who.role == Role::Passenger && existing.passenger_id != who.user.0 {
        return Err(Error::Forbidden);
    }
    let (b, trip) = match app.db.cancel_booking(&who.tenant, id).await? {
        CancelOutcome::Cancelled(b, t) => (*b, *t),
        CancelOutcome::NotCancellable(status) => {
            return Err(Error::Conflict(format!("the booking is {status} and cannot be cancelled")));
        }
    };
    metrics::counter!("fleetcast_booking_cancellations_total").increment(1);
    let event = booking_event(&b, &trip, &who.tenant, Some(reason.as_deref()));
    emit_booking(app, &who.tenant, &trip, &event).await;
    let passenger = UserId(b.passenger_id.clone());
    let trip_id = TripId(trip.id.clone());
    match app.db.has_active_booking(&who.tenant, &trip_id, &passenger).await {
        Ok(true) => {}
        Ok(false) => {
            let room = RoomKey::user(&who.tenant, &passenger);
            if let Err(e) = fanout::send_control(&app.engine, &room, &Control::LeaveTrip(trip_id)).await {
                tracing::warn!(error = %e, "leave-trip not published; the sockets stay subscribed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "bookings not re-read; the passenger's sockets stay subscribed"),
    }
    Ok(b)
}

/// `GET /api/trips/{id}/bookings`: the trip's bookings as the caller may see them — a
/// passenger their own, everyone else who may read the trip all of them.
pub async fn trip_bookings(app: &App, who: &Claims, trip: &str) -> Result<Vec<BookingRow>> {
    crate::flows::trips::get_trip(app, who, trip).await?;
    let own = (who.role == Role::Passenger).then_some(who.user.0.as_str());
    app.db.trip_bookings(&who.tenant, trip, own).await
}

/// A booking whose ticket the caller may show: its passenger, or an ADMIN, BUSINESS or
/// SERVICE user of the tenant (an unknown id, or another tenant's, is `NOT_FOUND`).
pub async fn ticket_of(app: &App, who: &Claims, id: &str) -> Result<BookingRow> {
    let b = app.db.get_booking(&who.tenant, id).await?.ok_or(Error::NotFound)?;
    let allowed = match who.role {
        Role::Admin | Role::Business | Role::Service => true,
        _ => b.passenger_id == who.user.0,
    };
    if allowed { Ok(b) } else { Err(Error::Forbidden) }
}
