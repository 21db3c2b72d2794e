//! `POST /api/dev/token`: the pages' "sign in as" form. Only an embedded node that verifies
//! with the public development secret mints tokens (anyone could forge those anyway); in
//! every other configuration the route answers the JSON 404, as if it did not exist.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::body::body;
use crate::app::App;
use crate::error::{Error, Result};
use crate::mint::{DEV_TOKEN_MAX_TTL, Signer, TokenClaims};

/// Lifetime of a development token unless asked otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// `POST /api/dev/token` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevTokenIn {
    sub: String,
    role: String,
    name: Option<String>,
    tenant: Option<String>,
    /// Seconds, at most 12 h (default 1 h).
    ttl_secs: Option<u64>,
}

/// A minted development token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DevToken {
    token: String,
    /// `exp`, seconds since the epoch.
    exp: i64,
}

/// `POST /api/dev/token`.
#[utoipa::path(post, path = "/api/dev/token", tag = "pages", request_body = DevTokenIn,
    responses((status = 200, body = DevToken), (status = 400, body = super::error::ErrorBody),
        (status = 404, description = "not an embedded node with the development secret", body = super::error::ErrorBody)))]
pub async fn token(State(app): State<Arc<App>>, raw: Bytes) -> Response {
    let Some(signer) = Signer::development(&app.cfg) else {
        return super::ops::not_found().await.into_response();
    };
    match mint(&signer, &raw) {
        Ok(t) => Json(t).into_response(),
        Err(e) => e.into_response(),
    }
}

fn mint(signer: &Signer, raw: &Bytes) -> Result<DevToken> {
    let req: DevTokenIn = body(raw)?;
    let ttl = req.ttl_secs.map_or(DEFAULT_TTL, Duration::from_secs);
    if ttl.is_zero() || ttl > DEV_TOKEN_MAX_TTL {
        return Err(Error::invalid("ttlSecs must be 1-43200"));
    }
    let claims = TokenClaims::new(&req.sub, &req.role, ttl)
        .and_then(|c| c.tenant(req.tenant.as_deref()))
        .and_then(|c| c.name(req.name.as_deref()))
        .map_err(|e| Error::invalid(e.to_string()))?;
    let exp = claims.exp;
    let token = signer.sign(claims).map_err(|e| {
        tracing::error!(error = %e, "signing a development token");
        Error::Internal
    })?;
    Ok(DevToken { token, exp })
}
