//! Location history (CONTRACT §5): sampled updates become batch jobs that a worker writes
//! to `location_snapshots` exactly once — at most one per driver per snapshot interval,
//! plus the final position when a trip ends; replays write nothing new; a failing batch is
//! retried later. Embedded mode writes the same rows to SQLite with its in-process worker.

use std::time::{Duration, Instant};

use fleetcast::jobs::{JobQueue, SnapshotBatch, SnapshotRow};
use fleetcast::store::Db;
use fleetcast::worker::WorkerSettings;
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
    }
}

/// Runs a worker on `db` until the returned token is cancelled (cluster mode; embedded
/// nodes run their own).
pub fn spawn_worker(db: Db) -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        let name = unique("test-worker-");
        if let Err(e) = fleetcast::worker::run(db, settings(), &name, c).await {
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

fn ts(ms: i64) -> String {
    (chrono::DateTime::UNIX_EPOCH + chrono::Duration::milliseconds(1_700_000_000_000 + ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

async fn sampled_updates_are_written_once_per_interval(mode: Mode) {
    let h = Harness::start(
        mode,
        &["--location-min-interval-ms", "0", "--snapshot-interval-ms", "400", "--snapshot-flush-ms", "100"],
    )
    .await;
    let worker = (mode == Mode::Cluster).then(|| spawn_worker(h.db.clone()));
    let trip = unique("t");
    let driver = unique("d");
    h.insert_trip("default", &trip, Some(&driver)).await;
    let d = Client::connect(&h.a(), &token(&driver, "DRIVER")).await;
    // 12 updates 50 ms apart span ~600 ms: two sampling windows of 400 ms.
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
    let rows = wait_for_rows(&h.db, "default", &driver, 2, Duration::from_secs(10)).await;
    assert_eq!(rows.len(), 2, "one snapshot per 400 ms window: {rows:?}");
    assert!(rows[0].starts_with(&ts(0)[..23]), "first update of the first window: {rows:?}");
    // Trip end stores the final position whatever the interval says, once.
    assert_ok(&d.ack("driver:status", json!({ "tripId": trip, "status": "ENDED" })).await);
    let rows = wait_for_rows(&h.db, "default", &driver, 3, Duration::from_secs(10)).await;
    assert_eq!(rows.len(), 3, "final snapshot at trip end: {rows:?}");
    assert!(rows[2].starts_with(&ts(11 * 50)[..23]), "{rows:?}");
    assert_ok(&d.ack("driver:status", json!({ "tripId": trip, "status": "ENDED" })).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(snapshot_times(&h.db, "default", &driver).await.len(), 3, "the same final position is not stored twice");
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
    let worker = (mode == Mode::Cluster).then(|| spawn_worker(h.db.clone()));
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
