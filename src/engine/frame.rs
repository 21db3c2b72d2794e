//! Frames carried on room channels: `event \n flags \n except-sid \n json`. The payload is
//! last so it may contain anything; event names and sids contain no newline.
//! Flags say how a frame is delivered; a control frame carries a node-to-node command
//! (`fanout::Control`) and never reaches a client.

use crate::domain::EventId;

/// Flag: deliver as volatile (may be dropped for a slow socket, never queued).
pub const VOLATILE: u8 = 1;
/// Flag: the except field names local rooms (separated by `\x1e`) whose members are
/// skipped (instead of one socket id).
pub const EXCEPT_ROOM: u8 = 2;

/// The except field for `rooms`.
pub fn except_rooms(rooms: &[&crate::domain::RoomKey]) -> String {
    rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>().join("\u{1e}")
}
/// Flag: a node-to-node command for the room's local sockets, never sent to clients.
pub const CONTROL: u8 = 4;

/// The control command an engine delivers for a room whose recoverable events it may have
/// missed and cannot deliver (its history no longer reaches back after a pub/sub gap).
pub const GAP: &str = "gap";

/// The gap control frame (see [`GAP`]).
pub fn gap() -> String {
    encode(GAP, CONTROL, None, "")
}

/// Frame name of an accepted position in a geo-cell room (live areas; node to node, never
/// sent to clients). Its payload is the stored `Location` JSON.
pub const AREA_POSITION: &str = "area.position";

/// The frame of an accepted position for geo-cell rooms (see [`AREA_POSITION`]).
pub fn area_position(location_json: &str) -> String {
    encode(AREA_POSITION, 0, None, location_json)
}

/// [`area_position`] without its payload (`redis/location.lua` appends the stored JSON it
/// already has, so an update sends nothing more while no area watches).
pub fn area_position_head() -> String {
    encode(AREA_POSITION, 0, None, "")
}

/// The `eventId` at the head of a recoverable payload.
pub fn event_id_of(json: &str) -> Option<EventId> {
    let rest = json.strip_prefix("{\"eventId\":\"")?;
    EventId::parse(&rest[..rest.find('"')?])
}

/// Encodes a frame.
pub fn encode(event: &str, flags: u8, except: Option<&str>, json: &str) -> String {
    let except = except.unwrap_or("");
    let mut s = String::with_capacity(event.len() + except.len() + json.len() + 6);
    s.push_str(event);
    s.push('\n');
    s.push((b'0' + flags) as char);
    s.push('\n');
    s.push_str(except);
    s.push('\n');
    s.push_str(json);
    s
}

/// A decoded frame borrowing from its text.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Event name.
    pub event: &'a str,
    /// Flags (see [`VOLATILE`]).
    pub flags: u8,
    /// Socket id that must not receive it (the sender), if any.
    pub except: Option<&'a str>,
    /// JSON payload.
    pub json: &'a str,
}

/// Decodes a frame; `None` for anything malformed.
pub fn decode(s: &str) -> Option<Frame<'_>> {
    let mut parts = s.splitn(4, '\n');
    let event = parts.next()?;
    let flags = parts.next()?.bytes().next()?.checked_sub(b'0')?;
    let except = parts.next()?;
    let json = parts.next()?;
    Some(Frame { event, flags, except: (!except.is_empty()).then_some(except), json })
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_round_trip() {
        let s = super::encode("server:alert", super::VOLATILE, Some("sid1"), "{\"a\":\"x\\ny\"}");
        let f = super::decode(&s).expect("decodes");
        assert_eq!(f.event, "server:alert");
        assert_eq!(f.flags, super::VOLATILE);
        assert_eq!(f.except, Some("sid1"));
        assert_eq!(f.json, "{\"a\":\"x\\ny\"}");
        assert!(super::decode("nonsense").is_none());
        assert_eq!(super::event_id_of(r#"{"eventId":"5-1","a":1}"#), Some(super::EventId { ms: 5, seq: 1 }));
        assert_eq!(super::event_id_of(r#"{"a":1}"#), None);
        let gap = super::gap();
        let f = super::decode(&gap).expect("decodes");
        assert_eq!((f.event, f.flags), (super::GAP, super::CONTROL));
    }
}
