//! The trips a run drives: inserted straight into the server's database before the run,
//! deleted after it. Only the single process or the parent of workers touches the
//! database; workers derive the same ids from the run id.
//!
//! Owns the SQL (overridable from the command line, since the schema belongs to the server)
//! and the run's id scheme: trips `lt-<runid>-<n>`, drivers `ltd-<runid>-<n>`. It must not
//! touch rows of other runs: cleanup matches this run's id prefix only.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// Columns bound in order: tenant, trip id, driver id, status, title.
pub const DEFAULT_INSERT_SQL: &str =
    "INSERT INTO trips (tenant, id, driver_id, status, title) VALUES ($1, $2, $3, $4, $5)";
/// Bound in order: tenant, `lt-<runid>-%`.
pub const DEFAULT_CLEANUP_SQL: &str = "DELETE FROM trips WHERE tenant = $1 AND id LIKE $2";

/// Trip `n` of run `run_id`.
pub fn trip_id(run_id: &str, n: u64) -> String {
    format!("lt-{run_id}-{n}")
}

/// The driver assigned to trip `n`.
pub fn driver_id(run_id: &str, n: u64) -> String {
    format!("ltd-{run_id}-{n}")
}

/// A small pool (inserts are sequential) on Postgres or SQLite, bounded to 15 s.
pub async fn connect_db(url: &str) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let connect = AnyPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(10)).connect(url);
    tokio::time::timeout(Duration::from_secs(15), connect)
        .await
        .context("connecting to --database-url timed out")?
        .context("connecting to --database-url")
}

/// What to insert.
pub struct InsertPlan<'a> {
    pub sql: &'a str,
    pub tenant: &'a str,
    pub run_id: &'a str,
    pub status: &'a str,
    pub count: u64,
}

/// Inserts trips `0..count` in one transaction (thousands of trips take a second, not a
/// round trip each), bounded to 10 s plus 10 ms per trip. On failure nothing is inserted.
pub async fn insert_trips(pool: &AnyPool, p: &InsertPlan<'_>) -> anyhow::Result<()> {
    let budget =
        Duration::from_secs(10) + Duration::from_millis(10).saturating_mul(u32::try_from(p.count).unwrap_or(u32::MAX));
    let work = async {
        let mut tx = pool.begin().await.context("starting the trip insert transaction")?;
        for n in 0..p.count {
            let (trip, driver) = (trip_id(p.run_id, n), driver_id(p.run_id, n));
            let title = format!("loadtest {} #{n}", p.run_id);
            sqlx::query(sqlx::AssertSqlSafe(p.sql))
                .bind(p.tenant)
                .bind(trip.as_str())
                .bind(driver.as_str())
                .bind(p.status)
                .bind(title.as_str())
                .execute(&mut *tx)
                .await
                .with_context(|| {
                    format!(
                        "inserting trip {trip} with --insert-sql {:?} (binds tenant, id, driver id, status, title)",
                        p.sql
                    )
                })?;
        }
        tx.commit().await.context("committing the trips")
    };
    tokio::time::timeout(budget, work).await.context("inserting trips timed out")?
}

/// Best effort: a failure is reported, not fatal (the measurement already happened).
pub async fn cleanup_trips(pool: &AnyPool, sql: &str, tenant: &str, run_id: &str) {
    let pattern = format!("lt-{run_id}-%");
    let delete = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(pattern.as_str()).execute(pool);
    match tokio::time::timeout(Duration::from_secs(30), delete).await {
        Ok(Ok(done)) => eprintln!("removed {} trips of run {run_id}", done.rows_affected()),
        Ok(Err(e)) => eprintln!("warning: could not remove trips lt-{run_id}-*: {e}"),
        Err(_) => eprintln!("warning: removing trips lt-{run_id}-* timed out"),
    }
}
