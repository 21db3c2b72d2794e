//! Socket.IO edge (CONTRACT §1–2). Every handler answers its ack exactly once, within the
//! ack deadline, whatever the payload; nothing a client sends closes its socket or touches
//! another one.
//!
//! - [`edge`]: the edge's state ([`Edge`]) and its connection limiter.
//! - [`connect`]: the connect middleware (connection flood limit, token, per-user cap), the
//!   connect and disconnect handlers.
//! - `handlers`: the dispatcher and one handler per client event, by role or concern.
//! - [`payload`]: inbound payload types and their validation.
//! - `ack`: the flood check, the ack deadline and the ack's shape.
//! - `arrival`: the arrival order of a socket's events (location updates are applied in it).
//! - `session`: per-socket state and room join/leave/replay.
//! - [`replay`]: the replay seam of a join with `since`.
//! - [`sink`]: this edge's delivery sink (frames to local sockets, node-to-node commands).

mod ack;
mod arrival;
pub mod connect;
pub mod edge;
mod handlers;
pub mod payload;
pub mod replay;
mod session;
pub mod sink;

pub use connect::attach;
pub use edge::Edge;

/// What the fuzz targets in `fuzz/` call (not an API): the step every event's payload goes
/// through between socketioxide's `TryData` and the handler's typed parse.
#[doc(hidden)]
pub mod fuzzing {
    pub use super::handlers::payload as event_payload;
}
