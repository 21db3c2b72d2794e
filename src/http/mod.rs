//! HTTP edge (CONTRACT §4, §7): the route table, one file per concern — [`ops`] (liveness,
//! readiness, metrics, the JSON 404), `rides` (trips, bookings, offers), `publish` (the
//! unified emitter, notifications), `ingest` (HTTP location updates), `drivers` (driver
//! presence), `track`, `admin`
//! (stats, the trip inspector), `tickets` (a booking's QR code), `dev` (the development
//! sign-in), [`openapi`] (the document), [`throttle`] (the write routes' rate limits) — with
//! [`auth`] (the caller's token) and [`error`] (the one error mapping), which the SSE edge
//! shares.
//!
//! The route table is data ([`ROUTES`]): the router is built from it and the OpenAPI test
//! checks the document against it.

use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, get, patch, post, put};

use crate::app::App;

mod admin;
pub mod auth;
mod body;
mod dev;
mod drivers;
pub mod error;
mod ingest;
pub mod openapi;
pub mod ops;
mod publish;
mod rides;
pub mod throttle;
mod tickets;
mod track;

pub use ops::not_found;

/// Every HTTP route of the node, as `(method, path)` (the SSE streams are the `sse` edge's,
/// in `sse::ROUTES`).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/trips/{id}/track"),
    ("POST", "/api/v1/emit"),
    ("POST", "/api/v1/realtime/orders/{id}"),
    ("POST", "/api/v1/realtime/runs/{id}"),
    ("POST", "/api/v1/notifications"),
    ("POST", "/api/v1/drivers/me/location"),
    ("POST", "/api/v1/locations"),
    ("POST", "/api/trips"),
    ("GET", "/api/trips/{id}"),
    ("POST", "/api/trips/{id}/broadcast-offer"),
    ("POST", "/api/drivers/trips/accept/{trip_id}"),
    ("POST", "/api/drivers/trips/{trip_id}/decline"),
    ("GET", "/api/v1/drivers"),
    ("PUT", "/api/drivers/trips/{trip_id}/status"),
    ("POST", "/api/bookings"),
    ("PATCH", "/api/bookings/{id}"),
    ("POST", "/api/passengers/bookings/{id}/cancel"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/v1/admin/stats"),
    ("GET", "/api/v1/admin/trips/{id}"),
    ("GET", "/api/trips/{id}/bookings"),
    ("GET", "/api/bookings/{id}/ticket.svg"),
    ("POST", "/api/dev/token"),
];

/// The handler of a route of [`ROUTES`].
fn handler(method: &str, path: &str) -> Option<MethodRouter<Arc<App>>> {
    Some(match (method, path) {
        ("GET", "/healthz") => get(ops::healthz),
        ("GET", "/readyz") => get(ops::readyz),
        ("GET", "/metrics") => get(ops::metrics),
        ("GET", "/api/v1/trips/{id}/track") => get(track::track),
        ("POST", "/api/v1/emit") => post(publish::emit),
        ("POST", "/api/v1/realtime/orders/{id}") => post(publish::order),
        ("POST", "/api/v1/realtime/runs/{id}") => post(publish::run),
        ("POST", "/api/v1/notifications") => post(publish::notify),
        ("POST", "/api/v1/drivers/me/location") => post(ingest::own),
        ("POST", "/api/v1/locations") => post(ingest::batch),
        ("POST", "/api/trips") => post(rides::create_trip),
        ("GET", "/api/trips/{id}") => get(rides::get_trip),
        ("POST", "/api/trips/{id}/broadcast-offer") => post(rides::broadcast_offer),
        ("POST", "/api/drivers/trips/accept/{trip_id}") => post(rides::accept),
        ("POST", "/api/drivers/trips/{trip_id}/decline") => post(rides::decline),
        ("GET", "/api/v1/drivers") => get(drivers::list),
        ("PUT", "/api/drivers/trips/{trip_id}/status") => put(rides::change_status),
        ("POST", "/api/bookings") => post(rides::book),
        ("PATCH", "/api/bookings/{id}") => patch(rides::patch_booking),
        ("POST", "/api/passengers/bookings/{id}/cancel") => post(rides::cancel_booking),
        ("GET", "/api/openapi.json") => get(openapi::serve),
        ("GET", "/api/v1/admin/stats") => get(admin::stats),
        ("GET", "/api/v1/admin/trips/{id}") => get(admin::inspect_trip),
        ("GET", "/api/trips/{id}/bookings") => get(rides::trip_bookings),
        ("GET", "/api/bookings/{id}/ticket.svg") => get(tickets::ticket_svg),
        ("POST", "/api/dev/token") => post(dev::token),
        _ => return None,
    })
}

/// Every HTTP route of the node, built from [`ROUTES`]; `document` is the OpenAPI document
/// served at `/api/openapi.json` (the node assembles it from both HTTP edges). Every route
/// but a `GET` passes `throttle` first.
pub fn routes(document: Arc<utoipa::openapi::OpenApi>, throttle: Arc<throttle::Throttle>) -> Router<Arc<App>> {
    let mut router = Router::new();
    for (method, path) in ROUTES {
        match handler(method, path) {
            Some(h) if *method == "GET" => router = router.route(path, h),
            Some(h) => {
                let limited = h.layer(axum::middleware::from_fn_with_state(throttle.clone(), throttle::limit));
                router = router.route(path, limited);
            }
            None => tracing::error!(method, path, "route without a handler"),
        }
    }
    router.layer(axum::Extension(document))
}
