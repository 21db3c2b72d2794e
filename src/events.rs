//! Every server→client event of the contract, in one place: its name and its payload as a
//! typed `Serialize` struct (CONTRACT §2 "Server → client", §3 SSE). Flows build these and
//! hand them to `fanout`, which stamps `emittedAt` (and, for recoverable events, the engine
//! the `eventId`); no other module spells an event name or builds an event payload.
//!
//! Field order follows the contract's tables; optional fields are left out when absent.

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::domain::Location;
use crate::domain::rooms::Entity;

/// A server→client event: a payload and the name clients see.
pub trait ServerEvent: Serialize {
    /// The event name.
    fn name(&self) -> &str;
}

macro_rules! named {
    ($($ty:ident $(<$lt:lifetime>)? => $name:expr,)*) => {$(
        impl$(<$lt>)? ServerEvent for $ty$(<$lt>)? {
            fn name(&self) -> &str {
                $name
            }
        }
    )*};
}

/// `server:location:update` (volatile): a trip's driver moved.
pub const LOCATION: &str = "server:location:update";
/// `server:trip:status`: a driver-reported trip status.
pub const TRIP_STATUS: &str = "server:trip:status";
/// `server:alert` to `admin:alerts`.
pub const ALERT: &str = "server:alert";
/// `typing` (volatile) in a chat room.
pub const TYPING: &str = "typing";
/// `message.read` in a chat room.
pub const MESSAGE_READ: &str = "message.read";
/// `trip.status.updated` (status API or an accepted offer).
pub const TRIP_STATUS_UPDATED: &str = "trip.status.updated";
/// `trip.created` to `admin:events`.
pub const TRIP_CREATED: &str = "trip.created";
/// `booking.confirmed`.
pub const BOOKING_CONFIRMED: &str = "booking.confirmed";
/// `booking.cancelled`.
pub const BOOKING_CANCELLED: &str = "booking.cancelled";
/// `trip.offer.created` to an eligible driver.
pub const OFFER_CREATED: &str = "trip.offer.created";
/// `trip.offer.accepted` to the winning driver.
pub const OFFER_ACCEPTED: &str = "trip.offer.accepted";
/// `trip.offer.expired` (`TAKEN`, `DEADLINE`, `CANCELLED`).
pub const OFFER_EXPIRED: &str = "trip.offer.expired";
/// `notification` (published through the publish API, payload checked and completed).
pub const NOTIFICATION: &str = "notification";
/// `server:auth:expired {}`: the socket's token expired unrefreshed; it is disconnected.
pub const AUTH_EXPIRED: &str = "server:auth:expired";
/// `driver_location` of the SSE driver-location stream (volatile).
pub const DRIVER_LOCATION: &str = "driver_location";
/// `order_update` of an order room and its SSE stream.
pub const ORDER_UPDATE: &str = "order_update";
/// `run_update` of a run room and its SSE stream.
pub const RUN_UPDATE: &str = "run_update";
/// `driver.availability.changed` to `admin:events` (CONTRACT §7).
pub const AVAILABILITY_CHANGED: &str = "driver.availability.changed";
/// `server:area:update` (volatile) to one area subscriber's socket (CONTRACT §7).
pub const AREA_UPDATE: &str = "server:area:update";
/// `area_update` of the SSE area stream.
pub const SSE_AREA_UPDATE: &str = "area_update";
/// `trip.driver.arriving` to the trip room and the organizer's and passengers' user rooms.
pub const DRIVER_ARRIVING: &str = "trip.driver.arriving";

/// `driver.availability.changed {driverId, availability, previous, tripId?, at}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailabilityChanged<'a> {
    pub driver_id: &'a str,
    pub availability: crate::domain::presence::Availability,
    pub previous: crate::domain::presence::Availability,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trip_id: Option<&'a str>,
    pub at: &'a str,
}

/// `trip.driver.arriving {tripId, target, distanceKm, at}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverArriving<'a> {
    pub trip_id: &'a str,
    pub target: crate::domain::progress::Target,
    pub distance_km: f64,
    pub at: &'a str,
}

/// `server:location:update`: the driver's [`Location`] (published by the engine in the
/// same step that stores it; see `fanout::location_frame`).
#[derive(Serialize)]
#[serde(transparent)]
pub struct LocationUpdate<'a>(pub &'a Location);

/// `server:trip:status {tripId, driverId, status, timestamp}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TripStatus<'a> {
    pub trip_id: &'a str,
    pub driver_id: &'a str,
    pub status: &'a str,
    pub timestamp: &'a str,
}

