//! Persisted predictive alerts: the models' alert events, de-duplicated per device and failure
//! mode, with their evidence — what the ticket service turns into maintenance work.
//!
//! The online alert manager lives in memory and starts empty after a restart; the store is
//! what keeps "one active alert per (device, failure mode)" true across restarts: an opening
//! for a problem that already has an active row updates that row instead of adding one.

use prognos_models::alert::{AlertEvent, AlertEventKind};
use serde::Serialize;
use sqlx::Row;

use crate::db::Database;

/// A predictive alert as stored: state `open`, `acknowledged` (by a person) or `resolved`.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct AlertRecord {
    pub alert_id: String,
    pub device_id: String,
    pub failure_mode: String,
    pub state: String,
    pub severity: String,
    pub started_at_ms: i64,
    pub opened_at_ms: i64,
    pub acknowledged_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub last_anomalous_ms: i64,
    pub occurrences: i64,
    pub peak_score: f64,
    pub rul_hours: Option<f64>,
    pub rul_lower_hours: Option<f64>,
    pub rul_upper_hours: Option<f64>,
    /// What the models saw: detector, score, the metrics that deviate and by how much.
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub close_code: Option<String>,
}

impl AlertRecord {
    /// The models' view of this row (`None` if a stored name is unknown to this version).
    pub fn to_alert(&self) -> Option<prognos_models::alert::Alert> {
        Some(prognos_models::alert::Alert {
            id: 0,
            device_id: self.device_id.clone(),
            failure_mode: self.failure_mode.clone(),
            state: from_name(&self.state)?,
            severity: from_name(&self.severity)?,
            started_at_ms: self.started_at_ms,
            opened_at_ms: self.opened_at_ms,
            acknowledged_at_ms: self.acknowledged_at_ms,
            resolved_at_ms: self.resolved_at_ms,
            last_anomalous_ms: self.last_anomalous_ms,
            occurrences: u64::try_from(self.occurrences).unwrap_or(0),
            peak_score: self.peak_score,
            evidence: serde_json::from_value(self.evidence.clone()).unwrap_or_default(),
        })
    }
}

/// What a person does to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMove {
    /// Seen and being handled; the models' later reports do not reopen it.
    Acknowledge,
    /// Dealt with; a later degradation opens a new alert.
    Resolve,
}

#[derive(Clone, Debug)]
pub struct AlertStore {
    db: Database,
}

/// A serde enum's wire name (`"open"`, `"high"`, …).
fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The serde enum whose wire name is `name`.
fn from_name<T: serde::de::DeserializeOwned>(name: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite())
}

