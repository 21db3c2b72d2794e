//! Location history at fleet scale: the daily partitions of `location_snapshots` are made
//! ahead (across a day boundary, with the clock injected), retention drops exactly the
//! partitions past its bound while inserts go on, the migration of a populated table keeps
//! every row, the track pages through a trip that spans two partitions, and the node's
//! membership query is an index scan on tables that were never analyzed. The partition
//! tests run on a private Postgres (initdb, autovacuum off, like our machines).

use std::time::Duration;

use chrono::{Days, NaiveDate, Utc};
use fleetcast::store::Db;
use fleetcast::store::snapshots::{SnapshotRow, write_snapshots};
use serde_json::{Value, json};

use crate::both_modes;
use crate::common::*;
use crate::outage::PrivatePostgres;

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn at(day: NaiveDate, hms: &str) -> String {
    format!("{}T{hms}.000000Z", day.format("%Y-%m-%d"))
}

fn row(driver: &str, trip: Option<&str>, recorded_at: String) -> SnapshotRow {
    SnapshotRow {
        tenant: "default".into(),
        driver_id: driver.into(),
        trip_id: trip.map(str::to_string),
        lat: 1.0,
        lng: 2.0,
        speed: None,
        heading: None,
        accuracy: None,
        recorded_at,
    }
}

/// A fresh database on `pg` with the node's migrations.
async fn fresh(pg: &PrivatePostgres) -> Db {
    let name = unique("fch");
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.expect("private postgres");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&admin).await.expect("create db");
    admin.close().await;
    Db::connect(&pg.url(&name), 4).await.expect("db")
}

fn pool(db: &Db) -> &sqlx::PgPool {
    match db {
        Db::Pg(p) => p,
        Db::Sqlite(_) => panic!("postgres expected"),
    }
}

/// Partition names, oldest first.
async fn names(db: &Db) -> Vec<String> {
    db.snapshot_partitions().await.expect("partitions").into_iter().map(|p| p.name).collect()
}

fn day_name(d: NaiveDate) -> String {
    format!("location_snapshots_p{}", d.format("%Y%m%d"))
}

