//! Redis Cluster faults under traffic (issue 12): on a private cluster (three primaries,
//! three replicas, `scripts/redis-cluster.sh`, stopped by PID), two nodes, a driver streaming
//! locations and status events on node A and a passenger of its trip on node B. Each case
//! breaks the shard that holds the trip room — its primary killed (the replica takes over),
//! its slot moved to another primary with `redis-cli --cluster reshard`, or its subscriber
//! connection killed — and measures how long until the passenger gets locations again, how
//! many were lost meanwhile (at most once), and checks that every status event acked `ok`
//! reached the passenger live or in the `since` replay, unless the replay says the history
//! itself was lost (`recovered: false`: Redis replicates asynchronously, so a failover may
//! drop the last writes the old primary acknowledged), which the test prints.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleetcast::domain::{RoomKey, Tenant, TripId};
use fleetcast::engine::keys::{Keys, slot};
use futures_util::StreamExt;
use serde_json::json;

use crate::common::*;

/// A node of the cluster: id, port, whether it is a primary, its slot ranges.
type ClusterNode = (String, u16, bool, Vec<(u16, u16)>);

/// A private Redis Cluster of this test.
struct PrivateCluster {
    dir: PathBuf,
    base: u16,
    url: String,
}

impl PrivateCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("fcit-rc"));
        let (base, url) = start_redis_cluster(&dir, 26_000);
        Self { dir, base, url }
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `(id, port, is_primary, slot ranges)` of every live node, as a live node sees them.
    fn nodes(&self) -> Vec<ClusterNode> {
        let ask =
            (0..6).map(|i| self.base + i).find(|p| self.cli(*p, &["PING"]).trim() == "PONG").expect("a live node");
        self.cli(ask, &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| !l.contains("fail"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let primary = f.get(2)?.contains("master");
                let ranges = f
                    .iter()
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((f[0].to_string(), port, primary, ranges))
            })
            .collect()
    }

    /// The primary that owns `slot`: its id and port.
    fn owner(&self, s: u16) -> (String, u16) {
        self.owner_or_none(s).expect("an owner of the slot")
    }

    /// The live primary that owns `slot`, if any.
    fn owner_or_none(&self, s: u16) -> Option<(String, u16)> {
        self.nodes()
            .into_iter()
            .find(|(_, _, primary, ranges)| *primary && ranges.iter().any(|(a, b)| (*a..=*b).contains(&s)))
            .map(|(id, port, _, _)| (id, port))
    }

    fn kill(&self, port: u16) {
        let path = self.dir.join(port.to_string()).join("pid");
        let pid = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ok = std::process::Command::new("kill").args(["-KILL", pid.trim()]).status().expect("kill").success();
        assert!(ok, "kill {pid}");
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let _ = std::process::Command::new(root.join("scripts/redis-cluster.sh"))
            .args(["stop", &self.dir.display().to_string()])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A trip id whose room's slot satisfies `want`.
fn trip_on_slot(want: impl Fn(u16) -> bool) -> String {
    let keys = Keys::new("x").expect("prefix");
    loop {
        let trip = unique("t");
        let room = RoomKey::trip_subscribers(&Tenant("default".into()), &TripId(trip.clone()));
        if want(slot(&keys.room_channel(&room))) {
            return trip;
        }
    }
}

/// A timestamp in ms (the node stores its own rendering of the one it was sent).
fn millis(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.timestamp_millis())
}

/// What the traffic saw.
#[derive(Default)]
struct Seen {
    /// Timestamps (ms) of status events acked `ok`, by the driver.
    acked: BTreeSet<i64>,
    /// Locations acked `ok`.
    locations_ok: u64,
    /// Acks refused (`UNAVAILABLE` during the fault).
    refused: u64,
}

