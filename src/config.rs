//! The one `Config` of a fleetcast node: every setting, its environment variable and its
//! default, parsed once at start-up by clap (command line > environment > TOML file >
//! default) and validated before anything binds a port. Nothing else in the crate reads
//! the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// JWT signature algorithm accepted for user tokens. Only the configured one is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `jwt_secret`.
    #[value(name = "HS256")]
    Hs256,
    /// RSA-SHA256 with the PEM public key in `jwt_public_key_file`.
    #[value(name = "RS256")]
    Rs256,
    /// ECDSA P-256 with the PEM public key in `jwt_public_key_file`.
    #[value(name = "ES256")]
    Es256,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Settings of one fleetcast node. Each field documents its flag, environment variable and
/// default; `fleetcast --help` prints the same text.
#[derive(Debug, Clone, Parser)]
#[command(name = "fleetcast", version, about = "Realtime gateway for mobility apps (Socket.IO + SSE)")]
pub struct Config {
    /// Optional TOML file with any of these settings (keys are the long flag names with `_`
    /// or `-`). Command-line flags and environment variables override it.
    #[arg(long, env = "FLEETCAST_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address the HTTP / Socket.IO / SSE listener binds.
    #[arg(long, env = "FLEETCAST_BIND", default_value = "0.0.0.0:3000")]
    pub bind: SocketAddr,

    /// Node id used in metrics labels, logs and the cluster registry. Default: a random id.
    #[arg(long, env = "FLEETCAST_NODE_ID")]
    pub node_id: Option<String>,

    /// Redis URL. Set = cluster mode (shared engine); unset = embedded in-memory engine.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel this node uses.
    #[arg(long, env = "FLEETCAST_REDIS_PREFIX", default_value = "fc")]
    pub redis_prefix: String,

    /// Timeout of one Redis command; a slower answer becomes `UNAVAILABLE`.
    #[arg(long, env = "FLEETCAST_REDIS_TIMEOUT_MS", default_value_t = 1000)]
    pub redis_timeout_ms: u64,

    /// Database URL: `postgres://…` (cluster) or `sqlite://…` (embedded).
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://fleetcast.db?mode=rwc")]
    pub database_url: String,

    /// Maximum connections in the database pool.
    #[arg(long, env = "FLEETCAST_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// JWT algorithm accepted: HS256, RS256 or ES256.
    #[arg(long, env = "FLEETCAST_JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,

    /// HS256 secret (at least 16 bytes; also checks room tokens). Required in cluster mode;
    /// embedded mode without one uses the public development secret `DEV_JWT_SECRET`.
    #[arg(long, env = "FLEETCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file for RS256/ES256.
    #[arg(long, env = "FLEETCAST_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` claim, checked when set.
    #[arg(long, env = "FLEETCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, checked when set.
    #[arg(long, env = "FLEETCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Connection attempts allowed per client address per second (0 disables the limit).
    #[arg(long, env = "FLEETCAST_CONN_RATE_PER_SEC", default_value_t = 100)]
    pub conn_rate_per_sec: u32,

    /// Burst of connection attempts allowed per client address.
    #[arg(long, env = "FLEETCAST_CONN_RATE_BURST", default_value_t = 1000)]
    pub conn_rate_burst: u32,

    /// A connection whose writes make no progress for this long (the client stopped
    /// reading) is closed; it reconnects and recovers with `since` / `Last-Event-ID`.
    #[arg(long, env = "FLEETCAST_WRITE_STALL_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_stall_timeout_ms: u64,

    /// HTTP write requests (every POST, PUT and PATCH route) one user may make per second
    /// on a node (0 disables the limit); beyond it 429 `RATE_LIMITED` with `Retry-After`.
    #[arg(long, env = "FLEETCAST_HTTP_RATE_PER_USER_PER_SEC", default_value_t = 20)]
    pub http_rate_per_user_per_sec: u32,

    /// Burst of HTTP write requests allowed per user.
    #[arg(long, env = "FLEETCAST_HTTP_RATE_PER_USER_BURST", default_value_t = 100)]
    pub http_rate_per_user_burst: u32,

