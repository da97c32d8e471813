//! Alert lifecycle per (device, failure mode): open → acknowledged →
//! resolved, with de-duplication and time hysteresis.
//!
//! Pure: the caller passes time in as epoch milliseconds, so replays and
//! tests are deterministic.

use crate::rul::RulEstimate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Alert lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Raised, nobody has taken it yet.
    Open,
    /// A person has taken ownership; still active.
    Acknowledged,
    /// Condition cleared (or closed by hand); terminal.
    Resolved,
}

/// Severity used for ticket priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Watch.
    Low,
    /// Plan a visit.
    Medium,
    /// Visit soon.
    High,
    /// Failure imminent.
    Critical,
}

impl Severity {
    fn shift(self, up: i8) -> Self {
        let i = (self as i8 + up).clamp(0, 3);
        match i {
            0 => Self::Low,
            1 => Self::Medium,
            2 => Self::High,
            _ => Self::Critical,
        }
    }
}

/// Business criticality of a device (from the registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// Redundant or non-essential equipment.
    Low,
    /// Default.
    #[default]
    Medium,
    /// Production-critical equipment.
    High,
}

/// Severity from RUL (hours) and detector ratio, shifted by criticality.
///
/// The pessimistic end of the RUL interval (`lower`) is used, because a
/// ticket raised late costs more than one raised early. Without a RUL the
/// detector's limit ratio decides.
pub fn severity(rul_hours: Option<&RulEstimate>, ratio: f64, criticality: Criticality) -> Severity {
    let base = match rul_hours {
        Some(r) if r.lower < 24.0 => Severity::Critical,
        Some(r) if r.lower < 72.0 => Severity::High,
        Some(r) if r.lower < 168.0 => Severity::Medium,
        Some(_) => Severity::Low,
        None if ratio >= 3.0 => Severity::High,
        None if ratio >= 1.5 => Severity::Medium,
        None => Severity::Low,
    };
    match criticality {
        Criticality::Low => base.shift(-1),
        Criticality::Medium => base,
        Criticality::High => base.shift(1),
    }
}

/// Why an alert was raised: what a technician or engineer needs to judge it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Evidence {
    /// Detector that produced the score.
    pub detector: String,
    /// Metric values at the time of the observation.
    pub metrics: BTreeMap<String, f64>,
    /// Anomaly score in [0, 1].
    pub score: f64,
    /// Statistic / limit ratio.
    pub ratio: f64,
    /// Remaining useful life in hours, with interval, if estimated.
    pub rul_hours: Option<RulEstimate>,
}

/// One detector verdict for a (device, failure mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Device id.
    pub device_id: String,
    /// Failure mode (e.g. `bearing_wear`, or the detector name).
    pub failure_mode: String,
    /// Epoch milliseconds of the sample.
    pub ts_ms: i64,
    /// Detector decision.
    pub anomalous: bool,
    /// Supporting data.
    pub evidence: Evidence,
    /// Device criticality.
    pub criticality: Criticality,
}

/// An alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Sequential id, unique within one [`AlertManager`].
    pub id: u64,
    /// Device id.
    pub device_id: String,
    /// Failure mode.
    pub failure_mode: String,
    /// Lifecycle state.
    pub state: AlertState,
    /// Current severity (only escalates while active).
    pub severity: Severity,
    /// When the anomalous run that opened it began.
    pub started_at_ms: i64,
    /// When it was opened (after the minimum duration).
    pub opened_at_ms: i64,
    /// When acknowledged.
    pub acknowledged_at_ms: Option<i64>,
    /// When resolved.
    pub resolved_at_ms: Option<i64>,
    /// Latest anomalous observation.
    pub last_anomalous_ms: i64,
    /// Anomalous observations folded into this alert (de-duplication count).
    pub occurrences: u64,
    /// Highest anomaly score seen.
    pub peak_score: f64,
    /// Evidence of the latest anomalous observation.
    pub evidence: Evidence,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEventKind {
    /// A new alert.
    Opened,
    /// Severity rose on an active alert.
    Escalated,
    /// Someone acknowledged it.
    Acknowledged,
    /// It cleared or was closed.
    Resolved,
}

/// A state change to publish (ticketing, webhooks, UI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Kind of change.
    pub kind: AlertEventKind,
    /// Alert after the change.
    pub alert: Alert,
}

/// Hysteresis settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlertConfig {
    /// An anomalous run must last this long before an alert opens.
    pub open_after_ms: i64,
    /// The condition must be normal this long before the alert resolves.
    pub resolve_after_ms: i64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            open_after_ms: 60_000,
            resolve_after_ms: 600_000,
        }
    }
}