impl AlertStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Records one alert event; returns the id of the row it created or updated.
    pub async fn apply(&self, event: &AlertEvent) -> Result<String, sqlx::Error> {
        let a = &event.alert;
        let mut tx = self.db.pool().begin().await?;
        let active: Option<String> = sqlx::query(
            "SELECT alert_id FROM alerts
             WHERE device_id = $1 AND failure_mode = $2 AND state <> 'resolved'
             ORDER BY opened_at_ms DESC LIMIT 1",
        )
        .bind(&a.device_id)
        .bind(&a.failure_mode)
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.get(0));

        let rul = a.evidence.rul_hours;
        let evidence = serde_json::to_string(&a.evidence).unwrap_or_else(|_| "{}".to_owned());
        let now = chrono::Utc::now().to_rfc3339();
        let state = name_of(&a.state);
        let severity = name_of(&a.severity);
        let alert_id = match active {
            Some(id) => {
                // Keep the first opening's times; refresh everything that describes now.
                // A person's acknowledgement sticks: the models re-reporting an open alert
                // do not take it back (they do not know about it).
                sqlx::query(
                    "UPDATE alerts SET
                        state = CASE WHEN state = 'acknowledged' AND $2 = 'open'
                                     THEN 'acknowledged' ELSE $2 END,
                        severity = $3, acknowledged_at_ms = COALESCE(acknowledged_at_ms, $4),
                        resolved_at_ms = $5, last_anomalous_ms = $6,
                        occurrences = occurrences + $7, peak_score = $8, rul_hours = $9,
                        rul_lower_hours = $10, rul_upper_hours = $11, evidence = $12,
                        updated_at = $13
                     WHERE alert_id = $1",
                )
                .bind(&id)
                .bind(&state)
                .bind(&severity)
                .bind(a.acknowledged_at_ms)
                .bind(a.resolved_at_ms)
                .bind(a.last_anomalous_ms)
                .bind(if event.kind == AlertEventKind::Opened {
                    a.occurrences as i64
                } else {
                    0
                })
                .bind(a.peak_score)
                .bind(finite(rul.map(|r| r.rul)))
                .bind(finite(rul.map(|r| r.lower)))
                .bind(finite(rul.map(|r| r.upper)))
                .bind(&evidence)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                let id = format!("{}:{}:{}", a.device_id, a.failure_mode, a.opened_at_ms);
                sqlx::query(
                    "INSERT INTO alerts (alert_id, device_id, failure_mode, state, severity,
                        started_at_ms, opened_at_ms, acknowledged_at_ms, resolved_at_ms,
                        last_anomalous_ms, occurrences, peak_score, rul_hours, rul_lower_hours,
                        rul_upper_hours, evidence, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                     ON CONFLICT (alert_id) DO NOTHING",
                )
                .bind(&id)
                .bind(&a.device_id)
                .bind(&a.failure_mode)
                .bind(&state)
                .bind(&severity)
                .bind(a.started_at_ms)
                .bind(a.opened_at_ms)
                .bind(a.acknowledged_at_ms)
                .bind(a.resolved_at_ms)
                .bind(a.last_anomalous_ms)
                .bind(a.occurrences as i64)
                .bind(a.peak_score)
                .bind(finite(rul.map(|r| r.rul)))
                .bind(finite(rul.map(|r| r.lower)))
                .bind(finite(rul.map(|r| r.upper)))
                .bind(&evidence)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        tx.commit().await?;
        Ok(alert_id)
    }

    /// Active alerts that have no ticket yet, as `Opened` events: what the alert → ticket
    /// consumer missed (it was not running, or the broadcast channel lagged).
    pub async fn without_ticket(&self) -> Result<Vec<AlertEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT alert_id FROM alerts a
             WHERE a.state <> 'resolved'
               AND NOT EXISTS (SELECT 1 FROM tickets t
                               WHERE t.open_key = a.device_id || '|' || a.failure_mode)
             ORDER BY a.opened_at_ms",
        )
        .fetch_all(self.db.pool())
        .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let mut events = Vec::new();
        for record in self.list(None, None, i64::MAX).await? {
            if ids.contains(&record.alert_id)
                && let Some(alert) = record.to_alert()
            {
                events.push(AlertEvent {
                    kind: AlertEventKind::Opened,
                    alert,
                });
            }
        }
        Ok(events)
    }

    /// A person acknowledges or resolves alert `alert_id` at `now_ms`; `None` if there is
    /// no such alert. Acknowledging an acknowledged alert, or resolving a resolved one,
    /// changes nothing; acknowledging a resolved one is refused (`Err(state)`).
    pub async fn set_by_person(
        &self,
        alert_id: &str,
        to: AlertMove,
        now_ms: i64,
    ) -> Result<Option<Result<AlertRecord, String>>, sqlx::Error> {
        let sql = match to {
            AlertMove::Acknowledge => {
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at_ms = $2, updated_at = $3
                 WHERE alert_id = $1 AND state = 'open'"
            }
            AlertMove::Resolve => {
                "UPDATE alerts SET state = 'resolved', resolved_at_ms = $2, updated_at = $3
                 WHERE alert_id = $1 AND state <> 'resolved'"
            }
        };
        sqlx::query(sql)
            .bind(alert_id)
            .bind(now_ms)
            .bind(chrono::Utc::now().to_rfc3339())
            .execute(self.db.pool())
            .await?;
        let Some(record) = self.get(alert_id).await? else {
            return Ok(None);
        };
        let reached = match to {
            AlertMove::Acknowledge => record.state == "acknowledged",
            AlertMove::Resolve => record.state == "resolved",
        };
        Ok(Some(if reached {
            Ok(record)
        } else {
            Err(record.state)
        }))
    }

    /// One alert by id.
    pub async fn get(&self, alert_id: &str) -> Result<Option<AlertRecord>, sqlx::Error> {
        Ok(self
            .list_where(Some(alert_id), None, None, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Alerts, newest first, optionally only in `state` and/or for `device_id`.
    pub async fn list(
        &self,
        state: Option<&str>,
        device_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AlertRecord>, sqlx::Error> {
        self.list_where(None, state, device_id, limit).await
    }

    async fn list_where(
        &self,
        alert_id: Option<&str>,
        state: Option<&str>,
        device_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AlertRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT alert_id, device_id, failure_mode, state, severity, started_at_ms,
                    opened_at_ms, acknowledged_at_ms, resolved_at_ms, last_anomalous_ms,
                    occurrences, peak_score, rul_hours, rul_lower_hours, rul_upper_hours,
                    evidence, close_code
             FROM alerts
             WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR device_id = $2)
               AND ($4 IS NULL OR alert_id = $4)
             ORDER BY opened_at_ms DESC, alert_id
             LIMIT $3",
        )
        .bind(state)
        .bind(device_id)
        .bind(limit)
        .bind(alert_id)
        .fetch_all(self.db.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| AlertRecord {
                alert_id: r.get(0),
                device_id: r.get(1),
                failure_mode: r.get(2),
                state: r.get(3),
                severity: r.get(4),
                started_at_ms: r.get(5),
                opened_at_ms: r.get(6),
                acknowledged_at_ms: r.get(7),
                resolved_at_ms: r.get(8),
                last_anomalous_ms: r.get(9),
                occurrences: r.get(10),
                peak_score: r.get(11),
                rul_hours: r.get(12),
                rul_lower_hours: r.get(13),
                rul_upper_hours: r.get(14),
                evidence: serde_json::from_str(&r.get::<String, _>(15))
                    .unwrap_or(serde_json::Value::Null),
                close_code: r.get(16),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prognos_models::alert::{Alert, AlertState, Evidence, Severity};

    fn event(
        kind: AlertEventKind,
        state: AlertState,
        opened_at_ms: i64,
        occurrences: u64,
    ) -> AlertEvent {
        AlertEvent {
            kind,
            alert: Alert {
                id: 1,
                device_id: "pump-1".into(),
                failure_mode: "bearing_wear".into(),
                state,
                severity: Severity::Medium,
                started_at_ms: opened_at_ms - 1000,
                opened_at_ms,
                acknowledged_at_ms: None,
                resolved_at_ms: (state == AlertState::Resolved).then_some(opened_at_ms + 5000),
                last_anomalous_ms: opened_at_ms,
                occurrences,
                peak_score: 0.8,
                evidence: Evidence {
                    detector: "test".into(),
                    score: 0.8,
                    ratio: 1.5,
                    ..Default::default()
                },
            },
        }
    }

    #[tokio::test]
    async fn one_active_row_per_device_and_mode_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::new(Database::open_file(&dir.path().join("p.db")).await.unwrap());
        let first = store
            .apply(&event(AlertEventKind::Opened, AlertState::Open, 10_000, 3))
            .await
            .unwrap();
        // A restarted manager opens the same problem again, with a later time.
        let again = store
            .apply(&event(AlertEventKind::Opened, AlertState::Open, 20_000, 2))
            .await
            .unwrap();
        assert_eq!(first, again);
        let rows = store.list(None, None, 10).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].occurrences, 5);
        assert_eq!(rows[0].opened_at_ms, 10_000);

        store
            .apply(&event(
                AlertEventKind::Resolved,
                AlertState::Resolved,
                20_000,
                2,
            ))
            .await
            .unwrap();
        assert_eq!(store.list(Some("open"), None, 10).await.unwrap().len(), 0);
        // A new problem after resolution is a new alert.
        store
            .apply(&event(AlertEventKind::Opened, AlertState::Open, 90_000, 1))
            .await
            .unwrap();
        let rows = store.list(None, Some("pump-1"), 10).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, "open");
        assert_eq!(rows[1].state, "resolved");
    }

    #[tokio::test]
    async fn stored_alerts_without_a_ticket_are_found_for_catch_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_file(&dir.path().join("p.db")).await.unwrap();
        let store = AlertStore::new(db.clone());
        store
            .apply(&event(AlertEventKind::Opened, AlertState::Open, 10_000, 1))
            .await
            .unwrap();
        let missed = store.without_ticket().await.unwrap();
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].alert.device_id, "pump-1");
        assert_eq!(missed[0].alert.severity, Severity::Medium);
        let svc = crate::Service::new(db);
        assert!(svc.apply_alert_event(&missed[0]).await.unwrap().is_some());
        assert!(store.without_ticket().await.unwrap().is_empty());
    }
}
