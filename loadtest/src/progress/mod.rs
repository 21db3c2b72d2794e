//! The live progress line: counters that connection tasks bump (atomics), and the one task
//! that shows them — an indicatif line on a terminal, a plain line every few seconds when
//! stderr is a file, or a JSON line to the parent when this process is a worker.
//!
//! The counters, the phase name and that task live here; their [`Snapshot`] and the line
//! drawing it are in [`snapshot`]. No report figure is computed from them (the report adds
//! up the tasks' own results), so a dropped progress message costs nothing.

pub mod snapshot;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use self::snapshot::{Display, Snapshot};
use crate::workers::{FromWorker, send_to_parent};

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
                None => send_to_parent(&FromWorker::Progress(snap)),
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
