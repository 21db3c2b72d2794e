//! What this node last heard from each geo cell's index script about the cell's live-area
//! watch (Redis Cluster): whether some node watches the cell, and when it heard it. The
//! location path reuses an answer younger than [`WATCH_FOR`] when it skips a cell's index
//! write (`live::INDEX_EVERY`), so a watch that starts elsewhere reaches this node's skipped
//! updates within that long; the watching node covers the gap by reading the area's
//! positions again after [`crate::engine::WATCH_SETTLE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer is reused.
pub const WATCH_FOR: Duration = Duration::from_secs(1);

/// Entries kept before the stale ones are dropped.
const BOUND: usize = 20_000;

/// The answers, by the cell's watchers key.
#[derive(Default)]
pub struct WatchCache {
    cells: Mutex<HashMap<String, (bool, Instant)>>,
}

impl WatchCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        self.cells.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cell's answer if younger than [`WATCH_FOR`].
    pub fn seen(&self, key: &str) -> Option<bool> {
        self.lock().get(key).filter(|(_, at)| at.elapsed() < WATCH_FOR).map(|(w, _)| *w)
    }

    /// Records an answer to a question asked at `asked` (its age counts from then, so a
    /// slow reply is not taken for a fresh one), unless a newer one is recorded.
    pub fn saw(&self, key: String, watched: bool, asked: Instant) {
        let mut cells = self.lock();
        if cells.len() >= BOUND {
            cells.retain(|_, (_, at)| at.elapsed() < WATCH_FOR);
        }
        match cells.get(&key) {
            Some((_, at)) if *at > asked => {}
            _ => {
                cells.insert(key, (watched, asked));
            }
        }
    }

    /// Forgets a cell's answer (this node starts or stops watching it).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_reused_while_young_and_forgotten_on_demand() {
        let c = WatchCache::default();
        assert_eq!(c.seen("k"), None);
        let t0 = Instant::now();
        c.saw("k".into(), true, t0);
        assert_eq!(c.seen("k"), Some(true));
        c.saw("k".into(), false, t0 + Duration::from_millis(1));
        assert_eq!(c.seen("k"), Some(false));
        c.saw("k".into(), true, t0);
        assert_eq!(c.seen("k"), Some(false), "an answer to an older question does not replace a newer one");
        c.forget("k");
        assert_eq!(c.seen("k"), None);
        c.lock().insert("old".into(), (true, Instant::now() - WATCH_FOR));
        assert_eq!(c.seen("old"), None, "an answer as old as WATCH_FOR is not reused");
    }
}
