//! Driver presence, trip progress and arrival (CONTRACT §7), through real Socket.IO and
//! HTTP clients on both modes: availability follows offer subscriptions, positions,
//! connections and trips, announced once on `admin:events` and listed by
//! `GET /api/v1/drivers`; positions going stale turn a driver `OFFLINE`; a trip's
//! subscribers see `progress`, and `trip.driver.arriving` fires once per target even when
//! two nodes see the driver. (A node killed with SIGKILL: `binary.rs`.)

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

const AVAILABILITY: &str = "driver.availability.changed";

async fn get(url: String, token: &str) -> (u16, Value) {
    call(reqwest::Method::GET, url, Some(token), None).await
}

/// The next availability change of `driver` on an admin socket, skipping other drivers'.
async fn change_of(admin: &mut Client, driver: &str, what: &str) -> Value {
    loop {
        let e = admin.expect(AVAILABILITY, what).await;
        if e["driverId"] == json!(driver) {
            return e;
        }
    }
}

async fn availability_follows_offers_positions_connections_and_trips(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let d = unique("d");
    let mut admin = Client::connect(&h.b(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    let admin_token = token("adm", "ADMIN");
    let driver_token = sign(json!({ "sub": d, "role": "DRIVER", "name": "Dana" }));
    let mut driver = Client::connect(&h.a(), &driver_token).await;
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    assert!(admin.next(AVAILABILITY, Duration::from_millis(700)).await.is_none(), "no fresh position yet");

    // A fresh position makes a subscribed driver AVAILABLE.
    assert_ok(&driver.ack("driver:location:update", json!({ "lat": 48.85, "lng": 2.35 })).await);
    let e = change_of(&mut admin, &d, "AVAILABLE").await;
    assert_eq!((e["availability"].as_str(), e["previous"].as_str()), (Some("AVAILABLE"), Some("OFFLINE")), "{e}");
    assert!(e["eventId"].is_string() && e["at"].is_string() && e.get("tripId").is_none(), "{e}");

    let (status, list) = get(format!("{}/api/v1/drivers", h.a()), &admin_token).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], json!(1), "{list}");
    let row = &list["drivers"][0];
    assert_eq!((row["driverId"].as_str(), row["availability"].as_str()), (Some(d.as_str()), Some("AVAILABLE")));
    assert_eq!(row["name"], json!("Dana"));
    assert_eq!(row["location"]["lat"], json!(48.85), "{row}");
    let count = |q: &'static str| {
        let url = format!("{}/api/v1/drivers?{q}", h.b());
        let t = admin_token.clone();
        async move {
            let (status, body) = get(url, &t).await;
            assert_eq!(status, 200, "{q}: {body}");
            body["total"].as_u64().expect("total")
        }
    };
    assert_eq!(count("availability=BUSY").await, 0);
    assert_eq!(count("availability=AVAILABLE,BUSY").await, 1);
    assert_eq!(count("near=48.851,2.351&radiusKm=1").await, 1);
    assert_eq!(count("near=52.52,13.40&radiusKm=10").await, 0);
    assert_eq!(get(format!("{}/api/v1/drivers?limit=0", h.a()), &admin_token).await.0, 400);
    assert_eq!(get(format!("{}/api/v1/drivers?availability=OFFLINE", h.a()), &admin_token).await.0, 400);
    assert_eq!(get(format!("{}/api/v1/drivers", h.a()), &token("p1", "PASSENGER")).await.0, 403);

    // Unsubscribed: OFFLINE; subscribed again: AVAILABLE.
    assert_ok(&driver.ack("driver:unsubscribe", json!({})).await);
    let e = change_of(&mut admin, &d, "OFFLINE after unsubscribe").await;
    assert_eq!((e["availability"].as_str(), e["previous"].as_str()), (Some("OFFLINE"), Some("AVAILABLE")));
    assert_eq!(count("").await, 0);
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    assert_eq!(change_of(&mut admin, &d, "AVAILABLE again").await["availability"], json!("AVAILABLE"));

    // Accepting a trip: BUSY with the trip; moving along it changes nothing; completing it:
    // AVAILABLE again.
    let passenger = sign(json!({ "sub": "p1", "role": "PASSENGER" }));
    let (status, trip) =
        post_json(format!("{}/api/trips", h.b()), &passenger, trip_body("PRIVATE", 2, (48.85, 2.35))).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["id"].as_str().expect("id").to_string();
    driver.expect("trip.offer.created", "the offer").await;
    assert_ok(&driver.ack("trip:offer:accept", json!({ "tripId": trip_id })).await);
    let e = change_of(&mut admin, &d, "BUSY").await;
    assert_eq!((e["availability"].as_str(), e["previous"].as_str()), (Some("BUSY"), Some("AVAILABLE")), "{e}");
    assert_eq!(e["tripId"], json!(trip_id));
    let (_, busy) = get(format!("{}/api/v1/drivers?availability=BUSY", h.a()), &admin_token).await;
    assert_eq!(busy["drivers"][0]["tripId"], json!(trip_id), "{busy}");
    let status_url = format!("{}/api/drivers/trips/{trip_id}/status", h.a());
    for next in ["DEPARTED", "ARRIVED"] {
        let (status, body) =
            call(reqwest::Method::PUT, status_url.clone(), Some(&driver_token), Some(json!({ "status": next }))).await;
        assert_eq!(status, 200, "{next}: {body}");
    }
    assert!(admin.next(AVAILABILITY, Duration::from_millis(700)).await.is_none(), "still BUSY");
    let (status, _) =
        call(reqwest::Method::PUT, status_url, Some(&driver_token), Some(json!({ "status": "COMPLETED" }))).await;
    assert_eq!(status, 200);
    let e = change_of(&mut admin, &d, "AVAILABLE after the trip").await;
    assert_eq!((e["availability"].as_str(), e["previous"].as_str()), (Some("AVAILABLE"), Some("BUSY")), "{e}");

    // The socket goes: OFFLINE, announced once.
    driver.close().await;
    let e = change_of(&mut admin, &d, "OFFLINE after the disconnect").await;
    assert_eq!((e["availability"].as_str(), e["previous"].as_str()), (Some("OFFLINE"), Some("AVAILABLE")));
    assert!(admin.next(AVAILABILITY, Duration::from_millis(1_200)).await.is_none(), "announced once cluster-wide");
    admin.close().await;
    h.stop().await;
}

