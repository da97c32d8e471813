//! The service domain of Prognos and its persistence: the device registry, the alerts of the
//! online models, the service network, tickets with their state machine, audit trail and
//! public tracking, SLA timers, dispatch, the parts network, webhooks, API keys, the service
//! history the analytics read, and the components that run in the background (online
//! scoring, periodic jobs). No HTTP types here: `prognos-http` maps these errors and values
//! to the wire (Cargo keeps axum out of this crate).
//!
//! Times are epoch milliseconds from an injectable [`Clock`]; SQL runs on SQLite (the only
//! engine built and tested today; the statements avoid SQLite-only syntax so a PostgreSQL
//! backend can follow). Every write transaction starts with a write (a version bump or a
//! conditional stock update) so that SQLite takes its write lock up front and waits on
//! `busy_timeout` instead of failing a read-to-write upgrade.

pub mod alerts;
pub mod auth;
pub mod db;
pub mod devices;
pub mod dispatch;
pub mod fleet;
pub mod history;
pub mod jobs;
pub mod mqtt_clients;
pub mod network;
pub mod online;
pub mod parts;
pub mod sla;
pub mod stock;
pub mod surges;
pub mod throttle;
pub mod ticket_log;
pub mod tickets;
pub mod users;
pub mod webhooks;

pub use alerts::{AlertRecord, AlertStore};
pub use db::{Database, DbError};
pub use devices::{Device, DeviceRegistry, IssuedDevice, NewDevice, RegistryError};
pub use mqtt_clients::{MqttClientRegistry, NewMqttClient};

#[cfg(test)]
mod domain_tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

/// What can go wrong in the service domain. The HTTP layer maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("invalid {field}: {message}")]
    Validation { field: String, message: String },
    /// The request refers (in `field`) to something that does not exist or that the caller
    /// may not see: the request is well formed, the world does not match it.
    #[error("{field}: unknown {kind} {id:?}")]
    UnknownReference {
        field: String,
        kind: &'static str,
        id: String,
    },
    #[error("cannot move a ticket from {from} to {to}")]
    IllegalTransition {
        from: String,
        to: String,
        allowed: Vec<String>,
    },
    #[error("not enough {sku} at {location_id}: requested {requested}, available {available}")]
    InsufficientStock {
        sku: String,
        location_id: String,
        requested: i64,
        available: i64,
    },
    #[error("{0}")]
    Conflict(String),
    /// A well-formed value (in `field`) the server will not act on as things are: a webhook
    /// destination its policy refuses or that does not resolve.
    #[error("{field}: {message}")]
    Refused { field: String, message: String },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("cannot draw random bytes: {0}")]
    Random(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl ServiceError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ServiceError::Validation {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn unknown(field: &str, kind: &'static str, id: impl Into<String>) -> Self {
        ServiceError::UnknownReference {
            field: field.to_owned(),
            kind,
            id: id.into(),
        }
    }

    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        ServiceError::NotFound {
            kind,
            id: id.into(),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The source of "now" (epoch ms): the system clock in production, a manual one in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The handle every service function takes: the store, the clock and the webhook
/// destination policy.
#[derive(Clone, Debug)]
pub struct Service {
    pub db: Database,
    pub clock: Arc<dyn Clock>,
    webhook_policy: Arc<webhooks::DestinationPolicy>,
}

impl Service {
    /// A service on the system clock; webhooks reach public addresses only.
    pub fn new(db: Database) -> Self {
        Service::with_clock(db, Arc::new(SystemClock))
    }

    pub fn with_clock(db: Database, clock: Arc<dyn Clock>) -> Self {
        Service {
            db,
            clock,
            webhook_policy: Arc::new(webhooks::DestinationPolicy::strict()),
        }
    }

    /// The same service with another webhook destination policy (from the configuration).
    pub fn with_webhook_policy(mut self, policy: webhooks::DestinationPolicy) -> Self {
        self.webhook_policy = Arc::new(policy);
        self
    }

    /// Which destinations webhooks may reach; the transport checks each connection with it.
    pub fn webhook_policy(&self) -> &webhooks::DestinationPolicy {
        &self.webhook_policy
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn pool(&self) -> &sqlx::SqlitePool {
        self.db.pool()
    }

    /// Begins a transaction that writes: its first statement is a (no-op) write, so SQLite
    /// takes the write lock now and queues behind other writers on `busy_timeout`, instead of
    /// failing later when a read would have to upgrade (`database is locked`).
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE service_write_lock SET id = id WHERE id = 0")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// Ticket priority; the order is urgency (`Normal < Major < Emergency`).
#[derive(
    utoipa::ToSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Normal,
    Major,
    Emergency,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Normal, Priority::Major, Priority::Emergency];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Major => "major",
            Priority::Emergency => "emergency",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// One level more urgent (emergency stays emergency).
    pub fn raised(self) -> Priority {
        match self {
            Priority::Normal => Priority::Major,
            _ => Priority::Emergency,
        }
    }

    pub fn lowered(self) -> Priority {
        match self {
            Priority::Emergency => Priority::Major,
            _ => Priority::Normal,
        }
    }
}

/// Free text a caller writes (titles, notes, reports) is bounded: it lands in the audit
/// trail and webhook payloads, which must not grow by megabytes a request.
pub const MAX_TEXT: usize = 4000;

/// Refuses `value` (of `field`) longer than `max` bytes.
pub(crate) fn bounded(field: &str, value: Option<&str>, max: usize) -> Result<()> {
    match value {
        Some(v) if v.len() > max => {
            Err(ServiceError::invalid(field, format!("at most {max} bytes")))
        }
        _ => Ok(()),
    }
}

/// A random id with a prefix: `T-` + 16 hex digits.
pub fn new_id(prefix: &str) -> Result<String> {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(format!("{prefix}-{}", hex::encode(buf)))
}

/// Random characters from Crockford's base32 alphabet (no I, L, O, U: nothing to misread).
pub fn random_code(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).map_err(|e| ServiceError::Random(e.to_string()))?;
    Ok(buf
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// Great-circle distance in km.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let r = 6371.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * r * a.sqrt().asin()
}

/// Average road speed used to turn distance into travel time.
pub const TRAVEL_KMH: f64 = 60.0;

pub fn ms_to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Parses a JSON list stored as text; a damaged value reads as empty.
pub(crate) fn json_list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// The deepest page offset: far beyond any list, far from overflowing `offset + limit`.
pub const MAX_OFFSET: i64 = 1_000_000_000;

/// Pagination of list endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            limit: 50,
            offset: 0,
        }
    }
}

