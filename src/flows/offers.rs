//! Offering trips to drivers (CONTRACT §2 `driver:subscribe`, `trip.offer.*`; §4
//! `broadcast-offer`, `accept`). Eligible drivers are subscribed on a live socket
//! (`SlotKind::Offers`, so a dead node's drivers drop out with its heartbeat), not busy,
//! with a fresh position in the engine's GEO index within their `maxDistance` (else the
//! round's radius), and whose filters match; the nearest K get the offer. Each round has a
//! deadline carried by a delayed job: when it passes unanswered, the round's drivers get
//! `trip.offer.expired {reason:"DEADLINE"}` and the trip is offered again in a doubled
//! radius, up to the configured number of rounds. Acceptance is one conditional update in
//! the database: exactly one winner cluster-wide.

use std::collections::HashSet;

use crate::app::App;
use crate::auth::Claims;
use crate::domain::rides::{Filters, MAX_FILTER_KM, TripStatus, haversine_km, offer, round_radius_km, urgency};
use crate::domain::{Role, Tenant, TripId, UserId, valid_id};
use crate::engine::SlotKind;
use crate::error::{Error, Result};
use crate::events::{ExpiryReason, OfferAccepted, OfferCreated, OfferExpired};
use crate::fanout;
use crate::jobs::OfferDeadline;
use crate::store::offers::AcceptOutcome;
use crate::store::rides::TripRow;

use super::status_events::{emit_status, status_updated};

/// One offer round's result (`broadcast-offer`'s answer).
#[derive(Debug, Clone, PartialEq)]
pub struct OfferRound {
    /// The drivers offered the trip, nearest first.
    pub drivers: Vec<String>,
    /// When this round's offers expire (ISO-8601).
    pub acceptance_deadline: String,
}

/// `driver:subscribe`: the socket's driver becomes eligible for offers while connected.
pub async fn subscribe(app: &App, who: &Claims, sid: &str, filters: &Filters) -> Result<()> {
    filters.validate()?;
    if who.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    app.db.ensure_driver(&who.tenant, &who.user.0, who.name.as_deref()).await?;
    let json = serde_json::to_string(filters).map_err(|_| Error::Internal)?;
    app.engine.set_offer_filters(&who.tenant, &who.user, &json).await?;
    app.engine.claim(SlotKind::Offers, &who.tenant, &who.user, sid, &[sid], u32::MAX).await?;
    super::presence::notice(app, &who.tenant, &who.user).await;
    Ok(())
}

/// `driver:unsubscribe` (or a disconnect): this socket no longer makes the driver eligible.
pub async fn unsubscribe(app: &App, who: &Claims, sid: &str) -> Result<()> {
    app.engine.release(SlotKind::Offers, &who.tenant, &who.user, sid, &[sid]).await?;
    super::presence::notice_loss(app, who).await;
    Ok(())
}

/// The nearest eligible drivers for `trip` in `round`, with their distances.
pub async fn eligible(app: &App, tenant: &Tenant, trip: &TripRow, round: u32) -> Result<Vec<(String, f64)>> {
    let radius = round_radius_km(app.cfg.offer_radius_km, round);
    let origin = (trip.origin_lat, trip.origin_lng);
    let candidates = app
        .engine
        .offer_candidates(tenant, origin.0, origin.1, radius.max(MAX_FILTER_KM), app.cfg.location_ttl_ms)
        .await?;
    let excluded: HashSet<String> = app.db.offered_drivers(tenant, &trip.id).await?.into_iter().collect();
    let earnings = trip.estimated_earnings.unwrap_or(trip.price_per_seat * f64::from(trip.total_seats));
    let mut ranked: Vec<(String, f64)> = candidates
        .into_iter()
        .filter(|c| !excluded.contains(&c.driver))
        .filter_map(|c| {
            let d = haversine_km(origin, (c.lat, c.lng));
            let filters: Filters = serde_json::from_str(&c.filters).unwrap_or_default();
            filters.admits(&trip.trip_type, d, radius, earnings).then_some((c.driver, d))
        })
        .collect();
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let k = app.cfg.offer_max_drivers as usize;
    let mut chosen = Vec::with_capacity(k);
    for (driver, d) in ranked {
        if chosen.len() == k {
            break;
        }
        let user = UserId(driver.clone());
        if app.engine.count_slots(SlotKind::Offers, tenant, &user).await? == 0 {
            continue;
        }
        if app.db.driver_busy(tenant, &driver).await? {
            continue;
        }
        chosen.push((driver, d));
    }
    Ok(chosen)
}

