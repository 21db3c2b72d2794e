//! Who may touch a trip (CONTRACT §2 "who" column, §6 order of checks and "existence does
//! not leak"). Trip membership comes from the database through a short-lived per-node
//! cache: location updates check "is this the driver's trip" many times a second, and the
//! answer only changes when a trip is (re)assigned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::auth::Claims;
use crate::domain::{Role, Tenant, TripId};
use crate::error::{Error, Result};
use crate::store::{Db, TripMembership};
use tokio::sync::oneshot;

/// Upper bound of cached trips; past it the cache starts over (cheap, and a miss only
/// costs one indexed query).
const CACHE_MAX_ENTRIES: usize = 100_000;

/// A cached trip: when it was read, the value, whether a refresh is under way, and whether
/// the last read of it failed (the database unreachable).
struct Entry {
    read_at: Instant,
    trip: TripMembership,
    refreshing: bool,
    failing: bool,
    /// When a caller last asked for it (or it was first read): entries asked for within
    /// [`KEEP_FRESH_FOR`] are re-read in the background before they go stale.
    used_at: Instant,
}

/// Callers waiting for a trip that had no usable entry, and whether a reader runs.
#[derive(Default)]
struct Misses {
    waiting: HashMap<Key, Vec<oneshot::Sender<Result<Option<TripMembership>>>>>,
    reading: bool,
}

/// Trip access checks with a membership cache. Shared by every handler of a node.
///
/// A trip without a usable entry is read through one reader per node: the callers that
/// miss while a read is under way are answered together by the next one, a batched query
/// (a fleet starting to stream at once — thousands of first updates whose entries are
/// absent or long expired — must not take one query and one pooled connection each:
/// measured, the first second of a 3,000-driver run had p50 122 ms, BENCHMARKS.md).
///
/// Past its TTL an entry is served stale while one background read refreshes it (up to
/// `STALE_FACTOR` × TTL): thousands of drivers whose entries expire together must not all
/// wait on the database at once (measured: at 5,000 updates/s over 3,000 trips the
/// synchronous re-reads every 5 s exhausted the pool and turned a third of the acks into
/// `UNAVAILABLE`).
///
/// While the database cannot be read, an entry is served for up to `stale_if_error`
/// (`--membership-stale-if-error-ms`) after it was read: drivers on their trips keep
/// streaming through a database outage (membership only changes by writes to that same
/// database), with one background read at a time retrying it. A trip never read before the
/// outage is `UNAVAILABLE`.
pub struct Access {
    db: Db,
    ttl: Duration,
    stale_if_error: Duration,
    /// Only found trips are cached: a trip created a moment ago must be visible at once.
    /// The lock is never held across an `.await`.
    cache: Arc<Mutex<HashMap<Key, Entry>>>,
    /// Entries waiting for the background refresh; a refresher is scheduled while it is
    /// not empty.
    pending: Arc<Mutex<Vec<Key>>>,
    /// Callers waiting for a read-through (`read_through`).
    misses: Arc<Mutex<Misses>>,
}

/// How long past its TTL an entry may still be served while it is refreshed.
const STALE_FACTOR: u32 = 4;

/// How long after its last use an entry is kept fresh in the background (`keep_fresh`):
/// a driver that connected (which read its trip) and starts streaming minutes later finds
/// its entry usable, instead of every first update of a fleet waiting on the database
/// (measured: a fleet streaming 30 s after connecting, 2,000/s, p99 407 ms against 47 ms with
/// entries kept; BENCHMARKS.md).
const KEEP_FRESH_FOR: Duration = Duration::from_secs(600);

/// How long a background refresh waits to gather other expiring entries into its query.
const REFRESH_GATHER: Duration = Duration::from_millis(20);

/// Most trips read by one refresh query.
const REFRESH_BATCH: usize = 500;

/// Cache key: tenant and trip id.
type Key = (String, String);

impl Access {
    /// Checks against `db`, caching membership for `ttl`, and up to `stale_if_error` while
    /// the database cannot be read.
    pub fn new(db: Db, ttl: Duration, stale_if_error: Duration) -> Self {
        Self { db, ttl, stale_if_error, cache: Arc::default(), pending: Arc::default(), misses: Arc::default() }
    }

