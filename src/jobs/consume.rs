//! The queue consumers: an apalis monitor per queue, restarted after a database outage.
//! [`run_snapshots`] takes snapshot-batch jobs and writes each batch with one multi-row
//! insert (`fleetcast-worker` runs it in cluster mode; an embedded node, or one with
//! `--in-process-worker`, runs it in-process); [`run_offer_deadlines`] runs on every node
//! and hands each due deadline to the node's handler.
//!
//! A job completes only after its insert commits, so a crash or a database outage loses
//! nothing: the job is retried. apalis re-fetches failed jobs at once, so a failing batch
//! is rescheduled here with a growing delay (`retry_base · 2^attempt`, capped) before it is
//! reported failed. Done jobs are purged on a schedule so the queue does not grow forever.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use tokio_util::sync::CancellationToken;

use super::{JobError, OFFER_QUEUE, OfferDeadline, SNAPSHOT_QUEUE, SnapshotBatch};
use crate::config::Config;
use crate::store::Db;
use crate::store::partitions::keep_since;
use crate::store::snapshots::write_snapshots;

/// What a consumer needs at run time.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Jobs at once.
    pub concurrency: usize,
    /// Poll interval.
    pub poll: Duration,
    /// First retry delay.
    pub retry_base: Duration,
    /// Purge period.
    pub purge_every: Duration,
    /// Done-job age before purge.
    pub purge_after: Duration,
    /// Shutdown drain bound.
    pub drain: Duration,
    /// Worker heartbeat; two missed beats make its jobs orphans that are re-queued.
    pub heartbeat: Duration,
    /// Days of location history kept (0 = forever); older partitions are dropped.
    pub retention_days: u32,
    /// Daily partitions of `location_snapshots` kept created ahead of today.
    pub partitions_ahead: u32,
}

impl ConsumerSettings {
    /// The node's in-process snapshot worker.
    pub fn snapshots(cfg: &Config) -> Self {
        Self {
            concurrency: cfg.worker_concurrency.max(1),
            poll: Duration::from_millis(cfg.worker_poll_ms.max(10)),
            ..Self::common(cfg)
        }
    }

    /// The node's offer-deadline consumer.
    pub fn offer_deadlines(cfg: &Config) -> Self {
        Self {
            concurrency: cfg.offer_deadline_concurrency.max(1),
            poll: Duration::from_millis(cfg.offer_deadline_poll_ms.max(10)),
            ..Self::common(cfg)
        }
    }

    fn common(cfg: &Config) -> Self {
        Self {
            concurrency: 1,
            poll: Duration::from_secs(1),
            retry_base: Duration::from_millis(cfg.job_retry_base_ms),
            purge_every: Duration::from_secs(cfg.job_purge_every_secs.max(1)),
            purge_after: Duration::from_secs(cfg.job_purge_after_secs),
            drain: Duration::from_millis(cfg.shutdown_drain_ms),
            heartbeat: Duration::from_millis(cfg.job_heartbeat_ms.max(500)),
            retention_days: cfg.snapshot_retention_days,
            partitions_ahead: cfg.snapshot_partitions_ahead,
        }
    }
}

#[derive(Clone)]
struct Ctx {
    db: Db,
    retry_base: Duration,
    retention_days: u32,
}

/// Today, UTC (the day partitions and retention count in).
fn today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

/// Longest delay before a failed batch is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

async fn handle(batch: SnapshotBatch, ctx: Data<Ctx>, id: TaskId, attempt: Attempt) -> Result<(), BoxDynError> {
    let started = Instant::now();
    metrics::histogram!("fleetcast_worker_batch_rows").record(batch.rows.len() as f64);
    match write_snapshots(&ctx.db, &batch.rows, keep_since(today(), ctx.retention_days)).await {
        Ok(n) => {
            metrics::histogram!("fleetcast_worker_insert_seconds").record(started.elapsed());
            metrics::counter!("fleetcast_worker_rows_written_total").increment(n);
            metrics::counter!("fleetcast_worker_jobs_done_total").increment(1);
            Ok(())
        }
        Err(e) => {
            let n = attempt.current().min(16) as u32;
            let delay = ctx.retry_base.saturating_mul(2u32.saturating_pow(n)).min(MAX_RETRY_DELAY);
            metrics::counter!("fleetcast_worker_jobs_failed_total").increment(1);
            if let Err(re) = ctx.db.reschedule_job(&id.to_string(), delay).await {
                tracing::warn!(error = %re, "could not delay the retry; apalis retries at once");
            } else {
                metrics::counter!("fleetcast_worker_jobs_retried_total").increment(1);
            }
            tracing::warn!(error = %e, job = %id, attempt = attempt.current(), retry_in = ?delay, "snapshot batch failed");
            Err(Box::new(e))
        }
    }
}

