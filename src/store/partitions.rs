//! The partitions of `location_snapshots` (Postgres): one per UTC day of `recorded_at`, plus
//! `location_snapshots_before` (everything before the first day: the table as it was when
//! it became partitioned). The worker keeps partitions created a few days ahead and drops
//! those past the retention bound; nothing here deletes rows one by one. In SQLite (one
//! embedded node) the same retention deletes old rows in small batches.
//!
//! Creating a day never blocks an insert: the table is made apart, given the day's range as
//! a CHECK constraint, then attached (`ATTACH PARTITION` takes a SHARE UPDATE EXCLUSIVE lock
//! on the parent, which inserts and reads do not conflict with; `CREATE TABLE .. PARTITION
//! OF` would take ACCESS EXCLUSIVE). Dropping detaches `CONCURRENTLY` first. Two workers
//! are serialized by a session advisory lock; the one that does not get it skips the round.
//!
//! Days are passed in (the caller's clock), so tests can cross a day boundary.

use chrono::NaiveDate;
use sqlx::{AssertSqlSafe, Executor, PgConnection};

use super::Db;

/// Name prefix of the daily partitions (`location_snapshots_pYYYYMMDD`).
const DAY_PREFIX: &str = "location_snapshots_p";
/// Advisory lock key of partition maintenance ("fleetcast" + "parts").
const LOCK_KEY: i64 = 0x000f_1ee7_ca57_0001;
/// Rows deleted per statement by the SQLite retention.
const SQLITE_BATCH: i64 = 5_000;

/// One partition of `location_snapshots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Table name.
    pub name: String,
    /// First day it holds (`None` for the partition of everything before the first day).
    pub from: Option<NaiveDate>,
    /// The day after the last it holds.
    pub to: NaiveDate,
    /// Rows (the planner's estimate: exact after the partition's `VACUUM (ANALYZE)`, which
    /// the worker runs once a day is over; `None` before).
    pub rows: Option<u64>,
    /// Vacuumed (by the worker or autovacuum) since the server's statistics began: its
    /// visibility map is set, so track reads are index-only.
    pub vacuumed: bool,
    /// Bytes on disk, indexes included.
    pub bytes: u64,
}

/// What one maintenance round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Partitions created.
    pub created: Vec<String>,
    /// Partitions dropped (past the retention bound).
    pub dropped: Vec<String>,
    /// Finished days vacuumed and analyzed.
    pub analyzed: Vec<String>,
    /// Rows deleted (SQLite).
    pub rows_deleted: u64,
    /// False when another worker held the maintenance lock (nothing done).
    pub ran: bool,
}

fn day_name(d: NaiveDate) -> String {
    format!("{DAY_PREFIX}{}", d.format("%Y%m%d"))
}

fn midnight(d: NaiveDate) -> String {
    format!("{} 00:00:00+00", d.format("%Y-%m-%d"))
}

/// The day in a bound literal such as `'2026-12-02 00:00:00+00'`.
fn bound_day(expr: &str) -> Option<NaiveDate> {
    let start = expr.find('\'')? + 1;
    NaiveDate::parse_from_str(expr.get(start..start + 10)?, "%Y-%m-%d").ok()
}

/// Parses `FOR VALUES FROM (..) TO (..)` into (from, to).
fn parse_bounds(expr: &str) -> Option<(Option<NaiveDate>, NaiveDate)> {
    let (from, to) = expr.split_once(" TO ")?;
    let from = if from.contains("MINVALUE") { None } else { Some(bound_day(from)?) };
    Some((from, bound_day(to)?))
}

async fn list(conn: &mut PgConnection) -> Result<Vec<Partition>, sqlx::Error> {
    // Bounds print in the session's time zone; every other query of ours names its zone.
    conn.execute("SET TIME ZONE 'UTC'").await?;
    let rows: Vec<(String, String, f32, i64, bool)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid), c.reltuples, pg_total_relation_size(c.oid), \
                COALESCE(s.last_vacuum, s.last_autovacuum) IS NOT NULL \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid \
         WHERE i.inhparent = 'location_snapshots'::regclass ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<Partition> = rows
        .into_iter()
        .filter_map(|(name, expr, tuples, bytes, vacuumed)| {
            let (from, to) = parse_bounds(&expr)?;
            let rows = (tuples >= 0.0).then_some(tuples as u64);
            Some(Partition { name, from, to, rows, bytes: bytes.max(0) as u64, vacuumed })
        })
        .collect();
    out.sort_by_key(|p| p.to);
    Ok(out)
}

/// Creates and attaches the partition of day `d` without blocking inserts.
async fn create_day(conn: &mut PgConnection, d: NaiveDate) -> Result<String, sqlx::Error> {
    let name = day_name(d);
    let (from, to) = (midnight(d), midnight(d.succ_opt().unwrap_or(d)));
    let statements = [
        format!("CREATE TABLE IF NOT EXISTS {name} (LIKE location_snapshots INCLUDING DEFAULTS)"),
        format!(
            "ALTER TABLE {name} ADD CONSTRAINT {name}_range \
             CHECK (recorded_at >= '{from}' AND recorded_at < '{to}')"
        ),
        format!("ALTER TABLE location_snapshots ATTACH PARTITION {name} FOR VALUES FROM ('{from}') TO ('{to}')"),
    ];
    for sql in statements {
        conn.execute(AssertSqlSafe(sql)).await?;
    }
    Ok(name)
}

