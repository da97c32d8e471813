//! Zero-configuration detector: for a device whose model has no profile,
//! learn what normal looks like from the device's own early history, then
//! alert on departures — whatever metrics it sends.
//!
//! # Method (per device, bounded memory)
//! 1. **Baseline buffer.** For the first `baseline_ms` (default 3 days; up
//!    to `max_baseline_ms` if the machine hardly ran) every sample updates
//!    first-order-lag filtered copies of each metric (τ 30 min and 2 h: the
//!    thermal lag of temperatures behind load) and a thinned copy goes into
//!    a buffer of at most [`BUFFER_ROWS`] rows (when full, every other row is
//!    dropped and the keep-stride doubles, so it covers the whole period
//!    evenly). At most [`MAX_METRICS`] metrics per device (first seen).
//! 2. **Operating context, learned once from the buffer.**
//!    - *Idle*: a metric that is near 0 (≤ 5 % of its 98th percentile) part
//!      of the time while at least one other metric moves with it
//!      (different mean by > 2 running standard deviations or halves) is
//!      the run indicator; idle samples only advance the filters, and
//!      samples within `warmup_after_start_ms` of a start are not judged.
//!    - *Stops the baseline never saw*: without a run indicator (a
//!      continuous machine that did not stop during its baseline), a metric
//!      that stayed clearly away from zero (2nd percentile > 20 % of the
//!      98th) and later falls to its near-zero level marks a stop; after it
//!      the device is judged again once every such metric's slow lag filter
//!      is back above its baseline 2nd percentile and the covariates' lagged
//!      copies are back in range (at most [`RECOVERY_TAUS`] slow time
//!      constants). On the simulated fleet without profiles this removed
//!      85 % of the false alerts (continuous machines' first unplanned stop
//!      and its thermal transient looked like every metric failing).
//!    - *Covariates* (load, setpoints): a metric the profile declares; else
//!      one whose name says load/speed/current/power (with
//!      `joint_covariates`, two such metrics are both covariates); else the
//!      run metric; else the metric whose
//!      variation explains most of the others' (largest sum of squared
//!      correlations). An operating point found only from the data is also
//!      judged, against the metric that tracks it best. The remaining
//!      metrics are *responses*. Operating points outside the baseline's
//!      range are not judged (no extrapolation).
//!    - *Regimes*: k-means (k ≤ 4, chosen by the within-cluster
//!      sum-of-squares elbow) on the standardised covariates; regimes enter
//!      the regression as dummies.
//!    - *Regression*: per response, ridge least squares on intercept, each
//!      covariate, its square, its two lagged copies, regime dummies and —
//!      only if they reduce the fit error by 10 % — hour-of-day sin/cos
//!      (daily cycles the covariates do not absorb).
//! 3. **Calibration.** The next `calibration_buckets` running hour buckets
//!    give each response's bucket-mean residual bias and standard deviation
//!    (the baseline residual scale σ).
//! 4. **Indicators.** Per running bucket, z = (mean residual − baseline) /
//!    σ, smoothed by an EWMA (λ per bucket, default 0.08): S, the smoothed deviation in
//!    baseline sigmas (thresholded directly, not divided by the EWMA's iid
//!    spread: residual errors are autocorrelated, and a sustained several-σ
//!    shift is what matters). The baseline follows slow drift (season) with
//!    a slow EWMA, frozen while |S| is above `drift_gate` × the threshold,
//!    so a degradation is not learned away. Multivariate: T² = Σ S² over a
//!    mode's metrics.
//! 5. **Decision.** A metric belongs to the profile failure mode naming it
//!    (direction-consistent), else to the generic [`GENERIC_MODE`]. A mode is
//!    anomalous when max |S| over its metrics exceeds its threshold (default 4; × the
//!    feedback multiplier), or √T² exceeds 1.25 × that; it clears below
//!    `clear_fraction`. One mode owns the device's alerting at a time (the
//!    first anomalous), through the monitor's [`AlertManager`] time
//!    hysteresis (`MonitorConfig::alert`).
//! 6. **Evidence and RUL.** Per deviating metric: S, the deviation in
//!    baseline sigmas and in physical units, since when. RUL: the owner's
//!    indicator ratio trend ([`extrapolate_trend`], exponential, linear
//!    fallback) to `failure_ratio` × threshold, reported only while it grows.
//!
//! Restarts: silence longer than `restart_gap_ms` resets everything (new
//! baseline), as in [`crate::monitor`]. Devices already degrading when first
//! seen learn that as normal (documented limitation), and degradation that
//! shows only in a covariate is invisible (a profile can declare roles).
//!
//! The k-means, ridge solver and statistics are written here: the crate
//! takes no numeric dependency, the problems are tiny (≤ 400 points, ≤ 2
//! dimensions, ≤ 16 coefficients) and must be deterministic (farthest-point
//! initialisation, no random restarts).

use crate::alert::{AlertEvent, AlertEventKind, AlertManager, Criticality, Evidence, Observation};
use crate::profile::{AssetProfile, Direction, Indicator, MetricRole};
use crate::rul::{RulEstimate, TrendKind, extrapolate_trend};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Failure mode of alerts no profile names.
pub const GENERIC_MODE: &str = "anomaly";
/// Metrics per device (more are ignored).
pub const MAX_METRICS: usize = 12;
/// Rows of the baseline buffer.
pub const BUFFER_ROWS: usize = 400;
const MAX_COV: usize = 2;
/// Longest warm-up after a stop the baseline never showed, in slow lag-filter time
/// constants (6 × 2 h by default): a filter starting from zero is within 1 % of its level
/// after ln 100 ≈ 4.6 time constants. Past it the device is judged again even if a stop
/// metric stays low, which a degradation may cause.
const RECOVERY_TAUS: f64 = 6.0;
/// Margin (standard deviations) beyond the baseline range of a covariate
/// within which samples are still judged.
const RANGE_MARGIN: f64 = 0.25;
/// Name fragments of metrics that are usually operating points.
const COVARIATE_HINTS: [&str; 11] = [
    "load",
    "speed",
    "rpm",
    "setpoint",
    "pct",
    "demand",
    "throughput",
    "amps",
    "current",
    "power",
    "kw",
];
const MAX_K: usize = 4;
/// Regression coefficients at most: 1 + 4 per covariate + (k − 1) + 2.
const P: usize = 1 + 4 * MAX_COV + (MAX_K - 1) + 2;
const HOUR_MS: f64 = 3_600_000.0;
const DAY_MS: i64 = 86_400_000;

