//! Live areas (CONTRACT §7), across two nodes through real Socket.IO clients and a real
//! SSE reader on both modes: a driver entering, moving inside, leaving and going offline;
//! one conflated frame per interval with the latest position; the snapshot in the ack;
//! replacing, limits, bad input and roles; the SSE area stream. (The official JavaScript
//! client: `interop_js.rs`.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;
use crate::sse::SseClient;

const UPDATE: &str = "server:area:update";

/// Paris, about 22 × 17 km.
const BBOX: [f64; 4] = [2.25, 48.8, 2.55, 48.95];

async fn at(driver: &Client, lat: f64, lng: f64) {
    assert_ok(&driver.ack("driver:location:update", json!({ "lat": lat, "lng": lng })).await);
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|d| d["driverId"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

async fn a_driver_enters_moves_inside_leaves_and_goes_offline(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "0", "--location-max-per-minute", "1000"]).await;
    let d = unique("d");
    let mut viewer = Client::connect(&h.b(), &token("disp", "BUSINESS")).await;
    let ack = viewer.ack("area:subscribe", json!({ "areaId": "paris", "bbox": BBOX, "intervalMs": 500 })).await;
    assert_ok(&ack);
    assert_eq!((ack["drivers"].clone(), ack["truncated"].clone()), (json!([]), json!(false)), "{ack}");
    let driver = Client::connect(&h.a(), &token(&d, "DRIVER")).await;
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    at(&driver, 48.7, 2.35).await; // south of the area: AVAILABLE, outside
    assert!(viewer.next(UPDATE, Duration::from_millis(900)).await.is_none(), "nothing outside the area");

    // Entering.
    at(&driver, 48.85, 2.35).await;
    let f = viewer.expect(UPDATE, "entered").await;
    assert_eq!(f["areaId"], json!("paris"));
    assert_eq!(ids(&f["drivers"]), vec![d.clone()], "{f}");
    let row = &f["drivers"][0];
    assert_eq!((row["lat"].clone(), row["availability"].clone()), (json!(48.85), json!("AVAILABLE")), "{row}");
    assert!(row["updatedAt"].is_string() && f["at"].is_string() && f["emittedAt"].is_string(), "{f}");
    assert!(f.get("eventId").is_none(), "volatile");
    assert_eq!(f["left"], json!([]));

    // Moving inside, fast: at most one frame per interval, the latest position wins.
    let started = Instant::now();
    let mut last_lng = 0.0;
    for i in 0..20 {
        last_lng = 2.30 + f64::from(i) * 0.005;
        at(&driver, 48.86, last_lng).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut frames = Vec::new();
    while let Some(f) = viewer.next(UPDATE, Duration::from_millis(1_200)).await {
        let at = chrono::DateTime::parse_from_rfc3339(f["at"].as_str().expect("at")).expect("ISO");
        frames.push((at, f));
    }
    assert!(!frames.is_empty());
    let spent = started.elapsed();
    assert!(frames.len() as u128 <= spent.as_millis() / 500 + 1, "{} frames in {spent:?}", frames.len());
    // Frames are sent (`at`) at least an interval apart (the client may read them later).
    for pair in frames.windows(2) {
        let gap = (pair[1].0 - pair[0].0).num_milliseconds();
        assert!(gap >= 490, "frames {gap} ms apart: {} then {}", pair[0].1, pair[1].1);
    }
    let (_, last) = frames.last().expect("a frame");
    assert_eq!(last["drivers"][0]["lng"], json!(last_lng), "the latest position: {last}");
    for (_, f) in &frames {
        assert_eq!(f["drivers"].as_array().map(Vec::len), Some(1), "one entry per driver per frame: {f}");
    }

    // A new area over the driver: its snapshot in the ack.
    let ack = viewer
        .ack("area:subscribe", json!({ "areaId": "centre", "center": { "lat": 48.86, "lng": 2.35 }, "radiusKm": 10 }))
        .await;
    assert_ok(&ack);
    assert_eq!(ids(&ack["drivers"]), vec![d.clone()], "{ack}");
    assert_ok(&viewer.ack("area:unsubscribe", json!({ "areaId": "centre" })).await);

    // Going OFFLINE: left, and the availability event to the area's subscriber.
    assert_ok(&driver.ack("driver:unsubscribe", json!({})).await);
    let changed = viewer.expect("driver.availability.changed", "to the area's subscriber").await;
    assert_eq!((changed["driverId"].as_str(), changed["availability"].as_str()), (Some(d.as_str()), Some("OFFLINE")));
    let f = viewer.expect(UPDATE, "offline").await;
    assert_eq!((f["drivers"].clone(), ids(&json!([]))), (json!([]), Vec::<String>::new()));
    assert_eq!(f["left"], json!([d]), "{f}");
    at(&driver, 48.87, 2.36).await;
    assert!(viewer.next(UPDATE, Duration::from_millis(900)).await.is_none(), "OFFLINE drivers are not shown");

    // Back, then leaving the area.
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    let f = viewer.expect(UPDATE, "available again").await;
    assert_eq!(ids(&f["drivers"]), vec![d.clone()], "{f}");
    at(&driver, 49.2, 2.36).await;
    let f = viewer.expect(UPDATE, "left").await;
    assert_eq!(f["left"], json!([d]), "{f}");
    viewer.close().await;
    driver.close().await;
    h.stop().await;
}

async fn area_subscriptions_check_bounds_roles_and_limits(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let viewer = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    for bad in [
        json!({ "bbox": BBOX }),
        json!({ "areaId": "", "bbox": BBOX }),
        json!({ "areaId": "x".repeat(65), "bbox": BBOX }),
        json!({ "areaId": "a", "bbox": [2.0, 48.0, 3.5, 48.5] }),
        json!({ "areaId": "a", "bbox": [2.0, 48.0, 2.5] }),
        json!({ "areaId": "a", "center": { "lat": 48.8, "lng": 2.3 }, "radiusKm": 60 }),
        json!({ "areaId": "a", "center": { "lat": 48.8, "lng": 2.3 } }),
        json!({ "areaId": "a", "bbox": BBOX, "center": { "lat": 48.8, "lng": 2.3 }, "radiusKm": 5 }),
        json!({ "areaId": "a", "bbox": BBOX, "intervalMs": 100 }),
        json!({ "areaId": "a", "bbox": BBOX, "availability": ["OFFLINE"] }),
    ] {
        assert_err(&viewer.ack("area:subscribe", bad.clone()).await, "INVALID_PAYLOAD");
    }
    let passenger = Client::connect(&h.a(), &token("p1", "PASSENGER")).await;
    assert_err(&passenger.ack("area:subscribe", json!({ "areaId": "a", "bbox": BBOX })).await, "FORBIDDEN");
    for i in 0..4 {
        assert_ok(&viewer.ack("area:subscribe", json!({ "areaId": format!("a{i}"), "bbox": BBOX })).await);
    }
    assert_err(&viewer.ack("area:subscribe", json!({ "areaId": "a4", "bbox": BBOX })).await, "SUBSCRIPTION_LIMIT");
    // The same areaId replaces; after an unsubscribe there is room again.
    assert_ok(
        &viewer
            .ack("area:subscribe", json!({ "areaId": "a0", "center": { "lat": 48.8, "lng": 2.3 }, "radiusKm": 3 }))
            .await,
    );
    assert_ok(&viewer.ack("area:unsubscribe", json!({ "areaId": "a1" })).await);
    assert_ok(&viewer.ack("area:subscribe", json!({ "areaId": "a4", "bbox": BBOX })).await);
    assert_ok(&viewer.ack("area:unsubscribe", json!({ "areaId": "never" })).await);
    assert_err(&viewer.ack("area:unsubscribe", json!({})).await, "INVALID_PAYLOAD");
    viewer.close().await;
    passenger.close().await;
    h.stop().await;
}

async fn the_area_stream_over_sse(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "0"]).await;
    let d = unique("d");
    let driver = Client::connect(&h.b(), &token(&d, "DRIVER")).await;
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    at(&driver, 48.85, 2.35).await;
    let base = format!("{}/api/v1/realtime/area", h.a());
    let biz = token("disp", "BUSINESS");
    let bbox = "2.25,48.8,2.55,48.95";
    let status = |r: Result<SseClient, (u16, Value)>| r.err().map(|(s, _)| s);
    let passenger = token("p1", "PASSENGER");
    assert_eq!(status(SseClient::open(format!("{base}?bbox={bbox}"), &passenger, None).await), Some(403));
    for bad in
        ["bbox=2.0,48.0,3.5,48.5", "bbox=1,2,3", "center=48.8,2.3", "bbox=2.25,48.8,2.55,48.95&intervalMs=10", ""]
    {
        assert_eq!(status(SseClient::open(format!("{base}?{bad}"), &biz, None).await), Some(400), "{bad}");
    }
    // Wait for the driver's availability before the snapshot is read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("{base}?bbox={bbox}&intervalMs=250&availability=AVAILABLE");
    let mut s = SseClient::open(url, &biz, None).await.expect("stream");
    let m = s.next_of("connected").await;
    let (id, connected) = (m.id, m.data.expect("data"));
    assert_eq!(id, None);
    assert_eq!(
        (ids(&connected["drivers"]), connected["truncated"].clone()),
        (vec![d.clone()], json!(false)),
        "{connected}"
    );
    at(&driver, 48.86, 2.36).await;
    let m = s.next_of("area_update").await;
    let (id, update) = (m.id, m.data.expect("data"));
    assert_eq!(id, None, "area updates carry no id");
    assert_eq!(update["drivers"][0]["lat"], json!(48.86), "{update}");
    assert!(update["at"].is_string());
    at(&driver, 47.0, 2.36).await;
    let update = s.next_of("area_update").await.data.expect("data");
    assert_eq!(update["left"], json!([d]), "{update}");
    driver.close().await;
    h.stop().await;
}

