//! `GET /api/bookings/{id}/ticket.svg`: a booking's ticket as a QR code (an SVG image that
//! encodes its `ticketToken`, what `conductor:scan` reads), for the passenger's tracker page
//! and for printing. Who may see it is `flows::bookings::ticket_of`'s rule.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use super::auth::Caller;
use super::rides::path_id;
use crate::app::App;
use crate::error::{Error, Result};
use crate::flows::bookings;

/// The QR code of `text` as an SVG document (quiet zone included, at least 240 px).
pub fn qr_svg(text: &str) -> Result<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| Error::invalid(format!("ticket cannot be encoded: {e}")))?;
    Ok(code.render::<svg::Color<'_>>().min_dimensions(240, 240).quiet_zone(true).build())
}

/// `GET /api/bookings/{id}/ticket.svg`.
#[utoipa::path(get, path = "/api/bookings/{id}/ticket.svg", tag = "bookings", params(("id" = String, Path)),
    responses((status = 200, description = "the ticket token as a QR code", content_type = "image/svg+xml"),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn ticket_svg(State(app): State<Arc<App>>, who: Caller, Path(id): Path<String>) -> Result<Response> {
    let booking = bookings::ticket_of(&app, &who.0, path_id(&id)?).await?;
    let token = booking.ticket_token.ok_or(Error::NotFound)?;
    let svg = qr_svg(&token)?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "private, max-age=300")], svg)
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::qr_svg;

    #[test]
    fn a_ticket_renders_as_an_svg_qr_code() {
        let svg = qr_svg("eyJhbGciOiJIUzI1NiJ9.eyJiIjoiYjEifQ.sig").expect("svg");
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
        assert!(
            svg.contains("width=\"2") || svg.contains("width=\"3"),
            "at least 240 px: {}",
            &svg[..200.min(svg.len())]
        );
        assert_ne!(qr_svg("a").expect("a"), qr_svg("b").expect("b"));
    }
}
