//! The `latency` scenario: cross-node location delivery, measured end to end.
//!
//! Setup inserts D trips (one driver each) straight into the database, connects each driver
//! to the driver node (`driver:connect`) and P ADMIN "passengers" per trip to the passenger
//! node (`passenger:subscribe`). Then drivers emit `driver:location:update` with acks at an
//! aggregate steady rate, stamping `timestamp` with the wall clock (µs); passengers read
//! `updatedAt` back from `server:location:update` and record receive time − `updatedAt`.
//! Client and server share this machine's clock, so no clock sync is needed.
//!
//! One task per connection; histograms and counters are shared (a `Mutex` held for one
//! record, atomics), so memory does not grow with connections. Every phase has a deadline
//! and Ctrl-C ends the current phase early; the trips it inserted are deleted at the end
//! (unless `--keep-trips`), whatever happened in between.

mod driver;
mod passenger;
mod trips;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;

use self::driver::{DriverPlan, DriverReport, Start, driver_task};
use self::passenger::{PassengerPlan, PassengerReport, passenger_task};
use self::trips::{DEFAULT_CLEANUP_SQL, DEFAULT_INSERT_SQL, Trip, cleanup_trips, connect_db, insert_trips};
use crate::protocol::{AckOutcome, SioClient, socket_url};
use crate::stats::{self, LatencySummary, Recorder, Tally};
use crate::token::{Role, TokenMinter};

/// Arguments of `fleetcast-loadtest latency`.
#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Node the drivers connect to, e.g. ws://127.0.0.1:3001.
    #[arg(long)]
    pub driver_target: String,
    /// Node the passengers connect to, e.g. ws://127.0.0.1:3002.
    #[arg(long)]
    pub passenger_target: String,
    /// Number of drivers, one trip each.
    #[arg(long, default_value_t = 10)]
    pub drivers: u32,
    /// Subscribers per trip (ADMIN tokens, distinct users).
    #[arg(long, default_value_t = 1)]
    pub passengers_per_trip: u32,
    /// Aggregate location updates per second, spread evenly over drivers. Per driver the
    /// contract's defaults allow one per 500 ms and 90 per minute (1.5/s).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of steady sending.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
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
    /// New connections per second during setup (the default per-address limit is 100/s).
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// Seconds one connection attempt may take.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds to wait for an ack (the contract promises 5).
    #[arg(long, default_value_t = 5)]
    pub ack_timeout: u64,
    /// Seconds passengers keep listening after the drivers are done.
    #[arg(long, default_value_t = 2)]
    pub drain: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Counters and histograms every connection task writes to.
struct Shared {
    e2e: Recorder,
    ack: Recorder,
    received: AtomicU64,
    /// Updates not newer than the previous one a passenger saw (duplicates or reordering).
    out_of_order: AtomicU64,
    /// Updates for a trip the passenger did not subscribe to: a room or tenant leak.
    foreign: AtomicU64,
    /// `server:location:update` without a parseable `tripId`/`updatedAt`.
    unparsable: AtomicU64,
}

/// A task's setup result, sent once.
struct Ready {
    role: Role,
    trip: usize,
    outcome: Result<(), String>,
}

/// The report, printed as a table or as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LatencyReport {
    scenario: &'static str,
    run_id: String,
    driver_target: String,
    passenger_target: String,
    drivers: u64,
    drivers_ready: u64,
    passengers: u64,
    passengers_ready: u64,
    setup_failures: Tally,
    send_window_s: f64,
    target_rate: f64,
    achieved_rate: f64,
    accepted_rate: f64,
    sent: u64,
    accepted: u64,
    ack_errors: Tally,
    expected_deliveries: u64,
    received_deliveries: u64,
    delivery_ratio: Option<f64>,
    out_of_order: u64,
    foreign_trip: u64,
    unparsable: u64,
    e2e_ms: LatencySummary,
    ack_ms: LatencySummary,
    disconnects: Tally,
    interrupted: bool,
}

