//! The ride flows of CONTRACT §4 shared by the HTTP and Socket.IO edges: trips, the status
//! machine, bookings, boarding, and (in [`offers`]) offering trips to drivers. Each action
//! checks payload, role, existence and ownership in the contract's order, commits its
//! change in one database transaction, and only then emits its events through the one
//! publish path; an emission failure is logged and counted, never returned.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::App;
use crate::auth::Claims;
use crate::domain::rides::{TripStatus, TripType, booking};
use crate::domain::{Role, Tenant, TripId, valid_id};
use crate::engine::RoomKey;
use crate::error::{Error, Result};
use crate::fanout;
use crate::store::rides::{BookOutcome, BookingRow, CancelOutcome, NewBooking, NewTrip, TripRow};

pub mod offers;

/// Server→client event names of the ride flows (CONTRACT §2).
pub mod events {
    /// A trip's status changed (HTTP status API or an accepted offer).
    pub const TRIP_STATUS_UPDATED: &str = "trip.status.updated";
    /// A trip was created.
    pub const TRIP_CREATED: &str = "trip.created";
    /// Seats were booked.
    pub const BOOKING_CONFIRMED: &str = "booking.confirmed";
    /// A booking was cancelled.
    pub const BOOKING_CANCELLED: &str = "booking.cancelled";
    /// A trip is offered to a driver.
    pub const OFFER_CREATED: &str = "trip.offer.created";
    /// The driver won the trip.
    pub const OFFER_ACCEPTED: &str = "trip.offer.accepted";
    /// The offer is gone (`TAKEN`, `DEADLINE`, `CANCELLED`).
    pub const OFFER_EXPIRED: &str = "trip.offer.expired";
}

/// A place: name and position.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Place {
    /// Display name.
    pub name: String,
    /// Latitude in [-90, 90].
    pub lat: f64,
    /// Longitude in [-180, 180].
    pub lng: f64,
}

/// `POST /api/trips` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTrip {
    /// Title shown to drivers and passengers.
    pub title: String,
    /// `PRIVATE` or `SHARED`.
    pub trip_type: String,
    /// Start.
    pub origin: Place,
    /// End.
    pub destination: Place,
    /// ISO-8601 date-time.
    pub departure_time: String,
    /// Seats for sale (1–1000).
    pub total_seats: i64,
    /// Price of one seat (≥ 0).
    pub price_per_seat: f64,
    /// Currency code (default `USD`).
    pub currency: Option<String>,
    /// Driver earnings shown in offers (default: every seat's price).
    pub estimated_earnings: Option<f64>,
    /// `DRAFT` or `PUBLISHED` (default).
    pub status: Option<String>,
}

/// A trip (CONTRACT §6 "Trip").
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Trip {
    pub id: String,
    pub trip_type: String,
    pub title: String,
    pub status: String,
    pub origin: Place,
    pub destination: Place,
    pub departure_time: String,
    pub total_seats: i32,
    pub available_seats: i32,
    pub price_per_seat: f64,
    pub currency: String,
    pub estimated_earnings: Option<f64>,
    pub organizer_id: String,
    pub driver_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&TripRow> for Trip {
    fn from(t: &TripRow) -> Self {
        Trip {
            id: t.id.clone(),
            trip_type: t.trip_type.clone(),
            title: t.title.clone(),
            status: t.status.clone(),
            origin: Place { name: t.origin_name.clone(), lat: t.origin_lat, lng: t.origin_lng },
            destination: Place { name: t.dest_name.clone(), lat: t.dest_lat, lng: t.dest_lng },
            departure_time: t.departure_time.clone(),
            total_seats: t.total_seats,
            available_seats: t.available_seats,
            price_per_seat: t.price_per_seat,
            currency: t.currency.clone(),
            estimated_earnings: t.estimated_earnings,
            organizer_id: t.organizer_id.clone(),
            driver_id: t.driver_id.clone(),
            created_at: t.created_at.clone(),
            updated_at: t.updated_at.clone(),
        }
    }
}

/// `PUT /api/drivers/trips/{tripId}/status` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusChangeIn {
    /// `DEPARTED`, `ARRIVED`, `COMPLETED` or `CANCELLED`.
    pub status: String,
    /// Free text for passengers.
    pub notes: Option<String>,
}

