//! What the driver and subscriber tasks of one process share: the recorders and counters
//! they all write to ([`Shared`]), the setup result each sends once ([`Ready`]), and the
//! handshake both start with ([`join_trip`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde_json::json;

use crate::progress::Progress;
use crate::protocol::{AckOutcome, SioClient};
use crate::stats::Recorder;
use crate::timeline::TimelineRecorder;
use crate::token::Role;

/// Counters and histograms every connection task of a process writes to.
pub(super) struct Shared {
    pub(super) e2e: Recorder,
    pub(super) ack: Recorder,
    pub(super) retry_after: Recorder,
    pub(super) timeline: TimelineRecorder,
    pub(super) progress: Arc<Progress>,
    /// Updates not newer than the previous one a subscriber saw (duplicates, reordering).
    pub(super) out_of_order: AtomicU64,
    /// Updates for a trip the subscriber did not subscribe to: a room or tenant leak.
    pub(super) foreign: AtomicU64,
    /// `server:location:update` without a parseable `tripId`/`updatedAt`.
    pub(super) unparsable: AtomicU64,
    /// Drivers' sockets kept open from their last ack until the run's drain ends: the
    /// servers' CPU over the send window then holds no disconnects (drivers finish
    /// sending at slightly different times).
    pub(super) parked: std::sync::Mutex<Vec<SioClient>>,
}

impl Shared {
    /// Keeps a finished driver's socket open until [`Self::close_parked`].
    pub(super) fn park(&self, client: SioClient) {
        self.parked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(client);
    }

    /// Closes the parked sockets, concurrently.
    pub(super) async fn close_parked(&self) {
        let parked = std::mem::take(&mut *self.parked.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        futures_util::future::join_all(parked.into_iter().map(SioClient::close)).await;
    }
}

/// A task's setup result, sent once.
pub(super) struct Ready {
    pub(super) role: Role,
    /// Local trip index.
    pub(super) local: usize,
    pub(super) outcome: Result<(), String>,
}

/// Connects and sends `event {tripId}` with an ack; the error is the code setup reports.
pub(super) async fn join_trip(
    url: &str,
    token: &str,
    connect_timeout: Duration,
    event: &str,
    trip_id: &str,
    ack_timeout: Duration,
) -> Result<SioClient, String> {
    let mut client = SioClient::connect(url, token, connect_timeout).await.map_err(|e| e.code())?;
    let data = json!({ "tripId": trip_id });
    match client.call(event, &data, ack_timeout).await {
        Ok(AckOutcome::Ok(_)) => Ok(client),
        Ok(AckOutcome::Err(code)) => {
            client.close().await;
            Err(code)
        }
        Err(e) => Err(e.code()),
    }
}
