-- One device table. `devices` becomes the asset record every part of the service reads
-- (identity, placement in the service network, warranty, criticality); the MQTT credential
-- lives beside it in `device_credentials`. A device known only to MQTT (registered with
-- `prognos device add`) has an asset row without a site until it is placed in the network.
CREATE TABLE device_credentials (
    device_id   TEXT PRIMARY KEY,
    secret_salt TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
INSERT INTO device_credentials (device_id, secret_salt, secret_hash, created_at)
    SELECT device_id, secret_salt, secret_hash, created_at FROM devices;
CREATE TABLE assets (
    device_id     TEXT PRIMARY KEY,
    site_id       TEXT REFERENCES sites (site_id),
    -- Free-text site given at MQTT registration (kept: never drop data on doubt).
    site_label    TEXT,
    serial        TEXT,
    model         TEXT,
    batch         TEXT,
    firmware      TEXT,
    install_date  TEXT,
    warranty_end  TEXT,
    criticality   BIGINT NOT NULL,
    vip           BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
INSERT INTO assets (device_id, site_id, serial, model, batch, firmware, install_date,
                    warranty_end, criticality, vip, created_at_ms)
    SELECT device_id, site_id, serial, model, batch, firmware, install_date, warranty_end,
           criticality, vip, created_at_ms
      FROM service_devices;
INSERT INTO assets (device_id, site_label, serial, model, batch, criticality, vip, created_at_ms)
    SELECT d.device_id, d.site, d.serial, d.model, d.batch, 2, 0,
           COALESCE(CAST(strftime('%s', d.created_at) AS INTEGER) * 1000, 0)
      FROM devices d
     WHERE NOT EXISTS (SELECT 1 FROM service_devices s WHERE s.device_id = d.device_id);
UPDATE assets SET site_label = (SELECT d.site FROM devices d WHERE d.device_id = assets.device_id)
 WHERE site_label IS NULL;
DROP TABLE service_devices;
DROP TABLE devices;
ALTER TABLE assets RENAME TO devices;
CREATE INDEX devices_by_site ON devices (site_id);
