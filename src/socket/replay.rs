//! The replay seam of a join with `since` (CONTRACT §6 recovery), and direct emits to one
//! socket. While a socket is listed in [`Replays`], recoverable frames for the room are also
//! kept for it; when its replay is done [`Replays::finish`] joins it to the room and sends
//! what arrived meanwhile, skipping what the replay already carried, under the same lock
//! the delivery takes: no gap, no duplicate at the seam, and order kept.

use std::collections::HashMap;

use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;

use crate::domain::{EventId, RoomKey};

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

/// Sockets catching up on a room's history before they receive it live.
#[derive(Default)]
pub struct Replays {
    /// Bounded by the room's publish rate over one history read; the lock is never held
    /// across `.await`.
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
    pub(super) fn keep_then(
        &self,
        room: &RoomKey,
        event: &str,
        json: &str,
        id: Option<EventId>,
        emit: impl FnOnce(&[String]),
    ) {
        let mut guard = self.lock();
        let (p, fresh) = &mut *guard;
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

/// Sends an already-stamped event to one socket (a reply such as the current location
/// after `passenger:subscribe`, or replayed history); not a room emission, so it bypasses
/// the engine.
pub fn send_to_socket(s: &SocketRef, event: &str, json: &str) {
    let Ok(raw) = serde_json::from_str::<&RawValue>(json) else { return };
    if let Err(e) = s.emit(event, raw) {
        tracing::debug!(error = %e, "direct emit failed");
    }
    metrics::counter!("fleetcast_events_out_total", "event" => event.to_string()).increment(1);
}
