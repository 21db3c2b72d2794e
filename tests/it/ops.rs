//! Operations routes (CONTRACT §4): liveness, readiness, Prometheus metrics with the node
//! label, JSON 404s, and graceful shutdown closing sockets cleanly.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

async fn health_readiness_and_metrics_answer(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/healthz", h.a())).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{}/readyz", h.b())).send().await.expect("readyz");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["engine"], json!(true));
    assert_eq!(body["database"], json!(true));

    // Generate some traffic, then read the metrics.
    let c = Client::connect(&h.a(), &token("u1", "PASSENGER")).await;
    assert_ok(&c.ack("heartbeat", json!({})).await);
    assert_err(&c.ack("passenger:subscribe", json!({})).await, "INVALID_PAYLOAD");
    let text = http.get(format!("{}/metrics", h.a())).send().await.expect("metrics").text().await.expect("text");
    for name in ["fleetcast_connections", "fleetcast_events_in_total", "fleetcast_acks_total"] {
        assert!(text.contains(name), "missing {name} in /metrics");
    }
    assert!(text.contains("code=\"INVALID_PAYLOAD\""), "acks by code");
    assert!(text.contains("node=\""), "node label");

    let r = http.get(format!("{}/no/such/route", h.a())).send().await.expect("404");
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], json!("NOT_FOUND"));
    c.close().await;
    h.stop().await;
}

async fn graceful_shutdown_closes_sockets_and_frees_their_slots(mode: Mode) {
    let mut h = Harness::start(mode, &["--max-trip-subscriptions", "1"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let extra = h.add_node().await;
    let mut c = Client::connect(&h.url(extra), &token("p1", "PASSENGER")).await;
    assert_ok(&c.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let node = h.nodes.remove(extra);
    let stopped = tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await;
    assert!(stopped.is_ok(), "shutdown exceeded its drain bound");
    // The client learns at once (no ping timeout): nothing more arrives, the socket is closed.
    assert!(c.next("anything", Duration::from_millis(300)).await.is_none());
    // Its subscription slot is free for a socket on a surviving node.
    let other = Client::connect(&h.a(), &token("p1", "PASSENGER")).await;
    assert_ok(&other.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    other.close().await;
    c.drain();
    h.stop().await;
}

/// `GET /api/v1/admin/stats`: this node and the cluster, for the caller's tenant only.
async fn admin_stats_show_the_cluster_of_the_callers_tenant(mode: Mode) {
    let started = std::time::Instant::now();
    let h = Harness::start(mode, &["--node-heartbeat-ms", "300", "--location-min-interval-ms", "0"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let p = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    assert_ok(&p.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let d = Client::connect(&h.b(), &token("d1", "DRIVER")).await;
    assert_ok(&d.ack("driver:location:update", json!({ "tripId": trip, "lat": 1.0, "lng": 2.0 })).await);
    let admin = token("adm", "ADMIN");
    let sse = reqwest::Client::new()
        .get(format!("{}/api/realtime/trip-status/{trip}", h.a()))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("stream");
    assert_eq!(sse.status(), 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let get = |t: String| {
        let url = format!("{}/api/v1/admin/stats", h.a());
        async move {
            let r = reqwest::Client::new().get(url).bearer_auth(t).send().await.expect("request");
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, stats) = get(admin.clone()).await;
    assert_eq!(status, 200, "{stats}");
    let cluster = &stats["cluster"];
    let nodes = if mode.shared() { 2 } else { 1 };
    assert_eq!(cluster["nodeCount"], json!(nodes), "{stats}");
    assert_eq!(cluster["connections"], json!(2), "{stats}");
    assert_eq!(cluster["sseStreams"], json!(1), "{stats}");
    assert_eq!(cluster["activeTrips"], json!([trip]), "{stats}");
    assert_eq!(cluster["liveDrivers"], json!(1), "{stats}");
    assert_eq!(stats["node"]["sseStreams"], json!(1), "the SSE stream is on the asked node");
    assert!(stats["snapshotQueueDepth"].is_u64(), "{stats}");
    // The node's uptime is its own and it runs: never more than the test has, and a second
    // later a second more; every node of the cluster reports one.
    let up = stats["node"]["uptimeSecs"].as_u64().expect("uptime");
    assert!(up <= started.elapsed().as_secs(), "{stats}");
    assert!(cluster["nodes"].as_array().expect("nodes").iter().all(|n| n["uptimeSecs"].is_u64()), "{stats}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (_, later) = get(admin.clone()).await;
    assert!(later["node"]["uptimeSecs"].as_u64().expect("uptime") > up, "{later}");
    match mode {
        Mode::Cluster => assert!(stats["redis"]["usedMemoryBytes"].as_u64().is_some_and(|m| m > 0), "{stats}"),
        Mode::RedisCluster => {
            // Summed over the three primaries, and each one's figures.
            assert!(stats["redis"]["usedMemoryBytes"].as_u64().is_some_and(|m| m > 0), "{stats}");
            let shards = stats["redis"]["shards"].as_array().expect("shards");
            assert_eq!(shards.len(), 3, "{stats}");
            assert!(
                shards.iter().all(|s| s["shard"].is_string() && s["usedMemoryBytes"].as_u64().is_some()),
                "{stats}"
            );
            assert!(shards.iter().any(|s| s["pubsubShardChannels"].as_u64().is_some_and(|n| n > 0)), "{stats}");
            let text = reqwest::get(format!("{}/metrics", h.a())).await.expect("metrics").text().await.expect("text");
            assert!(text.contains("fleetcast_redis_shard_used_memory_bytes{"), "per-shard metrics");
        }
        Mode::Embedded => assert!(stats["redis"].is_null()),
    }
    // Another tenant's admin sees none of it.
    let (status, other) = get(sign(json!({"sub": "adm", "role": "ADMIN", "tenant": "elsewhere"}))).await;
    assert_eq!(status, 200);
    assert_eq!(other["cluster"]["connections"], json!(0), "{other}");
    assert_eq!(other["cluster"]["activeTrips"], json!([]));
    assert_eq!(other["cluster"]["liveDrivers"], json!(0));
    assert_eq!(get(token("p1", "PASSENGER")).await.0, 403);
    drop(sse);
    h.stop().await;
}

both_modes!(
    health_readiness_and_metrics_answer,
    graceful_shutdown_closes_sockets_and_frees_their_slots,
    admin_stats_show_the_cluster_of_the_callers_tenant,
);
