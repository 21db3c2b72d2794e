//! The publish API's use case (CONTRACT §4 "Publish"): one event to several rooms as
//! recoverable events through the one publish path, a socket in several of them reached
//! once, and the rooms' SSE streams counted across the cluster for the `EmissionResult`.

use crate::app::App;
use crate::auth::Claims;
use crate::domain::{Role, RoomKey, Tenant, UserId};
use crate::engine::SlotKind;
use crate::error::{Error, Result};
use crate::events::ServerEvent;
use crate::fanout;

/// Up to this many targets, a socket in several of them receives the event once.
const DEDUP_ROOMS: usize = 64;

/// Only SERVICE and ADMIN callers publish.
pub fn may_publish(who: &Claims) -> Result<()> {
    match who.role {
        Role::Service | Role::Admin => Ok(()),
        _ => Err(Error::Forbidden),
    }
}

/// What an emission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emission {
    /// Published to every room.
    pub sent: bool,
    /// The code of the last failure, if any.
    pub error: Option<&'static str>,
    /// SSE streams of the rooms across the cluster.
    pub sse_connections: u64,
}

/// Publishes `event` to `rooms`; a failure is reported and counted, never returned (the
/// request itself succeeded).
pub async fn emit<E: ServerEvent>(app: &App, rooms: &[RoomKey], event: &E) -> Emission {
    let mut sent = true;
    let mut error = None;
    for (i, room) in rooms.iter().enumerate() {
        // A socket in several targeted rooms receives the event once: each room's frame
        // skips the members of the rooms before it (bounded, as the frame carries them).
        let before: Vec<&RoomKey> = if rooms.len() <= DEDUP_ROOMS { rooms[..i].iter().collect() } else { Vec::new() };
        if let Err(e) = fanout::publish_except(&app.engine, room, event, &before).await {
            metrics::counter!("fleetcast_publish_failures_total").increment(1);
            sent = false;
            error = Some(e.code());
        }
    }
    let mut sse_connections = 0;
    for room in rooms {
        sse_connections += sse_streams(app, room).await;
    }
    Emission { sent, error, sse_connections }
}

/// SSE streams of a room across the cluster (each stream holds a slot in the room's set).
pub async fn sse_streams(app: &App, room: &RoomKey) -> u64 {
    let tenant = Tenant(room.tenant().to_string());
    app.engine.count_slots(SlotKind::SseStreams, &tenant, &UserId(room.as_str().to_string())).await.unwrap_or(0)
}
