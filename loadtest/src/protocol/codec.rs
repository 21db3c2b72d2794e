//! The codec: Engine.IO v4 / Socket.IO v5 text frames decoded into [`Packet`]s and the
//! frames this client sends encoded, plus the fast path for the hottest frame
//! ([`scan_location`]) and the contract's ack shapes ([`AckOutcome`]).
//!
//! Decoding must not panic or allocate without bound on anything the server sends: every
//! failure is a [`DecodeError`], whose messages are static and never echo input.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// Engine.IO `open` payload; fields we do not use (`sid`, `upgrades`) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    /// How often the server pings, in milliseconds.
    #[serde(default = "default_ping_interval")]
    pub ping_interval: u64,
    /// How long the server waits for our pong, in milliseconds.
    #[serde(default = "default_ping_timeout")]
    pub ping_timeout: u64,
}

fn default_ping_interval() -> u64 {
    25_000
}
fn default_ping_timeout() -> u64 {
    20_000
}

/// One decoded Engine.IO text packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    Open(OpenInfo),
    Close,
    Ping,
    Pong,
    Noop,
    Message(SioPacket),
}

/// One decoded Socket.IO packet (default namespace only; the namespace is checked by the caller).
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// `40{..}`: the server accepted the connection.
    Connect { namespace: String },
    /// `41`: the server disconnected this namespace.
    Disconnect,
    /// `42[name, data]` or `42<id>[name, data]` (the server asks for an ack we never give).
    Event { name: String, data: Value },
    /// `43<id>[args..]`: the answer to one of our events.
    Ack { id: u64, args: Vec<Value> },
    /// `44{"message": ..}`: the connection was refused.
    ConnectError { message: String },
    /// Binary events and acks (`45`, `46`): never sent by fleetcast to these clients.
    Unsupported,
}

/// Why a packet could not be decoded. Static messages only: decoding never echoes input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undecodable packet: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one websocket text frame as an Engine.IO packet.
pub fn decode(text: &str) -> Result<Packet, DecodeError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError("empty frame"))?;
    let rest = chars.as_str();
    match kind {
        '0' => serde_json::from_str(rest).map(Packet::Open).map_err(|_| DecodeError("bad open payload")),
        '1' => Ok(Packet::Close),
        '2' => Ok(Packet::Ping),
        '3' => Ok(Packet::Pong),
        '4' => decode_sio(rest).map(Packet::Message),
        '6' => Ok(Packet::Noop),
        _ => Err(DecodeError("unknown engine packet type")),
    }
}

/// Decodes the Socket.IO part of an Engine.IO message (`"2[..]"`, `"3<id>[..]"`, …).
pub fn decode_sio(text: &str) -> Result<SioPacket, DecodeError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError("empty socket.io packet"))?;
    let mut rest = chars.as_str();

    if matches!(kind, '5' | '6') {
        return Ok(SioPacket::Unsupported);
    }

    // Optional namespace: "/name," before the id and payload.
    let mut namespace = String::from("/");
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        namespace = rest[..end].to_owned();
        rest = rest.get(end + 1..).unwrap_or("");
    }

    // Optional ack id: the digits before the JSON payload (which never starts with a digit
    // for the packet types below: objects, arrays or nothing).
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits == 0 {
        None
    } else {
        Some(rest[..digits].parse::<u64>().map_err(|_| DecodeError("ack id out of range"))?)
    };
    let payload = &rest[digits..];

    match kind {
        '0' => Ok(SioPacket::Connect { namespace }),
        '1' => Ok(SioPacket::Disconnect),
        '2' => {
            let mut items: Vec<Value> =
                serde_json::from_str(payload).map_err(|_| DecodeError("event is not an array"))?;
            if items.is_empty() {
                return Err(DecodeError("event without a name"));
            }
            let name = match items.remove(0) {
                Value::String(name) => name,
                _ => return Err(DecodeError("event name is not a string")),
            };
            let data = if items.is_empty() { Value::Null } else { items.swap_remove(0) };
            Ok(SioPacket::Event { name, data })
        }
        '3' => {
            let id = id.ok_or(DecodeError("ack without id"))?;
            let args: Vec<Value> = serde_json::from_str(payload).map_err(|_| DecodeError("ack is not an array"))?;
            Ok(SioPacket::Ack { id, args })
        }
        '4' => {
            let value: Value = serde_json::from_str(payload).map_err(|_| DecodeError("bad connect error"))?;
            // v5 sends {"message": .., "data"?: ..}; v4 servers sent a bare string.
            let message = match value {
                Value::String(message) => message,
                Value::Object(map) => match map.get("message") {
                    Some(Value::String(message)) => message.clone(),
                    _ => return Err(DecodeError("connect error without message")),
                },
                _ => return Err(DecodeError("connect error is not an object")),
            };
            Ok(SioPacket::ConnectError { message })
        }
        _ => Err(DecodeError("unknown socket.io packet type")),
    }
}

