//! The `fleetcast` binary itself: readable `--help`, bad settings refused at start with the
//! field's name, SIGTERM shuts down gracefully, and a node killed with SIGKILL releases the
//! subscription slots it held once its heartbeat expires and turns its drivers `OFFLINE` on
//! the other nodes within 5 s (CONTRACT §7); `fleetcast token` prints a token the node accepts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetcast"))
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let out = bin().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["--redis-url", "REDIS_URL", "DATABASE_URL", "FLEETCAST_JWT_SECRET", "--location-min-interval-ms"] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn bad_settings_fail_at_start_naming_the_field() {
    let out = bin().args(["--location-ttl-ms", "soon"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("location-ttl-ms"));
    let out = bin()
        .args(["--redis-url", "redis://127.0.0.1:1", "--bind", "127.0.0.1:0"])
        .env_remove("FLEETCAST_JWT_SECRET")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt-secret"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The Postgres URL of a cluster harness's database.
fn db_url(h: &Harness) -> String {
    match &h.db {
        fleetcast::store::Db::Pg(p) => {
            let name = p.connect_options().get_database().expect("db name").to_string();
            format!("postgres://postgres@127.0.0.1:5432/{name}")
        }
        fleetcast::store::Db::Sqlite(_) => unreachable!("cluster mode"),
    }
}

fn spawn_node(port: u16, extra: &[&str]) -> Child {
    let child = bin()
        .args(["--bind", &format!("127.0.0.1:{port}"), "--jwt-secret", SECRET])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn fleetcast");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "node did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sockets_and_exits_cleanly() {
    let port = free_port();
    let db = std::env::temp_dir().join(format!("{}.db", unique("fcbin")));
    let mut child = spawn_node(port, &["--database-url", &format!("sqlite://{}?mode=rwc", db.display())]);
    let mut c = Client::connect(&format!("http://127.0.0.1:{port}"), &token("u1", "PASSENGER")).await;
    assert_ok(&c.ack("heartbeat", json!({})).await);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "node did not exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(c.next("anything", Duration::from_millis(200)).await.is_none());
    let _ = std::fs::remove_file(&db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_of_a_node_killed_with_sigkill_expire_with_its_heartbeat() {
    // Node A runs in this process; node B is a separate process we can SIGKILL.
    let h = Harness::start(Mode::Cluster, &["--max-trip-subscriptions", "1", "--node-heartbeat-ms", "200"]).await;
    let trip = unique("t");
    let other = unique("t");
    for t in [&trip, &other] {
        h.insert_trip("default", t, Some("d1")).await;
        h.insert_booking("default", t, "p1").await;
    }
    let port = free_port();
    let db_url = db_url(&h);
    let mut child = spawn_node(
        port,
        &[
            "--redis-url",
            REDIS,
            "--redis-prefix",
            &h.prefix,
            "--database-url",
            &db_url,
            "--node-heartbeat-ms",
            "200",
            "--max-trip-subscriptions",
            "1",
        ],
    );
    let on_b = Client::connect(&format!("http://127.0.0.1:{port}"), &token("p1", "PASSENGER")).await;
    assert_ok(&on_b.ack("passenger:subscribe", json!({ "tripId": trip })).await);
    let on_a = Client::connect(&h.a(), &token("p1", "PASSENGER")).await;
    assert_err(&on_a.ack("passenger:subscribe", json!({ "tripId": other })).await, "SUBSCRIPTION_LIMIT");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let started = Instant::now();
    let mut freed = None;
    while started.elapsed() < Duration::from_secs(5) {
        let ack = on_a.ack("passenger:subscribe", json!({ "tripId": other })).await;
        if ack["ok"] == json!(true) {
            freed = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = freed.expect("slot of the dead node freed within 5 s");
    assert!(after >= Duration::from_millis(100), "freed before the heartbeat could expire: {after:?}");
    drop(on_b);
    on_a.close().await;
    h.stop().await;
}

/// At the default heartbeat, a driver taking offers on a node killed without notice is
/// announced `OFFLINE` by the surviving node within 5 s, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_of_a_node_killed_with_sigkill_go_offline_within_5_s() {
    let h = Harness::start(Mode::Cluster, &[]).await;
    let port = free_port();
    let db_url = db_url(&h);
    let args = ["--redis-url", REDIS, "--redis-prefix", &h.prefix, "--database-url", &db_url];
    let mut child = spawn_node(port, &args);
    let mut admin = Client::connect(&h.a(), &token("adm", "ADMIN")).await;
    assert_ok(&admin.ack("admin:subscribe", json!({})).await);
    let d = unique("d");
    let driver = Client::connect(&format!("http://127.0.0.1:{port}"), &token(&d, "DRIVER")).await;
    assert_ok(&driver.ack("driver:subscribe", json!({})).await);
    assert_ok(&driver.ack("driver:location:update", json!({ "lat": 1.0, "lng": 1.0 })).await);
    let e = admin.expect("driver.availability.changed", "AVAILABLE").await;
    assert_eq!((e["driverId"].as_str(), e["availability"].as_str()), (Some(d.as_str()), Some("AVAILABLE")));
    child.kill().expect("SIGKILL");
    let killed = Instant::now();
    let _ = child.wait();
    let e = admin
        .next("driver.availability.changed", Duration::from_secs(5))
        .await
        .expect("OFFLINE announced within 5 s of the kill");
    let after = killed.elapsed();
    assert_eq!((e["driverId"].as_str(), e["availability"].as_str()), (Some(d.as_str()), Some("OFFLINE")), "{e}");
    assert!(after >= Duration::from_millis(1_500), "announced before the node could be missed: {after:?}");
    assert!(admin.next("driver.availability.changed", Duration::from_secs(1)).await.is_none(), "once");
    drop(driver);
    admin.close().await;
    h.stop().await;
}

/// The README's configuration table lists every setting with its flag, environment
/// variable and default, exactly as the binary knows them.
#[test]
fn readme_configuration_table_matches_the_config() {
    use clap::CommandFactory;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let rows: Vec<Vec<String>> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| Flag | Environment | Default | Meaning |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
        .collect();
    let cmd = fleetcast::config::Config::command();
    let args: Vec<_> =
        cmd.get_arguments().filter(|a| a.get_long().is_some_and(|l| l != "help" && l != "version")).collect();
    assert_eq!(rows.len(), args.len(), "one README row per setting");
    for (row, arg) in rows.iter().zip(&args) {
        let long = arg.get_long().expect("long");
        assert_eq!(row[0], format!("--{long}"), "README order follows the Config struct");
        let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("—");
        assert_eq!(row[1], env, "environment variable of --{long}");
        let default: Vec<String> = arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        let default = if default.is_empty() { "—".to_string() } else { default.join(",") };
        assert_eq!(row[2], default, "default of --{long}");
    }
}

/// `fleetcast token` prints a token the node accepts (the README's recipe), and refuses
/// bad claims with a message and exit code 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_prints_a_token_the_node_accepts() {
    let out = bin()
        .args(["token", "--sub", "d7", "--role", "DRIVER", "--name", "Dana", "--tenant", "acme", "--ttl", "15m"])
        .args(["--channel", "order:o1"])
        .env("FLEETCAST_JWT_SECRET", SECRET)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
    let h = Harness::start(Mode::Embedded, &[]).await;
    let c = Client::connect(&h.a(), &token).await;
    assert_ok(&c.ack("heartbeat", json!({})).await);
    c.close().await;
    let claims = h.nodes[0].app.verifier.verify(&token).expect("verified");
    assert_eq!(
        (claims.user.0.as_str(), claims.tenant.0.as_str(), claims.name.as_deref()),
        ("d7", "acme", Some("Dana"))
    );
    assert_eq!(claims.channels, vec!["order:o1".to_string()]);
    let left = claims.exp - chrono::Utc::now().timestamp();
    assert!((880..=900).contains(&left), "exp in {left} s");
    h.stop().await;

    let out = bin().args(["token", "--sub", "d7", "--role", "PILOT"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// With RS256 or ES256, `fleetcast token --private-key-file` signs with the private key and
/// a node holding only the public key accepts the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_command_signs_with_a_private_key_for_rs256_and_es256() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for alg in ["RS256", "ES256"] {
        let lower = alg.to_lowercase();
        let private = dir.join(format!("{lower}-private.pem"));
        let public = dir.join(format!("{lower}-public.pem"));
        let out = bin()
            .args(["token", "--sub", "ops", "--role", "ADMIN", "--jwt-algorithm", alg, "--private-key-file"])
            .arg(&private)
            .env_remove("FLEETCAST_JWT_SECRET")
            .output()
            .expect("run");
        assert!(out.status.success(), "{alg}: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_string();
        let h = Harness::start(
            Mode::Embedded,
            &[
                "--jwt-algorithm",
                alg,
                "--jwt-public-key-file",
                public.to_str().expect("path"),
                "--ticket-secret",
                "ticket-secret-of-the-test",
            ],
        )
        .await;
        let claims = h.nodes[0].app.verifier.verify(&token).expect("verified with the public key");
        assert_eq!((claims.user.0.as_str(), claims.role), ("ops", fleetcast::domain::Role::Admin), "{alg}");
        h.stop().await;
        let out =
            bin().args(["token", "--sub", "ops", "--role", "ADMIN", "--jwt-algorithm", alg]).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{alg} without a key file is refused");
    }
}
