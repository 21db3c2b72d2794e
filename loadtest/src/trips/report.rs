//! The figures of a trip run: one process's [`Partial`] (what a worker sends its parent,
//! histograms included), their merge, and the final [`TripReport`] printed as a table or
//! JSON. Pure data and arithmetic: no sockets, no clocks.

use serde::{Deserialize, Serialize};

use crate::stats::{self, LatencySummary, Tally, WireHistogram};
use crate::timeline::{SecondSummary, Timeline};

/// Delivery ratio per subscriber: received ÷ updates its trip's driver had accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribers {
    /// Subscribers that completed setup (and so expected every accepted update).
    pub count: u64,
    /// Of those, how many received at least every accepted update.
    pub complete: u64,
    /// The lowest ratio of any subscriber (1 when there are none).
    pub min_ratio: f64,
    /// Deliveries missing summed over subscribers (duplicates do not offset losses).
    pub missing: u64,
}

impl Default for Subscribers {
    fn default() -> Self {
        Self { count: 0, complete: 0, min_ratio: 1.0, missing: 0 }
    }
}

impl Subscribers {
    /// Adds one subscriber that expected `expected` and received `received`.
    pub fn add(&mut self, expected: u64, received: u64) {
        self.count += 1;
        if received >= expected {
            self.complete += 1;
        } else {
            self.missing += expected - received;
        }
        if expected > 0 {
            self.min_ratio = self.min_ratio.min(received as f64 / expected as f64);
        }
    }

    pub fn merge(&mut self, o: &Self) {
        self.count += o.count;
        self.complete += o.complete;
        self.missing += o.missing;
        self.min_ratio = self.min_ratio.min(o.min_ratio);
    }
}

/// One process's figures; workers send it to their parent as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Partial {
    pub drivers: u64,
    pub drivers_ready: u64,
    pub passengers: u64,
    pub passengers_ready: u64,
    pub polling_passengers: u64,
    pub setup_failures: Tally,
    pub setup_s: f64,
    pub window_s: f64,
    pub sent: u64,
    pub accepted: u64,
    pub ack_errors: Tally,
    pub expected: u64,
    pub received: u64,
    /// Deliveries matched to an accepted update of their trip (each update once per subscriber).
    pub matched: u64,
    /// Deliveries of updates not acknowledged as accepted (refused, or written although their
    /// ack timed out) and duplicates.
    pub unexpected: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub unparsable: u64,
    pub subscribers: Subscribers,
    pub e2e: WireHistogram,
    pub ack: WireHistogram,
    /// `retryAfterMs` of refused updates, recorded ×1000 so it summarises like latencies.
    pub retry_after: WireHistogram,
    pub timeline: Timeline,
    pub disconnects: Tally,
    pub interrupted: bool,
}

impl Partial {
    pub fn empty(start_unix_ms: u64) -> Self {
        Self {
            drivers: 0,
            drivers_ready: 0,
            passengers: 0,
            passengers_ready: 0,
            polling_passengers: 0,
            setup_failures: Tally::default(),
            setup_s: 0.0,
            window_s: 0.0,
            sent: 0,
            accepted: 0,
            ack_errors: Tally::default(),
            expected: 0,
            received: 0,
            matched: 0,
            unexpected: 0,
            out_of_order: 0,
            foreign: 0,
            unparsable: 0,
            subscribers: Subscribers::default(),
            e2e: WireHistogram(stats::new_histogram()),
            ack: WireHistogram(stats::new_histogram()),
            retry_after: WireHistogram(stats::new_histogram()),
            timeline: Timeline::new(start_unix_ms),
            disconnects: Tally::default(),
            interrupted: false,
        }
    }

    pub fn merge(&mut self, o: &Self) {
        self.drivers += o.drivers;
        self.drivers_ready += o.drivers_ready;
        self.passengers += o.passengers;
        self.passengers_ready += o.passengers_ready;
        self.polling_passengers += o.polling_passengers;
        self.setup_failures.merge(&o.setup_failures);
        self.setup_s = self.setup_s.max(o.setup_s);
        self.window_s = self.window_s.max(o.window_s);
        self.sent += o.sent;
        self.accepted += o.accepted;
        self.ack_errors.merge(&o.ack_errors);
        self.expected += o.expected;
        self.received += o.received;
        self.matched += o.matched;
        self.unexpected += o.unexpected;
        self.out_of_order += o.out_of_order;
        self.foreign += o.foreign;
        self.unparsable += o.unparsable;
        self.subscribers.merge(&o.subscribers);
        stats::merge_into(&mut self.e2e.0, &o.e2e.0);
        stats::merge_into(&mut self.ack.0, &o.ack.0);
        stats::merge_into(&mut self.retry_after.0, &o.retry_after.0);
        self.timeline.merge(&o.timeline);
        self.disconnects.merge(&o.disconnects);
        self.interrupted |= o.interrupted;
    }
}

