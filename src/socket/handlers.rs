//! One handler per client event of CONTRACT §2 handled by the node foundation. Each takes
//! the raw payload, validates it (`INVALID_PAYLOAD`), then checks role, existence and
//! ownership, then rate limits, and only then writes — the order of CONTRACT §6.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use socketioxide::extract::{AckSender, Event, Extension, SocketRef, State, TryData};

use super::payload::{
    self, AdminSubscribeIn, LocationIn, ReadIn, RoomIn, StatusIn, SubscribeIn, SubscribeTarget, TripRef, TypingIn,
};
use super::{Session, drop_trip, join, join_with_replay, leave, run_event, send_ack};
use crate::App;
use crate::domain::{self, DriverStatus, LocationFix, Role, TripId};
use crate::engine::{Claim, LocationLimits, LocationOutcome, LocationWrite, RoomKey, SlotKind};
use crate::error::{Error, Result};
use crate::fanout::{self, events};

type Payload = TryData<Value>;

/// The payload, or `None` when the client sent none.
fn body(p: Payload) -> Option<Value> {
    p.0.ok()
}

/// Registers the socket's one message handler, which dispatches on the event name. One
/// handler instead of one per event: socketioxide keeps a per-socket table of handlers,
/// and 16 entries cost an idle socket ≈ 1.2 KiB (measured with heaptrack, BENCHMARKS.md).
pub(super) fn register(s: &SocketRef) {
    s.on_fallback(
        async |s: SocketRef,
               Event(name): Event,
               p: Payload,
               ack: AckSender,
               State(app): State<Arc<App>>,
               Extension(session): Extension<Arc<Session>>| {
            dispatch(&app, &s, &session, &name, body(p), ack).await;
        },
    );
}

/// Runs the handler of event `name` (CONTRACT §2), or acks an unknown event with
/// `INVALID_PAYLOAD`.
async fn dispatch(app: &App, s: &SocketRef, session: &Session, name: &str, p: Option<Value>, ack: AckSender) {
    macro_rules! route {
        ($($event:literal => $handler:path,)*) => {
            match name {
                $($event => run_event($event, session, ack, $handler(app, s, session, p)).await,)*
                _ => send_ack(ack, Err(Error::invalid("unknown event"))),
            }
        };
    }
    route! {
        "driver:connect" => driver_connect,
        "driver:location:update" => driver_location,
        "driver:status" => driver_status,
        "passenger:subscribe" => passenger_subscribe,
        "passenger:unsubscribe" => passenger_unsubscribe,
        "admin:subscribe" => admin_subscribe,
        "heartbeat" => heartbeat,
        "room:join" => room_join,
        "room:leave" => room_leave,
        "chat:typing" => chat_typing,
        "chat:read" => chat_read,
        "driver:subscribe" => driver_subscribe,
        "driver:unsubscribe" => driver_unsubscribe,
        "trip:offer:accept" => offer_accept,
        "trip:offer:decline" => offer_decline,
        "conductor:scan" => conductor_scan,
    }
}

fn ok() -> Result<Map<String, Value>> {
    Ok(Map::new())
}

fn trip_room(session: &Session, trip: &TripId) -> RoomKey {
    RoomKey::new(&session.claims.tenant, &format!("trip:{}:subscribers", trip.0))
}

async fn driver_connect(app: &App, s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    app.access.require_driver_of(&session.claims, &trip).await?;
    join(app, s, session, &RoomKey::new(&session.claims.tenant, &format!("driver:{}", trip.0))).await?;
    join(app, s, session, &trip_room(session, &trip)).await?;
    ok()
}

/// The contract's `Location`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LocationOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    trip_id: Option<&'a str>,
    driver_id: &'a str,
    lat: f64,
    lng: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
    updated_at: &'a str,
    /// Set on the published copy only (the stored `Location` carries none).
    #[serde(skip_serializing_if = "Option::is_none")]
    emitted_at: Option<&'a str>,
}

