//! fleetcast: a realtime gateway for mobility apps.
//!
//! Module map (one concept each; see `ARCHITECTURE.md` for the why):
//! - [`config`]: the one `Config`, parsed and validated at start-up.
//! - [`telemetry`]: logs and the Prometheus recorder.
//! - [`auth`]: JWT → [`auth::Claims`]; room tokens.
//! - [`domain`]: validated ids, roles, positions, trip access rules.
//! - [`error`]: the one error type, by contract code.
//! - [`store`]: the database (Postgres or SQLite) and migrations.
//! - [`engine`]: shared state and room pub/sub, memory or Redis.
//! - [`fanout`]: the one publish path and local delivery.
//! - [`socket`]: the Socket.IO edge; [`http`]: the HTTP edge.
//!
//! [`start`] builds a node and serves it; [`run`] serves until a shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use metrics_exporter_prometheus::PrometheusHandle;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub mod auth;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod fanout;
pub mod http;
pub mod jobs;
pub mod rides;
pub mod snapshots;
pub mod socket;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod worker;

use config::Config;
use engine::Engine;

/// Everything a handler needs, shared by all connections of a node.
pub struct App {
    /// The configuration in force.
    pub cfg: Config,
    /// This node's id.
    pub node_id: String,
    /// Shared state and room pub/sub.
    pub engine: Arc<Engine>,
    /// The database.
    pub db: store::Db,
    /// Trip access checks.
    pub access: domain::access::Access,
    /// Token verification.
    pub verifier: auth::Verifier,
    /// Connection-attempt limiter per address (`None` = disabled).
    pub conn_limiter: Option<socket::ConnLimiter>,
    /// The clock of every socket's event limiter, made once: making one reads the CPU's
    /// features (CPUID, slow in a VM), which made it a visible share of a connection's cost.
    pub limiter_clock: governor::clock::DefaultClock,
    /// Prometheus handle for `/metrics`.
    pub metrics: PrometheusHandle,
    /// Sampled snapshots on their way to the job queue.
    pub sampler: Arc<snapshots::Sampler>,
    /// Sockets catching up on a room's history before they receive it live.
    pub replays: Arc<fanout::Replays>,
    /// SSE streams of this node.
    pub sse: Arc<sse::SseHub>,
    /// Signs and checks booking ticket tokens.
    pub tickets: auth::Tickets,
    /// The Socket.IO server (set before the listener binds).
    pub io: Arc<std::sync::OnceLock<SocketIo>>,
    /// Queue of offer-round deadlines.
    pub offer_jobs: jobs::JobQueue,
    /// Fired at the start of graceful shutdown (ends SSE streams).
    shutdown: CancellationToken,
    shutting_down: AtomicBool,
    /// Our and apalis' migrations are applied (retried by the heartbeat until they are).
    migrated: AtomicBool,
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
}

/// A running node.
pub struct Node {
    /// Address the listener is bound to.
    pub addr: SocketAddr,
    /// Shared state (tests inspect it).
    pub app: Arc<App>,
    io: SocketIo,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Node {
    /// Graceful shutdown: stop accepting, close every socket cleanly (their disconnect
    /// handlers release slots and rooms), drain within the configured bound, leave the
    /// cluster registry.
    pub async fn shutdown(self) {
        self.app.shutting_down.store(true, Ordering::SeqCst);
        // SSE clients reconnect elsewhere with their Last-Event-ID.
        self.app.shutdown.cancel();
        self.app.sse.close_all();
        let drain = Duration::from_millis(self.app.cfg.shutdown_drain_ms);
        if tokio::time::timeout(drain, self.io.close()).await.is_err() {
            tracing::warn!("socket close exceeded the drain bound");
        }
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(drain, self.tasks.wait()).await.is_err() {
            tracing::warn!("tasks still running after the drain bound; dropping them");
        }
        self.app.engine.shutdown().await;
        self.app.db.close().await;
        tracing::info!(node = %self.app.node_id, "node stopped");
    }
}

/// Prepares Socket.IO requests before the layer sees them: rewrites the alias path
/// `/api/socket/…` to `/socket.io/…`, and gives the URI and headers their own small
/// allocations. hyper parses them as slices of its ~16 KiB connection read buffer, and
/// socketioxide keeps the request parts for the socket's whole life, which kept that whole
/// buffer alive per idle socket (measured with massif: half of all resident memory).
async fn socket_alias(mut req: Request) -> Request {
    let path = req.uri().path();
    let alias = path.strip_prefix("/api/socket/");
    if alias.is_none() && !path.starts_with("/socket.io/") {
        return req;
    }
    let pq = match (alias, req.uri().query()) {
        (Some(rest), Some(q)) => format!("/socket.io/{rest}?{q}"),
        (Some(rest), None) => format!("/socket.io/{rest}"),
        (None, _) => req.uri().to_string(),
    };
    if let Ok(uri) = pq.parse() {
        *req.uri_mut() = uri;
    }
    let owned: axum::http::HeaderMap = req
        .headers()
        .iter()
        .filter_map(|(k, v)| axum::http::HeaderValue::from_bytes(v.as_bytes()).ok().map(|v| (k.clone(), v)))
        .collect();
    *req.headers_mut() = owned;
    req
}

fn cors(cfg: &Config) -> CorsLayer {
    use axum::http::{Method, header};
    let origin = match cfg.allowed_origins() {
        None => AllowOrigin::mirror_request(),
        Some(list) => AllowOrigin::list(list.iter().filter_map(|o| o.parse().ok())),
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::HeaderName::from_static("last-event-id")])
}

