//! Drivers and trip offers in the database (CONTRACT §2 offers, §4 accept): driver rows,
//! offer rounds and their states, declines, expiry, and the one-winner accept — a
//! transaction opened by the conditional take of the trip (`driver_id IS NULL`).

use std::collections::HashMap;

use super::Db;
use super::rides::{TRIP_COLS, TripRow, now, sql};
use crate::domain::Tenant;
use crate::error::Result;

/// Outcome of a driver accepting an offer.
#[derive(Debug)]
pub enum AcceptOutcome {
    /// The driver won; the trip afterwards and the other offered drivers (now `TAKEN`).
    Won(Box<TripRow>, Vec<String>),
    /// Another driver was faster, or the trip is no longer open.
    Taken,
    /// The driver is busy with another trip.
    DriverBusy,
}

impl Db {
    /// A driver takes a trip, in one transaction: the trip is assigned only while it is
    /// `PUBLISHED` without a driver (exactly one winner however many try at once), the
    /// driver becomes `BUSY`, pending bookings `CONFIRMED`, the status is logged and the
    /// other offered drivers' offers become `TAKEN`.
    pub async fn accept_trip(
        &self,
        tenant: &Tenant,
        trip: &str,
        driver: &str,
        driver_name: Option<&str>,
    ) -> Result<AcceptOutcome> {
        let now = now();
        let take = format!(
            "UPDATE trips SET driver_id = $3, status = 'IN_PROGRESS', updated_at = $4::timestamptz \
             WHERE tenant = $1 AND id = $2 AND status = 'PUBLISHED' AND driver_id IS NULL RETURNING {TRIP_COLS}"
        );
        const BUSY: &str = "INSERT INTO drivers (tenant, id, name, status) VALUES ($1, $2, $3, 'BUSY') \
             ON CONFLICT (tenant, id) DO UPDATE SET status = 'BUSY', name = COALESCE(EXCLUDED.name, drivers.name) \
             WHERE drivers.status <> 'BUSY'";
        const CONFIRM: &str = "UPDATE bookings SET status = 'CONFIRMED' WHERE tenant = $1 AND trip_id = $2 \
             AND status = 'PENDING'";
        const LOG: &str = "INSERT INTO trip_status_updates (tenant, trip_id, previous_status, new_status, notes, \
             changed_by, created_at) VALUES ($1, $2, 'PUBLISHED', 'IN_PROGRESS', 'offer accepted', $3, $4::timestamptz)";
        const OTHERS: &str = "UPDATE trip_offers SET status = CASE WHEN driver_id = $3 THEN 'ACCEPTED' ELSE 'TAKEN' END \
             WHERE tenant = $1 AND trip_id = $2 AND (status = 'OFFERED' OR driver_id = $3) RETURNING driver_id";
        each!(self, p => {
            let mut tx = p.begin().await?;
            let won: Option<TripRow> = sqlx::query_as(sql(self, &take))
                .bind(&tenant.0).bind(trip).bind(driver).bind(&now).fetch_optional(&mut *tx).await?;
            let Some(won) = won else { return Ok(AcceptOutcome::Taken) };
            let busy = sqlx::query(BUSY).bind(&tenant.0).bind(driver).bind(driver_name).execute(&mut *tx).await?;
            if busy.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(AcceptOutcome::DriverBusy);
            }
            sqlx::query(CONFIRM).bind(&tenant.0).bind(trip).execute(&mut *tx).await?;
            sqlx::query(sql(self, LOG)).bind(&tenant.0).bind(trip).bind(driver).bind(&now).execute(&mut *tx).await?;
            let offered: Vec<String> =
                sqlx::query_scalar(OTHERS).bind(&tenant.0).bind(trip).bind(driver).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            let others = offered.into_iter().filter(|d| d != driver).collect();
            Ok(AcceptOutcome::Won(Box::new(won), others))
        })
    }

    /// Makes sure a driver row exists (drivers appear when they first subscribe to offers).
    pub async fn ensure_driver(&self, tenant: &Tenant, id: &str, name: Option<&str>) -> Result<()> {
        const Q: &str = "INSERT INTO drivers (tenant, id, name) VALUES ($1, $2, $3) \
                         ON CONFLICT (tenant, id) DO UPDATE SET name = COALESCE(EXCLUDED.name, drivers.name)";
        each!(self, p => sqlx::query(Q).bind(&tenant.0).bind(id).bind(name).execute(p).await.map(|_| ())?);
        Ok(())
    }

    /// A driver's display name, if known.
    pub async fn driver_name(&self, tenant: &Tenant, id: &str) -> Result<Option<String>> {
        const Q: &str = "SELECT name FROM drivers WHERE tenant = $1 AND id = $2";
        let n: Option<Option<String>> =
            each!(self, p => sqlx::query_scalar(Q).bind(&tenant.0).bind(id).fetch_optional(p).await?);
        Ok(n.flatten())
    }

    /// The trips the drivers `ids` of one tenant are on (`IN_PROGRESS`, `DEPARTED` or
    /// `ARRIVED`), 500 drivers per query: each driver with an active trip and that trip (its
    /// most recently updated one).
    pub async fn driver_active_trips(&self, tenant: &Tenant, ids: &[String]) -> Result<HashMap<String, String>> {
        const PG: &str = "SELECT driver_id, id FROM trips WHERE tenant = $1 AND driver_id = ANY($2) \
                          AND status IN ('IN_PROGRESS', 'DEPARTED', 'ARRIVED') ORDER BY updated_at DESC";
        const LITE: &str = "SELECT driver_id, id FROM trips WHERE tenant = $1 \
                            AND driver_id IN (SELECT value FROM json_each($2)) \
                            AND status IN ('IN_PROGRESS', 'DEPARTED', 'ARRIVED') ORDER BY updated_at DESC";
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let rows: Vec<(String, String)> = match self {
                Db::Pg(p) => sqlx::query_as(PG).bind(&tenant.0).bind(chunk).fetch_all(p).await?,
                Db::Sqlite(p) => {
                    let json = serde_json::to_string(chunk).map_err(|_| crate::error::Error::Internal)?;
                    sqlx::query_as(LITE).bind(&tenant.0).bind(json).fetch_all(p).await?
                }
            };
            // Newest first: the first row of a driver is its trip.
            for (driver, trip) in rows {
                out.entry(driver).or_insert(trip);
            }
        }
        Ok(out)
    }

    /// Display names of drivers, by id (unknown drivers are left out).
    pub async fn driver_names(&self, tenant: &Tenant, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let json = serde_json::to_string(chunk).map_err(|_| crate::error::Error::Internal)?;
            let rows: Vec<(String, String)> = match self {
                Db::Pg(p) => {
                    sqlx::query_as(
                        "SELECT id, name FROM drivers WHERE tenant = $1 AND id = ANY($2) AND name IS NOT NULL",
                    )
                    .bind(&tenant.0)
                    .bind(chunk)
                    .fetch_all(p)
                    .await?
                }
                Db::Sqlite(p) => {
                    sqlx::query_as(
                        "SELECT id, name FROM drivers WHERE tenant = $1 \
                         AND id IN (SELECT value FROM json_each($2)) AND name IS NOT NULL",
                    )
                    .bind(&tenant.0)
                    .bind(&json)
                    .fetch_all(p)
                    .await?
                }
            };
            out.extend(rows);
        }
        Ok(out)
    }

    /// True when the driver is `BUSY` with a trip.
    pub async fn driver_busy(&self, tenant: &Tenant, id: &str) -> Result<bool> {
        const Q: &str = "SELECT COUNT(*) FROM drivers WHERE tenant = $1 AND id = $2 AND status = 'BUSY'";
        let n: i64 = each!(self, p => sqlx::query_scalar(Q).bind(&tenant.0).bind(id).fetch_one(p).await?);
        Ok(n > 0)
    }

    /// Every driver the trip was ever offered to or who declined it.
    pub async fn offered_drivers(&self, tenant: &Tenant, trip: &str) -> Result<Vec<String>> {
        const Q: &str = "SELECT driver_id FROM trip_offers WHERE tenant = $1 AND trip_id = $2";
        Ok(each!(self, p => sqlx::query_scalar(Q).bind(&tenant.0).bind(trip).fetch_all(p).await?))
    }

    /// A driver's offer state for a trip, if any.
    pub async fn offer_state(&self, tenant: &Tenant, trip: &str, driver: &str) -> Result<Option<String>> {
        const Q: &str = "SELECT status FROM trip_offers WHERE tenant = $1 AND trip_id = $2 AND driver_id = $3";
        Ok(each!(self, p => sqlx::query_scalar(Q).bind(&tenant.0).bind(trip).bind(driver).fetch_optional(p).await?))
    }

    /// Records a round of offers and the trip's current round and deadline, only while the
    /// trip is still `PUBLISHED` without a driver. False when it no longer is.
    pub async fn record_offers(
        &self,
        tenant: &Tenant,
        trip: &str,
        round: u32,
        deadline: &str,
        drivers: &[(String, f64)],
    ) -> Result<bool> {
        const ROUND: &str = "UPDATE trips SET offer_round = $3, offer_deadline = $4::timestamptz WHERE tenant = $1 \
             AND id = $2 AND status = 'PUBLISHED' AND driver_id IS NULL";
        const OFFER: &str = "INSERT INTO trip_offers (tenant, trip_id, driver_id, round, status, distance_km) \
             VALUES ($1, $2, $3, $4, 'OFFERED', $5) ON CONFLICT (tenant, trip_id, driver_id) DO NOTHING";
        let round = round as i32;
        each!(self, p => {
            let mut tx = p.begin().await?;
            let open = sqlx::query(sql(self, ROUND)).bind(&tenant.0).bind(trip).bind(round).bind(deadline)
                .execute(&mut *tx).await?;
            if open.rows_affected() == 0 {
                return Ok(false);
            }
            for (d, km) in drivers {
                sqlx::query(OFFER).bind(&tenant.0).bind(trip).bind(d).bind(round).bind(km).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A driver declines a trip: never offered it again.
    pub async fn decline_offer(&self, tenant: &Tenant, trip: &str, driver: &str) -> Result<()> {
        const Q: &str = "INSERT INTO trip_offers (tenant, trip_id, driver_id, round, status) \
             VALUES ($1, $2, $3, -1, 'DECLINED') ON CONFLICT (tenant, trip_id, driver_id) \
             DO UPDATE SET status = 'DECLINED' WHERE trip_offers.status = 'OFFERED'";
        each!(self, p => sqlx::query(Q).bind(&tenant.0).bind(trip).bind(driver).execute(p).await.map(|_| ())?);
        Ok(())
    }

    /// Ends an unanswered round: its still-open offers become `EXPIRED` (returned), only if
    /// the trip is still in that round and still without a driver.
    pub async fn expire_round(&self, tenant: &Tenant, trip: &str, round: u32) -> Result<Option<Vec<String>>> {
        const STILL: &str = "UPDATE trips SET offer_deadline = NULL WHERE tenant = $1 AND id = $2 \
             AND offer_round = $3 AND status = 'PUBLISHED' AND driver_id IS NULL";
        const EXPIRE: &str = "UPDATE trip_offers SET status = 'EXPIRED' WHERE tenant = $1 AND trip_id = $2 \
             AND status = 'OFFERED' RETURNING driver_id";
        let round = round as i32;
        each!(self, p => {
            let mut tx = p.begin().await?;
            let still = sqlx::query(STILL).bind(&tenant.0).bind(trip).bind(round).execute(&mut *tx).await?;
            if still.rows_affected() == 0 {
                return Ok(None);
            }
            let drivers = sqlx::query_scalar(EXPIRE).bind(&tenant.0).bind(trip).fetch_all(&mut *tx).await?;
            tx.commit().await?;
            Ok(Some(drivers))
        })
    }
}
