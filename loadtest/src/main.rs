//! `fleetcast-loadtest`: a black-box load client for fleetcast gateways.
//!
//! It speaks the real wire protocol (Socket.IO v5 over websocket, contract §2) to running
//! nodes and reports what a client would see. Map of the modules:
//!
//! - [`protocol`]: Engine.IO/Socket.IO framing and one client per connection.
//! - [`token`]: HS256 tokens with the contract's claims.
//! - [`stats`]: histograms, rates, ratios, tallies, resident memory.
//! - [`idle`]: the `idle` scenario (many quiet sockets; memory per socket).
//! - [`latency`]: the `latency` scenario (driver on one node → passengers on another).
//!
//! This file only parses the command line and holds the few helpers both scenarios share
//! (run ids, Ctrl-C, the open-files limit). Every phase of every scenario has a deadline,
//! so the tool always exits by itself.

// A load-test CLI's product is its report on stdout; progress and warnings go to stderr.
#![allow(clippy::print_stdout)]

mod idle;
mod latency;
mod protocol;
mod stats;
mod token;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "fleetcast-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open many idle Socket.IO connections, hold them, and measure connect times and the
    /// server's resident memory per socket.
    Idle(idle::IdleArgs),
    /// Drivers on one node stream locations to passengers subscribed on another; measure
    /// end-to-end delivery latency, ack latency, errors and the delivery ratio.
    Latency(latency::LatencyArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Idle(args) => idle::run(args).await,
        Command::Latency(args) => latency::run(args).await,
    }
}

/// A short id unique to this run (milliseconds since the epoch and the pid, in hex), used in
/// user, trip and driver ids so that runs never collide in Redis or the database.
pub fn run_id() -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{millis:x}{:x}", std::process::id())
}

/// A token cancelled on the first Ctrl-C, so a scenario can end its current phase early and
/// still report and clean up. The listening task lives as long as the process.
pub fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing the current phase early");
            on_signal.cancel();
        }
    });
    token
}

/// Warns when the soft open-files limit cannot hold `sockets` connections (each is one fd).
pub fn warn_if_fd_limit_below(sockets: u64) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l["Max open files".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft
        && soft < sockets.saturating_add(64)
    {
        eprintln!(
            "warning: open-files limit is {soft}, below the {sockets} sockets requested; \
             raise it with `ulimit -n` or connections will fail with io:Other/EMFILE"
        );
    }
}
