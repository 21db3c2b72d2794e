//! When each driver sends and where it is: a steady period with a position in its own lane
//! (`latency`, `fanout`), a straight-line route in a city box (`generate`), or a recorded
//! track replayed at a speed-up (`replay`), or as fast as the connection allows (`burst`).
//!
//! Pure time arithmetic over instants the caller passes in; no sockets, no clocks. A
//! periodic driver that falls behind skips the updates it missed instead of bursting (a
//! stalled client shows as a lower achieved rate); a track is replayed point by point. A
//! periodic schedule may run faster for a while ([`Warp`]: the overload step of `fanout
//! --step-rate`): its ticks are evenly spaced in a warped time that runs `factor` times faster
//! inside the step.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// One position to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lng: f64,
    pub speed: Option<f64>,
    pub heading: Option<f64>,
}

/// One recorded point: seconds since the recording's start, and the position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackPoint {
    pub t: f64,
    pub fix: Fix,
}

/// A straight route travelled back and forth at a constant speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    pub from: (f64, f64),
    pub to: (f64, f64),
    pub speed_mps: f64,
}

/// Where a periodic driver is at a given time.
#[derive(Debug, Clone)]
pub enum Path {
    /// A short northward lane per trip around Nairobi (trip index picks the lane).
    Lane(u64),
    Route(Route),
}

/// A window of real time `[from, to)` in which periodic schedules tick `factor` times as often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warp {
    pub from: Instant,
    pub to: Instant,
    pub factor: f64,
}

impl Warp {
    /// Warped time of real instant `t` (the same before the window, ahead of it after).
    fn forward(&self, t: Instant) -> Instant {
        if t <= self.from {
            t
        } else if t <= self.to {
            self.from + t.duration_since(self.from).mul_f64(self.factor)
        } else {
            self.from + self.to.duration_since(self.from).mul_f64(self.factor) + t.duration_since(self.to)
        }
    }

    /// Real instant of warped time `v` (the inverse of [`Warp::forward`]).
    fn back(&self, v: Instant) -> Instant {
        let inside = self.to.duration_since(self.from).mul_f64(self.factor);
        if v <= self.from {
            v
        } else if v <= self.from + inside {
            self.from + v.duration_since(self.from).div_f64(self.factor)
        } else {
            self.to + v.duration_since(self.from + inside)
        }
    }
}

fn forward(w: Option<&Warp>, t: Instant) -> Instant {
    w.map_or(t, |w| w.forward(t))
}

fn back(w: Option<&Warp>, v: Instant) -> Instant {
    w.map_or(v, |w| w.back(v))
}

/// A driver's sending plan.
#[derive(Debug, Clone)]
pub enum Schedule {
    Periodic {
        first: Instant,
        period: Duration,
        end: Instant,
        path: Path,
        k: u64,
        /// Ticks come `factor` times as often inside the warp's window.
        warp: Option<Warp>,
    },
    Track {
        start: Instant,
        speedup: f64,
        end: Instant,
        points: Arc<[TrackPoint]>,
        k: usize,
    },
    /// As fast as the connection allows until `end` (`burst`); the driver bounds in-flight acks.
    Flood {
        end: Instant,
        trip: u64,
        k: u64,
    },
}

const EARTH_RADIUS_M: f64 = 6_371_000.0;

impl Route {
    /// Length in metres (equirectangular: exact enough inside a city).
    pub fn length_m(&self) -> f64 {
        let (dy, dx) = self.delta_m();
        dy.hypot(dx)
    }

    fn delta_m(&self) -> (f64, f64) {
        let mid_lat = ((self.from.0 + self.to.0) / 2.0).to_radians();
        let dy = (self.to.0 - self.from.0).to_radians() * EARTH_RADIUS_M;
        let dx = (self.to.1 - self.from.1).to_radians() * EARTH_RADIUS_M * mid_lat.cos();
        (dy, dx)
    }

    /// Position after `secs` of driving, turning round at each end.
    pub fn at(&self, secs: f64) -> Fix {
        let len = self.length_m();
        let (dy, dx) = self.delta_m();
        let bearing = dx.atan2(dy).to_degrees().rem_euclid(360.0);
        if len < 1.0 || self.speed_mps <= 0.0 {
            return Fix { lat: self.from.0, lng: self.from.1, speed: Some(0.0), heading: Some(bearing) };
        }
        let d = (self.speed_mps * secs.max(0.0)).rem_euclid(2.0 * len);
        let (frac, heading) = if d <= len { (d / len, bearing) } else { (2.0 - d / len, (bearing + 180.0) % 360.0) };
        Fix {
            lat: self.from.0 + (self.to.0 - self.from.0) * frac,
            lng: self.from.1 + (self.to.1 - self.from.1) * frac,
            speed: Some(self.speed_mps),
            heading: Some(heading % 360.0),
        }
    }
}

fn lane_fix(trip: u64, k: u64) -> Fix {
    let (lane, step) = ((trip % 1000) as f64, (k % 10_000) as f64);
    Fix {
        lat: -1.2921 + lane * 0.0005 + step * 0.00001,
        lng: 36.8219 + step * 0.00001,
        speed: Some(12.5),
        heading: Some((k * 7 % 360) as f64),
    }
}