/// `server:alert {type, tripId?, driverId?, lat?, lng?, message?, at}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub trip_id: &'a str,
    pub driver_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lng: Option<f64>,
    pub message: &'a str,
    pub at: &'a str,
}

/// `typing {chatId, userId, isTyping}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Typing<'a> {
    pub chat_id: &'a str,
    pub user_id: &'a str,
    pub is_typing: bool,
}

/// `message.read {chatId, messageId, userId, readAt}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRead<'a> {
    pub chat_id: &'a str,
    pub message_id: &'a str,
    pub user_id: &'a str,
    pub read_at: &'a str,
}

/// `trip.status.updated {tripId, tripTitle, previousStatus, newStatus, driverName?, notes?,
/// originName, destName, updatedAt}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TripStatusUpdated<'a> {
    pub trip_id: &'a str,
    pub trip_title: &'a str,
    pub previous_status: &'a str,
    pub new_status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<&'a str>,
    pub origin_name: &'a str,
    pub dest_name: &'a str,
    pub updated_at: &'a str,
}

/// `trip.created {tripId, tripType, title, organizerId, status}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TripCreated<'a> {
    pub trip_id: &'a str,
    pub trip_type: &'a str,
    pub title: &'a str,
    pub organizer_id: &'a str,
    pub status: &'a str,
}

/// `booking.confirmed` (`seatsBooked`) or `booking.cancelled` (`seatsFreed`, `reason?`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingChanged<'a> {
    #[serde(skip)]
    pub cancelled: bool,
    pub trip_id: &'a str,
    pub trip_type: &'a str,
    pub booking_id: &'a str,
    pub passenger_id: &'a str,
    pub passenger_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats_booked: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seats_freed: Option<i32>,
    pub available_seats: i32,
    pub total_seats: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    pub tenant_id: &'a str,
}

/// `trip.offer.created {tripId, tripType, title, originName, destName, distanceKm,
/// estimatedEarnings, currency, urgency, acceptanceDeadline, seats}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferCreated<'a> {
    pub trip_id: &'a str,
    pub trip_type: &'a str,
    pub title: &'a str,
    pub origin_name: &'a str,
    pub dest_name: &'a str,
    pub distance_km: f64,
    pub estimated_earnings: f64,
    pub currency: &'a str,
    pub urgency: &'a str,
    pub acceptance_deadline: &'a str,
    pub seats: i32,
}

/// `trip.offer.accepted {tripId}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferAccepted<'a> {
    pub trip_id: &'a str,
}

/// `trip.offer.expired {tripId, reason}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferExpired<'a> {
    pub trip_id: &'a str,
    pub reason: ExpiryReason,
}

/// Why an offer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExpiryReason {
    /// Another driver won the trip.
    Taken,
    /// The round's deadline passed unanswered.
    Deadline,
    /// The trip was cancelled.
    Cancelled,
}

/// `driver_location {driverId, location: {latitude, longitude, heading?, speed?},
/// timestamp, emittedAt}` of the SSE driver-location stream.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverLocation<'a> {
    pub driver_id: &'a str,
    pub location: Position,
    pub timestamp: &'a str,
    pub emitted_at: &'a str,
}

/// A position as the SSE driver stream shows it.
#[derive(Serialize)]
pub struct Position {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
}

impl From<&Location> for Position {
    fn from(l: &Location) -> Self {
        Position { latitude: l.lat, longitude: l.lng, heading: l.heading, speed: l.speed }
    }
}

/// `server:auth:expired {}` (sent to one socket, not to a room).
#[derive(Serialize)]
pub struct AuthExpired {}

/// `order_update {orderId, data}` / `run_update {runId, data}`.
pub struct EntityUpdate<'a> {
    pub entity: Entity,
    pub id: &'a str,
    pub data: Value,
}

impl Serialize for EntityUpdate<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(&format!("{}Id", self.entity.as_str()), self.id)?;
        m.serialize_entry("data", &self.data)?;
        m.end()
    }
}

/// Any event a backend publishes through the publish API (`entity.action`,
/// `notification`): its name and payload as given (a notification completed by the edge).
pub struct Published {
    pub name: String,
    pub payload: Map<String, Value>,
}

impl Serialize for Published {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.payload.serialize(s)
    }
}

impl ServerEvent for Published {
    fn name(&self) -> &str {
        &self.name
    }
}

impl ServerEvent for EntityUpdate<'_> {
    fn name(&self) -> &str {
        match self.entity {
            Entity::Order => ORDER_UPDATE,
            Entity::Run => RUN_UPDATE,
        }
    }
}