/// `POST /api/bookings` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookIn {
    /// The trip.
    pub trip_id: String,
    /// Seats (1–1000).
    pub seats_booked: i64,
    /// Where to pick the passenger up.
    pub pickup_point: Option<String>,
    /// Where to drop the passenger.
    pub drop_point: Option<String>,
}

/// Largest string in a payload unless a field says otherwise (CONTRACT §6).
const MAX_TEXT: usize = 1024;

fn text(field: &str, v: &str, allow_empty: bool) -> Result<String> {
    if v.len() > MAX_TEXT || (!allow_empty && v.trim().is_empty()) {
        return Err(Error::invalid(format!("{field} must be 1–1024 bytes")));
    }
    Ok(v.to_string())
}

fn opt_text(field: &str, v: Option<String>) -> Result<Option<String>> {
    v.map(|s| text(field, &s, true)).transpose()
}

fn place(field: &str, p: &Place) -> Result<(String, f64, f64)> {
    let name = text(&format!("{field}.name"), &p.name, false)?;
    crate::domain::check_position(p.lat, p.lng, None, None, None)
        .map_err(|e| Error::invalid(format!("{field}: {e}")))?;
    Ok((name, p.lat, p.lng))
}

fn id_of(field: &str, v: &str) -> Result<String> {
    if valid_id(v) { Ok(v.to_string()) } else { Err(Error::invalid(format!("{field} must be 1–128 characters"))) }
}

fn trip_room(tenant: &Tenant, trip: &str) -> RoomKey {
    RoomKey::new(tenant, &format!("trip:{trip}:subscribers"))
}

/// Creates a trip; emits `trip.created` to `admin:events`, and offers a PRIVATE published
/// trip without driver to drivers at once.
pub async fn create_trip(app: &App, who: &Claims, input: CreateTrip) -> Result<Trip> {
    let title = text("title", &input.title, false)?;
    let trip_type: TripType =
        input.trip_type.parse().map_err(|_| Error::invalid("tripType must be PRIVATE or SHARED"))?;
    let origin = place("origin", &input.origin)?;
    let dest = place("destination", &input.destination)?;
    let departure = chrono::DateTime::parse_from_rfc3339(&input.departure_time)
        .map_err(|_| Error::invalid("departureTime must be an ISO-8601 date-time"))?
        .with_timezone(&chrono::Utc);
    if !(1..=1_000).contains(&input.total_seats) {
        return Err(Error::invalid("totalSeats must be 1–1000"));
    }
    if !(input.price_per_seat.is_finite() && input.price_per_seat >= 0.0) {
        return Err(Error::invalid("pricePerSeat must be a number ≥ 0"));
    }
    let currency = input.currency.unwrap_or_else(|| "USD".into());
    if currency.is_empty() || currency.len() > 16 {
        return Err(Error::invalid("currency must be 1–16 characters"));
    }
    let earnings = input.estimated_earnings.unwrap_or(input.price_per_seat * input.total_seats as f64);
    if !(earnings.is_finite() && earnings >= 0.0) {
        return Err(Error::invalid("estimatedEarnings must be a number ≥ 0"));
    }
    let status = match input.status.as_deref() {
        None | Some("PUBLISHED") => TripStatus::Published,
        Some("DRAFT") => TripStatus::Draft,
        Some(_) => return Err(Error::invalid("status must be DRAFT or PUBLISHED")),
    };
    match (who.role, trip_type) {
        (Role::Passenger, TripType::Private) | (Role::Business | Role::Admin | Role::Service, _) => {}
        _ => return Err(Error::Forbidden),
    }
    let new = NewTrip {
        id: uuid::Uuid::new_v4().to_string(),
        trip_type: trip_type.as_str().into(),
        title,
        status: status.as_str().into(),
        origin,
        dest,
        departure_time: departure.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        total_seats: input.total_seats as i32,
        price_per_seat: input.price_per_seat,
        currency,
        estimated_earnings: earnings,
        organizer_id: who.user.0.clone(),
    };
    let row = app.db.insert_trip(&who.tenant, &new).await?;
    metrics::counter!("fleetcast_trips_created_total").increment(1);
    let created = json!({
        "tripId": row.id, "tripType": row.trip_type, "title": row.title,
        "organizerId": row.organizer_id, "status": row.status,
    });
    if let Err(e) = fanout::publish_recoverable(
        &app.engine,
        &RoomKey::new(&who.tenant, "admin:events"),
        events::TRIP_CREATED,
        &created,
    )
    .await
    {
        metrics::counter!("fleetcast_publish_failures_total").increment(1);
        tracing::warn!(error = %e, "trip.created not published");
    }
    if trip_type == TripType::Private && status == TripStatus::Published {
        // Offered at once; a failure leaves the trip for `broadcast-offer` and is logged.
        if let Err(e) = offers::offer_round(app, &who.tenant, &row.id, 0).await {
            tracing::warn!(error = %e, trip = %row.id, "automatic offer failed");
        }
    }
    Ok(Trip::from(&row))
}

