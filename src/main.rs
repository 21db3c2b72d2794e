//! The `fleetcast` node binary: parse config, start logs, serve until SIGTERM or Ctrl-C.

/// jemalloc instead of the system allocator: glibc's malloc took ≈ 15 % of a node's CPU
/// under fan-out load, and with jemalloc a 3-node cluster on two cores carries 10,000
/// updates/s × 3 subscribers at 100 % (glibc: overloaded from about 8,000/s); an idle
/// socket costs ≈ 1 KiB more (size-class rounding). Measured in BENCHMARKS.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = match fleetcast::config::Config::load() {
        Ok(c) => c,
        Err(fleetcast::config::LoadError::Cli(clap_err)) => clap_err.exit(),
        Err(other) => {
            eprintln!("fleetcast: {other}");
            std::process::exit(2);
        }
    };
    fleetcast::telemetry::init_logs(cfg.log_format, &cfg.log);
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        fleetcast::shutdown_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    fleetcast::run(cfg, shutdown).await?;
    Ok(())
}
