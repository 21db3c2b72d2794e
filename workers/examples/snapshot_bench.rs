//! Sustained snapshot write rate of one worker: fills a fresh database's queue with
//! `--rows` snapshot rows in batch jobs of `--batch`, then runs the worker (the same code
//! `fleetcast-worker` runs) until every row is written, and prints rows/s and the batch
//! insert latency percentiles from the worker's own histogram.
//!
//! cargo run --release -p fleetcast-worker --example snapshot_bench -- --rows 300000 --batch 1000

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use clap::Parser;
use fleetcast::jobs::{JobQueue, SnapshotBatch};
use fleetcast::store::Db;
use fleetcast::store::snapshots::SnapshotRow;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Postgres server (a database named fcbench_<random> is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    server: String,
    /// Rows to write.
    #[arg(long, default_value_t = 300_000)]
    rows: usize,
    /// Rows per job (the node's `--snapshot-batch-rows`).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Worker concurrency.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

fn quantile(text: &str, q: f64) -> Option<f64> {
    // Prometheus histogram lines: fleetcast_worker_insert_seconds_bucket{...,le="0.005"} 12
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with("fleetcast_worker_insert_seconds_bucket"))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let metrics = fleetcast::telemetry::metrics("bench");
    let name = format!("fcbench_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", args.server)).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&admin).await?;
    let url = format!("{}/{name}", args.server);
    let db = Db::connect(&url, (args.concurrency as u32 + 4).max(8)).await?;
    db.migrate().await?;
    fleetcast::jobs::setup(&db).await?;

    let queue = JobQueue::new(db.clone(), 25);
    let t0 = Instant::now();
    let base = chrono::Utc::now() - chrono::Duration::days(1);
    for j in 0..args.rows.div_ceil(args.batch) {
        let rows = (0..args.batch)
            .map(|r| {
                let i = j * args.batch + r;
                SnapshotRow {
                    tenant: "default".into(),
                    driver_id: format!("drv-{}", i % 5_000),
                    trip_id: Some(format!("trip-{}", i % 5_000)),
                    lat: 48.0 + (i % 1000) as f64 / 1e4,
                    lng: 2.0 + (i % 777) as f64 / 1e4,
                    speed: Some(12.5),
                    heading: Some(90.0),
                    accuracy: Some(5.0),
                    recorded_at: fleetcast::store::snapshots::snapshot_time(
                        &(base + chrono::Duration::milliseconds(i as i64)).to_rfc3339(),
                    ),
                }
            })
            .collect();
        queue.push(&SnapshotBatch { rows }).await?;
    }
    let total = (args.rows.div_ceil(args.batch) * args.batch) as i64;
    println!("queued {total} rows in {} jobs in {:.1?}", args.rows.div_ceil(args.batch), t0.elapsed());

    let cancel = CancellationToken::new();
    let settings = fleetcast::jobs::consume::ConsumerSettings {
        concurrency: args.concurrency,
        poll: Duration::from_millis(100),
        retry_base: Duration::from_secs(1),
        purge_every: Duration::from_secs(3600),
        purge_after: Duration::from_secs(3600),
        drain: Duration::from_secs(5),
        heartbeat: Duration::from_secs(5),
        retention_days: 0,
        partitions_ahead: 3,
    };
    let started = Instant::now();
    let worker = {
        let (db, cancel) = (db.clone(), cancel.clone());
        tokio::spawn(async move { fleetcast::jobs::consume::run_snapshots(db, settings, "bench", cancel).await })
    };
    let Db::Pg(pool) = &db else { unreachable!() };
    loop {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM location_snapshots").fetch_one(pool).await?;
        if n >= total {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "worker too slow: {n} of {total}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    cancel.cancel();
    let _ = worker.await;
    let text = metrics.render();
    let fmt = |q| quantile(&text, q).map_or("n/a".to_string(), |s| format!("≤ {:.1} ms", s * 1000.0));
    println!(
        "wrote {total} rows in {:.2} s: {:.0} rows/s with concurrency {}, batch {} rows; insert latency p50 {}, p99 {}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        args.concurrency,
        args.batch,
        fmt(0.5),
        fmt(0.99),
    );
    db.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .execute(&admin)
        .await?;
    Ok(())
}
