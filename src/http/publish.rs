//! The unified emitter (CONTRACT §4 "Publish"): `POST /api/v1/emit`, and the order and run
//! shortcuts, for SERVICE and ADMIN callers. Every event goes through the one publish path
//! as a recoverable event (`eventId`, `emittedAt` added), so it reaches Socket.IO members of
//! the rooms on every node and SSE streams of those rooms, and can be replayed. The `sse`
//! part of the result counts the rooms' SSE streams across the cluster.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::Caller;
use crate::App;
use crate::domain::{Role, valid_id};
use crate::engine::RoomKey;
use crate::error::{Error, Result};
use crate::fanout;
use crate::socket::payload::{check_limits, room_name};

/// Most rooms plus users one publish call may target.
const MAX_TARGETS: usize = 1_000;

/// Up to this many targets, a socket in several of them receives the event once.
const DEDUP_ROOMS: usize = 64;

/// `POST /api/v1/emit` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EmitIn {
    event: String,
    payload: Value,
    rooms: Option<Vec<String>>,
    users: Option<Vec<String>>,
}

/// Body of the order and run shortcuts.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct DataIn {
    data: Value,
}

/// `EmissionResult`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EmissionResult {
    success: bool,
    sse: TransportResult,
    socketio: TransportResult,
}

/// What one transport did with the event.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TransportResult {
    sent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

fn publisher(who: &Caller) -> Result<()> {
    match who.0.role {
        Role::Service | Role::Admin => Ok(()),
        _ => Err(Error::Forbidden),
    }
}

/// Parses a JSON body within the payload limits; errors name the field.
pub(super) fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("body is not JSON: {e}")))?;
    check_limits(&v, 1)?;
    serde_path_to_error::deserialize(v).map_err(|e| Error::invalid(e.to_string()))
}

async fn emit_to(
    app: &App,
    tenant: &crate::domain::Tenant,
    rooms: &[String],
    event: &str,
    payload: &Value,
) -> (StatusCode, Json<EmissionResult>) {
    let mut sent = true;
    let mut error = None;
    let keys: Vec<RoomKey> = rooms.iter().map(|name| RoomKey::new(tenant, name)).collect();
    for (i, room) in keys.iter().enumerate() {
        // A socket in several targeted rooms receives the event once: each room's frame
        // skips the members of the rooms before it (bounded, as the frame carries them).
        let before: Vec<&RoomKey> = if keys.len() <= DEDUP_ROOMS { keys[..i].iter().collect() } else { Vec::new() };
        if let Err(e) = fanout::publish_recoverable_except(&app.engine, room, event, payload, &before).await {
            // A failed emission never fails the request: it is reported and counted.
            metrics::counter!("fleetcast_publish_failures_total").increment(1);
            sent = false;
            error = Some(e.code());
        }
    }
    let mut connections = 0;
    for name in rooms {
        connections += crate::sse::cluster_count(app, &RoomKey::new(tenant, name)).await;
    }
    let result = EmissionResult {
        success: sent,
        sse: TransportResult { sent: sent && connections > 0, connections: Some(connections), error },
        socketio: TransportResult { sent, connections: None, error },
    };
    (StatusCode::ACCEPTED, Json(result))
}

/// `POST /api/v1/emit {event, payload, rooms?, users?}`.
#[utoipa::path(post, path = "/api/v1/emit", tag = "publish", request_body = EmitIn,
    responses((status = 202, body = EmissionResult), (status = 400, body = super::rides::ErrorBody),
        (status = 403, body = super::rides::ErrorBody)), security(("bearer" = [])))]
pub async fn emit(
    State(app): State<Arc<App>>,
    who: Caller,
    bytes: Bytes,
) -> Result<(StatusCode, Json<EmissionResult>)> {
    publisher(&who)?;
    let input: EmitIn = body(&bytes)?;
    if !valid_id(&input.event) {
        return Err(Error::invalid("event must be 1–128 characters"));
    }
    let mut payload = input.payload;
    let Some(fields) = payload.as_object_mut() else {
        return Err(Error::invalid("payload must be a JSON object"));
    };
    if input.event == "notification" {
        notification(fields)?;
    }
    let mut rooms = input.rooms.unwrap_or_default();
    for r in &rooms {
        room_name(r)?;
    }
    for u in input.users.unwrap_or_default() {
        if !valid_id(&u) {
            return Err(Error::invalid("users must be ids of 1–128 characters"));
        }
        rooms.push(format!("user:{u}"));
    }
    rooms.sort();
    rooms.dedup();
    if rooms.is_empty() || rooms.len() > MAX_TARGETS {
        return Err(Error::invalid(format!("give 1–{MAX_TARGETS} rooms or users")));
    }
    Ok(emit_to(&app, &who.0.tenant, &rooms, &input.event, &payload).await)
}

/// A `notification` payload is `{id, title, body, level, data?}` (CONTRACT §2): `title` and
/// `body` are required strings, `level` one of `info` (default), `success`, `warning`,
/// `error`, and `id` is generated when absent.
fn notification(p: &mut Map<String, Value>) -> Result<()> {
    for field in ["title", "body"] {
        match p.get(field) {
            Some(Value::String(s)) if s.len() <= 1024 => {}
            _ => return Err(Error::invalid(format!("notification {field} must be a string of at most 1 KiB"))),
        }
    }
    match p.get("level") {
        None | Some(Value::Null) => {
            p.insert("level".into(), json!("info"));
        }
        Some(Value::String(l)) if ["info", "success", "warning", "error"].contains(&l.as_str()) => {}
        _ => return Err(Error::invalid("notification level must be info, success, warning or error")),
    }
    match p.get("id") {
        None | Some(Value::Null) => {
            p.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
        }
        Some(Value::String(id)) if valid_id(id) => {}
        _ => return Err(Error::invalid("notification id must be 1–128 characters")),
    }
    Ok(())
}

async fn entity_update(
    app: &App,
    who: &Caller,
    kind: &str,
    id: &str,
    bytes: &Bytes,
) -> Result<(StatusCode, Json<EmissionResult>)> {
    publisher(who)?;
    if !valid_id(id) {
        return Err(Error::NotFound);
    }
    let input: DataIn = body(bytes)?;
    let mut payload = Map::new();
    payload.insert(format!("{kind}Id"), json!(id));
    payload.insert("data".into(), input.data);
    let room = format!("{kind}:{id}");
    Ok(emit_to(app, &who.0.tenant, &[room], &format!("{kind}_update"), &Value::Object(payload)).await)
}

/// `POST /api/v1/realtime/orders/{id} {data}` → `order_update {orderId, data}` to `order:{id}`.
#[utoipa::path(post, path = "/api/v1/realtime/orders/{id}", tag = "publish", params(("id" = String, Path)),
    request_body = DataIn, responses((status = 202, body = EmissionResult), (status = 403, body = super::rides::ErrorBody)),
    security(("bearer" = [])))]
pub async fn order(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<EmissionResult>)> {
    entity_update(&app, &who, "order", &id, &bytes).await
}

/// `POST /api/v1/realtime/runs/{id} {data}` → `run_update {runId, data}` to `run:{id}`.
#[utoipa::path(post, path = "/api/v1/realtime/runs/{id}", tag = "publish", params(("id" = String, Path)),
    request_body = DataIn, responses((status = 202, body = EmissionResult), (status = 403, body = super::rides::ErrorBody)),
    security(("bearer" = [])))]
pub async fn run(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<EmissionResult>)> {
    entity_update(&app, &who, "run", &id, &bytes).await
}
