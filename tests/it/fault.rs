//! Degraded mode (issue: node foundation, §8): with Redis gone a node keeps its sockets,
//! answers acks with `UNAVAILABLE` within the deadline and reports not ready; when Redis
//! returns, cross-node delivery works again within 2 s without restarting anything. With
//! Redis frozen (a hang, not a refusal), an `UNAVAILABLE` ack is true: what it answered
//! for never runs when Redis resumes. The tests run their own `redis-server` on a free port
//! and signal it by PID.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// A `redis-server` of the test's own, on a free port, in a temp directory.
struct PrivateRedis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
    extra: Vec<String>,
}

impl PrivateRedis {
    /// Starts one with extra `redis-server` arguments.
    fn start(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(unique("fcredis"));
        std::fs::create_dir_all(&dir).expect("dir");
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let port = free_port();
        PrivateRedis { child: Self::spawn(port, &dir, &extra), port, dir, extra }
    }

    fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "private redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again (empty, as after a real restart) on the same port.
    fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(self.port, &self.dir, &self.extra);
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `SIGSTOP` (`freeze`) or `SIGCONT`.
    fn signal(&self, freeze: bool) {
        let sig = if freeze { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().expect("kill");
        assert!(ok.success(), "kill {sig}");
    }

    /// `redis-cli` against it.
    fn cli(&self, args: &[&str]) -> String {
        let out =
            Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_degrades_then_recovers_without_restart() {
    let mut redis = PrivateRedis::start(&[]);
    let url = redis.url();
    let h = Harness::start_with_redis(Mode::Cluster, &["--location-min-interval-ms", "0"], &url).await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    passenger.expect("server:location:update", "before the outage").await;

    redis.kill();
    let http = reqwest::Client::new();
    // Acks answer UNAVAILABLE, within the 5 s ack deadline.
    let started = Instant::now();
    let ack = driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 2, "lng": 2 })).await;
    assert_err(&ack, "UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(5), "ack took {:?}", started.elapsed());
    let ack = driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await;
    assert_err(&ack, "UNAVAILABLE");
    // Not ready, but alive, and sockets stay connected and usable.
    let r = http.get(format!("{}/readyz", h.b())).send().await.expect("readyz");
    assert_eq!(r.status(), 503);
    let r = http.get(format!("{}/healthz", h.b())).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
    assert_ok(&passenger.ack("heartbeat", json!({})).await);
    assert_ok(&driver.ack("heartbeat", json!({})).await);

    // Redis returns (empty, as after a real restart).
    redis.restart();
    let back = Instant::now();
    passenger.drain();
    let mut delivered = None;
    while back.elapsed() < Duration::from_secs(5) {
        let ack = driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 3, "lng": 3 })).await;
        if ack["ok"] == json!(true)
            && let Some(loc) = passenger.next("server:location:update", Duration::from_millis(200)).await
        {
            delivered = Some((back.elapsed(), loc));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (after, loc) = delivered.expect("cross-node delivery resumed");
    assert_eq!(loc["lat"], json!(3.0));
    assert!(after <= Duration::from_secs(2), "delivery resumed only after {after:?}");
    // And the nodes report ready again.
    let mut ready = false;
    for _ in 0..30 {
        if http.get(format!("{}/readyz", h.b())).send().await.expect("readyz").status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "node B not ready after Redis returned");
    driver.close().await;
    passenger.close().await;
    h.stop().await;
    redis.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_acked_unavailable_while_redis_is_frozen_never_run_later() {
    let mut redis = PrivateRedis::start(&[]);
    let url = redis.url();
    let h = Harness::start_with_redis(Mode::Cluster, &["--location-min-interval-ms", "1000"], &url).await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    passenger.expect("server:location:update", "before the freeze").await;
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await);
    passenger.expect("server:trip:status", "before the freeze").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Frozen: each write times out and is answered UNAVAILABLE within the ack deadline...
    redis.signal(true);
    let frozen = Instant::now();
    for (event, payload) in [
        ("driver:location:update", json!({ "tripId": trip, "lat": 5, "lng": 5 })),
        ("driver:status", json!({ "tripId": trip, "status": "PAUSED" })),
        ("driver:location:update", json!({ "tripId": trip, "lat": 6, "lng": 6 })),
        ("driver:status", json!({ "tripId": trip, "status": "EMERGENCY" })),
    ] {
        let started = Instant::now();
        assert_err(&driver.ack(event, payload).await, "UNAVAILABLE");
        assert!(started.elapsed() < Duration::from_secs(5), "{event} ack took {:?}", started.elapsed());
    }
    // ...and stays frozen a while after the last of them (a fork, a slow script, a stall).
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.signal(false);
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..50 {
        let a = http.get(format!("{}/readyz", h.a())).send().await.expect("readyz").status();
        let b = http.get(format!("{}/readyz", h.b())).send().await.expect("readyz").status();
        if a == 200 && b == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "nodes not ready after Redis resumed ({:?} after the freeze)", frozen.elapsed());

    // The refused updates did not count in the driver's window: the next one is accepted,
    // and it is the first position the passenger sees after the freeze.
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 9, "lng": 9 })).await);
    let loc = passenger.expect("server:location:update", "after the freeze").await;
    assert_eq!(loc["lat"], json!(9.0), "a location acked UNAVAILABLE was delivered late: {loc}");
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "ENDED" })).await);
    let status = passenger.expect("server:trip:status", "after the freeze").await;
    assert_eq!(status["status"], json!("ENDED"), "a status acked UNAVAILABLE was delivered late: {status}");
    // Nor were they recorded: the trip room's history holds the two acked statuses only.
    let key = format!("{}:hist:default:{{trip:{trip}:subscribers}}", h.prefix);
    let history = redis.cli(&["XRANGE", &key, "-", "+"]);
    assert!(history.contains("STARTED") && history.contains("ENDED"), "{history}");
    assert!(!history.contains("PAUSED") && !history.contains("EMERGENCY"), "{history}");
    driver.close().await;
    passenger.close().await;
    h.stop().await;
    redis.kill();
}

