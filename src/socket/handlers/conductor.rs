//! `conductor:scan {token}` (flow: `flows::scan`): the ack carries the booking's ticket
//! fields, `valid`, and `message` when it does not board.

use serde::Deserialize;
use serde_json::{Map, Value};
use socketioxide::extract::SocketRef;

use crate::flows::scan::{self, ScanOutcome};
use crate::socket::ack::Reply;
use crate::socket::edge::Edge;
use crate::socket::payload;
use crate::socket::session::Session;

#[derive(Deserialize)]
struct ScanIn {
    token: String,
}

/// `conductor:scan {token}`.
pub(super) async fn scan(edge: &Edge, _s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: ScanIn = payload::parse(p)?;
    let mut out = Map::new();
    match scan::scan(&edge.app, &session.claims, &p.token).await? {
        ScanOutcome::Invalid(message) => {
            out.insert("valid".into(), false.into());
            out.insert("message".into(), message.into());
        }
        ScanOutcome::Booking { boarded, booking: b, message } => {
            let b = *b;
            out.insert("valid".into(), boarded.into());
            out.insert("bookingId".into(), b.id.into());
            out.insert("referenceCode".into(), b.reference_code.into());
            out.insert("passengerName".into(), b.passenger_name.unwrap_or(b.passenger_id).into());
            out.insert("seatNumber".into(), b.seat_number.into());
            out.insert("pickupPoint".into(), b.pickup_point.into());
            out.insert("dropPoint".into(), b.drop_point.into());
            out.insert("price".into(), b.price.into());
            out.insert("status".into(), b.status.into());
            if let Some(m) = message {
                out.insert("message".into(), m.into());
            }
        }
    }
    Ok(out)
}
