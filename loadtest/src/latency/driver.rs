//! One driver of a latency run: connect, `driver:connect`, wait for the shared start, then
//! emit `driver:location:update` on a fixed period and match acks to what it sent.
//!
//! It owns its socket and a small queue of updates awaiting acks (bounded by
//! `MAX_PENDING_ACKS`), and writes ack latencies to the shared recorder. It never
//! catches up missed ticks: a stalled client shows as a lower achieved rate, not a burst.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;

use super::{Ready, Shared, join_trip};
use crate::protocol::{AckOutcome, ClientError, Incoming, SioClient};
use crate::stats::Tally;
use crate::token::Role;

/// Most acks one driver may be waiting for; past it the oldest counts as `timeout:ack`.
/// At the contract's 90 updates/min a driver has ~8 in a 5 s ack window, so this only
/// bounds memory against a server that stops answering.
const MAX_PENDING_ACKS: usize = 256;

/// What a driver task returns when it is done.
#[derive(Default)]
pub(super) struct DriverReport {
    pub(super) trip: usize,
    pub(super) sent: u64,
    pub(super) accepted: u64,
    pub(super) errors: Tally,
    pub(super) disconnect: Option<String>,
    /// When it stopped sending (end of the run, Ctrl-C or a lost connection).
    pub(super) stopped_at: Option<Instant>,
}

/// The start signal: when sending begins and how drivers share the rate.
#[derive(Clone)]
pub(super) struct Start {
    pub(super) at: Instant,
    /// Time between two updates of one driver (ready drivers / rate).
    pub(super) period: Duration,
    /// By trip index: how long after `at` that driver sends its first update.
    pub(super) offsets: Arc<[Duration]>,
}

pub(super) struct DriverPlan {
    pub(super) trip: usize,
    pub(super) trip_id: String,
    pub(super) url: Arc<str>,
    pub(super) token: String,
    pub(super) connect_timeout: Duration,
    pub(super) ack_timeout: Duration,
    pub(super) duration: Duration,
}

