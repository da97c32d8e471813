-- People who sign in to the web console. Roles are the API roles; a provider user is scoped
-- to its provider's subtree, a technician user is bound to one technician (its jobs only).
-- Only an argon2id PHC string of the password is stored.
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    provider_id   TEXT REFERENCES providers (provider_id),
    technician_id TEXT REFERENCES technicians (technician_id),
    lang          TEXT NOT NULL DEFAULT 'en',
    disabled      BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
-- Server-side sessions. The cookie carries a 256-bit random id; only its SHA-256 is stored,
-- so a copy of the database signs nobody in. The CSRF token is per session.
CREATE TABLE sessions (
    session_hash  TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (user_id),
    csrf_token    TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
