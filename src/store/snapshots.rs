//! `location_snapshots`: the sampled positions (CONTRACT §5) and a trip's track read from
//! them (CONTRACT §4). A row's natural key is
//! `(tenant, driver_id, recorded_at)`; [`write_snapshots`] inserts a batch in one statement
//! with `ON CONFLICT DO NOTHING` on it, so a replayed job writes nothing twice.

use serde::{Deserialize, Serialize};

use super::Db;
use crate::domain::{Location, Tenant, TripId};
use crate::error::Result;

/// One sampled position, as written to `location_snapshots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SnapshotRow {
    /// Tenant of the driver.
    pub tenant: String,
    /// The driver.
    pub driver_id: String,
    /// The trip the update named, if any.
    pub trip_id: Option<String>,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lng: f64,
    /// Speed.
    pub speed: Option<f64>,
    /// Heading.
    pub heading: Option<f64>,
    /// Accuracy.
    pub accuracy: Option<f64>,
    /// When the position was taken (ISO-8601); with tenant and driver, the natural key.
    pub recorded_at: String,
}

impl SnapshotRow {
    /// The row of a driver's position.
    pub fn from_location(tenant: &Tenant, location: &Location) -> Self {
        Self {
            tenant: tenant.0.clone(),
            driver_id: location.driver.0.clone(),
            trip_id: location.trip.as_ref().map(|t| t.0.clone()),
            lat: location.lat,
            lng: location.lng,
            speed: location.speed,
            heading: location.heading,
            accuracy: location.accuracy,
            recorded_at: snapshot_time(&location.updated_at),
        }
    }

    /// The final row of `trip` from its driver's last live position (the position may
    /// name no trip, or one the driver reported before).
    pub fn final_of_trip(tenant: &Tenant, driver: &str, trip: &TripId, location: &Location) -> Self {
        let mut row = Self::from_location(tenant, location);
        row.driver_id = driver.to_string();
        row.trip_id = Some(location.trip.as_ref().unwrap_or(trip).0.clone());
        row
    }
}

/// A snapshot time in the one form stored: ISO-8601 UTC with microseconds. SQLite keeps
/// times as text, so one fixed form keeps the natural key and the ordering exact.
pub fn snapshot_time(iso: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(iso)
        .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|_| iso.to_string())
}

/// Most snapshots one `track` page returns.
pub const TRACK_LIMIT: i64 = 10_000;

/// Where a track page starts: after the snapshot `(recorded_at, driver_id)` of the
/// previous page (`recorded_at` in the stored form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackCursor {
    /// Time of the last snapshot of the previous page.
    pub recorded_at: String,
    /// Its driver (a trip's snapshots are ordered by time, then driver).
    pub driver_id: String,
}

/// One page of a trip's track.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackPage {
    /// Snapshots in (time, driver) order.
    pub rows: Vec<SnapshotRow>,
    /// Where the next page starts, when there is one.
    pub next: Option<TrackCursor>,
}

fn utc(iso: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(iso).ok().map(|t| t.with_timezone(&chrono::Utc))
}

impl Db {
    /// A page of the trip's snapshots in time order, within `[from, to]` (ISO-8601 in the
    /// stored form), at most `limit` (≤ [`TRACK_LIMIT`]), after `cursor`. In Postgres the
    /// trip's span (`location_trip_spans`) bounds the scan first, so only the partitions
    /// of the trip's days are read.
    pub async fn track(
        &self,
        tenant: &Tenant,
        trip: &TripId,
        from: Option<&str>,
        to: Option<&str>,
        limit: i64,
        cursor: Option<&TrackCursor>,
    ) -> Result<TrackPage> {
        let limit = limit.clamp(1, TRACK_LIMIT);
        let mut rows: Vec<SnapshotRow> = match self {
            Db::Pg(p) => {
                let span: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "SELECT first_at, last_at FROM location_trip_spans WHERE tenant = $1 AND trip_id = $2",
                )
                .bind(&tenant.0)
                .bind(&trip.0)
                .fetch_optional(p)
                .await?;
                let Some((first, last)) = span else { return Ok(TrackPage { rows: Vec::new(), next: None }) };
                let lo = from.and_then(utc).map_or(first, |f| f.max(first));
                let hi = to.and_then(utc).map_or(last, |t| t.min(last));
                if lo > hi {
                    return Ok(TrackPage { rows: Vec::new(), next: None });
                }
                let (after_at, after_driver) = match cursor {
                    Some(c) => (utc(&c.recorded_at).unwrap_or(lo), c.driver_id.as_str()),
                    None => (lo, ""),
                };
                sqlx::query_as(
                    "SELECT tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, \
                     to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at \
                     FROM location_snapshots WHERE tenant = $1 AND trip_id = $2 \
                     AND recorded_at >= $3 AND recorded_at <= $4 AND (recorded_at, driver_id) > ($5, $6) \
                     ORDER BY recorded_at, driver_id LIMIT $7",
                )
                .bind(&tenant.0)
                .bind(&trip.0)
                .bind(lo)
                .bind(hi)
                .bind(after_at)
                .bind(after_driver)
                .bind(limit + 1)
                .fetch_all(p)
                .await?
            }
            Db::Sqlite(p) => {
                let (after_at, after_driver) = match cursor {
                    Some(c) => (Some(c.recorded_at.as_str()), c.driver_id.as_str()),
                    None => (None, ""),
                };
                sqlx::query_as(
                    "SELECT tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, recorded_at \
                     FROM location_snapshots WHERE tenant = $1 AND trip_id = $2 \
                     AND ($3 IS NULL OR recorded_at >= $3) AND ($4 IS NULL OR recorded_at <= $4) \
                     AND ($5 IS NULL OR (recorded_at, driver_id) > ($5, $6)) \
                     ORDER BY recorded_at, driver_id LIMIT $7",
                )
                .bind(&tenant.0)
                .bind(&trip.0)
                .bind(from)
                .bind(to)
                .bind(after_at)
                .bind(after_driver)
                .bind(limit + 1)
                .fetch_all(p)
                .await?
            }
        };
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|r| TrackCursor { recorded_at: r.recorded_at.clone(), driver_id: r.driver_id.clone() })
        } else {
            None
        };
        Ok(TrackPage { rows, next })
    }
}

