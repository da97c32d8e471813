//! Online fleet monitor: per-device, causal health indicators for the three
//! simulated failure modes, drift detection, RUL and de-duplicated alerts.
//!
//! # Routing
//! Each device is routed once (on its first reading): a device whose model
//! ([`FleetMonitor::set_device_model`]) has an [`AssetProfile`]
//! ([`FleetMonitor::set_profiles`]; default: the built-in
//! [`builtin_rotating`] profile of the simulator's machines) runs that
//! profile's engine; a device with no known model whose metrics match a
//! profile's (every covariate, half of the health metrics) uses it too;
//! every other device gets the zero-configuration detector of
//! [`crate::learned`] (failure mode [`crate::learned::GENERIC_MODE`] unless a profile names
//! it). The physics below is the `rotating_machine` engine: its metric names,
//! mode names and thresholds come from the profile. Repair feedback
//! ([`FleetMonitor::feedback`]) scales a (device model, failure mode)'s
//! thresholds.
//!
//! # Method
//! For every device the monitor keeps a small state (a few hundred floats,
//! independent of how long the device has been observed):
//!
//! 1. **Operating covariates.** Load moves every sensor, so each health
//!    metric is compared with what the current operating point predicts.
//!    The covariates are speed and current (scaled by the first running
//!    sample after a restart) plus first-order-lag filtered copies of both
//!    with thermal time constants (`thermal_tau_*`), so that temperatures,
//!    which lag the load, are explained too. Idle samples (speed 0) only
//!    advance the filters; temperature samples within `warmup_after_start_ms`
//!    of a start from idle are dropped (the machine is still warming up).
//! 2. **Baseline regression.** The first `baseline_samples` running samples
//!    after a (re)start train one ridge least-squares model per target:
//!    `vibration_rms`, `pressure`, `flow` (on speed, current and their
//!    squares: flow goes with speed × load) and `motor_temp − bearing_temp`
//!    (on speed, current and their lagged copies; the difference cancels the
//!    ambient temperature: season, daily cycle, region). Only the normal
//!    equations are accumulated (bounded memory), then solved once and
//!    frozen.
//! 3. **Residual indicators.** After the baseline, each running sample gives
//!    residuals: ln(actual / predicted) for vibration, pressure and flow,
//!    actual − predicted (°C) for the temperature difference. They are averaged per `bucket_ms`
//!    (1 h) and smoothed across buckets by a one-sided EWMA (λ per bucket), so
//!    sensor noise and load-model error average out over about two days:
//!    - `bearing_wear` = vibration residual (log ratio, vibration up),
//!    - `overheating` = motor−bearing temperature residual (°C, up),
//!    - `seal_leak` = −(pressure residual + flow residual)/2 (log ratio, down).
//!
//!    A mode's decision is anomalous once its smoothed indicator exceeds its
//!    threshold and stays anomalous until it falls below `clear_fraction` of
//!    it (hysteresis on the level). Thresholds are global (the same for
//!    every device), in physical units.
//! 4. **One alert per degradation.** Decisions are made once per bucket and
//!    fed to an [`AlertManager`] (time hysteresis: open after
//!    `alert.open_after_ms` of anomalous buckets, resolve after
//!    `alert.resolve_after_ms` of normal ones). A device has at most one
//!    failure mode alerting at a time: the mode that became anomalous first
//!    (largest ratio on a tie) owns the device until its alert resolves, so
//!    the side effects of one degradation on other indicators (a seal leak
//!    also raises vibration a little) cannot raise a second alert.
//! 5. **RUL.** The last `rul_window_buckets` smoothed values of the alerting
//!    indicator are extrapolated ([`extrapolate_trend`], exponential in
//!    indicator + alarm level, since degradation accelerates; linear as a
//!    fallback) to the mode's functional-failure level; the estimate and its
//!    95 % interval (hours) go into the evidence and drive the severity.
//!
//! # Gaps, dropouts, degraded starts
//! - A missing metric only removes the targets that need it; a sample without
//!   speed or current is skipped (the covariates are unknown).
//! - Silence longer than `restart_gap_ms` means the device was stopped for
//!   repair or maintenance: it comes back healthy with a new baseline (a new
//!   bearing sits differently), so the state is reset and the baseline is
//!   learned again, and alerts still active for the device are resolved
//!   (the intervention addressed them). A plain connectivity loss of that
//!   length is treated the same way (documented limitation).
//! - A device that is already degrading when monitoring starts contaminates
//!   its first baseline: the indicators then measure growth *relative to* the
//!   degraded state. Degradation severity is convex in time (most of the
//!   change happens in the last third), so such devices are still caught as
//!   they progress, but with a shorter lead; devices close to failure at
//!   start are missed. No cross-device (peer) comparison is made.
//!
//! Everything is deterministic and causal: events for a sample depend on
//! that sample and earlier ones only.

use crate::alert::{
    Alert, AlertConfig, AlertEvent, AlertEventKind, AlertManager, Criticality, Evidence,
    Observation,
};
use crate::learned::{LearnedConfig, LearnedDevice, LearnedHealth, Naming};
use crate::profile::{AssetProfile, Engine, Indicator, SLOTS, builtin_rotating};
use crate::rul::{TrendKind, extrapolate_trend};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Failure modes the monitor distinguishes, in indicator order.
pub const MODES: [&str; 3] = ["bearing_wear", "seal_leak", "overheating"];

const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: f64 = 86_400_000.0;
/// Covariates (at most): intercept, speed, current and either their squares
/// (instantaneous targets) or fast- and slow-filtered speed and current
/// (temperatures, which lag the load).
const P: usize = 7;
/// Regression targets: vibration, motor − bearing temperature, pressure,
/// flow.
const T: usize = 4;

/// Covariates used per target: vibration, pressure and flow use the
/// instantaneous set (5), the temperature difference the lagged set (7).
const TARGET_COVARIATES: [usize; T] = [5, P, 5, 5];
/// Targets whose residual is relative (ln actual/predicted) rather than
/// absolute.
const RELATIVE: [bool; T] = [true, false, true, true];

