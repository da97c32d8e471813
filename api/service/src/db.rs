//! The SQL store: opening it and bringing its schema up to date.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// Migrations in order; each runs once, inside a transaction, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "devices", include_str!("../migrations/0001_devices.sql")),
    (2, "alerts", include_str!("../migrations/0002_alerts.sql")),
    (3, "service", include_str!("../migrations/0003_service.sql")),
    (
        4,
        "sla_pause",
        include_str!("../migrations/0004_sla_pause.sql"),
    ),
    (
        5,
        "surge_alerts",
        include_str!("../migrations/0005_surge_alerts.sql"),
    ),
    (
        6,
        "one_device_table",
        include_str!("../migrations/0006_one_device_table.sql"),
    ),
    (
        7,
        "key_binding_outbox_order",
        include_str!("../migrations/0007_key_binding_outbox_order.sql"),
    ),
    (10, "users", include_str!("../migrations/0010_users.sql")),
    (
        11,
        "mqtt_clients",
        include_str!("../migrations/0011_mqtt_clients.sql"),
    ),
];

/// The statements of a migration file: `--` comment lines dropped, split at `;`.
fn statements(sql: &str) -> Vec<String> {
    let code: String = sql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the database {location}: {source}")]
    Open {
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A handle on the service database (cheap to clone).
#[derive(Clone, Debug)]
pub struct Database {
    pool: SqlitePool,
}

impl Database {
    /// Opens (creating if needed) the SQLite file and applies pending migrations.
    pub async fn open_file(path: &Path) -> Result<Database, DbError> {
        let location = path.display().to_string();
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| DbError::Open {
                location: location.clone(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Open { location, source })?;
        let db = Database { pool };
        db.migrate().await?;
        Ok(db)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), DbError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at TEXT NOT NULL
            )",
        )
        .execute(&self.pool)
        .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| row.get::<i64, _>(0))
            .collect();
        for &(version, name, sql) in MIGRATIONS {
            if applied.contains(&version) {
                continue;
            }
            let fail = |source| DbError::Migration {
                version,
                name,
                source,
            };
            let mut tx = self.pool.begin().await.map_err(fail)?;
            for statement in statements(sql) {
                sqlx::query(&statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(name)
            .bind(chrono::Utc::now().to_rfc3339())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A store written before the one-device-table migration keeps every device, its secret
    /// and its placement after it.
    #[tokio::test]
    async fn the_one_device_table_migration_keeps_every_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                 applied_at TEXT NOT NULL)",
            )
            .execute(&pool)
            .await
            .unwrap();
            for &(version, name, sql) in &MIGRATIONS[..5] {
                for s in statements(sql) {
                    sqlx::query(&s).execute(&pool).await.unwrap();
                }
                sqlx::query("INSERT INTO schema_migrations VALUES ($1, $2, 'then')")
                    .bind(version)
                    .bind(name)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            for s in [
                "INSERT INTO devices VALUES ('mqtt-only', 's1', 'h1', 'M', 'SN1', 'B', 'hall', '2026-01-02T03:04:05.123456+00:00')",
                "INSERT INTO devices VALUES ('both', 's2', 'h2', NULL, NULL, NULL, NULL, '2026-01-02T03:04:05Z')",
                "INSERT INTO customers (customer_id, name, tier, vip, created_at_ms) VALUES ('c', 'C', 'standard', 0, 1)",
                "INSERT INTO sites (site_id, customer_id, name, region, lat, lon) VALUES ('s', 'c', 'S', 'north', 1.0, 2.0)",
                "INSERT INTO service_devices VALUES ('both', 's', 'SN2', 'P100', 'B2', '1.0', NULL, NULL, 3, 1, 7)",
                "INSERT INTO service_devices VALUES ('placed-only', 's', 'SN3', 'P100', NULL, NULL, NULL, NULL, 2, 0, 8)",
            ] {
                sqlx::query(s).execute(&pool).await.unwrap();
            }
        }
        let db = Database::open_file(&path).await.unwrap();
        type Row6 = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
            i64,
        );
        let rows: Vec<Row6> = sqlx::query_as(
            "SELECT device_id, site_id, site_label, model, criticality, created_at_ms
                   FROM devices ORDER BY device_id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].0, "both");
        assert_eq!(
            (rows[0].1.as_deref(), rows[0].3.as_deref(), rows[0].4),
            (Some("s"), Some("P100"), 3)
        );
        assert_eq!(rows[1].0, "mqtt-only");
        assert_eq!(
            (rows[1].1.as_deref(), rows[1].2.as_deref()),
            (None, Some("hall"))
        );
        assert_eq!(rows[1].5, 1_767_323_045_000);
        assert_eq!(rows[2].0, "placed-only");
        let secrets: Vec<(String, String)> = sqlx::query_as(
            "SELECT device_id, secret_hash FROM device_credentials ORDER BY device_id",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        assert_eq!(
            secrets,
            vec![
                ("both".into(), "h2".into()),
                ("mqtt-only".into(), "h1".into())
            ]
        );
    }
}
