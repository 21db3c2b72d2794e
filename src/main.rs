//! The `fleetcast` node binary: parse config, start logs, serve until SIGTERM or Ctrl-C.

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = match fleetcast::config::Config::load() {
        Ok(c) => c,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_err) => clap_err.exit(),
            Err(other) => {
                eprintln!("fleetcast: {other}");
                std::process::exit(2);
            }
        },
    };
    fleetcast::telemetry::init_logs(cfg.log_format, &cfg.log);
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        fleetcast::shutdown_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    fleetcast::run(cfg, shutdown).await
}