/// Runs one offer round of a trip: finds the drivers, records the offers, sends
/// `trip.offer.created` to each, and schedules the round's deadline.
pub async fn offer_round(app: &App, tenant: &Tenant, trip_id: &str, round: u32) -> Result<OfferRound> {
    let trip = app.db.get_trip(tenant, trip_id).await?.ok_or(Error::NotFound)?;
    if trip.status() != TripStatus::Published || trip.driver_id.is_some() {
        return Err(Error::Conflict("the trip is not open for offers".into()));
    }
    let chosen = eligible(app, tenant, &trip, round).await?;
    let now = chrono::Utc::now();
    let deadline_at = now + chrono::Duration::milliseconds(app.cfg.offer_deadline_ms as i64);
    let deadline = deadline_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if !app.db.record_offers(tenant, trip_id, round, &deadline, &chosen).await? {
        return Err(Error::Conflict("the trip is not open for offers".into()));
    }
    let departure = chrono::DateTime::parse_from_rfc3339(&trip.departure_time)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or(now);
    let urgency = urgency(departure - now);
    let earnings = trip.estimated_earnings.unwrap_or(trip.price_per_seat * f64::from(trip.total_seats));
    for (driver, km) in &chosen {
        let offer = OfferCreated {
            trip_id: &trip.id,
            trip_type: &trip.trip_type,
            title: &trip.title,
            origin_name: &trip.origin_name,
            dest_name: &trip.dest_name,
            distance_km: (km * 1000.0).round() / 1000.0,
            estimated_earnings: earnings,
            currency: &trip.currency,
            urgency,
            acceptance_deadline: &deadline,
            seats: trip.available_seats,
        };
        fanout::publish_to_users(&app.engine, tenant, &[driver.as_str()], &offer).await;
    }
    metrics::counter!("fleetcast_offers_sent_total").increment(chosen.len() as u64);
    if !chosen.is_empty() || round < app.cfg.offer_rounds {
        let job = OfferDeadline {
            tenant: tenant.0.clone(),
            trip_id: trip_id.to_string(),
            round,
            due_ms: deadline_at.timestamp_millis(),
        };
        let delay = std::time::Duration::from_millis(app.cfg.offer_deadline_ms);
        if let Err(e) = app.offer_jobs.push_offer_deadline(&job, delay).await {
            // Offers stay open until accepted or a later broadcast supersedes them.
            tracing::error!(error = %e, trip = trip_id, "offer deadline not scheduled");
        }
    }
    Ok(OfferRound { drivers: chosen.into_iter().map(|(d, _)| d).collect(), acceptance_deadline: deadline })
}

/// `POST /api/trips/{id}/broadcast-offer` (organizer, ADMIN, SERVICE): a new round now.
pub async fn broadcast(app: &App, who: &Claims, trip_id: &str) -> Result<OfferRound> {
    if !matches!(who.role, Role::Admin | Role::Service | Role::Passenger | Role::Business) {
        return Err(Error::Forbidden);
    }
    let trip = app.db.get_trip(&who.tenant, trip_id).await?.ok_or(Error::NotFound)?;
    if !matches!(who.role, Role::Admin | Role::Service) && trip.organizer_id != who.user.0 {
        return Err(Error::Forbidden);
    }
    let round = trip.offer_round.map_or(0, |r| r.max(0) as u32 + 1);
    offer_round(app, &who.tenant, trip_id, round).await
}

