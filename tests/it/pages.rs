//! The pages (`/console`, `/driver`, `/track/{tripId}`) and what they stand on: served from
//! the binary with their headers; the development sign-in only on an embedded node with
//! the public secret; the ticket QR code, a trip's bookings and the trip inspector with
//! their access rules; and the whole of it in Debian's Chromium (`tests/js/pages.mjs`,
//! driven by playwright-core), which also takes the README's screenshots.

use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

fn plan(title: &str) -> Value {
    json!({
        "title": title, "tripType": "SHARED", "status": "PUBLISHED", "totalSeats": 4, "pricePerSeat": 9.0,
        "origin": {"name": "A", "lat": 52.52, "lng": 13.40}, "destination": {"name": "B", "lat": 52.50, "lng": 13.42},
        "departureTime": "2030-01-01T08:00:00Z",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_and_their_files_are_served_from_the_binary() {
    let h = Harness::start(Mode::Embedded, &[]).await;
    let http = reqwest::Client::new();
    for (path, kind) in [
        ("/", "text/html"),
        ("/console", "text/html"),
        ("/driver", "text/html"),
        ("/track/t1", "text/html"),
        ("/web/console.js", "text/javascript"),
        ("/web/app.css", "text/css"),
    ] {
        let r = http.get(format!("{}{path}", h.a())).send().await.expect("get");
        assert_eq!(r.status(), 200, "{path}");
        let headers = r.headers().clone();
        assert!(headers["content-type"].to_str().unwrap_or("").starts_with(kind), "{path}: {headers:?}");
        let csp = headers["content-security-policy"].to_str().unwrap_or("");
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!r.text().await.expect("body").is_empty(), "{path}");
    }
    let r = http.get(format!("{}/web/../Cargo.toml", h.a())).send().await.expect("get");
    assert_eq!(r.status(), 404);
    let r = http.get(format!("{}/web/nothing.js", h.a())).send().await.expect("get");
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "NOT_FOUND");
    // This node has its own secret: no development sign-in.
    let (status, cfg) = call(Method::GET, format!("{}/web/config.json", h.a()), None, None).await;
    assert_eq!((status, cfg["devSignIn"].as_bool(), cfg["tileUrl"].is_null()), (200, Some(false), true), "{cfg}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_tile_server_is_named_to_the_pages_and_allowed_by_their_policy() {
    let h = Harness::start(Mode::Embedded, &["--map-tile-url", "https://tiles.example.org/{z}/{x}/{y}.png"]).await;
    let (_, cfg) = call(Method::GET, format!("{}/web/config.json", h.a()), None, None).await;
    assert_eq!(cfg["tileUrl"], "https://tiles.example.org/{z}/{x}/{y}.png");
    let r = reqwest::get(format!("{}/console", h.a())).await.expect("get");
    let csp = r.headers()["content-security-policy"].to_str().unwrap_or("").to_string();
    assert!(csp.contains("img-src 'self' data: https://tiles.example.org"), "{csp}");
    h.stop().await;
    assert!(
        fleetcast::config::Config::from_args(["--map-tile-url", "https://tiles.example.org/x.png"]).is_err(),
        "a template without {{z}}/{{x}}/{{y}} is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_sign_in_exists_only_on_an_embedded_node_with_the_public_secret() {
    // A node with its own secret: the route does not exist.
    let h = Harness::start(Mode::Embedded, &[]).await;
    let body = json!({"sub": "d1", "role": "DRIVER"});
    let (status, got) = call(Method::POST, format!("{}/api/dev/token", h.a()), None, Some(body.clone())).await;
    assert_eq!((status, got["error"].as_str()), (404, Some("NOT_FOUND")), "{got}");
    h.stop().await;

    // An embedded node on the development secret mints short-lived tokens it accepts.
    let db = std::env::temp_dir().join(format!("{}.db", unique("fcdev")));
    let cfg = fleetcast::config::Config::from_args([
        "--bind".to_string(),
        "127.0.0.1:0".into(),
        "--database-url".into(),
        format!("sqlite://{}?mode=rwc", db.display()),
    ])
    .expect("embedded config");
    let node = fleetcast::start(cfg).await.expect("node");
    let url = format!("http://{}", node.addr);
    let (status, got) = call(
        Method::POST,
        format!("{url}/api/dev/token"),
        None,
        Some(json!({"sub": "d1", "role": "DRIVER", "name": "Dana", "tenant": "acme", "ttlSecs": 600})),
    )
    .await;
    assert_eq!(status, 200, "{got}");
    let token = got["token"].as_str().expect("token").to_string();
    let exp = got["exp"].as_i64().expect("exp");
    let now = chrono::Utc::now().timestamp();
    assert!((now + 590..=now + 610).contains(&exp), "exp {exp}");
    let c = Client::connect(&url, &token).await;
    assert_ok(&c.ack("heartbeat", json!({})).await);
    c.close().await;
    for bad in [
        json!({"sub": "", "role": "DRIVER"}),
        json!({"sub": "d1", "role": "PILOT"}),
        json!({"sub": "d1", "role": "DRIVER", "ttlSecs": 86_400}),
        json!({"role": "DRIVER"}),
    ] {
        let (status, got) = call(Method::POST, format!("{url}/api/dev/token"), None, Some(bad.clone())).await;
        assert_eq!((status, got["error"].as_str()), (400, Some("INVALID_PAYLOAD")), "{bad}: {got}");
    }
    let (_, cfg) = call(Method::GET, format!("{url}/web/config.json"), None, None).await;
    assert_eq!(cfg["devSignIn"], true);
    node.shutdown().await;
    let _ = std::fs::remove_file(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_qr_code_and_a_trips_bookings_follow_the_booking_rules() {
    for mode in [Mode::Embedded, Mode::Cluster] {
        let h = Harness::start(mode, &[]).await;
        let (status, trip) =
            call(Method::POST, format!("{}/api/trips", h.a()), Some(&token("biz", "BUSINESS")), Some(plan("x"))).await;
        assert_eq!(status, 201, "{trip}");
        let id = trip["id"].as_str().expect("id").to_string();
        let book = |who: &str| {
            let url = format!("{}/api/bookings", h.a());
            let t = token(who, "PASSENGER");
            let id = id.clone();
            async move { call(Method::POST, url, Some(&t), Some(json!({"tripId": id, "seatsBooked": 1}))).await }
        };
        let (_, mine) = book("p1").await;
        let (_, theirs) = book("p2").await;
        let mine_id = mine["id"].as_str().expect("booking id");

        let (status, list) =
            call(Method::GET, format!("{}/api/trips/{id}/bookings", h.a()), Some(&token("p1", "PASSENGER")), None)
                .await;
        assert_eq!(status, 200, "{list}");
        let ids: Vec<&str> =
            list["bookings"].as_array().expect("list").iter().filter_map(|b| b["id"].as_str()).collect();
        assert_eq!(ids, vec![mine_id], "a passenger sees their own bookings only");
        let (_, all) =
            call(Method::GET, format!("{}/api/trips/{id}/bookings", h.a()), Some(&token("biz", "BUSINESS")), None)
                .await;
        assert_eq!(all["bookings"].as_array().map(Vec::len), Some(2), "{all}");
        let (status, _) =
            call(Method::GET, format!("{}/api/trips/{id}/bookings", h.a()), Some(&token("p3", "PASSENGER")), None)
                .await;
        assert_eq!(status, 403);
        let (status, _) =
            call(Method::GET, format!("{}/api/trips/nope/bookings", h.a()), Some(&token("biz", "ADMIN")), None).await;
        assert_eq!(status, 404);

        // The QR code: the booking's passenger (token in the query, as an <img> sends it).
        let r = reqwest::get(format!("{}/api/bookings/{mine_id}/ticket.svg?token={}", h.a(), token("p1", "PASSENGER")))
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/svg+xml");
        let svg = r.text().await.expect("svg");
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{}", &svg[..80.min(svg.len())]);
        let theirs_id = theirs["id"].as_str().expect("id");
        for (who, role, booking, want) in [
            ("p1", "PASSENGER", theirs_id, 403),
            ("biz", "BUSINESS", theirs_id, 200),
            ("p1", "PASSENGER", "unknown-booking", 404),
        ] {
            let r = reqwest::get(format!("{}/api/bookings/{booking}/ticket.svg?token={}", h.a(), token(who, role)))
                .await
                .expect("get");
            assert_eq!(r.status(), want, "{who} {booking}");
        }
        let other_tenant = sign(json!({"sub": "p1", "role": "PASSENGER", "tenant": "other"}));
        let r = reqwest::get(format!("{}/api/bookings/{mine_id}/ticket.svg?token={other_tenant}", h.a()))
            .await
            .expect("get");
        assert_eq!(r.status(), 404, "another tenant's booking does not exist");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trip_inspector_shows_status_log_bookings_position_and_recent_events() {
    for mode in [Mode::Embedded, Mode::Cluster] {
        let h = Harness::start(mode, &["--location-min-interval-ms", "0"]).await;
        let trip = unique("t");
        h.insert_trip("default", &trip, Some("d1")).await;
        h.exec_on_trip("UPDATE trips SET status = 'IN_PROGRESS' WHERE id = $1", &trip).await;
        h.insert_booking("default", &trip, "p1").await;
        let d = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
        assert_ok(&d.ack("driver:connect", json!({"tripId": trip})).await);
        assert_ok(&d.ack("driver:location:update", json!({"tripId": trip, "lat": 52.5, "lng": 13.4})).await);
        let (status, _) = call(
            Method::PUT,
            format!("{}/api/drivers/trips/{trip}/status", h.a()),
            Some(&token("d1", "DRIVER")),
            Some(json!({"status": "DEPARTED", "notes": "all aboard"})),
        )
        .await;
        assert_eq!(status, 200);
        let url = format!("{}/api/v1/admin/trips/{trip}", h.b());
        let (status, got) = call(Method::GET, url.clone(), Some(&token("biz", "BUSINESS")), None).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["trip"]["status"], "DEPARTED", "{got}");
        let log = got["statusLog"].as_array().expect("log");
        let last = log.last().expect("a status change");
        assert_eq!(
            (last["newStatus"].as_str(), last["notes"].as_str()),
            (Some("DEPARTED"), Some("all aboard")),
            "{got}"
        );
        assert_eq!(got["bookings"].as_array().map(Vec::len), Some(1));
        assert_eq!(got["location"]["lat"], 52.5, "{got}");
        let events: Vec<&str> =
            got["recentEvents"].as_array().expect("events").iter().filter_map(|e| e["event"].as_str()).collect();
        assert!(events.contains(&"trip.status.updated"), "{events:?}");
        assert!(got["recentEvents"][0]["eventId"].as_str().is_some_and(|i| i.contains('-')), "{got}");
        for (who, role, want) in [("p1", "PASSENGER", 403), ("d1", "DRIVER", 403), ("svc", "SERVICE", 403)] {
            let (status, _) = call(Method::GET, url.clone(), Some(&token(who, role)), None).await;
            assert_eq!(status, want, "{role}");
        }
        let (status, _) =
            call(Method::GET, format!("{}/api/v1/admin/trips/nope", h.a()), Some(&token("a", "ADMIN")), None).await;
        assert_eq!(status, 404);
        d.close().await;
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_work_in_a_real_browser() {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/playwright-core").exists(),
        "playwright-core missing: run `npm ci --prefix tests/js` (the README test command does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "{chromium} missing: the README test command installs chromium");
    let h = Harness::start(Mode::Embedded, &["--offer-deadline-ms", "20000"]).await;
    let driver = unique("d");
    let shots = std::env::var("FLEETCAST_SCREENSHOTS").unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pages").display().to_string()
    });
    let out = Command::new("node")
        .arg(js.join("pages.mjs"))
        .env("URL", h.a())
        .env("CHROMIUM", &chromium)
        .env("DRIVER_ID", &driver)
        .env("DRIVER_TOKEN", sign(json!({"sub": driver, "role": "DRIVER", "name": "Dana Driver"})))
        .env("PASSENGER_TOKEN", sign(json!({"sub": unique("p"), "role": "PASSENGER", "name": "Pia Passenger"})))
        .env("ADMIN_TOKEN", sign(json!({"sub": "ops", "role": "ADMIN", "name": "On-call"})))
        .env("SERVICE_TOKEN", token("backend", "SERVICE"))
        .env("SCREENSHOTS", &shots)
        .output()
        .expect("node on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser test failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("pages ok"), "{stdout}");
    h.stop().await;
}