/// Settings of the learned detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LearnedConfig {
    /// Silence longer than this restarts the baseline (default 2 h).
    pub restart_gap_ms: i64,
    /// Baseline period (default 3 days).
    pub baseline_ms: i64,
    /// Baseline is extended (up to `max_baseline_ms`) until the buffer holds
    /// this many running rows (default 100).
    pub min_running_rows: usize,
    /// Longest baseline (default 10 days).
    pub max_baseline_ms: i64,
    /// Running buckets that calibrate the residual scale (default 48).
    pub calibration_buckets: usize,
    /// Samples this soon after a start are not judged (default 1 h).
    pub warmup_after_start_ms: i64,
    /// Lag filter time constants (default 30 min, 2 h).
    pub tau_ms: [f64; 2],
    /// Bucket length (default 1 h).
    pub bucket_ms: i64,
    /// A response needs this many samples in a bucket (default 3).
    pub min_bucket_samples: u32,
    /// EWMA factor per bucket (default 0.08).
    pub ewma_lambda: f64,
    /// Baseline drift-following factor per bucket (default 1/48).
    pub drift_lambda: f64,
    /// The baseline follows drift only while |deviation| is below this
    /// fraction of the threshold (default 0.5).
    pub drift_gate: f64,
    /// Two name-hinted metrics (speed and current) are both covariates
    /// (default false: on the simulated fleet run without profiles, speed
    /// and current together raised false alerts above 1 per 100
    /// device-days); otherwise only the first is.
    pub joint_covariates: bool,
    /// Alarm level of the smoothed deviation (baseline sigmas; default 4.0).
    pub threshold: f64,
    /// A mode clears below this fraction of its threshold (default 0.5).
    pub clear_fraction: f64,
    /// Indicator / threshold at functional failure, for RUL (default 4).
    pub failure_ratio: f64,
    /// Buckets used for the RUL trend (default 72).
    pub rul_window_buckets: usize,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        Self {
            restart_gap_ms: 2 * 3_600_000,
            baseline_ms: 3 * DAY_MS,
            min_running_rows: 100,
            max_baseline_ms: 10 * DAY_MS,
            calibration_buckets: 48,
            warmup_after_start_ms: 3_600_000,
            tau_ms: [30.0 * 60_000.0, 120.0 * 60_000.0],
            bucket_ms: 3_600_000,
            min_bucket_samples: 3,
            ewma_lambda: 0.08,
            drift_lambda: 1.0 / 48.0,
            drift_gate: 0.5,
            joint_covariates: false,
            threshold: 4.0,
            clear_fraction: 0.5,
            failure_ratio: 4.0,
            rul_window_buckets: 72,
        }
    }
}

/// What the device learned (for diagnostics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedSummary {
    /// Metric that tells running from idle.
    pub run_metric: Option<String>,
    /// Covariates (the operating point).
    pub covariates: Vec<String>,
    /// Metric the operating point itself is judged against, if it is judged.
    pub reference: Option<String>,
    /// Responses (judged metrics).
    pub responses: Vec<String>,
    /// Operating regimes found by k-means.
    pub regimes: usize,
    /// Responses whose model uses hour-of-day terms.
    pub hour_of_day: Vec<String>,
}

/// Live state of a learned device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedHealth {
    /// `learning`, `calibrating` or `monitoring`.
    pub phase: String,
    /// Learned structure, once known.
    pub summary: Option<LearnedSummary>,
    /// Smoothed standardised indicator S per response.
    pub indicators: BTreeMap<String, f64>,
    /// Mode owning the alerting, if any.
    pub alerting_mode: Option<String>,
}

/// A failure mode of the learned engine, resolved for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeDef {
    /// Alert name.
    pub name: String,
    /// Metrics (empty = every response not claimed by another mode).
    pub metrics: Vec<String>,
    /// Direction that counts.
    pub direction: Direction,
    /// Threshold (|S|), before feedback.
    pub threshold: f64,
}

/// Naming and thresholds for one device: profile modes then the generic
/// one, with their feedback multipliers.
#[derive(Debug, Clone, PartialEq)]
pub struct Naming {
    /// Modes, the generic catch-all last.
    pub modes: Vec<ModeDef>,
    /// Threshold multipliers, same order.
    pub multipliers: Vec<f64>,
    /// Threshold multipliers of single patterns (mode name, [`pattern_key`]
    /// of the leading metric), from repair feedback on alerts of that
    /// pattern; applied on top of the mode's.
    pub patterns: HashMap<(String, String), f64>,
    /// Failure modes technicians confirmed for alerts of a pattern (mode
    /// name, pattern) → confirmed mode: a later alert of that mode and
    /// pattern is named after it.
    pub confirmed: HashMap<(String, String), String>,
    /// Profile roles (`None`: learn them).
    pub roles: Option<Vec<(String, MetricRole)>>,
}

