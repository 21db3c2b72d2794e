//! The `sse` scenario: fan-out latency of one order's events to S SSE streams and K
//! Socket.IO subscribers spread over several nodes (contract §3 SSE, §4 publish).
//!
//! Setup opens the streams (`GET /api/v1/realtime/orders/{order}/stream`, BUSINESS tokens)
//! and the sockets (PASSENGER tokens granting `order:{order}`, then `room:join`), each on
//! its own user (the contract caps a user at 20 connections). The run then publishes N
//! events at R/s to `--publish-target` (default the first target) (`POST /api/v1/realtime/orders/{order}`, SERVICE
//! token), each carrying `sentAtMicros`; every receiver records now − sentAtMicros in a
//! histogram per transport and counts what it received. Single process only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::protocol::{AckOutcome, Incoming, socket_url};
use crate::stats::{self, LatencySummary, Recorder, Tally};
use crate::token::{Role, TokenMinter};

/// Arguments of `fleetcast-loadtest sse`.
#[derive(Debug, clap::Args)]
pub struct SseArgs {
    /// A node, ws:// or http:// (repeat for several; streams and sockets round-robin over
    /// them; events are published to the first).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Node the events are published to (default: the first --target), so that every
    /// receiver can sit on another node than the publisher.
    #[arg(long)]
    pub publish_target: Option<String>,
    /// SSE streams on the order.
    #[arg(long, default_value_t = 1000)]
    pub streams: u64,
    /// Socket.IO subscribers in the order's room.
    #[arg(long, default_value_t = 1000)]
    pub sockets: u64,
    /// Events to publish.
    #[arg(long, default_value_t = 200)]
    pub events: u64,
    /// Events published per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// HS256 secret the server verifies tokens with.
    #[arg(long)]
    pub secret: String,
    /// Tenant claim for every token (absent = the server's `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Server processes to read VmRSS from before and after opening the streams and sockets.
    #[arg(long = "pid")]
    pub pids: Vec<u32>,
    /// Seconds the setup (all streams and sockets) may take.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Seconds to wait for the last deliveries after the last publish.
    #[arg(long, default_value_t = 5)]
    pub drain: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Splits an SSE byte stream into events: feed it chunks, get back the `data` of every
/// complete event (multi-line data joined by `\n`; comments, `retry:`, `id:` and `event:`
/// lines skipped; events without data dropped).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<String>) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, out);
            } else {
                self.line.push(b);
            }
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(data);
            }
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text.as_ref(), ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `sentAtMicros` of an `order_update`'s `data`, if it is one of ours.
fn sent_at(data: &Value) -> Option<u64> {
    data.get("sentAtMicros").and_then(Value::as_u64)
}

fn http_base(target: &str) -> String {
    let t = target.trim_end_matches('/');
    if let Some(rest) = t.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = t.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        t.to_owned()
    }
}

fn ws_base(target: &str) -> String {
    let t = target.trim_end_matches('/');
    if let Some(rest) = t.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = t.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        t.to_owned()
    }
}

struct Shared {
    sse: Recorder,
    sio: Recorder,
    sse_received: AtomicU64,
    sio_received: AtomicU64,
    streams_open: AtomicU64,
    stop: CancellationToken,
}

/// Setup outcome of one receiver: `Ok(())` or a failure code.
type Ready = Result<(), String>;

