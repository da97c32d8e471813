//! Health indicators and remaining useful life (RUL).
//!
//! Two complementary estimators:
//! - [`extrapolate_trend`]: fit a linear or exponential trend to a health
//!   indicator and extrapolate to a failure threshold, with an interval from
//!   the fit residuals. Needs no fleet history, so it works from day one.
//! - [`RulRegressor`]: gradient boosting over sliding-window features of
//!   per-operating-regime normalised sensors (see [`crate::regime`]), trained
//!   on run-to-failure histories of a fleet (C-MAPSS style), with a
//!   split-conformal prediction interval from out-of-fold residuals.

use crate::error::ModelError;
use crate::gbm::{Gbm, GbmConfig};
use crate::parse::CmapssRow;
use crate::regime::{RegimeConfig, RegimeNormalizer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Shape of the health-indicator trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendKind {
    /// h(t) = a + b·t.
    Linear,
    /// h(t) = a·exp(b·t), fitted as a line on ln h (requires h > 0).
    Exponential,
}

/// A RUL point estimate with an interval, in the time unit of the input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RulEstimate {
    /// Most likely remaining time until the threshold is crossed.
    pub rul: f64,
    /// Lower bound of the interval (earliest plausible crossing), ≥ 0.
    pub lower: f64,
    /// Upper bound (`f64::INFINITY` when the pessimistic slope never reaches
    /// the threshold).
    pub upper: f64,
}

/// Extrapolates the health indicator `h` sampled at times `t` to
/// `threshold` (crossed upwards if the trend rises, downwards if it falls).
///
/// The interval comes from the slope's standard error: the line is
/// re-extrapolated with slope b ± z·se(b) through the last fitted value
/// (z = 1.96 for ~95 %). Returns `Ok(None)` when the trend moves away from
/// the threshold (no failure predicted).
pub fn extrapolate_trend(
    t: &[f64],
    h: &[f64],
    threshold: f64,
    kind: TrendKind,
) -> Result<Option<RulEstimate>, ModelError> {
    let n = t.len().min(h.len());
    if n < 3 {
        return Err(ModelError::NotEnoughData { need: 3, got: n });
    }
    if t.iter()
        .chain(h)
        .chain([&threshold])
        .any(|v| !v.is_finite())
    {
        return Err(ModelError::NonFinite);
    }
    let (y, thr): (Vec<f64>, f64) = match kind {
        TrendKind::Linear => (h[..n].to_vec(), threshold),
        TrendKind::Exponential => {
            if h[..n].iter().any(|v| *v <= 0.0) || threshold <= 0.0 {
                return Err(ModelError::InvalidParameter(
                    "exponential trend needs positive values and threshold".into(),
                ));
            }
            (h[..n].iter().map(|v| v.ln()).collect(), threshold.ln())
        }
    };
    let tm = prognos_stats::sample::mean(&t[..n]);
    let ym = prognos_stats::sample::mean(&y);
    let sxx: f64 = t[..n].iter().map(|v| (v - tm) * (v - tm)).sum();
    if sxx <= 0.0 {
        return Err(ModelError::InvalidParameter("all times are equal".into()));
    }
    let sxy: f64 = t[..n]
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - tm) * (b - ym))
        .sum();
    let b = sxy / sxx;
    let a = ym - b * tm;
    let sse: f64 = t[..n]
        .iter()
        .zip(&y)
        .map(|(ti, yi)| (yi - a - b * ti).powi(2))
        .sum();
    let se_b = (sse / (n as f64 - 2.0) / sxx).sqrt();
    let t_now = t[..n].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let y_now = a + b * t_now;
    let gap = thr - y_now;
    // Already past the threshold: failure is now.
    if gap == 0.0
        || (gap.signum() != b.signum() && gap.abs() > 0.0 && (thr - y[n - 1]) * gap <= 0.0)
    {
        return Ok(Some(RulEstimate {
            rul: 0.0,
            lower: 0.0,
            upper: 0.0,
        }));
    }
    if b == 0.0 || gap.signum() != b.signum() {
        return Ok(None);
    }
    let time_to = |slope: f64| -> f64 {
        if slope == 0.0 || gap.signum() != slope.signum() {
            f64::INFINITY
        } else {
            (gap / slope).max(0.0)
        }
    };
    let z = 1.96;
    let fast = b + b.signum() * z * se_b;
    let slow = b - b.signum() * z * se_b;
    Ok(Some(RulEstimate {
        rul: time_to(b),
        lower: time_to(fast),
        upper: time_to(slow),
    }))
}