/// Builds a node from `cfg`, binds its listener and starts serving.
pub async fn start(cfg: Config) -> anyhow::Result<Node> {
    let node_id = cfg.node_id();
    let metrics = telemetry::metrics(&node_id);
    let verifier = auth::Verifier::from_config(&cfg)?;
    if cfg.jwt_secret.is_none() && cfg.jwt_algorithm == config::JwtAlgorithm::Hs256 {
        tracing::warn!("no jwt-secret set: using the public development secret (embedded mode only)");
    }

    let db = store::Db::connect(&cfg.database_url, cfg.db_max_connections).await.context("database")?;
    let migrated = match migrate_all(&db).await {
        Ok(()) => true,
        // Cluster nodes start while Postgres is down and report not ready; SQLite must work.
        Err(e) if matches!(db, store::Db::Sqlite(_)) => return Err(e.context("migrations")),
        Err(e) => {
            tracing::warn!(error = %e, "migrations not applied yet: database unreachable; retrying");
            false
        }
    };
    let sampler = Arc::new(snapshots::Sampler::new(
        jobs::JobQueue::new(db.clone(), cfg.snapshot_max_attempts),
        cfg.snapshot_batch_rows,
        cfg.snapshot_buffer_rows,
        Duration::from_millis(cfg.snapshot_flush_ms),
    ));

    // The engine delivers into Socket.IO rooms, and Socket.IO handlers need the app (and so
    // the engine) as state: the cell breaks the cycle. It is set before the listener binds,
    // so no frame can arrive for a socket before it is filled.
    let io_cell: Arc<std::sync::OnceLock<SocketIo>> = Arc::new(std::sync::OnceLock::new());
    let replays = Arc::new(fanout::Replays::default());
    let sse_hub = Arc::new(sse::SseHub::default());
    let deliver = fanout::deliverer(io_cell.clone(), replays.clone(), sse_hub.clone());
    let engine = match &cfg.redis_url {
        None => Engine::Memory(Box::new(engine::memory::MemoryEngine::new(deliver, cfg.history_limits()))),
        Some(url) => {
            let e = Arc::new(
                engine::redis::RedisEngine::connect(
                    engine::redis::RedisSettings {
                        url: url.clone(),
                        prefix: cfg.redis_prefix.clone(),
                        timeout: Duration::from_millis(cfg.redis_timeout_ms),
                        node_id: node_id.clone(),
                        heartbeat: cfg.node_heartbeat(),
                        history: cfg.history_limits(),
                    },
                    deliver,
                )
                .await?,
            );
            e.spawn_resubscriber();
            Engine::Redis(e)
        }
    };
    let engine = Arc::new(engine);
    let access = domain::access::Access::new(db.clone(), Duration::from_millis(cfg.membership_cache_ms));
    let conn_limiter = socket::conn_limiter(cfg.conn_rate_per_sec, cfg.conn_rate_burst);
    let tickets = match cfg.ticket_secret() {
        Some(secret) => auth::Tickets::new(secret),
        None => anyhow::bail!("invalid configuration: ticket-secret: required with RS256/ES256"),
    };
    let offer_jobs = jobs::JobQueue::new(db.clone(), 5);
    let app = Arc::new(App {
        cfg: cfg.clone(),
        node_id: node_id.clone(),
        engine,
        db,
        access,
        verifier,
        conn_limiter,
        limiter_clock: governor::clock::DefaultClock::default(),
        metrics,
        sampler,
        replays,
        sse: sse_hub,
        tickets,
        io: io_cell.clone(),
        offer_jobs,
        shutdown: CancellationToken::new(),
        shutting_down: AtomicBool::new(false),
        migrated: AtomicBool::new(migrated),
    });
    // Register presence before the first connection can claim slots.
    if let Err(e) = app.engine.heartbeat(&stats_json(&app, Instant::now())).await {
        tracing::warn!(error = %e, "first heartbeat failed");
    }
    let (layer, io) = SocketIo::builder()
        .with_state(app.clone())
        .ws_max_message_size(cfg.ws_max_message_bytes)
        .ws_max_frame_size(cfg.ws_max_message_bytes)
        .max_payload(cfg.ws_max_message_bytes as u64)
        .max_buffer_size(256)
        .ws_read_buffer_size(cfg.ws_read_buffer_bytes)
        .build_layer();
    socket::attach(&io);
    let _ = io_cell.set(io.clone());

    let router = Router::new()
        .merge(http::routes())
        .fallback(http::not_found)
        .with_state(app.clone())
        .layer(layer)
        .layer(cors(&cfg))
        .layer(axum::middleware::map_request(socket_alias));

    let listener = TcpListener::bind(cfg.bind).await.with_context(|| format!("bind {}", cfg.bind))?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();

    let stop = cancel.clone();
    tasks.spawn(async move {
        let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "server failed");
        }
    });
    tasks.spawn(heartbeat_loop(app.clone(), cancel.clone()));
    {
        let (app, cancel) = (app.clone(), cancel.clone());
        let drain = Duration::from_millis(cfg.shutdown_drain_ms);
        tasks.spawn(async move { app.sampler.run(cancel, drain).await });
    }
    {
        // Offer deadlines need the engine, so every node consumes them (one node per job).
        // A deadline job runs at most about a poll interval late; it waits when early.
        let settings = worker::WorkerSettings {
            concurrency: 4,
            poll: Duration::from_millis(1_000),
            retry_base: Duration::from_secs(1),
            purge_every: Duration::from_secs(60),
            purge_after: Duration::from_secs(600),
            drain: Duration::from_millis(cfg.shutdown_drain_ms),
            heartbeat: Duration::from_secs(5),
        };
        let weak = Arc::downgrade(&app);
        let handler: worker::OfferHandler = Arc::new(move |job| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(app) => rides::offers::on_deadline(&app, &job).await,
                    None => Ok(()),
                }
            })
        });
        // Its own two connections in a cluster (one holds the LISTEN): a burst of requests
        // must not starve the consumer, nor the consumer the requests (measured: sharing the
        // request pool turned a 12,000-socket set-up burst into pool time-outs).
        let db = match &app.db {
            store::Db::Pg(_) => store::Db::connect(&cfg.database_url, 2).await.context("offer queue pool")?,
            sqlite => sqlite.clone(),
        };
        let (cancel, name) = (cancel.clone(), node_id.clone());
        tasks.spawn(async move { worker::run_offer_deadlines(db, settings, &name, cancel, handler).await });
    }
    if !cfg.is_cluster() || cfg.in_process_worker {
        let settings = worker::WorkerSettings {
            concurrency: 2,
            poll: Duration::from_millis(200),
            retry_base: Duration::from_secs(1),
            purge_every: Duration::from_secs(60),
            purge_after: Duration::from_secs(600),
            drain: Duration::from_millis(cfg.shutdown_drain_ms),
            heartbeat: Duration::from_secs(5),
        };
        let (db, cancel, name) = (app.db.clone(), cancel.clone(), format!("{node_id}-worker"));
        tasks.spawn(async move {
            if let Err(e) = worker::run(db, settings, &name, cancel).await {
                tracing::error!(error = %e, "in-process snapshot worker stopped");
            }
        });
    }
    tracing::info!(node = %node_id, %addr, cluster = cfg.is_cluster(), "fleetcast node listening");
    Ok(Node { addr, app, io, cancel, tasks })
}