/// The trip, if the caller may see it: participants (organizer, driver, passengers with a
/// booking, conductors with a `trip:{id}` grant), or ADMIN, BUSINESS and SERVICE callers.
pub async fn get_trip(app: &App, who: &Claims, id: &str) -> Result<Trip> {
    let row = app.db.get_trip(&who.tenant, id).await?.ok_or(Error::NotFound)?;
    let allowed = match who.role {
        Role::Admin | Role::Business | Role::Service => true,
        _ if row.organizer_id == who.user.0 => true,
        Role::Driver => row.driver_id.as_deref() == Some(who.user.0.as_str()),
        Role::Conductor => who.grants(&format!("trip:{id}")),
        Role::Passenger => app.db.has_active_booking(&who.tenant, &TripId(id.into()), &who.user).await?,
    };
    if allowed { Ok(Trip::from(&row)) } else { Err(Error::Forbidden) }
}

/// `trip.status.updated` of a trip after a change from `previous`.
fn status_updated(row: &TripRow, previous: TripStatus, notes: Option<&str>, driver_name: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("tripId".into(), row.id.clone().into());
    m.insert("tripTitle".into(), row.title.clone().into());
    m.insert("previousStatus".into(), previous.as_str().into());
    m.insert("newStatus".into(), row.status.clone().into());
    if let Some(n) = driver_name {
        m.insert("driverName".into(), n.into());
    }
    if let Some(n) = notes {
        m.insert("notes".into(), n.into());
    }
    m.insert("originName".into(), row.origin_name.clone().into());
    m.insert("destName".into(), row.dest_name.clone().into());
    m.insert("updatedAt".into(), row.updated_at.clone().into());
    Value::Object(m)
}

/// Emits `trip.status.updated` to the trip's subscribers (and so its SSE trip-status
/// streams) and the user rooms of driver, organizer and passengers.
async fn emit_status(app: &App, tenant: &Tenant, row: &TripRow, payload: &Value) {
    let passengers = app.db.trip_passengers(tenant, &row.id).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "passengers not read; status event goes to the trip room only");
        Vec::new()
    });
    let mut users: Vec<&str> = vec![row.organizer_id.as_str()];
    users.extend(row.driver_id.as_deref());
    users.extend(passengers.iter().map(String::as_str));
    let room = trip_room(tenant, &row.id);
    fanout::publish_to_room_and_users(&app.engine, tenant, Some(&room), &users, events::TRIP_STATUS_UPDATED, payload)
        .await;
}

