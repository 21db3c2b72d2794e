//! Every Redis key a node writes expires (ARCHITECTURE.md: every key has a TTL or a bound;
//! `redis/README.md` lists them): a cluster exercises every key family — connections,
//! trip subscriptions, offer slots and filters, rate windows, latest positions, the GEO
//! index, sampling markers, room histories, SSE stream counts, the node registry — and then
//! each key under the test's prefix must carry a TTL.

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::common::*;

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-u", REDIS]).args(args).output().expect("redis-cli on PATH");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redis_key_family_has_a_ttl() {
    let h = Harness::start(Mode::Cluster, &["--location-min-interval-ms", "0"]).await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    // Offers: slots and filters; locations: window, latest by driver and trip, GEO, sampling.
    assert_ok(&driver.ack("driver:subscribe", json!({ "filters": { "maxDistance": 20 } })).await);
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 48.85, "lng": 2.35 })).await);
    passenger.expect("server:location:update", "the trip's location").await;
    // Room history: a status event to the trip's subscribers and the driver's user room.
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await);
    passenger.expect("server:trip:status", "the status event").await;
    // SSE stream counts: a stream on the driver's location, then one more update for it.
    let sse = reqwest::Client::new()
        .get(format!("{}/api/v1/realtime/drivers/d1/location", h.a()))
        .bearer_auth(token("adm", "ADMIN"))
        .send()
        .await
        .expect("sse");
    assert_eq!(sse.status(), 200);
    let mut body = sse.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("connected frame");
    assert!(first.is_some());
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 48.86, "lng": 2.35 })).await);

    let keys: Vec<String> = redis_cli(&["--scan", "--pattern", &format!("{}:*", h.prefix)])
        .lines()
        .map(str::to_string)
        .filter(|k| !k.is_empty())
        .collect();
    let family = |k: &str| {
        let rest = &k[h.prefix.len() + 1..];
        match rest.split(':').next() {
            Some("rl" | "loc") => rest.splitn(3, ':').take(2).collect::<Vec<_>>().join(":"),
            Some(f) => f.to_string(),
            None => rest.to_string(),
        }
    };
    let mut families: Vec<String> = keys.iter().map(|k| family(k)).collect();
    families.sort();
    families.dedup();
    // The families this scenario must have written (so a renamed key cannot pass unseen).
    for expected in [
        "conns", "subs", "offers", "offerf", "rl:loc", "loc:drv", "loc:trip", "geo", "geofresh", "snap", "hist", "sse",
        "{nodes}",
    ] {
        assert!(families.iter().any(|f| f == expected), "no {expected} key among {families:?}");
    }
    for key in &keys {
        let ttl: i64 = redis_cli(&["PTTL", key]).trim().parse().expect("PTTL reply");
        // -1 is a key without a TTL (0 and -2: expiring or expired since the scan).
        assert!(ttl != -1, "{key} has no TTL (PTTL {ttl})");
    }
    drop(body);
    driver.close().await;
    passenger.close().await;
    h.stop().await;
}
