//! `conductor:scan {token}` (CONTRACT §2): a conductor checks a ticket token; a CONFIRMED
//! booking of the tenant is boarded once (a conditional update, so two scans at once board
//! it once). Anything else is answered, never an error: forged or foreign tickets are
//! `Invalid`, other bookings come back with the reason they do not board.

use crate::app::App;
use crate::auth::Claims;
use crate::domain::Role;
use crate::domain::rides::booking;
use crate::error::{Error, Result};
use crate::store::rides::BookingRow;

/// Longest ticket token accepted, bytes.
const MAX_TOKEN: usize = 4096;

/// What a scan found.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanOutcome {
    /// Not a ticket of this tenant, or no such booking; the reason.
    Invalid(&'static str),
    /// The ticket's booking.
    Booking {
        /// This scan boarded the passenger.
        boarded: bool,
        /// The booking as it is now.
        booking: Box<BookingRow>,
        /// Why the ticket does not board, unless it did.
        message: Option<String>,
    },
}

/// Checks `token` and boards its booking when it is CONFIRMED.
pub async fn scan(app: &App, who: &Claims, token: &str) -> Result<ScanOutcome> {
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(Error::invalid("token must be 1–4096 bytes"));
    }
    if who.role != Role::Conductor {
        return Err(Error::Forbidden);
    }
    let Some(ticket) = app.tickets.verify(token).filter(|t| t.tenant == who.tenant.0) else {
        metrics::counter!("fleetcast_ticket_scans_total", "result" => "invalid").increment(1);
        return Ok(ScanOutcome::Invalid("invalid ticket"));
    };
    let Some(current) = app.db.get_booking(&who.tenant, &ticket.bid).await? else {
        return Ok(ScanOutcome::Invalid("invalid ticket: no such booking"));
    };
    let (boarded, b) = if current.status == booking::CONFIRMED {
        match app.db.board(&who.tenant, &ticket.bid).await? {
            Some(b) => (true, b),
            // Boarded by a concurrent scan a moment ago.
            None => (false, app.db.get_booking(&who.tenant, &ticket.bid).await?.unwrap_or(current)),
        }
    } else {
        (false, current)
    };
    let message = match b.status.as_str() {
        _ if boarded => None,
        booking::BOARDED => Some("already boarded".to_string()),
        booking::PENDING => Some("booking not confirmed yet: the trip has no driver".to_string()),
        booking::CANCELLED => Some("booking cancelled".to_string()),
        booking::COMPLETED => Some("trip already completed".to_string()),
        other => Some(format!("booking is {other}")),
    };
    metrics::counter!("fleetcast_ticket_scans_total", "result" => if boarded { "boarded" } else { "refused" })
        .increment(1);
    Ok(ScanOutcome::Booking { boarded, booking: Box::new(b), message })
}