/// Monitor settings. `Default` is what `prognos evaluate fleet` reports on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MonitorConfig {
    /// Silence longer than this restarts the device's baseline (default 2 h;
    /// telemetry normally arrives every few minutes, also while idle).
    pub restart_gap_ms: i64,
    /// Running samples that train the baseline regression (default 432:
    /// three running days of 10-minute samples).
    pub baseline_samples: usize,
    /// Temperature samples this soon after a start from idle are dropped
    /// (default 2 h).
    pub warmup_after_start_ms: i64,
    /// Time constant of the fast covariate filter (default 25 min, motor
    /// winding).
    pub thermal_tau_fast_ms: f64,
    /// Time constant of the slow covariate filter (default 40 min, bearing
    /// housing).
    pub thermal_tau_slow_ms: f64,
    /// Residuals are averaged over buckets of this length (default 1 h).
    pub bucket_ms: i64,
    /// A bucket with fewer running samples is ignored (default 3).
    pub min_bucket_samples: u32,
    /// EWMA factor per bucket (default 0.04: about two days of memory).
    pub ewma_lambda: f64,
    /// Alarm levels of the smoothed indicators, in [`MODES`] order (default
    /// 0.03 = +3 % vibration, 0.007 = −0.7 % pressure and flow, 0.3 °C
    /// motor−bearing temperature).
    pub thresholds: [f64; 3],
    /// An anomalous indicator clears below this fraction of its threshold
    /// (default 0.5).
    pub clear_fraction: f64,
    /// Functional-failure levels of the indicators for RUL, in [`MODES`]
    /// order (default ln 3 vibration, 0.25 ln pressure/flow, 30 °C).
    pub failure_levels: [f64; 3],
    /// Bucket means used for the RUL trend (default 72).
    pub rul_window_buckets: usize,
    /// Alert time hysteresis (default open after 6 h, resolve after 24 h).
    pub alert: AlertConfig,
    /// Settings of the zero-configuration detector (devices without a
    /// profile).
    pub learned: LearnedConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            restart_gap_ms: 2 * 3_600_000,
            baseline_samples: 432,
            warmup_after_start_ms: 2 * 3_600_000,
            thermal_tau_fast_ms: 25.0 * 60_000.0,
            thermal_tau_slow_ms: 40.0 * 60_000.0,
            bucket_ms: 3_600_000,
            min_bucket_samples: 3,
            ewma_lambda: 0.04,
            thresholds: [0.03, 0.007, 0.3],
            clear_fraction: 0.5,
            failure_levels: [3f64.ln(), 0.25, 30.0],
            rul_window_buckets: 72,
            alert: AlertConfig {
                open_after_ms: 6 * 3_600_000,
                resolve_after_ms: 24 * 3_600_000,
            },
            learned: LearnedConfig::default(),
        }
    }
}

/// Bounds of the feedback threshold multiplier.
pub const FEEDBACK_BOUNDS: (f64, f64) = (0.9, 4.0);

/// The rotating-machine engine's parameters for one device, from its profile.
#[derive(Debug, Clone, PartialEq)]
struct PhysicsParams {
    /// Metric names feeding the slots, in [`SLOTS`] order.
    slots: [String; 7],
    /// Mode names (indicators in [`MODES`] order).
    names: [String; 3],
    /// Effective thresholds (profile or config, × feedback).
    thresholds: [f64; 3],
    /// Failure levels.
    failure_levels: [f64; 3],
    /// Modes the profile defines.
    enabled: [bool; 3],
}

impl PhysicsParams {
    fn new(cfg: &MonitorConfig, p: &AssetProfile) -> Self {
        let slots = SLOTS.map(|s| p.slot_metric(s).unwrap_or("").to_string());
        let mut names = MODES.map(String::from);
        let mut thresholds = cfg.thresholds;
        let mut failure_levels = cfg.failure_levels;
        let mut enabled = [false; 3];
        for f in &p.failure_modes {
            let m = match f.indicator {
                Indicator::VibrationResidual => 0,
                Indicator::PressureFlowDeficit => 1,
                Indicator::TemperatureRise => 2,
                Indicator::Residual { .. } => continue,
            };
            enabled[m] = true;
            names[m] = f.name.clone();
            if let Some(t) = f.threshold {
                thresholds[m] = t;
            }
            if let Some(l) = f.failure_level {
                failure_levels[m] = l;
            }
        }
        Self {
            slots,
            names,
            thresholds,
            failure_levels,
            enabled,
        }
    }
}

/// Which engine a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Rotating-machine physics with profile `usize`.
    Physics(usize),
    /// Learned detector, with an optional (learned-engine) profile.
    Learned(Option<usize>),
}

/// Normal equations of one ridge regression (upper triangle used).
#[derive(Debug, Clone)]
struct Gram {
    k: usize,
    xtx: [[f64; P]; P],
    xty: [f64; P],
    n: usize,
}

impl Default for Gram {
    fn default() -> Self {
        Self {
            k: P,
            xtx: [[0.0; P]; P],
            xty: [0.0; P],
            n: 0,
        }
    }
}

// Small dense linear algebra reads best with index loops.
#[allow(clippy::needless_range_loop)]
impl Gram {
    /// Uses the first `k` covariates.
    fn new(k: usize) -> Self {
        Self {
            k: k.clamp(1, P),
            ..Self::default()
        }
    }

    fn add(&mut self, x: &[f64; P], y: f64) {
        let k = self.k;
        for i in 0..k {
            let xi = x[i];
            for j in i..k {
                self.xtx[i][j] += xi * x[j];
            }
            self.xty[i] += xi * y;
        }
        self.n += 1;
    }