async fn post_json(url: String, token: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(token), Some(body)).await
}

/// Without new positions a driver's last one goes stale: the sweep turns it `OFFLINE`
/// (here with a 1.5 s location TTL), while a driver on a trip with a live socket stays
/// `BUSY`.
async fn a_stale_position_turns_a_driver_offline(mode: Mode) {
    let h = Harness::start(mode, &["--location-ttl-ms", "1500"]).await;
    let d = unique("d");
    let mut admin = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    let driver = Client::connect(&h.b(), &token(&d, "DRIVER")).await;
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    assert_ok(&driver.ack("driver:location:update", json!({ "lat": 10.0, "lng": 10.0 })).await);
    assert_eq!(change_of(&mut admin, &d, "AVAILABLE").await["availability"], json!("AVAILABLE"));
    let started = std::time::Instant::now();
    let e = change_of(&mut admin, &d, "OFFLINE once stale").await;
    assert_eq!((e["availability"].as_str(), e["previous"].as_str()), (Some("OFFLINE"), Some("AVAILABLE")));
    let after = started.elapsed();
    // Stale at 1.5 s; each driver's freshness is checked every 2 s (a quarter of them per
    // 500 ms tick): OFFLINE by 4 s, plus slack for a loaded machine — within the contract's
    // "noticed within 5 s" of going stale (6.5 s).
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(5_500),
        "went OFFLINE after {after:?}"
    );

    // On a trip, connected: BUSY, and a stale position does not change that.
    let trip = unique("t");
    h.insert_trip("default", &trip, Some(&d)).await;
    h.exec_on_trip("UPDATE trips SET status = 'IN_PROGRESS' WHERE id = $1", &trip).await;
    assert_ok(&driver.ack("driver:connect", json!({ "tripId": trip })).await);
    let e = change_of(&mut admin, &d, "BUSY").await;
    assert_eq!((e["availability"].as_str(), e["tripId"].as_str()), (Some("BUSY"), Some(trip.as_str())), "{e}");
    assert!(admin.next(AVAILABILITY, Duration::from_millis(2_500)).await.is_none(), "BUSY while connected");
    driver.close().await;
    let e = change_of(&mut admin, &d, "OFFLINE without socket or fresh position").await;
    assert_eq!(e["availability"], json!("OFFLINE"));
    admin.close().await;
    h.stop().await;
}

