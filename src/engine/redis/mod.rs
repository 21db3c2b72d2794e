//! Redis engine over fred: one multiplexed command client, one subscriber client holding a
//! channel per room with local members, and the Lua scripts of `redis/`. Commands time out
//! after the configured Redis timeout (so acks answer `UNAVAILABLE` instead of hanging
//! during an outage) and the clients reconnect forever with a short constant delay; after a
//! reconnect every held room is re-subscribed and verified before the node reports ready.
//!
//! This file owns the connection, the scripts and the engine's life (start, readiness,
//! shutdown); [`broker`] holds the room pub/sub, history and the catch-up after a gap, [`live`] the live state
//! (locations, slots, offer candidates, node registry), [`clock`] the deadline each write
//! carries so that a timed-out write never runs later, [`supervise`] restarts fred's
//! connection task of a client when it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::scripts::Script;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::keys::Keys;
use super::types::{Deliver, HistoryLimits};
use crate::error::Error;

mod areas;
mod broker;
mod cells;
mod clock;
mod live;
mod presence;
mod supervise;
mod watch_cache;

pub use watch_cache::WATCH_FOR;

/// Per-user slot hashes live a day past their last claim; entries of dead nodes are dropped
/// by the claim script long before.
const SLOT_HASH_TTL_MS: u64 = 24 * 3600 * 1000;

/// Pub/sub messages buffered between fred's reader and our delivery task: a forwarding
/// task moves them from fred's broadcast channel into a queue of this bound (which, unlike
/// fred's channels, allocates as it fills). 64k frames is about 20 MB at typical frame sizes
/// and covers several seconds of a 15k updates/s node. Lag beyond it is counted in
/// `fleetcast_pubsub_lagged_total`.
pub(super) const PUBSUB_BUFFER: usize = 65_536;

/// Capacity of each of fred's broadcast channels on the subscriber client (messages,
/// errors, reconnects, cluster changes, … nine per client, each allocated in full at
/// start): deep enough for a burst between two polls of the forwarding task. (fred's
/// default, 32, drops bursts; 65,536 on every channel of both clients cost ≈ 100 MB per
/// node before any socket.)
const SUBSCRIBER_BROADCAST: usize = 4_096;

/// The same for the command client, which receives no messages.
const CLIENT_BROADCAST: usize = 32;

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

/// The node registry's beats: node id and its last beat (ms).
type Beats = Arc<Vec<(String, u64)>>;

