//! Starting and stopping a node: builds the engine, the database, the app, both edges and
//! their delivery sinks, the Router and the Socket.IO layer; binds; spawns the node's tasks
//! (HTTP server, heartbeat, snapshot flush, offer-deadline consumer, in-process snapshot
//! worker); and shuts it all down gracefully. The only module that knows every layer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use socketioxide::{ParserConfig, SocketIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::access::Access;
use crate::app::App;
use crate::config::{self, Config, ConfigError};
use crate::engine::{self, Engine, HistoryLimits};
use crate::fanout::{Delivery, Sink};
use crate::jobs::consume::{self, ConsumerSettings};
use crate::jobs::{JobError, JobQueue};
use crate::listener::GuardedListener;
use crate::listener::Peer;
use crate::snapshots::Sampler;
use crate::sse::SseHub;
use crate::store::Db;
use crate::{auth, flows, http, socket, sse, telemetry, web};

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database URL or the SQLite file is unusable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite migrations failed (a cluster node retries them instead).
    #[error("migrations: {0}")]
    Migrations(String),
    /// The Redis URL or client settings are unusable.
    #[error("redis: {0}")]
    Redis(String),
    /// The listener did not bind.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running node.
pub struct Node {
    /// Address the listener is bound to.
    pub addr: SocketAddr,
    /// Shared state (tests inspect it).
    pub app: Arc<App>,
    io: SocketIo,
    edge: Arc<socket::Edge>,
    sse: Arc<SseHub>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Node {
    /// Graceful shutdown: report not ready, answer every event already taken (new ones
    /// get `UNAVAILABLE`), close every socket cleanly (their disconnect handlers release
    /// slots and rooms), drain within the configured bound, leave the cluster registry.
    pub async fn shutdown(self) {
        self.app.shutting_down.store(true, Ordering::SeqCst);
        let drain = Duration::from_millis(self.app.cfg.shutdown_drain_ms);
        // Every event already taken is answered before its socket closes (new ones are
        // answered UNAVAILABLE): a drain loses no ack.
        self.edge.drain_events(drain / 2).await;
        // SSE clients reconnect elsewhere with their Last-Event-ID.
        self.app.shutdown.cancel();
        self.sse.close_all();
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

/// The handshake headers a socket keeps: the token (`Authorization`), the client address
/// (`X-Forwarded-For`), CORS (`Origin`, a preflight's `Access-Control-Request-*`) and what
/// engine.io and hyper read to take a polling body or upgrade to a websocket. Cookies,
/// user agents and the rest of a browser's headers (a kilobyte or more) are dropped:
/// socketioxide keeps a socket's request for its whole life (BENCHMARKS.md, "What an idle
/// socket holds": the kept map is ≈ 0.7 KiB of an idle socket's heap).
const SOCKET_HEADERS: [axum::http::HeaderName; 12] = {
    use axum::http::{HeaderName, header};
    [
        header::AUTHORIZATION,
        HeaderName::from_static("x-forwarded-for"),
        header::ORIGIN,
        header::ACCESS_CONTROL_REQUEST_METHOD,
        header::ACCESS_CONTROL_REQUEST_HEADERS,
        header::CONTENT_TYPE,
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ]
};

/// Prepares Socket.IO requests before the layer sees them: rewrites the alias path
/// `/api/socket/…` to `/socket.io/…`, and gives the URI and the kept headers
/// ([`SOCKET_HEADERS`]) their own small allocations. hyper parses them as slices of its
/// ~16 KiB connection read buffer, and socketioxide keeps the request parts for the
/// socket's whole life, which kept that whole buffer alive per idle socket (measured with
/// massif: half of all resident memory).
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
    *req.headers_mut() = socket_headers(req.headers());
    req
}

/// The [`SOCKET_HEADERS`] of `headers`, each value in an allocation of its own.
fn socket_headers(headers: &axum::http::HeaderMap) -> axum::http::HeaderMap {
    let count = headers.keys().filter(|name| SOCKET_HEADERS.contains(name)).count();
    let mut kept = axum::http::HeaderMap::with_capacity(count);
    for (name, value) in headers {
        if SOCKET_HEADERS.contains(name)
            && let Ok(value) = axum::http::HeaderValue::from_bytes(value.as_bytes())
        {
            kept.append(name.clone(), value);
        }
    }
    kept
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
pub async fn start(cfg: Config) -> Result<Node, StartError> {
    let node_id = cfg.node_id();
    let metrics = telemetry::metrics(&node_id);
    let verifier = auth::Verifier::from_config(&cfg)?;
    if cfg.jwt_secret.is_none() && cfg.jwt_algorithm == config::JwtAlgorithm::Hs256 {
        tracing::warn!("no jwt-secret set: using the public development secret (embedded mode only)");
    }
    let tickets = match cfg.ticket_secret() {
        Some(secret) => auth::Tickets::new(secret),
        None => return Err(ConfigError { field: "ticket-secret", reason: "required with RS256/ES256".into() }.into()),
    };

    let db = Db::connect(&cfg.database_url, cfg.db_max_connections).await?;
    let migrated = match migrate_all(&db).await {
        Ok(()) => true,
        // Cluster nodes start while Postgres is down and report not ready; SQLite must work.
        Err(e) if matches!(db, Db::Sqlite(_)) => return Err(StartError::Migrations(e.to_string())),
        Err(e) => {
            tracing::warn!(error = %e, "migrations not applied yet: database unreachable; retrying");
            false
        }
    };
    let sampler = Arc::new(Sampler::new(
        JobQueue::new(db.clone(), cfg.snapshot_max_attempts),
        cfg.snapshot_batch_rows,
        cfg.snapshot_buffer_rows,
        Duration::from_millis(cfg.snapshot_flush_ms),
    ));

    // The engine hands frames to the delivery, whose sinks (the edges) are registered
    // below, before the listener binds: no frame can arrive for a socket before.
    let delivery = Arc::new(Delivery::default());
    let areas = Arc::new(crate::fanout::areas::AreaHub::default());
    let history = HistoryLimits { max_events: cfg.history_max_events, window_ms: cfg.history_window_ms };
    let engine = match &cfg.redis_url {
        None => Engine::Memory(Box::new(engine::memory::MemoryEngine::new(delivery.callback(), history))),
        Some(url) => {
            let settings = engine::redis::RedisSettings {
                url: url.clone(),
                prefix: cfg.redis_prefix.clone(),
                timeout: Duration::from_millis(cfg.redis_timeout_ms),
                node_id: node_id.clone(),
                heartbeat: cfg.node_heartbeat(),
                history,
            };
            let e = engine::redis::RedisEngine::connect(settings, delivery.callback())
                .await
                .map_err(|e| StartError::Redis(e.to_string()))?;
            let e = Arc::new(e);
            e.spawn_tasks();
            Engine::Redis(e)
        }
    };
    let app = Arc::new(App {
        cfg: cfg.clone(),
        node_id: node_id.clone(),
        started: Instant::now(),
        engine: Arc::new(engine),
        access: Access::new(
            db.clone(),
            Duration::from_millis(cfg.membership_cache_ms),
            Duration::from_millis(cfg.membership_stale_if_error_ms),
        ),
        pace: Default::default(),
        notices: Default::default(),
        offer_jobs: JobQueue::new(db.clone(), 5),
        db,
        verifier,
        tickets,
        sampler,
        delivery: delivery.clone(),
        areas: areas.clone(),
        metrics,
        shutdown: CancellationToken::new(),
        shutting_down: AtomicBool::new(false),
        migrated: AtomicBool::new(migrated),
    });
    let socket_edge = socket::Edge::new(app.clone());
    let sse_hub = Arc::new(SseHub::default());
    let socket_sink: Arc<dyn Sink> = Arc::new(socket::sink::SocketSink(Arc::downgrade(&socket_edge)));
    let sse_sink: Arc<dyn Sink> = sse_hub.clone();
    let area_sink: Arc<dyn Sink> = areas.clone();
    delivery.register(vec![socket_sink, sse_sink, area_sink]);
    // Register presence before the first connection can claim slots.
    if let Err(e) = app.engine.heartbeat(&stats_json(&app)).await {
        tracing::warn!(error = %e, "first heartbeat failed");
    }
    let (layer, io) = SocketIo::builder()
        .with_state(socket_edge.clone())
        .ws_max_message_size(cfg.ws_max_message_bytes)
        .ws_max_frame_size(cfg.ws_max_message_bytes)
        .max_payload(cfg.ws_max_message_bytes as u64)
        .max_buffer_size(256)
        .ws_read_buffer_size(cfg.ws_read_buffer_bytes)
        // Binary attachments wait in the parser, before any token is checked: bound them
        // like one message (socketioxide's defaults, 10 MB and 10,000 per packet held for a
        // minute, let unauthenticated sockets pin memory; found by faults/fuzz.sh).
        .with_parser(
            ParserConfig::common()
                .max_incoming_binary_buf_size(cfg.ws_max_message_bytes)
                .max_incoming_binaries(16)
                .packet_completion_timeout(Duration::from_secs(5)),
        )
        .build_layer();
    socket::attach(&socket_edge, &io);

    let mut document = http::openapi::http_document();
    document.merge(sse::openapi_document());
    let throttle = http::throttle::Throttle::new(app.clone());
    let router = Router::new()
        .merge(http::routes(Arc::new(document), throttle.clone()))
        .merge(sse::routes(sse_hub.clone()))
        .merge(web::routes(&app))
        .fallback(http::not_found)
        .with_state(app.clone())
        .layer(layer)
        .layer(cors(&cfg))
        .layer(axum::middleware::map_request(socket_alias));

    let listener = TcpListener::bind(cfg.bind).await.map_err(|source| StartError::Bind { addr: cfg.bind, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: cfg.bind, source })?;
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();

    let stop = cancel.clone();
    let stall_ms = cfg.write_stall_timeout_ms;
    tasks.spawn(async move {
        let listener = GuardedListener::new(listener, Duration::from_millis(stall_ms));
        let serve = axum::serve(listener, router.into_make_service_with_connect_info::<Peer>())
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "server failed");
        }
    });
    tasks.spawn(heartbeat_loop(app.clone(), socket_edge.clone(), throttle, cancel.clone()));
    tasks.spawn(expiry_loop(socket_edge.clone(), cancel.clone()));
    tasks.spawn(flows::presence::sweep_loop(app.clone(), cancel.clone()));
    tasks.spawn(flows::presence::notice_loop(app.clone(), cancel.clone()));
    tasks.spawn(flows::areas::tick_loop(app.clone(), cancel.clone()));
    {
        let (app, cancel) = (app.clone(), cancel.clone());
        tasks.spawn(async move { app.access.keep_fresh(cancel).await });
    }
    {
        let (app, cancel) = (app.clone(), cancel.clone());
        let drain = Duration::from_millis(cfg.shutdown_drain_ms);
        tasks.spawn(async move { app.sampler.run(cancel, drain).await });
    }
    {
        // Offer deadlines need the engine, so every node consumes them (one node per job).
        // A deadline job runs at most about a poll interval late; it waits when early.
        let weak = Arc::downgrade(&app);
        let handler: consume::OfferHandler = Arc::new(move |job| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(app) => flows::offers::on_deadline(&app, &job).await,
                    None => Ok(()),
                }
            })
        });
        // Its own two connections in a cluster (one holds the LISTEN): a burst of requests
        // must not starve the consumer, nor the consumer the requests (measured: sharing the
        // request pool turned a 12,000-socket set-up burst into pool time-outs).
        let db = match &app.db {
            Db::Pg(_) => Db::connect(&cfg.database_url, 2).await?,
            sqlite => sqlite.clone(),
        };
        let settings = ConsumerSettings::offer_deadlines(&cfg);
        let (cancel, name) = (cancel.clone(), node_id.clone());
        tasks.spawn(async move { consume::run_offer_deadlines(db, settings, &name, cancel, handler).await });
    }
    if !cfg.is_cluster() || cfg.in_process_worker {
        let settings = ConsumerSettings::snapshots(&cfg);
        let (db, cancel, name) = (app.db.clone(), cancel.clone(), format!("{node_id}-worker"));
        tasks.spawn(async move {
            if let Err(e) = consume::run_snapshots(db, settings, &name, cancel).await {
                tracing::error!(error = %e, "in-process snapshot worker stopped");
            }
        });
    }
    tracing::info!(node = %node_id, %addr, cluster = cfg.is_cluster(), "fleetcast node listening");
    Ok(Node { addr, app, io, edge: socket_edge, sse: sse_hub, cancel, tasks })
}