    /// Ridge solution (the intercept is not penalised), zero beyond `k`;
    /// `None` with too few samples or a singular system.
    fn solve(&self) -> Option<[f64; P]> {
        let k = self.k;
        if self.n < 4 * P {
            return None;
        }
        let mut a = [[0.0; P]; P];
        let mut b = self.xty;
        let ridge = 1e-3 * self.n as f64;
        for i in 0..k {
            for j in 0..k {
                a[i][j] = if j >= i {
                    self.xtx[i][j]
                } else {
                    self.xtx[j][i]
                };
            }
            if i > 0 {
                a[i][i] += ridge;
            }
        }
        // Gaussian elimination with partial pivoting.
        for c in 0..k {
            let piv = (c..k).max_by(|&r, &s| a[r][c].abs().total_cmp(&a[s][c].abs()))?;
            if a[piv][c].abs() < 1e-12 {
                return None;
            }
            a.swap(c, piv);
            b.swap(c, piv);
            for r in c + 1..k {
                let f = a[r][c] / a[c][c];
                if f != 0.0 {
                    for q in c..k {
                        a[r][q] -= f * a[c][q];
                    }
                    b[r] -= f * b[c];
                }
            }
        }
        let mut x = [0.0; P];
        for c in (0..k).rev() {
            let s: f64 = (c + 1..k).map(|q| a[c][q] * x[q]).sum();
            x[c] = (b[c] - s) / a[c][c];
        }
        x.iter().all(|v| v.is_finite()).then_some(x)
    }
}

#[derive(Debug, Clone)]
enum Phase {
    /// Accumulating the baseline.
    Learning {
        grams: Box<[Gram; T]>,
        running: usize,
    },
    /// Baseline frozen; `None` for targets the device does not report.
    Monitoring { coefs: Box<[Option<[f64; P]>; T]> },
}

/// Live health of one device (for dashboards and diagnostics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// Whether the baseline is still being learned.
    pub learning: bool,
    /// Smoothed indicators in [`MODES`] order (`None`: not available).
    pub indicators: [Option<f64>; 3],
    /// Indicator / threshold.
    pub ratios: [Option<f64>; 3],
    /// Mode currently owning the device's alerting, if any.
    pub alerting_mode: Option<String>,
}

#[derive(Debug, Clone)]
struct DeviceState {
    criticality: Criticality,
    params: Box<PhysicsParams>,
    base_thresholds: [f64; 3],
    last_ts: Option<i64>,
    running_since: Option<i64>,
    /// Speed and current scales (first running sample), `None` until seen.
    scale: Option<(f64, f64)>,
    /// Filtered (speed, current): fast, slow.
    filt: Option<[f64; 4]>,
    /// (sample spacing, fast gain, slow gain) of the filters.
    gains: (f64, f64, f64),
    phase: Phase,
    bucket: i64,
    sums: [f64; T],
    counts: [u32; T],
    ewma: [Option<f64>; 3],
    anomalous: [bool; 3],
    owner: Option<usize>,
    active: [bool; 3],
    armed: [bool; 3],
    history: [VecDeque<(f64, f64)>; 3],
    last: Sample,
}

impl DeviceState {
    fn new(criticality: Criticality, params: PhysicsParams) -> Self {
        Self {
            criticality,
            base_thresholds: params.thresholds,
            params: Box::new(params),
            last_ts: None,
            running_since: None,
            scale: None,
            filt: None,
            gains: (f64::NAN, 0.0, 0.0),
            phase: Phase::Learning {
                // Vibration, pressure and flow follow the load at once (no
                // lagged covariates); the temperature difference lags it.
                grams: Box::new(TARGET_COVARIATES.map(Gram::new)),
                running: 0,
            },
            bucket: i64::MIN,
            sums: [0.0; T],
            counts: [0; T],
            ewma: [None; 3],
            anomalous: [false; 3],
            owner: None,
            active: [false; 3],
            armed: [false; 3],
            history: Default::default(),
            last: Sample::default(),
        }
    }

    /// Forget everything learned (after a repair or maintenance); alert
    /// bookkeeping is handled by the caller.
    fn restart(&mut self) {
        let c = self.criticality;
        let p = (*self.params).clone();
        let base = self.base_thresholds;
        *self = Self::new(c, p);
        self.base_thresholds = base;
    }
}

/// Online per-device monitor for a fleet. See the module docs for the method.
#[derive(Debug, Clone)]
pub struct FleetMonitor {
    cfg: MonitorConfig,
    devices: HashMap<String, DeviceState>,
    alerts: AlertManager,
    profiles: Vec<AssetProfile>,
    models: HashMap<String, String>,
    criticality: HashMap<String, Criticality>,
    routes: HashMap<String, Route>,
    learned: HashMap<String, (LearnedDevice, Naming)>,
    feedback: BTreeMap<(String, String), f64>,
    /// (device model, failure mode, pattern) → threshold multiplier.
    pattern_feedback: BTreeMap<(String, String, String), f64>,
    /// (device model, failure mode, pattern) → the failure mode technicians confirmed.
    confirmed_patterns: BTreeMap<(String, String, String), String>,
}

/// Live health of a device under either engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "snake_case")]
pub enum AnyHealth {
    /// Rotating-machine physics.
    RotatingMachine(DeviceHealth),
    /// Zero-configuration detector.
    Learned(LearnedHealth),
}

/// Values of the metrics the monitor uses, from one reading.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    vib: Option<f64>,
    bearing: Option<f64>,
    motor: Option<f64>,
    current: Option<f64>,
    pressure: Option<f64>,
    flow: Option<f64>,
    speed: Option<f64>,
}

impl Sample {
    /// Reads the slots (names in [`SLOTS`] order) from a reading.
    fn from_metrics(metrics: &[(&str, f64)], slots: &[String; 7]) -> Self {
        let mut s = Self::default();
        for &(name, v) in metrics {
            if !v.is_finite() {
                continue;
            }
            let Some(i) = slots.iter().position(|n| n == name) else {
                continue;
            };
            let slot = match i {
                0 => &mut s.vib,
                1 => &mut s.bearing,
                2 => &mut s.motor,
                3 => &mut s.current,
                4 => &mut s.pressure,
                5 => &mut s.flow,
                _ => &mut s.speed,
            };
            *slot = Some(v);
        }
        s
    }

