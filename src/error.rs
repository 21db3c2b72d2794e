//! The one error type below the edges. Each variant names its contract code (CONTRACT §2
//! acks, §4 HTTP errors); `socket` maps it to an ack, `http` to a status and JSON body.
//! Details of `Internal` are logged where they happen and never sent to clients.

/// A failed client action, by contract code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Payload shape or value is wrong; the message says which field.
    #[error("INVALID_PAYLOAD: {0}")]
    InvalidPayload(String),
    /// A payload larger than its bound (HTTP 413; the code is still `INVALID_PAYLOAD`).
    #[error("INVALID_PAYLOAD: {0}")]
    TooLarge(String),
    /// A token that is not valid for this (`auth:refresh`).
    #[error("INVALID_TOKEN")]
    InvalidToken,
    /// The caller may not do this.
    #[error("FORBIDDEN")]
    Forbidden,
    /// Unknown id, or an id of another tenant (existence does not leak).
    #[error("NOT_FOUND")]
    NotFound,
    /// A rate limit refused the action; retry after the given delay.
    #[error("RATE_LIMITED")]
    RateLimited {
        /// Milliseconds until a retry can succeed.
        retry_after_ms: u64,
    },
    /// The user already holds the maximum number of trip subscriptions.
    #[error("SUBSCRIPTION_LIMIT")]
    SubscriptionLimit,
    /// The action conflicts with the current state.
    #[error("CONFLICT: {0}")]
    Conflict(String),
    /// Not enough seats left on the trip (HTTP only).
    #[error("NO_SEATS")]
    NoSeats,
    /// The trip status cannot move to the asked one (HTTP only).
    #[error("INVALID_TRANSITION: {0}")]
    InvalidTransition(String),
    /// A dependency (Redis, the database) is unreachable or too slow.
    #[error("UNAVAILABLE")]
    Unavailable,
    /// A bug or an unexpected failure; details are in the log.
    #[error("INTERNAL")]
    Internal,
}

impl Error {
    /// The contract code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidPayload(_) | Error::TooLarge(_) => "INVALID_PAYLOAD",
            Error::InvalidToken => "INVALID_TOKEN",
            Error::Forbidden => "FORBIDDEN",
            Error::NotFound => "NOT_FOUND",
            Error::RateLimited { .. } => "RATE_LIMITED",
            Error::SubscriptionLimit => "SUBSCRIPTION_LIMIT",
            Error::Conflict(_) => "CONFLICT",
            Error::NoSeats => "NO_SEATS",
            Error::InvalidTransition(_) => "INVALID_TRANSITION",
            Error::Unavailable => "UNAVAILABLE",
            Error::Internal => "INTERNAL",
        }
    }

    /// A message safe to send to the client, if any.
    pub fn message(&self) -> Option<String> {
        match self {
            Error::InvalidPayload(m) | Error::TooLarge(m) | Error::Conflict(m) | Error::InvalidTransition(m) => {
                Some(m.clone())
            }
            Error::NoSeats => Some("not enough seats left".into()),
            Error::SubscriptionLimit => Some("too many active trip subscriptions".into()),
            Error::Unavailable => Some("a dependency is unavailable, retry later".into()),
            _ => None,
        }
    }

    /// The contract's refusal object `{ok:false, error, message?, retryAfterMs?}` (CONTRACT
    /// §2 acks, §7 per-update batch results).
    pub fn refusal(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "ok": false, "error": self.code() });
        if let Some(m) = self.message() {
            v["message"] = m.into();
        }
        if let Error::RateLimited { retry_after_ms } = self {
            v["retryAfterMs"] = (*retry_after_ms).into();
        }
        v
    }

    /// Shorthand for an invalid payload.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidPayload(msg.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                crate::telemetry::storm::warn_storm!(error = %e, "database unavailable");
                Error::Unavailable
            }
            other => {
                tracing::error!(error = %other, "database error");
                Error::Internal
            }
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
