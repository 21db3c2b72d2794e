//! The one mapping of [`Error`] to an HTTP response: `{"error": CODE, "message": …}` with the
//! contract's status (CONTRACT §4). 5xx details stay in the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::Error;

/// The contract's error body (for the OpenAPI document; responses are built below).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// `INVALID_PAYLOAD`, `NO_TOKEN`, `INVALID_TOKEN`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `NO_SEATS`, `INVALID_TRANSITION`, `RATE_LIMITED`, `UNAVAILABLE` or `INTERNAL`.
    error: String,
    /// What went wrong.
    message: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::InvalidPayload(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InvalidToken => StatusCode::UNAUTHORIZED,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::SubscriptionLimit | Error::Conflict(_) | Error::NoSeats | Error::InvalidTransition(_) => {
                StatusCode::CONFLICT
            }
            Error::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = self.message().unwrap_or_else(|| match self {
            Error::Forbidden => "not allowed".into(),
            Error::NotFound => "not found".into(),
            Error::Internal => "internal error".into(),
            _ => self.code().to_lowercase(),
        });
        let mut body = json!({ "error": self.code(), "message": message });
        let Error::RateLimited { retry_after_ms } = self else {
            return (status, axum::Json(body)).into_response();
        };
        // CONTRACT §7: a 429 also says when to retry in milliseconds, besides `Retry-After`.
        body["retryAfterMs"] = json!(retry_after_ms);
        let mut resp = (status, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after_ms.div_ceil(1000).max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
