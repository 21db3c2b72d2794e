//! Redis engine over fred: one multiplexed command client, one subscriber client holding a
//! channel per room with local members, and the Lua scripts of `redis/`. Commands time out
//! after the configured Redis timeout (so acks answer `UNAVAILABLE` instead of hanging
//! during an outage) and the clients reconnect forever with a short constant delay; after a
//! reconnect every held room is re-subscribed and verified before the node reports ready.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::keys::Keys;
use super::{
    Candidate, Claim, Deliver, EventId, History, HistoryLimits, LocationLimits, LocationOutcome, LocationWrite,
    RoomKey, SlotKind, frame,
};
use crate::domain::{Tenant, TripId, UserId};
use crate::error::{Error, Result};

/// Per-user slot hashes live a day past their last claim; entries of dead nodes are dropped
/// by the claim script long before.
const SLOT_HASH_TTL_MS: u64 = 24 * 3600 * 1000;

/// Pub/sub messages buffered between fred's reader and our delivery task. fred's default
/// (32) silently drops bursts; 64k frames is about 20 MB at typical frame sizes and covers
/// several seconds of a 15k updates/s node. Lag beyond it is counted in
/// `fleetcast_pubsub_lagged_total`.
const PUBSUB_BUFFER: usize = 65_536;

/// Settings of the Redis engine.
pub struct RedisSettings {
    /// `redis://…`
    pub url: String,
    /// Key prefix.
    pub prefix: String,
    /// Per-command timeout.
    pub timeout: Duration,
    /// This node's id.
    pub node_id: String,
    /// Heartbeat interval; the node key lives three of them.
    pub heartbeat: Duration,
    /// Bounds of each room's event history.
    pub history: HistoryLimits,
}

