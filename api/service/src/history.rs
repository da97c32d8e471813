//! The fleet's service history as the reliability statistics see it: every device with its
//! grouping attributes and time in service, and every failure taken from the tickets.
//!
//! What counts as a failure: a ticket for a device with a failure mode that reached
//! `resolved` or `closed` and was not closed as a false alarm. That includes predictive tickets
//! whose on-site diagnosis confirmed the fault: the breakdown was prevented, but the fault
//! was real and took a repair, which is what MTBF and a life distribution are about.
//! Downtime of a failure runs from the ticket's creation to its resolution (time to restore).

use std::collections::HashMap;

use sqlx::Row;

use crate::db::Database;

pub const DAY_MS: f64 = 86_400_000.0;
pub const YEAR_DAYS: f64 = 365.25;

/// A device in the field with the attributes analytics group by.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLife {
    pub device_id: String,
    pub serial: String,
    pub model: String,
    pub batch: Option<String>,
    pub firmware: Option<String>,
    pub region: String,
    pub site_id: String,
    pub customer_id: String,
    /// Start of service: the install date, or the registration time when it is unknown.
    pub install_ms: i64,
}

/// One failure (see the module documentation for what counts).
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRecord {
    pub ticket_id: String,
    pub device_id: String,
    pub failure_mode: String,
    pub source: String,
    /// When the failure was reported (ticket creation).
    pub at_ms: i64,
    /// When service was restored (ticket resolution).
    pub restored_ms: Option<i64>,
    pub provider_id: Option<String>,
    pub close_code: Option<String>,
}

/// Devices and their failures up to `as_of_ms`, failures sorted by device then time.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub devices: Vec<DeviceLife>,
    pub failures: Vec<FailureRecord>,
    pub as_of_ms: i64,
}

/// What the analytics can group devices by.
#[derive(
    utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Fleet,
    Model,
    Region,
    Batch,
    Firmware,
    Site,
    Customer,
}