/// Housekeeping of one queue (owner: its consumer; stops on `cancel`): wakes the queue's
/// listeners when a delayed job or retry is due (see `Db::nudge_due_jobs`), purges done
/// jobs, and for the snapshot queue keeps the depth gauge and the history's partitions
/// (created ahead, analyzed when their day is over, dropped past retention).
async fn housekeeping(db: Db, queue: &'static str, s: ConsumerSettings, cancel: CancellationToken) {
    let mut purge = tokio::time::interval(s.purge_every);
    let mut depth = tokio::time::interval(Duration::from_secs(2));
    let mut nudge = tokio::time::interval(s.poll);
    // Offer deadlines are pushed delayed; snapshot jobs are due at once (only retries wait).
    let delayed_jobs = queue == OFFER_QUEUE;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = nudge.tick() => {
                if let Err(e) = db.nudge_due_jobs(queue, delayed_jobs).await {
                    tracing::debug!(error = %e, queue, "due-job nudge failed");
                }
            }
            _ = purge.tick() => {
                match db.purge_done_jobs(queue, s.purge_after).await {
                    Ok(n) if n > 0 => tracing::info!(jobs = n, queue, "purged done jobs"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, queue, "purge failed"),
                }
                if queue == SNAPSHOT_QUEUE {
                    maintain_history(&db, &s).await;
                }
            }
            _ = depth.tick(), if queue == SNAPSHOT_QUEUE => {
                if let Ok(n) = db.queue_depth(queue).await {
                    metrics::gauge!("fleetcast_worker_queue_depth").set(n as f64);
                }
            }
        }
    }
}

/// One round of the history's maintenance, with its metrics; failures are logged (the
/// next round retries).
pub async fn maintain_history(db: &Db, s: &ConsumerSettings) {
    match db.maintain_snapshots(today(), s.partitions_ahead, s.retention_days).await {
        Ok(m) => {
            if !m.created.is_empty() {
                tracing::info!(partitions = ?m.created, "snapshot partitions created");
            }
            if !m.dropped.is_empty() {
                tracing::info!(partitions = ?m.dropped, "snapshot partitions past retention dropped");
                metrics::counter!("fleetcast_snapshot_partitions_dropped_total").increment(m.dropped.len() as u64);
            }
            if m.rows_deleted > 0 {
                tracing::info!(rows = m.rows_deleted, "snapshot rows past retention deleted");
                metrics::counter!("fleetcast_snapshot_rows_deleted_total").increment(m.rows_deleted);
            }
        }
        Err(e) => tracing::warn!(error = %e, "snapshot history maintenance failed"),
    }
    match db.snapshot_partitions().await {
        Ok(parts) => {
            metrics::gauge!("fleetcast_snapshot_partitions").set(parts.len() as f64);
            for p in &parts {
                let name = p.name.clone();
                metrics::gauge!("fleetcast_snapshot_partition_bytes", "partition" => name.clone()).set(p.bytes as f64);
                if let Some(rows) = p.rows {
                    metrics::gauge!("fleetcast_snapshot_partition_rows", "partition" => name).set(rows as f64);
                }
            }
            if let Some(oldest) = parts.first() {
                let age = (today() - oldest.to).num_days().max(0);
                metrics::gauge!("fleetcast_snapshot_oldest_partition_age_days").set(age as f64);
            }
        }
        Err(e) => tracing::debug!(error = %e, "snapshot partitions not listed"),
    }
}

