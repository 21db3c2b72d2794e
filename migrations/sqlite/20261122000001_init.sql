-- fleetcast schema (SQLite, embedded mode; same shape, times as ISO-8601 text). Every table is keyed by tenant first: tenants never mix,
-- even for equal ids. Columns follow CONTRACT §4 (camelCase on the wire, snake_case here).

-- Drivers and their availability for offers (AVAILABLE, BUSY, OFFLINE).
CREATE TABLE drivers (
    tenant      TEXT        NOT NULL,
    id          TEXT        NOT NULL,
    name        TEXT,
    status      TEXT        NOT NULL DEFAULT 'AVAILABLE',
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (tenant, id)
);

-- Trips. `driver_id` is the assigned driver (NULL until an offer is accepted);
-- `available_seats` never goes below zero (the CHECK backs the booking transaction).
CREATE TABLE trips (
    tenant              TEXT             NOT NULL,
    id                  TEXT             NOT NULL,
    trip_type           TEXT             NOT NULL DEFAULT 'PRIVATE',
    title               TEXT             NOT NULL DEFAULT '',
    status              TEXT             NOT NULL DEFAULT 'PUBLISHED',
    origin_name         TEXT             NOT NULL DEFAULT '',
    origin_lat          REAL NOT NULL DEFAULT 0,
    origin_lng          REAL NOT NULL DEFAULT 0,
    dest_name           TEXT             NOT NULL DEFAULT '',
    dest_lat            REAL NOT NULL DEFAULT 0,
    dest_lng            REAL NOT NULL DEFAULT 0,
    departure_time      TEXT      NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    total_seats         INTEGER          NOT NULL DEFAULT 0,
    available_seats     INTEGER          NOT NULL DEFAULT 0 CHECK (available_seats >= 0),
    price_per_seat      REAL NOT NULL DEFAULT 0,
    currency            TEXT             NOT NULL DEFAULT 'USD',
    estimated_earnings  REAL,
    organizer_id        TEXT             NOT NULL DEFAULT '',
    driver_id           TEXT,
    created_at          TEXT      NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at          TEXT      NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (tenant, id)
);
CREATE INDEX trips_driver ON trips (tenant, driver_id);

-- Bookings of seats on a trip; a passenger may hold several on one trip.
CREATE TABLE bookings (
    tenant          TEXT             NOT NULL,
    id              TEXT             NOT NULL,
    trip_id         TEXT             NOT NULL,
    passenger_id    TEXT             NOT NULL,
    passenger_name  TEXT,
    seats_booked    INTEGER          NOT NULL DEFAULT 1 CHECK (seats_booked > 0),
    seat_number     INTEGER,
    status          TEXT             NOT NULL DEFAULT 'CONFIRMED',
    reference_code  TEXT,
    ticket_token    TEXT,
    pickup_point    TEXT,
    drop_point      TEXT,
    price           REAL NOT NULL DEFAULT 0,
    created_at      TEXT      NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at      TEXT      NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, trip_id) REFERENCES trips (tenant, id)
);
CREATE INDEX bookings_trip_passenger ON bookings (tenant, trip_id, passenger_id);

-- Append-only log of trip status changes.
CREATE TABLE trip_status_updates (
    id               INTEGER     PRIMARY KEY AUTOINCREMENT,
    tenant           TEXT        NOT NULL,
    trip_id          TEXT        NOT NULL,
    previous_status  TEXT,
    new_status       TEXT        NOT NULL,
    notes            TEXT,
    changed_by       TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    FOREIGN KEY (tenant, trip_id) REFERENCES trips (tenant, id)
);
CREATE INDEX trip_status_updates_trip ON trip_status_updates (tenant, trip_id, created_at);

-- Sampled driver positions written by the worker; the natural key makes replays idempotent.
CREATE TABLE location_snapshots (
    tenant       TEXT             NOT NULL,
    driver_id    TEXT             NOT NULL,
    recorded_at  TEXT      NOT NULL,
    trip_id      TEXT,
    lat          REAL NOT NULL,
    lng          REAL NOT NULL,
    speed        REAL,
    heading      REAL,
    accuracy     REAL,
    created_at   TEXT      NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (tenant, driver_id, recorded_at)
);
CREATE INDEX location_snapshots_trip ON location_snapshots (tenant, trip_id, recorded_at);
