//! The Redis engine's part of live areas (CONTRACT §7): which nodes watch which geo cells
//! (the location script publishes into a cell's room only while its watchers HASH exists),
//! and the drivers near a point for an area's first snapshot (`redis/nearby.lua`).

use fred::prelude::*;
use futures_util::StreamExt;

use super::{RedisEngine, SLOT_HASH_TTL_MS, unavailable};
use crate::domain::area::Cell;
use crate::domain::{RoomKey, Tenant};
use crate::error::Result;

impl RedisEngine {
    pub(in crate::engine) async fn watch_cell(&self, tenant: &Tenant, cell: Cell) -> Result<()> {
        // Subscribed before the location path starts publishing: nothing is sent to a
        // watcher that does not listen yet.
        self.hold_room(&RoomKey::area_cell(tenant, cell)).await?;
        let (watchers, watches) = (self.keys.cell_watchers(tenant, cell), self.keys.area_watches(tenant));
        let pipe = self.client.pipeline();
        let _: () = pipe.hset(&watchers, (self.node_id.as_str(), "1")).await.map_err(unavailable)?;
        let _: () = pipe.pexpire(&watchers, SLOT_HASH_TTL_MS as i64, None).await.map_err(unavailable)?;
        let _: () = pipe.sadd(&watches, format!("{}\u{1f}{}", cell.name(), self.node_id)).await.map_err(unavailable)?;
        let _: () = pipe.pexpire(&watches, SLOT_HASH_TTL_MS as i64, None).await.map_err(unavailable)?;
        let _: Vec<Value> = pipe.all().await.map_err(unavailable)?;
        if self.cluster {
            // The cell's four geo cells, each on its slot, carry the watch for the location
            // path (`location_cell.lua`).
            for g in super::cells::geo_cells_of(cell) {
                let key = self.keys.geo_cell_watchers(tenant, &g);
                let _: i64 = self.client.hset(&key, (self.node_id.as_str(), "1")).await.map_err(unavailable)?;
                let _: i64 = self.client.pexpire(&key, SLOT_HASH_TTL_MS as i64, None).await.map_err(unavailable)?;
            }
            // This node's own updates see the watch at once.
            self.cell_watch.forget(&watches);
        }
        Ok(())
    }

    pub(in crate::engine) async fn unwatch_cell(&self, tenant: &Tenant, cell: Cell) {
        let (watchers, watches) = (self.keys.cell_watchers(tenant, cell), self.keys.area_watches(tenant));
        let member = format!("{}\u{1f}{}", cell.name(), self.node_id);
        let r: std::result::Result<(), _> = async {
            let _: i64 = self.client.hdel(&watchers, self.node_id.as_str()).await?;
            let _: i64 = self.client.srem(&watches, member).await?;
            if self.cluster {
                for g in super::cells::geo_cells_of(cell) {
                    let key = self.keys.geo_cell_watchers(tenant, &g);
                    let _: i64 = self.client.hdel(&key, self.node_id.as_str()).await?;
                }
                self.cell_watch.forget(&watches);
            }
            Ok::<(), fred::error::Error>(())
        }
        .await;
        if let Err(e) = r {
            // The entries expire within a day; until then the cell's room gets frames that
            // this node ignores.
            tracing::debug!(error = %e, "cell watch not removed");
        }
        self.release_room(&RoomKey::area_cell(tenant, cell)).await;
    }

    /// The tenant's watched cells (`{p}:areas:⟨{tenant}⟩`), read now; the read also renews
    /// this node's view of them (`watch_cache`).
    pub(in crate::engine) async fn watched_cells(&self, tenant: &Tenant) -> Result<crate::engine::types::WatchedCells> {
        self.read_watched_cells(tenant).await.map_err(unavailable)
    }

    pub(super) async fn read_watched_cells(
        &self,
        tenant: &Tenant,
    ) -> std::result::Result<crate::engine::types::WatchedCells, fred::error::Error> {
        let key = self.keys.area_watches(tenant);
        let asked = std::time::Instant::now();
        let members: Vec<String> = self.client.smembers(&key).await?;
        Ok(self.cell_watch.saw(&key, &members, asked))
    }

    pub(in crate::engine) async fn drivers_near(
        &self,
        tenant: &Tenant,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<(String, f64, f64)>> {
        let started = std::time::Instant::now();
        let found = if self.cluster {
            // The geo cells around the point, each on its shard, read concurrently.
            // The cells of the circle's box; for a wide search, those of the tenant's cells
            // that hold drivers and fall in the box.
            let cells = match super::cells::cells_around(lat, lng, radius_km) {
                Some(cells) => cells,
                None => {
                    let held: Vec<String> =
                        self.client.smembers(self.keys.geo_cells(tenant)).await.map_err(unavailable)?;
                    held.into_iter().filter(|c| super::cells::in_box(c, lat, lng, radius_km)).collect()
                }
            };
            let mut reads = Vec::new();
            for cell in cells {
                let keys = vec![self.keys.geo_cell(tenant, &cell), self.keys.geo_cell_fresh(tenant, &cell)];
                reads.push(self.nearby(keys, lat, lng, radius_km, fresh_ms));
            }
            let mut all = Vec::new();
            let mut reads = futures_util::stream::iter(reads).buffer_unordered(16);
            while let Some(found) = reads.next().await {
                all.extend(found?);
            }
            super::cells::merge(lat, lng, all)
        } else {
            self.nearby(vec![self.keys.geo(tenant), self.keys.geo_fresh(tenant)], lat, lng, radius_km, fresh_ms).await?
        };
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "nearby").record(started.elapsed());
        Ok(found)
    }

    /// `redis/nearby.lua` on one GEO index and its freshness set.
    async fn nearby(
        &self,
        keys: Vec<String>,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<(String, f64, f64)>> {
        let args = vec![lng.to_string(), lat.to_string(), radius_km.to_string(), fresh_ms.to_string()];
        let flat: Vec<String> =
            self.nearby_script.evalsha_with_reload(&self.client, keys, args).await.map_err(unavailable)?;
        Ok(flat.chunks_exact(3).filter_map(|c| Some((c[0].clone(), c[2].parse().ok()?, c[1].parse().ok()?))).collect())
    }
}