impl Schedule {
    /// The next update at or after `now`: when to send it and what. `None` when done.
    pub fn next(&mut self, now: Instant) -> Option<(Instant, Fix)> {
        match self {
            Self::Periodic { first, period, end, path, k, warp } => {
                // Ticks are evenly spaced in warped time (real time without a warp).
                let (w, vfirst) = (warp.as_ref(), forward(warp.as_ref(), *first));
                let mut v = vfirst + period.saturating_mul(u32::try_from(*k).unwrap_or(u32::MAX));
                let vnow = forward(w, now);
                if vnow > v + *period && !period.is_zero() {
                    // Fell behind: skip to the first tick not yet past.
                    let behind = vnow.duration_since(vfirst).as_secs_f64() / period.as_secs_f64();
                    *k = behind.ceil() as u64;
                    v = vfirst + period.mul_f64(*k as f64);
                }
                let at = back(w, v);
                if at >= *end {
                    return None;
                }
                let fix = match path {
                    Path::Lane(trip) => lane_fix(*trip, *k),
                    Path::Route(r) => r.at(at.saturating_duration_since(*first).as_secs_f64()),
                };
                *k += 1;
                Some((at, fix))
            }
            Self::Track { start, speedup, end, points, k } => {
                let p = points.get(*k)?;
                let at = *start + Duration::from_secs_f64((p.t / *speedup).max(0.0));
                if at >= *end {
                    return None;
                }
                *k += 1;
                Some((at, p.fix))
            }
            Self::Flood { end, trip, k } => {
                if now >= *end {
                    return None;
                }
                *k += 1;
                Some((now, lane_fix(*trip, *k)))
            }
        }
    }
}

/// A small deterministic generator (SplitMix64), so `generate --seed` repeats its routes.
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_schedule_ends_and_skips_missed_ticks() {
        let t0 = Instant::now();
        let mut s = Schedule::Periodic {
            first: t0,
            period: Duration::from_millis(100),
            end: t0 + Duration::from_millis(1000),
            path: Path::Lane(3),
            k: 0,
            warp: None,
        };
        let (at, _) = s.next(t0).expect("first");
        assert_eq!(at, t0);
        let (at, _) = s.next(t0).expect("second");
        assert_eq!(at, t0 + Duration::from_millis(100));
        // 450 ms late: the next tick is 500 ms, not 200 ms.
        let (at, _) = s.next(t0 + Duration::from_millis(450)).expect("skips");
        assert_eq!(at, t0 + Duration::from_millis(500));
        assert!(s.next(t0 + Duration::from_millis(1000)).is_none());
    }

    #[test]
    fn a_warp_ticks_faster_inside_its_window_only() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let warp = Warp { from: t0 + ms(1000), to: t0 + ms(2000), factor: 2.0 };
        let mut s = Schedule::Periodic {
            first: t0,
            period: ms(100),
            end: t0 + ms(3000),
            path: Path::Lane(0),
            k: 0,
            warp: Some(warp),
        };
        let mut ticks = Vec::new();
        while let Some((at, _)) = s.next(t0) {
            ticks.push(at.duration_since(t0).as_millis());
        }
        let count = |a: u128, b: u128| ticks.iter().filter(|t| (a..b).contains(*t)).count();
        assert_eq!(count(0, 1000), 10, "{ticks:?}");
        assert_eq!(count(1000, 2000), 20, "{ticks:?}");
        assert_eq!(count(2000, 3000), 10, "{ticks:?}");
        assert!(ticks.windows(2).all(|w| w[0] < w[1]));
        // The inverse is exact on both sides of the window.
        for t in [ms(500), ms(1500), ms(2500)] {
            assert_eq!(warp.back(warp.forward(t0 + t)), t0 + t);
        }
    }

    #[test]
    fn track_schedule_is_time_scaled() {
        let t0 = Instant::now();
        let fix = Fix { lat: 1.0, lng: 2.0, speed: None, heading: None };
        let points: Arc<[TrackPoint]> = vec![TrackPoint { t: 0.0, fix }, TrackPoint { t: 10.0, fix }].into();
        let mut s = Schedule::Track { start: t0, speedup: 5.0, end: t0 + Duration::from_secs(60), points, k: 0 };
        assert_eq!(s.next(t0).map(|x| x.0), Some(t0));
        assert_eq!(s.next(t0).map(|x| x.0), Some(t0 + Duration::from_secs(2)));
        assert!(s.next(t0).is_none());
    }

    #[test]
    fn routes_go_there_and_back() {
        // About 1.11 km due north.
        let r = Route { from: (0.0, 0.0), to: (0.01, 0.0), speed_mps: 10.0 };
        assert!((r.length_m() - 1111.95).abs() < 1.0, "{}", r.length_m());
        let start = r.at(0.0);
        assert_eq!((start.lat, start.lng), (0.0, 0.0));
        assert_eq!(start.heading, Some(0.0));
        let half = r.at(r.length_m() / 20.0);
        assert!((half.lat - 0.005).abs() < 1e-9);
        let back = r.at(1.5 * r.length_m() / 10.0);
        assert!((back.lat - 0.005).abs() < 1e-9);
        assert_eq!(back.heading, Some(180.0));
    }

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let (mut a, mut b) = (SplitMix::new(7), SplitMix::new(7));
        for _ in 0..100 {
            let x = a.unit();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.unit());
        }
    }
}
