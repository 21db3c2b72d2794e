//! One passenger of a latency run: connect, `passenger:subscribe` to one trip, then time
//! every `server:location:update` until told to stop.
//!
//! It keeps only the newest `updatedAt` it saw (to count duplicates and reordering); the
//! latencies go to the shared recorder. Updates for other trips are counted, never
//! recorded: they would mean a room or tenant leak.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Ready, Shared, join_trip};
use crate::protocol::Incoming;
use crate::token::Role;

/// What a passenger task returns when it is done.
#[derive(Default)]
pub(super) struct PassengerReport {
    pub(super) disconnect: Option<String>,
}

pub(super) struct PassengerPlan {
    pub(super) trip: usize,
    pub(super) trip_id: String,
    pub(super) url: Arc<str>,
    pub(super) token: String,
    pub(super) connect_timeout: Duration,
    pub(super) ack_timeout: Duration,
}

/// A passenger: connect, `passenger:subscribe`, then time every location update until stopped.
pub(super) async fn passenger_task(
    plan: PassengerPlan,
    ready: mpsc::Sender<Ready>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> PassengerReport {
    let mut report = PassengerReport::default();
    let setup =
        join_trip(&plan.url, &plan.token, plan.connect_timeout, "passenger:subscribe", &plan.trip_id, plan.ack_timeout);
    let mut client = match stop.run_until_cancelled(setup).await {
        None => return report,
        Some(Ok(client)) => client,
        Some(Err(code)) => {
            let outcome = Err(code);
            let _ = ready.send(Ready { role: Role::Passenger, trip: plan.trip, outcome }).await;
            return report;
        }
    };
    let sent = ready.send(Ready { role: Role::Passenger, trip: plan.trip, outcome: Ok(()) }).await;
    if sent.is_err() {
        // Setup already ended without us: joining now would skew the run's expectations.
        client.close().await;
        return report;
    }
    drop(ready);

    let mut last_us = i64::MIN;
    let listen = async {
        loop {
            match client.next_incoming().await {
                Ok(Incoming::Event { name, data }) if name == "server:location:update" => {
                    on_location(&data, &plan.trip_id, &mut last_us, &shared);
                }
                Ok(_) => {}
                Err(e) => return e,
            }
        }
    };
    // next_incoming is not cancel-safe; cancellation here ends the connection anyway.
    match stop.run_until_cancelled(listen).await {
        None => client.close().await,
        Some(e) => report.disconnect = Some(e.code()),
    }
    report
}

/// Records one delivery: latency = now − `updatedAt`, both from this machine's clock.
fn on_location(data: &Value, trip_id: &str, last_us: &mut i64, shared: &Shared) {
    let now = Utc::now();
    let trip = data.get("tripId").and_then(Value::as_str);
    let updated_at = data.get("updatedAt").and_then(Value::as_str).and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    match (trip, updated_at) {
        (Some(trip), _) if trip != trip_id => {
            shared.foreign.fetch_add(1, Ordering::Relaxed);
        }
        (Some(_), Some(at)) => {
            let at = at.with_timezone(&Utc);
            let latency_us = (now - at).num_microseconds().unwrap_or(i64::MAX);
            // A negative latency can only be clock granularity; count it as zero.
            shared.e2e.record_us(u64::try_from(latency_us).unwrap_or(0));
            shared.received.fetch_add(1, Ordering::Relaxed);
            let at_us = at.timestamp_micros();
            if at_us <= *last_us {
                shared.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            *last_us = (*last_us).max(at_us);
        }
        _ => {
            shared.unparsable.fetch_add(1, Ordering::Relaxed);
        }
    }
}
