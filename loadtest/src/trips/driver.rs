//! One driver of a trip run: connect, `driver:connect`, wait for the shared start, then emit
//! `driver:location:update` on its [`Schedule`] and match acks to what it sent.
//!
//! It owns its socket and a small queue of updates awaiting acks (bounded by
//! `MAX_PENDING_ACKS`, or by the `burst` in-flight cap), and writes ack latencies, outcomes
//! and `retryAfterMs` to the shared recorders. Frames are encoded by hand: at 15,000
//! updates/s the load client must not spend the CPU the server under test needs.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::schedule::{Fix, Schedule};
use super::tasks::{Ready, Shared, join_trip};
use crate::progress::bump;
use crate::protocol::{AckOutcome, ClientError, Incoming, SioClient};
use crate::stats::Tally;
use crate::timeline::{Count, unix_ms};
use crate::token::Role;

/// Most acks one driver may be waiting for; past it the oldest counts as `timeout:ack`.
/// At 15 updates/s a driver has ~75 in a 5 s ack window, so this only bounds memory
/// against a server that stops answering.
const MAX_PENDING_ACKS: usize = 1024;

/// What a driver task returns when it is done.
#[derive(Default)]
pub(super) struct DriverReport {
    pub(super) local: usize,
    pub(super) sent: u64,
    pub(super) accepted: u64,
    /// The `timestamp` (µs) of each accepted update: its deliveries echo it in `updatedAt`.
    pub(super) accepted_stamps: Vec<i64>,
    pub(super) errors: Tally,
    pub(super) disconnect: Option<String>,
    /// When it stopped sending (end of the run, Ctrl-C or a lost connection).
    pub(super) stopped_at: Option<Instant>,
}

/// An update waiting for its ack: ack id, when it was sent, its `timestamp` in µs.
type Pending = (u64, Instant, i64);

pub(super) struct DriverPlan {
    /// Index among this process's trips.
    pub(super) local: usize,
    pub(super) trip_id: String,
    pub(super) url: Arc<str>,
    pub(super) token: String,
    pub(super) connect_timeout: Duration,
    pub(super) ack_timeout: Duration,
    /// Most updates awaiting an ack before the driver waits (`burst`); `None` = no cap.
    pub(super) in_flight: Option<usize>,
}

/// The schedules of this process's drivers, by local index (`None`: not ready, not sending).
pub(super) type Starts = Arc<[Option<Schedule>]>;

/// A driver: connect, `driver:connect`, wait for the start, send updates, collect acks,
/// then leave its socket open ([`Shared::park`]) until the run's drain ends.
pub(super) async fn driver_task(
    plan: DriverPlan,
    ready: mpsc::Sender<Ready>,
    mut start_rx: watch::Receiver<Option<Starts>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> DriverReport {
    let mut report = DriverReport { local: plan.local, ..DriverReport::default() };
    let setup =
        join_trip(&plan.url, &plan.token, plan.connect_timeout, "driver:connect", &plan.trip_id, plan.ack_timeout);
    let mut client = match stop.run_until_cancelled(setup).await {
        None => return report,
        Some(Ok(client)) => client,
        Some(Err(code)) => {
            let _ = ready.send(Ready { role: Role::Driver, local: plan.local, outcome: Err(code) }).await;
            return report;
        }
    };
    if ready.send(Ready { role: Role::Driver, local: plan.local, outcome: Ok(()) }).await.is_err() {
        // Setup already ended without us: joining now would skew the run's expectations.
        client.close().await;
        return report;
    }
    drop(ready);

    // Keep the socket alive until the start signal. `wait_for` is cancel-safe; frames are
    // processed outside the select so a pong is never half-sent.
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut schedule = loop {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => {
                client.close().await;
                return report;
            }
            // Clone out at once: the watch guard is not `Send`.
            started = async { start_rx.wait_for(Option::is_some).await.map(|s| s.clone()) } => match started {
                Ok(Some(starts)) => match starts.get(plan.local).cloned().flatten() {
                    Some(schedule) => break schedule,
                    None => {
                        client.close().await;
                        return report;
                    }
                },
                Ok(None) => continue,
                // The scenario dropped the sender: setup was abandoned.
                Err(_) => {
                    client.close().await;
                    return report;
                }
            },
            frame = client.recv_frame() => frame,
        };
        if let Err(e) = handle_frame(&mut client, frame, &mut pending, &shared, &mut report).await {
            report.disconnect = Some(e.code());
            return report;
        }
    };
    drop(start_rx);

    let cap = plan.in_flight.unwrap_or(usize::MAX);
    let mut next = schedule.next(Instant::now());
    while let Some((at, fix)) = next {
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = sleep_until(at), if pending.len() < cap => {
                let id = client.take_ack_id();
                let (frame, stamp) = location_frame(id, &plan.trip_id, &fix);
                let sent_at = Instant::now();
                if let Err(e) = client.send_raw(frame).await {
                    return lost(report, &pending, &e);
                }
                report.sent += 1;
                bump(&shared.progress.sent);
                shared.timeline.count(Count::Sent, unix_ms());
                if pending.len() >= MAX_PENDING_ACKS {
                    pending.pop_front();
                    report.errors.add("timeout:ack");
                }
                pending.push_back((id, sent_at, stamp));
                next = schedule.next(Instant::now());
                continue;
            }
            frame = client.recv_frame() => frame,
        };
        if let Err(e) = handle_frame(&mut client, frame, &mut pending, &shared, &mut report).await {
            return lost(report, &pending, &e);
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
        if let Err(e) = handle_frame(&mut client, frame, &mut pending, &shared, &mut report).await {
            report.disconnect = Some(e.code());
            report.errors.add_n(&format!("lost:{}", e.code()), u64::try_from(pending.len()).unwrap_or(0));
            return report;
        }
    }
    report.errors.add_n("timeout:ack", u64::try_from(pending.len()).unwrap_or(0));
    shared.park(client);
    report
}

