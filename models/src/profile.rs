//! Asset profiles: optional, per device model, what a monitor should know
//! about a kind of machine — its metrics and their roles, its named failure
//! modes with their indicators and thresholds, its criticality.
//!
//! Profiles are plain serde types (the binary loads them from TOML or JSON;
//! this crate does no parsing or I/O). A device whose model has no profile
//! is monitored by the zero-configuration detector ([`crate::learned`]).
//!
//! Two engines:
//! - `rotating_machine`: the physics-based monitor of [`crate::monitor`]
//!   (speed/current covariates, vibration, temperature difference, pressure
//!   and flow). The profile maps the engine's slots to the device's metric
//!   names and names and thresholds its three indicators. The simulator's
//!   pumps, motors and compressors use the built-in [`builtin_rotating`]
//!   profile (also shipped as `models/profiles/pump.toml`).
//! - `learned`: the zero-configuration detector, with optional hints: which
//!   metrics are covariates (load, setpoints) and which are health metrics,
//!   and named failure modes (`residual` indicators over given metrics) that
//!   rename the generic `anomaly` alert when those metrics are the deviating
//!   ones, with their own thresholds (in smoothed baseline sigmas).
//!
//! Example (TOML):
//! ```toml
//! name = "cnc-lathe"
//! models = ["lt-400"]
//! engine = "learned"
//! criticality = "high"
//!
//! [[metrics]]
//! name = "spindle_speed"
//! role = "covariate"
//!
//! [[metrics]]
//! name = "spindle_temp"
//! role = "health"
//! unit = "°C"
//!
//! [[failure_modes]]
//! name = "spindle_bearing"
//! threshold = 8.0
//! indicator = { kind = "residual", metrics = ["spindle_temp", "vibration"], direction = "up" }
//! ```

use crate::alert::Criticality;
use serde::{Deserialize, Serialize};

/// Which monitor runs a profiled device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Zero-configuration learned detector, with the profile's hints.
    #[default]
    Learned,
    /// Physics-based rotating-machine monitor ([`crate::monitor`]).
    RotatingMachine,
}

/// Role of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricRole {
    /// Operating point (load, setpoint, speed): explains the others, is not
    /// itself judged.
    Covariate,
    /// Responds to the covariates; its departures are evidence.
    #[default]
    Health,
    /// Not used.
    Ignore,
}

/// Input slots of the rotating-machine engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Slot {
    /// Shaft speed (0 = idle).
    Speed,
    /// Motor current.
    Current,
    /// Vibration RMS.
    Vibration,
    /// Bearing temperature.
    BearingTemp,
    /// Motor winding temperature.
    MotorTemp,
    /// Discharge pressure.
    Pressure,
    /// Flow.
    Flow,
}

/// Slots in the engine's order.
pub const SLOTS: [Slot; 7] = [
    Slot::Vibration,
    Slot::BearingTemp,
    Slot::MotorTemp,
    Slot::Current,
    Slot::Pressure,
    Slot::Flow,
    Slot::Speed,
];

/// One metric of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSpec {
    /// Metric name as the device publishes it.
    pub name: String,
    /// Role.
    #[serde(default)]
    pub role: MetricRole,
    /// Rotating-machine engine slot this metric feeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// Unit, for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// Direction of a departure that counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Above normal.
    Up,
    /// Below normal.
    Down,
    /// Either.
    #[default]
    Both,
}

impl Direction {
    /// Whether a signed deviation counts.
    pub fn admits(self, deviation: f64) -> bool {
        match self {
            Self::Up => deviation > 0.0,
            Self::Down => deviation < 0.0,
            Self::Both => true,
        }
    }
}

/// How a failure mode's indicator is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Indicator {
    /// Rotating machine: ln(vibration / load-predicted vibration), up.
    VibrationResidual,
    /// Rotating machine: −(pressure + flow log residuals)/2, up.
    PressureFlowDeficit,
    /// Rotating machine: motor − bearing temperature residual (°C), up.
    TemperatureRise,
    /// Learned engine: standardised residuals of these metrics.
    Residual {
        /// Metrics whose departures are this mode.
        metrics: Vec<String>,
        /// Which direction counts.
        #[serde(default)]
        direction: Direction,
    },
}

