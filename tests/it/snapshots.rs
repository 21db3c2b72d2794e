//! Location history (CONTRACT §5): sampled updates become batch jobs that a worker writes
//! to `location_snapshots` exactly once — at most one per driver per snapshot interval,
//! plus the final position when a trip ends; replays write nothing new; a failing batch is
//! retried later. Embedded mode writes the same rows to SQLite with its in-process worker.

use std::time::{Duration, Instant};

use fleetcast::jobs::consume::ConsumerSettings as WorkerSettings;
use fleetcast::jobs::{JobQueue, SnapshotBatch};
use fleetcast::store::Db;
use fleetcast::store::snapshots::SnapshotRow;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::both_modes;
use crate::common::*;

fn settings() -> WorkerSettings {
    WorkerSettings {
        concurrency: 2,
        poll: Duration::from_millis(100),
        retry_base: Duration::from_millis(300),
        purge_every: Duration::from_secs(60),
        purge_after: Duration::from_secs(600),
        drain: Duration::from_secs(2),
        heartbeat: Duration::from_secs(2),
        retention_days: 0,
        partitions_ahead: 3,
    }
}

/// Runs a worker on `db` until the returned token is cancelled (cluster mode; embedded
/// nodes run their own).
pub fn spawn_worker(db: Db) -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let name = unique("test-worker-");
        if let Err(e) = fleetcast::jobs::consume::run_snapshots(db, settings(), &name, c).await {
            panic!("worker failed: {e}");
        }
    });
    cancel
}

pub async fn snapshot_times(db: &Db, tenant: &str, driver: &str) -> Vec<String> {
    match db {
        Db::Pg(p) => sqlx::query_scalar(
            "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') FROM location_snapshots \
             WHERE tenant = $1 AND driver_id = $2 ORDER BY recorded_at",
        )
        .bind(tenant)
        .bind(driver)
        .fetch_all(p)
        .await
        .expect("query"),
        Db::Sqlite(p) => sqlx::query_scalar(
            "SELECT recorded_at FROM location_snapshots WHERE tenant = $1 AND driver_id = $2 ORDER BY recorded_at",
        )
        .bind(tenant)
        .bind(driver)
        .fetch_all(p)
        .await
        .expect("query"),
    }
}

