//! `driver:connect`, `driver:location:update`, `driver:status` (flow: `flows::driving`).

use serde_json::Value;
use socketioxide::extract::SocketRef;

use crate::domain::{self, DriverStatus, PositionReport, RoomKey};
use crate::error::Error;
use crate::flows::driving;
use crate::socket::ack::{Reply, ok};
use crate::socket::arrival::Arrival;
use crate::socket::edge::Edge;
use crate::socket::payload::{self, StatusIn, TripRef};
use crate::socket::session::{Session, join};

/// `driver:connect {tripId}`: the trip's driver joins `driver:{tripId}` and the trip room.
pub(super) async fn connect(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: TripRef = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    let c = &session.claims;
    driving::connect(&edge.app, c, &trip).await?;
    join(&edge.app, s, session, &RoomKey::driver_of_trip(&c.tenant, &trip)).await?;
    join(&edge.app, s, session, &RoomKey::trip_subscribers(&c.tenant, &trip)).await?;
    ok()
}

/// `driver:location:update {tripId?, lat, lng, speed?, heading?, accuracy?, timestamp?}`.
/// Applied in the socket's arrival order (`arrival`): after every earlier event of the
/// socket gave its turn back; one that waits past the ack deadline is answered `UNAVAILABLE`
/// and never applied.
pub(super) async fn location(
    edge: &Edge,
    s: &SocketRef,
    session: &Session,
    p: Option<Value>,
    arrival: Arrival,
) -> Reply {
    let report: PositionReport = payload::parse(p)?;
    let location = report.into_location(session.claims.user.clone())?;
    arrival.wait_turn().await;
    driving::update_location(&edge.app, &session.claims, location, Some(&s.id.to_string())).await?;
    ok()
}

/// `driver:status {tripId, status, timestamp?}`.
pub(super) async fn status(edge: &Edge, _s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: StatusIn = payload::parse(p)?;
    let trip = payload::trip_id("tripId", p.trip_id)?;
    let status: DriverStatus =
        p.status.parse().map_err(|_| Error::invalid("status must be STARTED, PAUSED, ENDED or EMERGENCY"))?;
    let timestamp = match &p.timestamp {
        Some(ts) => domain::iso(domain::check_timestamp(ts, chrono::Utc::now())?),
        None => domain::now_iso(),
    };
    driving::report_status(&edge.app, &session.claims, &trip, status, &timestamp).await?;
    ok()
}
