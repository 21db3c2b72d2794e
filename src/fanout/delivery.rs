//! Local delivery: the seam between the engine and the transports. The engine hands every
//! frame it receives for a room to [`Delivery::deliver`]; it decodes the frame once and
//! hands it to each registered [`Sink`] — the Socket.IO edge and the SSE edge each register
//! one at start-up, with the same shape (Centrifugo's `Transport` is the model). Delivery
//! never names a transport, and nothing below the edges imports one.
//!
//! Node-to-node commands ([`Control`]) ride the same rooms and the same path as events, as
//! control frames that no client ever receives.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;

use crate::domain::{EventId, RoomKey, TripId};
use crate::engine::Deliver;
use crate::engine::frame::{self, Frame};

/// A transport's local members of rooms.
pub trait Sink: Send + Sync {
    /// A frame for `room` arrived: hand it to this transport's local members of the room.
    /// `raw` is its payload, checked to be JSON once for every sink; `id` is the event id of
    /// a recoverable event. Runs on the engine's delivery task: must not block or await.
    fn deliver(&self, room: &RoomKey, frame: &Frame<'_>, raw: &RawValue, id: Option<EventId>);

    /// A node-to-node command for this transport's local members of `room`.
    fn control(&self, room: &RoomKey, command: &Control);

    /// This transport's local figures, by tenant (for the node's stats).
    fn counts(&self) -> HashMap<String, LocalCounts>;

    /// True for the sink of geo-cell rooms (live areas): those rooms' frames go to such
    /// sinks only, as no socket or stream can be a member of one.
    fn takes_area_cells(&self) -> bool {
        false
    }
}

/// One transport's figures for one tenant on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalCounts {
    /// Socket.IO connections.
    pub connections: u64,
    /// SSE streams.
    pub sse_streams: u64,
    /// Trips with a subscribed socket here.
    pub active_trips: BTreeSet<String>,
}

/// A node-to-node command, sent to a room (through the one publish path) and run by every
/// node for its local members of that room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The user's sockets leave the trip's room and free its subscription slot (a
    /// cancelled booking: CONTRACT §6).
    LeaveTrip(TripId),
    /// This node may have missed recoverable events of the room and cannot deliver them
    /// (sent by the engine itself, `frame::GAP`): the room's local members are cut off and
    /// recover with `since` / `Last-Event-ID`, which tells them whether it reaches back.
    Gap,
}

const LEAVE_TRIP: &str = "leave-trip";

impl Control {
    /// The control frame carrying this command.
    pub fn frame(&self) -> String {
        match self {
            Control::LeaveTrip(trip) => frame::encode(LEAVE_TRIP, frame::CONTROL, None, &trip.0),
            Control::Gap => frame::gap(),
        }
    }

    fn decode(f: &Frame<'_>) -> Option<Self> {
        match f.event {
            LEAVE_TRIP => Some(Control::LeaveTrip(TripId(f.json.to_string()))),
            frame::GAP => Some(Control::Gap),
            _ => None,
        }
    }
}

/// The node's sinks, registered once at start-up before the listener binds (frames that
/// arrive earlier have no local member to reach).
#[derive(Default)]
pub struct Delivery {
    sinks: OnceLock<Vec<Arc<dyn Sink>>>,
}

impl Delivery {
    /// Registers the node's sinks; a second call is ignored.
    pub fn register(&self, sinks: Vec<Arc<dyn Sink>>) {
        if self.sinks.set(sinks).is_err() {
            tracing::error!("delivery sinks registered twice; the second set is ignored");
        }
    }

    fn sinks(&self) -> &[Arc<dyn Sink>] {
        self.sinks.get().map_or(&[], Vec::as_slice)
    }

    /// The engine's delivery callback.
    pub fn callback(self: &Arc<Self>) -> Deliver {
        let this = self.clone();
        Arc::new(move |room: &RoomKey, text: &str| this.deliver(room, text))
    }

    /// Decodes a frame and hands it to every sink.
    pub fn deliver(&self, room: &RoomKey, text: &str) {
        let Some(f) = frame::decode(text) else {
            tracing::warn!("malformed frame dropped");
            return;
        };
        if f.flags & frame::CONTROL != 0 {
            match Control::decode(&f) {
                Some(c) => self.sinks().iter().for_each(|s| s.control(room, &c)),
                None => tracing::warn!(command = f.event, "unknown control command"),
            }
            return;
        }
        let area_cell = room.name().starts_with(crate::domain::rooms::AREA_CELL);
        let Ok(raw) = serde_json::from_str::<&RawValue>(f.json) else {
            tracing::warn!(event = f.event, "frame with malformed JSON dropped");
            return;
        };
        let id = frame::event_id_of(f.json);
        for s in self.sinks() {
            if s.takes_area_cells() == area_cell {
                s.deliver(room, &f, raw, id);
            }
        }
        metrics::counter!("fleetcast_deliveries_total").increment(1);
    }

    /// Every sink's figures, merged by tenant.
    pub fn counts(&self) -> HashMap<String, LocalCounts> {
        let mut out: HashMap<String, LocalCounts> = HashMap::new();
        for s in self.sinks() {
            for (tenant, c) in s.counts() {
                let e = out.entry(tenant).or_default();
                e.connections += c.connections;
                e.sse_streams += c.sse_streams;
                e.active_trips.extend(c.active_trips);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_commands_round_trip_through_their_frame() {
        let c = Control::LeaveTrip(TripId("t1".into()));
        let text = c.frame();
        let f = frame::decode(&text).expect("decodes");
        assert_ne!(f.flags & frame::CONTROL, 0);
        assert_eq!(Control::decode(&f), Some(c));
        let gap = frame::decode(&Control::Gap.frame()).map(|f| Control::decode(&f));
        assert_eq!(gap, Some(Some(Control::Gap)));
    }
}
