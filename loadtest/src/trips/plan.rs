//! What a front-end hands the trip engine: [`TripArgs`] (the options every trip scenario
//! shares), [`Placement`] (which target each socket connects to), [`Source`] (what the
//! drivers send) and the [`Spec`] of one run. Plain data and the placement arithmetic, in a
//! file of its own so that the engine (`trips`) and one process's share of a run
//! (`trips::measure`) both read it while only the engine imports the share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::db::{DEFAULT_CLEANUP_SQL, DEFAULT_INSERT_SQL};
use super::schedule::{Route, TrackPoint};

/// Options every trip scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub struct TripArgs {
    /// HS256 secret the server verifies tokens with.
    #[arg(long)]
    pub secret: String,
    /// Database the server reads trips from (postgres://… or sqlite://…). Absent: no trip
    /// rows are inserted, for a server that takes any trip id (the Node.js baseline in
    /// `shared/baseline/`, which has no database).
    #[arg(long)]
    pub database_url: Option<String>,
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

/// A while of a steady run at a multiple of its rate (`--step-rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub from: Duration,
    pub to: Duration,
    pub factor: f64,
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
    pub(super) fn targets(&self) -> Vec<String> {
        match self {
            Self::Split { drivers, passengers } => vec![drivers.clone(), passengers.clone()],
            Self::Spread(targets) => targets.clone(),
        }
    }

    /// Index into [`Self::targets`] of trip `n`'s driver.
    pub(super) fn driver_target(&self, n: u64) -> usize {
        match self {
            Self::Split { .. } => 0,
            Self::Spread(t) => usize::try_from(n % t.len().max(1) as u64).unwrap_or(0),
        }
    }

    /// Index into [`Self::targets`] of subscriber `j` of trip `n` (of `per_trip`).
    pub(super) fn passenger_target(&self, n: u64, j: u64, per_trip: u64) -> usize {
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

    pub(super) fn describe(&self) -> String {
        match self {
            Self::Split { drivers, passengers } => format!("drivers on {drivers}, subscribers on {passengers}"),
            Self::Spread(t) => format!("drivers over {}; subscribers on the other targets", t.join(", ")),
        }
    }
}

/// What the drivers send.
#[derive(Debug, Clone)]
pub enum Source {
    /// An aggregate steady rate spread evenly over the drivers; with a step, `factor` times
    /// that rate from `from` to `to` after the start (the overload step).
    Steady { rate: f64, step: Option<Step> },
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
