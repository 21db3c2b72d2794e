//! The publish API and generic rooms (CONTRACT §4 "Publish", §2 `room:join`, `chat:*`):
//! a backend's event reaches users and room members on every node with `eventId` and
//! `emittedAt` added; rooms are joined only with a grant or a room token; typing goes to
//! the others, read receipts to everyone in the chat.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;

async fn post(url: String, token: Option<String>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// CONTRACT §4 (v1.1): a publish body over the bound is 413 `INVALID_PAYLOAD` and nothing is
/// published; one under it is delivered.
async fn a_publish_body_over_the_bound_is_refused_and_not_published(mode: Mode) {
    let h = Harness::start(mode, &["--publish-max-bytes", "4096"]).await;
    let mut member =
        Client::connect(&h.b(), &sign(json!({"sub": "u2", "role": "PASSENGER", "channels": ["chat:big"]}))).await;
    assert_ok(&member.ack("room:join", json!({ "room": "chat:big" })).await);
    let service = Some(token("backend", "SERVICE"));
    let big = json!({ "event": "doc.big", "payload": { "text": "x".repeat(1000), "more": vec!["y".repeat(1000); 4] }, "rooms": ["chat:big"] });
    let (status, body) = post(format!("{}/api/v1/emit", h.a()), service.clone(), big).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("INVALID_PAYLOAD")), "{body}");
    let (status, body) =
        post(format!("{}/api/v1/realtime/orders/o1", h.a()), service.clone(), json!({ "data": "z".repeat(5000) }))
            .await;
    assert_eq!((status, body["error"].as_str()), (413, Some("INVALID_PAYLOAD")), "{body}");
    let small = json!({ "event": "doc.small", "payload": { "text": "x".repeat(1000) }, "rooms": ["chat:big"] });
    let (status, body) = post(format!("{}/api/v1/emit", h.a()), service, small).await;
    assert_eq!((status, body["success"].as_bool()), (202, Some(true)), "{body}");
    let got = member.expect("doc.small", "the member").await;
    assert_eq!(got["text"].as_str().map(str::len), Some(1000));
    assert!(member.next("doc.big", Duration::from_millis(300)).await.is_none(), "the refused event was not published");
    member.close().await;
    h.stop().await;
}

async fn published_events_reach_users_and_room_members_on_every_node(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let mut user = Client::connect(&h.b(), &token("u1", "PASSENGER")).await;
    let mut member =
        Client::connect(&h.b(), &sign(json!({"sub": "u2", "role": "PASSENGER", "channels": ["chat:c1"]}))).await;
    assert_ok(&member.ack("room:join", json!({ "room": "chat:c1" })).await);
    let service = Some(token("backend", "SERVICE"));
    let (status, result) = post(
        format!("{}/api/v1/emit", h.a()),
        service.clone(),
        json!({ "event": "order.shipped", "payload": { "orderId": "o9", "eta": 5 }, "users": ["u1"], "rooms": ["chat:c1"] }),
    )
    .await;
    assert_eq!(status, 202, "{result}");
    assert_eq!(result["success"], json!(true));
    assert_eq!(result["socketio"]["sent"], json!(true));
    assert_eq!(result["sse"], json!({ "sent": false, "connections": 0 }), "no SSE stream follows these rooms");
    let got = user.expect("order.shipped", "user room on the other node").await;
    assert_eq!(got["orderId"], json!("o9"));
    assert_eq!(got["eta"], json!(5));
    assert!(got["eventId"].is_string() && got["emittedAt"].is_string(), "{got}");
    let got = member.expect("order.shipped", "room member").await;
    assert_eq!(got["orderId"], json!("o9"));
    // The order shortcut reaches `order:{id}` members.
    let mut watcher =
        Client::connect(&h.b(), &sign(json!({"sub": "u3", "role": "BUSINESS", "channels": ["order:o1"]}))).await;
    assert_ok(&watcher.ack("room:join", json!({ "room": "order:o1" })).await);
    let (status, _) =
        post(format!("{}/api/v1/realtime/orders/o1", h.a()), service.clone(), json!({ "data": { "state": "PACKED" } }))
            .await;
    assert_eq!(status, 202);
    let got = watcher.expect("order_update", "order watcher").await;
    assert_eq!(got["orderId"], json!("o1"));
    assert_eq!(got["data"], json!({ "state": "PACKED" }));
    let (status, _) =
        post(format!("{}/api/v1/realtime/runs/r1", h.a()), Some(token("adm", "ADMIN")), json!({ "data": 1 })).await;
    assert_eq!(status, 202, "ADMIN may publish too");
    // Nobody else received anything.
    assert!(user.next("order_update", Duration::from_millis(300)).await.is_none());
    for c in [user, member, watcher] {
        c.close().await;
    }
    h.stop().await;
}