/// Sliding-window feature options. Features are computed on the
/// per-regime normalised sensors, causally per unit (cycle t uses cycles ≤ t).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// Short trailing mean window (cycles).
    pub short_window: usize,
    /// Long window for the mean and the least-squares slope (cycles).
    pub long_window: usize,
    /// EWMA smoothing factor.
    pub ewma_alpha: f64,
    /// The unit's own baseline: mean of its first cycles (at most this
    /// many); features include the smoothed drift from it.
    pub baseline_window: usize,
    /// Exponential smoothing applied to every normalised channel, per unit,
    /// before the window features (1 = none). Per-regime z-scores still
    /// carry regime-to-regime noise; smoothing averages it out causally.
    pub smooth_alpha: f64,
    /// Adds a robust slope over the long window: the median of the slopes
    /// between cycles half a window apart (insensitive to single outliers).
    pub robust_slope: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            short_window: 5,
            long_window: 20,
            ewma_alpha: 0.1,
            baseline_window: 20,
            smooth_alpha: 1.0,
            robust_slope: false,
        }
    }
}

fn slope(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let tm = (n as f64 - 1.0) / 2.0;
    let ym = prognos_stats::sample::mean(v);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in v.iter().enumerate() {
        let d = i as f64 - tm;
        sxy += d * (y - ym);
        sxx += d * d;
    }
    sxy / sxx
}

/// Median of the slopes between points `h = len/2` apart (0 for < 4 points).
fn robust_slope(v: &[f64]) -> f64 {
    let h = v.len() / 2;
    if h < 2 {
        return slope(v);
    }
    let mut d: Vec<f64> = (0..v.len() - h)
        .map(|j| (v[j + h] - v[j]) / h as f64)
        .collect();
    d.sort_by(f64::total_cmp);
    let n = d.len();
    if n % 2 == 1 {
        d[n / 2]
    } else {
        0.5 * (d[n / 2 - 1] + d[n / 2])
    }
}

fn ewma(s: &[f64], alpha: f64) -> Vec<f64> {
    let mut e = s.first().copied().unwrap_or(0.0);
    s.iter()
        .map(|v| {
            e = alpha * v + (1.0 - alpha) * e;
            e
        })
        .collect()
}

/// Features for every cycle of one unit: `cycles[t]` and the normalised
/// channels `z[t]` (all rows the same width). Causal: the features of cycle
/// t use cycles ≤ t only. Per channel (after optional smoothing): short
/// mean, long mean, EWMA, slope over the long window, EWMA minus the unit's
/// early baseline, and optionally a robust slope.
pub fn unit_features(cycles: &[u32], z: &[Vec<f64>], cfg: &FeatureConfig) -> Vec<Vec<f64>> {
    let n = cycles.len().min(z.len());
    let m = z.first().map_or(0, |r| r.len());
    let smooth = cfg.smooth_alpha.clamp(1e-6, 1.0);
    let series: Vec<Vec<f64>> = (0..m)
        .map(|c| {
            let raw: Vec<f64> = z[..n]
                .iter()
                .map(|r| r.get(c).copied().unwrap_or(0.0))
                .collect();
            if smooth < 1.0 {
                ewma(&raw, smooth)
            } else {
                raw
            }
        })
        .collect();
    let ewmas: Vec<Vec<f64>> = series.iter().map(|s| ewma(s, cfg.ewma_alpha)).collect();
    let bw = cfg.baseline_window.max(1);
    (0..n)
        .map(|t| {
            let mut f = Vec::with_capacity(1 + 5 * m);
            f.push(cycles[t] as f64);
            for (s, e) in series.iter().zip(&ewmas) {
                let short = &s[(t + 1).saturating_sub(cfg.short_window.max(1))..=t];
                let long = &s[(t + 1).saturating_sub(cfg.long_window.max(2))..=t];
                let base = prognos_stats::sample::mean(&s[..(t + 1).min(bw)]);
                f.push(prognos_stats::sample::mean(short));
                f.push(prognos_stats::sample::mean(long));
                f.push(e[t]);
                f.push(slope(long));
                f.push(e[t] - base);
                if cfg.robust_slope {
                    f.push(robust_slope(long));
                }
            }
            f
        })
        .collect()
}

/// Groups rows by unit (ascending id), each sorted by cycle.
pub fn group_units(rows: &[CmapssRow]) -> BTreeMap<u32, Vec<&CmapssRow>> {
    let mut m: BTreeMap<u32, Vec<&CmapssRow>> = BTreeMap::new();
    for r in rows {
        m.entry(r.unit).or_default().push(r);
    }
    for v in m.values_mut() {
        v.sort_by_key(|r| r.cycle);
    }
    m
}

