//! The Socket.IO edge's state, [`Edge`]: shared by every handler of the node's sockets
//! (socketioxide state), with the connection-attempt limiter and the replay seam.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use socketioxide::SocketIo;
use socketioxide::socket::Sid;

use super::replay::{Replays, send_to_socket};
use super::session::Session;
use crate::app::App;
use crate::events::{self, AuthExpired};

/// Connection-attempt limiter keyed by client address.
pub type ConnLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

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
    /// Events being handled (each holds a token until its ack is sent): a draining node
    /// waits for them before it closes the sockets.
    pub in_flight: tokio_util::task::TaskTracker,
    /// Every live socket by its token's `exp`, soonest first: one entry per socket (moved
    /// by `auth:refresh`, removed at disconnect); the lock is never held across `.await`.
    expiries: Mutex<BTreeSet<(i64, Sid)>>,
}

impl Edge {
    /// The edge of `app`.
    pub fn new(app: Arc<App>) -> Arc<Self> {
        let conn_limiter = crate::limits::keyed_limiter(app.cfg.conn_rate_per_sec, app.cfg.conn_rate_burst);
        Arc::new(Self {
            app,
            conn_limiter,
            limiter_clock: governor::clock::DefaultClock::default(),
            replays: Replays::default(),
            io: OnceLock::new(),
            in_flight: tokio_util::task::TaskTracker::new(),
            expiries: Mutex::new(BTreeSet::new()),
        })
    }

    fn expiries(&self) -> std::sync::MutexGuard<'_, BTreeSet<(i64, Sid)>> {
        self.expiries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tracks socket `sid` until `exp`, or moves it from `old` (a refresh).
    pub(super) fn watch_expiry(&self, sid: Sid, old: Option<i64>, exp: i64) {
        let mut e = self.expiries();
        if let Some(old) = old {
            e.remove(&(old, sid));
        }
        e.insert((exp, sid));
    }

    /// Stops tracking a socket that went away.
    pub(super) fn forget_expiry(&self, sid: Sid, exp: i64) {
        self.expiries().remove(&(exp, sid));
    }

    /// Closes the sockets whose token expired more than the grace ago without a refresh:
    /// each gets `server:auth:expired {}`, then is disconnected. Returns how many. Run by
    /// the node every second.
    pub fn close_expired(&self, now_ms: i64) -> usize {
        let grace = self.app.cfg.auth_expiry_grace_ms as i64;
        let due: Vec<(i64, Sid)> = {
            let mut e = self.expiries();
            let mut due = Vec::new();
            while let Some(first) = e.first().copied() {
                if first.0.saturating_mul(1_000).saturating_add(grace) > now_ms {
                    break;
                }
                e.pop_first();
                due.push(first);
            }
            due
        };
        let Some(io) = self.io.get() else { return 0 };
        let mut closed = 0;
        for (_, sid) in due {
            let Some(s) = io.get_socket(sid) else { continue };
            let Some(session) = s.extensions.get::<Arc<Session>>() else { continue };
            if session.exp.load(Ordering::SeqCst).saturating_mul(1_000).saturating_add(grace) > now_ms {
                continue;
            }
            if let Ok(json) = serde_json::to_string(&AuthExpired {}) {
                send_to_socket(&s, events::AUTH_EXPIRED, &json);
            }
            metrics::counter!("fleetcast_connections_expired_total").increment(1);
            if let Err(e) = s.disconnect() {
                tracing::debug!(error = %e, "expired socket already gone");
            }
            closed += 1;
        }
        closed
    }

    /// Waits (at most `bound`) until every event in flight is answered; call after the
    /// node is marked shutting down.
    pub async fn drain_events(&self, bound: std::time::Duration) {
        self.in_flight.close();
        if tokio::time::timeout(bound, self.in_flight.wait()).await.is_err() {
            tracing::warn!(left = self.in_flight.len(), "events still in flight after the drain bound");
        }
    }

    /// The drivers with a socket on this node, once each.
    pub fn local_drivers(&self) -> Vec<crate::auth::Claims> {
        let Some(io) = self.io.get() else { return Vec::new() };
        let mut seen = std::collections::HashSet::new();
        io.sockets()
            .into_iter()
            .filter_map(|s| s.extensions.get::<Arc<Session>>())
            .filter(|session| session.claims.role == crate::domain::Role::Driver)
            .filter(|session| seen.insert((session.claims.tenant.0.clone(), session.claims.user.0.clone())))
            .map(|session| session.claims.clone())
            .collect()
    }

    /// Evicts idle keys of the connection limiter (called by the node's heartbeat).
    pub fn retain_recent(&self) {
        if let Some(l) = &self.conn_limiter {
            l.retain_recent();
        }
    }
}
