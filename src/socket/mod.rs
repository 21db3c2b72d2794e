//! Socket.IO edge (CONTRACT §1–2). Every handler answers its ack exactly once, within the
//! ack deadline, whatever the payload; nothing a client sends closes its socket or touches
//! another one.
//!
//! - [`connect`]: the connect middleware (connection flood limit, token, per-user cap), the
//!   connect and disconnect handlers.
//! - `handlers`: the dispatcher and one handler per client event, by role or concern.
//! - [`payload`]: inbound payload types and their validation.
//! - `ack`: the flood check, the ack deadline and the ack's shape.
//! - `session`: per-socket state and room join/leave/replay.
//! - [`replay`]: the replay seam of a join with `since`.
//! - [`sink`]: this edge's delivery sink (frames to local sockets, node-to-node commands).

use std::sync::{Arc, OnceLock};

use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;

use crate::app::App;

mod ack;
pub mod connect;
mod handlers;
pub mod payload;
pub mod replay;
mod session;
pub mod sink;

pub use connect::{ConnLimiter, conn_limiter};

/// The Socket.IO edge of a node: its state in every handler.
pub struct Edge {
    /// The node's shared state.
    pub app: Arc<App>,
    /// Connection-attempt limiter per address (`None` = disabled).
    pub conn_limiter: Option<ConnLimiter>,
    /// The clock of every socket's event limiter, made once: making one reads the CPU's
    /// features (CPUID, slow in a VM), which made it a visible share of a connection's cost.
    pub limiter_clock: governor::clock::DefaultClock,
    /// Sockets catching up on a room's history before they receive it live.
    pub replays: replay::Replays,
    /// The Socket.IO server (set before the listener binds).
    pub io: OnceLock<SocketIo>,
}

impl Edge {
    /// The edge of `app`.
    pub fn new(app: Arc<App>) -> Arc<Self> {
        let conn_limiter = conn_limiter(app.cfg.conn_rate_per_sec, app.cfg.conn_rate_burst);
        Arc::new(Self {
            app,
            conn_limiter,
            limiter_clock: governor::clock::DefaultClock::default(),
            replays: replay::Replays::default(),
            io: OnceLock::new(),
        })
    }

    /// Evicts idle keys of the connection limiter (called by the node's heartbeat).
    pub fn retain_recent(&self) {
        if let Some(l) = &self.conn_limiter {
            l.retain_recent();
        }
    }
}

/// Registers the default namespace with its middleware and handlers, and keeps `io`.
pub fn attach(edge: &Edge, io: &SocketIo) {
    io.ns("/", connect::on_connect.with(connect::authenticate));
    let _ = edge.io.set(io.clone());
}
