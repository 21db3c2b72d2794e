//! Server-Sent Events edge (CONTRACT §3): the trip-status, order and run streams. A stream
//! answers 401/403/404 as JSON before it starts; then `retry: 3000`, a `connected` event
//! with the current state, what a reconnecting client missed after its `Last-Event-ID`
//! (from the room's history, the same ids as Socket.IO), then live events, and a heartbeat
//! every `--sse-heartbeat-ms`. Every event but `connected` and `heartbeat` has an `id:`.
//!
//! The seam: a stream registers with the node's [`SseHub`] (live frames start queueing in
//! its own bounded channel) and the node holds the room before the history is read; the
//! stream then sends the history and, from its channel, only ids newer than the last
//! replayed one. A client too slow to drain its channel is cut off (counted in
//! `fleetcast_sse_slow_clients_total`) and reconnects with its last id, instead of
//! growing memory.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::App;
use crate::domain::{Role, TripId, UserId, valid_id};
use crate::engine::{EventId, RoomKey, SlotKind};
use crate::error::{Error, Result};
use crate::http::auth::Caller;

/// Frames buffered per stream before the client counts as too slow.
const STREAM_BUFFER: usize = 256;

/// A frame for SSE streams: `(id, event name, payload JSON)`.
type SseFrame = (EventId, Arc<str>, Arc<str>);

/// Local room name → the room's streams (id, bounded sender).
type Streams = HashMap<String, Vec<(u64, mpsc::Sender<SseFrame>)>>;

/// SSE streams of this node, by local room name.
#[derive(Default)]
pub struct SseHub {
    /// The lock is never held across `.await`; senders are bounded.
    streams: std::sync::Mutex<Streams>,
    next: AtomicU64,
}

impl SseHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn register(&self, room: &RoomKey) -> (u64, mpsc::Receiver<SseFrame>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.lock().entry(room.as_str().to_string()).or_default().push((id, tx));
        metrics::gauge!("fleetcast_sse_streams").increment(1.0);
        (id, rx)
    }

    fn unregister(&self, room: &RoomKey, id: u64) {
        let mut m = self.lock();
        if let Some(list) = m.get_mut(room.as_str()) {
            let before = list.len();
            list.retain(|(i, _)| *i != id);
            if list.len() < before {
                metrics::gauge!("fleetcast_sse_streams").decrement(1.0);
            }
            if list.is_empty() {
                m.remove(room.as_str());
            }
        }
    }

    /// Hands a recoverable frame to the room's streams; a full stream is cut off.
    pub fn deliver(&self, room: &RoomKey, event: &str, id: EventId, json: &str) {
        let mut m = self.lock();
        let Some(list) = m.get_mut(room.as_str()) else { return };
        let frame: SseFrame = (id, Arc::from(event), Arc::from(json));
        list.retain(|(_, tx)| match tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("fleetcast_sse_slow_clients_total").increment(1);
                metrics::gauge!("fleetcast_sse_streams").decrement(1.0);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::gauge!("fleetcast_sse_streams").decrement(1.0);
                false
            }
        });
    }

    /// Hands a volatile frame (a driver location) to the room's streams with an id of this
    /// node's clock: it moves the client's last id but is never replayed.
    pub fn deliver_volatile(&self, room: &RoomKey, event: &str, json: &str) {
        if !self.lock().contains_key(room.as_str()) {
            return;
        }
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.deliver(room, event, EventId { ms, seq }, json);
    }

    /// Ends every stream (graceful shutdown): clients reconnect elsewhere with their id.
    pub fn close_all(&self) {
        let mut m = self.lock();
        let n: usize = m.values().map(Vec::len).sum();
        metrics::gauge!("fleetcast_sse_streams").decrement(n as f64);
        m.clear();
    }

    /// Streams open on this node for a room.
    /// Streams open on this node, by tenant (for the admin stats).
    pub fn counts_by_tenant(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for (room, streams) in self.lock().iter() {
            if let Some(key) = RoomKey::parse(room) {
                *out.entry(key.tenant().to_string()).or_insert(0) += streams.len() as u64;
            }
        }
        out
    }

    /// Streams open on this node for `room`.
    pub fn local_count(&self, room: &RoomKey) -> usize {
        self.lock().get(room.as_str()).map_or(0, Vec::len)
    }
}

