//! The Socket.IO edge's delivery sink: frames the engine received for a room go to the
//! room's local sockets through socketioxide's local adapter (volatile, "except" rooms or
//! sender, replay seams), and node-to-node commands run for the room's local sockets.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use socketioxide::{BroadcastError, SendError, SocketError};

use super::edge::Edge;
use super::session::{Session, drop_trip};
use crate::domain::{EventId, RoomKey};
use crate::engine::frame::{self, Frame};
use crate::fanout::{Control, LocalCounts, Sink};
use crate::listener::Peer;

/// Counts the frames sockets' full queues refused: a client reading slower than its rooms
/// produce loses frames (its queue holds 256); one that stops reading is cut off by the
/// node's listener after `--write-stall-timeout-ms` and recovers with `since`.
fn count_dropped(sockets: usize) {
    if sockets > 0 {
        metrics::counter!("fleetcast_socket_frames_dropped_total").increment(sockets as u64);
        tracing::debug!(sockets, "a frame was dropped for sockets whose queue is full");
    }
}

fn broadcast_failed(e: &BroadcastError, event: &str) {
    if let BroadcastError::Socket(errors) = e {
        count_dropped(errors.iter().filter(|e| matches!(e, SocketError::InternalChannelFull)).count());
    }
    tracing::debug!(error = %e, event, "local delivery failed for some sockets");
}

fn sent(r: Result<(), SendError>) {
    if let Err(SendError::Socket(SocketError::InternalChannelFull)) = r {
        count_dropped(1);
    }
}

/// The Socket.IO sink (weak: the node owns the edge).
pub struct SocketSink(pub Weak<Edge>);

impl Sink for SocketSink {
    fn deliver(&self, room: &RoomKey, f: &Frame<'_>, raw: &RawValue, id: Option<EventId>) {
        let Some(edge) = self.0.upgrade() else { return };
        let Some(io) = edge.io.get() else { return };
        // Kept for replaying sockets and emitted under one lock, so that
        // `Replays::finish` (join + drain) is atomic with respect to delivery.
        edge.replays.keep_then(room, f.event, f.json, id, |skip| {
            if f.flags & frame::EXCEPT_ROOM != 0 {
                let except: Vec<String> = f.except.unwrap_or_default().split('\u{1e}').map(str::to_string).collect();
                let op = io.to(room.as_str().to_string()).except(except);
                if let Some(Err(e)) = op.emit(f.event, raw).now_or_never() {
                    broadcast_failed(&e, f.event);
                }
                return;
            }
            if let Some(except) = f.except {
                // All but the sender (its own location update, its own typing). Sockets are
                // not in rooms of their own ids, so it is done here, socket by socket; a
                // frame skipped by a replaying socket (`skip`) is skipped here too.
                for s in io.to(room.as_str().to_string()).sockets() {
                    let sid = s.id.to_string();
                    if sid == except || skip.contains(&sid) {
                        continue;
                    }
                    if f.flags & frame::VOLATILE != 0 {
                        // Volatile: dropped by design when the socket is busy.
                        let _ = s.volatile().emit(f.event, raw);
                    } else {
                        sent(s.emit(f.event, raw));
                    }
                }
                return;
            }
            if !skip.is_empty() {
                // Sockets that got this frame from their replay a moment ago (rare: only
                // around a join with `since`).
                for s in io.to(room.as_str().to_string()).sockets() {
                    if !skip.contains(&s.id.to_string()) {
                        sent(s.emit(f.event, raw));
                    }
                }
                return;
            }
            let mut op = io.to(room.as_str().to_string());
            if f.flags & frame::VOLATILE != 0 {
                op = op.volatile();
            }
            match op.emit(f.event, raw).now_or_never() {
                Some(Ok(())) => {}
                Some(Err(e)) => broadcast_failed(&e, f.event),
                None => tracing::error!("local broadcast did not complete at once"),
            }
        });
    }

    fn control(&self, room: &RoomKey, command: &Control) {
        let Some(edge) = self.0.upgrade() else { return };
        let Some(io) = edge.io.get() else { return };
        match command {
            Control::LeaveTrip(trip) => {
                for s in io.to(room.as_str().to_string()).sockets() {
                    let Some(session) = s.extensions.get::<Arc<Session>>() else { continue };
                    let (edge, trip) = (edge.clone(), trip.clone());
                    // Owner: the runtime; a short task (the delivery task must not await).
                    tokio::spawn(async move {
                        if let Err(e) = drop_trip(&edge.app, &s, &session, &trip).await {
                            tracing::warn!(error = %e, "subscription slot not released; it expires with the node");
                        }
                    });
                }
            }
            Control::Gap => {
                // The transport closes under the client, which reconnects and re-subscribes
                // with `since` (a `disconnect` packet would stop it from reconnecting).
                let sockets = io.to(room.as_str().to_string()).sockets();
                for s in &sockets {
                    match s.req_parts().extensions.get::<ConnectInfo<Peer>>() {
                        Some(peer) => peer.0.cut.cut(),
                        None => tracing::warn!(sid = %s.id, "socket without its connection's cut; not told of the gap"),
                    }
                }
                metrics::counter!("fleetcast_gap_connections_cut_total").increment(sockets.len() as u64);
            }
        }
    }

    fn counts(&self) -> HashMap<String, LocalCounts> {
        let mut out: HashMap<String, LocalCounts> = HashMap::new();
        let Some(edge) = self.0.upgrade() else { return out };
        let Some(io) = edge.io.get() else { return out };
        for s in io.sockets() {
            let Some(session) = s.extensions.get::<Arc<Session>>() else { continue };
            let entry = out.entry(session.claims.tenant.0.clone()).or_default();
            entry.connections += 1;
            for room in session.rooms().iter() {
                if let Some(trip) = room.subscribed_trip() {
                    entry.active_trips.insert(trip.to_string());
                }
            }
        }
        out
    }
}
