//! The snapshot worker: an apalis worker that takes snapshot-batch jobs from the database
//! queue and writes each batch with one multi-row insert. `fleetcast-worker` runs it in
//! cluster mode; an embedded node runs it in-process on SQLite.
//!
//! A job completes only after its insert commits, so a crash or a database outage loses
//! nothing: the job is retried. apalis re-fetches failed jobs at once, so a failing batch
//! is rescheduled here with a growing delay (`retry_base · 2^attempt`, capped) before it is
//! reported failed. Done jobs are purged on a schedule so the queue does not grow forever.

use std::time::{Duration, Instant};

use apalis::prelude::*;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::jobs::{OFFER_QUEUE, SNAPSHOT_QUEUE, SnapshotBatch};
use crate::rides::offers::OfferDeadline;
use crate::snapshots::write_batch;
use crate::store::Db;

/// Settings of `fleetcast-worker`.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleetcast-worker", version, about = "Writes sampled location snapshots to the database")]
pub struct WorkerConfig {
    /// Database holding the job queue and `location_snapshots`.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/fleetcast")]
    pub database_url: String,

    /// Jobs processed at once.
    #[arg(long, env = "FLEETCAST_WORKER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// Address of the worker's `/metrics` endpoint.
    #[arg(long, env = "FLEETCAST_WORKER_METRICS_BIND", default_value = "0.0.0.0:9100")]
    pub metrics_bind: std::net::SocketAddr,

    /// Safety-net poll interval of the queue (LISTEN/NOTIFY wakes the worker sooner).
    #[arg(long, env = "FLEETCAST_WORKER_POLL_MS", default_value_t = 1_000)]
    pub poll_ms: u64,

    /// First retry delay of a failed batch; doubles with each attempt up to 5 minutes.
    #[arg(long, env = "FLEETCAST_WORKER_RETRY_BASE_MS", default_value_t = 1_000)]
    pub retry_base_ms: u64,

    /// How often done jobs are purged from the queue.
    #[arg(long, env = "FLEETCAST_WORKER_PURGE_EVERY_SECS", default_value_t = 60)]
    pub purge_every_secs: u64,

    /// Age after which done jobs are purged.
    #[arg(long, env = "FLEETCAST_WORKER_PURGE_AFTER_SECS", default_value_t = 600)]
    pub purge_after_secs: u64,

    /// Worker heartbeat in the queue; jobs held by a worker silent for two heartbeats (a
    /// crashed worker) go back to the queue.
    #[arg(long, env = "FLEETCAST_WORKER_HEARTBEAT_MS", default_value_t = 5_000)]
    pub heartbeat_ms: u64,

    /// Longest wait for in-flight batches at shutdown; unfinished ones return to the queue.
    #[arg(long, env = "FLEETCAST_WORKER_DRAIN_MS", default_value_t = 10_000)]
    pub drain_ms: u64,

    /// Maximum connections in the database pool.
    #[arg(long, env = "FLEETCAST_WORKER_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,

    /// Log format: text or json.
    #[arg(long, env = "FLEETCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::config::LogFormat,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "FLEETCAST_LOG", default_value = "info")]
    pub log: String,
}

/// What the worker needs at run time (the embedded node builds one from its own config).
#[derive(Debug, Clone)]
pub struct WorkerSettings {
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
}

impl From<&WorkerConfig> for WorkerSettings {
    fn from(c: &WorkerConfig) -> Self {
        Self {
            concurrency: c.concurrency.max(1),
            poll: Duration::from_millis(c.poll_ms.max(10)),
            retry_base: Duration::from_millis(c.retry_base_ms),
            purge_every: Duration::from_secs(c.purge_every_secs.max(1)),
            purge_after: Duration::from_secs(c.purge_after_secs),
            drain: Duration::from_millis(c.drain_ms),
            heartbeat: Duration::from_millis(c.heartbeat_ms.max(500)),
        }
    }
}

