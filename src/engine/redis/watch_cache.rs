//! What this node last read of each tenant's live-area watches (Redis Cluster): the set of
//! area cells some node watches (`{p}:areas:⟨{tenant}⟩`, members `{cell}\x1f{node}`), and
//! when it read it. The location path consults a view younger than [`WATCH_FOR`] when it
//! skips a geo cell's index write (`live::write_location_sharded`), and reads the set again
//! when the view is older, so a watch that starts elsewhere reaches this node's skipped
//! updates within that long; the watching node covers the gap by reading the area's
//! positions again after [`crate::engine::WATCH_SETTLE`]. Every read of the set renews the
//! view (`areas::read_watched_cells`, also behind `Engine::watched_cells`, which presence
//! announcements call once per batch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::types::WatchedCells as Watched;

/// How long a view is used.
pub const WATCH_FOR: Duration = Duration::from_secs(1);

/// Tenants kept before the stale views are dropped.
const BOUND: usize = 10_000;

/// The views, by the tenant's area-watches key.
#[derive(Default)]
pub struct WatchCache {
    tenants: Mutex<HashMap<String, (Watched, Instant)>>,
}

impl WatchCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Watched, Instant)>> {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tenant's view if younger than [`WATCH_FOR`].
    pub fn seen(&self, key: &str) -> Option<Watched> {
        self.lock().get(key).filter(|(_, at)| at.elapsed() < WATCH_FOR).map(|(w, _)| w.clone())
    }

    /// Records a view read from the set's members, asked at `asked` (its age counts from
    /// then, so a slow reply is not taken for a fresh one), unless a newer one is recorded.
    pub fn saw(&self, key: &str, members: &[String], asked: Instant) -> Watched {
        let cells: Watched = Arc::new(
            members.iter().map(|m| m.split_once('\u{1f}').map_or(m.as_str(), |(c, _)| c).to_string()).collect(),
        );
        let mut tenants = self.lock();
        if tenants.len() >= BOUND {
            tenants.retain(|_, (_, at)| at.elapsed() < WATCH_FOR);
        }
        match tenants.get(key) {
            Some((_, at)) if *at > asked => {}
            _ => {
                tenants.insert(key.to_string(), (cells.clone(), asked));
            }
        }
        cells
    }

    /// Forgets a tenant's view (this node starts or stops watching one of its cells).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_used_while_young_and_forgotten_on_demand() {
        let c = WatchCache::default();
        assert!(c.seen("k").is_none());
        let t0 = Instant::now();
        let v = c.saw("k", &["c1_2\u{1f}node-a".into(), "c1_2\u{1f}node-b".into(), "c3_4\u{1f}node-a".into()], t0);
        assert_eq!(v.len(), 2, "one entry per cell, whatever the watching nodes");
        assert!(c.seen("k").is_some_and(|w| w.contains("c1_2") && w.contains("c3_4")));
        c.saw("k", &[], t0 + Duration::from_millis(1));
        assert!(c.seen("k").is_some_and(|w| w.is_empty()));
        c.saw("k", &["c1_2\u{1f}node-a".into()], t0);
        assert!(c.seen("k").is_some_and(|w| w.is_empty()), "a view asked earlier does not replace a newer one");
        c.forget("k");
        assert!(c.seen("k").is_none());
        c.lock().insert("old".into(), (Arc::default(), Instant::now() - WATCH_FOR));
        assert!(c.seen("old").is_none(), "a view as old as WATCH_FOR is not used");
    }
}