async fn publishing_is_for_backends_and_bad_calls_say_why(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let url = format!("{}/api/v1/emit", h.a());
    let good = json!({ "event": "x.y", "payload": {}, "users": ["u1"] });
    assert_eq!(post(url.clone(), None, good.clone()).await.1["error"], json!("NO_TOKEN"));
    let (status, body) = post(url.clone(), Some(token("p1", "PASSENGER")), good.clone()).await;
    assert_eq!((status, body["error"].clone()), (403, json!("FORBIDDEN")));
    let svc = Some(token("backend", "SERVICE"));
    for bad in [
        json!({ "event": "x", "payload": [1], "users": ["u1"] }),
        json!({ "event": "", "payload": {}, "users": ["u1"] }),
        json!({ "event": "x", "payload": {} }),
        json!({ "payload": {}, "users": ["u1"] }),
        json!({ "event": "x", "payload": {}, "rooms": [""] }),
    ] {
        let (status, body) = post(url.clone(), svc.clone(), bad.clone()).await;
        assert_eq!((status, body["error"].clone()), (400, json!("INVALID_PAYLOAD")), "{bad}");
    }
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token("backend", "SERVICE"))
        .body("not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    h.stop().await;
}

async fn rooms_need_a_grant_or_a_room_token(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let c =
        Client::connect(&h.a(), &sign(json!({"sub": "u1", "role": "PASSENGER", "channels": ["chat:granted"]}))).await;
    assert_err(&c.ack("room:join", json!({ "room": "chat:other" })).await, "FORBIDDEN");
    assert_err(&c.ack("room:join", json!({ "room": "" })).await, "INVALID_PAYLOAD");
    assert_err(&c.ack("room:join", json!({})).await, "INVALID_PAYLOAD");
    assert_ok(&c.ack("room:join", json!({ "room": "chat:granted" })).await);
    let room_token = sign(json!({"sub": "u1", "room": "chat:other"}));
    assert_ok(&c.ack("room:join", json!({ "room": "chat:other", "token": room_token })).await);
    let wrong_room = sign(json!({"sub": "u1", "room": "chat:third"}));
    assert_err(&c.ack("room:join", json!({ "room": "chat:fourth", "token": wrong_room })).await, "FORBIDDEN");
    let someone_elses = sign(json!({"sub": "u9", "room": "chat:fourth"}));
    assert_err(&c.ack("room:join", json!({ "room": "chat:fourth", "token": someone_elses })).await, "FORBIDDEN");
    assert_ok(&c.ack("room:leave", json!({ "room": "chat:other" })).await);
    c.close().await;
    h.stop().await;
}