/// Prediction-interval and cross-validation options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntervalConfig {
    /// Nominal coverage of the interval (e.g. 0.9).
    pub coverage: f64,
    /// Residual groups by predicted RUL (Mondrian conformal): the interval
    /// width depends on how close to failure the prediction is.
    pub bins: usize,
    /// Folds over training units for the out-of-fold residuals (and the CV
    /// figures).
    pub folds: usize,
    /// CV RMSE/PHM08 are computed on held-out cycles whose true RUL is at most
    /// this (the range a maintenance decision cares about). The interval is
    /// calibrated on every held-out cycle.
    pub cv_max_rul: f64,
    /// Held-out cycles before this one are not scored (too little history).
    pub min_cycles: u32,
    /// Test-like CV: each held-out unit is also cut off at this many random
    /// cycles and only the last cycle of each cut is scored, against the
    /// unclipped RUL, as the test set is. This is the figure
    /// hyper-parameters are chosen on.
    pub truncations: usize,
    /// A cut keeps a uniform fraction in [`truncate_min_fraction`, 1) of the
    /// unit's life (and at least `min_cycles`). The C-MAPSS test histories
    /// are about 2/3 of a training life at the median (131–133 cycles
    /// against 199), which U(1/3, 1) reproduces; no test label is used.
    pub truncate_min_fraction: f64,
}

impl Default for IntervalConfig {
    fn default() -> Self {
        Self {
            coverage: 0.9,
            bins: 5,
            folds: 5,
            cv_max_rul: 150.0,
            min_cycles: 20,
            truncations: 10,
            truncate_min_fraction: 1.0 / 3.0,
        }
    }
}

/// Training options for [`RulRegressor`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RulConfig {
    /// Piecewise-linear target: RUL is clipped at this many cycles, because
    /// early life shows no degradation to learn from.
    pub max_rul: f64,
    /// Feature windows.
    pub features: FeatureConfig,
    /// Booster settings.
    pub gbm: GbmConfig,
    /// Use every `stride`-th training cycle (1 = all); larger is faster.
    pub stride: usize,
    /// Operating-regime discovery.
    pub regimes: RegimeConfig,
    /// Sensors whose normalised value correlates with the capped RUL below
    /// this (|r|) on the training rows are dropped.
    pub min_abs_corr: f64,
    /// Prediction interval and CV.
    pub interval: IntervalConfig,
    /// Adds the history of operating regimes: per regime, the fraction of
    /// the unit's cycles so far flown in it (wear accrues at different rates
    /// in different conditions).
    pub regime_history: bool,
    /// Boosters averaged, each with its own seed (`gbm.seed + i`).
    pub ensemble: usize,
    /// The booster is trained only on cycles at or after this fraction of
    /// each unit's life (0 = every cycle). With a high `max_rul` this makes
    /// it learn the expected remaining life of histories cut off like the
    /// test set's (see [`IntervalConfig::truncate_min_fraction`]), instead
    /// of a constant cap for every healthy-looking cycle.
    #[serde(default)]
    pub train_min_fraction: f64,
}

/// The defaults (cap 200 with training on cycles from a quarter of each
/// life on, long window 20, depth 4, one booster) were chosen by 5-fold CV
/// over training units of FD001 and FD002 (mean of the two, the same values
/// for every subset), scoring held-out units cut off like the test set
/// ([`CvReport::rmse_truncated`]) under two cut protocols (kept fraction
/// from 1/3 and from 1/5 of the life, the range the test histories'
/// lengths suggest); see `models/examples/evaluate.rs --cv --set
/// key=value,...` and BENCHMARKS.md.
impl Default for RulConfig {
    fn default() -> Self {
        Self {
            max_rul: 200.0,
            features: FeatureConfig::default(),
            gbm: GbmConfig {
                max_depth: 4,
                ..GbmConfig::default()
            },
            stride: 2,
            regimes: RegimeConfig::default(),
            min_abs_corr: 0.1,
            interval: IntervalConfig::default(),
            regime_history: false,
            ensemble: 1,
            train_min_fraction: 0.25,
        }
    }
}

/// Learned RUL regressor: per-regime normalised sensors, window features,
/// gradient boosting; optionally a conformal interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulRegressor {
    cfg: RulConfig,
    norm: RegimeNormalizer,
    models: Vec<Gbm>,
    interval: Option<Calibration>,
}

fn sensors_of(r: &CmapssRow) -> Vec<f64> {
    r.sensors.to_vec()
}

fn check_units(units: &BTreeMap<u32, Vec<&CmapssRow>>) -> Result<(), ModelError> {
    if units.is_empty() {
        return Err(ModelError::NotEnoughData { need: 1, got: 0 });
    }
    for rows in units.values() {
        if rows.iter().any(|r| {
            r.settings
                .iter()
                .chain(r.sensors.iter())
                .any(|v| !v.is_finite())
        }) {
            return Err(ModelError::NonFinite);
        }
    }
    Ok(())
}

