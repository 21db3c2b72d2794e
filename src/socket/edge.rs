//! The Socket.IO edge's state, [`Edge`]: shared by every handler of the node's sockets
//! (socketioxide state), with the connection-attempt limiter and the replay seam.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

use governor::{Quota, RateLimiter};
use socketioxide::SocketIo;

use super::replay::Replays;
use crate::app::App;

/// Connection-attempt limiter keyed by client address.
pub type ConnLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// Builds the connection limiter, or `None` when disabled (rate 0).
pub fn conn_limiter(per_sec: u32, burst: u32) -> Option<ConnLimiter> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

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
    pub replays: Replays,
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
            replays: Replays::default(),
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
