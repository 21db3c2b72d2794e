//! `room:join`, `room:leave`, `admin:subscribe`, `user:sync`, `heartbeat`, `chat:typing`,
//! `chat:read` (flow of the chat events: `flows::chat`; the room events are the edge's own).

use serde_json::{Map, Value};
use socketioxide::extract::SocketRef;

use crate::domain::rooms::{ADMIN_ALERTS, ADMIN_EVENTS};
use crate::domain::{self, EventId, Role, RoomKey};
use crate::error::{Error, Result};
use crate::flows::chat;
use crate::limits::room_name;
use crate::socket::ack::{Reply, ok};
use crate::socket::edge::Edge;
use crate::socket::payload::{self, AdminSubscribeIn, ReadIn, RoomIn, TypingIn, UserSyncIn};
use crate::socket::session::{Session, join as join_room, join_with_replay, leave as leave_room};

/// `admin:subscribe {since?}`: an ADMIN joins `admin:alerts` and `admin:events`.
pub(super) async fn admin_subscribe(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    payload::parse_empty(p.clone())?;
    let input: AdminSubscribeIn = match p {
        None | Some(Value::Null) => AdminSubscribeIn::default(),
        p => payload::parse(p)?,
    };
    let since = payload::since_by_key(input.since, Some(ADMIN_ALERTS))?;
    if session.claims.role != Role::Admin {
        return Err(Error::Forbidden);
    }
    let mut recovered = true;
    let tenant = &session.claims.tenant;
    for (name, room) in [(ADMIN_ALERTS, RoomKey::admin_alerts(tenant)), (ADMIN_EVENTS, RoomKey::admin_events(tenant))] {
        match since.get(name) {
            Some(id) => recovered &= join_with_replay(&edge.app, &edge.replays, s, session, &room, *id).await?,
            None => join_room(&edge.app, s, session, &room).await?,
        }
    }
    let mut out = Map::new();
    if !since.is_empty() {
        out.insert("recovered".into(), Value::Bool(recovered));
    }
    Ok(out)
}

/// `user:sync {since}` (CONTRACT §7): the socket's own user room after `since`, replayed
/// before any later live event of it → `{ok:true, recovered}`.
pub(super) async fn user_sync(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: UserSyncIn = payload::parse(p)?;
    let since = EventId::parse(&p.since).ok_or_else(|| Error::invalid("since must be an event id \"<ms>-<seq>\""))?;
    let room = RoomKey::user(&session.claims.tenant, &session.claims.user);
    let complete = join_with_replay(&edge.app, &edge.replays, s, session, &room, since).await?;
    let mut out = Map::new();
    out.insert("recovered".into(), Value::Bool(complete));
    Ok(out)
}

/// `heartbeat {}` → `{ok:true, serverTime}`.
pub(super) async fn heartbeat(_edge: &Edge, _s: &SocketRef, _session: &Session, p: Option<Value>) -> Reply {
    payload::parse_empty(p)?;
    let mut m = Map::new();
    m.insert("serverTime".into(), domain::now_iso().into());
    Ok(m)
}

/// `room:join {room, token?, since?}`: a room the token's `channels` or a room token grant.
pub(super) async fn join(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: RoomIn = payload::parse(p)?;
    room_name(&p.room)?;
    let since = payload::since_by_key(p.since, Some(&p.room))?;
    let c = &session.claims;
    let granted =
        c.grants(&p.room) || p.token.as_deref().is_some_and(|t| edge.app.verifier.room_token_grants(t, c, &p.room));
    if !granted {
        return Err(Error::Forbidden);
    }
    let room = RoomKey::named(&c.tenant, &p.room);
    let mut out = Map::new();
    match since.get(&p.room) {
        Some(id) => {
            let complete = join_with_replay(&edge.app, &edge.replays, s, session, &room, *id).await?;
            out.insert("recovered".into(), Value::Bool(complete));
        }
        None => join_room(&edge.app, s, session, &room).await?,
    }
    Ok(out)
}

/// `room:leave {room}`.
pub(super) async fn leave(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: RoomIn = payload::parse(p)?;
    room_name(&p.room)?;
    leave_room(&edge.app, s, session, &RoomKey::named(&session.claims.tenant, &p.room)).await;
    ok()
}

/// The chat room, if this socket is in it.
fn chat_room(session: &Session, chat_id: &str) -> Result<RoomKey> {
    if !domain::valid_id(chat_id) {
        return Err(Error::invalid("chatId must be 1–128 characters"));
    }
    let room = RoomKey::chat(&session.claims.tenant, chat_id);
    if session.rooms().contains(&room) { Ok(room) } else { Err(Error::Forbidden) }
}

/// `chat:typing {chatId, isTyping}`.
pub(super) async fn chat_typing(edge: &Edge, s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: TypingIn = payload::parse(p)?;
    let room = chat_room(session, &p.chat_id)?;
    chat::typing(&edge.app, &session.claims, &room, &p.chat_id, p.is_typing, &s.id.to_string()).await?;
    ok()
}

/// `chat:read {chatId, messageId}`.
pub(super) async fn chat_read(edge: &Edge, _s: &SocketRef, session: &Session, p: Option<Value>) -> Reply {
    let p: ReadIn = payload::parse(p)?;
    if !domain::valid_id(&p.message_id) {
        return Err(Error::invalid("messageId must be 1–128 characters"));
    }
    let room = chat_room(session, &p.chat_id)?;
    chat::read(&edge.app, &session.claims, &room, &p.chat_id, &p.message_id).await?;
    ok()
}
