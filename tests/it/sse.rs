//! Server-Sent Events (CONTRACT §3): access checked before the stream starts, `retry:`
//! first, `connected` with the current state, `id:` on every event (the same ids as
//! Socket.IO), heartbeats without ids, `Last-Event-ID` replay then live with no gap and no
//! duplicate, from any node; `EmissionResult.sse` counts streams across the cluster.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

/// One parsed SSE message.
#[derive(Debug, Default, Clone)]
pub(crate) struct Msg {
    pub(crate) id: Option<String>,
    retry: Option<u64>,
    pub(crate) data: Option<Value>,
}

/// A real SSE reader over one response body (also used by `areas.rs`).
pub(crate) struct SseClient {
    rx: tokio::sync::mpsc::UnboundedReceiver<Msg>,
    /// Reads the response body; aborted on drop, which closes the connection.
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SseClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SseClient {
    pub(crate) async fn open(url: String, token: &str, last_event_id: Option<&str>) -> Result<SseClient, (u16, Value)> {
        let mut req = reqwest::Client::new().get(url).bearer_auth(token).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let r = req.send().await.expect("request");
        if r.status() != 200 {
            let status = r.status().as_u16();
            return Err((status, r.json().await.unwrap_or(Value::Null)));
        }
        assert!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"))
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut body = r.bytes_stream();
        let reader = tokio::spawn(async move {
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let mut m = Msg::default();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            m.id = Some(v.trim().to_string());
                        } else if let Some(v) = line.strip_prefix("retry:") {
                            m.retry = v.trim().parse().ok();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            m.data = serde_json::from_str(v.trim()).ok();
                        }
                    }
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(SseClient { rx, reader })
    }

    async fn next(&mut self, within: Duration) -> Option<Msg> {
        tokio::time::timeout(within, self.rx.recv()).await.ok().flatten()
    }

    /// The next message whose data has `type` = `kind`.
    pub(crate) async fn next_of(&mut self, kind: &str) -> Msg {
        loop {
            let m = self.next(Duration::from_secs(5)).await.unwrap_or_else(|| panic!("no {kind} within 5 s"));
            if m.data.as_ref().and_then(|d| d["type"].as_str()) == Some(kind) {
                return m;
            }
        }
    }
}

async fn publish_order(h: &Harness, node: usize, order: &str, n: u64) -> Value {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/realtime/orders/{order}", h.url(node)))
        .bearer_auth(token("backend", "SERVICE"))
        .json(&json!({ "data": { "n": n } }))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 202);
    r.json().await.expect("result")
}

async fn order_streams_carry_ids_replay_from_last_event_id_and_count_in_results(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let order = unique("o");
    let biz = token("biz", "BUSINESS");
    let mut s = SseClient::open(format!("{}/api/v1/realtime/orders/{order}/stream", h.b()), &biz, None)
        .await
        .expect("stream opens");
    let first = s.next(Duration::from_secs(5)).await.expect("first message");
    assert_eq!(first.retry, Some(3000), "retry comes first");
    let connected = s.next_of("connected").await;
    assert_eq!(connected.id, None, "connected carries no id");
    assert_eq!(connected.data.expect("data")["orderId"], json!(order));
    let result = publish_order(&h, 0, &order, 1).await;
    assert_eq!(result["sse"]["connections"], json!(1), "{result}");
    assert_eq!(result["sse"]["sent"], json!(true));
    let e1 = s.next_of("order_update").await;
    let d = e1.data.clone().expect("data");
    assert_eq!((d["orderId"].clone(), d["data"].clone()), (json!(order), json!({ "n": 1 })));
    assert_eq!(e1.id.as_deref(), d["eventId"].as_str(), "id: is the eventId");
    drop(s);
    // Missed while away, then a reconnect to the other node with Last-Event-ID.
    for n in 2..=4 {
        publish_order(&h, 1, &order, n).await;
    }
    let mut back = SseClient::open(format!("{}/api/v1/realtime/orders/{order}/stream", h.a()), &biz, e1.id.as_deref())
        .await
        .expect("reconnect");
    let connected = back.next_of("connected").await;
    assert_eq!(connected.data.expect("data")["recovered"], json!(true));
    let mut ns = Vec::new();
    for _ in 0..3 {
        ns.push(back.next_of("order_update").await.data.expect("data")["data"]["n"].clone());
    }
    publish_order(&h, 1, &order, 5).await;
    ns.push(back.next_of("order_update").await.data.expect("data")["data"]["n"].clone());
    assert_eq!(ns, vec![json!(2), json!(3), json!(4), json!(5)], "replay in order, then live, nothing doubled");
    h.stop().await;
}