    /// HTTP write requests one client address may make per second on a node (0 disables).
    #[arg(long, env = "FLEETCAST_HTTP_RATE_PER_ADDRESS_PER_SEC", default_value_t = 100)]
    pub http_rate_per_address_per_sec: u32,

    /// Burst of HTTP write requests allowed per client address.
    #[arg(long, env = "FLEETCAST_HTTP_RATE_PER_ADDRESS_BURST", default_value_t = 400)]
    pub http_rate_per_address_burst: u32,

    /// Callers with a `SERVICE` token skip both HTTP write limits (trusted backends).
    #[arg(long, env = "FLEETCAST_HTTP_RATE_EXEMPT_SERVICE")]
    pub http_rate_exempt_service: bool,

    /// Connections (Socket.IO and SSE together) one user may hold across the cluster.
    #[arg(long, env = "FLEETCAST_MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: u32,

    /// Events per second one socket may send before `RATE_LIMITED` (flood cut-off).
    #[arg(long, env = "FLEETCAST_SOCKET_EVENTS_PER_SEC", default_value_t = 50)]
    pub socket_events_per_sec: u32,

    /// Burst of events one socket may send above its per-second rate.
    #[arg(long, env = "FLEETCAST_SOCKET_EVENTS_BURST", default_value_t = 100)]
    pub socket_events_burst: u32,

    /// Minimum interval between two accepted location updates of one driver, cluster-wide.
    #[arg(long, env = "FLEETCAST_LOCATION_MIN_INTERVAL_MS", default_value_t = 500)]
    pub location_min_interval_ms: u64,

    /// Accepted location updates per driver in any sliding minute, cluster-wide.
    #[arg(long, env = "FLEETCAST_LOCATION_MAX_PER_MINUTE", default_value_t = 90)]
    pub location_max_per_minute: u32,

    /// How long a driver's latest position stays live without a new update.
    #[arg(long, env = "FLEETCAST_LOCATION_TTL_MS", default_value_t = 120_000)]
    pub location_ttl_ms: u64,

    /// Distance from a trip's pickup or destination at which `trip.driver.arriving` is sent
    /// (CONTRACT §7), metres.
    #[arg(long, env = "FLEETCAST_ARRIVAL_RADIUS_M", default_value_t = 150.0)]
    pub arrival_radius_m: f64,

    /// Snapshot sampling interval: at most one stored snapshot per driver per interval.
    #[arg(long, env = "FLEETCAST_SNAPSHOT_INTERVAL_MS", default_value_t = 30_000)]
    pub snapshot_interval_ms: u64,

    /// Most snapshot rows in one batch job.
    #[arg(long, env = "FLEETCAST_SNAPSHOT_BATCH_ROWS", default_value_t = 1_000)]
    pub snapshot_batch_rows: usize,

    /// Longest a sampled row waits before its batch is pushed.
    #[arg(long, env = "FLEETCAST_SNAPSHOT_FLUSH_MS", default_value_t = 1_000)]
    pub snapshot_flush_ms: u64,

    /// Sampled rows a node buffers while the database is unreachable; beyond it the oldest
    /// are dropped and counted.
    #[arg(long, env = "FLEETCAST_SNAPSHOT_BUFFER_ROWS", default_value_t = 200_000)]
    pub snapshot_buffer_rows: usize,

    /// Attempts of one snapshot job before it is left failed in the queue.
    #[arg(long, env = "FLEETCAST_SNAPSHOT_MAX_ATTEMPTS", default_value_t = 25)]
    pub snapshot_max_attempts: usize,

    /// Run the snapshot worker inside this node (always on in embedded mode).
    #[arg(long, env = "FLEETCAST_IN_PROCESS_WORKER")]
    pub in_process_worker: bool,

    /// Days of location history kept by the in-process worker (0 = forever): older daily
    /// partitions are dropped whole (SQLite: old rows deleted in batches).
    #[arg(long, env = "FLEETCAST_SNAPSHOT_RETENTION_DAYS", default_value_t = 30)]
    pub snapshot_retention_days: u32,