    fn to_map(self, slots: &[String; 7]) -> BTreeMap<String, f64> {
        [
            self.vib,
            self.bearing,
            self.motor,
            self.current,
            self.pressure,
            self.flow,
            self.speed,
        ]
        .into_iter()
        .zip(slots)
        .filter_map(|(v, k)| v.map(|v| (k.clone(), v)))
        .collect()
    }
}

impl FleetMonitor {
    /// An empty monitor.
    pub fn new(cfg: MonitorConfig) -> Self {
        let alerts = AlertManager::new(cfg.alert);
        Self {
            cfg,
            devices: HashMap::new(),
            alerts,
            profiles: vec![builtin_rotating()],
            models: HashMap::new(),
            criticality: HashMap::new(),
            routes: HashMap::new(),
            learned: HashMap::new(),
            feedback: BTreeMap::new(),
            pattern_feedback: BTreeMap::new(),
            confirmed_patterns: BTreeMap::new(),
        }
    }

    /// Replaces the asset profiles (default: [`builtin_rotating`] only).
    /// Devices are routed again on their next reading; a device whose engine
    /// or profile changes starts learning again.
    pub fn set_profiles(&mut self, profiles: Vec<AssetProfile>) {
        self.profiles = profiles;
        self.routes.clear();
    }

    /// The asset profiles in use.
    pub fn profiles(&self) -> &[AssetProfile] {
        &self.profiles
    }

    /// Records a device's model (from the registry). Call before its first
    /// reading; a later change re-routes the device on its next reading.
    pub fn set_device_model(&mut self, device_id: &str, model: &str) {
        let old = self.models.insert(device_id.to_string(), model.to_string());
        if old.as_deref() != Some(model) {
            self.routes.remove(device_id);
        }
    }

    /// Repair feedback for a (device model, failure mode): `close_code`
    /// `"false_alarm"` raises that pair's thresholds by 1.5× (at most
    /// [`FEEDBACK_BOUNDS`].1 ×), `"confirmed"` lowers them by 5 % (at least
    /// [`FEEDBACK_BOUNDS`].0 ×); other codes change nothing. Devices whose
    /// model is unknown are addressed with `device_model` `""`. Applies to
    /// devices of that model at once. Returns the multiplier now in force.
    pub fn feedback(&mut self, device_model: &str, failure_mode: &str, close_code: &str) -> f64 {
        let key = (device_model.to_string(), failure_mode.to_string());
        let old = self.feedback.get(&key).copied().unwrap_or(1.0);
        let new = match close_code {
            "false_alarm" => (old * 1.5).min(FEEDBACK_BOUNDS.1),
            "confirmed" => (old * 0.95).max(FEEDBACK_BOUNDS.0),
            _ => old,
        };
        self.feedback.insert(key, new);
        let ids: Vec<String> = self
            .routes
            .keys()
            .filter(|id| self.model_key(id) == device_model)
            .cloned()
            .collect();
        for id in ids {
            self.apply_feedback(&id);
        }
        new
    }

    /// Repair feedback for one pattern of a learned alert (its leading
    /// metric and direction, [`crate::learned::alert_pattern`]): like
    /// [`FleetMonitor::feedback`], but only alerts of that pattern on
    /// devices of that model are affected, so a false alarm on a load-driven
    /// temperature does not blunt the detection of rising vibration.
    /// A `confirmed` close that names the failure found (`found_mode`,
    /// different from the alert's, typically a generic `anomaly`) names the
    /// next alerts of that mode and pattern after it. Returns the
    /// multiplier now in force for the pattern.
    pub fn feedback_pattern(
        &mut self,
        device_model: &str,
        failure_mode: &str,
        pattern: &str,
        close_code: &str,
        found_mode: Option<&str>,
    ) -> f64 {
        // An alert already named after a confirmed failure counts for the
        // mode it was raised under.
        let mode = self
            .confirmed_patterns
            .iter()
            .find(|((m, _, p), found)| m == device_model && p == pattern && *found == failure_mode)
            .map_or(failure_mode, |((_, mode, _), _)| mode.as_str())
            .to_string();
        let key = (device_model.to_string(), mode, pattern.to_string());
        if close_code == "confirmed"
            && let Some(found) = found_mode.filter(|f| !f.is_empty() && *f != key.1)
        {
            self.confirmed_patterns
                .insert(key.clone(), found.to_string());
        }
        let old = self.pattern_feedback.get(&key).copied().unwrap_or(1.0);
        let new = match close_code {
            "false_alarm" => (old * 1.5).min(FEEDBACK_BOUNDS.1),
            "confirmed" => (old * 0.95).max(FEEDBACK_BOUNDS.0),
            _ => old,
        };
        self.pattern_feedback.insert(key, new);
        let ids: Vec<String> = self
            .learned
            .keys()
            .filter(|id| self.model_key(id) == device_model)
            .cloned()
            .collect();
        for id in ids {
            self.apply_feedback(&id);
        }
        new
    }

    /// Threshold multiplier in force for a (device model, failure mode).
    pub fn feedback_multiplier(&self, device_model: &str, failure_mode: &str) -> f64 {
        self.feedback
            .get(&(device_model.to_string(), failure_mode.to_string()))
            .copied()
            .unwrap_or(1.0)
    }

    fn model_key(&self, device_id: &str) -> &str {
        self.models.get(device_id).map_or("", String::as_str)
    }

    fn apply_feedback(&mut self, device_id: &str) {
        let model = self.model_key(device_id).to_string();
        let mult = |mode: &str| {
            self.feedback
                .get(&(model.clone(), mode.to_string()))
                .copied()
                .unwrap_or(1.0)
        };
        if let Some(d) = self.devices.get_mut(device_id) {
            let names = d.params.names.clone();
            for (m, name) in names.iter().enumerate() {
                d.params.thresholds[m] = d.base_thresholds[m] * mult(name);
            }
        }
        let patterns: HashMap<(String, String), f64> = self
            .pattern_feedback
            .iter()
            .filter(|((m, _, _), _)| *m == model)
            .map(|((_, mode, pattern), v)| ((mode.clone(), pattern.clone()), *v))
            .collect();
        let confirmed: HashMap<(String, String), String> = self
            .confirmed_patterns
            .iter()
            .filter(|((m, _, _), _)| *m == model)
            .map(|((_, mode, pattern), found)| ((mode.clone(), pattern.clone()), found.clone()))
            .collect();
        if let Some((_, n)) = self.learned.get_mut(device_id) {
            n.multipliers = n.modes.iter().map(|m| mult(&m.name)).collect();
            n.patterns = patterns;
            n.confirmed = confirmed;
        }
    }

