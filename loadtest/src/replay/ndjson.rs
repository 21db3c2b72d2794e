//! NDJSON location streams: one JSON object a line,
//! `{driverId, tripId?, t, lat, lng, speed?, heading?}`.
//!
//! `t` is seconds as a number (epoch or relative: only differences matter) or an ISO-8601
//! date-time string. Ids may be strings or numbers. Blank lines and lines starting with `#`
//! are skipped; a malformed line is counted and skipped with its line number, never fatal,
//! so one bad record in a million does not void a recording.

use serde_json::Value;

use super::record::{Parsed, Record, check_fix, iso_seconds};
use crate::trips::schedule::Fix;

/// Parses a whole NDJSON text.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match record(line) {
            Ok(r) => out.records.push(r),
            Err(why) => out.skip(i + 1, why),
        }
    }
    out
}

fn id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value, name: &str) -> Result<Option<f64>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()).map(Some).ok_or(format!("{name} is not finite")),
        Some(_) => Err(format!("{name} is not a number")),
    }
}

fn record(line: &str) -> Result<Record, String> {
    let v: Value = serde_json::from_str(line).map_err(|_| "not a JSON object".to_owned())?;
    if !v.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let driver = id(v.get("driverId")).ok_or("driverId missing")?;
    let trip = id(v.get("tripId"));
    let t = match v.get("t") {
        Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()).ok_or("t is not finite")?,
        Some(Value::String(s)) => iso_seconds(s).ok_or("t is not an ISO-8601 date-time")?,
        _ => return Err("t missing".to_owned()),
    };
    let lat = number(&v, "lat")?.ok_or("lat missing")?;
    let lng = number(&v, "lng")?.ok_or("lng missing")?;
    let fix = Fix { lat, lng, speed: number(&v, "speed")?, heading: number(&v, "heading")? };
    check_fix(&fix)?;
    Ok(Record { driver, trip, t, fix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_with_optional_fields() {
        let text = r#"
{"driverId":"d1","tripId":"t1","t":1700000000.5,"lat":-1.29,"lng":36.82,"speed":12.5,"heading":90}
# a comment
{"driverId":7,"t":"2023-11-14T22:13:21Z","lat":0,"lng":0,"speed":null}
"#;
        let p = parse(text);
        assert_eq!(p.skipped, 0, "{:?}", p.first_error);
        assert_eq!(p.records.len(), 2);
        let a = &p.records[0];
        assert_eq!((a.driver.as_str(), a.trip.as_deref(), a.t), ("d1", Some("t1"), 1_700_000_000.5));
        assert_eq!(a.fix, Fix { lat: -1.29, lng: 36.82, speed: Some(12.5), heading: Some(90.0) });
        let b = &p.records[1];
        assert_eq!((b.driver.as_str(), b.trip.as_deref(), b.t), ("7", None, 1_700_000_001.0));
        assert_eq!((b.fix.speed, b.fix.heading), (None, None));
    }

    #[test]
    fn skips_bad_lines_with_their_numbers() {
        let text = "not json\n{\"driverId\":\"d\",\"t\":1,\"lat\":91,\"lng\":0}\n{\"t\":1,\"lat\":0,\"lng\":0}\n\
                    {\"driverId\":\"d\",\"t\":\"yesterday\",\"lat\":0,\"lng\":0}\n{\"driverId\":\"d\",\"t\":1,\"lat\":\"0\",\"lng\":0}\n\
                    {\"driverId\":\"d\",\"t\":2,\"lat\":1,\"lng\":2,\"heading\":360}\n[1,2]\n\
                    {\"driverId\":\"d\",\"t\":3,\"lat\":1,\"lng\":2}";
        let p = parse(text);
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.skipped, 7);
        assert_eq!(p.first_error.as_deref(), Some("line 1: not a JSON object"));
    }
}