/// A driver: connect, `driver:connect`, wait for the start, send updates, collect acks.
pub(super) async fn driver_task(
    plan: DriverPlan,
    ready: mpsc::Sender<Ready>,
    mut start_rx: watch::Receiver<Option<Start>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> DriverReport {
    let mut report = DriverReport { trip: plan.trip, ..DriverReport::default() };
    let setup =
        join_trip(&plan.url, &plan.token, plan.connect_timeout, "driver:connect", &plan.trip_id, plan.ack_timeout);
    let mut client = match stop.run_until_cancelled(setup).await {
        None => return report,
        Some(Ok(client)) => client,
        Some(Err(code)) => {
            let outcome = Err(code);
            let _ = ready.send(Ready { role: Role::Driver, trip: plan.trip, outcome }).await;
            return report;
        }
    };
    let sent = ready.send(Ready { role: Role::Driver, trip: plan.trip, outcome: Ok(()) }).await;
    if sent.is_err() {
        // Setup already ended without us: joining now would skew the run's expectations.
        client.close().await;
        return report;
    }
    drop(ready);

    // Keep the socket alive until the start signal. `wait_for` is cancel-safe; frames are
    // processed outside the select so a pong is never half-sent.
    let start = loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => {
                client.close().await;
                return report;
            }
            // Clone the plan out at once: the watch guard is not `Send`.
            started = async { start_rx.wait_for(Option::is_some).await.map(|s| s.clone()) } => match started {
                Ok(Some(start)) => break start,
                Ok(None) => continue,
                // The scenario dropped the sender: setup was abandoned.
                Err(_) => {
                    client.close().await;
                    return report;
                }
            },
            frame = client.recv_frame() => frame,
        };
        if let Err(e) = handle_driver_frame(&mut client, frame, &mut VecDeque::new(), &shared, &mut report).await {
            report.disconnect = Some(e.code());
            return report;
        }
    };

    let end = start.at + plan.duration;
    let offset = start.offsets.get(plan.trip).copied().unwrap_or_default();
    let mut tick = tokio::time::interval_at(start.at + offset, start.period);
    // Skip, not Burst: a stalled client must not hit the server with a catch-up burst
    // (which would also trip the per-driver rate limit). The achieved rate shows the gap.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut seq: u64 = 0;
    loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = sleep_until(end) => break,
            _ = tick.tick() => {
                if Instant::now() >= end {
                    break;
                }
                let update = location_update(&plan.trip_id, plan.trip, seq);
                seq += 1;
                let sent_at = Instant::now();
                match client.emit_with_ack("driver:location:update", &update).await {
                    Ok(id) => {
                        report.sent += 1;
                        if pending.len() >= MAX_PENDING_ACKS {
                            pending.pop_front();
                            report.errors.add("timeout:ack");
                        }
                        pending.push_back((id, sent_at));
                    }
                    Err(e) => {
                        report.disconnect = Some(e.code());
                        report.stopped_at = Some(Instant::now());
                        lose_pending(&mut report, &pending, &e);
                        return report;
                    }
                }
                continue;
            }
            frame = client.recv_frame() => frame,
        };
        if let Err(e) = handle_driver_frame(&mut client, frame, &mut pending, &shared, &mut report).await {
            report.disconnect = Some(e.code());
            report.stopped_at = Some(Instant::now());
            lose_pending(&mut report, &pending, &e);
            return report;
        }
    }
    report.stopped_at = Some(Instant::now());

    // Collect the acks still owed, up to the ack timeout.
    let ack_deadline = Instant::now() + plan.ack_timeout;
    while !pending.is_empty() {
        let frame = tokio::select! {
            () = sleep_until(ack_deadline) => break,
            frame = client.recv_frame() => frame,
        };
        if let Err(e) = handle_driver_frame(&mut client, frame, &mut pending, &shared, &mut report).await {
            report.disconnect = Some(e.code());
            lose_pending(&mut report, &pending, &e);
            return report;
        }
    }
    report.errors.add_n("timeout:ack", u64::try_from(pending.len()).unwrap_or(0));
    client.close().await;
    report
}

/// Updates in flight when the connection died: their fate is unknown.
fn lose_pending(report: &mut DriverReport, pending: &VecDeque<(u64, Instant)>, e: &ClientError) {
    report.errors.add_n(&format!("lost:{}", e.code()), u64::try_from(pending.len()).unwrap_or(0));
}

/// Processes one frame for a driver: pings are answered, acks matched to pending updates.
async fn handle_driver_frame(
    client: &mut SioClient,
    frame: Result<tokio_tungstenite::tungstenite::Message, ClientError>,
    pending: &mut VecDeque<(u64, Instant)>,
    shared: &Shared,
    report: &mut DriverReport,
) -> Result<(), ClientError> {
    // Drivers are in their trip's room too, so they also receive their own broadcasts;
    // those events are dropped here.
    if let Some(Incoming::Ack { id, args }) = client.process(frame?).await?
        && let Some(pos) = pending.iter().position(|(pending_id, _)| *pending_id == id)
        && let Some((_, sent_at)) = pending.remove(pos)
    {
        shared.ack.record(sent_at.elapsed());
        match AckOutcome::from_args(args) {
            AckOutcome::Ok(_) => report.accepted += 1,
            AckOutcome::Err(code) => report.errors.add(&code),
        }
    }
    Ok(())
}

/// A plausible moving position around Nairobi; each trip has its own lane. `timestamp` is
/// the wall clock at microsecond precision: passengers compute latency from its echo.
fn location_update(trip_id: &str, trip: usize, seq: u64) -> Value {
    let (lane, step) = ((trip % 1000) as f64, (seq % 10_000) as f64);
    json!({
        "tripId": trip_id,
        "lat": -1.2921 + lane * 0.0005 + step * 0.00001,
        "lng": 36.8219 + step * 0.00001,
        "speed": 12.5,
        "heading": (seq * 7 % 360) as f64,
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
    })
}
