//! Trips and bookings in the database (CONTRACT §4); drivers and offers are in `offers`. Every change that
//! must be all-or-nothing is one transaction whose first statement is a conditional write
//! (so SQLite takes its write lock at once and Postgres row locks order concurrent
//! callers): seats are decremented with `available_seats >= n` in the `WHERE`, a trip is
//! taken with `driver_id IS NULL`, a status moves only from the status it was read in.
//!
//! SQL is written once in the Postgres form; [`sql`] adapts it for SQLite (times are
//! ISO-8601 text there). `TS(col)` reads a time column as the contract's ISO string.

use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::Db;
use crate::domain::Tenant;
use crate::domain::rides::{TripPlan, TripStatus, booking};
use crate::error::Result;

/// The statement for `db`: `TS(col)` becomes an ISO-8601 read of `col` aliased to its
/// name, and SQLite drops the `::timestamptz` casts.
pub(super) fn sql(db: &Db, text: &str) -> AssertSqlSafe<String> {
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(i) = rest.find("TS(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let end = after.find(')').unwrap_or(after.len());
        let col = &after[..end];
        let alias = col.rsplit('.').next().unwrap_or(col);
        match db {
            Db::Pg(_) => out.push_str(&format!(
                "to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS {alias}"
            )),
            Db::Sqlite(_) => out.push_str(&format!("{col} AS {alias}")),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    if matches!(db, Db::Sqlite(_)) {
        out = out.replace("::timestamptz", "");
    }
    AssertSqlSafe(out)
}

pub(super) const TRIP_COLS: &str = "id, trip_type, title, status, origin_name, origin_lat, origin_lng, dest_name, dest_lat, \
     dest_lng, TS(departure_time), total_seats, available_seats, price_per_seat, currency, estimated_earnings, \
     organizer_id, driver_id, TS(created_at), TS(updated_at), offer_round";

const BOOKING_COLS: &str = "id, trip_id, passenger_id, passenger_name, seats_booked, seat_number, status, \
     reference_code, ticket_token, pickup_point, drop_point, price, TS(created_at)";

/// A trip row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
#[allow(missing_docs)]
pub struct TripRow {
    pub id: String,
    pub trip_type: String,
    pub title: String,
    pub status: String,
    pub origin_name: String,
    pub origin_lat: f64,
    pub origin_lng: f64,
    pub dest_name: String,
    pub dest_lat: f64,
    pub dest_lng: f64,
    pub departure_time: String,
    pub total_seats: i32,
    pub available_seats: i32,
    pub price_per_seat: f64,
    pub currency: String,
    pub estimated_earnings: Option<f64>,
    pub organizer_id: String,
    pub driver_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub offer_round: Option<i32>,
}

impl TripRow {
    /// The status, as an enum (unknown stored values read as `DRAFT`, which nothing acts on).
    pub fn status(&self) -> TripStatus {
        self.status.parse().unwrap_or(TripStatus::Draft)
    }
}

/// A booking row (its wire form: CONTRACT §6 "Booking").
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct BookingRow {
    pub id: String,
    pub trip_id: String,
    pub passenger_id: String,
    pub passenger_name: Option<String>,
    pub seats_booked: i32,
    pub seat_number: Option<i32>,
    pub status: String,
    pub reference_code: Option<String>,
    pub ticket_token: Option<String>,
    pub pickup_point: Option<String>,
    pub drop_point: Option<String>,
    pub price: f64,
    pub created_at: String,
}

/// One row of a trip's status log.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct StatusLogRow {
    pub previous_status: Option<String>,
    pub new_status: String,
    pub notes: Option<String>,
    pub changed_by: Option<String>,
    pub created_at: String,
}

/// A booking to create (seat number and status are decided in the transaction).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub struct NewBooking {
    pub id: String,
    pub trip_id: String,
    pub passenger_id: String,
    pub passenger_name: Option<String>,
    pub seats: i32,
    pub reference_code: String,
    pub ticket_token: String,
    pub pickup_point: Option<String>,
    pub drop_point: Option<String>,
}

