//! fleetcast: a realtime gateway for mobility apps.
//!
//! Module map, one concept each, from the edges down (`ARCHITECTURE.md` has the layers,
//! the rules on which may import which, and where each contract event is handled):
//! - edges, each knowing its own wire types: [`socket`] (Socket.IO), [`sse`] (EventSource
//!   streams), [`http`] (the JSON API and operations routes), [`web`] (the pages every node
//!   serves: console, driver dashboard, trip tracker);
//! - [`flows`]: what each contract action does (trips, bookings, offers, scans,
//!   subscriptions, chat, driving, presence, publishing, stats), domain values in and out;
//! - [`app`]: the state flows and edges share; [`access`]: who may touch a trip; [`pace`]:
//!   drivers' recent speeds (trip ETAs); [`notices`]: drivers whose availability is to be
//!   derived again in the next batch;
//! - [`fanout`]: the one publish path, and local delivery to the edges' sinks;
//! - [`events`]: every server→client event, its name and typed payload;
//! - [`engine`]: shared state and room pub/sub, memory or Redis; [`store`]: the database;
//!   [`jobs`]: job types, the enqueue handle and the queue consumers; [`snapshots`]: the
//!   node's sampled-position buffer;
//! - [`domain`]: ids, roles, rooms, positions, ride rules; [`auth`]: tokens; [`mint`]:
//!   issuing them;
//!   [`limits`]: payload limits and client addresses; [`listener`]: the TCP listener that
//!   cuts off clients that stop reading; [`error`]: the one error type; [`config`]: the one
//!   `Config`; [`telemetry`]: logs and metrics;
//! - [`node`]: starts and stops a node (the only module that knows every layer).
//!
//! [`run`] serves until a shutdown token fires.

use tokio_util::sync::CancellationToken;

pub mod access;
pub mod app;
pub mod auth;
pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod events;
pub mod fanout;
pub mod flows;
pub mod http;
pub mod jobs;
pub mod limits;
pub mod listener;
pub mod mint;
pub mod node;
pub mod notices;
pub mod pace;
pub mod snapshots;
pub mod socket;
pub mod sse;
pub mod store;
pub mod telemetry;
pub mod web;

pub use app::App;
pub use node::{Node, StartError, shutdown_signal, start};

/// Serves until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(cfg: config::Config, shutdown: CancellationToken) -> Result<(), StartError> {
    let node = start(cfg).await?;
    shutdown.cancelled().await;
    node.shutdown().await;
    Ok(())
}
