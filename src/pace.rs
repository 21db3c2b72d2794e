//! Each driver's recent average speed as this node sees its updates (CONTRACT §7: a trip's
//! `etaSeconds` comes "from the driver's recent average speed"). A sample is the speed the
//! driver reported, or else the distance from its previous update over the time between
//! them; the pace is the mean of the last few samples within a minute. Per node: a driver
//! streams to one node at a time, and a node that sees only part of its updates still
//! averages real ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::rides::haversine_km;

/// Samples averaged.
const SAMPLES: usize = 5;

/// Samples older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(60);

/// Upper bound of tracked drivers; past it the map starts over.
const MAX_DRIVERS: usize = 200_000;

struct Track {
    last: (f64, f64, Instant),
    samples: VecDeque<(Instant, f64)>,
}

/// Recent speeds by (tenant, driver).
#[derive(Default)]
pub struct Pace {
    tracks: Mutex<HashMap<(String, String), Track>>,
}

impl Pace {
    /// Records an accepted update at `(lat, lng)` with the reported `speed` (m/s) and
    /// returns the driver's recent average speed, m/s (`None` without a sample yet).
    pub fn observe(&self, tenant: &str, driver: &str, lat: f64, lng: f64, speed: Option<f64>) -> Option<f64> {
        let now = Instant::now();
        let mut tracks = self.tracks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tracks.len() >= MAX_DRIVERS {
            tracks.clear();
        }
        let key = (tenant.to_string(), driver.to_string());
        let track = tracks.entry(key).or_insert_with(|| Track { last: (lat, lng, now), samples: VecDeque::new() });
        let sample = speed.or_else(|| {
            let (plat, plng, at) = track.last;
            let secs = now.duration_since(at).as_secs_f64();
            (secs >= 0.5).then(|| haversine_km((plat, plng), (lat, lng)) * 1000.0 / secs)
        });
        track.last = (lat, lng, now);
        if let Some(s) = sample {
            track.samples.push_back((now, s));
        }
        while track.samples.len() > SAMPLES
            || track.samples.front().is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            track.samples.pop_front();
        }
        if track.samples.is_empty() {
            return None;
        }
        Some(track.samples.iter().map(|(_, s)| s).sum::<f64>() / track.samples.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_speeds_are_averaged_over_the_last_samples() {
        let p = Pace::default();
        assert_eq!(p.observe("t", "d", 0.0, 0.0, None), None, "one position gives no speed");
        assert_eq!(p.observe("t", "d", 0.0, 0.0, Some(10.0)), Some(10.0));
        assert_eq!(p.observe("t", "d", 0.0, 0.0, Some(0.0)), Some(5.0));
        for _ in 0..SAMPLES {
            p.observe("t", "d", 0.0, 0.0, Some(2.0));
        }
        assert_eq!(p.observe("t", "d", 0.0, 0.0, Some(2.0)), Some(2.0), "older samples dropped");
        assert_eq!(p.observe("t", "other", 0.0, 0.0, Some(7.0)), Some(7.0), "per driver");
    }
}
