//! Missed-event recovery on Socket.IO (CONTRACT §2, §6 `eventId`): recoverable events carry
//! strictly increasing `eventId`s per room; `passenger:subscribe` and `admin:subscribe` with
//! `since` replay what was missed, in order, before live events, with nothing lost or
//! doubled at the seam, from any node; the ack says whether the history still reached back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

const FAST: &[&str] = &["--socket-events-per-sec", "1000", "--socket-events-burst", "1000"];

fn id_of(v: &Value) -> (u64, u64) {
    let s = v["eventId"].as_str().unwrap_or_else(|| panic!("no eventId in {v}"));
    let (ms, seq) = s.split_once('-').expect("ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

async fn status(driver: &Client, trip: &str, n: usize) {
    let status = if n.is_multiple_of(2) { "STARTED" } else { "PAUSED" };
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": status })).await);
}

async fn a_resubscribing_passenger_gets_what_it_missed_in_order(mode: Mode) {
    let h = Harness::start(mode, FAST).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut first = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    assert_ok(&first.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    status(&driver, &trip, 0).await;
    let seen = first.expect("server:trip:status", "live status").await;
    assert!(seen["emittedAt"].is_string());
    let since = seen["eventId"].as_str().expect("eventId").to_string();
    first.close().await;
    // Missed while away.
    for n in 1..=4 {
        status(&driver, &trip, n).await;
    }
    let mut back = Client::connect(&h.a(), &token("p1", "PASSENGER")).await;
    let ack = back.ack("passenger:subscribe", json!({ "tripId": trip, "since": since })).await;
    assert_ok(&ack);
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let mut ids = vec![id_of(&seen)];
    for _ in 1..=4 {
        let ev = back.expect("server:trip:status", "replayed status").await;
        ids.push(id_of(&ev));
    }
    status(&driver, &trip, 5).await;
    ids.push(id_of(&back.expect("server:trip:status", "live after replay").await));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing, in order: {ids:?}");
    assert!(back.next("server:trip:status", Duration::from_millis(300)).await.is_none(), "nothing doubled");
    // A bad `since` is a payload error.
    let ack = back.ack("passenger:subscribe", json!({ "tripId": trip, "since": "yesterday" })).await;
    assert_err(&ack, "INVALID_PAYLOAD");
    for c in [driver, back] {
        c.close().await;
    }
    h.stop().await;
}

async fn the_replay_seam_neither_loses_nor_doubles_events(mode: Mode) {
    let h = Harness::start(mode, FAST).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut observer = Client::connect(&h.b(), &token("adm1", "ADMIN")).await;
    assert_ok(&observer.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    status(&driver, &trip, 0).await;
    let since = observer.expect("server:trip:status", "first").await["eventId"].as_str().expect("id").to_string();
    // Publish continuously while a second admin subscribes with `since` mid-stream.
    let total = 60;
    let publisher = {
        let trip = trip.clone();
        tokio::spawn(async move {
            for n in 1..=total {
                status(&driver, &trip, n).await;
            }
            driver
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut late = Client::connect(&h.b(), &token("adm2", "ADMIN")).await;
    let ack = late.ack("passenger:subscribe", json!({ "tripIds": [trip], "since": { trip.clone(): since } })).await;
    assert_ok(&ack);
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let driver = publisher.await.expect("publisher");
    let mut want = Vec::new();
    for _ in 0..total {
        want.push(observer.expect("server:trip:status", "observer").await["eventId"].clone());
    }
    let mut got = Vec::new();
    while let Some(ev) = late.next("server:trip:status", Duration::from_millis(800)).await {
        got.push(ev["eventId"].clone());
    }
    assert_eq!(got, want, "the late subscriber saw exactly the events after `since`, once each, in order");
    for c in [driver, observer, late] {
        c.close().await;
    }
    h.stop().await;
}

async fn history_bounds_are_honoured_and_reported(mode: Mode) {
    let mut flags = FAST.to_vec();
    flags.extend(["--history-max-events", "5"]);
    let h = Harness::start(mode, &flags).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut watcher = Client::connect(&h.b(), &token("adm1", "ADMIN")).await;
    assert_ok(&watcher.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let mut ids = Vec::new();
    for n in 0..8 {
        status(&driver, &trip, n).await;
        ids.push(watcher.expect("server:trip:status", "status").await["eventId"].as_str().expect("id").to_string());
    }
    // Only the last 5 are kept: from the first id, two events are gone.
    let mut c = Client::connect(&h.a(), &token("adm2", "ADMIN")).await;
    let ack = c.ack("passenger:subscribe", json!({ "tripId": trip, "since": ids[0] })).await;
    assert_eq!(ack["recovered"], json!(false), "{ack}");
    let mut got = Vec::new();
    while let Some(ev) = c.next("server:trip:status", Duration::from_millis(500)).await {
        got.push(ev["eventId"].as_str().expect("id").to_string());
    }
    assert_eq!(got, ids[3..].to_vec(), "what is still kept, in order");
    // From the third id nothing newer was dropped.
    let mut d = Client::connect(&h.a(), &token("adm3", "ADMIN")).await;
    let ack = d.ack("passenger:subscribe", json!({ "tripId": trip, "since": ids[2] })).await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let mut got = Vec::new();
    while let Some(ev) = d.next("server:trip:status", Duration::from_millis(500)).await {
        got.push(ev["eventId"].as_str().expect("id").to_string());
    }
    assert_eq!(got, ids[3..].to_vec());
    for cl in [driver, watcher, c, d] {
        cl.close().await;
    }
    h.stop().await;
}

async fn admins_recover_missed_alerts(mode: Mode) {
    let h = Harness::start(mode, FAST).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut admin = Client::connect(&h.b(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "EMERGENCY" })).await);
    let first = admin.expect("server:alert", "first alert").await;
    admin.close().await;
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "EMERGENCY" })).await);
    let mut back = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    let ack = back.ack("admin:subscribe", json!({ "since": first["eventId"] })).await;
    assert_ok(&ack);
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let missed = back.expect("server:alert", "missed alert").await;
    assert!(id_of(&missed) > id_of(&first));
    assert_eq!(missed["type"], json!("EMERGENCY"));
    for c in [driver, back] {
        c.close().await;
    }
    h.stop().await;
}

both_modes!(
    a_resubscribing_passenger_gets_what_it_missed_in_order,
    the_replay_seam_neither_loses_nor_doubles_events,
    history_bounds_are_honoured_and_reported,
    admins_recover_missed_alerts,
);