/// Outcome of booking seats.
#[derive(Debug)]
pub enum BookOutcome {
    /// Booked; the trip as it is after the booking.
    Booked(Box<BookingRow>, Box<TripRow>),
    /// No such trip in the tenant.
    NoTrip,
    /// The trip is not open for booking.
    NotBookable,
    /// Not enough seats left.
    NoSeats,
}

/// Outcome of cancelling a booking.
#[derive(Debug)]
pub enum CancelOutcome {
    /// Cancelled; the booking and its trip afterwards.
    Cancelled(Box<BookingRow>, Box<TripRow>),
    /// Already cancelled, completed or boarded.
    NotCancellable(String),
}

/// Outcome of a status change.
#[derive(Debug)]
pub struct StatusChange {
    /// The trip afterwards.
    pub trip: TripRow,
    /// The status before.
    pub previous: TripStatus,
    /// Drivers whose pending offers the change cancelled.
    pub cancelled_offers: Vec<String>,
}

pub(super) fn now() -> String {
    crate::domain::now_iso()
}

impl Db {
    /// Inserts trip `id` of `organizer` (seats all available) and returns it.
    pub async fn insert_trip(&self, tenant: &Tenant, id: &str, organizer: &str, t: &TripPlan) -> Result<TripRow> {
        let now = now();
        let text = format!(
            "INSERT INTO trips (tenant, id, trip_type, title, status, origin_name, origin_lat, origin_lng, \
             dest_name, dest_lat, dest_lng, departure_time, total_seats, available_seats, price_per_seat, currency, \
             estimated_earnings, organizer_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12::timestamptz, $13, $13, $14, $15, $16, $17, $18::timestamptz, $18::timestamptz) \
             RETURNING {TRIP_COLS}"
        );
        Ok(each!(self, p => sqlx::query_as(sql(self, &text))
            .bind(&tenant.0).bind(id).bind(t.trip_type.as_str()).bind(&t.title).bind(t.status.as_str())
            .bind(&t.origin.name).bind(t.origin.lat).bind(t.origin.lng)
            .bind(&t.dest.name).bind(t.dest.lat).bind(t.dest.lng)
            .bind(&t.departure_time).bind(t.total_seats).bind(t.price_per_seat).bind(&t.currency)
            .bind(t.estimated_earnings).bind(organizer).bind(&now)
            .fetch_one(p).await?))
    }

    /// A trip of the tenant.
    pub async fn get_trip(&self, tenant: &Tenant, id: &str) -> Result<Option<TripRow>> {
        let text = format!("SELECT {TRIP_COLS} FROM trips WHERE tenant = $1 AND id = $2");
        Ok(each!(self, p => sqlx::query_as(sql(self, &text)).bind(&tenant.0).bind(id).fetch_optional(p).await?))
    }

    /// A booking of the tenant.
    pub async fn get_booking(&self, tenant: &Tenant, id: &str) -> Result<Option<BookingRow>> {
        let text = format!("SELECT {BOOKING_COLS} FROM bookings WHERE tenant = $1 AND id = $2");
        Ok(each!(self, p => sqlx::query_as(sql(self, &text)).bind(&tenant.0).bind(id).fetch_optional(p).await?))
    }

    /// The bookings of a trip, oldest first; with `passenger`, only that passenger's.
    pub async fn trip_bookings(&self, tenant: &Tenant, trip: &str, passenger: Option<&str>) -> Result<Vec<BookingRow>> {
        let only = if passenger.is_some() { "AND passenger_id = $3" } else { "" };
        let text = format!(
            "SELECT {BOOKING_COLS} FROM bookings WHERE tenant = $1 AND trip_id = $2 {only} \
             ORDER BY created_at, id LIMIT 1000"
        );
        Ok(each!(self, p => {
            let q = sqlx::query_as(sql(self, &text)).bind(&tenant.0).bind(trip);
            match passenger { Some(who) => q.bind(who), None => q }.fetch_all(p).await?
        }))
    }

    /// A trip's status log, oldest first (at most the last 200 changes).
    pub async fn status_log(&self, tenant: &Tenant, trip: &str) -> Result<Vec<StatusLogRow>> {
        let text = "SELECT previous_status, new_status, notes, changed_by, TS(created_at) FROM trip_status_updates \
             WHERE tenant = $1 AND trip_id = $2 ORDER BY id DESC LIMIT 200";
        let mut rows: Vec<StatusLogRow> =
            each!(self, p => sqlx::query_as(sql(self, text)).bind(&tenant.0).bind(trip).fetch_all(p).await?);
        rows.reverse();
        Ok(rows)
    }

