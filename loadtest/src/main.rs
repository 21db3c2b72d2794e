//! `fleetcast-loadtest`: a black-box load client for fleetcast gateways.
//!
//! It speaks the real wire protocol (Socket.IO v5 over websocket or long-polling, contract
//! §2) to running nodes and reports what a client would see. Map of the modules:
//!
//! - [`protocol`]: Engine.IO/Socket.IO framing and one websocket client per connection.
//! - [`polling`]: the same over Engine.IO long-polling (`--polling-share`).
//! - [`token`]: HS256 tokens with the contract's claims.
//! - [`stats`]: histograms (and their wire form), rates, ratios, tallies, resident memory.
//! - [`timeline`]: per-second counts and latencies for charts.
//! - [`progress`]: the live progress line.
//! - [`workers`]: `--workers N`: the tool re-executes itself as N processes and merges.
//! - [`idle`]: the `idle` scenario (many quiet sockets; memory per socket).
//! - [`trips`]: trip runs (drivers → subscribers, end-to-end latency, delivery ratios),
//!   driven by the front-ends in [`scenarios`] (`latency`, `fanout`, `burst`, `generate`)
//!   and [`replay`] (NDJSON and GPX recordings).
//! - [`sse`]: the `sse` scenario (HTTP-published order events to SSE streams and sockets).
//! - [`html`]: the `--report` page.
//!
//! This file only parses the command line and holds the few helpers every scenario shares
//! (run ids, the process role, Ctrl-C, the open-files limit). Every phase of every scenario
//! has a deadline, so the tool always exits by itself.

// A load-test CLI's product is its report on stdout; progress and warnings go to stderr.
#![allow(clippy::print_stdout)]

mod html;
mod idle;
mod polling;
mod progress;
mod protocol;
mod replay;
mod scenarios;
mod sse;
mod stats;
mod timeline;
mod token;
mod trips;
mod workers;

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::workers::{ParentLink, Slot};

#[derive(Debug, Parser)]
#[command(name = "fleetcast-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Internal: run as worker INDEX/COUNT of a multi-process run (set by the parent).
    #[arg(long, global = true, hide = true)]
    worker: Option<Slot>,
    /// Internal: the run id shared by a parent and its workers.
    #[arg(long, global = true, hide = true)]
    run_id: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open many idle Socket.IO connections, hold them, and measure connect times and the
    /// server's resident memory per socket.
    Idle(idle::IdleArgs),
    /// Drivers on one node stream locations to subscribers on another; measure end-to-end
    /// delivery latency, ack latency, errors and the delivery ratio.
    Latency(scenarios::LatencyArgs),
    /// D drivers × P subscribers per trip over several nodes, each trip's subscribers on
    /// nodes other than its driver's; a steady aggregate rate.
    Fanout(scenarios::FanoutArgs),
    /// Drivers send as fast as acks allow: accepted vs RATE_LIMITED and retryAfterMs.
    Burst(scenarios::BurstArgs),
    /// Replay a recorded location stream (NDJSON or GPX), time-scaled.
    Replay(replay::ReplayArgs),
    /// Synthetic drivers moving along straight routes in a city box.
    Generate(scenarios::GenerateArgs),
    /// One order's events published over HTTP fan out to S SSE streams and K Socket.IO
    /// subscribers on several nodes: latency per transport, delivery ratios, streams held.
    Sse(sse::SseArgs),
}

impl Command {
    fn workers(&self) -> u32 {
        match self {
            Self::Idle(a) => a.workers,
            Self::Latency(a) => a.common.workers,
            Self::Fanout(a) => a.common.workers,
            Self::Burst(a) => a.common.workers,
            Self::Replay(a) => a.common.workers,
            Self::Generate(a) => a.common.workers,
            Self::Sse(_) => 1,
        }
    }
}

/// How this process takes part in the run.
pub enum Procs {
    /// The whole run in this process.
    Single,
    /// Parent of N worker processes: starts them, sets the start, merges their results.
    Parent(u32),
    /// One worker: its share of the run, reporting to the parent over stdout.
    Worker(Slot, tokio::sync::Mutex<ParentLink>),
}

/// What every scenario needs to know about the process it runs in.
pub struct Ctx {
    pub run_id: String,
    pub procs: Procs,
}

impl Ctx {
    /// This process's share (`0/1` unless it is a worker).
    pub fn slot(&self) -> Slot {
        match &self.procs {
            Procs::Worker(slot, _) => *slot,
            Procs::Single | Procs::Parent(_) => Slot { index: 0, count: 1 },
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Multi-threaded even in workers: a single thread measured worse (receive timestamps wait
    // behind thousands of ready tasks), and the CPU it saved was within run-to-run noise.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let procs = match cli.worker {
        Some(slot) => Procs::Worker(slot, tokio::sync::Mutex::new(ParentLink::connect())),
        None if cli.command.workers() > 1 => Procs::Parent(cli.command.workers()),
        None => Procs::Single,
    };
    let ctx = Ctx { run_id: cli.run_id.unwrap_or_else(run_id), procs };
    let result = match cli.command {
        Command::Idle(args) => idle::run(args, ctx).await,
        Command::Latency(args) => scenarios::latency(args, ctx).await,
        Command::Fanout(args) => scenarios::fanout(args, ctx).await,
        Command::Burst(args) => scenarios::burst(args, ctx).await,
        Command::Replay(args) => replay::run(args, ctx).await,
        Command::Generate(args) => scenarios::generate(args, ctx).await,
        Command::Sse(args) => sse::run(args, ctx).await,
    };
    if cli.worker.is_some()
        && let Err(e) = &result
    {
        workers::send_to_parent(&workers::FromWorker::Failed(format!("{e:#}")));
    }
    result
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
