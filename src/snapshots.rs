//! The durable path of sampled locations (CONTRACT §5), node side and write side.
//!
//! Node side: [`Sampler`] gathers sampled rows in a bounded buffer and hands them to the job
//! queue as one job per batch (at most every flush interval, or sooner when a batch is
//! full). While the database is unreachable the buffer keeps the rows and the flusher
//! retries with a growing delay; past the buffer bound the oldest rows are dropped, counted
//! in `fleetcast_snapshot_rows_dropped_total` and logged. Graceful shutdown flushes.
//!
//! Write side: [`write_batch`] inserts a batch in one statement, idempotent on
//! `(tenant, driver_id, recorded_at)`, so a replayed job writes nothing twice.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::jobs::{JobQueue, SnapshotBatch, SnapshotRow};
use crate::store::Db;

/// Longest wait between two flush attempts while the database is away.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Gathers sampled snapshots and pushes them as batch jobs.
/// A stored live `Location`, read back for the final snapshot of a trip.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredLocation {
    trip_id: Option<String>,
    lat: f64,
    lng: f64,
    speed: Option<f64>,
    heading: Option<f64>,
    accuracy: Option<f64>,
    updated_at: String,
}

/// The snapshot row of a stored live `Location` JSON of `driver` at the end of `trip`.
pub fn row_from_location(tenant: &crate::domain::Tenant, driver: &str, trip: &str, json: &str) -> Option<SnapshotRow> {
    match serde_json::from_str::<StoredLocation>(json) {
        Ok(l) => Some(SnapshotRow {
            tenant: tenant.0.clone(),
            driver_id: driver.to_string(),
            trip_id: l.trip_id.or_else(|| Some(trip.to_string())),
            lat: l.lat,
            lng: l.lng,
            speed: l.speed,
            heading: l.heading,
            accuracy: l.accuracy,
            recorded_at: crate::jobs::snapshot_time(&l.updated_at),
        }),
        Err(e) => {
            tracing::error!(error = %e, "stored location unreadable");
            None
        }
    }
}

pub struct Sampler {
    queue: JobQueue,
    /// Rows waiting for a job. Bounded by `capacity`; the lock is never held across
    /// `.await`.
    buffer: Mutex<VecDeque<SnapshotRow>>,
    capacity: usize,
    batch_rows: usize,
    flush_every: Duration,
    full: Notify,
}

impl Sampler {
    /// A sampler pushing to `queue`, batches of at most `batch_rows`, buffering at most
    /// `capacity` rows.
    pub fn new(queue: JobQueue, batch_rows: usize, capacity: usize, flush_every: Duration) -> Self {
        Self {
            queue,
            buffer: Mutex::new(VecDeque::new()),
            capacity: capacity.max(batch_rows),
            batch_rows,
            flush_every,
            full: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SnapshotRow>> {
        self.buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a row for the next batch; never blocks.
    pub fn offer(&self, row: SnapshotRow) {
        let len = {
            let mut b = self.lock();
            if b.len() >= self.capacity {
                b.pop_front();
                metrics::counter!("fleetcast_snapshot_rows_dropped_total").increment(1);
                tracing::warn!(capacity = self.capacity, "snapshot buffer full: oldest row dropped");
            }
            b.push_back(row);
            b.len()
        };
        metrics::gauge!("fleetcast_snapshot_buffer_rows").set(len as f64);
        if len >= self.batch_rows {
            self.full.notify_one();
        }
    }

    /// Rows waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.lock().len()
    }

    /// Pushes one batch; on failure the rows go back to the front of the buffer.
    async fn flush_once(&self) -> anyhow::Result<usize> {
        let rows: Vec<SnapshotRow> = {
            let mut b = self.lock();
            let n = b.len().min(self.batch_rows);
            b.drain(..n).collect()
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        let batch = SnapshotBatch { rows };
        match self.queue.push(&batch).await {
            Ok(()) => {
                metrics::gauge!("fleetcast_snapshot_buffer_rows").set(self.buffered() as f64);
                Ok(n)
            }
            Err(e) => {
                let mut b = self.lock();
                for row in batch.rows.into_iter().rev() {
                    if b.len() >= self.capacity {
                        metrics::counter!("fleetcast_snapshot_rows_dropped_total").increment(1);
                        continue;
                    }
                    b.push_front(row);
                }
                Err(e)
            }
        }
    }

    /// The flush loop (owner: the node; stops on `cancel` after a final flush bounded by
    /// `drain`).
    pub async fn run(&self, cancel: CancellationToken, drain: Duration) {
        let mut delay = self.flush_every;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
                _ = self.full.notified() => {}
            }
            delay = self.flush_every;
            loop {
                match self.flush_once().await {
                    Ok(n) if n == self.batch_rows => continue,
                    Ok(_) => break,
                    Err(e) => {
                        metrics::counter!("fleetcast_snapshot_push_failures_total").increment(1);
                        delay = (delay * 2).min(MAX_RETRY_DELAY);
                        tracing::warn!(error = %e, buffered = self.buffered(), retry_in = ?delay, "snapshot batch not queued");
                        break;
                    }
                }
            }
        }
        let deadline = Instant::now() + drain;
        while self.buffered() > 0 && Instant::now() < deadline {
            if let Err(e) = self.flush_once().await {
                tracing::warn!(error = %e, "final snapshot flush failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let left = self.buffered();
        if left > 0 {
            tracing::error!(rows = left, "snapshot rows lost at shutdown: database unreachable");
            metrics::counter!("fleetcast_snapshot_rows_dropped_total").increment(left as u64);
        }
    }
}

/// Writes a batch in one statement; returns the rows actually inserted (replays insert 0).
pub async fn write_batch(db: &Db, batch: &SnapshotBatch) -> Result<u64, sqlx::Error> {
    if batch.rows.is_empty() {
        return Ok(0);
    }
    match db {
        Db::Pg(p) => {
            let r = &batch.rows;
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
            for chunk in batch.rows.chunks(500) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u32) -> SnapshotRow {
        SnapshotRow {
            tenant: "t".into(),
            driver_id: format!("d{i}"),
            trip_id: None,
            lat: 0.0,
            lng: 0.0,
            speed: None,
            heading: None,
            accuracy: None,
            recorded_at: format!("2026-01-01T00:00:{i:02}.000000Z"),
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_keeps_rows_bounded_and_newest_first_out_last() {
        // Nothing listens on port 1: every push fails at once.
        let db = Db::connect("postgres://postgres@127.0.0.1:1/none", 1).await.expect("lazy pool");
        let sampler = Sampler::new(JobQueue::new(db, 3), 2, 4, Duration::from_millis(10));
        for i in 0..6 {
            sampler.offer(row(i));
        }
        assert_eq!(sampler.buffered(), 4, "bounded: the two oldest rows were dropped");
        assert!(sampler.flush_once().await.is_err());
        assert_eq!(sampler.buffered(), 4, "a failed push puts its rows back");
        let kept: Vec<String> = sampler.lock().iter().map(|r| r.driver_id.clone()).collect();
        assert_eq!(kept, ["d2", "d3", "d4", "d5"], "order kept, newest rows survive");
    }
}