/// The connection died mid-run: updates in flight have an unknown fate.
fn lost(mut report: DriverReport, pending: &VecDeque<Pending>, e: &ClientError) -> DriverReport {
    report.disconnect = Some(e.code());
    report.stopped_at = Some(Instant::now());
    report.errors.add_n(&format!("lost:{}", e.code()), u64::try_from(pending.len()).unwrap_or(0));
    report
}

/// Processes one frame for a driver: pings are answered, acks matched to pending updates.
async fn handle_frame(
    client: &mut SioClient,
    frame: Result<Message, ClientError>,
    pending: &mut VecDeque<Pending>,
    shared: &Shared,
    report: &mut DriverReport,
) -> Result<(), ClientError> {
    let frame = frame?;
    // Drivers are in their trip's room too, so they receive their own broadcasts: skip
    // those without decoding them.
    if let Message::Text(text) = &frame
        && text.as_str().starts_with("42[\"server:location:update\"")
    {
        return Ok(());
    }
    if let Some(Incoming::Ack { id, args }) = client.process(frame).await?
        && let Some(pos) = pending.iter().position(|(pending_id, _, _)| *pending_id == id)
        && let Some((_, sent_at, stamp)) = pending.remove(pos)
    {
        shared.ack.record(sent_at.elapsed());
        let retry_after = args.first().and_then(|a| a.get("retryAfterMs")).and_then(serde_json::Value::as_u64);
        match AckOutcome::from_args(args) {
            AckOutcome::Ok(_) => {
                report.accepted += 1;
                report.accepted_stamps.push(stamp);
                bump(&shared.progress.accepted);
                shared.timeline.count(Count::Accepted, unix_ms());
            }
            AckOutcome::Err(code) => {
                if let Some(ms) = retry_after {
                    shared.retry_after.record_us(ms.saturating_mul(1000));
                }
                report.errors.add(&code);
                bump(&shared.progress.errors);
                shared.timeline.count(Count::Errors, unix_ms());
            }
        }
    }
    Ok(())
}

/// `42<id>["driver:location:update",{..}]` with `timestamp` = the wall clock in µs, and that
/// instant in µs: passengers compute the end-to-end latency from its echo in `updatedAt`,
/// and the run matches each delivery to the update it came from.
pub(super) fn location_frame(ack_id: u64, trip_id: &str, fix: &Fix) -> (String, i64) {
    let mut s = String::with_capacity(200);
    let _ =
        write!(s, r#"42{ack_id}["driver:location:update",{{"tripId":"{trip_id}","lat":{},"lng":{}"#, fix.lat, fix.lng);
    if let Some(speed) = fix.speed {
        let _ = write!(s, r#","speed":{speed}"#);
    }
    if let Some(heading) = fix.heading {
        let _ = write!(s, r#","heading":{heading}"#);
    }
    let now = Utc::now();
    let _ = write!(s, r#","timestamp":"{}"}}]"#, now.to_rfc3339_opts(SecondsFormat::Micros, true));
    (s, now.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Packet, SioPacket, decode};

    #[test]
    fn location_frames_are_valid_socket_io_events() {
        let fix = Fix { lat: -1.2921, lng: 36.8219, speed: Some(12.5), heading: None };
        let (frame, stamp) = location_frame(7, "lt-x-1", &fix);
        assert!(frame.starts_with(
            r#"427["driver:location:update",{"tripId":"lt-x-1","lat":-1.2921,"lng":36.8219,"speed":12.5,"timestamp":""#
        ));
        let Ok(Packet::Message(SioPacket::Event { name, data })) = decode(&frame) else {
            panic!("undecodable: {frame}");
        };
        assert_eq!(name, "driver:location:update");
        let echoed = data["timestamp"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        assert_eq!(echoed.map(|t| t.timestamp_micros()), Some(stamp), "the stamp is the timestamp sent");
    }
}
