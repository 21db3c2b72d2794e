//! `auth:refresh {token}` (CONTRACT §1 v1.1): a socket moves its token's expiry forward with
//! a valid token of the same `sub`, `tenant` and `role` (→ `{ok:true, exp}`); anything else is
//! `INVALID_TOKEN` and nothing changes. A socket that does not refresh is closed at `exp`
//! plus the grace (`socket::edge::Edge::close_expired`). The edge's own: no flow.

use std::sync::atomic::Ordering;

use serde::Deserialize;
use serde_json::{Map, Value};
use socketioxide::extract::SocketRef;

use crate::error::Error;
use crate::socket::ack::Reply;
use crate::socket::edge::Edge;
use crate::socket::payload;
use crate::socket::session::Session;

#[derive(Deserialize)]
struct RefreshIn {
    token: String,
}

/// `auth:refresh {token}` → `{ok:true, exp}`.
pub(super) async fn refresh(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: RefreshIn = payload::parse(p)?;
    let fresh = edge.app.verifier.verify(&p.token).map_err(|_| Error::InvalidToken)?;
    let c = &session.claims;
    if fresh.user != c.user || fresh.tenant != c.tenant || fresh.role != c.role {
        return Err(Error::InvalidToken);
    }
    let old = session.exp.swap(fresh.exp, Ordering::SeqCst);
    edge.watch_expiry(s.id, Some(old), fresh.exp);
    let mut out = Map::new();
    out.insert("exp".into(), fresh.exp.into());
    Ok(out)
}