async fn run_stream(
    http: reqwest::Client,
    url: String,
    token: String,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Ready>,
    gate: Arc<Semaphore>,
) -> u64 {
    let permit = gate.acquire_owned().await;
    let response = match http.get(&url).bearer_auth(&token).header("accept", "text/event-stream").send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let _ = ready.send(Err(format!("http:{}", r.status().as_u16()))).await;
            return 0;
        }
        Err(_) => {
            let _ = ready.send(Err("sse:io".to_owned())).await;
            return 0;
        }
    };
    shared.streams_open.fetch_add(1, Ordering::Relaxed);
    let mut response = response;
    let mut parser = SseParser::default();
    let mut events = Vec::new();
    let mut received = 0u64;
    let mut connected = false;
    let mut permit = Some(permit);
    loop {
        let chunk = tokio::select! {
            () = shared.stop.cancelled() => break,
            chunk = response.chunk() => chunk,
        };
        let now = unix_micros();
        let Ok(Some(chunk)) = chunk else { break };
        parser.feed(&chunk, &mut events);
        for data in events.drain(..) {
            let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
            match v.get("type").and_then(Value::as_str) {
                Some("connected") if !connected => {
                    connected = true;
                    permit = None;
                    let _ = ready.send(Ok(())).await;
                }
                Some("order_update") => {
                    if let Some(sent) = v.get("data").and_then(sent_at) {
                        shared.sse.record_us(now.saturating_sub(sent));
                        received += 1;
                        shared.sse_received.fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {}
            }
        }
    }
    drop(permit);
    if !connected {
        let _ = ready.send(Err("sse:no_connected".to_owned())).await;
    }
    // Counted as held only while open: a stream the server ended is no longer held.
    if !shared.stop.is_cancelled() {
        shared.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
    received
}

async fn run_socket(
    url: String,
    token: String,
    room: String,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Ready>,
    gate: Arc<Semaphore>,
) -> u64 {
    let permit = gate.acquire_owned().await;
    let timeout = Duration::from_secs(20);
    let mut client = match crate::protocol::SioClient::connect(&url, &token, timeout).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.code())).await;
            return 0;
        }
    };
    match client.call("room:join", &json!({ "room": room }), timeout).await {
        Ok(AckOutcome::Ok(_)) => {}
        Ok(AckOutcome::Err(code)) => {
            let _ = ready.send(Err(format!("room:join:{code}"))).await;
            return 0;
        }
        Err(e) => {
            let _ = ready.send(Err(e.code())).await;
            return 0;
        }
    }
    drop(permit);
    let _ = ready.send(Ok(())).await;
    let mut received = 0u64;
    loop {
        let frame = tokio::select! {
            () = shared.stop.cancelled() => break,
            frame = client.recv_frame() => frame,
        };
        let now = unix_micros();
        let Ok(frame) = frame else { break };
        match client.process(frame).await {
            Ok(Some(Incoming::Event { name, data })) if name == "order_update" => {
                if let Some(sent) = data.get("data").and_then(sent_at) {
                    shared.sio.record_us(now.saturating_sub(sent));
                    received += 1;
                    shared.sio_received.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    client.close().await;
    received
}

/// Per-transport figures of the report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Transport {
    requested: u64,
    connected: u64,
    received: u64,
    expected: u64,
    delivery_ratio: Option<f64>,
    /// Receivers that got every published event.
    complete_receivers: u64,
    latency_ms: LatencySummary,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SseReport {
    scenario: &'static str,
    run_id: String,
    targets: Vec<String>,
    publish_target: String,
    order_id: String,
    events: u64,
    published: u64,
    publish_failures: Tally,
    setup_failures: Tally,
    setup_s: f64,
    publish_s: f64,
    sse: Transport,
    socketio: Transport,
    /// SSE streams still open when the run ended.
    sse_streams_held: u64,
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    /// RSS growth over the setup divided by the streams and sockets held.
    rss_per_connection_kib: Option<f64>,
    interrupted: bool,
}

fn total_rss_kib(pids: &[u32]) -> anyhow::Result<Option<u64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut total = 0;
    for pid in pids {
        total += stats::read_vm_rss_kib(*pid)?;
    }
    Ok(Some(total))
}

pub async fn run(a: SseArgs, ctx: Ctx) -> anyhow::Result<()> {
    ensure!(a.events > 0, "--events must be at least 1");
    ensure!(a.rate.is_finite() && a.rate > 0.0, "--rate must be a positive number of events per second");
    ensure!(a.streams + a.sockets > 0, "--streams and --sockets cannot both be 0");
    if !matches!(ctx.procs, crate::ctx::Procs::Single) {
        bail!("the sse scenario runs in one process (no --workers)");
    }
    crate::ctx::warn_if_fd_limit_below(a.streams + a.sockets + 64);
    let interrupt = crate::ctx::interrupt_token();
    let run_id = ctx.run_id.clone();
    let order = format!("lt-{run_id}");
    let room = format!("order:{order}");
    let minter = TokenMinter::new(&a.secret, a.tenant.clone(), 6 * 3600);
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .context("building the HTTP client")?;
    let shared = Arc::new(Shared {
        sse: Recorder::new(),
        sio: Recorder::new(),
        sse_received: AtomicU64::new(0),
        sio_received: AtomicU64::new(0),
        streams_open: AtomicU64::new(0),
        stop: CancellationToken::new(),
    });
    let rss_before = total_rss_kib(&a.pids).context("--pid before setup")?;

    // Setup: at most 100 handshakes in flight.
    let gate = Arc::new(Semaphore::new(100));
    let (ready_tx, mut ready_rx) = mpsc::channel::<Ready>(1024);
    let setup_start = Instant::now();
    let mut sse_tasks = Vec::new();
    let mut sio_tasks = Vec::new();
    let grant = [room.clone()];
    for i in 0..a.streams {
        let target = &a.targets[(i as usize) % a.targets.len()];
        let url = format!("{}/api/v1/realtime/orders/{order}/stream", http_base(target));
        let token = minter.mint(&format!("lts-{run_id}-{i}"), Role::Business)?;
        sse_tasks.push(tokio::spawn(run_stream(
            http.clone(),
            url,
            token,
            shared.clone(),
            ready_tx.clone(),
            gate.clone(),
        )));
    }
    for i in 0..a.sockets {
        let target = &a.targets[(i as usize) % a.targets.len()];
        let url = socket_url(&ws_base(target));
        let token = minter.mint_with_channels(&format!("ltp-{run_id}-{i}"), Role::Passenger, &grant)?;
        sio_tasks.push(tokio::spawn(run_socket(
            url,
            token,
            room.clone(),
            shared.clone(),
            ready_tx.clone(),
            gate.clone(),
        )));
    }
    drop(ready_tx);
    let mut setup_failures = Tally::default();
    let mut answered = 0;
    let setup_deadline = Instant::now() + Duration::from_secs(a.connect_timeout);
    while answered < a.streams + a.sockets {
        tokio::select! {
            () = interrupt.cancelled() => break,
            () = tokio::time::sleep_until(setup_deadline) => break,
            r = ready_rx.recv() => match r {
                Some(Ok(())) => answered += 1,
                Some(Err(code)) => { answered += 1; setup_failures.add(&code); }
                None => break,
            },
        }
    }
    let setup_s = setup_start.elapsed().as_secs_f64();
    if answered < a.streams + a.sockets {
        setup_failures.add_n("setup:unfinished", a.streams + a.sockets - answered);
    }
    let sse_connected = shared.streams_open.load(Ordering::Relaxed);
    let sio_connected = (a.streams + a.sockets).saturating_sub(setup_failures.total()).saturating_sub(sse_connected);
    eprintln!("sse: setup {setup_s:.1} s, {sse_connected} streams and {sio_connected} sockets up ({setup_failures})");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = total_rss_kib(&a.pids).context("--pid after setup")?;
    // Failures after this point (a late ready message) are not counted; drain the channel.
    tokio::spawn(async move { while ready_rx.recv().await.is_some() {} });

    // Publish N events at R/s to the publish target (default: the first target).
    let service = minter.mint(&format!("ltsvc-{run_id}"), Role::Service)?;
    let publish_url =
        format!("{}/api/v1/realtime/orders/{order}", http_base(a.publish_target.as_ref().unwrap_or(&a.targets[0])));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let publish_start = Instant::now();
    let mut posts = Vec::new();
    for n in 0..a.events {
        tokio::select! {
            () = interrupt.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (http, url, token) = (http.clone(), publish_url.clone(), service.clone());
        posts.push(tokio::spawn(async move {
            let body = json!({ "data": { "sentAtMicros": unix_micros(), "n": n } });
            let sent = http
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("http:{}", r.status().as_u16())),
                Err(_) => Err("publish:io".to_owned()),
            }
        }));
    }
    let mut published = 0;
    let mut publish_failures = Tally::default();
    for p in posts {
        match p.await {
            Ok(Ok(())) => published += 1,
            Ok(Err(code)) => publish_failures.add(&code),
            Err(_) => publish_failures.add("publish:task"),
        }
    }
    let publish_s = publish_start.elapsed().as_secs_f64();

    // Drain: until every connected receiver has every accepted event, or the drain ends.
    let drain_end = Instant::now() + Duration::from_secs(a.drain);
    while Instant::now() < drain_end && !interrupt.is_cancelled() {
        let sse_done = shared.sse_received.load(Ordering::Relaxed) >= published * sse_connected;
        let sio_done = shared.sio_received.load(Ordering::Relaxed) >= published * sio_connected;
        if sse_done && sio_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = shared.streams_open.load(Ordering::Relaxed);
    shared.stop.cancel();
    let transport = |tasks: Vec<tokio::task::JoinHandle<u64>>| async move {
        let mut counts = Vec::with_capacity(tasks.len());
        for t in tasks {
            counts.push(t.await.unwrap_or(0));
        }
        counts
    };
    let sse_counts = transport(sse_tasks).await;
    let sio_counts = transport(sio_tasks).await;
    let summarize = |requested: u64, connected: u64, counts: &[u64], rec: &Recorder| {
        let received: u64 = counts.iter().sum();
        let expected = a.events * requested;
        Transport {
            requested,
            connected,
            received,
            expected,
            delivery_ratio: stats::delivery_ratio(expected, received),
            complete_receivers: counts.iter().filter(|&&c| c >= a.events).count() as u64,
            latency_ms: stats::summarize_us(&rec.snapshot()),
        }
    };
    let report = SseReport {
        scenario: "sse",
        run_id,
        targets: a.targets.clone(),
        publish_target: a.publish_target.clone().unwrap_or_else(|| a.targets[0].clone()),
        order_id: order,
        events: a.events,
        published,
        publish_failures,
        setup_failures,
        setup_s: stats::round3(setup_s),
        publish_s: stats::round3(publish_s),
        sse: summarize(a.streams, sse_connected, &sse_counts, &shared.sse),
        socketio: summarize(a.sockets, sio_connected, &sio_counts, &shared.sio),
        sse_streams_held: held,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_connection_kib: rss_before
            .zip(rss_after)
            .and_then(|(b, af)| stats::rss_per_socket_kib(b, af, sse_connected + sio_connected)),
        interrupted: interrupt.is_cancelled(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if report.sse.connected + report.socketio.connected == 0 {
        bail!("no stream or socket was set up");
    }
    Ok(())
}

fn print_table(r: &SseReport) {
    println!(
        "sse run {} on order {}: receivers on {}, publishing to {}",
        r.run_id,
        r.order_id,
        r.targets.join(", "),
        r.publish_target
    );
    println!("setup         {:.1} s, failures {}", r.setup_s, r.setup_failures);
    println!(
        "publish       {}/{} accepted in {:.1} s, failures {}",
        r.published, r.events, r.publish_s, r.publish_failures
    );
    for (name, t) in [("SSE", &r.sse), ("Socket.IO", &r.socketio)] {
        let ratio = t.delivery_ratio.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"));
        println!(
            "{name:<13} {}/{} up  received {}/{} (ratio {ratio})  complete {}  latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}",
            t.connected,
            t.requested,
            t.received,
            t.expected,
            t.complete_receivers,
            t.latency_ms.p50_ms,
            t.latency_ms.p90_ms,
            t.latency_ms.p99_ms,
            t.latency_ms.max_ms
        );
    }
    match (r.rss_before_kib, r.rss_after_kib, r.rss_per_connection_kib) {
        (Some(b), Some(af), Some(per)) => println!("server RSS    {b} KiB -> {af} KiB = {per:.2} KiB per connection"),
        _ => println!("server RSS    not measured (pass --pid)"),
    }
    println!("SSE streams held at the end: {}", r.sse_streams_held);
    let ratio = |t: &Transport| t.delivery_ratio.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"));
    println!(
        "SUMMARY sse streams_held={}/{} sse_p50_ms={:.3} sse_p99_ms={:.3} sse_ratio={} sio_p50_ms={:.3} sio_p99_ms={:.3} sio_ratio={}{}",
        r.sse_streams_held,
        r.sse.requested,
        r.sse.latency_ms.p50_ms,
        r.sse.latency_ms.p99_ms,
        ratio(&r.sse),
        r.socketio.latency_ms.p50_ms,
        r.socketio.latency_ms.p99_ms,
        ratio(&r.socketio),
        if r.interrupted { " interrupted" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_splits_events_across_chunks_and_skips_fields() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.feed(b"retry: 3000\n\ndata: {\"type\":\"connected\"}\n\nid: 7\nda", &mut out);
        assert_eq!(out, vec![r#"{"type":"connected"}"#.to_owned()]);
        out.clear();
        p.feed(b"ta: {\"type\":\"order_update\",\r\ndata:\"x\":1}\r\n\r\n: comment\n\n", &mut out);
        assert_eq!(out, vec!["{\"type\":\"order_update\",\n\"x\":1}".to_owned()]);
    }

    #[test]
    fn reads_sent_at_and_bases() {
        assert_eq!(sent_at(&json!({"sentAtMicros": 5, "n": 1})), Some(5));
        assert_eq!(sent_at(&json!({"n": 1})), None);
        assert_eq!(http_base("ws://127.0.0.1:1/"), "http://127.0.0.1:1");
        assert_eq!(ws_base("http://127.0.0.1:1"), "ws://127.0.0.1:1");
    }
}
