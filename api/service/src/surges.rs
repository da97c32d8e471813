//! Surge alerts as events: a background pass runs the surge rule of the failure analytics
//! over the service history and raises each new surge once — a row in `surge_alerts`, a
//! warning in the log and a `surge.raised` webhook event — so reliability engineers hear of a
//! failure mode taking off without polling the analytics.

use std::collections::{BTreeMap, HashMap};

use prognos_stats::reliability::poisson_sf;
use serde::Serialize;
use sqlx::Row;

use crate::auth::{Action, Principal};
use crate::history::{DeviceLife, FailureRecord, History};
use crate::{Result, Service, ServiceError, ms_to_rfc3339, new_id};

/// A mode is raised again only this long after its last alert.
const COOLDOWN_MS: i64 = 7 * 86_400_000;

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
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

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct WeeklyCounts {
    pub failure_mode: String,
    /// Start of each week (RFC 3339), oldest first; the last week ends at `as_of`.
    pub week_start: Vec<String>,
    pub counts: Vec<u64>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct SurgeAlert {
    pub failure_mode: String,
    pub week_start: String,
    pub week_start_ms: i64,
    pub failures: u64,
    pub baseline_per_week: f64,
    /// P(X ≥ failures) for X ~ Poisson(baseline).
    pub p_value: f64,
    /// Where the surge concentrates: the batch and region with most of the week's failures,
    /// their share of them, and the batch's share of the fleet for comparison.
    pub top_batch: Option<String>,
    pub top_batch_share: f64,
    pub top_batch_fleet_share: f64,
    pub top_region: Option<String>,
    pub top_region_share: f64,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct SurgeReport {
    pub rule: String,
    pub weeks: Vec<WeeklyCounts>,
    pub alerts: Vec<SurgeAlert>,
}

/// Parameters of the surge rule.
#[derive(Debug, Clone, Copy)]
pub struct SurgeRule {
    /// Weeks of history shown (the last `recent` of them are judged).
    pub weeks: usize,
    /// How many of the latest weeks are judged against the weeks before them.
    pub recent: usize,
    /// Weeks before a judged week that form its baseline.
    pub baseline_weeks: usize,
    pub alpha: f64,
    pub min_failures: u64,
}

impl Default for SurgeRule {
    fn default() -> Self {
        SurgeRule {
            weeks: 12,
            recent: 1,
            baseline_weeks: 8,
            alpha: 0.01,
            min_failures: 3,
        }
    }
}

/// A failure mode surges in a week when its count is at least `min_failures` and improbable
/// under a Poisson law with the mean of the `baseline_weeks` before it (floored at 0.5 a week
/// so a quiet baseline does not make every pair of failures a surge).
pub fn surges(history: &History, rule: SurgeRule) -> Result<SurgeReport> {
    if rule.weeks == 0 || rule.weeks > 520 {
        return Err(ServiceError::invalid("weeks", "must be in 1..=520"));
    }
    if rule.recent == 0 || rule.recent > rule.weeks {
        return Err(ServiceError::invalid("recent", "must be in 1..=weeks"));
    }
    if rule.baseline_weeks == 0 || rule.baseline_weeks > 520 {
        return Err(ServiceError::invalid(
            "baseline_weeks",
            "must be in 1..=520",
        ));
    }
    if !(rule.alpha > 0.0 && rule.alpha < 1.0) {
        return Err(ServiceError::invalid("alpha", "must be in (0, 1)"));
    }
    const WEEK_MS: i64 = 7 * 86_400_000;
    let span = rule.weeks + rule.baseline_weeks;
    let first = history.as_of_ms - span as i64 * WEEK_MS;
    let week_of = |ts: i64| -> Option<usize> {
        (ts >= first && ts < history.as_of_ms).then(|| ((ts - first) / WEEK_MS) as usize)
    };
    let devices: HashMap<&str, &DeviceLife> = history
        .devices
        .iter()
        .map(|d| (d.device_id.as_str(), d))
        .collect();
    let mut per_mode: BTreeMap<&str, Vec<Vec<&FailureRecord>>> = BTreeMap::new();
    for f in &history.failures {
        if let Some(w) = week_of(f.at_ms) {
            per_mode
                .entry(f.failure_mode.as_str())
                .or_insert_with(|| vec![Vec::new(); span])[w]
                .push(f);
        }
    }
    let fleet_batch_share = |batch: &str| {
        history
            .devices
            .iter()
            .filter(|d| d.batch.as_deref() == Some(batch))
            .count() as f64
            / history.devices.len().max(1) as f64
    };
    let mut weeks = Vec::new();
    let mut alerts = Vec::new();
    for (mode, by_week) in &per_mode {
        let counts: Vec<u64> = by_week.iter().map(|w| w.len() as u64).collect();
        for w in span - rule.recent..span {
            let base = &counts[w - rule.baseline_weeks..w];
            let baseline = base.iter().sum::<u64>() as f64 / base.len() as f64;
            let n = counts[w];
            let p = poisson_sf(n, baseline.max(0.5));
            if n < rule.min_failures || p >= rule.alpha {
                continue;
            }
            let top = |key: &dyn Fn(&DeviceLife) -> Option<String>| {
                let mut tally: BTreeMap<String, u64> = BTreeMap::new();
                for f in &by_week[w] {
                    if let Some(k) = devices.get(f.device_id.as_str()).and_then(|d| key(d)) {
                        *tally.entry(k).or_default() += 1;
                    }
                }
                tally
                    .into_iter()
                    .max_by_key(|(_, c)| *c)
                    .map(|(k, c)| (k, c as f64 / n as f64))
            };
            let batch = top(&|d| d.batch.clone());
            let region = top(&|d| Some(d.region.clone()));
            alerts.push(SurgeAlert {
                failure_mode: (*mode).to_owned(),
                week_start: ms_to_rfc3339(first + w as i64 * WEEK_MS),
                week_start_ms: first + w as i64 * WEEK_MS,
                failures: n,
                baseline_per_week: baseline,
                p_value: p,
                top_batch_fleet_share: batch.as_ref().map_or(0.0, |(b, _)| fleet_batch_share(b)),
                top_batch_share: batch.as_ref().map_or(0.0, |(_, s)| *s),
                top_batch: batch.map(|(b, _)| b),
                top_region_share: region.as_ref().map_or(0.0, |(_, s)| *s),
                top_region: region.map(|(r, _)| r),
            });
        }
        weeks.push(WeeklyCounts {
            failure_mode: (*mode).to_owned(),
            week_start: (span - rule.weeks..span)
                .map(|w| ms_to_rfc3339(first + w as i64 * WEEK_MS))
                .collect(),
            counts: counts[span - rule.weeks..].to_vec(),
        });
    }
    Ok(SurgeReport {
        rule: format!(
            "a failure mode surges in one of the last {} weeks when it has at least {} failures \
             and P(X >= count) < {} for X ~ Poisson(mean of the {} weeks before, at least 0.5)",
            rule.recent, rule.min_failures, rule.alpha, rule.baseline_weeks
        ),
        weeks,
        alerts,
    })
}

impl Service {
    /// Checks the last 7 days of every failure mode against its 8-week baseline and raises
    /// the surges not raised in the last 7 days. Returns the ones raised now.
    pub async fn raise_surge_alerts(&self) -> Result<Vec<SurgeAlert>> {
        let now = self.now_ms();
        let history = History::load(&self.db, now).await?;
        let report = surges(&history, SurgeRule::default())?;
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
    pub async fn surge_alerts(&self, who: &Principal, limit: i64) -> Result<Vec<RaisedSurge>> {
        who.require(Action::Analytics)?;
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
