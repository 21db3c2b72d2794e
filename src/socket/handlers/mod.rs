//! One handler per client event of CONTRACT §1–2, by role or concern: `auth` (token
//! refresh), [`driver`] (connect,
//! location, status), [`passenger`] (subscribe, unsubscribe), [`rooms`] (rooms, chat,
//! admin subscribe, heartbeat), [`offers`] (offer subscription, accept, decline),
//! [`areas`] (live areas) and [`conductor`] (scan). Each takes the raw payload and validates it into domain values
//! (`INVALID_PAYLOAD`), then calls its flow, which checks role, existence and ownership,
//! then rate limits, and only then writes — the order of CONTRACT §6.

use std::sync::Arc;

use serde_json::Value;
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};

use super::ack::{run_event, send_ack};
use super::arrival::Arrival;
use super::edge::Edge;
use super::session::Session;
use crate::error::Error;

mod areas;
mod auth;
mod conductor;
mod driver;
mod offers;
mod passenger;
mod rooms;

type Payload = TryData<Value>;

/// Registers the socket's one message handler, which dispatches on the event name. One
/// handler instead of one per event: socketioxide keeps a per-socket table of handlers,
/// and 16 entries cost an idle socket ≈ 1.2 KiB (measured with heaptrack, BENCHMARKS.md).
pub(super) fn register(s: &SocketRef) {
    s.on_fallback(
        async |s: SocketRef,
               Event(name): Event,
               p: Payload,
               ack: AckSender,
               State(edge): State<Arc<Edge>>,
               Extension(session): Extension<Arc<Session>>,
               arrival: Arrival| {
            match payload(p) {
                Ok(p) => dispatch(&edge, &s, &session, &name, p, ack, arrival).await,
                Err(e) => {
                    metrics::counter!("fleetcast_events_in_total", "event" => "unreadable").increment(1);
                    send_ack(ack, Err(e));
                }
            }
        },
    );
}

/// The event's payload: `None` when the client sent none, an error when what it sent is
/// not readable JSON — nested deeper than the JSON reader goes (128 levels), for one: that
/// must be `INVALID_PAYLOAD`, never taken for "no payload" (which a handler with optional
/// fields would accept). socketioxide says "no argument" only through its error's text.
pub fn payload(p: Payload) -> Result<Option<Value>, Error> {
    match p.0 {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.to_string().contains("first element not found") => Ok(None),
        Err(e) => Err(Error::invalid(format!("payload is not readable JSON: {e}"))),
    }
}

/// Runs the handler of event `name` (CONTRACT §2), or acks an unknown event with
/// `INVALID_PAYLOAD`. Only location updates keep their arrival ticket (they are applied in
/// the socket's arrival order); every other event gives it back as it starts.
async fn dispatch(
    edge: &Edge,
    s: &SocketRef,
    session: &Session,
    name: &str,
    p: Option<Value>,
    ack: AckSender,
    arrival: Arrival,
) {
    if name == "driver:location:update" {
        return run_event(edge, "driver:location:update", session, ack, driver::location(edge, s, session, p, arrival))
            .await;
    }
    drop(arrival);
    macro_rules! route {
        ($($event:literal => $handler:path,)*) => {
            match name {
                $($event => run_event(edge, $event, session, ack, $handler(edge, s, session, p)).await,)*
                _ => send_ack(ack, Err(Error::invalid("unknown event"))),
            }
        };
    }
    route! {
        "driver:connect" => driver::connect,
        "driver:status" => driver::status,
        "passenger:subscribe" => passenger::subscribe,
        "passenger:unsubscribe" => passenger::unsubscribe,
        "admin:subscribe" => rooms::admin_subscribe,
        "user:sync" => rooms::user_sync,
        "heartbeat" => rooms::heartbeat,
        "room:join" => rooms::join,
        "room:leave" => rooms::leave,
        "chat:typing" => rooms::chat_typing,
        "chat:read" => rooms::chat_read,
        "driver:subscribe" => offers::subscribe,
        "driver:unsubscribe" => offers::unsubscribe,
        "trip:offer:accept" => offers::accept,
        "trip:offer:decline" => offers::decline,
        "conductor:scan" => conductor::scan,
        "auth:refresh" => auth::refresh,
        "area:subscribe" => areas::subscribe,
        "area:unsubscribe" => areas::unsubscribe,
    }
}
