//! One process's share of a trip run, in phases that each have a deadline: connect drivers
//! then subscribers at the ramp rate; meet the other processes at the barrier (which yields
//! the shared wall-clock start); send on each driver's schedule; let deliveries drain; stop
//! every task and add up their reports into a [`Partial`].
//!
//! One task per connection; histograms and counters are shared (a `Mutex` held for one
//! record, atomics), so memory does not grow with traffic. Trips are numbered run-wide; this
//! process drives trips `n ≡ slot.index (mod slot.count)`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;

use super::db;
use super::driver::{DriverPlan, DriverReport, Starts, driver_task};
use super::passenger::{PassengerPlan, PassengerReport, passenger_task};
use super::plan::{Source, Spec, TripArgs};
use super::report::Partial;
use super::schedule::{Path, Schedule, Warp};
use super::tasks::{Ready, Shared};
use crate::ctx::Ctx;
use crate::progress::{self, Progress};
use crate::protocol::socket_url;
use crate::stats::{Recorder, Tally, WireHistogram};
use crate::timeline::{TimelineRecorder, unix_ms};
use crate::token::{Role, TokenMinter};
use crate::workers::Slot;

/// Runs this process's trips. `barrier` gets the setup counts and returns the shared start
/// (Unix ms), or `None` to skip sending (the parent gave up or stopped the run).
#[allow(clippy::too_many_lines)] // one linear story of phases; split up, the deadlines scatter
pub(super) async fn run_local(
    spec: &Spec,
    args: &TripArgs,
    ctx: &Ctx,
    sink: progress::Sink,
    interrupt: &CancellationToken,
    barrier: impl AsyncFnOnce(Value) -> Option<u64>,
) -> anyhow::Result<Partial> {
    let slot = ctx.slot();
    let run_id = &ctx.run_id;
    let trips: Vec<u64> = (0..spec.trips).filter(|n| slot.owns(*n)).collect();
    let drivers = trips.len();
    let per_trip = u64::from(args.passengers_per_trip);
    let total = drivers + drivers * usize::try_from(per_trip).unwrap_or(0);
    let ramp = args.ramp / f64::from(slot.count);
    let connect_timeout = Duration::from_secs(args.connect_timeout);
    let ack_timeout = Duration::from_secs(args.ack_timeout);
    let setup_time = Duration::from_secs_f64(total as f64 / ramp);
    let valid_for = setup_time.as_secs() + spec.duration.as_secs() + 3600;
    let minter = TokenMinter::new(&args.secret, args.tenant.clone(), valid_for);
    let urls: Vec<Arc<str>> = spec.placement.targets().iter().map(|t| socket_url(t).into()).collect();
    let progress = Arc::new(Progress::default());
    progress.set_phase("setup");
    let shared = Arc::new(Shared {
        e2e: Recorder::new(),
        ack: Recorder::new(),
        retry_after: Recorder::new(),
        timeline: TimelineRecorder::new(unix_ms()),
        progress: Arc::clone(&progress),
        out_of_order: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        unparsable: AtomicU64::new(0),
        parked: std::sync::Mutex::new(Vec::new()),
    });
    let stop_progress = CancellationToken::new();
    let reporter = progress::spawn(spec.scenario, Arc::clone(&progress), sink, stop_progress.clone());
    let in_flight = match spec.source {
        Source::Flood { in_flight } => Some(in_flight.max(1)),
        _ => None,
    };
    // Polling subscribers are picked evenly: subscriber k is polling when the running
    // share crosses an integer.
    let polling = |k: u64| {
        let f = args.polling_share;
        ((k + 1) as f64 * f).floor() > (k as f64 * f).floor()
    };

    // One report per task; capacity only smooths bursts of handshakes finishing together.
    let (ready_tx, mut ready_rx) = mpsc::channel::<Ready>(1024);
    let (start_tx, start_rx) = watch::channel::<Option<Starts>>(None);
    let stop_drivers = interrupt.child_token();
    let stop_passengers = CancellationToken::new();
    let mut driver_tasks: JoinSet<DriverReport> = JoinSet::new();
    let mut passenger_tasks: JoinSet<PassengerReport> = JoinSet::new();

    // Phase 1: connect drivers, then subscribers, at the ramp rate.
    let mut p = Partial::empty(unix_ms());
    p.drivers = drivers as u64;
    p.passengers = drivers as u64 * per_trip;
    let mut subs_per_trip = vec![0u64; drivers];
    let mut driver_ready = vec![false; drivers];
    let mut reported = 0usize;
    let mut spawned = 0usize;
    let setup_started = Instant::now();
    let setup_deadline = setup_started + setup_time + connect_timeout + ack_timeout + Duration::from_secs(5);
    let mut spawn_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / ramp));
    spawn_tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    while reported < total {
        tokio::select! {
            _ = spawn_tick.tick(), if spawned < total => {
                if spawned < drivers {
                    let n = trips[spawned];
                    let plan = DriverPlan {
                        local: spawned,
                        trip_id: db::trip_id(run_id, n),
                        url: Arc::clone(&urls[spec.placement.driver_target(n)]),
                        token: minter.mint(&db::driver_id(run_id, n), Role::Driver)?,
                        connect_timeout,
                        ack_timeout,
                        in_flight,
                    };
                    let (ready, start, shared) = (ready_tx.clone(), start_rx.clone(), Arc::clone(&shared));
                    driver_tasks.spawn(driver_task(plan, ready, start, shared, stop_drivers.clone()));
                } else {
                    // Subscribers go round the trips, so every trip gets its first one early.
                    let k = (spawned - drivers) as u64;
                    let (local, j) = (usize::try_from(k % drivers as u64).unwrap_or(0), k / drivers as u64);
                    let n = trips[local];
                    let is_polling = polling(n * per_trip + j);
                    p.polling_passengers += u64::from(is_polling);
                    let plan = PassengerPlan {
                        trip: local,
                        trip_id: db::trip_id(run_id, n),
                        url: Arc::clone(&urls[spec.placement.passenger_target(n, j, per_trip)]),
                        token: minter.mint(&format!("ltp-{run_id}-{n}-{j}"), Role::Admin)?,
                        connect_timeout,
                        ack_timeout,
                        polling: is_polling,
                    };
                    passenger_tasks.spawn(passenger_task(plan, ready_tx.clone(), Arc::clone(&shared), stop_passengers.clone()));
                }
                spawned += 1;
            }
            Some(ready) = ready_rx.recv() => {
                reported += 1;
                match (ready.role, ready.outcome) {
                    (Role::Driver, Ok(())) => {
                        p.drivers_ready += 1;
                        progress::bump(&progress.connected);
                        if let Some(r) = driver_ready.get_mut(ready.local) { *r = true; }
                    }
                    (_, Ok(())) => {
                        p.passengers_ready += 1;
                        progress::bump(&progress.connected);
                        if let Some(n) = subs_per_trip.get_mut(ready.local) { *n += 1; }
                    }
                    (role, Err(code)) => {
                        progress::bump(&progress.failed);
                        let who = if role == Role::Driver { "driver" } else { "passenger" };
                        p.setup_failures.add(&format!("{who}:{code}"));
                    }
                }
            }
            () = sleep_until(setup_deadline) => {
                eprintln!("setup deadline reached: {reported} of {total} connections reported");
                p.setup_failures.add_n("setup:unfinished", (total - reported) as u64);
                break;
            }
            () = interrupt.cancelled() => {
                p.interrupted = true;
                break;
            }
        }
    }
    drop(ready_rx);
    p.setup_s = setup_started.elapsed().as_secs_f64();

    // Phase 2: the barrier, then sending on each ready driver's schedule.
    progress.set_phase("ready");
    let ready_info = json!({ "drivers": p.drivers_ready, "passengers": p.passengers_ready });
    let start_ms = if p.interrupted { None } else { barrier(ready_info).await };
    let mut driver_reports = Vec::with_capacity(drivers);
    if let Some(start_ms) = start_ms.filter(|_| p.drivers_ready > 0) {
        shared.timeline.restart(start_ms);
        let start = Instant::now() + Duration::from_millis(start_ms.saturating_sub(unix_ms()));
        let schedules = schedules(spec, slot, &trips, &driver_ready, start);
        let _ = start_tx.send(Some(schedules));
        progress.set_phase("sending");
        let deadline = start + spec.duration + ack_timeout + Duration::from_secs(5);
        let collect = async {
            while let Some(joined) = driver_tasks.join_next().await {
                if let Ok(report) = joined {
                    driver_reports.push(report);
                }
            }
        };
        if tokio::time::timeout_at(deadline, collect).await.is_err() {
            eprintln!("warning: some drivers did not finish in time");
        }
        p.interrupted |= interrupt.is_cancelled();
        let end = driver_reports.iter().filter_map(|r| r.stopped_at).max();
        p.window_s = end.map_or(0.0, |end| end.saturating_duration_since(start).as_secs_f64());

        // Phase 3: let in-flight deliveries land, then stop listening.
        progress.set_phase("draining");
        tokio::select! {
            () = sleep_until(Instant::now() + Duration::from_secs(args.drain)) => {}
            () = interrupt.cancelled() => p.interrupted = true,
        }
    }

    // Phase 4: stop every task (bounded), then add everything up.
    stop_drivers.cancel();
    stop_passengers.cancel();
    shared.close_parked().await;
    drop(start_tx);
    let mut accepted_per_trip = vec![0u64; drivers];
    let mut accepted_stamps: Vec<HashSet<i64>> = vec![HashSet::new(); drivers];
    for r in &mut driver_reports {
        if let Some(set) = accepted_stamps.get_mut(r.local) {
            set.extend(r.accepted_stamps.drain(..));
        }
        p.sent += r.sent;
        p.accepted += r.accepted;
        p.ack_errors.merge(&r.errors);
        if let Some(a) = accepted_per_trip.get_mut(r.local) {
            *a = r.accepted;
        }
        if let Some(code) = &r.disconnect {
            p.disconnects.add(&format!("driver:{code}"));
        }
    }
    let mut disconnects = Tally::default();
    let subscribers = &mut p.subscribers;
    let (matched_total, unexpected_total) = (&mut p.matched, &mut p.unexpected);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(joined) = passenger_tasks.join_next().await {
            let Ok(r) = joined else { continue };
            if let Some(code) = r.disconnect {
                disconnects.add(&format!("passenger:{code}"));
            }
            if let Some(received) = r.received {
                // Deliveries count when they match an accepted update of the trip, once each;
                // the rest (updates refused or unacknowledged yet written, duplicates) apart.
                let accepted = accepted_stamps.get(r.trip);
                let matched: HashSet<i64> =
                    r.delivered.iter().copied().filter(|t| accepted.is_some_and(|a| a.contains(t))).collect();
                let matched = u64::try_from(matched.len()).unwrap_or(u64::MAX);
                *matched_total += matched;
                *unexpected_total += received.saturating_sub(matched);
                subscribers.add(accepted_per_trip.get(r.trip).copied().unwrap_or(0), matched);
            }
        }
        while driver_tasks.join_next().await.is_some() {}
    })
    .await;
    passenger_tasks.abort_all();
    driver_tasks.abort_all();
    p.disconnects.merge(&disconnects);
    p.expected = accepted_per_trip.iter().zip(&subs_per_trip).map(|(a, s)| a * s).sum();
    p.received = shared.progress.received.load(Ordering::Relaxed);
    p.out_of_order = shared.out_of_order.load(Ordering::Relaxed);
    p.foreign = shared.foreign.load(Ordering::Relaxed);
    p.unparsable = shared.unparsable.load(Ordering::Relaxed);
    p.e2e = WireHistogram(shared.e2e.snapshot());
    p.ack = WireHistogram(shared.ack.snapshot());
    p.retry_after = WireHistogram(shared.retry_after.snapshot());
    p.timeline = shared.timeline.snapshot();
    stop_progress.cancel();
    let _ = reporter.await;
    Ok(p)
}