/// Most trip ids one node reports per tenant in its stats.
const STATS_MAX_TRIPS: usize = 1_000;

/// This node's stats, per tenant: what `GET /api/v1/admin/stats` shows of the node, and
/// what its heartbeat publishes for the other nodes' answers.
pub fn node_stats(app: &App, uptime_secs: u64) -> serde_json::Value {
    let mut tenants = serde_json::Map::new();
    let sockets = app.io.get().map(socket::tenant_stats).unwrap_or_default();
    let sse = app.sse.counts_by_tenant();
    let names: std::collections::BTreeSet<&String> = sockets.keys().chain(sse.keys()).collect();
    for t in names {
        let (conns, trips) = sockets.get(t).cloned().unwrap_or_default();
        let trips: Vec<String> = trips.into_iter().take(STATS_MAX_TRIPS).collect();
        tenants.insert(
            t.clone(),
            serde_json::json!({ "connections": conns, "sseStreams": sse.get(t).copied().unwrap_or(0), "activeTrips": trips }),
        );
    }
    serde_json::json!({ "node": app.node_id, "uptimeSecs": uptime_secs, "tenants": tenants })
}

fn stats_json(app: &App, started: Instant) -> String {
    node_stats(app, started.elapsed().as_secs()).to_string()
}

/// Applies our migrations and the job queue's.
async fn migrate_all(db: &store::Db) -> anyhow::Result<()> {
    db.migrate().await?;
    jobs::setup(db).await
}

/// Node heartbeat (owner: the node; stops on shutdown): presence in the registry, memory
/// engine sweeps, eviction of idle keys from the connection limiter, and migrations not yet
/// applied because the database was down at start.
async fn heartbeat_loop(app: Arc<App>, cancel: CancellationToken) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(app.cfg.node_heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if let Err(e) = app.engine.heartbeat(&stats_json(&app, started)).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
        if let Some(l) = &app.conn_limiter {
            l.retain_recent();
        }
        if !app.migrated.load(Ordering::SeqCst) && migrate_all(&app.db).await.is_ok() {
            tracing::info!("migrations applied");
            app.migrated.store(true, Ordering::SeqCst);
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C: the start of graceful shutdown for both binaries.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Serves until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let node = start(cfg).await?;
    shutdown.cancelled().await;
    node.shutdown().await;
    Ok(())
}
