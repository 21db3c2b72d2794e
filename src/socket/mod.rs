//! Socket.IO edge (CONTRACT §1–2): the connect middleware (token, connection-flood limit,
//! per-user connection cap), one handler per client event, and the mapping of results to
//! acks. Every handler answers its ack exactly once, within the ack deadline, whatever the
//! payload; nothing a client sends closes its socket or touches another one.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Extension, SocketRef, State, TryData};
use socketioxide::handler::ConnectHandler;

use crate::App;
use crate::auth::{AuthError, Claims};
use crate::domain::TripId;
use crate::engine::{RoomKey, SlotKind};
use crate::error::{Error, Result};

mod handlers;
pub mod payload;

/// An ack answers within this bound even when a dependency hangs (contract: 5 s).
const ACK_DEADLINE: Duration = Duration::from_millis(4_500);

/// Per-socket state, created by the connect middleware and kept in the socket's extensions.
pub struct Session {
    /// Who is connected.
    pub claims: Claims,
    /// The node (weak: the node owns its sockets), for commands arriving from other nodes.
    app: std::sync::Weak<App>,
    /// This socket made its driver eligible for offers (`driver:subscribe`).
    offers: std::sync::atomic::AtomicBool,
    /// Flood cut-off for this socket's events (checked before any work).
    limiter: DefaultDirectRateLimiter,
    /// Rooms this socket holds through the engine. The lock is never held across `.await`.
    rooms: Mutex<HashSet<RoomKey>>,
    /// Trips this socket subscribed to with `passenger:subscribe` (slot holders).
    trips: Mutex<HashSet<TripId>>,
}

