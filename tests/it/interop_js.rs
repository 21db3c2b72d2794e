//! Interop with the official JavaScript `socket.io-client` (installed from npm into
//! `tests/js` by the test command): auth errors, acks and cross-node delivery on both
//! transports, against a two-node cluster.

use std::process::Command;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_js_client_interoperates_on_both_transports() {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        js.join("node_modules/socket.io-client").exists(),
        "socket.io-client missing: run `npm ci --prefix tests/js` (the README test command does)"
    );
    let h = Harness::start(Mode::Cluster, &["--location-min-interval-ms", "0"]).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let out = Command::new("node")
        .arg(js.join("interop.mjs"))
        .env("URL_A", h.a())
        .env("URL_B", h.b())
        .env("TRIP", &trip)
        .env("DRIVER_TOKEN", token("d1", "DRIVER"))
        .env("PASSENGER_TOKEN", token("p1", "PASSENGER"))
        .env("BAD_TOKEN", sign(json!({"sub": "x", "role": "NOPE"})))
        .output()
        .expect("node on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "js interop failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("interop ok"), "{stdout}");
    h.stop().await;
}
