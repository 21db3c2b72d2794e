-- location_snapshots becomes a table partitioned by day of `recorded_at` (UTC), so history
-- is cheap to keep (each day its own table and indexes), cheap to drop (retention detaches
-- and drops whole partitions, never deletes row by row) and fast to read (a trip's track
-- touches the partitions of its time span only).
--
-- The existing table is not copied: it is renamed and attached as the partition
-- `location_snapshots_before`, holding every time before the first daily partition
-- (MINVALUE .. the day after its newest row, or tomorrow). Attaching reads the table once
-- to check the bound and builds the covering trip index on it (BENCHMARKS.md: seconds per
-- million rows); its primary key is reused.
-- The daily partitions for the next days are created here; the worker keeps creating them
-- ahead (`--snapshot-partitions-ahead`) and drops them past `--snapshot-retention-days`.

ALTER TABLE location_snapshots RENAME TO location_snapshots_before;
ALTER INDEX location_snapshots_pkey RENAME TO location_snapshots_before_pkey;
-- The old trip index does not cover the read; the attach below builds the covering one.
DROP INDEX location_snapshots_trip;

CREATE TABLE location_snapshots (
    tenant       TEXT             NOT NULL,
    driver_id    TEXT             NOT NULL,
    recorded_at  TIMESTAMPTZ      NOT NULL,
    trip_id      TEXT,
    lat          DOUBLE PRECISION NOT NULL,
    lng          DOUBLE PRECISION NOT NULL,
    speed        DOUBLE PRECISION,
    heading      DOUBLE PRECISION,
    accuracy     DOUBLE PRECISION,
    created_at   TIMESTAMPTZ      NOT NULL DEFAULT now(),
    -- The natural key includes the partition key, so it is unique across partitions and
    -- the worker's `ON CONFLICT DO NOTHING` stays idempotent.
    PRIMARY KEY (tenant, driver_id, recorded_at)
) PARTITION BY RANGE (recorded_at);

-- The track read: one trip, in time order, within the partitions of its span. It covers
-- every column the read returns, so once a finished day is vacuumed (the worker does it)
-- the read is an index-only scan: a trip's rows are together in the index even when they
-- are spread over the heap. Attaching the old table builds this index on it.
CREATE INDEX location_snapshots_trip ON location_snapshots (tenant, trip_id, recorded_at)
    INCLUDE (driver_id, lat, lng, speed, heading, accuracy);

DO $$
DECLARE
    first_day date;
    d date;
BEGIN
    -- GREATEST ignores NULL: an empty table starts the daily partitions today.
    SELECT greatest(max((recorded_at AT TIME ZONE 'UTC')::date) + 1, (now() AT TIME ZONE 'UTC')::date)
      INTO first_day FROM location_snapshots_before;
    EXECUTE format(
        'ALTER TABLE location_snapshots ATTACH PARTITION location_snapshots_before FOR VALUES FROM (MINVALUE) TO (%L)',
        first_day::timestamp AT TIME ZONE 'UTC');
    FOR i IN 0..3 LOOP
        d := first_day + i;
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF location_snapshots FOR VALUES FROM (%L) TO (%L)',
            'location_snapshots_p' || to_char(d, 'YYYYMMDD'),
            d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
END $$;

-- The time span of each trip's snapshots (in whole hours), kept by the worker in the same statement as each
-- batch insert: the track query reads it first (a primary-key lookup) and then scans only
-- the partitions between the trip's first and last snapshot, whatever the driver's clock
-- said. Rows of dropped partitions leave their span behind until the maintenance that
-- dropped them deletes spans ending before the retention bound.
CREATE TABLE location_trip_spans (
    tenant    TEXT        NOT NULL,
    trip_id   TEXT        NOT NULL,
    first_at  TIMESTAMPTZ NOT NULL,
    last_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, trip_id)
);
-- Spans are kept in whole UTC hours (first hour's start, last hour's end), so the worker
-- rewrites a trip's span about once an hour, not with every batch.
INSERT INTO location_trip_spans (tenant, trip_id, first_at, last_at)
SELECT tenant, trip_id,
       date_trunc('hour', min(recorded_at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
       date_trunc('hour', max(recorded_at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 hour'
FROM location_snapshots_before WHERE trip_id IS NOT NULL GROUP BY tenant, trip_id;
