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
//! - [`ctx`]: what every scenario knows of its process (run id, role), Ctrl-C, fd limit.
//! - [`idle`]: the `idle` scenario (many quiet sockets; memory per socket).
//! - [`trips`]: trip runs (drivers → subscribers, end-to-end latency, delivery ratios),
//!   driven by the front-ends in [`scenarios`] (`latency`, `fanout`, `burst`, `generate`)
//!   and [`replay`] (NDJSON and GPX recordings).
//! - [`sse`]: the `sse` scenario (HTTP-published order events to SSE streams and sockets).
//! - [`html`]: the `--report` page.
//!
//! This file only parses the command line and dispatches to the scenario; what every scenario
//! shares about its process (run id, role, Ctrl-C, the open-files limit) is in [`ctx`].
//! Every phase of every scenario has a deadline, so the tool always exits by itself.

// A load-test CLI's product is its report on stdout; progress and warnings go to stderr.
#![allow(clippy::print_stdout)]

mod areas;
mod ctx;
mod html;
mod idle;
mod ingest;
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

use clap::{Parser, Subcommand};

use crate::ctx::{Ctx, Procs, run_id};
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
    /// Spread websocket connections to a loopback target given as an address (127.x.y.z,
    /// not `localhost`) over this many source addresses (127.0.0.1, 127.0.0.2, …), so that
    /// the kernel's search for a free source port does not grow with tens of thousands of
    /// connections (1: the kernel's choice of 127.0.0.1).
    #[arg(long, global = true, default_value_t = 1)]
    source_addresses: u32,
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
    /// Dispatchers watch live areas of different sizes while drivers stream (run
    /// `generate` beside it): frames per second, gaps between frames, age of positions.
    Areas(areas::AreasArgs),
    /// HTTP batch ingest (`POST /api/v1/locations`) at a paced rate: accepted updates/s.
    Ingest(ingest::IngestArgs),
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
            Self::Sse(_) | Self::Areas(_) | Self::Ingest(_) => 1,
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
    protocol::set_source_addresses(cli.source_addresses);
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
        Command::Areas(args) => areas::run(args, ctx).await,
        Command::Ingest(args) => ingest::run(args, ctx).await,
    };
    if cli.worker.is_some()
        && let Err(e) = &result
    {
        workers::send_to_parent(&workers::FromWorker::Failed(format!("{e:#}")));
    }
    result
}
