//! The Redis engine's live state: the location script (rate windows, latest positions,
//! GEO index, sampling, publish in one round trip), per-user slot hashes
//! (`redis/claim.lua`), offer filters and candidates (`redis/nearby.lua`), and the node
//! registry (`redis/nodes.lua`).

use std::sync::atomic::Ordering;

use fred::prelude::*;

use super::{RedisEngine, SLOT_HASH_TTL_MS, late, unavailable};
use crate::domain::{Location, Tenant, TripId, UserId};
use crate::engine::types::{Candidate, Claim, LocationLimits, LocationOutcome, LocationWrite, SlotKind};
use crate::error::{Error, Result};

impl RedisEngine {
    pub(in crate::engine) async fn write_location(
        &self,
        w: LocationWrite<'_>,
        l: &LocationLimits,
    ) -> Result<LocationOutcome> {
        let k = &self.keys;
        let driver = &w.fix.driver;
        let trip_key = match &w.fix.trip {
            Some(t) => k.trip_location(w.tenant, t),
            None => k.driver_location(w.tenant, driver),
        };
        let keys = vec![
            k.location_window(w.tenant, driver),
            k.driver_location(w.tenant, driver),
            trip_key,
            k.geo(w.tenant),
            k.geo_fresh(w.tenant),
            k.snapshot_marker(w.tenant, driver),
            k.sse_streams(w.tenant, &UserId(w.driver_room.0.as_str().to_string())),
            k.area_watches(w.tenant),
        ];
        let (channel, frame) = match w.publish {
            Some((room, frame)) => (k.room_channel(room), frame),
            None => (String::new(), ""),
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let args: Vec<String> = vec![
            l.min_interval_ms.to_string(),
            l.max_per_minute.to_string(),
            l.ttl_ms.to_string(),
            l.snapshot_interval_ms.to_string(),
            w.location_json.to_string(),
            w.fix.lng.to_string(),
            w.fix.lat.to_string(),
            driver.0.clone(),
            if w.fix.trip.is_some() { "1" } else { "0" }.to_string(),
            channel,
            frame.to_string(),
            format!("{}:{seq}", self.node_id),
            k.room_channel(w.driver_room.0),
            w.driver_room.1.to_string(),
            self.clock.deadline(),
            crate::domain::area::CELL_DEG.to_string(),
            k.cell_watchers_prefix(w.tenant),
            k.cell_channel_prefix(w.tenant),
            w.cell.name(),
            crate::engine::frame::area_position_head(),
        ];
        let started = std::time::Instant::now();
        let r: Vec<i64> =
            self.location_script.evalsha_with_reload(&self.client, keys, args).await.map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "location").record(started.elapsed());
        match r.as_slice() {
            [1, sampled, came_live] => {
                Ok(LocationOutcome::Accepted { sampled: *sampled == 1, came_live: *came_live == 1 })
            }
            [0, wait] => Ok(LocationOutcome::RateLimited { retry_after_ms: (*wait).max(1) as u64 }),
            [2, _] => Err(late("location")),
            other => {
                tracing::error!(reply = ?other, "unexpected location script reply");
                Err(Error::Internal)
            }
        }
    }