/// A driver streaming through one node while a dispatcher starts watching its area on
/// another: a position sent right after the subscription reaches the dispatcher within about
/// a second and a half even where the driver's node still reuses what it last heard of the
/// cell's watch (a Redis Cluster skips the geo index write of a driver that stays in its
/// cell; the watching node reads its new area's positions again once the watch settled).
async fn a_position_sent_right_after_a_new_watch_reaches_the_area(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "0", "--location-max-per-minute", "1000"]).await;
    let d = unique("d");
    let driver = Client::connect(&h.a(), &token(&d, "DRIVER")).await;
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    // Indexed and live; its node hears that the cell is not watched.
    at(&driver, 48.85, 2.35).await;
    at(&driver, 48.8501, 2.35).await;
    let mut viewer = Client::connect(&h.b(), &token("disp", "BUSINESS")).await;
    let ack = viewer.ack("area:subscribe", json!({ "areaId": "paris", "bbox": BBOX, "intervalMs": 250 })).await;
    assert_ok(&ack);
    assert_eq!(ids(&ack["drivers"]), vec![d.clone()], "{ack}");
    let subscribed = Instant::now();
    // Moving inside its cell at once.
    at(&driver, 48.8502, 2.3501).await;
    loop {
        let f = viewer.next(UPDATE, Duration::from_secs(4)).await.expect("the new position within 4 s");
        let shown = f["drivers"].as_array().and_then(|a| a.iter().find(|r| r["driverId"] == json!(d)).cloned());
        if shown.is_some_and(|r| r["lng"] == json!(2.3501)) {
            break;
        }
    }
    let after = subscribed.elapsed();
    assert!(after < Duration::from_millis(2_500), "the position reached the area after {after:?}");
    viewer.close().await;
    driver.close().await;
    h.stop().await;
}

