//! [`App`]: what the flows and edges of one node share — configuration, the engine, the
//! database, trip access, token checks, the presence notices, the snapshot sampler, the job
//! queue and local delivery. Built once by `node::start`; it holds no transport (each edge
//! keeps its own state and registers its sink with [`App::delivery`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::access::Access;
use crate::auth::{Tickets, Verifier};
use crate::config::Config;
use crate::engine::Engine;
use crate::fanout::Delivery;
use crate::jobs::JobQueue;
use crate::snapshots::Sampler;
use crate::store::Db;

/// Everything a flow or handler needs, shared by all connections of a node.
pub struct App {
    /// The configuration in force.
    pub cfg: Config,
    /// This node's id.
    pub node_id: String,
    /// When this node started (its uptime in the stats).
    pub started: Instant,
    /// Shared state and room pub/sub.
    pub engine: Arc<Engine>,
    /// The database.
    pub db: Db,
    /// Trip access checks.
    pub access: Access,
    /// Drivers' recent speeds (trip ETAs).
    pub pace: crate::pace::Pace,
    /// Drivers whose availability is to be derived again in the next batch.
    pub notices: crate::notices::Notices,
    /// Token verification.
    pub verifier: Verifier,
    /// Signs and checks booking ticket tokens.
    pub tickets: Tickets,
    /// Sampled snapshots on their way to the job queue.
    pub sampler: Arc<Sampler>,
    /// Queue of offer-round deadlines.
    pub offer_jobs: JobQueue,
    /// The transports' local sinks, fed by the engine.
    pub delivery: Arc<Delivery>,
    /// This node's live areas (also a sink of `delivery`).
    pub areas: Arc<crate::fanout::areas::AreaHub>,
    /// Prometheus handle for `/metrics`.
    pub metrics: PrometheusHandle,
    /// Fired at the start of graceful shutdown (ends SSE streams).
    pub(crate) shutdown: CancellationToken,
    pub(crate) shutting_down: AtomicBool,
    /// Our and apalis' migrations are applied (retried by the heartbeat until they are).
    pub(crate) migrated: AtomicBool,
}

impl App {
    /// True once graceful shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// A token cancelled when graceful shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether the database schema is in place.
    pub fn migrated(&self) -> bool {
        self.migrated.load(Ordering::SeqCst)
    }
}
