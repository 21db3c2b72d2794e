//! Trips, bookings and offers over HTTP (CONTRACT §4 "Trips and bookings"): the request
//! bodies and the `Trip` answer, each body validated here into a domain value
//! (`INVALID_PAYLOAD` names the field), then handed to its flow (`flows::trips`,
//! `flows::bookings`, `flows::offers`), which holds the checks, the transactions and the
//! events.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::body::{Done, body};
use super::error::ErrorBody;
use crate::app::App;
use crate::domain::rides::{BookingRequest, Place as DomainPlace, TripPlan, TripStatus, TripType};
use crate::domain::valid_id;
use crate::error::{Error, Result};
use crate::flows::{bookings, offers, trips};
use crate::limits::MAX_STRING;
use crate::store::rides::{BookingRow, TripRow};

/// An id from the path: anything that cannot be an id is an unknown resource.
pub(super) fn path_id(id: &str) -> Result<&str> {
    if valid_id(id) { Ok(id) } else { Err(Error::NotFound) }
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

impl From<TripRow> for Trip {
    fn from(t: TripRow) -> Self {
        Trip {
            id: t.id,
            trip_type: t.trip_type,
            title: t.title,
            status: t.status,
            origin: Place { name: t.origin_name, lat: t.origin_lat, lng: t.origin_lng },
            destination: Place { name: t.dest_name, lat: t.dest_lat, lng: t.dest_lng },
            departure_time: t.departure_time,
            total_seats: t.total_seats,
            available_seats: t.available_seats,
            price_per_seat: t.price_per_seat,
            currency: t.currency,
            estimated_earnings: t.estimated_earnings,
            organizer_id: t.organizer_id,
            driver_id: t.driver_id,
            created_at: t.created_at,
            updated_at: t.updated_at,
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

/// Answer of `broadcast-offer`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferResult {
    /// How many drivers were offered the trip in this round.
    pub offered_to: usize,
    /// Their ids, nearest first.
    pub drivers: Vec<String>,
    /// When this round's offers expire.
    pub acceptance_deadline: String,
}

fn text(field: &str, v: &str, allow_empty: bool) -> Result<String> {
    if v.len() > MAX_STRING || (!allow_empty && v.trim().is_empty()) {
        return Err(Error::invalid(format!("{field} must be 1–1024 bytes")));
    }
    Ok(v.to_string())
}

fn opt_text(field: &str, v: Option<String>) -> Result<Option<String>> {
    v.map(|s| text(field, &s, true)).transpose()
}

fn place(field: &str, p: &Place) -> Result<DomainPlace> {
    let name = text(&format!("{field}.name"), &p.name, false)?;
    crate::domain::check_position(p.lat, p.lng, None, None, None)
        .map_err(|e| Error::invalid(format!("{field}: {e}")))?;
    Ok(DomainPlace { name, lat: p.lat, lng: p.lng })
}

impl CreateTrip {
    /// Checks every field (CONTRACT §4) into a trip plan.
    fn validate(self) -> Result<TripPlan> {
        let title = text("title", &self.title, false)?;
        let trip_type: TripType =
            self.trip_type.parse().map_err(|_| Error::invalid("tripType must be PRIVATE or SHARED"))?;
        let origin = place("origin", &self.origin)?;
        let dest = place("destination", &self.destination)?;
        let departure = chrono::DateTime::parse_from_rfc3339(&self.departure_time)
            .map_err(|_| Error::invalid("departureTime must be an ISO-8601 date-time"))?
            .with_timezone(&chrono::Utc);
        if !(1..=1_000).contains(&self.total_seats) {
            return Err(Error::invalid("totalSeats must be 1–1000"));
        }
        if !(self.price_per_seat.is_finite() && self.price_per_seat >= 0.0) {
            return Err(Error::invalid("pricePerSeat must be a number ≥ 0"));
        }
        let currency = self.currency.unwrap_or_else(|| "USD".into());
        if currency.is_empty() || currency.len() > 16 {
            return Err(Error::invalid("currency must be 1–16 characters"));
        }
        let earnings = self.estimated_earnings.unwrap_or(self.price_per_seat * self.total_seats as f64);
        if !(earnings.is_finite() && earnings >= 0.0) {
            return Err(Error::invalid("estimatedEarnings must be a number ≥ 0"));
        }
        let status = match self.status.as_deref() {
            None | Some("PUBLISHED") => TripStatus::Published,
            Some("DRAFT") => TripStatus::Draft,
            Some(_) => return Err(Error::invalid("status must be DRAFT or PUBLISHED")),
        };
        Ok(TripPlan {
            title,
            trip_type,
            status,
            origin,
            dest,
            departure_time: departure.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            total_seats: self.total_seats as i32,
            price_per_seat: self.price_per_seat,
            currency,
            estimated_earnings: earnings,
        })
    }
}

impl BookIn {
    fn validate(self) -> Result<BookingRequest> {
        if !valid_id(&self.trip_id) {
            return Err(Error::invalid("tripId must be 1–128 characters"));
        }
        if !(1..=1_000).contains(&self.seats_booked) {
            return Err(Error::invalid("seatsBooked must be 1–1000"));
        }
        Ok(BookingRequest {
            trip_id: self.trip_id,
            seats: self.seats_booked as i32,
            pickup_point: opt_text("pickupPoint", self.pickup_point)?,
            drop_point: opt_text("dropPoint", self.drop_point)?,
        })
    }
}

/// `PATCH /api/bookings/{id}` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BookingPatch {
    /// Only `cancel`.
    pub action: String,
    /// Why, passed on in `booking.cancelled`.
    pub reason: Option<String>,
}

/// `POST /api/passengers/bookings/{id}/cancel` body (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CancelIn {
    /// Why, passed on in `booking.cancelled`.
    pub reason: Option<String>,
}

/// Create a trip.
#[utoipa::path(post, path = "/api/trips", tag = "trips", request_body = CreateTrip,
    responses((status = 201, body = Trip), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_trip(State(app): State<Arc<App>>, who: Caller, bytes: Bytes) -> Result<(StatusCode, Json<Trip>)> {
    let input: CreateTrip = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(trips::create_trip(&app, &who.0, input.validate()?).await?.into())))
}