impl ServerEvent for BookingChanged<'_> {
    fn name(&self) -> &str {
        if self.cancelled { BOOKING_CANCELLED } else { BOOKING_CONFIRMED }
    }
}

impl ServerEvent for AuthExpired {
    fn name(&self) -> &str {
        AUTH_EXPIRED
    }
}

named! {
    LocationUpdate<'a> => LOCATION,
    TripStatus<'a> => TRIP_STATUS,
    Alert<'a> => ALERT,
    Typing<'a> => TYPING,
    MessageRead<'a> => MESSAGE_READ,
    TripStatusUpdated<'a> => TRIP_STATUS_UPDATED,
    TripCreated<'a> => TRIP_CREATED,
    OfferCreated<'a> => OFFER_CREATED,
    OfferAccepted<'a> => OFFER_ACCEPTED,
    OfferExpired<'a> => OFFER_EXPIRED,
    DriverLocation<'a> => DRIVER_LOCATION,
    AvailabilityChanged<'a> => AVAILABILITY_CHANGED,
    DriverArriving<'a> => DRIVER_ARRIVING,
}

/// The SSE streams' own message types (CONTRACT §3): data is JSON with a `type` field.
pub mod sse {
    use serde::Serialize;

    /// First message of every stream, with the current state.
    pub const CONNECTED: &str = "connected";
    /// Keep-alive message.
    pub const HEARTBEAT: &str = "heartbeat";
    /// A trip status change on the trip-status stream (`trip.status.updated`).
    pub const STATUS_UPDATE: &str = "status_update";

    /// The SSE `type` under which a room event appears on a stream (the room event's own
    /// name except for trip status).
    pub fn stream_type(event: &str) -> &str {
        if event == super::TRIP_STATUS_UPDATED { STATUS_UPDATE } else { event }
    }

    /// `heartbeat {at}`.
    #[derive(Serialize)]
    pub struct Heartbeat<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub at: &'a str,
    }

    /// `connected {tripId, currentStatus}` of the trip-status stream.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TripConnected<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub trip_id: &'a str,
        pub current_status: &'a str,
    }

    /// `area_update {drivers, left, at}` of the SSE area stream (no `id:`).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct AreaUpdate<'a, D: Serialize> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub drivers: &'a [D],
        pub left: &'a [String],
        pub at: &'a str,
        pub emitted_at: &'a str,
    }

    /// `connected {userId}` of the caller's own user-room stream.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct UserConnected<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub user_id: &'a str,
    }

    /// `connected {orderId | runId}` of an entity stream.
    pub struct EntityConnected<'a> {
        pub entity: crate::domain::rooms::Entity,
        pub id: &'a str,
    }

    impl Serialize for EntityConnected<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("type", CONNECTED)?;
            m.serialize_entry(&format!("{}Id", self.entity.as_str()), self.id)?;
            m.end()
        }
    }

    /// `connected {driverId, location}` of the driver-location stream: the latest live
    /// position, or `null`.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub struct DriverConnected<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub driver_id: &'a str,
        pub location: Option<CurrentPosition<'a>>,
    }

    /// A driver's latest position as `connected` shows it (absent fields as `null`).
    #[derive(Serialize)]
    pub struct CurrentPosition<'a> {
        pub latitude: f64,
        pub longitude: f64,
        pub heading: Option<f64>,
        pub speed: Option<f64>,
        pub timestamp: &'a str,
    }

    impl<'a> From<&'a crate::domain::Location> for CurrentPosition<'a> {
        fn from(l: &'a crate::domain::Location) -> Self {
            CurrentPosition {
                latitude: l.lat,
                longitude: l.lng,
                heading: l.heading,
                speed: l.speed,
                timestamp: &l.updated_at,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_contract_fields_and_names() {
        let e = OfferExpired { trip_id: "t1", reason: ExpiryReason::Taken };
        assert_eq!(e.name(), "trip.offer.expired");
        assert_eq!(serde_json::to_string(&e).expect("json"), r#"{"tripId":"t1","reason":"TAKEN"}"#);
        let u = EntityUpdate { entity: Entity::Order, id: "o1", data: serde_json::json!({"a": 1}) };
        assert_eq!(u.name(), "order_update");
        assert_eq!(serde_json::to_string(&u).expect("json"), r#"{"orderId":"o1","data":{"a":1}}"#);
        assert_eq!(sse::stream_type(TRIP_STATUS_UPDATED), "status_update");
    }
}
