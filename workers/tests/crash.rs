//! `fleetcast-worker` killed with SIGKILL in the middle of a backlog loses nothing and
//! writes nothing twice: after a restart every queued snapshot is in `location_snapshots`
//! exactly once. Runs the real binary against a fresh database on the machine's Postgres.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetcast::jobs::{JobQueue, SnapshotBatch};
use fleetcast::store::Db;
use fleetcast::store::snapshots::SnapshotRow;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn spawn_worker(db_url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fleetcast-worker"))
        .args(["--database-url", db_url, "--concurrency", "2", "--metrics-bind", "127.0.0.1:0"])
        .args(["--heartbeat-ms", "1000", "--poll-ms", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fleetcast-worker")
}

async fn count(db: &Db, driver_prefix: &str) -> i64 {
    let Db::Pg(p) = db else { unreachable!() };
    sqlx::query_scalar("SELECT COUNT(*) FROM location_snapshots WHERE driver_id LIKE $1")
        .bind(format!("{driver_prefix}%"))
        .fetch_one(p)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_backlog_loses_nothing_and_duplicates_nothing() {
    let name = format!("fcw{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let admin = sqlx::PgPool::connect(PG_ADMIN).await.expect("postgres at 127.0.0.1:5432");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&admin).await.expect("create");
    let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
    let db = Db::connect(&url, 4).await.expect("db");
    db.migrate().await.expect("migrate");
    fleetcast::jobs::setup(&db).await.expect("queue schema");

    // 400 jobs of 250 rows: a backlog that takes the worker a few seconds.
    let queue = JobQueue::new(db.clone(), 25);
    let prefix = format!("{name}-d");
    let (jobs, per_job) = (400, 250);
    let base = chrono::Utc::now() - chrono::Duration::hours(1);
    for j in 0..jobs {
        let rows = (0..per_job)
            .map(|r| SnapshotRow {
                tenant: "default".into(),
                driver_id: format!("{prefix}{}", r % 50),
                trip_id: Some(format!("trip-{j}")),
                lat: 1.0,
                lng: 2.0,
                speed: None,
                heading: None,
                accuracy: None,
                // An hour ago onwards: within the worker's retention (older rows are skipped).
                recorded_at: fleetcast::store::snapshots::snapshot_time(
                    &(base + chrono::Duration::milliseconds(j * 1000 + r)).to_rfc3339(),
                ),
            })
            .collect();
        queue.push(&SnapshotBatch { rows }).await.expect("push");
    }
    let total = jobs * per_job;

    let mut worker = spawn_worker(&url);
    let started = Instant::now();
    let mut seen = 0;
    while started.elapsed() < Duration::from_secs(60) {
        seen = count(&db, &prefix).await;
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen > 0 && seen < total, "kill must land mid-backlog (written {seen} of {total})");
    worker.kill().expect("SIGKILL");
    let _ = worker.wait();
    let at_kill = count(&db, &prefix).await;

    let mut worker = spawn_worker(&url);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut written = at_kill;
    while Instant::now() < deadline && written < total {
        tokio::time::sleep(Duration::from_millis(250)).await;
        written = count(&db, &prefix).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db, &prefix).await, total, "every row exactly once (had {at_kill} at the kill)");
    let depth = db.queue_depth(fleetcast::jobs::SNAPSHOT_QUEUE).await.expect("depth");
    assert_eq!(depth, 0, "no job left behind");
    worker.kill().expect("stop");
    let _ = worker.wait();
    db.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&admin)
        .await;
}