/// Encodes the connect packet with `auth = {"token": token}` as a full Engine.IO frame.
pub fn encode_connect(token: &str) -> String {
    format!("40{}", serde_json::json!({ "token": token }))
}

/// Encodes `emit(name, data)` as a full Engine.IO frame, with an ack id when given.
pub fn encode_event(name: &str, data: &Value, ack_id: Option<u64>) -> String {
    let body = Value::Array(vec![Value::String(name.to_owned()), data.clone()]);
    match ack_id {
        Some(id) => format!("42{id}{body}"),
        None => format!("42{body}"),
    }
}

/// The fast path of the hottest frame a load client reads: `42["server:location:update",
/// {..}]`. Returns the payload's `tripId` and `updatedAt` without building a `Value` (the
/// server writes both as plain strings without escapes); `None` sends the caller to
/// [`decode`] for anything else or anything unusual.
pub fn scan_location(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix("42[\"server:location:update\",{")?;
    let field = |name: &str| {
        let start = body.find(name)? + name.len();
        let rest = &body[start..];
        let end = rest.find('"')?;
        let value = &rest[..end];
        (!value.contains('\\')).then_some(value)
    };
    Some((field("\"tripId\":\"")?, field("\"updatedAt\":\"")?))
}

/// How an ack answered: `{ok:true, ..}` or the contract's error code.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    /// `ok: true`; the first ack argument is kept for callers that read fields of it.
    Ok(Value),
    /// `ok: false, error: CODE` (or `MALFORMED_ACK` when the ack is not shaped like the contract).
    Err(String),
}

