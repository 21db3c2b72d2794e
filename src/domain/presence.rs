//! A driver's availability (CONTRACT §7 "Driver presence"): derived by the cluster from four
//! facts, never sent by a client. The engines hold the facts and the last derived value;
//! this module owns the rule, so both engines (and `redis/presence.lua`, which mirrors it)
//! decide the same way.

use serde::Serialize;

/// `AVAILABLE`, `BUSY` or `OFFLINE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Availability {
    /// Not busy, eligible for offers on a live connection, with a fresh position.
    Available,
    /// On an active trip, and connected or with a fresh position.
    Busy,
    /// Anything else; a driver seen for the first time starts here.
    Offline,
}

/// What the cluster knows of one driver at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts {
    /// Assigned to a trip in `IN_PROGRESS`, `DEPARTED` or `ARRIVED`.
    pub on_trip: bool,
    /// Holds a socket or SSE stream on a live node.
    pub connected: bool,
    /// Eligible for offers on a live connection (`driver:subscribe`, or the user-room SSE
    /// stream with `offers=true`).
    pub offers: bool,
    /// Has a position fresher than the location TTL.
    pub fresh: bool,
}

impl Availability {
    /// The contract's rule.
    pub fn derive(f: Facts) -> Self {
        if f.on_trip && (f.connected || f.fresh) {
            Availability::Busy
        } else if f.offers && f.fresh {
            Availability::Available
        } else {
            Availability::Offline
        }
    }

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Available => "AVAILABLE",
            Availability::Busy => "BUSY",
            Availability::Offline => "OFFLINE",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "AVAILABLE" => Some(Availability::Available),
            "BUSY" => Some(Availability::Busy),
            "OFFLINE" => Some(Availability::Offline),
            _ => None,
        }
    }
}

/// The trip statuses in which the assigned driver is on a trip.
pub const ACTIVE_TRIP_STATUSES: [&str; 3] = ["IN_PROGRESS", "DEPARTED", "ARRIVED"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_of_the_contract() {
        let f = |on_trip, connected, offers, fresh| Availability::derive(Facts { on_trip, connected, offers, fresh });
        assert_eq!(f(true, true, false, false), Availability::Busy);
        assert_eq!(f(true, false, false, true), Availability::Busy);
        assert_eq!(f(true, false, true, false), Availability::Offline);
        assert_eq!(f(false, true, true, true), Availability::Available);
        assert_eq!(f(false, true, true, false), Availability::Offline, "an offer slot without a fresh position");
        assert_eq!(f(false, true, false, true), Availability::Offline, "connected but not taking offers");
        assert_eq!(f(false, false, false, false), Availability::Offline);
        for a in [Availability::Available, Availability::Busy, Availability::Offline] {
            assert_eq!(Availability::parse(a.as_str()), Some(a));
        }
    }
}
