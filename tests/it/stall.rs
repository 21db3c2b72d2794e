//! A client that stops reading is cut off (README "Slow and stalled clients"): the official
//! `socket.io-client` and an npm `EventSource` of one user, frozen with `SIGSTOP` while large
//! events keep coming for them, are disconnected once the node's writes to them have made
//! no progress for `--write-stall-timeout-ms`: the node stops counting them, counts the
//! cut-offs, and a healthy subscriber of the same events gets every one meanwhile.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

async fn stats(h: &Harness, admin: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/stats", h.a()))
        .bearer_auth(admin)
        .send()
        .await
        .expect("stats");
    r.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(js.join("node_modules/socket.io-client").exists(), "run `npm ci --prefix tests/js`");
    let h = Harness::start(
        Mode::Embedded,
        &["--write-stall-timeout-ms", "2000", "--publish-max-bytes", "1048576", "--http-rate-exempt-service"],
    )
    .await;
    let tenant = unique("stall");
    let as_user = |sub: &str, role: &str| sign(json!({ "sub": sub, "role": role, "tenant": tenant }));
    let (admin, service) = (as_user("adm", "ADMIN"), as_user("backend", "SERVICE"));
    let order = unique("o");
    let mut slow = tokio::process::Command::new("node")
        .arg(js.join("stall.mjs"))
        .env("URL_A", h.a())
        .env("ORDER", &order)
        .env("TOKEN", as_user("slow", "BUSINESS"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node on PATH");
    let mut lines = BufReader::new(slow.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    assert!(matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"), "slow client not ready: {ready:?}");
    let mut fast = Client::connect(&h.a(), &as_user("fast", "BUSINESS")).await;
    let before = stats(&h, &admin).await;
    assert_eq!(before["node"]["connections"], json!(2), "{before}");
    assert_eq!(before["node"]["sseStreams"], json!(1), "{before}");

    // The slow client freezes; half-megabyte events keep coming to both users and the order.
    let pid = slow.id().expect("pid").to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
    // Random hex, so the SSE stream's gzip cannot shrink it much.
    let filler: Vec<String> =
        (0..500).map(|_| (0..31).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect()).collect();
    let http = reqwest::Client::new();
    let frozen = Instant::now();
    let mut sent = 0u32;
    let cut_after = loop {
        for (url, body) in [
            (
                format!("{}/api/v1/emit", h.a()),
                json!({ "event": "fleet.memo", "payload": { "n": sent, "filler": filler }, "users": ["slow", "fast"] }),
            ),
            (format!("{}/api/v1/realtime/orders/{order}", h.a()), json!({ "data": { "n": sent, "filler": filler } })),
        ] {
            let r = http.post(url).bearer_auth(&service).json(&body).send().await.expect("publish");
            assert_eq!(r.status(), 202);
        }
        // The healthy subscriber gets each event while the other one is stuck.
        let got = fast.next("fleet.memo", Duration::from_secs(5)).await.expect("fast subscriber starved");
        assert_eq!(got["n"], json!(sent));
        sent += 1;
        let now = stats(&h, &admin).await;
        if now["node"]["connections"] == json!(1) && now["node"]["sseStreams"] == json!(0) {
            break frozen.elapsed();
        }
        assert!(frozen.elapsed() < Duration::from_secs(30), "not cut off after {sent} events: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Not before the stall timeout, and not long after the buffers filled.
    assert!(cut_after >= Duration::from_secs(2), "cut off after {cut_after:?}");
    let metrics = http.get(format!("{}/metrics", h.a())).send().await.expect("metrics").text().await.expect("text");
    let stalled = metric_sum(&metrics, "fleetcast_connections_stalled_total");
    assert!(stalled >= 2.0, "stalled connections counted: {stalled}");
    // And the socket's disconnect says why.
    let cut: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("fleetcast_disconnects_total") && l.contains(r#"reason="transport error""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(cut >= 1.0, "the cut socket's disconnect is not counted by reason");
    // The healthy one is still served.
    assert_ok(&fast.ack("heartbeat", json!({})).await);
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = slow.kill().await;
    fast.close().await;
    h.stop().await;
}
