//! One passenger of a trip run: connect (websocket, or long-polling for `--polling-share`),
//! `passenger:subscribe` to one trip, then time every `server:location:update` until told
//! to stop.
//!
//! It keeps its own delivery count (for the per-subscriber ratio) and the newest
//! `updatedAt` it saw (to count duplicates and reordering); latencies go to the shared
//! recorders. Updates for other trips are counted, never recorded: they would mean a room
//! or tenant leak.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::tasks::{Ready, Shared, join_trip};
use crate::polling::PollClient;
use crate::progress::bump;
use crate::protocol::{AckOutcome, Incoming, scan_location};
use crate::token::Role;

/// What a passenger task returns when it is done.
pub(super) struct PassengerReport {
    /// Index of its trip among this process's trips.
    pub(super) trip: usize,
    /// `None` when setup failed (the passenger expected nothing).
    pub(super) received: Option<u64>,
    /// The `updatedAt` (µs) of each delivery of its trip, to match against accepted updates.
    pub(super) delivered: Vec<i64>,
    pub(super) disconnect: Option<String>,
}

pub(super) struct PassengerPlan {
    pub(super) trip: usize,
    pub(super) trip_id: String,
    pub(super) url: Arc<str>,
    pub(super) token: String,
    pub(super) connect_timeout: Duration,
    pub(super) ack_timeout: Duration,
    /// Engine.IO long-polling instead of websocket.
    pub(super) polling: bool,
}

/// A passenger: connect, `passenger:subscribe`, then time every location update until stopped.
pub(super) async fn passenger_task(
    plan: PassengerPlan,
    ready: mpsc::Sender<Ready>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> PassengerReport {
    let mut report = PassengerReport { trip: plan.trip, received: None, delivered: Vec::new(), disconnect: None };
    if plan.polling {
        if let Some(client) = setup_polling(&plan, &ready, &stop).await {
            listen_polling(client, &plan, &shared, &stop, &mut report).await;
        }
        return report;
    }
    let setup =
        join_trip(&plan.url, &plan.token, plan.connect_timeout, "passenger:subscribe", &plan.trip_id, plan.ack_timeout);
    let outcome = stop.run_until_cancelled(setup).await;
    let mut client = match outcome {
        None => return report,
        Some(Ok(client)) => client,
        Some(Err(code)) => {
            let _ = ready.send(Ready { role: Role::Passenger, local: plan.trip, outcome: Err(code) }).await;
            return report;
        }
    };
    if ready.send(Ready { role: Role::Passenger, local: plan.trip, outcome: Ok(()) }).await.is_err() {
        // Setup already ended without us: joining now would skew the run's expectations.
        client.close().await;
        return report;
    }
    drop(ready);

    let mut seen = Seen { received: 0, last_us: i64::MIN, delivered: Vec::new() };
    let listen = async {
        loop {
            let frame = client.recv_frame().await?;
            if let Message::Text(text) = &frame
                && let Some((trip, updated_at)) = scan_location(text.as_str())
            {
                seen.location(trip, Some(updated_at), &plan.trip_id, &shared);
                continue;
            }
            if let Some(Incoming::Event { name, data }) = client.process(frame).await? {
                seen.event(&name, &data, &plan.trip_id, &shared);
            }
        }
    };
    // Not cancel-safe (a pong may be cut), which is fine: cancellation ends the connection.
    let ended: Option<Result<(), crate::protocol::ClientError>> = stop.run_until_cancelled(listen).await;
    match ended {
        None => client.close().await,
        Some(Err(e)) => report.disconnect = Some(e.code()),
        Some(Ok(())) => {}
    }
    report.received = Some(seen.received);
    report.delivered = seen.delivered;
    report
}

async fn setup_polling(
    plan: &PassengerPlan,
    ready: &mpsc::Sender<Ready>,
    stop: &CancellationToken,
) -> Option<PollClient> {
    let setup = async {
        let mut client =
            PollClient::connect(&plan.url, &plan.token, plan.connect_timeout).await.map_err(|e| e.code())?;
        let data = serde_json::json!({ "tripId": plan.trip_id });
        match client.call("passenger:subscribe", &data, plan.ack_timeout).await {
            Ok(AckOutcome::Ok(_)) => Ok(client),
            Ok(AckOutcome::Err(code)) => Err(code),
            Err(e) => Err(e.code()),
        }
    };
    match stop.run_until_cancelled(setup).await? {
        Ok(client) => {
            if ready.send(Ready { role: Role::Passenger, local: plan.trip, outcome: Ok(()) }).await.is_err() {
                client.close().await;
                return None;
            }
            Some(client)
        }
        Err(code) => {
            let _ = ready.send(Ready { role: Role::Passenger, local: plan.trip, outcome: Err(code) }).await;
            None
        }
    }
}

async fn listen_polling(
    mut client: PollClient,
    plan: &PassengerPlan,
    shared: &Shared,
    stop: &CancellationToken,
    report: &mut PassengerReport,
) {
    let mut seen = Seen { received: 0, last_us: i64::MIN, delivered: Vec::new() };
    let listen = async {
        loop {
            for incoming in client.poll().await? {
                if let Incoming::Event { name, data } = incoming {
                    seen.event(&name, &data, &plan.trip_id, shared);
                }
            }
        }
    };
    let ended: Option<Result<(), crate::protocol::ClientError>> = stop.run_until_cancelled(listen).await;
    match ended {
        None => client.close().await,
        Some(Err(e)) => report.disconnect = Some(e.code()),
        Some(Ok(())) => {}
    }
    report.received = Some(seen.received);
    report.delivered = seen.delivered;
}

/// What one passenger has seen so far.
struct Seen {
    received: u64,
    last_us: i64,
    delivered: Vec<i64>,
}

impl Seen {
    fn event(&mut self, name: &str, data: &Value, trip_id: &str, shared: &Shared) {
        if name != "server:location:update" {
            return;
        }
        match data.get("tripId").and_then(Value::as_str) {
            Some(trip) => self.location(trip, data.get("updatedAt").and_then(Value::as_str), trip_id, shared),
            None => {
                shared.unparsable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records one delivery: latency = now − `updatedAt`, both from this machine's clock.
    fn location(&mut self, trip: &str, updated_at: Option<&str>, trip_id: &str, shared: &Shared) {
        let now = Utc::now();
        if trip != trip_id {
            shared.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(at) = updated_at.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
            shared.unparsable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let at = at.with_timezone(&Utc);
        // A negative latency can only be clock granularity; count it as zero.
        let latency_us = u64::try_from((now - at).num_microseconds().unwrap_or(i64::MAX)).unwrap_or(0);
        shared.e2e.record_us(latency_us);
        shared.timeline.delivered(u64::try_from(now.timestamp_millis()).unwrap_or(0), latency_us);
        bump(&shared.progress.received);
        self.received += 1;
        let at_us = at.timestamp_micros();
        self.delivered.push(at_us);
        if at_us <= self.last_us {
            shared.out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        self.last_us = self.last_us.max(at_us);
    }
}
