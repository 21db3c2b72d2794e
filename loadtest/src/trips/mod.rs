//! Trip runs, the engine behind `latency`, `fanout`, `burst`, `replay` and `generate`:
//! D trips, each with one driver streaming `driver:location:update` and P subscribers
//! (`passenger:subscribe`, ADMIN tokens so no bookings are needed) timing every
//! `server:location:update` end to end from the `timestamp` the driver stamped.
//!
//! The front-ends only decide *where* sockets connect ([`Placement`]) and *what* drivers send
//! ([`Source`]); this module owns the rest: trips in the database (inserted before, deleted
//! after, by the single process or the parent; none without `--database-url`), the process
//! layout (one process, or a parent and `--workers` children each running the trips
//! `n ≡ index (mod N)` — see `workers`), and the report. Every phase has a deadline; Ctrl-C ends the current phase early.
//!
//! What the front-ends hand over is in [`plan`]; what one process's connection tasks share
//! in `tasks`; each file below imports its siblings, never this one.

mod db;
mod driver;
mod measure;
mod passenger;
pub mod plan;
pub mod report;
pub mod schedule;
mod tasks;

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::time::Instant;

pub use self::plan::{Placement, Source, Spec, TripArgs};
use self::report::{Labels, Partial, TripReport};
use crate::ctx::{Ctx, Procs};
use crate::progress;
use crate::timeline::unix_ms;
use crate::workers::{Fleet, FromWorker, ToWorker};

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
            let result = match &args.database_url {
                Some(url) => {
                    let pool = db::connect_db(url).await?;
                    let insert = db::InsertPlan {
                        sql: &args.insert_sql,
                        tenant: &tenant,
                        run_id: &ctx.run_id,
                        status: &args.trip_status,
                        count: spec.trips,
                    };
                    let result = match db::insert_trips(&pool, &insert).await {
                        Ok(()) => measure_all(&spec, &args, &ctx, setup_budget).await,
                        Err(e) => Err(e),
                    };
                    if args.keep_trips {
                        eprintln!("keeping trips lt-{}-*", ctx.run_id);
                    } else {
                        db::cleanup_trips(&pool, &args.cleanup_sql, &tenant, &ctx.run_id).await;
                    }
                    pool.close().await;
                    result
                }
                None => measure_all(&spec, &args, &ctx, setup_budget).await,
            };
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
    let interrupt = crate::ctx::interrupt_token();
    let Procs::Parent(n) = ctx.procs else {
        let sockets = spec.trips * (1 + u64::from(args.passengers_per_trip));
        crate::ctx::warn_if_fd_limit_below(sockets);
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
