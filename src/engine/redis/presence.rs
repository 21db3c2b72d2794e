//! The Redis engine's driver presence (CONTRACT §7): the derivation script
//! (`redis/presence.lua`, compare-and-set per driver), the stored values, batched position
//! reads, and "first one wins" marks.
//!
//! On one Redis a tenant's presence is one HASH, and the script keeps the set of tenants to
//! sweep exact. On a Redis Cluster it is [`PRESENCE_BUCKETS`] HASHes on as many slots (a
//! driver's bucket by [`presence_bucket_of`]), so that a thousand drivers coming live at
//! once are compared and set on every shard rather than queued on the tenant's; the tenants
//! to sweep are those a node saw with a non-empty bucket (marked at most every
//! [`SEEN_EVERY`] per node and tenant, the sweep's own reads included), until a sweep reads
//! all their buckets empty with no mark since.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use futures_util::StreamExt;

use super::{RedisEngine, unavailable};
use crate::domain::presence::Availability;
use crate::domain::{Location, Tenant, UserId};
use crate::engine::keys::{PRESENCE_BUCKETS, presence_bucket_of};
use crate::engine::types::{Once, Presence, PresenceChange, PresenceInput, PresenceLimits};
use crate::error::{Error, Result};

/// Drivers derived per script call (bounds the script's run time).
const DERIVE_BATCH: usize = 200;

/// A node marks a tenant's presence as seen (Redis Cluster) at most this often.
const SEEN_EVERY: Duration = Duration::from_secs(10);

/// Entries of the seen tenants older than this are dropped (a tenant is swept while it has
/// an entry: until a sweep reads all its buckets empty with no mark since, or a day).
const SEEN_KEEP_MS: u64 = 86_400_000;

/// Clock difference between nodes tolerated when a tenant is forgotten.
const FORGET_MARGIN_MS: u64 = 5_000;

/// `ZREM` of ARGV[1] from KEYS[1] only while its score is below ARGV[2].
const FORGET_SCRIPT: &str = "local s = redis.call('ZSCORE', KEYS[1], ARGV[1]) \
    if s and tonumber(s) < tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end return 0";

/// The registry's beats are read at most this often for derivations and claims (a view a
/// second old only makes live nodes' beats look a second older: well within any silence
/// limit, and a dead node's beat does not change).
const BEATS_FOR: Duration = Duration::from_secs(1);

/// Concurrent reads of a tenant's buckets (or of batches of drivers).
const BUCKET_READS: usize = 16;

/// Drivers whose presence inputs one pipeline reads.
const READ_BATCH: usize = 100;

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

