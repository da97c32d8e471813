-- Devices that may connect over MQTT. Portable SQL: runs on SQLite and PostgreSQL.
CREATE TABLE devices (
    device_id   TEXT PRIMARY KEY,
    secret_salt TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    model       TEXT,
    serial      TEXT,
    batch       TEXT,
    site        TEXT,
    created_at  TEXT NOT NULL
);