impl Page {
    pub fn new(limit: Option<i64>, offset: Option<i64>) -> Result<Page> {
        let limit = limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(ServiceError::invalid("limit", "must be between 1 and 1000"));
        }
        let offset = offset.unwrap_or(0);
        if !(0..=MAX_OFFSET).contains(&offset) {
            return Err(ServiceError::invalid(
                "offset",
                format!("must be between 0 and {MAX_OFFSET}"),
            ));
        }
        Ok(Page { limit, offset })
    }
}

/// One page of a list and where the next one starts.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next_offset: Option<i64>,
}

impl<T> Paged<T> {
    /// `rows` was fetched with `LIMIT page.limit + 1`.
    pub fn from_rows(mut rows: Vec<T>, page: Page) -> Paged<T> {
        let more = rows.len() as i64 > page.limit;
        rows.truncate(page.limit as usize);
        Paged {
            next_offset: more.then_some(page.offset.saturating_add(page.limit)),
            items: rows,
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    #![allow(clippy::unwrap_used)]
    use super::*;

    pub async fn service() -> (tempfile::TempDir, Service, Arc<ManualClock>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_file(&dir.path().join("prognos.db"))
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(1_767_225_600_000)); // 2026-01-01T00:00:00Z
        let svc = Service::with_clock(db, clock.clone());
        (dir, svc, clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_known_distance() {
        // Paris to London ≈ 344 km.
        let d = haversine_km(48.8566, 2.3522, 51.5074, -0.1278);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        assert_eq!(haversine_km(1.0, 2.0, 1.0, 2.0), 0.0);
    }

    #[test]
    fn priority_order_and_steps() {
        assert!(Priority::Emergency > Priority::Major && Priority::Major > Priority::Normal);
        assert_eq!(Priority::Normal.raised(), Priority::Major);
        assert_eq!(Priority::Emergency.raised(), Priority::Emergency);
        assert_eq!(Priority::parse("major"), Some(Priority::Major));
        assert_eq!(Priority::parse("x"), None);
    }

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        let c = random_code(64).unwrap();
        assert_eq!(c.len(), 64);
        assert!(!c.contains(['I', 'L', 'O', 'U']));
    }
}
