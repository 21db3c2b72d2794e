//! `driver:subscribe`, `driver:unsubscribe`, `trip:offer:accept`, `trip:offer:decline`
//! (flow: `flows::offers`).

use std::sync::atomic::Ordering;

use serde::Deserialize;
use serde_json::{Map, Value};
use socketioxide::extract::SocketRef;

use crate::domain::Role;
use crate::domain::rides::Filters;
use crate::error::Error;
use crate::flows::offers;
use crate::socket::ack::{Reply, ok};
use crate::socket::edge::Edge;
use crate::socket::payload::{self, TripRef};
use crate::socket::session::Session;

#[derive(Deserialize, Default)]
struct DriverSubscribeIn {
    #[serde(default)]
    filters: Option<Filters>,
}

/// `driver:subscribe {filters?}`: this socket makes its driver eligible for offers.
pub(super) async fn subscribe(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let input: DriverSubscribeIn = match p {
        None | Some(Value::Null) => DriverSubscribeIn::default(),
        p => payload::parse(p)?,
    };
    let filters = input.filters.unwrap_or_default();
    offers::subscribe(&edge.app, &session.claims, &s.id.to_string(), &filters).await?;
    session.offers.store(true, Ordering::SeqCst);
    ok()
}

/// `driver:unsubscribe`.
pub(super) async fn unsubscribe(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    payload::parse_empty(p)?;
    if session.claims.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    if session.offers.swap(false, Ordering::SeqCst) {
        offers::unsubscribe(&edge.app, &session.claims, &s.id.to_string()).await?;
    }
    ok()
}

/// `trip:offer:accept {tripId}` → `{ok:true, tripId}` for the one winner.
pub(super) async fn accept(edge: &Edge, _s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    offers::accept(&edge.app, &session.claims, &trip.0).await?;
    let mut m = Map::new();
    m.insert("tripId".into(), trip.0.into());
    Ok(m)
}

/// `trip:offer:decline {tripId}`.
pub(super) async fn decline(edge: &Edge, _s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    offers::decline(&edge.app, &session.claims, &trip.0).await?;
    ok()
}
