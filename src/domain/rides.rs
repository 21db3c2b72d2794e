//! Rules of the ride domain (CONTRACT §4 "Trips and bookings", §2 offers): trip and
//! booking statuses, the trip status machine, who may create which trip, offer urgency and
//! distance. Pure types and functions; the database is in `store`, the flows and their events in
//! `flows`.

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

/// A place: name and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// Display name.
    pub name: String,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lng: f64,
}

/// A validated trip to create (the edge checked every field; the flow checks who may).
#[derive(Debug, Clone)]
pub struct TripPlan {
    /// Title.
    pub title: String,
    /// `PRIVATE` or `SHARED`.
    pub trip_type: TripType,
    /// `DRAFT` or `PUBLISHED`.
    pub status: TripStatus,
    /// Start.
    pub origin: Place,
    /// End.
    pub dest: Place,
    /// ISO-8601 UTC, milliseconds.
    pub departure_time: String,
    /// Seats for sale.
    pub total_seats: i32,
    /// Price of one seat.
    pub price_per_seat: f64,
    /// Currency code.
    pub currency: String,
    /// Driver earnings shown in offers.
    pub estimated_earnings: f64,
}

/// A validated booking request.
#[derive(Debug, Clone)]
pub struct BookingRequest {
    /// The trip.
    pub trip_id: String,
    /// Seats.
    pub seats: i32,
    /// Where to pick the passenger up.
    pub pickup_point: Option<String>,
    /// Where to drop the passenger.
    pub drop_point: Option<String>,
}

/// Largest `maxDistance` a driver may set, km; also the least radius searched, so that a
/// driver whose own distance exceeds the round's radius is still found.
pub const MAX_FILTER_KM: f64 = 200.0;

/// A driver's offer filters (`driver:subscribe {filters}`); its serde form is also how the
/// engine stores them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filters {
    /// Farthest trip origin accepted, km.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_distance: Option<f64>,
    /// Least earnings accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_earnings: Option<f64>,
    /// Trip types accepted (`PRIVATE`, `SHARED`); absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_types: Option<Vec<String>>,
}

impl Filters {
    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), crate::domain::Invalid> {
        use crate::domain::Invalid;
        if let Some(d) = self.max_distance
            && !(d.is_finite() && d > 0.0 && d <= MAX_FILTER_KM)
        {
            return Err(Invalid(format!("filters.maxDistance must be in (0, {MAX_FILTER_KM}] km")));
        }
        if let Some(e) = self.min_earnings
            && !(e.is_finite() && e >= 0.0)
        {
            return Err(Invalid("filters.minEarnings must be a number ≥ 0".into()));
        }
        if let Some(types) = &self.trip_types
            && (types.len() > 2 || types.iter().any(|t| t != "PRIVATE" && t != "SHARED"))
        {
            return Err(Invalid("filters.tripTypes must list PRIVATE and/or SHARED".into()));
        }
        Ok(())
    }

    /// Whether a trip of `trip_type` at `distance_km` paying `earnings` passes.
    pub fn admits(&self, trip_type: &str, distance_km: f64, round_radius: f64, earnings: f64) -> bool {
        distance_km <= self.max_distance.unwrap_or(round_radius)
            && self.min_earnings.is_none_or(|m| earnings >= m)
            && self.trip_types.as_ref().is_none_or(|t| t.iter().any(|x| x == trip_type))
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
    fn filters_are_checked() {
        assert!(Filters::default().validate().is_ok());
        let f = |d: Option<f64>, e: Option<f64>, t: Option<Vec<&str>>| Filters {
            max_distance: d,
            min_earnings: e,
            trip_types: t.map(|v| v.into_iter().map(String::from).collect()),
        };
        assert!(f(Some(5.0), Some(10.0), Some(vec!["PRIVATE"])).validate().is_ok());
        assert!(f(Some(0.0), None, None).validate().is_err());
        assert!(f(Some(f64::NAN), None, None).validate().is_err());
        assert!(f(None, Some(-1.0), None).validate().is_err());
        assert!(f(None, None, Some(vec!["BUS"])).validate().is_err());
    }

    #[test]
    fn round_radius_doubles() {
        assert_eq!(round_radius_km(10.0, 0), 10.0);
        assert_eq!(round_radius_km(10.0, 2), 40.0);
    }
}