    /// The trip, or `NOT_FOUND` when it does not exist in the tenant.
    pub async fn trip(&self, tenant: &Tenant, trip: &TripId) -> Result<TripMembership> {
        let key = (tenant.0.clone(), trip.0.clone());
        {
            let mut cache = self.lock();
            if let Some(e) = cache.get_mut(&key) {
                e.used_at = Instant::now();
                let age = e.read_at.elapsed();
                if age < self.ttl {
                    return Ok(e.trip.clone());
                }
                if age < self.ttl * STALE_FACTOR || (e.failing && age < self.stale_if_error) {
                    if !e.refreshing {
                        e.refreshing = true;
                        self.refresh(key.clone());
                    }
                    return Ok(e.trip.clone());
                }
            }
        }
        match self.read_through(key.clone()).await {
            Ok(m) => m.ok_or(Error::NotFound),
            Err(Error::Unavailable) => self.stale_on_error(&key).ok_or(Error::Unavailable),
            Err(e) => Err(e),
        }
    }

    /// Reads a trip that has no usable entry, with every other caller that misses
    /// meanwhile: the first miss starts the node's reader; callers arriving while it
    /// queries wait for its next batch. The reader stores what it found.
    async fn read_through(&self, key: Key) -> Result<Option<TripMembership>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut m = lock(&self.misses);
            m.waiting.entry(key).or_default().push(tx);
            !std::mem::replace(&mut m.reading, true)
        };
        if start {
            let (db, cache, misses) = (self.db.clone(), self.cache.clone(), self.misses.clone());
            tokio::spawn(read_misses(db, cache, misses));
        }
        // A reader that went away (the runtime shutting down) dropped the sender.
        rx.await.unwrap_or(Err(Error::Unavailable))
    }

    /// The cached entry of a trip whose read just failed, if it is young enough to be
    /// served through the outage; marks it failing so the next calls do not wait on the
    /// database again.
    fn stale_on_error(&self, key: &Key) -> Option<TripMembership> {
        let mut cache = self.lock();
        let e = cache.get_mut(key)?;
        if e.read_at.elapsed() >= self.stale_if_error {
            return None;
        }
        if !e.failing {
            e.failing = true;
            metrics::counter!("fleetcast_membership_served_stale_total").increment(1);
        }
        Some(e.trip.clone())
    }

    fn store(&self, key: (String, String), trip: TripMembership) {
        store(&self.cache, key, trip);
    }

    /// Re-reads a trip in the background (owner: the runtime). Entries expiring together
    /// (thousands after a burst of connections) are gathered for a moment and read in a few
    /// batched queries, not one query each (measured: one query per entry made a
    /// few-hundred-millisecond stall every TTL at 5,000 updates/s; BENCHMARKS.md). A trip
    /// that is gone is dropped from the cache; a failed read keeps the stale entry until it
    /// is too old.
    fn refresh(&self, key: Key) {
        {
            let mut pending = lock(&self.pending);
            pending.push(key);
            if pending.len() > 1 {
                return; // the scheduled refresher takes it
            }
        }
        let (db, cache, pending) = (self.db.clone(), self.cache.clone(), self.pending.clone());
        tokio::spawn(async move {
            tokio::time::sleep(REFRESH_GATHER).await;
            let keys = std::mem::take(&mut *lock(&pending));
            for (tenant, trips) in by_tenant(keys.into_iter().map(|k| (k, ()))) {
                let trips: Vec<String> = trips.into_iter().map(|(t, ())| t).collect();
                for chunk in trips.chunks(REFRESH_BATCH) {
                    if read_and_store(&db, &cache, &tenant, chunk).await.is_err() {
                        let mut c = lock(&cache);
                        for trip in chunk {
                            if let Some(e) = c.get_mut(&(tenant.clone(), trip.clone())) {
                                e.refreshing = false;
                                e.failing = true;
                            }
                        }
                    }
                }
            }
        });
    }

    /// Keeps the entries in use fresh until `cancel` (owner: the node): every TTL, the
    /// entries read at least a TTL ago and asked for within [`KEEP_FRESH_FOR`] are re-read
    /// in the background, batched as the refresh of expiring entries is; entries no caller
    /// asked for since then are left to go stale.
    pub async fn keep_fresh(&self, cancel: tokio_util::sync::CancellationToken) {
        if self.ttl.is_zero() {
            return; // nothing is cached
        }
        let mut tick = tokio::time::interval(self.ttl);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let due: Vec<Key> = {
                let mut cache = self.lock();
                cache
                    .iter_mut()
                    .filter(|(_, e)| {
                        !e.refreshing && e.read_at.elapsed() >= self.ttl && e.used_at.elapsed() < KEEP_FRESH_FOR
                    })
                    .map(|(k, e)| {
                        e.refreshing = true;
                        k.clone()
                    })
                    .collect()
            };
            for key in due {
                self.refresh(key);
            }
        }
    }

    /// Forgets a cached trip (after a change of driver or status on this node).
    pub fn invalidate(&self, tenant: &Tenant, trip: &TripId) {
        self.lock().remove(&(tenant.0.clone(), trip.0.clone()));
    }

    /// The caller is a DRIVER and the trip's assigned driver.
    pub async fn require_driver_of(&self, who: &Claims, trip: &TripId) -> Result<TripMembership> {
        if who.role != Role::Driver {
            return Err(Error::Forbidden);
        }
        let mut m = self.trip(&who.tenant, trip).await?;
        if m.driver.as_ref() != Some(&who.user) {
            // The cache may predate the driver's acceptance on another node: a denial is
            // confirmed against the database (rare, so it costs nothing on the hot path).
            m = self.fresh(&who.tenant, trip).await?;
            if m.driver.as_ref() != Some(&who.user) {
                return Err(Error::Forbidden);
            }
        }
        Ok(m)
    }

    /// Reads the trip from the database, refreshing the cache.
    async fn fresh(&self, tenant: &Tenant, trip: &TripId) -> Result<TripMembership> {
        let m = self.db.trip_membership(tenant, trip).await?.ok_or(Error::NotFound)?;
        self.store((tenant.0.clone(), trip.0.clone()), m.clone());
        Ok(m)
    }

    /// The caller may watch the trip live (`passenger:subscribe` rules): a passenger with a
    /// booking, a conductor with a `trip:{id}` grant, an admin or business user of the
    /// tenant, or the trip's own driver.
    pub async fn require_watch(&self, who: &Claims, trip: &TripId) -> Result<()> {
        if who.role == Role::Service {
            return Err(Error::Forbidden);
        }
        let m = self.trip(&who.tenant, trip).await?;
        let allowed = match who.role {
            Role::Admin | Role::Business => true,
            Role::Driver => {
                m.driver.as_ref() == Some(&who.user)
                    || self.fresh(&who.tenant, trip).await?.driver.as_ref() == Some(&who.user)
            }
            Role::Conductor => who.grants(&crate::domain::rooms::trip_grant(&trip.0)),
            Role::Passenger => self.db.has_active_booking(&who.tenant, trip, &who.user).await?,
            Role::Service => false,
        };
        if allowed { Ok(()) } else { Err(Error::Forbidden) }
    }

    /// The caller took part in the trip (driver, organizer, a passenger with a booking) or
    /// is an ADMIN/BUSINESS user of the tenant: who may read its history.
    pub async fn require_participant(&self, who: &Claims, trip: &TripId) -> Result<()> {
        let m = self.trip(&who.tenant, trip).await?;
        let allowed = match who.role {
            Role::Admin | Role::Business => true,
            _ if m.organizer == who.user => true,
            Role::Driver => m.driver.as_ref() == Some(&who.user),
            Role::Passenger => self.db.has_active_booking(&who.tenant, trip, &who.user).await?,
            Role::Conductor | Role::Service => false,
        };
        if allowed { Ok(()) } else { Err(Error::Forbidden) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        lock(&self.cache)
    }
}

