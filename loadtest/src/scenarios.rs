//! The command-line front-ends of trip runs: each turns its flags into a [`Spec`] (where
//! sockets connect, what drivers send, for how long) and hands it to [`trips::run`].
//! `replay` lives in its own module with its parsers.
//!
//! - `latency`: drivers on one node, subscribers on another, a steady aggregate rate.
//! - `fanout`: drivers spread over the targets, each trip's subscribers on the other ones.
//! - `burst`: drivers send as fast as acks allow, to probe the rate limits.
//! - `generate`: synthetic drivers on straight routes in a city box, every N seconds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure};

use crate::ctx::Ctx;
use crate::trips::plan::Step;
use crate::trips::schedule::{Route, SplitMix};
use crate::trips::{self, Placement, Source, Spec, TripArgs};

/// Arguments of `fleetcast-loadtest latency`.
#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Node the drivers connect to, e.g. ws://127.0.0.1:3001.
    #[arg(long)]
    pub driver_target: String,
    /// Node the subscribers connect to, e.g. ws://127.0.0.1:3002.
    #[arg(long)]
    pub passenger_target: String,
    #[command(flatten)]
    pub steady: SteadyArgs,
    #[command(flatten)]
    pub common: TripArgs,
}

/// Arguments of `fleetcast-loadtest fanout`.
#[derive(Debug, clap::Args)]
pub struct FanoutArgs {
    /// A node (repeat for each; drivers round-robin, subscribers on the other nodes).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub steady: SteadyArgs,
    #[command(flatten)]
    pub common: TripArgs,
}

/// A steady aggregate rate over D drivers.
#[derive(Debug, clap::Args)]
pub struct SteadyArgs {
    /// Number of drivers, one trip each.
    #[arg(long, default_value_t = 10)]
    pub drivers: u64,
    /// Aggregate location updates per second, spread evenly over drivers. Per driver the
    /// contract's defaults allow one per 500 ms and 90 per minute (1.5/s).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of steady sending.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// The overload step: this aggregate rate instead of `--rate` for `--step-for` seconds
    /// from `--step-at` seconds after the start; the timeline shows how p99 recovers after.
    #[arg(long, requires = "step_at")]
    pub step_rate: Option<f64>,
    /// Seconds after the start at which the step begins.
    #[arg(long, requires = "step_rate")]
    pub step_at: Option<u64>,
    /// Seconds the step lasts.
    #[arg(long, default_value_t = 10)]
    pub step_for: u64,
}

/// Arguments of `fleetcast-loadtest burst`.
#[derive(Debug, clap::Args)]
pub struct BurstArgs {
    /// A node (repeat for several).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Drivers bursting at once, one trip each.
    #[arg(long, default_value_t = 1)]
    pub drivers: u64,
    /// Most unanswered updates per driver; the next one waits for an ack.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Seconds of bursting.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    #[command(flatten)]
    pub common: TripArgs,
}

/// Arguments of `fleetcast-loadtest generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// A node (repeat for each; drivers round-robin, subscribers on the other nodes).
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Synthetic drivers, one trip each.
    #[arg(long, default_value_t = 100)]
    pub drivers: u64,
    /// Seconds between two updates of one driver.
    #[arg(long, default_value_t = 5.0)]
    pub every: f64,
    /// The city box routes start and end in: minLat,minLng,maxLat,maxLng (default Nairobi).
    #[arg(long, default_value = "-1.35,36.70,-1.20,36.95")]
    pub bbox: String,
    /// Driving speed along the routes.
    #[arg(long, default_value_t = 40.0)]
    pub speed_kmh: f64,
    /// Seed of the routes (same seed, same routes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of driving.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    #[command(flatten)]
    pub common: TripArgs,
}

fn steady_spec(scenario: &'static str, s: &SteadyArgs, placement: Placement) -> anyhow::Result<Spec> {
    ensure!(s.drivers > 0, "--drivers must be at least 1");
    ensure!(s.rate.is_finite() && s.rate > 0.0, "--rate must be a positive number of updates per second");
    ensure!(s.duration > 0, "--duration must be at least 1 second");
    let per_driver_interval = s.drivers as f64 / s.rate;
    if per_driver_interval < 60.0 / 90.0 {
        eprintln!(
            "note: each driver sends every {per_driver_interval:.3} s; a server on the contract's default \
             limits (500 ms minimum interval, 90/min) answers some with RATE_LIMITED"
        );
    }
    let step = match (s.step_rate, s.step_at) {
        (Some(r), Some(at)) => {
            ensure!(r.is_finite() && r > 0.0, "--step-rate must be a positive number of updates per second");
            ensure!(s.step_for > 0 && at + s.step_for <= s.duration, "the step must end within --duration");
            Some(Step { from: Duration::from_secs(at), to: Duration::from_secs(at + s.step_for), factor: r / s.rate })
        }
        _ => None,
    };
    let mut source_label = format!("{} drivers, {} updates/s in total for {} s", s.drivers, s.rate, s.duration);
    if let (Some(r), Some(at)) = (s.step_rate, s.step_at) {
        source_label += &format!(", {r}/s from {at} s to {} s", at + s.step_for);
    }
    Ok(Spec {
        scenario,
        trips: s.drivers,
        placement,
        source: Source::Steady { rate: s.rate, step },
        duration: Duration::from_secs(s.duration),
        source_label,
        target_rate: Some(s.rate),
    })
}