    /// The physics profile a reading of an unknown-model device matches.
    fn matching_physics(&self, metrics: &[(&str, f64)]) -> Option<usize> {
        let names: Vec<&str> = metrics.iter().map(|m| m.0).collect();
        self.profiles
            .iter()
            .position(|p| p.engine == Engine::RotatingMachine && p.matches_metrics(&names))
    }

    fn route_for(&self, device_id: &str, metrics: &[(&str, f64)]) -> Route {
        if let Some(model) = self.models.get(device_id)
            && let Some(i) = self.profiles.iter().position(|p| p.models.contains(model))
        {
            return match self.profiles[i].engine {
                Engine::RotatingMachine => Route::Physics(i),
                _ => Route::Learned(Some(i)),
            };
        }
        // No profile names the model (or the model is unknown): a device whose metrics are a
        // physics profile's is that kind of machine; anything else is learned from its data.
        match self.matching_physics(metrics) {
            Some(i) => Route::Physics(i),
            None => Route::Learned(None),
        }
    }

    fn criticality_of(&self, device_id: &str, profile: Option<usize>) -> Criticality {
        self.criticality
            .get(device_id)
            .copied()
            .or_else(|| profile.and_then(|p| self.profiles[p].criticality))
            .unwrap_or_default()
    }

    /// Sets up the device's state for `route`, keeping it if it already runs
    /// the same engine and profile.
    fn install(&mut self, device_id: &str, route: Route) {
        self.routes.insert(device_id.to_string(), route);
        match route {
            Route::Physics(i) => {
                self.learned.remove(device_id);
                let params = PhysicsParams::new(&self.cfg, &self.profiles[i]);
                let keep = self.devices.get(device_id).is_some_and(|d| {
                    d.base_thresholds == params.thresholds
                        && d.params.slots == params.slots
                        && d.params.names == params.names
                });
                if !keep {
                    let c = self.criticality_of(device_id, Some(i));
                    self.devices
                        .insert(device_id.to_string(), DeviceState::new(c, params));
                }
            }
            Route::Learned(p) => {
                self.devices.remove(device_id);
                let naming = Naming::new(&self.cfg.learned, p.map(|i| &self.profiles[i]));
                let keep = self
                    .learned
                    .get(device_id)
                    .is_some_and(|(_, n)| n.modes == naming.modes && n.roles == naming.roles);
                if !keep {
                    self.learned
                        .insert(device_id.to_string(), (LearnedDevice::new(), naming));
                }
            }
        }
        self.apply_feedback(device_id);
    }

    /// Health of a device under whichever engine runs it.
    pub fn device_health(&self, device_id: &str) -> Option<AnyHealth> {
        if let Some((d, n)) = self.learned.get(device_id) {
            return Some(AnyHealth::Learned(d.health(n)));
        }
        self.health(device_id).map(AnyHealth::RotatingMachine)
    }

    /// The configuration in use.
    pub fn config(&self) -> &MonitorConfig {
        &self.cfg
    }

    /// Sets a device's criticality (used for alert severity); unknown
    /// devices get [`Criticality::Medium`].
    pub fn set_criticality(&mut self, device_id: &str, c: Criticality) {
        self.criticality.insert(device_id.to_string(), c);
        if let Some(d) = self.devices.get_mut(device_id) {
            d.criticality = c;
        }
    }

    /// Active (open or acknowledged) alerts, ordered by (device, mode).
    pub fn active_alerts(&self) -> Vec<Alert> {
        self.alerts.active().cloned().collect()
    }

    /// Acknowledges an active alert.
    pub fn acknowledge(
        &mut self,
        device_id: &str,
        failure_mode: &str,
        now_ms: i64,
    ) -> Result<AlertEvent, crate::alert::AlertError> {
        self.alerts.acknowledge(device_id, failure_mode, now_ms)
    }

    /// Current health of a device, if it has been seen.
    pub fn health(&self, device_id: &str) -> Option<DeviceHealth> {
        let d = self.devices.get(device_id)?;
        let ratios = std::array::from_fn(|m| d.ewma[m].map(|e| e / d.params.thresholds[m]));
        Some(DeviceHealth {
            learning: matches!(d.phase, Phase::Learning { .. }),
            indicators: d.ewma,
            ratios,
            alerting_mode: d.owner.map(|m| d.params.names[m].clone()),
        })
    }

    /// Number of devices with state.
    pub fn device_count(&self) -> usize {
        self.devices.len() + self.learned.len()
    }

    /// One reading of one device (all its metrics); returns alert events
    /// (opened, escalated, resolved). Readings of a device must come in time
    /// order; an older or duplicate timestamp is ignored.
    pub fn observe(
        &mut self,
        device_id: &str,
        ts_ms: i64,
        metrics: &[(&str, f64)],
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let route = match self.routes.get(device_id) {
            Some(&r) => r,
            None => {
                let r = self.route_for(device_id, metrics);
                self.install(device_id, r);
                r
            }
        };
        if route == Route::Learned(None) {
            // A device of unknown model may show its physics-profile metrics
            // only after a first partial reading.
            let learning = self
                .learned
                .get(device_id)
                .is_some_and(|(d, _)| d.is_learning());
            if learning && let Some(i) = self.matching_physics(metrics) {
                self.install(device_id, Route::Physics(i));
                return self.observe_physics(device_id, ts_ms, metrics);
            }
        }
        if let Route::Learned(p) = route {
            let c = self.criticality_of(device_id, p);
            if let Some((d, naming)) = self.learned.get_mut(device_id) {
                d.observe(
                    &self.cfg.learned,
                    naming,
                    &mut self.alerts,
                    device_id,
                    c,
                    ts_ms,
                    metrics,
                    &mut events,
                );
            }
            return events;
        }
        self.observe_physics(device_id, ts_ms, metrics)
    }

