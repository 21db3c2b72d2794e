//! Keeps fred's connection task of each client running. fred ends that task for good when a
//! command meets an error it does not retry (fred 10.1: an `ASK` redirect, met while a
//! Redis Cluster slot migrates, with no write attempt left fails the whole task, not only
//! the command); the client then never writes again and every later command waits out
//! its timeout. The task is started again here, after a short pause; its connections
//! announce themselves as reconnects, so the room subscriptions are restored as after any
//! reconnect. Each restart is counted in `fleetcast_redis_router_restarts_total{client}`.

use std::time::Duration;

use fred::prelude::*;
use fred::types::ConnectHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pause before a restart (the reconnect policy's delay).
const RESTART_AFTER: Duration = Duration::from_millis(100);

/// Watches `first` (the task `client.connect()` started) and starts it again whenever it
/// ends before `cancel`.
pub(super) fn supervise<C>(
    tasks: &TaskTracker,
    cancel: CancellationToken,
    client: C,
    first: ConnectHandle,
    name: &'static str,
) where
    C: ClientLike + Send + Sync + 'static,
{
    tasks.spawn(async move {
        let mut task = first;
        loop {
            let ended = tokio::select! {
                _ = cancel.cancelled() => return,
                ended = &mut task => ended,
            };
            if cancel.is_cancelled() {
                return;
            }
            let error = match ended {
                Ok(Ok(())) => "ended".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            metrics::counter!("fleetcast_redis_router_restarts_total", "client" => name).increment(1);
            tracing::error!(client = name, error, "redis connection task ended; starting it again");
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RESTART_AFTER) => {}
            }
            task = client.connect();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose connection task ended (here by `QUIT`, as an error would end it) is
    /// served again. Needs the Redis of our machines on 127.0.0.1:6379 (only `PING`).
    #[tokio::test]
    async fn a_connection_task_that_ends_is_started_again() {
        let config = Config::from_url("redis://127.0.0.1:6379").expect("url");
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(1))
            .build()
            .expect("client");
        let first = client.connect();
        client.wait_for_connect().await.expect("redis on 127.0.0.1:6379");
        let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
        supervise(&tasks, cancel.clone(), client.clone(), first, "test");
        client.quit().await.expect("quit");
        let started = std::time::Instant::now();
        while client.ping::<String>(None).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(5), "not served again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
        client.quit().await.expect("quit");
    }
}
