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
                     ORDER BY location_snapshots.recorded_at, driver_id LIMIT $7",
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
                     ORDER BY location_snapshots.recorded_at, driver_id LIMIT $7",
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

/// A trip's span in whole hours since the epoch: (first hour, last hour), both inclusive.
type HourSpan = (i64, i64);
/// (database, tenant, trip) → the span this process last wrote for it there.
type SpanKey = (String, String, String);

/// Spans written by this process, so a batch sends only the ones that grew. Bounded: past
/// `SPAN_CACHE` trips it starts over (a forgotten span is only sent once more). Spans in the
/// database never shrink (retention removes a span only with every row it covered), so a
/// remembered span is always covered there. The lock is never held across `.await`.
static SPANS: std::sync::Mutex<Option<std::collections::HashMap<SpanKey, HourSpan>>> = std::sync::Mutex::new(None);
const SPAN_CACHE: usize = 200_000;

fn hour_of(recorded_at: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(recorded_at).ok().map(|t| t.timestamp().div_euclid(3_600))
}

fn hour_start(hour: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(hour * 3_600, 0).unwrap_or_default()
}

/// The spans of `rows`' trips not already covered by what this process wrote.
fn grown_spans(database: &str, rows: &[SnapshotRow]) -> Vec<(SpanKey, HourSpan)> {
    let mut batch: std::collections::BTreeMap<SpanKey, HourSpan> = std::collections::BTreeMap::new();
    for r in rows {
        let (Some(trip), Some(h)) = (&r.trip_id, hour_of(&r.recorded_at)) else { continue };
        let e = batch.entry((database.to_string(), r.tenant.clone(), trip.clone())).or_insert((h, h));
        *e = (e.0.min(h), e.1.max(h));
    }
    let guard = SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    batch
        .into_iter()
        .filter(|(k, (f, l))| guard.as_ref().and_then(|m| m.get(k)).is_none_or(|(cf, cl)| f < cf || l > cl))
        .collect()
}

/// Remembers spans once their write committed.
fn remember_spans(spans: Vec<(SpanKey, HourSpan)>) {
    let mut guard = SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = guard.get_or_insert_with(Default::default);
    if map.len() + spans.len() > SPAN_CACHE {
        map.clear();
    }
    for (k, (f, l)) in spans {
        let e = map.entry(k).or_insert((f, l));
        *e = (e.0.min(f), e.1.max(l));
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
            // One statement: the rows, and the spans of their trips that grew (in whole hours,
            // in key order so two workers upserting the same trips cannot deadlock). Spans
            // this process already wrote are not sent again: in steady state a trip's span
            // row is touched about once an hour, not with every batch.
            let o = p.connect_options();
            let database = format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or(""));
            let spans = grown_spans(&database, r);
            let (inserted,): (i64,) = sqlx::query_as(
                "WITH ins AS (INSERT INTO location_snapshots \
                   (tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, recorded_at) \
                 SELECT t, d, tr, la, ln, sp, hd, ac, ra::timestamptz FROM UNNEST( \
                   $1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], \
                   $6::float8[], $7::float8[], $8::float8[], $9::text[]) \
                   AS u(t, d, tr, la, ln, sp, hd, ac, ra) \
                 ON CONFLICT (tenant, driver_id, recorded_at) DO NOTHING RETURNING 1), \
                 spans AS (INSERT INTO location_trip_spans (tenant, trip_id, first_at, last_at) \
                   SELECT t, tr, f, l FROM UNNEST($10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[]) \
                     AS s(t, tr, f, l) ORDER BY t, tr \
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
            .bind(spans.iter().map(|s| s.0.1.clone()).collect::<Vec<String>>())
            .bind(spans.iter().map(|s| s.0.2.clone()).collect::<Vec<String>>())
            .bind(spans.iter().map(|s| hour_start(s.1.0)).collect::<Vec<chrono::DateTime<chrono::Utc>>>())
            .bind(spans.iter().map(|s| hour_start(s.1.1 + 1)).collect::<Vec<chrono::DateTime<chrono::Utc>>>())
            .fetch_one(p)
            .await?;
            remember_spans(spans);
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