impl AckOutcome {
    /// Classifies ack arguments as the contract (§2 Acknowledgements) shapes them.
    pub fn from_args(mut args: Vec<Value>) -> Self {
        if args.is_empty() {
            return Self::Err("MALFORMED_ACK".to_owned());
        }
        let first = args.swap_remove(0);
        match first.get("ok").and_then(Value::as_bool) {
            Some(true) => Self::Ok(first),
            Some(false) => Self::Err(first.get("error").and_then(Value::as_str).unwrap_or("MALFORMED_ACK").to_owned()),
            None => Self::Err("MALFORMED_ACK".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;

    #[test]
    fn encodes_event_with_ack_id() {
        let frame = encode_event("driver:connect", &json!({"tripId": "t1"}), Some(12));
        assert_eq!(frame, r#"4212["driver:connect",{"tripId":"t1"}]"#);
    }

    #[test]
    fn encodes_event_without_ack_id() {
        let frame = encode_event("heartbeat", &json!({}), None);
        assert_eq!(frame, r#"42["heartbeat",{}]"#);
    }

    #[test]
    fn encodes_connect_with_token_auth() {
        assert_eq!(encode_connect("abc"), r#"40{"token":"abc"}"#);
    }

    #[test]
    fn decodes_ack_with_id() {
        let packet = decode(r#"4307[{"ok":false,"error":"RATE_LIMITED","retryAfterMs":120}]"#);
        let Ok(Packet::Message(SioPacket::Ack { id, args })) = packet else {
            panic!("not an ack: {packet:?}");
        };
        assert_eq!(id, 7);
        assert_eq!(AckOutcome::from_args(args), AckOutcome::Err("RATE_LIMITED".to_owned()));
    }

    #[test]
    fn decodes_ok_ack() {
        let packet = decode(r#"431[{"ok":true,"current":null}]"#);
        let Ok(Packet::Message(SioPacket::Ack { id: 1, args })) = packet else {
            panic!("not ack 1: {packet:?}");
        };
        assert!(matches!(AckOutcome::from_args(args), AckOutcome::Ok(_)));
        assert_eq!(AckOutcome::from_args(vec![json!("nope")]), AckOutcome::Err("MALFORMED_ACK".to_owned()));
        assert_eq!(AckOutcome::from_args(vec![]), AckOutcome::Err("MALFORMED_ACK".to_owned()));
    }

    #[test]
    fn decodes_event_with_payload() {
        let packet = decode(
            r#"42["server:location:update",{"tripId":"t1","lat":1.5,"updatedAt":"2025-01-01T00:00:00.123456Z"}]"#,
        );
        let Ok(Packet::Message(SioPacket::Event { name, data })) = packet else {
            panic!("not an event: {packet:?}");
        };
        assert_eq!(name, "server:location:update");
        assert_eq!(data["tripId"], "t1");
        assert_eq!(data["updatedAt"], "2025-01-01T00:00:00.123456Z");
    }

    #[test]
    fn decodes_event_that_requests_an_ack_and_one_without_data() {
        let packet = decode(r#"425["ping:me"]"#);
        assert_eq!(packet, Ok(Packet::Message(SioPacket::Event { name: "ping:me".to_owned(), data: Value::Null })));
    }

    #[test]
    fn scans_location_updates_without_parsing() {
        let frame = r#"42["server:location:update",{"tripId":"lt-1","driverId":"d","lat":1.5,"lng":2,"updatedAt":"2025-01-01T00:00:00.123456Z","emittedAt":"x"}]"#;
        assert_eq!(scan_location(frame), Some(("lt-1", "2025-01-01T00:00:00.123456Z")));
        assert_eq!(scan_location(r#"42["other",{"tripId":"a","updatedAt":"b"}]"#), None);
        assert_eq!(scan_location(r#"42["server:location:update",{"tripId":"a"}]"#), None);
        assert_eq!(scan_location(r#"42["server:location:update",{"tripId":"a\"b","updatedAt":"c"}]"#), None);
        assert_eq!(scan_location("42"), None);
    }

    #[test]
    fn decodes_connect_error() {
        assert_eq!(
            decode(r#"44{"message":"NO_TOKEN"}"#),
            Ok(Packet::Message(SioPacket::ConnectError { message: "NO_TOKEN".to_owned() }))
        );
        assert_eq!(
            decode(r#"44"INVALID_TOKEN""#),
            Ok(Packet::Message(SioPacket::ConnectError { message: "INVALID_TOKEN".to_owned() }))
        );
    }

    #[test]
    fn decodes_open_connect_and_ping() {
        let open = decode(r#"0{"sid":"x","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}"#);
        assert_eq!(open, Ok(Packet::Open(OpenInfo { ping_interval: 300, ping_timeout: 200 })));
        assert_eq!(decode(r#"40{"sid":"abc"}"#), Ok(Packet::Message(SioPacket::Connect { namespace: "/".to_owned() })));
        assert_eq!(
            decode(r#"40/admin,{"sid":"abc"}"#),
            Ok(Packet::Message(SioPacket::Connect { namespace: "/admin".to_owned() }))
        );
        assert_eq!(decode("2"), Ok(Packet::Ping));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for frame in [
            "",
            "9",
            "0{",
            "42",
            "42{}",
            "42[]",
            "42[1,2]",
            "43[]",
            "4399999999999999999999999[]",
            "44[]",
            "44{}",
            "4é",
            "4/ns",
        ] {
            assert!(decode(frame).is_err(), "{frame:?} should not decode");
        }
        assert_eq!(decode(r#"451-["x",{"_placeholder":true,"num":0}]"#), Ok(Packet::Message(SioPacket::Unsupported)));
    }
}