    /// Daily partitions of the location history the in-process worker keeps created ahead.
    #[arg(long, env = "FLEETCAST_SNAPSHOT_PARTITIONS_AHEAD", default_value_t = 3)]
    pub snapshot_partitions_ahead: u32,

    /// Snapshot batches the in-process worker writes at once.
    #[arg(long, env = "FLEETCAST_WORKER_CONCURRENCY", default_value_t = 2)]
    pub worker_concurrency: usize,

    /// Safety-net poll interval of the in-process worker (LISTEN/NOTIFY wakes it sooner).
    #[arg(long, env = "FLEETCAST_WORKER_POLL_MS", default_value_t = 200)]
    pub worker_poll_ms: u64,

    /// Offer deadlines this node handles at once (every node consumes the deadline queue).
    #[arg(long, env = "FLEETCAST_OFFER_DEADLINE_CONCURRENCY", default_value_t = 4)]
    pub offer_deadline_concurrency: usize,

    /// Poll interval of the offer-deadline queue: a deadline runs at most about this late.
    #[arg(long, env = "FLEETCAST_OFFER_DEADLINE_POLL_MS", default_value_t = 1_000)]
    pub offer_deadline_poll_ms: u64,

    /// First retry delay of a failed job of this node's queues; doubles with each attempt
    /// up to 5 minutes.
    #[arg(long, env = "FLEETCAST_JOB_RETRY_BASE_MS", default_value_t = 1_000)]
    pub job_retry_base_ms: u64,

    /// How often done jobs of this node's queues are purged.
    #[arg(long, env = "FLEETCAST_JOB_PURGE_EVERY_SECS", default_value_t = 60)]
    pub job_purge_every_secs: u64,

    /// Age after which done jobs are purged.
    #[arg(long, env = "FLEETCAST_JOB_PURGE_AFTER_SECS", default_value_t = 600)]
    pub job_purge_after_secs: u64,

    /// Heartbeat of this node's job consumers; jobs held by a consumer silent for two
    /// heartbeats (a crashed node) go back to the queue.
    #[arg(long, env = "FLEETCAST_JOB_HEARTBEAT_MS", default_value_t = 5_000)]
    pub job_heartbeat_ms: u64,

    /// Recoverable events kept per room for replay after a reconnect.
    #[arg(long, env = "FLEETCAST_HISTORY_MAX_EVENTS", default_value_t = 100)]
    pub history_max_events: usize,

    /// Age beyond which a room's events are no longer replayed.
    #[arg(long, env = "FLEETCAST_HISTORY_WINDOW_MS", default_value_t = 600_000)]
    pub history_window_ms: u64,

    /// Interval of `heartbeat` events on SSE streams.
    #[arg(long, env = "FLEETCAST_SSE_HEARTBEAT_MS", default_value_t = 15_000)]
    pub sse_heartbeat_ms: u64,

    /// How long a connection outlives its token's `exp` before it is closed (a socket that
    /// has not sent `auth:refresh` gets `server:auth:expired`; an SSE stream ends).
    #[arg(long, env = "FLEETCAST_AUTH_EXPIRY_GRACE_MS", default_value_t = 30_000)]
    pub auth_expiry_grace_ms: u64,

    /// Largest publish API body (`/api/v1/emit`, orders, runs), bytes; larger is 413
    /// `INVALID_PAYLOAD` and nothing is published.
    #[arg(long, env = "FLEETCAST_PUBLISH_MAX_BYTES", default_value_t = 65_536)]
    pub publish_max_bytes: usize,

    /// Active trip subscriptions one user may hold across all sockets and nodes.
    #[arg(long, env = "FLEETCAST_MAX_TRIP_SUBSCRIPTIONS", default_value_t = 5)]
    pub max_trip_subscriptions: u32,

    /// Radius around a trip's origin within which drivers without their own `maxDistance`
    /// filter are offered the trip (first round; each re-offer round doubles it).
    #[arg(long, env = "FLEETCAST_OFFER_RADIUS_KM", default_value_t = 10.0)]
    pub offer_radius_km: f64,

