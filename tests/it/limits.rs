//! Limits of CONTRACT §2/§6: the per-driver location window (minimum interval and
//! per-minute cap, cluster-wide, refused updates not counted), the per-socket flood cut-off,
//! the subscription cap across sockets and nodes, the TTL of live locations, and the HTTP
//! write limits (per user and per address, 429 with `Retry-After`, `SERVICE` exemptible).

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

async fn location_minimum_interval_is_enforced_across_nodes(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "1000"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    // The same driver on two nodes shares one window.
    let on_a = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let on_b = Client::connect(&h.b(), &token("d1", "DRIVER")).await;
    assert_ok(&on_a.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    let ack = on_b.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await;
    assert_err(&ack, "RATE_LIMITED");
    let wait = ack["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!(wait > 0 && wait <= 1000, "{ack}");
    // Invalid updates are refused before the window and do not count.
    assert_err(&on_a.ack("driver:location:update", json!({ "lat": 100, "lng": 1 })).await, "INVALID_PAYLOAD");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    assert_ok(&on_b.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await);
    on_a.close().await;
    on_b.close().await;
    h.stop().await;
}

async fn location_per_minute_cap_is_a_sliding_window(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "0", "--location-max-per-minute", "3"]).await;
    let d = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let d2 = Client::connect(&h.b(), &token("d1", "DRIVER")).await;
    assert_ok(&d.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await);
    assert_ok(&d2.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await);
    assert_ok(&d.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await);
    let ack = d2.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await;
    assert_err(&ack, "RATE_LIMITED");
    let wait = ack["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!(wait > 55_000 && wait <= 60_000, "the oldest entry leaves the window in ~60 s: {ack}");
    // Another driver has its own window.
    let other = Client::connect(&h.a(), &token("d2", "DRIVER")).await;
    assert_ok(&other.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await);
    for c in [d, d2, other] {
        c.close().await;
    }
    h.stop().await;
}

async fn a_socket_flooding_events_is_cut_off(mode: Mode) {
    let h = Harness::start(mode, &["--socket-events-per-sec", "1", "--socket-events-burst", "5"]).await;
    let c = Client::connect(&h.a(), &token("u1", "PASSENGER")).await;
    let mut limited = None;
    for _ in 0..10 {
        let ack = c.ack("heartbeat", json!({})).await;
        if ack["ok"] == json!(false) {
            limited = Some(ack);
            break;
        }
    }
    let ack = limited.expect("flood limit reached within 10 events");
    assert_err(&ack, "RATE_LIMITED");
    assert!(ack["retryAfterMs"].as_u64().is_some_and(|w| w > 0), "{ack}");
    // Another socket is unaffected.
    let other = Client::connect(&h.a(), &token("u2", "PASSENGER")).await;
    assert_ok(&other.ack("heartbeat", json!({})).await);
    c.close().await;
    other.close().await;
    h.stop().await;
}

async fn subscription_cap_holds_across_sockets_and_nodes(mode: Mode) {
    let h = Harness::start(mode, &["--max-trip-subscriptions", "2"]).await;
    let trips: Vec<String> = (0..3).map(|_| unique("t")).collect();
    for t in &trips {
        h.insert_trip("default", t, Some("d1")).await;
        h.insert_booking("default", t, "p1").await;
    }
    let on_a = Client::connect(&h.a(), &token("p1", "PASSENGER")).await;
    let on_b = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    assert_ok(&on_a.ack("passenger:subscribe", json!({ "tripId": trips[0] })).await);
    assert_ok(&on_b.ack("passenger:subscribe", json!({ "tripId": trips[1] })).await);
    assert_err(&on_a.ack("passenger:subscribe", json!({ "tripId": trips[2] })).await, "SUBSCRIPTION_LIMIT");
    // Subscribing again to a held trip does not count twice, from any socket.
    assert_ok(&on_a.ack("passenger:subscribe", json!({ "tripId": trips[1] })).await);
    assert_ok(&on_b.ack("passenger:subscribe", json!({ "tripIds": [trips[0], trips[1]] })).await);
    // All or nothing: a list that would exceed the cap subscribes to none.
    assert_err(
        &on_a.ack("passenger:subscribe", json!({ "tripIds": [trips[2], trips[0]] })).await,
        "SUBSCRIPTION_LIMIT",
    );
    // trips[0] is still held by on_b, so unsubscribing on_a alone frees nothing.
    assert_ok(&on_a.ack("passenger:unsubscribe", json!({ "tripId": trips[0] })).await);
    assert_err(&on_a.ack("passenger:subscribe", json!({ "tripId": trips[2] })).await, "SUBSCRIPTION_LIMIT");
    assert_ok(&on_b.ack("passenger:unsubscribe", json!({ "tripId": trips[0] })).await);
    assert_ok(&on_a.ack("passenger:subscribe", json!({ "tripId": trips[2] })).await);
    // A disconnect frees its socket's slots cluster-wide.
    on_a.close().await;
    let mut freed = false;
    for _ in 0..50 {
        let ack = on_b.ack("passenger:subscribe", json!({ "tripId": trips[0] })).await;
        if ack["ok"] == json!(true) {
            freed = true;
            break;
        }
        assert_err(&ack, "SUBSCRIPTION_LIMIT");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "disconnect did not free the slot within 5 s");
    on_b.close().await;
    h.stop().await;
}

async fn live_locations_expire_after_their_ttl(mode: Mode) {
    let h = Harness::start(mode, &["--location-ttl-ms", "1000"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let d = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let admin = Client::connect(&h.b(), &token("adm", "ADMIN")).await;
    assert_ok(&d.ack("driver:location:update", json!({ "tripId": trip, "lat": 3, "lng": 4 })).await);
    let ack = admin.ack("passenger:subscribe", json!({ "tripId": trip })).await;
    assert_eq!(ack["current"]["lat"], json!(3.0), "{ack}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let ack = admin.ack("passenger:subscribe", json!({ "tripId": trip })).await;
    assert_ok(&ack);
    assert_eq!(ack["current"], Value::Null, "expired location still served: {ack}");
    d.close().await;
    admin.close().await;
    h.stop().await;
}

/// A write request; returns the status, the `Retry-After` header and the body.
async fn write(url: String, token: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn shared_trip() -> Value {
    trip_body("SHARED", 3, (48.85, 2.35))
}

async fn http_writes_are_limited_per_user_and_per_address(mode: Mode) {
    let h = Harness::start(
        mode,
        &[
            "--http-rate-per-user-per-sec",
            "1",
            "--http-rate-per-user-burst",
            "3",
            "--http-rate-per-address-per-sec",
            "1",
            "--http-rate-per-address-burst",
            "8",
            "--http-rate-exempt-service",
        ],
    )
    .await;
    let trips = format!("{}/api/trips", h.a());
    let started = std::time::Instant::now();
    // Both limits refill one request a second: a limit allows its burst plus one for every
    // second the test has taken so far.
    let allowance = |burst: u64| burst + started.elapsed().as_secs() + 1;
    // One user: its burst, then 429 RATE_LIMITED with Retry-After, and nothing created.
    let p1 = token("p1", "BUSINESS");
    let mut created = 0;
    let (retry, body) = loop {
        let (status, retry, body) = write(trips.clone(), &p1, shared_trip()).await;
        if status != 201 {
            assert_eq!(status, 429, "{body}");
            break (retry, body);
        }
        created += 1;
        assert!(created <= allowance(3), "the user was never limited");
    };
    assert!(created >= 3, "refused within the burst: {body}");
    assert_eq!(body["error"], json!("RATE_LIMITED"));
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let mut spent = created + 1;
    // Reads are not limited.
    let r = reqwest::Client::new().get(format!("{}/api/openapi.json", h.a())).send().await.expect("get");
    assert_eq!(r.status(), 200);
    // The limit is the user's: another user from the same address is served.
    assert_eq!(write(trips.clone(), &token("p2", "BUSINESS"), shared_trip()).await.0, 201);
    created += 1;
    spent += 1;
    // The address's limit counts requests without a token too, and then refuses them.
    let no_token = || reqwest::Client::new().post(trips.clone()).json(&shared_trip()).send();
    loop {
        let status = no_token().await.expect("post").status().as_u16();
        spent += 1;
        if status == 429 {
            break;
        }
        assert_eq!(status, 401);
        assert!(spent <= allowance(8), "the address was never limited");
    }
    assert!(spent > 8, "the address was refused within its burst");
    // A trusted backend (SERVICE, exempt by configuration) is limited by neither.
    let service = token("backend", "SERVICE");
    for i in 0..20 {
        let (status, _, body) = write(
            format!("{}/api/v1/emit", h.a()),
            &service,
            json!({ "event": "notification", "payload": { "title": format!("n{i}"), "body": "b" }, "users": ["p1"] }),
        )
        .await;
        assert!(status < 300, "{status} {body}");
    }
    // A refused request's trip was never created.
    assert_eq!(h.count_trips("default").await, created as i64);
    h.stop().await;
}

both_modes!(
    http_writes_are_limited_per_user_and_per_address,
    location_minimum_interval_is_enforced_across_nodes,
    location_per_minute_cap_is_a_sliding_window,
    a_socket_flooding_events_is_cut_off,
    subscription_cap_holds_across_sockets_and_nodes,
    live_locations_expire_after_their_ttl,
);

async fn a_reassigned_trip_is_seen_once_the_membership_cache_refreshes(mode: Mode) {
    let h = Harness::start(mode, &["--membership-cache-ms", "300", "--location-min-interval-ms", "0"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let d1 = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    assert_ok(&d1.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    h.exec_on_trip("UPDATE trips SET driver_id = 'd2' WHERE tenant = 'default' AND id = $1", &trip).await;
    // Served from the (possibly stale) cache meanwhile, never an error; then the refresh lands.
    let started = std::time::Instant::now();
    let mut refused = None;
    while started.elapsed() < Duration::from_secs(3) {
        let ack = d1.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await;
        if ack["ok"] == json!(false) {
            assert_err(&ack, "FORBIDDEN");
            refused = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = refused.expect("the old driver is refused once the cache refreshed");
    assert!(after < Duration::from_millis(1500), "refreshed within a few TTLs, took {after:?}");
    d1.close().await;
    h.stop().await;
}

/// Cache entries that expire together are re-read together (one batched query): every one
/// of them sees its change, a deleted trip included, and none is answered with an error
/// while the refresh is under way.
async fn trips_expiring_together_are_all_refreshed(mode: Mode) {
    let h = Harness::start(mode, &["--membership-cache-ms", "300", "--location-min-interval-ms", "0"]).await;
    let trips: Vec<String> = (0..12).map(|_| unique("t")).collect();
    for t in &trips {
        h.insert_trip("default", t, Some("d1")).await;
    }
    let d1 = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    for t in &trips {
        assert_ok(&d1.ack("driver:location:update", json!({ "tripId": t, "lat": 1, "lng": 1 })).await);
    }
    for t in &trips[1..] {
        h.exec_on_trip("UPDATE trips SET driver_id = 'd2' WHERE tenant = 'default' AND id = $1", t).await;
    }
    h.exec_on_trip("DELETE FROM trips WHERE tenant = 'default' AND id = $1", &trips[0]).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    // All entries are past their TTL now: each update is served stale or already refused.
    let started = std::time::Instant::now();
    let mut pending: Vec<&String> = trips.iter().collect();
    while !pending.is_empty() && started.elapsed() < Duration::from_secs(3) {
        let mut still = Vec::new();
        for t in pending {
            let ack = d1.ack("driver:location:update", json!({ "tripId": t, "lat": 1, "lng": 1 })).await;
            if ack["ok"] == json!(true) {
                still.push(t);
            } else if t == &trips[0] {
                assert_err(&ack, "NOT_FOUND");
            } else {
                assert_err(&ack, "FORBIDDEN");
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pending.is_empty(), "still accepted after 3 s: {pending:?}");
    d1.close().await;
    h.stop().await;
}

/// Many drivers whose trips have no usable cache entry (never read on the node, then past
/// 4 × TTL) updating at once are read through together (`access`: one reader, batched
/// queries), and each gets its own trip's answer: accepted, `NOT_FOUND` for a deleted trip,
/// `FORBIDDEN` for one whose driver changed.
async fn a_burst_of_first_updates_is_answered_per_trip(mode: Mode) {
    let h = Harness::start(mode, &["--membership-cache-ms", "100", "--location-min-interval-ms", "0"]).await;
    let n = 16;
    let trips: Vec<String> = (0..n).map(|_| unique("t")).collect();
    let drivers: Vec<String> = (0..n).map(|_| unique("d")).collect();
    for (t, d) in trips.iter().zip(&drivers) {
        h.insert_trip("default", t, Some(d)).await;
    }
    let mut clients = Vec::new();
    for d in &drivers {
        clients.push(Client::connect(&h.a(), &token(d, "DRIVER")).await);
    }
    h.exec_on_trip("DELETE FROM trips WHERE tenant = 'default' AND id = $1", &trips[0]).await;
    h.exec_on_trip("UPDATE trips SET driver_id = 'someone-else' WHERE tenant = 'default' AND id = $1", &trips[1]).await;
    let burst = |lat: f64| {
        futures_util::future::join_all(
            clients
                .iter()
                .zip(&trips)
                .map(|(c, t)| c.ack("driver:location:update", json!({ "tripId": t, "lat": lat, "lng": 1 }))),
        )
    };
    let each_its_own = |acks: Vec<Value>| {
        assert_err(&acks[0], "NOT_FOUND");
        assert_err(&acks[1], "FORBIDDEN");
        for ack in &acks[2..] {
            assert_ok(ack);
        }
    };
    // Never read on this node: every update misses at once.
    each_its_own(burst(1.0).await);
    // Past 4 × TTL every entry is too old to be served stale: read through again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    each_its_own(burst(1.001).await);
    for c in clients {
        c.close().await;
    }
    h.stop().await;
}

both_modes!(
    a_reassigned_trip_is_seen_once_the_membership_cache_refreshes,
    trips_expiring_together_are_all_refreshed,
    a_burst_of_first_updates_is_answered_per_trip,
);
