//! `area:subscribe`, `area:unsubscribe` (flow: `flows::areas`). A subscription's frames
//! reach the socket through a small forwarding task that ends with the subscription.

use serde_json::{Map, Value};
use socketioxide::extract::SocketRef;

use crate::error::Error;
use crate::events;
use crate::fanout::areas::{AreaMsg, MAX_PER_SOCKET};
use crate::flows::areas;
use crate::socket::ack::{Reply, ok};
use crate::socket::edge::Edge;
use crate::socket::payload::{self, AreaIn, AreaRef};
use crate::socket::session::Session;

/// `area:subscribe {areaId, bbox | center+radiusKm, intervalMs?, availability?}` →
/// `{ok:true, drivers, truncated}`; the same `areaId` again replaces the area.
pub(super) async fn subscribe(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let spec = payload::parse::<AreaIn>(p)?.spec()?;
    let app = &edge.app;
    areas::require_viewer(&session.claims)?;
    {
        let held = session.areas();
        if !held.contains_key(&spec.area_id) && held.len() >= MAX_PER_SOCKET {
            return Err(Error::SubscriptionLimit);
        }
    }
    let area_id = spec.area_id.clone();
    let sub = areas::subscribe(app, &session.claims, spec).await?;
    let replaced = session.areas().insert(area_id, sub.id);
    if let Some(old) = replaced {
        areas::unsubscribe(app, old).await;
    }
    let socket = s.clone();
    let mut rx = sub.rx;
    // Owner: the subscription (ends when the hub drops it: unsubscribe, replace, or the
    // socket's disconnect).
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            match m {
                AreaMsg::Update(frame) => match serde_json::to_string(&frame) {
                    Ok(json) => forward(&socket, events::AREA_UPDATE, json),
                    Err(_) => continue,
                },
                AreaMsg::Availability(json) => forward(&socket, events::AVAILABILITY_CHANGED, json),
            }
        }
    });
    let mut out = Map::new();
    out.insert("drivers".into(), serde_json::to_value(&sub.drivers).map_err(|_| Error::Internal)?);
    out.insert("truncated".into(), Value::Bool(sub.truncated));
    Ok(out)
}

fn forward(socket: &SocketRef, event: &'static str, json: String) {
    if let Ok(raw) = serde_json::value::RawValue::from_string(json) {
        let _ = socket.emit(event, &raw);
    }
}

/// `area:unsubscribe {areaId}`.
pub(super) async fn unsubscribe(edge: &Edge, _s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let area_id = payload::parse::<AreaRef>(p)?.id()?;
    let held = session.areas().remove(&area_id);
    if let Some(id) = held {
        areas::unsubscribe(&edge.app, id).await;
    }
    ok()
}