/// Streams a location every 50 ms and a status every 250 ms until `stop`.
fn traffic(
    driver: Arc<Client>,
    trip: String,
    stop: Arc<AtomicBool>,
    n: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            n.store(i, Ordering::SeqCst);
            let lat = 10.0 + i as f64 / 10_000.0;
            let ack = driver.ack("driver:location:update", json!({ "tripId": trip, "lat": lat, "lng": 20.0 })).await;
            if ack["ok"] == json!(true) {
                seen.locations_ok += 1;
            } else {
                seen.refused += 1;
            }
            if i.is_multiple_of(5) {
                let ts = (chrono::Utc::now() - chrono::Duration::milliseconds(1)).to_rfc3339();
                let status = if i.is_multiple_of(10) { "STARTED" } else { "PAUSED" };
                let ack =
                    driver.ack("driver:status", json!({ "tripId": trip, "status": status, "timestamp": ts })).await;
                if ack["ok"] == json!(true) {
                    seen.acked.insert(millis(&ts).expect("rfc3339"));
                } else {
                    seen.refused += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    })
}

/// Runs the traffic, applies `fault` once a few seconds of it went through, and reports.
async fn under_traffic(case: &str, cluster: &PrivateCluster, trip: &str, fault: impl FnOnce(&PrivateCluster)) {
    if let Ok(filter) = std::env::var("FLEETCAST_TEST_LOG") {
        fleetcast::telemetry::init_logs(fleetcast::config::LogFormat::Text, &filter);
    }
    let h = Harness::start_with_redis(
        Mode::RedisCluster,
        &["--location-min-interval-ms", "0", "--location-max-per-minute", "100000"],
        &cluster.url,
    )
    .await;
    h.insert_trip("default", trip, Some("d1")).await;
    h.insert_booking("default", trip, "p1").await;
    let driver = Arc::new(Client::connect(&h.a(), &token("d1", "DRIVER")).await);
    let mut passenger = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    assert_ok(&driver.ack("driver:connect", json!({ "tripId": trip })).await);
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let http = reqwest::Client::new();
    let resubscribed = || async { metric_sum(&metrics(&h.b()).await, "fleetcast_pubsub_resubscribed_total") };
    let before = resubscribed().await;

    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let run = traffic(driver.clone(), trip.to_string(), stop.clone(), sent.clone());
    // Everything the passenger receives, with when.
    let mut live_status: BTreeSet<i64> = BTreeSet::new();
    let mut first_id: Option<String> = None;
    let mut locations = 0u64;
    let mut last_location = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut faulted: Option<Instant> = None;
    let mut fault = Some(fault);
    let started = Instant::now();
    let mut back_after: Option<Duration> = None;
    while started.elapsed() < Duration::from_secs(40) {
        if faulted.is_none() && started.elapsed() > Duration::from_secs(3) {
            (fault.take().expect("once"))(cluster);
            faulted = Some(Instant::now());
            last_location = Instant::now();
        }
        let Some((event, v)) = passenger.next_any(Duration::from_millis(200)).await else { continue };
        match event.as_str() {
            "server:location:update" => {
                locations += 1;
                let gap = last_location.elapsed();
                longest_gap = longest_gap.max(gap);
                last_location = Instant::now();
                if let Some(at) = faulted
                    && back_after.is_none()
                {
                    if gap > Duration::from_millis(500) {
                        // The first location after the fault's gap: delivery resumed.
                        back_after = Some(at.elapsed());
                    } else if at.elapsed() > Duration::from_secs(5) {
                        back_after = Some(Duration::ZERO); // never interrupted
                    }
                }
            }
            "server:trip:status" => {
                if first_id.is_none() {
                    first_id = v["eventId"].as_str().map(str::to_string);
                }
                if let Some(ts) = v["timestamp"].as_str().and_then(millis) {
                    live_status.insert(ts);
                }
            }
            _ => {}
        }
        if let Some(at) = faulted
            && at.elapsed() > Duration::from_secs(12)
            && back_after.is_some()
        {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let seen = run.await.expect("traffic");
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Some((event, v)) = passenger.next_any(Duration::from_millis(300)).await {
        if event == "server:trip:status"
            && let Some(ts) = v["timestamp"].as_str().and_then(millis)
        {
            live_status.insert(ts);
        }
    }
    // Whatever was missed live, from the room's history.
    let since = first_id.expect("a status before the fault");
    let replay_client = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    let mut replay_client = replay_client;
    let subscribed = Instant::now();
    let mut ack = replay_client.ack("passenger:subscribe", json!({ "tripId": trip, "since": since })).await;
    while ack["ok"] != json!(true) && subscribed.elapsed() < Duration::from_secs(10) {
        let ready = http.get(format!("{}/readyz", h.b())).send().await.expect("readyz").status();
        eprintln!("{case}: replay subscribe answered {ack} (node B /readyz {ready}); again");
        tokio::time::sleep(Duration::from_millis(500)).await;
        ack = replay_client.ack("passenger:subscribe", json!({ "tripId": trip, "since": since })).await;
    }
    assert_ok(&ack);
    let mut replayed: BTreeSet<i64> = BTreeSet::new();
    while let Some(v) = replay_client.next("server:trip:status", Duration::from_millis(500)).await {
        if let Some(ts) = v["timestamp"].as_str().and_then(millis) {
            replayed.insert(ts);
        }
    }
    let after_fault_start = seen.acked.iter().filter(|ts| live_status.first().is_some_and(|f| *ts >= f)).count();
    let missed_live = seen.acked.iter().filter(|ts| !live_status.contains(*ts)).count();
    let missed = seen
        .acked
        .iter()
        .filter(|ts| {
            !live_status.contains(*ts) && !replayed.contains(*ts) && live_status.first().is_some_and(|f| *ts > f)
        })
        .count();
    let after = resubscribed().await;
    let ready = http.get(format!("{}/readyz", h.b())).send().await.expect("readyz").status();
    if back_after.is_none() {
        let keys = Keys::new(&h.prefix).expect("prefix");
        let channel =
            keys.room_channel(&RoomKey::trip_subscribers(&Tenant("default".into()), &TripId(trip.to_string())));
        for (id, port, primary, ranges) in cluster.nodes() {
            eprintln!(
                "{case}: node {port} {} {ranges:?} {id}: SHARDNUMSUB {:?} channels {:?}",
                if primary { "primary" } else { "replica" },
                cluster.cli(port, &["PUBSUB", "SHARDNUMSUB", &channel]).replace('\n', " "),
                cluster.cli(port, &["PUBSUB", "SHARDCHANNELS"]).replace('\n', " "),
            );
        }
    }
    eprintln!(
        "{case}: delivery back after {back_after:?} (longest gap {longest_gap:?}); {} locations sent, {} acked ok, \
         {locations} delivered ({} lost, at most once), {} refused; {} status events acked ok ({after_fault_start} \
         after the first one seen), {missed_live} missed live, {missed} missed after the since replay \
         (recovered: {}); re-subscriptions counted (all nodes of this process) {before} → {after}; node B /readyz {ready}",
        sent.load(Ordering::SeqCst),
        seen.locations_ok,
        seen.locations_ok.saturating_sub(locations),
        seen.refused,
        seen.acked.len(),
        ack["recovered"],
    );
    assert!(back_after.is_some_and(|d| d < Duration::from_secs(15)), "{case}: delivery did not resume in 15 s");
    assert_eq!(ready, 200, "{case}: node B ready again");
    assert!(
        missed == 0 || ack["recovered"] == json!(false),
        "{case}: {missed} status events acked ok were lost without the replay saying so"
    );
    driver.sio.disconnect().await.ok();
    passenger.close().await;
    replay_client.close().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_fails_over_and_the_room_is_served_again() {
    let cluster = PrivateCluster::start();
    let trip = trip_on_slot(|_| true);
    let keys = Keys::new("x").expect("prefix");
    let room = RoomKey::trip_subscribers(&Tenant("default".into()), &TripId(trip.clone()));
    let s = slot(&keys.room_channel(&room));
    under_traffic("primary killed", &cluster, &trip, |c| {
        let (_, port) = c.owner(s);
        c.kill(port);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharded_slot_moves_its_room_subscription_to_the_new_owner() {
    let cluster = PrivateCluster::start();
    // A room on the lowest slot of the first primary: what a one-slot reshard moves.
    let lowest = cluster.owner(0);
    assert_eq!(cluster.nodes().iter().find(|n| n.0 == lowest.0).map(|n| n.3[0].0), Some(0));
    let trip = trip_on_slot(|s| s == 0);
    let to = cluster.nodes().into_iter().find(|n| n.2 && n.0 != lowest.0).expect("another primary").0;
    under_traffic("slot resharded", &cluster, &trip, |c| {
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{}", c.base), "--cluster-from", &lowest.0])
            .args(["--cluster-to", &to, "--cluster-slots", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster reshard");
        assert!(out.status.success(), "reshard: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(c.owner(0).0, to, "slot 0 moved");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_subscriber_connection_killed_is_restored() {
    let cluster = PrivateCluster::start();
    let trip = trip_on_slot(|_| true);
    let keys = Keys::new("x").expect("prefix");
    let room = RoomKey::trip_subscribers(&Tenant("default".into()), &TripId(trip.clone()));
    let s = slot(&keys.room_channel(&room));
    under_traffic("shard subscriber killed", &cluster, &trip, |c| {
        let (_, port) = c.owner(s);
        let killed: u32 = c.cli(port, &["CLIENT", "KILL", "TYPE", "pubsub"]).trim().parse().unwrap_or(0);
        assert!(killed >= 1, "CLIENT KILL TYPE pubsub killed {killed}");
    })
    .await;
}

/// What a failover can lose (README "What a failover can lose"): the replica's link is cut
/// (and its resync refused), a status event is acked `ok` by the primary, which dies before
/// the replica has it. The passenger connected then got it live; the replica that takes over
/// has no trace of it, so a passenger that was away since the event before gets a replay
/// without it, told `recovered: true`: the loss is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_can_lose_an_acked_event_that_was_not_replicated() {
    let cluster = PrivateCluster::start();
    let trip = trip_on_slot(|_| true);
    let keys = Keys::new("x").expect("prefix");
    let s = slot(&keys.room_channel(&RoomKey::trip_subscribers(&Tenant("default".into()), &TripId(trip.clone()))));
    let h = Harness::start_with_redis(Mode::RedisCluster, &[], &cluster.url).await;
    h.insert_trip("default", &trip, Some("d1")).await;
    h.insert_booking("default", &trip, "p1").await;
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let mut passenger = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    assert_ok(&passenger.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let status = |s: &str| json!({ "tripId": trip, "status": s });
    assert_ok(&driver.ack("driver:status", status("STARTED")).await);
    let first = passenger.expect("server:trip:status", "the first status").await["eventId"].clone();
    // Let the first event reach the replica, then cut the replica's link and write again.
    let (primary_id, primary) = cluster.owner(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The replica may not resync (its PSYNC refused), and its link is cut.
    cluster.cli(primary, &["ACL", "SETUSER", "default", "-psync", "-sync"]);
    cluster.cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
    assert_ok(&driver.ack("driver:status", status("PAUSED")).await);
    cluster.kill(primary);
    let second = passenger.expect("server:trip:status", "the second status, live").await["eventId"].clone();
    // The replica takes over without the second event.
    let started = Instant::now();
    while cluster.owner_or_none(s).is_none_or(|(id, _)| id == primary_id) {
        assert!(started.elapsed() < Duration::from_secs(30), "no failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let http = reqwest::Client::new();
    while http.get(format!("{}/readyz", h.b())).send().await.expect("readyz").status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "node B not ready after the failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new primary's history holds the first event and not the second.
    let (_, owner) = cluster.owner(s);
    let history_key = Keys::new(&h.prefix)
        .expect("prefix")
        .history(&RoomKey::trip_subscribers(&Tenant("default".into()), &TripId(trip.clone())));
    let ids = cluster.cli(owner, &["XRANGE", &history_key, "-", "+"]);
    let (first, second) = (first.as_str().expect("id").to_string(), second.as_str().expect("id").to_string());
    assert!(ids.contains(&first), "the replicated event survives: {ids}");
    assert!(!ids.contains(&second), "the acked event was lost with the primary: {ids}");
    // A passenger away since the first event: a replay without the lost one, not told.
    let mut away = Client::connect(&h.b(), &token("p1", "PASSENGER")).await;
    let ack = away.ack("passenger:subscribe", json!({ "tripId": trip, "since": first })).await;
    assert_ok(&ack);
    let replayed = away.next("server:trip:status", Duration::from_millis(500)).await;
    eprintln!(
        "failover loss: event {second} acked ok and delivered live, gone from the new primary; \
         a replay since {first}: {ack}, replayed {replayed:?}"
    );
    assert!(replayed.is_none(), "the lost event cannot be replayed: {replayed:?}");
    assert_eq!(ack["recovered"], json!(true), "{ack}");
    let saw = away;
    for c in [driver, passenger, saw] {
        c.close().await;
    }
    h.stop().await;
}

/// Keys, channels and commands spread over the primaries (no hot shard): 2,000 drivers of
/// one tenant post positions over a city-sized area (HTTP ingest), 300 users hold sockets
/// (a user room channel each); each primary's keys (`DBSIZE`), shard channels and script
/// calls (`INFO commandstats`, from before the drivers came live: coming live derives
/// presence, on the tenant's presence buckets) are within ±25 % of their mean. And every key
/// on every primary expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_channels_and_commands_spread_over_the_primaries() {
    let cluster = PrivateCluster::start();
    let h = Harness::start_with_redis(
        Mode::RedisCluster,
        &["--http-rate-per-address-per-sec", "0", "--http-rate-per-user-per-sec", "0"],
        &cluster.url,
    )
    .await;
    let primaries: Vec<u16> = cluster.nodes().into_iter().filter(|n| n.2).map(|n| n.1).collect();
    assert_eq!(primaries.len(), 3);
    let calls = |port: u16| -> u64 {
        cluster
            .cli(port, &["INFO", "commandstats"])
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_spublish:"))
            .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum()
    };
    let http = reqwest::Client::new();
    let round = |n: u32| {
        let http = http.clone();
        let posts: Vec<_> = (0..2_000)
            .map(|i| {
                let (http, url) = (http.clone(), format!("{}/api/v1/drivers/me/location", h.url(i % 2)));
                // A 0.5° × 0.5° city, spread evenly; each round a little further north.
                let (lat, lng) =
                    (48.6 + (i % 50) as f64 * 0.01 + f64::from(n) * 0.0001, 2.1 + (i / 50) as f64 * 0.0125);
                async move {
                    let r = http
                        .post(url)
                        .bearer_auth(token(&format!("spread-d{i}"), "DRIVER"))
                        .json(&json!({ "lat": lat, "lng": lng }))
                        .send()
                        .await
                        .expect("post");
                    r.status().as_u16()
                }
            })
            .collect();
        async move {
            let statuses: Vec<u16> = futures_util::stream::iter(posts).buffer_unordered(32).collect().await;
            let refused: Vec<&u16> = statuses.iter().filter(|s| **s >= 300).take(5).collect();
            assert!(refused.is_empty(), "ingest refused some: {refused:?}");
        }
    };
    // The drivers come live (each one's presence derived on its bucket), then two more
    // positions each.
    let before: Vec<u64> = primaries.iter().map(|p| calls(*p)).collect();
    round(0).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    round(1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    round(2).await;
    let mut sockets = Vec::new();
    for i in 0..300 {
        sockets.push(Client::connect(&h.url(i % 2), &token(&format!("spread-u{i}"), "PASSENGER")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys: Vec<u64> = primaries.iter().map(|p| cluster.cli(*p, &["DBSIZE"]).trim().parse().unwrap_or(0)).collect();
    let channels: Vec<u64> = primaries
        .iter()
        .map(|p| cluster.cli(*p, &["PUBSUB", "SHARDCHANNELS"]).lines().filter(|l| !l.is_empty()).count() as u64)
        .collect();
    let commands: Vec<u64> = primaries.iter().zip(&before).map(|(p, b)| calls(*p) - b).collect();
    eprintln!(
        "spread over the primaries {primaries:?}: keys {keys:?}, shard channels {channels:?}, script and publish calls {commands:?}"
    );
    for (what, v) in [("keys", &keys), ("channels", &channels), ("commands", &commands)] {
        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
        assert!(mean > 0.0, "{what}: {v:?}");
        assert!(
            v.iter().all(|x| (*x as f64 - mean).abs() <= 0.25 * mean),
            "{what} not within ±25 % of their mean: {v:?}"
        );
    }
    for p in &primaries {
        let scan = cluster.cli(*p, &["--scan", "--pattern", &format!("{}:*", h.prefix)]);
        for key in scan.lines().filter(|k| !k.is_empty()) {
            let ttl: i64 = cluster.cli(*p, &["PTTL", key]).trim().parse().expect("PTTL reply");
            // 0: expiring this millisecond; -2: expired since the scan (a sweep mark lives
            // 5 s, a geo index marker a quarter of the location TTL); -1: no TTL.
            assert!(ttl != -1, "{key} on {p} has no TTL (PTTL {ttl})");
        }
    }
    for c in sockets {
        c.close().await;
    }
    h.stop().await;
}

/// A slot in migration (its owner `MIGRATING` to another primary, which is `IMPORTING`): a
/// write of the node to a key the old owner does not hold meets an `ASK` redirect. fred
/// 10.1 cannot follow it with one write attempt and used to end its connection task with
/// it, leaving the node's client dead (every later command timed out). The write that
/// met the migration is answered `UNAVAILABLE` at once, every other room is served
/// meanwhile, and once the migration is over the room is served again, with no restart of
/// the connection task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_in_migration_refuses_its_writes_and_the_node_goes_on_serving() {
    let cluster = PrivateCluster::start();
    let h = Harness::start_with_redis(Mode::RedisCluster, &[], &cluster.url).await;
    let keys = Keys::new("x").expect("prefix");
    let room_slot = |trip: &str| {
        slot(&keys.room_channel(&RoomKey::trip_subscribers(&Tenant("default".into()), &TripId(trip.to_string()))))
    };
    let migrating = trip_on_slot(|_| true);
    let s = room_slot(&migrating);
    let other = trip_on_slot(|o| o != s);
    for trip in [&migrating, &other] {
        h.insert_trip("default", trip, Some("d1")).await;
    }
    let driver = Client::connect(&h.a(), &token("d1", "DRIVER")).await;
    let status = |trip: &str, s: &str| json!({ "tripId": trip, "status": s });
    assert_ok(&driver.ack("driver:status", status(&other, "STARTED")).await);
    // Restarts counted by this process's nodes (the metrics are process-wide).
    let restarts = || async { metric_sum(&metrics(&h.a()).await, "fleetcast_redis_router_restarts_total") };
    let restarts_before = restarts().await;

    let (from_id, from) = cluster.owner(s);
    let (to_id, to) =
        cluster.nodes().into_iter().find(|n| n.2 && n.0 != from_id).map(|n| (n.0, n.1)).expect("another primary");
    assert_eq!(cluster.cli(to, &["CLUSTER", "SETSLOT", &s.to_string(), "IMPORTING", &from_id]).trim(), "OK");
    assert_eq!(cluster.cli(from, &["CLUSTER", "SETSLOT", &s.to_string(), "MIGRATING", &to_id]).trim(), "OK");
    // The room's publish names its channel, which no node holds as a key: `ASK`.
    let started = Instant::now();
    let ack = driver.ack("driver:status", status(&migrating, "STARTED")).await;
    assert_eq!(ack["error"], json!("UNAVAILABLE"), "{ack}");
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
    // Another room is served meanwhile.
    assert_ok(&driver.ack("driver:status", status(&other, "PAUSED")).await);

    for port in [from, to] {
        assert_eq!(cluster.cli(port, &["CLUSTER", "SETSLOT", &s.to_string(), "STABLE"]).trim(), "OK");
    }
    let ack = driver.ack("driver:status", status(&migrating, "STARTED")).await;
    assert_ok(&ack);
    assert_eq!(restarts().await, restarts_before, "the connection task never ended");
    driver.close().await;
    h.stop().await;
}
