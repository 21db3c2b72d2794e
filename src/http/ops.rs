//! Operations routes (CONTRACT §4 "Operations"): liveness, readiness (Redis and the
//! database both answer, every held room is subscribed, not shutting down), Prometheus
//! metrics (with `fleetcast_ready` as of the scrape), and the JSON 404 of every unknown path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub(super) async fn healthz(State(app): State<Arc<App>>) -> Response {
    axum::Json(json!({ "status": "ok", "node": app.node_id })).into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Redis and the database answer"), (status = 503, description = "not ready")))]
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (engine, db, ready) = readiness(&app).await;
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
pub(super) async fn metrics(State(app): State<Arc<App>>) -> Response {
    // Readiness as of this scrape, for the "node not ready" alert.
    let (_, _, ready) = readiness(&app).await;
    metrics::gauge!("fleetcast_ready").set(if ready { 1.0 } else { 0.0 });
    // Each Redis Cluster primary's figures, as of this scrape.
    if let Ok(infos) = app.engine.server_infos().await
        && infos.first().is_some_and(|(name, _)| name != "redis")
        && let Some(section) = super::admin::redis_section(&infos)
    {
        for shard in section["shards"].as_array().into_iter().flatten() {
            let name = shard["shard"].as_str().unwrap_or_default().to_string();
            for (field, metric) in [
                ("usedMemoryBytes", "fleetcast_redis_shard_used_memory_bytes"),
                ("opsPerSec", "fleetcast_redis_shard_ops_per_sec"),
                ("pubsubShardChannels", "fleetcast_redis_shard_pubsub_channels"),
                ("keys", "fleetcast_redis_shard_keys"),
            ] {
                if let Some(v) = shard[field].as_f64() {
                    metrics::gauge!(metric, "shard" => name.clone()).set(v);
                }
            }
        }
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// `(engine answers, database answers, ready)`.
async fn readiness(app: &App) -> (bool, bool, bool) {
    let (engine, db) = tokio::join!(app.engine.ready(), app.db.ping());
    (engine, db, engine && db && !app.shutting_down())
}

/// A JSON 404 for every unknown path (the contract's error shape).
pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "NOT_FOUND", "message": "no such route" }))).into_response()
}
