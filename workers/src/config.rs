//! `fleetcast-worker`'s configuration: flags and environment, turned into the snapshot
//! consumer's settings.

use std::time::Duration;

use clap::Parser;
use fleetcast::jobs::consume::ConsumerSettings;

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

    /// Days of location history kept (0 = forever): older daily partitions of
    /// `location_snapshots` are detached and dropped whole, never deleted row by row.
    #[arg(long, env = "FLEETCAST_SNAPSHOT_RETENTION_DAYS", default_value_t = 30)]
    pub snapshot_retention_days: u32,

    /// Daily partitions kept created ahead of today (a new day's rows never wait for one).
    #[arg(long, env = "FLEETCAST_SNAPSHOT_PARTITIONS_AHEAD", default_value_t = 3)]
    pub snapshot_partitions_ahead: u32,

    /// Maximum connections in the database pool.
    #[arg(long, env = "FLEETCAST_WORKER_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,

    /// Log format: text or json.
    #[arg(long, env = "FLEETCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: fleetcast::config::LogFormat,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "FLEETCAST_LOG", default_value = "info")]
    pub log: String,
}

impl From<&WorkerConfig> for ConsumerSettings {
    fn from(c: &WorkerConfig) -> Self {
        Self {
            concurrency: c.concurrency.max(1),
            poll: Duration::from_millis(c.poll_ms.max(10)),
            retry_base: Duration::from_millis(c.retry_base_ms),
            purge_every: Duration::from_secs(c.purge_every_secs.max(1)),
            purge_after: Duration::from_secs(c.purge_after_secs),
            drain: Duration::from_millis(c.drain_ms),
            heartbeat: Duration::from_millis(c.heartbeat_ms.max(500)),
            retention_days: c.snapshot_retention_days,
            partitions_ahead: c.snapshot_partitions_ahead,
        }
    }
}
