//! Cross-node delivery (CONTRACT §2 server events): a driver's location on node A reaches a
//! passenger on node B, status reaches trip subscribers, EMERGENCY reaches admins, on both
//! transports.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

async fn location_from_driver_on_node_a_reaches_passenger_on_node_b(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut passenger = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    let ack = passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await;
    assert_ok(&ack);
    assert_eq!(ack["current"], Value::Null);

    let ts = "2026-01-01T10:00:00.123456Z";
    let ack = driver
        .ack(
            "driver:location:update",
            json!({ "tripId": trip, "lat": 48.85, "lng": 2.35, "speed": 12.5, "heading": 90, "accuracy": 4, "timestamp": ts }),
        )
        .await;
    assert_ok(&ack);
    let loc = passenger.expect("server:location:update", "passenger on the other node").await;
    assert_eq!(loc["tripId"], json!(trip));
    assert_eq!(loc["driverId"], json!("d1"));
    assert_eq!(loc["lat"], json!(48.85));
    assert_eq!(loc["lng"], json!(2.35));
    assert_eq!(loc["speed"], json!(12.5));
    assert_eq!(loc["heading"], json!(90.0));
    assert_eq!(loc["accuracy"], json!(4.0));
    assert_eq!(loc["updatedAt"], json!(ts));
    assert!(loc["emittedAt"].is_string(), "{loc}");

    // A later subscriber gets the current location in the ack and as an event at once.
    let mut late = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    let ack = late.ack("passenger:subscribe", json!({ "tripIds": [trip, "unknown-trip-for-map"] })).await;
    assert_err(&ack, "NOT_FOUND");
    let ack = late.ack("passenger:subscribe", json!({ "tripIds": [trip] })).await;
    assert_ok(&ack);
    assert_eq!(ack["current"][&trip]["lat"], json!(48.85), "{ack}");
    let now = late.expect("server:location:update", "current location at subscribe").await;
    assert_eq!(now["driverId"], json!("d1"));

    // After unsubscribing, nothing more arrives.
    assert_ok(&passenger.ack("passenger:unsubscribe", json!({ "tripId": trip })).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 48.0, "lng": 2.0 })).await);
    assert!(late.next("server:location:update", Duration::from_secs(3)).await.is_some());
    assert!(passenger.next("server:location:update", Duration::from_millis(500)).await.is_none());
    for c in [driver, passenger, late] {
        c.close().await;
    }
    h.stop().await;
}

async fn status_reaches_subscribers_and_emergency_reaches_admins_on_the_other_node(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut passenger = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    let mut admin = Client::connect(&h.b(), &token("adm", "ADMIN")).await;
    let mut other_admin = Client::connect(&h.b(), &token("adm2", "ADMIN")).await;
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    assert_ok(&driver.ack("driver:connect", json!({ "tripId": trip })).await);
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 10.5, "lng": 20.5 })).await);

    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await);
    let s = passenger.expect("server:trip:status", "status on the other node").await;
    assert_eq!(s["tripId"], json!(trip));
    assert_eq!(s["driverId"], json!("d1"));
    assert_eq!(s["status"], json!("STARTED"));
    assert!(s["timestamp"].is_string() && s["emittedAt"].is_string(), "{s}");

    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "EMERGENCY" })).await);
    let alert = admin.expect("server:alert", "admin on the other node").await;
    assert_eq!(alert["type"], json!("EMERGENCY"));
    assert_eq!(alert["tripId"], json!(trip));
    assert_eq!(alert["driverId"], json!("d1"));
    assert_eq!(alert["lat"], json!(10.5));
    assert_eq!(alert["lng"], json!(20.5));
    assert!(alert["at"].is_string(), "{alert}");
    let s = passenger.expect("server:trip:status", "emergency status").await;
    assert_eq!(s["status"], json!("EMERGENCY"));
    // An admin who did not subscribe gets no alert.
    assert!(other_admin.next("server:alert", Duration::from_millis(300)).await.is_none());
    // The driver, in the trip room through driver:connect, sees its own status too.
    for c in [driver, passenger, admin, other_admin] {
        c.close().await;
    }
    h.stop().await;
}

