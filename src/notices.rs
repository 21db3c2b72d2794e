//! [`Notices`]: the drivers of this node whose availability is to be derived again, by
//! tenant: queued by flows on hot paths (a driver's first fresh position after a silence,
//! `driver:connect`), derived in batches by `flows::presence::notice_loop`: at once when
//! the node is quiet, and while a batch is derived the next one gathers, so thousands of
//! drivers coming live within a second cost a database read and a derivation per batch, not
//! per driver. `driver:connect` waits for the batch its driver is in ([`Notices::derived`]),
//! so the availability it may change is derived when it answers; the location path does
//! not (its update is applied: a wait could run past the ack deadline and answer
//! `UNAVAILABLE` for it). A driver queued twice before a batch is derived once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::domain::{Tenant, UserId};

/// Drivers waiting for a derivation, per tenant, and the batch they will be in.
pub struct Notices {
    waiting: Mutex<Waiting>,
    /// Woken when the first driver is queued after a drain.
    pub(crate) queued: Notify,
    /// The last batch whose derivation ended (in success or not).
    done: watch::Sender<u64>,
}

#[derive(Default)]
struct Waiting {
    drivers: HashMap<Tenant, HashSet<UserId>>,
    /// The number of the batch being gathered.
    batch: u64,
}

/// A driver's place in a batch (see [`Notices::derived`]).
#[must_use]
pub struct Queued(u64);

/// Longest a caller waits for its batch.
const WAIT_AT_MOST: Duration = Duration::from_secs(2);

impl Default for Notices {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(Waiting { drivers: HashMap::new(), batch: 1 }),
            queued: Notify::new(),
            done: watch::Sender::new(0),
        }
    }
}

impl Notices {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `driver` of `tenant` for the batch being gathered.
    pub fn push(&self, tenant: &Tenant, driver: &UserId) -> Queued {
        let (first, batch) = {
            let mut w = self.waiting();
            let first = w.drivers.is_empty();
            w.drivers.entry(tenant.clone()).or_default().insert(driver.clone());
            (first, w.batch)
        };
        if first {
            self.queued.notify_one();
        }
        Queued(batch)
    }

    /// Waits (at most 2 s) until the batch of `queued` was derived.
    pub async fn derived(&self, queued: Queued) {
        let mut done = self.done.subscribe();
        let _ = tokio::time::timeout(WAIT_AT_MOST, done.wait_for(|d| *d >= queued.0)).await;
    }

    /// Everything queued, by tenant, and the batch's number (pass it to [`Notices::finished`]);
    /// the queue is empty after.
    pub fn drain(&self) -> (u64, Vec<(Tenant, Vec<UserId>)>) {
        let mut w = self.waiting();
        let batch = w.batch;
        w.batch += 1;
        let drivers = std::mem::take(&mut w.drivers).into_iter().map(|(t, d)| (t, d.into_iter().collect())).collect();
        (batch, drivers)
    }

    /// Batch `batch` was derived (or failed: its drivers were queued again); its callers go on.
    pub fn finished(&self, batch: u64) {
        self.done.send_replace(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_queued_twice_is_drained_once_per_tenant() {
        let n = Notices::default();
        let (a, b) = (Tenant("a".into()), Tenant("b".into()));
        let _ = n.push(&a, &UserId("d1".into()));
        let _ = n.push(&a, &UserId("d1".into()));
        let _ = n.push(&a, &UserId("d2".into()));
        let _ = n.push(&b, &UserId("d1".into()));
        let (_, mut drained) = n.drain();
        drained.sort_by(|x, y| x.0.0.cmp(&y.0.0));
        assert_eq!(drained.len(), 2);
        assert_eq!(drained[0].1.len(), 2);
        assert_eq!(drained[1].1, vec![UserId("d1".into())]);
        assert!(n.drain().1.is_empty(), "nothing left");
    }

    #[tokio::test]
    async fn a_caller_goes_on_once_its_batch_is_finished() {
        let n = std::sync::Arc::new(Notices::default());
        let q = n.push(&Tenant("a".into()), &UserId("d1".into()));
        let waiter = tokio::spawn({
            let n = n.clone();
            async move { n.derived(q).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let (batch, _) = n.drain();
        // Queued after the drain: the next batch.
        let later = n.push(&Tenant("a".into()), &UserId("d2".into()));
        assert_eq!(later.0, batch + 1);
        n.finished(batch);
        tokio::time::timeout(Duration::from_millis(500), waiter).await.expect("goes on").expect("task");
    }
}