/// Drivers coming live together (the first position of each, sent at once over two nodes)
/// are derived with their trips read from the database — in the node's batches, one read
/// for many drivers — and each change is announced once: `BUSY` with the trip for the
/// drivers whose trip started while they had no position, `AVAILABLE` for the subscribed.
async fn drivers_coming_live_together_are_each_derived_once(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let mut admin = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    let ids: Vec<String> = (0..24).map(|i| unique(&format!("live{i}-"))).collect();
    let mut drivers = Vec::new();
    for (i, d) in ids.iter().enumerate() {
        let c = Client::connect(&if i % 2 == 0 { h.a() } else { h.b() }, &token(d, "DRIVER")).await;
        if i % 2 == 1 {
            assert_ok(&c.ack("driver:subscribe", json!({})).await);
        }
        drivers.push(c);
    }
    // Trips that start while their drivers have no position: nothing to announce yet.
    let mut trips = std::collections::HashMap::new();
    for d in ids.iter().step_by(2) {
        let trip = unique("t");
        h.insert_trip("default", &trip, Some(d)).await;
        h.exec_on_trip("UPDATE trips SET status = 'IN_PROGRESS' WHERE id = $1", &trip).await;
        trips.insert(d.clone(), trip);
    }
    assert!(admin.next(AVAILABILITY, Duration::from_millis(500)).await.is_none(), "no position yet");
    let sent = futures_util::future::join_all(
        drivers.iter().map(|c| c.ack("driver:location:update", json!({ "lat": 48.85, "lng": 2.35 }))),
    )
    .await;
    sent.iter().for_each(assert_ok);
    let mut seen = std::collections::HashMap::new();
    while seen.len() < ids.len() {
        let e = admin.expect(AVAILABILITY, "every driver's change").await;
        let d = e["driverId"].as_str().expect("driverId").to_string();
        if ids.contains(&d) {
            assert!(seen.insert(d.clone(), e.clone()).is_none(), "{d} announced twice: {e}");
        }
    }
    for (d, e) in &seen {
        match trips.get(d) {
            Some(trip) => assert_eq!(
                (e["availability"].as_str(), e["tripId"].as_str()),
                (Some("BUSY"), Some(trip.as_str())),
                "{e}"
            ),
            None => assert_eq!(e["availability"], json!("AVAILABLE"), "{e}"),
        }
        assert_eq!(e["previous"], json!("OFFLINE"), "{e}");
    }
    assert!(admin.next(AVAILABILITY, Duration::from_millis(1_200)).await.is_none(), "announced once");
    for c in drivers {
        c.close().await;
    }
    admin.close().await;
    h.stop().await;
}

/// A trip `IN_PROGRESS` from (48.85, 2.35) to (48.95, 2.55), driven by `driver`, organized
/// by `org1` and booked by `p1`.
async fn trip_in_progress(h: &Harness, driver: &str) -> String {
    let trip = unique("t");
    h.insert_trip("default", &trip, Some(driver)).await;
    h.insert_booking("default", &trip, "p1").await;
    h.exec_on_trip(
        "UPDATE trips SET status = 'IN_PROGRESS', organizer_id = 'org1', origin_lat = 48.85, origin_lng = 2.35, \
         dest_lat = 48.95, dest_lng = 2.55 WHERE id = $1",
        &trip,
    )
    .await;
    trip
}

/// Metres north of a point, as latitude.
fn north(lat: f64, m: f64) -> f64 {
    lat + m / 111_195.0
}