/// Runs pipelined batch reads (in order, [`BUCKET_READS`] at a time) and joins their
/// results, one per driver: `expected` of them, or an error.
async fn gather<T, F>(reads: Vec<F>, expected: usize, what: &'static str) -> Result<Vec<T>>
where
    F: std::future::Future<Output = std::result::Result<Vec<T>, fred::error::Error>>,
{
    let parts: Vec<std::result::Result<Vec<T>, _>> =
        futures_util::stream::iter(reads).buffered(BUCKET_READS).collect().await;
    let mut out = Vec::with_capacity(expected);
    for part in parts {
        out.extend(part.map_err(unavailable)?);
    }
    if out.len() != expected {
        tracing::error!(read = out.len(), expected, what, "batched reads short");
        return Err(Error::Internal);
    }
    Ok(out)
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
    /// and sets on each driver's presence bucket with them ("given"), the buckets
    /// concurrently. Two derivations of one driver at once may each report a change (never
    /// the same one twice); the next derivation settles it.
    async fn derive_presence_sharded(
        &self,
        tenant: &Tenant,
        drivers: &[PresenceInput],
        limits: &PresenceLimits,
    ) -> Result<Vec<PresenceChange>> {
        let k = &self.keys;
        let now = crate::domain::now_ms();
        let beats = self.beats_view(false).await?;
        let alive = |node: &str| {
            node == self.node_id || beats.iter().any(|(n, beat)| n == node && beat + limits.node_silence_ms >= now)
        };
        // One pipeline per batch of drivers (fred routes each command to its slot's shard).
        let mut reads = Vec::new();
        for chunk in drivers.chunks(READ_BATCH) {
            let pipe = self.client.pipeline();
            let keys: Vec<(String, String, String)> = chunk
                .iter()
                .map(|input| {
                    let driver = UserId(input.driver.clone());
                    (k.connections(tenant, &driver), k.offer_slots(tenant, &driver), k.driver_location(tenant, &driver))
                })
                .collect();
            reads.push(async move {
                for (conns, offers, loc) in keys {
                    let _: () = pipe.hvals(conns).await?;
                    let _: () = pipe.hvals(offers).await?;
                    let _: () = pipe.exists(loc).await?;
                }
                let values: Vec<Value> = pipe.all().await?;
                values
                    .chunks_exact(3)
                    .map(|v| {
                        let conns: Vec<String> = v[0].clone().convert()?;
                        let offers: Vec<String> = v[1].clone().convert()?;
                        Ok((conns, offers, v[2].as_i64() == Some(1)))
                    })
                    .collect::<std::result::Result<Vec<_>, fred::error::Error>>()
            });
        }
        let inputs = gather(reads, drivers.len(), "presence inputs").await?;
        // Each driver's arguments (driver, trip, flags), by bucket.
        let mut buckets: HashMap<u16, Vec<[String; 3]>> = HashMap::new();
        for (input, (conns, offers, fresh)) in drivers.iter().zip(inputs) {
            let flag = |b: bool| if b { '1' } else { '0' };
            let trip = match &input.trip {
                None => "\0".to_string(),
                Some(None) => String::new(),
                Some(Some(t)) => t.clone(),
            };
            let flags = [flag(fresh), flag(conns.iter().any(|n| alive(n))), flag(offers.iter().any(|n| alive(n)))]
                .iter()
                .collect();
            buckets.entry(presence_bucket_of(&input.driver)).or_default().push([input.driver.clone(), trip, flags]);
        }
        let mut calls = Vec::new();
        for (bucket, args) in &buckets {
            for chunk in args.chunks(DERIVE_BATCH) {
                let mut argv = vec![
                    "given".to_string(),
                    limits.node_silence_ms.to_string(),
                    self.node_id.clone(),
                    tenant.0.clone(),
                ];
                argv.extend(chunk.iter().flatten().cloned());
                let key = k.presence_bucket(tenant, *bucket);
                calls.push(async move {
                    let started = Instant::now();
                    let flat: Vec<String> =
                        self.presence_script.evalsha_with_reload(&self.client, vec![key], argv).await?;
                    metrics::histogram!("fleetcast_redis_command_seconds", "command" => "presence")
                        .record(started.elapsed());
                    Ok::<_, fred::error::Error>(flat)
                });
            }
        }
        let replies: Vec<std::result::Result<Vec<String>, _>> =
            futures_util::stream::iter(calls).buffer_unordered(BUCKET_READS).collect().await;
        // The buckets that answered have stored their changes: those are returned (to be
        // announced) even when another bucket failed; only when none answered is it an error.
        let mut changes = Vec::new();
        let mut seen = false;
        let (mut answered, mut failed) = (0, None);
        for reply in replies {
            match reply {
                Ok(flat) => {
                    answered += 1;
                    let (state, rest) = flat.split_first().map(|(s, r)| (s.as_str(), r)).unwrap_or(("", &[]));
                    seen |= state == "exists";
                    changes.extend(parse_changes(rest)?);
                }
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            let e = unavailable(e);
            if answered == 0 {
                return Err(e);
            }
        }
        if seen {
            self.mark_presence_seen(tenant).await;
        }
        Ok(changes)
    }

    /// Marks a tenant's presence as seen non-empty (Redis Cluster), at most every
    /// [`SEEN_EVERY`] from this node. Best effort: a failed mark is tried again by the next
    /// call, and a tenant stays swept for a day after its last mark.
    async fn mark_presence_seen(&self, tenant: &Tenant) {
        {
            let mut seen = self.presence_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.get(&tenant.0).is_some_and(|at| at.elapsed() < SEEN_EVERY) {
                return;
            }
            seen.insert(tenant.0.clone(), Instant::now());
        }
        let key = self.keys.presence_tenants_seen();
        let pipe = self.client.pipeline();
        let now = crate::domain::now_ms() as f64;
        let written: std::result::Result<(i64, i64), _> = async {
            let _: () = pipe.zadd(&key, None, None, false, false, (now, tenant.0.as_str())).await?;
            let _: () = pipe.pexpire(&key, SEEN_KEEP_MS as i64, None).await?;
            pipe.all().await
        }
        .await;
        if let Err(e) = written {
            // Not marked: the next call tries again.
            self.presence_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&tenant.0);
            let _ = unavailable(e);
        }
    }

    /// Drops a tenant whose buckets were all read empty at `read_at_ms` from the seen
    /// tenants, unless a node marked it since that could have filled a bucket after the
    /// read (a mark within [`SEEN_EVERY`] plus a clock margin). Best effort.
    async fn forget_presence_tenant(&self, tenant: &Tenant, read_at_ms: u64) {
        let bound = read_at_ms.saturating_sub(SEEN_EVERY.as_millis() as u64 + FORGET_MARGIN_MS);
        let r: std::result::Result<i64, _> = self
            .client
            .eval(FORGET_SCRIPT, vec![self.keys.presence_tenants_seen()], vec![tenant.0.clone(), bound.to_string()])
            .await;
        if let Err(e) = r {
            let _ = unavailable(e);
        }
    }

    /// The registry's beats, read at most every [`BEATS_FOR`] unless `fresh`.
    pub(super) async fn beats_view(&self, fresh: bool) -> Result<Arc<Vec<(String, u64)>>> {
        if !fresh
            && let Some((at, beats)) = self.beats.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
            && at.elapsed() < BEATS_FOR
        {
            return Ok(beats.clone());
        }
        let beats = Arc::new(self.node_beats().await?);
        *self.beats.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), beats.clone()));
        Ok(beats)
    }

    pub(in crate::engine) async fn present_drivers(&self, tenant: &Tenant) -> Result<Vec<Presence>> {
        let read_at = crate::domain::now_ms();
        let all: HashMap<String, String> = if self.cluster {
            let reads = (0..PRESENCE_BUCKETS)
                .map(|b| self.client.hgetall::<HashMap<String, String>, _>(self.keys.presence_bucket(tenant, b)));
            let parts: Vec<std::result::Result<HashMap<String, String>, _>> =
                futures_util::stream::iter(reads).buffer_unordered(BUCKET_READS).collect().await;
            let mut all = HashMap::new();
            for part in parts {
                all.extend(part.map_err(unavailable)?);
            }
            if all.is_empty() {
                self.forget_presence_tenant(tenant, read_at).await;
            } else {
                // Whoever reads a non-empty presence keeps the tenant swept.
                self.mark_presence_seen(tenant).await;
            }
            all
        } else {
            self.client.hgetall(self.keys.presence(tenant)).await.map_err(unavailable)?
        };
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
        // The drivers' places in `drivers`, by HASH (the tenant's, or the drivers' buckets).
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, d) in drivers.iter().enumerate() {
            let key = if self.cluster {
                self.keys.presence_bucket(tenant, presence_bucket_of(d))
            } else {
                self.keys.presence(tenant)
            };
            by_key.entry(key).or_default().push(i);
        }
        let mut reads = Vec::new();
        for (key, at) in &by_key {
            for chunk in at.chunks(1_000) {
                let fields: Vec<&str> = chunk.iter().map(|&i| drivers[i].as_str()).collect();
                reads.push(async move {
                    let values: Vec<Option<String>> = if fields.len() == 1 {
                        vec![self.client.hget(key.as_str(), fields[0]).await?]
                    } else {
                        self.client.hmget(key.as_str(), fields).await?
                    };
                    Ok::<_, fred::error::Error>((chunk, values))
                });
            }
        }
        let read: Vec<std::result::Result<_, _>> =
            futures_util::stream::iter(reads).buffer_unordered(BUCKET_READS).collect().await;
        let mut out = vec![None; drivers.len()];
        for part in read {
            let (at, values) = part.map_err(unavailable)?;
            for (&i, v) in at.iter().zip(values) {
                out[i] = v.as_deref().and_then(parse_stored).map(|(availability, trip)| Presence {
                    driver: drivers[i].clone(),
                    availability,
                    trip,
                });
            }
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
            let mut reads = Vec::new();
            for chunk in drivers.chunks(READ_BATCH * 3) {
                let pipe = self.client.pipeline();
                let keys: Vec<String> =
                    chunk.iter().map(|d| self.keys.driver_location(tenant, &UserId(d.clone()))).collect();
                reads.push(async move {
                    for key in keys {
                        let _: () = pipe.exists(key).await?;
                    }
                    let values: Vec<Value> = pipe.all().await?;
                    Ok(values.iter().map(|v| v.as_i64() == Some(1)).collect())
                });
            }
            let _ = fresh_ms;
            return gather(reads, drivers.len(), "freshness").await;
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
        let names: Vec<String> = if self.cluster {
            let key = self.keys.presence_tenants_seen();
            let now = crate::domain::now_ms();
            // Scores as f64: fred takes a string bound for a lexicographic one.
            let old = now.saturating_sub(SEEN_KEEP_MS) as f64;
            let _: i64 = self.client.zremrangebyscore(&key, f64::NEG_INFINITY, old).await.map_err(unavailable)?;
            self.client.zrange(&key, 0, -1, None, false, None, false).await.map_err(unavailable)?
        } else {
            self.client.smembers(self.keys.presence_tenants()).await.map_err(unavailable)?
        };
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

    pub(in crate::engine) async fn next_sweep(&self) -> Result<u64> {
        let key = self.keys.sweep_seq();
        let pipe = self.client.pipeline();
        let _: () = pipe.incr(&key).await.map_err(unavailable)?;
        let _: () = pipe.pexpire(&key, SEEN_KEEP_MS as i64, None).await.map_err(unavailable)?;
        let (n, _): (u64, i64) = pipe.all().await.map_err(unavailable)?;
        Ok(n)
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