    /// Passengers holding a booking on the trip that is not cancelled.
    pub async fn trip_passengers(&self, tenant: &Tenant, trip: &str) -> Result<Vec<String>> {
        const Q: &str = "SELECT DISTINCT passenger_id FROM bookings WHERE tenant = $1 AND trip_id = $2 \
                         AND status <> 'CANCELLED' ORDER BY passenger_id";
        Ok(each!(self, p => sqlx::query_scalar(Q).bind(&tenant.0).bind(trip).fetch_all(p).await?))
    }

    /// Books seats in one transaction: the seat decrement is conditional, so concurrent
    /// bookings can never oversell.
    pub async fn book(
        &self,
        tenant: &Tenant,
        b: &NewBooking,
        price_of: impl Fn(&TripRow) -> f64,
    ) -> Result<BookOutcome> {
        let now = now();
        let take = format!(
            "UPDATE trips SET available_seats = available_seats - $3, updated_at = $4::timestamptz \
             WHERE tenant = $1 AND id = $2 AND available_seats >= $3 AND status IN ('PUBLISHED', 'IN_PROGRESS') \
             RETURNING {TRIP_COLS}"
        );
        let insert = format!(
            "INSERT INTO bookings (tenant, id, trip_id, passenger_id, passenger_name, seats_booked, seat_number, \
             status, reference_code, ticket_token, pickup_point, drop_point, price, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::timestamptz, $14::timestamptz) \
             RETURNING {BOOKING_COLS}"
        );
        each!(self, p => {
            let mut tx = p.begin().await?;
            let trip: Option<TripRow> = sqlx::query_as(sql(self, &take))
                .bind(&tenant.0).bind(&b.trip_id).bind(b.seats).bind(&now)
                .fetch_optional(&mut *tx).await?;
            let Some(trip) = trip else {
                drop(tx);
                return Ok(match self.get_trip(tenant, &b.trip_id).await? {
                    None => BookOutcome::NoTrip,
                    Some(t) if !t.status().is_bookable() => BookOutcome::NotBookable,
                    Some(_) => BookOutcome::NoSeats,
                });
            };
            // Seats are numbered in booking order: this booking holds the block that ends
            // where the remaining seats begin.
            let seat = trip.total_seats - trip.available_seats - b.seats + 1;
            let status = if trip.driver_id.is_some() { booking::CONFIRMED } else { booking::PENDING };
            let row: BookingRow = sqlx::query_as(sql(self, &insert))
                .bind(&tenant.0).bind(&b.id).bind(&b.trip_id).bind(&b.passenger_id).bind(&b.passenger_name)
                .bind(b.seats).bind(seat).bind(status).bind(&b.reference_code).bind(&b.ticket_token)
                .bind(&b.pickup_point).bind(&b.drop_point).bind(price_of(&trip) * f64::from(b.seats)).bind(&now)
                .fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(BookOutcome::Booked(Box::new(row), Box::new(trip)))
        })
    }

    /// Cancels a booking and returns its seats, in one transaction.
    pub async fn cancel_booking(&self, tenant: &Tenant, id: &str) -> Result<CancelOutcome> {
        let now = now();
        let cancel = format!(
            "UPDATE bookings SET status = 'CANCELLED', updated_at = $3::timestamptz WHERE tenant = $1 AND id = $2 \
             AND status IN ('PENDING', 'CONFIRMED') RETURNING {BOOKING_COLS}"
        );
        let give_back = format!(
            "UPDATE trips SET available_seats = available_seats + $3, updated_at = $4::timestamptz \
             WHERE tenant = $1 AND id = $2 RETURNING {TRIP_COLS}"
        );
        each!(self, p => {
            let mut tx = p.begin().await?;
            let b: Option<BookingRow> = sqlx::query_as(sql(self, &cancel))
                .bind(&tenant.0).bind(id).bind(&now).fetch_optional(&mut *tx).await?;
            let Some(b) = b else {
                drop(tx);
                let status = self.get_booking(tenant, id).await?.map(|b| b.status).unwrap_or_default();
                return Ok(CancelOutcome::NotCancellable(status));
            };
            let trip: TripRow = sqlx::query_as(sql(self, &give_back))
                .bind(&tenant.0).bind(&b.trip_id).bind(b.seats_booked).bind(&now)
                .fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok(CancelOutcome::Cancelled(Box::new(b), Box::new(trip)))
        })
    }

