//! Test harness: starts fleetcast nodes in this process on port 0 — one embedded node, or a
//! two-node cluster sharing the machine's Redis (unique key prefix per test) and a fresh
//! Postgres database per test — plus a Socket.IO client wrapper over `rust_socketio` and
//! helpers to mint tokens and insert rows. Every wait is bounded.

#![allow(dead_code)]

use std::time::Duration;

use fleetcast::config::Config;
use fleetcast::store::Db;
use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client as SioClient, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

pub const SECRET: &str = "fleetcast-test-secret-0123456789";
pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const REDIS: &str = "redis://127.0.0.1:6379";

/// Which engine the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One node, memory engine, SQLite.
    Embedded,
    /// Two nodes, Redis engine on one Redis (the machine's), Postgres.
    Cluster,
    /// Two nodes, Redis engine on a Redis Cluster (three primaries, three replicas: the
    /// test process's own, started once), Postgres.
    RedisCluster,
}

impl Mode {
    /// Nodes share state through Redis (and Postgres).
    pub fn shared(self) -> bool {
        self != Mode::Embedded
    }
}

/// Runs a scenario `async fn name(mode: Mode)` once per mode as `name::embedded`,
/// `name::cluster` and `name::redis_cluster`.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::common::Mode::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$name($crate::common::Mode::Cluster).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                super::$name($crate::common::Mode::RedisCluster).await
            }
        }
    )*};
}

/// The URL of this test process's Redis Cluster, started on first use by
/// `scripts/redis-cluster.sh` on six free ports (stopped by that script once this process
/// is gone). Tests share it and isolate themselves by key prefix, as on the shared Redis.
pub fn redis_cluster_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fcit-cluster-{}", std::process::id()));
        start_redis_cluster(&dir, 20_000).1
    })
}

