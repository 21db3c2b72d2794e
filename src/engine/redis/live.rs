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

/// On a Redis Cluster, how long a driver's geo-index marker lives (a quarter of the location
/// TTL): a driver that stays within [`crate::engine::types::INDEX_SLACK_M`] of its indexed position,
/// in its geo cell and unsampled, has its cell's index written again when the marker
/// expired, so that no live driver's index entry looks stale.
fn index_refresh_ms(l: &LocationLimits) -> u64 {
    l.ttl_ms / 4
}

impl RedisEngine {
    pub(in crate::engine) async fn write_location(
        &self,
        w: LocationWrite<'_>,
        l: &LocationLimits,
    ) -> Result<LocationOutcome> {
        if self.cluster {
            return self.write_location_sharded(w, l).await;
        }
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

    /// A location update on a Redis Cluster (`redis/location_driver.lua`, then
    /// `location_trip.lua` and `location_cell.lua` concurrently): one round trip to the
    /// driver's shard decides and writes the driver's part; only an accepted update touches
    /// the trip's and the cell's shards. The trip's position and its broadcast are written
    /// together; when that write fails the update is answered `UNAVAILABLE` and its entry in
    /// the rate window is taken back, so the ack and what was applied agree.
    async fn write_location_sharded(&self, w: LocationWrite<'_>, l: &LocationLimits) -> Result<LocationOutcome> {
        let k = &self.keys;
        let driver = &w.fix.driver;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let entry = format!("{}:{seq}", self.node_id);
        let window = k.location_window(w.tenant, driver);
        let keys = vec![
            window.clone(),
            k.driver_location(w.tenant, driver),
            k.snapshot_marker(w.tenant, driver),
            k.sse_streams(w.tenant, &UserId(w.driver_room.0.as_str().to_string())),
            k.room_channel(w.driver_room.0),
            k.geo_index_marker(w.tenant, driver),
        ];
        let args: Vec<String> = vec![
            l.min_interval_ms.to_string(),
            l.max_per_minute.to_string(),
            l.ttl_ms.to_string(),
            l.snapshot_interval_ms.to_string(),
            w.location_json.to_string(),
            entry.clone(),
            self.clock.deadline(),
            w.driver_room.1.to_string(),
            index_refresh_ms(l).to_string(),
            w.fix.lat.to_string(),
            w.fix.lng.to_string(),
            crate::engine::types::INDEX_SLACK_M.to_string(),
            super::cells::GEO_CELL_DEG.to_string(),
        ];
        let started = std::time::Instant::now();
        let r: Vec<Value> =
            self.location_driver_script.evalsha_with_reload(&self.client, keys, args).await.map_err(unavailable)?;
        let (sampled, came_live, previous, index_due) = match r.first().and_then(Value::as_i64) {
            Some(1) => (
                r.get(1).and_then(Value::as_i64) == Some(1),
                r.get(2).and_then(Value::as_i64) == Some(1),
                r.get(3).and_then(Value::as_string).filter(|p| !p.is_empty()),
                r.get(4).and_then(Value::as_i64) != Some(0),
            ),
            Some(0) => {
                let wait = r.get(1).and_then(Value::as_i64).unwrap_or(1).max(1) as u64;
                return Ok(LocationOutcome::RateLimited { retry_after_ms: wait });
            }
            Some(2) => return Err(late("location")),
            _ => {
                tracing::error!(reply = ?r, "unexpected location script reply");
                return Err(Error::Internal);
            }
        };
        let previous: Option<Location> = previous.and_then(|p| serde_json::from_str(&p).ok());
        let (lat, lng) = (w.fix.lat, w.fix.lng);
        let cell = super::cells::geo_cell(lat, lng);
        let prev_cell = previous.as_ref().map(|p| super::cells::geo_cell(p.lat, p.lng)).filter(|c| *c != cell);
        let trip = async {
            let (Some(t), Some((room, frame))) = (&w.fix.trip, w.publish) else { return Ok(()) };
            let keys = vec![k.trip_location(w.tenant, t), k.room_channel(room)];
            let args =
                vec![w.location_json.to_string(), l.ttl_ms.to_string(), frame.to_string(), self.clock.deadline()];
            let r: i64 =
                self.location_trip_script.evalsha_with_reload(&self.client, keys, args).await.map_err(unavailable)?;
            if r == 2 { Err(late("location")) } else { Ok(()) }
        };
        let cell_args = |leave: bool| {
            vec![
                lng.to_string(),
                lat.to_string(),
                driver.0.clone(),
                l.ttl_ms.to_string(),
                l.snapshot_interval_ms.to_string(),
                if sampled { "1" } else { "0" }.to_string(),
                if leave { "leave" } else { "" }.to_string(),
            ]
        };
        let cell_keys =
            |c: &str| vec![k.geo_cell(w.tenant, c), k.geo_cell_fresh(w.tenant, c), k.geo_cell_watchers(w.tenant, c)];
        // The update's cell, and the cell it left: the index, and whether their live-area
        // cells are watched (then the area frame goes to those cells' rooms). A driver whose
        // index is not due (`location_driver.lua`: within the slack of its indexed position,
        // in its cell, unsampled, marker alive) skips the cell's index write, and the watch
        // comes from this node's view of the tenant's watched cells, read at most
        // `WATCH_FOR` ago (the watching node reads its new area's positions again once every
        // node's view has renewed: `engine::WATCH_SETTLE`).
        let skip = !index_due && !came_live && prev_cell.is_none();
        let index = async {
            if skip {
                metrics::counter!("fleetcast_geo_index_skipped_total").increment(1);
                let view = match self.cell_watch.seen(&k.area_watches(w.tenant)) {
                    Some(view) => view,
                    None => self.read_watched_cells(w.tenant).await?,
                };
                return Ok(view.contains(&w.cell.name()));
            }
            let r: Vec<i64> =
                self.location_cell_script.evalsha_with_reload(&self.client, cell_keys(&cell), cell_args(false)).await?;
            if r.first() == Some(&1) {
                let registry = k.geo_cells(w.tenant);
                let _: i64 = self.client.sadd(&registry, cell.as_str()).await?;
                let _: i64 = self.client.pexpire(&registry, SLOT_HASH_TTL_MS as i64, None).await?;
            }
            Ok::<bool, fred::error::Error>(r.get(1) == Some(&1))
        };
        let left = async {
            let Some(prev) = &prev_cell else { return Ok(false) };
            let r: Vec<i64> =
                self.location_cell_script.evalsha_with_reload(&self.client, cell_keys(prev), cell_args(true)).await?;
            Ok::<bool, fred::error::Error>(r.get(1) == Some(&1))
        };
        let (trip, index, left) = tokio::join!(trip, index, left);
        let area_cell = w.cell;
        let prev_area =
            previous.as_ref().map(|p| crate::domain::area::Cell::of(p.lat, p.lng)).filter(|c| *c != area_cell);
        let mut areas = Vec::new();
        if matches!(index, Ok(true)) {
            areas.push(area_cell);
        }
        if let (Ok(true), Some(p)) = (&left, prev_area) {
            areas.push(p);
        }
        if !areas.is_empty() {
            self.publish_area_position(w.tenant, &areas, w.location_json).await;
        }
        let index = index.and(left);
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "location").record(started.elapsed());
        if let Err(e) = index {
            // The update was stored and delivered; without its marker the driver's next
            // update writes the index again.
            crate::telemetry::storm::warn_storm!(error = %e, "geo cell not updated");
            metrics::counter!("fleetcast_redis_errors_total").increment(1);
            let _: std::result::Result<i64, _> = self.client.del(k.geo_index_marker(w.tenant, driver)).await;
        }
        if let Err(e) = trip {
            // Not delivered to the trip: take the update back out of the rate window, so
            // that the driver's retry is not refused for an update nobody saw.
            let _: std::result::Result<i64, _> = self.client.zrem(&window, entry.as_str()).await;
            return Err(e);
        }
        Ok(LocationOutcome::Accepted { sampled, came_live })
    }