async fn polling_clients_send_and_receive_like_websocket_clients(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let polling = |url: &str, t: String| {
        let url = url.to_string();
        async move {
            Client::try_connect(Connect { url: &url, auth: Some(json!({ "token": t })), header: None, polling: true })
                .await
                .expect("polling connect")
        }
    };
    let driver = polling(&h.a(), token("d1", "DRIVER")).await;
    let mut passenger = polling(&h.b(), token("p1", "PASSENGER")).await;
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 1.25, "lng": 2.25 })).await);
    let loc = passenger.expect("server:location:update", "polling passenger").await;
    assert_eq!(loc["lat"], json!(1.25));
    assert_ok(&driver.ack_raw("heartbeat", None).await);
    driver.close().await;
    passenger.close().await;
    h.stop().await;
}

async fn the_api_socket_path_serves_the_same_protocol(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    // rust_socketio appends `/socket.io/`; an explicit path keeps it.
    let url = format!("{}/api/socket/", h.a());
    let c = Client::connect(&url, &token("u1", "PASSENGER")).await;
    let ack = c.ack("heartbeat", json!({})).await;
    assert_ok(&ack);
    assert!(ack["serverTime"].is_string());
    c.close().await;
    h.stop().await;
}

/// Every update a driver was told was accepted reaches every subscriber, in the order the
/// driver sent them, also when a burst arrives faster than the subscriber's socket is written
/// (location frames are queued per socket, not kept as "latest only"; a socket's updates are
/// applied one after another).
async fn every_accepted_update_of_a_burst_reaches_the_subscriber_in_order(mode: Mode) {
    let h = Harness::start(
        mode,
        &[
            "--location-min-interval-ms",
            "0",
            "--location-max-per-minute",
            "100000",
            "--socket-events-per-sec",
            "1000",
            "--socket-events-burst",
            "1000",
        ],
    )
    .await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    // 200 updates back to back (no waiting for acks; the limits above accept them all),
    // then one acknowledged update, which is delivered after them.
    for i in 0..200u32 {
        driver
            .emit("driver:location:update", json!({ "tripId": trip, "lat": 1.0 + f64::from(i) * 1e-4, "lng": 2.0 }))
            .await;
    }
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 1.5, "lng": 2.0 })).await);
    let accepted = 201;
    let mut lats = Vec::new();
    while let Some(u) = passenger.next("server:location:update", Duration::from_secs(3)).await {
        lats.push(u["lat"].as_f64().expect("lat"));
    }
    assert_eq!(lats.len(), accepted, "every accepted update delivered once");
    // In the order the driver sent them: an older position never follows a newer one.
    let behind = lats.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(behind, 0, "{behind} updates delivered after a newer one: {lats:?}");
    driver.close().await;
    passenger.close().await;
    h.stop().await;
}

/// CONTRACT §2 (v1.1): a location update reaches the trip's subscribers except the socket
/// that sent it; the driver's other sockets (another device, on another node) still get it.
async fn a_location_update_does_not_echo_to_the_socket_that_sent_it(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let mut sender = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut other = Client::connect(&h.b(), &token("d1", "DRIVER")).await;
    let mut passenger = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    for c in [&sender, &other] {
        assert_ok(&c.ack("driver:connect", json!({ "tripId": trip })).await);
    }
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    for i in 0..3 {
        let update = json!({ "tripId": trip, "lat": 10.0 + f64::from(i), "lng": 20.0 });
        assert_ok(&sender.ack("driver:location:update", update).await);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    for i in 0..3 {
        let p = passenger.expect("server:location:update", "the passenger").await;
        let o = other.expect("server:location:update", "the driver's other socket").await;
        assert_eq!((p["lat"].clone(), o["lat"].clone()), (json!(10.0 + f64::from(i)), json!(10.0 + f64::from(i))));
    }
    assert!(sender.next("server:location:update", Duration::from_millis(800)).await.is_none(), "no echo");
    // The other socket's own update goes to the first one, not back to itself.
    assert_ok(&other.ack("driver:location:update", json!({ "tripId": trip, "lat": 30.0, "lng": 20.0 })).await);
    assert_eq!(sender.expect("server:location:update", "the first socket").await["lat"], json!(30.0));
    assert!(other.next("server:location:update", Duration::from_millis(800)).await.is_none(), "no echo");
    for c in [sender, other, passenger] {
        c.close().await;
    }
    h.stop().await;
}

both_modes!(
    a_location_update_does_not_echo_to_the_socket_that_sent_it,
    every_accepted_update_of_a_burst_reaches_the_subscriber_in_order,
    location_from_driver_on_node_a_reaches_passenger_on_node_b,
    status_reaches_subscribers_and_emergency_reaches_admins_on_the_other_node,
    polling_clients_send_and_receive_like_websocket_clients,
    the_api_socket_path_serves_the_same_protocol,
);
