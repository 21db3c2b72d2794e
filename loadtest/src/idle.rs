//! The `idle` scenario: open M Socket.IO connections at a steady ramp, keep them alive (pong
//! every ping) for a hold period, and report connect times, failures, drops and, given the
//! server's pid, its resident memory per socket.
//!
//! One tokio task per connection, owning its socket and nothing else; tasks report to the
//! scenario through one bounded channel and stop on one cancellation token. The scenario
//! must not keep per-connection buffers of its own: memory per socket here is what a
//! tungstenite stream costs (see `protocol::ws_config`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::protocol::{SioClient, socket_url};
use crate::stats::{self, LatencySummary, Tally};
use crate::token::{Role, TokenMinter};

/// Arguments of `fleetcast-loadtest idle`.
#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// A gateway node, e.g. ws://127.0.0.1:3000 (repeat for several; connections are spread
    /// round-robin). A path such as ws://host/api/socket/ replaces /socket.io/.
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Number of connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// New connections per second. The contract's default per-address limit is 100/s with
    /// a burst of 1000; go faster only against a server configured for it.
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// Seconds to hold all connections open after they are up.
    #[arg(long, default_value_t = 30)]
    pub hold: u64,
    /// HS256 secret the server verifies tokens with.
    #[arg(long)]
    pub secret: String,
    /// Tenant claim for every token (absent = the server's `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Server process to read VmRSS from (/proc/PID/status) before and after connecting.
    /// Repeat it for every node behind the targets: the figure per socket is the summed
    /// growth of all given processes divided by all open sockets.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Seconds to wait after the last connection before reading the server's RSS.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Seconds one connection attempt (websocket + Socket.IO handshake) may take.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What a connection task tells the scenario. At most two messages per connection.
#[derive(Debug)]
enum ConnEvent {
    Connected(Duration),
    Failed(String),
    Dropped(String),
}

/// Running totals kept by the scenario task alone.
struct Totals {
    connected: u64,
    failed: u64,
    dropped: u64,
    connect_us: Histogram<u64>,
    failures: Tally,
    drops: Tally,
}

impl Totals {
    fn apply(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Connected(d) => {
                self.connected += 1;
                let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                self.connect_us.saturating_record(us);
            }
            ConnEvent::Failed(code) => {
                self.failed += 1;
                self.failures.add(&code);
            }
            ConnEvent::Dropped(code) => {
                self.dropped += 1;
                self.drops.add(&code);
            }
        }
    }
}

/// The report, printed as a table or as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IdleReport {
    scenario: &'static str,
    run_id: String,
    targets: Vec<String>,
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