/// Runs the scenario and prints its report. Trips are removed afterwards even on failure.
pub async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    if args.drivers == 0 {
        bail!("--drivers must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of updates per second");
    }
    if !(args.ramp.is_finite() && args.ramp > 0.0) {
        bail!("--ramp must be a positive number of connections per second");
    }
    if args.duration == 0 {
        bail!("--duration must be at least 1 second");
    }
    let per_driver_interval = f64::from(args.drivers) / args.rate;
    if per_driver_interval < 60.0 / 90.0 {
        eprintln!(
            "warning: each driver sends every {per_driver_interval:.3} s; the contract's default \
             limits (500 ms minimum interval, 90/min) will reject some with RATE_LIMITED — \
             add drivers or lower --rate"
        );
    }
    let sockets = u64::from(args.drivers) * (1 + u64::from(args.passengers_per_trip));
    crate::warn_if_fd_limit_below(sockets);

    let run_id = crate::run_id();
    let tenant = args.tenant.clone().unwrap_or_else(|| "default".to_owned());
    let pool = connect_db(&args.database_url).await?;
    let trips = insert_trips(&pool, &args, &tenant, &run_id).await;
    let result = match trips {
        Ok(trips) => measure(&args, &run_id, &trips).await,
        Err(e) => Err(e),
    };
    if args.keep_trips {
        eprintln!("keeping trips lt-{run_id}-*");
    } else {
        cleanup_trips(&pool, &args.cleanup_sql, &tenant, &run_id).await;
    }
    pool.close().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if report.drivers_ready == 0 {
        bail!("no driver completed setup");
    }
    Ok(())
}

