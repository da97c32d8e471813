-- Time a ticket has spent waiting for parts: its SLA clock is stopped meanwhile.
ALTER TABLE tickets ADD COLUMN sla_paused_ms BIGINT NOT NULL DEFAULT 0
