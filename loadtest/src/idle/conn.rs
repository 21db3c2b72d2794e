//! One process's share of an `idle` run: connection tasks (handshake, then answer pings
//! until told to stop), the ramp that starts them, and the [`Partial`] figures they add up
//! to (what a worker sends its parent).
//!
//! One tokio task per connection, owning its socket and nothing else; tasks report through
//! one bounded channel and stop on one cancellation token.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;

use super::args::IdleArgs;
use crate::ctx::Ctx;
use crate::progress::{self, Progress, bump};
use crate::protocol::{SioClient, socket_url};
use crate::stats::{self, Tally, WireHistogram};
use crate::token::{Role, TokenMinter};

/// What a connection task tells the scenario. At most two messages per connection.
#[derive(Debug)]
enum ConnEvent {
    Connected(Duration),
    Failed(String),
    Dropped(String),
}

/// One process's figures (all of them for a single-process run); workers send it as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Partial {
    pub(super) connected: u64,
    pub(super) failed: u64,
    pub(super) unfinished: u64,
    pub(super) dropped: u64,
    /// Sockets open when the barrier (RSS reading) was reached.
    pub(super) open_at_rss: u64,
    pub(super) failures: Tally,
    pub(super) drops: Tally,
    pub(super) connect_us: WireHistogram,
    pub(super) connect_phase_s: f64,
    pub(super) hold_s: f64,
    pub(super) interrupted: bool,
}

impl Partial {
    fn apply(&mut self, event: ConnEvent, progress: &Progress) {
        match event {
            ConnEvent::Connected(d) => {
                self.connected += 1;
                bump(&progress.connected);
                let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
                self.connect_us.0.saturating_record(us);
            }
            ConnEvent::Failed(code) => {
                self.failed += 1;
                bump(&progress.failed);
                self.failures.add(&code);
            }
            ConnEvent::Dropped(code) => {
                self.dropped += 1;
                bump(&progress.dropped);
                self.drops.add(&code);
            }
        }
    }

    pub(super) fn merge(&mut self, o: Self) {
        self.connected += o.connected;
        self.failed += o.failed;
        self.unfinished += o.unfinished;
        self.dropped += o.dropped;
        self.open_at_rss += o.open_at_rss;
        self.failures.merge(&o.failures);
        self.drops.merge(&o.drops);
        stats::merge_into(&mut self.connect_us.0, &o.connect_us.0);
        self.connect_phase_s = self.connect_phase_s.max(o.connect_phase_s);
        self.hold_s = self.hold_s.max(o.hold_s);
        self.interrupted |= o.interrupted;
    }
}

pub(super) fn empty_partial() -> Partial {
    Partial {
        connected: 0,
        failed: 0,
        unfinished: 0,
        dropped: 0,
        open_at_rss: 0,
        failures: Tally::default(),
        drops: Tally::default(),
        connect_us: WireHistogram(stats::new_histogram()),
        connect_phase_s: 0.0,
        hold_s: 0.0,
        interrupted: false,
    }
}

/// This process's share: connect, settle, barrier (`at_barrier` returns false to skip the
/// hold), hold, close.
pub(super) async fn run_local(
    args: &IdleArgs,
    ctx: &Ctx,
    sink: progress::Sink,
    interrupt: &CancellationToken,
    at_barrier: impl AsyncFnOnce(u64) -> anyhow::Result<bool>,
) -> anyhow::Result<Partial> {
    let slot = ctx.slot();
    let share = slot.share(args.connections);
    let ramp = args.ramp / f64::from(slot.count);
    let run_id = &ctx.run_id;
    let urls: Vec<Arc<str>> = args.targets.iter().map(|t| socket_url(t).into()).collect();
    let connect_timeout = Duration::from_secs(args.connect_timeout);
    let ramp_time = Duration::from_secs_f64(share as f64 / ramp);
    let minter =
        TokenMinter::new(&args.secret, args.tenant.clone(), ramp_time.as_secs() + args.settle + args.hold + 3600);
    let progress = Arc::new(Progress::default());
    progress.set_phase("connecting");
    let stop_progress = CancellationToken::new();
    let reporter = progress::spawn("idle", Arc::clone(&progress), sink, stop_progress.clone());

    // Capacity: enough that a burst of handshakes completing together rarely waits on the
    // scenario task; a full channel only delays a task's report, never loses it.
    let (tx, mut rx) = mpsc::channel::<ConnEvent>(1024);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut p = empty_partial();

    // Phase 1: connect at the ramp rate; bounded by the ramp time plus one handshake.
    let started = Instant::now();
    let connect_deadline = started + ramp_time + connect_timeout + Duration::from_secs(5);
    let mut spawn_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ramp));
    spawn_tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut spawned: u64 = 0;
    while p.connected + p.failed < share {
        tokio::select! {
            _ = spawn_tick.tick(), if spawned < share => {
                let k = spawned * u64::from(slot.count) + u64::from(slot.index);
                let target = usize::try_from(spawned + u64::from(slot.index)).unwrap_or(0) % urls.len();
                let token = minter.mint(&format!("lti-{run_id}-{k}"), Role::Passenger)?;
                tasks.spawn(hold_connection(Arc::clone(&urls[target]), token, connect_timeout, tx.clone(), cancel.clone()));
                spawned += 1;
            }
            Some(event) = rx.recv() => p.apply(event, &progress),
            () = sleep_until(connect_deadline) => {
                eprintln!("connect phase deadline reached");
                break;
            }
            () = interrupt.cancelled() => {
                p.interrupted = true;
                break;
            }
        }
    }
    p.connect_phase_s = started.elapsed().as_secs_f64();
    p.unfinished = share - p.connected - p.failed;

    // Phase 2: let the server settle, then the barrier (RSS reading).
    progress.set_phase("settling");
    if !p.interrupted {
        let settle_end = Instant::now() + Duration::from_secs(args.settle);
        p.interrupted = drain_until(&mut rx, &mut p, &progress, settle_end, interrupt).await;
    }
    p.open_at_rss = p.connected - p.dropped;
    progress.set_phase("holding");
    let proceed = at_barrier(p.open_at_rss).await?;

    // Phase 3: hold.
    let hold_started = Instant::now();
    if proceed && !p.interrupted {
        let hold_end = hold_started + Duration::from_secs(args.hold);
        p.interrupted = drain_until(&mut rx, &mut p, &progress, hold_end, interrupt).await;
    }
    p.hold_s = hold_started.elapsed().as_secs_f64();

    // Phase 4: close. Dropping the receiver first means no task can block on a report.
    progress.set_phase("closing");
    drop(rx);
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    stop_progress.cancel();
    let _ = reporter.await;
    Ok(p)
}

/// Applies reports until `deadline`; true when interrupted first.
async fn drain_until(
    rx: &mut mpsc::Receiver<ConnEvent>,
    p: &mut Partial,
    progress: &Progress,
    deadline: Instant,
    interrupt: &CancellationToken,
) -> bool {
    loop {
        tokio::select! {
            Some(event) = rx.recv() => p.apply(event, progress),
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
