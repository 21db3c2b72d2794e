//! Server-Sent Events edge (CONTRACT §3, §7): the trip-status, order, run and
//! driver-location streams, the caller's own user room (`me/stream`, where a driver can
//! also take offers), and live areas (`area`, conflated frames without ids). A stream
//! answers 401/403/404 as JSON before it starts; then `retry: 3000`, a `connected` event
//! with the current state, what a reconnecting client missed after its `Last-Event-ID`
//! (from the room's history, the same ids as Socket.IO), then live events, and a heartbeat
//! every `--sse-heartbeat-ms`. Every event but `connected` and `heartbeat` has an `id:`.
//!
//! The seam: a stream registers with the node's [`SseHub`] (in `hub`) (live frames start queueing in
//! its own bounded channel) and the node holds the room before the history is read; the
//! stream then sends the history and, from its channel, only ids newer than the last
//! replayed one. A client too slow to drain its channel is cut off (counted in
//! `fleetcast_sse_slow_clients_total`) and reconnects with its last id, instead of
//! growing memory.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::app::App;
use crate::domain::area::{Area, AreaSpec};
use crate::domain::rides::Filters;
use crate::domain::rooms::{Entity, driver_grant};
use crate::domain::{EventId, Role, RoomKey, TripId, UserId, valid_id};
use crate::engine::{Claim, SlotKind};
use crate::error::{Error, Result};
use crate::events::{self, sse as sse_events};
use crate::fanout::areas::{AreaMsg, SubId};
use crate::flows;
use crate::http::auth::Caller;
use crate::http::error::ErrorBody;

mod hub;

pub use hub::SseHub;

/// Which stream, and how its events look.
#[derive(Clone, Copy)]
enum Kind {
    TripStatus,
    Order,
    Run,
    DriverLocation,
    /// The caller's user room: every event, under its own name.
    User,
}

impl Kind {
    /// The SSE `type` of a room event, or `None` when the stream does not carry it.
    fn map(self, event: &str) -> Option<&str> {
        let carried = match self {
            Kind::User => return Some(event),
            Kind::TripStatus => events::TRIP_STATUS_UPDATED,
            Kind::Order => events::ORDER_UPDATE,
            Kind::Run => events::RUN_UPDATE,
            Kind::DriverLocation => events::DRIVER_LOCATION,
        };
        (event == carried).then(|| sse_events::stream_type(event))
    }
}

/// A `connected` payload as JSON (its `recovered` is added when the client gave an id).
fn to_value<T: serde::Serialize>(connected: &T) -> Result<Value> {
    serde_json::to_value(connected).map_err(|_| Error::Internal)
}

fn message(kind: &str, json: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_str(json).ok()?;
    v.as_object_mut()?.insert("type".into(), kind.into());
    Some(v)
}

/// Where a stream resumes: its `Last-Event-ID` header, else (the user-room stream, for a page
/// that opens a new `EventSource`) the `lastEventId` query parameter.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<Option<EventId>> {
    let header = headers.get("last-event-id").and_then(|h| h.to_str().ok()).map(str::trim).filter(|s| !s.is_empty());
    let (given, name) = match (header, query.map(str::trim).filter(|s| !s.is_empty())) {
        (Some(h), _) => (h, "Last-Event-ID"),
        (None, Some(q)) => (q, "lastEventId"),
        (None, None) => return Ok(None),
    };
    EventId::parse(given).map(Some).ok_or_else(|| Error::invalid(format!("{name} is not an event id")))
}

/// `GET /api/realtime/trip-status/{tripId}`.
#[utoipa::path(get, path = "/api/realtime/trip-status/{tripId}", tag = "sse", params(("tripId" = String, Path)),
    description = "connected, status_update, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn trip_status(
    State(app): State<Arc<App>>,
    Extension(hub): Extension<Arc<SseHub>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    if !valid_id(&id) {
        return Err(Error::NotFound);
    }
    let trip = TripId(id);
    app.access.require_watch(&who, &trip).await?;
    // Read fresh (one query per stream): the membership cache may predate a status change
    // made on another node.
    let current = app.db.trip_membership(&who.tenant, &trip).await?.ok_or(Error::NotFound)?.status;
    let room = RoomKey::trip_subscribers(&who.tenant, &trip);
    let connected = to_value(&sse_events::TripConnected {
        kind: sse_events::CONNECTED,
        trip_id: &trip.0,
        current_status: &current,
    })?;
    open(app, hub, who, room, Kind::TripStatus, connected, last_event_id(&headers, None)?, None).await
}

