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

use std::collections::HashMap;

use crate::engine::{Deliver, Engine, EventId, RoomKey, frame};
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

/// Publishes a recoverable `event` to `room` on every node: stamped with `emittedAt` here,
/// given its `eventId` by the engine in the same step that records it in the room's
/// history. Returns the id.
pub async fn publish_recoverable<T: Serialize>(
    engine: &Engine,
    room: &RoomKey,
    event: &str,
    payload: &T,
) -> Result<EventId> {
    publish_recoverable_except(engine, room, event, payload, &[]).await
}

/// [`publish_recoverable`], skipping the members of `except` (who receive the same event
/// through that room).
pub async fn publish_recoverable_except<T: Serialize>(
    engine: &Engine,
    room: &RoomKey,
    event: &str,
    payload: &T,
    except: &[&RoomKey],
) -> Result<EventId> {
    let json = stamp(payload)?;
    let tail = json.strip_prefix('{').ok_or_else(|| {
        tracing::error!(event, "recoverable payload is not a JSON object");
        Error::Internal
    })?;
    let id = engine.publish_recoverable(room, event, tail, except).await?;
    metrics::counter!("fleetcast_events_out_total", "event" => event.to_string()).increment(1);
    Ok(id)
}

/// Publishes one recoverable event to a room and to user rooms (CONTRACT §2: "trip
/// subscribers and the user rooms of driver, organizer and passengers"). A socket in the
/// room and in a user room receives it once: the user-room frames skip the room's members.
/// Emission happens after the change is committed, so a failure is logged and counted,
/// never returned (CONTRACT §5).
pub async fn publish_to_room_and_users<T: Serialize>(
    engine: &Engine,
    tenant: &crate::domain::Tenant,
    room: Option<&RoomKey>,
    users: &[&str],
    event: &str,
    payload: &T,
) {
    let mut failed = false;
    if let Some(room) = room {
        failed |= publish_recoverable(engine, room, event, payload).await.is_err();
    }
    let mut seen = std::collections::HashSet::new();
    for user in users {
        if !seen.insert(*user) {
            continue;
        }
        let user_room = RoomKey::new(tenant, &format!("user:{user}"));
        let except: Vec<&RoomKey> = room.into_iter().collect();
        failed |= publish_recoverable_except(engine, &user_room, event, payload, &except).await.is_err();
    }
    if failed {
        metrics::counter!("fleetcast_publish_failures_total").increment(1);
        tracing::warn!(event, "an event was not published to every room");
    }
}

/// Publishes one recoverable event to the user rooms of `users` of `tenant` (offers,
/// notifications); failures are logged and counted.
pub async fn publish_to_users<T: Serialize>(
    engine: &Engine,
    tenant: &crate::domain::Tenant,
    users: &[&str],
    event: &str,
    payload: &T,
) {
    publish_to_room_and_users(engine, tenant, None, users, event, payload).await;
}

/// Sockets that joined a room with `since` and are being sent its history. While a socket
/// is listed, recoverable frames for the room are also kept for it; when its replay is done
/// [`Replays::finish`] joins it to the room and sends what arrived meanwhile, skipping what
/// the replay already carried, under the same lock the delivery takes: no gap, no
/// duplicate at the seam, and order kept.
/// Frames kept for one replaying socket: `(id, event, payload JSON)`.
type Kept = Vec<(EventId, String, String)>;
/// Local room name → replaying sockets and their kept frames.
type Pending = HashMap<String, Vec<(String, Kept)>>;
/// Local room name → sockets that just finished a replay: (socket id, last id sent to it,
/// when). A frame published before the history read can still be on its way from Redis
/// when the socket joins; the socket skips live frames up to that id.
type Fresh = HashMap<String, Vec<(String, EventId, std::time::Instant)>>;

/// How long a joined socket's replay watermark is kept at most (a frame older than this
/// cannot still be in flight).
const WATERMARK_TTL: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Default)]
pub struct Replays {
    /// Local room name → (socket id, frames that arrived during its replay). Bounded by the
    /// room's publish rate over one history read; the lock is never held across `.await`.
    pending: std::sync::Mutex<(Pending, Fresh)>,
}

