//! The path a socket event's payload takes, on arbitrary text: socketioxide's common parser
//! (`decode_str`, `read_event`, `decode_value` — what `TryData<Value>` does), fleetcast's
//! `event_payload` (the dispatcher's first step), then every handler's typed parse and
//! validation (`socket::payload::parse` / `parse_empty` with `limits::check_json`, the typed
//! payloads, `trip_id`, `since_by_key`, `SubscribeIn::target`, `limits::room_name`,
//! `domain::check_position` / `check_timestamp`, `Filters::validate`, `DriverStatus`).
//! The same text is also tried as a bare payload. Checked besides "never panics":
//! - the payload handed to the handlers is the event array's second element (or none when
//!   the array has one), whenever serde_json reads the whole array;
//! - `check_json` accepts exactly the values at most 32 levels deep with strings ≤ 1 KiB;
//! - a typed parse never accepts what `check_json` refuses, or a non-object;
//! - every validated id, list and room is within its bounds.
#![no_main]

use fleetcast::domain::rides::Filters;
use fleetcast::domain::{self, DriverStatus, valid_id};
use fleetcast::error::Error;
use fleetcast::limits::{MAX_DEPTH, MAX_STRING, check_json, room_name};
use fleetcast::socket::fuzzing::event_payload;
use fleetcast::socket::payload::{
    self, AdminSubscribeIn, LocationIn, MAX_TRIP_IDS, ReadIn, RoomIn, StatusIn, SubscribeIn, SubscribeTarget, TripRef,
    TypingIn,
};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::TryData;
use socketioxide_core::Value as SioValue;
use socketioxide_core::packet::PacketData;
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use socketioxide_parser_common::CommonParser;

// The handlers' own private payload types (socket/handlers/{offers,conductor,auth}.rs).
#[derive(Deserialize, Default)]
struct DriverSubscribeIn {
    #[serde(default)]
    filters: Option<Filters>,
}
#[derive(Deserialize)]
struct TokenIn {
    #[allow(dead_code)]
    token: String,
}

/// The contract's limits, written independently of `check_json`.
fn within_limits(v: &Value, depth: usize) -> bool {
    depth <= MAX_DEPTH
        && match v {
            Value::String(s) => s.len() <= MAX_STRING,
            Value::Array(a) => a.iter().all(|x| within_limits(x, depth + 1)),
            Value::Object(m) => m.values().all(|x| within_limits(x, depth + 1)),
            _ => true,
        }
}

/// An error as the ack carries it.
fn ack_of(e: &Error) {
    let _ = (e.code(), e.message(), e.to_string());
}

fn typed<T: serde::de::DeserializeOwned>(p: &Option<Value>, limits_ok: bool) -> Option<T> {
    match payload::parse::<T>(p.clone()) {
        Ok(t) => {
            assert!(limits_ok, "a typed parse accepted what check_json refuses: {p:?}");
            assert!(p.as_ref().is_some_and(Value::is_object), "a typed parse accepted a non-object: {p:?}");
            Some(t)
        }
        Err(e) => {
            assert_eq!(e.code(), "INVALID_PAYLOAD");
            ack_of(&e);
            None
        }
    }
}

fn timestamp(ts: &Option<String>) {
    if let Some(ts) = ts
        && let Ok(t) = domain::check_timestamp(ts, chrono::Utc::now())
    {
        let _ = domain::iso(t);
    }
}

fn trip(id: String) {
    let ok = valid_id(&id);
    assert_eq!(payload::trip_id("tripId", id).is_ok(), ok);
}