/// Runs the worker until `cancel` fires; in-flight batches finish within the drain bound
/// or return to the queue (their lock expires and apalis re-enqueues them). A worker that
/// stops on its own (the database went away under it) is restarted after a second, so a
/// database outage never needs an operator.
pub async fn run_snapshots(db: Db, s: ConsumerSettings, name: &str, cancel: CancellationToken) -> Result<(), JobError> {
    loop {
        match super::setup(&db).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "job queue not reachable; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    let house = tokio::spawn(housekeeping(db.clone(), SNAPSHOT_QUEUE, s.clone(), cancel.clone()));
    restarting("snapshot worker", &cancel, |generation| run_once(&db, &s, format!("{name}-{generation}"), &cancel))
        .await;
    let _ = house.await;
    Ok(())
}

/// Runs a consumer until `cancel` fires; one that stops on its own (its storage failed) is
/// restarted after a second, as generation 1, 2, … (each run registers a new worker name).
async fn restarting<F, Fut>(what: &str, cancel: &CancellationToken, mut run: F)
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<(), JobError>>,
{
    let mut generation = 0u32;
    loop {
        let result = run(generation).await;
        if cancel.is_cancelled() {
            break;
        }
        tracing::warn!(result = ?result, consumer = what, "job consumer stopped; restarting in 1 s");
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        generation += 1;
    }
}

/// One monitor run of a queue of job type `$job` handled by `$handler` with data `$ctx`,
/// until `$cancel` fires or the storage fails. The two storages are different types with
/// the same builder API: one recipe.
macro_rules! monitor_queue {
    ($db:expr, $s:expr, $name:expr, $cancel:expr, $job:ty, $queue:expr, $ctx:expr, $handler:expr) => {{
        let (db, s, ctx) = ($db, $s, $ctx);
        let signal = {
            let cancel = $cancel.clone();
            async move {
                cancel.cancelled().await;
                Ok(())
            }
        };
        let name = $name.to_string();
        let concurrency = s.concurrency;
        macro_rules! monitor {
            ($storage:expr) => {{
                let storage = $storage;
                Monitor::new()
                    .register(move |_| {
                        WorkerBuilder::new(name.clone())
                            .backend(storage.clone())
                            .data(ctx.clone())
                            .concurrency(concurrency)
                            .build($handler)
                    })
                    .shutdown_timeout(s.drain)
                    .run_with_signal(signal)
                    .await
            }};
        }
        macro_rules! queue_config {
            ($config:ty) => {
                <$config>::default()
                    .queue($queue)
                    .batch_size(concurrency.max(1) * 2)
                    .heartbeat_interval(s.heartbeat)
                    .missed_heartbeats(2)
            };
        }
        let result = match db {
            Db::Pg(pool) => {
                // One strategy, either source wakes the worker: LISTEN/NOTIFY on inserts (ms
                // pickup) or the interval (retries whose delay has passed, missed notifies).
                // Two nested `poll_with_*` wrappers would need both at once.
                let wake = Strategy::new()
                    .stream(apalis_postgres::Pubsub::new(pool.clone(), $queue.to_string()))
                    .interval(s.poll);
                monitor!(
                    apalis_postgres::PostgresStorage::<$job>::new(pool)
                        .with_config(queue_config!(apalis_postgres::Config))
                        .poll_with_strategy(wake)
                )
            }
            Db::Sqlite(pool) => monitor!(
                apalis_sqlite::SqliteStorage::<$job>::new(pool)
                    .with_config(queue_config!(apalis_sqlite::Config))
                    .poll_with_strategy(Strategy::new().interval(s.poll))
            ),
        };
        result.map_err(|e| JobError::Stopped(e.to_string()))
    }};
}

async fn run_once(db: &Db, s: &ConsumerSettings, name: String, cancel: &CancellationToken) -> Result<(), JobError> {
    let ctx = Ctx { db: db.clone(), retry_base: s.retry_base, retention_days: s.retention_days };
    monitor_queue!(db, s, name, cancel, SnapshotBatch, SNAPSHOT_QUEUE, ctx, handle)
}

/// What a node does with a due offer deadline (the node owns the engine and the app).
pub type OfferHandler = std::sync::Arc<
    dyn Fn(OfferDeadline) -> futures_util::future::BoxFuture<'static, Result<(), crate::error::Error>> + Send + Sync,
>;

#[derive(Clone)]
struct OfferCtx(OfferHandler);

async fn handle_offer(job: OfferDeadline, ctx: Data<OfferCtx>) -> Result<(), BoxDynError> {
    (ctx.0.0)(job).await.map_err(|e| {
        tracing::warn!(error = %e, "offer deadline failed; retried");
        Box::new(e) as BoxDynError
    })
}

/// Runs the offer-deadline consumer of a node until `cancel` fires, restarting it after a
/// database outage like the snapshot worker. Every node runs one; the storage hands each
/// due job to one of them.
pub async fn run_offer_deadlines(
    db: Db,
    s: ConsumerSettings,
    name: &str,
    cancel: CancellationToken,
    handler: OfferHandler,
) {
    let ctx = OfferCtx(handler);
    let house = tokio::spawn(housekeeping(db.clone(), OFFER_QUEUE, s.clone(), cancel.clone()));
    restarting("offer deadlines", &cancel, |generation| {
        let run = format!("{name}-offers-{generation}");
        let (db, s, ctx, cancel) = (&db, &s, ctx.clone(), &cancel);
        async move { monitor_queue!(db, s, run, cancel, OfferDeadline, OFFER_QUEUE, ctx, handle_offer) }
    })
    .await;
    let _ = house.await;
}
