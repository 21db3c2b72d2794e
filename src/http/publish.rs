//! The unified emitter (CONTRACT §4 "Publish"): `POST /api/v1/emit`, the order and run
//! shortcuts, and `POST /api/v1/notifications` (§7), for SERVICE and ADMIN callers. Every
//! event goes through the one publish path as a recoverable event (`eventId`, `emittedAt` added), so it reaches Socket.IO members of
//! the rooms on every node and SSE streams of those rooms, and can be replayed. The `sse`
//! part of the result counts the rooms' SSE streams across the cluster.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::Caller;
use crate::app::App;
use crate::domain::rooms::Entity;
use crate::domain::{RoomKey, UserId, valid_id};
use crate::error::{Error, Result};
use crate::events::{self, EntityUpdate, Published};
use crate::flows::publish::{self, Emission, may_publish};
use crate::limits::room_name;

use super::body::body;

/// Most rooms plus users one publish call may target.
const MAX_TARGETS: usize = 1_000;

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

/// `POST /api/v1/notifications` body (CONTRACT §7).
#[derive(Deserialize, utoipa::ToSchema)]
pub struct NotifyIn {
    users: Vec<String>,
    title: Value,
    body: Value,
    level: Option<Value>,
    data: Option<Value>,
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

/// The request body, at most `--publish-max-bytes` (CONTRACT §4 v1.1): a larger one is 413
/// `INVALID_PAYLOAD`, read no further than the bound, and nothing is published.
async fn bounded(app: &App, raw: Body) -> Result<Bytes> {
    let max = app.cfg.publish_max_bytes;
    axum::body::to_bytes(raw, max).await.map_err(|_| Error::TooLarge(format!("the body is larger than {max} bytes")))
}

/// The `EmissionResult` of an emission.
fn result(e: Emission) -> (StatusCode, Json<EmissionResult>) {
    let result = EmissionResult {
        success: e.sent,
        sse: TransportResult {
            sent: e.sent && e.sse_connections > 0,
            connections: Some(e.sse_connections),
            error: e.error,
        },
        socketio: TransportResult { sent: e.sent, connections: None, error: e.error },
    };
    (StatusCode::ACCEPTED, Json(result))
}

/// `POST /api/v1/emit {event, payload, rooms?, users?}`.
#[utoipa::path(post, path = "/api/v1/emit", tag = "publish", request_body = EmitIn,
    responses((status = 202, body = EmissionResult), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody)), security(("bearer" = [])))]
pub async fn emit(State(app): State<Arc<App>>, who: Caller, raw: Body) -> Result<(StatusCode, Json<EmissionResult>)> {
    may_publish(&who.0)?;
    let bytes = bounded(&app, raw).await?;
    let input: EmitIn = body(&bytes)?;
    if !valid_id(&input.event) {
        return Err(Error::invalid("event must be 1–128 characters"));
    }
    let Value::Object(mut fields) = input.payload else {
        return Err(Error::invalid("payload must be a JSON object"));
    };
    if input.event == events::NOTIFICATION {
        notification(&mut fields)?;
    }
    let tenant = &who.0.tenant;
    let mut rooms = Vec::new();
    for r in input.rooms.unwrap_or_default() {
        room_name(&r)?;
        rooms.push(RoomKey::named(tenant, &r));
    }
    rooms.extend(user_rooms(tenant, input.users.unwrap_or_default())?);
    rooms.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    rooms.dedup();
    if rooms.is_empty() || rooms.len() > MAX_TARGETS {
        return Err(Error::invalid(format!("give 1–{MAX_TARGETS} rooms or users")));
    }
    let event = Published { name: input.event, payload: fields };
    Ok(result(publish::emit(&app, &rooms, &event).await))
}

/// The user rooms of `users` in `tenant`; each must be an id.
fn user_rooms(tenant: &crate::domain::Tenant, users: Vec<String>) -> Result<Vec<RoomKey>> {
    users
        .into_iter()
        .map(|u| {
            if valid_id(&u) {
                Ok(RoomKey::user(tenant, &UserId(u)))
            } else {
                Err(Error::invalid("users must be ids of 1–128 characters"))
            }
        })
        .collect()
}