/// Setup, steady sending, drain, tally; returns the report.
// One linear story of phases, each with its deadline; split up, the deadlines scatter.
#[allow(clippy::too_many_lines)]
async fn measure(args: &LatencyArgs, run_id: &str, trips: &[Trip]) -> anyhow::Result<LatencyReport> {
    let connect_timeout = Duration::from_secs(args.connect_timeout);
    let ack_timeout = Duration::from_secs(args.ack_timeout);
    let duration = Duration::from_secs(args.duration);
    let drivers = trips.len();
    let per_trip = usize::try_from(args.passengers_per_trip).unwrap_or(0);
    let total = drivers + drivers * per_trip;
    let setup_time = Duration::from_secs_f64(total as f64 / args.ramp);
    let minter = TokenMinter::new(&args.secret, args.tenant.clone(), setup_time.as_secs() + args.duration + 3600);
    let driver_url: Arc<str> = socket_url(&args.driver_target).into();
    let passenger_url: Arc<str> = socket_url(&args.passenger_target).into();
    let interrupt = crate::interrupt_token();

    let shared = Arc::new(Shared {
        e2e: Recorder::new(),
        ack: Recorder::new(),
        received: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        unparsable: AtomicU64::new(0),
    });
    // One report per task; capacity only smooths bursts of handshakes finishing together.
    let (ready_tx, mut ready_rx) = mpsc::channel::<Ready>(1024);
    let (start_tx, start_rx) = watch::channel::<Option<Start>>(None);
    let stop_drivers = interrupt.child_token();
    let stop_passengers = CancellationToken::new();
    let mut driver_tasks: JoinSet<DriverReport> = JoinSet::new();
    let mut passenger_tasks: JoinSet<PassengerReport> = JoinSet::new();

    // Phase 1: connect drivers, then passengers, at the ramp rate.
    let mut subs_per_trip = vec![0u64; drivers];
    let mut ready_drivers: Vec<usize> = Vec::with_capacity(drivers);
    let mut setup_failures = Tally::default();
    let (mut drivers_ready, mut passengers_ready, mut reported) = (0u64, 0u64, 0usize);
    let mut spawned = 0usize;
    let mut interrupted = false;
    let setup_started = Instant::now();
    let setup_deadline = setup_started + setup_time + connect_timeout + ack_timeout + Duration::from_secs(5);
    let mut spawn_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.ramp));
    spawn_tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    while reported < total {
        tokio::select! {
            _ = spawn_tick.tick(), if spawned < total => {
                if spawned < drivers {
                    let trip = &trips[spawned];
                    let plan = DriverPlan {
                        trip: spawned,
                        trip_id: trip.id.clone(),
                        url: Arc::clone(&driver_url),
                        token: minter.mint(&trip.driver_id, Role::Driver)?,
                        connect_timeout,
                        ack_timeout,
                        duration,
                    };
                    driver_tasks.spawn(driver_task(
                        plan,
                        ready_tx.clone(),
                        start_rx.clone(),
                        Arc::clone(&shared),
                        stop_drivers.clone(),
                    ));
                } else {
                    let k = spawned - drivers;
                    let trip = k % drivers;
                    let plan = PassengerPlan {
                        trip,
                        trip_id: trips[trip].id.clone(),
                        url: Arc::clone(&passenger_url),
                        token: minter.mint(&format!("ltp-{run_id}-{k}"), Role::Admin)?,
                        connect_timeout,
                        ack_timeout,
                    };
                    passenger_tasks.spawn(passenger_task(
                        plan,
                        ready_tx.clone(),
                        Arc::clone(&shared),
                        stop_passengers.clone(),
                    ));
                }
                spawned += 1;
            }
            Some(ready) = ready_rx.recv() => {
                reported += 1;
                match (ready.role, ready.outcome) {
                    (Role::Driver, Ok(())) => {
                        drivers_ready += 1;
                        ready_drivers.push(ready.trip);
                    }
                    (_, Ok(())) => {
                        passengers_ready += 1;
                        if let Some(n) = subs_per_trip.get_mut(ready.trip) {
                            *n += 1;
                        }
                    }
                    (Role::Driver, Err(code)) => setup_failures.add(&format!("driver:{code}")),
                    (_, Err(code)) => setup_failures.add(&format!("passenger:{code}")),
                }
            }
            () = sleep_until(setup_deadline) => {
                eprintln!("setup deadline reached: {reported} of {total} connections reported");
                setup_failures.add_n("setup:unfinished", u64::try_from(total - reported).unwrap_or(0));
                break;
            }
            () = interrupt.cancelled() => {
                interrupted = true;
                break;
            }
        }
    }
    drop(ready_rx);
    eprintln!(
        "setup: {drivers_ready}/{drivers} drivers, {passengers_ready}/{} passengers in {:.1} s",
        drivers * per_trip,
        setup_started.elapsed().as_secs_f64()
    );

    // Phase 2: steady sending. The rate is shared by the drivers that are ready (so a
    // failed setup does not lower it); they start together on one instant, each offset by
    // its rank/rate so the aggregate is evenly spaced.
    let mut driver_reports = Vec::with_capacity(drivers);
    let mut window = Duration::ZERO;
    if drivers_ready > 0 && !interrupted {
        let start_at = Instant::now() + Duration::from_millis(200);
        let step = Duration::from_secs_f64(1.0 / args.rate);
        let mut offsets = vec![Duration::ZERO; drivers];
        for (rank, trip) in ready_drivers.iter().enumerate() {
            if let Some(offset) = offsets.get_mut(*trip) {
                *offset = step.mul_f64(rank as f64);
            }
        }
        let _ = start_tx.send(Some(Start {
            at: start_at,
            period: step.mul_f64(ready_drivers.len() as f64),
            offsets: offsets.into(),
        }));
        eprintln!("sending for {} s at {} updates/s", args.duration, args.rate);
        let deadline = start_at + duration + ack_timeout + Duration::from_secs(5);
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
        interrupted |= interrupt.is_cancelled();
        window = driver_reports
            .iter()
            .filter_map(|r| r.stopped_at)
            .max()
            .map_or(Duration::ZERO, |end| end.saturating_duration_since(start_at));

        // Phase 3: let in-flight deliveries land, then stop listening.
        let drain_end = Instant::now() + Duration::from_secs(args.drain);
        tokio::select! {
            () = sleep_until(drain_end) => {}
            () = interrupt.cancelled() => interrupted = true,
        }
    }

    // Phase 4: stop every task (bounded), then add everything up.
    stop_drivers.cancel();
    stop_passengers.cancel();
    let mut disconnects = Tally::default();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(joined) = passenger_tasks.join_next().await {
            if let Ok(PassengerReport { disconnect: Some(code) }) = joined {
                disconnects.add(&format!("passenger:{code}"));
            }
        }
        while driver_tasks.join_next().await.is_some() {}
    })
    .await;
    passenger_tasks.abort_all();
    driver_tasks.abort_all();

    let mut sent = 0;
    let mut accepted = 0;
    let mut expected = 0;
    let mut ack_errors = Tally::default();
    for r in &driver_reports {
        sent += r.sent;
        accepted += r.accepted;
        expected += r.accepted * subs_per_trip.get(r.trip).copied().unwrap_or(0);
        ack_errors.merge(&r.errors);
        if let Some(code) = &r.disconnect {
            disconnects.add(&format!("driver:{code}"));
        }
    }
    let received = shared.received.load(Ordering::Relaxed);
    let drivers = u64::from(args.drivers);
    Ok(LatencyReport {
        scenario: "latency",
        run_id: run_id.to_owned(),
        driver_target: args.driver_target.clone(),
        passenger_target: args.passenger_target.clone(),
        drivers,
        drivers_ready,
        passengers: drivers * u64::from(args.passengers_per_trip),
        passengers_ready,
        setup_failures,
        send_window_s: stats::round3(window.as_secs_f64()),
        target_rate: args.rate,
        achieved_rate: stats::per_second(sent, window),
        accepted_rate: stats::per_second(accepted, window),
        sent,
        accepted,
        ack_errors,
        expected_deliveries: expected,
        received_deliveries: received,
        delivery_ratio: stats::delivery_ratio(expected, received),
        out_of_order: shared.out_of_order.load(Ordering::Relaxed),
        foreign_trip: shared.foreign.load(Ordering::Relaxed),
        unparsable: shared.unparsable.load(Ordering::Relaxed),
        e2e_ms: stats::summarize_us(&shared.e2e.snapshot()),
        ack_ms: stats::summarize_us(&shared.ack.snapshot()),
        disconnects,
        interrupted,
    })
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