    fn observe_physics(
        &mut self,
        device_id: &str,
        ts_ms: i64,
        metrics: &[(&str, f64)],
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let cfg = &self.cfg;
        let Some(d) = self.devices.get_mut(device_id) else {
            return events;
        };
        // Ordering and gaps.
        if let Some(last) = d.last_ts {
            if ts_ms <= last {
                return events;
            }
            if ts_ms - last > cfg.restart_gap_ms {
                for (m, mode) in d.params.names.iter().enumerate() {
                    if d.active[m]
                        && let Ok(ev) = self.alerts.resolve(device_id, mode, last)
                    {
                        events.push(ev);
                    }
                }
                d.restart();
            }
        }
        let dt = d.last_ts.map(|l| (ts_ms - l) as f64);
        d.last_ts = Some(ts_ms);

        let s = Sample::from_metrics(metrics, &d.params.slots);
        let (Some(speed), Some(current)) = (s.speed, s.current) else {
            return events;
        };
        let running = speed > 0.0 && current > 0.0;

        // Bucket boundary: close the previous bucket before using this sample.
        let bucket = ts_ms.div_euclid(cfg.bucket_ms);
        if bucket != d.bucket {
            if d.bucket != i64::MIN {
                close_bucket(cfg, &mut self.alerts, device_id, d, ts_ms, &mut events);
            }
            d.bucket = bucket;
            d.sums = [0.0; T];
            d.counts = [0; T];
        }

        // Covariates.
        if running && d.scale.is_none() {
            d.scale = Some((speed, current));
        }
        let Some((s0, c0)) = d.scale else {
            return events;
        };
        let sp = (speed / s0 - 1.0) * 100.0;
        let cu = (current / c0 - 1.0) * 10.0;
        let filt = match (d.filt, dt) {
            (Some(f), Some(dt)) => {
                // Filter gains depend on the sample spacing only; cache them.
                if d.gains.0 != dt {
                    d.gains = (
                        dt,
                        1.0 - (-dt / cfg.thermal_tau_fast_ms).exp(),
                        1.0 - (-dt / cfg.thermal_tau_slow_ms).exp(),
                    );
                }
                let (_, af, as_) = d.gains;
                [
                    f[0] + af * (sp - f[0]),
                    f[1] + af * (cu - f[1]),
                    f[2] + as_ * (sp - f[2]),
                    f[3] + as_ * (cu - f[3]),
                ]
            }
            _ => [sp, cu, sp, cu],
        };
        d.filt = Some(filt);
        if !running {
            d.running_since = None;
            return events;
        }
        let since = *d.running_since.get_or_insert(ts_ms);
        let warm = ts_ms - since >= cfg.warmup_after_start_ms;
        let xi = [1.0, sp, cu, sp * sp, cu * cu, 0.0, 0.0];
        let xl = [1.0, sp, cu, filt[0], filt[1], filt[2], filt[3]];
        let temp_diff = match (s.motor, s.bearing) {
            (Some(m), Some(b)) if warm => Some(m - b),
            _ => None,
        };
        let y = [s.vib, temp_diff, s.pressure, s.flow];

        match &mut d.phase {
            Phase::Learning { grams, running } => {
                for (t, (g, y)) in grams.iter_mut().zip(y).enumerate() {
                    if let Some(y) = y {
                        g.add(if t == 1 { &xl } else { &xi }, y);
                    }
                }
                *running += 1;
                if *running >= cfg.baseline_samples {
                    let coefs = Box::new(std::array::from_fn(|t| grams[t].solve()));
                    d.phase = Phase::Monitoring { coefs };
                }
            }
            Phase::Monitoring { coefs } => {
                for t in 0..T {
                    if let (Some(c), Some(y)) = (&coefs[t], y[t]) {
                        let x = if t == 1 { &xl } else { &xi };
                        let pred: f64 = c.iter().zip(x).map(|(a, b)| a * b).sum();
                        let r = if RELATIVE[t] {
                            if pred <= 0.0 || y <= 0.0 {
                                continue;
                            }
                            (y / pred).ln()
                        } else {
                            y - pred
                        };
                        d.sums[t] += r;
                        d.counts[t] += 1;
                    }
                }
                d.last = s;
            }
        }
        events
    }
}