    /// Most drivers one offer round goes to (the nearest eligible ones).
    #[arg(long, env = "FLEETCAST_OFFER_MAX_DRIVERS", default_value_t = 10)]
    pub offer_max_drivers: u32,

    /// Time drivers have to accept an offer before it expires with `DEADLINE`.
    #[arg(long, env = "FLEETCAST_OFFER_DEADLINE_MS", default_value_t = 30_000)]
    pub offer_deadline_ms: u64,

    /// Re-offer rounds after the first one expires unanswered (radius doubling each round).
    #[arg(long, env = "FLEETCAST_OFFER_ROUNDS", default_value_t = 2)]
    pub offer_rounds: u32,

    /// HS256 secret that signs booking ticket tokens (QR codes). Default: the JWT secret
    /// (HS256); required with RS256/ES256, where nodes hold no signing key.
    #[arg(long, env = "FLEETCAST_TICKET_SECRET", hide_env_values = true)]
    pub ticket_secret: Option<String>,

    /// How long a trip's driver and status read from the database are cached per node
    /// (bookings are read on each subscribe).
    #[arg(long, env = "FLEETCAST_MEMBERSHIP_CACHE_MS", default_value_t = 5_000)]
    pub membership_cache_ms: u64,

    /// How long a cached trip membership is still served while the database cannot be
    /// read (a database outage): drivers on their trips keep streaming meanwhile.
    #[arg(long, env = "FLEETCAST_MEMBERSHIP_STALE_IF_ERROR_MS", default_value_t = 300_000)]
    pub membership_stale_if_error_ms: u64,

    /// Largest websocket message accepted, in bytes (larger ones close that connection).
    #[arg(long, env = "FLEETCAST_WS_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub ws_max_message_bytes: usize,

    /// Initial read buffer of each websocket, in bytes; it grows for a larger message. The
    /// buffer lives as long as the socket, so it is a large share of an idle socket's memory.
    #[arg(long, env = "FLEETCAST_WS_READ_BUFFER_BYTES", default_value_t = 1_024)]
    pub ws_read_buffer_bytes: usize,

    /// Interval of this node's heartbeat in the cluster registry; entries owned by a node
    /// (subscription and connection slots) expire three intervals after its last beat.
    #[arg(long, env = "FLEETCAST_NODE_HEARTBEAT_MS", default_value_t = 1_500)]
    pub node_heartbeat_ms: u64,

    /// Longest graceful-shutdown drain before remaining connections are dropped.
    #[arg(long, env = "FLEETCAST_SHUTDOWN_DRAIN_MS", default_value_t = 10_000)]
    pub shutdown_drain_ms: u64,

    /// Origins allowed for cross-origin browser clients (comma-separated, `*` = any).
    /// Default: any origin in embedded mode, none in cluster mode.
    #[arg(long, env = "FLEETCAST_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Raster tile URL template for the pages' maps, e.g.
    /// `https://tile.example.org/{z}/{x}/{y}.png`; without one the maps draw an offline
    /// base (a projection with a grid and a scale).
    #[arg(long, env = "FLEETCAST_MAP_TILE_URL")]
    pub map_tile_url: Option<String>,

    /// Serve the pages' files from this folder (the repository's `web/`) instead of the
    /// copies built into the binary: for working on the pages without a rebuild.
    #[arg(long, env = "FLEETCAST_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// Take the client address for the connection and HTTP limits from the first
    /// `X-Forwarded-For` entry (only behind a load balancer that sets it).
    #[arg(long, env = "FLEETCAST_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Log format: text or json.
    #[arg(long, env = "FLEETCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "FLEETCAST_LOG", default_value = "info")]
    pub log: String,
}

/// Secret used by an embedded node started without `--jwt-secret`, so that `cargo run`
/// works with no set-up. It is public: never use it for a node others can reach.
pub const DEV_JWT_SECRET: &str = "fleetcast-dev-secret-change-me";

