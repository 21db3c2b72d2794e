//! A short `fanout` run against an embedded fleetcast node (memory engine, SQLite) must
//! deliver every accepted update to every subscriber, and report it in `--json`.
//!
//! The node is the server binary (`FLEETCAST_BIN`, else the `fleetcast` binary of this test's
//! own build profile, which `cargo test --workspace` builds for the server's tests, else the
//! release one), started on a free loopback port and stopped by pid; the load tool is this
//! package's binary. Without a server binary the test fails and says how to build one.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLEETCAST_BIN") {
        return Some(PathBuf::from(p));
    }
    // target/<profile>/deps/<this test> → target/<profile>/fleetcast
    let same_profile = std::env::current_exe().ok()?.parent()?.parent()?.join("fleetcast");
    let release = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/fleetcast");
    [same_profile, release].into_iter().find(|p| p.exists())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

fn wait_ready(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn short_fanout_against_an_embedded_node_delivers_everything() {
    let server = server_binary().expect(
        "no fleetcast binary: run `cargo test --workspace`, or `cargo build -p fleetcast`, or set FLEETCAST_BIN",
    );
    let dir = std::env::temp_dir().join(format!("fleetcast-lt-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = format!("sqlite://{}?mode=rwc", dir.join("node.db").display());
    let port = free_port();
    let secret = "integration-secret-0123456789";
    let node = Command::new(&server)
        .args(["--bind", &format!("127.0.0.1:{port}"), "--database-url", &db, "--jwt-secret", secret])
        .args(["--location-min-interval-ms", "0", "--location-max-per-minute", "100000", "--log", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the node");
    let _node = Node(node);
    assert!(wait_ready(port, Duration::from_secs(20)), "node on {port} never became ready");

    let out = Command::new(env!("CARGO_BIN_EXE_fleetcast-loadtest"))
        .args(["fanout", "--target", &format!("ws://127.0.0.1:{port}")])
        .args(["--drivers", "4", "--passengers-per-trip", "3", "--rate", "20", "--duration", "2"])
        .args(["--secret", secret, "--database-url", &db, "--polling-share", "0.25", "--json"])
        .output()
        .expect("run the load tool");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "load tool failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json report");
    assert_eq!(report["driversReady"], 4, "{report:#}");
    assert_eq!(report["passengersReady"], 12, "{report:#}");
    assert_eq!(report["pollingPassengers"], 3, "{report:#}");
    let accepted = report["accepted"].as_u64().expect("accepted");
    assert!(accepted >= 30, "only {accepted} updates accepted: {report:#}");
    assert_eq!(report["expectedDeliveries"].as_u64(), Some(accepted * 3), "{report:#}");
    assert_eq!(report["deliveryRatio"], 1.0, "{report:#}");
    // Every delivery is matched to an accepted update (its `updatedAt` echoes the timestamp sent).
    assert_eq!(report["unexpectedDeliveries"], 0, "{report:#}");
    assert_eq!(report["receivedDeliveries"], report["expectedDeliveries"], "{report:#}");
    assert_eq!(report["subscribers"]["complete"], 12, "{report:#}");
    assert_eq!(report["foreignTrip"], 0, "{report:#}");
    assert!(report["e2eMs"]["count"].as_u64() == Some(accepted * 3), "{report:#}");
}
