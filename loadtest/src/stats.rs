//! The arithmetic of load reports: latency histograms and their summaries, rates, delivery
//! ratios, error tallies and the server's resident memory per socket.
//!
//! Pure functions and small containers only: no sockets, no clocks except what callers pass
//! in, no printing, so every figure a report shows can be unit-tested.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

/// Highest latency a histogram tracks exactly; larger values saturate into the top bucket.
/// A minute is far beyond any timeout in these scenarios.
const MAX_TRACKED_US: u64 = 60_000_000;

/// A histogram of microseconds, 1 µs to 60 s, three significant digits (~ 140 KiB; the
/// scenarios keep a handful of them, never one per connection).
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that meet hdrhistogram's preconditions (low >= 1, high >= 2 * low,
    // sigfig <= 5): this cannot fail at run time.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("constant histogram bounds are valid")
}

/// A histogram shared by many connection tasks. The lock is held only for one `record`
/// (tens of nanoseconds), never across an `.await`.
pub struct Recorder {
    hist: Mutex<Histogram<u64>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self { hist: Mutex::new(new_histogram()) }
    }

    /// Records microseconds; values above the tracked range count as the maximum.
    pub fn record_us(&self, us: u64) {
        self.hist.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(us);
    }

    /// Records a duration (in microseconds).
    pub fn record(&self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// A copy of what has been recorded so far.
    pub fn snapshot(&self) -> Histogram<u64> {
        self.hist.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A histogram that travels between processes: serde writes it as base64 of hdrhistogram's
/// V2 encoding (uncompressed; runs of empty buckets are already squeezed by the format), so
/// a worker's 140 KiB in-memory histogram is usually a few hundred bytes on the wire.
#[derive(Debug, Clone)]
pub struct WireHistogram(pub Histogram<u64>);

impl WireHistogram {
    /// Encodes to base64(V2).
    pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(h, &mut bytes).map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Decodes base64(V2); fails on anything else (a worker's output is still input).
    pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).context("histogram is not base64")?;
        Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("histogram is not V2-encoded: {e:?}"))
    }
}

impl Serialize for WireHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Self::encode(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for WireHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::decode(&text).map(Self).map_err(serde::de::Error::custom)
    }
}

/// Adds `from` into `into`; values beyond `into`'s range saturate instead of failing.
pub fn merge_into(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if into.add(from).is_err() {
        for v in from.iter_recorded() {
            into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Summarises a histogram of microseconds; all zeros when it is empty.
pub fn summarize_us(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary { count: 0, p50_ms: 0.0, p90_ms: 0.0, p99_ms: 0.0, max_ms: 0.0, mean_ms: 0.0 };
    }
    LatencySummary {
        count: h.len(),
        p50_ms: us_to_ms(h.value_at_quantile(0.50)),
        p90_ms: us_to_ms(h.value_at_quantile(0.90)),
        p99_ms: us_to_ms(h.value_at_quantile(0.99)),
        max_ms: us_to_ms(h.max()),
        mean_ms: round3(h.mean() / 1000.0),
    }
}

fn us_to_ms(us: u64) -> f64 {
    // u64 -> f64 loses precision only above 2^53 µs (285 years).
    round3(us as f64 / 1000.0)
}

/// Rounds to three decimals so reports and JSON stay readable (µs resolution in ms).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Events per second over `elapsed`; zero for an empty interval.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    round3(count as f64 / secs)
}

/// received / expected; `None` when nothing was expected (a ratio of 0/0 means nothing).
/// It can exceed 1 when the server delivers duplicates.
pub fn delivery_ratio(expected: u64, received: u64) -> Option<f64> {
    if expected == 0 {
        return None;
    }
    Some((received as f64 / expected as f64 * 1e6).round() / 1e6)
}

/// Growth of resident memory per socket in KiB; negative when the process shrank (the
/// allocator returned memory), `None` without sockets.
pub fn rss_per_socket_kib(before_kib: u64, after_kib: u64, sockets: u64) -> Option<f64> {
    if sockets == 0 {
        return None;
    }
    let delta = after_kib as f64 - before_kib as f64;
    Some(round3(delta / sockets as f64))
}

/// The `VmRSS:` line of `/proc/PID/status`, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// Reads the resident set size of a running process, in KiB.
pub fn read_vm_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss_kib(&status).with_context(|| format!("no VmRSS line in {path}"))
}

