//! The job queues' SQL that apalis does not provide: moving a failed job's next run into
//! the future (apalis alone refetches it at once), waking listeners when a delayed job is
//! due, the depth of a queue, and purging done jobs. The tables are apalis' own
//! (`apalis.jobs` in Postgres, `Jobs` in SQLite).

use std::time::Duration;

use super::Db;

impl Db {
    /// Moves a job's next run `delay` into the future (apalis alone would refetch it at once).
    pub async fn reschedule_job(&self, id: &str, delay: Duration) -> Result<(), sqlx::Error> {
        let secs = delay.as_secs_f64();
        match self {
            Db::Pg(p) => {
                sqlx::query("UPDATE apalis.jobs SET run_at = now() + make_interval(secs => $2) WHERE id = $1")
                    .bind(id)
                    .bind(secs)
                    .execute(p)
                    .await?;
            }
            Db::Sqlite(p) => {
                sqlx::query("UPDATE Jobs SET run_at = CAST(strftime('%s','now') AS INTEGER) + $2 WHERE id = $1")
                    .bind(id)
                    .bind(secs.ceil() as i64)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// Jobs of `queue` not yet done (pending, running, or failed with attempts left).
    pub async fn queue_depth(&self, queue: &str) -> Result<i64, sqlx::Error> {
        match self {
            Db::Pg(p) => sqlx::query_scalar(
                "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND (status IN ('Pending','Queued','Running') \
                     OR (status = 'Failed' AND attempts < max_attempts))",
            )
            .bind(queue)
            .fetch_one(p)
            .await,
            Db::Sqlite(p) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM Jobs WHERE job_type = $1 AND (status IN ('Pending','Queued','Running') \
                     OR (status = 'Failed' AND attempts < max_attempts))",
                )
                .bind(queue)
                .fetch_one(p)
                .await
            }
        }
    }

    /// Deletes done jobs of `queue` older than `after`; returns how many.
    pub async fn purge_done_jobs(&self, queue: &str, after: Duration) -> Result<u64, sqlx::Error> {
        let secs = after.as_secs() as i64;
        let r = match self {
            Db::Pg(p) => sqlx::query(
                "DELETE FROM apalis.jobs WHERE job_type = $1 AND status = 'Done' \
                     AND done_at < now() - make_interval(secs => $2::float8)",
            )
            .bind(queue)
            .bind(secs as f64)
            .execute(p)
            .await?
            .rows_affected(),
            Db::Sqlite(p) => sqlx::query(
                "DELETE FROM Jobs WHERE job_type = $1 AND status = 'Done' \
                     AND done_at < CAST(strftime('%s','now') AS INTEGER) - $2",
            )
            .bind(queue)
            .bind(secs)
            .execute(p)
            .await?
            .rows_affected(),
        };
        Ok(r)
    }

    /// Wakes `queue`'s listeners when a delayed retry (or, with `delayed_jobs`, a job pushed
    /// with a delay) has come due. apalis' interval strategy combined with its LISTEN stream
    /// was seen to stop polling under load, leaving a due job untouched until the next insert;
    /// a NOTIFY like the insert trigger's makes it independent of that.
    pub async fn nudge_due_jobs(&self, queue: &str, delayed_jobs: bool) -> Result<(), sqlx::Error> {
        if let Db::Pg(p) = self {
            sqlx::query(
                "SELECT pg_notify('apalis::job::insert', json_build_object('job_type', job_type, 'id', id, \
                 'run_at', run_at)::text) FROM apalis.jobs WHERE job_type = $1 \
                 AND ((status = 'Failed' AND attempts < max_attempts) OR ($2 AND status = 'Pending')) \
                 AND run_at <= now() LIMIT 1",
            )
            .bind(queue)
            .bind(delayed_jobs)
            .execute(p)
            .await?;
        }
        Ok(())
    }
}
