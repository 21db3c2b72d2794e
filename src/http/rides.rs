//! Trips and bookings over HTTP (CONTRACT §4 "Trips and bookings"): thin handlers over
//! [`crate::rides`], which holds the checks, the transactions and the events.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::publish::body;
use crate::App;
use crate::domain::valid_id;
use crate::error::{Error, Result};
use crate::rides::offers::OfferResult;
use crate::rides::{self, BookIn, CreateTrip, StatusChangeIn, Trip};
use crate::store::rides::BookingRow;

/// An id from the path: anything that cannot be an id is an unknown resource.
fn path_id(id: &str) -> Result<&str> {
    if valid_id(id) { Ok(id) } else { Err(Error::NotFound) }
}

/// The contract's error body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// `INVALID_PAYLOAD`, `NO_TOKEN`, `INVALID_TOKEN`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `NO_SEATS`, `INVALID_TRANSITION`, `RATE_LIMITED`, `UNAVAILABLE` or `INTERNAL`.
    error: String,
    /// What went wrong.
    message: String,
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
    Ok((StatusCode::CREATED, Json(rides::create_trip(&app, &who.0, input).await?)))
}

/// Read a trip.
#[utoipa::path(get, path = "/api/trips/{id}", tag = "trips", params(("id" = String, Path)),
    responses((status = 200, body = Trip), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_trip(State(app): State<Arc<App>>, who: Caller, Path(id): Path<String>) -> Result<Json<Trip>> {
    Ok(Json(rides::get_trip(&app, &who.0, path_id(&id)?).await?))
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
    Ok(Json(rides::offers::broadcast(&app, &who.0, path_id(&id)?).await?))
}

/// Accept an offered trip (same as `trip:offer:accept`); 409 when another driver won.
#[utoipa::path(post, path = "/api/drivers/trips/accept/{tripId}", tag = "offers", params(("tripId" = String, Path)),
    responses((status = 200, body = Trip), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn accept(State(app): State<Arc<App>>, who: Caller, Path(trip): Path<String>) -> Result<Json<Trip>> {
    Ok(Json(rides::offers::accept(&app, &who.0, path_id(&trip)?).await?))
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
    Ok(Json(rides::change_status(&app, &who.0, &trip, input).await?))
}

/// Book seats (PASSENGER); 409 `NO_SEATS` when too few are left.
#[utoipa::path(post, path = "/api/bookings", tag = "bookings", request_body = BookIn,
    responses((status = 201, body = BookingRow), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn book(State(app): State<Arc<App>>, who: Caller, bytes: Bytes) -> Result<(StatusCode, Json<BookingRow>)> {
    let input: BookIn = body(&bytes)?;
    Ok((StatusCode::CREATED, Json(rides::book(&app, &who.0, input).await?)))
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
    Ok(Json(rides::cancel_booking(&app, &who.0, &id, input.reason).await?))
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
    Ok(Json(rides::cancel_booking(&app, &who.0, &id, input.reason).await?))
}