    /// Publishes an `area.position` frame to the rooms of watched live-area cells (the
    /// update's, and the one it left), concurrently.
    async fn publish_area_position(&self, tenant: &Tenant, cells: &[crate::domain::area::Cell], location_json: &str) {
        let frame = format!("{}{location_json}", crate::engine::frame::area_position_head());
        let mut sends = Vec::with_capacity(cells.len());
        for c in cells {
            let channel = self.keys.room_channel(&crate::domain::RoomKey::area_cell(tenant, *c));
            sends.push(self.client.spublish::<i64, _, _>(channel, frame.clone()));
        }
        for r in futures_util::future::join_all(sends).await {
            if let Err(e) = r {
                tracing::debug!(error = %e, "area position not published");
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
        let r = self.run_claim(self.slot_key(kind, tenant, user), u32::MAX, "", &[], false).await?;
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
        let started = std::time::Instant::now();
        let r = self.run_claim(self.slot_key(kind, tenant, user), cap, sid, slots, true).await?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "claim").record(started.elapsed());
        match r.first() {
            Some(1) => Ok(Claim::Granted),
            Some(2) => Err(late("claim")),
            _ => Ok(Claim::Refused),
        }
    }

    /// Runs `redis/claim.lua` on one slot HASH with this node's view of the live nodes; when
    /// the script finds entries of nodes outside that view, once more with a fresh read of
    /// the registry (only then are those entries dropped). `deadline`: the claim carries one.
    async fn run_claim(&self, key: String, cap: u32, sid: &str, slots: &[&str], deadline: bool) -> Result<Vec<i64>> {
        let mut fresh = false;
        loop {
            let live = self.live_nodes(fresh).await?;
            let mut args: Vec<String> = vec![
                String::new(),
                cap.to_string(),
                self.node_id.clone(),
                sid.to_string(),
                SLOT_HASH_TTL_MS.to_string(),
                String::new(),
                if deadline { self.clock.deadline() } else { "0".to_string() },
                live.join("\u{1f}"),
                if fresh { "1" } else { "0" }.to_string(),
            ];
            args.extend(slots.iter().map(|s| s.to_string()));
            let r: Vec<Value> = self
                .claim_script
                .evalsha_with_reload(&self.client, vec![key.clone()], args)
                .await
                .map_err(unavailable)?;
            let code = r.first().and_then(Value::as_i64);
            if code == Some(3) && !fresh {
                fresh = true;
                continue;
            }
            return Ok(r.iter().map(|v| v.as_i64().unwrap_or(0)).collect());
        }
    }

    /// The ids of the live nodes (heartbeat within its TTL, this one always), from the
    /// registry's beats as read at most once a second unless `fresh`.
    async fn live_nodes(&self, fresh: bool) -> Result<Vec<String>> {
        let now = crate::domain::now_ms();
        let mut nodes: Vec<String> = self
            .beats_view(fresh)
            .await?
            .iter()
            .filter(|(_, beat)| beat + self.heartbeat_ttl_ms >= now)
            .map(|(id, _)| id.clone())
            .collect();
        if !nodes.contains(&self.node_id) {
            nodes.push(self.node_id.clone());
        }
        Ok(nodes)
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
        // A Redis Cluster's geo cells may hold a driver's position up to the index's slack
        // from its latest: they are searched that much wider (then `at_latest`).
        let slack_km = if self.cluster { crate::engine::types::INDEX_SLACK_M / 1000.0 } else { 0.0 };
        let near = self.drivers_near(tenant, lat, lng, radius_km + slack_km, fresh_ms).await?;
        if self.cluster {
            return self.at_latest(tenant, (lat, lng), radius_km, near).await;
        }
        // The drivers' filters; drivers without any are not subscribed to offers.
        let keys: Vec<String> =
            near.iter().map(|(d, _, _)| self.keys.offer_filters(tenant, &UserId(d.clone()))).collect();
        let filters = self.get_many(keys).await?;
        Ok(near
            .into_iter()
            .zip(filters)
            .filter_map(|((driver, lat, lng), filters)| Some(Candidate { driver, lat, lng, filters: filters? }))
            .collect())
    }

    /// The offer candidates among drivers found in a Redis Cluster's geo cells, each placed,
    /// measured and ordered at its latest position (one whose latest position has expired,
    /// or farther than `radius_km` from `origin`, is not a candidate), with its filters.
    async fn at_latest(
        &self,
        tenant: &Tenant,
        origin: (f64, f64),
        radius_km: f64,
        near: Vec<(String, f64, f64)>,
    ) -> Result<Vec<Candidate>> {
        let users: Vec<UserId> = near.into_iter().map(|(d, _, _)| UserId(d)).collect();
        let keys: Vec<String> = users
            .iter()
            .flat_map(|u| [self.keys.offer_filters(tenant, u), self.keys.driver_location(tenant, u)])
            .collect();
        let values = self.get_many(keys).await?;
        let mut found: Vec<(f64, Candidate)> = users
            .into_iter()
            .zip(values.chunks_exact(2))
            .filter_map(|(u, v)| {
                let filters = v[0].clone()?;
                let at: Location = serde_json::from_str(v[1].as_deref()?).ok()?;
                let d = crate::domain::rides::haversine_km(origin, (at.lat, at.lng));
                (d <= radius_km).then_some((d, Candidate { driver: u.0, lat: at.lat, lng: at.lng, filters }))
            })
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.driver.cmp(&b.1.driver)));
        Ok(found.into_iter().map(|(_, c)| c).collect())
    }

    /// The string values of many keys, in order: `MGET`s of a thousand on one Redis; on a
    /// Redis Cluster, where the keys live on many slots, `GET`s issued concurrently.
    pub(super) async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<String>>> {
        use futures_util::StreamExt;
        if self.cluster {
            let mut gets = Vec::with_capacity(keys.len());
            for k in keys {
                gets.push(self.client.get::<Option<String>, _>(k));
            }
            let values: Vec<std::result::Result<Option<String>, _>> =
                futures_util::stream::iter(gets).buffered(64).collect().await;
            return values.into_iter().map(|v| v.map_err(unavailable)).collect();
        }
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1_000) {
            let values: Vec<Option<String>> = if chunk.len() == 1 {
                vec![self.client.get(chunk[0].clone()).await.map_err(unavailable)?]
            } else {
                self.client.mget(chunk.to_vec()).await.map_err(unavailable)?
            };
            out.extend(values);
        }
        Ok(out)
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
        if self.cluster {
            // The sum over the tenant's geo cells.
            let cells: Vec<String> = self.client.smembers(self.keys.geo_cells(tenant)).await.map_err(unavailable)?;
            let mut n = 0;
            for cell in cells {
                let c: u64 = self
                    .client
                    .zcount(self.keys.geo_cell_fresh(tenant, &cell), min, f64::INFINITY)
                    .await
                    .map_err(unavailable)?;
                n += c;
            }
            return Ok(n);
        }
        let n: u64 = self.client.zcount(self.keys.geo_fresh(tenant), min, f64::INFINITY).await.map_err(unavailable)?;
        Ok(n)
    }

    pub(in crate::engine) async fn server_infos(&self) -> Result<Vec<(String, String)>> {
        if !self.cluster {
            let info: String = self.client.info(None).await.map_err(unavailable)?;
            return Ok(vec![("redis".to_string(), info)]);
        }
        let primaries = self.client.cached_cluster_state().map(|s| s.unique_primary_nodes()).unwrap_or_default();
        let mut out = Vec::with_capacity(primaries.len());
        for server in primaries {
            let info: String = self.client.with_cluster_node(server.clone()).info(None).await.map_err(unavailable)?;
            out.push((server.to_string(), info));
        }
        out.sort();
        Ok(out)
    }
}
