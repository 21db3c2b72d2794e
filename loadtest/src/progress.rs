//! The live progress line: counters that connection tasks bump (atomics), and the one task
//! that shows them — an indicatif line on a terminal, a plain line every few seconds when
//! stderr is a file, or a JSON line to the parent when this process is a worker.
//!
//! Only counters and the phase name live here; no report figure is computed from them (the
//! report adds up the tasks' own results), so a dropped progress message costs nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Counters of one process, bumped by connection tasks.
#[derive(Default)]
pub struct Progress {
    phase: Mutex<String>,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub received: AtomicU64,
    pub errors: AtomicU64,
}

/// Adds one to a counter.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Progress {
    pub fn set_phase(&self, phase: &str) {
        phase.clone_into(&mut self.phase.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            phase: self.phase.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            connected: get(&self.connected),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
            sent: get(&self.sent),
            accepted: get(&self.accepted),
            received: get(&self.received),
            errors: get(&self.errors),
        }
    }
}

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

/// Where this process's counters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Draw the line here.
    Local,
    /// Send JSON lines to the parent process (see `workers`).
    Parent,
}

/// Starts the reporting task (owner: the scenario; it ends on `stop`).
pub fn spawn(
    scenario: &str,
    progress: Arc<Progress>,
    sink: Sink,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let scenario = scenario.to_owned();
    tokio::spawn(async move {
        let period = match sink {
            Sink::Local => Duration::from_millis(500),
            Sink::Parent => Duration::from_secs(1),
        };
        let mut display = (sink == Sink::Local).then(|| Display::new(&scenario));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let snap = progress.snapshot();
            match &mut display {
                Some(d) => d.update(snap),
                None => crate::workers::send_to_parent(&crate::workers::FromWorker::Progress(snap)),
            }
        }
        if let Some(d) = display {
            d.finish();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_sum_across_workers() {
        let p = Progress::default();
        p.set_phase("sending");
        bump(&p.sent);
        bump(&p.sent);
        bump(&p.received);
        let a = p.snapshot();
        let b = Snapshot { phase: "setup".into(), connected: 5, ..Snapshot::default() };
        let s = Snapshot::sum([&a, &b]);
        assert_eq!(s.phase, "sending");
        assert_eq!((s.sent, s.received, s.connected), (2, 1, 5));
    }
}