/// Starts a Redis Cluster with `scripts/redis-cluster.sh` in `dir` on six free ports (and
/// their bus ports) above `from`, stopped by that script once this process is gone; its
/// base port and seed URL. Each call of this process tries other ports (tests run at once).
pub fn start_redis_cluster(dir: &std::path::Path, from: u16) -> (u16, String) {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for _ in 0..40 {
        let attempt = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let base = from + (std::process::id() as u16 % 300 + attempt * 41) % 300 * 10;
        let free = (0..6).all(|i| {
            std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", base + i + 10_000)).is_ok()
        });
        if !free {
            continue;
        }
        let out = std::process::Command::new(root.join("scripts/redis-cluster.sh"))
            .args(["start", &base.to_string(), &dir.display().to_string()])
            .env("WATCH", std::process::id().to_string())
            .output()
            .expect("scripts/redis-cluster.sh runs");
        assert!(out.status.success(), "redis cluster: {}", String::from_utf8_lossy(&out.stderr));
        return (base, String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    panic!("no six free ports for a redis cluster");
}

/// Nodes under test. In embedded mode `a` and `b` are the same node.
pub struct Harness {
    pub mode: Mode,
    pub nodes: Vec<fleetcast::Node>,
    pub db: Db,
    pub prefix: String,
    pg_db: Option<String>,
    sqlite_path: Option<std::path::PathBuf>,
    db_url: String,
    redis_url: String,
    extra: Vec<String>,
}

pub fn unique(tag: &str) -> String {
    format!("{tag}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

impl Harness {
    /// Starts nodes for `mode` with extra `--flag value` settings.
    pub async fn start(mode: Mode, extra: &[&str]) -> Self {
        let redis = if mode == Mode::RedisCluster { redis_cluster_url() } else { REDIS };
        Self::start_with_redis(mode, extra, redis).await
    }

    /// Like [`Harness::start`], against a given Redis (fault tests run their own).
    pub async fn start_with_redis(mode: Mode, extra: &[&str], redis_url: &str) -> Self {
        let prefix = unique("fcit");
        let (db_url, pg_db, sqlite_path) = match mode {
            Mode::Embedded => {
                let path = std::env::temp_dir().join(format!("{prefix}.db"));
                (format!("sqlite://{}?mode=rwc", path.display()), None, Some(path))
            }
            Mode::Cluster | Mode::RedisCluster => {
                let name = prefix.clone();
                let admin = sqlx::PgPool::connect(PG_ADMIN).await.expect("postgres reachable at 127.0.0.1:5432");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&admin)
                    .await
                    .expect("create db");
                admin.close().await;
                (format!("postgres://postgres@127.0.0.1:5432/{name}"), Some(name), None)
            }
        };
        let mut h = Harness {
            mode,
            nodes: Vec::new(),
            db: Db::connect(&db_url, 2).await.expect("db"),
            prefix,
            pg_db,
            sqlite_path,
            db_url,
            redis_url: redis_url.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let count = if mode.shared() { 2 } else { 1 };
        for _ in 0..count {
            h.add_node().await;
        }
        h.db.migrate().await.expect("migrated");
        h
    }

    /// Starts one more node with the harness settings.
    pub async fn add_node(&mut self) -> usize {
        let url = self.redis_url.clone();
        self.add_node_via(&url).await
    }

    /// Starts one more node that reaches the cluster's Redis at `redis_url` (a fault test's
    /// proxy in front of it).
    pub async fn add_node_via(&mut self, redis_url: &str) -> usize {
        let i = self.nodes.len();
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1:0".into(),
            "--jwt-secret".into(),
            SECRET.into(),
            "--database-url".into(),
            self.db_url.clone(),
            "--node-id".into(),
            format!("{}-n{i}", self.prefix),
            "--shutdown-drain-ms".into(),
            "2000".into(),
        ];
        if self.mode.shared() {
            args.extend(["--redis-url".into(), redis_url.to_string(), "--redis-prefix".into(), self.prefix.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        let cfg = Config::from_args(args).expect("valid test config");
        self.nodes.push(fleetcast::start(cfg).await.expect("node starts"));
        i
    }

    pub fn url(&self, i: usize) -> String {
        let n = &self.nodes[i.min(self.nodes.len() - 1)];
        format!("http://{}", n.addr)
    }

    /// First node.
    pub fn a(&self) -> String {
        self.url(0)
    }

    /// Second node (the first again in embedded mode).
    pub fn b(&self) -> String {
        self.url(1)
    }

    pub async fn insert_trip(&self, tenant: &str, trip: &str, driver: Option<&str>) {
        const SQL: &str = "INSERT INTO trips (tenant, id, driver_id, title, total_seats, available_seats) \
                           VALUES ($1, $2, $3, 'test trip', 10, 10)";
        match &self.db {
            Db::Pg(p) => sqlx::query(SQL).bind(tenant).bind(trip).bind(driver).execute(p).await.map(|_| ()),
            Db::Sqlite(p) => sqlx::query(SQL).bind(tenant).bind(trip).bind(driver).execute(p).await.map(|_| ()),
        }
        .expect("insert trip");
    }

    pub async fn insert_booking(&self, tenant: &str, trip: &str, passenger: &str) {
        const SQL: &str =
            "INSERT INTO bookings (tenant, id, trip_id, passenger_id, status) VALUES ($1, $2, $3, $4, 'CONFIRMED')";
        let id = unique("b");
        match &self.db {
            Db::Pg(p) => {
                sqlx::query(SQL).bind(tenant).bind(&id).bind(trip).bind(passenger).execute(p).await.map(|_| ())
            }
            Db::Sqlite(p) => {
                sqlx::query(SQL).bind(tenant).bind(&id).bind(trip).bind(passenger).execute(p).await.map(|_| ())
            }
        }
        .expect("insert booking");
    }

    /// Runs one statement with `trip` as `$1` on the test database.
    pub async fn exec_on_trip(&self, sql: &'static str, trip: &str) {
        match &self.db {
            Db::Pg(p) => sqlx::query(sql).bind(trip).execute(p).await.map(|_| ()),
            Db::Sqlite(p) => sqlx::query(sql).bind(trip).execute(p).await.map(|_| ()),
        }
        .expect("statement");
    }

    /// Trips of `tenant` in the test database.
    pub async fn count_trips(&self, tenant: &str) -> i64 {
        const SQL: &str = "SELECT COUNT(*) FROM trips WHERE tenant = $1";
        match &self.db {
            Db::Pg(p) => sqlx::query_scalar(SQL).bind(tenant).fetch_one(p).await,
            Db::Sqlite(p) => sqlx::query_scalar(SQL).bind(tenant).fetch_one(p).await,
        }
        .expect("count trips")
    }

    /// A trip driven by `d1`, a driver socket on node A and a subscribed passenger `p1` on
    /// node B.
    pub async fn watched_trip(&self) -> (String, Client, Client) {
        let trip = unique("t");
        self.insert_trip("default", &trip, Some("d1")).await;
        self.insert_booking("default", &trip, "p1").await;
        let driver = Client::connect(&self.a(), &token("d1", "DRIVER")).await;
        let passenger = Client::connect(&self.b(), &token("p1", "PASSENGER")).await;
        assert_ok(&passenger.ack("passenger:subscribe", serde_json::json!({ "tripId": trip })).await);
        (trip, driver, passenger)
    }

    /// Stops every node and removes the test database.
    pub async fn stop(mut self) {
        for n in self.nodes.drain(..) {
            n.shutdown().await;
        }
        self.db.close().await;
        if let Some(name) = &self.pg_db
            && let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                .execute(&admin)
                .await;
            admin.close().await;
        }
        if let Some(p) = &self.sqlite_path {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
        }
    }
}

/// An HS256 token for `sub` with `role` (tenant `default`).
/// A `POST /api/trips` body: a trip of `trip_type` with `seats` from `origin`, leaving in
/// 30 minutes.
pub fn trip_body(trip_type: &str, seats: u32, origin: (f64, f64)) -> Value {
    json!({
        "title": "Airport run", "tripType": trip_type,
        "origin": { "name": "Central Station", "lat": origin.0, "lng": origin.1 },
        "destination": { "name": "Airport", "lat": origin.0 + 0.2, "lng": origin.1 + 0.2 },
        "departureTime": (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339(),
        "totalSeats": seats, "pricePerSeat": 12.5, "currency": "EUR",
    })
}

/// A node's `/metrics` text (the recorder is process-wide in tests: counters add up over
/// every node of the process, so tests compare before and after).
pub async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics")).await.expect("metrics").text().await.expect("text")
}

/// The sum over all label sets of the metric `name` in a `/metrics` text (the test binary's
/// nodes share one recorder).
pub fn metric_sum(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One HTTP call: its status and JSON body (`null` when it has none).
pub async fn call(method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub fn token(sub: &str, role: &str) -> String {
    sign(json!({ "sub": sub, "role": role }))
}

/// Signs `claims` with the test secret, adding `exp` in ten minutes when absent.
pub fn sign(mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = (chrono::Utc::now().timestamp() + 600).into();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// A connected Socket.IO client recording every event it receives.
pub struct Client {
    pub sio: SioClient,
    events: mpsc::UnboundedReceiver<(String, Value)>,
}

/// How to connect.
pub struct Connect<'a> {
    pub url: &'a str,
    pub auth: Option<Value>,
    pub header: Option<String>,
    pub polling: bool,
}

impl Client {
    /// Connects over websocket with `token` in `auth.token`; panics if refused.
    pub async fn connect(url: &str, token: &str) -> Client {
        Self::try_connect(Connect { url, auth: Some(json!({ "token": token })), header: None, polling: false })
            .await
            .unwrap_or_else(|e| panic!("connection refused: {e}"))
    }

    /// Connects; `Err` carries the exact `connect_error` message.
    pub async fn try_connect(c: Connect<'_>) -> Result<Client, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel::<Result<(), String>>();
        let done = std::sync::Arc::new(std::sync::Mutex::new(Some(done_tx)));
        let (d1, d2) = (done.clone(), done.clone());
        let mut b = ClientBuilder::new(c.url.to_string())
            .reconnect(false)
            .transport_type(if c.polling { TransportType::Polling } else { TransportType::Websocket })
            .on(Event::Connect, move |_p, _c| {
                let d = d1.clone();
                async move {
                    if let Some(tx) = d.lock().expect("lock").take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                .boxed()
            })
            .on(Event::Error, move |p, _c| {
                let d = d2.clone();
                async move {
                    let text = match p {
                        Payload::Text(v) => v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","),
                        other => format!("{other:?}"),
                    };
                    let msg = text
                        .split_once("ConnectError frame: ")
                        .map(|(_, rest)| {
                            let rest = rest.trim_matches('"').replace("\\\"", "\"");
                            serde_json::from_str::<Value>(&rest)
                                .ok()
                                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                                .unwrap_or(rest)
                        })
                        .unwrap_or(text);
                    if let Some(tx) = d.lock().expect("lock").take() {
                        let _ = tx.send(Err(msg));
                    }
                }
                .boxed()
            })
            .on_any(move |event, payload, _c| {
                let tx = tx.clone();
                async move {
                    if let (Event::Custom(name), Payload::Text(mut args)) = (event, payload) {
                        let v = if args.is_empty() { Value::Null } else { args.swap_remove(0) };
                        let _ = tx.send((name, v));
                    }
                }
                .boxed()
            });
        if let Some(a) = c.auth {
            b = b.auth(a);
        }
        if let Some(h) = c.header {
            b = b.opening_header("Authorization", h.as_str());
        }
        let sio = tokio::time::timeout(Duration::from_secs(5), b.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("transport error: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(5), done_rx).await {
            Ok(Ok(Ok(()))) => Ok(Client { sio, events: rx }),
            Ok(Ok(Err(msg))) => {
                let _ = sio.disconnect().await;
                Err(msg)
            }
            _ => Err("no connect answer".into()),
        }
    }

    /// Emits `event` with `payload` (`None` = no argument) and returns the ack's first
    /// argument; panics when no ack arrives within 5 s.
    pub async fn ack_raw(&self, event: &str, payload: Option<Value>) -> Value {
        let (tx, rx) = oneshot::channel();
        let tx = std::sync::Arc::new(std::sync::Mutex::new(Some(tx)));
        let data = match payload {
            Some(v) => Payload::Text(vec![v]),
            None => Payload::Text(vec![]),
        };
        self.sio
            .emit_with_ack(event, data, Duration::from_secs(6), move |p, _c| {
                let tx = tx.clone();
                async move {
                    let v = match p {
                        // rust_socketio hands over the ack's argument list as one array.
                        Payload::Text(mut v) if !v.is_empty() => match v.swap_remove(0) {
                            Value::Array(mut args) if !args.is_empty() => args.swap_remove(0),
                            other => other,
                        },
                        other => json!({ "unexpected": format!("{other:?}") }),
                    };
                    if let Some(tx) = tx.lock().expect("lock").take() {
                        let _ = tx.send(v);
                    }
                }
                .boxed()
            })
            .await
            .expect("emit");
        tokio::time::timeout(Duration::from_secs(6), rx)
            .await
            .unwrap_or_else(|_| panic!("no ack for {event} within 6 s"))
            .expect("ack sender dropped")
    }

    /// Emits with a JSON payload and returns the ack.
    pub async fn ack(&self, event: &str, payload: Value) -> Value {
        self.ack_raw(event, Some(payload)).await
    }

    /// Emits without waiting for anything.
    pub async fn emit(&self, event: &str, payload: Value) {
        self.sio.emit(event, Payload::Text(vec![payload])).await.expect("emit");
    }

    /// The next `event` received within `within`, skipping others.
    pub async fn next(&mut self, event: &str, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some((name, v))) if name == event => return Some(v),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next event of any name received within `within`.
    pub async fn next_any(&mut self, within: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(within, self.events.recv()).await.ok().flatten()
    }

    /// Like [`Client::next`] but panics with `what` when nothing arrives.
    pub async fn expect(&mut self, event: &str, what: &str) -> Value {
        self.next(event, Duration::from_secs(5)).await.unwrap_or_else(|| panic!("{what}: no {event} within 5 s"))
    }

    /// Drops everything received so far.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    pub async fn close(self) {
        let _ = self.sio.disconnect().await;
    }
}

/// Asserts an ack is `{ok:false, error: code}`.
#[track_caller]
pub fn assert_err(ack: &Value, code: &str) {
    assert_eq!(ack.get("ok"), Some(&Value::Bool(false)), "expected {code}, got {ack}");
    assert_eq!(ack.get("error").and_then(Value::as_str), Some(code), "expected {code}, got {ack}");
}

/// Asserts an ack is `{ok:true, …}`.
#[track_caller]
pub fn assert_ok(ack: &Value) {
    assert_eq!(ack.get("ok"), Some(&Value::Bool(true)), "expected ok, got {ack}");
}