impl Session {
    fn rooms(&self) -> std::sync::MutexGuard<'_, HashSet<RoomKey>> {
        self.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn trips(&self) -> std::sync::MutexGuard<'_, HashSet<TripId>> {
        self.trips.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Connection-attempt limiter keyed by client address.
pub type ConnLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

/// Builds the connection limiter, or `None` when disabled (rate 0).
pub fn conn_limiter(per_sec: u32, burst: u32) -> Option<ConnLimiter> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

/// Registers the default namespace with its middleware and handlers.
pub fn attach(io: &SocketIo) {
    io.ns("/", on_connect.with(authenticate));
}

/// Why a connection was refused; its `Display` is the exact `connect_error` message.
#[derive(Debug)]
struct Refused(&'static str);

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

/// The client address: the peer, or the first `X-Forwarded-For` entry when configured.
fn client_ip(s: &SocketRef, trust_forwarded_for: bool) -> Option<IpAddr> {
    let parts = s.req_parts();
    if trust_forwarded_for
        && let Some(ip) = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|h| h.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok())
    {
        return Some(ip);
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Connect middleware: address flood limit, token, per-user connection cap.
async fn authenticate(
    s: SocketRef,
    TryData(auth): TryData<Value>,
    State(app): State<Arc<App>>,
) -> std::result::Result<(), Refused> {
    if let (Some(limiter), Some(ip)) = (&app.conn_limiter, client_ip(&s, app.cfg.trust_forwarded_for))
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
        Ok(crate::engine::Claim::Granted) => {}
        Ok(crate::engine::Claim::Refused) => {
            metrics::counter!("fleetcast_connections_refused_total", "reason" => "RATE_LIMITED").increment(1);
            return Err(Refused("RATE_LIMITED"));
        }
        // Degraded mode: the cap cannot be checked while Redis is away; keep serving.
        Err(_) => tracing::warn!("connection cap not checked: engine unavailable"),
    }
    let events = NonZeroU32::new(app.cfg.socket_events_per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(app.cfg.socket_events_burst).unwrap_or(events);
    // Handlers are registered here, before the client learns it is connected: the connect
    // handler runs on a spawned task, and an event arriving before it registered handlers
    // would be dropped without an ack.
    s.on_disconnect(on_disconnect);
    handlers::register(&s);
    s.extensions.insert(Arc::new(Session {
        claims,
        app: Arc::downgrade(&app),
        offers: std::sync::atomic::AtomicBool::new(false),
        limiter: RateLimiter::direct_with_clock(
            Quota::per_second(events).allow_burst(burst),
            app.limiter_clock.clone(),
        ),
        rooms: Mutex::new(HashSet::new()),
        trips: Mutex::new(HashSet::new()),
    }));
    Ok(())
}

async fn on_connect(s: SocketRef, State(app): State<Arc<App>>, Extension(session): Extension<Arc<Session>>) {
    metrics::gauge!("fleetcast_connections").increment(1.0);
    let user_room = RoomKey::new(&session.claims.tenant, &format!("user:{}", session.claims.user.0));
    if let Err(e) = join(&app, &s, &session, &user_room).await {
        tracing::warn!(error = %e, "user room not joined");
    }
}

async fn on_disconnect(s: SocketRef, State(app): State<Arc<App>>, Extension(session): Extension<Arc<Session>>) {
    metrics::gauge!("fleetcast_connections").decrement(1.0);
    let rooms: Vec<RoomKey> = session.rooms().drain().collect();
    for room in &rooms {
        app.engine.release_room(room).await;
    }
    let trips: Vec<TripId> = session.trips().drain().collect();
    let c = &session.claims;
    let sid = s.id.to_string();
    let slots: Vec<&str> = trips.iter().map(|t| t.0.as_str()).collect();
    if let Err(e) = app.engine.release(SlotKind::Subscriptions, &c.tenant, &c.user, &sid, &slots).await {
        tracing::warn!(error = %e, "subscription slots not released; they expire with the node");
    }
    if session.offers.swap(false, std::sync::atomic::Ordering::SeqCst)
        && let Err(e) = crate::rides::offers::unsubscribe(&app, c, &sid).await
    {
        tracing::warn!(error = %e, "offer slot not released; it expires with the node");
    }
    if let Err(e) = app.engine.release(SlotKind::Connections, &c.tenant, &c.user, &sid, &[&sid]).await {
        tracing::warn!(error = %e, "connection slot not released; it expires with the node");
    }
}

/// Per tenant: this node's Socket.IO connections and the trips with a subscribed socket
/// here (for the admin stats).
pub fn tenant_stats(io: &SocketIo) -> std::collections::HashMap<String, (u64, std::collections::BTreeSet<String>)> {
    let mut out: std::collections::HashMap<String, (u64, std::collections::BTreeSet<String>)> = Default::default();
    for s in io.sockets() {
        let Some(session) = s.extensions.get::<Arc<Session>>() else { continue };
        let entry = out.entry(session.claims.tenant.0.clone()).or_default();
        entry.0 += 1;
        for room in session.rooms().iter() {
            if let Some(trip) = room.name().strip_prefix("trip:").and_then(|r| r.strip_suffix(":subscribers")) {
                entry.1.insert(trip.to_string());
            }
        }
    }
    out
}

/// Node-to-node command `leave-trip`: the passenger's sockets on every node leave a trip
/// room and free its subscription slot (CONTRACT §6: cancelling a booking removes that
/// passenger's sockets from the trip room).
const LEAVE_TRIP: &str = "leave-trip";

/// Removes every socket of `user`, on every node, from the trip's room.
pub async fn remove_from_trip(app: &App, tenant: &crate::domain::Tenant, user: &crate::domain::UserId, trip: &str) {
    let room = RoomKey::new(tenant, &format!("user:{}", user.0));
    let f = crate::engine::frame::encode(LEAVE_TRIP, crate::engine::frame::CONTROL, None, trip);
    if let Err(e) = app.engine.publish(&room, &f).await {
        tracing::warn!(error = %e, "leave-trip not published; the sockets stay subscribed");
    }
}

/// Runs a node-to-node command for one local socket (called on the delivery task: the work
/// is spawned).
pub(crate) fn control(s: &SocketRef, command: &str, arg: &str) {
    let Some(session) = s.extensions.get::<Arc<Session>>() else { return };
    let Some(app) = session.app.upgrade() else { return };
    if command != LEAVE_TRIP {
        tracing::warn!(command, "unknown control command");
        return;
    }
    let trip = TripId(arg.to_string());
    let s = s.clone();
    tokio::spawn(async move {
        if let Err(e) = drop_trip(&app, &s, &session, &trip).await {
            tracing::warn!(error = %e, "subscription slot not released; it expires with the node");
        }
    });
}

/// Ends this socket's subscription to a trip: it leaves the trip room (unless it is the
/// trip's connected driver) and frees the subscription slot.
async fn drop_trip(app: &App, s: &SocketRef, session: &Session, trip: &TripId) -> Result<()> {
    if !session.trips().remove(trip) {
        return Ok(());
    }
    let c = &session.claims;
    // A driver who also did `driver:connect` on this trip keeps the room.
    let keep = c.role == crate::domain::Role::Driver
        && session.rooms().contains(&RoomKey::new(&c.tenant, &format!("driver:{}", trip.0)));
    if !keep {
        leave(app, s, session, &RoomKey::new(&c.tenant, &format!("trip:{}:subscribers", trip.0))).await;
    }
    app.engine.release(SlotKind::Subscriptions, &c.tenant, &c.user, &s.id.to_string(), &[&trip.0]).await
}

/// Joins `room` locally and makes sure the node receives its frames.
async fn join(app: &App, s: &SocketRef, session: &Session, room: &RoomKey) -> Result<()> {
    if session.rooms().contains(room) {
        return Ok(());
    }
    app.engine.hold_room(room).await?;
    // Two concurrent joins of the same room by one socket: only the first keeps the hold.
    if !session.rooms().insert(room.clone()) {
        app.engine.release_room(room).await;
        return Ok(());
    }
    s.join(room.as_str().to_string());
    Ok(())
}

/// Joins `room` and first sends what the socket missed after `since`, in order, then live
/// events — none lost or doubled at the seam (see `fanout::Replays`). Returns whether the
/// replay was complete (`false`: the history no longer reaches back to `since`).
async fn join_with_replay(
    app: &App,
    s: &SocketRef,
    session: &Session,
    room: &RoomKey,
    since: crate::engine::EventId,
) -> Result<bool> {
    if session.rooms().contains(room) {
        // Already live in the room: only the history after `since` is missing.
        let h = app.engine.history(room, since).await?;
        for (_, event, json) in &h.events {
            crate::fanout::send_to_socket(s, event, json);
        }
        return Ok(h.complete);
    }
    let sid = s.id.to_string();
    app.replays.begin(room, &sid);
    let history = async {
        app.engine.hold_room(room).await?;
        match app.engine.history(room, since).await {
            Ok(h) => Ok(h),
            Err(e) => {
                app.engine.release_room(room).await;
                Err(e)
            }
        }
    }
    .await;
    let h = match history {
        Ok(h) => h,
        Err(e) => {
            app.replays.abandon(room, &sid);
            return Err(e);
        }
    };
    for (_, event, json) in &h.events {
        crate::fanout::send_to_socket(s, event, json);
    }
    if !session.rooms().insert(room.clone()) {
        // A concurrent join of the same room won; keep one hold.
        app.engine.release_room(room).await;
    }
    app.replays.finish(room, s, h.events.last().map(|(id, _, _)| *id));
    metrics::counter!("fleetcast_replayed_events_total").increment(h.events.len() as u64);
    Ok(h.complete)
}

/// Leaves `room` locally and releases the node's hold.
async fn leave(app: &App, s: &SocketRef, session: &Session, room: &RoomKey) {
    if session.rooms().remove(room) {
        s.leave(room.as_str().to_string());
        app.engine.release_room(room).await;
    }
}

/// Answers an ack (if the client asked for one) with the contract's shape.
fn send_ack(ack: AckSender, result: Result<Map<String, Value>>) {
    let body = match result {
        Ok(mut extra) => {
            extra.insert("ok".into(), Value::Bool(true));
            metrics::counter!("fleetcast_acks_total", "code" => "OK").increment(1);
            Value::Object(extra)
        }
        Err(e) => {
            metrics::counter!("fleetcast_acks_total", "code" => e.code()).increment(1);
            if let Error::RateLimited { .. } = e {
                metrics::counter!("fleetcast_rate_limited_total").increment(1);
            }
            let mut v = json!({ "ok": false, "error": e.code() });
            if let Some(m) = e.message() {
                v["message"] = m.into();
            }
            if let Error::RateLimited { retry_after_ms } = e {
                v["retryAfterMs"] = retry_after_ms.into();
            }
            v
        }
    };
    // The client may not have asked for an ack; then there is nothing to answer.
    let _ = ack.send(&body);
}

/// Runs one event: flood check, bounded handler, ack.
async fn run_event<F>(name: &'static str, session: &Session, ack: AckSender, fut: F)
where
    F: std::future::Future<Output = Result<Map<String, Value>>>,
{
    metrics::counter!("fleetcast_events_in_total", "event" => name).increment(1);
    let result = match session.limiter.check() {
        Err(not_until) => {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(session.limiter.clock()));
            Err(Error::RateLimited { retry_after_ms: (wait.as_millis() as u64).max(1) })
        }
        Ok(()) => match tokio::time::timeout(ACK_DEADLINE, fut).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(event = name, "handler exceeded the ack deadline");
                Err(Error::Unavailable)
            }
        },
    };
    send_ack(ack, result);
}