    /// Marks a `CONFIRMED` booking `BOARDED`; `None` when it was not `CONFIRMED`.
    pub async fn board(&self, tenant: &Tenant, id: &str) -> Result<Option<BookingRow>> {
        let text = format!(
            "UPDATE bookings SET status = 'BOARDED', updated_at = $3::timestamptz WHERE tenant = $1 AND id = $2 \
             AND status = 'CONFIRMED' RETURNING {BOOKING_COLS}"
        );
        let now = now();
        Ok(
            each!(self, p => sqlx::query_as(sql(self, &text)).bind(&tenant.0).bind(id).bind(&now).fetch_optional(p).await?),
        )
    }

    /// Moves a trip from `from` to `to` in one transaction: the status (only if it is still
    /// `from`), a status-log row, bookings following (completed or cancelled with the
    /// trip), pending offers cancelled, and the driver `AVAILABLE` again when the trip
    /// ends. `None` when the trip was no longer in `from`.
    pub async fn change_status(
        &self,
        tenant: &Tenant,
        trip: &str,
        from: TripStatus,
        to: TripStatus,
        notes: Option<&str>,
        by: &str,
    ) -> Result<Option<StatusChange>> {
        let now = now();
        let set = format!(
            "UPDATE trips SET status = $4, updated_at = $5::timestamptz WHERE tenant = $1 AND id = $2 \
             AND status = $3 RETURNING {TRIP_COLS}"
        );
        const LOG: &str = "INSERT INTO trip_status_updates (tenant, trip_id, previous_status, new_status, notes, \
             changed_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz)";
        let bookings = match to {
            TripStatus::Completed => Some(
                "UPDATE bookings SET status = 'COMPLETED' WHERE tenant = $1 AND trip_id = $2 \
                 AND status IN ('CONFIRMED', 'BOARDED')",
            ),
            TripStatus::Cancelled => Some(
                "UPDATE bookings SET status = 'CANCELLED' WHERE tenant = $1 AND trip_id = $2 \
                 AND status IN ('PENDING', 'CONFIRMED', 'BOARDED')",
            ),
            _ => None,
        };
        const OFFERS: &str = "UPDATE trip_offers SET status = 'CANCELLED' WHERE tenant = $1 AND trip_id = $2 \
             AND status = 'OFFERED' RETURNING driver_id";
        const FREE: &str = "UPDATE drivers SET status = 'AVAILABLE' WHERE tenant = $1 AND id = $2";
        each!(self, p => {
            let mut tx = p.begin().await?;
            let row: Option<TripRow> = sqlx::query_as(sql(self, &set))
                .bind(&tenant.0).bind(trip).bind(from.as_str()).bind(to.as_str()).bind(&now)
                .fetch_optional(&mut *tx).await?;
            let Some(row) = row else { return Ok(None) };
            sqlx::query(sql(self, LOG)).bind(&tenant.0).bind(trip).bind(from.as_str()).bind(to.as_str())
                .bind(notes).bind(by).bind(&now).execute(&mut *tx).await?;
            if let Some(q) = bookings {
                sqlx::query(q).bind(&tenant.0).bind(trip).execute(&mut *tx).await?;
            }
            let mut cancelled_offers = Vec::new();
            if to == TripStatus::Cancelled {
                cancelled_offers = sqlx::query_scalar(OFFERS).bind(&tenant.0).bind(trip).fetch_all(&mut *tx).await?;
            }
            if to.is_final() && let Some(d) = &row.driver_id {
                sqlx::query(FREE).bind(&tenant.0).bind(d).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(Some(StatusChange { trip: row, previous: from, cancelled_offers }))
        })
    }
}