/// A named failure mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureModeSpec {
    /// Alert name (`failure_mode` of the alerts).
    pub name: String,
    /// Indicator.
    pub indicator: Indicator,
    /// Alarm level of the smoothed indicator (rotating machine: physical
    /// units, `None` = the [`crate::monitor::MonitorConfig`] value; learned:
    /// smoothed baseline sigmas, `None` = the detector's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Functional-failure level of the indicator, for RUL (same units;
    /// `None` = default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_level: Option<f64>,
}

/// What a monitor knows about one kind of machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetProfile {
    /// Profile name.
    pub name: String,
    /// Device models it applies to.
    #[serde(default)]
    pub models: Vec<String>,
    /// Engine.
    #[serde(default)]
    pub engine: Engine,
    /// Default criticality of such devices (a device's own criticality set
    /// with `FleetMonitor::set_criticality` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criticality: Option<Criticality>,
    /// Metrics and roles.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
    /// Named failure modes.
    #[serde(default)]
    pub failure_modes: Vec<FailureModeSpec>,
}

impl AssetProfile {
    /// Metric name feeding `slot`, if any.
    pub fn slot_metric(&self, slot: Slot) -> Option<&str> {
        self.metrics
            .iter()
            .find(|m| m.slot == Some(slot))
            .map(|m| m.name.as_str())
    }

    /// Whether a reading with these metric names looks like this profile's
    /// machines: every covariate present and at least half of the health
    /// metrics.
    pub fn matches_metrics(&self, names: &[&str]) -> bool {
        let has = |n: &str| names.contains(&n);
        let cov: Vec<&MetricSpec> = self
            .metrics
            .iter()
            .filter(|m| m.role == MetricRole::Covariate)
            .collect();
        let health: Vec<&MetricSpec> = self
            .metrics
            .iter()
            .filter(|m| m.role == MetricRole::Health)
            .collect();
        if cov.is_empty() && health.is_empty() {
            return false;
        }
        let hits = health.iter().filter(|m| has(&m.name)).count();
        cov.iter().all(|m| has(&m.name)) && 2 * hits >= health.len()
    }

    /// Role of a metric (`None`: not listed).
    pub fn role(&self, metric: &str) -> Option<MetricRole> {
        self.metrics
            .iter()
            .find(|m| m.name == metric)
            .map(|m| m.role)
    }
}

/// The simulator's rotating machines (pumps `cp-150`/`cp-200`, motors
/// `im-75`/`im-110`, compressors `sc-37`/`sc-55`): the physics monitor with
/// the [`crate::monitor::MonitorConfig`] thresholds. Same content as
/// `models/profiles/pump.toml`.
pub fn builtin_rotating() -> AssetProfile {
    let m = |name: &str, role, slot, unit: &str| MetricSpec {
        name: name.into(),
        role,
        slot: Some(slot),
        unit: Some(unit.into()),
    };
    let f = |name: &str, indicator| FailureModeSpec {
        name: name.into(),
        indicator,
        threshold: None,
        failure_level: None,
    };
    AssetProfile {
        name: "rotating-machine".into(),
        models: ["cp-150", "cp-200", "im-75", "im-110", "sc-37", "sc-55"]
            .map(String::from)
            .to_vec(),
        engine: Engine::RotatingMachine,
        criticality: None,
        metrics: vec![
            m("speed", MetricRole::Covariate, Slot::Speed, "rpm"),
            m("current", MetricRole::Covariate, Slot::Current, "A"),
            m("vibration_rms", MetricRole::Health, Slot::Vibration, "mm/s"),
            m("bearing_temp", MetricRole::Health, Slot::BearingTemp, "°C"),
            m("motor_temp", MetricRole::Health, Slot::MotorTemp, "°C"),
            m("pressure", MetricRole::Health, Slot::Pressure, "bar"),
            m("flow", MetricRole::Health, Slot::Flow, "m³/h"),
        ],
        failure_modes: vec![
            f("bearing_wear", Indicator::VibrationResidual),
            f("seal_leak", Indicator::PressureFlowDeficit),
            f("overheating", Indicator::TemperatureRise),
        ],
    }
}

/// The built-in profile as shipped TOML (documentation and a template; the
/// binary may load it like any other profile).
pub const BUILTIN_ROTATING_TOML: &str = include_str!("../profiles/pump.toml");
