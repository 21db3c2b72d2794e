-- Trip offers (same shape as the Postgres migration; times as ISO-8601 text).
CREATE TABLE trip_offers (
    tenant      TEXT    NOT NULL,
    trip_id     TEXT    NOT NULL,
    driver_id   TEXT    NOT NULL,
    round       INTEGER NOT NULL DEFAULT 0,
    status      TEXT    NOT NULL DEFAULT 'OFFERED',
    distance_km REAL,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (tenant, trip_id, driver_id),
    FOREIGN KEY (tenant, trip_id) REFERENCES trips (tenant, id)
);

ALTER TABLE trips ADD COLUMN offer_round INTEGER;
ALTER TABLE trips ADD COLUMN offer_deadline TEXT;
CREATE INDEX bookings_passenger ON bookings (tenant, passenger_id);
