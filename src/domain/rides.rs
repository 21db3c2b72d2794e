//! Rules of the ride domain (CONTRACT §4 "Trips and bookings", §2 offers): trip and
//! booking statuses, the trip status machine, who may create which trip, offer urgency and
//! distance. Pure functions; the database and the events are in `rides`.

use std::str::FromStr;

/// Trip statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TripStatus {
    /// Not visible for booking or offers yet.
    Draft,
    /// Open for booking; offered to drivers while it has none.
    Published,
    /// A driver accepted it.
    InProgress,
    /// The vehicle left.
    Departed,
    /// The vehicle arrived.
    Arrived,
    /// Done (final).
    Completed,
    /// Called off (final).
    Cancelled,
}

impl TripStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TripStatus; 7] = [
        TripStatus::Draft,
        TripStatus::Published,
        TripStatus::InProgress,
        TripStatus::Departed,
        TripStatus::Arrived,
        TripStatus::Completed,
        TripStatus::Cancelled,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TripStatus::Draft => "DRAFT",
            TripStatus::Published => "PUBLISHED",
            TripStatus::InProgress => "IN_PROGRESS",
            TripStatus::Departed => "DEPARTED",
            TripStatus::Arrived => "ARRIVED",
            TripStatus::Completed => "COMPLETED",
            TripStatus::Cancelled => "CANCELLED",
        }
    }

    /// No transition leaves a final status.
    pub fn is_final(self) -> bool {
        matches!(self, TripStatus::Completed | TripStatus::Cancelled)
    }

    /// Transitions of `PUT /api/drivers/trips/{id}/status`: `IN_PROGRESS → DEPARTED →
    /// ARRIVED → COMPLETED`, and any non-final status `→ CANCELLED`. (`PUBLISHED →
    /// IN_PROGRESS` happens only by accepting an offer.)
    pub fn can_change_to(self, next: TripStatus) -> bool {
        matches!(
            (self, next),
            (TripStatus::InProgress, TripStatus::Departed)
                | (TripStatus::Departed, TripStatus::Arrived)
                | (TripStatus::Arrived, TripStatus::Completed)
        ) || (next == TripStatus::Cancelled && !self.is_final())
    }

    /// Bookings may be made while the trip is open.
    pub fn is_bookable(self) -> bool {
        matches!(self, TripStatus::Published | TripStatus::InProgress)
    }
}

impl FromStr for TripStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        TripStatus::ALL.into_iter().find(|t| t.as_str() == s).ok_or(())
    }
}

/// Trip types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TripType {
    /// One party's ride (passengers may create these).
    Private,
    /// Seats sold to many passengers (business, admin or service create these).
    Shared,
}

impl TripType {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TripType::Private => "PRIVATE",
            TripType::Shared => "SHARED",
        }
    }
}

impl FromStr for TripType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "PRIVATE" => Ok(TripType::Private),
            "SHARED" => Ok(TripType::Shared),
            _ => Err(()),
        }
    }
}

/// Booking statuses.
pub mod booking {
    /// Waiting for a driver to be assigned.
    pub const PENDING: &str = "PENDING";
    /// The trip has a driver.
    pub const CONFIRMED: &str = "CONFIRMED";
    /// A conductor scanned the ticket.
    pub const BOARDED: &str = "BOARDED";
    /// The trip completed.
    pub const COMPLETED: &str = "COMPLETED";
    /// Cancelled by the passenger, an admin, or with the trip.
    pub const CANCELLED: &str = "CANCELLED";
}

/// Offer states of one driver for one trip.
pub mod offer {
    /// Sent, not answered yet.
    pub const OFFERED: &str = "OFFERED";
    /// The driver declined: never offered this trip again.
    pub const DECLINED: &str = "DECLINED";
    /// The round's deadline passed unanswered.
    pub const EXPIRED: &str = "EXPIRED";
    /// This driver won.
    pub const ACCEPTED: &str = "ACCEPTED";
    /// Another driver won.
    pub const TAKEN: &str = "TAKEN";
    /// The trip was cancelled while offered.
    pub const CANCELLED: &str = "CANCELLED";
}

/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// Great-circle distance in km between two `(lat, lng)` points (haversine).
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlng = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Offer urgency from the time left until departure: under 15 minutes `urgent`, under an
/// hour `high`, under a day `normal`, else `low`.
pub fn urgency(until_departure: chrono::Duration) -> &'static str {
    let mins = until_departure.num_minutes();
    if mins < 15 {
        "urgent"
    } else if mins < 60 {
        "high"
    } else if mins < 24 * 60 {
        "normal"
    } else {
        "low"
    }
}

/// A short human-readable booking reference (`FC-` and 8 characters without look-alikes).
pub fn reference_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bits = uuid::Uuid::new_v4().as_u128();
    let code: String = (0..8).map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char).collect();
    format!("FC-{code}")
}

/// Search radius of an offer round: the discovery radius doubled per round.
pub fn round_radius_km(discovery_km: f64, round: u32) -> f64 {
    discovery_km * f64::from(2u32.saturating_pow(round.min(20)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_machine_allows_exactly_the_contract_transitions() {
        use TripStatus::*;
        let allowed = [
            (InProgress, Departed),
            (Departed, Arrived),
            (Arrived, Completed),
            (Draft, Cancelled),
            (Published, Cancelled),
            (InProgress, Cancelled),
            (Departed, Cancelled),
            (Arrived, Cancelled),
        ];
        for from in TripStatus::ALL {
            for to in TripStatus::ALL {
                assert_eq!(from.can_change_to(to), allowed.contains(&(from, to)), "{from:?} → {to:?}");
            }
        }
        for s in TripStatus::ALL {
            assert_eq!(s.as_str().parse::<TripStatus>(), Ok(s));
        }
        assert!("published".parse::<TripStatus>().is_err());
    }

    #[test]
    fn haversine_matches_known_distances() {
        // Paris → London ≈ 343.5 km; one degree of latitude ≈ 111.2 km.
        let d = haversine_km((48.8566, 2.3522), (51.5074, -0.1278));
        assert!((d - 343.5).abs() < 1.0, "{d}");
        assert!((haversine_km((0.0, 0.0), (1.0, 0.0)) - 111.19).abs() < 0.01);
        assert_eq!(haversine_km((10.0, 10.0), (10.0, 10.0)), 0.0);
    }

    #[test]
    fn urgency_grows_as_departure_nears() {
        let m = chrono::Duration::minutes;
        assert_eq!(urgency(m(-5)), "urgent");
        assert_eq!(urgency(m(14)), "urgent");
        assert_eq!(urgency(m(30)), "high");
        assert_eq!(urgency(m(120)), "normal");
        assert_eq!(urgency(m(48 * 60)), "low");
    }

    #[test]
    fn reference_codes_are_short_and_distinct() {
        let a = reference_code();
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("FC-"));
        let many: std::collections::HashSet<String> = (0..1_000).map(|_| reference_code()).collect();
        assert_eq!(many.len(), 1_000);
    }

    #[test]
    fn round_radius_doubles() {
        assert_eq!(round_radius_km(10.0, 0), 10.0);
        assert_eq!(round_radius_km(10.0, 2), 40.0);
    }
}
