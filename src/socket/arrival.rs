//! The arrival order of one socket's events. socketioxide runs each event as a task of its
//! own, so two location updates a driver sent back to back could be applied, and published,
//! in either order — a passenger's map would show an older position after a newer one. An
//! [`Arrival`] ticket is taken when the event is read off the socket (by an extractor, in
//! `session`: extractors run in order, before the event's task is spawned) and given back
//! when the event is done with it; a location update waits until every earlier event of its
//! socket gave its ticket back ([`Arrival::wait_turn`]), so a socket's positions are applied
//! in the order it sent them.
//! Other events give their ticket back as they start; a ticket is given back however its
//! event ends (also a handler cancelled at the ack deadline).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// One socket's tickets: handed out in arrival order, given back in any order.
#[derive(Default)]
pub struct Arrivals {
    next: AtomicU64,
    given_back: Mutex<GivenBack>,
    turn: Notify,
}

/// Every ticket below `below` is given back; `ahead` holds those given back above it.
#[derive(Default)]
struct GivenBack {
    below: u64,
    ahead: BTreeSet<u64>,
}

impl Arrivals {
    fn take(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn give_back(&self, ticket: u64) {
        let mut g = self.given_back.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.ahead.insert(ticket);
        let before = g.below;
        while g.ahead.first() == Some(&g.below) {
            g.ahead.pop_first();
            g.below += 1;
        }
        if g.below != before {
            self.turn.notify_waiters();
        }
    }

    fn is_turn_of(&self, ticket: u64) -> bool {
        self.given_back.lock().unwrap_or_else(std::sync::PoisonError::into_inner).below >= ticket
    }
}

/// An event's ticket (taken by the extractor in `session`); given back when dropped.
pub struct Arrival {
    arrivals: Option<Arc<Arrivals>>,
    ticket: u64,
}

impl Arrival {
    /// The next ticket of `arrivals` (none: no order to keep).
    pub fn take(arrivals: Option<Arc<Arrivals>>) -> Self {
        let ticket = arrivals.as_ref().map_or(0, |a| a.take());
        Self { arrivals, ticket }
    }

    /// Waits until every event of this socket that arrived before this one gave its ticket
    /// back.
    pub async fn wait_turn(&self) {
        let Some(arrivals) = &self.arrivals else { return };
        loop {
            let notified = arrivals.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if arrivals.is_turn_of(self.ticket) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        if let Some(arrivals) = &self.arrivals {
            arrivals.give_back(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_has_its_turn_once_every_earlier_one_is_given_back() {
        let a = Arrivals::default();
        let (t0, t1, t2) = (a.take(), a.take(), a.take());
        assert!(a.is_turn_of(t0) && !a.is_turn_of(t1) && !a.is_turn_of(t2));
        a.give_back(t1);
        assert!(!a.is_turn_of(t2), "t0 is still out");
        a.give_back(t0);
        assert!(a.is_turn_of(t2));
        a.give_back(t2);
        assert!(a.is_turn_of(a.take()));
    }
}