/// Which partition holds each of `driver`'s rows, by time.
async fn homes(db: &Db, driver: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), tableoid::regclass::text \
         FROM location_snapshots WHERE driver_id = $1 ORDER BY recorded_at",
    )
    .bind(driver)
    .fetch_all(pool(db))
    .await
    .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_across_a_day_boundary() {
    let pg = PrivatePostgres::init();
    let db = fresh(&pg).await;
    db.migrate().await.expect("migrations");
    let d0 = today();
    // The migration leaves the catch-all partition and today + 3 days.
    let mut expected: Vec<String> = vec!["location_snapshots_before".into()];
    expected.extend((0..=3).map(|i| day_name(d0 + Days::new(i))));
    assert_eq!(names(&db).await, expected);
    // Days go by (the clock is injected): each round makes what is missing, no more.
    let m = db.maintain_snapshots(d0 + Days::new(2), 3, 0).await.expect("maintain");
    assert_eq!(m.created, vec![day_name(d0 + Days::new(4)), day_name(d0 + Days::new(5))]);
    let m = db.maintain_snapshots(d0 + Days::new(2), 3, 0).await.expect("maintain again");
    assert!(m.created.is_empty(), "idempotent: {m:?}");
    // A row a second before and at the boundary land in their own days' partitions.
    let last = d0 + Days::new(4);
    let rows = vec![row("drv-b", None, at(last, "23:59:59")), row("drv-b", None, at(last + Days::new(1), "00:00:00"))];
    assert_eq!(write_snapshots(&db, &rows, None).await.expect("write"), 2);
    let got = homes(&db, "drv-b").await;
    assert_eq!(got[0].1, day_name(last));
    assert_eq!(got[1].1, day_name(last + Days::new(1)));
    // A finished day is vacuumed and analyzed once (its row count known and its visibility
    // map set without autovacuum), even when something analyzed it before.
    let n = day_name(last);
    sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {n}"))).execute(pool(&db)).await.expect("analyze");
    let m = db.maintain_snapshots(d0 + Days::new(6), 0, 0).await.expect("maintain");
    assert!(m.analyzed.contains(&n), "{m:?}");
    let parts = db.snapshot_partitions().await.expect("partitions");
    let p = parts.iter().find(|p| p.name == n).expect("partition");
    assert_eq!(p.rows, Some(1));
    assert!(p.vacuumed && p.bytes > 0, "{p:?}");
    let m = db.maintain_snapshots(d0 + Days::new(6), 0, 0).await.expect("maintain");
    assert!(!m.analyzed.contains(&n), "vacuumed twice: {m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_exactly_the_partitions_past_the_bound_while_inserts_continue() {
    let pg = PrivatePostgres::init();
    let db = fresh(&pg).await;
    db.migrate().await.expect("migrations");
    let d0 = today();
    db.maintain_snapshots(d0, 8, 0).await.expect("days ahead");
    // One row on each day d0 … d0+8.
    let rows: Vec<SnapshotRow> = (0..=8).map(|i| row("drv-r", None, at(d0 + Days::new(i), "12:00:00"))).collect();
    assert_eq!(write_snapshots(&db, &rows, None).await.expect("write"), 9);
    // A writer keeps inserting into a kept day while the old ones go.
    let writer = {
        let db = db.clone();
        let day = d0 + Days::new(7);
        tokio::spawn(async move {
            let mut written = 0u64;
            for i in 0..200 {
                let r = row("drv-w", None, at(day, &format!("10:{:02}:{:02}", i / 60, i % 60)));
                written += write_snapshots(&db, &[r], None).await.expect("insert during retention");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            written
        })
    };
    // Ten days later with 5 days kept: the bound is d0 + 5; partitions ending on or before
    // it go (the catch-all and d0 … d0+4), d0+5 on stay.
    let later = d0 + Days::new(10);
    let m = db.maintain_snapshots(later, 0, 5).await.expect("retention");
    let mut dropped = vec!["location_snapshots_before".to_string()];
    dropped.extend((0..=4).map(|i| day_name(d0 + Days::new(i))));
    let mut got = m.dropped.clone();
    got.sort();
    dropped.sort();
    assert_eq!(got, dropped);
    assert_eq!(writer.await.expect("writer"), 200, "every insert during retention went through");
    let kept: Vec<String> = homes(&db, "drv-r").await.into_iter().map(|(_, p)| p).collect();
    let expected: Vec<String> = (5..=8).map(|i| day_name(d0 + Days::new(i))).collect();
    assert_eq!(kept, expected, "exactly the rows of the kept days remain");
    // Rows older than the bound are skipped by the writer (no partition holds them).
    let old = row("drv-r", None, at(d0, "13:00:00"));
    let bound = fleetcast::store::partitions::keep_since(later, 5);
    assert_eq!(write_snapshots(&db, &[old], bound).await.expect("write"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_of_a_populated_table_keeps_every_row() {
    let pg = PrivatePostgres::init();
    let db = fresh(&pg).await;
    // The schema as it was before partitioning, filled with 20 days of rows.
    let mut before = sqlx::migrate!("./migrations/postgres");
    before.migrations =
        std::borrow::Cow::Owned(before.migrations.iter().filter(|m| m.version < 20261201000000).cloned().collect());
    before.run(pool(&db)).await.expect("old migrations");
    let first = today() - Days::new(20);
    let rows: Vec<SnapshotRow> = (0..20_000)
        .map(|i| {
            let day = first + Days::new(i / 1_000);
            let trip = format!("trip-{}", i / 100);
            row(&format!("drv-{}", i % 7), Some(&trip), at(day, &format!("{:02}:{:02}:{:02}", i % 24, i % 60, i % 60)))
        })
        .collect();
    for chunk in rows.chunks(5_000) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "INSERT INTO location_snapshots (tenant, driver_id, trip_id, lat, lng, recorded_at) ",
        );
        qb.push_values(chunk, |mut b, r| {
            b.push_bind(&r.tenant).push_bind(&r.driver_id).push_bind(&r.trip_id).push_bind(r.lat).push_bind(r.lng);
            b.push_bind(&r.recorded_at).push_unseparated("::timestamptz");
        });
        qb.push(" ON CONFLICT DO NOTHING");
        qb.build().execute(pool(&db)).await.expect("old rows");
    }
    let p = pool(&db).clone();
    let count = |sql: &'static str| {
        let p = p.clone();
        async move {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&p).await.expect("count");
            n
        }
    };
    let n_before = count("SELECT count(*) FROM location_snapshots").await;
    db.migrate().await.expect("the partitioning migration");
    assert_eq!(count("SELECT count(*) FROM location_snapshots").await, n_before, "every row kept");
    assert_eq!(count("SELECT count(*) FROM location_snapshots_before").await, n_before, "attached, not copied");
    let trips = count("SELECT count(DISTINCT trip_id) FROM location_snapshots").await;
    assert_eq!(count("SELECT count(*) FROM location_trip_spans").await, trips, "a span for every trip");
    // New rows go to daily partitions; the old table ends after its newest day.
    let parts = db.snapshot_partitions().await.expect("partitions");
    assert_eq!(parts[0].name, "location_snapshots_before");
    assert_eq!(parts[0].to, today().max(first + Days::new(20)));
    let fresh_row = row("drv-new", Some("trip-new"), at(today() + Days::new(1), "08:00:00"));
    assert_eq!(write_snapshots(&db, &[fresh_row], None).await.expect("write"), 1);
    assert_eq!(homes(&db, "drv-new").await[0].1, day_name(today() + Days::new(1)));
}

/// The track of a trip across midnight, read in pages: every snapshot once, in order, from
/// both partitions (and from SQLite the same way).
async fn the_track_pages_through_a_trip_that_spans_two_partitions(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let trip = unique("t");
    let driver = unique("d");
    h.insert_trip("default", &trip, Some(&driver)).await;
    // 22:00 yesterday to 02:00 today, one snapshot a minute: 241 rows over two days.
    let start = Utc::now().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc() - chrono::Duration::hours(2);
    let rows: Vec<SnapshotRow> = (0..241)
        .map(|i| {
            let t = start + chrono::Duration::minutes(i);
            row(&driver, Some(&trip), t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        })
        .collect();
    assert_eq!(write_snapshots(&h.db, &rows, None).await.expect("write"), 241);
    if mode.shared() {
        let parts: Vec<String> = homes(&h.db, &driver).await.into_iter().map(|(_, p)| p).collect();
        let distinct: std::collections::BTreeSet<&String> = parts.iter().collect();
        assert_eq!(distinct.len(), 2, "the trip spans two partitions: {distinct:?}");
    }
    let http = reqwest::Client::new();
    let admin = token("adm", "ADMIN");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = format!("{}/api/v1/trips/{trip}/track?limit=50", h.a());
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let body: Value = http.get(url).bearer_auth(&admin).send().await.expect("track").json().await.expect("json");
        pages += 1;
        let page: Vec<String> = body["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .map(|p| p["recordedAt"].as_str().expect("time").to_string())
            .collect();
        assert!(page.len() <= 50);
        seen.extend(page);
        assert_eq!(body["truncated"], json!(body["nextCursor"].is_string()));
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "paging must end");
    }
    let expected: Vec<String> = rows.iter().map(|r| r.recorded_at.clone()).collect();
    assert_eq!(seen, expected, "every snapshot once, in time order");
    assert_eq!(pages, 5);
    // A window within the span still pages, and bad paging input is refused.
    let r = http.get(format!("{}/api/v1/trips/{trip}/track?limit=0", h.a())).bearer_auth(&admin).send().await;
    assert_eq!(r.expect("track").status(), 400);
    let r = http.get(format!("{}/api/v1/trips/{trip}/track?cursor=zz", h.a())).bearer_auth(&admin).send().await;
    assert_eq!(r.expect("track").status(), 400);
    h.stop().await;
}

both_modes!(the_track_pages_through_a_trip_that_spans_two_partitions);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trip_memberships_are_an_index_scan_on_tables_never_analyzed() {
    let pg = PrivatePostgres::init();
    let db = fresh(&pg).await;
    db.migrate().await.expect("migrations");
    sqlx::query(
        "INSERT INTO trips (tenant, id, organizer_id) SELECT 'big', 'trip-' || i, 'o' FROM generate_series(1, 25000) i",
    )
    .execute(pool(&db))
    .await
    .expect("trips");
    let ids: Vec<String> = (1..=500).map(|i| format!("trip-{}", i * 37)).collect();
    let explain = format!("EXPLAIN (FORMAT JSON) {}", fleetcast::store::TRIP_MEMBERSHIPS_PG);
    let (plan,): (Value,) = sqlx::query_as(sqlx::AssertSqlSafe(explain))
        .bind("big")
        .bind(&ids)
        .fetch_one(pool(&db))
        .await
        .expect("explain");
    let text = plan.to_string();
    // The ids themselves are the index condition (the old `IN (SELECT
    // jsonb_array_elements_text(..))` shape read every trip of the tenant through an index
    // condition on the tenant alone, then hashed).
    assert!(!text.contains("Seq Scan"), "no scan of every trip: {text}");
    assert!(text.contains("\"Index Cond\"") && text.contains("(id = ANY"), "the ids drive the index: {text}");
    // And it answers: the 500 trips, found through the node's own call.
    let found = db.trip_memberships(&fleetcast::domain::Tenant("big".into()), &ids).await.expect("memberships");
    assert_eq!(found.len(), 500);
}