impl RulRegressor {
    /// Trains on run-to-failure histories: the last cycle of each unit is
    /// its failure. No interval (see [`RulRegressor::fit_with_interval`]).
    pub fn fit(train: &[CmapssRow], cfg: RulConfig) -> Result<Self, ModelError> {
        let units = group_units(train);
        check_units(&units)?;
        let refs: Vec<&[&CmapssRow]> = units.values().map(|v| v.as_slice()).collect();
        Self::fit_units(&refs, cfg)
    }

    fn fit_units(units: &[&[&CmapssRow]], cfg: RulConfig) -> Result<Self, ModelError> {
        if cfg.max_rul.is_nan() || cfg.max_rul <= 0.0 {
            return Err(ModelError::InvalidParameter("max_rul must be > 0".into()));
        }
        let mut settings = Vec::new();
        let mut values = Vec::new();
        let mut target = Vec::new();
        for rows in units {
            let last = rows.last().map_or(0, |r| r.cycle) as f64;
            for r in rows.iter() {
                settings.push(r.settings);
                values.push(sensors_of(r));
                target.push((last - r.cycle as f64).min(cfg.max_rul));
            }
        }
        let norm =
            RegimeNormalizer::fit(&settings, &values, &target, cfg.min_abs_corr, &cfg.regimes)?;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for rows in units {
            let last = rows.last().map_or(0, |r| r.cycle) as f64;
            let feats = features_of(&norm, rows, &cfg);
            let first = (cfg.train_min_fraction.clamp(0.0, 1.0) * last).floor() as u32;
            for (i, (r, f)) in rows.iter().zip(feats).enumerate() {
                if (i % cfg.stride.max(1) != 0 && i + 1 != rows.len()) || r.cycle < first {
                    continue;
                }
                x.push(f);
                y.push((last - r.cycle as f64).min(cfg.max_rul));
            }
        }
        let models = (0..cfg.ensemble.max(1))
            .map(|i| {
                Gbm::fit(
                    &x,
                    &y,
                    &GbmConfig {
                        seed: cfg.gbm.seed.wrapping_add(i as u64),
                        ..cfg.gbm
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            cfg,
            norm,
            models,
            interval: None,
        })
    }

    /// Trains like [`RulRegressor::fit`] and calibrates a split-conformal
    /// interval from out-of-fold residuals (folds over training units); also
    /// returns the cross-validation figures.
    pub fn fit_with_interval(
        train: &[CmapssRow],
        cfg: RulConfig,
    ) -> Result<(Self, CvReport), ModelError> {
        let (cv, oof) = cross_validate_inner(train, cfg)?;
        let mut model = Self::fit(train, cfg)?;
        model.interval = Some(Calibration::fit(&oof, &cfg.interval)?);
        Ok((model, cv))
    }

    fn predict_row(&self, f: &[f64]) -> f64 {
        let s: f64 = self.models.iter().map(|m| m.predict(f)).sum();
        (s / self.models.len().max(1) as f64).clamp(0.0, self.cfg.max_rul)
    }

    /// Predictions for every cycle of one unit's history (causal).
    fn predict_all(&self, rows: &[&CmapssRow]) -> Vec<f64> {
        features_of(&self.norm, rows, &self.cfg)
            .iter()
            .map(|f| self.predict_row(f))
            .collect()
    }

    /// Predicts the RUL after the last cycle of one unit's history (`None`
    /// for an empty history).
    pub fn predict_unit(&self, rows: &[&CmapssRow]) -> Option<f64> {
        let feats = features_of(&self.norm, rows, &self.cfg);
        feats.last().map(|f| self.predict_row(f))
    }

    /// Point prediction and interval `(rul, lower, upper)`; without a
    /// calibration the interval is the point.
    pub fn predict_interval(&self, rows: &[&CmapssRow]) -> Option<(f64, f64, f64)> {
        let p = self.predict_unit(rows)?;
        Some(match &self.interval {
            Some(c) => {
                let (lo, hi) = c.bounds(p);
                (p, lo, hi)
            }
            None => (p, p, p),
        })
    }

    /// Predicts one RUL per unit of `test` (ascending unit id).
    pub fn predict_last(&self, test: &[CmapssRow]) -> Vec<(u32, f64)> {
        group_units(test)
            .iter()
            .filter_map(|(u, rows)| self.predict_unit(rows).map(|p| (*u, p)))
            .collect()
    }

    /// Number of operating regimes found in the training settings.
    pub fn regimes(&self) -> usize {
        self.norm.regimes().k()
    }

    /// 1-based sensor numbers kept after normalisation.
    pub fn sensors_kept(&self) -> Vec<usize> {
        self.norm.kept().iter().map(|c| c + 1).collect()
    }
}

fn features_of(norm: &RegimeNormalizer, rows: &[&CmapssRow], cfg: &RulConfig) -> Vec<Vec<f64>> {
    let cycles: Vec<u32> = rows.iter().map(|r| r.cycle).collect();
    let z: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| {
            let mut z = norm.normalise(&r.settings, &r.sensors);
            z.push(norm.health_index(&z));
            z
        })
        .collect();
    let mut feats = unit_features(&cycles, &z, &cfg.features);
    if cfg.regime_history {
        let k = norm.regimes().k();
        let mut count = vec![0usize; k];
        for (i, (r, f)) in rows.iter().zip(feats.iter_mut()).enumerate() {
            count[norm.regimes().assign(&r.settings).min(k - 1)] += 1;
            f.extend(count.iter().map(|c| *c as f64 / (i + 1) as f64));
        }
    }
    feats
}

/// Split-conformal interval with residual groups by predicted RUL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Upper edges of the predicted-RUL groups (last group is open).
    edges: Vec<f64>,
    /// Per group: lower and upper residual quantiles (truth − predicted).
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Nominal coverage.
    pub coverage: f64,
}

