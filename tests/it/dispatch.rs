//! Dispatch (CONTRACT §7): notifications to user rooms and `user:sync` after a reconnect,
//! and HTTP location ingest (a driver's own position, the SERVICE batch) through the same
//! path as the socket event.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

async fn post(url: String, token: &str, body: Value) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new().post(url).bearer_auth(token).json(&body).send().await.expect("request");
    let status = r.status().as_u16();
    let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, retry_after, r.json().await.unwrap_or(Value::Null))
}

async fn notify(url: &str, users: Value, title: &str) -> Value {
    let body = json!({ "users": users, "title": title, "body": "your driver is near", "data": { "k": 1 } });
    let (status, _, result) = post(format!("{url}/api/v1/notifications"), &token("backend", "SERVICE"), body).await;
    assert_eq!(status, 202, "{result}");
    result
}

/// A notification reaches each named user's sockets on every node; what a user missed while
/// away comes back with `user:sync {since}`, in order, before later live events.
async fn notifications_reach_users_and_user_sync_replays_what_was_missed(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let (u1, u2) = (unique("u"), unique("u"));
    let mut a = Client::connect(&h.b(), &token(&u1, "PASSENGER")).await;
    let mut b = Client::connect(&h.a(), &token(&u2, "DRIVER")).await;
    let result = notify(&h.a(), json!([u1, u2]), "Arriving").await;
    assert_eq!(result["success"], json!(true), "{result}");
    let got_a = a.expect("notification", "the first user").await;
    let got_b = b.expect("notification", "the second user").await;
    assert_eq!(got_a["title"], json!("Arriving"));
    assert_eq!(got_a["body"], json!("your driver is near"));
    assert_eq!(got_a["level"], json!("info"));
    assert_eq!(got_a["data"], json!({ "k": 1 }));
    assert!(got_a["eventId"].is_string() && got_a["emittedAt"].is_string(), "{got_a}");
    assert_eq!(got_a["id"], got_b["id"], "one id per request");
    let since = got_a["eventId"].as_str().expect("eventId").to_string();
    a.close().await;

    // Away: two notifications and a published event to the user room.
    notify(&h.a(), json!([u1]), "second").await;
    notify(&h.b(), json!([u1]), "third").await;
    let (status, _, _) = post(
        format!("{}/api/v1/emit", h.a()),
        &token("backend", "SERVICE"),
        json!({ "event": "order.shipped", "payload": { "orderId": "o1" }, "users": [u1] }),
    )
    .await;
    assert_eq!(status, 202);

    let mut back = Client::connect(&h.a(), &token(&u1, "PASSENGER")).await;
    let ack = back.ack("user:sync", json!({ "since": since })).await;
    assert_ok(&ack);
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let second = back.expect("notification", "the first missed notification").await;
    let third = back.expect("notification", "the second missed notification").await;
    assert_eq!((second["title"].as_str(), third["title"].as_str()), (Some("second"), Some("third")));
    back.expect("order.shipped", "the missed published event").await;
    assert!(back.next("notification", Duration::from_millis(300)).await.is_none(), "nothing replayed twice");
    // Live again after the sync.
    notify(&h.b(), json!([u1]), "fourth").await;
    assert_eq!(back.expect("notification", "live after the sync").await["title"], json!("fourth"));

    // A sync from before the retained history says so.
    let old = back.ack("user:sync", json!({ "since": "1-0" })).await;
    assert_ok(&old);
    assert_eq!(old["recovered"], json!(false), "{old}");
    back.drain();
    assert_err(&back.ack("user:sync", json!({})).await, "INVALID_PAYLOAD");
    assert_err(&back.ack("user:sync", json!({ "since": "yesterday" })).await, "INVALID_PAYLOAD");
    back.close().await;
    b.close().await;
    h.stop().await;
}

