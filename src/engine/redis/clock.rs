//! The deadline every Redis write carries, so that an `UNAVAILABLE` ack is true. A command
//! that times out on the node may still sit in Redis's input buffer (a Redis frozen by a
//! fork, a long script or `SIGSTOP` runs it when it resumes); without a deadline a location
//! update or status event the client was told had failed would be applied and delivered
//! seconds later, and counted in the driver's rate window. Each writing script therefore
//! gets a deadline in Redis's own clock and does nothing once `TIME` is past it
//! (`redis/README.md`, "Deadlines").
//!
//! The deadline is the send time plus three quarters of the command timeout (at most
//! timeout − 250 ms less), so a script that starts in time answers well before the node
//! gives up. The node learns Redis's clock with `TIME` every few seconds (the offset from
//! its own, taken at the middle of the round trip; samples with a round trip over 50 ms
//! are discarded): nodes and Redis need not agree on the time. Until the first sample the
//! deadline is `0`, which the scripts read as "none".

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

/// Longest round trip a clock sample may take.
const MAX_SAMPLE_RTT: Duration = Duration::from_millis(50);
/// How often the offset is measured again.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// This node's view of Redis's clock.
pub(super) struct RedisClock {
    /// Redis's clock minus this node's, ms.
    offset_ms: AtomicI64,
    known: AtomicBool,
    /// How long after it is sent a write may still start, ms.
    run_within_ms: i64,
}

fn unix_ms() -> i64 {
    crate::domain::now_ms() as i64
}

impl RedisClock {
    pub(super) fn new(timeout: Duration) -> Self {
        let t = timeout.as_millis() as i64;
        let run_within_ms = (t * 3 / 4).min(t - 250).max(t / 2);
        Self { offset_ms: AtomicI64::new(0), known: AtomicBool::new(false), run_within_ms }
    }

    /// The deadline argument of a write sent now (`"0"` while the offset is unknown).
    pub(super) fn deadline(&self) -> String {
        if !self.known.load(Ordering::Relaxed) {
            return "0".to_string();
        }
        (unix_ms() + self.offset_ms.load(Ordering::Relaxed) + self.run_within_ms).to_string()
    }

    /// Reads Redis's `TIME` once through `client` and records the offset.
    pub(super) async fn sample(&self, client: &Client) -> std::result::Result<(), fred::error::Error> {
        let sent_ms = unix_ms();
        let started = Instant::now();
        let time = CustomCommand::new_static("TIME", ClusterHash::Random, false);
        let reply: Vec<String> = client.custom(time, Vec::<String>::new()).await?;
        let rtt = started.elapsed();
        if let [secs, micros] = reply.as_slice()
            && let (Ok(s), Ok(us)) = (secs.parse::<i64>(), micros.parse::<i64>())
        {
            self.record(s * 1_000 + us / 1_000, sent_ms, rtt);
        }
        Ok(())
    }

    fn record(&self, redis_ms: i64, sent_ms: i64, rtt: Duration) {
        if rtt > MAX_SAMPLE_RTT {
            return;
        }
        let mid = sent_ms + rtt.as_millis() as i64 / 2;
        self.offset_ms.store(redis_ms - mid, Ordering::Relaxed);
        self.known.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_in_redis_time_and_leave_room_before_the_timeout() {
        let c = RedisClock::new(Duration::from_millis(1000));
        assert_eq!(c.deadline(), "0", "no deadline before the clock is known");
        assert_eq!(c.run_within_ms, 750);
        assert_eq!(RedisClock::new(Duration::from_millis(4000)).run_within_ms, 3000);
        assert_eq!(RedisClock::new(Duration::from_millis(100)).run_within_ms, 50);
        // Redis runs 10 s ahead of this node: the deadline is in its clock.
        let now = unix_ms();
        c.record(now + 10_000, now, Duration::from_millis(2));
        let d: i64 = c.deadline().parse().expect("ms");
        assert!((d - (now + 10_750)).abs() < 100, "{d} vs {}", now + 10_750);
        // A slow sample is not trusted.
        c.record(now - 50_000, now, Duration::from_millis(500));
        let d: i64 = c.deadline().parse().expect("ms");
        assert!((d - (now + 10_750)).abs() < 100);
    }
}
