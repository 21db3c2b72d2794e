//! Engine.IO v4 long-polling transport for load clients (`--polling-share`): the same
//! Socket.IO packets as [`crate::protocol`], carried by plain HTTP requests. A `GET` waits
//! for the server's packets (several in one body, separated by `\x1e`); a `POST` carries
//! ours. Pings arrive as `2` in a `GET` and are answered with a `POST` of `3`.
//!
//! It owns one session id and the next ack id; all clients share one HTTP connection pool
//! (each parked `GET` holds one keep-alive connection). Every request has a deadline, and
//! nothing the server sends can panic it: undecodable packets are skipped like on websocket.
//! Only what passengers need is here: connect, an acked call, and receiving events.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::protocol::{AckOutcome, ClientError, Incoming, Packet, SioPacket, decode, encode_connect, encode_event};

/// One HTTP client (and connection pool) for every polling socket of the process.
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// The polling URL for a websocket URL built by [`crate::protocol::socket_url`].
pub fn polling_url(ws_url: &str) -> String {
    let http = if let Some(rest) = ws_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = ws_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        ws_url.to_owned()
    };
    http.replace("transport=websocket", "transport=polling")
}

/// Splits a polling body into its packets.
pub fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split('\u{1e}').filter(|p| !p.is_empty())
}

/// One Socket.IO connection over long-polling. Not shared: one task owns it.
pub struct PollClient {
    url: String,
    next_ack_id: u64,
    /// The longest a `GET` may stay parked: the server answers within its ping interval.
    liveness: Duration,
    queued: VecDeque<Incoming>,
}

impl PollClient {
    /// Opens a session, sends `40{"token":..}` and waits for `40` or `44`, within `timeout`.
    pub async fn connect(ws_url: &str, token: &str, timeout: Duration) -> Result<Self, ClientError> {
        tokio::time::timeout(timeout, Self::handshake(ws_url, token))
            .await
            .map_err(|_| ClientError::Timeout("connect"))?
    }

    async fn handshake(ws_url: &str, token: &str) -> Result<Self, ClientError> {
        let base = polling_url(ws_url);
        let body = get(&base, Duration::from_secs(10)).await?;
        let open = split_payload(&body).next().ok_or(ClientError::Protocol("empty open response"))?;
        let Ok(Packet::Open(info)) = decode(open) else {
            return Err(ClientError::Protocol("expected open packet"));
        };
        let sid = serde_json::from_str::<Value>(&open[1..])
            .ok()
            .and_then(|v| v.get("sid").and_then(Value::as_str).map(str::to_owned))
            .ok_or(ClientError::Protocol("open packet without sid"))?;
        let liveness = Duration::from_millis(info.ping_interval.saturating_add(info.ping_timeout));
        let mut client = Self { url: format!("{base}&sid={sid}"), next_ack_id: 0, liveness, queued: VecDeque::new() };
        client.post(encode_connect(token)).await?;
        loop {
            let body = get(&client.url, client.liveness).await?;
            // The server pings at once: its ping may share a body with the connect answer,
            // and an unanswered ping closes the session after the ping timeout.
            let read = read_body(&body)?;
            if read.ping {
                client.post("3".to_owned()).await?;
            }
            client.queued.extend(read.incoming);
            match read.connect {
                Some(Ok(())) => return Ok(client),
                Some(Err(message)) => return Err(ClientError::Refused(message)),
                None => {}
            }
        }
    }