/// A setting that failed validation, named by its field.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// Field (long flag name) that is wrong.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line or environment (clap prints it and exits with its own code).
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("config file: {0}")]
    Toml(#[from] toml::de::Error),
    /// The config file names a setting that does not exist.
    #[error("invalid configuration: {0}: unknown setting in config file")]
    UnknownSetting(String),
    /// A setting is wrong.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

impl Config {
    /// Parses the command line, the environment and the optional TOML file, then validates.
    pub fn load() -> Result<Self, LoadError> {
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let first = Self::try_parse_from(&args)?;
        if let Some(path) = &first.config {
            let text =
                std::fs::read_to_string(path).map_err(|source| LoadError::File { path: path.clone(), source })?;
            let on_cli: Vec<String> = args.iter().filter_map(|a| a.to_str().map(str::to_string)).collect();
            let given =
                |long: &str| on_cli.iter().any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
            args.splice(1..1, file_args(&text, |name| std::env::var_os(name).is_some(), given)?);
        }
        let cfg = Self::try_parse_from(&args)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A config from explicit arguments (tests and embedding), validated.
    pub fn from_args<I, T>(args: I) -> Result<Self, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cfg = Self::try_parse_from(std::iter::once("fleetcast".into()).chain(args.into_iter().map(Into::into)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values clap cannot check alone; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| Err(ConfigError { field, reason: reason.to_string() });
        match self.jwt_algorithm {
            JwtAlgorithm::Hs256 => match &self.jwt_secret {
                None if self.is_cluster() => return bad("jwt-secret", "required for HS256 in cluster mode"),
                None => {}
                Some(s) if s.len() < 16 => return bad("jwt-secret", "must be at least 16 bytes"),
                _ => {}
            },
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                if self.jwt_public_key_file.is_none() {
                    return bad("jwt-public-key-file", "required for RS256/ES256");
                }
            }
        }
        if let Some(url) = &self.map_tile_url
            && (!(url.starts_with("https://") || url.starts_with("http://"))
                || !["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p)))
        {
            return bad("map-tile-url", "must be an http(s) URL with {z}, {x} and {y}");
        }
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("redis-cluster://"))
        {
            return bad("redis-url", "must start with redis:// or redis-cluster:// (TLS is not built in)");
        }
        if self.redis_prefix.contains(['{', '}']) {
            return bad("redis-prefix", "may not contain braces (they would make a Redis Cluster hash tag)");
        }
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
            || self.database_url.starts_with("sqlite:"))
        {
            return bad("database-url", "must be postgres://… or sqlite:…");
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return bad("redis-prefix", "must be non-empty without spaces");
        }
        if self.redis_timeout_ms == 0 || self.redis_timeout_ms > 4_000 {
            return bad("redis-timeout-ms", "must be 1..=4000 so acks answer within 5 s");
        }
        if self.location_max_per_minute == 0 {
            return bad("location-max-per-minute", "must be at least 1");
        }
        if self.location_ttl_ms < 1_000 {
            return bad("location-ttl-ms", "must be at least 1000");
        }
        if !(self.arrival_radius_m.is_finite() && self.arrival_radius_m > 0.0 && self.arrival_radius_m <= 10_000.0) {
            return bad("arrival-radius-m", "must be more than 0 and at most 10000");
        }
        if self.snapshot_interval_ms < 100 {
            return bad("snapshot-interval-ms", "must be at least 100");
        }
        if self.snapshot_batch_rows == 0 || self.snapshot_batch_rows > 10_000 {
            return bad("snapshot-batch-rows", "must be 1..=10000");
        }
        if self.snapshot_flush_ms == 0 {
            return bad("snapshot-flush-ms", "must be at least 1");
        }
        if self.snapshot_max_attempts == 0 {
            return bad("snapshot-max-attempts", "must be at least 1");
        }
        if !(1..=10_000).contains(&self.history_max_events) {
            return bad("history-max-events", "must be 1..=10000");
        }
        if self.history_window_ms < 1_000 {
            return bad("history-window-ms", "must be at least 1000");
        }
        if self.sse_heartbeat_ms < 100 {
            return bad("sse-heartbeat-ms", "must be at least 100");
        }
        if !(self.offer_radius_km.is_finite() && self.offer_radius_km > 0.0 && self.offer_radius_km <= 20_000.0) {
            return bad("offer-radius-km", "must be a number in (0, 20000]");
        }
        if !(1..=1_000).contains(&self.offer_max_drivers) {
            return bad("offer-max-drivers", "must be 1..=1000");
        }
        if self.offer_deadline_ms < 1_000 {
            return bad("offer-deadline-ms", "must be at least 1000");
        }
        if self.offer_rounds > 10 {
            return bad("offer-rounds", "must be 0..=10");
        }
        match &self.ticket_secret {
            Some(s) if s.len() < 16 => return bad("ticket-secret", "must be at least 16 bytes"),
            None if self.jwt_algorithm != JwtAlgorithm::Hs256 => {
                return bad("ticket-secret", "required with RS256/ES256");
            }
            _ => {}
        }
        if self.max_trip_subscriptions == 0 {
            return bad("max-trip-subscriptions", "must be at least 1");
        }
        if self.max_connections_per_user == 0 {
            return bad("max-connections-per-user", "must be at least 1");
        }
        if self.socket_events_per_sec == 0 || self.socket_events_burst == 0 {
            return bad("socket-events-per-sec", "rate and burst must be at least 1");
        }
        if !(100..=600_000).contains(&self.write_stall_timeout_ms) {
            return bad("write-stall-timeout-ms", "must be 100..=600000");
        }
        if self.http_rate_per_user_per_sec > 0 && self.http_rate_per_user_burst == 0 {
            return bad("http-rate-per-user-burst", "must be at least 1 when the limit is on");
        }
        if self.http_rate_per_address_per_sec > 0 && self.http_rate_per_address_burst == 0 {
            return bad("http-rate-per-address-burst", "must be at least 1 when the limit is on");
        }
        if self.conn_rate_per_sec > 0 && self.conn_rate_burst == 0 {
            return bad("conn-rate-burst", "must be at least 1 when the limit is on");
        }
        if !(1_024..=16 * 1024 * 1024).contains(&self.ws_max_message_bytes) {
            return bad("ws-max-message-bytes", "must be 1 KiB..=16 MiB");
        }
        if !(256..=1024 * 1024).contains(&self.ws_read_buffer_bytes) {
            return bad("ws-read-buffer-bytes", "must be 256 B..=1 MiB");
        }
        if self.node_heartbeat_ms < 100 {
            return bad("node-heartbeat-ms", "must be at least 100");
        }
        if self.db_max_connections == 0 {
            return bad("db-max-connections", "must be at least 1");
        }
        Ok(())
    }

    /// True when a Redis URL is set: nodes share state and meet through Redis.
    pub fn is_cluster(&self) -> bool {
        self.redis_url.is_some()
    }

    /// Node id: the configured one or a random one chosen once.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("node-{}", &id[..8])
        })
    }

    /// Allowed CORS origins after applying the mode default. `None` = any origin.
    pub fn allowed_origins(&self) -> Option<Vec<String>> {
        if self.cors_origins.iter().any(|o| o == "*") {
            return None;
        }
        if self.cors_origins.is_empty() && !self.is_cluster() {
            return None;
        }
        Some(self.cors_origins.clone())
    }

    /// The secret that signs ticket tokens, if one is configured or implied.
    pub fn ticket_secret(&self) -> Option<&str> {
        match (&self.ticket_secret, self.jwt_algorithm) {
            (Some(s), _) => Some(s),
            (None, JwtAlgorithm::Hs256) => Some(self.hs256_secret()),
            (None, _) => None,
        }
    }

    /// The HS256 secret in force: the configured one, else (embedded only) the dev secret.
    pub fn hs256_secret(&self) -> &str {
        self.jwt_secret.as_deref().unwrap_or(DEV_JWT_SECRET)
    }

    /// Heartbeat interval as a `Duration`.
    pub fn node_heartbeat(&self) -> Duration {
        Duration::from_millis(self.node_heartbeat_ms)
    }
}