/// Node B's readiness and, once ready again, whether a location reaches the passenger.
async fn delivery_resumes(h: &Harness, driver: &Client, passenger: &mut Client, trip: &str, lat: f64) -> Duration {
    let http = reqwest::Client::new();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(5), "delivery did not resume within 5 s");
        let ready = http.get(format!("{}/readyz", h.b())).send().await.expect("readyz").status() == 200;
        if ready {
            passenger.drain();
            let ack = driver.ack("driver:location:update", json!({ "tripId": trip, "lat": lat, "lng": 1 })).await;
            if ack["ok"] == json!(true)
                && let Some(loc) = passenger.next("server:location:update", Duration::from_millis(300)).await
            {
                assert_eq!(loc["lat"], json!(lat));
                return start.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_connection_cut_by_redis_is_noticed_restored_and_counted() {
    // A small pub/sub output buffer: a burst of large events is more than Redis will hold
    // for a subscriber, as in production at the default limit under load.
    let redis = PrivateRedis::start(&["--client-output-buffer-limit", "pubsub 256kb 128kb 1"]);
    let url = redis.url();
    let h = Harness::start_with_redis(
        Mode::Cluster,
        &["--location-min-interval-ms", "0", "--publish-max-bytes", "1048576", "--http-rate-exempt-service"],
        &url,
    )
    .await;
    let (trip, driver, mut passenger) = h.watched_trip().await;
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    passenger.expect("server:location:update", "before the cut").await;
    let http = reqwest::Client::new();
    let count = || async {
        let text = http.get(format!("{}/metrics", h.b())).send().await.expect("m").text().await.expect("text");
        metric_sum(&text, "fleetcast_pubsub_resubscribed_total")
    };
    let before = count().await;

    // 1. Redis kills every subscriber connection.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).trim().parse::<u32>().unwrap_or(0);
    assert!(killed >= 2, "CLIENT KILL TYPE pubsub killed {killed}");
    let took = delivery_resumes(&h, &driver, &mut passenger, &trip, 2.0).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let after_kill = count().await;
    assert!(after_kill > before, "the gap was not counted ({before} → {after_kill})");

    let subscribers = || {
        let list = redis.cli(&["CLIENT", "LIST", "TYPE", "pubsub"]);
        let mut ids: Vec<String> =
            list.split_whitespace().filter_map(|f| f.strip_prefix("id=").map(str::to_string)).collect();
        ids.sort();
        ids
    };
    // Both nodes re-subscribe on their own after the kill; node A (no member that this test
    // watches) may take a moment longer than the delivery checked above.
    let mut before_burst = subscribers();
    for _ in 0..30 {
        if before_burst.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        before_burst = subscribers();
    }
    assert_eq!(before_burst.len(), 2, "{before_burst:?}");

    // 2. The real thing: a burst of 900 KB events to the passenger's user room passes the
    // subscriber's output-buffer limit, and Redis closes node B's subscriber connection.
    let filler: Vec<String> =
        (0..900).map(|_| (0..31).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect()).collect();
    for n in 0..5 {
        let r = http
            .post(format!("{}/api/v1/emit", h.a()))
            .bearer_auth(token("backend", "SERVICE"))
            .json(&json!({ "event": "fleet.memo", "payload": { "n": n, "filler": filler }, "users": ["p1"] }))
            .send()
            .await
            .expect("emit");
        assert_eq!(r.status(), 202);
    }
    let took = delivery_resumes(&h, &driver, &mut passenger, &trip, 3.0).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let mut counted = false;
    for _ in 0..20 {
        if count().await > after_kill {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(counted, "the output-buffer cut was not noticed");
    let after_burst = subscribers();
    assert!(
        before_burst.iter().any(|id| !after_burst.contains(id)),
        "Redis did not cut a subscriber: {before_burst:?} → {after_burst:?}"
    );
    driver.close().await;
    passenger.close().await;
    h.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_answers_every_event_it_took() {
    let redis = PrivateRedis::start(&[]);
    let url = redis.url();
    let mut h = Harness::start_with_redis(
        Mode::Cluster,
        &["--location-min-interval-ms", "0", "--max-connections-per-user", "40"],
        &url,
    )
    .await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    let doomed = h.add_node().await;
    // Twenty sockets of the driver, one event in flight on each: rust_socketio draws ack ids
    // at random from 0..999 and mixes up two outstanding acks with the same id (CRATE-NOTES).
    let mut drivers = Vec::new();
    for _ in 0..20 {
        drivers.push(Client::connect(&h.url(doomed), &token("d1", "DRIVER")).await);
    }
    assert_ok(&drivers[0].ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    // Redis hangs, so every update the node takes stays in flight for the Redis timeout; the
    // node is told to shut down meanwhile.
    redis.signal(true);
    let acks = futures_util::future::join_all(
        drivers
            .iter()
            .enumerate()
            .map(|(i, d)| d.ack("driver:location:update", json!({ "tripId": trip, "lat": 2 + i, "lng": 1 }))),
    );
    let node = h.nodes.remove(doomed);
    let drain = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.shutdown().await;
    };
    let (acks, ()) = tokio::join!(acks, drain);
    // Every one was answered before its socket closed (the harness panics on a lost ack),
    // truthfully: none was applied.
    for a in &acks {
        assert_err(a, "UNAVAILABLE");
    }
    redis.signal(false);
    for d in drivers {
        d.close().await;
    }
    h.stop().await;
}

/// A TCP relay between one node and Redis that a test can partition: while partitioned it
/// forwards nothing in either direction (bytes wait, as behind dropped packets that TCP
/// retransmits), and delivers what waited when healed. Taken down, it closes every
/// connection and refuses new ones until it is up again (Redis unreachable for the node).
struct Partition {
    port: u16,
    cut: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
    down: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Partition {
    async fn start(to: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let down = std::sync::Arc::new(tokio::sync::watch::channel(false).0);
        let (tx, dx) = (cut.clone(), down.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *dx.borrow() {
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(relay(cr, sw, tx.subscribe(), dx.subscribe()));
                tokio::spawn(relay(sr, cw, tx.subscribe(), dx.subscribe()));
            }
        });
        Partition { port, cut, down }
    }

    fn set(&self, partitioned: bool) {
        self.cut.send_replace(partitioned);
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: tokio::sync::watch::Receiver<bool>,
    mut down: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    let relay = async {
        loop {
            if cut.wait_for(|c| !*c).await.is_err() {
                return;
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Bytes read just as the partition begins wait for it to heal.
            if cut.wait_for(|c| !*c).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Dropping both halves closes the connection.
    tokio::select! {
        _ = relay => {}
        _ = down.wait_for(|d| *d) => {}
    }
}

/// Waits until `url`'s `/readyz` answers `status`.
async fn wait_readyz(url: &str, status: u16, within: Duration) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{url}/readyz")).send().await.expect("readyz").status() != status {
        assert!(started.elapsed() < within, "{url}/readyz not {status} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The statuses a passenger receives within `within`, in order.
async fn statuses(c: &mut Client, within: Duration) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while let Some(e) = c.next("server:trip:status", within).await {
        got.push((e["status"].as_str().unwrap_or("").to_string(), e["eventId"].as_str().unwrap_or("").to_string()));
    }
    got
}

/// Two nodes on a private Redis and a third that reaches it through a [`Partition`]; a
/// driver on the first node and its trip's passenger, subscribed, on the one behind.
struct Behind {
    redis: PrivateRedis,
    h: Harness,
    relay: Partition,
    behind: usize,
    trip: String,
    driver: Client,
    passenger: Client,
}

impl Behind {
    async fn start(extra: &[&str]) -> Self {
        let redis = PrivateRedis::start(&[]);
        let mut h = Harness::start_with_redis(Mode::Cluster, extra, &redis.url()).await;
        let relay = Partition::start(redis.port).await;
        let behind = h.add_node_via(&format!("redis://127.0.0.1:{}", relay.port)).await;
        let trip = unique("t");
        h.insert_trip("default", &trip, Some("d1")).await;
        h.insert_booking("default", &trip, "p1").await;
        let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
        let passenger = Client::connect(&h.url(behind), &token("p1", "PASSENGER")).await;
        assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
        Behind { redis, h, relay, behind, trip, driver, passenger }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_a_node_was_cut_from_redis_reach_its_sockets_when_it_returns() {
    let Behind { redis, h, relay, behind, trip, driver, mut passenger } = Behind::start(&[]).await;
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await);
    passenger.expect("server:trip:status", "before the cut").await;
    let before = metric_sum(&metrics(&h.url(behind)).await, "fleetcast_catchup_events_total");

    // Redis unreachable for the node behind the relay: its subscriber connection is gone
    // while the other node publishes.
    relay.set_down(true);
    wait_readyz(&h.url(behind), 503, Duration::from_secs(6)).await;
    let sent = ["PAUSED", "STARTED", "PAUSED"];
    for status in sent {
        assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": status })).await);
    }
    relay.set_down(false);
    wait_readyz(&h.url(behind), 200, Duration::from_secs(10)).await;
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await);

    // All of them, in order, once each: the catch-up, then the live one after it.
    let got = statuses(&mut passenger, Duration::from_secs(2)).await;
    let names: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["PAUSED", "STARTED", "PAUSED", "STARTED"], "{got:?}");
    assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "ids in order: {got:?}");
    let after = metric_sum(&metrics(&h.url(behind)).await, "fleetcast_catchup_events_total");
    assert!(after - before >= 3.0, "catch-up not counted: {before} → {after}");
    driver.close().await;
    passenger.close().await;
    h.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_the_history_cannot_fill_cuts_the_rooms_sockets_off_and_the_replay_says_so() {
    let Behind { redis, h, relay, behind, trip, driver, mut passenger } =
        Behind::start(&["--history-max-events", "2"]).await;
    // An SSE stream of the same trip on the same node, read to its end.
    let stream = reqwest::Client::new()
        .get(format!("{}/api/realtime/trip-status/{trip}", h.url(behind)))
        .bearer_auth(token("p1", "PASSENGER"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let (ended_tx, ended) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut body = stream.bytes_stream();
        while let Some(Ok(_)) = body.next().await {}
        let _ = ended_tx.send(());
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await);
    let seen = passenger.expect("server:trip:status", "before the cut").await;
    let cuts = metric_sum(&metrics(&h.url(behind)).await, "fleetcast_gap_connections_cut_total");

    relay.set_down(true);
    wait_readyz(&h.url(behind), 503, Duration::from_secs(6)).await;
    // More than the history keeps: the oldest missed event is gone from it.
    for status in ["PAUSED", "STARTED", "PAUSED", "STARTED"] {
        assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": status })).await);
    }
    relay.set_down(false);
    wait_readyz(&h.url(behind), 200, Duration::from_secs(10)).await;

    // The passenger's connection is cut (not left believing it missed nothing) …
    let cut = metric_sum(&metrics(&h.url(behind)).await, "fleetcast_gap_connections_cut_total");
    assert!(cut >= cuts + 2.0, "the socket and the SSE stream not both cut after an unfillable gap: {cuts} → {cut}");
    tokio::time::timeout(Duration::from_secs(3), ended).await.expect("the SSE stream did not end").expect("ended");
    assert!(statuses(&mut passenger, Duration::from_millis(500)).await.is_empty(), "a partial catch-up was delivered");
    // … and its reconnect with `since` learns that the replay does not reach back.
    let mut back = Client::connect(&h.url(behind), &token("p1", "PASSENGER")).await;
    let ack = back.ack("passenger:subscribe", json!({ "tripId": trip, "since": seen["eventId"] })).await;
    assert_ok(&ack);
    assert_eq!(ack["recovered"], json!(false), "{ack}");
    let got = statuses(&mut back, Duration::from_millis(500)).await;
    assert_eq!(got.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["PAUSED", "STARTED"], "what is kept");
    driver.close().await;
    back.close().await;
    h.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_from_redis_reports_unready_answers_unavailable_and_recovers() {
    let redis = PrivateRedis::start(&[]);
    let url = redis.url();
    let mut h = Harness::start_with_redis(Mode::Cluster, &["--location-min-interval-ms", "1000"], &url).await;
    let partition = Partition::start(redis.port).await;
    let cut_off = h.add_node_via(&format!("redis://127.0.0.1:{}", partition.port)).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let driver = Client::connect(&h.url(cut_off), &token("d1", "DRIVER")).await;
    let mut passenger = Client::connect(&h.a(), &token("p1", "PASSENGER")).await;
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 1, "lng": 1 })).await);
    passenger.expect("server:location:update", "before the partition").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    partition.set(true);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let ack = driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 5, "lng": 5 })).await;
    assert_err(&ack, "UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(5), "ack took {:?}", started.elapsed());
    assert_err(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await, "UNAVAILABLE");
    // Not ready within its Redis timeout (1 s) plus the readiness probe's own (2 s).
    let mut unready = None;
    while started.elapsed() < Duration::from_secs(6) {
        if http.get(format!("{}/readyz", h.url(cut_off))).send().await.expect("readyz").status() == 503 {
            unready = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unready.is_some(), "the partitioned node kept reporting ready");
    // The other node is unaffected.
    assert_eq!(http.get(format!("{}/readyz", h.a())).send().await.expect("readyz").status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Healed: ready again, and nothing answered UNAVAILABLE ran late.
    partition.set(false);
    wait_readyz(&h.url(cut_off), 200, Duration::from_secs(5)).await;
    assert_ok(&driver.ack("driver:location:update", json!({ "tripId": trip, "lat": 9, "lng": 9 })).await);
    let loc = passenger.expect("server:location:update", "after the partition").await;
    assert_eq!(loc["lat"], json!(9.0), "an update answered UNAVAILABLE was delivered late: {loc}");
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "PAUSED" })).await);
    let status = passenger.expect("server:trip:status", "after the partition").await;
    assert_eq!(status["status"], json!("PAUSED"), "a status answered UNAVAILABLE was delivered late: {status}");
    driver.close().await;
    passenger.close().await;
    h.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_without_its_data_cuts_off_the_rooms_that_lost_events_and_replays_say_so() {
    let mut redis = PrivateRedis::start(&[]);
    let h = Harness::start_with_redis(Mode::Cluster, &[], &redis.url()).await;
    let trip = unique("t");
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut passenger = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "STARTED" })).await);
    let seen = passenger.expect("server:trip:status", "before the restart").await;
    let cuts = metric_sum(&metrics(&h.b()).await, "fleetcast_gap_connections_cut_total");

    // Whatever Redis held (the trip's history included) is gone.
    redis.restart();
    wait_readyz(&h.a(), 200, Duration::from_secs(10)).await;
    wait_readyz(&h.b(), 200, Duration::from_secs(10)).await;
    let cut = metric_sum(&metrics(&h.b()).await, "fleetcast_gap_connections_cut_total");
    assert!(cut > cuts, "the passenger's connection was not cut after Redis lost the trip's history");

    // The driver's own user room lost its history too: it reconnects as well.
    driver.close().await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    // A new history begins; a replay from before the restart is not complete.
    assert_ok(&driver.ack("driver:status", json!({ "tripId": trip, "status": "PAUSED" })).await);
    let mut back = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    let ack = back.ack("passenger:subscribe", json!({ "tripId": trip, "since": seen["eventId"] })).await;
    assert_ok(&ack);
    assert_eq!(ack["recovered"], json!(false), "a replay across the lost history claimed to be complete: {ack}");
    assert_eq!(back.expect("server:trip:status", "after the restart").await["status"], json!("PAUSED"));
    driver.close().await;
    back.close().await;
    h.stop().await;
    drop(redis);
}