    /// Sends `name(data)` with an ack and waits up to `timeout` for it; events that arrive
    /// meanwhile are kept for [`Self::poll`].
    pub async fn call(&mut self, name: &str, data: &Value, timeout: Duration) -> Result<AckOutcome, ClientError> {
        let id = self.next_ack_id;
        self.next_ack_id = self.next_ack_id.wrapping_add(1);
        self.post(encode_event(name, data, Some(id))).await?;
        let wait = async {
            loop {
                for incoming in self.fetch().await? {
                    match incoming {
                        Incoming::Ack { id: got, args } if got == id => return Ok(AckOutcome::from_args(args)),
                        Incoming::Ack { .. } => {}
                        event @ Incoming::Event { .. } => self.queued.push_back(event),
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| ClientError::Timeout("ack"))?
    }

    /// Waits for the next events and acks (one parked `GET`, answering pings on the way).
    /// Not cancel-safe: only cancel it when the connection is being dropped anyway.
    pub async fn poll(&mut self) -> Result<Vec<Incoming>, ClientError> {
        if !self.queued.is_empty() {
            return Ok(self.queued.drain(..).collect());
        }
        self.fetch().await
    }

    async fn fetch(&mut self) -> Result<Vec<Incoming>, ClientError> {
        let body = get(&self.url, self.liveness).await?;
        let read = read_body(&body)?;
        if read.ping {
            self.post("3".to_owned()).await?;
        }
        Ok(read.incoming)
    }

    /// Sends the Engine.IO close packet, waiting at most one second.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.post("1".to_owned())).await;
    }

    async fn post(&self, packet: String) -> Result<(), ClientError> {
        let response = http()
            .post(&self.url)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(packet)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| http_error(&e))?;
        if !response.status().is_success() {
            return Err(ClientError::Http(response.status().as_u16()));
        }
        let _ = response.bytes().await;
        Ok(())
    }
}

/// What one polling body carried.
#[derive(Debug, Default)]
struct Read {
    /// A ping to answer (once, after the whole body is read).
    ping: bool,
    /// The namespace connect answer: accepted, or refused with its message.
    connect: Option<Result<(), String>>,
    /// Events and acks, in order.
    incoming: Vec<Incoming>,
}

/// Reads every packet of a polling body; a close or disconnect packet ends the session.
fn read_body(body: &str) -> Result<Read, ClientError> {
    let mut read = Read::default();
    for packet in split_payload(body) {
        match decode(packet) {
            Ok(Packet::Ping) => read.ping = true,
            Ok(Packet::Close | Packet::Message(SioPacket::Disconnect)) => return Err(ClientError::Closed),
            Ok(Packet::Message(SioPacket::Connect { namespace })) if namespace == "/" => read.connect = Some(Ok(())),
            Ok(Packet::Message(SioPacket::ConnectError { message })) => read.connect = Some(Err(message)),
            Ok(Packet::Message(SioPacket::Event { name, data })) => read.incoming.push(Incoming::Event { name, data }),
            Ok(Packet::Message(SioPacket::Ack { id, args })) => read.incoming.push(Incoming::Ack { id, args }),
            Ok(_) | Err(_) => {}
        }
    }
    Ok(read)
}

async fn get(url: &str, timeout: Duration) -> Result<String, ClientError> {
    let response = http().get(url).timeout(timeout).send().await.map_err(|e| http_error(&e))?;
    if !response.status().is_success() {
        return Err(ClientError::Http(response.status().as_u16()));
    }
    response.text().await.map_err(|e| http_error(&e))
}

fn http_error(e: &reqwest::Error) -> ClientError {
    if e.is_timeout() { ClientError::Timeout("http") } else { ClientError::Transport("http") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_polling_urls() {
        assert_eq!(
            polling_url("ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"),
            "http://127.0.0.1:3000/socket.io/?EIO=4&transport=polling"
        );
        assert_eq!(
            polling_url("wss://h/api/socket/?EIO=4&transport=websocket"),
            "https://h/api/socket/?EIO=4&transport=polling"
        );
    }

    #[test]
    fn a_ping_after_the_connect_answer_is_not_lost() {
        let read = read_body("40{\"sid\":\"x\"}\u{1e}2\u{1e}42[\"server:location:update\",{\"a\":1}]").expect("read");
        assert!(read.ping);
        assert_eq!(read.connect, Some(Ok(())));
        assert_eq!(read.incoming.len(), 1);
        let refused = read_body("44{\"message\":\"INVALID_TOKEN\"}").expect("read");
        assert_eq!(refused.connect, Some(Err("INVALID_TOKEN".to_owned())));
        assert!(matches!(read_body("2\u{1e}1"), Err(ClientError::Closed)));
    }

    #[test]
    fn splits_payloads_on_record_separators() {
        let body = "2\u{1e}42[\"a\",1]\u{1e}\u{1e}431[{\"ok\":true}]";
        let packets: Vec<&str> = split_payload(body).collect();
        assert_eq!(packets, vec!["2", "42[\"a\",1]", "431[{\"ok\":true}]"]);
        assert_eq!(split_payload("").count(), 0);
    }
}
