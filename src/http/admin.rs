//! `GET /api/v1/admin/stats` (CONTRACT §4 operations, ADMIN): this node and the whole
//! cluster — live nodes with their connection counts, SSE streams and active trip ids,
//! live drivers, Redis memory, ops/s, clients and pub/sub channels, snapshot queue depth.
//! Node figures are the caller's tenant's only (each node publishes per-tenant counts with
//! its heartbeat); the Redis figures are the shared server's. `GET /api/v1/admin/trips/{id}`
//! is the console's trip inspector (`flows::inspect`).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::auth::Caller;
use super::rides::{Trip, path_id};
use crate::app::App;
use crate::domain::Role;
use crate::error::{Error, Result};
use crate::flows::inspect;
use crate::flows::stats::{NodeStats, node_stats};
use crate::jobs::SNAPSHOT_QUEUE;

/// A node's figures for one tenant.
fn node_view(stats: &NodeStats, tenant: &str) -> Value {
    let t = stats.tenants.get(tenant).cloned().unwrap_or_default();
    json!({
        "id": stats.node,
        "uptimeSecs": stats.uptime_secs,
        "connections": t.connections,
        "sseStreams": t.sse_streams,
        "activeTrips": t.active_trips,
    })
}

/// The fields of Redis `INFO` an operator watches.
fn redis_view(info: &str) -> Value {
    let field =
        |name: &str| info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim);
    let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    // `db0:keys=12,expires=12,avg_ttl=…`
    let keys = field("db0").and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("keys="))?.parse::<u64>().ok());
    json!({
        "usedMemoryBytes": num("used_memory"),
        "usedMemoryHuman": field("used_memory_human"),
        "opsPerSec": num("instantaneous_ops_per_sec"),
        "connectedClients": num("connected_clients"),
        "pubsubChannels": num("pubsub_channels"),
        "pubsubShardChannels": num("pubsubshard_channels"),
        "keys": keys,
    })
}

/// The `redis` part of the stats: one Redis's figures; on a Redis Cluster the same fields
/// summed over the primaries, and each primary's under `shards`. `None` embedded.
pub(crate) fn redis_section(infos: &[(String, String)]) -> Option<Value> {
    match infos {
        [] => None,
        [(name, info)] if name == "redis" => Some(redis_view(info)),
        shards => {
            let views: Vec<Value> = shards
                .iter()
                .map(|(shard, info)| {
                    let mut v = redis_view(info);
                    v["shard"] = json!(shard);
                    v
                })
                .collect();
            let sum = |k: &str| views.iter().filter_map(|v| v[k].as_u64()).sum::<u64>();
            Some(json!({
                "usedMemoryBytes": sum("usedMemoryBytes"),
                "opsPerSec": sum("opsPerSec"),
                "connectedClients": sum("connectedClients"),
                "pubsubChannels": sum("pubsubChannels"),
                "pubsubShardChannels": sum("pubsubShardChannels"),
                "keys": sum("keys"),
                "shards": views,
            }))
        }
    }
}

/// `GET /api/v1/admin/stats`.
#[utoipa::path(get, path = "/api/v1/admin/stats", tag = "operations",
    responses((status = 200, description = "this node and the cluster, for the caller's tenant"),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(State(app): State<Arc<App>>, who: Caller) -> Result<Json<Value>> {
    if who.0.role != Role::Admin {
        return Err(Error::Forbidden);
    }
    let tenant = who.0.tenant.0.as_str();
    let me = node_view(&node_stats(&app), tenant);
    let mut nodes: Vec<Value> = app
        .engine
        .cluster_nodes()
        .await?
        .iter()
        .filter_map(|j| serde_json::from_str::<NodeStats>(j).ok())
        .filter(|n| n.node != app.node_id)
        .map(|n| node_view(&n, tenant))
        .collect();
    // This node's own figures are current, not its last heartbeat's.
    nodes.push(me.clone());
    nodes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let sum = |k: &str| nodes.iter().map(|n| n[k].as_u64().unwrap_or(0)).sum::<u64>();
    let trips: BTreeSet<String> = nodes
        .iter()
        .flat_map(|n| n["activeTrips"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let live_drivers = app.engine.live_drivers(&who.0.tenant, app.cfg.location_ttl_ms).await?;
    let redis = redis_section(&app.engine.server_infos().await?);
    let depth = app.db.queue_depth(SNAPSHOT_QUEUE).await.map_err(Error::from)?;
    Ok(Json(json!({
        "node": me,
        "cluster": {
            "nodeCount": nodes.len(),
            "nodes": nodes,
            "connections": sum("connections"),
            "sseStreams": sum("sseStreams"),
            "activeTrips": trips,
            "liveDrivers": live_drivers,
        },
        "redis": redis,
        "snapshotQueueDepth": depth,
        "at": crate::domain::now_iso(),
    })))
}

/// `GET /api/v1/admin/trips/{id}`: the console's trip inspector (ADMIN, BUSINESS).
#[utoipa::path(get, path = "/api/v1/admin/trips/{id}", tag = "operations", params(("id" = String, Path)),
    responses((status = 200, description = "the trip, its status log, bookings, live position, SSE streams and \
        the recent events of its room"),
        (status = 401, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn inspect_trip(State(app): State<Arc<App>>, who: Caller, Path(id): Path<String>) -> Result<Json<Value>> {
    let i = inspect::inspect(&app, &who.0, path_id(&id)?).await?;
    let recent: Vec<Value> = i
        .recent
        .iter()
        .map(|(id, name, payload)| {
            let payload = serde_json::from_str::<Value>(payload).unwrap_or(Value::Null);
            json!({ "eventId": id.to_string(), "event": name, "payload": payload })
        })
        .collect();
    Ok(Json(json!({
        "trip": Trip::from(i.trip),
        "statusLog": i.status_log,
        "bookings": i.bookings,
        "location": i.location,
        "subscribers": { "sseStreams": i.sse_streams },
        "recentEvents": recent,
        "historyComplete": i.history_complete,
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_info_fields_are_read() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n# Stats\r\n\
                    instantaneous_ops_per_sec:42\r\npubsub_channels:7\r\n# Clients\r\nconnected_clients:3\r\n";
        let v = super::redis_view(info);
        assert_eq!(v["usedMemoryBytes"], 1_048_576);
        assert_eq!(v["usedMemoryHuman"], "1.00M");
        assert_eq!(
            (v["opsPerSec"].as_u64(), v["pubsubChannels"].as_u64(), v["connectedClients"].as_u64()),
            (Some(42), Some(7), Some(3))
        );
    }
}