/// A node cut from Redis long enough for the cluster to count its drivers `OFFLINE` (the
/// sweep on the other node) derives them again once its heartbeat is back: `AVAILABLE`
/// returns without the driver doing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_of_a_node_back_from_a_partition_are_available_again() {
    let redis = PrivateRedis::start(&[]);
    let mut h = Harness::start_with_redis(Mode::Cluster, &[], &redis.url()).await;
    let partition = Partition::start(redis.port).await;
    let cut_off = h.add_node_via(&format!("redis://127.0.0.1:{}", partition.port)).await;
    let mut admin = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    let d = unique("d");
    let driver = Client::connect(&h.url(cut_off), &token(&d, "DRIVER")).await;
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    assert_ok(&driver.ack("driver:location:update", json!({ "lat": 1, "lng": 1 })).await);
    let e = admin.expect("driver.availability.changed", "AVAILABLE").await;
    assert_eq!(e["availability"], json!("AVAILABLE"));

    partition.set(true);
    let e = admin.next("driver.availability.changed", Duration::from_secs(6)).await.expect("OFFLINE while cut off");
    assert_eq!((e["driverId"].as_str(), e["availability"].as_str()), (Some(d.as_str()), Some("OFFLINE")), "{e}");
    partition.set(false);
    let e = admin.next("driver.availability.changed", Duration::from_secs(6)).await.expect("AVAILABLE once back");
    assert_eq!((e["driverId"].as_str(), e["availability"].as_str()), (Some(d.as_str()), Some("AVAILABLE")), "{e}");
    driver.close().await;
    admin.close().await;
    h.stop().await;
    drop(redis);
}
