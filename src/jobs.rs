//! Job types shared with `fleetcast-worker`, and the node's enqueue handle: the node's only
//! apalis code. One job carries a batch of sampled location snapshots; the queue lives in
//! the database (apalis-postgres in cluster mode, apalis-sqlite embedded), so a job pushed
//! is durable before the push returns.

use apalis::prelude::TaskBuilder;
use serde::{Deserialize, Serialize};

use crate::store::Db;

/// Queue name of snapshot batches (set explicitly: the default is the Rust type path).
pub const SNAPSHOT_QUEUE: &str = "fleetcast.snapshots";

/// Queue of offer-round deadlines (consumed by the nodes: expiring an offer emits events).
pub const OFFER_QUEUE: &str = "fleetcast.offer-deadlines";

/// One sampled position, as written to `location_snapshots`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// A snapshot time in the one form stored: ISO-8601 UTC with microseconds. SQLite keeps
/// times as text, so one fixed form keeps the natural key and the ordering exact.
pub fn snapshot_time(iso: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(iso)
        .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|_| iso.to_string())
}

/// A batch of snapshots: one job, one multi-row insert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBatch {
    /// Rows, in sampling order.
    pub rows: Vec<SnapshotRow>,
}

/// Pushes snapshot batches into the job queue of the node's database.
#[derive(Clone)]
pub struct JobQueue {
    db: Db,
    max_attempts: usize,
}

/// Applies the job-queue schema (apalis' own migrations) next to ours.
pub async fn setup(db: &Db) -> anyhow::Result<()> {
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

impl JobQueue {
    /// A queue in `db`; each job is tried at most `max_attempts` times.
    pub fn new(db: Db, max_attempts: usize) -> Self {
        Self { db, max_attempts }
    }

    /// Pushes one batch as one job; when this returns `Ok` the job is committed.
    pub async fn push(&self, batch: &SnapshotBatch) -> anyhow::Result<()> {
        self.push_to(SNAPSHOT_QUEUE, serde_json::to_vec(batch)?, None).await?;
        metrics::counter!("fleetcast_snapshot_jobs_queued_total").increment(1);
        Ok(())
    }

    /// Schedules an offer round's deadline `delay` from now (a delayed job: it survives the
    /// node that scheduled it, and any node runs it).
    pub async fn push_offer_deadline(
        &self,
        job: &crate::rides::offers::OfferDeadline,
        delay: std::time::Duration,
    ) -> anyhow::Result<()> {
        self.push_to(OFFER_QUEUE, serde_json::to_vec(job)?, Some(delay)).await
    }

    /// Commits one job of `queue`, due now or after `delay`.
    async fn push_to(&self, queue: &str, bytes: Vec<u8>, delay: Option<std::time::Duration>) -> anyhow::Result<()> {
        let mut task = TaskBuilder::new(bytes).max_attempts(self.max_attempts);
        if let Some(d) = delay {
            task = task.run_after(d);
        }
        let task = task.build();
        match &self.db {
            Db::Pg(p) => {
                let mut conn = p.acquire().await?;
                apalis_postgres::queries::push_tasks(&mut *conn, queue, vec![task]).await?;
            }
            Db::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                apalis_sqlite::queries::push_tasks(&mut *conn, queue, &[task]).await?;
            }
        }
        Ok(())
    }
}
