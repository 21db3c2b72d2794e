//! A trip's progress towards its next target (CONTRACT §7 "Trip progress and arrival"):
//! which target a trip status points at, the straight-line distance to it, and the ETA at
//! the driver's recent average speed.

use serde::Serialize;

use super::rides::haversine_km;

/// Where the driver is heading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Target {
    /// The trip's origin, while it is `IN_PROGRESS`.
    Pickup,
    /// The trip's destination, while it is `DEPARTED`.
    Destination,
}

impl Target {
    /// The target of a trip in `status`, or `None` (no progress in other statuses).
    pub fn of_status(status: &str) -> Option<Self> {
        match status {
            "IN_PROGRESS" => Some(Target::Pickup),
            "DEPARTED" => Some(Target::Destination),
            _ => None,
        }
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Pickup => "PICKUP",
            Target::Destination => "DESTINATION",
        }
    }
}

/// `progress: {target, distanceKm, etaSeconds|null}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The target.
    pub target: Target,
    /// Straight-line distance, km (metre precision).
    pub distance_km: f64,
    /// Seconds at `speed`, or `None` below 1 m/s.
    pub eta_seconds: Option<u64>,
}

/// Slowest speed that gives an ETA, m/s.
pub const MIN_ETA_SPEED: f64 = 1.0;

impl Progress {
    /// Progress from `at` towards `target` located at `to`, at `speed` m/s.
    pub fn towards(target: Target, at: (f64, f64), to: (f64, f64), speed: Option<f64>) -> Self {
        let km = haversine_km(at, to);
        let eta_seconds = speed.filter(|s| *s >= MIN_ETA_SPEED).map(|s| (km * 1000.0 / s).round() as u64);
        Progress { target, distance_km: (km * 1000.0).round() / 1000.0, eta_seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_status_and_eta_needs_a_moving_driver() {
        assert_eq!(Target::of_status("IN_PROGRESS"), Some(Target::Pickup));
        assert_eq!(Target::of_status("DEPARTED"), Some(Target::Destination));
        assert_eq!(Target::of_status("ARRIVED"), None);
        assert_eq!(Target::of_status("PUBLISHED"), None);
        // About 1.11 km along a meridian.
        let p = Progress::towards(Target::Pickup, (0.0, 0.0), (0.01, 0.0), Some(10.0));
        assert!((p.distance_km - 1.112).abs() < 0.002, "{p:?}");
        assert_eq!(p.eta_seconds, Some(111));
        assert_eq!(Progress::towards(Target::Pickup, (0.0, 0.0), (0.01, 0.0), Some(0.5)).eta_seconds, None);
        assert_eq!(Progress::towards(Target::Pickup, (0.0, 0.0), (0.01, 0.0), None).eta_seconds, None);
        let json = serde_json::to_value(p).expect("serializes");
        assert_eq!(json["target"], "PICKUP");
        assert_eq!(json["etaSeconds"], 111);
    }
}