/// Writes a batch in one statement; returns the rows actually inserted (replays insert 0).
///
/// Rows recorded before `keep_since` (the retention bound) are skipped: their day's
/// partition is already dropped, and they would be dropped with it anyway.
pub async fn write_snapshots(
    db: &Db,
    rows: &[SnapshotRow],
    keep_since: Option<chrono::NaiveDate>,
) -> Result<u64, sqlx::Error> {
    let kept: Vec<SnapshotRow>;
    let rows = match keep_since {
        Some(day) => {
            // Times are stored in one fixed form, so they compare as text.
            let bound = format!("{}T00:00:00.000000Z", day.format("%Y-%m-%d"));
            kept = rows.iter().filter(|r| r.recorded_at >= bound).cloned().collect();
            let skipped = rows.len() - kept.len();
            if skipped > 0 {
                metrics::counter!("fleetcast_worker_rows_past_retention_total").increment(skipped as u64);
            }
            &kept[..]
        }
        None => rows,
    };
    if rows.is_empty() {
        return Ok(0);
    }
    match db {
        Db::Pg(p) => {
            let r = rows;
            let col = |f: fn(&SnapshotRow) -> String| r.iter().map(f).collect::<Vec<String>>();
            let opt = |f: fn(&SnapshotRow) -> Option<f64>| r.iter().map(f).collect::<Vec<Option<f64>>>();
            // One statement: the rows, and the span of each trip they belong to, in whole hours
            // (so a trip's span row is rewritten about once an hour, not with every batch),
            // in key order (two workers upserting the same trips cannot deadlock).
            let (inserted,): (i64,) = sqlx::query_as(
                "WITH ins AS (INSERT INTO location_snapshots \
                   (tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, recorded_at) \
                 SELECT t, d, tr, la, ln, sp, hd, ac, ra::timestamptz FROM UNNEST( \
                   $1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], \
                   $6::float8[], $7::float8[], $8::float8[], $9::text[]) \
                   AS u(t, d, tr, la, ln, sp, hd, ac, ra) \
                 ON CONFLICT (tenant, driver_id, recorded_at) DO NOTHING \
                 RETURNING tenant, trip_id, recorded_at), \
                 spans AS (INSERT INTO location_trip_spans (tenant, trip_id, first_at, last_at) \
                   SELECT tenant, trip_id, \
                     date_trunc('hour', min(recorded_at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', \
                     date_trunc('hour', max(recorded_at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 hour' \
                   FROM ins WHERE trip_id IS NOT NULL GROUP BY tenant, trip_id ORDER BY tenant, trip_id \
                   ON CONFLICT (tenant, trip_id) DO UPDATE \
                   SET first_at = least(location_trip_spans.first_at, excluded.first_at), \
                       last_at = greatest(location_trip_spans.last_at, excluded.last_at) \
                   WHERE excluded.first_at < location_trip_spans.first_at \
                      OR excluded.last_at > location_trip_spans.last_at) \
                 SELECT count(*) FROM ins",
            )
            .bind(col(|x| x.tenant.clone()))
            .bind(col(|x| x.driver_id.clone()))
            .bind(r.iter().map(|x| x.trip_id.clone()).collect::<Vec<Option<String>>>())
            .bind(r.iter().map(|x| x.lat).collect::<Vec<f64>>())
            .bind(r.iter().map(|x| x.lng).collect::<Vec<f64>>())
            .bind(opt(|x| x.speed))
            .bind(opt(|x| x.heading))
            .bind(opt(|x| x.accuracy))
            .bind(col(|x| x.recorded_at.clone()))
            .fetch_one(p)
            .await?;
            Ok(inserted.max(0) as u64)
        }
        Db::Sqlite(p) => {
            let mut tx = p.begin().await?;
            let mut inserted = 0;
            // 9 parameters a row; 500 rows stay far below SQLite's variable limit.
            for chunk in rows.chunks(500) {
                let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO location_snapshots \
                     (tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, recorded_at) ",
                );
                qb.push_values(chunk, |mut b, x| {
                    b.push_bind(&x.tenant)
                        .push_bind(&x.driver_id)
                        .push_bind(&x.trip_id)
                        .push_bind(x.lat)
                        .push_bind(x.lng)
                        .push_bind(x.speed)
                        .push_bind(x.heading)
                        .push_bind(x.accuracy)
                        .push_bind(&x.recorded_at);
                });
                qb.push(" ON CONFLICT (tenant, driver_id, recorded_at) DO NOTHING");
                inserted += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
            Ok(inserted)
        }
    }
}
