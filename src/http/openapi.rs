//! The OpenAPI document of the HTTP API (CONTRACT §4), generated from the handlers'
//! annotations; the node merges the SSE edge's into it and it is served at
//! `/api/openapi.json`. A test checks the served document against the route tables.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "fleetcast", description = "Realtime gateway for mobility apps: HTTP API (the Socket.IO \
        events are in CONTRACT.md). Tokens: `Authorization: Bearer`, `?token=` or the `fleetcast_token` cookie."),
    paths(
        super::ops::healthz, super::ops::readyz, super::ops::metrics, super::admin::stats,
        super::rides::create_trip, super::rides::get_trip, super::rides::broadcast_offer, super::rides::accept,
        super::rides::change_status, super::rides::book, super::rides::patch_booking, super::rides::cancel_booking,
        super::track::track, super::publish::emit, super::publish::order, super::publish::run,
        super::publish::notify, super::ingest::own, super::ingest::batch, super::rides::decline,
        super::drivers::list, super::admin::inspect_trip, super::rides::trip_bookings, super::tickets::ticket_svg,
        super::dev::token,
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The HTTP edge's document (with the bearer scheme every route uses).
pub fn http_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/openapi.json`: the node's whole document.
pub(super) async fn serve(
    axum::Extension(doc): axum::Extension<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}
