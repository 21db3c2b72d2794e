//! Connecting (CONTRACT §1): the connect middleware refuses a flood from one address
//! (`RATE_LIMITED`), a missing or bad token (`NO_TOKEN`, `INVALID_TOKEN`) and a user past the
//! connection cap, then registers the socket's handlers and its [`Session`]; the connect
//! handler joins the user's room; the disconnect handler releases rooms and slots.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use governor::{Quota, RateLimiter};
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

use super::edge::Edge;
use super::session::{Session, join};
use crate::auth::AuthError;
use crate::domain::{RoomKey, TripId};
use crate::engine::{Claim, SlotKind};
use crate::flows::{areas, offers, presence, subscriptions};

/// Why a connection was refused; its `Display` is the exact `connect_error` message.
#[derive(Debug)]
pub(super) struct Refused(&'static str);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The token from `auth.token` (raw or `Bearer …`), else the `Authorization` header.
fn find_token(s: &SocketRef, auth: Option<Value>) -> std::result::Result<String, AuthError> {
    if let Some(Value::Object(map)) = auth {
        match map.get("token") {
            Some(Value::String(t)) => return Ok(t.clone()),
            Some(Value::Null) | None => {}
            Some(_) => return Err(AuthError::InvalidToken),
        }
    }
    s.req_parts()
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .ok_or(AuthError::NoToken)
}

/// The client address of a socket's handshake request.
fn client_ip(s: &SocketRef, trust_forwarded_for: bool) -> Option<IpAddr> {
    let parts = s.req_parts();
    crate::limits::client_ip(&parts.headers, &parts.extensions, trust_forwarded_for)
}

/// Connect middleware: address flood limit, token, per-user connection cap.
pub(super) async fn authenticate(
    s: SocketRef,
    TryData(auth): TryData<Value>,
    State(edge): State<Arc<Edge>>,
) -> std::result::Result<(), Refused> {
    let app = &edge.app;
    if let (Some(limiter), Some(ip)) = (&edge.conn_limiter, client_ip(&s, app.cfg.trust_forwarded_for))
        && limiter.check_key(&ip).is_err()
    {
        metrics::counter!("fleetcast_connections_refused_total", "reason" => "RATE_LIMITED").increment(1);
        return Err(Refused("RATE_LIMITED"));
    }
    let claims = find_token(&s, auth.ok()).and_then(|t| app.verifier.verify(&t)).map_err(|e| {
        let code = match e {
            AuthError::NoToken => "NO_TOKEN",
            AuthError::InvalidToken => "INVALID_TOKEN",
        };
        metrics::counter!("fleetcast_connections_refused_total", "reason" => code).increment(1);
        Refused(code)
    })?;
    let sid = s.id.to_string();
    match app
        .engine
        .claim(SlotKind::Connections, &claims.tenant, &claims.user, &sid, &[&sid], app.cfg.max_connections_per_user)
        .await
    {
        Ok(Claim::Granted) => {}
        Ok(Claim::Refused) => {
            metrics::counter!("fleetcast_connections_refused_total", "reason" => "RATE_LIMITED").increment(1);
            return Err(Refused("RATE_LIMITED"));
        }
        // Degraded mode: the cap cannot be checked while Redis is away; keep serving.
        Err(_) => crate::telemetry::storm::warn_storm!("connection cap not checked: engine unavailable"),
    }
    let events = NonZeroU32::new(app.cfg.socket_events_per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(app.cfg.socket_events_burst).unwrap_or(events);
    // Handlers are registered here, before the client learns it is connected: the connect
    // handler runs on a spawned task, and an event arriving before it registered handlers
    // would be dropped without an ack.
    s.on_disconnect(on_disconnect);
    super::handlers::register(&s);
    edge.watch_expiry(s.id, None, claims.exp);
    s.extensions.insert(Arc::new(Session {
        exp: AtomicI64::new(claims.exp),
        claims,
        offers: AtomicBool::new(false),
        limiter: RateLimiter::direct_with_clock(
            Quota::per_second(events).allow_burst(burst),
            edge.limiter_clock.clone(),
        ),
        rooms: Mutex::new(HashSet::new()),
        trips: Mutex::new(HashSet::new()),
        areas: Mutex::new(HashMap::new()),
        arrivals: Default::default(),
    }));
    Ok(())
}

pub(super) async fn on_connect(
    s: SocketRef,
    State(edge): State<Arc<Edge>>,
    Extension(session): Extension<Arc<Session>>,
) {
    metrics::gauge!("fleetcast_connections").increment(1.0);
    let user_room = RoomKey::user(&session.claims.tenant, &session.claims.user);
    if let Err(e) = join(&edge.app, &s, &session, &user_room).await {
        tracing::warn!(error = %e, "user room not joined");
    }
}

/// A short label for a disconnect reason.
fn disconnect_reason(r: socketioxide::socket::DisconnectReason) -> &'static str {
    use socketioxide::socket::DisconnectReason::*;
    match r {
        TransportClose => "transport close",
        MultipleHttpPollingError => "polling error",
        PacketParsingError => "packet parsing error",
        TransportError => "transport error",
        HeartbeatTimeout => "heartbeat timeout",
        ClientNSDisconnect => "client disconnect",
        ServerNSDisconnect => "server disconnect",
        ClosingServer => "closing server",
    }
}

pub(super) async fn on_disconnect(
    s: SocketRef,
    reason: socketioxide::socket::DisconnectReason,
    State(edge): State<Arc<Edge>>,
    Extension(session): Extension<Arc<Session>>,
) {
    let app = &edge.app;
    metrics::gauge!("fleetcast_connections").decrement(1.0);
    // Why sockets go: a frozen client is cut by the stall guard (`transport error`) or by
    // the heartbeat (`heartbeat timeout`), whichever comes first.
    metrics::counter!("fleetcast_disconnects_total", "reason" => disconnect_reason(reason)).increment(1);
    edge.forget_expiry(s.id, session.exp.load(Ordering::SeqCst));
    // Each step's future is boxed: this task's own state stays small while it waits (in a
    // disconnect storm thousands wait at once for the room lock), where inline it took the
    // size of the largest step, 12.6 KiB per socket (BENCHMARKS.md, "What an idle socket
    // holds").
    let rooms: Vec<RoomKey> = session.rooms().drain().collect();
    for room in &rooms {
        Box::pin(app.engine.release_room(room)).await;
    }
    let areas: Vec<_> = session.areas().drain().map(|(_, id)| id).collect();
    for id in areas {
        Box::pin(areas::unsubscribe(app, id)).await;
    }
    let trips: Vec<TripId> = session.trips().drain().collect();
    let c = &session.claims;
    let sid = s.id.to_string();
    let trips: Vec<&TripId> = trips.iter().collect();
    if let Err(e) = Box::pin(subscriptions::release(app, c, &sid, &trips)).await {
        tracing::warn!(error = %e, "subscription slots not released; they expire with the node");
    }
    if let Err(e) = Box::pin(app.engine.release(SlotKind::Connections, &c.tenant, &c.user, &sid, &[&sid])).await {
        tracing::warn!(error = %e, "connection slot not released; it expires with the node");
    }
    // Dropping the offer slot derives the driver's availability again; without one, the
    // lost connection may still change it (a driver on a trip).
    if session.offers.swap(false, Ordering::SeqCst) {
        if let Err(e) = Box::pin(offers::unsubscribe(app, c, &sid)).await {
            tracing::warn!(error = %e, "offer slot not released; it expires with the node");
        }
    } else {
        Box::pin(presence::notice_loss(app, c)).await;
    }
}

/// Registers the default namespace with its middleware and handlers, and keeps `io`.
pub fn attach(edge: &Edge, io: &SocketIo) {
    io.ns("/", on_connect.with(authenticate));
    let _ = edge.io.set(io.clone());
}
