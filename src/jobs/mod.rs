//! Jobs: the job types the node and `fleetcast-worker` share, the enqueue handle, and (in
//! [`consume`]) the queue consumer both run. The queues live in the node's database
//! (apalis-postgres in cluster mode, apalis-sqlite embedded), so a job pushed is durable
//! before the push returns. Two queues:
//! - `fleetcast.snapshots`: one job per batch of sampled location snapshots, written by the
//!   worker (in-process when embedded);
//! - `fleetcast.offer-deadlines`: one delayed job per offer round, run by any node (it
//!   needs the engine to emit the expiry).
//!
//! The queue SQL apalis does not provide (reschedule, purge, depth) is in `store::jobs`.

use apalis::prelude::TaskBuilder;
use serde::{Deserialize, Serialize};

use crate::store::Db;
use crate::store::snapshots::SnapshotRow;

pub mod consume;

/// Queue name of snapshot batches (set explicitly: the default is the Rust type path).
pub const SNAPSHOT_QUEUE: &str = "fleetcast.snapshots";

/// Queue of offer-round deadlines (consumed by the nodes: expiring an offer emits events).
pub const OFFER_QUEUE: &str = "fleetcast.offer-deadlines";

/// Why a job could not be pushed or the queue could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database refused or is unreachable.
    #[error("job queue: {0}")]
    Db(#[from] sqlx::Error),
    /// The queue's migrations failed.
    #[error("job queue migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A job did not serialize.
    #[error("job encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// The job storage refused the push.
    #[error("job storage: {0}")]
    Storage(String),
    /// The consumer stopped.
    #[error("job consumer stopped: {0}")]
    Stopped(String),
}

/// A batch of snapshots: one job, one multi-row insert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBatch {
    /// Rows, in sampling order.
    pub rows: Vec<SnapshotRow>,
}

/// A trip offer round's deadline, carried by a delayed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferDeadline {
    /// Tenant of the trip.
    pub tenant: String,
    /// The trip.
    pub trip_id: String,
    /// The round it ends.
    pub round: u32,
    /// The deadline, ms since the epoch (job storages schedule by the second: a job may
    /// come up to a second early and then waits for it).
    #[serde(default)]
    pub due_ms: i64,
}

/// Applies the job-queue schema (apalis' own migrations) next to ours.
pub async fn setup(db: &Db) -> Result<(), JobError> {
    // apalis records its migrations in the same `_sqlx_migrations` table as ours, so each
    // migrator must ignore the other's versions.
    match db {
        Db::Pg(p) => {
            let mut m = apalis_postgres::PostgresStorage::migrations();
            m.set_ignore_missing(true);
            m.run(p).await?;
        }
        Db::Sqlite(p) => {
            let mut m = apalis_sqlite::SqliteStorage::migrations();
            m.set_ignore_missing(true);
            m.run(p).await?;
        }
    }
    Ok(())
}

/// Pushes jobs into the queues of the node's database.
#[derive(Clone)]
pub struct JobQueue {
    db: Db,
    max_attempts: usize,
}

impl JobQueue {
    /// A queue in `db`; each job is tried at most `max_attempts` times.
    pub fn new(db: Db, max_attempts: usize) -> Self {
        Self { db, max_attempts }
    }

    /// Pushes one batch as one job; when this returns `Ok` the job is committed.
    pub async fn push(&self, batch: &SnapshotBatch) -> Result<(), JobError> {
        self.push_to(SNAPSHOT_QUEUE, serde_json::to_vec(batch)?, None).await?;
        metrics::counter!("fleetcast_snapshot_jobs_queued_total").increment(1);
        Ok(())
    }

    /// Schedules an offer round's deadline `delay` from now (a delayed job: it survives the
    /// node that scheduled it, and any node runs it).
    pub async fn push_offer_deadline(&self, job: &OfferDeadline, delay: std::time::Duration) -> Result<(), JobError> {
        self.push_to(OFFER_QUEUE, serde_json::to_vec(job)?, Some(delay)).await
    }

    /// Commits one job of `queue`, due now or after `delay`.
    async fn push_to(&self, queue: &str, bytes: Vec<u8>, delay: Option<std::time::Duration>) -> Result<(), JobError> {
        let mut task = TaskBuilder::new(bytes).max_attempts(self.max_attempts);
        if let Some(d) = delay {
            task = task.run_after(d);
        }
        let task = task.build();
        match &self.db {
            Db::Pg(p) => {
                let mut conn = p.acquire().await?;
                apalis_postgres::queries::push_tasks(&mut *conn, queue, vec![task])
                    .await
                    .map_err(|e| JobError::Storage(e.to_string()))?;
            }
            Db::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                apalis_sqlite::queries::push_tasks(&mut *conn, queue, &[task])
                    .await
                    .map_err(|e| JobError::Storage(e.to_string()))?;
            }
        }
        Ok(())
    }
}
