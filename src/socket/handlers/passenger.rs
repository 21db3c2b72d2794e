//! `passenger:subscribe`, `passenger:unsubscribe` (flow: `flows::subscriptions`).

use serde_json::{Map, Value};
use socketioxide::extract::SocketRef;

use crate::domain::{RoomKey, TripId};
use crate::error::Error;
use crate::fanout;
use crate::flows::subscriptions;
use crate::socket::ack::{Reply, ok};
use crate::socket::edge::Edge;
use crate::socket::payload::{self, SubscribeIn, SubscribeTarget, TripRef};
use crate::socket::replay::send_to_socket;
use crate::socket::session::{Session, drop_trip, join, join_with_replay, leave};

/// `passenger:subscribe {tripId | tripIds, since?}`: all or nothing.
pub(super) async fn subscribe(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let app = &edge.app;
    let mut input = payload::parse::<SubscribeIn>(p)?;
    let single = input.trip_id.clone();
    let since = payload::since_by_key(input.since.take(), single.as_deref())?;
    let target = input.target()?;
    let trips: Vec<TripId> = match &target {
        SubscribeTarget::One(t) => vec![t.clone()],
        SubscribeTarget::Many(ts) => ts.clone(),
    };
    let c = &session.claims;
    let sid = s.id.to_string();
    subscriptions::claim(app, c, &sid, &trips).await?;
    let mut recovered = true;
    for (i, trip) in trips.iter().enumerate() {
        let room = RoomKey::trip_subscribers(&c.tenant, trip);
        let joined = match since.get(&trip.0).or_else(|| since.get(room.name())) {
            Some(id) => join_with_replay(&edge.app, &edge.replays, s, session, &room, *id)
                .await
                .map(|complete| recovered &= complete),
            None => join(app, s, session, &room).await,
        };
        if let Err(e) = joined {
            // All or nothing: undo the rooms joined so far and the claim.
            for t in &trips[..i] {
                if !session.trips().contains(t) {
                    leave(app, s, session, &RoomKey::trip_subscribers(&c.tenant, t)).await;
                }
            }
            let fresh: Vec<&TripId> = trips.iter().filter(|t| !session.trips().contains(*t)).collect();
            let _ = subscriptions::release(app, c, &sid, &fresh).await;
            return Err(e);
        }
    }
    session.trips().extend(trips.iter().cloned());
    let mut current = Map::new();
    for trip in &trips {
        let v = match subscriptions::current(app, &c.tenant, trip).await? {
            Some(location) => {
                send_to_socket(s, crate::events::LOCATION, &fanout::stamped_location(&location)?);
                serde_json::to_value(&location).map_err(|_| Error::Internal)?
            }
            None => Value::Null,
        };
        current.insert(trip.0.clone(), v);
    }
    let mut out = Map::new();
    if !since.is_empty() {
        out.insert("recovered".into(), Value::Bool(recovered));
    }
    match target {
        SubscribeTarget::One(t) => {
            out.insert("current".into(), current.remove(&t.0).unwrap_or(Value::Null));
        }
        SubscribeTarget::Many(_) => {
            out.insert("current".into(), Value::Object(current));
        }
    }
    Ok(out)
}

/// `passenger:unsubscribe {tripId}`.
pub(super) async fn unsubscribe(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    drop_trip(&edge.app, s, session, &trip).await?;
    ok()
}
