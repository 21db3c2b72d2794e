//! The Redis engine's broker: room channels held while a local member is in the room
//! (`SUBSCRIBE` on the first local join, `UNSUBSCRIBE` after the last leave), the delivery
//! task that hands received frames to the node's delivery callback in channel order, the
//! re-subscribe task after a reconnect and the catch-up that follows it, and recoverable
//! publishes with their history (`redis/publish.lua`, `redis/history.lua`).
//!
//! Catch-up: frames published while the subscriber connection was down never reach this
//! node. For recoverable events the room's history still holds them, so after a gap the
//! delivery task reads, for each held room, the events after the last one it delivered
//! and delivers them before the frames buffered meanwhile (skipping those it delivered).
//! A room whose history no longer links back to that event (trimmed past it, or lost by a
//! Redis that restarted without its data) gets a gap control frame: its local members are
//! cut off and recover with `since` / `Last-Event-ID`, where `recovered: false` tells them
//! to refetch state. Nothing recoverable is lost silently.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::prelude::*;
use futures_util::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use super::{RedisEngine, late, unavailable};
use crate::domain::{EventId, RoomKey};
use crate::engine::frame;
use crate::engine::types::{Deliver, History, with_event_id};
use crate::error::{Error, Result};

/// Per held channel: the last recoverable event delivered (where a catch-up starts).
type Cursors = HashMap<String, EventId>;

/// How often the delivery task forgets the cursors of rooms no longer held.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// How often a node on a Redis Cluster checks that its held rooms are still subscribed on
/// their shards.
const SHARD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Rooms caught up at once after a gap (one history read each).
const CATCH_UP_CONCURRENCY: usize = 32;

/// One entry of a room's history, as `history.lua` returns it.
struct Entry {
    id: EventId,
    event: String,
    tail: String,
    flags: u8,
    except: String,
}

impl Entry {
    /// The frame this event was published as.
    fn frame(&self) -> String {
        let except = (!self.except.is_empty()).then_some(self.except.as_str());
        frame::encode(&self.event, self.flags, except, &with_event_id(self.id, &self.tail))
    }
}

/// A room's history after some id: `history.lua`'s verdict and entries.
struct Entries {
    /// 1 complete, 0 the history no longer links back, -1 the stream does not exist.
    verdict: i64,
    entries: Vec<Entry>,
}

