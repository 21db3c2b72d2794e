//! [`SseHub`]: this node's SSE streams by room, each with its own bounded channel, and
//! the SSE edge's delivery sink. A stream that does not keep up is cut off (counted in
//! `fleetcast_sse_slow_clients_total`) instead of growing memory; it reconnects with its
//! last id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::domain::{EventId, RoomKey};
use crate::engine::frame::Frame;
use crate::events;
use crate::fanout::{Control, LocalCounts, Sink};

/// Frames buffered per stream before the client counts as too slow.
const STREAM_BUFFER: usize = 256;

/// A frame for SSE streams: `(id, event name, payload JSON)`.
pub(super) type SseFrame = (EventId, Arc<str>, Arc<str>);

/// Local room name → the room's streams (id, bounded sender).
type Streams = HashMap<String, Vec<(u64, mpsc::Sender<SseFrame>)>>;

/// SSE streams of this node, by local room name.
#[derive(Default)]
pub struct SseHub {
    /// The lock is never held across `.await`; senders are bounded.
    streams: std::sync::Mutex<Streams>,
    next: AtomicU64,
}

impl SseHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn register(&self, room: &RoomKey) -> (u64, mpsc::Receiver<SseFrame>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.lock().entry(room.as_str().to_string()).or_default().push((id, tx));
        metrics::gauge!("fleetcast_sse_streams").increment(1.0);
        (id, rx)
    }

    pub(super) fn unregister(&self, room: &RoomKey, id: u64) {
        let mut m = self.lock();
        if let Some(list) = m.get_mut(room.as_str()) {
            let before = list.len();
            list.retain(|(i, _)| *i != id);
            if list.len() < before {
                metrics::gauge!("fleetcast_sse_streams").decrement(1.0);
            }
            if list.is_empty() {
                m.remove(room.as_str());
            }
        }
    }

    /// Hands a recoverable frame to the room's streams; a full stream is cut off.
    pub fn deliver(&self, room: &RoomKey, event: &str, id: EventId, json: &str) {
        let mut m = self.lock();
        let Some(list) = m.get_mut(room.as_str()) else { return };
        let frame: SseFrame = (id, Arc::from(event), Arc::from(json));
        list.retain(|(_, tx)| match tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("fleetcast_sse_slow_clients_total").increment(1);
                metrics::gauge!("fleetcast_sse_streams").decrement(1.0);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::gauge!("fleetcast_sse_streams").decrement(1.0);
                false
            }
        });
    }

    /// Hands a volatile frame (a driver location) to the room's streams with an id of this
    /// node's clock: it moves the client's last id but is never replayed.
    pub fn deliver_volatile(&self, room: &RoomKey, event: &str, json: &str) {
        if !self.lock().contains_key(room.as_str()) {
            return;
        }
        let ms = crate::domain::now_ms();
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.deliver(room, event, EventId { ms, seq }, json);
    }

    /// Ends every stream (graceful shutdown): clients reconnect elsewhere with their id.
    pub fn close_all(&self) {
        let mut m = self.lock();
        let n: usize = m.values().map(Vec::len).sum();
        metrics::gauge!("fleetcast_sse_streams").decrement(n as f64);
        m.clear();
    }

    /// Streams open on this node for `room`.
    pub fn local_count(&self, room: &RoomKey) -> usize {
        self.lock().get(room.as_str()).map_or(0, Vec::len)
    }
}

impl Sink for SseHub {
    fn deliver(&self, room: &RoomKey, frame: &Frame<'_>, _raw: &serde_json::value::RawValue, id: Option<EventId>) {
        match id {
            Some(id) => SseHub::deliver(self, room, frame.event, id, frame.json),
            None if frame.event == events::DRIVER_LOCATION => self.deliver_volatile(room, frame.event, frame.json),
            None => {}
        }
    }

    fn control(&self, room: &RoomKey, command: &Control) {
        match command {
            Control::LeaveTrip(_) => {}
            // Ended: the browser reconnects with its last id and learns whether the replay
            // reaches back.
            Control::Gap => {
                if let Some(list) = self.lock().remove(room.as_str()) {
                    metrics::gauge!("fleetcast_sse_streams").decrement(list.len() as f64);
                    metrics::counter!("fleetcast_gap_connections_cut_total").increment(list.len() as u64);
                }
            }
        }
    }

    fn counts(&self) -> HashMap<String, LocalCounts> {
        let mut out: HashMap<String, LocalCounts> = HashMap::new();
        for (room, streams) in self.lock().iter() {
            if let Some(key) = RoomKey::parse(room) {
                out.entry(key.tenant().to_string()).or_default().sse_streams += streams.len() as u64;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_that_does_not_keep_up_is_cut_off_instead_of_buffering() {
        let hub = SseHub::default();
        let room = RoomKey::entity(&crate::domain::Tenant("t".into()), crate::domain::rooms::Entity::Order, "o1");
        let (_id, mut slow) = hub.register(&room);
        let (_id2, mut fast) = hub.register(&room);
        for seq in 0..(STREAM_BUFFER as u64 + 10) {
            hub.deliver(&room, "order_update", EventId { ms: 1, seq }, "{}");
            // The fast stream keeps reading; the slow one never does.
            assert!(fast.recv().await.is_some());
        }
        assert_eq!(hub.local_count(&room), 1, "only the slow stream was cut off");
        let mut got = 0;
        while slow.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(got, STREAM_BUFFER, "its buffer was bounded, then the stream ended");
    }
}