/// Errors from manual transitions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// No active alert for that (device, failure mode).
    #[error("no active alert for device `{device_id}`, failure mode `{failure_mode}`")]
    NotFound {
        /// Device id.
        device_id: String,
        /// Failure mode.
        failure_mode: String,
    },
    /// The requested transition is not allowed from the current state.
    #[error("cannot {action} an alert that is {state:?}")]
    IllegalTransition {
        /// Attempted action.
        action: &'static str,
        /// Current state.
        state: AlertState,
    },
}

#[derive(Debug, Clone, Default)]
struct Tracker {
    last_ts: Option<i64>,
    pending_since: Option<i64>,
    normal_since: Option<i64>,
    active: Option<Alert>,
}

/// Alert state machines for many (device, failure mode) keys. Memory is one
/// small tracker per key; resolved alerts are handed out in events, not kept.
#[derive(Debug, Clone, Default)]
pub struct AlertManager {
    cfg: AlertConfig,
    next_id: u64,
    trackers: BTreeMap<(String, String), Tracker>,
}

impl AlertManager {
    /// A manager with the given hysteresis.
    pub fn new(cfg: AlertConfig) -> Self {
        Self {
            cfg,
            next_id: 1,
            trackers: BTreeMap::new(),
        }
    }

    /// Folds one observation in; returns the resulting events (often none).
    /// Observations older than the key's latest are ignored so a late,
    /// out-of-order sample cannot reopen or resolve anything.
    pub fn observe(&mut self, obs: Observation) -> Vec<AlertEvent> {
        let key = (obs.device_id.clone(), obs.failure_mode.clone());
        let cfg = self.cfg;
        let tr = self.trackers.entry(key).or_default();
        if tr.last_ts.is_some_and(|t| obs.ts_ms < t) {
            return Vec::new();
        }
        tr.last_ts = Some(obs.ts_ms);
        let mut events = Vec::new();
        if obs.anomalous {
            tr.normal_since = None;
            let sev = severity(
                obs.evidence.rul_hours.as_ref(),
                obs.evidence.ratio,
                obs.criticality,
            );
            if let Some(a) = tr.active.as_mut() {
                a.occurrences += 1;
                a.last_anomalous_ms = obs.ts_ms;
                a.peak_score = a.peak_score.max(obs.evidence.score);
                a.evidence = obs.evidence;
                if sev > a.severity {
                    a.severity = sev;
                    events.push(AlertEvent {
                        kind: AlertEventKind::Escalated,
                        alert: a.clone(),
                    });
                }
            } else {
                let start = *tr.pending_since.get_or_insert(obs.ts_ms);
                if obs.ts_ms - start >= cfg.open_after_ms {
                    let a = Alert {
                        id: self.next_id,
                        device_id: obs.device_id,
                        failure_mode: obs.failure_mode,
                        state: AlertState::Open,
                        severity: sev,
                        started_at_ms: start,
                        opened_at_ms: obs.ts_ms,
                        acknowledged_at_ms: None,
                        resolved_at_ms: None,
                        last_anomalous_ms: obs.ts_ms,
                        occurrences: 1,
                        peak_score: obs.evidence.score,
                        evidence: obs.evidence,
                    };
                    self.next_id += 1;
                    tr.pending_since = None;
                    events.push(AlertEvent {
                        kind: AlertEventKind::Opened,
                        alert: a.clone(),
                    });
                    tr.active = Some(a);
                }
            }
        } else {
            tr.pending_since = None;
            if tr.active.is_some() {
                let since = *tr.normal_since.get_or_insert(obs.ts_ms);
                if obs.ts_ms - since >= cfg.resolve_after_ms
                    && let Some(mut a) = tr.active.take()
                {
                    a.state = AlertState::Resolved;
                    a.resolved_at_ms = Some(obs.ts_ms);
                    tr.normal_since = None;
                    events.push(AlertEvent {
                        kind: AlertEventKind::Resolved,
                        alert: a,
                    });
                }
            }
        }
        events
    }

    fn active_mut(
        &mut self,
        device_id: &str,
        failure_mode: &str,
    ) -> Result<&mut Tracker, AlertError> {
        self.trackers
            .get_mut(&(device_id.to_string(), failure_mode.to_string()))
            .filter(|t| t.active.is_some())
            .ok_or_else(|| AlertError::NotFound {
                device_id: device_id.to_string(),
                failure_mode: failure_mode.to_string(),
            })
    }

