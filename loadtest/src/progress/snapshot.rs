//! The counters of one process at one moment ([`Snapshot`], also what a worker sends its
//! parent every second) and the line that shows them ([`Display`]): a steady indicatif line
//! on a terminal, a plain line every few seconds when stderr is a file. The parent of
//! workers shows their summed snapshots with it too.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The counters at one moment (also what a worker sends its parent every second).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub phase: String,
    pub connected: u64,
    pub failed: u64,
    pub dropped: u64,
    pub sent: u64,
    pub accepted: u64,
    pub received: u64,
    pub errors: u64,
}

impl Snapshot {
    /// Sums workers' snapshots; the phase shown is the first worker's.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut out = Self::default();
        for s in all {
            if out.phase.is_empty() {
                out.phase.clone_from(&s.phase);
            }
            out.connected += s.connected;
            out.failed += s.failed;
            out.dropped += s.dropped;
            out.sent += s.sent;
            out.accepted += s.accepted;
            out.received += s.received;
            out.errors += s.errors;
        }
        out
    }
}

/// Shows snapshots: a steady indicatif line on a terminal, else a plain line every 5 s.
pub struct Display {
    bar: ProgressBar,
    last: Option<(Instant, Snapshot)>,
    last_plain: Instant,
}

impl Display {
    pub fn new(scenario: &str) -> Self {
        let bar = ProgressBar::new_spinner();
        let style = ProgressStyle::with_template("{spinner} {elapsed_precise} {prefix} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(scenario.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        Self { bar, last: None, last_plain: Instant::now() }
    }

    pub fn update(&mut self, snap: Snapshot) {
        let now = Instant::now();
        let rate = |f: fn(&Snapshot) -> u64| match &self.last {
            Some((at, prev)) if now > *at => {
                (f(&snap).saturating_sub(f(prev))) as f64 / now.duration_since(*at).as_secs_f64()
            }
            _ => 0.0,
        };
        let line = format!(
            "{} | conn {} fail {} drop {} | sent {} ({:.0}/s) ok {} recv {} ({:.0}/s) err {}",
            snap.phase,
            snap.connected,
            snap.failed,
            snap.dropped,
            snap.sent,
            rate(|s| s.sent),
            snap.accepted,
            snap.received,
            rate(|s| s.received),
            snap.errors
        );
        if self.bar.is_hidden() {
            if now.duration_since(self.last_plain) >= Duration::from_secs(5) {
                eprintln!("progress: {line}");
                self.last_plain = now;
            }
        } else {
            self.bar.set_message(line);
        }
        self.last = Some((now, snap));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