pub async fn latency(a: LatencyArgs, ctx: Ctx) -> anyhow::Result<()> {
    let placement = Placement::Split { drivers: a.driver_target.clone(), passengers: a.passenger_target.clone() };
    trips::run(steady_spec("latency", &a.steady, placement)?, a.common, ctx).await
}

pub async fn fanout(a: FanoutArgs, ctx: Ctx) -> anyhow::Result<()> {
    if a.targets.len() < 2 {
        eprintln!("note: one target only; subscribers share their driver's node");
    }
    trips::run(steady_spec("fanout", &a.steady, Placement::Spread(a.targets.clone()))?, a.common, ctx).await
}

pub async fn burst(a: BurstArgs, ctx: Ctx) -> anyhow::Result<()> {
    ensure!(a.drivers > 0 && a.duration > 0, "--drivers and --duration must be at least 1");
    let spec = Spec {
        scenario: "burst",
        trips: a.drivers,
        placement: Placement::Spread(a.targets.clone()),
        source: Source::Flood { in_flight: a.in_flight },
        duration: Duration::from_secs(a.duration),
        source_label: format!(
            "{} drivers as fast as acks allow ({} in flight each) for {} s",
            a.drivers, a.in_flight, a.duration
        ),
        target_rate: None,
    };
    trips::run(spec, a.common, ctx).await
}

/// A city box `minLat,minLng,maxLat,maxLng`.
pub fn parse_bbox(text: &str) -> anyhow::Result<[f64; 4]> {
    let parts: Vec<f64> = text.split(',').map(|p| p.trim().parse::<f64>()).collect::<Result<_, _>>()?;
    let [min_lat, min_lng, max_lat, max_lng] = parts[..] else {
        bail!("--bbox needs four numbers: minLat,minLng,maxLat,maxLng");
    };
    ensure!(
        (-90.0..=90.0).contains(&min_lat) && (-90.0..=90.0).contains(&max_lat) && min_lat < max_lat,
        "--bbox latitudes must be within -90..90 and min < max"
    );
    ensure!(
        (-180.0..=180.0).contains(&min_lng) && (-180.0..=180.0).contains(&max_lng) && min_lng < max_lng,
        "--bbox longitudes must be within -180..180 and min < max"
    );
    Ok([min_lat, min_lng, max_lat, max_lng])
}

/// `count` routes between random points of the box, the same for the same seed.
pub fn routes_in(bbox: [f64; 4], count: u64, speed_mps: f64, seed: u64) -> Vec<Route> {
    let [min_lat, min_lng, max_lat, max_lng] = bbox;
    let mut rng = SplitMix::new(seed);
    let mut point = || (min_lat + rng.unit() * (max_lat - min_lat), min_lng + rng.unit() * (max_lng - min_lng));
    (0..count).map(|_| Route { from: point(), to: point(), speed_mps }).collect()
}

pub async fn generate(a: GenerateArgs, ctx: Ctx) -> anyhow::Result<()> {
    ensure!(a.drivers > 0 && a.duration > 0, "--drivers and --duration must be at least 1");
    ensure!(a.every.is_finite() && a.every > 0.0, "--every must be a positive number of seconds");
    ensure!(a.speed_kmh.is_finite() && a.speed_kmh >= 0.0, "--speed-kmh must be a non-negative number");
    let bbox = parse_bbox(&a.bbox)?;
    let routes: Arc<[Route]> = routes_in(bbox, a.drivers, a.speed_kmh / 3.6, a.seed).into();
    let rate = a.drivers as f64 / a.every;
    let spec = Spec {
        scenario: "generate",
        trips: a.drivers,
        placement: Placement::Spread(a.targets.clone()),
        source: Source::Routes { routes, every: Duration::from_secs_f64(a.every) },
        duration: Duration::from_secs(a.duration),
        source_label: format!(
            "{} synthetic drivers at {} km/h in {}, every {} s ({rate:.1} updates/s) for {} s",
            a.drivers, a.speed_kmh, a.bbox, a.every, a.duration
        ),
        target_rate: Some(rate),
    };
    trips::run(spec, a.common, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_boxes() {
        assert_eq!(parse_bbox("-1.35, 36.70,-1.20,36.95").expect("box"), [-1.35, 36.70, -1.20, 36.95]);
        assert!(parse_bbox("1,2,3").is_err());
        assert!(parse_bbox("1,2,0,3").is_err());
        assert!(parse_bbox("a,b,c,d").is_err());
        assert!(parse_bbox("-91,0,1,1").is_err());
    }

    #[test]
    fn routes_stay_in_the_box_and_repeat_with_the_seed() {
        let bbox = [-1.35, 36.70, -1.20, 36.95];
        let a = routes_in(bbox, 50, 10.0, 7);
        assert_eq!(a, routes_in(bbox, 50, 10.0, 7));
        assert_ne!(a, routes_in(bbox, 50, 10.0, 8));
        for r in &a {
            for (lat, lng) in [r.from, r.to] {
                assert!((bbox[0]..=bbox[2]).contains(&lat) && (bbox[1]..=bbox[3]).contains(&lng));
            }
            for t in [0.0, 100.0, 1e5] {
                let f = r.at(t);
                assert!((bbox[0]..=bbox[2]).contains(&f.lat) && (bbox[1]..=bbox[3]).contains(&f.lng));
            }
        }
    }
}
