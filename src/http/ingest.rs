//! HTTP location ingest (CONTRACT §7), for trackers and backends without a socket:
//! `POST /api/v1/drivers/me/location` (a DRIVER's own position) and the batched SERVICE
//! `POST /api/v1/locations` (1–1,000 updates, each checked as if its driver had sent it,
//! answered in request order). Both go through the one accepted-update path
//! (`flows::driving::update_location`): same validation, cluster-wide rate windows,
//! storage, broadcast and sampling as `driver:location:update`. A batch runs its updates
//! concurrently (the engine pipelines them), except that the updates of one driver run in
//! request order, so the rate window sees them as the driver would have sent them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::Caller;
use super::body::{Done, body};
use crate::app::App;
use crate::auth::Claims;
use crate::domain::{PositionReport, Role, UserId, valid_id};
use crate::error::{Error, Result};
use crate::flows::driving;

/// Most updates in one batch.
pub const MAX_BATCH: usize = 1_000;

/// Updates of one batch in flight at once.
const CONCURRENCY: usize = 128;

/// `POST /api/v1/locations` body: `{updates: [{driverId, tripId?, lat, lng, …}]}`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct BatchIn {
    #[schema(value_type = Vec<Object>)]
    updates: Vec<Value>,
}

/// `{results: [{ok:true} | {ok:false, error, message?, retryAfterMs?}]}`, in request order.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchOut {
    #[schema(value_type = Vec<Object>)]
    results: Vec<Value>,
}

/// `POST /api/v1/drivers/me/location`: the body is a `driver:location:update` payload.
#[utoipa::path(post, path = "/api/v1/drivers/me/location", tag = "ingest",
    request_body(content = Object, description = "the driver:location:update payload"),
    responses((status = 200, body = Done), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody), (status = 503, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn own(State(app): State<Arc<App>>, Caller(who): Caller, bytes: Bytes) -> Result<Json<Done>> {
    let report: PositionReport = body(&bytes)?;
    if who.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    let location = report.into_location(who.user.clone())?;
    driving::update_location(&app, &who, location, None).await?;
    Ok(Json(Done::OK))
}

/// `POST /api/v1/locations {updates}` (SERVICE).
#[utoipa::path(post, path = "/api/v1/locations", tag = "ingest", request_body = BatchIn,
    responses((status = 200, body = BatchOut), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn batch(State(app): State<Arc<App>>, Caller(who): Caller, bytes: Bytes) -> Result<Json<BatchOut>> {
    let input: BatchIn = body(&bytes)?;
    if who.role != Role::Service {
        return Err(Error::Forbidden);
    }
    if input.updates.is_empty() || input.updates.len() > MAX_BATCH {
        return Err(Error::invalid(format!("updates must hold 1–{MAX_BATCH} entries")));
    }
    // Wave k holds each driver's k-th update: waves run one after the other, the updates
    // of a wave concurrently.
    let mut results = vec![Value::Null; input.updates.len()];
    let mut waves: Vec<Vec<(usize, Value)>> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, v) in input.updates.into_iter().enumerate() {
        let driver = v.get("driverId").and_then(Value::as_str).unwrap_or_default().to_string();
        let k = seen.entry(driver).or_insert(0);
        if waves.len() <= *k {
            waves.push(Vec::new());
        }
        waves[*k].push((i, v));
        *k += 1;
    }
    for wave in waves {
        let done: Vec<(usize, Value)> = futures_util::stream::iter(wave)
            .map(|(i, v)| {
                let (app, who) = (&app, &who);
                async move { (i, reply(one(app, who, v).await)) }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (i, r) in done {
            results[i] = r;
        }
    }
    Ok(Json(BatchOut { results }))
}

/// One entry of a batch, as if its driver had sent it.
async fn one(app: &App, service: &Claims, v: Value) -> Result<()> {
    let driver = match v.get("driverId") {
        Some(Value::String(d)) if valid_id(d) => UserId(d.clone()),
        _ => return Err(Error::invalid("driverId must be an id of 1–128 characters")),
    };
    let report: PositionReport = serde_path_to_error::deserialize(v).map_err(|e| Error::invalid(e.to_string()))?;
    let location = report.into_location(driver.clone())?;
    let as_driver = Claims {
        user: driver,
        role: Role::Driver,
        tenant: service.tenant.clone(),
        name: None,
        channels: Vec::new(),
        exp: service.exp,
    };
    driving::update_location(app, &as_driver, location, None).await
}

/// An entry's result: `{ok:true}` or the contract's refusal.
fn reply(r: Result<()>) -> Value {
    let outcome = if r.is_ok() { "accepted" } else { "refused" };
    metrics::counter!("fleetcast_ingest_updates_total", "outcome" => outcome).increment(1);
    match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => e.refusal(),
    }
}
