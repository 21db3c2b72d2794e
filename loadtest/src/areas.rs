//! The `areas` scenario: V dispatchers watch live areas (contract §7) of different sizes
//! over Socket.IO while drivers stream (run `generate` beside it for the drivers). Viewer 0
//! watches the whole `--bbox`; the others watch squares from 1 km to a quarter of the box
//! inside it, spread over the targets. Each viewer records the gaps between its frames
//! (the contract: at most one per `intervalMs`), the age of every position it is shown
//! (receipt − `updatedAt`, which the load tool's drivers stamp with their wall clock), and
//! how many drivers its frames carry. Single process.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::ctx::Ctx;
use crate::protocol::{AckOutcome, Incoming, SioClient, socket_url};
use crate::stats::{self, LatencySummary, Recorder, Tally};
use crate::token::{Role, TokenMinter};

/// Arguments of `fleetcast-loadtest areas`.
#[derive(Debug, clap::Args)]
pub struct AreasArgs {
    /// A node (repeat for each; viewers round-robin over them).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Dispatchers, one area each.
    #[arg(long, default_value_t = 50)]
    pub viewers: u32,
    /// `intervalMs` of every area.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// The city box: minLat,minLng,maxLat,maxLng (as `generate`; default Nairobi). Viewer 0
    /// watches all of it (at most 100 km a side).
    #[arg(long, default_value = "-1.35,36.70,-1.20,36.95")]
    pub bbox: String,
    /// Seconds of watching.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// HS256 secret the server verifies tokens with.
    #[arg(long)]
    pub secret: String,
    /// Tenant claim (absent = the server's `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Seconds a connection or an ack may take.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What one viewer saw.
#[derive(Debug, Default)]
struct Seen {
    frames: u64,
    entries: u64,
    left: u64,
    min_gap_ms: Option<u64>,
    snapshot: u64,
    /// From its first frame to its last (frames per second are counted over it: drivers
    /// start and stop while the viewers watch).
    span: Duration,
}

/// The report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AreasReport {
    pub viewers: u32,
    pub interval_ms: u64,
    pub duration_s: u64,
    /// Frames per second of each viewer between its first and last frame: the mean and the
    /// largest.
    pub frames_per_s_mean: f64,
    pub frames_per_s_max: f64,
    /// The smallest gap between two frames of one viewer (≥ the interval by contract).
    pub min_gap_ms: Option<u64>,
    /// Drivers in all frames, and in the whole-box viewer's frames per frame.
    pub entries: u64,
    pub entries_per_frame_whole_box: f64,
    pub left: u64,
    /// Drivers in the whole-box viewer's snapshot.
    pub snapshot_whole_box: u64,
    /// Age of the positions shown (receipt − updatedAt).
    pub age: LatencySummary,
    pub failures: Tally,
}

fn unix_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// The area of viewer `i`: 0 the whole box, others squares of 1 km up to a quarter of the
/// box's height, placed by a fixed sequence inside it.
fn area_of(i: u32, b: [f64; 4]) -> [f64; 4] {
    let [min_lat, min_lng, max_lat, max_lng] = b;
    if i == 0 {
        return [min_lng, min_lat, max_lng, max_lat];
    }
    let h = max_lat - min_lat;
    let side = (0.009 + (h / 4.0 - 0.009) * f64::from(i % 10) / 9.0).min(h);
    let golden = 0.618_033_988_75;
    let fx = (f64::from(i) * golden).fract();
    let fy = (f64::from(i) * golden * golden).fract();
    let lat = min_lat + fy * (h - side);
    let lng = min_lng + fx * ((max_lng - min_lng) - side);
    [lng, lat, lng + side, lat + side]
}

async fn watch(
    url: String,
    token: String,
    area: [f64; 4],
    a: Arc<AreasArgs>,
    ages: Arc<Recorder>,
    stop: CancellationToken,
) -> Result<Seen, String> {
    let timeout = Duration::from_secs(a.connect_timeout);
    let mut c = SioClient::connect(&url, &token, timeout).await.map_err(|e| e.code())?;
    let sub = json!({ "areaId": "lt", "bbox": area, "intervalMs": a.interval_ms });
    let mut seen = Seen::default();
    match c.call("area:subscribe", &sub, timeout).await.map_err(|e| e.code())? {
        AckOutcome::Ok(v) => seen.snapshot = v["drivers"].as_array().map_or(0, |d| d.len() as u64),
        AckOutcome::Err(code) => return Err(code),
    }
    let mut last: Option<tokio::time::Instant> = None;
    let mut first: Option<tokio::time::Instant> = None;
    loop {
        let incoming = tokio::select! {
            () = stop.cancelled() => break,
            m = c.next_incoming() => m.map_err(|e| e.code())?,
        };
        let Incoming::Event { name, data } = incoming else { continue };
        if name != "server:area:update" {
            continue;
        }
        let now = tokio::time::Instant::now();
        let received = unix_micros();
        if let Some(prev) = last {
            let gap = (now - prev).as_millis() as u64;
            seen.min_gap_ms = Some(seen.min_gap_ms.map_or(gap, |m| m.min(gap)));
        }
        last = Some(now);
        first.get_or_insert(now);
        seen.span = now - first.unwrap_or(now);
        seen.frames += 1;
        let drivers = data["drivers"].as_array().map_or(&[][..], Vec::as_slice);
        seen.entries += drivers.len() as u64;
        seen.left += data["left"].as_array().map_or(0, |l| l.len() as u64);
        for d in drivers {
            if let Some(t) = d["updatedAt"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
                ages.record_us(u64::try_from(received - t.timestamp_micros()).unwrap_or(0));
            }
        }
    }
    c.close().await;
    Ok(seen)
}

