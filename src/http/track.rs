//! `GET /api/v1/trips/{id}/track?from&to&limit&cursor` (CONTRACT §4): a trip's persisted
//! location snapshots in time order, for its participants and the tenant's ADMIN/BUSINESS
//! users, in pages of at most `limit` (default and maximum 10,000); `nextCursor` fetches the
//! next page.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use crate::app::App;
use crate::domain::{TripId, valid_id};
use crate::error::{Error, Result};
use crate::store::snapshots::snapshot_time;
use crate::store::snapshots::{SnapshotRow, TRACK_LIMIT, TrackCursor};

/// Query of the track call.
#[derive(Debug, Deserialize)]
pub struct TrackQuery {
    /// Earliest `recordedAt` (ISO-8601), inclusive.
    from: Option<String>,
    /// Latest `recordedAt` (ISO-8601), inclusive.
    to: Option<String>,
    /// Page size, 1–10,000 (default 10,000).
    limit: Option<i64>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// A cursor is the last snapshot's time and driver, hex-encoded (opaque to clients).
fn encode_cursor(c: &TrackCursor) -> String {
    format!("{}\n{}", c.recorded_at, c.driver_id).bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(s: &str) -> Result<TrackCursor> {
    let bad = || Error::invalid("cursor is not a nextCursor of this call");
    if !s.len().is_multiple_of(2) || s.len() > 1024 {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).unwrap_or("x"), 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, driver) = text.split_once('\n').ok_or_else(bad)?;
    chrono::DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
    Ok(TrackCursor { recorded_at: at.to_string(), driver_id: driver.to_string() })
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
    /// True when more snapshots follow this page.
    truncated: bool,
    /// Pass as `cursor` to get the next page; `null` on the last one.
    next_cursor: Option<String>,
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
        ("to" = Option<String>, Query, description = "ISO-8601, inclusive"),
        ("limit" = Option<i64>, Query, description = "page size, 1–10000 (default 10000)"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page")),
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
    let limit = q.limit.unwrap_or(TRACK_LIMIT);
    if !(1..=TRACK_LIMIT).contains(&limit) {
        return Err(Error::invalid(format!("limit must be 1–{TRACK_LIMIT}")));
    }
    let cursor = q.cursor.as_deref().filter(|c| !c.is_empty()).map(decode_cursor).transpose()?;
    let trip = TripId(id);
    app.access.require_participant(&who, &trip).await?;
    let page = app.db.track(&who.tenant, &trip, from.as_deref(), to.as_deref(), limit, cursor.as_ref()).await?;
    let next_cursor = page.next.as_ref().map(encode_cursor);
    let snapshots = page
        .rows
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
    Ok(Json(Track { trip_id: trip.0, snapshots, truncated: next_cursor.is_some(), next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = TrackCursor { recorded_at: "2026-01-01T00:00:00.000000Z".into(), driver_id: "d 1/é".into() };
        assert_eq!(decode_cursor(&encode_cursor(&c)).expect("decodes"), c);
        for bad in ["zz", "abc", "", "6869"] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