/// Runs the scenario and prints its report.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(args.ramp.is_finite() && args.ramp > 0.0) {
        bail!("--ramp must be a positive number of connections per second");
    }
    crate::warn_if_fd_limit_below(args.connections);

    let run_id = crate::run_id();
    let urls: Vec<Arc<str>> = args.targets.iter().map(|t| socket_url(t).into()).collect();
    let connect_timeout = Duration::from_secs(args.connect_timeout);
    let ramp_time = Duration::from_secs_f64(args.connections as f64 / args.ramp);
    let minter =
        TokenMinter::new(&args.secret, args.tenant.clone(), ramp_time.as_secs() + args.settle + args.hold + 3600);
    let interrupt = crate::interrupt_token();

    if !args.pids.is_empty() && args.pids.len() != urls.len() {
        eprintln!(
            "warning: {} --pid for {} --target: memory per socket is only meaningful when the \
             pids are exactly the nodes behind the targets",
            args.pids.len(),
            urls.len()
        );
    }
    let rss_before = total_rss_kib(&args.pids).context("--pid before connecting")?;

    // Capacity: enough that a burst of handshakes completing together rarely waits on the
    // scenario task; a full channel only delays a task's report, never loses it.
    let (tx, mut rx) = mpsc::channel::<ConnEvent>(1024);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut totals = Totals {
        connected: 0,
        failed: 0,
        dropped: 0,
        connect_us: stats::new_histogram(),
        failures: Tally::default(),
        drops: Tally::default(),
    };

    // Phase 1: connect at the ramp rate; bounded by the ramp time plus one handshake.
    let started = Instant::now();
    let connect_deadline = started + ramp_time + connect_timeout + Duration::from_secs(5);
    let mut spawn_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.ramp));
    spawn_tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut progress = tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut spawned: u64 = 0;
    let mut interrupted = false;
    while totals.connected + totals.failed < args.connections {
        tokio::select! {
            _ = spawn_tick.tick(), if spawned < args.connections => {
                let url = Arc::clone(&urls[usize::try_from(spawned).unwrap_or(0) % urls.len()]);
                let token = minter.mint(&format!("lti-{run_id}-{spawned}"), Role::Passenger)?;
                tasks.spawn(hold_connection(url, token, connect_timeout, tx.clone(), cancel.clone()));
                spawned += 1;
            }
            Some(event) = rx.recv() => totals.apply(event),
            _ = progress.tick() => eprintln!(
                "connecting: {spawned} started, {} connected, {} failed",
                totals.connected, totals.failed
            ),
            () = sleep_until(connect_deadline) => {
                eprintln!("connect phase deadline reached");
                break;
            }
            () = interrupt.cancelled() => {
                interrupted = true;
                break;
            }
        }
    }
    let connect_phase = started.elapsed();
    let unfinished = args.connections - totals.connected - totals.failed;

    // Phase 2: let the server settle, then read its RSS.
    if !interrupted {
        interrupted =
            drain_until(&mut rx, &mut totals, Instant::now() + Duration::from_secs(args.settle), &interrupt).await;
    }
    let open_at_rss = totals.connected - totals.dropped;
    let rss_after = total_rss_kib(&args.pids).context("--pid after connecting")?;

    // Phase 3: hold.
    let hold_started = Instant::now();
    if !interrupted {
        interrupted =
            drain_until(&mut rx, &mut totals, hold_started + Duration::from_secs(args.hold), &interrupt).await;
    }
    let hold = hold_started.elapsed();

    // Phase 4: close. Dropping the receiver first means no task can block on a report.
    drop(rx);
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();

    let report = IdleReport {
        scenario: "idle",
        run_id,
        targets: args.targets.clone(),
        requested: args.connections,
        connected: totals.connected,
        failed: totals.failed,
        unfinished,
        failures: totals.failures,
        connect_ms: stats::summarize_us(&totals.connect_us),
        connect_phase_s: stats::round3(connect_phase.as_secs_f64()),
        achieved_ramp_per_s: stats::per_second(totals.connected + totals.failed, connect_phase),
        open_at_rss,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_socket_kib: rss_before
            .zip(rss_after)
            .and_then(|(before, after)| stats::rss_per_socket_kib(before, after, open_at_rss)),
        hold_s: stats::round3(hold.as_secs_f64()),
        dropped: totals.dropped,
        drops: totals.drops,
        interrupted,
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

/// Applies reports until `deadline`; true when interrupted first.
async fn drain_until(
    rx: &mut mpsc::Receiver<ConnEvent>,
    totals: &mut Totals,
    deadline: Instant,
    interrupt: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            Some(event) = rx.recv() => totals.apply(event),
            () = sleep_until(deadline) => return false,
            () = interrupt.cancelled() => return true,
        }
    }
}

/// One connection's whole life: handshake, report, answer pings until cancelled or dropped.
async fn hold_connection(
    url: Arc<str>,
    token: String,
    connect_timeout: Duration,
    tx: mpsc::Sender<ConnEvent>,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    let connected = cancel.run_until_cancelled(SioClient::connect(&url, &token, connect_timeout)).await;
    drop(token);
    let mut client = match connected {
        None => return,
        Some(Err(e)) => {
            let _ = tx.send(ConnEvent::Failed(e.code())).await;
            return;
        }
        Some(Ok(client)) => client,
    };
    let _ = tx.send(ConnEvent::Connected(started.elapsed())).await;
    // next_incoming is not cancel-safe, which is fine here: cancellation closes the socket.
    let ended = cancel
        .run_until_cancelled(async {
            loop {
                if let Err(e) = client.next_incoming().await {
                    return e;
                }
            }
        })
        .await;
    match ended {
        None => client.close().await,
        Some(e) => {
            let _ = tx.send(ConnEvent::Dropped(e.code())).await;
        }
    }
}

fn print_table(r: &IdleReport) {
    println!("idle run {} against {}", r.run_id, r.targets.join(", "));
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
