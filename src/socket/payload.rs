//! Wire payloads of client→server events and their validation into domain values
//! (CONTRACT §2, §6 payload limits). Parsing goes through `serde_json::Value` first so that
//! depth and string-size limits are checked before any typed decoding; serde errors name
//! the offending field.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::domain::area::{Area, AreaSpec, MAX_AREA_ID};
use crate::domain::{EventId, TripId, valid_id};
use crate::error::{Error, Result};
use crate::limits::check_json;

/// Most trips one `passenger:subscribe` may name.
pub const MAX_TRIP_IDS: usize = 100;

/// Decodes an event payload into `T` after the limit checks. `None` (no payload) is
/// treated as `null`.
pub fn parse<T: DeserializeOwned>(v: Option<Value>) -> Result<T> {
    let v = v.unwrap_or(Value::Null);
    check_json(&v, 1)?;
    if !v.is_object() {
        return Err(Error::invalid("payload must be a JSON object"));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        Error::invalid(if path == "." { inner } else { format!("{path}: {inner}") })
    })
}

/// Checks a payload that should be `{}`: absent, `null` or any object is fine.
pub fn parse_empty(v: Option<Value>) -> Result<()> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(v @ Value::Object(_)) => check_json(&v, 1),
        Some(_) => Err(Error::invalid("payload must be a JSON object")),
    }
}

/// Validates a trip id field.
pub fn trip_id(field: &str, s: String) -> Result<TripId> {
    if valid_id(&s) { Ok(TripId(s)) } else { Err(Error::invalid(format!("{field} must be 1–128 characters"))) }
}

/// `{tripId}` (driver:connect, passenger:unsubscribe).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TripRef {
    /// The trip.
    pub trip_id: String,
}

/// `driver:status`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusIn {
    /// The trip.
    pub trip_id: String,
    /// STARTED, PAUSED, ENDED or EMERGENCY.
    pub status: String,
    /// ISO-8601 time of the change.
    pub timestamp: Option<String>,
}

/// `passenger:subscribe`: `{tripId, since?}` or `{tripIds:[…], since?: {tripId: eventId}}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeIn {
    /// One trip.
    pub trip_id: Option<String>,
    /// Several trips.
    pub trip_ids: Option<Vec<String>>,
    /// Last event id seen: a string with `tripId`, a map by trip (or room) otherwise.
    pub since: Option<Value>,
}

/// `room:join` / `room:leave`.
#[derive(Debug, Deserialize)]
pub struct RoomIn {
    /// Client-visible room name, at most 200 characters.
    pub room: String,
    /// A room token (JWT with `sub`, `room`, `exp`) when `channels` do not grant the room.
    pub token: Option<String>,
    /// Last event id seen in the room.
    pub since: Option<Value>,
}

/// `chat:typing`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypingIn {
    /// The chat.
    pub chat_id: String,
    /// Typing or stopped.
    pub is_typing: bool,
}

/// `chat:read`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadIn {
    /// The chat.
    pub chat_id: String,
    /// The message read.
    pub message_id: String,
}

/// `admin:subscribe`: `{since?}` — an event id of `admin:alerts`, or a map by room.
#[derive(Debug, Default, Deserialize)]
pub struct AdminSubscribeIn {
    /// Last event ids seen.
    pub since: Option<Value>,
}

/// `user:sync`: `{since}` — the last event id the client saw in its user room (required).
#[derive(Debug, Deserialize)]
pub struct UserSyncIn {
    /// Last event id seen.
    pub since: String,
}

/// Reads `since` for the given keys: a bare id applies to `single` (when given), a map
/// gives an id per key. Ids must be `"<ms>-<seq>"`.
pub fn since_by_key(since: Option<Value>, single: Option<&str>) -> Result<std::collections::HashMap<String, EventId>> {
    let mut out = std::collections::HashMap::new();
    let parse = |v: &Value| {
        v.as_str().and_then(EventId::parse).ok_or_else(|| Error::invalid("since must be an event id \"<ms>-<seq>\""))
    };
    match since {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in &map {
                out.insert(k.clone(), parse(v)?);
            }
        }
        Some(v @ Value::String(_)) => match single {
            Some(key) => {
                out.insert(key.to_string(), parse(&v)?);
            }
            None => return Err(Error::invalid("since must map each trip or room to an event id")),
        },
        Some(_) => return Err(Error::invalid("since must be an event id or a map of them")),
    }
    Ok(out)
}

/// What `passenger:subscribe` asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeTarget {
    /// `{tripId}`: the ack carries one `current`.
    One(TripId),
    /// `{tripIds}`: the ack carries a map; duplicates removed, order kept.
    Many(Vec<TripId>),
}