/// Counts of outcomes by code (`RATE_LIMITED`, `timeout:ack`, …), sorted for stable output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tally(BTreeMap<String, u64>);

impl Tally {
    pub fn add(&mut self, code: &str) {
        self.add_n(code, 1);
    }

    pub fn add_n(&mut self, code: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.0.get_mut(code) {
            Some(count) => *count += n,
            None => {
                self.0.insert(code.to_owned(), n);
            }
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for (code, n) in &other.0 {
            self.add_n(code, *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "none");
        }
        for (i, (code, n)) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{code}={n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = new_histogram();
        // 1 ms .. 100 ms, one sample each.
        for ms in 1..=100u64 {
            h.record(ms * 1000).expect("in range");
        }
        let s = summarize_us(&h);
        assert_eq!(s.count, 100);
        // Three significant digits: values are exact to within 0.1 %.
        assert!((s.p50_ms - 50.0).abs() <= 0.05, "p50 {}", s.p50_ms);
        assert!((s.p90_ms - 90.0).abs() <= 0.09, "p90 {}", s.p90_ms);
        assert!((s.p99_ms - 99.0).abs() <= 0.1, "p99 {}", s.p99_ms);
        assert!((s.max_ms - 100.0).abs() <= 0.1, "max {}", s.max_ms);
        assert!((s.mean_ms - 50.5).abs() <= 0.1, "mean {}", s.mean_ms);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        let s = summarize_us(&new_histogram());
        assert_eq!(s.count, 0);
        assert_eq!(s.p99_ms, 0.0);
    }

    #[test]
    fn recorder_saturates_instead_of_failing() {
        let r = Recorder::new();
        r.record(Duration::from_secs(3600));
        r.record_us(0);
        let h = r.snapshot();
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_TRACKED_US - MAX_TRACKED_US / 1000);
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(per_second(500, Duration::from_secs(10)), 50.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(delivery_ratio(0, 0), None);
        assert_eq!(delivery_ratio(200, 199), Some(0.995));
        assert_eq!(delivery_ratio(3, 1), Some(0.333333));
        assert_eq!(delivery_ratio(100, 101), Some(1.01));
    }

    #[test]
    fn rss_per_socket() {
        assert_eq!(rss_per_socket_kib(10_000, 30_000, 1000), Some(20.0));
        assert_eq!(rss_per_socket_kib(30_000, 29_000, 1000), Some(-1.0));
        assert_eq!(rss_per_socket_kib(1, 2, 0), None);
        assert_eq!(rss_per_socket_kib(0, 10, 3), Some(3.333));
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tfleetcast\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12345));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\tlots kB\n"), None);
    }

    #[test]
    fn reads_own_rss() {
        let rss = read_vm_rss_kib(std::process::id()).expect("own /proc status");
        assert!(rss > 0);
    }

    #[test]
    fn histograms_survive_the_wire_and_merge() {
        let mut a = new_histogram();
        for us in [150u64, 900, 4_000, 4_000, 48_000] {
            a.record(us).expect("in range");
        }
        let json = serde_json::to_string(&WireHistogram(a.clone())).expect("serializes");
        let back: WireHistogram = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back.0.len(), 5);
        assert_eq!(back.0.value_at_quantile(0.5), a.value_at_quantile(0.5));
        assert_eq!(back.0.max(), a.max());
        let mut merged = new_histogram();
        merge_into(&mut merged, &back.0);
        merge_into(&mut merged, &a);
        assert_eq!(merged.len(), 10);
        assert!(serde_json::from_str::<WireHistogram>(r#""not base64!""#).is_err());
        assert!(serde_json::from_str::<WireHistogram>(r#""aGVsbG8=""#).is_err());
    }

    #[test]
    fn tallies_merge_and_print_sorted() {
        let mut a = Tally::default();
        a.add("RATE_LIMITED");
        a.add("FORBIDDEN");
        a.add_n("RATE_LIMITED", 2);
        a.add_n("ignored", 0);
        let mut b = Tally::default();
        b.add("FORBIDDEN");
        a.merge(&b);
        assert_eq!(a.to_string(), "FORBIDDEN=2, RATE_LIMITED=3");
        assert_eq!(a.total(), 5);
        assert_eq!(Tally::default().to_string(), "none");
        assert_eq!(serde_json::to_string(&a).expect("json"), r#"{"FORBIDDEN":2,"RATE_LIMITED":3}"#);
    }
}
