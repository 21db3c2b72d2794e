#!/usr/bin/env bash
# Location history at fleet scale (BENCHMARKS.md "Location history"): fills a partitioned
# `location_snapshots` with ROWS_PER_DAY × DAYS rows (default 10 M × 10 = 100 M) in a
# database of its own, then measures the track query of a 2-hour trip (p50/p99 over
# random trips), the time to drop one day's partition, disk per million rows, and the
# worker's insert rate into the partitioned table against a plain table (same session).
#
#   loadtest/history/bench.sh [fill|fleet|measure|migration|all]      (default all)
#
# `fleet` reads random 2-hour trips of every day (not one): as the page cache holds them,
# then (as root) right after dropping the page cache, three 30 s runs in a row.
#
# Needs the workspace built (`cargo build --release -p fleetcast-worker --examples`), a
# Postgres at PGURL (default the machine's) and ≈ 25 GB of disk for 100 M rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=${DB:-fleetcast_history_bench}
DAYS=${DAYS:-10}
DRIVERS=${DRIVERS:-3500}          # × 2,880 samples a day (one per 30 s) ≈ 10 M rows a day
OUT=${OUT:-loadtest/results/history.md}
step=${1:-all}
q() { psql "$PGURL/$DB" -v ON_ERROR_STOP=1 -Atqc "$1"; }
log() { printf '== %s\n' "$*" >&2; }

fill() {
  psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
  # The node's own migrations (the partitioned table) through the worker, which applies
  # them at start; it is stopped once the schema is there.
  ${WORKER:-target/release/fleetcast-worker} --database-url "$PGURL/$DB" --metrics-bind 127.0.0.1:0 \
    --snapshot-retention-days 0 >/tmp/history-worker.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    [ "$(q "SELECT count(*) FROM pg_inherits WHERE inhparent = 'location_snapshots'::regclass" 2>/dev/null || echo 0)" -gt 1 ] && break
    sleep 0.2
  done
  kill "$pid"; wait "$pid" || true
  # History starts DAYS ago: the catch-all partition ends there, one partition a day after.
  q "ALTER TABLE location_snapshots DETACH PARTITION location_snapshots_before; DROP TABLE location_snapshots_before;"
  local first; first=$(q "SELECT (now() AT TIME ZONE 'UTC')::date - $DAYS")
  q "CREATE TABLE location_snapshots_before PARTITION OF location_snapshots FOR VALUES FROM (MINVALUE) TO ('$first 00:00:00+00')"
  for i in $(seq "$DAYS" -1 1); do
    local day; day=$(q "SELECT (now() AT TIME ZONE 'UTC')::date - $i")
    local next; next=$(q "SELECT '$day'::date + 1")
    local name="location_snapshots_p${day//-/}"
    q "CREATE TABLE IF NOT EXISTS $name PARTITION OF location_snapshots FOR VALUES FROM ('$day 00:00:00+00') TO ('$next 00:00:00+00')"
    local t0; t0=$(date +%s.%N)
    # Drivers d0…, one sample every 30 s, a trip every 2 hours (240 samples).
    q "INSERT INTO location_snapshots (tenant, driver_id, recorded_at, trip_id, lat, lng, speed, heading, accuracy)
       SELECT 'bench', 'd' || d, '$day 00:00:00+00'::timestamptz + s * interval '30 seconds',
              'trip-' || d || '-${day//-/}-' || (s / 240),
              48.80 + (d % 200) * 0.001 + s * 0.000001, 2.30 + (d / 200) * 0.001 + s * 0.000001,
              8.0 + (s % 10), (s % 360)::float8, 5.0
       FROM generate_series(0, $DRIVERS - 1) d, generate_series(0, 2879) s"
    # Each trip's span, as the worker keeps it with each insert.
    q "INSERT INTO location_trip_spans (tenant, trip_id, first_at, last_at)
       SELECT 'bench', 'trip-' || d || '-${day//-/}-' || t,
              '$day 00:00:00+00'::timestamptz + t * interval '2 hours',
              '$day 00:00:00+00'::timestamptz + t * interval '2 hours' + 239 * interval '30 seconds'
       FROM generate_series(0, $DRIVERS - 1) d, generate_series(0, 11) t"
    log "$day: $(q "SELECT count(*) FROM $name") rows in $(echo "$(date +%s.%N) - $t0" | bc) s"
    q "ANALYZE $name"
  done
}

