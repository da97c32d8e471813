//! Named MQTT clients beside devices, as in Mosquitto's ACL files: integrations (a read-only
//! consumer of `prognos/v1/+/telemetry`), gateways, or a test client allowed everything.
//!
//! A device logs in as itself and may use only its own topic prefix. A named client logs in
//! with its name and secret (or, when its entry is anonymous, with no login at all), may use
//! the client ids its entry lists, and gets its own publish / subscribe / deny rules. It can
//! never use a registered device's id (that would take over the device's session) nor one
//! of Prognos's own (`prognos-…`, `prognos:…`). Secrets are issued like device secrets: 256
//! random bits shown once, a salted SHA-256 stored, compared in constant time.

use serde::Serialize;
use sqlx::Row;
use subtle::ConstantTimeEq;

use crate::db::Database;
use crate::devices::{is_valid_device_id, random_bytes, secret_hash};

/// Most rules of one kind in an entry, and longest rule (bytes); past them `add` refuses.
pub const MAX_RULES: usize = 64;
pub const MAX_RULE_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("client name {0:?} is invalid: use 1-64 characters from A-Z a-z 0-9 - _ .")]
    InvalidName(String),
    #[error("{0:?} is already a client or a device")]
    Duplicate(String),
    #[error("{field}: {message}")]
    InvalidRule {
        field: &'static str,
        message: String,
    },
    #[error("no client named {0:?}")]
    NotFound(String),
    #[error("cannot draw random bytes for a secret: {0}")]
    Random(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// What `client add` takes.
#[derive(Debug, Clone, Default)]
pub struct NewMqttClient {
    pub name: String,
    /// Client ids the client may use: exact, or ending in `*` for a prefix (`*`: any, and an
    /// empty client id the broker assigns). Empty: `["<name>", "<name>-*"]`.
    pub client_ids: Vec<String>,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub deny: Vec<String>,
    /// Logs in without a username or password. Anyone who can reach the port gets these
    /// rules: meant for test clients and interoperability suites on loopback.
    pub anonymous: bool,
}

/// A client as listed (never its secret).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MqttClient {
    pub name: String,
    pub anonymous: bool,
    pub client_ids: Vec<String>,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub deny: Vec<String>,
    pub created_at_ms: i64,
}

/// A new client and its secret (none when anonymous), shown exactly once.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedClient {
    pub name: String,
    pub secret: Option<String>,
}

/// The topic rules of a client that logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRules {
    pub name: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct MqttClientRegistry {
    db: Database,
}