fn print_table(r: &LatencyReport) {
    println!(
        "latency run {}: drivers {}/{} ready on {}, passengers {}/{} ready on {}",
        r.run_id, r.drivers_ready, r.drivers, r.driver_target, r.passengers_ready, r.passengers, r.passenger_target
    );
    println!("setup failures  {}", r.setup_failures);
    println!(
        "rate (upd/s)    target {:.2}  achieved {:.2}  accepted {:.2}  over {:.1} s",
        r.target_rate, r.achieved_rate, r.accepted_rate, r.send_window_s
    );
    println!("{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}", "(ms)", "p50", "p90", "p99", "max", "count");
    for (name, s) in [("e2e delivery", &r.e2e_ms), ("ack", &r.ack_ms)] {
        println!("{name:<16}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10}", s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.count);
    }
    let ratio = r.delivery_ratio.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.6}"));
    println!(
        "deliveries      expected {}  received {}  ratio {ratio}  (out of order {}, other trips {}, unparsable {})",
        r.expected_deliveries, r.received_deliveries, r.out_of_order, r.foreign_trip, r.unparsable
    );
    println!("acks            sent {}  ok {}  errors {}", r.sent, r.accepted, r.ack_errors);
    println!("disconnects     {}", r.disconnects);
    println!(
        "SUMMARY latency rate={:.2}/s e2e_p50_ms={:.3} e2e_p99_ms={:.3} e2e_max_ms={:.3} delivery_ratio={ratio} ack_errors={}{}",
        r.achieved_rate,
        r.e2e_ms.p50_ms,
        r.e2e_ms.p99_ms,
        r.e2e_ms.max_ms,
        r.ack_errors.total(),
        if r.interrupted { " interrupted" } else { "" }
    );
}