/// Folds a finished bucket into the indicators and feeds the alert manager.
// Several per-mode arrays are indexed together.
#[allow(clippy::needless_range_loop)]
fn close_bucket(
    cfg: &MonitorConfig,
    alerts: &mut AlertManager,
    device_id: &str,
    d: &mut DeviceState,
    ts_ms: i64,
    events: &mut Vec<AlertEvent>,
) {
    let mean = |t: usize| {
        (d.counts[t] >= cfg.min_bucket_samples).then(|| d.sums[t] / f64::from(d.counts[t]))
    };
    let leak = match (mean(2), mean(3)) {
        (Some(p), Some(f)) => Some(-(p + f) / 2.0),
        (Some(p), None) => Some(-p),
        (None, Some(f)) => Some(-f),
        (None, None) => None,
    };
    let mut values = [mean(0), leak, mean(1)];
    for (v, on) in values.iter_mut().zip(d.params.enabled) {
        if !on {
            *v = None;
        }
    }
    if values.iter().all(Option::is_none) {
        return;
    }
    let hours = d.bucket as f64 * cfg.bucket_ms as f64 / HOUR_MS;
    for m in 0..3 {
        let Some(v) = values[m] else { continue };
        let e = match d.ewma[m] {
            Some(e) => e + cfg.ewma_lambda * (v - e),
            None => cfg.ewma_lambda * v,
        };
        d.ewma[m] = Some(e);
        let h = &mut d.history[m];
        if h.len() >= cfg.rul_window_buckets.max(3) {
            h.pop_front();
        }
        h.push_back((hours, e));
        let thr = d.params.thresholds[m];
        if d.anomalous[m] {
            if e < cfg.clear_fraction * thr {
                d.anomalous[m] = false;
            }
        } else if e > thr {
            d.anomalous[m] = true;
        }
    }
    // Ownership: one failure mode alerts per device at a time.
    if let Some(o) = d.owner
        && !d.anomalous[o]
        && !d.active[o]
    {
        d.owner = None;
    }
    if d.owner.is_none() {
        d.owner = (0..3).filter(|&m| d.anomalous[m]).max_by(|&a, &b| {
            let ra = d.ewma[a].unwrap_or(0.0) / d.params.thresholds[a];
            let rb = d.ewma[b].unwrap_or(0.0) / d.params.thresholds[b];
            ra.total_cmp(&rb)
        });
    }
    for m in 0..3 {
        let anomalous = d.owner == Some(m) && d.anomalous[m];
        if !anomalous && !d.armed[m] {
            continue;
        }
        let ratio = d.ewma[m].unwrap_or(0.0) / d.params.thresholds[m];
        let evidence = if anomalous {
            let mut metrics = d.last.to_map(&d.params.slots);
            for (k, name) in d.params.names.iter().enumerate() {
                if let Some(e) = d.ewma[k] {
                    metrics.insert(format!("indicator_{name}"), e);
                }
            }
            let rul = rul_hours(
                &d.history[m],
                d.params.thresholds[m],
                d.params.failure_levels[m],
            );
            Evidence {
                detector: format!("fleet_monitor/{}", d.params.names[m]),
                metrics,
                score: ratio.max(0.0) / (1.0 + ratio.max(0.0)),
                ratio,
                rul_hours: rul,
            }
        } else {
            Evidence::default()
        };
        let obs = Observation {
            device_id: device_id.to_string(),
            failure_mode: d.params.names[m].clone(),
            ts_ms,
            anomalous,
            evidence,
            criticality: d.criticality,
        };
        for ev in alerts.observe(obs) {
            match ev.kind {
                AlertEventKind::Opened => d.active[m] = true,
                AlertEventKind::Resolved => d.active[m] = false,
                _ => {}
            }
            events.push(ev);
        }
        // The manager holds state for this key only while a run is pending
        // or an alert is active; otherwise normal observations are no-ops.
        d.armed[m] = anomalous || d.active[m];
    }
}

/// RUL from the recent smoothed indicator: degradation accelerates, so the
/// trend is exponential in `indicator + offset` (offset = the alarm level,
/// which keeps the values positive near the alarm); linear if that fails.
fn rul_hours(
    history: &VecDeque<(f64, f64)>,
    offset: f64,
    failure_level: f64,
) -> Option<crate::rul::RulEstimate> {
    let t: Vec<f64> = history.iter().map(|p| p.0).collect();
    let h: Vec<f64> = history
        .iter()
        .map(|p| (p.1 + offset).max(offset / 4.0))
        .collect();
    extrapolate_trend(&t, &h, failure_level + offset, TrendKind::Exponential)
        .ok()
        .flatten()
        .or_else(|| {
            let raw: Vec<f64> = history.iter().map(|p| p.1).collect();
            extrapolate_trend(&t, &raw, failure_level, TrendKind::Linear)
                .ok()
                .flatten()
        })
}

// ---------------------------------------------------------------------------
// Evaluation against ground truth.

/// How a labelled degradation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It ran to failure at `end_ms`.
    Failed,
    /// Preventive maintenance cut it short at `end_ms`.
    Interrupted,
    /// Still under way when the run ended at `end_ms` (right-censored).
    Ongoing,
}

/// A ground-truth degradation window of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DegradationWindow {
    /// Device id.
    pub device_id: String,
    /// Failure mode.
    pub failure_mode: String,
    /// Onset (may precede the run).
    pub onset_ms: i64,
    /// Failure, maintenance start, or run end (see `outcome`).
    pub end_ms: i64,
    /// How it ended.
    pub outcome: Outcome,
}

/// An alert as seen by the evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSpan {
    /// Device id.
    pub device_id: String,
    /// Failure mode of the alert.
    pub failure_mode: String,
    /// When it opened.
    pub opened_at_ms: i64,
    /// When it resolved (`None`: still active at the end of the run).
    pub resolved_at_ms: Option<i64>,
}

impl AlertSpan {
    /// Collects alert spans from a stream of events (Opened starts a span,
    /// Resolved ends it; matched by alert id).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a AlertEvent>) -> Vec<AlertSpan> {
        let mut spans: Vec<AlertSpan> = Vec::new();
        let mut by_id: HashMap<u64, usize> = HashMap::new();
        for ev in events {
            match ev.kind {
                AlertEventKind::Opened => {
                    by_id.insert(ev.alert.id, spans.len());
                    spans.push(AlertSpan {
                        device_id: ev.alert.device_id.clone(),
                        failure_mode: ev.alert.failure_mode.clone(),
                        opened_at_ms: ev.alert.opened_at_ms,
                        resolved_at_ms: None,
                    });
                }
                AlertEventKind::Resolved => {
                    if let Some(&i) = by_id.get(&ev.alert.id) {
                        spans[i].resolved_at_ms = ev.alert.resolved_at_ms;
                    }
                }
                _ => {}
            }
        }
        spans
    }
}

/// Headline numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FleetOverall {
    /// Caught failures / failures (0 when there are no failures).
    pub recall: f64,
    /// Median lead (failure − first catching alert) over caught failures, days.
    pub median_lead_days: Option<f64>,
    /// False alerts per 100 device-days.
    pub false_alerts_per_100_device_days: f64,
    /// Median of failure − onset over all failures (onset taken at the run's
    /// start when it came before): the median lead of a detector that alerts
    /// the moment a degradation begins, i.e. the ceiling of
    /// `median_lead_days`.
    #[serde(default)]
    pub median_lead_at_onset_days: Option<f64>,
}

