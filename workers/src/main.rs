//! `fleetcast-worker`: writes sampled location snapshots from the job queue to Postgres.
//! Thin: parse config, start logs and the metrics endpoint, run the snapshot consumer until
//! SIGTERM or Ctrl-C (in-flight batches finish or return to the queue).

use std::sync::Arc;

use clap::Parser;
use fleetcast::jobs::consume::{ConsumerSettings, run_snapshots};

mod config;

use config::WorkerConfig;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = WorkerConfig::parse();
    fleetcast::telemetry::init_logs(cfg.log_format, &cfg.log);
    let name = format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let metrics = fleetcast::telemetry::metrics(&name);
    let db = fleetcast::store::Db::connect(&cfg.database_url, cfg.db_max_connections).await?;
    db.migrate().await?;

    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(cfg.metrics_bind).await?;
    tracing::info!(addr = %listener.local_addr()?, worker = %name, "fleetcast-worker started");
    let handle = Arc::new(metrics);
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(move || async move { handle.render() }))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let stop = cancel.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    });
    let trigger = cancel.clone();
    tokio::spawn(async move {
        fleetcast::shutdown_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    let result = run_snapshots(db.clone(), ConsumerSettings::from(&cfg), &name, cancel.clone()).await;
    cancel.cancel();
    let _ = server.await;
    db.close().await;
    result.map_err(Into::into)
}
