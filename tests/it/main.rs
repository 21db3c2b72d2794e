//! fleetcast integration tests: one binary, one file per behaviour. Scenarios run against
//! an embedded node, a two-node cluster on one Redis and a two-node cluster on a Redis
//! Cluster (see `common`).

mod common;

mod areas;
mod auth;
mod binary;
mod cluster;
mod delivery;
mod dispatch;
mod fault;
mod history;
mod interop_js;
mod keys;
mod layers;
mod limits;
mod monitoring;
mod ops;
mod outage;
mod pages;
mod presence;
mod publish;
mod recovery;
mod rides;
mod snapshots;
mod sse;
mod stall;
mod validation;
