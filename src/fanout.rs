//! The one publish path. Every server→client event is stamped here (`emittedAt`), encoded
//! as a frame and published through the [`Engine`] to every node with members in the
//! room; each node then delivers frames to its local Socket.IO room members through
//! [`deliverer`]. Nothing else in the crate emits to a room.

use std::sync::Arc;

use futures_util::FutureExt;
use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;

use crate::engine::{Deliver, Engine, RoomKey, frame};
use crate::error::{Error, Result};

/// Server→client event names of CONTRACT §2.
pub mod events {
    /// Live position of a trip's driver (volatile).
    pub const LOCATION: &str = "server:location:update";
    /// Driver-reported trip status.
    pub const TRIP_STATUS: &str = "server:trip:status";
    /// Alert to admins.
    pub const ALERT: &str = "server:alert";
}

/// Serializes `payload` (a JSON object) with `emittedAt` added.
pub fn stamp<T: Serialize>(payload: &T) -> Result<String> {
    let mut v = serde_json::to_value(payload).map_err(|e| {
        tracing::error!(error = %e, "payload does not serialize");
        Error::Internal
    })?;
    if let Some(map) = v.as_object_mut() {
        map.insert("emittedAt".into(), crate::domain::now_iso().into());
    }
    Ok(v.to_string())
}

/// Publishes `event` with `payload` to `room` on every node.
pub async fn publish<T: Serialize>(engine: &Engine, room: &RoomKey, event: &str, payload: &T, flags: u8) -> Result<()> {
    let json = stamp(payload)?;
    let f = frame::encode(event, flags, None, &json);
    engine.publish(room, &f).await?;
    metrics::counter!("fleetcast_events_out_total", "event" => event.to_string()).increment(1);
    Ok(())
}

/// Builds the frame of a location update (published by the engine in the same round trip
/// that stores it, so the write and the broadcast cannot diverge).
pub fn location_frame(location_json_with_stamp: &str) -> String {
    metrics::counter!("fleetcast_events_out_total", "event" => events::LOCATION).increment(1);
    frame::encode(events::LOCATION, frame::VOLATILE, None, location_json_with_stamp)
}

/// Sends an already-stamped event to one socket (a reply such as the current location
/// after `passenger:subscribe`); not a room emission, so it bypasses the engine.
pub fn send_to_socket(s: &SocketRef, event: &str, json: &str) {
    let Ok(raw) = serde_json::from_str::<&RawValue>(json) else { return };
    if let Err(e) = s.emit(event, raw) {
        tracing::debug!(error = %e, "direct emit failed");
    }
    metrics::counter!("fleetcast_events_out_total", "event" => event.to_string()).increment(1);
}

/// The local delivery callback handed to the engine: decodes a frame and emits it to the
/// local members of its room. Runs on the engine's delivery task, so it must not block:
/// the local adapter's broadcast completes without waiting.
pub fn deliverer(io: Arc<std::sync::OnceLock<SocketIo>>) -> Deliver {
    Arc::new(move |room: &RoomKey, text: &str| {
        let Some(io) = io.get() else { return };
        let Some(f) = frame::decode(text) else {
            tracing::warn!("malformed frame dropped");
            return;
        };
        let Ok(raw) = serde_json::from_str::<&RawValue>(f.json) else {
            tracing::warn!(event = f.event, "frame with malformed JSON dropped");
            return;
        };
        let mut op = io.to(room.as_str().to_string());
        if f.flags & frame::VOLATILE != 0 {
            op = op.volatile();
        }
        if let Some(except) = f.except {
            op = op.except(except.to_string());
        }
        match op.emit(f.event, raw).now_or_never() {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::debug!(error = %e, event = f.event, "local delivery failed for some sockets"),
            None => tracing::error!("local broadcast did not complete at once"),
        }
        metrics::counter!("fleetcast_deliveries_total").increment(1);
    })
}