/// The cluster engine.
pub struct RedisEngine {
    client: Client,
    subscriber: SubscriberClient,
    keys: Keys,
    location_script: Script,
    claim_script: Script,
    publish_script: Script,
    history_script: Script,
    nearby_script: Script,
    nodes_script: Script,
    history: HistoryLimits,
    node_id: String,
    heartbeat_ttl_ms: u64,
    /// Local member count per held room channel. An async mutex because the first join
    /// must finish its SUBSCRIBE (and the last leave its UNSUBSCRIBE) before another join or
    /// leave of any room is decided: that keeps subscribe/unsubscribe ordered per node.
    rooms: tokio::sync::Mutex<HashMap<String, usize>>,
    /// False from a disconnect until every held room is re-subscribed and verified.
    subscriptions_ok: Arc<AtomicBool>,
    seq: AtomicU64,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

fn unavailable(e: fred::error::Error) -> Error {
    tracing::warn!(error = %e, "redis command failed");
    metrics::counter!("fleetcast_redis_errors_total").increment(1);
    Error::Unavailable
}

impl RedisEngine {
    /// Connects both clients (waiting at most a few seconds: a node starts even while Redis
    /// is down and becomes ready when it returns) and starts the delivery and re-subscribe
    /// tasks.
    pub async fn connect(s: RedisSettings, deliver: Deliver) -> anyhow::Result<Self> {
        let config = Config::from_url(&s.url)?;
        let mut builder = Builder::from_config(config);
        builder
            .with_config(|c| {
                // Start even when Redis is down; the reconnect policy takes over.
                c.fail_fast = false;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = s.timeout;
                p.broadcast_channel_capacity = PUBSUB_BUFFER;
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = s.timeout;
                c.max_command_attempts = 1;
                c.tcp = TcpConfig { nodelay: Some(true), ..Default::default() };
            })
            // Unlimited attempts, 100 ms apart: cross-node delivery resumes within ~2 s.
            .set_policy(ReconnectPolicy::new_constant(0, 100));
        let client = builder.build()?;
        let subscriber = builder.build_subscriber_client()?;
        client.connect();
        subscriber.connect();
        let wait = Duration::from_secs(5);
        if tokio::time::timeout(wait, client.wait_for_connect()).await.is_err()
            || tokio::time::timeout(wait, subscriber.wait_for_connect()).await.is_err()
        {
            tracing::warn!("redis not reachable at start; the node starts not ready and keeps retrying");
        }
        let engine = Self {
            client,
            subscriber,
            keys: Keys::new(&s.prefix),
            location_script: Script::from_lua(include_str!("../../redis/location.lua")),
            claim_script: Script::from_lua(include_str!("../../redis/claim.lua")),
            publish_script: Script::from_lua(include_str!("../../redis/publish.lua")),
            history_script: Script::from_lua(include_str!("../../redis/history.lua")),
            nearby_script: Script::from_lua(include_str!("../../redis/nearby.lua")),
            nodes_script: Script::from_lua(include_str!("../../redis/nodes.lua")),
            history: s.history,
            node_id: s.node_id,
            heartbeat_ttl_ms: s.heartbeat.as_millis() as u64 * 3,
            rooms: tokio::sync::Mutex::new(HashMap::new()),
            subscriptions_ok: Arc::new(AtomicBool::new(true)),
            seq: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        engine.spawn_delivery(deliver);
        Ok(engine)
    }

    /// The delivery task (owner: this engine; stops on shutdown): reads the subscriber's
    /// messages and hands them to the local delivery callback, in channel order.
    fn spawn_delivery(&self, deliver: Deliver) {
        let mut rx = self.subscriber.message_rx();
        let keys = self.keys.clone();
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = cancel.cancelled() => break,
                    m = rx.recv() => m,
                };
                match msg {
                    Ok(m) => {
                        let (Some(room), Some(text)) = (keys.room_from_channel(&m.channel), m.value.as_str()) else {
                            continue;
                        };
                        deliver(&room, &text);
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "pub/sub delivery lagged; frames dropped");
                        metrics::counter!("fleetcast_pubsub_lagged_total").increment(n);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }

    /// Starts the re-subscribe task (owner: this engine). Must run after the engine is in
    /// an `Arc` so the task can reach the room table.
    pub fn spawn_resubscriber(self: &Arc<Self>) {
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut errors = self.subscriber.error_rx();
        let cancel = self.cancel.clone();
        let this = Arc::downgrade(self);
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    e = errors.recv() => {
                        if let Some(this) = this.upgrade() { this.subscriptions_ok.store(false, Ordering::SeqCst); }
                        if matches!(e, Err(RecvError::Closed)) { break; }
                    }
                    r = reconnects.recv() => {
                        if matches!(r, Err(RecvError::Closed)) { break; }
                        let Some(this) = this.upgrade() else { break };
                        this.subscriptions_ok.store(false, Ordering::SeqCst);
                        // Retry until every held room is subscribed and verified.
                        loop {
                            if cancel.is_cancelled() { return; }
                            match this.resubscribe_and_verify().await {
                                Ok(()) => break,
                                Err(e) => {
                                    tracing::warn!(error = %e, "re-subscribe failed; retrying");
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                }
                            }
                        }
                        this.subscriptions_ok.store(true, Ordering::SeqCst);
                        tracing::info!("redis reconnected; room subscriptions restored");
                    }
                }
            }
        });
    }

    async fn resubscribe_and_verify(&self) -> anyhow::Result<()> {
        let rooms = self.rooms.lock().await;
        let channels: Vec<String> = rooms.keys().cloned().collect();
        for chunk in channels.chunks(500) {
            self.subscriber.subscribe(chunk.to_vec()).await?;
        }
        for chunk in channels.chunks(500) {
            let counts: Vec<Value> = self.client.pubsub_numsub(chunk.to_vec()).await?;
            // Reply is [channel, count, channel, count, …].
            for pair in counts.chunks(2) {
                let n = pair.get(1).and_then(Value::as_i64).unwrap_or(0);
                if n < 1 {
                    anyhow::bail!("channel not subscribed after reconnect");
                }
            }
        }
        drop(rooms);
        Ok(())
    }

    pub(super) async fn publish(&self, room: &RoomKey, frame: &str) -> Result<()> {
        let started = std::time::Instant::now();
        let _: i64 = self.client.publish(self.keys.room_channel(room), frame).await.map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "publish").record(started.elapsed());
        Ok(())
    }

    pub(super) async fn publish_recoverable(
        &self,
        room: &RoomKey,
        event: &str,
        tail: &str,
        except: &[&RoomKey],
    ) -> Result<EventId> {
        let started = std::time::Instant::now();
        let args: Vec<String> = vec![
            self.history.max_events.to_string(),
            self.history.window_ms.to_string(),
            self.keys.room_channel(room),
            event.to_string(),
            if except.is_empty() { 0 } else { frame::EXCEPT_ROOM }.to_string(),
            tail.to_string(),
            frame::except_rooms(except),
        ];
        let id: String = self
            .publish_script
            .evalsha_with_reload(&self.client, vec![self.keys.history(room)], args)
            .await
            .map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "publish_recoverable")
            .record(started.elapsed());
        EventId::parse(&id).ok_or_else(|| {
            tracing::error!(id, "unexpected stream id");
            Error::Internal
        })
    }

    pub(super) async fn history(&self, room: &RoomKey, since: EventId) -> Result<History> {
        let started = std::time::Instant::now();
        let reply: Vec<Value> = self
            .history_script
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.history(room)],
                vec![since.to_string(), self.history.max_events.to_string()],
            )
            .await
            .map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "history").record(started.elapsed());
        let complete = reply.first().and_then(Value::as_i64) == Some(1);
        let mut events = Vec::new();
        for entry in reply.get(1..).unwrap_or_default().chunks(3) {
            let [id, event, tail] = entry else { break };
            let (Some(id), Some(event), Some(tail)) =
                (id.as_str().and_then(|s| EventId::parse(&s)), event.as_string(), tail.as_str())
            else {
                continue;
            };
            events.push((id, event, super::with_event_id(id, &tail)));
        }
        Ok(History { complete, events })
    }

    pub(super) async fn hold_room(&self, room: &RoomKey) -> Result<()> {
        let channel = self.keys.room_channel(room);
        let mut rooms = self.rooms.lock().await;
        if let Some(n) = rooms.get_mut(&channel) {
            *n += 1;
            return Ok(());
        }
        self.subscriber.subscribe(channel.clone()).await.map_err(unavailable)?;
        rooms.insert(channel, 1);
        metrics::gauge!("fleetcast_room_subscriptions").set(rooms.len() as f64);
        Ok(())
    }

    pub(super) async fn release_room(&self, room: &RoomKey) {
        let channel = self.keys.room_channel(room);
        let mut rooms = self.rooms.lock().await;
        let Some(n) = rooms.get_mut(&channel) else { return };
        *n -= 1;
        if *n == 0 {
            rooms.remove(&channel);
            metrics::gauge!("fleetcast_room_subscriptions").set(rooms.len() as f64);
            if let Err(e) = self.subscriber.unsubscribe(channel).await {
                // Harmless: frames for a room without members are dropped on delivery, and
                // the next reconnect re-subscribes only held rooms.
                tracing::debug!(error = %e, "unsubscribe failed");
            }
        }
    }

    pub(super) async fn write_location(&self, w: LocationWrite<'_>, l: &LocationLimits) -> Result<LocationOutcome> {
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
        ];
        let started = std::time::Instant::now();
        let r: Vec<i64> =
            self.location_script.evalsha_with_reload(&self.client, keys, args).await.map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "location").record(started.elapsed());
        match r.as_slice() {
            [1, sampled] => Ok(LocationOutcome::Accepted { sampled: *sampled == 1 }),
            [0, wait] => Ok(LocationOutcome::RateLimited { retry_after_ms: (*wait).max(1) as u64 }),
            other => {
                tracing::error!(reply = ?other, "unexpected location script reply");
                Err(Error::Internal)
            }
        }
    }

    async fn get_string(&self, key: String) -> Result<Option<String>> {
        let started = std::time::Instant::now();
        let v = self.client.get::<Option<String>, _>(key).await.map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "get").record(started.elapsed());
        Ok(v)
    }

    pub(super) async fn trip_location(&self, tenant: &Tenant, trip: &TripId) -> Result<Option<String>> {
        self.get_string(self.keys.trip_location(tenant, trip)).await
    }

    pub(super) async fn driver_location(&self, tenant: &Tenant, driver: &UserId) -> Result<Option<String>> {
        self.get_string(self.keys.driver_location(tenant, driver)).await
    }

    fn slot_key(&self, kind: SlotKind, tenant: &Tenant, user: &UserId) -> String {
        match kind {
            SlotKind::Subscriptions => self.keys.subscriptions(tenant, user),
            SlotKind::Connections => self.keys.connections(tenant, user),
            SlotKind::SseStreams => self.keys.sse_streams(tenant, user),
            SlotKind::Offers => self.keys.offer_slots(tenant, user),
        }
    }

    pub(super) async fn count_slots(&self, kind: SlotKind, tenant: &Tenant, user: &UserId) -> Result<u64> {
        // A claim of nothing under an unbounded cap drops dead nodes' entries and counts.
        let args: Vec<String> = vec![
            self.keys.node_prefix(),
            u32::MAX.to_string(),
            self.node_id.clone(),
            String::new(),
            SLOT_HASH_TTL_MS.to_string(),
            self.heartbeat_ttl_ms.to_string(),
        ];
        let r: Vec<i64> = self
            .claim_script
            .evalsha_with_reload(&self.client, vec![self.slot_key(kind, tenant, user)], args)
            .await
            .map_err(unavailable)?;
        Ok(r.get(1).copied().unwrap_or(0).max(0) as u64)
    }

    pub(super) async fn claim(
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
        ];
        args.extend(slots.iter().map(|s| s.to_string()));
        let started = std::time::Instant::now();
        let r: Vec<i64> = self
            .claim_script
            .evalsha_with_reload(&self.client, vec![self.slot_key(kind, tenant, user)], args)
            .await
            .map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "claim").record(started.elapsed());
        Ok(if r.first() == Some(&1) { Claim::Granted } else { Claim::Refused })
    }

    pub(super) async fn release(
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

    pub(super) async fn set_offer_filters(&self, tenant: &Tenant, driver: &UserId, filters: &str) -> Result<()> {
        let _: i64 = self
            .client
            .hset(self.keys.offer_filters(tenant), (driver.0.as_str(), filters))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn offer_candidates(
        &self,
        tenant: &Tenant,
        lat: f64,
        lng: f64,
        radius_km: f64,
        fresh_ms: u64,
    ) -> Result<Vec<Candidate>> {
        let keys = vec![self.keys.geo(tenant), self.keys.geo_fresh(tenant), self.keys.offer_filters(tenant)];
        let args = vec![lng.to_string(), lat.to_string(), radius_km.to_string(), fresh_ms.to_string()];
        let started = std::time::Instant::now();
        let flat: Vec<String> =
            self.nearby_script.evalsha_with_reload(&self.client, keys, args).await.map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "nearby").record(started.elapsed());
        Ok(flat
            .chunks_exact(4)
            .filter_map(|c| {
                Some(Candidate {
                    driver: c[0].clone(),
                    lng: c[1].parse().ok()?,
                    lat: c[2].parse().ok()?,
                    filters: c[3].clone(),
                })
            })
            .collect())
    }

    pub(super) async fn heartbeat(&self, stats_json: &str) -> Result<()> {
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

    pub(super) async fn cluster_nodes(&self) -> Result<Vec<String>> {
        let args = vec!["list".to_string(), self.keys.node_prefix(), self.heartbeat_ttl_ms.to_string()];
        self.nodes_script.evalsha_with_reload(&self.client, vec![self.keys.nodes()], args).await.map_err(unavailable)
    }

    pub(super) async fn live_drivers(&self, tenant: &Tenant, fresh_ms: u64) -> Result<u64> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let min = now.saturating_sub(fresh_ms) as f64;
        let n: u64 = self.client.zcount(self.keys.geo_fresh(tenant), min, f64::INFINITY).await.map_err(unavailable)?;
        Ok(n)
    }

    pub(super) async fn server_info(&self) -> Result<Option<String>> {
        let info: String = self.client.info(None).await.map_err(unavailable)?;
        Ok(Some(info))
    }

    pub(super) async fn ready(&self) -> bool {
        if !self.subscriptions_ok.load(Ordering::SeqCst) || !self.subscriber.is_connected() {
            return false;
        }
        matches!(tokio::time::timeout(Duration::from_secs(2), self.client.ping::<String>(None)).await, Ok(Ok(_)))
    }

    pub(super) async fn shutdown(&self) {
        let _: std::result::Result<i64, _> = self.client.del(self.keys.node(&self.node_id)).await;
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
    }
}