impl Replays {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Pending, Fresh)> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts keeping `room`'s recoverable frames for socket `sid`.
    pub fn begin(&self, room: &RoomKey, sid: &str) {
        self.lock().0.entry(room.as_str().to_string()).or_default().push((sid.to_string(), Vec::new()));
    }

    /// Stops keeping frames for `sid` without joining (the replay failed).
    pub fn abandon(&self, room: &RoomKey, sid: &str) {
        let mut guard = self.lock();
        let p = &mut guard.0;
        if let Some(list) = p.get_mut(room.as_str()) {
            list.retain(|(s, _)| s != sid);
            if list.is_empty() {
                p.remove(room.as_str());
            }
        }
    }

    /// Joins `s` to `room` and sends the frames kept since [`Replays::begin`] that are newer
    /// than `replayed` (the last id the replay sent).
    pub fn finish(&self, room: &RoomKey, s: &SocketRef, replayed: Option<EventId>) {
        let sid = s.id.to_string();
        let mut guard = self.lock();
        let (p, fresh) = &mut *guard;
        let mut kept = Vec::new();
        if let Some(list) = p.get_mut(room.as_str()) {
            if let Some(i) = list.iter().position(|(x, _)| *x == sid) {
                kept = list.swap_remove(i).1;
            }
            if list.is_empty() {
                p.remove(room.as_str());
            }
        }
        s.join(room.as_str().to_string());
        let mut last = replayed;
        for (id, event, json) in kept {
            if last.is_none_or(|r| id > r) {
                send_to_socket(s, &event, &json);
                last = Some(id);
            }
        }
        // Marks of rooms that went quiet are dropped here (joins with `since` are rare).
        fresh.retain(|_, marks| {
            marks.retain(|(_, _, at)| at.elapsed() < WATERMARK_TTL);
            !marks.is_empty()
        });
        if let Some(mark) = last {
            fresh.entry(room.as_str().to_string()).or_default().push((sid, mark, std::time::Instant::now()));
        }
    }

    /// Keeps a recoverable frame for the sockets replaying `room`, then runs `emit` (the
    /// live delivery to the room's members) under the same lock.
    /// `emit` gets the sockets that already have this frame (from their replay).
    fn keep_then(&self, room: &RoomKey, event: &str, json: &str, emit: impl FnOnce(&[String])) {
        let mut guard = self.lock();
        let (p, fresh) = &mut *guard;
        let id = event_id_of(json);
        if let Some(list) = p.get_mut(room.as_str())
            && let Some(id) = id
        {
            for (_, frames) in list.iter_mut() {
                frames.push((id, event.to_string(), json.to_string()));
            }
        }
        let mut skip = Vec::new();
        if let Some(id) = id
            && let Some(marks) = fresh.get_mut(room.as_str())
        {
            // Frames of a room arrive in id order: once one is past a socket's mark, the
            // socket is past the seam.
            marks.retain(|(sid, mark, at)| {
                if *mark >= id {
                    skip.push(sid.clone());
                }
                *mark > id && at.elapsed() < WATERMARK_TTL
            });
            if marks.is_empty() {
                fresh.remove(room.as_str());
            }
        }
        emit(&skip);
    }
}

/// The `eventId` at the head of a recoverable payload.
fn event_id_of(json: &str) -> Option<EventId> {
    let rest = json.strip_prefix("{\"eventId\":\"")?;
    EventId::parse(&rest[..rest.find('"')?])
}

/// Publishes a volatile event to `room` on every node, except to the socket `except_sid`
/// (the sender of `chat:typing`).
pub async fn publish_except<T: Serialize>(
    engine: &Engine,
    room: &RoomKey,
    event: &str,
    payload: &T,
    except_sid: &str,
) -> Result<()> {
    let json = stamp(payload)?;
    engine.publish(room, &frame::encode(event, frame::VOLATILE, Some(except_sid), &json)).await?;
    metrics::counter!("fleetcast_events_out_total", "event" => event.to_string()).increment(1);
    Ok(())
}

