//! The contract's payload limits (CONTRACT §6), one definition for every edge: JSON nested
//! at most 32 levels, strings at most 1 KiB, room names 1–200 characters. The Socket.IO
//! edge checks event payloads with them and the HTTP edge request bodies, the same way.
//! Also the one reading of a request's client address, which the edges' per-address rate
//! limits key on, and the one way they build a keyed limiter.

use std::net::IpAddr;
use std::num::NonZeroU32;

use axum::extract::ConnectInfo;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::listener::Peer;

/// Deepest JSON nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// Longest string accepted anywhere in a payload, in bytes.
pub const MAX_STRING: usize = 1024;
/// Longest client-visible room name, in characters.
pub const MAX_ROOM_NAME: usize = 200;

/// Checks nesting depth and string sizes (values and object keys alike) of any JSON value; `depth` is the value's own
/// level (1 for a whole payload).
pub fn check_json(v: &Value, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(format!("JSON nested deeper than {MAX_DEPTH} levels")));
    }
    match v {
        Value::String(s) if s.len() > MAX_STRING => {
            Err(Error::invalid(format!("string longer than {MAX_STRING} bytes")))
        }
        Value::Array(items) => items.iter().try_for_each(|i| check_json(i, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(key, i)| {
            if key.len() > MAX_STRING {
                return Err(Error::invalid(format!("object key longer than {MAX_STRING} bytes")));
            }
            check_json(i, depth + 1)
        }),
        _ => Ok(()),
    }
}

/// Validates a client-visible room name.
pub fn room_name(s: &str) -> Result<()> {
    if s.is_empty() || s.chars().count() > MAX_ROOM_NAME || s.chars().any(char::is_control) {
        return Err(Error::invalid(format!("room must be 1–{MAX_ROOM_NAME} characters")));
    }
    Ok(())
}

/// The client address of a request: its peer, or the first `X-Forwarded-For` entry when
/// the node is configured to trust it (`--trust-forwarded-for`).
pub fn client_ip(
    headers: &axum::http::HeaderMap,
    extensions: &axum::http::Extensions,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get("x-forwarded-for")
            .and_then(|h| h.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse().ok())
    {
        return Some(ip);
    }
    extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.addr.ip())
}

/// A keyed rate limiter of `per_sec` with a burst of `burst` (at least the rate), or `None`
/// when disabled (rate 0): the edges' per-address and per-user limits.
pub fn keyed_limiter<K: std::hash::Hash + Eq + Clone>(
    per_sec: u32,
    burst: u32,
) -> Option<governor::DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst)))
}
