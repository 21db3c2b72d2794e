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

both_modes!(health_readiness_and_metrics_answer, graceful_shutdown_closes_sockets_and_frees_their_slots);