/// One out-of-fold point: (predicted, true RUL).
type Oof = (f64, f64);

fn conformal_bounds(res: &mut [f64], alpha: f64) -> (f64, f64) {
    res.sort_by(f64::total_cmp);
    let n = res.len();
    if n == 0 {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    // Two one-sided split-conformal quantiles at α/2 each.
    let k_hi = (((n + 1) as f64) * (1.0 - alpha / 2.0)).ceil() as usize;
    let k_lo = (((n + 1) as f64) * (alpha / 2.0)).floor() as usize;
    let hi = if k_hi > n {
        f64::INFINITY
    } else {
        res[k_hi.max(1) - 1]
    };
    let lo = if k_lo < 1 {
        f64::NEG_INFINITY
    } else {
        res[k_lo.min(n) - 1]
    };
    (lo, hi)
}

impl Calibration {
    /// Fits from out-of-fold (predicted, truth) pairs.
    pub fn fit(oof: &[(f64, f64)], cfg: &IntervalConfig) -> Result<Self, ModelError> {
        if !(cfg.coverage > 0.0 && cfg.coverage < 1.0) || cfg.bins == 0 {
            return Err(ModelError::InvalidParameter(
                "interval: coverage in (0,1), bins ≥ 1".into(),
            ));
        }
        if oof.is_empty() {
            return Err(ModelError::NotEnoughData { need: 1, got: 0 });
        }
        if oof.iter().any(|(p, t)| !p.is_finite() || !t.is_finite()) {
            return Err(ModelError::NonFinite);
        }
        let alpha = 1.0 - cfg.coverage;
        let preds: Vec<f64> = oof.iter().map(|(p, _)| *p).collect();
        let mut edges: Vec<f64> = (1..cfg.bins)
            .map(|i| prognos_stats::sample::quantile(&preds, i as f64 / cfg.bins as f64))
            .collect();
        edges.dedup();
        let g = |p: f64, edges: &[f64]| edges.partition_point(|e| *e < p);
        let mut groups = vec![Vec::new(); edges.len() + 1];
        for (p, t) in oof {
            groups[g(*p, &edges)].push(t - p);
        }
        let (mut lo, mut hi) = (Vec::new(), Vec::new());
        for grp in &mut groups {
            let (l, h) = conformal_bounds(grp, alpha);
            lo.push(l);
            hi.push(h);
        }
        Ok(Self {
            edges,
            lo,
            hi,
            coverage: cfg.coverage,
        })
    }

    /// Interval `(lower, upper)` for a predicted RUL; lower ≥ 0.
    pub fn bounds(&self, p: f64) -> (f64, f64) {
        let i = self
            .edges
            .partition_point(|e| *e < p)
            .min(self.lo.len().saturating_sub(1));
        match (self.lo.get(i), self.hi.get(i)) {
            (Some(l), Some(h)) => ((p + l).max(0.0), (p + h).max(0.0)),
            _ => (0.0, f64::INFINITY),
        }
    }
}

/// Cross-validation over training units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CvReport {
    /// Folds used.
    pub folds: usize,
    /// RMSE over held-out cycles with true RUL ≤ `cv_max_rul` (unclipped truth).
    pub rmse: f64,
    /// Mean PHM08 term per scored point, ×100 (so it reads like the test
    /// sum over 100 units).
    pub score_per_100: f64,
    /// Held-out cycles scored.
    pub points: usize,
    /// RMSE over every held-out cycle from `min_cycles` on, whatever its
    /// true RUL (each unit observed at every point of its life).
    pub rmse_all: f64,
    /// Held-out cycles in `rmse_all`.
    pub points_all: usize,
    /// RMSE at the last cycle of held-out units cut off at random points
    /// (`truncations` per unit), unclipped truth: mimics the test metric.
    pub rmse_truncated: f64,
    /// Mean PHM08 term per truncated unit, ×100.
    pub score_truncated_per_100: f64,
    /// Truncated held-out units scored.
    pub points_truncated: usize,
    /// Smallest number of regimes found over the folds.
    pub regimes_min: usize,
    /// Largest number of regimes found over the folds.
    pub regimes_max: usize,
}