/// `user:sync` keeps order with live events at its seam: events published while the replay
/// runs arrive once, after the replayed ones, in id order.
async fn user_sync_under_concurrent_publishing_keeps_order_and_loses_nothing(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let u = unique("u");
    let mut c = Client::connect(&h.b(), &token(&u, "PASSENGER")).await;
    let first = notify(&h.a(), json!([u]), "n0").await;
    assert_eq!(first["success"], json!(true));
    let since = c.expect("notification", "n0").await["eventId"].as_str().expect("id").to_string();
    c.close().await;
    for i in 1..=5 {
        notify(&h.a(), json!([u]), &format!("n{i}")).await;
    }
    let mut c = Client::connect(&h.b(), &token(&u, "PASSENGER")).await;
    let url = h.a();
    let u2 = u.clone();
    let publisher = tokio::spawn(async move {
        for i in 6..=15 {
            notify(&url, json!([u2]), &format!("n{i}")).await;
        }
    });
    assert_ok(&c.ack("user:sync", json!({ "since": since })).await);
    publisher.await.expect("publisher");
    let mut titles = Vec::new();
    while let Some(n) = c.next("notification", Duration::from_secs(2)).await {
        titles.push(n["title"].as_str().unwrap_or_default().to_string());
    }
    let want: Vec<String> = (1..=15).map(|i| format!("n{i}")).collect();
    assert_eq!(titles, want, "every event once, in order");
    c.close().await;
    h.stop().await;
}

async fn notifications_are_for_backends_and_bad_ones_say_why(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let url = format!("{}/api/v1/notifications", h.a());
    let service = token("backend", "SERVICE");
    let ok = json!({ "users": ["u1"], "title": "t", "body": "b" });
    let (status, _, body) = post(url.clone(), &token("p1", "PASSENGER"), ok.clone()).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("FORBIDDEN")));
    let (status, _, _) = post(url.clone(), &token("adm", "ADMIN"), ok).await;
    assert_eq!(status, 202);
    let too_many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    for bad in [
        json!({ "users": [], "title": "t", "body": "b" }),
        json!({ "users": too_many, "title": "t", "body": "b" }),
        json!({ "users": ["u1"], "title": "t".repeat(201), "body": "b" }),
        json!({ "users": ["u1"], "title": "t", "body": "b".repeat(1025) }),
        json!({ "users": ["u1"], "title": "t", "body": "b", "level": "loud" }),
        json!({ "users": ["u1"], "title": "t", "body": "b", "data": [1] }),
        json!({ "users": ["u1"], "body": "b" }),
        json!({ "users": [""], "title": "t", "body": "b" }),
    ] {
        let (status, _, body) = post(url.clone(), &service, bad.clone()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("INVALID_PAYLOAD")), "{bad} → {body}");
    }
    h.stop().await;
}

/// `POST /api/v1/drivers/me/location`: the socket event's path over HTTP — the trip's
/// subscribers get the position, the rate window is the driver's, shared with its socket.
async fn a_driver_reports_its_position_over_http(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    let d1 = token("d1", "DRIVER");
    let url = format!("{}/api/v1/drivers/me/location", h.b());
    let (status, _, body) =
        post(url.clone(), &d1, json!({ "tripId": trip, "lat": 48.85, "lng": 2.35, "speed": 7.5 })).await;
    assert_eq!((status, &body), (200, &json!({ "ok": true })));
    let got = passenger.expect("server:location:update", "the position").await;
    assert_eq!((got["driverId"].as_str(), got["tripId"].as_str()), (Some("d1"), Some(trip.as_str())));
    assert_eq!((got["lat"].as_f64(), got["speed"].as_f64()), (Some(48.85), Some(7.5)));
    // At once again: the cluster-wide minimum interval, whichever transport sent the last one.
    let (status, retry_after, body) = post(url.clone(), &d1, json!({ "lat": 48.85, "lng": 2.35 })).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("RATE_LIMITED")), "{body}");
    assert!(retry_after.is_some(), "Retry-After");
    assert!(body["retryAfterMs"].as_u64().is_some_and(|ms| ms > 0 && ms <= 500), "{body}");
    assert_err(&driver.ack("driver:location:update", json!({ "lat": 48.85, "lng": 2.35 })).await, "RATE_LIMITED");
    // Shape first, then role, then ownership.
    let (status, _, body) = post(url.clone(), &d1, json!({ "lat": 91, "lng": 2.35 })).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("INVALID_PAYLOAD")));
    let (status, _, body) = post(url.clone(), &token("p1", "PASSENGER"), json!({ "lat": 1, "lng": 2 })).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("FORBIDDEN")));
    let (status, _, body) =
        post(url.clone(), &token("d2", "DRIVER"), json!({ "tripId": trip, "lat": 1, "lng": 2 })).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("FORBIDDEN")));
    let (status, _, body) =
        post(url, &token("d2", "DRIVER"), json!({ "tripId": unique("t"), "lat": 1, "lng": 2 })).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("NOT_FOUND")));
    driver.close().await;
    passenger.close().await;
    h.stop().await;
}