fn parse_bbox(s: &str) -> anyhow::Result<[f64; 4]> {
    let v: Vec<f64> = s.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<_, _>>().context("--bbox")?;
    let b: [f64; 4] = v.try_into().map_err(|_| anyhow::anyhow!("--bbox needs minLat,minLng,maxLat,maxLng"))?;
    ensure!(b[0] < b[2] && b[1] < b[3], "--bbox needs min below max");
    Ok(b)
}

/// Runs the scenario and prints its report.
pub async fn run(a: AreasArgs, ctx: Ctx) -> anyhow::Result<()> {
    if !matches!(ctx.procs, crate::ctx::Procs::Single) {
        bail!("the areas scenario runs in one process (no --workers)");
    }
    ensure!(a.viewers > 0, "--viewers must be at least 1");
    let bbox = parse_bbox(&a.bbox)?;
    let minter = TokenMinter::new(&a.secret, a.tenant.clone(), 6 * 3600);
    let a = Arc::new(a);
    let ages = Arc::new(Recorder::new());
    let stop = CancellationToken::new();
    let results = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..a.viewers {
        // Distinct users: the contract caps connections per user.
        let token = minter.mint(&format!("lt-{}-viewer-{i}", ctx.run_id), Role::Business)?;
        let url = socket_url(&a.targets[i as usize % a.targets.len()]);
        let (a2, ages, stop, results) = (a.clone(), ages.clone(), stop.clone(), results.clone());
        let area = area_of(i, bbox);
        tasks.push(tokio::spawn(async move {
            let r = watch(url, token, area, a2, ages, stop).await;
            results.lock().await.push((i, r));
        }));
    }
    let interrupt = crate::ctx::interrupt_token();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(a.duration)) => {}
        () = interrupt.cancelled() => {}
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let results = results.lock().await;
    let mut failures = Tally::default();
    let mut rates = Vec::new();
    let (mut entries, mut left, mut min_gap) = (0, 0, None::<u64>);
    let (mut whole_frames, mut whole_entries, mut whole_snapshot) = (0, 0, 0);
    for (i, r) in results.iter() {
        match r {
            Err(code) => failures.add(code),
            Ok(s) => {
                if s.frames > 1 {
                    rates.push((s.frames - 1) as f64 / s.span.as_secs_f64().max(0.001));
                }
                entries += s.entries;
                left += s.left;
                if let Some(g) = s.min_gap_ms {
                    min_gap = Some(min_gap.map_or(g, |m| m.min(g)));
                }
                if *i == 0 {
                    (whole_frames, whole_entries, whole_snapshot) = (s.frames, s.entries, s.snapshot);
                }
            }
        }
    }
    let report = AreasReport {
        viewers: a.viewers,
        interval_ms: a.interval_ms,
        duration_s: a.duration,
        frames_per_s_mean: stats::round3(rates.iter().sum::<f64>() / rates.len().max(1) as f64),
        frames_per_s_max: stats::round3(rates.iter().copied().fold(0.0, f64::max)),
        min_gap_ms: min_gap,
        entries,
        entries_per_frame_whole_box: stats::round3(whole_entries as f64 / whole_frames.max(1) as f64),
        left,
        snapshot_whole_box: whole_snapshot,
        age: stats::summarize_us(&ages.snapshot()),
        failures,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let v: Value = serde_json::to_value(&report)?;
        for (k, v) in v.as_object().into_iter().flatten() {
            println!("{k:>26}  {v}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_areas_lie_inside_the_box_and_grow() {
        let b = [-1.35, 36.70, -1.20, 36.95];
        assert_eq!(area_of(0, b), [36.70, -1.35, 36.95, -1.20]);
        for i in 1..50 {
            let [w, s, e, n] = area_of(i, b);
            assert!(w >= 36.70 && e <= 36.95 + 1e-9 && s >= -1.35 && n <= -1.20 + 1e-9, "{i}");
            assert!(e - w >= 0.009 - 1e-9);
        }
        assert!(area_of(9, b)[2] - area_of(9, b)[0] > area_of(1, b)[2] - area_of(1, b)[0]);
    }
}