impl Naming {
    /// From an optional profile (`learned` engine) and the config.
    pub fn new(cfg: &LearnedConfig, profile: Option<&AssetProfile>) -> Self {
        let mut modes = Vec::new();
        let mut roles = None;
        if let Some(p) = profile {
            for f in &p.failure_modes {
                if let Indicator::Residual { metrics, direction } = &f.indicator {
                    modes.push(ModeDef {
                        name: f.name.clone(),
                        metrics: metrics.clone(),
                        direction: *direction,
                        threshold: f.threshold.unwrap_or(cfg.threshold),
                    });
                }
            }
            if !p.metrics.is_empty() {
                roles = Some(p.metrics.iter().map(|m| (m.name.clone(), m.role)).collect());
            }
        }
        modes.push(ModeDef {
            name: GENERIC_MODE.into(),
            metrics: Vec::new(),
            direction: Direction::Both,
            threshold: cfg.threshold,
        });
        let multipliers = vec![1.0; modes.len()];
        Self {
            modes,
            multipliers,
            patterns: HashMap::new(),
            confirmed: HashMap::new(),
            roles,
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    ts: i64,
    /// Raw, fast-filtered, slow-filtered values (NaN = missing).
    v: [[f32; MAX_METRICS]; 3],
    /// Minutes since each metric was last near zero (run/idle).
    since_low: [f32; MAX_METRICS],
}

/// The frozen model of one device.
#[derive(Debug, Clone)]
struct Fitted {
    run: Option<(usize, f64)>,
    /// Without a run indicator (the machine never stopped during the baseline): metrics
    /// that never came near zero then, each with its near-zero level. One of them at that
    /// level later is a stop, which the baseline cannot judge (a continuous machine's
    /// first unplanned stop would otherwise look like every metric failing at once). With
    /// it, the lowest level (2nd percentile) of the metric's slow lag filter in the
    /// baseline: after a stop, the device is judged again only once that filter is back
    /// above it, since the baseline never showed the thermal transient of a restart.
    stops: Vec<(usize, f64, f64)>,
    cov: Vec<usize>,
    cov_mean: Vec<f64>,
    cov_std: Vec<f64>,
    /// Standardised range of each covariate over the baseline: operating
    /// points outside it (by more than [`RANGE_MARGIN`]) are not judged,
    /// since the regression would extrapolate.
    cov_range: Vec<(f64, f64)>,
    centroids: Vec<Vec<f64>>,
    responses: Vec<usize>,
    /// Both covariate slots are operating points (two name-hinted metrics,
    /// e.g. speed and current) rather than operating point and reference.
    joint: bool,
    coefs: Vec<[f64; P]>,
    hour: Vec<bool>,
    /// Lower bound of each response's residual scale (2 % of its running
    /// standard deviation): a nearly perfect fit must not make every
    /// ripple an alarm.
    floor: Vec<f64>,
}

impl Fitted {
    fn features(&self, raw: &[f64], fast: &[f64], slow: &[f64], hour: f64) -> Option<[f64; P]> {
        let mut x = [0.0; P];
        x[0] = 1.0;
        let mut z = [0.0; MAX_COV];
        for (j, &c) in self.cov.iter().enumerate() {
            let s = |v: f64| (v - self.cov_mean[j]) / self.cov_std[j];
            let (r, f, l) = (raw[c], fast[c], slow[c]);
            if !(r.is_finite() && f.is_finite() && l.is_finite()) {
                return None;
            }
            z[j] = s(r);
            let (lo, hi) = self
                .cov_range
                .get(j)
                .copied()
                .unwrap_or((f64::MIN, f64::MAX));
            if z[j] < lo - RANGE_MARGIN || z[j] > hi + RANGE_MARGIN {
                return None;
            }
            x[1 + 4 * j] = z[j];
            x[2 + 4 * j] = z[j] * z[j];
            x[3 + 4 * j] = s(f);
            x[4 + 4 * j] = s(l);
        }
        let k = nearest(&self.centroids, &z[..self.cov.len().min(1)]);
        if k > 0 {
            x[1 + 4 * MAX_COV + k - 1] = 1.0;
        }
        let a = std::f64::consts::TAU * hour / 24.0;
        x[P - 2] = a.sin();
        x[P - 1] = a.cos();
        Some(x)
    }

    /// Whether the lagged copies of every covariate are inside the baseline's range. After
    /// a stop the baseline never showed they are far below it until the filters catch up,
    /// and the regression would extrapolate from them.
    fn lags_in_range(&self, fast: &[f64], slow: &[f64]) -> bool {
        self.cov.iter().enumerate().all(|(j, &c)| {
            let (lo, hi) = self
                .cov_range
                .get(j)
                .copied()
                .unwrap_or((f64::MIN, f64::MAX));
            [fast[c], slow[c]].iter().all(|v| {
                let z = (v - self.cov_mean[j]) / self.cov_std[j];
                z.is_finite() && z >= lo - RANGE_MARGIN && z <= hi + RANGE_MARGIN
            })
        })
    }

    /// Features response `r` may use: the operating point (slot 0) and the
    /// regimes for every response except the operating point itself, which
    /// is judged against the metric tracking it (slot 1) only.
    fn mask(&self, r: usize, x: &mut [f64; P]) {
        if self.joint {
            return;
        }
        let own = self.cov.first() == Some(&self.responses[r]);
        if own {
            for v in &mut x[1..5] {
                *v = 0.0;
            }
            for v in &mut x[1 + 4 * MAX_COV..P - 2] {
                *v = 0.0;
            }
        } else {
            for v in &mut x[5..1 + 4 * MAX_COV] {
                *v = 0.0;
            }
        }
    }

    fn predict(&self, r: usize, x: &[f64; P]) -> f64 {
        let mut x = *x;
        self.mask(r, &mut x);
        let c = &self.coefs[r];
        let mut s = 0.0;
        for i in 0..P {
            if i >= P - 2 && !self.hour[r] {
                break;
            }
            s += c[i] * x[i];
        }
        s
    }
}

#[derive(Debug, Clone)]
enum Phase {
    Learning {
        start: i64,
        rows: Vec<Row>,
        stride: u32,
        seen: u32,
        /// Last analysis attempt.
        tried: i64,
    },
    Calibrating {
        fit: Box<Fitted>,
        /// Welford (n, mean, m2) of bucket-mean residuals per response.
        acc: Vec<(f64, f64, f64)>,
        buckets: usize,
    },
    Monitoring {
        fit: Box<Fitted>,
        sigma: Vec<f64>,
    },
}

/// State of one device under the learned detector.
#[derive(Debug, Clone)]
pub struct LearnedDevice {
    names: Vec<String>,
    last_ts: Option<i64>,
    filt: [[f64; MAX_METRICS]; 2],
    last_low: [Option<i64>; MAX_METRICS],
    max_abs: [f64; MAX_METRICS],
    last_raw: [f64; MAX_METRICS],
    running_since: Option<i64>,
    /// A stop the baseline never showed was seen and the restart is still warming up
    /// (see `Fitted::stops`).
    after_stop: bool,
    phase: Phase,
    bucket: i64,
    sums: Vec<f64>,
    counts: Vec<u32>,
    /// Per response: drift-following baseline, EWMA of z, S, deviating since.
    base: Vec<f64>,
    ewma: Vec<f64>,
    stat: Vec<Option<f64>>,
    since: Vec<Option<i64>>,
    anomalous: Vec<bool>,
    owner: Option<usize>,
    active: Option<usize>,
    /// Name of the alert pending or open (a confirmed failure's name when
    /// its pattern matched one, else the mode's).
    alert_name: Option<String>,
    armed: Vec<bool>,
    history: VecDeque<(f64, f64)>,
}

impl Default for LearnedDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl LearnedDevice {
    /// A device seen for the first time.
    pub fn new() -> Self {
        Self {
            names: Vec::new(),
            last_ts: None,
            filt: [[f64::NAN; MAX_METRICS]; 2],
            last_low: [None; MAX_METRICS],
            max_abs: [0.0; MAX_METRICS],
            last_raw: [f64::NAN; MAX_METRICS],
            running_since: None,
            after_stop: false,
            phase: Phase::Learning {
                start: i64::MIN,
                rows: Vec::new(),
                stride: 1,
                seen: 0,
                tried: i64::MIN,
            },
            bucket: i64::MIN,
            sums: Vec::new(),
            counts: Vec::new(),
            base: Vec::new(),
            ewma: Vec::new(),
            stat: Vec::new(),
            since: Vec::new(),
            anomalous: Vec::new(),
            owner: None,
            active: None,
            alert_name: None,
            armed: Vec::new(),
            history: VecDeque::new(),
        }
    }

    /// Whether the baseline is still being learned or calibrated.
    pub fn is_learning(&self) -> bool {
        !matches!(self.phase, Phase::Monitoring { .. })
    }

    /// Mode with an active alert (index into the naming's modes).
    pub fn active_mode(&self) -> Option<usize> {
        self.active
    }

    /// Live health.
    pub fn health(&self, naming: &Naming) -> LearnedHealth {
        let (phase, fit) = match &self.phase {
            Phase::Learning { .. } => ("learning", None),
            Phase::Calibrating { fit, .. } => ("calibrating", Some(fit)),
            Phase::Monitoring { fit, .. } => ("monitoring", Some(fit)),
        };
        let summary = fit.map(|f| self.summary(f));
        let mut indicators = BTreeMap::new();
        if let Some(f) = fit {
            for (r, &m) in f.responses.iter().enumerate() {
                if let Some(s) = self.stat.get(r).copied().flatten() {
                    indicators.insert(self.names[m].clone(), s);
                }
            }
        }
        LearnedHealth {
            phase: phase.into(),
            summary,
            indicators,
            alerting_mode: self.owner.map(|o| naming.modes[o].name.clone()),
        }
    }

    fn summary(&self, f: &Fitted) -> LearnedSummary {
        LearnedSummary {
            run_metric: f.run.map(|(m, _)| self.names[m].clone()),
            covariates: f
                .cov
                .iter()
                .take(if f.joint { 2 } else { 1 })
                .map(|&c| self.names[c].clone())
                .collect(),
            reference: f
                .cov
                .get(1)
                .filter(|_| !f.joint)
                .map(|&c| self.names[c].clone()),
            responses: f.responses.iter().map(|&c| self.names[c].clone()).collect(),
            regimes: f.centroids.len().max(1),
            hour_of_day: f
                .responses
                .iter()
                .zip(&f.hour)
                .filter(|(_, h)| **h)
                .map(|(&c, _)| self.names[c].clone())
                .collect(),
        }
    }

    /// Forgets what was learned; returns the mode whose alert must be
    /// resolved by the caller.
    fn restart(&mut self) -> Option<usize> {
        let a = self.active;
        *self = Self::new();
        a
    }

    /// One reading. Alert events go to `events`.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    pub fn observe(
        &mut self,
        cfg: &LearnedConfig,
        naming: &Naming,
        alerts: &mut AlertManager,
        device_id: &str,
        criticality: Criticality,
        ts_ms: i64,
        metrics: &[(&str, f64)],
        events: &mut Vec<AlertEvent>,
    ) {
        if let Some(last) = self.last_ts {
            if ts_ms <= last {
                return;
            }
            if ts_ms - last > cfg.restart_gap_ms
                && let Some(m) = self.restart()
                && let Ok(ev) = alerts.resolve(device_id, &naming.modes[m].name, last)
            {
                events.push(ev);
            }
        }
        let dt = self.last_ts.map(|l| (ts_ms - l) as f64);
        self.last_ts = Some(ts_ms);
        let learning = matches!(self.phase, Phase::Learning { .. });
        let mut raw = [f64::NAN; MAX_METRICS];
        for &(name, v) in metrics {
            if !v.is_finite() {
                continue;
            }
            let slot = match self.names.iter().position(|n| n == name) {
                Some(i) => i,
                None if learning && self.names.len() < MAX_METRICS => {
                    self.names.push(name.to_string());
                    self.names.len() - 1
                }
                None => continue,
            };
            raw[slot] = v;
        }
        if raw.iter().all(|v| v.is_nan()) {
            return;
        }
        // Filters and near-zero bookkeeping.
        for i in 0..self.names.len() {
            let v = raw[i];
            if v.is_nan() {
                continue;
            }
            self.last_raw[i] = v;
            for (k, tau) in cfg.tau_ms.iter().enumerate() {
                let f = &mut self.filt[k][i];
                *f = match dt {
                    Some(dt) if f.is_finite() => *f + (1.0 - (-dt / tau).exp()) * (v - *f),
                    _ => v,
                };
            }
            self.max_abs[i] = self.max_abs[i].max(v.abs());
            if v.abs() <= 0.05 * self.max_abs[i] {
                self.last_low[i] = Some(ts_ms);
            }
        }
        let hour = (ts_ms.rem_euclid(DAY_MS)) as f64 / HOUR_MS;
        match &mut self.phase {
            Phase::Learning {
                start,
                rows,
                stride,
                seen,
                tried,
            } => {
                if *start == i64::MIN {
                    *start = ts_ms;
                }
                if (*seen).is_multiple_of(*stride) {
                    let mut row = Row {
                        ts: ts_ms,
                        v: [[f32::NAN; MAX_METRICS]; 3],
                        since_low: [f32::INFINITY; MAX_METRICS],
                    };
                    for i in 0..self.names.len() {
                        row.v[0][i] = raw[i] as f32;
                        row.v[1][i] = self.filt[0][i] as f32;
                        row.v[2][i] = self.filt[1][i] as f32;
                        if let Some(l) = self.last_low[i] {
                            row.since_low[i] = ((ts_ms - l) as f64 / 60_000.0) as f32;
                        }
                    }
                    rows.push(row);
                    if rows.len() >= BUFFER_ROWS {
                        let mut keep = 0;
                        rows.retain(|_| {
                            keep += 1;
                            keep % 2 == 1
                        });
                        *stride *= 2;
                    }
                }
                *seen += 1;
                let span = ts_ms - *start;
                if span >= cfg.baseline_ms && ts_ms.saturating_sub(*tried) >= 3_600_000 {
                    *tried = ts_ms;
                    let fit = analyse(rows, &self.names, naming.roles.as_deref(), cfg);
                    let enough = fit
                        .as_ref()
                        .is_some_and(|(_, running)| *running >= cfg.min_running_rows);
                    if enough || span >= cfg.max_baseline_ms {
                        match fit {
                            Some((fit, _)) => {
                                let r = fit.responses.len();
                                self.phase = Phase::Calibrating {
                                    fit: Box::new(fit),
                                    acc: vec![(0.0, 0.0, 0.0); r],
                                    buckets: 0,
                                };
                                self.reset_indicators(r, naming.modes.len());
                            }
                            None => {
                                // Nothing to learn from (constant metrics):
                                // start over.
                                let last = self.last_ts;
                                *self = Self::new();
                                self.last_ts = last;
                            }
                        }
                    }
                }
            }
            Phase::Calibrating { .. } | Phase::Monitoring { .. } => {
                let bucket = ts_ms.div_euclid(cfg.bucket_ms);
                if bucket != self.bucket {
                    if self.bucket != i64::MIN {
                        self.close_bucket(
                            cfg,
                            naming,
                            alerts,
                            device_id,
                            criticality,
                            ts_ms,
                            events,
                        );
                    }
                    self.bucket = bucket;
                    self.sums.iter_mut().for_each(|s| *s = 0.0);
                    self.counts.iter_mut().for_each(|c| *c = 0);
                }
                let (Phase::Calibrating { fit, .. } | Phase::Monitoring { fit, .. }) = &self.phase
                else {
                    return;
                };
                let running = match fit.run {
                    Some((m, thr)) => raw[m].is_finite() && raw[m].abs() > thr,
                    None => !fit
                        .stops
                        .iter()
                        .any(|&(m, thr, _)| raw[m].is_finite() && raw[m].abs() <= thr),
                };
                if !running {
                    self.running_since = None;
                    self.after_stop = !fit.stops.is_empty();
                    return;
                }
                let since = *self.running_since.get_or_insert(ts_ms);
                if self.after_stop {
                    // Bounded: a degradation that lowers a stop metric must not keep the
                    // device unjudged for good.
                    let recovered = fit
                        .stops
                        .iter()
                        .all(|&(m, _, slow_lo)| self.filt[1][m].abs() >= slow_lo)
                        && fit.lags_in_range(&self.filt[0], &self.filt[1]);
                    if recovered || (ts_ms - since) as f64 >= RECOVERY_TAUS * cfg.tau_ms[1] {
                        self.after_stop = false;
                    } else {
                        return;
                    }
                }
                if ts_ms - since < cfg.warmup_after_start_ms {
                    return;
                }
                let Some(x) = fit.features(&raw, &self.filt[0], &self.filt[1], hour) else {
                    return;
                };
                for (r, &m) in fit.responses.iter().enumerate() {
                    if raw[m].is_finite() {
                        self.sums[r] += raw[m] - fit.predict(r, &x);
                        self.counts[r] += 1;
                    }
                }
            }
        }
    }

    fn reset_indicators(&mut self, r: usize, modes: usize) {
        self.sums = vec![0.0; r];
        self.counts = vec![0; r];
        self.base = vec![0.0; r];
        self.ewma = vec![0.0; r];
        self.stat = vec![None; r];
        self.since = vec![None; r];
        self.anomalous = vec![false; modes];
        self.armed = vec![false; modes];
        self.bucket = i64::MIN;
    }

    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn close_bucket(
        &mut self,
        cfg: &LearnedConfig,
        naming: &Naming,
        alerts: &mut AlertManager,
        device_id: &str,
        criticality: Criticality,
        ts_ms: i64,
        events: &mut Vec<AlertEvent>,
    ) {
        let nr = self.sums.len();
        let means: Vec<Option<f64>> = (0..nr)
            .map(|r| {
                (self.counts[r] >= cfg.min_bucket_samples)
                    .then(|| self.sums[r] / f64::from(self.counts[r]))
            })
            .collect();
        if means.iter().all(Option::is_none) {
            return;
        }
        let (fit, sigma) = match &mut self.phase {
            Phase::Calibrating { fit, acc, buckets } => {
                for (a, m) in acc.iter_mut().zip(&means) {
                    if let Some(m) = m {
                        a.0 += 1.0;
                        let d = m - a.1;
                        a.1 += d / a.0;
                        a.2 += d * (m - a.1);
                    }
                }
                *buckets += 1;
                if *buckets >= cfg.calibration_buckets {
                    let sigma: Vec<f64> = acc
                        .iter()
                        .zip(&fit.floor)
                        .map(|(a, floor)| {
                            if a.0 >= 3.0 {
                                (a.2 / (a.0 - 1.0)).sqrt().max(*floor)
                            } else {
                                f64::NAN
                            }
                        })
                        .collect();
                    self.base = acc.iter().map(|a| a.1).collect();
                    let fit = fit.clone();
                    self.phase = Phase::Monitoring { fit, sigma };
                }
                return;
            }
            Phase::Monitoring { fit, sigma } => (fit.clone(), sigma.clone()),
            Phase::Learning { .. } => return,
        };
        let lam = cfg.ewma_lambda;
        let nm = naming.modes.len();
        let thr: Vec<f64> = (0..nm)
            .map(|k| naming.modes[k].threshold * naming.multipliers.get(k).copied().unwrap_or(1.0))
            .collect();
        // Mode of each response.
        let mode_of: Vec<usize> = fit
            .responses
            .iter()
            .enumerate()
            .map(|(r, &m)| {
                let name = &self.names[m];
                let dev = self.ewma[r];
                naming
                    .modes
                    .iter()
                    .position(|md| md.metrics.iter().any(|x| x == name) && md.direction.admits(dev))
                    .unwrap_or(nm - 1)
            })
            .collect();
        for r in 0..nr {
            let Some(mean) = means[r] else { continue };
            let s = sigma[r];
            if !(s.is_finite() && s > 0.0) {
                continue;
            }
            let z = (mean - self.base[r]) / s;
            self.ewma[r] += lam * (z - self.ewma[r]);
            let st = self.ewma[r];
            self.stat[r] = Some(st);
            let t = thr[mode_of[r]]
                * pattern_multiplier(naming, mode_of[r], &self.names[fit.responses[r]], st);
            if st.abs() < cfg.drift_gate * t {
                self.base[r] += cfg.drift_lambda * (mean - self.base[r]);
                self.since[r] = None;
            } else if self.since[r].is_none() {
                self.since[r] = Some(ts_ms);
            }
        }
        // Mode ratios.
        let mut ratio = vec![0.0f64; nm];
        let mut t2 = vec![0.0f64; nm];
        for r in 0..nr {
            let Some(st) = self.stat[r] else { continue };
            let k = mode_of[r];
            if !naming.modes[k].direction.admits(st) {
                continue;
            }
            let pm = pattern_multiplier(naming, k, &self.names[fit.responses[r]], st);
            ratio[k] = ratio[k].max(st.abs() / (thr[k] * pm));
            t2[k] += (st / pm) * (st / pm);
        }
        for k in 0..nm {
            ratio[k] = ratio[k].max(t2[k].sqrt() / (1.25 * thr[k]));
            if self.anomalous[k] {
                if ratio[k] < cfg.clear_fraction {
                    self.anomalous[k] = false;
                }
            } else if ratio[k] > 1.0 {
                self.anomalous[k] = true;
            }
        }
        let hours = ts_ms as f64 / HOUR_MS;
        let agg = ratio.iter().copied().fold(0.0, f64::max);
        if self.history.len() >= cfg.rul_window_buckets.max(3) {
            self.history.pop_front();
        }
        self.history.push_back((hours, agg));
        if let Some(o) = self.owner
            && !self.anomalous[o]
            && self.active != Some(o)
        {
            self.owner = None;
        }
        if self.owner.is_none() {
            self.owner = (0..nm)
                .filter(|&k| self.anomalous[k])
                .max_by(|&a, &b| ratio[a].total_cmp(&ratio[b]));
        }
        for k in 0..nm {
            let anomalous = self.owner == Some(k) && self.anomalous[k];
            if !anomalous && !self.armed[k] {
                continue;
            }
            let evidence = if anomalous {
                self.evidence(&fit, &sigma, &mode_of, k, thr[k], ratio[k], t2[k], cfg)
            } else {
                Evidence::default()
            };
            let mode_name = &naming.modes[k].name;
            let name = match &self.alert_name {
                Some(n) if self.active == Some(k) => n.clone(),
                _ if anomalous => alert_pattern(&evidence)
                    .and_then(|p| naming.confirmed.get(&(mode_name.clone(), p)))
                    .unwrap_or(mode_name)
                    .clone(),
                Some(n) => n.clone(),
                None => mode_name.clone(),
            };
            self.alert_name = Some(name.clone());
            let obs = Observation {
                device_id: device_id.to_string(),
                failure_mode: name,
                ts_ms,
                anomalous,
                evidence,
                criticality,
            };
            for ev in alerts.observe(obs) {
                match ev.kind {
                    AlertEventKind::Opened => self.active = Some(k),
                    AlertEventKind::Resolved => self.active = None,
                    _ => {}
                }
                events.push(ev);
            }
            self.armed[k] = anomalous || self.active == Some(k);
            if !self.armed[k] && self.active.is_none() {
                self.alert_name = None;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn evidence(
        &self,
        fit: &Fitted,
        sigma: &[f64],
        mode_of: &[usize],
        k: usize,
        thr: f64,
        ratio: f64,
        t2: f64,
        cfg: &LearnedConfig,
    ) -> Evidence {
        let mut metrics = BTreeMap::new();
        for (i, n) in self.names.iter().enumerate() {
            if self.last_raw[i].is_finite() {
                metrics.insert(n.clone(), self.last_raw[i]);
            }
        }
        let mut top: Vec<(f64, String)> = Vec::new();
        for (r, &m) in fit.responses.iter().enumerate() {
            let Some(st) = self.stat[r] else { continue };
            if mode_of[r] != k || st.abs() < 0.5 * thr {
                continue;
            }
            let n = &self.names[m];
            metrics.insert(format!("score_sigma.{n}"), st);
            metrics.insert(format!("deviation_sigma.{n}"), self.ewma[r]);
            metrics.insert(format!("deviation.{n}"), self.ewma[r] * sigma[r]);
            metrics.insert(format!("baseline_sigma.{n}"), sigma[r]);
            if let Some(s) = self.since[r] {
                metrics.insert(format!("deviating_since_ms.{n}"), s as f64);
            }
            top.push((st.abs(), n.clone()));
        }
        top.sort_by(|a, b| b.0.total_cmp(&a.0));
        metrics.insert("indicator_ratio".into(), ratio);
        metrics.insert("indicator_t2".into(), t2);
        let names: Vec<&str> = top.iter().map(|t| t.1.as_str()).collect();
        Evidence {
            detector: format!("learned/{}", names.join("+")),
            metrics,
            score: ratio.max(0.0) / (1.0 + ratio.max(0.0)),
            ratio,
            rul_hours: self.rul(cfg.failure_ratio),
        }
    }

    /// RUL from the aggregate ratio trend, only while it grows steadily.
    fn rul(&self, failure_ratio: f64) -> Option<RulEstimate> {
        let n = self.history.len();
        if n < 12 {
            return None;
        }
        let t: Vec<f64> = self.history.iter().map(|p| p.0).collect();
        let h: Vec<f64> = self.history.iter().map(|p| p.1).collect();
        let third = n / 3;
        let first: f64 = h[..third].iter().sum::<f64>() / third as f64;
        let last: f64 = h[n - third..].iter().sum::<f64>() / third as f64;
        if last <= first {
            return None;
        }
        let shifted: Vec<f64> = h.iter().map(|v| v + 1.0).collect();
        extrapolate_trend(&t, &shifted, failure_ratio + 1.0, TrendKind::Exponential)
            .ok()
            .flatten()
            .or_else(|| {
                extrapolate_trend(&t, &h, failure_ratio, TrendKind::Linear)
                    .ok()
                    .flatten()
            })
    }
}

/// The pattern of a deviation: the metric and its direction (`spindle_temp+`).
pub fn pattern_key(metric: &str, deviation: f64) -> String {
    let sign = if deviation >= 0.0 { '+' } else { '-' };
    format!("{metric}{sign}")
}

/// The pattern of a learned alert from its evidence: the metric with the
/// largest score and its direction; `None` for evidence of another engine.
pub fn alert_pattern(evidence: &Evidence) -> Option<String> {
    evidence
        .metrics
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("score_sigma.").map(|m| (m, *v)))
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .map(|(m, v)| pattern_key(m, v))
}

fn pattern_multiplier(naming: &Naming, mode: usize, metric: &str, deviation: f64) -> f64 {
    if naming.patterns.is_empty() {
        return 1.0;
    }
    let Some(def) = naming.modes.get(mode) else {
        return 1.0;
    };
    naming
        .patterns
        .get(&(def.name.clone(), pattern_key(metric, deviation)))
        .copied()
        .unwrap_or(1.0)
}

fn nearest(centroids: &[Vec<f64>], z: &[f64]) -> usize {
    let mut best = (0, f64::INFINITY);
    for (k, c) in centroids.iter().enumerate() {
        let d: f64 = c.iter().zip(z).map(|(a, b)| (a - b) * (a - b)).sum();
        if d < best.1 {
            best = (k, d);
        }
    }
    best.0
}

/// Deterministic k-means (farthest-point initialisation, Lloyd iterations);
/// returns centroids and the within-cluster sum of squares.
fn kmeans(points: &[Vec<f64>], k: usize) -> (Vec<Vec<f64>>, f64) {
    let dim = points.first().map_or(0, Vec::len);
    if points.is_empty() || k == 0 {
        return (Vec::new(), 0.0);
    }
    let d2 =
        |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum() };
    // Start at the point closest to the mean, then farthest points.
    let mean: Vec<f64> = (0..dim)
        .map(|j| points.iter().map(|p| p[j]).sum::<f64>() / points.len() as f64)
        .collect();
    let first = (0..points.len())
        .min_by(|&a, &b| d2(&points[a], &mean).total_cmp(&d2(&points[b], &mean)))
        .unwrap_or(0);
    let mut c = vec![points[first].clone()];
    while c.len() < k {
        let far = (0..points.len()).max_by(|&a, &b| {
            let da = c
                .iter()
                .map(|q| d2(&points[a], q))
                .fold(f64::INFINITY, f64::min);
            let db = c
                .iter()
                .map(|q| d2(&points[b], q))
                .fold(f64::INFINITY, f64::min);
            da.total_cmp(&db)
        });
        match far {
            Some(i) => c.push(points[i].clone()),
            None => break,
        }
    }
    let mut wss = 0.0;
    for _ in 0..30 {
        let mut sum = vec![vec![0.0; dim]; c.len()];
        let mut cnt = vec![0usize; c.len()];
        wss = 0.0;
        for p in points {
            let j = nearest(&c, p);
            wss += d2(p, &c[j]);
            cnt[j] += 1;
            for (s, v) in sum[j].iter_mut().zip(p) {
                *s += v;
            }
        }
        let mut moved = false;
        for j in 0..c.len() {
            if cnt[j] > 0 {
                let n: Vec<f64> = sum[j].iter().map(|s| s / cnt[j] as f64).collect();
                moved |= d2(&n, &c[j]) > 1e-12;
                c[j] = n;
            }
        }
        if !moved {
            break;
        }
    }
    (c, wss)
}

/// Ridge least squares (intercept unpenalised) on the first `k` features.
#[allow(clippy::needless_range_loop)]
fn ridge(xs: &[[f64; P]], ys: &[f64], k: usize) -> Option<([f64; P], f64)> {
    let n = xs.len();
    if n < 2 * k + 8 {
        return None;
    }
    let mut a = vec![vec![0.0; k]; k];
    let mut b = vec![0.0; k];
    for (x, y) in xs.iter().zip(ys) {
        for i in 0..k {
            b[i] += x[i] * y;
            for j in i..k {
                a[i][j] += x[i] * x[j];
            }
        }
    }
    let ridge = 1e-2 * n as f64;
    for i in 0..k {
        for j in 0..i {
            a[i][j] = a[j][i];
        }
        if i > 0 {
            a[i][i] += ridge;
        }
    }
    for c in 0..k {
        let piv = (c..k).max_by(|&r, &s| a[r][c].abs().total_cmp(&a[s][c].abs()))?;
        if a[piv][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..k {
            let f = a[r][c] / a[c][c];
            for q in c..k {
                a[r][q] -= f * a[c][q];
            }
            b[r] -= f * b[c];
        }
    }
    let mut coef = [0.0; P];
    for c in (0..k).rev() {
        let s: f64 = (c + 1..k).map(|q| a[c][q] * coef[q]).sum();
        coef[c] = (b[c] - s) / a[c][c];
    }
    if !coef.iter().all(|v| v.is_finite()) {
        return None;
    }
    let sse: f64 = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| {
            let p: f64 = (0..k).map(|i| coef[i] * x[i]).sum();
            (y - p) * (y - p)
        })
        .sum();
    Some((coef, sse))
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt();
    (m, s)
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let (ma, sa) = mean_std(a);
    let (mb, sb) = mean_std(b);
    if sa <= 0.0 || sb <= 0.0 {
        return 0.0;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - ma) * (y - mb))
        .sum::<f64>()
        / (a.len() as f64 * sa * sb)
}

/// Learns the device's structure from the baseline buffer; returns the model
/// and the number of usable running rows.
#[allow(clippy::needless_range_loop)]
fn analyse(
    rows: &[Row],
    names: &[String],
    roles: Option<&[(String, MetricRole)]>,
    cfg: &LearnedConfig,
) -> Option<(Fitted, usize)> {
    let n = names.len();
    let role =
        |i: usize| roles.and_then(|r| r.iter().find(|(m, _)| *m == names[i]).map(|(_, x)| *x));
    let col = |k: usize, i: usize| -> Vec<f64> {
        rows.iter()
            .map(|r| f64::from(r.v[k][i]))
            .filter(|v| v.is_finite())
            .collect()
    };
    // Idle detection.
    let mut run: Option<(usize, f64)> = None;
    let mut best = (0usize, f64::INFINITY);
    for i in 0..n {
        let mut a: Vec<f64> = col(0, i).iter().map(|v| v.abs()).collect();
        let hi = quantile(&mut a, 0.98);
        if hi.is_nan() || hi <= 0.0 {
            continue;
        }
        let thr = 0.05 * hi;
        let low: Vec<&Row> = rows
            .iter()
            .filter(|r| f64::from(r.v[0][i]).abs() <= thr)
            .collect();
        let frac = low.len() as f64 / rows.len() as f64;
        if !(0.02..=0.98).contains(&frac) {
            continue;
        }
        let mut co = 0;
        for j in (0..n).filter(|&j| j != i) {
            let pick = |lo: bool| -> Vec<f64> {
                rows.iter()
                    .filter(|r| (f64::from(r.v[0][i]).abs() <= thr) == lo)
                    .map(|r| f64::from(r.v[0][j]))
                    .filter(|v| v.is_finite())
                    .collect()
            };
            let (ml, _) = mean_std(&pick(true));
            let (mh, sh) = mean_std(&pick(false));
            if (ml - mh).abs() > 2.0 * sh || (mh.abs() > 0.0 && (ml / mh) < 0.5) {
                co += 1;
            }
        }
        let lowness = mean_std(
            &low.iter()
                .map(|r| f64::from(r.v[0][i]).abs())
                .collect::<Vec<_>>(),
        )
        .0 / hi;
        if co > best.0 || (co == best.0 && co > 0 && lowness < best.1) {
            best = (co, lowness);
            run = Some((i, thr));
        }
    }
    if best.0 == 0 {
        run = None;
    }
    let warm_min = cfg.warmup_after_start_ms as f64 / 60_000.0;
    let usable: Vec<&Row> = rows
        .iter()
        .filter(|r| match run {
            Some((m, thr)) => {
                f64::from(r.v[0][m]).abs() > thr && f64::from(r.since_low[m]) >= warm_min
            }
            None => true,
        })
        .collect();
    let running = usable.len();
    if running < 20 {
        return None;
    }
    let get = |r: &Row, k: usize, i: usize| f64::from(r.v[k][i]);
    // Per-metric moments over running rows; constant metrics are dropped.
    let varying: Vec<usize> = (0..n)
        .filter(|&i| {
            let v: Vec<f64> = usable
                .iter()
                .map(|r| get(r, 0, i))
                .filter(|v| v.is_finite())
                .collect();
            let (m, s) = mean_std(&v);
            v.len() * 2 >= running
                && s > 1e-9 * m.abs().max(1e-12)
                && role(i) != Some(MetricRole::Ignore)
        })
        .collect();
    if varying.is_empty() {
        return None;
    }
    // Complete rows over the varying metrics.
    let complete: Vec<&Row> = usable
        .iter()
        .copied()
        .filter(|r| {
            varying
                .iter()
                .all(|&i| (0..3).all(|k| get(r, k, i).is_finite()))
        })
        .collect();
    if complete.len() < 20 {
        return None;
    }
    let series: Vec<Vec<f64>> = (0..n)
        .map(|i| complete.iter().map(|r| get(r, 0, i)).collect())
        .collect();
    // Covariates: profile roles, else by explained variance.
    let mut cov: Vec<usize> = Vec::new();
    let mut joint = false;
    let nv = varying.len();
    if nv >= 2 {
        let r2 = |a: usize, b: usize| corr(&series[a], &series[b]).powi(2);
        let score = |j: usize| {
            varying
                .iter()
                .filter(|&&i| i != j)
                .map(|&i| r2(i, j))
                .sum::<f64>()
        };
        // The operating point: a metric the profile declares a covariate;
        // else one whose name says load, speed, current or power; else the
        // run metric (what drops to zero when the machine stops) if it
        // varies while running; else the metric explaining most of the
        // others' variance.
        // The hints are a priority list (speed before amps), so the choice does not depend
        // on the order metrics arrive in a payload (JSON objects have none); a tie between
        // two metrics of one hint goes to the one explaining the others best, then the name.
        let hint_rank = |j: usize| {
            let n = names[j].to_ascii_lowercase();
            COVARIATE_HINTS.iter().position(|h| n.contains(h))
        };
        let by_priority = |a: &usize, b: &usize| {
            hint_rank(*a)
                .cmp(&hint_rank(*b))
                .then(score(*b).total_cmp(&score(*a)))
                .then(names[*a].cmp(&names[*b]))
        };
        let hinted = varying
            .iter()
            .copied()
            .filter(|&j| hint_rank(j).is_some())
            .min_by(by_priority);
        let c1_declared = varying
            .iter()
            .copied()
            .find(|&j| role(j) == Some(MetricRole::Covariate));
        let (c1, s1) = match (run, hinted) {
            (_, Some(h)) => (h, score(h)),
            (Some((m, _)), _) if varying.contains(&m) => (m, score(m)),
            _ => varying
                .iter()
                .map(|&j| (j, score(j)))
                .max_by(|a, b| a.1.total_cmp(&b.1))?,
        };
        let declared = c1_declared.is_some() || hinted.is_some();
        let c1 = c1_declared.unwrap_or(c1);
        if declared || s1 / (nv - 1) as f64 >= 0.1 {
            cov.push(c1);
            // An operating point found only from the data (run metric,
            // variance share) may itself be what degrades (vibration telling
            // running from idle): it is judged too, against the metric that
            // tracks it best.
            let alt = varying
                .iter()
                .copied()
                .filter(|&j| j != c1)
                .map(|j| (j, r2(c1, j)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            let second_hint = varying
                .iter()
                .copied()
                .filter(|&j| j != c1 && c1_declared.is_none() && hint_rank(j).is_some())
                .min_by(by_priority);
            if let Some(h) = second_hint
                && cfg.joint_covariates
                && hinted.is_some()
                && nv >= 3
            {
                // Two metrics whose names say operating point (speed and
                // current): both explain the rest.
                cov.push(h);
                joint = true;
            } else if !declared
                && let Some((a, r)) = alt
                && r >= 0.3
            {
                cov.push(a);
            }
        }
    }
    let responses: Vec<usize> = varying
        .iter()
        .copied()
        .filter(|&i| (cov.len() == 2 && !joint) || !cov.contains(&i))
        .filter(|&i| role(i) != Some(MetricRole::Covariate))
        .collect();
    let mut fit = fit_model(&complete, run, cov, responses, joint);
    fit.joint = joint;
    if run.is_none() {
        fit.stops = (0..n)
            .filter_map(|i| {
                let mut a: Vec<f64> = col(0, i).iter().map(|v| v.abs()).collect();
                if a.len() < 20 {
                    return None;
                }
                let hi = quantile(&mut a, 0.98);
                let lo = quantile(&mut a, 0.02);
                let mut slow = col(2, i);
                let slow_lo = quantile(&mut slow, 0.02);
                // Clearly away from zero throughout: its near-zero level was never reached.
                (hi > 0.0 && lo > 0.2 * hi && slow_lo.is_finite()).then_some((
                    i,
                    0.05 * hi,
                    slow_lo,
                ))
            })
            .collect();
    }
    Some((fit, running))
}

/// Fits regimes and regressions for chosen covariates and responses.
fn fit_model(
    rows: &[&Row],
    run: Option<(usize, f64)>,
    cov: Vec<usize>,
    responses: Vec<usize>,
    joint: bool,
) -> Fitted {
    let get = |r: &Row, k: usize, i: usize| f64::from(r.v[k][i]);
    let mut cov_mean = Vec::new();
    let mut cov_std = Vec::new();
    let mut cov_range = Vec::new();
    for &c in &cov {
        let v: Vec<f64> = rows.iter().map(|r| get(r, 0, c)).collect();
        let (m, s) = mean_std(&v);
        let s = s.max(1e-9);
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        cov_mean.push(m);
        cov_std.push(s);
        cov_range.push(((lo - m) / s, (hi - m) / s));
    }
    let mut fit = Fitted {
        run,
        cov,
        cov_range,
        cov_mean,
        cov_std,
        centroids: Vec::new(),
        responses,
        joint,
        coefs: Vec::new(),
        hour: Vec::new(),
        floor: Vec::new(),
        stops: Vec::new(),
    };
    // Regimes: k-means on standardised covariates, k by the elbow.
    if !fit.cov.is_empty() {
        let pts: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                fit.cov
                    .iter()
                    .take(1)
                    .enumerate()
                    .map(|(j, &c)| (get(r, 0, c) - fit.cov_mean[j]) / fit.cov_std[j])
                    .collect()
            })
            .collect();
        let (mut cents, mut w) = kmeans(&pts, 1);
        for k in 2..=MAX_K {
            let (c, wk) = kmeans(&pts, k);
            let big_enough = {
                let mut cnt = vec![0usize; c.len()];
                for p in &pts {
                    cnt[nearest(&c, p)] += 1;
                }
                cnt.iter().all(|&x| x * 10 >= pts.len())
            };
            if wk < 0.5 * w && big_enough {
                cents = c;
                w = wk;
            } else {
                break;
            }
        }
        fit.centroids = if cents.len() > 1 { cents } else { Vec::new() };
    }
    let hours: Vec<f64> = rows
        .iter()
        .map(|r| r.ts.rem_euclid(DAY_MS) as f64 / HOUR_MS)
        .collect();
    let xs: Vec<[f64; P]> = rows
        .iter()
        .zip(&hours)
        .map(|(r, &h)| {
            let raw: Vec<f64> = (0..MAX_METRICS).map(|i| get(r, 0, i)).collect();
            let f: Vec<f64> = (0..MAX_METRICS).map(|i| get(r, 1, i)).collect();
            let s: Vec<f64> = (0..MAX_METRICS).map(|i| get(r, 2, i)).collect();
            fit.features(&raw, &f, &s, h).unwrap_or([0.0; P])
        })
        .collect();
    for (ri, &m) in fit.responses.clone().iter().enumerate() {
        let ys: Vec<f64> = rows.iter().map(|r| get(r, 0, m)).collect();
        let xs: Vec<[f64; P]> = xs
            .iter()
            .map(|x| {
                let mut x = *x;
                fit.mask(ri, &mut x);
                x
            })
            .collect();
        // Without hour terms, the last two features are left out by
        // zeroing them in a copy.
        let no_hour: Vec<[f64; P]> = xs
            .iter()
            .map(|x| {
                let mut y = *x;
                y[P - 2] = 0.0;
                y[P - 1] = 0.0;
                y
            })
            .collect();
        let base = ridge(&no_hour, &ys, P - 2);
        let with = ridge(&xs, &ys, P);
        let (coef, hour) = match (base, with) {
            (Some((_, sb)), Some((w, sw))) if sw < 0.9 * sb => (w, true),
            (Some((b, _)), _) => (b, false),
            (None, Some((w, _))) => (w, true),
            (None, None) => {
                let mut c = [0.0; P];
                c[0] = mean_std(&ys).0;
                (c, false)
            }
        };
        fit.coefs.push(coef);
        fit.hour.push(hour);
        fit.floor.push(0.02 * mean_std(&ys).1);
    }
    fit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_separated_groups() {
        let mut pts = Vec::new();
        for i in 0..60 {
            let c = [0.0, 5.0, 10.0][i % 3];
            pts.push(vec![c + 0.01 * (i as f64 % 7.0)]);
        }
        let (c1, w1) = kmeans(&pts, 1);
        let (c3, w3) = kmeans(&pts, 3);
        assert_eq!(c1.len(), 1);
        assert_eq!(c3.len(), 3);
        assert!(w3 < 0.01 * w1);
        let mut xs: Vec<f64> = c3.iter().map(|c| c[0]).collect();
        xs.sort_by(f64::total_cmp);
        assert!(
            (xs[0] - 0.03).abs() < 0.1 && (xs[2] - 10.03).abs() < 0.1,
            "{xs:?}"
        );
    }

    #[test]
    fn ridge_recovers_a_line() {
        let xs: Vec<[f64; P]> = (0..50)
            .map(|i| {
                let mut x = [0.0; P];
                x[0] = 1.0;
                x[1] = i as f64 / 10.0;
                x
            })
            .collect();
        let ys: Vec<f64> = xs.iter().map(|x| 2.0 + 3.0 * x[1]).collect();
        let (c, _) = ridge(&xs, &ys, 2).expect("solvable");
        assert!(
            (c[1] - 3.0).abs() < 0.1 && (c[0] - 2.0).abs() < 0.3,
            "{c:?}"
        );
    }
}