fn stats_json(app: &App) -> String {
    serde_json::to_string(&flows::stats::node_stats(app)).unwrap_or_default()
}

/// Applies our migrations and the job queue's.
async fn migrate_all(db: &Db) -> Result<(), JobError> {
    db.migrate().await?;
    crate::jobs::setup(db).await
}

/// Node heartbeat (owner: the node; stops on shutdown): presence in the registry (after a
/// silence long enough for the cluster to count its drivers `OFFLINE`, their availability
/// is derived again), memory engine sweeps, eviction of idle keys from the connection and HTTP limiters, and
/// migrations not yet applied because the database was down at start.
async fn heartbeat_loop(
    app: Arc<App>,
    socket_edge: Arc<socket::Edge>,
    throttle: Arc<http::throttle::Throttle>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(app.cfg.node_heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence = Duration::from_millis(flows::presence::limits(&app).node_silence_ms);
    let mut last_beat = Instant::now();
    // Set by a pass of derivations after a silence that did not finish: the next beat runs
    // it again (nothing else would bring those drivers back).
    let rederive_failed = Arc::new(AtomicBool::new(false));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        match app.engine.heartbeat(&stats_json(&app)).await {
            Ok(()) => {
                // Silent long enough for the cluster to count this node's drivers OFFLINE
                // (an outage, a stall): derive them again now that it is back.
                let again = rederive_failed.swap(false, Ordering::SeqCst);
                if last_beat.elapsed() > silence || again {
                    let drivers = socket_edge.local_drivers();
                    tracing::info!(
                        drivers = drivers.len(),
                        again,
                        "heartbeat back after a silence; availability derived again"
                    );
                    let app = app.clone();
                    let failed = rederive_failed.clone();
                    // Owner: the runtime; ends after one pass.
                    tokio::spawn(async move {
                        for who in drivers {
                            if flows::presence::notice_or_fail(&app, &who.tenant, &who.user).await.is_err() {
                                failed.store(true, Ordering::SeqCst);
                            }
                        }
                    });
                }
                last_beat = Instant::now();
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
        socket_edge.retain_recent();
        throttle.retain_recent();
        if !app.migrated() && migrate_all(&app.db).await.is_ok() {
            tracing::info!("migrations applied");
            app.migrated.store(true, Ordering::SeqCst);
        }
    }
}

/// Closes sockets whose token expired unrefreshed, once a second (owner: the node; stops on
/// shutdown). A socket is closed at most about a second after `exp` plus the grace.
async fn expiry_loop(socket_edge: Arc<socket::Edge>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let closed = socket_edge.close_expired(chrono::Utc::now().timestamp_millis());
        if closed > 0 {
            tracing::info!(sockets = closed, "sockets closed: token expired without a refresh");
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn a_socket_keeps_the_headers_it_reads_and_no_other() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer t"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("origin", "https://app.example"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("upgrade", "websocket"),
            ("cookie", "session=abc; theme=dark"),
            ("user-agent", "Mozilla/5.0"),
            ("accept-language", "de-DE"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let kept = super::socket_headers(&h);
        assert_eq!(kept.get("authorization").map(|v| v.as_bytes()), Some(&b"Bearer t"[..]));
        let forwarded: Vec<_> = kept.get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded, ["10.0.0.1", "10.0.0.2"]);
        assert!(kept.contains_key("origin") && kept.contains_key("sec-websocket-key") && kept.contains_key("upgrade"));
        for dropped in ["cookie", "user-agent", "accept-language"] {
            assert!(!kept.contains_key(dropped), "{dropped} kept");
        }
        assert_eq!(kept.len(), 6);
    }
}
