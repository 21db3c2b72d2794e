//! The OpenAPI document of the whole HTTP API (CONTRACT §4), generated from the handlers'
//! annotations and served at `/api/openapi.json`.

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
        super::healthz, super::readyz, super::metrics, super::admin::stats,
        super::rides::create_trip, super::rides::get_trip, super::rides::broadcast_offer, super::rides::accept,
        super::rides::change_status, super::rides::book, super::rides::patch_booking, super::rides::cancel_booking,
        super::track::track, super::publish::emit, super::publish::order, super::publish::run,
        crate::sse::trip_status, crate::sse::order, crate::sse::run, crate::sse::driver_location,
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// `GET /api/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn the_document_lists_every_route() {
        let doc = serde_json::to_value(super::ApiDoc::openapi()).expect("serializes");
        let paths = doc["paths"].as_object().expect("paths");
        for p in
            ["/api/trips", "/api/trips/{id}", "/api/bookings", "/api/drivers/trips/{tripId}/status", "/api/v1/emit"]
        {
            assert!(paths.contains_key(p), "{p} missing");
        }
        assert!(doc["components"]["schemas"]["Trip"].is_object());
    }
}