    /// The stored `Location` at `key`, parsed (it was written from a [`Location`]).
    async fn get_location(&self, key: String) -> Result<Option<Location>> {
        let started = std::time::Instant::now();
        let v = self.client.get::<Option<String>, _>(key).await.map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "get").record(started.elapsed());
        v.map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                tracing::error!(error = %e, "stored location unreadable");
                Error::Internal
            })
        })
        .transpose()
    }

    pub(in crate::engine) async fn trip_location(&self, tenant: &Tenant, trip: &TripId) -> Result<Option<Location>> {
        self.get_location(self.keys.trip_location(tenant, trip)).await
    }

    pub(in crate::engine) async fn driver_location(
        &self,
        tenant: &Tenant,
        driver: &UserId,
    ) -> Result<Option<Location>> {
        self.get_location(self.keys.driver_location(tenant, driver)).await
    }

    fn slot_key(&self, kind: SlotKind, tenant: &Tenant, user: &UserId) -> String {
        match kind {
            SlotKind::Subscriptions => self.keys.subscriptions(tenant, user),
            SlotKind::Connections => self.keys.connections(tenant, user),
            SlotKind::SseStreams => self.keys.sse_streams(tenant, user),
            SlotKind::Offers => self.keys.offer_slots(tenant, user),
        }
    }

    pub(in crate::engine) async fn count_slots(&self, kind: SlotKind, tenant: &Tenant, user: &UserId) -> Result<u64> {
        // A claim of nothing under an unbounded cap drops dead nodes' entries and counts.
        let args: Vec<String> = vec![
            self.keys.node_prefix(),
            u32::MAX.to_string(),
            self.node_id.clone(),
            String::new(),
            SLOT_HASH_TTL_MS.to_string(),
            self.heartbeat_ttl_ms.to_string(),
            "0".to_string(),
        ];
        let r: Vec<i64> = self
            .claim_script
            .evalsha_with_reload(&self.client, vec![self.slot_key(kind, tenant, user)], args)
            .await
            .map_err(unavailable)?;
        Ok(r.get(1).copied().unwrap_or(0).max(0) as u64)
    }

    pub(in crate::engine) async fn claim(
        &self,
        kind: SlotKind,
        tenant: &Tenant,
        user: &UserId,
        sid: &str,
        slots: &[&str],
        cap: u32,
    ) -> Result<Claim> {
        let mut args: Vec<String> = vec![
            self.keys.node_prefix(),
            cap.to_string(),
            self.node_id.clone(),
            sid.to_string(),
            SLOT_HASH_TTL_MS.to_string(),
            self.heartbeat_ttl_ms.to_string(),
            self.clock.deadline(),
        ];
        args.extend(slots.iter().map(|s| s.to_string()));
        let started = std::time::Instant::now();
        let r: Vec<i64> = self
            .claim_script
            .evalsha_with_reload(&self.client, vec![self.slot_key(kind, tenant, user)], args)
            .await
            .map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "claim").record(started.elapsed());
        match r.first() {
            Some(1) => Ok(Claim::Granted),
            Some(2) => Err(late("claim")),
            _ => Ok(Claim::Refused),
        }
    }

    pub(in crate::engine) async fn release(
        &self,
        kind: SlotKind,
        tenant: &Tenant,
        user: &UserId,
        sid: &str,
        slots: &[&str],
    ) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = slots.iter().map(|s| format!("{s}\u{1e}{}\u{1f}{sid}", self.node_id)).collect();
        let _: i64 = self.client.hdel(self.slot_key(kind, tenant, user), fields).await.map_err(unavailable)?;
        Ok(())
    }

    pub(in crate::engine) async fn set_offer_filters(
        &self,
        tenant: &Tenant,
        driver: &UserId,
        filters: &str,
    ) -> Result<()> {
        let expire = Some(Expiration::PX(SLOT_HASH_TTL_MS as i64));
        let _: Option<String> = self
            .client
            .set(self.keys.offer_filters(tenant, driver), filters, expire, None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(in crate::engine) async fn offer_candidates(
        &self,
        tenant: &Tenant,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<Candidate>> {
        let near = self.drivers_near(tenant, lat, lng, radius_km, fresh_ms).await?;
        let mut found = Vec::with_capacity(near.len());
        // The drivers' filters, a thousand keys per MGET; drivers without any are not
        // subscribed to offers.
        for chunk in near.chunks(1_000) {
            let keys: Vec<String> =
                chunk.iter().map(|(d, _, _)| self.keys.offer_filters(tenant, &UserId(d.clone()))).collect();
            let filters: Vec<Option<String>> = self.client.mget(keys).await.map_err(unavailable)?;
            found.extend(chunk.iter().zip(filters).filter_map(|((driver, lat, lng), filters)| {
                Some(Candidate { driver: driver.clone(), lat: *lat, lng: *lng, filters: filters? })
            }));
        }
        Ok(found)
    }

    pub(in crate::engine) async fn heartbeat(&self, stats_json: &str) -> Result<()> {
        let args = vec![
            "beat".to_string(),
            self.keys.node_prefix(),
            self.heartbeat_ttl_ms.to_string(),
            self.node_id.clone(),
            stats_json.to_string(),
        ];
        let _: i64 = self
            .nodes_script
            .evalsha_with_reload(&self.client, vec![self.keys.nodes()], args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(in crate::engine) async fn cluster_nodes(&self) -> Result<Vec<String>> {
        let args = vec!["list".to_string(), self.keys.node_prefix(), self.heartbeat_ttl_ms.to_string()];
        self.nodes_script.evalsha_with_reload(&self.client, vec![self.keys.nodes()], args).await.map_err(unavailable)
    }

    pub(in crate::engine) async fn live_drivers(&self, tenant: &Tenant, fresh_ms: u64) -> Result<u64> {
        let now = crate::domain::now_ms();
        let min = now.saturating_sub(fresh_ms) as f64;
        let n: u64 = self.client.zcount(self.keys.geo_fresh(tenant), min, f64::INFINITY).await.map_err(unavailable)?;
        Ok(n)
    }

    pub(in crate::engine) async fn server_info(&self) -> Result<Option<String>> {
        let info: String = self.client.info(None).await.map_err(unavailable)?;
        Ok(Some(info))
    }
}
