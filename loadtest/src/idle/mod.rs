//! The `idle` scenario: open M Socket.IO connections at a steady ramp, keep them alive (pong
//! every ping) for a hold period, and report connect times, failures, drops and, given the
//! servers' pids, their resident memory per socket.
//!
//! One tokio task per connection, owning its socket and nothing else; tasks report to the
//! scenario through one bounded channel and stop on one cancellation token. The scenario
//! must not keep per-connection buffers of its own: memory per socket here is what a
//! tungstenite stream costs (see `protocol::ws_config`). With `--workers N` the connections
//! are shared by N processes (see `workers`); the servers' memory is read by the parent once
//! every worker has its connections up.

mod args;
mod conn;

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

pub use self::args::IdleArgs;
use self::conn::{Partial, empty_partial, run_local};
use crate::ctx::{Ctx, Procs};
use crate::progress;
use crate::stats::{self, LatencySummary, Tally};
use crate::workers::{Fleet, FromWorker, ToWorker};

/// The report, printed as a table or as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IdleReport {
    scenario: &'static str,
    run_id: String,
    targets: Vec<String>,
    workers: u32,
    requested: u64,
    connected: u64,
    failed: u64,
    /// Never attempted or still handshaking when the connect phase ended (timeout or Ctrl-C).
    unfinished: u64,
    failures: Tally,
    connect_ms: LatencySummary,
    connect_phase_s: f64,
    achieved_ramp_per_s: f64,
    /// Sockets open when the server's RSS was read.
    open_at_rss: u64,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    rss_per_socket_kib: Option<f64>,
    hold_s: f64,
    dropped: u64,
    drops: Tally,
    interrupted: bool,
}

/// Runs the scenario (as one process, a parent of workers, or one worker).
pub async fn run(args: IdleArgs, ctx: Ctx) -> anyhow::Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(args.ramp.is_finite() && args.ramp > 0.0) {
        bail!("--ramp must be a positive number of connections per second");
    }
    if !args.pids.is_empty() && args.pids.len() != args.targets.len() && !matches!(ctx.procs, Procs::Worker(..)) {
        eprintln!(
            "warning: {} --pid for {} --target: memory per socket is only meaningful when the \
             pids are exactly the nodes behind the targets",
            args.pids.len(),
            args.targets.len()
        );
    }
    let ramp_time = Duration::from_secs_f64(args.connections as f64 / args.ramp);
    match &ctx.procs {
        Procs::Single => {
            crate::ctx::warn_if_fd_limit_below(args.connections);
            let rss_before = total_rss_kib(&args.pids).context("--pid before connecting")?;
            let mut rss_after = None;
            let interrupt = crate::ctx::interrupt_token();
            let partial = run_local(&args, &ctx, progress::Sink::Local, &interrupt, async |_| {
                rss_after = total_rss_kib(&args.pids).context("--pid after connecting")?;
                Ok(true)
            })
            .await?;
            finish(&args, &ctx, partial, rss_before, rss_after)
        }
        Procs::Worker(slot, link) => {
            let slot = *slot;
            let mut link = link.lock().await;
            let stop = link.stop.clone();
            let wait = ramp_time + Duration::from_secs(args.connect_timeout + args.settle + 120);
            let partial = run_local(&args, &ctx, progress::Sink::Parent, &stop, async |open| {
                let ready = json!({ "worker": slot.index, "open": open });
                Ok(link.barrier(ready, wait).await.is_some())
            })
            .await?;
            crate::workers::send_to_parent(&FromWorker::Result(serde_json::to_value(&partial)?));
            Ok(())
        }
        Procs::Parent(n) => {
            let rss_before = total_rss_kib(&args.pids).context("--pid before connecting")?;
            let interrupt = crate::ctx::interrupt_token();
            let mut fleet = Fleet::spawn("idle", *n, &ctx.run_id)?;
            let ready_by = Instant::now() + ramp_time + Duration::from_secs(args.connect_timeout + args.settle + 60);
            let ready = fleet.wait_ready(ready_by, &interrupt).await;
            let open: u64 = ready.iter().filter_map(|v| v["open"].as_u64()).sum();
            eprintln!("idle: {} workers ready with {open} open sockets", ready.len());
            let rss_after = total_rss_kib(&args.pids).context("--pid after connecting")?;
            fleet.broadcast(&ToWorker::Go { start_unix_ms: crate::timeline::unix_ms() }).await;
            let results = fleet.wait_results(Instant::now() + Duration::from_secs(args.hold + 60), &interrupt).await;
            let failures = fleet.failures.clone();
            fleet.finish().await;
            let mut total = empty_partial();
            total.failures.merge(&failures);
            for v in results {
                total.merge(serde_json::from_value(v).context("a worker's idle result")?);
            }
            total.interrupted |= interrupt.is_cancelled();
            finish(&args, &ctx, total, rss_before, rss_after)
        }
    }
}