#[derive(Clone)]
struct Ctx {
    db: Db,
    retry_base: Duration,
}

/// Longest delay before a failed batch is tried again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

async fn handle(batch: SnapshotBatch, ctx: Data<Ctx>, id: TaskId, attempt: Attempt) -> Result<(), BoxDynError> {
    let started = Instant::now();
    metrics::histogram!("fleetcast_worker_batch_rows").record(batch.rows.len() as f64);
    match write_batch(&ctx.db, &batch).await {
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
            if let Err(re) = reschedule(&ctx.db, &id.to_string(), delay).await {
                tracing::warn!(error = %re, "could not delay the retry; apalis retries at once");
            } else {
                metrics::counter!("fleetcast_worker_jobs_retried_total").increment(1);
            }
            tracing::warn!(error = %e, job = %id, attempt = attempt.current(), retry_in = ?delay, "snapshot batch failed");
            Err(Box::new(e))
        }
    }
}

/// Moves a job's next run `delay` into the future (apalis alone would refetch it at once).
async fn reschedule(db: &Db, id: &str, delay: Duration) -> Result<(), sqlx::Error> {
    let secs = delay.as_secs_f64();
    match db {
        Db::Pg(p) => {
            sqlx::query("UPDATE apalis.jobs SET run_at = now() + make_interval(secs => $2) WHERE id = $1")
                .bind(id)
                .bind(secs)
                .execute(p)
                .await?;
        }
        Db::Sqlite(p) => {
            sqlx::query("UPDATE Jobs SET run_at = CAST(strftime('%s','now') AS INTEGER) + $2 WHERE id = $1")
                .bind(id)
                .bind(secs.ceil() as i64)
                .execute(p)
                .await?;
        }
    }
    Ok(())
}

/// Jobs of the snapshot queue not yet done (pending, running, or failed with attempts left).
pub async fn queue_depth(db: &Db) -> Result<i64, sqlx::Error> {
    match db {
        Db::Pg(p) => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND (status IN ('Pending','Queued','Running') \
                 OR (status = 'Failed' AND attempts < max_attempts))",
            )
            .bind(SNAPSHOT_QUEUE)
            .fetch_one(p)
            .await
        }
        Db::Sqlite(p) => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM Jobs WHERE job_type = $1 AND (status IN ('Pending','Queued','Running') \
                 OR (status = 'Failed' AND attempts < max_attempts))",
            )
            .bind(SNAPSHOT_QUEUE)
            .fetch_one(p)
            .await
        }
    }
}

/// Deletes done jobs older than `after`; returns how many.
pub async fn purge_done(db: &Db, after: Duration) -> Result<u64, sqlx::Error> {
    let secs = after.as_secs() as i64;
    let r = match db {
        Db::Pg(p) => sqlx::query(
            "DELETE FROM apalis.jobs WHERE job_type = $1 AND status = 'Done' \
                 AND done_at < now() - make_interval(secs => $2::float8)",
        )
        .bind(SNAPSHOT_QUEUE)
        .bind(secs as f64)
        .execute(p)
        .await?
        .rows_affected(),
        Db::Sqlite(p) => sqlx::query(
            "DELETE FROM Jobs WHERE job_type = $1 AND status = 'Done' \
                 AND done_at < CAST(strftime('%s','now') AS INTEGER) - $2",
        )
        .bind(SNAPSHOT_QUEUE)
        .bind(secs)
        .execute(p)
        .await?
        .rows_affected(),
    };
    Ok(r)
}