async fn driver_location(app: &App, _s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: LocationIn = payload::parse(p)?;
    domain::check_position(p.lat, p.lng, p.speed, p.heading, p.accuracy)?;
    let now = chrono::Utc::now();
    let updated_at = match &p.timestamp {
        Some(ts) => domain::iso(domain::check_timestamp(ts, now)?),
        None => domain::now_iso(),
    };
    let trip = p.trip_id.map(|t| payload::trip_id("tripId", t)).transpose()?;
    let c = &session.claims;
    if c.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    if let Some(trip) = &trip {
        app.access.require_driver_of(c, trip).await?;
    }
    let fix = LocationFix {
        trip,
        driver: c.user.clone(),
        lat: p.lat,
        lng: p.lng,
        speed: p.speed,
        heading: p.heading,
        accuracy: p.accuracy,
        updated_at,
    };
    let out = LocationOut {
        trip_id: fix.trip.as_ref().map(|t| t.0.as_str()),
        driver_id: &fix.driver.0,
        lat: fix.lat,
        lng: fix.lng,
        speed: fix.speed,
        heading: fix.heading,
        accuracy: fix.accuracy,
        updated_at: &fix.updated_at,
        emitted_at: None,
    };
    let location_json = serde_json::to_string(&out).map_err(|_| Error::Internal)?;
    let room;
    let frame;
    let publish = match &fix.trip {
        Some(t) => {
            room = trip_room(session, t);
            // Serialized directly with `emittedAt` (the generic `stamp` goes through a map).
            let now = domain::now_iso();
            let stamped = LocationOut { emitted_at: Some(&now), ..out };
            frame = fanout::location_frame(&serde_json::to_string(&stamped).map_err(|_| Error::Internal)?);
            Some((&room, frame.as_str()))
        }
        None => None,
    };
    let limits = LocationLimits {
        min_interval_ms: app.cfg.location_min_interval_ms,
        max_per_minute: app.cfg.location_max_per_minute,
        ttl_ms: app.cfg.location_ttl_ms,
        snapshot_interval_ms: app.cfg.snapshot_interval_ms,
    };
    let driver_room = RoomKey::new(&c.tenant, &format!("driver:{}:location", c.user.0));
    let driver_frame = fanout::driver_location_frame(&c.user.0, &fix)?;
    let w = LocationWrite {
        tenant: &c.tenant,
        fix: &fix,
        location_json: &location_json,
        publish,
        driver_room: (&driver_room, &driver_frame),
    };
    match app.engine.write_location(w, &limits).await? {
        LocationOutcome::Accepted { sampled } => {
            metrics::counter!("fleetcast_locations_accepted_total").increment(1);
            if sampled {
                metrics::counter!("fleetcast_locations_sampled_total").increment(1);
                app.sampler.offer(snapshot_row(&c.tenant, &fix));
            }
            ok()
        }
        LocationOutcome::RateLimited { retry_after_ms } => Err(Error::RateLimited { retry_after_ms }),
    }
}

