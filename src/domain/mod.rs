//! Domain types shared below the edges: validated ids, roles, positions and the rules of
//! who may touch a trip. No wire formats live here (those are in `socket`, `sse`, `http`);
//! what reaches this module has already been parsed and checked.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod area;
pub mod cell;
pub mod ids;
pub mod presence;
pub mod progress;
pub mod rides;
pub mod rooms;

pub use ids::{EventId, Tenant, TripId, UserId, valid_id};
pub use rooms::RoomKey;

/// Roles of CONTRACT §1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A rider.
    Passenger,
    /// A driver streaming positions.
    Driver,
    /// Checks tickets on board.
    Conductor,
    /// Operator with tenant-wide access.
    Admin,
    /// Dispatcher / operator of a business.
    Business,
    /// A backend calling the publish API.
    Service,
}

impl Role {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Passenger => "PASSENGER",
            Role::Driver => "DRIVER",
            Role::Conductor => "CONDUCTOR",
            Role::Admin => "ADMIN",
            Role::Business => "BUSINESS",
            Role::Service => "SERVICE",
        }
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "PASSENGER" => Role::Passenger,
            "DRIVER" => Role::Driver,
            "CONDUCTOR" => Role::Conductor,
            "ADMIN" => Role::Admin,
            "BUSINESS" => Role::Business,
            "SERVICE" => Role::Service,
            _ => return Err(()),
        })
    }
}

/// Driver-reported trip status of `driver:status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverStatus {
    /// Trip started.
    Started,
    /// Trip paused.
    Paused,
    /// Trip ended by the driver.
    Ended,
    /// Emergency: also alerts admins.
    Emergency,
}

impl DriverStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverStatus::Started => "STARTED",
            DriverStatus::Paused => "PAUSED",
            DriverStatus::Ended => "ENDED",
            DriverStatus::Emergency => "EMERGENCY",
        }
    }
}

impl FromStr for DriverStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "STARTED" => DriverStatus::Started,
            "PAUSED" => DriverStatus::Paused,
            "ENDED" => DriverStatus::Ended,
            "EMERGENCY" => DriverStatus::Emergency,
            _ => return Err(()),
        })
    }
}

/// A driver's validated position: the contract's `Location` (CONTRACT §2). The one shape of
/// a position: what the engine stores as the latest value and returns, what
/// `server:location:update` carries (stamped), and what a snapshot row is made from. Its
/// serde form is the stored and published JSON (`tripId`, `driverId`, `lat`, `lng`,
/// `speed`, `heading`, `accuracy`, `updatedAt`; absent options left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    /// Trip the driver reports for, already checked to be the driver's trip.
    #[serde(rename = "tripId", default, skip_serializing_if = "Option::is_none")]
    pub trip: Option<TripId>,
    /// The driver.
    #[serde(rename = "driverId")]
    pub driver: UserId,
    /// Latitude in [-90, 90].
    pub lat: f64,
    /// Longitude in [-180, 180].
    pub lng: f64,
    /// Speed ≥ 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    /// Heading in [0, 360).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    /// Accuracy ≥ 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// When the position was taken (the driver's timestamp, or receipt time), ISO-8601.
    pub updated_at: String,
}

/// A driver's position report as sent (CONTRACT §2 `driver:location:update`, §7 the HTTP
/// ingest bodies): one shape for the socket event and both HTTP routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionReport {
    /// Trip the driver reports for.
    pub trip_id: Option<String>,
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lng: f64,
    /// Speed, ≥ 0.
    pub speed: Option<f64>,
    /// Heading in [0, 360).
    pub heading: Option<f64>,
    /// Accuracy, ≥ 0.
    pub accuracy: Option<f64>,
    /// ISO-8601 time of the fix.
    pub timestamp: Option<String>,
}

impl PositionReport {
    /// Validates the report (ranges, timestamp at most 60 s ahead, trip id) into the
    /// `driver`'s [`Location`]; without a timestamp the position is dated now.
    pub fn into_location(self, driver: UserId) -> Result<Location, Invalid> {
        check_position(self.lat, self.lng, self.speed, self.heading, self.accuracy)?;
        let updated_at = match &self.timestamp {
            Some(ts) => iso(check_timestamp(ts, chrono::Utc::now())?),
            None => now_iso(),
        };
        let trip = match self.trip_id {
            Some(t) if valid_id(&t) => Some(TripId(t)),
            Some(_) => return Err(Invalid("tripId must be 1–128 characters".into())),
            None => None,
        };
        Ok(Location {
            trip,
            driver,
            lat: self.lat,
            lng: self.lng,
            speed: self.speed,
            heading: self.heading,
            accuracy: self.accuracy,
            updated_at,
        })
    }
}