/// The deadline of a round passed: its unanswered offers expire (`DEADLINE`) and, while
/// rounds remain, the trip is offered again in a wider radius. Does nothing when the trip
/// was taken, cancelled, or moved to a later round meanwhile.
pub async fn on_deadline(app: &App, job: &OfferDeadline) -> Result<()> {
    let early = job.due_ms - chrono::Utc::now().timestamp_millis();
    if early > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(early.min(2_000) as u64)).await;
    }
    let tenant = Tenant(job.tenant.clone());
    let Some(expired) = app.db.expire_round(&tenant, &job.trip_id, job.round).await? else {
        return Ok(());
    };
    let drivers: Vec<&str> = expired.iter().map(String::as_str).collect();
    let expired = OfferExpired { trip_id: &job.trip_id, reason: ExpiryReason::Deadline };
    fanout::publish_to_users(&app.engine, &tenant, &drivers, &expired).await;
    metrics::counter!("fleetcast_offers_expired_total").increment(drivers.len() as u64);
    if job.round < app.cfg.offer_rounds {
        match offer_round(app, &tenant, &job.trip_id, job.round + 1).await {
            Ok(_) | Err(Error::Conflict(_)) | Err(Error::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `trip:offer:decline`: never offer this trip to this driver again.
pub async fn decline(app: &App, who: &Claims, trip_id: &str) -> Result<()> {
    if !valid_id(trip_id) {
        return Err(Error::invalid("tripId must be 1–128 characters"));
    }
    if who.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    app.db.get_trip(&who.tenant, trip_id).await?.ok_or(Error::NotFound)?;
    app.db.decline_offer(&who.tenant, trip_id, &who.user.0).await
}

/// `trip:offer:accept` / `POST /api/drivers/trips/accept/{tripId}`: the first acceptance
/// wins cluster-wide.
pub async fn accept(app: &App, who: &Claims, trip_id: &str) -> Result<TripRow> {
    if !valid_id(trip_id) {
        return Err(Error::invalid("tripId must be 1–128 characters"));
    }
    if who.role != Role::Driver {
        return Err(Error::Forbidden);
    }
    app.db.get_trip(&who.tenant, trip_id).await?.ok_or(Error::NotFound)?;
    match app.db.offer_state(&who.tenant, trip_id, &who.user.0).await?.as_deref() {
        None | Some(offer::DECLINED) => return Err(Error::Forbidden),
        Some(offer::EXPIRED) => return Err(Error::Conflict("the offer expired".into())),
        Some(_) => {}
    }
    let (row, others) = match app.db.accept_trip(&who.tenant, trip_id, &who.user.0, who.name.as_deref()).await? {
        AcceptOutcome::Won(row, others) => (*row, others),
        AcceptOutcome::Taken => return Err(Error::Conflict("the trip was already taken".into())),
        AcceptOutcome::DriverBusy => return Err(Error::Conflict("the driver is busy with another trip".into())),
    };
    app.access.invalidate(&who.tenant, &TripId(trip_id.into()));
    metrics::counter!("fleetcast_offers_accepted_total").increment(1);
    let tenant = &who.tenant;
    let me = [who.user.0.as_str()];
    fanout::publish_to_users(&app.engine, tenant, &me, &OfferAccepted { trip_id }).await;
    let losers: Vec<&str> = others.iter().map(String::as_str).collect();
    let taken = OfferExpired { trip_id, reason: ExpiryReason::Taken };
    fanout::publish_to_users(&app.engine, tenant, &losers, &taken).await;
    let event = status_updated(&row, TripStatus::Published, None, who.name.as_deref());
    emit_status(app, tenant, &row, &event).await;
    super::presence::notice(app, tenant, &who.user).await;
    Ok(row)
}
