//! The trips a latency run drives: inserted straight into the server's database before
//! the run, deleted after it.
//!
//! Owns the SQL (overridable from the command line, since the schema belongs to the server)
//! and the run's id scheme: trips `lt-<runid>-<n>`, drivers `ltd-<runid>-<n>`. It must not
//! touch rows of other runs: cleanup matches this run's id prefix only.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use super::LatencyArgs;

/// Columns bound in order: tenant, trip id, driver id, status, title.
pub(super) const DEFAULT_INSERT_SQL: &str =
    "INSERT INTO trips (tenant, id, driver_id, status, title) VALUES ($1, $2, $3, $4, $5)";
/// Bound in order: tenant, `lt-<runid>-%`.
pub(super) const DEFAULT_CLEANUP_SQL: &str = "DELETE FROM trips WHERE tenant = $1 AND id LIKE $2";

/// One inserted trip and the driver assigned to it.
pub(super) struct Trip {
    pub(super) id: String,
    pub(super) driver_id: String,
}

/// A small pool (inserts are sequential) on Postgres or SQLite, bounded to 15 s.
pub(super) async fn connect_db(url: &str) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let connect = AnyPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(10)).connect(url);
    tokio::time::timeout(Duration::from_secs(15), connect)
        .await
        .context("connecting to --database-url timed out")?
        .context("connecting to --database-url")
}

/// Inserts one trip per driver with ids unique to this run; on failure removes what it
/// inserted so far (through the caller's cleanup, which matches the run's id pattern).
pub(super) async fn insert_trips(
    pool: &AnyPool,
    args: &LatencyArgs,
    tenant: &str,
    run_id: &str,
) -> anyhow::Result<Vec<Trip>> {
    let mut trips = Vec::with_capacity(usize::try_from(args.drivers).unwrap_or(0));
    for n in 0..args.drivers {
        let trip = Trip { id: format!("lt-{run_id}-{n}"), driver_id: format!("ltd-{run_id}-{n}") };
        let title = format!("loadtest {run_id} #{n}");
        let insert = sqlx::query(sqlx::AssertSqlSafe(args.insert_sql.as_str()))
            .bind(tenant)
            .bind(trip.id.as_str())
            .bind(trip.driver_id.as_str())
            .bind(args.trip_status.as_str())
            .bind(title.as_str())
            .execute(pool);
        tokio::time::timeout(Duration::from_secs(10), insert)
            .await
            .context("inserting a trip timed out")?
            .with_context(|| {
                format!(
                    "inserting trip {} with --insert-sql {:?} (binds tenant, id, driver id, status, title)",
                    trip.id, args.insert_sql
                )
            })?;
        trips.push(trip);
    }
    Ok(trips)
}

/// Best effort: a failure is reported, not fatal (the measurement already happened).
pub(super) async fn cleanup_trips(pool: &AnyPool, sql: &str, tenant: &str, run_id: &str) {
    let pattern = format!("lt-{run_id}-%");
    let delete = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant).bind(pattern.as_str()).execute(pool);
    match tokio::time::timeout(Duration::from_secs(10), delete).await {
        Ok(Ok(done)) => eprintln!("removed {} trips of run {run_id}", done.rows_affected()),
        Ok(Err(e)) => eprintln!("warning: could not remove trips lt-{run_id}-*: {e}"),
        Err(_) => eprintln!("warning: removing trips lt-{run_id}-* timed out"),
    }
}
