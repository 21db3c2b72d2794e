//! Trip runs, the engine behind `latency`, `fanout`, `burst`, `replay` and `generate`:
//! D trips, each with one driver streaming `driver:location:update` and P subscribers
//! (`passenger:subscribe`, ADMIN tokens so no bookings are needed) timing every
//! `server:location:update` end to end from the `timestamp` the driver stamped.
//!
//! The front-ends only decide *where* sockets connect ([`Placement`]) and *what* drivers send
//! ([`Source`]); this module owns the rest: trips in the database (inserted before, deleted
//! after, by the single process or the parent), the process layout (one process, or a parent
//! and `--workers` children each running the trips `n ≡ index (mod N)` — see `workers`),
//! and the report. Every phase has a deadline; Ctrl-C ends the current phase early.

mod db;
mod driver;
mod measure;
mod passenger;
mod report;
pub mod schedule;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::time::Instant;

pub use self::db::{DEFAULT_CLEANUP_SQL, DEFAULT_INSERT_SQL};
pub use self::report::TripReport;
use self::report::{Labels, Partial};
use self::schedule::{Route, TrackPoint};
use crate::progress::{self, Progress};
use crate::protocol::{AckOutcome, SioClient};
use crate::stats::Recorder;
use crate::timeline::{TimelineRecorder, unix_ms};
use crate::token::Role;
use crate::workers::{Fleet, FromWorker, ToWorker};
use crate::{Ctx, Procs};

/// Options every trip scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub struct TripArgs {
    /// HS256 secret the server verifies tokens with.
    #[arg(long)]
    pub secret: String,
    /// Database the server reads trips from (postgres://… or sqlite://…).
    #[arg(long)]
    pub database_url: String,
    /// Tenant for tokens and trip rows (absent = `default`, and no tenant claim).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Trip insert statement; binds tenant, id, driver id, status, title in that order.
    #[arg(long, default_value = DEFAULT_INSERT_SQL)]
    pub insert_sql: String,
    /// Trip cleanup statement; binds tenant and the run's id pattern `lt-<runid>-%`.
    #[arg(long, default_value = DEFAULT_CLEANUP_SQL)]
    pub cleanup_sql: String,
    /// Status of the inserted trips.
    #[arg(long, default_value = "IN_PROGRESS")]
    pub trip_status: String,
    /// Leave the inserted trips in the database.
    #[arg(long)]
    pub keep_trips: bool,
    /// Subscribers per trip (ADMIN tokens, distinct users).
    #[arg(long, default_value_t = 1)]
    pub passengers_per_trip: u32,
    /// Share of subscribers (0..=1) on Engine.IO long-polling instead of websocket.
    #[arg(long, default_value_t = 0.0)]
    pub polling_share: f64,
    /// New connections per second during setup, over all workers (the default per-address
    /// limit is 100/s with a burst of 1000).
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// Seconds one connection attempt may take.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds to wait for an ack (the contract promises 5).
    #[arg(long, default_value_t = 5)]
    pub ack_timeout: u64,
    /// Seconds subscribers keep listening after the drivers are done.
    #[arg(long, default_value_t = 2)]
    pub drain: u64,
    /// Worker processes sharing the trips (one process may hold ~18,000 sockets).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write an HTML report (latency and throughput per second, inline SVG).
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Which target each socket connects to.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Every driver on one node, every subscriber on another (`latency`).
    Split { drivers: String, passengers: String },
    /// Drivers round-robin over the targets; each trip's subscribers round-robin over the
    /// targets other than its driver's (`fanout` and the rest).
    Spread(Vec<String>),
}

impl Placement {
    fn targets(&self) -> Vec<String> {
        match self {
            Self::Split { drivers, passengers } => vec![drivers.clone(), passengers.clone()],
            Self::Spread(targets) => targets.clone(),
        }
    }

    /// Index into [`Self::targets`] of trip `n`'s driver.
    fn driver_target(&self, n: u64) -> usize {
        match self {
            Self::Split { .. } => 0,
            Self::Spread(t) => usize::try_from(n % t.len().max(1) as u64).unwrap_or(0),
        }
    }