/// K-fold CV over training units (split by unit, deterministic).
pub fn cross_validate(train: &[CmapssRow], cfg: RulConfig) -> Result<CvReport, ModelError> {
    cross_validate_inner(train, cfg).map(|(r, _)| r)
}

fn cross_validate_inner(
    train: &[CmapssRow],
    cfg: RulConfig,
) -> Result<(CvReport, Vec<Oof>), ModelError> {
    let units = group_units(train);
    check_units(&units)?;
    let k = cfg.interval.folds;
    if k < 2 || k > units.len() {
        return Err(ModelError::InvalidParameter(format!(
            "folds must be in 2..={} (units)",
            units.len()
        )));
    }
    // Deterministic shuffle of the units, then round-robin folds.
    let mut order: Vec<&Vec<&CmapssRow>> = units.values().collect();
    let mut rng = prognos_stats::sample::XorShift::new(0x5EED ^ cfg.gbm.seed);
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut oof = Vec::new();
    let (mut sq, mut sc, mut n) = (0.0, 0.0, 0usize);
    let mut sq_all = 0.0;
    let (mut sq_tr, mut sc_tr, mut n_tr) = (0.0, 0.0, 0usize);
    let mut cut_rng = prognos_stats::sample::XorShift::new(0xC0FFEE);
    let (mut rmin, mut rmax) = (usize::MAX, 0);
    for f in 0..k {
        let fit_units: Vec<&[&CmapssRow]> = order
            .iter()
            .enumerate()
            .filter(|(i, _)| i % k != f)
            .map(|(_, u)| u.as_slice())
            .collect();
        let m = RulRegressor::fit_units(&fit_units, cfg)?;
        rmin = rmin.min(m.regimes());
        rmax = rmax.max(m.regimes());
        for (_, rows) in order.iter().enumerate().filter(|(i, _)| i % k == f) {
            let last = rows.last().map_or(0, |r| r.cycle) as f64;
            let preds = m.predict_all(rows);
            let lo = cfg.interval.truncate_min_fraction.clamp(0.0, 1.0);
            for _ in 0..cfg.interval.truncations {
                let f = lo + (1.0 - lo) * cut_rng.next_f64();
                let keep = ((f * last).floor() as u32).max(cfg.interval.min_cycles);
                let i = rows.iter().rposition(|r| r.cycle <= keep).unwrap_or(0);
                if let (Some(r), Some(p)) = (rows.get(i), preds.get(i)) {
                    let t = last - r.cycle as f64;
                    sq_tr += (p - t) * (p - t);
                    sc_tr += crate::metrics::phm08_score(&[*p], &[t]);
                    n_tr += 1;
                }
            }
            for (r, p) in rows.iter().zip(preds) {
                if r.cycle < cfg.interval.min_cycles {
                    continue;
                }
                let t = last - r.cycle as f64;
                oof.push((p, t));
                sq_all += (p - t) * (p - t);
                if t <= cfg.interval.cv_max_rul {
                    sq += (p - t) * (p - t);
                    sc += crate::metrics::phm08_score(&[p], &[t]);
                    n += 1;
                }
            }
        }
    }
    let nn = n.max(1) as f64;
    Ok((
        CvReport {
            folds: k,
            rmse: (sq / nn).sqrt(),
            score_per_100: 100.0 * sc / nn,
            points: n,
            rmse_all: (sq_all / oof.len().max(1) as f64).sqrt(),
            points_all: oof.len(),
            rmse_truncated: (sq_tr / n_tr.max(1) as f64).sqrt(),
            score_truncated_per_100: 100.0 * sc_tr / n_tr.max(1) as f64,
            points_truncated: n_tr,
            regimes_min: rmin,
            regimes_max: rmax,
        },
        oof,
    ))
}

/// Per-unit C-MAPSS result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmapssUnitResult {
    /// Unit id.
    pub unit: u32,
    /// Predicted RUL at the last test cycle.
    pub predicted: f64,
    /// Lower end of the prediction interval.
    pub lower: f64,
    /// Upper end of the prediction interval.
    pub upper: f64,
    /// True RUL from `RUL_FD00x.txt`.
    pub truth: f64,
}

