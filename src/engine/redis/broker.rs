//! The Redis engine's broker: room channels held while a local member is in the room
//! (`SUBSCRIBE` on the first local join, `UNSUBSCRIBE` after the last leave), the delivery
//! task that hands received frames to the node's delivery callback in channel order, the
//! re-subscribe task after a reconnect, and recoverable publishes with their history
//! (`redis/publish.lua`, `redis/history.lua`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::broadcast::error::RecvError;

use super::{RedisEngine, late, unavailable};
use crate::domain::{EventId, RoomKey};
use crate::engine::frame;
use crate::engine::types::{Deliver, History, with_event_id};
use crate::error::{Error, Result};

impl RedisEngine {
    /// The delivery task (owner: this engine; stops on shutdown): reads the subscriber's
    /// messages and hands them to the local delivery callback, in channel order.
    pub(super) fn spawn_delivery(&self, deliver: Deliver) {
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

    /// Starts the re-subscribe task (owner: this engine).
    pub(super) fn spawn_resubscriber(self: &Arc<Self>) {
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut errors = self.subscriber.error_rx();
        let cancel = self.cancel.clone();
        let this = Arc::downgrade(self);
        self.tasks.spawn(async move {
            // When the subscriber connection was last seen failing: the start of the gap.
            let mut gap_since: Option<std::time::Instant> = None;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    e = errors.recv() => {
                        if let Some(this) = this.upgrade() { this.subscriptions_ok.store(false, Ordering::SeqCst); }
                        gap_since.get_or_insert_with(std::time::Instant::now);
                        if matches!(e, Err(RecvError::Closed)) { break; }
                    }
                    r = reconnects.recv() => {
                        if matches!(r, Err(RecvError::Closed)) { break; }
                        let Some(this) = this.upgrade() else { break };
                        this.subscriptions_ok.store(false, Ordering::SeqCst);
                        let since = *gap_since.get_or_insert_with(std::time::Instant::now);
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
                        gap_since = None;
                        // Frames published to this node's rooms during the gap were lost
                        // (volatile ones for good; recoverable ones replay with `since`).
                        metrics::counter!("fleetcast_pubsub_resubscribed_total").increment(1);
                        metrics::histogram!("fleetcast_pubsub_gap_seconds").record(since.elapsed());
                        tracing::warn!(
                            gap_ms = since.elapsed().as_millis() as u64,
                            "redis subscriber connection was lost; room subscriptions restored"
                        );
                    }
                }
            }
        });
    }

    async fn resubscribe_and_verify(&self) -> std::result::Result<(), fred::error::Error> {
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
                    return Err(fred::error::Error::new(
                        fred::error::ErrorKind::Unknown,
                        "channel not subscribed after reconnect",
                    ));
                }
            }
        }
        drop(rooms);
        Ok(())
    }

    pub(in crate::engine) async fn publish(&self, room: &RoomKey, frame: &str) -> Result<()> {
        let started = std::time::Instant::now();
        let args = vec![self.keys.room_channel(room), frame.to_string(), self.clock.deadline()];
        let r: i64 = self
            .volatile_script
            .evalsha_with_reload(&self.client, Vec::<String>::new(), args)
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
            events.push((id, event, with_event_id(id, &tail)));
        }
        Ok(History { complete, events })
    }

    pub(in crate::engine) async fn hold_room(&self, room: &RoomKey) -> Result<()> {
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

    pub(in crate::engine) async fn release_room(&self, room: &RoomKey) {
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
}
