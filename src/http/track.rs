//! `GET /api/v1/trips/{id}/track?from&to` (CONTRACT §4): a trip's persisted location
//! snapshots in time order, for its participants and the tenant's ADMIN/BUSINESS users.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use crate::app::App;
use crate::domain::{TripId, valid_id};
use crate::error::{Error, Result};
use crate::store::snapshots::snapshot_time;
use crate::store::snapshots::{SnapshotRow, TRACK_LIMIT};

/// Query of the track call.
#[derive(Debug, Deserialize)]
pub struct TrackQuery {
    /// Earliest `recordedAt` (ISO-8601), inclusive.
    from: Option<String>,
    /// Latest `recordedAt` (ISO-8601), inclusive.
    to: Option<String>,
}

/// One snapshot.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    driver_id: String,
    lat: f64,
    lng: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
    recorded_at: String,
}

/// The answer: the trip id and its snapshots, oldest first.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    trip_id: String,
    snapshots: Vec<Point>,
    /// True when more than the answer's limit matched (narrow `from`/`to`).
    truncated: bool,
}

fn bound(name: &str, v: Option<String>) -> Result<Option<String>> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => {
            chrono::DateTime::parse_from_rfc3339(&s)
                .map_err(|_| Error::invalid(format!("{name} must be an ISO-8601 date-time")))?;
            Ok(Some(snapshot_time(&s)))
        }
    }
}

/// Handler of the track call.
#[utoipa::path(get, path = "/api/v1/trips/{id}/track", tag = "trips",
    params(("id" = String, Path), ("from" = Option<String>, Query, description = "ISO-8601, inclusive"),
        ("to" = Option<String>, Query, description = "ISO-8601, inclusive")),
    responses((status = 200, body = Track), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)), security(("bearer" = [])))]
pub async fn track(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<TrackQuery>,
) -> Result<Json<Track>> {
    if !valid_id(&id) {
        return Err(Error::NotFound);
    }
    let from = bound("from", q.from)?;
    let to = bound("to", q.to)?;
    let trip = TripId(id);
    app.access.require_participant(&who, &trip).await?;
    let points = app.db.track(&who.tenant, &trip, from.as_deref(), to.as_deref()).await?;
    let truncated = points.len() as i64 >= TRACK_LIMIT;
    let snapshots = points
        .into_iter()
        .map(|p: SnapshotRow| Point {
            driver_id: p.driver_id,
            lat: p.lat,
            lng: p.lng,
            speed: p.speed,
            heading: p.heading,
            accuracy: p.accuracy,
            recorded_at: p.recorded_at,
        })
        .collect();
    Ok(Json(Track { trip_id: trip.0, snapshots, truncated }))
}