fn may_follow(who: &crate::auth::Claims, grant: &str) -> Result<()> {
    match who.role {
        Role::Admin | Role::Business | Role::Service => Ok(()),
        _ if who.grants(grant) => Ok(()),
        _ => Err(Error::Forbidden),
    }
}

/// A stream of an entity room (`order:{id}`, `run:{id}`): ADMIN/BUSINESS/SERVICE of the
/// tenant or a grant of that room. Orders and runs live in the caller's systems, so any id
/// is valid (no 404).
async fn entity_stream(
    app: Arc<App>,
    hub: Arc<SseHub>,
    who: crate::auth::Claims,
    entity: Entity,
    id: String,
    headers: &HeaderMap,
) -> Result<Response> {
    if !valid_id(&id) {
        return Err(Error::NotFound);
    }
    let room = RoomKey::entity(&who.tenant, entity, &id);
    may_follow(&who, room.name())?;
    let connected = to_value(&sse_events::EntityConnected { entity, id: &id })?;
    let kind = match entity {
        Entity::Order => Kind::Order,
        Entity::Run => Kind::Run,
    };
    open(app, hub, who, room, kind, connected, last_event_id(headers, None)?, None).await
}

/// `GET /api/v1/realtime/orders/{id}/stream`.
#[utoipa::path(get, path = "/api/v1/realtime/orders/{id}/stream", tag = "sse", params(("id" = String, Path)),
    description = "connected, order_update, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn order(
    State(app): State<Arc<App>>,
    Extension(hub): Extension<Arc<SseHub>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    entity_stream(app, hub, who, Entity::Order, id, &headers).await
}

/// `GET /api/v1/realtime/runs/{id}/stream`.
#[utoipa::path(get, path = "/api/v1/realtime/runs/{id}/stream", tag = "sse", params(("id" = String, Path)),
    description = "connected, run_update, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn run(
    State(app): State<Arc<App>>,
    Extension(hub): Extension<Arc<SseHub>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    entity_stream(app, hub, who, Entity::Run, id, &headers).await
}

/// `GET /api/v1/realtime/drivers/{id}/location`: the driver itself, ADMIN/BUSINESS/SERVICE
/// of the tenant, or a `driver:{id}` grant. Locations are volatile: `connected` carries the
/// latest live one, and a `Last-Event-ID` replays nothing.
#[utoipa::path(get, path = "/api/v1/realtime/drivers/{id}/location", tag = "sse", params(("id" = String, Path)),
    description = "connected, driver_location, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn driver_location(
    State(app): State<Arc<App>>,
    Extension(hub): Extension<Arc<SseHub>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    if !valid_id(&id) {
        return Err(Error::NotFound);
    }
    if who.user.0 != id {
        may_follow(&who, &driver_grant(&id))?;
    }
    let driver = UserId(id);
    let current = app.engine.driver_location(&who.tenant, &driver).await?;
    let room = RoomKey::driver_location(&who.tenant, &driver);
    let connected = to_value(&sse_events::DriverConnected {
        kind: sse_events::CONNECTED,
        driver_id: &driver.0,
        location: current.as_ref().map(sse_events::CurrentPosition::from),
    })?;
    open(app, hub, who, room, Kind::DriverLocation, connected, None, None).await
}

/// `GET /api/v1/realtime/me/stream`'s query: offer eligibility for a driver.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeQuery {
    offers: Option<String>,
    max_distance: Option<String>,
    min_earnings: Option<String>,
    trip_types: Option<String>,
    /// Where to resume when the client cannot send `Last-Event-ID` (a page that opens a new
    /// `EventSource` after one was refused); the header wins when both are given.
    last_event_id: Option<String>,
}