/// Each ready driver's schedule. Drivers share the run's rate evenly: with `N` processes a
/// driver of rank `r` here is offset by `(r·N + index)` steps of the run-wide spacing, so
/// the updates of all processes interleave instead of coinciding.
fn schedules(spec: &Spec, slot: Slot, trips: &[u64], ready: &[bool], start: Instant) -> Starts {
    let ready_count = ready.iter().filter(|r| **r).count().max(1) as f64;
    let (n_procs, index) = (f64::from(slot.count), f64::from(slot.index));
    let end = start + spec.duration;
    let mut rank = 0.0;
    let mut out = Vec::with_capacity(trips.len());
    for (local, n) in trips.iter().enumerate() {
        if !ready.get(local).copied().unwrap_or(false) {
            out.push(None);
            continue;
        }
        let step = rank * n_procs + index;
        rank += 1.0;
        out.push(Some(match &spec.source {
            Source::Steady { rate, step: over } => {
                let spacing = Duration::from_secs_f64(1.0 / rate);
                Schedule::Periodic {
                    first: start + spacing.mul_f64(step),
                    period: spacing.mul_f64(ready_count * n_procs),
                    end,
                    path: Path::Lane(*n),
                    k: 0,
                    warp: over.map(|o| Warp { from: start + o.from, to: start + o.to, factor: o.factor }),
                }
            }
            Source::Routes { routes, every } => Schedule::Periodic {
                first: start + every.mul_f64(step / (ready_count * n_procs)),
                period: *every,
                end,
                path: Path::Route(routes[usize::try_from(*n).unwrap_or(0) % routes.len().max(1)]),
                k: 0,
                warp: None,
            },
            Source::Tracks { tracks, speedup } => Schedule::Track {
                start,
                speedup: *speedup,
                end,
                points: Arc::clone(&tracks[usize::try_from(*n).unwrap_or(0) % tracks.len().max(1)]),
                k: 0,
            },
            Source::Flood { .. } => Schedule::Flood { end, trip: *n, k: 0 },
        }));
    }
    out.into()
}
