//! Acks (CONTRACT §2 "Acknowledgements"): every event passes the socket's flood limiter,
//! runs under the ack deadline, and is answered once with `{ok:true, …}` or `{ok:false,
//! error, message?, retryAfterMs?}`.

use std::time::Duration;

use serde_json::{Map, Value};
use socketioxide::extract::AckSender;

use super::edge::Edge;
use super::session::Session;
use crate::error::{Error, Result};

/// What a handler answers: the ack's fields besides `ok`.
pub(super) type Reply = Result<Map<String, Value>>;

/// `{ok:true}` with nothing else.
pub(super) fn ok() -> Reply {
    Ok(Map::new())
}

/// An ack answers within this bound even when a dependency hangs (contract: 5 s).
const ACK_DEADLINE: Duration = Duration::from_millis(4_500);

/// Answers an ack (if the client asked for one) with the contract's shape.
pub(super) fn send_ack(ack: AckSender, result: Result<Map<String, Value>>) {
    let body = match result {
        Ok(mut extra) => {
            extra.insert("ok".into(), Value::Bool(true));
            metrics::counter!("fleetcast_acks_total", "code" => "OK").increment(1);
            Value::Object(extra)
        }
        Err(e) => {
            metrics::counter!("fleetcast_acks_total", "code" => e.code()).increment(1);
            if let Error::RateLimited { .. } = e {
                metrics::counter!("fleetcast_rate_limited_total").increment(1);
            }
            e.refusal()
        }
    };
    // The client may not have asked for an ack; then there is nothing to answer.
    let _ = ack.send(&body);
}

/// Runs one event: flood check, bounded handler, ack. The event counts as in flight until
/// answered, so a draining node answers it before closing the socket; once the node is
/// shutting down new events are answered `UNAVAILABLE` (not applied: retry after the
/// reconnect).
pub(super) async fn run_event<F>(edge: &Edge, name: &'static str, session: &Session, ack: AckSender, fut: F)
where
    F: std::future::Future<Output = Result<Map<String, Value>>>,
{
    metrics::counter!("fleetcast_events_in_total", "event" => name).increment(1);
    // The token first, then the flag: the drain waits for every event that saw it unset.
    let _in_flight = edge.in_flight.token();
    if edge.app.shutting_down() {
        send_ack(ack, Err(Error::Unavailable));
        return;
    }
    let result = match session.limiter.check() {
        Err(not_until) => {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(session.limiter.clock()));
            Err(Error::RateLimited { retry_after_ms: (wait.as_millis() as u64).max(1) })
        }
        Ok(()) => match tokio::time::timeout(ACK_DEADLINE, fut).await {
            Ok(r) => r,
            Err(_) => {
                crate::telemetry::storm::warn_storm!(event = name, "handler exceeded the ack deadline");
                Err(Error::Unavailable)
            }
        },
    };
    send_ack(ack, result);
}