fn snapshot_row(tenant: &crate::domain::Tenant, fix: &LocationFix) -> crate::jobs::SnapshotRow {
    crate::jobs::SnapshotRow {
        tenant: tenant.0.clone(),
        driver_id: fix.driver.0.clone(),
        trip_id: fix.trip.as_ref().map(|t| t.0.clone()),
        lat: fix.lat,
        lng: fix.lng,
        speed: fix.speed,
        heading: fix.heading,
        accuracy: fix.accuracy,
        recorded_at: crate::jobs::snapshot_time(&fix.updated_at),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TripStatusOut<'a> {
    trip_id: &'a str,
    driver_id: &'a str,
    status: &'a str,
    timestamp: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertOut<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    trip_id: &'a str,
    driver_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lng: Option<f64>,
    message: &'a str,
    at: &'a str,
}

async fn driver_status(app: &App, _s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: StatusIn = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    let status: DriverStatus =
        p.status.parse().map_err(|_| Error::invalid("status must be STARTED, PAUSED, ENDED or EMERGENCY"))?;
    let now = chrono::Utc::now();
    let timestamp = match &p.timestamp {
        Some(ts) => domain::iso(domain::check_timestamp(ts, now)?),
        None => domain::now_iso(),
    };
    let c = &session.claims;
    app.access.require_driver_of(c, &trip).await?;
    // Read the trip's final position before anything is published, so a Redis failure
    // answers UNAVAILABLE for a status nobody has seen yet.
    let final_position = match status {
        DriverStatus::Ended => app.engine.driver_location(&c.tenant, &c.user).await?,
        _ => None,
    };
    let out = TripStatusOut { trip_id: &trip.0, driver_id: &c.user.0, status: status.as_str(), timestamp: &timestamp };
    fanout::publish_recoverable(&app.engine, &trip_room(session, &trip), events::TRIP_STATUS, &out).await?;
    // The trip's final position is stored whatever the sampling interval says; the natural
    // key makes it a no-op when that update was already sampled.
    {
        if let Some(row) =
            final_position.and_then(|j| crate::snapshots::row_from_location(&c.tenant, &c.user.0, &trip.0, &j))
        {
            app.sampler.offer(row);
        }
    }
    if status == DriverStatus::Emergency {
        // The alert carries the driver's last live position when there is one.
        let last = app.engine.driver_location(&c.tenant, &c.user).await.ok().flatten();
        let pos = last.and_then(|j| serde_json::from_str::<Value>(&j).ok());
        let coord = |k: &str| pos.as_ref().and_then(|v| v.get(k)).and_then(Value::as_f64);
        let alert = AlertOut {
            kind: "EMERGENCY",
            trip_id: &trip.0,
            driver_id: &c.user.0,
            lat: coord("lat"),
            lng: coord("lng"),
            message: "driver reported an emergency",
            at: &timestamp,
        };
        fanout::publish_recoverable(&app.engine, &RoomKey::new(&c.tenant, "admin:alerts"), events::ALERT, &alert)
            .await?;
    }
    ok()
}

async fn passenger_subscribe(
    app: &App,
    s: &SocketRef,
    session: &Session,
    p: Option<Value>,
) -> Result<Map<String, Value>> {
    let mut input = payload::parse::<SubscribeIn>(p)?;
    let single = input.trip_id.clone();
    let since = payload::since_by_key(input.since.take(), single.as_deref())?;
    let target = input.target()?;
    let trips: Vec<TripId> = match &target {
        SubscribeTarget::One(t) => vec![t.clone()],
        SubscribeTarget::Many(ts) => ts.clone(),
    };
    let c = &session.claims;
    if c.role == Role::Service {
        return Err(Error::Forbidden);
    }
    for trip in &trips {
        app.access.require_watch(c, trip).await?;
    }
    let sid = s.id.to_string();
    let slots: Vec<&str> = trips.iter().map(|t| t.0.as_str()).collect();
    match app
        .engine
        .claim(SlotKind::Subscriptions, &c.tenant, &c.user, &sid, &slots, app.cfg.max_trip_subscriptions)
        .await?
    {
        Claim::Granted => {}
        Claim::Refused => return Err(Error::SubscriptionLimit),
    }
    let mut recovered = true;
    for (i, trip) in trips.iter().enumerate() {
        let room = trip_room(session, trip);
        let joined = match since.get(&trip.0).or_else(|| since.get(room.name())) {
            Some(id) => join_with_replay(app, s, session, &room, *id).await.map(|complete| recovered &= complete),
            None => join(app, s, session, &room).await,
        };
        if let Err(e) = joined {
            // All or nothing: undo the rooms joined so far and the claim.
            for t in &trips[..i] {
                if !session.trips().contains(t) {
                    leave(app, s, session, &trip_room(session, t)).await;
                }
            }
            let fresh: Vec<&str> =
                trips.iter().filter(|t| !session.trips().contains(*t)).map(|t| t.0.as_str()).collect();
            let _ = app.engine.release(SlotKind::Subscriptions, &c.tenant, &c.user, &sid, &fresh).await;
            return Err(e);
        }
    }
    session.trips().extend(trips.iter().cloned());
    let mut current = Map::new();
    for trip in &trips {
        let loc = app.engine.trip_location(&c.tenant, trip).await?;
        let v = match loc {
            Some(json) => {
                let v: Value = serde_json::from_str(&json).map_err(|_| Error::Internal)?;
                fanout::send_to_socket(s, events::LOCATION, &fanout::stamp(&v)?);
                v
            }
            None => Value::Null,
        };
        current.insert(trip.0.clone(), v);
    }
    let mut out = Map::new();
    if !since.is_empty() {
        out.insert("recovered".into(), Value::Bool(recovered));
    }
    match target {
        SubscribeTarget::One(t) => {
            out.insert("current".into(), current.remove(&t.0).unwrap_or(Value::Null));
        }
        SubscribeTarget::Many(_) => {
            out.insert("current".into(), Value::Object(current));
        }
    }
    Ok(out)
}

async fn passenger_unsubscribe(
    app: &App,
    s: &SocketRef,
    session: &Session,
    p: Option<Value>,
) -> Result<Map<String, Value>> {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    drop_trip(app, s, session, &trip).await?;
    ok()
}

async fn admin_subscribe(app: &App, s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    payload::parse_empty(p.clone())?;
    let input: AdminSubscribeIn = match p {
        None | Some(Value::Null) => AdminSubscribeIn::default(),
        p => payload::parse(p)?,
    };
    let since = payload::since_by_key(input.since, Some("admin:alerts"))?;
    if session.claims.role != Role::Admin {
        return Err(Error::Forbidden);
    }
    let mut recovered = true;
    for name in ["admin:alerts", "admin:events"] {
        let room = RoomKey::new(&session.claims.tenant, name);
        match since.get(name) {
            Some(id) => recovered &= join_with_replay(app, s, session, &room, *id).await?,
            None => join(app, s, session, &room).await?,
        }
    }
    let mut out = Map::new();
    if !since.is_empty() {
        out.insert("recovered".into(), Value::Bool(recovered));
    }
    Ok(out)
}

async fn heartbeat(_app: &App, _s: &SocketRef, _session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    payload::parse_empty(p)?;
    let mut m = Map::new();
    m.insert("serverTime".into(), domain::now_iso().into());
    Ok(m)
}

async fn room_join(app: &App, s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: RoomIn = payload::parse(p)?;
    payload::room_name(&p.room)?;
    let since = payload::since_by_key(p.since, Some(&p.room))?;
    let c = &session.claims;
    let granted =
        c.grants(&p.room) || p.token.as_deref().is_some_and(|t| app.verifier.room_token_grants(t, c, &p.room));
    if !granted {
        return Err(Error::Forbidden);
    }
    let room = RoomKey::new(&c.tenant, &p.room);
    let mut out = Map::new();
    match since.get(&p.room) {
        Some(id) => {
            let complete = join_with_replay(app, s, session, &room, *id).await?;
            out.insert("recovered".into(), Value::Bool(complete));
        }
        None => join(app, s, session, &room).await?,
    }
    Ok(out)
}

async fn room_leave(app: &App, s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: RoomIn = payload::parse(p)?;
    payload::room_name(&p.room)?;
    leave(app, s, session, &RoomKey::new(&session.claims.tenant, &p.room)).await;
    ok()
}

/// The chat room, if this socket is in it.
fn chat_room(session: &Session, chat_id: &str) -> Result<RoomKey> {
    if !domain::valid_id(chat_id) {
        return Err(Error::invalid("chatId must be 1–128 characters"));
    }
    let room = RoomKey::new(&session.claims.tenant, &format!("chat:{chat_id}"));
    if session.rooms().contains(&room) { Ok(room) } else { Err(Error::Forbidden) }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TypingOut<'a> {
    chat_id: &'a str,
    user_id: &'a str,
    is_typing: bool,
}

async fn chat_typing(app: &App, s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: TypingIn = payload::parse(p)?;
    let room = chat_room(session, &p.chat_id)?;
    let out = TypingOut { chat_id: &p.chat_id, user_id: &session.claims.user.0, is_typing: p.is_typing };
    fanout::publish_except(&app.engine, &room, "typing", &out, &s.id.to_string()).await?;
    ok()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReadOut<'a> {
    chat_id: &'a str,
    message_id: &'a str,
    user_id: &'a str,
    read_at: &'a str,
}

async fn chat_read(app: &App, _s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: ReadIn = payload::parse(p)?;
    if !domain::valid_id(&p.message_id) {
        return Err(Error::invalid("messageId must be 1–128 characters"));
    }
    let room = chat_room(session, &p.chat_id)?;
    let now = domain::now_iso();
    let out =
        ReadOut { chat_id: &p.chat_id, message_id: &p.message_id, user_id: &session.claims.user.0, read_at: &now };
    fanout::publish_recoverable(&app.engine, &room, "message.read", &out).await?;
    ok()
}

#[derive(serde::Deserialize, Default)]
struct DriverSubscribeIn {
    #[serde(default)]
    filters: Option<crate::rides::offers::Filters>,
}

async fn driver_subscribe(app: &App, s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let input: DriverSubscribeIn = match p {
        None | Some(Value::Null) => DriverSubscribeIn::default(),
        p => payload::parse(p)?,
    };
    let filters = input.filters.unwrap_or_default();
    crate::rides::offers::subscribe(app, &session.claims, &s.id.to_string(), &filters).await?;
    session.offers.store(true, std::sync::atomic::Ordering::SeqCst);
    ok()
}

async fn driver_unsubscribe(
    app: &App,
    s: &SocketRef,
    session: &Session,
    p: Option<Value>,
) -> Result<Map<String, Value>> {
    payload::parse_empty(p)?;
    if session.claims.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    if session.offers.swap(false, std::sync::atomic::Ordering::SeqCst) {
        crate::rides::offers::unsubscribe(app, &session.claims, &s.id.to_string()).await?;
    }
    ok()
}

async fn offer_accept(app: &App, _s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    crate::rides::offers::accept(app, &session.claims, &trip.0).await?;
    let mut m = Map::new();
    m.insert("tripId".into(), trip.0.into());
    Ok(m)
}

async fn offer_decline(app: &App, _s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    crate::rides::offers::decline(app, &session.claims, &trip.0).await?;
    ok()
}

#[derive(serde::Deserialize)]
struct ScanIn {
    token: String,
}

async fn conductor_scan(app: &App, _s: &SocketRef, session: &Session, p: Option<Value>) -> Result<Map<String, Value>> {
    let p: ScanIn = payload::parse(p)?;
    crate::rides::scan(app, &session.claims, &p.token).await
}
