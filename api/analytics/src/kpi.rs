//! Service KPIs per provider and rolled up the OEM → agent → provider hierarchy, and the
//! accuracy of the predictive models judged by the technicians' close codes.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sqlx::Row;

use super::AnalyticsError;
use prognos_service::db::Database;

/// Sums from which the KPIs of a provider (or a subtree) are computed, so a parent's figures
/// are its children's sums and not an average of averages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KpiSums {
    pub tickets: u64,
    pub resolved: u64,
    pub first_time_fixes: u64,
    pub sla_met: u64,
    pub restore_hours_sum: f64,
    pub satisfaction_sum: f64,
    pub satisfaction_n: u64,
    pub parts_consumed_value: f64,
    pub stock_value: f64,
}

impl KpiSums {
    fn add(&mut self, o: &KpiSums) {
        self.tickets += o.tickets;
        self.resolved += o.resolved;
        self.first_time_fixes += o.first_time_fixes;
        self.sla_met += o.sla_met;
        self.restore_hours_sum += o.restore_hours_sum;
        self.satisfaction_sum += o.satisfaction_sum;
        self.satisfaction_n += o.satisfaction_n;
        self.parts_consumed_value += o.parts_consumed_value;
        self.stock_value += o.stock_value;
    }

    fn kpis(&self, period_days: f64) -> Kpis {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        Kpis {
            tickets: self.tickets,
            resolved: self.resolved,
            first_time_fix_rate: ratio(self.first_time_fixes, self.resolved),
            sla_compliance: ratio(self.sla_met, self.resolved),
            mttr_hours: (self.resolved > 0).then(|| self.restore_hours_sum / self.resolved as f64),
            satisfaction: (self.satisfaction_n > 0)
                .then(|| self.satisfaction_sum / self.satisfaction_n as f64),
            satisfaction_responses: self.satisfaction_n,
            parts_consumed_value: self.parts_consumed_value,
            stock_value: self.stock_value,
            parts_turnover_per_year: (self.stock_value > 0.0 && period_days > 0.0)
                .then(|| self.parts_consumed_value / self.stock_value * (365.25 / period_days)),
        }
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize)]
pub struct Kpis {
    /// Tickets created in the period.
    pub tickets: u64,
    /// Of those, resolved or closed.
    pub resolved: u64,
    /// Resolved with a single on-site visit, never waiting for parts, no follow-up ticket.
    pub first_time_fix_rate: Option<f64>,
    /// Resolved having met both the response and the on-site deadline.
    pub sla_compliance: Option<f64>,
    /// Created → resolved.
    pub mttr_hours: Option<f64>,
    pub satisfaction: Option<f64>,
    pub satisfaction_responses: u64,
    /// Unit cost × quantity of parts consumed on the provider's tickets in the period.
    pub parts_consumed_value: f64,
    /// Unit cost × on-hand stock at the provider's locations and its technicians' vans now.
    pub stock_value: f64,
    /// Consumed value per year over stock value.
    pub parts_turnover_per_year: Option<f64>,
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize)]
pub struct ProviderKpis {
    pub provider_id: String,
    pub name: String,
    /// oem, agent or provider: the level in the hierarchy.
    pub kind: String,
    pub parent_id: Option<String>,
    /// The provider's own tickets and stock.
    pub own: Kpis,
    /// The provider and everything below it.
    pub subtree: Kpis,
}

