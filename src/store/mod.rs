//! Database access: the pool (Postgres in cluster mode, SQLite in embedded mode), the
//! migrations, and the queries the node needs (rides, job queues and snapshots in their
//! own files). Queries are written once per backend where
//! their SQL differs; callers see one API and never a pool type.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use crate::domain::{Tenant, TripId, UserId};
use crate::error::Result;

/// Runs `$body` with `$p` bound to the pool of either backend (same tokens, two types).
macro_rules! each {
    ($db:expr, $p:ident => $body:expr) => {
        match $db {
            Db::Pg($p) => $body,
            Db::Sqlite($p) => $body,
        }
    };
}

pub mod jobs;
pub mod offers;
pub mod partitions;
pub mod rides;
pub mod snapshots;

/// A trip as far as authorization needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TripMembership {
    /// Assigned driver, if any.
    pub driver: Option<UserId>,
    /// Trip status (`PUBLISHED`, `IN_PROGRESS`, …).
    pub status: String,
    /// Who created the trip.
    pub organizer: UserId,
    /// The trip's origin `(lat, lng)` (the PICKUP target).
    pub origin: (f64, f64),
    /// The trip's destination `(lat, lng)` (the DESTINATION target).
    pub destination: (f64, f64),
}

/// A membership row: id (batched reads only), driver, status, organizer, origin and
/// destination coordinates.
type MembershipRow = (Option<String>, String, String, f64, f64, f64, f64);

fn membership((driver, status, organizer, olat, olng, dlat, dlng): MembershipRow) -> TripMembership {
    TripMembership {
        driver: driver.map(UserId),
        status,
        organizer: UserId(organizer),
        origin: (olat, olng),
        destination: (dlat, dlng),
    }
}

/// The batched membership read in Postgres: `= ANY($2)` over the primary key is an index
/// scan whatever the planner's statistics say (`IN (SELECT jsonb_array_elements_text(..))`
/// was planned as a scan of every trip of the tenant on a table never analyzed: 17 ms at
/// 24,200 trips). A test checks the plan on a database that was never analyzed.
pub const TRIP_MEMBERSHIPS_PG: &str = "SELECT id, driver_id, status, organizer_id, origin_lat, origin_lng, dest_lat, \
     dest_lng FROM trips WHERE tenant = $1 AND id = ANY($2::text[])";

/// The database of a node.
#[derive(Clone, Debug)]
pub enum Db {
    /// Cluster mode.
    Pg(PgPool),
    /// Embedded mode.
    Sqlite(SqlitePool),
}

impl Db {
    /// Connects (lazily: a node starts even while the database is down) and applies the
    /// migrations when the database answers.
    pub async fn connect(url: &str, max_connections: u32) -> std::result::Result<Self, sqlx::Error> {
        let acquire = Duration::from_secs(3);
        let db = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire)
                    .connect_with(opts)
                    .await?,
            )
        } else {
            let opts = PgConnectOptions::from_str(url)?;
            Db::Pg(
                PgPoolOptions::new().max_connections(max_connections).acquire_timeout(acquire).connect_lazy_with(opts),
            )
        };
        Ok(db)
    }

    /// Applies pending migrations (sqlx takes a lock, so concurrent nodes are safe).
    pub async fn migrate(&self) -> std::result::Result<(), sqlx::migrate::MigrateError> {
        // The job queue's migrations share the `_sqlx_migrations` table: ignore its versions.
        match self {
            Db::Pg(p) => {
                let mut m = sqlx::migrate!("./migrations/postgres");
                m.set_ignore_missing(true);
                m.run(p).await?
            }
            Db::Sqlite(p) => {
                let mut m = sqlx::migrate!("./migrations/sqlite");
                m.set_ignore_missing(true);
                m.run(p).await?
            }
        }
        Ok(())
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        let fut = async {
            match self {
                Db::Pg(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
                Db::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            }
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), fut).await, Ok(Ok(())))
    }

    /// The trip's driver and status, or `None` if the trip does not exist in the tenant.
    pub async fn trip_membership(&self, tenant: &Tenant, trip: &TripId) -> Result<Option<TripMembership>> {
        const SQL: &str = "SELECT driver_id, status, organizer_id, origin_lat, origin_lng, dest_lat, dest_lng \
                           FROM trips WHERE tenant = $1 AND id = $2";
        let row: Option<MembershipRow> = match self {
            Db::Pg(p) => sqlx::query_as(SQL).bind(&tenant.0).bind(&trip.0).fetch_optional(p).await?,
            Db::Sqlite(p) => sqlx::query_as(SQL).bind(&tenant.0).bind(&trip.0).fetch_optional(p).await?,
        };
        Ok(row.map(membership))
    }

    /// [`Db::trip_membership`] of many trips of one tenant in one query (an id array in
    /// Postgres, a JSON array in SQLite): the trips that exist, by id.
    pub async fn trip_memberships(&self, tenant: &Tenant, trips: &[String]) -> Result<Vec<(String, TripMembership)>> {
        type Row = (String, Option<String>, String, String, f64, f64, f64, f64);
        let rows: Vec<Row> = match self {
            Db::Pg(p) => sqlx::query_as(TRIP_MEMBERSHIPS_PG).bind(&tenant.0).bind(trips).fetch_all(p).await?,
            Db::Sqlite(p) => {
                let ids = serde_json::to_string(trips).map_err(|_| crate::error::Error::Internal)?;
                sqlx::query_as(
                    "SELECT id, driver_id, status, organizer_id, origin_lat, origin_lng, dest_lat, dest_lng \
                     FROM trips WHERE tenant = $1 AND id IN (SELECT value FROM json_each($2))",
                )
                .bind(&tenant.0)
                .bind(&ids)
                .fetch_all(p)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(id, driver, status, organizer, olat, olng, dlat, dlng)| {
                (id, membership((driver, status, organizer, olat, olng, dlat, dlng)))
            })
            .collect())
    }

    /// True when the passenger holds a booking on the trip that is not cancelled.
    pub async fn has_active_booking(&self, tenant: &Tenant, trip: &TripId, passenger: &UserId) -> Result<bool> {
        const SQL: &str = "SELECT COUNT(*) FROM bookings WHERE tenant = $1 AND trip_id = $2 \
                           AND passenger_id = $3 AND status <> 'CANCELLED'";
        let n: i64 = match self {
            Db::Pg(p) => sqlx::query_scalar(SQL).bind(&tenant.0).bind(&trip.0).bind(&passenger.0).fetch_one(p).await?,
            Db::Sqlite(p) => {
                sqlx::query_scalar(SQL).bind(&tenant.0).bind(&trip.0).bind(&passenger.0).fetch_one(p).await?
            }
        };
        Ok(n > 0)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Db::Pg(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }
}