/// `PUT /api/drivers/trips/{tripId}/status`: the trip's driver or an ADMIN moves the trip
/// along the status machine.
pub async fn change_status(app: &App, who: &Claims, trip_id: &str, input: StatusChangeIn) -> Result<Trip> {
    let to: TripStatus = input.status.parse().map_err(|_| {
        Error::invalid("status must be one of DRAFT, PUBLISHED, IN_PROGRESS, DEPARTED, ARRIVED, COMPLETED, CANCELLED")
    })?;
    let notes = opt_text("notes", input.notes)?;
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
    let payload = status_updated(&change.trip, change.previous, notes.as_deref(), driver_name.as_deref());
    emit_status(app, &who.tenant, &change.trip, &payload).await;
    if !change.cancelled_offers.is_empty() {
        let drivers: Vec<&str> = change.cancelled_offers.iter().map(String::as_str).collect();
        let expired = json!({ "tripId": trip_id, "reason": "CANCELLED" });
        fanout::publish_to_users(&app.engine, &who.tenant, &drivers, events::OFFER_EXPIRED, &expired).await;
    }
    if to.is_final()
        && let Some(driver) = &change.trip.driver_id
    {
        final_snapshot(app, &who.tenant, driver, trip_id).await;
    }
    Ok(Trip::from(&change.trip))
}

