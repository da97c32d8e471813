-- Surge alerts raised by the background check: a failure mode whose last-7-day count is
-- improbable under its baseline. A mode is raised again only 7 days after its last alert.
CREATE TABLE surge_alerts (
    surge_id          TEXT PRIMARY KEY,
    failure_mode      TEXT NOT NULL,
    window_start_ms   BIGINT NOT NULL,
    failures          BIGINT NOT NULL,
    baseline_per_week DOUBLE PRECISION NOT NULL,
    p_value           DOUBLE PRECISION NOT NULL,
    top_batch         TEXT,
    top_batch_share   DOUBLE PRECISION NOT NULL,
    top_region        TEXT,
    raised_at_ms      BIGINT NOT NULL
);
CREATE INDEX surge_alerts_mode ON surge_alerts (failure_mode, raised_at_ms);