/// The node's read-through reader (owner: the runtime; one at a time, started by the first
/// miss): takes every waiting caller, reads their trips in batched queries (by tenant, up to
/// `REFRESH_BATCH` each, concurrently), stores and answers them, and goes on until no caller
/// waits.
async fn read_misses(db: Db, cache: Arc<Mutex<HashMap<Key, Entry>>>, misses: Arc<Mutex<Misses>>) {
    // Should this task end early (a panic, the runtime shutting down), the next miss starts
    // a new reader; the callers it held get `UNAVAILABLE` from their dropped senders.
    struct Done(Arc<Mutex<Misses>>, bool);
    impl Drop for Done {
        fn drop(&mut self) {
            if self.1 {
                lock(&self.0).reading = false;
            }
        }
    }
    let mut done = Done(misses.clone(), true);
    type Waiters = Vec<oneshot::Sender<Result<Option<TripMembership>>>>;
    loop {
        let batch = {
            let mut m = lock(&misses);
            if m.waiting.is_empty() {
                m.reading = false;
                done.1 = false;
                return;
            }
            std::mem::take(&mut m.waiting)
        };
        let mut reads = Vec::new();
        for (tenant, mut trips) in by_tenant(batch) {
            while !trips.is_empty() {
                let chunk: Vec<(String, Waiters)> = trips.drain(..trips.len().min(REFRESH_BATCH)).collect();
                let (db, cache, tenant) = (&db, &cache, tenant.clone());
                reads.push(async move {
                    let (ids, waiters): (Vec<String>, Vec<Waiters>) = chunk.into_iter().unzip();
                    match read_and_store(db, cache, &tenant, &ids).await {
                        Ok(found) => {
                            for (m, waiters) in found.into_iter().zip(waiters) {
                                for w in waiters {
                                    let _ = w.send(Ok(m.clone()));
                                }
                            }
                        }
                        Err(e) => {
                            for w in waiters.into_iter().flatten() {
                                let _ = w.send(Err(e.clone()));
                            }
                        }
                    }
                });
            }
        }
        futures_util::future::join_all(reads).await;
    }
}