/// Why a position or status report is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<Invalid> for crate::error::Error {
    fn from(e: Invalid) -> Self {
        crate::error::Error::InvalidPayload(e.0)
    }
}

/// Checks the numeric ranges of CONTRACT §2 `driver:location:update`.
pub fn check_position(
    lat: f64,
    lng: f64,
    speed: Option<f64>,
    heading: Option<f64>,
    accuracy: Option<f64>,
) -> Result<(), Invalid> {
    let finite = |name: &str, v: f64| {
        if v.is_finite() { Ok(()) } else { Err(Invalid(format!("{name} must be a finite number"))) }
    };
    finite("lat", lat)?;
    finite("lng", lng)?;
    if !(-90.0..=90.0).contains(&lat) {
        return Err(Invalid("lat must be in [-90, 90]".into()));
    }
    if !(-180.0..=180.0).contains(&lng) {
        return Err(Invalid("lng must be in [-180, 180]".into()));
    }
    if let Some(s) = speed {
        finite("speed", s)?;
        if s < 0.0 {
            return Err(Invalid("speed must be ≥ 0".into()));
        }
    }
    if let Some(h) = heading {
        finite("heading", h)?;
        if !(0.0..360.0).contains(&h) {
            return Err(Invalid("heading must be in [0, 360)".into()));
        }
    }
    if let Some(a) = accuracy {
        finite("accuracy", a)?;
        if a < 0.0 {
            return Err(Invalid("accuracy must be ≥ 0".into()));
        }
    }
    Ok(())
}

/// Parses an ISO-8601 timestamp and refuses one more than 60 s ahead of `now`.
pub fn check_timestamp(ts: &str, now: chrono::DateTime<chrono::Utc>) -> Result<chrono::DateTime<chrono::Utc>, Invalid> {
    let t = chrono::DateTime::parse_from_rfc3339(ts)
        .map_err(|_| Invalid("timestamp must be an ISO-8601 date-time".into()))?
        .with_timezone(&chrono::Utc);
    if t > now + chrono::Duration::seconds(60) {
        return Err(Invalid("timestamp is more than 60 s ahead".into()));
    }
    Ok(t)
}

/// Current time in milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// Current time as the contract's ISO-8601 UTC string (milliseconds).
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A time as ISO-8601 UTC with as many fractional digits as it carries.
pub fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_free_of_control_characters() {
        assert!(valid_id("t1"));
        assert!(valid_id(&"x".repeat(128)));
        assert!(!valid_id(""));
        assert!(!valid_id(&"x".repeat(129)));
        assert!(!valid_id("a\u{1f}b"));
    }

    #[test]
    fn positions_outside_their_ranges_are_invalid() {
        assert!(check_position(10.0, 20.0, Some(0.0), Some(359.9), Some(3.0)).is_ok());
        assert!(check_position(90.1, 0.0, None, None, None).is_err());
        assert!(check_position(0.0, -180.1, None, None, None).is_err());
        assert!(check_position(0.0, 0.0, Some(-1.0), None, None).is_err());
        assert!(check_position(0.0, 0.0, None, Some(360.0), None).is_err());
        assert!(check_position(0.0, 0.0, None, None, Some(-0.1)).is_err());
        assert!(check_position(f64::NAN, 0.0, None, None, None).is_err());
    }

    #[test]
    fn timestamps_far_ahead_are_invalid_and_precision_is_kept() {
        let now = chrono::Utc::now();
        assert!(now_iso().ends_with('Z') && now_iso().len() == 24);
        assert!(check_timestamp(&iso(now + chrono::Duration::seconds(61)), now).is_err());
        assert!(check_timestamp("yesterday", now).is_err());
        let t = check_timestamp("2026-01-02T03:04:05.123456Z", now).expect("valid");
        assert_eq!(iso(t), "2026-01-02T03:04:05.123456Z");
    }
}