measure() {
  local rows bytes; rows=$(q "SELECT count(*) FROM location_snapshots")
  bytes=$(q "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'location_snapshots'::regclass")
  log "rows $rows, bytes $bytes"
  local day; day=$(q "SELECT (now() AT TIME ZONE 'UTC')::date - 2")
  # The API's read (src/store/snapshots.rs): the trip's span, then its rows within the span,
  # first page. The API sends the span's ends as parameters of a second statement; here one
  # statement reads them as subqueries, which Postgres also prunes partitions with (at run
  # time; the EXPLAIN below shows the partitions actually scanned).
  cat > /tmp/history-track.sql <<SQL
\set d random(0, $DRIVERS - 1)
\set t random(0, 11)
SELECT tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at
  FROM location_snapshots
 WHERE tenant = 'bench' AND trip_id = 'trip-' || :d || '-${day//-/}-' || :t
   AND recorded_at >= (SELECT first_at FROM location_trip_spans WHERE tenant = 'bench' AND trip_id = 'trip-' || :d || '-${day//-/}-' || :t)
   AND recorded_at <= (SELECT last_at FROM location_trip_spans WHERE tenant = 'bench' AND trip_id = 'trip-' || :d || '-${day//-/}-' || :t)
 ORDER BY location_snapshots.recorded_at, driver_id LIMIT 10001;
SQL
  sed -e "s/:d/7/g; s/:t/3/g" -e '/^\\set/d' /tmp/history-track.sql | sed '1s/^/EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) /' \
    | psql "$PGURL/$DB" -At > /tmp/history-explain.txt
  pct() { cat /tmp/pgbench_log.* | awk '{print $3}' | sort -n \
    | awk '{a[NR]=$1} END {printf "n=%d p50=%.2f ms p99=%.2f ms max=%.2f ms", NR, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[NR]/1000}'; }
  rm -f /tmp/pgbench_log.*
  (cd /tmp && pgbench -n -c 1 -T 30 -f /tmp/history-track.sql -l "$PGURL/$DB" >/tmp/history-pgbench.txt)
  local lat; lat=$(pct)
  log "track, random trips of one day: $lat"
  # The same trip again and again: what the query costs when its pages are cached.
  sed -e 's/^\\set d .*/\\set d 7/; s/^\\set t .*/\\set t 3/' /tmp/history-track.sql > /tmp/history-track-warm.sql
  rm -f /tmp/pgbench_log.*
  (cd /tmp && pgbench -n -c 1 -T 10 -f /tmp/history-track-warm.sql -l "$PGURL/$DB" >/dev/null)
  local warm; warm=$(pct)
  log "track, one cached trip: $warm"
  # Drop the oldest day (detach concurrently, then drop), timed.
  local oldest; oldest=$(q "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'location_snapshots'::regclass AND c.relname LIKE 'location_snapshots_p%' ORDER BY 1 LIMIT 1")
  local t0; t0=$(date +%s.%N)
  q "ALTER TABLE location_snapshots DETACH PARTITION $oldest CONCURRENTLY"
  q "DROP TABLE $oldest"
  local drop; drop=$(echo "$(date +%s.%N) - $t0" | bc)
  log "drop $oldest: $drop s"
  {
    echo "### $(date -u +%FT%TZ) $(git rev-parse --short HEAD)"
    echo "- rows: $rows in $DAYS daily partitions; disk: $bytes bytes ($(echo "$bytes / ($rows / 1000000)" | bc) bytes per million rows)"
    echo "- track query of a 2-hour trip (240 rows), random trips of one day (mostly not cached), pgbench 30 s × 1 client: $lat"
    echo "- the same, one trip over and over (its pages cached), 10 s: $warm"
    local parts skipped; parts=$(grep -c 'Scan using location_snapshots_' /tmp/history-explain.txt || true)
    skipped=$(grep 'Scan using location_snapshots_' /tmp/history-explain.txt | grep -c 'never executed' || true)
    echo "- partitions the track read of one trip scanned: $((parts - skipped)) of $parts (the others pruned at run time)"
    echo "- drop one day's partition ($oldest, detach concurrently + drop): ${drop} s"
  } >>"$OUT"
}

