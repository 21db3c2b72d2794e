//! HTTP and SSE identity (CONTRACT §1): the token from `Authorization: Bearer`, else the
//! `?token=` query parameter, else the `fleetcast_token` cookie (EventSource cannot set
//! headers). A missing token is 401 `NO_TOKEN`, a bad one 401 `INVALID_TOKEN`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::App;
use crate::auth::{AuthError, Claims};

/// The verified caller of an HTTP request.
pub struct Caller(pub Claims);

/// Claims a middleware already verified for this request (the write routes' throttle), so
/// that [`Caller`] does not verify the token a second time.
#[derive(Clone)]
pub(super) struct Verified(pub(super) Claims);

/// The request's token as sent (header, query or cookie), not yet verified.
pub(super) fn token_from(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    if let Some(h) = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()) {
        return Some(h.to_string());
    }
    if let Some(q) = uri.query() {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                return Some(percent_decode(v));
            }
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|c| c.trim().strip_prefix("fleetcast_token=").map(percent_decode))
}

/// Minimal `%XX` decoding (tokens are base64url, so this rarely matters).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Self::Rejection> {
        if let Some(Verified(claims)) = parts.extensions.remove::<Verified>() {
            return Ok(Caller(claims));
        }
        let code = match token_from(&parts.headers, &parts.uri).map(|t| app.verifier.verify(&t)) {
            Some(Ok(claims)) => return Ok(Caller(claims)),
            None | Some(Err(AuthError::NoToken)) => "NO_TOKEN",
            Some(Err(AuthError::InvalidToken)) => "INVALID_TOKEN",
        };
        Err((StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": code, "message": "authentication required" })))
            .into_response())
    }
}