/// Which stream, and how its events look.
#[derive(Clone, Copy)]
enum Kind {
    TripStatus,
    Order,
    Run,
    DriverLocation,
}

impl Kind {
    /// The SSE `type` of a room event, or `None` when the stream does not carry it.
    fn map(self, event: &str) -> Option<&'static str> {
        match (self, event) {
            (Kind::TripStatus, "trip.status.updated") => Some("status_update"),
            (Kind::Order, "order_update") => Some("order_update"),
            (Kind::Run, "run_update") => Some("run_update"),
            (Kind::DriverLocation, "driver_location") => Some("driver_location"),
            _ => None,
        }
    }
}

fn message(kind: &'static str, json: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_str(json).ok()?;
    v.as_object_mut()?.insert("type".into(), kind.into());
    Some(v)
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<EventId>> {
    match headers.get("last-event-id").and_then(|h| h.to_str().ok()) {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => EventId::parse(s.trim()).map(Some).ok_or_else(|| Error::invalid("Last-Event-ID is not an event id")),
    }
}

/// `GET /api/realtime/trip-status/{tripId}`.
#[utoipa::path(get, path = "/api/realtime/trip-status/{tripId}", tag = "sse", params(("tripId" = String, Path)),
    description = "connected, status_update, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody), (status = 429, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn trip_status(
    State(app): State<Arc<App>>,
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
    let room = RoomKey::new(&who.tenant, &format!("trip:{}:subscribers", trip.0));
    let connected = json!({ "type": "connected", "tripId": trip.0, "currentStatus": current });
    open(app, who, room, Kind::TripStatus, connected, last_event_id(&headers)?).await
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
    who: crate::auth::Claims,
    kind: Kind,
    name: &str,
    id: String,
    headers: &HeaderMap,
) -> Result<Response> {
    if !valid_id(&id) {
        return Err(Error::NotFound);
    }
    may_follow(&who, &format!("{name}:{id}"))?;
    let room = RoomKey::new(&who.tenant, &format!("{name}:{id}"));
    let mut connected = serde_json::Map::new();
    connected.insert("type".into(), json!("connected"));
    connected.insert(format!("{name}Id"), json!(id));
    open(app, who, room, kind, Value::Object(connected), last_event_id(headers)?).await
}

/// `GET /api/v1/realtime/orders/{id}/stream`.
#[utoipa::path(get, path = "/api/v1/realtime/orders/{id}/stream", tag = "sse", params(("id" = String, Path)),
    description = "connected, order_update, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody), (status = 429, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn order(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    entity_stream(app, who, Kind::Order, "order", id, &headers).await
}

/// `GET /api/v1/realtime/runs/{id}/stream`.
#[utoipa::path(get, path = "/api/v1/realtime/runs/{id}/stream", tag = "sse", params(("id" = String, Path)),
    description = "connected, run_update, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody), (status = 429, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn run(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    entity_stream(app, who, Kind::Run, "run", id, &headers).await
}

/// `GET /api/v1/realtime/drivers/{id}/location`: the driver itself, ADMIN/BUSINESS/SERVICE
/// of the tenant, or a `driver:{id}` grant. Locations are volatile: `connected` carries the
/// latest live one, and a `Last-Event-ID` replays nothing.
#[utoipa::path(get, path = "/api/v1/realtime/drivers/{id}/location", tag = "sse", params(("id" = String, Path)),
    description = "connected, driver_location, heartbeat",
    responses((status = 200, content_type = "text/event-stream", description = "the stream"),
        (status = 401, body = crate::http::ErrorBody), (status = 403, body = crate::http::ErrorBody),
        (status = 404, body = crate::http::ErrorBody), (status = 429, body = crate::http::ErrorBody)),
    security(("bearer" = [])))]
pub async fn driver_location(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    if !valid_id(&id) {
        return Err(Error::NotFound);
    }
    if who.user.0 != id {
        may_follow(&who, &format!("driver:{id}"))?;
    }
    let driver = UserId(id);
    let current = app.engine.driver_location(&who.tenant, &driver).await?;
    let location = current
        .and_then(|j| serde_json::from_str::<Value>(&j).ok())
        .map(|l| json!({ "latitude": l["lat"], "longitude": l["lng"], "heading": l["heading"], "speed": l["speed"], "timestamp": l["updatedAt"] }))
        .unwrap_or(Value::Null);
    let room = RoomKey::new(&who.tenant, &format!("driver:{}:location", driver.0));
    let connected = json!({ "type": "connected", "driverId": driver.0, "location": location });
    open(app, who, room, Kind::DriverLocation, connected, None).await
}