/// KPIs of every provider whose path starts with `scope` (all with `None`), over tickets
/// created in `[from_ms, to_ms)`.
pub async fn provider_kpis(
    db: &Database,
    scope: Option<&str>,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ProviderKpis>, AnalyticsError> {
    let providers =
        sqlx::query("SELECT provider_id, name, kind, parent_id, path FROM providers ORDER BY path")
            .fetch_all(db.pool())
            .await?;
    let mut own: HashMap<String, KpiSums> = HashMap::new();

    let tickets = sqlx::query(
        "SELECT t.provider_id, t.state, t.created_at_ms, t.resolved_at_ms,
                CASE WHEN COALESCE(t.responded_at_ms, t.resolved_at_ms) <= t.response_due_ms
                      AND COALESCE(t.onsite_at_ms, t.resolved_at_ms) <= t.onsite_due_ms
                     THEN 1 ELSE 0 END AS sla_met,
                t.satisfaction,
                (SELECT COUNT(*) FROM ticket_events e
                  WHERE e.ticket_id = t.ticket_id AND e.to_state = 'on_site') AS visits,
                (SELECT COUNT(*) FROM ticket_events e
                  WHERE e.ticket_id = t.ticket_id AND e.to_state = 'waiting_parts') AS waits,
                (SELECT COUNT(*) FROM tickets f WHERE f.parent_ticket_id = t.ticket_id) AS follow_ups
           FROM tickets t
          WHERE t.provider_id IS NOT NULL AND t.created_at_ms >= $1 AND t.created_at_ms < $2",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(db.pool())
    .await?;
    for r in &tickets {
        let s = own.entry(r.get(0)).or_default();
        s.tickets += 1;
        let state: String = r.get(1);
        let resolved_at: Option<i64> = r.get(3);
        if let (true, Some(resolved_at)) = (state == "resolved" || state == "closed", resolved_at) {
            let created: i64 = r.get(2);
            s.resolved += 1;
            s.restore_hours_sum += (resolved_at - created).max(0) as f64 / 3_600_000.0;
            // Judged on the recorded times rather than the timer's flags, so imported or
            // back-dated tickets count the same way.
            let met: i64 = r.get(4);
            if met == 1 {
                s.sla_met += 1;
            }
            let (visits, waits, follow_ups): (i64, i64, i64) = (r.get(6), r.get(7), r.get(8));
            if visits <= 1 && waits == 0 && follow_ups == 0 {
                s.first_time_fixes += 1;
            }
        }
        if let Some(score) = r.get::<Option<i64>, _>(5) {
            s.satisfaction_sum += score as f64;
            s.satisfaction_n += 1;
        }
    }

    let consumed = sqlx::query(
        "SELECT t.provider_id, SUM(r.quantity * p.unit_cost)
           FROM reservations r
           JOIN tickets t ON t.ticket_id = r.ticket_id
           JOIN parts p ON p.sku = r.sku
          WHERE r.state = 'consumed' AND t.provider_id IS NOT NULL
            AND r.updated_at_ms >= $1 AND r.updated_at_ms < $2
          GROUP BY t.provider_id",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(db.pool())
    .await?;
    for r in &consumed {
        own.entry(r.get(0)).or_default().parts_consumed_value +=
            r.get::<Option<f64>, _>(1).unwrap_or(0.0);
    }
    let stock = sqlx::query(
        "SELECT COALESCE(l.provider_id, t.provider_id), SUM(s.on_hand * p.unit_cost)
           FROM stock s
           JOIN stock_locations l ON l.location_id = s.location_id
           JOIN parts p ON p.sku = s.sku
           LEFT JOIN technicians t ON t.technician_id = l.technician_id
          WHERE COALESCE(l.provider_id, t.provider_id) IS NOT NULL
          GROUP BY COALESCE(l.provider_id, t.provider_id)",
    )
    .fetch_all(db.pool())
    .await?;
    for r in &stock {
        own.entry(r.get(0)).or_default().stock_value += r.get::<Option<f64>, _>(1).unwrap_or(0.0);
    }

    let period_days = (to_ms.saturating_sub(from_ms)) as f64 / 86_400_000.0;
    let paths: Vec<(String, String)> = providers.iter().map(|r| (r.get(0), r.get(4))).collect();
    let mut out = Vec::new();
    for r in &providers {
        let (id, path): (String, String) = (r.get(0), r.get(4));
        if scope.is_some_and(|s| !path.starts_with(s)) {
            continue;
        }
        let mine = own.get(&id).copied().unwrap_or_default();
        let mut subtree = KpiSums::default();
        for (other, other_path) in &paths {
            if other_path.starts_with(&path) {
                subtree.add(&own.get(other).copied().unwrap_or_default());
            }
        }
        out.push(ProviderKpis {
            provider_id: id,
            name: r.get(1),
            kind: r.get(2),
            parent_id: r.get(3),
            own: mine.kpis(period_days),
            subtree: subtree.kpis(period_days),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Model accuracy

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize)]
pub struct Quantiles {
    pub n: usize,
    pub p10: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

impl Quantiles {
    fn of(mut v: Vec<f64>) -> Quantiles {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| (!v.is_empty()).then(|| v[((v.len() - 1) as f64 * p).round() as usize]);
        Quantiles {
            n: v.len(),
            p10: q(0.1),
            p50: q(0.5),
            p90: q(0.9),
        }
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize)]
pub struct ModeAccuracy {
    /// A failure mode, or "all".
    pub failure_mode: String,
    pub predictive_tickets: u64,
    pub closed: u64,
    pub confirmed: u64,
    pub false_alarms: u64,
    pub other_cause: u64,
    /// confirmed / closed with a close code.
    pub precision: Option<f64>,
    /// Failures reported outside the predictive path (imported history excluded: no model
    /// watched then) with no predictive ticket for the same device and mode in the
    /// `window_days` before.
    pub missed_failures: u64,
    /// Failures reported outside the predictive path that a predictive ticket did precede.
    pub warned_failures: u64,
    /// confirmed / (confirmed + missed).
    pub recall: Option<f64>,
    /// Remaining useful life the model predicted when it raised the confirmed tickets (days).
    pub predicted_lead_days: Quantiles,
    /// For warned failures: the time from the predictive ticket to the failure (days).
    pub observed_lead_days: Quantiles,
}

/// Precision, recall and lead times of the predictive tickets created in `[from_ms, to_ms)`.
pub async fn model_accuracy(
    db: &Database,
    from_ms: i64,
    to_ms: i64,
    window_days: f64,
) -> Result<Vec<ModeAccuracy>, AnalyticsError> {
    if !(window_days > 0.0 && window_days <= 3650.0) {
        return Err(AnalyticsError::invalid(
            "window_days",
            "must be in (0, 3650]",
        ));
    }
    let rows = sqlx::query(
        "SELECT t.device_id, t.failure_mode, t.source, t.created_at_ms, t.state, t.rul_hours,
                r.close_code
           FROM tickets t LEFT JOIN service_reports r ON r.ticket_id = t.ticket_id
          WHERE t.device_id IS NOT NULL AND t.failure_mode IS NOT NULL
            AND t.created_at_ms >= $1 AND t.created_at_ms < $2
          ORDER BY t.created_at_ms",
    )
    .bind(from_ms - (window_days * 86_400_000.0) as i64)
    .bind(to_ms)
    .fetch_all(db.pool())
    .await?;
    struct T {
        device: String,
        mode: String,
        predictive: bool,
        imported: bool,
        at: i64,
        failed: bool,
        rul_hours: Option<f64>,
        code: Option<String>,
    }
    let tickets: Vec<T> = rows
        .iter()
        .map(|r| {
            let state: String = r.get(4);
            let code: Option<String> = r.get(6);
            let source: String = r.get(2);
            T {
                device: r.get(0),
                mode: r.get(1),
                predictive: source == "predictive",
                imported: source == "import",
                at: r.get(3),
                failed: (state == "resolved" || state == "closed")
                    && code.as_deref() != Some("false_alarm"),
                rul_hours: r.get(5),
                code,
            }
        })
        .collect();
    let window_ms = (window_days * 86_400_000.0) as i64;
    let mut modes: BTreeMap<String, Vec<&T>> = BTreeMap::new();
    for t in &tickets {
        modes.entry(t.mode.clone()).or_default().push(t);
        modes.entry("all".to_owned()).or_default().push(t);
    }
    let mut out = Vec::new();
    for (mode, list) in modes {
        let in_period = |t: &T| t.at >= from_ms && t.at < to_ms;
        let predictive: Vec<&T> = list
            .iter()
            .copied()
            .filter(|t| t.predictive && in_period(t))
            .collect();
        let code = |c: &str| {
            predictive
                .iter()
                .filter(|t| t.code.as_deref() == Some(c))
                .count() as u64
        };
        let (confirmed, false_alarms, other_cause) =
            (code("confirmed"), code("false_alarm"), code("other_cause"));
        let closed = confirmed + false_alarms + other_cause;
        let mut missed = 0;
        let mut observed = Vec::new();
        for f in list
            .iter()
            .filter(|t| !t.predictive && !t.imported && t.failed && in_period(t))
        {
            let warning = list
                .iter()
                .filter(|p| {
                    p.predictive
                        && p.device == f.device
                        && p.mode == f.mode
                        && p.at <= f.at
                        && f.at - p.at <= window_ms
                })
                .map(|p| p.at)
                .min();
            match warning {
                Some(at) => observed.push((f.at - at) as f64 / 86_400_000.0),
                None => missed += 1,
            }
        }
        out.push(ModeAccuracy {
            failure_mode: mode,
            predictive_tickets: predictive.len() as u64,
            closed,
            confirmed,
            false_alarms,
            other_cause,
            precision: (closed > 0).then(|| confirmed as f64 / closed as f64),
            missed_failures: missed,
            warned_failures: observed.len() as u64,
            recall: (confirmed + missed > 0)
                .then(|| confirmed as f64 / (confirmed + missed) as f64),
            predicted_lead_days: Quantiles::of(
                predictive
                    .iter()
                    .filter(|t| t.code.as_deref() == Some("confirmed"))
                    .filter_map(|t| t.rul_hours.map(|h| h / 24.0))
                    .collect(),
            ),
            observed_lead_days: Quantiles::of(observed),
        });
    }
    Ok(out)
}
