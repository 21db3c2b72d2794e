//! Rooms (CONTRACT §2 "Rooms"), typed: every room the server itself addresses is built by
//! one constructor here (`trip:{id}:subscribers`, `user:{id}`, …), so no other module
//! formats a room name. Client-named rooms (`room:join`, the publish API) go through
//! [`RoomKey::named`] after the edge validated the name.

use super::ids::{Tenant, TripId, UserId};

/// A room scoped by tenant. Its string form (`tenant \x1f name`) is the local Socket.IO
/// room name and the key the engine derives channels from; clients never see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomKey {
    full: String,
    split: usize,
}

impl RoomKey {
    /// A client-named room (`room:join`, publish API targets) of `tenant`.
    pub fn named(tenant: &Tenant, name: &str) -> Self {
        Self { full: format!("{}\u{1f}{}", tenant.0, name), split: tenant.0.len() }
    }

    /// `trip:{trip}:subscribers`: passengers, conductors and admins watching a trip, and its
    /// connected driver.
    pub fn trip_subscribers(tenant: &Tenant, trip: &TripId) -> Self {
        Self::named(tenant, &format!("trip:{}:subscribers", trip.0))
    }

    /// `driver:{trip}`: the room a driver joins with `driver:connect` for its trip.
    pub fn driver_of_trip(tenant: &Tenant, trip: &TripId) -> Self {
        Self::named(tenant, &format!("driver:{}", trip.0))
    }

    /// `driver:{driver}:location`: followed by SSE driver-location streams.
    pub fn driver_location(tenant: &Tenant, driver: &UserId) -> Self {
        Self::named(tenant, &format!("driver:{}:location", driver.0))
    }

    /// `user:{user}`: every socket of a user joins it at connect.
    pub fn user(tenant: &Tenant, user: &UserId) -> Self {
        Self::named(tenant, &format!("user:{}", user.0))
    }

    /// `admin:alerts` (`server:alert`).
    pub fn admin_alerts(tenant: &Tenant) -> Self {
        Self::named(tenant, ADMIN_ALERTS)
    }

    /// `admin:events` (`trip.created`).
    pub fn admin_events(tenant: &Tenant) -> Self {
        Self::named(tenant, ADMIN_EVENTS)
    }

    /// The room of a geo cell (live areas, CONTRACT §7): its name holds a control
    /// character, which no client-named room may (`limits::room_name`), so only the
    /// location and presence paths publish into it and only nodes watching it receive it.
    pub fn area_cell(tenant: &Tenant, cell: super::cell::Cell) -> Self {
        Self::named(tenant, &format!("{AREA_CELL}{}", cell.name()))
    }

    /// `chat:{id}`.
    pub fn chat(tenant: &Tenant, chat: &str) -> Self {
        Self::named(tenant, &format!("chat:{chat}"))
    }

    /// An entity room of the publish API and its SSE stream: `order:{id}`, `run:{id}`.
    pub fn entity(tenant: &Tenant, kind: Entity, id: &str) -> Self {
        Self::named(tenant, &format!("{}:{id}", kind.as_str()))
    }

    /// Parses the local room name back (inverse of [`RoomKey::as_str`]).
    pub fn parse(full: &str) -> Option<Self> {
        let split = full.find('\u{1f}')?;
        Some(Self { full: full.to_string(), split })
    }

    /// Tenant part.
    pub fn tenant(&self) -> &str {
        &self.full[..self.split]
    }

    /// Client-visible name.
    pub fn name(&self) -> &str {
        &self.full[self.split + 1..]
    }

    /// Local Socket.IO room name.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The trip of a `trip:{id}:subscribers` room.
    pub fn subscribed_trip(&self) -> Option<&str> {
        self.name().strip_prefix("trip:")?.strip_suffix(":subscribers")
    }
}

/// The `channels` grant that lets a conductor (or any holder) watch a trip: `trip:{id}`.
pub fn trip_grant(trip: &str) -> String {
    format!("trip:{trip}")
}

/// The `channels` grant that lets its holder follow a driver's location: `driver:{id}`.
pub fn driver_grant(driver: &str) -> String {
    format!("driver:{driver}")
}

/// Name of the admins' alert room.
pub const ADMIN_ALERTS: &str = "admin:alerts";
/// Name prefix of geo-cell rooms (`area` and a record separator).
pub const AREA_CELL: &str = "area\u{1e}";
/// Name of the admins' event room.
pub const ADMIN_EVENTS: &str = "admin:events";

/// Entities of the publish API that have their own rooms and SSE streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// `order:{id}`.
    Order,
    /// `run:{id}` (a delivery run).
    Run,
}

impl Entity {
    /// The room prefix and the id field's stem (`orderId`, `runId`).
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Order => "order",
            Entity::Run => "run",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_rooms_have_the_contract_names_and_parse_back() {
        let t = Tenant("t1".into());
        let trip = TripId("42".into());
        let r = RoomKey::trip_subscribers(&t, &trip);
        assert_eq!(r.name(), "trip:42:subscribers");
        assert_eq!(r.subscribed_trip(), Some("42"));
        assert_eq!(RoomKey::parse(r.as_str()), Some(r.clone()));
        assert_eq!(r.tenant(), "t1");
        assert_eq!(RoomKey::user(&t, &UserId("u".into())).name(), "user:u");
        assert_eq!(RoomKey::driver_location(&t, &UserId("d".into())).name(), "driver:d:location");
        assert_eq!(RoomKey::entity(&t, Entity::Run, "r9").name(), "run:r9");
        assert_eq!(RoomKey::user(&t, &UserId("u".into())).subscribed_trip(), None);
    }
}