/// The final report of a trip run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TripReport {
    pub scenario: String,
    pub run_id: String,
    /// How sockets were spread over the targets, in words.
    pub placement: String,
    /// What the drivers sent, in words (rate, route box, file …).
    pub source: String,
    pub workers: u32,
    pub drivers: u64,
    pub drivers_ready: u64,
    pub passengers: u64,
    pub passengers_ready: u64,
    pub polling_passengers: u64,
    pub setup_failures: Tally,
    pub setup_s: f64,
    pub send_window_s: f64,
    pub target_rate: Option<f64>,
    pub achieved_rate: f64,
    pub accepted_rate: f64,
    pub sent: u64,
    pub accepted: u64,
    pub ack_errors: Tally,
    pub expected_deliveries: u64,
    pub received_deliveries: u64,
    /// Distinct deliveries of accepted updates ÷ expected (accepted updates × subscribers).
    pub delivery_ratio: Option<f64>,
    /// Received deliveries that match no accepted update (see [`Partial::unexpected`]).
    pub unexpected_deliveries: u64,
    pub deliveries_per_s: f64,
    pub subscribers: Subscribers,
    pub out_of_order: u64,
    pub foreign_trip: u64,
    pub unparsable: u64,
    pub e2e_ms: LatencySummary,
    pub ack_ms: LatencySummary,
    pub retry_after_ms: LatencySummary,
    pub disconnects: Tally,
    pub interrupted: bool,
    /// Wall clock (Unix ms) of the timeline's second 0: with it a second of the timeline
    /// matches samples taken outside the tool (CPU of servers over the send window).
    pub timeline_start_unix_ms: u64,
    pub timeline: Vec<SecondSummary>,
}

/// What the report says about the run besides its figures.
pub struct Labels {
    pub scenario: String,
    pub run_id: String,
    pub placement: String,
    pub source: String,
    pub workers: u32,
    pub target_rate: Option<f64>,
}

impl TripReport {
    pub fn new(l: Labels, p: Partial) -> Self {
        let window = std::time::Duration::from_secs_f64(p.window_s.max(0.0));
        Self {
            scenario: l.scenario,
            run_id: l.run_id,
            placement: l.placement,
            source: l.source,
            workers: l.workers,
            drivers: p.drivers,
            drivers_ready: p.drivers_ready,
            passengers: p.passengers,
            passengers_ready: p.passengers_ready,
            polling_passengers: p.polling_passengers,
            setup_failures: p.setup_failures,
            setup_s: stats::round3(p.setup_s),
            send_window_s: stats::round3(p.window_s),
            target_rate: l.target_rate,
            achieved_rate: stats::per_second(p.sent, window),
            accepted_rate: stats::per_second(p.accepted, window),
            sent: p.sent,
            accepted: p.accepted,
            ack_errors: p.ack_errors,
            expected_deliveries: p.expected,
            received_deliveries: p.received,
            delivery_ratio: stats::delivery_ratio(p.expected, p.matched),
            unexpected_deliveries: p.unexpected,
            deliveries_per_s: stats::per_second(p.received, window),
            subscribers: p.subscribers,
            out_of_order: p.out_of_order,
            foreign_trip: p.foreign,
            unparsable: p.unparsable,
            e2e_ms: stats::summarize_us(&p.e2e.0),
            ack_ms: stats::summarize_us(&p.ack.0),
            retry_after_ms: stats::summarize_us(&p.retry_after.0),
            disconnects: p.disconnects,
            interrupted: p.interrupted,
            timeline_start_unix_ms: p.timeline.start_unix_ms,
            timeline: p.timeline.summarize(),
        }
    }

