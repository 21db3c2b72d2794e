//! The `fleetcast` node binary: parse config, start logs, serve until SIGTERM or Ctrl-C;
//! `fleetcast token …` prints a signed token instead.

/// jemalloc instead of the system allocator: glibc's malloc took ≈ 15 % of a node's CPU
/// under fan-out load, and with jemalloc a 3-node cluster on two cores carries 10,000
/// updates/s × 3 subscribers at 100 % (glibc: overloaded from about 8,000/s); an idle
/// socket costs ≈ 1 KiB more (size-class rounding). Measured in BENCHMARKS.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args_os().nth(1).is_some_and(|a| a == "token") {
        return print_token();
    }
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

/// `fleetcast token --sub … --role …`: prints a signed token (README "Tokens").
fn print_token() -> anyhow::Result<()> {
    use clap::Parser;
    #[derive(clap::Parser)]
    #[command(name = "fleetcast token", about = "Prints a token signed with the configured key")]
    struct Cli {
        #[command(flatten)]
        token: fleetcast::mint::TokenCommand,
    }
    let cli = Cli::parse_from(std::env::args_os().skip(1));
    match cli.token.run() {
        Ok(token) => {
            use std::io::Write;
            writeln!(std::io::stdout(), "{token}")?;
            Ok(())
        }
        Err(e) => {
            eprintln!("fleetcast token: {e}");
            std::process::exit(2);
        }
    }
}
