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