impl MeQuery {
    /// The offer filters when `offers=true`, checked as `driver:subscribe` checks them.
    fn filters(&self) -> Result<Option<Filters>> {
        match self.offers.as_deref() {
            None | Some("false") => return Ok(None),
            Some("true") => {}
            Some(_) => return Err(Error::invalid("offers must be true or false")),
        }
        let number = |name: &str, v: &Option<String>| -> Result<Option<f64>> {
            v.as_deref()
                .map(|s| s.trim().parse::<f64>().map_err(|_| Error::invalid(format!("{name} must be a number"))))
                .transpose()
        };
        let filters = Filters {
            max_distance: number("maxDistance", &self.max_distance)?,
            min_earnings: number("minEarnings", &self.min_earnings)?,
            trip_types: self.trip_types.as_deref().map(|s| s.split(',').map(|t| t.trim().to_string()).collect()),
        };
        filters.validate()?;
        Ok(Some(filters))
    }
}

/// `GET /api/v1/realtime/me/stream`: the caller's user room (any role); with
/// `offers=true` a DRIVER is eligible for offers while the stream is open, exactly as
/// `driver:subscribe` with the same filters.
#[utoipa::path(get, path = "/api/v1/realtime/me/stream", tag = "sse",
    params(("offers" = Option<bool>, Query, description = "DRIVER: eligible for offers while open"),
        ("maxDistance" = Option<f64>, Query), ("minEarnings" = Option<f64>, Query),
        ("tripTypes" = Option<String>, Query, description = "PRIVATE,SHARED"),
        ("lastEventId" = Option<String>, Query, description = "as the Last-Event-ID header, for a new EventSource (the header wins)")),
    description = "connected {userId}, every event of the user room under its own name (with id), heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn me(
    State(app): State<Arc<App>>,
    Extension(hub): Extension<Arc<SseHub>>,
    Caller(who): Caller,
    Query(q): Query<MeQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let filters = q.filters()?;
    if filters.is_some() && who.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    let since = last_event_id(&headers, q.last_event_id.as_deref())?;
    let room = RoomKey::user(&who.tenant, &who.user);
    let connected = to_value(&sse_events::UserConnected { kind: sse_events::CONNECTED, user_id: &who.user.0 })?;
    open(app, hub, who, room, Kind::User, connected, since, filters).await
}

/// What a stream holds besides its connection slot.
enum Held {
    /// A room stream: its hub registration, the node's hold on the room, its count in the
    /// room's SSE streams, and maybe its driver's offer slot (slot = the stream's slot).
    Room { hub: Arc<SseHub>, room: RoomKey, hub_id: u64, offers: bool },
    /// An area stream's subscription.
    Area(SubId),
}

/// Releases what an open stream holds when the response body is dropped (client gone,
/// cut off, or node shutting down).
struct StreamGuard {
    app: Arc<App>,
    slot: String,
    claims: crate::auth::Claims,
    held: Held,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let (app, slot, claims) = (self.app.clone(), self.slot.clone(), self.claims.clone());
        let held = match &self.held {
            Held::Room { hub, room, hub_id, offers } => {
                hub.unregister(room, *hub_id);
                Held::Room { hub: hub.clone(), room: room.clone(), hub_id: *hub_id, offers: *offers }
            }
            Held::Area(id) => Held::Area(*id),
        };
        // Owner: the runtime; a short task that only releases Redis slots (and derives the
        // driver's availability again).
        tokio::spawn(async move {
            let _ = app.engine.release(SlotKind::Connections, &claims.tenant, &claims.user, &slot, &[&slot]).await;
            match held {
                Held::Area(id) => flows::areas::unsubscribe(&app, id).await,
                Held::Room { room, offers, .. } => {
                    app.engine.release_room(&room).await;
                    let key = UserId(room.as_str().to_string());
                    let _ = app.engine.release(SlotKind::SseStreams, &claims.tenant, &key, &slot, &[&slot]).await;
                    if offers {
                        if let Err(e) = flows::offers::unsubscribe(&app, &claims, &slot).await {
                            tracing::warn!(error = %e, "offer slot of a stream not released; it expires with the node");
                        }
                    } else {
                        flows::presence::notice_loss(&app, &claims).await;
                    }
                }
            }
        });
    }
}

