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

/// Most snapshots one `track` answer returns.
pub const TRACK_LIMIT: i64 = 10_000;

impl Db {
    /// The trip's snapshots in time order, within `[from, to]` (ISO-8601 in the stored
    /// form), at most [`TRACK_LIMIT`].
    pub async fn track(
        &self,
        tenant: &Tenant,
        trip: &TripId,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<SnapshotRow>> {
        let sql = match self {
            Db::Pg(_) => {
                "SELECT tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, \
                 to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS recorded_at \
                 FROM location_snapshots WHERE tenant = $1 AND trip_id = $2 \
                 AND ($3::text IS NULL OR recorded_at >= $3::timestamptz) \
                 AND ($4::text IS NULL OR recorded_at <= $4::timestamptz) \
                 ORDER BY recorded_at LIMIT $5"
            }
            Db::Sqlite(_) => {
                "SELECT tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, recorded_at \
                 FROM location_snapshots WHERE tenant = $1 AND trip_id = $2 \
                 AND ($3 IS NULL OR recorded_at >= $3) AND ($4 IS NULL OR recorded_at <= $4) \
                 ORDER BY recorded_at LIMIT $5"
            }
        };
        Ok(each!(self, p => sqlx::query_as(sql)
            .bind(&tenant.0)
            .bind(&trip.0)
            .bind(from)
            .bind(to)
            .bind(TRACK_LIMIT)
            .fetch_all(p)
            .await?))
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
            let res = sqlx::query(
                "INSERT INTO location_snapshots \
                   (tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy, recorded_at) \
                 SELECT t, d, tr, la, ln, sp, hd, ac, ra::timestamptz FROM UNNEST( \
                   $1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], \
                   $6::float8[], $7::float8[], $8::float8[], $9::text[]) \
                   AS u(t, d, tr, la, ln, sp, hd, ac, ra) \
                 ON CONFLICT (tenant, driver_id, recorded_at) DO NOTHING",
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
            .execute(p)
            .await?;
            Ok(res.rows_affected())
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
