//! One Socket.IO connection over one websocket ([`SioClient`]), and the errors that end it.
//!
//! It keeps no per-socket state beyond the next ack id and a liveness deadline, so ten
//! thousand idle clients cost little more than their tungstenite buffers. Every wait has a
//! deadline.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::codec::{AckOutcome, Packet, SioPacket, decode, encode_connect, encode_event};

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
    /// Long-polling: the server answered a request with this HTTP status.
    Http(u16),
    /// Long-polling: the HTTP request itself failed (connect, reset …).
    Transport(&'static str),
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
            Self::Http(status) => format!("http:{status}"),
            Self::Transport(what) => format!("{what}:io"),
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
            Self::Http(status) => write!(f, "HTTP status {status}"),
            Self::Transport(what) => write!(f, "{what} request failed"),
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
/// thousand sockets in tens of MiB. What clients send is bounded by the contract's default
/// server message cap (64 KiB); what the server sends is not: a live area's frame or its
/// snapshot carries up to thousands of drivers (~150 bytes each), so reads may be 8 MiB (a
/// limit, not an allocation).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(8 << 20))
        .max_frame_size(Some(8 << 20))
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How many loopback source addresses the websockets of this process spread over
/// (`--source-addresses`): 127.0.0.1, 127.0.0.2, … in turn, for a loopback target. With one
/// address, tens of thousands of connections to one server port make the kernel search
/// ever longer for a free source port on every connect (`__inet_hash_connect`), which the
/// load tool then pays, not the server.
static SOURCE_ADDRESSES: AtomicU32 = AtomicU32::new(1);
static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// Sets [`SOURCE_ADDRESSES`] (1..=250).
pub fn set_source_addresses(n: u32) {
    SOURCE_ADDRESSES.store(n.clamp(1, 250), Ordering::Relaxed);
}

/// Opens the websocket of `url`, from the next loopback source address when the target is
/// a loopback address and more than one is configured ([`open_from`]).
async fn open(url: &str) -> Result<Ws, ClientError> {
    let spread = SOURCE_ADDRESSES.load(Ordering::Relaxed);
    let turn = if spread > 1 { NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) } else { 0 };
    open_from(url, spread, turn).await
}

/// Opens the websocket of `url`; to a loopback target with `spread` > 1, from source
/// address 127.0.0.(1 + `turn` % `spread`). Nagle off either way (location packets are
/// small and latency is what we measure).
async fn open_from(url: &str, spread: u32, turn: u32) -> Result<Ws, ClientError> {
    let request = url.into_client_request()?;
    let target = request.uri().host().and_then(|h| h.parse::<Ipv4Addr>().ok()).filter(|ip| ip.is_loopback());
    let (Some(ip), true) = (target, spread > 1) else {
        return Ok(tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true).await?.0);
    };
    let port = request.uri().port_u16().unwrap_or(80);
    let source = Ipv4Addr::new(127, 0, 0, 1 + (turn % spread.min(250)) as u8);
    let socket = TcpSocket::new_v4().map_err(tungstenite::Error::from)?;
    socket.bind(SocketAddr::new(source.into(), 0)).map_err(tungstenite::Error::from)?;
    let stream = socket.connect(SocketAddr::new(ip.into(), port)).await.map_err(tungstenite::Error::from)?;
    stream.set_nodelay(true).map_err(tungstenite::Error::from)?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, MaybeTlsStream::Plain(stream), Some(ws_config())).await?;
    Ok(ws)
}

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
        let mut ws = open(url).await?;

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

    /// Reserves the ack id of an event the caller encodes itself (see [`Self::send_raw`]).
    pub fn take_ack_id(&mut self) -> u64 {
        let id = self.next_ack_id;
        self.next_ack_id = self.next_ack_id.wrapping_add(1);
        id
    }

    /// Sends an already-encoded Engine.IO frame (hot paths build theirs without a `Value`).
    pub async fn send_raw(&mut self, frame: String) -> Result<(), ClientError> {
        self.send_text(frame).await
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
    use super::*;

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

    /// Websockets to a loopback target come from 127.0.0.1, .2, .3 in turn with a spread of
    /// three, and from the kernel's choice (127.0.0.1) with one.
    #[tokio::test]
    async fn websockets_spread_over_loopback_source_addresses() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let mut peers = Vec::new();
            for _ in 0..4 {
                let (stream, peer) = listener.accept().await.expect("accept");
                let _ws = tokio_tungstenite::accept_async(stream).await.expect("websocket handshake");
                peers.push(peer.ip().to_string());
            }
            peers
        });
        for turn in 0..3 {
            open_from(&url, 3, turn).await.expect("open");
        }
        open_from(&url, 1, 7).await.expect("open");
        assert_eq!(server.await.expect("server"), ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]);
    }
}
