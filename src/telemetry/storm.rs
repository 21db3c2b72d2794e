//! Logs in a failure storm: a call site that fails thousands of times a second (Redis or the
//! database unreachable, acks past their deadline) writes one line per [`EVERY`], carrying
//! how many it stood for since its last (`suppressed`), instead of one line per failure. The
//! metrics still count every failure; the log says that it happens and how often.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per call site this often.
pub const EVERY: Duration = Duration::from_secs(5);

/// One call site's budget: when it last wrote, and how many it suppressed since.
pub struct Storm {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Default for Storm {
    fn default() -> Self {
        Self::new()
    }
}

impl Storm {
    /// A site that has not written yet.
    pub const fn new() -> Self {
        Self { state: Mutex::new((None, 0)) }
    }

    /// `Some(n)`: write the line now; it stands for itself and `n` suppressed since the
    /// last one. `None`: suppressed (counted for the next line).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < EVERY => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// `tracing::warn!` at most once per [`EVERY`] per call site, with a `suppressed` field.
#[macro_export]
macro_rules! warn_storm {
    ($($arg:tt)+) => {{
        static STORM: $crate::telemetry::storm::Storm = $crate::telemetry::storm::Storm::new();
        if let Some(suppressed) = STORM.admit(::std::time::Instant::now()) {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}
pub use warn_storm;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_writes_one_line_per_interval_with_the_count_it_stood_for() {
        let s = Storm::new();
        let t0 = Instant::now();
        assert_eq!(s.admit(t0), Some(0), "the first failure is written");
        for i in 1..1_000u64 {
            assert_eq!(s.admit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(s.admit(t0 + EVERY), Some(999), "the next line counts the suppressed ones");
        assert_eq!(s.admit(t0 + EVERY + Duration::from_millis(1)), None);
        assert_eq!(s.admit(t0 + EVERY * 3), Some(1));
    }
}