/// A `notification` payload is `{id, title, body, level, data?}` (CONTRACT §2, §7): `title`
/// a string of at most 200 characters, `body` one of at most 1 KiB, `level` one of `info`
/// (default), `success`, `warning`, `error`, `data` an object when given, and `id`
/// generated when absent.
fn notification(p: &mut Map<String, Value>) -> Result<()> {
    match p.get("title") {
        Some(Value::String(s)) if s.chars().count() <= 200 => {}
        _ => return Err(Error::invalid("notification title must be a string of at most 200 characters")),
    }
    match p.get("body") {
        Some(Value::String(s)) if s.len() <= 1024 => {}
        _ => return Err(Error::invalid("notification body must be a string of at most 1 KiB")),
    }
    match p.get("data") {
        None | Some(Value::Object(_)) => {}
        Some(Value::Null) => {
            p.remove("data");
        }
        Some(_) => return Err(Error::invalid("notification data must be an object")),
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

/// `POST /api/v1/notifications {users, title, body, level?, data?}` (CONTRACT §7): one
/// `notification` (one generated `id`) to each user's room, recoverable, so a client that
/// was away gets it back with `user:sync`.
#[utoipa::path(post, path = "/api/v1/notifications", tag = "publish", request_body = NotifyIn,
    responses((status = 202, body = EmissionResult), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn notify(State(app): State<Arc<App>>, who: Caller, raw: Body) -> Result<(StatusCode, Json<EmissionResult>)> {
    may_publish(&who.0)?;
    let input: NotifyIn = body(&bounded(&app, raw).await?)?;
    if input.users.is_empty() || input.users.len() > MAX_TARGETS {
        return Err(Error::invalid(format!("users must list 1–{MAX_TARGETS} user ids")));
    }
    let mut rooms = user_rooms(&who.0.tenant, input.users)?;
    rooms.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    rooms.dedup();
    let mut fields = Map::new();
    fields.insert("title".into(), input.title);
    fields.insert("body".into(), input.body);
    fields.insert("level".into(), input.level.unwrap_or(Value::Null));
    if let Some(data) = input.data {
        fields.insert("data".into(), data);
    }
    notification(&mut fields)?;
    let event = Published { name: events::NOTIFICATION.to_string(), payload: fields };
    Ok(result(publish::emit(&app, &rooms, &event).await))
}

async fn entity_update(
    app: &App,
    who: &Caller,
    entity: Entity,
    id: &str,
    raw: Body,
) -> Result<(StatusCode, Json<EmissionResult>)> {
    may_publish(&who.0)?;
    if !valid_id(id) {
        return Err(Error::NotFound);
    }
    let input: DataIn = body(&bounded(app, raw).await?)?;
    let event = EntityUpdate { entity, id, data: input.data };
    let room = RoomKey::entity(&who.0.tenant, entity, id);
    Ok(result(publish::emit(app, &[room], &event).await))
}

/// `POST /api/v1/realtime/orders/{id} {data}` → `order_update {orderId, data}` to `order:{id}`.
#[utoipa::path(post, path = "/api/v1/realtime/orders/{id}", tag = "publish", params(("id" = String, Path)),
    request_body = DataIn, responses((status = 202, body = EmissionResult), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn order(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
    raw: Body,
) -> Result<(StatusCode, Json<EmissionResult>)> {
    entity_update(&app, &who, Entity::Order, &id, raw).await
}

/// `POST /api/v1/realtime/runs/{id} {data}` → `run_update {runId, data}` to `run:{id}`.
#[utoipa::path(post, path = "/api/v1/realtime/runs/{id}", tag = "publish", params(("id" = String, Path)),
    request_body = DataIn, responses((status = 202, body = EmissionResult), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn run(
    State(app): State<Arc<App>>,
    who: Caller,
    Path(id): Path<String>,
    raw: Body,
) -> Result<(StatusCode, Json<EmissionResult>)> {
    entity_update(&app, &who, Entity::Run, &id, raw).await
}