/// Items keyed by (tenant, trip), grouped by tenant.
fn by_tenant<T>(items: impl IntoIterator<Item = (Key, T)>) -> HashMap<String, Vec<(String, T)>> {
    let mut grouped: HashMap<String, Vec<(String, T)>> = HashMap::new();
    for ((tenant, trip), item) in items {
        grouped.entry(tenant).or_default().push((trip, item));
    }
    grouped
}

/// Reads `trips` of `tenant` in one query and stores the answer: a found trip is cached
/// afresh, a missing one dropped from the cache. Each trip's membership, in order.
async fn read_and_store(
    db: &Db,
    cache: &Mutex<HashMap<Key, Entry>>,
    tenant: &str,
    trips: &[String],
) -> Result<Vec<Option<TripMembership>>> {
    let mut found: HashMap<String, TripMembership> =
        db.trip_memberships(&Tenant(tenant.to_string()), trips).await?.into_iter().collect();
    let mut c = lock(cache);
    Ok(trips
        .iter()
        .map(|trip| {
            let m = found.remove(trip);
            let key = (tenant.to_string(), trip.clone());
            match &m {
                Some(m) => insert(&mut c, key, m.clone()),
                None => {
                    c.remove(&key);
                }
            }
            m
        })
        .collect())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere mid-insert; the data is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn store(cache: &Mutex<HashMap<Key, Entry>>, key: Key, trip: TripMembership) {
    insert(&mut lock(cache), key, trip);
}

fn insert(c: &mut HashMap<Key, Entry>, key: Key, trip: TripMembership) {
    if c.len() >= CACHE_MAX_ENTRIES {
        c.clear();
    }
    // A re-read keeps the entry's last use; a first read counts as one.
    let now = Instant::now();
    let used_at = c.get(&key).map_or(now, |e| e.used_at);
    c.insert(key, Entry { read_at: now, trip, refreshing: false, failing: false, used_at });
}
