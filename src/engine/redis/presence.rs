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

/// The changes in a `presence.lua` reply: `driver, availability, previous, trip` each.
fn parse_changes(flat: &[String]) -> Result<Vec<PresenceChange>> {
    flat.chunks_exact(4)
        .map(|c| {
            let (Some(availability), Some(previous)) = (Availability::parse(&c[1]), Availability::parse(&c[2])) else {
                tracing::error!(reply = ?c, "unexpected presence script reply");
                return Err(Error::Internal);
            };
            Ok(PresenceChange {
                driver: c[0].clone(),
                availability,
                previous,
                trip: (!c[3].is_empty()).then(|| c[3].clone()),
            })
        })
        .collect()
}

impl RedisEngine {
    pub(in crate::engine) async fn derive_presence(
        &self,
        tenant: &Tenant,
        drivers: &[PresenceInput],
        limits: &PresenceLimits,
    ) -> Result<Vec<PresenceChange>> {
        if self.cluster {
            return self.derive_presence_sharded(tenant, drivers, limits).await;
        }
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
            changes.extend(parse_changes(&flat)?);
        }
        Ok(changes)
    }

    /// [`Self::derive_presence`] on a Redis Cluster: each driver's inputs are read on its
    /// own slot (its connection and offer slots, whether its latest position is still
    /// stored — it lives the location TTL, the freshness bound), then `presence.lua` compares
    /// and sets on the tenant's slot with them ("given"), and the node keeps the tenants SET.
    /// Two derivations of one driver at once may each report a change (never the same one
    /// twice); the next derivation settles it.
    async fn derive_presence_sharded(
        &self,
        tenant: &Tenant,
        drivers: &[PresenceInput],
        limits: &PresenceLimits,
    ) -> Result<Vec<PresenceChange>> {
        use futures_util::StreamExt;
        let k = &self.keys;
        let now = crate::domain::now_ms();
        let beats = self.node_beats().await?;
        let alive = |node: &str| {
            node == self.node_id || beats.iter().any(|(n, beat)| n == node && beat + limits.node_silence_ms >= now)
        };
        let mut reads = Vec::with_capacity(drivers.len());
        for input in drivers {
            let driver = UserId(input.driver.clone());
            let (conns, offers, loc) =
                (k.connections(tenant, &driver), k.offer_slots(tenant, &driver), k.driver_location(tenant, &driver));
            let pipe = self.client.pipeline();
            reads.push(async move {
                let _: () = pipe.hvals(conns).await?;
                let _: () = pipe.hvals(offers).await?;
                let _: () = pipe.exists(loc).await?;
                let (conns, offers, fresh): (Vec<String>, Vec<String>, i64) = pipe.all().await?;
                Ok::<_, fred::error::Error>((conns, offers, fresh == 1))
            });
        }
        let inputs: Vec<std::result::Result<_, _>> = futures_util::stream::iter(reads).buffered(64).collect().await;
        let mut changes = Vec::new();
        let mut all = drivers.iter().zip(inputs);
        loop {
            let chunk: Vec<_> = all.by_ref().take(DERIVE_BATCH).collect();
            if chunk.is_empty() {
                break;
            }
            let mut args =
                vec!["given".to_string(), limits.node_silence_ms.to_string(), self.node_id.clone(), tenant.0.clone()];
            for (input, read) in chunk {
                let (conns, offers, fresh) = read.map_err(unavailable)?;
                let flag = |b: bool| if b { '1' } else { '0' };
                args.push(input.driver.clone());
                args.push(match &input.trip {
                    None => "\0".to_string(),
                    Some(None) => String::new(),
                    Some(Some(t)) => t.clone(),
                });
                args.push(
                    [flag(fresh), flag(conns.iter().any(|n| alive(n))), flag(offers.iter().any(|n| alive(n)))]
                        .iter()
                        .collect(),
                );
            }
            let started = std::time::Instant::now();
            let flat: Vec<String> = self
                .presence_script
                .evalsha_with_reload(&self.client, vec![k.presence(tenant)], args)
                .await
                .map_err(unavailable)?;
            metrics::histogram!("fleetcast_redis_command_seconds", "command" => "presence").record(started.elapsed());
            let (state, rest) = flat.split_first().map(|(s, r)| (s.as_str(), r)).unwrap_or(("", &[]));
            let tenants = k.presence_tenants();
            if state == "exists" {
                let _: i64 = self.client.sadd(&tenants, tenant.0.as_str()).await.map_err(unavailable)?;
                let _: i64 = self.client.pexpire(&tenants, 86_400_000, None).await.map_err(unavailable)?;
            } else {
                let _: i64 = self.client.srem(&tenants, tenant.0.as_str()).await.map_err(unavailable)?;
            }
            changes.extend(parse_changes(rest)?);
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
        if self.cluster {
            // A driver's latest position lives the location TTL, the freshness bound of
            // every caller (`flows::presence`): stored means fresh.
            use futures_util::StreamExt;
            let mut reads = Vec::with_capacity(drivers.len());
            for d in drivers {
                reads.push(self.client.exists::<i64, _>(self.keys.driver_location(tenant, &UserId(d.clone()))));
            }
            let found: Vec<std::result::Result<i64, _>> =
                futures_util::stream::iter(reads).buffered(64).collect().await;
            let _ = fresh_ms;
            return found.into_iter().map(|r| r.map(|n| n == 1).map_err(unavailable)).collect();
        }
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
        let keys: Vec<String> = drivers.iter().map(|d| self.keys.driver_location(tenant, d)).collect();
        let values = self.get_many(keys).await?;
        Ok(values.into_iter().map(|v| v.and_then(|json| serde_json::from_str(&json).ok())).collect())
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