/// Detaches (concurrently: inserts go on) and drops a partition.
async fn drop_partition(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let detach = format!("ALTER TABLE location_snapshots DETACH PARTITION {name} CONCURRENTLY");
    if let Err(e) = conn.execute(AssertSqlSafe(detach)).await {
        // A detach interrupted earlier left the partition "detach pending": finish it.
        tracing::debug!(error = %e, partition = name, "concurrent detach failed; finalizing");
        conn.execute(AssertSqlSafe(format!("ALTER TABLE location_snapshots DETACH PARTITION {name} FINALIZE"))).await?;
    }
    conn.execute(AssertSqlSafe(format!("DROP TABLE {name}"))).await?;
    Ok(())
}

impl Db {
    /// The partitions of `location_snapshots`, oldest first (none in SQLite).
    pub async fn snapshot_partitions(&self) -> Result<Vec<Partition>, sqlx::Error> {
        match self {
            Db::Pg(p) => list(&mut *p.acquire().await?).await,
            Db::Sqlite(_) => Ok(Vec::new()),
        }
    }

    /// One maintenance round for day `today`: partitions exist up to `today + ahead`
    /// (from the newest existing one on, so there is never a gap), finished days not yet
    /// vacuumed yet are vacuumed and analyzed (index-only track reads, planner statistics
    /// and row counts without autovacuum; an `ANALYZE` alone sets no visibility map), and
    /// with `retention_days > 0` partitions wholly before `today - retention_days` are
    /// dropped (SQLite: rows before it are deleted in batches).
    pub async fn maintain_snapshots(
        &self,
        today: NaiveDate,
        ahead: u32,
        retention_days: u32,
    ) -> Result<Maintenance, sqlx::Error> {
        let cutoff = keep_since(today, retention_days);
        match self {
            Db::Sqlite(p) => {
                let mut m = Maintenance { ran: true, ..Maintenance::default() };
                if let Some(cutoff) = cutoff {
                    let bound = format!("{}T00:00:00.000000Z", cutoff.format("%Y-%m-%d"));
                    loop {
                        let n = sqlx::query(
                            "DELETE FROM location_snapshots WHERE rowid IN \
                             (SELECT rowid FROM location_snapshots WHERE recorded_at < $1 LIMIT $2)",
                        )
                        .bind(&bound)
                        .bind(SQLITE_BATCH)
                        .execute(p)
                        .await?
                        .rows_affected();
                        m.rows_deleted += n;
                        if n < SQLITE_BATCH as u64 {
                            break;
                        }
                    }
                }
                Ok(m)
            }
            Db::Pg(p) => {
                let mut conn = p.acquire().await?;
                let (locked,): (bool,) =
                    sqlx::query_as("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut *conn).await?;
                if !locked {
                    return Ok(Maintenance::default());
                }
                let result = maintain_pg(&mut conn, today, ahead, cutoff).await;
                let unlock = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut *conn).await;
                if let Err(e) = unlock {
                    // The lock goes with the connection: close it rather than return it held.
                    tracing::warn!(error = %e, "maintenance lock not released; closing the connection");
                    let _ = conn.detach();
                }
                result
            }
        }
    }
}

async fn maintain_pg(
    conn: &mut PgConnection,
    today: NaiveDate,
    ahead: u32,
    cutoff: Option<NaiveDate>,
) -> Result<Maintenance, sqlx::Error> {
    let mut m = Maintenance { ran: true, ..Maintenance::default() };
    let parts = list(conn).await?;
    let last = today + chrono::Days::new(u64::from(ahead));
    let mut next = parts.iter().map(|p| p.to).max().unwrap_or(today);
    while next <= last {
        m.created.push(create_day(conn, next).await?);
        next = next.succ_opt().unwrap_or(last);
    }
    for p in &parts {
        if let Some(cutoff) = cutoff
            && p.to <= cutoff
        {
            drop_partition(conn, &p.name).await?;
            m.dropped.push(p.name.clone());
        } else if !p.vacuumed && p.to <= today {
            // VACUUM sets the visibility map, which makes the track read an index-only scan
            // of the covering trip index; ANALYZE gives the planner the day's statistics.
            conn.execute(AssertSqlSafe(format!("VACUUM (ANALYZE) {}", p.name))).await?;
            m.analyzed.push(p.name.clone());
        }
    }
    if let Some(cutoff) = cutoff {
        // Spans of trips whose snapshots are all gone with their partitions.
        sqlx::query("DELETE FROM location_trip_spans WHERE last_at < $1::timestamptz")
            .bind(midnight(cutoff))
            .execute(&mut *conn)
            .await?;
    }
    Ok(m)
}

/// Rows older than this are past retention and have no partition to go to: the writer
/// skips them. `None` keeps everything.
pub fn keep_since(today: NaiveDate, retention_days: u32) -> Option<NaiveDate> {
    (retention_days > 0).then(|| today - chrono::Days::new(u64::from(retention_days)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_bounds_parse() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(
            parse_bounds("FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2026-12-02 00:00:00+00')"),
            Some((Some(d("2026-12-01")), d("2026-12-02")))
        );
        assert_eq!(
            parse_bounds("FOR VALUES FROM (MINVALUE) TO ('2026-12-01 00:00:00+00')"),
            Some((None, d("2026-12-01")))
        );
        assert_eq!(day_name(d("2026-01-09")), "location_snapshots_p20260109");
        assert_eq!(keep_since(d("2026-03-01"), 30), Some(d("2026-01-30")));
        assert_eq!(keep_since(d("2026-03-01"), 0), None);
    }
}
