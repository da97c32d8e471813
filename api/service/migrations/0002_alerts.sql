-- Predictive alerts raised by the online models. One row per alert; an alert that is still
-- active is updated in place (de-duplication per device and failure mode).
CREATE TABLE alerts (
    alert_id          TEXT PRIMARY KEY,
    device_id         TEXT NOT NULL,
    failure_mode      TEXT NOT NULL,
    state             TEXT NOT NULL,
    severity          TEXT NOT NULL,
    started_at_ms     BIGINT NOT NULL,
    opened_at_ms      BIGINT NOT NULL,
    acknowledged_at_ms BIGINT,
    resolved_at_ms    BIGINT,
    last_anomalous_ms BIGINT NOT NULL,
    occurrences       BIGINT NOT NULL,
    peak_score        DOUBLE PRECISION NOT NULL,
    rul_hours         DOUBLE PRECISION,
    rul_lower_hours   DOUBLE PRECISION,
    rul_upper_hours   DOUBLE PRECISION,
    evidence          TEXT NOT NULL,
    close_code        TEXT,
    updated_at        TEXT NOT NULL
);
CREATE INDEX alerts_device_mode ON alerts (device_id, failure_mode, state)
