-- Trip offers: which drivers were offered a trip, in which round, and how it ended
-- (OFFERED, DECLINED, EXPIRED, ACCEPTED, TAKEN, CANCELLED). One row per driver and trip:
-- a declined driver is never offered the trip again, an offered one not twice.
CREATE TABLE trip_offers (
    tenant      TEXT        NOT NULL,
    trip_id     TEXT        NOT NULL,
    driver_id   TEXT        NOT NULL,
    round       INTEGER     NOT NULL DEFAULT 0,
    status      TEXT        NOT NULL DEFAULT 'OFFERED',
    distance_km DOUBLE PRECISION,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, trip_id, driver_id),
    FOREIGN KEY (tenant, trip_id) REFERENCES trips (tenant, id)
);

-- The current offer round of a trip and its deadline (NULL: never offered).
ALTER TABLE trips ADD COLUMN offer_round INTEGER;
ALTER TABLE trips ADD COLUMN offer_deadline TIMESTAMPTZ;
CREATE INDEX bookings_passenger ON bookings (tenant, passenger_id);