/// The snapshot in the ack places each driver at its latest position, even where the geo
/// index holds an older one (a Redis Cluster re-indexes a driver that stays in its geo cell
/// only past 50 m): a driver that just crossed the area's edge inwards by a few tens of
/// metres is in it, one that crossed outwards is not.
async fn the_snapshot_follows_small_moves_across_the_edge(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "0", "--location-max-per-minute", "1000"]).await;
    let (inward, outward) = (unique("in"), unique("out"));
    let mut drivers = Vec::new();
    // 22 m north of the box's north edge (48.95) and 22 m inside it: a 44 m move.
    for (d, from, to) in [(&inward, 48.9502, 48.9498), (&outward, 48.9498, 48.9502)] {
        let driver = Client::connect(&h.a(), &token(d, "DRIVER")).await;
        assert_ok(&driver.ack("driver:subscribe", json!({})).await);
        at(&driver, from, 2.4).await;
        at(&driver, to, 2.4).await;
        drivers.push(driver);
    }
    let viewer = Client::connect(&h.b(), &token("disp", "BUSINESS")).await;
    let ack = viewer.ack("area:subscribe", json!({ "areaId": "paris", "bbox": BBOX })).await;
    assert_ok(&ack);
    assert_eq!(ids(&ack["drivers"]), vec![inward.clone()], "{ack}");
    assert_eq!(ack["drivers"][0]["lat"], json!(48.9498), "{ack}");
    viewer.close().await;
    for d in drivers {
        d.close().await;
    }
    h.stop().await;
}

both_modes!(
    the_snapshot_follows_small_moves_across_the_edge,
    a_position_sent_right_after_a_new_watch_reaches_the_area,
    a_driver_enters_moves_inside_leaves_and_goes_offline,
    area_subscriptions_check_bounds_roles_and_limits,
    the_area_stream_over_sse,
);
