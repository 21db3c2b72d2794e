//! Who may touch a trip (CONTRACT §2 "who" column, §6 order of checks and "existence does
//! not leak"). Trip membership comes from the database through a short-lived per-node
//! cache: location updates check "is this the driver's trip" many times a second, and the
//! answer only changes when a trip is (re)assigned.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Claims;
use crate::domain::{Role, Tenant, TripId};
use crate::error::{Error, Result};
use crate::store::{Db, TripMembership};

/// Upper bound of cached trips; past it the cache starts over (cheap, and a miss only
/// costs one indexed query).
const CACHE_MAX_ENTRIES: usize = 100_000;

/// Trip access checks with a membership cache. Shared by every handler of a node.
pub struct Access {
    db: Db,
    ttl: Duration,
    /// Only found trips are cached: a trip created a moment ago must be visible at once.
    /// The lock is never held across an `.await`.
    cache: Mutex<HashMap<(String, String), (Instant, TripMembership)>>,
}

impl Access {
    /// Checks against `db`, caching membership for `ttl`.
    pub fn new(db: Db, ttl: Duration) -> Self {
        Self { db, ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// The trip, or `NOT_FOUND` when it does not exist in the tenant.
    pub async fn trip(&self, tenant: &Tenant, trip: &TripId) -> Result<TripMembership> {
        let key = (tenant.0.clone(), trip.0.clone());
        if let Some((at, m)) = self.lock().get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(m.clone());
        }
        let m = self.db.trip_membership(tenant, trip).await?.ok_or(Error::NotFound)?;
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), m.clone()));
        Ok(m)
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
        let m = self.trip(&who.tenant, trip).await?;
        if m.driver.as_ref() != Some(&who.user) {
            return Err(Error::Forbidden);
        }
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
            Role::Driver => m.driver.as_ref() == Some(&who.user),
            Role::Conductor => who.grants(&format!("trip:{}", trip.0)),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), (Instant, TripMembership)>> {
        // A poisoned cache only means a panic elsewhere mid-insert; the data is still usable.
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