/// Read a trip.
#[utoipa::path(get, path = "/api/trips/{id}", tag = "trips", params(("id" = String, Path)),
    responses((status = 200, body = Trip), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_trip(State(app): State<Arc<App>>, who: Caller, Path(id): Path<String>) -> Result<Json<Trip>> {
    Ok(Json(trips::get_trip(&app, &who.0, path_id(&id)?).await?.into()))
}

/// `GET /api/trips/{id}/bookings`: a passenger's own bookings on the trip, or all of them
/// for the trip's driver, organizer and ADMIN/BUSINESS/SERVICE callers.
#[utoipa::path(get, path = "/api/trips/{id}/bookings", tag = "bookings", params(("id" = String, Path)),
    responses((status = 200, body = TripBookings), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn trip_bookings(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Json<TripBookings>> {
    Ok(Json(TripBookings { bookings: bookings::trip_bookings(&app, &who.0, path_id(&id)?).await? }))
}

/// The bookings of a trip the caller may see, oldest first.
#[derive(Serialize, ToSchema)]
pub struct TripBookings {
    bookings: Vec<BookingRow>,
}

/// Offer a trip to the nearest eligible drivers now (a new round).
#[utoipa::path(post, path = "/api/trips/{id}/broadcast-offer", tag = "offers", params(("id" = String, Path)),
    responses((status = 200, body = OfferResult), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn broadcast_offer(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Json<OfferResult>> {
    let round = offers::broadcast(&app, &who.0, path_id(&id)?).await?;
    Ok(Json(OfferResult {
        offered_to: round.drivers.len(),
        drivers: round.drivers,
        acceptance_deadline: round.acceptance_deadline,
    }))
}

/// Accept an offered trip (same as `trip:offer:accept`); 409 when another driver won.
#[utoipa::path(post, path = "/api/drivers/trips/accept/{tripId}", tag = "offers", params(("tripId" = String, Path)),
    responses((status = 200, body = Trip), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn accept(State(app): State<Arc<App>>, who: Caller, Path(trip): Path<String>) -> Result<Json<Trip>> {
    Ok(Json(offers::accept(&app, &who.0, path_id(&trip)?).await?.into()))
}

/// Decline an offered trip (same as `trip:offer:decline`): it is never offered to this
/// driver again.
#[utoipa::path(post, path = "/api/drivers/trips/{tripId}/decline", tag = "offers", params(("tripId" = String, Path)),
    responses((status = 200, body = Done), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn decline(State(app): State<Arc<App>>, who: Caller, Path(trip): Path<String>) -> Result<Json<Done>> {
    offers::decline(&app, &who.0, path_id(&trip)?).await?;
    Ok(Json(Done::OK))
}

/// Move a trip along its status machine (its driver or an ADMIN).
#[utoipa::path(put, path = "/api/drivers/trips/{tripId}/status", tag = "trips", params(("tripId" = String, Path)),
    request_body = StatusChangeIn,
    responses((status = 200, body = Trip), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn change_status(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(trip): Path<String>,
    bytes: Bytes,
) -> Result<Json<Trip>> {
    let trip = path_id(&trip)?.to_string();
    let input: StatusChangeIn = body(&bytes)?;
    let to: TripStatus = input.status.parse().map_err(|_| {
        Error::invalid("status must be one of DRAFT, PUBLISHED, IN_PROGRESS, DEPARTED, ARRIVED, COMPLETED, CANCELLED")
    })?;
    let notes = opt_text("notes", input.notes)?;
    Ok(Json(trips::change_status(&app, &who.0, &trip, to, notes).await?.into()))
}

/// Book seats (PASSENGER); 409 `NO_SEATS` when too few are left.
#[utoipa::path(post, path = "/api/bookings", tag = "bookings", request_body = BookIn,
    responses((status = 201, body = BookingRow), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn book(State(app): State<Arc<App>>, who: Caller, bytes: Bytes) -> Result<(StatusCode, Json<BookingRow>)> {
    let input: BookIn = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(bookings::book(&app, &who.0, input.validate()?).await?)))
}

/// Cancel a booking (`{action:"cancel"}`); a second cancel is 409.
#[utoipa::path(patch, path = "/api/bookings/{id}", tag = "bookings", params(("id" = String, Path)),
    request_body = BookingPatch,
    responses((status = 200, body = BookingRow), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn patch_booking(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<BookingRow>> {
    let id = path_id(&id)?.to_string();
    let input: BookingPatch = body(&bytes)?;
    if input.action != "cancel" {
        return Err(Error::invalid("action must be cancel"));
    }
    let reason = opt_text("reason", input.reason)?;
    Ok(Json(bookings::cancel_booking(&app, &who.0, &id, reason).await?))
}

/// Cancel a booking (the passenger's shortcut); a second cancel is 409.
#[utoipa::path(post, path = "/api/passengers/bookings/{id}/cancel", tag = "bookings", params(("id" = String, Path)),
    request_body(content = CancelIn, description = "optional"),
    responses((status = 200, body = BookingRow), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn cancel_booking(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<BookingRow>> {
    let id = path_id(&id)?.to_string();
    let input: CancelIn = if bytes.iter().all(u8::is_ascii_whitespace) { CancelIn::default() } else { body(&bytes)? };
    let reason = opt_text("reason", input.reason)?;
    Ok(Json(bookings::cancel_booking(&app, &who.0, &id, reason).await?))
}