    pub fn print_table(&self) {
        let r = self;
        println!("{} run {} ({} worker processes): {}", r.scenario, r.run_id, r.workers, r.placement);
        println!("source          {}", r.source);
        println!(
            "setup           drivers {}/{}  passengers {}/{} ({} polling)  in {:.1} s  failures {}",
            r.drivers_ready,
            r.drivers,
            r.passengers_ready,
            r.passengers,
            r.polling_passengers,
            r.setup_s,
            r.setup_failures
        );
        let target = r.target_rate.map_or_else(|| "-".to_owned(), |t| format!("{t:.2}"));
        println!(
            "rate (upd/s)    target {target}  achieved {:.2}  accepted {:.2}  over {:.1} s",
            r.achieved_rate, r.accepted_rate, r.send_window_s
        );
        println!("{:<16}{:>10}{:>10}{:>10}{:>10}{:>10}", "(ms)", "p50", "p90", "p99", "max", "count");
        for (name, s) in [("e2e delivery", &r.e2e_ms), ("ack", &r.ack_ms), ("retryAfterMs", &r.retry_after_ms)] {
            println!(
                "{name:<16}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10}",
                s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.count
            );
        }
        let ratio = r.delivery_ratio.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.6}"));
        println!(
            "deliveries      expected {}  received {}  ratio {ratio}  ({:.0}/s; of unacknowledged updates or repeated {}, out of order {}, other trips {}, unparsable {})",
            r.expected_deliveries,
            r.received_deliveries,
            r.deliveries_per_s,
            r.unexpected_deliveries,
            r.out_of_order,
            r.foreign_trip,
            r.unparsable
        );
        println!(
            "subscribers     {} complete of {}  lowest ratio {:.6}  missing {}",
            r.subscribers.complete, r.subscribers.count, r.subscribers.min_ratio, r.subscribers.missing
        );
        println!("acks            sent {}  ok {}  errors {}", r.sent, r.accepted, r.ack_errors);
        println!("disconnects     {}", r.disconnects);
        println!(
            "SUMMARY {} rate={:.2}/s accepted={:.2}/s e2e_p50_ms={:.3} e2e_p99_ms={:.3} e2e_max_ms={:.3} delivery_ratio={ratio} \
             subscribers_complete={}/{} ack_errors={}{}",
            r.scenario,
            r.achieved_rate,
            r.accepted_rate,
            r.e2e_ms.p50_ms,
            r.e2e_ms.p99_ms,
            r.e2e_ms.max_ms,
            r.subscribers.complete,
            r.subscribers.count,
            r.ack_errors.total(),
            if r.interrupted { " interrupted" } else { "" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_ratios_track_the_worst_and_the_missing() {
        let mut a = Subscribers::default();
        a.add(100, 100);
        a.add(100, 97);
        a.add(0, 0);
        let mut b = Subscribers::default();
        b.add(10, 12); // duplicates count as complete, never offset another's loss
        a.merge(&b);
        assert_eq!(a, Subscribers { count: 4, complete: 3, min_ratio: 0.97, missing: 3 });
    }

    #[test]
    fn partials_merge_and_report_rates() {
        let mut a = Partial::empty(1_000);
        a.sent = 100;
        a.accepted = 90;
        a.expected = 270;
        // 270 deliveries of accepted updates plus 2 of updates whose ack was an error.
        a.received = 272;
        a.matched = 270;
        a.unexpected = 2;
        a.window_s = 10.0;
        a.e2e.0.record(2_000).expect("in range");
        let mut b = a.clone();
        b.window_s = 9.5;
        b.ack_errors.add("RATE_LIMITED");
        let json = serde_json::to_value(&b).expect("json");
        let b: Partial = serde_json::from_value(json).expect("back");
        a.merge(&b);
        let labels = Labels {
            scenario: "fanout".into(),
            run_id: "r".into(),
            placement: "p".into(),
            source: "s".into(),
            workers: 2,
            target_rate: Some(20.0),
        };
        let r = TripReport::new(labels, a);
        assert_eq!(r.achieved_rate, 20.0);
        assert_eq!(r.accepted_rate, 18.0);
        assert_eq!(r.delivery_ratio, Some(1.0), "extra deliveries do not raise the ratio");
        assert_eq!(r.unexpected_deliveries, 4);
        assert_eq!(r.deliveries_per_s, 54.4);
        assert_eq!(r.e2e_ms.count, 2);
        assert_eq!(r.ack_errors.total(), 1);
    }
}