    /// Index into [`Self::targets`] of subscriber `j` of trip `n` (of `per_trip`).
    fn passenger_target(&self, n: u64, j: u64, per_trip: u64) -> usize {
        match self {
            Self::Split { .. } => 1,
            Self::Spread(t) if t.len() < 2 => 0,
            Self::Spread(t) => {
                let others = t.len() as u64 - 1;
                let d = self.driver_target(n) as u64;
                usize::try_from((d + 1 + (n * per_trip + j) % others) % t.len() as u64).unwrap_or(0)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Split { drivers, passengers } => format!("drivers on {drivers}, subscribers on {passengers}"),
            Self::Spread(t) => format!("drivers over {}; subscribers on the other targets", t.join(", ")),
        }
    }
}

/// What the drivers send.
#[derive(Debug, Clone)]
pub enum Source {
    /// An aggregate steady rate spread evenly over the drivers.
    Steady { rate: f64 },
    /// Every driver every `every`, moving along its route (`routes[n % len]`).
    Routes { routes: Arc<[Route]>, every: Duration },
    /// Recorded tracks (one per trip), time-scaled by `speedup`.
    Tracks { tracks: Arc<[Arc<[TrackPoint]>]>, speedup: f64 },
    /// As fast as possible with at most `in_flight` unanswered updates per driver.
    Flood { in_flight: usize },
}

/// One trip run as a front-end describes it.
pub struct Spec {
    pub scenario: &'static str,
    pub trips: u64,
    pub placement: Placement,
    pub source: Source,
    /// Longest sending window.
    pub duration: Duration,
    pub source_label: String,
    pub target_rate: Option<f64>,
}

/// Counters and histograms every connection task of a process writes to.
struct Shared {
    e2e: Recorder,
    ack: Recorder,
    retry_after: Recorder,
    timeline: TimelineRecorder,
    progress: Arc<Progress>,
    /// Updates not newer than the previous one a subscriber saw (duplicates, reordering).
    out_of_order: AtomicU64,
    /// Updates for a trip the subscriber did not subscribe to: a room or tenant leak.
    foreign: AtomicU64,
    /// `server:location:update` without a parseable `tripId`/`updatedAt`.
    unparsable: AtomicU64,
}

/// A task's setup result, sent once.
struct Ready {
    role: Role,
    /// Local trip index.
    local: usize,
    outcome: Result<(), String>,
}

/// Runs a trip scenario in this process's role and prints (or, as a worker, sends) its report.
pub async fn run(spec: Spec, args: TripArgs, ctx: Ctx) -> anyhow::Result<()> {
    anyhow::ensure!(spec.trips > 0, "a run needs at least one trip");
    anyhow::ensure!(args.ramp.is_finite() && args.ramp > 0.0, "--ramp must be a positive number");
    anyhow::ensure!((0.0..=1.0).contains(&args.polling_share), "--polling-share must be within 0..=1");
    let setup_budget =
        Duration::from_secs_f64((spec.trips * (1 + u64::from(args.passengers_per_trip))) as f64 / args.ramp)
            + Duration::from_secs(args.connect_timeout + args.ack_timeout + 30);
    match &ctx.procs {
        Procs::Worker(slot, link) => {
            let mut link = link.lock().await;
            let stop = link.stop.clone();
            let index = slot.index;
            let wait = setup_budget + Duration::from_secs(60);
            let partial = measure::run_local(&spec, &args, &ctx, progress::Sink::Parent, &stop, async |ready| {
                link.barrier(json!({ "worker": index, "ready": ready }), wait).await
            })
            .await?;
            crate::workers::send_to_parent(&FromWorker::Result(serde_json::to_value(&partial)?));
            Ok(())
        }
        Procs::Single | Procs::Parent(_) => {
            let tenant = args.tenant.clone().unwrap_or_else(|| "default".to_owned());
            let pool = db::connect_db(&args.database_url).await?;
            let insert = db::InsertPlan {
                sql: &args.insert_sql,
                tenant: &tenant,
                run_id: &ctx.run_id,
                status: &args.trip_status,
                count: spec.trips,
            };
            let inserted = db::insert_trips(&pool, &insert).await;
            let result = match inserted {
                Ok(()) => measure_all(&spec, &args, &ctx, setup_budget).await,
                Err(e) => Err(e),
            };
            if args.keep_trips {
                eprintln!("keeping trips lt-{}-*", ctx.run_id);
            } else {
                db::cleanup_trips(&pool, &args.cleanup_sql, &tenant, &ctx.run_id).await;
            }
            pool.close().await;
            let labels = Labels {
                scenario: spec.scenario.to_owned(),
                run_id: ctx.run_id.clone(),
                placement: spec.placement.describe(),
                source: spec.source_label.clone(),
                workers: args.workers.max(1),
                target_rate: spec.target_rate,
            };
            let report = TripReport::new(labels, result?);
            if let Some(path) = &args.report {
                std::fs::write(path, crate::html::render(&report))
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("report written to {}", path.display());
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                report.print_table();
            }
            anyhow::ensure!(report.drivers_ready > 0, "no driver completed setup");
            Ok(())
        }
    }
}

/// The measurement itself, in this process or spread over workers.
async fn measure_all(spec: &Spec, args: &TripArgs, ctx: &Ctx, setup_budget: Duration) -> anyhow::Result<Partial> {
    let interrupt = crate::interrupt_token();
    let Procs::Parent(n) = ctx.procs else {
        let sockets = spec.trips * (1 + u64::from(args.passengers_per_trip));
        crate::warn_if_fd_limit_below(sockets);
        return measure::run_local(spec, args, ctx, progress::Sink::Local, &interrupt, async |_| Some(unix_ms() + 200))
            .await;
    };
    let mut fleet = Fleet::spawn(spec.scenario, n, &ctx.run_id)?;
    let ready = fleet.wait_ready(Instant::now() + setup_budget, &interrupt).await;
    eprintln!("{}: {} of {n} workers ready", spec.scenario, ready.len());
    // Half a second for the `go` line to reach every worker before the shared start.
    fleet.broadcast(&ToWorker::Go { start_unix_ms: unix_ms() + 500 }).await;
    let run_budget = spec.duration + Duration::from_secs(args.ack_timeout + args.drain + 60);
    let results = fleet.wait_results(Instant::now() + run_budget, &interrupt).await;
    let failures = fleet.failures.clone();
    fleet.finish().await;
    let mut total = Partial::empty(unix_ms());
    if let Some(first) = results.first() {
        total.timeline.start_unix_ms = first["timeline"]["startUnixMs"].as_u64().unwrap_or(0);
    }
    total.setup_failures.merge(&failures);
    for v in results {
        let p: Partial = serde_json::from_value(v).context("a worker's result")?;
        total.merge(&p);
    }
    total.interrupted |= interrupt.is_cancelled();
    Ok(total)
}

/// Connects and sends `event {tripId}` with an ack; the error is the code setup reports.
async fn join_trip(
    url: &str,
    token: &str,
    connect_timeout: Duration,
    event: &str,
    trip_id: &str,
    ack_timeout: Duration,
) -> Result<SioClient, String> {
    let mut client = SioClient::connect(url, token, connect_timeout).await.map_err(|e| e.code())?;
    let data = json!({ "tripId": trip_id });
    match client.call(event, &data, ack_timeout).await {
        Ok(AckOutcome::Ok(_)) => Ok(client),
        Ok(AckOutcome::Err(code)) => {
            client.close().await;
            Err(code)
        }
        Err(e) => Err(e.code()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_avoid_their_drivers_node() {
        let p = Placement::Spread(vec!["a".into(), "b".into(), "c".into()]);
        let mut per_target = [0u32; 3];
        for n in 0..300u64 {
            let d = p.driver_target(n);
            for j in 0..3 {
                let t = p.passenger_target(n, j, 3);
                assert_ne!(t, d, "trip {n} subscriber {j}");
                per_target[t] += 1;
            }
        }
        // 900 subscribers over 3 nodes, evenly.
        assert_eq!(per_target, [300, 300, 300]);
        let split = Placement::Split { drivers: "a".into(), passengers: "b".into() };
        assert_eq!((split.driver_target(5), split.passenger_target(5, 2, 3)), (0, 1));
        let one = Placement::Spread(vec!["a".into()]);
        assert_eq!(one.passenger_target(4, 1, 2), 0);
    }
}
