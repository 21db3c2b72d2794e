//! Per-second counts and latencies of a run, for the progress line, the JSON report and the
//! HTML charts: how many updates were sent, accepted and delivered in each wall-clock second
//! after the start, and the end-to-end latency of the deliveries received in that second.
//!
//! Seconds are counted from a wall-clock start (Unix milliseconds) that every worker process
//! of a run shares, so workers' timelines add up second by second. It owns no sockets and
//! no clocks of its own: callers pass the time. Memory is bounded: at most [`MAX_SECONDS`]
//! buckets, each with a two-significant-digit histogram (~ 20 KiB).

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{self, WireHistogram};

/// Longest timeline kept; later events count in the last second.
pub const MAX_SECONDS: usize = 3600;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn bucket_histogram() -> Histogram<u64> {
    // Constant bounds that meet hdrhistogram's preconditions: this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant histogram bounds are valid")
}

/// One second of a run, as workers send it to their parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Second {
    pub sent: u64,
    pub accepted: u64,
    pub received: u64,
    pub errors: u64,
    pub e2e: WireHistogram,
}

impl Second {
    fn new() -> Self {
        Self { sent: 0, accepted: 0, received: 0, errors: 0, e2e: WireHistogram(bucket_histogram()) }
    }

    fn merge(&mut self, other: &Self) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.received += other.received;
        self.errors += other.errors;
        stats::merge_into(&mut self.e2e.0, &other.e2e.0);
    }
}

/// A second as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondSummary {
    /// Seconds since the start.
    pub t: u64,
    pub sent: u64,
    pub accepted: u64,
    pub received: u64,
    pub errors: u64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
}

/// The timeline of one run (or of several merged workers).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    pub start_unix_ms: u64,
    pub seconds: Vec<Second>,
}

impl Timeline {
    pub fn new(start_unix_ms: u64) -> Self {
        Self { start_unix_ms, seconds: Vec::new() }
    }

    /// The bucket of `at_unix_ms`; events before the start count in second 0.
    fn at(&mut self, at_unix_ms: u64) -> &mut Second {
        let idx = usize::try_from(at_unix_ms.saturating_sub(self.start_unix_ms) / 1000).unwrap_or(usize::MAX);
        let idx = idx.min(MAX_SECONDS - 1);
        while self.seconds.len() <= idx {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[idx]
    }

    /// Adds another timeline second by second, aligned on wall-clock starts.
    pub fn merge(&mut self, other: &Self) {
        let shift = other.start_unix_ms.saturating_sub(self.start_unix_ms);
        for (i, s) in other.seconds.iter().enumerate() {
            let at = self.start_unix_ms + shift + u64::try_from(i).unwrap_or(0) * 1000;
            self.at(at).merge(s);
        }
    }

    /// One row per second, trailing empty seconds dropped.
    pub fn summarize(&self) -> Vec<SecondSummary> {
        let mut rows: Vec<SecondSummary> = self
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let q = |q: f64| {
                    if s.e2e.0.is_empty() { 0.0 } else { stats::round3(s.e2e.0.value_at_quantile(q) as f64 / 1000.0) }
                };
                SecondSummary {
                    t: u64::try_from(i).unwrap_or(0),
                    sent: s.sent,
                    accepted: s.accepted,
                    received: s.received,
                    errors: s.errors,
                    e2e_p50_ms: q(0.5),
                    e2e_p99_ms: q(0.99),
                }
            })
            .collect();
        while rows.last().is_some_and(|r| r.sent + r.accepted + r.received + r.errors == 0) {
            rows.pop();
        }
        rows
    }
}

/// What connection tasks record into. One lock for all counters of a second: it is held for
/// one increment or one histogram record, never across an `.await`.
pub struct TimelineRecorder {
    inner: Mutex<Timeline>,
}

/// Which counter of a second an event adds to.
#[derive(Debug, Clone, Copy)]
pub enum Count {
    Sent,
    Accepted,
    Errors,
}

impl TimelineRecorder {
    pub fn new(start_unix_ms: u64) -> Self {
        Self { inner: Mutex::new(Timeline::new(start_unix_ms)) }
    }

    /// Moves the start (once the start signal is known); nothing is recorded before it.
    pub fn restart(&self, start_unix_ms: u64) {
        *self.lock() = Timeline::new(start_unix_ms);
    }

    pub fn count(&self, what: Count, at_unix_ms: u64) {
        let mut t = self.lock();
        let s = t.at(at_unix_ms);
        match what {
            Count::Sent => s.sent += 1,
            Count::Accepted => s.accepted += 1,
            Count::Errors => s.errors += 1,
        }
    }

    /// One delivery received at `at_unix_ms` after `latency_us`.
    pub fn delivered(&self, at_unix_ms: u64, latency_us: u64) {
        let mut t = self.lock();
        let s = t.at(at_unix_ms);
        s.received += 1;
        s.e2e.0.saturating_record(latency_us.max(1));
    }

    pub fn snapshot(&self) -> Timeline {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Timeline> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_second_and_merges_aligned() {
        let r = TimelineRecorder::new(10_000);
        r.count(Count::Sent, 10_100);
        r.count(Count::Sent, 11_999);
        r.count(Count::Accepted, 12_000);
        r.delivered(12_500, 4_000);
        r.delivered(9_000, 2_000); // before the start: second 0
        let a = r.snapshot();
        assert_eq!(a.seconds.len(), 3);
        let mut b = Timeline::new(9_000);
        b.merge(&a);
        let rows = b.summarize();
        // a's second 0 is b's second 1.
        assert_eq!(rows[1].sent, 1);
        assert_eq!(rows[1].received, 1);
        assert_eq!(rows[2].sent, 1);
        assert_eq!(rows[3].accepted, 1);
        assert_eq!(rows[3].received, 1);
        assert!((rows[3].e2e_p50_ms - 4.0).abs() < 0.05, "{}", rows[3].e2e_p50_ms);
        let json = serde_json::to_string(&a).expect("json");
        let back: Timeline = serde_json::from_str(&json).expect("back");
        assert_eq!(back.summarize(), a.summarize());
    }

    #[test]
    fn trailing_quiet_seconds_are_dropped_and_far_events_are_capped() {
        let r = TimelineRecorder::new(0);
        r.count(Count::Errors, u64::MAX);
        let t = r.snapshot();
        assert_eq!(t.seconds.len(), MAX_SECONDS);
        assert_eq!(t.summarize().len(), MAX_SECONDS);
        assert!(Timeline::new(0).summarize().is_empty());
    }
}