/// Claims a new stream's connection slot: the per-user connection cap counts SSE streams
/// with Socket.IO connections.
async fn claim_connection(app: &App, who: &crate::auth::Claims) -> Result<String> {
    let slot = format!("sse-{}", uuid::Uuid::new_v4().simple());
    match app
        .engine
        .claim(SlotKind::Connections, &who.tenant, &who.user, &slot, &[&slot], app.cfg.max_connections_per_user)
        .await
    {
        Ok(Claim::Refused) => return Err(Error::RateLimited { retry_after_ms: 1_000 }),
        Ok(Claim::Granted) => {}
        Err(_) => crate::telemetry::storm::warn_storm!("SSE connection cap not checked: engine unavailable"),
    }
    Ok(slot)
}

/// What ends a stream's wait.
enum Wake<T> {
    /// A frame from its source.
    Frame(T),
    /// Time for a heartbeat.
    Beat,
    /// The source closed, the node shuts down, or the token expired.
    End,
}

/// A stream's life: its heartbeats, the node's shutdown, and its token's expiry (a stream
/// lives no longer than its token, CONTRACT §1 v1.1: it ends at `exp` plus the grace, and
/// the browser reconnects with a fresh token and its last id).
struct Life {
    beat: tokio::time::Interval,
    cancel: tokio_util::sync::CancellationToken,
    expires: tokio::time::Instant,
}

impl Life {
    fn new(app: &App, who: &crate::auth::Claims) -> Self {
        let ends_in_ms = who.exp.saturating_mul(1_000).saturating_add(app.cfg.auth_expiry_grace_ms as i64)
            - chrono::Utc::now().timestamp_millis();
        let mut beat = tokio::time::interval(Duration::from_millis(app.cfg.sse_heartbeat_ms));
        beat.reset();
        Life {
            beat,
            cancel: app.shutdown_token(),
            expires: tokio::time::Instant::now() + Duration::from_millis(ends_in_ms.max(0) as u64),
        }
    }

    async fn wait<T>(&mut self, rx: &mut mpsc::Receiver<T>) -> Wake<T> {
        tokio::select! {
            _ = self.cancel.cancelled() => Wake::End,
            _ = tokio::time::sleep_until(self.expires) => {
                metrics::counter!("fleetcast_sse_expired_total").increment(1);
                Wake::End
            }
            _ = self.beat.tick() => Wake::Beat,
            frame = rx.recv() => frame.map_or(Wake::End, Wake::Frame),
        }
    }
}

/// A `heartbeat {at}` event.
fn heartbeat() -> Option<Event> {
    let at = crate::domain::now_iso();
    let hb = sse_events::Heartbeat { kind: sse_events::HEARTBEAT, at: &at };
    serde_json::to_string(&hb).ok().map(|hb| Event::default().data(hb))
}

/// Opens a stream of `room`. With `offers`, the stream's driver subscribes to offers with
/// those filters for the stream's life.
#[allow(clippy::too_many_arguments)]
async fn open(
    app: Arc<App>,
    hub: Arc<SseHub>,
    who: crate::auth::Claims,
    room: RoomKey,
    kind: Kind,
    connected: Value,
    since: Option<EventId>,
    offers: Option<Filters>,
) -> Result<Response> {
    let slot = claim_connection(&app, &who).await?;
    let (hub_id, mut rx) = hub.register(&room);
    let held = Held::Room { hub, room: room.clone(), hub_id, offers: offers.is_some() };
    let guard = StreamGuard { app: app.clone(), slot: slot.clone(), claims: who.clone(), held };
    match &offers {
        // Subscribing derives the driver's availability.
        Some(filters) => flows::offers::subscribe(&app, &who, &slot, filters).await?,
        // A live connection may make a driver on a trip BUSY.
        None if who.role == Role::Driver => flows::presence::notice(&app, &who.tenant, &who.user).await,
        None => {}
    }
    app.engine.hold_room(&room).await?;
    let room_key = UserId(room.as_str().to_string());
    if let Err(e) = app.engine.claim(SlotKind::SseStreams, &who.tenant, &room_key, &slot, &[&slot], u32::MAX).await {
        tracing::debug!(error = %e, "SSE stream not counted");
    }
    let history = match since {
        Some(id) => Some(app.engine.history(&room, id).await?),
        None => None,
    };
    let mut life = Life::new(&app, &who);
    let stream = async_stream(move |tx: mpsc::Sender<Event>| async move {
        let _guard = guard;
        let send = |e: Event| {
            let tx = tx.clone();
            async move { tx.send(e).await.is_ok() }
        };
        if !send(Event::default().retry(Duration::from_millis(3000))).await {
            return;
        }
        let mut connected = connected;
        if let (Some(h), Some(obj)) = (&history, connected.as_object_mut()) {
            obj.insert("recovered".into(), Value::Bool(h.complete));
        }
        if !send(Event::default().data(connected.to_string())).await {
            return;
        }
        let mut last = since;
        for (id, event, json) in history.map(|h| h.events).unwrap_or_default() {
            if let Some(m) = kind.map(&event).and_then(|t| message(t, &json))
                && !send(Event::default().id(id.to_string()).data(m.to_string())).await
            {
                return;
            }
            last = Some(id);
        }
        loop {
            match life.wait(&mut rx).await {
                Wake::End => return,
                Wake::Beat => {
                    let Some(hb) = heartbeat() else { return };
                    if !send(hb).await {
                        return;
                    }
                }
                Wake::Frame((id, event, json)) => {
                    if last.is_some_and(|l| id <= l) {
                        continue;
                    }
                    last = Some(id);
                    if let Some(m) = kind.map(&event).and_then(|t| message(t, &json))
                        && !send(Event::default().id(id.to_string()).data(m.to_string())).await
                    {
                        return;
                    }
                }
            }
        }
    });
    metrics::counter!("fleetcast_sse_opened_total").increment(1);
    Ok(Sse::new(stream).into_response())
}

