//! A minimal Socket.IO v5 / Engine.IO v4 client over one websocket, written for load.
//!
//! It owns the text framing (`0{..}` open, `2`/`3` ping/pong, `40` connect with auth,
//! `42[..]` events, `43<id>[..]` acks, `44{..}` connect errors) and one [`SioClient`] per
//! connection, and nothing else: it knows no fleetcast event names and keeps no per-socket
//! state beyond the next ack id and a liveness deadline, so ten thousand idle clients cost
//! little more than their tungstenite buffers. It must not panic or allocate without bound
//! on anything the server sends: every decode failure is an error value, every wait has a
//! deadline. Only the default namespace `/`, the websocket transport and text packets are
//! supported; binary packets are reported as [`SioPacket::Unsupported`].

use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

/// Everything that can end or fail a client. `code()` is the key load reports group by.
#[derive(Debug)]
pub enum ClientError {
    /// The server refused the Socket.IO connection (`44`), e.g. `RATE_LIMITED`.
    Refused(String),
    /// A bounded wait ran out (connect, ack, or no ping from the server in time).
    Timeout(&'static str),
    /// The server closed the websocket or the Engine.IO session.
    Closed,
    /// The websocket failed (refused TCP, HTTP error on upgrade, reset …).
    Ws(tungstenite::Error),
    /// The server spoke something this client does not understand.
    Protocol(&'static str),
}

impl ClientError {
    /// A short, bounded-cardinality label for counting failures.
    pub fn code(&self) -> String {
        match self {
            Self::Refused(message) => {
                // The message is server input: keep the label short and printable.
                let message: String = message.chars().take(40).collect();
                format!("connect_error:{message}")
            }
            Self::Timeout(what) => format!("timeout:{what}"),
            Self::Closed => "closed".to_owned(),
            Self::Ws(tungstenite::Error::Io(e)) => format!("io:{:?}", e.kind()),
            Self::Ws(tungstenite::Error::Http(response)) => {
                format!("http:{}", response.status().as_u16())
            }
            Self::Ws(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => "closed".to_owned(),
            Self::Ws(tungstenite::Error::Capacity(_)) => "ws:capacity".to_owned(),
            Self::Ws(tungstenite::Error::Url(_)) => "ws:bad_url".to_owned(),
            Self::Ws(_) => "ws:other".to_owned(),
            Self::Protocol(_) => "protocol".to_owned(),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(message) => write!(f, "connection refused: {message}"),
            Self::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Self::Closed => write!(f, "connection closed by server"),
            Self::Ws(e) => write!(f, "websocket error: {e}"),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        Self::Ws(e)
    }
}

/// What the application sees from [`SioClient::process`]: pings and noise are handled inside.
#[derive(Debug)]
pub enum Incoming {
    Event { name: String, data: Value },
    Ack { id: u64, args: Vec<Value> },
}

/// Builds the websocket URL for a target such as `ws://127.0.0.1:3000` (path `/socket.io/`
/// added) or `ws://host/api/socket/` (path kept); a target already carrying `EIO=` is used as is.
pub fn socket_url(target: &str) -> String {
    if target.contains("EIO=") {
        return target.to_owned();
    }
    let after_scheme = target.find("://").map_or(0, |i| i + 3);
    let has_path = target[after_scheme..].trim_end_matches('/').contains('/');
    let base = target.trim_end_matches('/');
    if has_path {
        format!("{base}/?EIO=4&transport=websocket")
    } else {
        format!("{base}/socket.io/?EIO=4&transport=websocket")
    }
}

/// Websocket limits for a load client. Tungstenite's defaults (128 KiB read and write
/// buffers) would cost ~256 KiB per socket; 4 KiB reads and unbuffered writes keep ten
/// thousand sockets in tens of MiB. 64 KiB is the contract's default server message cap,
/// so nothing legitimate is larger.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One Socket.IO connection in the default namespace. Not shared: one task owns it.
pub struct SioClient {
    ws: Ws,
    next_ack_id: u64,
    /// The server must ping within `ping_interval + ping_timeout`; past that it is gone.
    liveness: Duration,
    deadline: Instant,
}

impl SioClient {
    /// Opens the websocket, reads the Engine.IO open packet, sends `40{"token":..}` and
    /// waits for `40` (accepted) or `44` (refused). The whole handshake is bounded by `timeout`.
    pub async fn connect(url: &str, token: &str, timeout: Duration) -> Result<Self, ClientError> {
        tokio::time::timeout(timeout, Self::handshake(url, token)).await.map_err(|_| ClientError::Timeout("connect"))?
    }

    async fn handshake(url: &str, token: &str) -> Result<Self, ClientError> {
        // Nagle off: location packets are small and latency is what we measure.
        let (mut ws, _response) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await?;

        let open = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => match decode(text.as_str()) {
                    Ok(Packet::Open(open)) => break open,
                    Ok(_) => return Err(ClientError::Protocol("expected open packet")),
                    Err(e) => return Err(ClientError::Protocol(e.0)),
                },
                Some(Ok(Message::Close(_))) | None => return Err(ClientError::Closed),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        };
        let liveness = Duration::from_millis(open.ping_interval.saturating_add(open.ping_timeout));
        let mut client = Self { ws, next_ack_id: 0, liveness, deadline: Instant::now() + liveness };
        client.send_text(encode_connect(token)).await?;
        loop {
            let message = client.recv_frame().await?;
            let Some(text) = Self::text_of(message)? else {
                continue;
            };
            match decode(&text) {
                Ok(Packet::Message(SioPacket::Connect { namespace })) if namespace == "/" => {
                    return Ok(client);
                }
                Ok(Packet::Message(SioPacket::ConnectError { message })) => {
                    return Err(ClientError::Refused(message));
                }
                Ok(Packet::Ping) => client.send_text("3".to_owned()).await?,
                Ok(Packet::Close) => return Err(ClientError::Closed),
                // Anything else before the connect answer is noise; keep waiting (bounded).
                Ok(_) | Err(_) => {}
            }
        }
    }

    /// Waits for the next websocket frame. Cancel-safe, so it can sit in a `select!` beside
    /// timers; pass what it returns to [`Self::process`] outside the `select!`. Fails when the
    /// server has not shown life (a ping or anything else) within its own ping deadline.
    pub async fn recv_frame(&mut self) -> Result<Message, ClientError> {
        match tokio::time::timeout_at(self.deadline, self.ws.next()).await {
            Err(_) => Err(ClientError::Timeout("server ping")),
            Ok(None) => Err(ClientError::Closed),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(Some(Ok(message))) => {
                self.deadline = Instant::now() + self.liveness;
                Ok(message)
            }
        }
    }

    /// Handles one frame: answers pings, surfaces events and acks, ignores noise.
    pub async fn process(&mut self, message: Message) -> Result<Option<Incoming>, ClientError> {
        let Some(text) = Self::text_of(message)? else {
            return Ok(None);
        };
        match decode(&text) {
            Ok(Packet::Ping) => {
                self.send_text("3".to_owned()).await?;
                Ok(None)
            }
            Ok(Packet::Close | Packet::Message(SioPacket::Disconnect)) => Err(ClientError::Closed),
            Ok(Packet::Message(SioPacket::Event { name, data })) => Ok(Some(Incoming::Event { name, data })),
            Ok(Packet::Message(SioPacket::Ack { id, args })) => Ok(Some(Incoming::Ack { id, args })),
            // Undecodable text is the server's bug, not a reason to drop the connection.
            Ok(_) | Err(_) => Ok(None),
        }
    }

    /// `recv_frame` + `process` until an event or ack arrives. Not cancel-safe (a pong
    /// could be lost mid-send), so only use it where cancellation ends the connection anyway.
    pub async fn next_incoming(&mut self) -> Result<Incoming, ClientError> {
        loop {
            let message = self.recv_frame().await?;
            if let Some(incoming) = self.process(message).await? {
                return Ok(incoming);
            }
        }
    }

    /// Sends an event and returns the ack id the server will answer with.
    pub async fn emit_with_ack(&mut self, name: &str, data: &Value) -> Result<u64, ClientError> {
        let id = self.next_ack_id;
        self.next_ack_id = self.next_ack_id.wrapping_add(1);
        self.send_text(encode_event(name, data, Some(id))).await?;
        Ok(id)
    }

    /// Sends an event with an ack and waits up to `timeout` for that ack, answering pings
    /// and dropping other events meanwhile (used in setup, before anything is measured).
    pub async fn call(&mut self, name: &str, data: &Value, timeout: Duration) -> Result<AckOutcome, ClientError> {
        let id = self.emit_with_ack(name, data).await?;
        let wait = async {
            loop {
                if let Incoming::Ack { id: got, args } = self.next_incoming().await?
                    && got == id
                {
                    return Ok(AckOutcome::from_args(args));
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ClientError::Timeout("ack"))?
    }

    /// Sends a websocket close frame, waiting at most one second for it to go out.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Extracts the text of a frame; binary and control frames yield `None`, close is an error.
    fn text_of(message: Message) -> Result<Option<Utf8Bytes>, ClientError> {
        match message {
            Message::Text(text) => Ok(Some(text)),
            Message::Close(_) => Err(ClientError::Closed),
            // tungstenite queues websocket-level pongs itself; flush them with the next write.
            Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_) => Ok(None),
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

    #[test]
    fn builds_socket_urls() {
        assert_eq!(socket_url("ws://127.0.0.1:3000"), "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket");
        assert_eq!(socket_url("ws://127.0.0.1:3000/"), "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket");
        assert_eq!(socket_url("ws://h:1/api/socket/"), "ws://h:1/api/socket/?EIO=4&transport=websocket");
        assert_eq!(
            socket_url("ws://h:1/socket.io/?EIO=4&transport=websocket"),
            "ws://h:1/socket.io/?EIO=4&transport=websocket"
        );
    }
}