# Random trips of every day, through the API's two statements (the span, then the rows in
# it), as pgbench runs of 30 s each; percentiles of each run.
fleet_run() {
  cat > /tmp/history-fleet.sql <<SQL
\set d random(0, $DRIVERS - 1)
\set t random(0, 11)
\set k random(1, $DAYS)
SELECT extract(epoch FROM first_at) AS f, extract(epoch FROM last_at) AS l FROM location_trip_spans
 WHERE tenant = 'bench' AND trip_id = 'trip-' || :d || '-' || to_char(current_date - :k, 'YYYYMMDD') || '-' || :t \gset
SELECT tenant, driver_id, trip_id, lat, lng, speed, heading, accuracy,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at
  FROM location_snapshots
 WHERE tenant = 'bench' AND trip_id = 'trip-' || :d || '-' || to_char(current_date - :k, 'YYYYMMDD') || '-' || :t
   AND recorded_at >= to_timestamp(:f) AND recorded_at <= to_timestamp(:l)
 ORDER BY location_snapshots.recorded_at, driver_id LIMIT 10001;
SQL
  rm -f /tmp/pgbench_log.*
  (cd /tmp && pgbench -n -c 1 -T 30 -f /tmp/history-fleet.sql -l "$PGURL/$DB" >/tmp/history-pgbench.txt)
  # pgbench logs one line per transaction (both statements): its latency in µs.
  cat /tmp/pgbench_log.* | awk '{print $3}' | sort -n \
    | awk '{a[NR]=$1} END {printf "n=%d p50=%.2f ms p99=%.2f ms max=%.2f ms", NR, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, a[NR]/1000}'
}

fleet() {
  local warm; warm=$(fleet_run)
  log "random trips of all $DAYS days, page cache as it is: $warm"
  echo "### $(date -u +%FT%TZ) $(git rev-parse --short HEAD) fleet" >>"$OUT"
  echo "- track of a random 2-hour trip (240 rows) of any of the $DAYS days (span, then rows: the API's two statements), pgbench 30 s × 1 client, page cache as the machine left it: $warm" >>"$OUT"
  if [ -w /proc/sys/vm/drop_caches ]; then
    sync
    echo 3 > /proc/sys/vm/drop_caches
    for i in 1 2 3; do
      local r; r=$(fleet_run)
      log "after dropping the page cache, run $i: $r"
      echo "- the same right after dropping the page cache (echo 3 to /proc/sys/vm/drop_caches), run $i of 3 in a row: $r" >>"$OUT"
    done
  fi
}

# The partitioning migration on a populated table: the schema before it (made by a worker
# built from the commit before partitioning, OLD_WORKER), MIGRATE_ROWS rows, then the
# migration alone, timed.
migration() {
  local db=${DB}_migration rows=${MIGRATE_ROWS:-10000000}
  psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  "${OLD_WORKER:?a fleetcast-worker built before partitioning}" --database-url "$PGURL/$db" \
    --metrics-bind 127.0.0.1:0 >/tmp/history-old-worker.log 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    psql "$PGURL/$db" -Atqc "SELECT 1 FROM location_snapshots LIMIT 1" >/dev/null 2>&1 && break
    sleep 0.2
  done
  kill "$pid"; wait "$pid" || true
  psql "$PGURL/$db" -qc "INSERT INTO location_snapshots (tenant, driver_id, recorded_at, trip_id, lat, lng)
    SELECT 'bench', 'd' || (i % 3500), now() - interval '20 days' + (i / 3500) * interval '30 seconds',
           'trip-' || (i % 3500) || '-' || (i / 840000), 48.8, 2.3 FROM generate_series(0, $rows - 1) i"
  local t0; t0=$(date +%s.%N)
  psql "$PGURL/$db" -v ON_ERROR_STOP=1 -q -1 -f migrations/postgres/20261201000001_partitioned_snapshots.sql
  local took; took=$(echo "$(date +%s.%N) - $t0" | bc)
  local kept; kept=$(psql "$PGURL/$db" -Atqc "SELECT count(*) FROM location_snapshots")
  log "migration of $rows rows: $took s, $kept rows after"
  local per; per=$(echo "scale=2; $took * 1000000 / $rows" | bc)
  echo "- partitioning migration of a populated table: $rows rows in $took s ($per s per million rows), $kept rows after" >>"$OUT"
  psql "$PGURL/postgres" -qc "DROP DATABASE $db"
}

case "$step" in
  fill) fill ;;
  fleet) fleet ;;
  measure) measure ;;
  migration) migration ;;
  all) fill; fleet; measure; migration ;;
esac
