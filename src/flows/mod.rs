//! The flows: what the contract's actions do, shared by every edge. A flow takes validated
//! domain values and the caller's [`crate::auth::Claims`], checks role, existence and
//! ownership in the contract's order, writes, and emits its events through
//! [`crate::fanout`]; it returns domain values, never wire shapes.
//!
//! - [`areas`]: live areas (`area:subscribe`, the SSE area stream) and their tick.
//! - [`driving`]: `driver:connect`, `driver:location:update`, `driver:status`.
//! - [`subscriptions`]: who may watch a trip, the subscription cap, current positions.
//! - [`chat`]: `chat:typing`, `chat:read`.
//! - [`trips`]: create and read trips, the status machine (`status_events`: the
//!   `trip.status.updated` it and an accepted offer emit).
//! - [`bookings`]: book and cancel.
//! - [`offers`]: offer subscription, rounds and deadlines, decline, the one-winner accept.
//! - [`presence`]: drivers' availability, its sweep and `GET /api/v1/drivers`.
//! - [`scan`]: the `conductor:scan` check.
//! - [`publish`]: the publish API's emission.
//! - [`inspect`]: the console's trip inspector.
//! - [`stats`]: this node's figures for the admin stats and the node registry.

pub mod areas;
pub mod bookings;
pub mod chat;
pub mod driving;
pub mod inspect;
pub mod offers;
pub mod presence;
pub mod publish;
pub mod scan;
pub mod stats;
mod status_events;
pub mod subscriptions;
pub mod trips;
