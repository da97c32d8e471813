//! Surge alerts as events: a background pass runs the surge rule of the failure analytics
//! over the service history and raises each new surge once — a row in `surge_alerts`, a
//! warning in the log and a `surge.raised` webhook event — so reliability engineers hear of a
//! failure mode taking off without polling the analytics.

use serde::Serialize;
use sqlx::Row;

use super::{Result, Service, ServiceError, ms_to_rfc3339, new_id};
use crate::analytics::AnalyticsError;
use crate::analytics::history::History;
use crate::analytics::reliability::{SurgeAlert, SurgeRule, surges};

/// A mode is raised again only this long after its last alert.
const COOLDOWN_MS: i64 = 7 * 86_400_000;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RaisedSurge {
    pub surge_id: String,
    pub failure_mode: String,
    pub window_start: String,
    pub failures: i64,
    pub baseline_per_week: f64,
    pub p_value: f64,
    pub top_batch: Option<String>,
    pub top_batch_share: f64,
    pub top_region: Option<String>,
    pub raised_at: String,
}

fn analytics_error(e: AnalyticsError) -> ServiceError {
    match e {
        AnalyticsError::Sql(e) => ServiceError::Sql(e),
        e => ServiceError::invalid("surge rule", e.to_string()),
    }
}

impl Service {
    /// Checks the last 7 days of every failure mode against its 8-week baseline and raises
    /// the surges not raised in the last 7 days. Returns the ones raised now.
    pub async fn raise_surge_alerts(&self) -> Result<Vec<SurgeAlert>> {
        let now = self.now_ms();
        let history = History::load(&self.db, now)
            .await
            .map_err(analytics_error)?;
        let report = surges(&history, SurgeRule::default()).map_err(analytics_error)?;
        let mut raised = Vec::new();
        for alert in report.alerts {
            let mut tx = self.begin_write().await?;
            let recent: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM surge_alerts WHERE failure_mode = $1 AND raised_at_ms > $2",
            )
            .bind(&alert.failure_mode)
            .bind(now - COOLDOWN_MS)
            .fetch_one(&mut *tx)
            .await?;
            if recent > 0 {
                continue;
            }
            let id = new_id("SG")?;
            sqlx::query(
                "INSERT INTO surge_alerts (surge_id, failure_mode, window_start_ms, failures,
                    baseline_per_week, p_value, top_batch, top_batch_share, top_region, raised_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&id)
            .bind(&alert.failure_mode)
            .bind(alert.week_start_ms)
            .bind(alert.failures as i64)
            .bind(alert.baseline_per_week)
            .bind(alert.p_value)
            .bind(&alert.top_batch)
            .bind(alert.top_batch_share)
            .bind(&alert.top_region)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let data = serde_json::json!({"surge_id": id, "surge": alert});
            super::webhooks::enqueue(&mut tx, None, "surge.raised", &data, now).await?;
            tx.commit().await?;
            tracing::warn!(
                failure_mode = alert.failure_mode,
                failures = alert.failures,
                baseline = alert.baseline_per_week,
                top_batch = alert.top_batch.as_deref().unwrap_or("-"),
                "failure surge"
            );
            raised.push(alert);
        }
        Ok(raised)
    }

    /// Surge alerts raised so far, newest first.
    pub async fn surge_alerts(&self, limit: i64) -> Result<Vec<RaisedSurge>> {
        let rows = sqlx::query(
            "SELECT surge_id, failure_mode, window_start_ms, failures, baseline_per_week, p_value,
                    top_batch, top_batch_share, top_region, raised_at_ms
               FROM surge_alerts ORDER BY raised_at_ms DESC, surge_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| RaisedSurge {
                surge_id: r.get(0),
                failure_mode: r.get(1),
                window_start: ms_to_rfc3339(r.get(2)),
                failures: r.get(3),
                baseline_per_week: r.get(4),
                p_value: r.get(5),
                top_batch: r.get(6),
                top_batch_share: r.get(7),
                top_region: r.get(8),
                raised_at: ms_to_rfc3339(r.get(9)),
            })
            .collect())
    }
}
