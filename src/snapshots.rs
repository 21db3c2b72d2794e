//! The node side of the durable path of sampled locations (CONTRACT §5): [`Sampler`]
//! gathers sampled rows in a bounded buffer and hands them to the job
//! queue as one job per batch (at most every flush interval, or sooner when a batch is
//! full). While the database is unreachable the buffer keeps the rows and the flusher
//! retries with a growing delay; past the buffer bound the oldest rows are dropped, counted
//! in `fleetcast_snapshot_rows_dropped_total` and logged. Graceful shutdown flushes.
//!
//! The write side is `store::snapshots`, run by the worker.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{Location, Tenant, TripId};
use crate::jobs::{JobError, JobQueue, SnapshotBatch};
use crate::store::snapshots::SnapshotRow;

/// Longest wait between two flush attempts while the database is away.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Gathers sampled snapshots and pushes them as batch jobs.
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

    /// Queues a sampled position for the next batch; never blocks.
    pub fn offer_location(&self, tenant: &Tenant, location: &Location) {
        self.offer(SnapshotRow::from_location(tenant, location));
    }

    /// Queues a trip's last position as its final snapshot (CONTRACT §5 "one at trip end").
    pub fn offer_final(&self, tenant: &Tenant, driver: &str, trip: &TripId, location: &Location) {
        self.offer(SnapshotRow::final_of_trip(tenant, driver, trip, location));
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
    async fn flush_once(&self) -> Result<usize, JobError> {
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
        let db = crate::store::Db::connect("postgres://postgres@127.0.0.1:1/none", 1).await.expect("lazy pool");
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