/// Wakes `queue`'s listeners when a delayed retry (or, with `delayed_jobs`, a job pushed
/// with a delay) has come due. apalis' interval strategy combined with its LISTEN stream
/// was seen to stop polling under load, leaving a due job untouched until the next insert;
/// a NOTIFY like the insert trigger's makes it independent of that.
async fn nudge_due(db: &Db, queue: &str, delayed_jobs: bool) -> Result<(), sqlx::Error> {
    if let Db::Pg(p) = db {
        sqlx::query(
            "SELECT pg_notify('apalis::job::insert', json_build_object('job_type', job_type, 'id', id, \
             'run_at', run_at)::text) FROM apalis.jobs WHERE job_type = $1 \
             AND ((status = 'Failed' AND attempts < max_attempts) OR ($2 AND status = 'Pending')) \
             AND run_at <= now() LIMIT 1",
        )
        .bind(queue)
        .bind(delayed_jobs)
        .execute(p)
        .await?;
    }
    Ok(())
}

/// Purge, retry-nudge and queue-depth loop (owner: the worker; stops on `cancel`).
async fn housekeeping(db: Db, s: WorkerSettings, cancel: CancellationToken) {
    let mut purge = tokio::time::interval(s.purge_every);
    let mut depth = tokio::time::interval(Duration::from_secs(2));
    let mut nudge = tokio::time::interval(s.poll);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = nudge.tick() => {
                if let Err(e) = nudge_due(&db, SNAPSHOT_QUEUE, false).await {
                    tracing::debug!(error = %e, "retry nudge failed");
                }
            }
            _ = purge.tick() => match purge_done(&db, s.purge_after).await {
                Ok(n) if n > 0 => tracing::info!(jobs = n, "purged done snapshot jobs"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            },
            _ = depth.tick() => {
                if let Ok(n) = queue_depth(&db).await {
                    metrics::gauge!("fleetcast_worker_queue_depth").set(n as f64);
                }
            }
        }
    }
}

/// Runs the worker until `cancel` fires; in-flight batches finish within the drain bound
/// or return to the queue (their lock expires and apalis re-enqueues them). A worker that
/// stops on its own (the database went away under it) is restarted after a second, so a
/// database outage never needs an operator.
pub async fn run(db: Db, s: WorkerSettings, name: &str, cancel: CancellationToken) -> anyhow::Result<()> {
    loop {
        match crate::jobs::setup(&db).await {
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
    let house = tokio::spawn(housekeeping(db.clone(), s.clone(), cancel.clone()));
    let mut generation = 0u32;
    loop {
        let result = run_once(&db, &s, &format!("{name}-{generation}"), &cancel).await;
        if cancel.is_cancelled() {
            break;
        }
        tracing::warn!(result = ?result, "snapshot worker stopped; restarting in 1 s");
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        generation += 1;
    }
    let _ = house.await;
    Ok(())
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
        result.map_err(|e| anyhow::anyhow!("worker stopped: {e}"))
    }};
}

async fn run_once(db: &Db, s: &WorkerSettings, name: &str, cancel: &CancellationToken) -> anyhow::Result<()> {
    let ctx = Ctx { db: db.clone(), retry_base: s.retry_base };
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
    s: WorkerSettings,
    name: &str,
    cancel: CancellationToken,
    handler: OfferHandler,
) {
    let ctx = OfferCtx(handler);
    let nudge = tokio::spawn(nudge_due_offers(db.clone(), s.poll, cancel.clone()));
    let mut generation = 0u32;
    loop {
        let run = format!("{name}-offers-{generation}");
        let result = monitor_queue!(&db, &s, run, cancel, OfferDeadline, OFFER_QUEUE, ctx.clone(), handle_offer);
        if cancel.is_cancelled() {
            break;
        }
        tracing::warn!(result = ?result, "offer deadline consumer stopped; restarting in 1 s");
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        generation += 1;
    }
    let _ = nudge.await;
}

/// Nudges the offer queue once per `every` (see [`nudge_due`]); stops on `cancel`.
async fn nudge_due_offers(db: Db, every: Duration, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = nudge_due(&db, OFFER_QUEUE, true).await {
                    tracing::debug!(error = %e, "offer nudge failed");
                }
            }
        }
    }
}
