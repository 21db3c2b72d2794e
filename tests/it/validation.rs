//! CONTRACT §2 acks and §6 order of checks: malformed payloads get `INVALID_PAYLOAD` and
//! never close the socket; roles, existence and ownership get `FORBIDDEN` / `NOT_FOUND`;
//! tenants never see each other's trips.

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

const EVENTS: &[&str] =
    &["driver:connect", "driver:location:update", "driver:status", "passenger:subscribe", "passenger:unsubscribe"];

fn deep(levels: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..levels {
        v = json!({ "x": v });
    }
    v
}

async fn garbage_payloads_get_invalid_payload_and_the_socket_stays_usable(mode: Mode) {
    let h = Harness::start(mode, &["--socket-events-per-sec", "1000", "--socket-events-burst", "1000"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let c = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut deep_trip = json!({ "tripId": trip });
    deep_trip["nested"] = deep(40);
    let mut long_key = json!({ "tripId": trip });
    long_key["k".repeat(1025)] = json!(1);
    let garbage: Vec<Option<Value>> = vec![
        None,
        Some(Value::Null),
        Some(json!("a string")),
        Some(json!(42)),
        Some(json!(true)),
        Some(json!([1, 2, 3])),
        Some(json!({})),
        Some(json!({ "tripId": 5 })),
        Some(json!({ "tripId": "" })),
        Some(json!({ "tripId": "x".repeat(129) })),
        Some(json!({ "tripId": "x".repeat(2000) })),
        Some(deep_trip),
        // Object keys are strings too: over 1 KiB is refused like a value.
        Some(long_key),
    ];
    for event in EVENTS {
        for g in &garbage {
            let ack = c.ack_raw(event, g.clone()).await;
            assert_err(&ack, "INVALID_PAYLOAD");
        }
    }
    // Field-level validation of locations.
    for bad in [
        json!({ "lat": "1", "lng": 2 }),
        json!({ "lat": 91, "lng": 2 }),
        json!({ "lat": 1, "lng": -181 }),
        json!({ "lat": 1, "lng": 2, "speed": -1 }),
        json!({ "lat": 1, "lng": 2, "heading": 360 }),
        json!({ "lat": 1, "lng": 2, "accuracy": -3 }),
        json!({ "lat": 1, "lng": 2, "timestamp": "not a date" }),
        json!({ "lat": 1, "lng": 2, "timestamp": (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc3339() }),
        json!({ "lat": null, "lng": 2 }),
    ] {
        assert_err(&c.ack("driver:location:update", bad.clone()).await, "INVALID_PAYLOAD");
    }
    assert_err(&c.ack("driver:status", json!({ "tripId": trip, "status": "FLYING" })).await, "INVALID_PAYLOAD");
    assert_err(&c.ack("passenger:subscribe", json!({ "tripIds": [] })).await, "INVALID_PAYLOAD");
    assert_err(&c.ack("passenger:subscribe", json!({ "tripIds": "t1" })).await, "INVALID_PAYLOAD");
    // `{}` events accept no payload, null or an object, and refuse other shapes.
    assert_ok(&c.ack_raw("heartbeat", None).await);
    assert_ok(&c.ack_raw("heartbeat", Some(Value::Null)).await);
    assert_err(&c.ack_raw("heartbeat", Some(json!("x"))).await, "INVALID_PAYLOAD");
    // Deeper than any JSON reader goes (500 levels), on every event — those whose payload is
    // optional too: never read as "no payload" (issue 13's `driver:subscribe` defect).
    let very_deep = json!({ "filters": deep(500) });
    for event in [
        "driver:subscribe",
        "driver:unsubscribe",
        "admin:subscribe",
        "heartbeat",
        "room:join",
        "auth:refresh",
        "driver:location:update",
        "no:such:event",
    ] {
        assert_err(&c.ack(event, very_deep.clone()).await, "INVALID_PAYLOAD");
    }
    // Unknown events are answered too.
    assert_err(&c.ack("no:such:event", json!({})).await, "INVALID_PAYLOAD");
    // Still connected and fully usable.
    assert_ok(&c.ack("driver:connect", json!({ "tripId": trip })).await);
    assert_ok(&c.ack("driver:location:update", json!({ "tripId": trip, "lat": 1.5, "lng": 2.5 })).await);
    c.close().await;
    h.stop().await;
}

async fn roles_and_ownership_are_checked_after_the_payload(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    let other = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_trip("default", &other, Some("d2")).await;
    h.insert_booking("default", &trip, "p1").await;

    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let passenger = Client::connect(&h.a(), &token("p1", "PASSENGER")).await;
    let stranger = Client::connect(&h.a(), &token("p2", "PASSENGER")).await;
    let service = Client::connect(&h.a(), &token("svc", "SERVICE")).await;
    let business = Client::connect(&h.a(), &token("biz", "BUSINESS")).await;
    let conductor =
        Client::connect(&h.a(), &sign(json!({"sub": "c1", "role": "CONDUCTOR", "channels": [format!("trip:{trip}")]})))
            .await;

    // Driver events by a passenger: FORBIDDEN, even for an unknown trip (role comes first).
    assert_err(&passenger.ack("driver:connect", json!({ "tripId": trip })).await, "FORBIDDEN");
    assert_err(&passenger.ack("driver:connect", json!({ "tripId": "nope" })).await, "FORBIDDEN");
    assert_err(&passenger.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await, "FORBIDDEN");
    assert_err(&passenger.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await, "FORBIDDEN");
    // A driver on someone else's trip: FORBIDDEN; on an unknown trip: NOT_FOUND.
    assert_err(&driver.ack("driver:connect", json!({ "tripId": other })).await, "FORBIDDEN");
    assert_err(&driver.ack("driver:connect", json!({ "tripId": "nope" })).await, "NOT_FOUND");
    assert_err(
        &driver.ack("driver:location:update", json!({ "tripId": other, "lat": 1, "lng": 1 })).await,
        "FORBIDDEN",
    );
    assert_err(&driver.ack("driver:status", json!({ "tripId": "nope", "status": "STARTED" })).await, "NOT_FOUND");
    assert_ok(&driver.ack("driver:connect", json!({ "tripId": trip })).await);
    // Subscriptions.
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    assert_err(&stranger.ack("passenger:subscribe", json!({ "tripId": trip })).await, "FORBIDDEN");
    assert_err(&stranger.ack("passenger:subscribe", json!({ "tripId": "nope" })).await, "NOT_FOUND");
    assert_err(&service.ack("passenger:subscribe", json!({ "tripId": trip })).await, "FORBIDDEN");
    assert_ok(&business.ack("passenger:subscribe", json!({ "tripId": other })).await);
    assert_ok(&conductor.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    assert_err(&conductor.ack("passenger:subscribe", json!({ "tripId": other })).await, "FORBIDDEN");
    assert_ok(&driver.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    // All or nothing: one forbidden trip refuses the whole list.
    assert_err(&passenger.ack("passenger:subscribe", json!({ "tripIds": [trip, other] })).await, "FORBIDDEN");
    // Admin room.
    assert_err(&passenger.ack("admin:subscribe", json!({})).await, "FORBIDDEN");
    assert_err(&business.ack("admin:subscribe", json!({})).await, "FORBIDDEN");
    let admin = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    assert_ok(&admin.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    // Unsubscribe is always fine.
    assert_ok(&stranger.ack("passenger:unsubscribe", json!({ "tripId": trip })).await);
    for c in [driver, passenger, stranger, service, business, conductor, admin] {
        c.close().await;
    }
    h.stop().await;
}

async fn tenants_never_see_each_others_trips(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    h.insert_trip("acme", &trip, Some("d1")).await;
    h.insert_trip("globex", &trip, Some("d1")).await;
    h.insert_booking("globex", &trip, "p1").await;
    let acme_driver = Client::connect(&h.a(), &sign(json!({"sub": "d1", "role": "DRIVER", "tenant": "acme"}))).await;
    let mut globex_admin =
        Client::connect(&h.b(), &sign(json!({"sub": "a1", "role": "ADMIN", "tenant": "globex"}))).await;
    let mut globex_pass =
        Client::connect(&h.b(), &sign(json!({"sub": "p1", "role": "PASSENGER", "tenant": "globex"}))).await;
    // A passenger booked in globex is a stranger in acme: trip exists there but no booking.
    let acme_pass = Client::connect(&h.a(), &sign(json!({"sub": "p1", "role": "PASSENGER", "tenant": "acme"}))).await;
    assert_err(&acme_pass.ack("passenger:subscribe", json!({ "tripId": trip })).await, "FORBIDDEN");
    // A tenant without the trip gets NOT_FOUND.
    let initech = Client::connect(&h.a(), &sign(json!({"sub": "a9", "role": "ADMIN", "tenant": "initech"}))).await;
    assert_err(&initech.ack("passenger:subscribe", json!({ "tripId": trip })).await, "NOT_FOUND");

    assert_ok(&globex_admin.ack("admin:subscribe", json!({})).await);
    assert_ok(&globex_pass.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    assert_ok(&acme_driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    assert_ok(&acme_driver.ack("driver:status", json!({ "tripId": trip, "status": "EMERGENCY" })).await);
    let leak = globex_pass.next("server:location:update", std::time::Duration::from_millis(800)).await;
    assert!(leak.is_none(), "location leaked across tenants: {leak:?}");
    let leak = globex_admin.next("server:alert", std::time::Duration::from_millis(300)).await;
    assert!(leak.is_none(), "alert leaked across tenants: {leak:?}");
    // And the globex trip has no live location either.
    let ack = globex_pass.ack("passenger:subscribe", json!({ "tripId": trip })).await;
    assert_eq!(ack["current"], Value::Null, "{ack}");
    for c in [acme_driver, globex_admin, globex_pass, acme_pass, initech] {
        c.close().await;
    }
    h.stop().await;
}

both_modes!(
    garbage_payloads_get_invalid_payload_and_the_socket_stays_usable,
    roles_and_ownership_are_checked_after_the_payload,
    tenants_never_see_each_others_trips,
);

async fn oversized_messages_affect_only_their_own_connection(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let victim = Client::connect(&h.a(), &token("u1", "PASSENGER")).await;
    let bystander = Client::connect(&h.a(), &token("u2", "PASSENGER")).await;
    // Over the 64 KiB websocket bound: the server may close this connection.
    victim.emit("heartbeat", json!({ "pad": "x".repeat(100_000) })).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_ok(&bystander.ack("heartbeat", json!({})).await);
    // Below the bound, a too-long string is an ordinary INVALID_PAYLOAD.
    let ack = bystander.ack("heartbeat", json!({ "pad": "x".repeat(40_000) })).await;
    assert_err(&ack, "INVALID_PAYLOAD");
    assert_ok(&bystander.ack("heartbeat", json!({})).await);
    victim.close().await;
    bystander.close().await;
    h.stop().await;
}

both_modes!(oversized_messages_affect_only_their_own_connection);

/// Every latitude the contract allows is a position, the poles included: Redis's GEO index
/// ends at ±85.05°, and an update beyond it must still be applied whole (found by the
/// socket fuzzer, `faults/fuzz.sh`).
async fn positions_near_the_poles_are_accepted_and_delivered(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "0"]).await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    for lat in [90.0, -90.0, 85.06, -89.999] {
        let ack = driver.ack("driver:location:update", json!({ "tripId": trip, "lat": lat, "lng": 179.9 })).await;
        assert_ok(&ack);
        let got = passenger.expect("server:location:update", "a polar position").await;
        assert_eq!(got["lat"], json!(lat), "{got}");
    }
    for c in [driver, passenger] {
        c.close().await;
    }
    h.stop().await;
}

both_modes!(positions_near_the_poles_are_accepted_and_delivered);