/// Overall C-MAPSS metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CmapssOverall {
    /// Root mean squared error over units (unclipped truth).
    pub rmse: f64,
    /// PHM08 score (sum over units).
    pub score: f64,
    /// Units evaluated.
    pub units: usize,
    /// Nominal interval coverage.
    pub interval_nominal: f64,
    /// Fraction of test units whose true RUL lies in the interval.
    pub interval_coverage: f64,
    /// Mean interval width (cycles).
    pub interval_mean_width: f64,
}

/// C-MAPSS evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmapssReport {
    /// Headline numbers on the test set.
    pub overall: CmapssOverall,
    /// Cross-validation over training units (same configuration).
    pub cv: CvReport,
    /// Operating regimes found in the training settings.
    pub regimes: usize,
    /// 1-based sensors kept.
    pub sensors_kept: Vec<usize>,
    /// Per-unit predictions.
    pub units: Vec<CmapssUnitResult>,
    /// Configuration used.
    pub config: RulConfig,
}

/// Trains on `train` (with CV and a conformal interval), predicts the last
/// cycle of each `test` unit and scores against `truth` (line i = unit i),
/// using the unclipped true RUL.
pub fn evaluate_cmapss(
    train: &[CmapssRow],
    test: &[CmapssRow],
    truth: &[f64],
    cfg: RulConfig,
) -> Result<CmapssReport, ModelError> {
    let (model, cv) = RulRegressor::fit_with_interval(train, cfg)?;
    let mut units = Vec::new();
    for (u, rows) in group_units(test) {
        let Some((p, lo, hi)) = model.predict_interval(&rows) else {
            continue;
        };
        let t = truth
            .get((u as usize).wrapping_sub(1))
            .copied()
            .ok_or_else(|| ModelError::MissingLabels(format!("no true RUL for unit {u}")))?;
        units.push(CmapssUnitResult {
            unit: u,
            predicted: p,
            lower: lo,
            upper: hi,
            truth: t,
        });
    }
    let pred: Vec<f64> = units.iter().map(|u| u.predicted).collect();
    let tr: Vec<f64> = units.iter().map(|u| u.truth).collect();
    let nu = units.len().max(1) as f64;
    let covered = units
        .iter()
        .filter(|u| u.lower <= u.truth && u.truth <= u.upper)
        .count();
    Ok(CmapssReport {
        overall: CmapssOverall {
            rmse: crate::metrics::rmse(&pred, &tr),
            score: crate::metrics::phm08_score(&pred, &tr),
            units: units.len(),
            interval_nominal: cfg.interval.coverage,
            interval_coverage: covered as f64 / nu,
            interval_mean_width: units.iter().map(|u| u.upper - u.lower).sum::<f64>() / nu,
        },
        cv,
        regimes: model.regimes(),
        sensors_kept: model.sensors_kept(),
        units,
        config: cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_trend_reaches_threshold() {
        let t: Vec<f64> = (0..20).map(|i| i as f64).collect();
        let h: Vec<f64> = t
            .iter()
            .map(|v| 1.0 + 0.5 * v + if (*v as i64) % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        let e = extrapolate_trend(&t, &h, 20.0, TrendKind::Linear)
            .unwrap()
            .unwrap();
        // Crossing at t = 38, now t = 19 → RUL ≈ 19.
        assert!((e.rul - 19.0).abs() < 0.5, "{e:?}");
        assert!(e.lower <= e.rul && e.rul <= e.upper);
        // Falling threshold never reached by a rising trend.
        assert!(
            extrapolate_trend(&t, &h, -5.0, TrendKind::Linear)
                .unwrap()
                .is_none()
                || extrapolate_trend(&t, &h, -5.0, TrendKind::Linear)
                    .unwrap()
                    .is_some_and(|e| e.rul == 0.0)
        );
    }

    #[test]
    fn exponential_trend() {
        let t: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let h: Vec<f64> = t.iter().map(|v| (0.1 * v).exp()).collect();
        let e = extrapolate_trend(&t, &h, (0.1f64 * 50.0).exp(), TrendKind::Exponential)
            .unwrap()
            .unwrap();
        assert!((e.rul - 21.0).abs() < 1e-6, "{e:?}");
        assert!(extrapolate_trend(&t, &[0.0; 30], 1.0, TrendKind::Exponential).is_err());
    }

    fn fleet(units: u32, seed: u64) -> Vec<CmapssRow> {
        let mut rng = prognos_stats::sample::XorShift::new(seed);
        let mut rows = Vec::new();
        for u in 1..=units {
            let life = 40 + (rng.next_u64() % 40) as u32;
            for c in 1..=life {
                let regime = (rng.next_u64() % 2) as usize;
                let wear = (c as f64 / life as f64).powi(2);
                let mut sensors = [0.0; 21];
                for (i, s) in sensors.iter_mut().enumerate() {
                    *s = 50.0 * regime as f64 + i as f64 + 0.1 * rng.next_f64();
                }
                sensors[1] += 5.0 * wear;
                sensors[2] -= 3.0 * wear;
                sensors[4] = 7.0; // constant channel
                rows.push(CmapssRow {
                    unit: u,
                    cycle: c,
                    settings: [20.0 * regime as f64, 0.5 * regime as f64, 100.0],
                    sensors,
                });
            }
        }
        rows
    }

    fn small_cfg() -> RulConfig {
        RulConfig {
            max_rul: 30.0,
            stride: 1,
            gbm: GbmConfig {
                n_trees: 30,
                learning_rate: 0.2,
                max_depth: 3,
                min_samples_leaf: 5,
                ..GbmConfig::default()
            },
            interval: IntervalConfig {
                folds: 3,
                min_cycles: 1,
                ..IntervalConfig::default()
            },
            ..RulConfig::default()
        }
    }

    #[test]
    fn regressor_handles_regimes_and_edge_cases() {
        let train = fleet(12, 1);
        let (m, cv) = RulRegressor::fit_with_interval(&train, small_cfg()).unwrap();
        assert_eq!(m.regimes(), 2);
        assert!(m.sensors_kept().contains(&2) && m.sensors_kept().contains(&3));
        assert!(!m.sensors_kept().contains(&5));
        assert!(cv.rmse.is_finite() && cv.points > 0);
        // Near failure the prediction is small; early it is near the cap.
        let test = fleet(4, 2);
        let units = group_units(&test);
        for rows in units.values() {
            let (p, lo, hi) = m.predict_interval(rows).unwrap();
            assert!(p < 12.0, "{p}");
            assert!(0.0 <= lo && lo <= p && p <= hi);
            let (early, _, _) = m.predict_interval(&rows[..3]).unwrap();
            assert!(early > 18.0, "{early}");
        }
        // A unit with one cycle, or none.
        let first = units.values().next().unwrap();
        assert!(m.predict_unit(&first[..1]).is_some());
        assert!(m.predict_unit(&[]).is_none());
        // Typed errors, not panics.
        assert!(RulRegressor::fit(&[], small_cfg()).is_err());
        let mut bad = train.clone();
        bad[3].sensors[1] = f64::NAN;
        assert_eq!(
            RulRegressor::fit(&bad, small_cfg()),
            Err(ModelError::NonFinite)
        );
        let one: Vec<CmapssRow> = train.iter().filter(|r| r.cycle == 1).cloned().collect();
        assert!(RulRegressor::fit(&one, small_cfg()).is_ok());
        let few: Vec<CmapssRow> = train.iter().filter(|r| r.unit <= 2).cloned().collect();
        assert!(RulRegressor::fit_with_interval(&few, small_cfg()).is_err());
    }

    #[test]
    fn conformal_interval_covers_at_nominal_rate() {
        // Residual spread grows with the prediction: groups must adapt.
        let mut rng = prognos_stats::sample::XorShift::new(4);
        let mut draw = |n: usize| -> Vec<(f64, f64)> {
            (0..n)
                .map(|_| {
                    let p = 100.0 * rng.next_f64();
                    let e = (rng.next_f64() - 0.5) * (2.0 + 0.4 * p);
                    (p, p + e)
                })
                .collect()
        };
        let cfg = IntervalConfig::default();
        let c = Calibration::fit(&draw(4000), &cfg).unwrap();
        let fresh = draw(4000);
        let covered = fresh
            .iter()
            .filter(|(p, t)| {
                let (lo, hi) = c.bounds(*p);
                lo <= *t && *t <= hi
            })
            .count() as f64
            / fresh.len() as f64;
        assert!((covered - 0.9).abs() < 0.03, "{covered}");
        let w = |p: f64| {
            let (lo, hi) = c.bounds(p);
            hi - lo
        };
        assert!(w(95.0) > 3.0 * w(5.0), "{} {}", w(95.0), w(5.0));
        assert!(c.bounds(0.5).0 >= 0.0);
        assert!(Calibration::fit(&[], &cfg).is_err());
        assert!(Calibration::fit(&[(f64::NAN, 1.0)], &cfg).is_err());
        let bad = IntervalConfig {
            coverage: 1.5,
            ..cfg
        };
        assert!(Calibration::fit(&draw(10), &bad).is_err());
    }
}