/// Queues the trip's last live position as its final snapshot (CONTRACT §5 "one at trip
/// end"); the natural key makes it a no-op when that position was already sampled.
async fn final_snapshot(app: &App, tenant: &Tenant, driver: &str, trip: &str) {
    match app.engine.trip_location(tenant, &TripId(trip.into())).await {
        Ok(Some(json)) => {
            if let Some(row) = crate::snapshots::row_from_location(tenant, driver, trip, &json) {
                app.sampler.offer(row);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, trip, "final position not read; no final snapshot"),
    }
}

fn booking_event(b: &BookingRow, t: &TripRow, tenant: &Tenant, cancelled: Option<Option<&str>>) -> Value {
    let mut m = Map::new();
    m.insert("tripId".into(), t.id.clone().into());
    m.insert("tripType".into(), t.trip_type.clone().into());
    m.insert("bookingId".into(), b.id.clone().into());
    m.insert("passengerId".into(), b.passenger_id.clone().into());
    m.insert("passengerName".into(), b.passenger_name.clone().unwrap_or_else(|| b.passenger_id.clone()).into());
    let seats_key = if cancelled.is_some() { "seatsFreed" } else { "seatsBooked" };
    m.insert(seats_key.into(), b.seats_booked.into());
    m.insert("availableSeats".into(), t.available_seats.into());
    m.insert("totalSeats".into(), t.total_seats.into());
    if let Some(Some(reason)) = cancelled {
        m.insert("reason".into(), reason.into());
    }
    m.insert("tenantId".into(), tenant.0.clone().into());
    Value::Object(m)
}

async fn emit_booking(app: &App, tenant: &Tenant, trip: &TripRow, event: &str, payload: &Value) {
    let mut users: Vec<&str> = vec![trip.organizer_id.as_str()];
    users.extend(trip.driver_id.as_deref());
    let room = trip_room(tenant, &trip.id);
    fanout::publish_to_room_and_users(&app.engine, tenant, Some(&room), &users, event, payload).await;
}

/// `POST /api/bookings`: a passenger books seats.
pub async fn book(app: &App, who: &Claims, input: BookIn) -> Result<BookingRow> {
    let trip_id = id_of("tripId", &input.trip_id)?;
    if !(1..=1_000).contains(&input.seats_booked) {
        return Err(Error::invalid("seatsBooked must be 1–1000"));
    }
    let pickup = opt_text("pickupPoint", input.pickup_point)?;
    let drop = opt_text("dropPoint", input.drop_point)?;
    if who.role != Role::Passenger {
        return Err(Error::Forbidden);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let ticket = app.tickets.sign(&who.tenant, &id, &trip_id).map_err(|e| {
        tracing::error!(error = %e, "ticket not signed");
        Error::Internal
    })?;
    let new = NewBooking {
        id,
        trip_id,
        passenger_id: who.user.0.clone(),
        passenger_name: who.name.clone(),
        seats: input.seats_booked as i32,
        reference_code: crate::domain::rides::reference_code(),
        ticket_token: ticket,
        pickup_point: pickup,
        drop_point: drop,
    };
    let (b, trip) = match app.db.book(&who.tenant, &new, |t| t.price_per_seat).await? {
        BookOutcome::Booked(b, t) => (*b, *t),
        BookOutcome::NoTrip => return Err(Error::NotFound),
        BookOutcome::NotBookable => return Err(Error::Conflict("the trip is not open for booking".into())),
        BookOutcome::NoSeats => return Err(Error::NoSeats),
    };
    metrics::counter!("fleetcast_bookings_total").increment(1);
    let payload = booking_event(&b, &trip, &who.tenant, None);
    emit_booking(app, &who.tenant, &trip, events::BOOKING_CONFIRMED, &payload).await;
    Ok(b)
}

/// Cancels a booking (its passenger or an ADMIN): seats returned; the passenger's sockets
/// leave the trip room unless another booking of theirs keeps them there.
pub async fn cancel_booking(app: &App, who: &Claims, id: &str, reason: Option<String>) -> Result<BookingRow> {
    let reason = opt_text("reason", reason)?;
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
    let payload = booking_event(&b, &trip, &who.tenant, Some(reason.as_deref()));
    emit_booking(app, &who.tenant, &trip, events::BOOKING_CANCELLED, &payload).await;
    let passenger = crate::domain::UserId(b.passenger_id.clone());
    match app.db.has_active_booking(&who.tenant, &TripId(trip.id.clone()), &passenger).await {
        Ok(true) => {}
        Ok(false) => crate::socket::remove_from_trip(app, &who.tenant, &passenger, &trip.id).await,
        Err(e) => tracing::warn!(error = %e, "bookings not re-read; the passenger's sockets stay subscribed"),
    }
    Ok(b)
}

/// `conductor:scan {token}`: checks a ticket and boards a confirmed booking once.
pub async fn scan(app: &App, who: &Claims, token: &str) -> Result<Map<String, Value>> {
    if token.is_empty() || token.len() > 4 * MAX_TEXT {
        return Err(Error::invalid("token must be 1–4096 bytes"));
    }
    if who.role != Role::Conductor {
        return Err(Error::Forbidden);
    }
    let mut out = Map::new();
    let invalid = |out: &mut Map<String, Value>, message: &str| {
        out.insert("valid".into(), false.into());
        out.insert("message".into(), message.into());
    };
    let Some(ticket) = app.tickets.verify(token).filter(|t| t.tenant == who.tenant.0) else {
        metrics::counter!("fleetcast_ticket_scans_total", "result" => "invalid").increment(1);
        invalid(&mut out, "invalid ticket");
        return Ok(out);
    };
    let Some(current) = app.db.get_booking(&who.tenant, &ticket.bid).await? else {
        invalid(&mut out, "invalid ticket: no such booking");
        return Ok(out);
    };
    let (valid, b) = if current.status == booking::CONFIRMED {
        match app.db.board(&who.tenant, &ticket.bid).await? {
            Some(b) => (true, b),
            // Boarded by a concurrent scan a moment ago.
            None => (false, app.db.get_booking(&who.tenant, &ticket.bid).await?.unwrap_or(current)),
        }
    } else {
        (false, current)
    };
    let message = match b.status.as_str() {
        _ if valid => None,
        booking::BOARDED => Some("already boarded".to_string()),
        booking::PENDING => Some("booking not confirmed yet: the trip has no driver".to_string()),
        booking::CANCELLED => Some("booking cancelled".to_string()),
        booking::COMPLETED => Some("trip already completed".to_string()),
        other => Some(format!("booking is {other}")),
    };
    metrics::counter!("fleetcast_ticket_scans_total", "result" => if valid { "boarded" } else { "refused" })
        .increment(1);
    out.insert("valid".into(), valid.into());
    out.insert("bookingId".into(), b.id.into());
    out.insert("referenceCode".into(), b.reference_code.into());
    out.insert("passengerName".into(), b.passenger_name.unwrap_or(b.passenger_id).into());
    out.insert("seatNumber".into(), b.seat_number.into());
    out.insert("pickupPoint".into(), b.pickup_point.into());
    out.insert("dropPoint".into(), b.drop_point.into());
    out.insert("price".into(), b.price.into());
    out.insert("status".into(), b.status.into());
    if let Some(m) = message {
        out.insert("message".into(), m.into());
    }
    Ok(out)
}
