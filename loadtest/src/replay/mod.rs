//! The `replay` scenario: recorded location streams (NDJSON or GPX) replayed against the
//! cluster at `--speedup`, one load driver per recorded (driver, trip), with subscribers
//! timing each update end to end like `fanout`.
//!
//! This module owns reading the file and turning records into time-ordered tracks; the
//! parsers live in [`ndjson`] and [`gpx`], what they produce in [`record`]. Recorded ids are
//! not sent: each track becomes a run trip `lt-<runid>-<n>` driven by `ltd-<runid>-<n>` (the
//! server checks that a driver owns its trip, so the run inserts its own), and `timestamp`
//! is the wall clock at send (the server refuses times more than 60 s ahead, and the
//! latency is measured from it).

pub mod gpx;
pub mod ndjson;
pub mod record;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};

use self::record::{Parsed, Record};
use crate::ctx::Ctx;
use crate::trips::schedule::TrackPoint;
use crate::trips::{self, Placement, Source, Spec, TripArgs};

/// Arguments of `fleetcast-loadtest replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A node (repeat for each; drivers round-robin, subscribers on the other nodes).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// The recording: NDJSON (`{driverId, tripId?, t, lat, lng, speed?, heading?}` a line)
    /// or GPX (every `<trk>` one driver).
    #[arg(long)]
    pub file: PathBuf,
    /// `ndjson`, `gpx`, or `auto` (by extension, else by content).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Time scale: 10 plays ten recorded seconds in one.
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Stop after this many seconds even if the recording goes on.
    #[arg(long)]
    pub duration: Option<u64>,
    #[command(flatten)]
    pub common: TripArgs,
}

/// Groups records by (driver, trip) in a stable order, each group sorted by time, with
/// times relative to the earliest record of the whole recording.
pub fn tracks(records: Vec<Record>) -> Vec<Arc<[TrackPoint]>> {
    let t0 = records.iter().map(|r| r.t).fold(f64::INFINITY, f64::min);
    let mut groups: BTreeMap<(String, Option<String>), Vec<TrackPoint>> = BTreeMap::new();
    for r in records {
        groups.entry((r.driver, r.trip)).or_default().push(TrackPoint { t: r.t - t0, fix: r.fix });
    }
    groups
        .into_values()
        .map(|mut points| {
            points.sort_by(|a, b| a.t.total_cmp(&b.t));
            points.into()
        })
        .collect()
}

/// Reads and parses the recording.
pub fn load(path: &std::path::Path, format: &str) -> anyhow::Result<Parsed> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let is_gpx = match format {
        "gpx" => true,
        "ndjson" | "jsonl" => false,
        "auto" => ext == "gpx" || (ext != "ndjson" && ext != "jsonl" && text.trim_start().starts_with('<')),
        other => anyhow::bail!("--format must be ndjson, gpx or auto, not {other:?}"),
    };
    Ok(if is_gpx { gpx::parse(&text) } else { ndjson::parse(&text) })
}

pub async fn run(a: ReplayArgs, ctx: Ctx) -> anyhow::Result<()> {
    ensure!(a.speedup.is_finite() && a.speedup > 0.0, "--speedup must be a positive number");
    let parsed = load(&a.file, &a.format)?;
    if parsed.skipped > 0 && !matches!(ctx.procs, crate::ctx::Procs::Worker(..)) {
        eprintln!(
            "replay: skipped {} unusable records (first: {})",
            parsed.skipped,
            parsed.first_error.as_deref().unwrap_or("?")
        );
    }
    let count = parsed.records.len();
    ensure!(count > 0, "{}: no usable location records", a.file.display());
    let tracks: Vec<Arc<[TrackPoint]>> = tracks(parsed.records);
    let span = tracks.iter().filter_map(|t| t.last()).map(|p| p.t).fold(0.0, f64::max) / a.speedup;
    let cap = a.duration.map_or(f64::INFINITY, |d| d as f64);
    let window = Duration::from_secs_f64(span.min(cap) + 1.0);
    let source_label = format!(
        "{} records in {} tracks from {}, {:.1} s at speed-up {} ({:.1} updates/s)",
        count,
        tracks.len(),
        a.file.display(),
        window.as_secs_f64(),
        a.speedup,
        count as f64 / window.as_secs_f64()
    );
    let spec = Spec {
        scenario: "replay",
        trips: tracks.len() as u64,
        placement: Placement::Spread(a.targets.clone()),
        source: Source::Tracks { tracks: tracks.into(), speedup: a.speedup },
        duration: window,
        source_label,
        target_rate: None,
    };
    trips::run(spec, a.common, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trips::schedule::Fix;

    #[test]
    fn groups_records_into_time_ordered_tracks() {
        let fix = Fix { lat: 0.0, lng: 0.0, speed: None, heading: None };
        let r = |d: &str, trip: Option<&str>, t: f64| Record { driver: d.into(), trip: trip.map(Into::into), t, fix };
        let records =
            vec![r("b", None, 105.0), r("a", Some("t1"), 102.0), r("a", Some("t1"), 100.0), r("a", Some("t2"), 101.0)];
        let tracks = tracks(records);
        assert_eq!(tracks.len(), 3);
        let times: Vec<Vec<f64>> = tracks.iter().map(|t| t.iter().map(|p| p.t).collect()).collect();
        assert_eq!(times, vec![vec![0.0, 2.0], vec![1.0], vec![5.0]]);
    }
}
