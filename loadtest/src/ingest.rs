//! The `ingest` scenario: HTTP location ingest (contract §7) through
//! `POST /api/v1/locations`, the SERVICE batch. C concurrent senders post batches of B
//! updates for D synthetic drivers (each driver at most once per `--every` seconds, within
//! the contract's per-driver limits) to one node; the report gives the accepted updates per
//! second, the per-update outcomes, and the batch latency. Single process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::ctx::Ctx;
use crate::stats::{self, LatencySummary, Recorder, Tally};
use crate::token::{Role, TokenMinter};

/// Arguments of `fleetcast-loadtest ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The node, http://host:port.
    #[arg(long)]
    pub target: String,
    /// Synthetic drivers.
    #[arg(long, default_value_t = 30_000)]
    pub drivers: u64,
    /// Updates per batch (1–1000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Batches in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds between two updates of one driver (the contract's defaults allow 0.67).
    #[arg(long, default_value_t = 1.0)]
    pub every: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// HS256 secret the server verifies tokens with.
    #[arg(long)]
    pub secret: String,
    /// Tenant claim (absent = the server's `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    pub drivers: u64,
    pub batch: usize,
    pub concurrency: usize,
    pub send_window_s: f64,
    pub batches: u64,
    pub updates: u64,
    /// Accepted updates per second over the send window.
    pub accepted_per_s: f64,
    /// Per-update outcomes (`ok`, `RATE_LIMITED`, …) and failed batches (`http:…`).
    pub outcomes: Tally,
    pub batch_ms: LatencySummary,
}

/// The next batch: `batch` drivers in turn, each with a position on a small circle.
fn batch_body(run: &str, first: u64, n: usize, drivers: u64) -> String {
    let mut s = String::with_capacity(n * 90 + 16);
    s.push_str(r#"{"updates":["#);
    for k in 0..n as u64 {
        let i = (first + k) % drivers;
        let angle = (first + k) as f64 / drivers as f64;
        let lat = -1.28 + 0.05 * (i as f64 * 0.37).sin() + 0.001 * angle.sin();
        let lng = 36.82 + 0.05 * (i as f64 * 0.61).cos() + 0.001 * angle.cos();
        if k > 0 {
            s.push(',');
        }
        s.push_str(&format!(r#"{{"driverId":"lt-{run}-d{i}","lat":{lat:.6},"lng":{lng:.6},"speed":10}}"#));
    }
    s.push_str("]}");
    s
}

/// Runs the scenario and prints its report.
pub async fn run(a: IngestArgs, ctx: Ctx) -> anyhow::Result<()> {
    if !matches!(ctx.procs, crate::ctx::Procs::Single) {
        bail!("the ingest scenario runs in one process (no --workers)");
    }
    ensure!((1..=1000).contains(&a.batch), "--batch must be 1–1000");
    ensure!(a.drivers as usize >= a.batch, "--drivers must be at least --batch");
    ensure!(a.every.is_finite() && a.every > 0.0, "--every must be positive");
    let token = TokenMinter::new(&a.secret, a.tenant.clone(), 6 * 3600).mint("lt-ingest", Role::Service)?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build().context("building the HTTP client")?;
    let url = format!("{}/api/v1/locations", a.target.trim_end_matches('/'));
    // The whole fleet once per `every`: batches per second over all senders.
    let batches_per_s = a.drivers as f64 / a.batch as f64 / a.every;
    let next = Arc::new(AtomicU64::new(0));
    let outcomes = Arc::new(Mutex::new(Tally::default()));
    let accepted = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Recorder::new());
    let start = Instant::now();
    let end = start + Duration::from_secs(a.duration);
    let run_id = ctx.run_id.clone();
    let mut senders = Vec::new();
    for _ in 0..a.concurrency {
        let (http, url, token, next, outcomes, accepted, latency, run_id) = (
            http.clone(),
            url.clone(),
            token.clone(),
            next.clone(),
            outcomes.clone(),
            accepted.clone(),
            latency.clone(),
            run_id.clone(),
        );
        let (batch, drivers) = (a.batch, a.drivers);
        senders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                // Paced: batch n is due at n / batches_per_s.
                let due = start + Duration::from_secs_f64(n as f64 / batches_per_s);
                if due >= end {
                    return;
                }
                tokio::time::sleep_until(due).await;
                let body = batch_body(&run_id, n * batch as u64, batch, drivers);
                let sent = Instant::now();
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let mut tally = Tally::default();
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: Value =
                            r.bytes().await.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
                        latency.record(sent.elapsed());
                        for res in v["results"].as_array().into_iter().flatten() {
                            if res["ok"] == Value::Bool(true) {
                                accepted.fetch_add(1, Ordering::Relaxed);
                                tally.add("ok");
                            } else {
                                tally.add(res["error"].as_str().unwrap_or("malformed"));
                            }
                        }
                    }
                    Ok(r) => tally.add(&format!("http:{}", r.status().as_u16())),
                    Err(_) => tally.add("http:io"),
                }
                outcomes.lock().await.merge(&tally);
            }
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    let window = start.elapsed();
    let outcomes = outcomes.lock().await.clone();
    let report = IngestReport {
        drivers: a.drivers,
        batch: a.batch,
        concurrency: a.concurrency,
        send_window_s: stats::round3(window.as_secs_f64()),
        batches: latency.snapshot().len(),
        updates: outcomes.total(),
        accepted_per_s: stats::per_second(accepted.load(Ordering::Relaxed), window),
        outcomes,
        batch_ms: stats::summarize_us(&latency.snapshot()),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let v: Value = serde_json::to_value(&report)?;
        for (k, v) in v.as_object().into_iter().flatten() {
            println!("{k:>16}  {v}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_valid_json_with_distinct_drivers() {
        let b: Value = serde_json::from_str(&batch_body("r", 5, 3, 4)).expect("JSON");
        let ids: Vec<&str> =
            b["updates"].as_array().expect("updates").iter().filter_map(|u| u["driverId"].as_str()).collect();
        assert_eq!(ids, vec!["lt-r-d1", "lt-r-d2", "lt-r-d3"]);
    }
}