impl MqttClientRegistry {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn add(&self, new: &NewMqttClient) -> Result<IssuedClient, ClientError> {
        if !is_valid_device_id(&new.name) {
            return Err(ClientError::InvalidName(new.name.clone()));
        }
        let client_ids = if new.client_ids.is_empty() {
            vec![new.name.clone(), format!("{}-*", new.name)]
        } else {
            new.client_ids.clone()
        };
        check_client_ids(&client_ids)?;
        check_filters("publish", &new.publish)?;
        check_filters("subscribe", &new.subscribe)?;
        check_filters("deny", &new.deny)?;
        let secret = if new.anonymous {
            None
        } else {
            Some(hex::encode(
                random_bytes::<32>().map_err(|e| ClientError::Random(e.to_string()))?,
            ))
        };
        let salt = match &secret {
            Some(_) => Some(hex::encode(
                random_bytes::<16>().map_err(|e| ClientError::Random(e.to_string()))?,
            )),
            None => None,
        };
        let hash = salt
            .as_deref()
            .zip(secret.as_deref())
            .map(|(salt, secret)| secret_hash(salt, secret));
        let mut tx = self.db.pool().begin().await?;
        let device: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM device_credentials WHERE device_id = $1")
                .bind(&new.name)
                .fetch_optional(&mut *tx)
                .await?;
        if device.is_some() {
            return Err(ClientError::Duplicate(new.name.clone()));
        }
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let result = sqlx::query(
            "INSERT INTO mqtt_clients (name, secret_salt, secret_hash, client_ids, publish,
                                       subscribe, deny, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.name)
        .bind(&salt)
        .bind(&hash)
        .bind(json(&client_ids))
        .bind(json(&new.publish))
        .bind(json(&new.subscribe))
        .bind(json(&new.deny))
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&mut *tx)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(ClientError::Duplicate(new.name.clone()));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(IssuedClient {
            name: new.name.clone(),
            secret,
        })
    }

    pub async fn list(&self) -> Result<Vec<MqttClient>, ClientError> {
        let rows = sqlx::query(
            "SELECT name, secret_hash IS NULL, client_ids, publish, subscribe, deny, created_at_ms
               FROM mqtt_clients ORDER BY name",
        )
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| MqttClient {
                name: row.get(0),
                anonymous: row.get::<bool, _>(1),
                client_ids: json_list(row.get(2)),
                publish: json_list(row.get(3)),
                subscribe: json_list(row.get(4)),
                deny: json_list(row.get(5)),
                created_at_ms: row.get(6),
            })
            .collect())
    }

    pub async fn remove(&self, name: &str) -> Result<(), ClientError> {
        let done = sqlx::query("DELETE FROM mqtt_clients WHERE name = $1")
            .bind(name)
            .execute(self.db.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(ClientError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// The rules of the client this login names, when it is good: the secret matches (or
    /// the entry is anonymous and there is no login), the client id is one the entry
    /// allows, and it is neither a device's nor one of Prognos's own. Store errors refuse
    /// (fail closed) and are logged.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client_id: &str,
    ) -> Option<ClientRules> {
        match self.try_login(username, password, client_id).await {
            Ok(rules) => rules,
            Err(e) => {
                tracing::error!(error = %e, "MQTT client registry lookup failed");
                None
            }
        }
    }

    async fn try_login(
        &self,
        username: &str,
        password: &str,
        client_id: &str,
    ) -> Result<Option<ClientRules>, sqlx::Error> {
        if is_reserved_client_id(client_id) {
            return Ok(None);
        }
        let rows = if username.is_empty() {
            if !password.is_empty() {
                return Ok(None);
            }
            sqlx::query(
                "SELECT name, secret_salt, secret_hash, client_ids, publish, subscribe, deny
                   FROM mqtt_clients WHERE secret_hash IS NULL ORDER BY name LIMIT 64",
            )
            .fetch_all(self.db.pool())
            .await?
        } else {
            sqlx::query(
                "SELECT name, secret_salt, secret_hash, client_ids, publish, subscribe, deny
                   FROM mqtt_clients WHERE name = $1 AND secret_hash IS NOT NULL",
            )
            .bind(username)
            .fetch_all(self.db.pool())
            .await?
        };
        for row in rows {
            if let (Some(salt), Some(stored)) = (
                row.get::<Option<String>, _>(1),
                row.get::<Option<String>, _>(2),
            ) {
                let presented = secret_hash(&salt, password);
                if !bool::from(presented.as_bytes().ct_eq(stored.as_bytes())) {
                    continue;
                }
            }
            let client_ids = json_list(row.get(3));
            if !client_ids.iter().any(|p| client_id_matches(p, client_id)) {
                continue;
            }
            if !client_id.is_empty() {
                let device: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM device_credentials WHERE device_id = $1")
                        .bind(client_id)
                        .fetch_optional(self.db.pool())
                        .await?;
                if device.is_some() {
                    return Ok(None);
                }
            }
            return Ok(Some(ClientRules {
                name: row.get(0),
                publish: json_list(row.get(4)),
                subscribe: json_list(row.get(5)),
                deny: json_list(row.get(6)),
            }));
        }
        Ok(None)
    }
}

/// Client ids Prognos uses itself (the ingest link, the health probe).
pub fn is_reserved_client_id(client_id: &str) -> bool {
    client_id.starts_with("prognos-") || client_id.starts_with("prognos:")
}

fn json_list(text: String) -> Vec<String> {
    serde_json::from_str(&text).unwrap_or_default()
}

/// `pattern` is an exact id, or ends in `*` for a prefix.
fn client_id_matches(pattern: &str, client_id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => client_id.starts_with(prefix),
        None => pattern == client_id,
    }
}

fn check_client_ids(patterns: &[String]) -> Result<(), ClientError> {
    if patterns.len() > MAX_RULES {
        return Err(ClientError::InvalidRule {
            field: "client_ids",
            message: format!("at most {MAX_RULES}"),
        });
    }
    for p in patterns {
        let body = p.strip_suffix('*').unwrap_or(p);
        let bad = p.is_empty()
            || p.len() > MAX_RULE_BYTES
            || body.contains('*')
            || body.chars().any(|c| c.is_control());
        if bad {
            return Err(ClientError::InvalidRule {
                field: "client_ids",
                message: format!("{p:?}: an id, or an id prefix ending in a single '*'"),
            });
        }
    }
    Ok(())
}

