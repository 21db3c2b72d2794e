//! This node's figures per tenant (CONTRACT §4 `GET /api/v1/admin/stats`): connections,
//! SSE streams and active trips from the transports' sinks, and the node's uptime. The
//! heartbeat publishes them to the node registry, so every node's admin view shows the
//! whole cluster; the serde form is that registry entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::app::App;

/// Most trip ids one node reports per tenant.
const MAX_TRIPS: usize = 1_000;

/// One node's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's id.
    pub node: String,
    /// Seconds since the node started.
    pub uptime_secs: u64,
    /// Figures by tenant.
    pub tenants: BTreeMap<String, TenantStats>,
}

/// A node's figures for one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStats {
    /// Socket.IO connections.
    pub connections: u64,
    /// SSE streams.
    pub sse_streams: u64,
    /// Trips with a subscribed socket on the node (at most 1,000).
    pub active_trips: Vec<String>,
}

/// This node's figures now.
pub fn node_stats(app: &App) -> NodeStats {
    let tenants = app
        .delivery
        .counts()
        .into_iter()
        .map(|(tenant, c)| {
            let active_trips = c.active_trips.into_iter().take(MAX_TRIPS).collect();
            (tenant, TenantStats { connections: c.connections, sse_streams: c.sse_streams, active_trips })
        })
        .collect();
    NodeStats { node: app.node_id.clone(), uptime_secs: app.started.elapsed().as_secs(), tenants }
}