/// `GET /api/v1/realtime/area` query: the area as text, checked with clear errors.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AreaQuery {
    bbox: Option<String>,
    center: Option<String>,
    radius_km: Option<String>,
    interval_ms: Option<String>,
    availability: Option<String>,
}

fn numbers(name: &str, s: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|v| v.trim().parse::<f64>().map_err(|_| Error::invalid(format!("{name} must be numbers"))))
        .collect()
}

impl AreaQuery {
    fn spec(self) -> Result<AreaSpec> {
        let area = match (self.bbox.as_deref(), self.center.as_deref(), self.radius_km.as_deref()) {
            (Some(b), None, None) => {
                let b: [f64; 4] = numbers("bbox", b)?
                    .try_into()
                    .map_err(|_| Error::invalid("bbox must be minLng,minLat,maxLng,maxLat"))?;
                Area::bbox(b)?
            }
            (None, Some(c), Some(r)) => {
                let [lat, lng]: [f64; 2] =
                    numbers("center", c)?.try_into().map_err(|_| Error::invalid("center must be lat,lng"))?;
                let r: f64 = r.trim().parse().map_err(|_| Error::invalid("radiusKm must be a number"))?;
                Area::circle(lat, lng, r)?
            }
            _ => return Err(Error::invalid("give either bbox, or center and radiusKm")),
        };
        let interval = match self.interval_ms.as_deref() {
            None => None,
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| Error::invalid("intervalMs must be a number"))?),
        };
        let availability = self.availability.map(|a| a.split(',').map(str::to_string).collect());
        Ok(AreaSpec::new(String::new(), area, interval, availability)?)
    }
}