/// Rules are MQTT topic filters: `#` only as the last level, `+` only as a whole level.
fn check_filters(field: &'static str, filters: &[String]) -> Result<(), ClientError> {
    if filters.len() > MAX_RULES {
        return Err(ClientError::InvalidRule {
            field,
            message: format!("at most {MAX_RULES} filters"),
        });
    }
    for f in filters {
        let levels: Vec<&str> = f.split('/').collect();
        let bad_level = levels.iter().enumerate().any(|(i, level)| {
            (level.contains('#') && (*level != "#" || i + 1 != levels.len()))
                || (level.contains('+') && *level != "+")
        });
        if f.is_empty() || f.len() > MAX_RULE_BYTES || f.contains('\0') || bad_level {
            return Err(ClientError::InvalidRule {
                field,
                message: format!(
                    "{:?} is not an MQTT topic filter ('#' last and alone in its level, '+' alone in its level, 1-{MAX_RULE_BYTES} bytes)",
                    f.chars().take(80).collect::<String>()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceRegistry, NewDevice};

    async fn registry() -> (tempfile::TempDir, Database, MqttClientRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_file(&dir.path().join("prognos.db"))
            .await
            .unwrap();
        (dir, db.clone(), MqttClientRegistry::new(db))
    }

    fn reader() -> NewMqttClient {
        NewMqttClient {
            name: "historian".into(),
            subscribe: vec!["prognos/v1/+/telemetry".into()],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_client_logs_in_with_its_secret_and_allowed_ids_only() {
        let (_dir, _db, reg) = registry().await;
        let issued = reg.add(&reader()).await.unwrap();
        let secret = issued.secret.unwrap();
        assert_eq!(secret.len(), 64);
        let rules = reg.login("historian", &secret, "historian").await.unwrap();
        assert_eq!(rules.subscribe, vec!["prognos/v1/+/telemetry".to_owned()]);
        assert!(rules.publish.is_empty());
        assert!(
            reg.login("historian", &secret, "historian-2")
                .await
                .is_some()
        );
        assert!(reg.login("historian", &secret, "other").await.is_none());
        assert!(reg.login("historian", "wrong", "historian").await.is_none());
        // Not anonymous: no login, no rules.
        assert!(reg.login("", "", "historian").await.is_none());
        let listed = reg.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!listed[0].anonymous);
        reg.remove("historian").await.unwrap();
        assert!(reg.login("historian", &secret, "historian").await.is_none());
        assert!(matches!(
            reg.remove("historian").await,
            Err(ClientError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn no_client_may_use_a_device_id_or_prognos_own_ids() {
        let (_dir, db, reg) = registry().await;
        DeviceRegistry::new(db)
            .add(&NewDevice {
                device_id: "pump-1".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        reg.add(&NewMqttClient {
            name: "suite".into(),
            client_ids: vec!["*".into()],
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
            anonymous: true,
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(reg.login("", "", "myclientid").await.is_some());
        assert!(reg.login("", "", "").await.is_some());
        assert!(reg.login("", "", "pump-1").await.is_none());
        assert!(reg.login("", "", "prognos-ingest").await.is_none());
        assert!(reg.login("", "", "prognos:probe").await.is_none());
        // A name that is a device is refused.
        let clash = NewMqttClient {
            name: "pump-1".into(),
            ..reader()
        };
        assert!(matches!(
            reg.add(&clash).await,
            Err(ClientError::Duplicate(_))
        ));
        assert!(reg.add(&reader()).await.is_ok());
        assert!(matches!(
            reg.add(&reader()).await,
            Err(ClientError::Duplicate(_))
        ));
    }

    #[tokio::test]
    async fn malformed_rules_are_refused_naming_the_field() {
        let (_dir, _db, reg) = registry().await;
        for (field, bad) in [
            ("subscribe", "a/#/b"),
            ("subscribe", "a/b+"),
            ("subscribe", ""),
            ("publish", "x#"),
            ("deny", "a\0b"),
        ] {
            let mut new = reader();
            match field {
                "subscribe" => new.subscribe = vec![bad.into()],
                "publish" => new.publish = vec![bad.into()],
                _ => new.deny = vec![bad.into()],
            }
            match reg.add(&new).await {
                Err(ClientError::InvalidRule { field: f, .. }) => assert_eq!(f, field, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let mut new = reader();
        new.client_ids = vec!["a*b*".into()];
        assert!(matches!(
            reg.add(&new).await,
            Err(ClientError::InvalidRule {
                field: "client_ids",
                ..
            })
        ));
        let mut new = reader();
        new.subscribe = vec!["a".into(); MAX_RULES + 1];
        assert!(reg.add(&new).await.is_err());
        let mut new = reader();
        new.name = "bad name".into();
        assert!(matches!(
            reg.add(&new).await,
            Err(ClientError::InvalidName(_))
        ));
    }
}