/// Waits until `driver` has `n` snapshots (or the deadline passes) and returns them.
pub async fn wait_for_rows(db: &Db, tenant: &str, driver: &str, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let rows = snapshot_times(db, tenant, driver).await;
        if rows.len() >= n || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A time `ms` after a fixed point of this test run: an hour ago, whole seconds (recent, so
/// within any retention bound, and in the past, as driver timestamps may be).
fn ts(ms: i64) -> String {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| (chrono::Utc::now().timestamp() - 3_600) * 1_000);
    (chrono::DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(base + ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn sampled_updates_are_written_once_per_interval(mode: Mode) {
    let h = Harness::start(
        mode,
        &["--location-min-interval-ms", "0", "--snapshot-interval-ms", "400", "--snapshot-flush-ms", "100"],
    )
    .await;
    let worker = mode.shared().then(|| spawn_worker(h.db.clone()));
    let trip = unique("t");
    let driver = unique("d");
    h.insert_trip("default", &trip, Some(&driver)).await;
    let d = Client::connect(&h.a(), &token(&driver, "DRIVER")).await;
    // 12 updates 50 ms apart span ~600 ms: two sampling windows of 400 ms (more on a busy
    // machine, where the acks take longer: windows are on the clock, not the timestamps).
    let started = std::time::Instant::now();
    for i in 0..12 {
        let ack = d
            .ack(
                "driver:location:update",
                json!({ "tripId": trip, "lat": 1.0 + i as f64 / 100.0, "lng": 2, "timestamp": ts(i * 50) }),
            )
            .await;
        assert_ok(&ack);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let windows = started.elapsed().as_millis() as usize / 400 + 1;
    let rows = wait_for_rows(&h.db, "default", &driver, 2, Duration::from_secs(10)).await;
    assert!((2..=windows.max(2)).contains(&rows.len()), "one snapshot per 400 ms window ({windows} windows): {rows:?}");
    assert!(rows[0].starts_with(&ts(0)[..23]), "first update of the first window: {rows:?}");
    // Trip end stores the final position whatever the interval says, once.
    assert_ok(&d.ack("driver:status", json!({ "tripId": trip, "status": "ENDED" })).await);
    let n = rows.len();
    let rows = wait_for_rows(&h.db, "default", &driver, n + 1, Duration::from_secs(10)).await;
    assert_eq!(rows.len(), n + 1, "final snapshot at trip end: {rows:?}");
    assert!(rows[n].starts_with(&ts(11 * 50)[..23]), "{rows:?}");
    assert_ok(&d.ack("driver:status", json!({ "tripId": trip, "status": "ENDED" })).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        snapshot_times(&h.db, "default", &driver).await.len(),
        n + 1,
        "the same final position is not stored twice"
    );
    d.close().await;
    if let Some(w) = worker {
        w.cancel();
    }
    h.stop().await;
}

fn row(driver: &str, i: i64) -> SnapshotRow {
    SnapshotRow {
        tenant: "default".into(),
        driver_id: driver.into(),
        trip_id: None,
        lat: 1.0,
        lng: 2.0,
        speed: Some(3.0),
        heading: None,
        accuracy: None,
        recorded_at: ts(i * 1000),
    }
}

async fn a_replayed_batch_writes_nothing_new(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let worker = mode.shared().then(|| spawn_worker(h.db.clone()));
    let driver = unique("d");
    let queue = JobQueue::new(h.db.clone(), 5);
    let batch = SnapshotBatch { rows: (0..50).map(|i| row(&driver, i)).collect() };
    queue.push(&batch).await.expect("push");
    assert_eq!(wait_for_rows(&h.db, "default", &driver, 50, Duration::from_secs(10)).await.len(), 50);
    // The same job again (a redelivery after a crash looks exactly like this).
    queue.push(&batch).await.expect("push");
    let mut overlapping = batch.clone();
    overlapping.rows.push(row(&driver, 50));
    queue.push(&overlapping).await.expect("push");
    let rows = wait_for_rows(&h.db, "default", &driver, 51, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rows.len(), 51);
    assert_eq!(snapshot_times(&h.db, "default", &driver).await.len(), 51, "replays inserted duplicates");
    if let Some(w) = worker {
        w.cancel();
    }
    h.stop().await;
}

both_modes!(sampled_updates_are_written_once_per_interval, a_replayed_batch_writes_nothing_new);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_retried_with_a_delay_and_succeeds_later() {
    let h = Harness::start(Mode::Cluster, &[]).await;
    let Db::Pg(pool) = &h.db else { unreachable!() };
    // Make inserts fail: the table is away.
    sqlx::query("ALTER TABLE location_snapshots RENAME TO location_snapshots_away")
        .execute(pool)
        .await
        .expect("rename");
    let worker = spawn_worker(h.db.clone());
    let driver = unique("d");
    JobQueue::new(h.db.clone(), 10)
        .push(&SnapshotBatch { rows: (0..5).map(|i| row(&driver, i)).collect() })
        .await
        .expect("push");
    // Let it fail a couple of times with growing delays (300 ms, 600 ms, …).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (attempts, status): (i32, String) = sqlx::query_as(
        "SELECT attempts, status FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots' ORDER BY run_at DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("job row");
    assert!((1..=4).contains(&attempts), "retried with delays, not in a tight loop: {attempts} attempts");
    assert_ne!(status, "Done");
    sqlx::query("ALTER TABLE location_snapshots_away RENAME TO location_snapshots")
        .execute(pool)
        .await
        .expect("rename");
    let rows = wait_for_rows(&h.db, "default", &driver, 5, Duration::from_secs(15)).await;
    let jobs: Vec<(i32, String, String, Option<String>)> = sqlx::query_as(
        "SELECT attempts, status, run_at::text, last_result::text FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots'",
    )
    .fetch_all(pool)
    .await
    .expect("jobs");
    assert_eq!(rows.len(), 5, "batch written once the table is back; jobs: {jobs:?}");
    worker.cancel();
    h.stop().await;
}

async fn the_track_returns_a_trips_snapshots_in_time_order_to_its_participants(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let worker = mode.shared().then(|| spawn_worker(h.db.clone()));
    let trip = unique("t");
    let driver = unique("d");
    h.insert_trip("default", &trip, Some(&driver)).await;
    h.insert_booking("default", &trip, "p1").await;
    // Written out of order, across two batches.
    let mut rows: Vec<SnapshotRow> =
        (0..6).rev().map(|i| SnapshotRow { trip_id: Some(trip.clone()), ..row(&driver, i) }).collect();
    let second = rows.split_off(3);
    let queue = JobQueue::new(h.db.clone(), 5);
    queue.push(&SnapshotBatch { rows }).await.expect("push");
    queue.push(&SnapshotBatch { rows: second }).await.expect("push");
    wait_for_rows(&h.db, "default", &driver, 6, Duration::from_secs(10)).await;

    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/trips/{trip}/track", h.b());
    let r = http.get(&url).bearer_auth(token(&driver, "DRIVER")).send().await.expect("track");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    let times: Vec<&str> =
        body["snapshots"].as_array().expect("array").iter().map(|p| p["recordedAt"].as_str().expect("time")).collect();
    let expected: Vec<String> = (0..6).map(|i| ts(i * 1000)).collect();
    assert_eq!(times, expected, "time order, every snapshot once");
    assert_eq!(body["snapshots"][0]["driverId"], json!(driver));
    assert_eq!(body["snapshots"][0]["speed"], json!(3.0));
    // A window, with the token in the query string (EventSource-style) and as a cookie.
    let r = http
        .get(format!("{url}?from={}&to={}&token={}", ts(1000), ts(3000), token("p1", "PASSENGER")))
        .send()
        .await
        .expect("track");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["snapshots"].as_array().map(Vec::len), Some(3), "{body}");
    let r = http
        .get(&url)
        .header("cookie", format!("fleetcast_token={}", token("adm", "ADMIN")))
        .send()
        .await
        .expect("track");
    assert_eq!(r.status(), 200);
    // Access rules.
    let status = |t: Option<String>, u: String| {
        let http = http.clone();
        async move {
            let mut req = http.get(u);
            if let Some(t) = t {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.expect("track");
            let code = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (code, body["error"].as_str().unwrap_or("").to_string())
        }
    };
    assert_eq!(status(None, url.clone()).await, (401, "NO_TOKEN".into()));
    assert_eq!(status(Some("garbage".into()), url.clone()).await, (401, "INVALID_TOKEN".into()));
    assert_eq!(status(Some(token("p2", "PASSENGER")), url.clone()).await, (403, "FORBIDDEN".into()));
    assert_eq!(status(Some(token("other-driver", "DRIVER")), url.clone()).await, (403, "FORBIDDEN".into()));
    let other_tenant = sign(json!({"sub": "adm", "role": "ADMIN", "tenant": "elsewhere"}));
    assert_eq!(status(Some(other_tenant), url.clone()).await, (404, "NOT_FOUND".into()));
    let unknown = format!("{}/api/v1/trips/nope/track", h.a());
    assert_eq!(status(Some(token("adm", "ADMIN")), unknown).await, (404, "NOT_FOUND".into()));
    assert_eq!(
        status(Some(token("adm", "ADMIN")), format!("{url}?from=yesterday")).await,
        (400, "INVALID_PAYLOAD".into())
    );
    if let Some(w) = worker {
        w.cancel();
    }
    h.stop().await;
}

both_modes!(the_track_returns_a_trips_snapshots_in_time_order_to_its_participants);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_flushes_buffered_snapshots_to_the_queue() {
    // No worker in this cluster and a flush interval far away: the rows can only reach
    // the queue through the shutdown flush.
    let mut h =
        Harness::start(Mode::Cluster, &["--snapshot-flush-ms", "600000", "--location-min-interval-ms", "0"]).await;
    let driver = unique("d");
    let c = Client::connect(&h.a(), &token(&driver, "DRIVER")).await;
    assert_ok(&c.ack("driver:location:update", json!({ "lat": 1, "lng": 2 })).await);
    c.close().await;
    let node = h.nodes.remove(0);
    assert_eq!(node.app.sampler.buffered(), 1, "the sampled row waits in the buffer");
    assert_eq!(h.db.queue_depth(fleetcast::jobs::SNAPSHOT_QUEUE).await.expect("depth"), 0);
    node.shutdown().await;
    assert_eq!(
        h.db.queue_depth(fleetcast::jobs::SNAPSHOT_QUEUE).await.expect("depth"),
        1,
        "flushed as one job at shutdown"
    );
    // A worker started afterwards writes it.
    let worker = spawn_worker(h.db.clone());
    assert_eq!(wait_for_rows(&h.db, "default", &driver, 1, Duration::from_secs(10)).await.len(), 1);
    worker.cancel();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_jobs_are_purged_from_the_queue() {
    let h = Harness::start(Mode::Cluster, &[]).await;
    let worker = spawn_worker(h.db.clone());
    let driver = unique("d");
    JobQueue::new(h.db.clone(), 5).push(&SnapshotBatch { rows: vec![row(&driver, 1)] }).await.expect("push");
    wait_for_rows(&h.db, "default", &driver, 1, Duration::from_secs(10)).await;
    let Db::Pg(pool) = &h.db else { unreachable!() };
    let done = || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'")
            .fetch_one(pool)
            .await
            .expect("count");
        n
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while done().await == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done().await, 1, "the written job is marked done");
    assert_eq!(
        h.db.purge_done_jobs(fleetcast::jobs::SNAPSHOT_QUEUE, Duration::from_secs(3600)).await.expect("purge"),
        0,
        "too young"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(h.db.purge_done_jobs(fleetcast::jobs::SNAPSHOT_QUEUE, Duration::from_secs(1)).await.expect("purge"), 1);
    assert_eq!(done().await, 0);
    worker.cancel();
    h.stop().await;
}
