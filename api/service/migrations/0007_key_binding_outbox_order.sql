-- A technician key is bound to its technician: it sees and moves only that technician's jobs.
-- Keys issued before this column existed have none and see nothing (re-issue them).
ALTER TABLE api_keys ADD COLUMN technician_id TEXT REFERENCES technicians (technician_id);
-- Per-endpoint delivery order: events of one webhook go out in the order they were queued.
-- `created_at_ms` ties within a millisecond and event ids are random, so the outbox gets a
-- sequence number, assigned inside the transaction that queues the event.
ALTER TABLE outbox ADD COLUMN seq BIGINT;
UPDATE outbox SET seq = (
    SELECT COUNT(*) FROM outbox o
    WHERE o.created_at_ms < outbox.created_at_ms
       OR (o.created_at_ms = outbox.created_at_ms AND o.event_id <= outbox.event_id)
);
CREATE INDEX outbox_endpoint ON outbox (webhook_id, state, seq)