/// `POST /api/v1/locations`: each entry answered in request order as if its driver had sent
/// it — valid, invalid, without a driver, rate limited (a driver's second entry), and not
/// the driver's trip — and the accepted ones stored and delivered.
async fn a_batch_of_updates_answers_each_entry_in_order(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    let service = token("backend", "SERVICE");
    let url = format!("{}/api/v1/locations", h.a());
    let updates = json!({ "updates": [
        { "driverId": "d1", "tripId": trip, "lat": 48.0, "lng": 2.0 },
        { "driverId": "d2", "lat": 120.0, "lng": 2.0 },
        { "lat": 48.0, "lng": 2.0 },
        { "driverId": "d1", "tripId": trip, "lat": 48.1, "lng": 2.1 },
        { "driverId": "d3", "tripId": trip, "lat": 48.0, "lng": 2.0 },
        { "driverId": "d4", "lat": 10.0, "lng": 20.0, "heading": 90 },
        "not an object",
    ]});
    let (status, _, body) = post(url.clone(), &service, updates).await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<Value> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| if r["ok"] == json!(true) { json!("ok") } else { r["error"].clone() })
        .collect();
    assert_eq!(
        codes,
        vec![
            json!("ok"),
            json!("INVALID_PAYLOAD"),
            json!("INVALID_PAYLOAD"),
            json!("RATE_LIMITED"),
            json!("FORBIDDEN"),
            json!("ok"),
            json!("INVALID_PAYLOAD")
        ],
        "{body}"
    );
    assert!(body["results"][3]["retryAfterMs"].as_u64().is_some(), "{body}");
    let got = passenger.expect("server:location:update", "the accepted entry").await;
    assert_eq!(got["lat"].as_f64(), Some(48.0));
    assert!(passenger.next("server:location:update", Duration::from_millis(300)).await.is_none(), "only one");
    // The driver's live position is the accepted entry's.
    let admin = Client::connect(&h.b(), &token("adm", "ADMIN")).await;
    let sub = admin.ack("passenger:subscribe", json!({ "tripId": trip })).await;
    assert_eq!(sub["current"]["lat"].as_f64(), Some(48.0), "{sub}");

    // 1,000 drivers in one batch: all accepted; 0 or 1,001 entries, or a non-SERVICE caller, refused whole.
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({ "driverId": format!("bulk-{i}"), "lat": 40.0 + f64::from(i) / 1e4, "lng": 3.0 }))
        .collect();
    let (status, _, body) = post(url.clone(), &service, json!({ "updates": many })).await;
    assert_eq!(status, 200);
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r == &json!({ "ok": true })), "all accepted");
    let too_many: Vec<Value> = (0..1001).map(|i| json!({ "driverId": format!("x{i}"), "lat": 1, "lng": 1 })).collect();
    for bad in [json!({ "updates": [] }), json!({ "updates": too_many }), json!({})] {
        let (status, _, body) = post(url.clone(), &service, bad).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("INVALID_PAYLOAD")));
    }
    let (status, _, body) =
        post(url, &token("d1", "DRIVER"), json!({ "updates": [{ "driverId": "d1", "lat": 1, "lng": 1 }] })).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("FORBIDDEN")));
    admin.close().await;
    driver.close().await;
    passenger.close().await;
    h.stop().await;
}

both_modes!(
    notifications_reach_users_and_user_sync_replays_what_was_missed,
    user_sync_under_concurrent_publishing_keeps_order_and_loses_nothing,
    notifications_are_for_backends_and_bad_ones_say_why,
    a_driver_reports_its_position_over_http,
    a_batch_of_updates_answers_each_entry_in_order,
);
