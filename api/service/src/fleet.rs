//! The fleet as people look at it: every placed device with its health from the active
//! alerts, and the alerts a caller may see. Scope follows `device_context`: a provider sees
//! the devices of the regions its subtree serves.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::Row;

use crate::alerts::{AlertMove, AlertRecord, AlertStore};
use crate::auth::{Action, Principal};
use crate::{Result, Service, ServiceError};

/// At most this many devices in one fleet answer (the console pages are bounded).
pub const FLEET_LIMIT: i64 = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    /// An active alert of low or medium severity.
    Watch,
    /// An active alert of high or critical severity.
    Alerting,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Watch => "watch",
            Health::Alerting => "alerting",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        [Health::Healthy, Health::Watch, Health::Alerting]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
}

#[derive(Debug, Clone, Default)]
pub struct FleetFilter {
    pub model: Option<String>,
    pub site: Option<String>,
    pub region: Option<String>,
    pub batch: Option<String>,
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FleetDevice {
    pub device_id: String,
    pub serial: String,
    pub model: String,
    pub batch: Option<String>,
    pub site_id: String,
    pub site_name: String,
    pub region: String,
    pub lat: f64,
    pub lon: f64,
    pub active_alerts: i64,
    pub worst_severity: Option<String>,
    /// The smallest RUL estimate among the active alerts, with its interval.
    pub rul_hours: Option<f64>,
    pub rul_lower_hours: Option<f64>,
    pub rul_upper_hours: Option<f64>,
    pub open_tickets: i64,
    pub health: Health,
}

fn health_of(worst: Option<&str>) -> Health {
    match worst {
        Some("high" | "critical") => Health::Alerting,
        Some(_) => Health::Watch,
        None => Health::Healthy,
    }
}

impl Service {
    /// The regions a scoped caller may see (`None`: every region).
    pub async fn visible_regions(&self, who: &Principal) -> Result<Option<HashSet<String>>> {
        if who.scope().is_none() {
            return Ok(None);
        }
        let regions: Vec<String> = sqlx::query_scalar("SELECT DISTINCT region FROM sites")
            .fetch_all(self.pool())
            .await?;
        let mut visible = HashSet::new();
        for region in regions {
            let path = self.provider_for_region(&region).await?.map(|p| p.path);
            if who.sees(path.as_deref()) {
                visible.insert(region);
            }
        }
        Ok(Some(visible))
    }

    /// Placed devices with their health, worst first, then by id.
    pub async fn fleet(&self, who: &Principal, filter: &FleetFilter) -> Result<Vec<FleetDevice>> {
        who.require(Action::RegistryRead)?;
        let visible = self.visible_regions(who).await?;
        let rows = sqlx::query(
            "SELECT d.device_id, COALESCE(d.serial, ''), COALESCE(d.model, ''), d.batch,
                    s.site_id, s.name, s.region, s.lat, s.lon,
                    COALESCE(a.n, 0), a.worst, a.rul, a.rul_lo, a.rul_hi,
                    (SELECT COUNT(*) FROM tickets t WHERE t.device_id = d.device_id
                       AND t.state NOT IN ('resolved', 'closed', 'cancelled'))
             FROM devices d JOIN sites s ON s.site_id = d.site_id
             LEFT JOIN (
                SELECT device_id, COUNT(*) AS n,
                       CASE MAX(CASE severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3
                                 WHEN 'medium' THEN 2 ELSE 1 END)
                         WHEN 4 THEN 'critical' WHEN 3 THEN 'high' WHEN 2 THEN 'medium'
                         ELSE 'low' END AS worst,
                       MIN(rul_hours) AS rul, MIN(rul_lower_hours) AS rul_lo,
                       MIN(rul_upper_hours) AS rul_hi
                FROM alerts WHERE state != 'resolved' GROUP BY device_id
             ) a ON a.device_id = d.device_id
             WHERE ($1 IS NULL OR d.model = $1) AND ($2 IS NULL OR s.site_id = $2)
               AND ($3 IS NULL OR s.region = $3) AND ($4 IS NULL OR d.batch = $4)
             ORDER BY d.device_id LIMIT $5",
        )
        .bind(&filter.model)
        .bind(&filter.site)
        .bind(&filter.region)
        .bind(&filter.batch)
        .bind(FLEET_LIMIT)
        .fetch_all(self.pool())
        .await?;
        let mut out: Vec<FleetDevice> = rows
            .iter()
            .map(|r| {
                let worst: Option<String> = r.get(10);
                FleetDevice {
                    device_id: r.get(0),
                    serial: r.get(1),
                    model: r.get(2),
                    batch: r.get(3),
                    site_id: r.get(4),
                    site_name: r.get(5),
                    region: r.get(6),
                    lat: r.get(7),
                    lon: r.get(8),
                    active_alerts: r.get(9),
                    health: health_of(worst.as_deref()),
                    worst_severity: worst,
                    rul_hours: r.get(11),
                    rul_lower_hours: r.get(12),
                    rul_upper_hours: r.get(13),
                    open_tickets: r.get(14),
                }
            })
            .filter(|d| visible.as_ref().is_none_or(|v| v.contains(&d.region)))
            .filter(|d| filter.health.is_none_or(|h| h == d.health))
            .collect();
        out.sort_by(|a, b| b.health.cmp(&a.health).then(a.device_id.cmp(&b.device_id)));
        Ok(out)
    }

    /// Alerts, newest first, of the devices `who` may see.
    pub async fn alerts_visible(
        &self,
        who: &Principal,
        state: Option<&str>,
        device_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AlertRecord>> {
        who.require(Action::RegistryRead)?;
        let limit = limit.clamp(1, 10_000);
        let store = AlertStore::new(self.db.clone());
        let Some(regions) = self.visible_regions(who).await? else {
            return Ok(store.list(state, device_id, limit).await?);
        };
        let devices: HashSet<String> = self
            .fleet(who, &FleetFilter::default())
            .await?
            .into_iter()
            .filter(|d| regions.contains(&d.region))
            .map(|d| d.device_id)
            .collect();
        Ok(store
            .list(state, device_id, 10_000)
            .await?
            .into_iter()
            .filter(|a| devices.contains(&a.device_id))
            .take(limit as usize)
            .collect())
    }

    /// A person acknowledges or resolves an alert (dispatching roles; a provider only on the
    /// devices of its regions, and one it cannot see is "not found" whether or not it exists).
    pub async fn move_alert(
        &self,
        who: &Principal,
        alert_id: &str,
        to: AlertMove,
    ) -> Result<AlertRecord> {
        who.require(Action::Dispatch)?;
        let store = AlertStore::new(self.db.clone());
        let not_found = || ServiceError::NotFound {
            kind: "alert",
            id: alert_id.to_owned(),
        };
        let record = store.get(alert_id).await?.ok_or_else(not_found)?;
        if let Some(regions) = self.visible_regions(who).await? {
            let device_region: Option<String> = sqlx::query_scalar(
                "SELECT s.region FROM devices d JOIN sites s ON s.site_id = d.site_id
                 WHERE d.device_id = $1",
            )
            .bind(&record.device_id)
            .fetch_optional(self.db.pool())
            .await?;
            if !device_region.is_some_and(|r| regions.contains(&r)) {
                return Err(not_found());
            }
        }
        match store
            .set_by_person(alert_id, to, self.clock.now_ms())
            .await?
        {
            None => Err(not_found()),
            Some(Ok(r)) => Ok(r),
            Some(Err(state)) => Err(ServiceError::Conflict(format!(
                "alert {alert_id:?} is {state}: it can no longer be acknowledged"
            ))),
        }
    }
}
