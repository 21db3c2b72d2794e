//! The HTTP edge's rate limits (CONTRACT §4 429): every write route (each `POST`, `PUT` and
//! `PATCH` of [`super::ROUTES`]) passes a per-client-address and a per-user limiter before its
//! handler runs; a refusal is 429 `{"error":"RATE_LIMITED"}` with `Retry-After`, and the
//! handler never runs. Callers with a `SERVICE` token skip both when the node is configured
//! so (`--http-rate-exempt-service`, for trusted backends). The limits are per node, like
//! the socket edge's connection limit (a balancer over N nodes lets a client N times the
//! rate at most); a token it verified is handed to the handler's `Caller` (checked once),
//! and a request without a valid token is only counted against its address (its handler
//! answers 401).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::DefaultKeyedRateLimiter;
use governor::clock::{Clock, DefaultClock};

use super::auth::Verified;
use crate::app::App;
use crate::domain::Role;
use crate::error::Error;
use crate::limits::keyed_limiter;

/// The node's HTTP write limiters.
pub struct Throttle {
    app: Arc<App>,
    per_user: Option<DefaultKeyedRateLimiter<(String, String)>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl Throttle {
    /// The limiters `app`'s configuration asks for.
    pub fn new(app: Arc<App>) -> Arc<Self> {
        let c = &app.cfg;
        let per_user = keyed_limiter(c.http_rate_per_user_per_sec, c.http_rate_per_user_burst);
        let per_address = keyed_limiter(c.http_rate_per_address_per_sec, c.http_rate_per_address_burst);
        Arc::new(Self { app, per_user, per_address, clock: DefaultClock::default() })
    }

    /// Forgets idle keys (called by the node's heartbeat, as for the connection limiter).
    pub fn retain_recent(&self) {
        if let Some(l) = &self.per_user {
            l.retain_recent();
        }
        if let Some(l) = &self.per_address {
            l.retain_recent();
        }
    }

    /// `Err(wait in ms)` when this request is over a limit.
    fn check(&self, req: &mut Request) -> Result<(), u64> {
        let exempt_service = self.app.cfg.http_rate_exempt_service;
        // The caller matters only to the per-user limit and the exemption.
        let caller = if self.per_user.is_some() || exempt_service {
            super::auth::token_from(req.headers(), req.uri()).and_then(|t| self.app.verifier.verify(&t).ok())
        } else {
            None
        };
        if let Some(c) = &caller {
            req.extensions_mut().insert(Verified(c.clone()));
        }
        if exempt_service && caller.as_ref().is_some_and(|c| c.role == Role::Service) {
            return Ok(());
        }
        let wait = |not_until: governor::NotUntil<_>| not_until.wait_time_from(self.clock.now()).as_millis() as u64;
        if let Some(l) = &self.per_address
            && let Some(ip) =
                crate::limits::client_ip(req.headers(), req.extensions(), self.app.cfg.trust_forwarded_for)
        {
            l.check_key(&ip).map_err(wait)?;
        }
        if let (Some(l), Some(c)) = (&self.per_user, caller) {
            l.check_key(&(c.tenant.0, c.user.0)).map_err(wait)?;
        }
        Ok(())
    }
}

/// The middleware of every write route.
pub async fn limit(State(throttle): State<Arc<Throttle>>, mut req: Request, next: Next) -> Response {
    match throttle.check(&mut req) {
        Ok(()) => next.run(req).await,
        Err(wait_ms) => {
            metrics::counter!("fleetcast_http_rate_limited_total").increment(1);
            Error::RateLimited { retry_after_ms: wait_ms.max(1) }.into_response()
        }
    }
}