/// The cluster engine.
pub struct RedisEngine {
    /// A Redis Cluster (`redis-cluster://…`): sharded pub/sub, and the location path split
    /// by slot.
    cluster: bool,
    client: Client,
    subscriber: SubscriberClient,
    keys: Keys,
    location_script: Script,
    location_driver_script: Script,
    location_trip_script: Script,
    location_cell_script: Script,
    claim_script: Script,
    publish_script: Script,
    volatile_script: Script,
    history_script: Script,
    nearby_script: Script,
    nodes_script: Script,
    presence_script: Script,
    history: HistoryLimits,
    node_id: String,
    heartbeat_ttl_ms: u64,
    /// The node registry's beats and when they were read (`presence::beats_view`).
    beats: std::sync::Mutex<Option<(std::time::Instant, Beats)>>,
    /// The geo cells' live-area watch as the cells' index scripts last said (Redis Cluster).
    cell_watch: watch_cache::WatchCache,
    /// When this node last marked each tenant's presence as seen (Redis Cluster).
    presence_seen: std::sync::Mutex<HashMap<String, std::time::Instant>>,
    /// Redis's clock, for the deadline of every write.
    clock: clock::RedisClock,
    /// Local member count per held room channel. An async mutex because the first join
    /// must finish its SUBSCRIBE (and the last leave its UNSUBSCRIBE) before another join or
    /// leave of any room is decided: that keeps subscribe/unsubscribe ordered per node.
    rooms: tokio::sync::Mutex<HashMap<String, usize>>,
    /// False from a disconnect until every held room is re-subscribed, verified and
    /// caught up.
    subscriptions_ok: Arc<AtomicBool>,
    /// Signalled by the re-subscribe task once every held room is subscribed again: the
    /// delivery task catches up.
    resubscribed: Arc<tokio::sync::Notify>,
    /// The node's delivery callback, handed to the delivery task by `spawn_tasks`.
    deliver: Deliver,
    seq: AtomicU64,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// A write that reached Redis after its deadline and did nothing (see [`clock`]). Its
/// reply usually comes after the node's timeout and is never seen; one seen here means the
/// node's view of Redis's clock is off by a large part of the timeout.
fn late(command: &'static str) -> Error {
    metrics::counter!("fleetcast_redis_late_writes_total", "command" => command).increment(1);
    Error::Unavailable
}

fn unavailable(e: fred::error::Error) -> Error {
    crate::telemetry::storm::warn_storm!(error = %e, "redis command failed");
    metrics::counter!("fleetcast_redis_errors_total").increment(1);
    Error::Unavailable
}

impl RedisEngine {
    /// Connects both clients (waiting at most a few seconds: a node starts even while Redis
    /// is down and becomes ready when it returns); [`Self::spawn_tasks`] starts delivering.
    pub async fn connect(s: RedisSettings, deliver: Deliver) -> Result<Self, fred::error::Error> {
        let config = Config::from_url(&s.url)?;
        let cluster = config.server.is_clustered();
        let builder = |broadcast: usize| -> Builder {
            let mut builder = Builder::from_config(config.clone());
            builder
                .with_config(|c| {
                    // Start even when Redis is down; the reconnect policy takes over.
                    c.fail_fast = false;
                })
                // Each connection named after its client, so that a node finds its own
                // subscriber connections in `CLIENT LIST` (the shard check).
                .with_connection_config(|c| c.auto_client_setname = true)
                .with_performance_config(|p| {
                    p.default_command_timeout = s.timeout;
                    p.broadcast_channel_capacity = broadcast;
                })
                .with_connection_config(|c| {
                    c.connection_timeout = Duration::from_secs(2);
                    c.internal_command_timeout = s.timeout;
                    c.max_command_attempts = 1;
                    // No redirect is followed (with one attempt a followed `MOVED` fails
                    // anyway, after fred refreshed its routing; a followed `ASK` ends
                    // fred's connection task: `supervise`): a command that meets a slot
                    // in migration answers `UNAVAILABLE`.
                    c.max_redirections = 0;
                    c.tcp = TcpConfig { nodelay: Some(true), ..Default::default() };
                })
                // Unlimited attempts, 100 ms apart: cross-node delivery resumes within ~2 s.
                .set_policy(ReconnectPolicy::new_constant(0, 100));
            builder
        };
        let client = builder(CLIENT_BROADCAST).build()?;
        let subscriber = builder(SUBSCRIBER_BROADCAST).build_subscriber_client()?;
        let (client_task, subscriber_task) = (client.connect(), subscriber.connect());
        let wait = Duration::from_secs(5);
        if tokio::time::timeout(wait, client.wait_for_connect()).await.is_err()
            || tokio::time::timeout(wait, subscriber.wait_for_connect()).await.is_err()
        {
            tracing::warn!("redis not reachable at start; the node starts not ready and keeps retrying");
        }
        let engine = Self {
            cluster,
            client,
            subscriber,
            keys: Keys::new(&s.prefix).map_err(|e| fred::error::Error::new(fred::error::ErrorKind::Config, e))?,
            // Both location scripts start with the rate check (`redis/rate_window.lua`).
            location_script: Script::from_lua(concat!(
                "local DEADLINE, ENTRY = ARGV[15], ARGV[12]\n",
                include_str!("../../../redis/rate_window.lua"),
                include_str!("../../../redis/location.lua")
            )),
            location_driver_script: Script::from_lua(concat!(
                "local DEADLINE, ENTRY = ARGV[7], ARGV[6]\n",
                include_str!("../../../redis/rate_window.lua"),
                include_str!("../../../redis/location_driver.lua")
            )),
            location_trip_script: Script::from_lua(include_str!("../../../redis/location_trip.lua")),
            location_cell_script: Script::from_lua(include_str!("../../../redis/location_cell.lua")),
            claim_script: Script::from_lua(include_str!("../../../redis/claim.lua")),
            publish_script: Script::from_lua(include_str!("../../../redis/publish.lua")),
            volatile_script: Script::from_lua(include_str!("../../../redis/volatile.lua")),
            history_script: Script::from_lua(include_str!("../../../redis/history.lua")),
            nearby_script: Script::from_lua(include_str!("../../../redis/nearby.lua")),
            nodes_script: Script::from_lua(include_str!("../../../redis/nodes.lua")),
            presence_script: Script::from_lua(include_str!("../../../redis/presence.lua")),
            history: s.history,
            node_id: s.node_id,
            heartbeat_ttl_ms: s.heartbeat.as_millis() as u64 * 3,
            beats: std::sync::Mutex::new(None),
            presence_seen: std::sync::Mutex::new(HashMap::new()),
            cell_watch: watch_cache::WatchCache::default(),
            clock: clock::RedisClock::new(s.timeout),
            rooms: tokio::sync::Mutex::new(HashMap::new()),
            subscriptions_ok: Arc::new(AtomicBool::new(true)),
            resubscribed: Arc::new(tokio::sync::Notify::new()),
            deliver,
            seq: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        supervise::supervise(&engine.tasks, engine.cancel.clone(), engine.client.clone(), client_task, "command");
        supervise::supervise(
            &engine.tasks,
            engine.cancel.clone(),
            engine.subscriber.clone(),
            subscriber_task,
            "subscriber",
        );
        Ok(engine)
    }

    /// Starts the engine's tasks: delivery (and its catch-up after a gap), re-subscribing
    /// after a reconnect, and sampling Redis's clock.
    pub fn spawn_tasks(self: &Arc<Self>) {
        self.spawn_delivery(self.deliver.clone());
        self.spawn_resubscriber();
        // The clock task (owner: this engine; stops on shutdown).
        let this = Arc::downgrade(self);
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            loop {
                let Some(engine) = this.upgrade() else { break };
                if let Err(e) = engine.clock.sample(&engine.client).await {
                    tracing::debug!(error = %e, "redis clock not sampled");
                }
                drop(engine);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(clock::SAMPLE_EVERY) => {}
                }
            }
        });
    }

    /// The command that publishes to a room channel: sharded on a Redis Cluster, so only
    /// the shard that owns the room's slot carries its traffic.
    fn publish_command(&self) -> &'static str {
        if self.cluster { "SPUBLISH" } else { "PUBLISH" }
    }

    pub(in crate::engine) async fn ready(&self) -> bool {
        if !self.subscriptions_ok.load(Ordering::SeqCst) || !self.subscriber.is_connected() {
            return false;
        }
        matches!(tokio::time::timeout(Duration::from_secs(2), self.client.ping::<String>(None)).await, Ok(Ok(_)))
    }

    pub(in crate::engine) async fn shutdown(&self) {
        let _: std::result::Result<i64, _> = self.client.del(self.keys.node(&self.node_id)).await;
        self.cancel.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        let _ = self.subscriber.quit().await;
        let _ = self.client.quit().await;
    }
}