/// Counts behind the headline numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct FleetCounts {
    /// Failures (labelled, ran to failure).
    pub failures: usize,
    /// Failures caught.
    pub caught: usize,
    /// Caught failures whose catching alert named the right mode.
    pub mode_correct: usize,
    /// Failures whose onset precedes the run (device started degraded).
    pub failures_degraded_at_start: usize,
    /// Of those, caught.
    pub caught_degraded_at_start: usize,
    /// Alerts opened.
    pub alerts: usize,
    /// Alerts overlapping a degradation that failed.
    pub alerts_on_failures: usize,
    /// Alerts overlapping only maintenance-interrupted degradations.
    pub alerts_on_interrupted: usize,
    /// Alerts overlapping only degradations still under way at the end.
    pub alerts_on_ongoing: usize,
    /// Alerts overlapping no degradation.
    pub false_alerts: usize,
    /// Failures with more than one alert opened in [onset − 1 day, failure].
    pub failures_with_repeat_alerts: usize,
}

/// Outcome for one failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureResult {
    /// Device id.
    pub device_id: String,
    /// True mode.
    pub failure_mode: String,
    /// Onset, epoch ms.
    pub onset_ms: i64,
    /// Failure, epoch ms.
    pub failure_ms: i64,
    /// Opening time of the first catching alert.
    pub first_alert_ms: Option<i64>,
    /// Failure − first alert, days.
    pub lead_days: Option<f64>,
    /// Mode of the first catching alert.
    pub detected_mode: Option<String>,
    /// Alerts opened in the catch window.
    pub alerts: usize,
}

/// Evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// Headline numbers.
    pub overall: FleetOverall,
    /// Counts.
    pub counts: FleetCounts,
    /// Device-days the false-alert rate is normalised by.
    pub device_days: f64,
    /// Per-failure detail, in input order.
    pub failures: Vec<FailureResult>,
    /// The false alerts.
    pub false_alerts: Vec<AlertSpan>,
    /// The definitions used.
    pub definitions: Vec<String>,
}

/// How early an alert may open before onset and still catch the failure.
pub const CATCH_GRACE_MS: i64 = 86_400_000;

/// Matches alerts to ground truth.
///
/// - A failure is caught if an alert for that device opened in
///   (onset − 1 day, failure). Lead = failure − opening of the first such
///   alert.
/// - An alert is false if its span [opened, resolved or `run_end_ms`]
///   overlaps no degradation window [onset, end] of that device (failed,
///   maintenance-interrupted, or still under way at the end of the run).
/// - Rate = false alerts × 100 / `device_days`.
pub fn evaluate_alerts(
    alerts: &[AlertSpan],
    degradations: &[DegradationWindow],
    run_start_ms: i64,
    run_end_ms: i64,
    device_days: f64,
) -> FleetReport {
    let mut counts = FleetCounts {
        alerts: alerts.len(),
        ..FleetCounts::default()
    };
    let mut failures = Vec::new();
    let mut leads = Vec::new();
    let mut leads_at_onset = Vec::new();
    for g in degradations.iter().filter(|g| g.outcome == Outcome::Failed) {
        counts.failures += 1;
        leads_at_onset.push((g.end_ms - g.onset_ms.max(run_start_ms)) as f64 / DAY_MS);
        let at_start = g.onset_ms < run_start_ms;
        counts.failures_degraded_at_start += usize::from(at_start);
        let mut catching: Vec<&AlertSpan> = alerts
            .iter()
            .filter(|a| {
                a.device_id == g.device_id
                    && a.opened_at_ms > g.onset_ms - CATCH_GRACE_MS
                    && a.opened_at_ms < g.end_ms
            })
            .collect();
        catching.sort_by_key(|a| a.opened_at_ms);
        let first = catching.first();
        let lead = first.map(|a| (g.end_ms - a.opened_at_ms) as f64 / DAY_MS);
        if let Some(a) = first {
            counts.caught += 1;
            counts.caught_degraded_at_start += usize::from(at_start);
            counts.mode_correct += usize::from(a.failure_mode == g.failure_mode);
        }
        if catching.len() > 1 {
            counts.failures_with_repeat_alerts += 1;
        }
        leads.extend(lead);
        failures.push(FailureResult {
            device_id: g.device_id.clone(),
            failure_mode: g.failure_mode.clone(),
            onset_ms: g.onset_ms,
            failure_ms: g.end_ms,
            first_alert_ms: first.map(|a| a.opened_at_ms),
            lead_days: lead,
            detected_mode: first.map(|a| a.failure_mode.clone()),
            alerts: catching.len(),
        });
    }
    let mut false_alerts = Vec::new();
    for a in alerts {
        let end = a.resolved_at_ms.unwrap_or(run_end_ms).max(a.opened_at_ms);
        let overlapping = |o: Outcome| {
            degradations.iter().any(|g| {
                g.outcome == o
                    && g.device_id == a.device_id
                    && a.opened_at_ms <= g.end_ms
                    && end >= g.onset_ms
            })
        };
        if overlapping(Outcome::Failed) {
            counts.alerts_on_failures += 1;
        } else if overlapping(Outcome::Interrupted) {
            counts.alerts_on_interrupted += 1;
        } else if overlapping(Outcome::Ongoing) {
            counts.alerts_on_ongoing += 1;
        } else {
            counts.false_alerts += 1;
            false_alerts.push(a.clone());
        }
    }
    let recall = if counts.failures == 0 {
        0.0
    } else {
        counts.caught as f64 / counts.failures as f64
    };
    let rate = if device_days > 0.0 {
        counts.false_alerts as f64 * 100.0 / device_days
    } else {
        0.0
    };
    FleetReport {
        overall: FleetOverall {
            recall,
            median_lead_days: median(&mut leads),
            false_alerts_per_100_device_days: rate,
            median_lead_at_onset_days: median(&mut leads_at_onset),
        },
        counts,
        device_days,
        failures,
        false_alerts,
        definitions: vec![
            "caught: an alert for the device opened after onset - 1 day and before failure".into(),
            "lead: failure - opening time of the first catching alert (days)".into(),
            "false alert: its span [opened, resolved or run end] overlaps no degradation \
             [onset, end] of that device (failed, interrupted by maintenance, or still under \
             way at the end of the run)"
                .into(),
            "device-days: devices x simulated days".into(),
        ],
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}
