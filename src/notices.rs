//! [`Notices`]: the drivers of this node whose availability is to be derived again soon,
//! by tenant — filled by flows that must not wait for a derivation (a driver's first fresh
//! position after a silence, on the location path; `driver:connect`), drained in batches by
//! `flows::presence::notice_loop`. Thousands of drivers coming live within a second cost a
//! database read and a derivation per batch, not per driver, and their acks wait for
//! neither. A driver queued twice before a batch is derived once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::domain::{Tenant, UserId};

/// Drivers waiting for a derivation, per tenant.
#[derive(Default)]
pub struct Notices {
    waiting: Mutex<HashMap<Tenant, HashSet<UserId>>>,
    /// Woken when the first driver is queued after a drain.
    pub(crate) queued: Notify,
}

impl Notices {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Tenant, HashSet<UserId>>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `driver` of `tenant`.
    pub fn push(&self, tenant: &Tenant, driver: &UserId) {
        let first = {
            let mut w = self.waiting();
            let first = w.is_empty();
            w.entry(tenant.clone()).or_default().insert(driver.clone());
            first
        };
        if first {
            self.queued.notify_one();
        }
    }

    /// Everything queued, by tenant; the queue is empty after.
    pub fn drain(&self) -> Vec<(Tenant, Vec<UserId>)> {
        std::mem::take(&mut *self.waiting()).into_iter().map(|(t, d)| (t, d.into_iter().collect())).collect()
    }

    /// Drivers waiting, all tenants.
    pub fn len(&self) -> usize {
        self.waiting().values().map(HashSet::len).sum()
    }

    /// Nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.waiting().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_queued_twice_is_drained_once_per_tenant() {
        let n = Notices::default();
        let (a, b) = (Tenant("a".into()), Tenant("b".into()));
        n.push(&a, &UserId("d1".into()));
        n.push(&a, &UserId("d1".into()));
        n.push(&a, &UserId("d2".into()));
        n.push(&b, &UserId("d1".into()));
        assert_eq!(n.len(), 3);
        let mut drained = n.drain();
        drained.sort_by(|x, y| x.0.0.cmp(&y.0.0));
        assert_eq!(drained.len(), 2);
        assert_eq!(drained[0].1.len(), 2);
        assert_eq!(drained[1].1, vec![UserId("d1".into())]);
        assert!(n.is_empty());
    }
}
