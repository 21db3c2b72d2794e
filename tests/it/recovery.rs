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

/// A node shut down mid-stream: its Socket.IO and SSE clients resume on another node with
/// their last ids and miss nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_node_shut_down_mid_stream_resume_elsewhere_without_missing_events() {
    let mut h = Harness::start(Mode::Cluster, FAST).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let doomed = h.add_node().await;
    let emit_url = format!("{}/api/v1/emit", h.a());
    let publish = |n: u64| {
        let url = emit_url.clone();
        let trip = trip.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token("backend", "SERVICE"))
                .json(&json!({ "event": "trip.status.updated", "rooms": [format!("trip:{trip}:subscribers")],
                    "payload": { "tripId": trip, "previousStatus": "IN_PROGRESS", "newStatus": "DEPARTED", "n": n } }))
                .send()
                .await
                .expect("emit");
            assert_eq!(r.status(), 202);
        }
    };
    let mut sio = Client::connect(&h.url(doomed), &token("p1", "PASSENGER")).await;
    assert_ok(&sio.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let sse_url = |node: String| format!("{node}/api/realtime/trip-status/{trip}");
    let sse = reqwest::Client::new()
        .get(sse_url(h.url(doomed)))
        .bearer_auth(token("adm", "ADMIN"))
        .send()
        .await
        .expect("sse");
    let mut sse_body = sse.bytes_stream();
    for n in 1..=3 {
        publish(n).await;
    }
    let mut sio_last = String::new();
    for n in 1..=3 {
        let ev = sio.expect("trip.status.updated", "before shutdown").await;
        assert_eq!(ev["n"], json!(n));
        sio_last = ev["eventId"].as_str().expect("id").to_string();
    }
    // Read the SSE stream up to the third event's id.
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !text.contains(&format!("id: {sio_last}")) && !text.contains(&format!("id:{sio_last}")) {
        assert!(std::time::Instant::now() < deadline, "SSE stream did not carry the third event: {text}");
        let chunk = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut sse_body))
            .await
            .expect("sse chunk")
            .expect("open")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The node goes away; events keep coming meanwhile.
    let node = h.nodes.remove(doomed);
    let shutdown = tokio::spawn(node.shutdown());
    for n in 4..=6 {
        publish(n).await;
    }
    tokio::time::timeout(Duration::from_secs(10), shutdown).await.expect("bounded shutdown").expect("shutdown");
    // The SSE stream ended (the client would reconnect).
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut sse_body).await {}
    })
    .await;
    assert!(rest.is_ok(), "the SSE stream was not ended by the shutdown");
    // Socket.IO client resumes on node B.
    sio.drain();
    let mut again = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    let ack = again.ack("passenger:subscribe", json!({ "tripId": trip, "since": sio_last })).await;
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let got: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 4..=6 {
            v.push(again.expect("trip.status.updated", "missed during shutdown").await["n"].clone());
        }
        v
    };
    assert_eq!(got, vec![json!(4), json!(5), json!(6)]);
    // The SSE client resumes on node B with Last-Event-ID.
    let r = reqwest::Client::new()
        .get(sse_url(h.b()))
        .bearer_auth(token("adm", "ADMIN"))
        .header("last-event-id", &sio_last)
        .send()
        .await
        .expect("sse again");
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while text.matches("\"type\":\"status_update\"").count() < 3 {
        assert!(std::time::Instant::now() < deadline, "missed events not replayed over SSE: {text}");
        let chunk = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut body))
            .await
            .expect("chunk")
            .expect("open")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ns: Vec<&str> = text.match_indices("\"n\":").map(|(i, _)| &text[i + 4..i + 5]).collect();
    assert_eq!(ns, ["4", "5", "6"], "{text}");
    for c in [sio, again] {
        c.close().await;
    }
    h.stop().await;
}