impl GroupBy {
    pub const NAMES: &'static str = "fleet, model, region, batch, firmware, site or customer";

    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "fleet" => GroupBy::Fleet,
            "model" => GroupBy::Model,
            "region" => GroupBy::Region,
            "batch" => GroupBy::Batch,
            "firmware" => GroupBy::Firmware,
            "site" => GroupBy::Site,
            "customer" => GroupBy::Customer,
            _ => return None,
        })
    }

    /// The group a device belongs to ("unknown" when the attribute is not recorded).
    pub fn key(self, d: &DeviceLife) -> String {
        let unknown = || "unknown".to_owned();
        match self {
            GroupBy::Fleet => "fleet".to_owned(),
            GroupBy::Model => d.model.clone(),
            GroupBy::Region => d.region.clone(),
            GroupBy::Batch => d.batch.clone().unwrap_or_else(unknown),
            GroupBy::Firmware => d.firmware.clone().unwrap_or_else(unknown),
            GroupBy::Site => d.site_id.clone(),
            GroupBy::Customer => d.customer_id.clone(),
        }
    }
}

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339 → epoch ms.
pub fn parse_date_ms(text: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

impl History {
    /// Loads every device of the service registry and every failure reported before
    /// `as_of_ms`.
    pub async fn load(db: &Database, as_of_ms: i64) -> Result<History, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT d.device_id, d.serial, d.model, d.batch, d.firmware, s.region, d.site_id,
                    s.customer_id, d.install_date, d.created_at_ms
               FROM devices d JOIN sites s ON s.site_id = d.site_id
              ORDER BY d.device_id",
        )
        .fetch_all(db.pool())
        .await?;
        let devices = rows
            .iter()
            .map(|r| {
                let install: Option<String> = r.get(8);
                let created: i64 = r.get(9);
                DeviceLife {
                    device_id: r.get(0),
                    serial: r.get(1),
                    model: r.get(2),
                    batch: r.get(3),
                    firmware: r.get(4),
                    region: r.get(5),
                    site_id: r.get(6),
                    customer_id: r.get(7),
                    install_ms: install
                        .as_deref()
                        .and_then(parse_date_ms)
                        .unwrap_or(created),
                }
            })
            .collect();
        let rows = sqlx::query(
            "SELECT t.ticket_id, t.device_id, t.failure_mode, t.source, t.created_at_ms,
                    t.resolved_at_ms, t.provider_id, r.close_code
               FROM tickets t LEFT JOIN service_reports r ON r.ticket_id = t.ticket_id
              WHERE t.device_id IS NOT NULL AND t.failure_mode IS NOT NULL
                AND t.state IN ('resolved', 'closed')
                AND (r.close_code IS NULL OR r.close_code <> 'false_alarm')
                AND t.created_at_ms < $1
              ORDER BY t.device_id, t.created_at_ms, t.ticket_id",
        )
        .bind(as_of_ms)
        .fetch_all(db.pool())
        .await?;
        let failures = rows
            .iter()
            .map(|r| FailureRecord {
                ticket_id: r.get(0),
                device_id: r.get(1),
                failure_mode: r.get(2),
                source: r.get(3),
                at_ms: r.get(4),
                restored_ms: r.get(5),
                provider_id: r.get(6),
                close_code: r.get(7),
            })
            .collect();
        Ok(History {
            devices,
            failures,
            as_of_ms,
        })
    }

    /// Failures per device id, in time order.
    pub fn failures_by_device(&self) -> HashMap<&str, Vec<&FailureRecord>> {
        let mut map: HashMap<&str, Vec<&FailureRecord>> = HashMap::new();
        for f in &self.failures {
            map.entry(f.device_id.as_str()).or_default().push(f);
        }
        map
    }

    /// Operating time of a device in days within `[from_ms, to_ms)`: time in service minus
    /// the downtime of its failures.
    pub fn operating_days(
        &self,
        device: &DeviceLife,
        failures: &[&FailureRecord],
        from_ms: i64,
        to_ms: i64,
    ) -> f64 {
        let start = device.install_ms.max(from_ms);
        let end = to_ms.min(self.as_of_ms);
        if end <= start {
            return 0.0;
        }
        let down: i64 = failures
            .iter()
            .map(|f| {
                let restored = f.restored_ms.unwrap_or(f.at_ms).max(f.at_ms);
                (restored.min(end) - f.at_ms.max(start)).max(0)
            })
            .sum();
        ((end - start - down).max(0)) as f64 / DAY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_as_utc_midnight_or_rfc3339() {
        assert_eq!(parse_date_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_date_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_date_ms("yesterday"), None);
    }

    #[test]
    fn operating_time_excludes_downtime_and_clips_to_the_window() {
        let day = DAY_MS as i64;
        let device = DeviceLife {
            device_id: "d".into(),
            serial: "s".into(),
            model: "m".into(),
            batch: None,
            firmware: None,
            region: "r".into(),
            site_id: "site".into(),
            customer_id: "c".into(),
            install_ms: 10 * day,
        };
        let failure = FailureRecord {
            ticket_id: "t".into(),
            device_id: "d".into(),
            failure_mode: "bearing_wear".into(),
            source: "api".into(),
            at_ms: 20 * day,
            restored_ms: Some(22 * day),
            provider_id: None,
            close_code: None,
        };
        let h = History {
            devices: vec![device.clone()],
            failures: vec![failure.clone()],
            as_of_ms: 40 * day,
        };
        // 30 days in service, 2 down.
        assert_eq!(h.operating_days(&device, &[&failure], 0, i64::MAX), 28.0);
        // Window [21, 30): 1 day down.
        assert_eq!(
            h.operating_days(&device, &[&failure], 21 * day, 30 * day),
            8.0
        );
        // Window before install.
        assert_eq!(h.operating_days(&device, &[&failure], 0, 5 * day), 0.0);
    }
}