/// Every handler's parse and validation of one payload.
fn handlers(p: Option<Value>) {
    let limits_ok = p.as_ref().is_none_or(|v| {
        let ok = check_json(v, 1).is_ok();
        assert_eq!(ok, within_limits(v, 1), "check_json disagrees with the contract's limits: {v:?}");
        ok
    });
    // `{}` events: heartbeat, driver:unsubscribe (and admin:subscribe's first step).
    match payload::parse_empty(p.clone()) {
        Ok(()) => assert!(limits_ok && p.as_ref().is_none_or(|v| v.is_null() || v.is_object())),
        Err(e) => ack_of(&e),
    }
    if let Some(t) = typed::<TripRef>(&p, limits_ok) {
        trip(t.trip_id);
    }
    if let Some(l) = typed::<LocationIn>(&p, limits_ok) {
        if domain::check_position(l.lat, l.lng, l.speed, l.heading, l.accuracy).is_ok() {
            assert!(l.lat.is_finite() && (-90.0..=90.0).contains(&l.lat) && (-180.0..=180.0).contains(&l.lng));
            assert!(l.heading.is_none_or(|h| (0.0..360.0).contains(&h)));
            assert!(l.speed.is_none_or(|s| s >= 0.0) && l.accuracy.is_none_or(|a| a >= 0.0));
        }
        timestamp(&l.timestamp);
        if let Some(t) = l.trip_id {
            trip(t);
        }
    }
    if let Some(s) = typed::<StatusIn>(&p, limits_ok) {
        trip(s.trip_id);
        if let Ok(st) = s.status.parse::<DriverStatus>() {
            assert_eq!(st.as_str(), s.status);
        }
        timestamp(&s.timestamp);
    }
    if let Some(mut s) = typed::<SubscribeIn>(&p, limits_ok) {
        let single = s.trip_id.clone();
        let _ = payload::since_by_key(s.since.take(), single.as_deref());
        match s.target() {
            Ok(SubscribeTarget::One(t)) => assert!(valid_id(&t.0)),
            Ok(SubscribeTarget::Many(ts)) => {
                assert!(!ts.is_empty() && ts.len() <= MAX_TRIP_IDS);
                assert!(ts.iter().all(|t| valid_id(&t.0)));
                for (i, t) in ts.iter().enumerate() {
                    assert!(!ts[..i].contains(t), "duplicate trip kept");
                }
            }
            Err(e) => ack_of(&e),
        }
    }
    if let Some(r) = typed::<RoomIn>(&p, limits_ok)
        && room_name(&r.room).is_ok()
    {
        assert!(!r.room.is_empty() && r.room.chars().count() <= 200);
        let _ = payload::since_by_key(r.since, Some(&r.room));
    }
    if let Some(t) = typed::<TypingIn>(&p, limits_ok) {
        let _ = valid_id(&t.chat_id);
    }
    if let Some(r) = typed::<ReadIn>(&p, limits_ok) {
        let _ = (valid_id(&r.chat_id), valid_id(&r.message_id));
    }
    // admin:subscribe: `{}` first, then its optional `since`.
    if payload::parse_empty(p.clone()).is_ok() {
        let input: Option<AdminSubscribeIn> = match &p {
            None | Some(Value::Null) => Some(AdminSubscribeIn::default()),
            _ => typed(&p, limits_ok),
        };
        if let Some(a) = input {
            let _ = payload::since_by_key(a.since, Some("admin:alerts"));
        }
    }
    // driver:subscribe: absent or null is "no filters".
    let input: Option<DriverSubscribeIn> = match &p {
        None | Some(Value::Null) => Some(DriverSubscribeIn::default()),
        _ => typed(&p, limits_ok),
    };
    if let Some(f) = input.and_then(|i| i.filters)
        && f.validate().is_ok()
    {
        assert!(f.max_distance.is_none_or(|d| d > 0.0 && d <= 200.0));
        assert!(f.min_earnings.is_none_or(|e| e.is_finite() && e >= 0.0));
    }
    // conductor:scan and auth:refresh.
    let _ = typed::<TokenIn>(&p, limits_ok);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // As a Socket.IO packet, through the parser the node runs.
    let state = ParserState::default();
    if let Ok(packet) = CommonParser.decode_str(&ParseConfig::default(), &state, text.to_string().into())
        && let PacketData::Event(mut v, _) = packet.inner
        && let Ok(name) = CommonParser.read_event(&v).map(str::to_owned)
    {
        let array = match &v {
            SioValue::Str(s, _) => serde_json::from_str::<Value>(s.as_str()).ok(),
            SioValue::Bytes(_) => None,
        };
        let p = event_payload(TryData(CommonParser.decode_value::<Value>(&mut v, true)));
        // (Binary placeholders are the parser's business: a text-only packet naming one is
        // its own case.)
        if let Some(Value::Array(a)) = array.filter(|_| !text.contains("_placeholder")) {
            assert_eq!(a.first().and_then(Value::as_str), Some(name.as_str()));
            match &p {
                Ok(got) => assert_eq!(got.as_ref(), a.get(1), "payload of {text:?}"),
                Err(e) => panic!("a readable event array was refused ({e}): {text:?}"),
            }
        }
        match p {
            Ok(p) => handlers(p),
            Err(e) => {
                assert_eq!(e.code(), "INVALID_PAYLOAD");
                ack_of(&e);
            }
        }
    }
    // As a bare payload.
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        handlers(Some(v));
    }
});
