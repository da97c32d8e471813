//! The device registry: which devices may connect over MQTT and the secrets they authenticate
//! with (`device_credentials`, beside the one asset record per device in `devices`).
//!
//! A secret is 256 random bits issued once and never stored: only a salted SHA-256 of it is.
//! A slow password hash (argon2) protects low-entropy human passwords against guessing; for a
//! uniformly random 256-bit secret guessing is hopeless anyway, so a fast hash gives the same
//! protection for a leaked table without making every MQTT CONNECT cost tens of milliseconds.
//! Comparison is constant-time.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::db::Database;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("device id {0:?} is invalid: use 1-64 characters from A-Z a-z 0-9 - _ .")]
    InvalidId(String),
    #[error("device {0:?} already exists")]
    Duplicate(String),
    #[error("cannot draw random bytes for a secret: {0}")]
    Random(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// What `device add` takes.
#[derive(Debug, Clone, Default)]
pub struct NewDevice {
    pub device_id: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub batch: Option<String>,
    pub site: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub batch: Option<String>,
    pub site: Option<String>,
    pub created_at: String,
}

/// A newly registered device and its secret, shown exactly once.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedDevice {
    pub device_id: String,
    pub secret: String,
}

#[derive(Clone, Debug)]
pub struct DeviceRegistry {
    db: Database,
}

impl DeviceRegistry {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn add(&self, new: &NewDevice) -> Result<IssuedDevice, RegistryError> {
        if !is_valid_device_id(&new.device_id) {
            return Err(RegistryError::InvalidId(new.device_id.clone()));
        }
        let secret = hex::encode(random_bytes::<32>()?);
        let salt = hex::encode(random_bytes::<16>()?);
        let hash = secret_hash(&salt, &secret);
        let now = chrono::Utc::now();
        let mut tx = self.db.pool().begin().await?;
        let result = sqlx::query(
            "INSERT INTO device_credentials (device_id, secret_salt, secret_hash, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&new.device_id)
        .bind(&salt)
        .bind(&hash)
        .bind(now.to_rfc3339())
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(RegistryError::Duplicate(new.device_id.clone()));
            }
            Err(e) => return Err(e.into()),
        }
        // The asset record: created here, or completed where the service network already
        // placed the device (what it already knows wins).
        sqlx::query(
            "INSERT INTO devices (device_id, site_label, serial, model, batch, criticality, vip,
                                  created_at_ms)
             VALUES ($1, $2, $3, $4, $5, 2, 0, $6)
             ON CONFLICT (device_id) DO UPDATE SET
                site_label = COALESCE(devices.site_label, excluded.site_label),
                serial = COALESCE(devices.serial, excluded.serial),
                model = COALESCE(devices.model, excluded.model),
                batch = COALESCE(devices.batch, excluded.batch)",
        )
        .bind(&new.device_id)
        .bind(&new.site)
        .bind(&new.serial)
        .bind(&new.model)
        .bind(&new.batch)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(IssuedDevice {
            device_id: new.device_id.clone(),
            secret,
        })
    }

    pub async fn list(&self) -> Result<Vec<Device>, RegistryError> {
        let rows = sqlx::query(
            "SELECT c.device_id, d.model, d.serial, d.batch, COALESCE(d.site_label, d.site_id),
                    c.created_at
               FROM device_credentials c LEFT JOIN devices d ON d.device_id = c.device_id
              ORDER BY c.device_id",
        )
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| Device {
                device_id: row.get(0),
                model: row.get(1),
                serial: row.get(2),
                batch: row.get(3),
                site: row.get(4),
                created_at: row.get(5),
            })
            .collect())
    }

    /// True when `secret` is the one issued to `device_id`. Unknown devices and store errors
    /// answer false (and the error is logged): authentication fails closed.
    pub async fn verify_secret(&self, device_id: &str, secret: &str) -> bool {
        let row = sqlx::query(
            "SELECT secret_salt, secret_hash FROM device_credentials WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(self.db.pool())
        .await;
        match row {
            Ok(Some(row)) => {
                let salt: String = row.get(0);
                let stored: String = row.get(1);
                let presented = secret_hash(&salt, secret);
                presented.as_bytes().ct_eq(stored.as_bytes()).into()
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, device_id, "device registry lookup failed");
                false
            }
        }
    }
}

pub(crate) fn secret_hash(salt: &str, secret: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(b":");
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], RegistryError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| RegistryError::Random(e.to_string()))?;
    Ok(buf)
}

/// Device ids become an MQTT client id and a topic level: no wildcards, separators or `$`.
pub fn is_valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn registry() -> (tempfile::TempDir, DeviceRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_file(&dir.path().join("prognos.db"))
            .await
            .unwrap();
        (dir, DeviceRegistry::new(db))
    }

    #[tokio::test]
    async fn issued_secret_verifies_and_others_do_not() {
        let (_dir, reg) = registry().await;
        let issued = reg
            .add(&NewDevice {
                device_id: "pump-1".into(),
                model: Some("P100".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(issued.secret.len(), 64);
        assert!(reg.verify_secret("pump-1", &issued.secret).await);
        assert!(!reg.verify_secret("pump-1", "wrong").await);
        assert!(!reg.verify_secret("pump-2", &issued.secret).await);
        let listed = reg.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].model.as_deref(), Some("P100"));
    }

    #[tokio::test]
    async fn duplicate_and_invalid_ids_are_refused() {
        let (_dir, reg) = registry().await;
        let new = NewDevice {
            device_id: "m-1".into(),
            ..Default::default()
        };
        reg.add(&new).await.unwrap();
        assert!(matches!(
            reg.add(&new).await,
            Err(RegistryError::Duplicate(_))
        ));
        let bad = NewDevice {
            device_id: "a/b".into(),
            ..Default::default()
        };
        assert!(matches!(
            reg.add(&bad).await,
            Err(RegistryError::InvalidId(_))
        ));
    }
}
