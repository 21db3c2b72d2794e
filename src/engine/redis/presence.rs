//! The Redis engine's driver presence (CONTRACT §7): the derivation script
//! (`redis/presence.lua`, compare-and-set per driver), the stored values, batched position
//! reads, and "first one wins" marks.

use fred::prelude::*;

use super::{RedisEngine, unavailable};
use crate::domain::presence::Availability;
use crate::domain::{Location, Tenant, UserId};
use crate::engine::types::{Once, Presence, PresenceChange, PresenceInput, PresenceLimits};
use crate::error::{Error, Result};

/// Drivers derived per script call (bounds the script's run time).
const DERIVE_BATCH: usize = 200;

/// Splits a stored value (`AVAILABLE` or `BUSY`, then `\x1e` and the trip).
fn parse_stored(v: &str) -> Option<(Availability, Option<String>)> {
    let (a, trip) = match v.split_once('\u{1e}') {
        Some((a, t)) => (a, Some(t.to_string())),
        None => (v, None),
    };
    Some((Availability::parse(a)?, trip.filter(|t| !t.is_empty())))
}

impl RedisEngine {
    pub(in crate::engine) async fn derive_presence(
        &self,
        tenant: &Tenant,
        drivers: &[PresenceInput],
        limits: &PresenceLimits,
    ) -> Result<Vec<PresenceChange>> {
        let k = &self.keys;
        let mut changes = Vec::new();
        for chunk in drivers.chunks(DERIVE_BATCH) {
            let mut keys = vec![k.presence(tenant), k.geo_fresh(tenant), k.nodes(), k.presence_tenants()];
            let mut args = vec![
                limits.fresh_ms.to_string(),
                limits.node_silence_ms.to_string(),
                self.node_id.clone(),
                tenant.0.clone(),
            ];
            for input in chunk {
                let driver = UserId(input.driver.clone());
                keys.push(k.connections(tenant, &driver));
                keys.push(k.offer_slots(tenant, &driver));
                args.push(input.driver.clone());
                args.push(match &input.trip {
                    None => "\0".to_string(),
                    Some(None) => String::new(),
                    Some(Some(t)) => t.clone(),
                });
            }
            let started = std::time::Instant::now();
            let flat: Vec<String> =
                self.presence_script.evalsha_with_reload(&self.client, keys, args).await.map_err(unavailable)?;
            metrics::histogram!("fleetcast_redis_command_seconds", "command" => "presence").record(started.elapsed());
            for c in flat.chunks_exact(4) {
                let (Some(availability), Some(previous)) = (Availability::parse(&c[1]), Availability::parse(&c[2]))
                else {
                    tracing::error!(reply = ?c, "unexpected presence script reply");
                    return Err(Error::Internal);
                };
                changes.push(PresenceChange {
                    driver: c[0].clone(),
                    availability,
                    previous,
                    trip: (!c[3].is_empty()).then(|| c[3].clone()),
                });
            }
        }
        Ok(changes)
    }

    pub(in crate::engine) async fn present_drivers(&self, tenant: &Tenant) -> Result<Vec<Presence>> {
        let all: std::collections::HashMap<String, String> =
            self.client.hgetall(self.keys.presence(tenant)).await.map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(driver, v)| {
                let (availability, trip) = parse_stored(&v)?;
                Some(Presence { driver, availability, trip })
            })
            .collect())
    }

    pub(in crate::engine) async fn presence_of(
        &self,
        tenant: &Tenant,
        drivers: &[String],
    ) -> Result<Vec<Option<Presence>>> {
        let mut out = Vec::with_capacity(drivers.len());
        for chunk in drivers.chunks(1_000) {
            let values: Vec<Option<String>> = if chunk.len() == 1 {
                vec![self.client.hget(self.keys.presence(tenant), chunk[0].as_str()).await.map_err(unavailable)?]
            } else {
                self.client.hmget(self.keys.presence(tenant), chunk.to_vec()).await.map_err(unavailable)?
            };
            out.extend(chunk.iter().zip(values).map(|(driver, v)| {
                let (availability, trip) = parse_stored(v.as_deref()?)?;
                Some(Presence { driver: driver.clone(), availability, trip })
            }));
        }
        Ok(out)
    }

    pub(in crate::engine) async fn freshness(
        &self,
        tenant: &Tenant,
        drivers: &[String],
        fresh_ms: u64,
    ) -> Result<Vec<bool>> {
        // Scores are Redis's clock; nodes of one cluster agree with it within far less than
        // a location TTL.
        let bound = crate::domain::now_ms().saturating_sub(fresh_ms) as f64;
        let mut out = Vec::with_capacity(drivers.len());
        for chunk in drivers.chunks(1_000) {
            let scores: Vec<Option<f64>> = if chunk.len() == 1 {
                vec![self.client.zscore(self.keys.geo_fresh(tenant), chunk[0].as_str()).await.map_err(unavailable)?]
            } else {
                self.client.zmscore(self.keys.geo_fresh(tenant), chunk.to_vec()).await.map_err(unavailable)?
            };
            out.extend(scores.into_iter().map(|s| s.is_some_and(|s| s >= bound)));
        }
        Ok(out)
    }

    pub(in crate::engine) async fn node_beats(&self) -> Result<Vec<(String, u64)>> {
        let beats: Vec<(String, f64)> =
            self.client.zrange(self.keys.nodes(), 0, -1, None, false, None, true).await.map_err(unavailable)?;
        Ok(beats.into_iter().map(|(n, ms)| (n, ms as u64)).collect())
    }

    pub(in crate::engine) async fn presence_tenants(&self) -> Result<Vec<Tenant>> {
        let names: Vec<String> = self.client.smembers(self.keys.presence_tenants()).await.map_err(unavailable)?;
        Ok(names.into_iter().map(Tenant).collect())
    }

    pub(in crate::engine) async fn driver_locations(
        &self,
        tenant: &Tenant,
        drivers: &[UserId],
    ) -> Result<Vec<Option<Location>>> {
        let mut out = Vec::with_capacity(drivers.len());
        for chunk in drivers.chunks(1_000) {
            let keys: Vec<String> = chunk.iter().map(|d| self.keys.driver_location(tenant, d)).collect();
            let values: Vec<Option<String>> = if keys.len() == 1 {
                vec![self.client.get(keys[0].clone()).await.map_err(unavailable)?]
            } else {
                self.client.mget(keys).await.map_err(unavailable)?
            };
            out.extend(values.into_iter().map(|v| v.and_then(|json| serde_json::from_str(&json).ok())));
        }
        Ok(out)
    }

    pub(in crate::engine) async fn once(&self, mark: Once<'_>, ttl_ms: u64) -> Result<bool> {
        let key = match mark {
            Once::PresenceSweep(tick) => self.keys.once_sweep(tick),
            Once::Arrival(tenant, trip, target) => self.keys.once_arrival(tenant, trip, target),
        };
        let set: Option<String> = self
            .client
            .set(key, "1", Some(Expiration::PX(ttl_ms as i64)), Some(SetOptions::NX), false)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_parse_with_and_without_a_trip() {
        assert_eq!(parse_stored("AVAILABLE"), Some((Availability::Available, None)));
        assert_eq!(parse_stored("BUSY\u{1e}t1"), Some((Availability::Busy, Some("t1".into()))));
        assert_eq!(parse_stored("SLEEPING"), None);
    }
}
