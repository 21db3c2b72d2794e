//! A 60 s database outage loses no sampled snapshot: the node keeps sampled rows in its
//! bounded buffer and retries, the worker restarts itself, and once the database is back
//! every sampled update is in `location_snapshots` exactly once. The test runs its own
//! Postgres (initdb in a temp dir, free port) and kills it by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetcast::config::Config;
use fleetcast::store::Db;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// A throwaway Postgres cluster owned by this test.
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    as_postgres: bool,
}

fn bindir() -> PathBuf {
    let out = Command::new("pg_config").arg("--bindir").output().expect("pg_config on PATH");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Runs a Postgres binary, as the `postgres` user when we are root (Postgres refuses root).
fn pg_command(as_postgres: bool, bin: &Path) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl PrivatePostgres {
    pub fn init() -> Self {
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(unique("fcpg"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        if as_postgres {
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().expect("chown").success();
            assert!(ok, "chown temp dir");
        }
        let out = pg_command(as_postgres, &bindir().join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut pg = PrivatePostgres { port, dir, child: None, as_postgres };
        pg.start();
        pg
    }

    pub fn start(&mut self) {
        let child = pg_command(self.as_postgres, &bindir().join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"])
            // As on our machines: no autovacuum, so nothing is analyzed behind a test's back.
            .args(["-c", "autovacuum=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster's PID, from its pid file.
    fn postmaster_pid(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?;
        text.lines().next().map(str::to_string)
    }

    /// Kills the postmaster with SIGKILL (a crash, not a shutdown) and its backends.
    pub fn kill(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            // Orphaned backends exit once the postmaster is gone; make sure of it.
            let _ = Command::new("pkill").args(["-KILL", "-f", &self.dir.to_string_lossy()]).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A node on Redis and on a fresh database `fleetcast` of `pg`, with `extra` settings; the
/// database's URL.
async fn node_on(pg: &PrivatePostgres, prefix: &str, extra: &[&str]) -> (fleetcast::Node, String) {
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.expect("private postgres");
    sqlx::query("CREATE DATABASE fleetcast").execute(&admin).await.expect("create db");
    admin.close().await;
    let db_url = pg.url("fleetcast");
    let mut args = vec![
        "--bind",
        "127.0.0.1:0",
        "--jwt-secret",
        SECRET,
        "--redis-url",
        REDIS,
        "--redis-prefix",
        prefix,
        "--database-url",
        &db_url,
        "--location-min-interval-ms",
        "0",
    ];
    args.extend_from_slice(extra);
    let cfg = Config::from_args(args).expect("config");
    (fleetcast::start(cfg).await.expect("node"), db_url)
}

/// Inserts a trip of the default tenant driven by `driver`; the trip's id.
async fn trip_of(db: &Db, driver: &str) -> String {
    let trip = unique("t");
    let Db::Pg(pool) = db else { unreachable!("a postgres database") };
    sqlx::query(
        "INSERT INTO trips (tenant, id, driver_id, title, total_seats, available_seats) \
         VALUES ('default', $1, $2, 'a trip', 4, 4)",
    )
    .bind(&trip)
    .bind(driver)
    .execute(pool)
    .await
    .expect("insert trip");
    trip
}

async fn count(db: &Db, driver: &str) -> i64 {
    let Db::Pg(p) = db else { unreachable!() };
    sqlx::query_scalar("SELECT COUNT(*) FROM location_snapshots WHERE driver_id = $1")
        .bind(driver)
        .fetch_one(p)
        .await
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_database_outage_loses_no_sampled_update() {
    let mut pg = PrivatePostgres::init();
    let extra = ["--snapshot-interval-ms", "100", "--snapshot-flush-ms", "200", "--db-max-connections", "4"];
    let (node, db_url) = node_on(&pg, &unique("fcout"), &extra).await;
    let db = Db::connect(&db_url, 2).await.expect("db");
    let cancel = CancellationToken::new();
    let worker = {
        let (db, cancel) = (db.clone(), cancel.clone());
        let settings = fleetcast::jobs::consume::ConsumerSettings {
            concurrency: 2,
            poll: Duration::from_millis(200),
            retry_base: Duration::from_millis(500),
            purge_every: Duration::from_secs(60),
            purge_after: Duration::from_secs(600),
            drain: Duration::from_secs(2),
            heartbeat: Duration::from_secs(2),
            retention_days: 0,
            partitions_ahead: 3,
        };
        tokio::spawn(
            async move { fleetcast::jobs::consume::run_snapshots(db, settings, "outage-worker", cancel).await },
        )
    };

    let driver = unique("d");
    let c = Client::connect(&format!("http://{}", node.addr), &token(&driver, "DRIVER")).await;
    // A driver on a trip: its membership is read before the outage and must keep serving
    // through all of it (`--membership-stale-if-error-ms`), well past the cache's TTL.
    let trip_driver = unique("d");
    let trip = trip_of(&db, &trip_driver).await;
    let on_trip = Client::connect(&format!("http://{}", node.addr), &token(&trip_driver, "DRIVER")).await;
    assert_ok(&on_trip.ack("driver:connect", json!({ "tripId": trip })).await);
    let trip_update = |i: u32| json!({ "tripId": trip, "lat": 11.0 + f64::from(i) / 1000.0, "lng": 21.0 });
    assert_ok(&on_trip.ack("driver:location:update", trip_update(0)).await);
    let mut on_trip_accepted = 1;
    let mut accepted = 0;
    let send = |i: u32| json!({ "lat": 10.0 + f64::from(i) / 1000.0, "lng": 20.0 });
    let mut i = 0;
    // Before the outage.
    for _ in 0..10 {
        let ack = c.ack("driver:location:update", send(i)).await;
        if ack["ok"] == json!(true) {
            accepted += 1;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    pg.kill();
    let down = Instant::now();
    // During the outage: Redis is up, so updates are accepted, sampled and buffered.
    while down.elapsed() < Duration::from_secs(10) {
        let ack = c.ack("driver:location:update", send(i)).await;
        if ack["ok"] == json!(true) {
            accepted += 1;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(accepted >= 60, "updates accepted during the outage: {accepted}");
    let buffered = node.app.sampler.buffered();
    assert!(buffered > 0, "the node buffers sampled rows while the database is down");
    // The rest of the outage: the trip's driver streams on (one update every 2 s).
    let mut j = 1;
    while down.elapsed() < Duration::from_secs(60) {
        let ack = on_trip.ack("driver:location:update", trip_update(j)).await;
        assert_eq!(ack["ok"], json!(true), "a driver on its trip {:?} into the outage: {ack}", down.elapsed());
        on_trip_accepted += 1;
        j += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(on_trip_accepted >= 20, "updates on the trip during the outage: {on_trip_accepted}");
    // Status events need only the membership and Redis.
    let status = json!({ "tripId": trip, "status": "STARTED" });
    assert_ok(&on_trip.ack("driver:status", status).await);
    pg.start();
    let back = Instant::now();
    let mut n = 0;
    while back.elapsed() < Duration::from_secs(45) {
        n = count(&db, &driver).await;
        if n >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n_final = count(&db, &driver).await;
    assert_eq!(n_final, accepted, "every sampled update written exactly once (saw {n} then {n_final})");
    let mut on_trip_written = 0;
    while back.elapsed() < Duration::from_secs(60) {
        on_trip_written = count(&db, &trip_driver).await;
        if on_trip_written >= on_trip_accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(on_trip_written, on_trip_accepted, "the trip driver's sampled updates, each once");
    on_trip.close().await;
    c.close().await;
    cancel.cancel();
    let _ = worker.await;
    node.shutdown().await;
    db.close().await;
}

/// A driver that read its trip at `driver:connect` and sends its first update long after —
/// past 4 × the membership cache's TTL and past `--membership-stale-if-error-ms` — just as
/// the database goes down is accepted: the node kept the entry it uses fresh in the
/// background while the database was up, so the update needs no read (a fleet that starts
/// streaming a while after connecting does not queue on the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_read_at_connect_is_kept_fresh_for_a_later_first_update() {
    let mut pg = PrivatePostgres::init();
    let extra = ["--membership-cache-ms", "300", "--membership-stale-if-error-ms", "1000"];
    let (node, db_url) = node_on(&pg, &unique("fcfresh"), &extra).await;
    let db = Db::connect(&db_url, 1).await.expect("db");
    let driver = unique("d");
    let trip = trip_of(&db, &driver).await;
    db.close().await;
    let c = Client::connect(&format!("http://{}", node.addr), &token(&driver, "DRIVER")).await;
    assert_ok(&c.ack("driver:connect", json!({ "tripId": trip })).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.kill();
    let ack = c.ack("driver:location:update", json!({ "tripId": trip, "lat": 11.0, "lng": 21.0 })).await;
    assert_eq!(ack["ok"], json!(true), "the first update, 3 s after connecting, the database down: {ack}");
    c.close().await;
    node.shutdown().await;
}