/// Turns a TOML table into `--key=value` arguments, skipping keys given on the command line
/// or whose environment variable is set (both beat the file). Unknown keys fail with their
/// name.
fn file_args(
    text: &str,
    env_is_set: impl Fn(&str) -> bool,
    on_command_line: impl Fn(&str) -> bool,
) -> Result<Vec<std::ffi::OsString>, LoadError> {
    use clap::CommandFactory;
    let table: toml::Table = toml::from_str(text)?;
    let cmd = Config::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .ok_or_else(|| LoadError::UnknownSetting(long.clone()))?;
        if arg.get_env().and_then(|e| e.to_str()).is_some_and(&env_is_set) || on_command_line(&long) {
            continue;
        }
        let values: Vec<String> = match value {
            // Switches take no value: `true` turns them on, `false` leaves them off.
            toml::Value::Boolean(true) if !arg.get_action().takes_values() => {
                out.push(format!("--{long}").into());
                continue;
            }
            toml::Value::Boolean(false) if !arg.get_action().takes_values() => continue,
            toml::Value::String(s) => vec![s],
            toml::Value::Array(items) => vec![
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
            ],
            other => vec![other.to_string()],
        };
        for v in values {
            out.push(format!("--{long}={v}").into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<&'static str> {
        vec!["--jwt-secret", "0123456789abcdef0123"]
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::from_args(base()).expect("valid");
        assert_eq!(c.location_min_interval_ms, 500);
        assert_eq!(c.location_max_per_minute, 90);
        assert_eq!(c.max_trip_subscriptions, 5);
        assert_eq!(c.conn_rate_per_sec, 100);
        assert_eq!(c.conn_rate_burst, 1000);
        assert_eq!(c.location_ttl_ms, 120_000);
        assert_eq!(c.snapshot_interval_ms, 30_000);
        assert_eq!(c.max_connections_per_user, 20);
        assert!(!c.is_cluster());
        assert_eq!(c.allowed_origins(), None);
    }

    #[test]
    fn bad_values_name_their_field() {
        let err = Config::from_args(["--redis-url", "redis://127.0.0.1:6379"]).expect_err("no secret");
        assert!(err.to_string().contains("jwt-secret"), "{err}");
        let err = Config::from_args(["--jwt-secret", "short"]).expect_err("too short");
        assert!(err.to_string().contains("jwt-secret"), "{err}");
        let err = Config::from_args(["--jwt-secret", "0123456789abcdef0123", "--redis-url", "http://x"])
            .expect_err("bad url");
        assert!(err.to_string().contains("redis-url"), "{err}");
        let err = Config::from_args(["--jwt-secret", "0123456789abcdef0123", "--location-ttl-ms", "x"])
            .expect_err("not a number");
        assert!(err.to_string().contains("location-ttl-ms"), "{err}");
    }

    #[test]
    fn file_values_yield_to_environment_and_unknown_keys_fail() {
        let file =
            "location_ttl_ms = 5000\nredis_prefix = \"x\"\nin_process_worker = true\nsnapshot_interval_ms = 900\n";
        let args =
            file_args(file, |e| e == "FLEETCAST_REDIS_PREFIX", |long| long == "snapshot-interval-ms").expect("parses");
        assert_eq!(
            args,
            vec![std::ffi::OsString::from("--in-process-worker"), std::ffi::OsString::from("--location-ttl-ms=5000")]
        );
        let err = file_args("no_such = 1", |_| false, |_| false).expect_err("unknown");
        assert!(err.to_string().contains("no-such"));
    }

    #[test]
    fn cluster_mode_denies_cross_origin_by_default() {
        let mut a = base();
        a.extend(["--redis-url", "redis://127.0.0.1:6379"]);
        let c = Config::from_args(a).expect("valid");
        assert_eq!(c.allowed_origins(), Some(vec![]));
    }
}