async fn subscribers_see_progress_and_arrival_fires_once_per_target(mode: Mode) {
    // A short membership cache: a status change on one node reaches the other's progress
    // within it.
    let h = Harness::start(mode, &["--membership-cache-ms", "200"]).await;
    let d = unique("d");
    let trip = trip_in_progress(&h, &d).await;
    let driver_token = token(&d, "DRIVER");
    let on_a = Client::connect(&h.a(), &driver_token).await;
    let on_b = Client::connect(&h.b(), &driver_token).await;
    let mut passenger = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let mut organizer = Client::connect(&h.a(), &token("org1", "PASSENGER")).await;

    // Far from the pickup, moving: distance and ETA.
    let fix = json!({ "tripId": trip, "lat": north(48.85, 1_000.0), "lng": 2.35, "speed": 10.0 });
    assert_ok(&on_a.ack("driver:location:update", fix).await);
    let seen = passenger.expect("server:location:update", "a far position").await;
    let p = &seen["progress"];
    assert_eq!(p["target"], json!("PICKUP"), "{seen}");
    assert!((p["distanceKm"].as_f64().expect("km") - 1.0).abs() < 0.01, "{seen}");
    let eta = p["etaSeconds"].as_u64().expect("eta");
    assert!((90..=110).contains(&eta), "{seen}");
    assert!(passenger.next("trip.driver.arriving", Duration::from_millis(300)).await.is_none());

    // Within the radius (from the driver's other socket, on the other node): arriving, to
    // the trip room and the organizer's user room, once.
    tokio::time::sleep(Duration::from_millis(550)).await;
    let near = json!({ "tripId": trip, "lat": north(48.85, 100.0), "lng": 2.35, "speed": 0.0 });
    assert_ok(&on_b.ack("driver:location:update", near).await);
    let arriving = passenger.expect("trip.driver.arriving", "PICKUP arrival").await;
    assert_eq!((arriving["tripId"].as_str(), arriving["target"].as_str()), (Some(trip.as_str()), Some("PICKUP")));
    assert!((arriving["distanceKm"].as_f64().expect("km") - 0.1).abs() < 0.005, "{arriving}");
    assert!(arriving["eventId"].is_string() && arriving["at"].is_string(), "{arriving}");
    assert_eq!(organizer.expect("trip.driver.arriving", "the organizer's user room").await["target"], json!("PICKUP"));
    for (i, c) in [&on_a, &on_b, &on_a].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(550)).await;
        let still = json!({ "tripId": trip, "lat": north(48.85, 20.0 + i as f64), "lng": 2.35 });
        assert_ok(&c.ack("driver:location:update", still).await);
    }
    assert!(passenger.next("trip.driver.arriving", Duration::from_millis(500)).await.is_none(), "PICKUP once");

    // DEPARTED: progress towards the destination, arriving once more near it, from either
    // node.
    let (status, body) = call(
        reqwest::Method::PUT,
        format!("{}/api/drivers/trips/{trip}/status", h.a()),
        Some(&driver_token),
        Some(json!({ "status": "DEPARTED" })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    passenger.drain();
    assert_ok(&on_b.ack("driver:location:update", json!({ "tripId": trip, "lat": 48.90, "lng": 2.45 })).await);
    let seen = passenger.expect("server:location:update", "on the way").await;
    assert_eq!(seen["progress"]["target"], json!("DESTINATION"), "{seen}");
    for (i, c) in [&on_a, &on_b, &on_a, &on_b].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(550)).await;
        let at_dest = json!({ "tripId": trip, "lat": north(48.95, 10.0 * i as f64), "lng": 2.55 });
        assert_ok(&c.ack("driver:location:update", at_dest).await);
    }
    let arriving = passenger.expect("trip.driver.arriving", "DESTINATION arrival").await;
    assert_eq!(arriving["target"], json!("DESTINATION"));
    assert!(passenger.next("trip.driver.arriving", Duration::from_millis(500)).await.is_none(), "DESTINATION once");

    // ARRIVED: no progress.
    let (status, _) = call(
        reqwest::Method::PUT,
        format!("{}/api/drivers/trips/{trip}/status", h.b()),
        Some(&driver_token),
        Some(json!({ "status": "ARRIVED" })),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    passenger.drain();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_ok(&on_a.ack("driver:location:update", json!({ "tripId": trip, "lat": 48.95, "lng": 2.55 })).await);
    let seen = passenger.expect("server:location:update", "after arrival").await;
    assert!(seen.get("progress").is_none(), "{seen}");
    for c in [on_a, on_b, passenger, organizer] {
        c.close().await;
    }
    h.stop().await;
}

both_modes!(
    availability_follows_offers_positions_connections_and_trips,
    a_stale_position_turns_a_driver_offline,
    drivers_coming_live_together_are_each_derived_once,
    subscribers_see_progress_and_arrival_fires_once_per_target,
);