async fn streams_check_access_before_they_start(mode: Mode) {
    let h = Harness::start(mode, &["--sse-heartbeat-ms", "200"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let url = |path: String| format!("{}{path}", h.a());
    let err =
        |r: Result<SseClient, (u16, Value)>| r.err().map(|(s, b)| (s, b["error"].as_str().unwrap_or("").to_string()));
    let order_url = url("/api/v1/realtime/orders/o1/stream".into());
    let no_token = reqwest::Client::new().get(&order_url).send().await.expect("request");
    assert_eq!(no_token.status(), 401);
    assert_eq!(
        err(SseClient::open(order_url.clone(), &token("p1", "PASSENGER"), None).await),
        Some((403, "FORBIDDEN".into()))
    );
    let granted = sign(json!({"sub": "p1", "role": "PASSENGER", "channels": ["order:o1"]}));
    assert!(SseClient::open(order_url, &granted, None).await.is_ok());
    let trip_url = url(format!("/api/realtime/trip-status/{trip}"));
    assert_eq!(
        err(SseClient::open(url("/api/realtime/trip-status/nope".into()), &token("adm", "ADMIN"), None).await),
        Some((404, "NOT_FOUND".into()))
    );
    assert_eq!(
        err(SseClient::open(trip_url.clone(), &token("p2", "PASSENGER"), None).await),
        Some((403, "FORBIDDEN".into()))
    );
    let mut s =
        SseClient::open(trip_url.clone(), &token("p1", "PASSENGER"), None).await.expect("passenger with booking");
    let connected = s.next_of("connected").await.data.expect("data");
    assert_eq!((connected["tripId"].clone(), connected["currentStatus"].clone()), (json!(trip), json!("PUBLISHED")));
    let hb = s.next_of("heartbeat").await;
    assert_eq!(hb.id, None, "heartbeats carry no id");
    // A trip status change published on the trip room arrives as status_update.
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/emit", h.b()))
        .bearer_auth(token("backend", "SERVICE"))
        .json(&json!({ "event": "trip.status.updated", "rooms": [format!("trip:{trip}:subscribers")],
            "payload": { "tripId": trip, "previousStatus": "PUBLISHED", "newStatus": "IN_PROGRESS", "updatedAt": "2026-01-01T00:00:00Z" } }))
        .send()
        .await
        .expect("emit");
    assert_eq!(r.status(), 202);
    let up = s.next_of("status_update").await;
    let d = up.data.expect("data");
    assert_eq!((d["previousStatus"].clone(), d["newStatus"].clone()), (json!("PUBLISHED"), json!("IN_PROGRESS")));
    assert!(up.id.is_some());
    // The trip's driver may follow it too.
    assert!(SseClient::open(trip_url, &token("d1", "DRIVER"), None).await.is_ok());
    h.stop().await;
}

/// The trip-status stream follows the status API: `status_update` from
/// `trip.status.updated` with its id, and `connected.currentStatus` read fresh on any node.
async fn trip_status_streams_follow_the_status_api(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let admin = token("adm", "ADMIN");
    let url = format!("{}/api/realtime/trip-status/{trip}", h.b());
    let mut stream = SseClient::open(url.clone(), &admin, None).await.expect("stream");
    let connected = stream.next_of("connected").await;
    assert_eq!(connected.data.expect("data")["currentStatus"], json!("PUBLISHED"));
    let r = reqwest::Client::new()
        .put(format!("{}/api/drivers/trips/{trip}/status", h.a()))
        .bearer_auth(&admin)
        .json(&json!({ "status": "CANCELLED", "notes": "no driver today" }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let update = stream.next_of("status_update").await;
    assert!(update.id.is_some(), "status updates carry an id");
    let data = update.data.expect("data");
    assert_eq!((data["previousStatus"].as_str(), data["newStatus"].as_str()), (Some("PUBLISHED"), Some("CANCELLED")));
    assert_eq!(data["notes"], json!("no driver today"));
    assert_eq!(data["tripId"], json!(trip));
    let mut again = SseClient::open(url, &admin, None).await.expect("stream");
    let connected = again.next_of("connected").await;
    assert_eq!(connected.data.expect("data")["currentStatus"], json!("CANCELLED"), "read fresh, not from a cache");
    h.stop().await;
}

both_modes!(
    order_streams_carry_ids_replay_from_last_event_id_and_count_in_results,
    streams_check_access_before_they_start,
    trip_status_streams_follow_the_status_api,
);

async fn driver_location_streams_follow_a_driver_across_nodes(mode: Mode) {
    let h = Harness::start(mode, &["--location-min-interval-ms", "0"]).await;
    let driver = unique("d");
    let d = Client::connect(&h.a(), &token(&driver, "DRIVER")).await;
    assert_ok(&d.ack("driver:location:update", json!({ "lat": 1.5, "lng": 2.5 })).await);
    let url = format!("{}/api/v1/realtime/drivers/{driver}/location", h.b());
    let err = SseClient::open(url.clone(), &token("p1", "PASSENGER"), None).await.err().map(|(s, _)| s);
    assert_eq!(err, Some(403));
    assert!(SseClient::open(url.clone(), &token(&driver, "DRIVER"), None).await.is_ok(), "the driver itself");
    let mut s = SseClient::open(url, &token("adm", "ADMIN"), None).await.expect("admin");
    let connected = s.next_of("connected").await.data.expect("data");
    assert_eq!(connected["location"]["latitude"], json!(1.5), "current location at connect: {connected}");
    for lat in [10.0, 11.0] {
        assert_ok(&d.ack("driver:location:update", json!({ "lat": lat, "lng": 20.0, "speed": 3.5 })).await);
        let m = s.next_of("driver_location").await;
        assert!(m.id.is_some(), "every event has an id");
        let data = m.data.expect("data");
        assert_eq!(data["driverId"], json!(driver));
        assert_eq!(data["location"], json!({ "latitude": lat, "longitude": 20.0, "speed": 3.5 }));
        assert!(data["timestamp"].is_string());
    }
    d.close().await;
    h.stop().await;
}

both_modes!(driver_location_streams_follow_a_driver_across_nodes);

async fn streams_are_gzip_compressed_for_clients_that_accept_it_and_still_flow(mode: Mode) {
    let h = Harness::start(mode, &["--sse-heartbeat-ms", "200"]).await;
    let order = unique("o");
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/realtime/orders/{order}/stream", h.a()))
        .bearer_auth(token("biz", "BUSINESS"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("stream");
    assert_eq!(r.status(), 200);
    // reqwest decodes gzip itself and then drops the header; the raw length differs, so
    // ask the server through a second, undecoded request for the header.
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while text.matches("\"type\":\"heartbeat\"").count() < 2 {
        assert!(std::time::Instant::now() < deadline, "compressed stream stalled: {text:?}");
        let chunk = tokio::time::timeout(Duration::from_secs(3), body.next())
            .await
            .expect("chunk")
            .expect("open")
            .expect("bytes");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"type\":\"connected\""));
    let raw = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client")
        .get(format!("{}/api/v1/realtime/orders/{order}/stream", h.a()))
        .bearer_auth(token("biz", "BUSINESS"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("stream");
    assert_eq!(raw.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"));
    h.stop().await;
}

both_modes!(streams_are_gzip_compressed_for_clients_that_accept_it_and_still_flow);

async fn the_sse_replay_seam_neither_loses_nor_doubles_events(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let order = unique("o");
    let biz = token("biz", "BUSINESS");
    let stream_url = |node: String| format!("{node}/api/v1/realtime/orders/{order}/stream");
    let mut observer = SseClient::open(stream_url(h.b()), &biz, None).await.expect("observer");
    observer.next_of("connected").await;
    publish_order(&h, 0, &order, 0).await;
    let since = observer.next_of("order_update").await.id.expect("id");
    // Publish continuously while a second stream opens with Last-Event-ID mid-stream.
    let total = 60u64;
    let publisher = {
        let url = format!("{}/api/v1/realtime/orders/{order}", h.a());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 1..=total {
                let r = http
                    .post(&url)
                    .bearer_auth(token("backend", "SERVICE"))
                    .json(&json!({ "data": { "n": n } }))
                    .send()
                    .await
                    .expect("publish");
                assert_eq!(r.status(), 202);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(40)).await;
    let mut late = SseClient::open(stream_url(h.b()), &biz, Some(&since)).await.expect("late stream");
    late.next_of("connected").await;
    publisher.await.expect("publisher");
    let mut want = Vec::new();
    for _ in 0..total {
        want.push(observer.next_of("order_update").await.id.expect("id"));
    }
    let mut got = Vec::new();
    while let Some(m) = late.next(Duration::from_millis(800)).await {
        if let Some(id) = m.id {
            got.push(id);
        }
    }
    assert_eq!(got, want, "exactly the events after Last-Event-ID, once each, in order");
    h.stop().await;
}

both_modes!(the_sse_replay_seam_neither_loses_nor_doubles_events);

async fn post_as(url: String, token: &str, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(token), Some(body)).await
}

/// The caller's own user room over SSE (CONTRACT §7): every event under its own name with
/// its id, and what a reconnecting browser missed after its `Last-Event-ID`, in order.
async fn the_user_room_stream_carries_every_event_and_replays_what_was_missed(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let u = unique("u");
    let me = token(&u, "PASSENGER");
    let service = token("backend", "SERVICE");
    let url = format!("{}/api/v1/realtime/me/stream", h.b());
    let notify = |title: &'static str| {
        let (url, service, u) = (format!("{}/api/v1/notifications", h.a()), service.clone(), u.clone());
        async move {
            let (status, body) =
                post_as(url, &service, json!({ "users": [u], "title": title, "body": "your ride" })).await;
            assert_eq!(status, 202, "{body}");
        }
    };
    let mut s = SseClient::open(url.clone(), &me, None).await.expect("stream");
    let connected = s.next_of("connected").await;
    assert_eq!(connected.data.expect("data")["userId"], json!(u));
    assert_eq!(connected.id, None);
    notify("one").await;
    let one = s.next_of("notification").await;
    let data = one.data.expect("data");
    assert_eq!(data["title"], json!("one"));
    assert_eq!(one.id.as_deref(), data["eventId"].as_str(), "id: is the eventId");
    let (status, _) = post_as(
        format!("{}/api/v1/emit", h.a()),
        &service,
        json!({ "event": "order.shipped", "payload": { "orderId": "o1" }, "users": [u] }),
    )
    .await;
    assert_eq!(status, 202);
    let shipped = s.next_of("order.shipped").await;
    let last = shipped.id.expect("id");
    drop(s);

    notify("two").await;
    notify("three").await;
    let url_q = url.clone();
    let mut back = SseClient::open(url, &me, Some(&last)).await.expect("stream");
    assert_eq!(back.next_of("connected").await.data.expect("data")["recovered"], json!(true));
    let two = back.next_of("notification").await.data.expect("data");
    let three = back.next_of("notification").await.data.expect("data");
    assert_eq!((two["title"].as_str(), three["title"].as_str()), (Some("two"), Some("three")));
    notify("four").await;
    assert_eq!(back.next_of("notification").await.data.expect("data")["title"], json!("four"), "then live");
    drop(back);
    // A new EventSource cannot set Last-Event-ID: `?lastEventId=` resumes the same way.
    notify("five").await;
    let mut query = SseClient::open(format!("{url_q}?lastEventId={last}"), &me, None).await.expect("stream");
    assert_eq!(query.next_of("connected").await.data.expect("data")["recovered"], json!(true));
    for want in ["two", "three", "four", "five"] {
        assert_eq!(
            query.next_of("notification").await.data.expect("data")["title"],
            json!(want),
            "after ?lastEventId="
        );
    }
    drop(query);
    let (status, body) = call(reqwest::Method::GET, format!("{url_q}?lastEventId=nope"), Some(&me), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("INVALID_PAYLOAD")), "{body}");

    // Offers are for drivers, and the flag is checked.
    let offers_url = |q: &str| format!("{}/api/v1/realtime/me/stream?{q}", h.a());
    let status = |r: Result<SseClient, (u16, Value)>| r.err().map(|(s, body)| (s, body["error"].clone()));
    assert_eq!(status(SseClient::open(offers_url("offers=true"), &me, None).await), Some((403, json!("FORBIDDEN"))));
    let driver = token(&unique("d"), "DRIVER");
    for bad in ["offers=maybe", "offers=true&tripTypes=BOAT", "offers=true&maxDistance=far"] {
        let got = status(SseClient::open(offers_url(bad), &driver, None).await);
        assert_eq!(got, Some((400, json!("INVALID_PAYLOAD"))), "{bad}");
    }
    h.stop().await;
}

/// A browser driver with nothing but `EventSource` and `fetch`: `offers=true` makes it
/// eligible (AVAILABLE once it reports a position over HTTP), offers arrive on the stream,
/// `POST /api/drivers/trips/{tripId}/decline` declines, and closing the stream ends the
/// eligibility (noticed at the stream's next heartbeat: a server learns that a client
/// went away when it writes).
async fn a_driver_takes_offers_over_sse_and_declines_over_http(mode: Mode) {
    let h = Harness::start(mode, &["--sse-heartbeat-ms", "300"]).await;
    let d = unique("d");
    let driver = token(&d, "DRIVER");
    let mut admin = Client::connect(&h.b(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    let url = format!("{}/api/v1/realtime/me/stream?offers=true&tripTypes=PRIVATE&maxDistance=5", h.a());
    let mut s = SseClient::open(url, &driver, None).await.expect("stream");
    s.next_of("connected").await;
    let origin = (48.85, 2.35);
    let (status, body) =
        post_as(format!("{}/api/v1/drivers/me/location", h.b()), &driver, json!({ "lat": origin.0, "lng": origin.1 }))
            .await;
    assert_eq!(status, 200, "{body}");
    let available = admin.expect("driver.availability.changed", "AVAILABLE").await;
    assert_eq!(
        (available["driverId"].as_str(), available["availability"].as_str()),
        (Some(d.as_str()), Some("AVAILABLE"))
    );

    let passenger = token("p1", "PASSENGER");
    let (status, trip) = post_as(format!("{}/api/trips", h.b()), &passenger, trip_body("PRIVATE", 2, origin)).await;
    assert_eq!(status, 201, "{trip}");
    let trip_id = trip["id"].as_str().expect("id").to_string();
    let offer = s.next_of("trip.offer.created").await;
    assert!(offer.id.is_some(), "offers carry ids");
    assert_eq!(offer.data.expect("data")["tripId"], json!(trip_id));

    let decline = |who: String, trip: String| {
        let url = format!("{}/api/drivers/trips/{trip}/decline", h.b());
        async move { call(reqwest::Method::POST, url, Some(&who), None).await }
    };
    assert_eq!(decline(passenger.clone(), trip_id.clone()).await.0, 403);
    assert_eq!(decline(driver.clone(), "nope".into()).await.0, 404);
    let (status, body) = decline(driver.clone(), trip_id.clone()).await;
    assert_eq!((status, body), (200, json!({ "ok": true })));
    let (status, _) =
        call(reqwest::Method::POST, format!("{}/api/drivers/trips/accept/{trip_id}", h.a()), Some(&driver), None).await;
    assert_eq!(status, 403, "a declined offer cannot be accepted");

    drop(s);
    let offline = admin.expect("driver.availability.changed", "OFFLINE once the stream closed").await;
    assert_eq!((offline["driverId"].as_str(), offline["availability"].as_str()), (Some(d.as_str()), Some("OFFLINE")));
    let (status, other) = post_as(format!("{}/api/trips", h.a()), &passenger, trip_body("PRIVATE", 2, origin)).await;
    assert_eq!(status, 201);
    let (_, round) = post_as(
        format!("{}/api/trips/{}/broadcast-offer", h.a(), other["id"].as_str().expect("id")),
        &passenger,
        json!({}),
    )
    .await;
    assert_eq!(round["offeredTo"], json!(0), "no longer eligible: {round}");
    admin.close().await;
    h.stop().await;
}

both_modes!(
    the_user_room_stream_carries_every_event_and_replays_what_was_missed,
    a_driver_takes_offers_over_sse_and_declines_over_http,
);