/// Builds the frame of a location update (published by the engine in the same round trip
/// that stores it, so the write and the broadcast cannot diverge).
///
/// Volatile in the contract's sense (no `eventId`, never replayed) but queued like any
/// frame on each socket: socketioxide's volatile path keeps only a socket's latest unsent
/// frame, so a node busy for a few hundred milliseconds dropped updates a driver had been
/// told were accepted (seen as < 100 % delivery in the load test). A socket whose queue
/// (256 frames) is full still loses frames rather than holding the node's memory.
pub fn location_frame(location_json_with_stamp: &str) -> String {
    metrics::counter!("fleetcast_events_out_total", "event" => events::LOCATION).increment(1);
    frame::encode(events::LOCATION, 0, None, location_json_with_stamp)
}

/// Event of the driver-location SSE stream.
pub const DRIVER_LOCATION: &str = "driver_location";

/// Builds the frame for a driver's location room: `driver_location {driverId, location:
/// {latitude, longitude, heading?, speed?}, timestamp}` (not recoverable; queued like
/// [`location_frame`]).
pub fn driver_location_frame(driver: &str, fix: &crate::domain::LocationFix) -> Result<String> {
    #[derive(Serialize)]
    struct Position {
        latitude: f64,
        longitude: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        heading: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        speed: Option<f64>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct DriverLocation<'a> {
        driver_id: &'a str,
        location: Position,
        timestamp: &'a str,
        emitted_at: &'a str,
    }
    let payload = DriverLocation {
        driver_id: driver,
        location: Position { latitude: fix.lat, longitude: fix.lng, heading: fix.heading, speed: fix.speed },
        timestamp: &fix.updated_at,
        emitted_at: &crate::domain::now_iso(),
    };
    let json = serde_json::to_string(&payload).map_err(|_| Error::Internal)?;
    Ok(frame::encode(DRIVER_LOCATION, 0, None, &json))
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
pub fn deliverer(
    io: Arc<std::sync::OnceLock<SocketIo>>,
    replays: Arc<Replays>,
    sse: Arc<crate::sse::SseHub>,
) -> Deliver {
    Arc::new(move |room: &RoomKey, text: &str| {
        let Some(io) = io.get() else { return };
        let Some(f) = frame::decode(text) else {
            tracing::warn!("malformed frame dropped");
            return;
        };
        if f.flags & frame::CONTROL != 0 {
            for s in io.to(room.as_str().to_string()).sockets() {
                crate::socket::control(&s, f.event, f.json);
            }
            return;
        }
        let Ok(raw) = serde_json::from_str::<&RawValue>(f.json) else {
            tracing::warn!(event = f.event, "frame with malformed JSON dropped");
            return;
        };
        match event_id_of(f.json) {
            Some(id) => sse.deliver(room, f.event, id, f.json),
            None if f.event == DRIVER_LOCATION => sse.deliver_volatile(room, f.event, f.json),
            None => {}
        }
        // Kept for replaying sockets and emitted under one lock, so that
        // `Replays::finish` (join + drain) is atomic with respect to delivery.
        replays.keep_then(room, f.event, f.json, |skip| {
            if f.flags & frame::EXCEPT_ROOM != 0 {
                let except: Vec<String> = f.except.unwrap_or_default().split('\u{1e}').map(str::to_string).collect();
                let op = io.to(room.as_str().to_string()).except(except);
                if let Some(Err(e)) = op.emit(f.event, raw).now_or_never() {
                    tracing::debug!(error = %e, event = f.event, "local delivery failed for some sockets");
                }
                return;
            }
            if let Some(except) = f.except {
                // Sockets are not in rooms of their own ids, so "all but one" is done here;
                // only small rooms (chats) use it.
                for s in io.to(room.as_str().to_string()).sockets() {
                    if s.id.to_string() != except {
                        let _ = s.volatile().emit(f.event, raw);
                    }
                }
                return;
            }
            if !skip.is_empty() {
                // Sockets that got this frame from their replay a moment ago (rare: only
                // around a join with `since`).
                for s in io.to(room.as_str().to_string()).sockets() {
                    if !skip.contains(&s.id.to_string()) {
                        let _ = s.emit(f.event, raw);
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
                Some(Err(e)) => tracing::debug!(error = %e, event = f.event, "local delivery failed for some sockets"),
                None => tracing::error!("local broadcast did not complete at once"),
            }
        });
        metrics::counter!("fleetcast_deliveries_total").increment(1);
    })
}