impl SubscribeIn {
    /// Validates into a target.
    pub fn target(self) -> Result<SubscribeTarget> {
        match (self.trip_id, self.trip_ids) {
            (Some(id), None) => Ok(SubscribeTarget::One(trip_id("tripId", id)?)),
            (None, Some(ids)) => {
                if ids.is_empty() || ids.len() > MAX_TRIP_IDS {
                    return Err(Error::invalid(format!("tripIds must hold 1–{MAX_TRIP_IDS} ids")));
                }
                let mut out: Vec<TripId> = Vec::with_capacity(ids.len());
                for id in ids {
                    let id = trip_id("tripIds", id)?;
                    if !out.contains(&id) {
                        out.push(id);
                    }
                }
                Ok(SubscribeTarget::Many(out))
            }
            (Some(_), Some(_)) => Err(Error::invalid("give either tripId or tripIds, not both")),
            (None, None) => Err(Error::invalid("tripId or tripIds is required")),
        }
    }
}

/// `center` of an `area:subscribe`.
#[derive(Debug, Deserialize)]
pub struct CenterIn {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lng: f64,
}

/// `area:subscribe {areaId, bbox | center+radiusKm, intervalMs?, availability?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AreaIn {
    area_id: String,
    bbox: Option<Vec<f64>>,
    center: Option<CenterIn>,
    radius_km: Option<f64>,
    interval_ms: Option<u64>,
    availability: Option<Vec<String>>,
}

impl AreaIn {
    /// The validated subscription (CONTRACT §7 bounds).
    pub fn spec(self) -> Result<AreaSpec> {
        let area_id = area_id(self.area_id)?;
        let area = match (self.bbox, self.center, self.radius_km) {
            (Some(b), None, None) => {
                let b: [f64; 4] =
                    b.try_into().map_err(|_| Error::invalid("bbox must be [minLng, minLat, maxLng, maxLat]"))?;
                Area::bbox(b)?
            }
            (None, Some(c), Some(r)) => Area::circle(c.lat, c.lng, r)?,
            _ => return Err(Error::invalid("give either bbox, or center and radiusKm")),
        };
        Ok(AreaSpec::new(area_id, area, self.interval_ms, self.availability)?)
    }
}

/// `{areaId}` (area:unsubscribe).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AreaRef {
    area_id: String,
}

impl AreaRef {
    /// The validated id.
    pub fn id(self) -> Result<String> {
        area_id(self.area_id)
    }
}

fn area_id(s: String) -> Result<String> {
    let n = s.chars().count();
    if n == 0 || n > MAX_AREA_ID || s.chars().any(char::is_control) {
        return Err(Error::invalid(format!("areaId must be 1–{MAX_AREA_ID} characters")));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_and_missing_fields_name_the_field() {
        let e = parse::<crate::domain::PositionReport>(Some(json!({"lat": "1", "lng": 2}))).expect_err("string lat");
        assert_eq!(e.code(), "INVALID_PAYLOAD");
        assert!(e.to_string().contains("lat"), "{e}");
        let e = parse::<crate::domain::PositionReport>(Some(json!({"lat": 1}))).expect_err("missing lng");
        assert!(e.to_string().contains("lng"), "{e}");
        assert!(parse::<crate::domain::PositionReport>(Some(json!([1, 2]))).is_err());
        assert!(parse::<crate::domain::PositionReport>(None).is_err());
    }

    #[test]
    fn nulls_are_absent_and_unknown_fields_ignored() {
        let p: crate::domain::PositionReport =
            parse(Some(json!({"lat": 1, "lng": 2, "speed": null, "extra": {"x": 1}}))).expect("valid");
        assert_eq!(p.speed, None);
        assert_eq!(p.lat, 1.0);
    }

    #[test]
    fn deep_nesting_and_long_strings_are_refused() {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!({ "a": v });
        }
        let mut obj = json!({"tripId": "t"});
        obj["deep"] = v;
        assert!(parse::<TripRef>(Some(obj)).is_err());
        assert!(parse::<TripRef>(Some(json!({"tripId": "x".repeat(2000)}))).is_err());
        assert!(parse_empty(Some(json!(5))).is_err());
        assert!(parse_empty(None).is_ok());
    }

    #[test]
    fn subscribe_targets_are_exclusive_and_deduplicated() {
        let t = parse::<SubscribeIn>(Some(json!({"tripIds": ["a", "b", "a"]}))).expect("ok").target().expect("ok");
        assert_eq!(t, SubscribeTarget::Many(vec![TripId("a".into()), TripId("b".into())]));
        assert!(parse::<SubscribeIn>(Some(json!({}))).expect("ok").target().is_err());
        assert!(parse::<SubscribeIn>(Some(json!({"tripId": "a", "tripIds": ["b"]}))).expect("ok").target().is_err());
        assert!(parse::<SubscribeIn>(Some(json!({"tripIds": []}))).expect("ok").target().is_err());
        assert!(parse::<SubscribeIn>(Some(json!({"tripId": ""}))).expect("ok").target().is_err());
    }
}