    /// Open → acknowledged.
    pub fn acknowledge(
        &mut self,
        device_id: &str,
        failure_mode: &str,
        now_ms: i64,
    ) -> Result<AlertEvent, AlertError> {
        let tr = self.active_mut(device_id, failure_mode)?;
        let Some(a) = tr.active.as_mut() else {
            return Err(AlertError::NotFound {
                device_id: device_id.to_string(),
                failure_mode: failure_mode.to_string(),
            });
        };
        if a.state != AlertState::Open {
            return Err(AlertError::IllegalTransition {
                action: "acknowledge",
                state: a.state,
            });
        }
        a.state = AlertState::Acknowledged;
        a.acknowledged_at_ms = Some(now_ms);
        Ok(AlertEvent {
            kind: AlertEventKind::Acknowledged,
            alert: a.clone(),
        })
    }

    /// Closes an active alert by hand (e.g. the ticket was closed).
    pub fn resolve(
        &mut self,
        device_id: &str,
        failure_mode: &str,
        now_ms: i64,
    ) -> Result<AlertEvent, AlertError> {
        let tr = self.active_mut(device_id, failure_mode)?;
        let Some(mut a) = tr.active.take() else {
            return Err(AlertError::NotFound {
                device_id: device_id.to_string(),
                failure_mode: failure_mode.to_string(),
            });
        };
        tr.normal_since = None;
        tr.pending_since = None;
        a.state = AlertState::Resolved;
        a.resolved_at_ms = Some(now_ms);
        Ok(AlertEvent {
            kind: AlertEventKind::Resolved,
            alert: a,
        })
    }

    /// Active (open or acknowledged) alerts, ordered by key.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.trackers.values().filter_map(|t| t.active.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(ts: i64, anomalous: bool, ratio: f64) -> Observation {
        Observation {
            device_id: "d1".into(),
            failure_mode: "vibration".into(),
            ts_ms: ts,
            anomalous,
            evidence: Evidence {
                detector: "knn".into(),
                score: ratio / (1.0 + ratio),
                ratio,
                ..Evidence::default()
            },
            criticality: Criticality::Medium,
        }
    }

    #[test]
    fn lifecycle_with_hysteresis_and_dedup() {
        let mut m = AlertManager::new(AlertConfig {
            open_after_ms: 3_000,
            resolve_after_ms: 5_000,
        });
        // A 2 s blip does not open.
        assert!(m.observe(obs(0, true, 2.0)).is_empty());
        assert!(m.observe(obs(2_000, true, 2.0)).is_empty());
        assert!(m.observe(obs(3_000, false, 0.1)).is_empty());
        // A sustained run opens once.
        assert!(m.observe(obs(10_000, true, 2.0)).is_empty());
        let ev = m.observe(obs(13_000, true, 2.0));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, AlertEventKind::Opened);
        assert_eq!(ev[0].alert.severity, Severity::Medium);
        // Duplicates fold in; a worse score escalates.
        assert!(m.observe(obs(14_000, true, 2.0)).is_empty());
        let ev = m.observe(obs(15_000, true, 4.0));
        assert_eq!(ev[0].kind, AlertEventKind::Escalated);
        assert_eq!(m.active().count(), 1);
        assert_eq!(m.active().next().unwrap().occurrences, 3);
        // Acknowledge; twice is illegal.
        assert_eq!(
            m.acknowledge("d1", "vibration", 16_000).unwrap().kind,
            AlertEventKind::Acknowledged
        );
        assert!(matches!(
            m.acknowledge("d1", "vibration", 16_500),
            Err(AlertError::IllegalTransition { .. })
        ));
        // Brief normal spells do not resolve (no flapping).
        assert!(m.observe(obs(17_000, false, 0.5)).is_empty());
        assert!(m.observe(obs(19_000, true, 2.0)).is_empty());
        assert!(m.observe(obs(20_000, false, 0.5)).is_empty());
        // Out-of-order sample ignored.
        assert!(m.observe(obs(1_000, true, 9.0)).is_empty());
        let ev = m.observe(obs(25_000, false, 0.5));
        assert_eq!(ev[0].kind, AlertEventKind::Resolved);
        assert_eq!(m.active().count(), 0);
        assert!(m.resolve("d1", "vibration", 26_000).is_err());
    }

    #[test]
    fn severity_from_rul_and_criticality() {
        let rul = |lower| RulEstimate {
            rul: lower + 10.0,
            lower,
            upper: lower + 20.0,
        };
        assert_eq!(
            severity(Some(&rul(10.0)), 0.0, Criticality::Medium),
            Severity::Critical
        );
        assert_eq!(
            severity(Some(&rul(100.0)), 0.0, Criticality::High),
            Severity::High
        );
        assert_eq!(
            severity(Some(&rul(500.0)), 0.0, Criticality::Low),
            Severity::Low
        );
        assert_eq!(severity(None, 1.0, Criticality::High), Severity::Medium);
    }
}
