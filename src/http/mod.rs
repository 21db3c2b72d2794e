//! HTTP edge (CONTRACT §4): the operations routes — liveness, readiness (Redis and the
//! database both answer, and every held room is subscribed), Prometheus metrics — and the
//! trip track. Errors leave as the contract's JSON through one `IntoResponse` for `Error`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::App;

mod admin;
pub mod auth;
pub mod error;
mod openapi;
mod publish;
mod rides;
mod track;

/// Every HTTP route of the node (the SSE streams are the `sse` edge's, merged by the node).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/trips/{id}/track", get(track::track))
        .route("/api/v1/emit", axum::routing::post(publish::emit))
        .route("/api/v1/realtime/orders/{id}", axum::routing::post(publish::order))
        .route("/api/v1/realtime/runs/{id}", axum::routing::post(publish::run))
        .route("/api/trips", axum::routing::post(rides::create_trip))
        .route("/api/trips/{id}", get(rides::get_trip))
        .route("/api/trips/{id}/broadcast-offer", axum::routing::post(rides::broadcast_offer))
        .route("/api/drivers/trips/accept/{trip_id}", axum::routing::post(rides::accept))
        .route("/api/drivers/trips/{trip_id}/status", axum::routing::put(rides::change_status))
        .route("/api/bookings", axum::routing::post(rides::book))
        .route("/api/bookings/{id}", axum::routing::patch(rides::patch_booking))
        .route("/api/passengers/bookings/{id}/cancel", axum::routing::post(rides::cancel_booking))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/v1/admin/stats", get(admin::stats))
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
async fn healthz(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({ "status": "ok", "node": app.node_id })).into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Redis and the database answer"), (status = 503, description = "not ready")))]
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (engine, db) = tokio::join!(app.engine.ready(), app.db.ping());
    let ready = engine && db && !app.shutting_down();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "node": app.node_id,
        "engine": engine,
        "database": db,
    });
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", description = "Prometheus text, `node` label")))]
async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// A JSON 404 for every unknown path (the contract's error shape).
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "NOT_FOUND", "message": "no such route" }))).into_response()
}