fn finish(args: &IdleArgs, ctx: &Ctx, p: Partial, before: Option<u64>, after: Option<u64>) -> anyhow::Result<()> {
    let report = IdleReport {
        scenario: "idle",
        run_id: ctx.run_id.clone(),
        targets: args.targets.clone(),
        workers: args.workers.max(1),
        requested: args.connections,
        connected: p.connected,
        failed: p.failed,
        unfinished: p.unfinished,
        failures: p.failures,
        connect_ms: stats::summarize_us(&p.connect_us.0),
        connect_phase_s: stats::round3(p.connect_phase_s),
        achieved_ramp_per_s: stats::round3((p.connected + p.failed) as f64 / p.connect_phase_s.max(0.001)),
        open_at_rss: p.open_at_rss,
        rss_before_kib: before,
        rss_after_kib: after,
        rss_per_socket_kib: before.zip(after).and_then(|(b, a)| stats::rss_per_socket_kib(b, a, p.open_at_rss)),
        hold_s: stats::round3(p.hold_s),
        dropped: p.dropped,
        drops: p.drops,
        interrupted: p.interrupted,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if report.connected == 0 {
        bail!("no connection succeeded");
    }
    Ok(())
}

/// Summed VmRSS of the given processes; `None` when none is given.
fn total_rss_kib(pids: &[u32]) -> anyhow::Result<Option<u64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut total = 0;
    for pid in pids {
        total += stats::read_vm_rss_kib(*pid)?;
    }
    Ok(Some(total))
}

fn print_table(r: &IdleReport) {
    println!("idle run {} against {} ({} worker processes)", r.run_id, r.targets.join(", "), r.workers);
    println!(
        "connections   requested {}  connected {}  failed {}  unfinished {}",
        r.requested, r.connected, r.failed, r.unfinished
    );
    println!("failures      {}", r.failures);
    println!(
        "connect (ms)  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
        r.connect_ms.p50_ms, r.connect_ms.p90_ms, r.connect_ms.p99_ms, r.connect_ms.max_ms
    );
    println!("ramp          {:.1} conn/s over {:.1} s", r.achieved_ramp_per_s, r.connect_phase_s);
    match (r.rss_before_kib, r.rss_after_kib, r.rss_per_socket_kib) {
        (Some(before), Some(after), Some(per)) => {
            println!("server RSS    {before} KiB -> {after} KiB  = {per:.2} KiB per socket ({} open)", r.open_at_rss)
        }
        _ => println!("server RSS    not measured (pass --pid)"),
    }
    println!("hold          {:.1} s, dropped {} ({})", r.hold_s, r.dropped, r.drops);
    let rss = r.rss_per_socket_kib.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
    println!(
        "SUMMARY idle connected={}/{} failed={} dropped={} connect_p50_ms={:.3} connect_p99_ms={:.3} rss_per_socket_kib={rss}{}",
        r.connected,
        r.requested,
        r.failed,
        r.dropped,
        r.connect_ms.p50_ms,
        r.connect_ms.p99_ms,
        if r.interrupted { " interrupted" } else { "" }
    );
}
