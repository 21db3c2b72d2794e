//! The one publish path. Every server→client event ([`crate::events`]) is stamped here
//! (`emittedAt`), encoded as a frame and published through the [`Engine`] to every node
//! with members in the room; each node then hands the frames it receives to its local
//! sinks through [`delivery`]; [`areas`] is the sink of live areas' geo-cell rooms, which
//! conflates positions per subscriber. Nothing else in the crate emits to a room, and
//! nothing here knows a transport.

use serde::Serialize;

use crate::domain::progress::Progress;
use crate::domain::{EventId, Location, RoomKey, Tenant, UserId};
use crate::engine::{Engine, frame};
use crate::error::{Error, Result};
use crate::events::{self, ServerEvent};

pub mod areas;
pub mod delivery;

pub use delivery::{Control, Delivery, LocalCounts, Sink};

/// Serializes `payload` (a JSON object) with `emittedAt` added.
pub fn stamp<T: Serialize>(payload: &T) -> Result<String> {
    let mut v = serde_json::to_value(payload).map_err(|e| {
        tracing::error!(error = %e, "payload does not serialize");
        Error::Internal
    })?;
    if let Some(map) = v.as_object_mut() {
        map.insert("emittedAt".into(), crate::domain::now_iso().into());
    }
    Ok(v.to_string())
}

fn count_out(event: &str) {
    metrics::counter!("fleetcast_events_out_total", "event" => event.to_string()).increment(1);
}

/// Publishes a recoverable event to `room` on every node: stamped with `emittedAt` here,
/// given its `eventId` by the engine in the same step that records it in the room's
/// history. Returns the id.
pub async fn publish<E: ServerEvent>(engine: &Engine, room: &RoomKey, event: &E) -> Result<EventId> {
    publish_except(engine, room, event, &[]).await
}

/// [`publish`], skipping the members of `except` (who receive the same event through those
/// rooms).
pub async fn publish_except<E: ServerEvent>(
    engine: &Engine,
    room: &RoomKey,
    event: &E,
    except: &[&RoomKey],
) -> Result<EventId> {
    let name = event.name();
    let json = stamp(event)?;
    let tail = json.strip_prefix('{').ok_or_else(|| {
        tracing::error!(event = name, "recoverable payload is not a JSON object");
        Error::Internal
    })?;
    let id = engine.publish_recoverable(room, name, tail, except).await?;
    count_out(name);
    Ok(id)
}

/// Publishes one recoverable event to a room and to user rooms (CONTRACT §2: "trip
/// subscribers and the user rooms of driver, organizer and passengers"). A socket in the
/// room and in a user room receives it once: the user-room frames skip the room's members.
/// Emission happens after the change is committed, so a failure is logged and counted,
/// never returned (CONTRACT §5).
pub async fn publish_to_room_and_users<E: ServerEvent>(
    engine: &Engine,
    tenant: &Tenant,
    room: Option<&RoomKey>,
    users: &[&str],
    event: &E,
) {
    let mut failed = false;
    if let Some(room) = room {
        failed |= publish(engine, room, event).await.is_err();
    }
    let mut seen = std::collections::HashSet::new();
    let except: Vec<&RoomKey> = room.into_iter().collect();
    for user in users {
        if !seen.insert(*user) {
            continue;
        }
        let user_room = RoomKey::user(tenant, &UserId((*user).to_string()));
        failed |= publish_except(engine, &user_room, event, &except).await.is_err();
    }
    if failed {
        publish_failed(event.name());
    }
}

/// Publishes one recoverable event to the user rooms of `users` of `tenant` (offers);
/// failures are logged and counted.
pub async fn publish_to_users<E: ServerEvent>(engine: &Engine, tenant: &Tenant, users: &[&str], event: &E) {
    publish_to_room_and_users(engine, tenant, None, users, event).await;
}

/// Counts and logs an event that was not published after its change was committed.
pub fn publish_failed(event: &str) {
    metrics::counter!("fleetcast_publish_failures_total").increment(1);
    tracing::warn!(event, "an event was not published to every room");
}

/// Publishes a volatile event to `room` on every node, except to the socket `except_sid`
/// (the sender of `chat:typing`).
pub async fn publish_volatile_except_socket<E: ServerEvent>(
    engine: &Engine,
    room: &RoomKey,
    event: &E,
    except_sid: &str,
) -> Result<()> {
    let json = stamp(event)?;
    engine.publish(room, &frame::encode(event.name(), frame::VOLATILE, Some(except_sid), &json)).await?;
    count_out(event.name());
    Ok(())
}

/// Sends a node-to-node command to the local members of `room` on every node.
pub async fn send_control(engine: &Engine, room: &RoomKey, command: &Control) -> Result<()> {
    engine.publish(room, &command.frame()).await
}

/// Builds the frame of a location update (published by the engine in the same round trip
/// that stores it, so the write and the broadcast cannot diverge).
///
/// Volatile in the contract's sense (no `eventId`, never replayed) but queued like any
/// frame on each socket: socketioxide's volatile path keeps only a socket's latest unsent
/// frame, so a node busy for a few hundred milliseconds dropped updates a driver had been
/// told were accepted (seen as < 100 % delivery in the load test). A socket whose queue
/// (256 frames) is full still loses frames rather than holding the node's memory.
///
/// `sender` is the socket that sent the update: it does not get its own position back
/// (CONTRACT §2, v1.1); the driver's other sockets do.
///
/// `progress` is the trip's progress towards its next target (CONTRACT §7), when it has one.
pub fn location_frame(location: &Location, progress: Option<&Progress>, sender: Option<&str>) -> Result<String> {
    // Serialized directly with `emittedAt` (the generic `stamp` goes through a map).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Stamped<'a> {
        #[serde(flatten)]
        location: events::LocationUpdate<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        progress: Option<&'a Progress>,
        emitted_at: &'a str,
    }
    let now = crate::domain::now_iso();
    let stamped = Stamped { location: events::LocationUpdate(location), progress, emitted_at: &now };
    let json = serde_json::to_string(&stamped).map_err(|_| Error::Internal)?;
    count_out(events::LOCATION);
    Ok(frame::encode(events::LOCATION, 0, sender, &json))
}

/// Builds the frame for a driver's location room (SSE driver-location streams; not
/// recoverable; queued like [`location_frame`]).
pub fn driver_location_frame(location: &Location) -> Result<String> {
    let payload = events::DriverLocation {
        driver_id: &location.driver.0,
        location: events::Position::from(location),
        timestamp: &location.updated_at,
        emitted_at: &crate::domain::now_iso(),
    };
    let json = serde_json::to_string(&payload).map_err(|_| Error::Internal)?;
    Ok(frame::encode(events::DRIVER_LOCATION, 0, None, &json))
}

/// The stamped `server:location:update` payload sent to one socket (the current location
/// after `passenger:subscribe`).
pub fn stamped_location(location: &Location) -> Result<String> {
    stamp(&events::LocationUpdate(location))
}