async fn typing_goes_to_the_others_and_read_receipts_to_everyone(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let grant = |sub: &str| sign(json!({"sub": sub, "role": "PASSENGER", "channels": ["chat:c1"]}));
    let mut alice = Client::connect(&h.a(), &grant("alice")).await;
    let mut bob = Client::connect(&h.b(), &grant("bob")).await;
    let outsider = Client::connect(&h.b(), &grant("carol")).await;
    assert_ok(&alice.ack("room:join", json!({ "room": "chat:c1" })).await);
    assert_ok(&bob.ack("room:join", json!({ "room": "chat:c1" })).await);
    assert_err(&outsider.ack("chat:typing", json!({ "chatId": "c1", "isTyping": true })).await, "FORBIDDEN");
    assert_ok(&alice.ack("chat:typing", json!({ "chatId": "c1", "isTyping": true })).await);
    let t = bob.expect("typing", "bob sees alice typing").await;
    assert_eq!(
        (t["chatId"].clone(), t["userId"].clone(), t["isTyping"].clone()),
        (json!("c1"), json!("alice"), json!(true))
    );
    assert!(alice.next("typing", Duration::from_millis(300)).await.is_none(), "the sender gets no echo");
    assert_ok(&bob.ack("chat:read", json!({ "chatId": "c1", "messageId": "m7" })).await);
    for c in [&mut alice, &mut bob] {
        let r = c.expect("message.read", "read receipt").await;
        assert_eq!((r["messageId"].clone(), r["userId"].clone()), (json!("m7"), json!("bob")));
        assert!(r["readAt"].is_string() && r["eventId"].is_string(), "{r}");
    }
    assert_err(&bob.ack("chat:read", json!({ "chatId": "c1" })).await, "INVALID_PAYLOAD");
    for c in [alice, bob, outsider] {
        c.close().await;
    }
    h.stop().await;
}

/// One emission to several rooms a socket is in (and to its user) reaches it once.
async fn one_emission_reaches_a_socket_once_whatever_rooms_it_is_in(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let grants = json!({"sub": "u7", "role": "PASSENGER", "channels": ["chat:a", "chat:b"]});
    let mut both = Client::connect(&h.b(), &sign(grants)).await;
    assert_ok(&both.ack("room:join", json!({ "room": "chat:a" })).await);
    assert_ok(&both.ack("room:join", json!({ "room": "chat:b" })).await);
    let mut only_b =
        Client::connect(&h.a(), &sign(json!({"sub": "u8", "role": "PASSENGER", "channels": ["chat:b"]}))).await;
    assert_ok(&only_b.ack("room:join", json!({ "room": "chat:b" })).await);
    let (status, _) = post(
        format!("{}/api/v1/emit", h.a()),
        Some(token("backend", "SERVICE")),
        json!({ "event": "notification", "payload": { "id": "n1", "title": "Hi", "body": "x", "level": "info" },
                "rooms": ["chat:a", "chat:b"], "users": ["u7"] }),
    )
    .await;
    assert_eq!(status, 202);
    let got = both.expect("notification", "member of both rooms").await;
    assert_eq!(got["id"], json!("n1"));
    assert_eq!(got["level"], json!("info"));
    assert!(both.next("notification", Duration::from_millis(500)).await.is_none(), "received once");
    only_b.expect("notification", "member of one room").await;
    // A notification without id gets one and defaults its level; a bad one says why.
    let service = Some(token("backend", "SERVICE"));
    let url = format!("{}/api/v1/emit", h.a());
    let body = json!({ "event": "notification", "payload": { "title": "Trip soon", "body": "in 5 min", "data": { "k": 1 } }, "users": ["u8"] });
    assert_eq!(post(url.clone(), service.clone(), body).await.0, 202);
    let n = only_b.expect("notification", "user room").await;
    assert!(n["id"].as_str().is_some_and(|id| !id.is_empty()), "{n}");
    assert_eq!((n["level"].as_str(), n["data"]["k"].as_i64()), (Some("info"), Some(1)));
    for bad in [json!({ "body": "no title" }), json!({ "title": "t", "body": "b", "level": "loud" })] {
        let (status, err) =
            post(url.clone(), service.clone(), json!({ "event": "notification", "payload": bad, "users": ["u8"] }))
                .await;
        assert_eq!((status, err["error"].as_str()), (400, Some("INVALID_PAYLOAD")), "{err}");
    }
    h.stop().await;
}

both_modes!(
    a_publish_body_over_the_bound_is_refused_and_not_published,
    one_emission_reaches_a_socket_once_whatever_rooms_it_is_in,
    published_events_reach_users_and_room_members_on_every_node,
    publishing_is_for_backends_and_bad_calls_say_why,
    rooms_need_a_grant_or_a_room_token,
    typing_goes_to_the_others_and_read_receipts_to_everyone,
);
