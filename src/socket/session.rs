//! One socket's state ([`Session`]: who, its rooms and trip subscriptions, its flood
//! limiter) and the room operations on it: join (the node holds the room in the engine
//! first, so nothing published after the ack is missed), join with a replay of what the
//! client missed (`since`), leave, and dropping a trip subscription.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex};

use governor::DefaultDirectRateLimiter;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;

use super::arrival::{Arrival, Arrivals};
use super::replay::{Replays, send_to_socket};
use crate::app::App;
use crate::auth::Claims;
use crate::domain::{EventId, Role, RoomKey, TripId};
use crate::error::Result;
use crate::fanout::areas::SubId;
use crate::flows::subscriptions;

/// Per-socket state, created by the connect middleware and kept in the socket's extensions.
pub struct Session {
    /// Who is connected.
    pub claims: Claims,
    /// The token's `exp` (seconds), moved by `auth:refresh`; the socket is closed at this
    /// plus the grace.
    pub(super) exp: AtomicI64,
    /// This socket made its driver eligible for offers (`driver:subscribe`).
    pub(super) offers: AtomicBool,
    /// Flood cut-off for this socket's events (checked before any work).
    pub(super) limiter: DefaultDirectRateLimiter,
    /// Rooms this socket holds through the engine. The lock is never held across `.await`.
    pub(super) rooms: Mutex<HashSet<RoomKey>>,
    /// Trips this socket subscribed to with `passenger:subscribe` (slot holders).
    pub(super) trips: Mutex<HashSet<TripId>>,
    /// Live areas of this socket: `areaId` → the node's subscription.
    pub(super) areas: Mutex<HashMap<String, SubId>>,
    /// The arrival order of this socket's events (location updates are applied in it).
    pub(super) arrivals: Arc<Arrivals>,
}

/// An event's arrival ticket, taken as socketioxide reads the event (before its task).
impl<A: Adapter> FromMessageParts<A> for Arrival {
    type Error = std::convert::Infallible;
    fn from_message_parts(s: &Arc<Socket<A>>, _: &mut Value, _: &Option<i64>) -> Result<Self, Self::Error> {
        Ok(Arrival::take(s.extensions.get::<Arc<Session>>().map(|session| session.arrivals.clone())))
    }
}

impl Session {
    pub(super) fn rooms(&self) -> std::sync::MutexGuard<'_, HashSet<RoomKey>> {
        self.rooms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub(super) fn trips(&self) -> std::sync::MutexGuard<'_, HashSet<TripId>> {
        self.trips.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    pub(super) fn areas(&self) -> std::sync::MutexGuard<'_, HashMap<String, SubId>> {
        self.areas.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends this socket's subscription to a trip: it leaves the trip room (unless it is the
/// trip's connected driver) and frees the subscription slot.
pub(super) async fn drop_trip(app: &App, s: &SocketRef, session: &Session, trip: &TripId) -> Result<()> {
    if !session.trips().remove(trip) {
        return Ok(());
    }
    let c = &session.claims;
    // A driver who also did `driver:connect` on this trip keeps the room.
    let keep = c.role == Role::Driver && session.rooms().contains(&RoomKey::driver_of_trip(&c.tenant, trip));
    if !keep {
        leave(app, s, session, &RoomKey::trip_subscribers(&c.tenant, trip)).await;
    }
    subscriptions::release(app, c, &s.id.to_string(), &[trip]).await
}

/// Joins `room` locally and makes sure the node receives its frames.
pub(super) async fn join(app: &App, s: &SocketRef, session: &Session, room: &RoomKey) -> Result<()> {
    if session.rooms().contains(room) {
        return Ok(());
    }
    app.engine.hold_room(room).await?;
    // Two concurrent joins of the same room by one socket: only the first keeps the hold.
    if !session.rooms().insert(room.clone()) {
        app.engine.release_room(room).await;
        return Ok(());
    }
    s.join(room.as_str().to_string());
    Ok(())
}

/// Joins `room` and first sends what the socket missed after `since`, in order, then live
/// events — none lost or doubled at the seam (see [`super::replay::Replays`]). Returns
/// whether the replay was complete (`false`: the history no longer reaches back to
/// `since`). A socket already in the room (its user room, for `user:sync`) leaves it
/// locally for the replay, so nothing live overtakes the replayed events; the node keeps
/// holding the room throughout.
pub(super) async fn join_with_replay(
    app: &App,
    replays: &Replays,
    s: &SocketRef,
    session: &Session,
    room: &RoomKey,
    since: EventId,
) -> Result<bool> {
    let sid = s.id.to_string();
    let held = session.rooms().contains(room);
    if held {
        // Left before the frames are kept: a frame delivered in between was published
        // before the history read below, so the replay carries it.
        s.leave(room.as_str().to_string());
    }
    replays.begin(room, &sid);
    let history = async {
        if !held {
            app.engine.hold_room(room).await?;
        }
        match app.engine.history(room, since).await {
            Ok(h) => Ok(h),
            Err(e) => {
                if !held {
                    app.engine.release_room(room).await;
                }
                Err(e)
            }
        }
    }
    .await;
    let h = match history {
        Ok(h) => h,
        Err(e) if held => {
            // Back to live, with what arrived meanwhile.
            replays.finish(room, s, None);
            return Err(e);
        }
        Err(e) => {
            replays.abandon(room, &sid);
            return Err(e);
        }
    };
    for (_, event, json) in &h.events {
        send_to_socket(s, event, json);
    }
    if !held && !session.rooms().insert(room.clone()) {
        // A concurrent join of the same room won; keep one hold.
        app.engine.release_room(room).await;
    }
    replays.finish(room, s, h.events.last().map(|(id, _, _)| *id));
    metrics::counter!("fleetcast_replayed_events_total").increment(h.events.len() as u64);
    Ok(h.complete)
}

/// Leaves `room` locally and releases the node's hold.
pub(super) async fn leave(app: &App, s: &SocketRef, session: &Session, room: &RoomKey) {
    if session.rooms().remove(room) {
        s.leave(room.as_str().to_string());
        app.engine.release_room(room).await;
    }
}
