-- Named MQTT clients beside devices (integrations, gateways, test clients), as in Mosquitto's
-- ACL files: a name and secret to log in with, the client ids the name may use, and topic
-- rules (JSON arrays of MQTT topic filters). Only a salted SHA-256 of the 256-bit secret is
-- stored; an anonymous client (no login at all) has no secret.
CREATE TABLE mqtt_clients (
    name          TEXT PRIMARY KEY,
    secret_salt   TEXT,
    secret_hash   TEXT,
    client_ids    TEXT NOT NULL,
    publish       TEXT NOT NULL,
    subscribe     TEXT NOT NULL,
    deny          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
