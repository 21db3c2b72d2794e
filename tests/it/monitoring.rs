//! What the on-call runs beside the nodes (`deploy/prometheus/`, `deploy/grafana/`): the
//! alert rules pass `promtool check rules`; a real Prometheus (Debian's package) scrapes a
//! node with the shipped rules loaded and answers a query for one of its series; and every
//! series the rules and the dashboard name is one the code records.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `fleetcast_…` name in the files under `dir`.
fn names_in(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            names_in(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.extend(metric_names(&std::fs::read_to_string(&path).expect("read")));
        }
    }
}

fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("fleetcast_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root().join("deploy/prometheus/alerts.yml"))
        .output()
        .expect("promtool on PATH (the README test command installs prometheus)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(root().join("deploy/prometheus/prometheus.yml"))
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_rules_and_the_dashboard_name_only_series_the_code_records() {
    let mut recorded = BTreeSet::new();
    names_in(&root().join("src"), &mut recorded);
    names_in(&root().join("workers/src"), &mut recorded);
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/fleetcast.json")).expect("read"))
            .expect("the dashboard is JSON");
    let mut used = metric_names(&std::fs::read_to_string(root().join("deploy/prometheus/alerts.yml")).expect("read"));
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            used.extend(metric_names(t["expr"].as_str().unwrap_or_default()));
        }
    }
    for name in &used {
        let base = ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(recorded.contains(base), "{name} is not recorded anywhere in the code");
    }
    for needed in [
        "fleetcast_connections",
        "fleetcast_deliveries_total",
        "fleetcast_acks_total",
        "fleetcast_redis_command_seconds_bucket",
        "fleetcast_redis_errors_total",
        "fleetcast_pubsub_lagged_total",
        "fleetcast_worker_queue_depth",
    ] {
        assert!(used.iter().any(|u| u == needed), "nothing shows {needed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_a_node_and_answers_for_its_series() {
    let h = Harness::start(Mode::Embedded, &[]).await;
    let node = &h.nodes[0];
    // The test process has one metrics recorder for all its nodes (its `node` label is the
    // first node's), so the series is found by the scraped address.
    let addr = node.addr.to_string();
    let dir = std::env::temp_dir().join(unique("fcprom"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  \
         - job_name: fleetcast\n    static_configs:\n      - targets: [\"{addr}\"]\n",
        rules = root().join("deploy/prometheus/alerts.yml").display(),
        addr = node.addr,
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("write config");
    // A free port, then Prometheus on it; another process may take the port in between, so a
    // Prometheus that exits at once is started again on a new one.
    let log = dir.join("prometheus.log");
    let (mut prom, port) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
            let mut child = Command::new("prometheus")
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("prometheus on PATH (the README test command installs it)");
            tokio::time::sleep(Duration::from_secs(2)).await;
            match child.try_wait() {
                Ok(Some(_)) if attempt < 3 => continue,
                _ => break (child, port),
            }
        }
    };
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=fleetcast_ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Value::Null;
    let found = loop {
        if let Ok(r) = reqwest::get(&query).await
            && let Ok(v) = r.json::<Value>().await
        {
            let hit = v["data"]["result"]
                .as_array()
                .and_then(|r| r.iter().find(|s| s["metric"]["instance"] == addr.as_str()).cloned());
            if let Some(sample) = hit {
                break Some(sample);
            }
            last = v;
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let rules =
        reqwest::get(format!("http://127.0.0.1:{port}/api/v1/rules")).await.expect("rules").json::<Value>().await;
    let _ = prom.kill();
    let _ = prom.wait();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    h.stop().await;
    let tail: String = said.lines().rev().take(15).collect::<Vec<_>>().join("\n");
    let sample = found.unwrap_or_else(|| panic!("no fleetcast_ready from {addr}: {last}\nprometheus:\n{tail}"));
    assert_eq!(sample["value"][1], "1", "the node is ready: {sample}");
    let rules = rules.expect("rules JSON");
    let loaded: usize = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["rules"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(loaded, 6, "the shipped alert rules are loaded: {rules}");
}