impl RedisEngine {
    /// The delivery task (owner: this engine; stops on shutdown): reads the subscriber's
    /// messages and hands them to the local delivery callback, in channel order; after a
    /// gap (signalled by the re-subscribe task) it catches up first, then marks the node's
    /// subscriptions whole again.
    pub(super) fn spawn_delivery(self: &Arc<Self>, deliver: Deliver) {
        // The forwarder (owner: this engine): fred's broadcast channel is small (each of its
        // slots is allocated up front), so its messages move at once into a bounded queue
        // that allocates as it fills; the delivery task reads that queue.
        let mut messages = self.subscriber.message_rx();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<fred::types::Message>(super::PUBSUB_BUFFER);
        let forward_cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            loop {
                let m = tokio::select! {
                    _ = forward_cancel.cancelled() => break,
                    m = messages.recv() => m,
                };
                match m {
                    Ok(m) => {
                        if tx.try_send(m).is_err() {
                            metrics::counter!("fleetcast_pubsub_lagged_total").increment(1);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "pub/sub delivery lagged; frames dropped");
                        metrics::counter!("fleetcast_pubsub_lagged_total").increment(n);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        let keys = self.keys.clone();
        let cancel = self.cancel.clone();
        let resubscribed = self.resubscribed.clone();
        let this = Arc::downgrade(self);
        self.tasks.spawn(async move {
            let mut cursors = Cursors::new();
            // Per channel: the last event a catch-up delivered. A buffered live frame up to
            // it is a duplicate; the first newer one ends the overlap.
            let mut caught_up = Cursors::new();
            let mut prune = tokio::time::interval(PRUNE_EVERY);
            loop {
                let msg = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break,
                    _ = resubscribed.notified() => {
                        let Some(engine) = this.upgrade() else { break };
                        engine.catch_up(&deliver, &mut cursors, &mut caught_up).await;
                        engine.subscriptions_ok.store(true, Ordering::SeqCst);
                        continue;
                    }
                    _ = prune.tick() => {
                        let Some(engine) = this.upgrade() else { break };
                        let held = engine.held_channels().await;
                        cursors.retain(|c, _| held.contains(c));
                        caught_up.retain(|c, _| held.contains(c));
                        continue;
                    }
                    m = rx.recv() => m,
                };
                match msg {
                    Some(m) => {
                        let (Some(room), Some(text)) = (keys.room_from_channel(&m.channel), m.value.as_str()) else {
                            continue;
                        };
                        if let Some(id) = frame::decode(&text).and_then(|f| frame::event_id_of(f.json)) {
                            let channel: &str = &m.channel;
                            if let Some(last) = caught_up.get(channel) {
                                if id <= *last {
                                    continue;
                                }
                                caught_up.remove(channel);
                            }
                            match cursors.get_mut(channel) {
                                Some(c) => *c = id,
                                None => {
                                    cursors.insert(channel.to_string(), id);
                                }
                            }
                        }
                        deliver(&room, &text);
                    }
                    None => break,
                }
            }
        });
    }

    /// Catches up every held room after a gap (see the module doc).
    async fn catch_up(&self, deliver: &Deliver, cursors: &mut Cursors, caught_up: &mut Cursors) {
        let held = self.held_channels().await;
        cursors.retain(|c, _| held.contains(c));
        caught_up.clear();
        let started = std::time::Instant::now();
        let work: Vec<(String, RoomKey, EventId)> =
            cursors.iter().filter_map(|(c, id)| Some((c.clone(), self.keys.room_from_channel(c)?, *id))).collect();
        let reads = futures_util::stream::iter(work)
            .map(|(channel, room, since)| async move {
                let read = self.entries(&room, since).await;
                (channel, room, since, read)
            })
            .buffered(CATCH_UP_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let now_ms = crate::domain::now_ms();
        let (mut events, mut gaps) = (0u64, 0u64);
        for (channel, room, since, read) in reads {
            let Ok(entries) = read else {
                // Unknown what it missed: its members recover on their own.
                cursors.remove(&channel);
                deliver(&room, &frame::gap());
                gaps += 1;
                continue;
            };
            // A stream gone because the room was quiet for the whole window lost nothing;
            // one gone sooner was lost with Redis's data.
            let expired = entries.verdict == -1 && now_ms.saturating_sub(since.ms) >= self.history.window_ms;
            if entries.verdict != 1 && !expired {
                // Nothing of it is delivered: a member that got the newest would reconnect
                // with that id and never learn of the hole before it.
                cursors.remove(&channel);
                deliver(&room, &frame::gap());
                gaps += 1;
                continue;
            }
            for e in &entries.entries {
                deliver(&room, &e.frame());
                cursors.insert(channel.clone(), e.id);
                caught_up.insert(channel.clone(), e.id);
                events += 1;
            }
        }
        metrics::counter!("fleetcast_catchup_events_total").increment(events);
        metrics::counter!("fleetcast_catchup_gaps_total").increment(gaps);
        tracing::warn!(
            rooms = held.len(),
            events,
            gaps,
            ms = started.elapsed().as_millis() as u64,
            "caught up after a pub/sub gap"
        );
    }

    /// The channels of rooms with local members.
    async fn held_channels(&self) -> HashSet<String> {
        self.rooms.lock().await.keys().cloned().collect()
    }

    /// Starts the re-subscribe task (owner: this engine): after a reconnect of the
    /// subscriber, and on a Redis Cluster also after a change of the cluster's routing (a
    /// failover, a resharding) and whenever the periodic check finds a held room no longer
    /// subscribed on its shard (Redis drops a shard channel's subscribers with an
    /// unsolicited `SUNSUBSCRIBE` when its slot moves, which fred does not report), every
    /// held room is subscribed again on its owner and verified; not ready meanwhile.
    pub(super) fn spawn_resubscriber(self: &Arc<Self>) {
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut errors = self.subscriber.error_rx();
        let mut changes = self.subscriber.cluster_change_rx();
        let cancel = self.cancel.clone();
        let this = Arc::downgrade(self);
        let cluster = self.cluster;
        self.tasks.spawn(async move {
            // When the subscriber connection was last seen failing: the start of the gap.
            let mut gap_since: Option<std::time::Instant> = None;
            let mut check = tokio::time::interval(SHARD_CHECK_EVERY);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let cause = tokio::select! {
                    _ = cancel.cancelled() => break,
                    e = errors.recv() => {
                        if let Some(this) = this.upgrade() { this.subscriptions_ok.store(false, Ordering::SeqCst); }
                        gap_since.get_or_insert_with(std::time::Instant::now);
                        if matches!(e, Err(RecvError::Closed)) { break; }
                        continue;
                    }
                    r = reconnects.recv() => {
                        if matches!(r, Err(RecvError::Closed)) { break; }
                        "reconnect"
                    }
                    c = changes.recv(), if cluster => {
                        if matches!(c, Err(RecvError::Closed)) { break; }
                        // Only a change that left a held room without its subscription
                        // costs a re-subscribe (fred reports every refresh of its routing).
                        let Some(this) = this.upgrade() else { break };
                        if this.verify_held().await.unwrap_or(false) {
                            continue;
                        }
                        "cluster change"
                    }
                    _ = check.tick(), if cluster => {
                        let Some(this) = this.upgrade() else { break };
                        if !this.subscriptions_ok.load(Ordering::SeqCst) || this.verify_held().await.unwrap_or(true) {
                            continue;
                        }
                        "shard unsubscribed"
                    }
                };
                let Some(this) = this.upgrade() else { break };
                this.subscriptions_ok.store(false, Ordering::SeqCst);
                let since = *gap_since.get_or_insert_with(std::time::Instant::now);
                // Retry until every held room is subscribed and verified.
                loop {
                    if cancel.is_cancelled() {
                        return;
                    }
                    match this.resubscribe_and_verify().await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "re-subscribe failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                // The delivery task catches up, then marks the subscriptions whole.
                this.resubscribed.notify_one();
                gap_since = None;
                // Routing refreshes of the re-subscribe itself are no news.
                while changes.try_recv().is_ok() {}
                // Volatile frames published to this node's rooms during the gap are lost;
                // recoverable ones come back with the catch-up.
                metrics::counter!("fleetcast_pubsub_resubscribed_total", "cause" => cause).increment(1);
                metrics::histogram!("fleetcast_pubsub_gap_seconds").record(since.elapsed());
                tracing::warn!(cause, gap_ms = since.elapsed().as_millis() as u64, "room subscriptions restored");
            }
        });
    }

    /// Whether every held room is still subscribed on its shard by this node (`Ok(false)`
    /// when one is not); a Redis Cluster's check.
    /// Joins and leaves wait meanwhile: a room left between reading the held rooms and
    /// counting the subscriptions would look like a dropped one.
    async fn verify_held(&self) -> std::result::Result<bool, fred::error::Error> {
        let rooms = self.rooms.lock().await;
        let channels: Vec<String> = rooms.keys().cloned().collect();
        if channels.is_empty() {
            return Ok(true);
        }
        // Asked of each slot's owner now: a stale routing table would ask a node that no
        // longer holds the slot.
        self.client.sync_cluster().await?;
        for (owner, group) in self.by_owner(&channels) {
            if self.own_shard_subscriptions(owner.as_ref()).await? < group.len() as u64 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// How many shard channels this node's subscriber connection to `owner` holds (its
    /// `ssub` in `CLIENT LIST`, found by the connection's name). Counting subscribers of a
    /// channel (`PUBSUB SHARDNUMSUB`) would not do: another node's subscription to the same
    /// room would hide that this one's was dropped.
    async fn own_shard_subscriptions(
        &self,
        owner: Option<&fred::types::config::Server>,
    ) -> std::result::Result<u64, fred::error::Error> {
        let cmd = fred::types::CustomCommand::new_static("CLIENT", None::<u16>, false);
        let list: String = match owner {
            Some(server) => {
                self.client.with_cluster_node(server.clone()).custom(cmd, vec!["LIST", "TYPE", "pubsub"]).await?
            }
            None => self.client.custom(cmd, vec!["LIST", "TYPE", "pubsub"]).await?,
        };
        let name = format!(" name={} ", self.subscriber.id());
        Ok(list
            .lines()
            .filter(|l| l.contains(&name))
            .filter_map(|l| {
                l.split_whitespace().find_map(|f| f.strip_prefix("ssub=")).and_then(|n| n.parse::<u64>().ok())
            })
            .sum())
    }

    async fn resubscribe_and_verify(&self) -> std::result::Result<(), fred::error::Error> {
        let rooms = self.rooms.lock().await;
        let channels: Vec<String> = rooms.keys().cloned().collect();
        if self.cluster {
            // Each shard's channels on the node that owns their slot now (after a failover
            // or a resharding the owner changed), and counted there.
            self.subscriber.sync_cluster().await?;
            self.client.sync_cluster().await?;
            for (owner, group) in self.by_owner(&channels) {
                // One SSUBSCRIBE per channel (each may be on its own slot), many in flight.
                let count = group.len() as u64;
                let mut sends = Vec::with_capacity(group.len());
                for channel in group {
                    sends.push(self.subscriber.ssubscribe(channel));
                }
                let sent: Vec<std::result::Result<(), _>> =
                    futures_util::stream::iter(sends).buffer_unordered(64).collect().await;
                sent.into_iter().collect::<std::result::Result<Vec<()>, _>>()?;
                if self.own_shard_subscriptions(owner.as_ref()).await? < count {
                    return Err(fred::error::Error::new(
                        fred::error::ErrorKind::Unknown,
                        "shard channels not subscribed after re-subscribing",
                    ));
                }
            }
            drop(rooms);
            return Ok(());
        }
        for chunk in channels.chunks(500) {
            self.subscriber.subscribe(chunk.to_vec()).await?;
        }
        for chunk in channels.chunks(500) {
            let counts: Vec<Value> = self.client.pubsub_numsub(chunk.to_vec()).await?;
            check_counts(&counts)?;
        }
        drop(rooms);
        Ok(())
    }

    /// Channels grouped by the cluster node that owns their slot (fred's routing table).
    fn by_owner(&self, channels: &[String]) -> Vec<(Option<fred::types::config::Server>, Vec<String>)> {
        let Some(routing) = self.client.cached_cluster_state() else {
            return vec![(None, channels.to_vec())];
        };
        let mut groups: HashMap<Option<fred::types::config::Server>, Vec<String>> = HashMap::new();
        for c in channels {
            let owner = routing.get_server(fred::util::redis_keyslot(c.as_bytes())).cloned();
            groups.entry(owner).or_default().push(c.clone());
        }
        groups.into_iter().collect()
    }

    pub(in crate::engine) async fn publish(&self, room: &RoomKey, frame: &str) -> Result<()> {
        let started = std::time::Instant::now();
        let args = vec![frame.to_string(), self.clock.deadline(), self.publish_command().to_string()];
        let r: i64 = self
            .volatile_script
            .evalsha_with_reload(&self.client, vec![self.keys.room_channel(room)], args)
            .await
            .map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "publish").record(started.elapsed());
        if r == 2 { Err(late("publish")) } else { Ok(()) }
    }

    pub(in crate::engine) async fn publish_recoverable(
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
            self.clock.deadline(),
            self.publish_command().to_string(),
        ];
        let id: String = self
            .publish_script
            .evalsha_with_reload(&self.client, vec![self.keys.history(room)], args)
            .await
            .map_err(unavailable)?;
        metrics::histogram!("fleetcast_redis_command_seconds", "command" => "publish_recoverable")
            .record(started.elapsed());
        if id == "late" {
            return Err(late("publish_recoverable"));
        }
        EventId::parse(&id).ok_or_else(|| {
            tracing::error!(id, "unexpected stream id");
            Error::Internal
        })
    }

    pub(in crate::engine) async fn history(&self, room: &RoomKey, since: EventId) -> Result<History> {
        let e = self.entries(room, since).await?;
        Ok(History {
            complete: e.verdict == 1,
            events: e.entries.into_iter().map(|e| (e.id, e.event, with_event_id(e.id, &e.tail))).collect(),
        })
    }

    /// The room's history after `since` (`redis/history.lua`).
    async fn entries(&self, room: &RoomKey, since: EventId) -> Result<Entries> {
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
        let verdict = reply.first().and_then(Value::as_i64).unwrap_or(0);
        let mut entries = Vec::new();
        for entry in reply.get(1..).unwrap_or_default().chunks(5) {
            let [id, event, tail, flags, except] = entry else { break };
            let (Some(id), Some(event), Some(tail)) =
                (id.as_str().and_then(|s| EventId::parse(&s)), event.as_string(), tail.as_string())
            else {
                continue;
            };
            let flags = flags.as_str().and_then(|f| f.parse().ok()).unwrap_or(0);
            let except = except.as_string().unwrap_or_default();
            entries.push(Entry { id, event, tail, flags, except });
        }
        Ok(Entries { verdict, entries })
    }

    pub(in crate::engine) async fn hold_room(&self, room: &RoomKey) -> Result<()> {
        let channel = self.keys.room_channel(room);
        let mut rooms = self.rooms.lock().await;
        if let Some(n) = rooms.get_mut(&channel) {
            *n += 1;
            return Ok(());
        }
        if self.cluster {
            self.subscriber.ssubscribe(channel.clone()).await.map_err(unavailable)?;
        } else {
            self.subscriber.subscribe(channel.clone()).await.map_err(unavailable)?;
        }
        rooms.insert(channel, 1);
        metrics::gauge!("fleetcast_room_subscriptions").set(rooms.len() as f64);
        Ok(())
    }

    pub(in crate::engine) async fn release_room(&self, room: &RoomKey) {
        let channel = self.keys.room_channel(room);
        let mut rooms = self.rooms.lock().await;
        let Some(n) = rooms.get_mut(&channel) else { return };
        *n -= 1;
        if *n == 0 {
            rooms.remove(&channel);
            metrics::gauge!("fleetcast_room_subscriptions").set(rooms.len() as f64);
            let left = if self.cluster {
                self.subscriber.sunsubscribe(channel).await
            } else {
                self.subscriber.unsubscribe(channel).await
            };
            if let Err(e) = left {
                // Harmless: frames for a room without members are dropped on delivery, and
                // the next reconnect re-subscribes only held rooms.
                tracing::debug!(error = %e, "unsubscribe failed");
            }
        }
    }
}

/// A `PUBSUB NUMSUB`/`SHARDNUMSUB` reply (`[channel, count, …]`): every channel counted.
fn check_counts(counts: &[Value]) -> std::result::Result<(), fred::error::Error> {
    for pair in counts.chunks(2) {
        let n = pair.get(1).and_then(Value::as_i64).unwrap_or(0);
        if n < 1 {
            return Err(fred::error::Error::new(
                fred::error::ErrorKind::Unknown,
                "channel not subscribed after reconnect",
            ));
        }
    }
    Ok(())
}
