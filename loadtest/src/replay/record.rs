//! What the parsers in [`super::ndjson`] and [`super::gpx`] produce — [`Record`]s and the
//! [`Parsed`] tally of what was skipped — and the checks both apply: ISO-8601 times and the
//! contract's ranges for a fix.

use crate::trips::schedule::Fix;

/// One parsed record. `t` is in seconds; only differences matter.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub driver: String,
    pub trip: Option<String>,
    pub t: f64,
    pub fix: Fix,
}

/// A parser's output: the usable records and what was skipped.
#[derive(Debug, Default)]
pub struct Parsed {
    pub records: Vec<Record>,
    pub skipped: u64,
    pub first_error: Option<String>,
}

impl Parsed {
    pub(super) fn skip(&mut self, line: usize, why: String) {
        self.skipped += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("line {line}: {why}"));
        }
    }
}

/// Seconds since the epoch of an ISO-8601 date-time.
pub(super) fn iso_seconds(s: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

/// The contract's ranges (CONTRACT §2 `driver:location:update`): a replay must not be
/// refused as `INVALID_PAYLOAD` for data the tool could have caught.
pub(super) fn check_fix(f: &Fix) -> Result<(), String> {
    if !(f.lat.is_finite() && (-90.0..=90.0).contains(&f.lat)) {
        return Err("lat out of range".to_owned());
    }
    if !(f.lng.is_finite() && (-180.0..=180.0).contains(&f.lng)) {
        return Err("lng out of range".to_owned());
    }
    if f.speed.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
        return Err("speed must be >= 0".to_owned());
    }
    if f.heading.is_some_and(|h| !(h.is_finite() && (0.0..360.0).contains(&h))) {
        return Err("heading must be in [0, 360)".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_contract_ranges() {
        let ok = Fix { lat: 1.0, lng: 2.0, speed: Some(0.0), heading: Some(359.9) };
        assert!(check_fix(&ok).is_ok());
        assert!(check_fix(&Fix { lng: 181.0, ..ok }).is_err());
        assert!(check_fix(&Fix { speed: Some(-1.0), ..ok }).is_err());
        assert!(check_fix(&Fix { heading: Some(360.0), ..ok }).is_err());
        assert!(check_fix(&Fix { lat: f64::NAN, ..ok }).is_err());
        assert_eq!(iso_seconds("1970-01-01T00:00:01.5Z"), Some(1.5));
    }
}