/// `GET /api/v1/realtime/area`: a live area as SSE (ADMIN, BUSINESS): `connected {drivers,
/// truncated}`, then conflated `area_update {drivers, left, at}` (no `id:`), heartbeats.
#[utoipa::path(get, path = "/api/v1/realtime/area", tag = "sse",
    params(("bbox" = Option<String>, Query, description = "minLng,minLat,maxLng,maxLat (≤ 100 km a side)"),
        ("center" = Option<String>, Query, description = "lat,lng, with radiusKm (≤ 50)"),
        ("radiusKm" = Option<f64>, Query), ("intervalMs" = Option<u64>, Query, description = "≥ 250, default 1000"),
        ("availability" = Option<String>, Query, description = "AVAILABLE,BUSY")),
    description = "connected {drivers, truncated}, area_update {drivers, left, at}, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn area(State(app): State<Arc<App>>, Caller(who): Caller, Query(q): Query<AreaQuery>) -> Result<Response> {
    let spec = q.spec()?;
    flows::areas::require_viewer(&who)?;
    let slot = claim_connection(&app, &who).await?;
    let sub = match flows::areas::subscribe(&app, &who, spec).await {
        Ok(sub) => sub,
        Err(e) => {
            let _ = app.engine.release(SlotKind::Connections, &who.tenant, &who.user, &slot, &[&slot]).await;
            return Err(e);
        }
    };
    let guard = StreamGuard { app: app.clone(), slot, claims: who.clone(), held: Held::Area(sub.id) };
    let connected =
        serde_json::json!({ "type": sse_events::CONNECTED, "drivers": sub.drivers, "truncated": sub.truncated });
    let mut rx = sub.rx;
    let mut life = Life::new(&app, &who);
    let stream = async_stream(move |tx: mpsc::Sender<Event>| async move {
        let _guard = guard;
        let send = |e: Event| {
            let tx = tx.clone();
            async move { tx.send(e).await.is_ok() }
        };
        if !send(Event::default().retry(Duration::from_millis(3000))).await
            || !send(Event::default().data(connected.to_string())).await
        {
            return;
        }
        loop {
            let event = match life.wait(&mut rx).await {
                Wake::End => return,
                Wake::Beat => heartbeat(),
                Wake::Frame(AreaMsg::Update(f)) => {
                    let update = sse_events::AreaUpdate {
                        kind: events::SSE_AREA_UPDATE,
                        drivers: &f.drivers,
                        left: &f.left,
                        at: &f.at,
                        emitted_at: &f.emitted_at,
                    };
                    serde_json::to_string(&update).ok().map(|json| Event::default().data(json))
                }
                Wake::Frame(AreaMsg::Availability(_)) => continue,
            };
            let Some(event) = event else { return };
            if !send(event).await {
                return;
            }
        }
    });
    metrics::counter!("fleetcast_sse_opened_total").increment(1);
    Ok(Sse::new(stream).into_response())
}

/// The SSE streams, as `(method, path)`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/realtime/trip-status/{trip_id}"),
    ("GET", "/api/v1/realtime/orders/{id}/stream"),
    ("GET", "/api/v1/realtime/runs/{id}/stream"),
    ("GET", "/api/v1/realtime/drivers/{id}/location"),
    ("GET", "/api/v1/realtime/me/stream"),
    ("GET", "/api/v1/realtime/area"),
];

#[derive(utoipa::OpenApi)]
#[openapi(paths(trip_status, order, run, driver_location, me, area))]
struct SseApi;

/// The SSE edge's part of the OpenAPI document.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    <SseApi as utoipa::OpenApi>::openapi()
}

/// SSE streams, gzip-compressed when the client accepts it (CONTRACT §6). tower-http
/// skips `text/event-stream` by default for fear of buffering; its encoder flushes when
/// the stream has nothing more to give, so events still leave at once (checked by a test
/// that waits for 200 ms heartbeats through gzip).
pub fn routes(hub: Arc<SseHub>) -> axum::Router<Arc<App>> {
    use axum::routing::get;
    let mut router = axum::Router::new();
    for (_, path) in ROUTES {
        let handler = match *path {
            "/api/realtime/trip-status/{trip_id}" => get(trip_status),
            "/api/v1/realtime/orders/{id}/stream" => get(order),
            "/api/v1/realtime/runs/{id}/stream" => get(run),
            "/api/v1/realtime/me/stream" => get(me),
            "/api/v1/realtime/area" => get(area),
            _ => get(driver_location),
        };
        router = router.route(path, handler);
    }
    router
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .compress_when(tower_http::compression::predicate::SizeAbove::new(0)),
        )
        .layer(Extension(hub))
}

/// A stream fed by a producer task through a small bounded channel (owner: the response
/// body; the task ends when the client goes away and the channel closes).
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = std::result::Result<Event, Infallible>>
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Event>(16);
    tokio::spawn(producer(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn room_events_map_to_stream_types() {
        assert_eq!(Kind::TripStatus.map("trip.status.updated"), Some("status_update"));
        assert_eq!(Kind::TripStatus.map("server:trip:status"), None);
        assert_eq!(Kind::Order.map("order_update"), Some("order_update"));
        let m = message("order_update", r#"{"eventId":"1-0","orderId":"o1"}"#).expect("object");
        assert_eq!(m["type"], json!("order_update"));
        assert_eq!(m["orderId"], json!("o1"));
    }
}