/// Releases what an open stream holds when the response body is dropped (client gone,
/// cut off, or node shutting down).
struct StreamGuard {
    app: Arc<App>,
    room: RoomKey,
    hub_id: u64,
    slot: String,
    claims: crate::auth::Claims,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.app.sse.unregister(&self.room, self.hub_id);
        let (app, room, slot, claims) = (self.app.clone(), self.room.clone(), self.slot.clone(), self.claims.clone());
        // Owner: the runtime; a short task that only releases Redis slots.
        tokio::spawn(async move {
            app.engine.release_room(&room).await;
            let key = UserId(room.as_str().to_string());
            let _ = app.engine.release(SlotKind::SseStreams, &claims.tenant, &key, &slot, &[&slot]).await;
            let _ = app.engine.release(SlotKind::Connections, &claims.tenant, &claims.user, &slot, &[&slot]).await;
        });
    }
}

async fn open(
    app: Arc<App>,
    who: crate::auth::Claims,
    room: RoomKey,
    kind: Kind,
    connected: Value,
    since: Option<EventId>,
) -> Result<Response> {
    let slot = format!("sse-{}", uuid::Uuid::new_v4().simple());
    // The per-user connection cap counts SSE streams with Socket.IO connections.
    match app
        .engine
        .claim(SlotKind::Connections, &who.tenant, &who.user, &slot, &[&slot], app.cfg.max_connections_per_user)
        .await
    {
        Ok(crate::engine::Claim::Refused) => return Err(Error::RateLimited { retry_after_ms: 1_000 }),
        Ok(crate::engine::Claim::Granted) => {}
        Err(_) => tracing::warn!("SSE connection cap not checked: engine unavailable"),
    }
    let (hub_id, mut rx) = app.sse.register(&room);
    let guard = StreamGuard { app: app.clone(), room: room.clone(), hub_id, slot: slot.clone(), claims: who.clone() };
    app.engine.hold_room(&room).await?;
    let room_key = UserId(room.as_str().to_string());
    if let Err(e) = app.engine.claim(SlotKind::SseStreams, &who.tenant, &room_key, &slot, &[&slot], u32::MAX).await {
        tracing::debug!(error = %e, "SSE stream not counted");
    }
    let history = match since {
        Some(id) => Some(app.engine.history(&room, id).await?),
        None => None,
    };
    let heartbeat = Duration::from_millis(app.cfg.sse_heartbeat_ms);
    let cancel = app.shutdown_token();
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
        let mut beat = tokio::time::interval(heartbeat);
        beat.tick().await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = beat.tick() => {
                    let hb = json!({ "type": "heartbeat", "at": crate::domain::now_iso() });
                    if !send(Event::default().data(hb.to_string())).await { return; }
                }
                frame = rx.recv() => {
                    let Some((id, event, json)) = frame else { return };
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

/// SSE streams of the tenant's rooms across the cluster (for `EmissionResult`).
pub async fn cluster_count(app: &App, room: &RoomKey) -> u64 {
    let tenant = crate::domain::Tenant(room.tenant().to_string());
    app.engine.count_slots(SlotKind::SseStreams, &tenant, &UserId(room.as_str().to_string())).await.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_that_does_not_keep_up_is_cut_off_instead_of_buffering() {
        let hub = SseHub::default();
        let room = RoomKey::new(&crate::domain::Tenant("t".into()), "order:o1");
        let (_id, mut slow) = hub.register(&room);
        let (_id2, mut fast) = hub.register(&room);
        for seq in 0..(STREAM_BUFFER as u64 + 10) {
            hub.deliver(&room, "order_update", EventId { ms: 1, seq }, "{}");
            // The fast stream keeps reading; the slow one never does.
            assert!(fast.recv().await.is_some());
        }
        assert_eq!(hub.local_count(&room), 1, "only the slow stream was cut off");
        let mut got = 0;
        while slow.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(got, STREAM_BUFFER, "its buffer was bounded, then the stream ended");
    }

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
