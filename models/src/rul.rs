//! Health indicators and remaining useful life (RUL).
//!
//! Two complementary estimators:
//! - [`extrapolate_trend`]: fit a linear or exponential trend to a health
//!   indicator and extrapolate to a failure threshold, with an interval from
//!   the fit residuals. Needs no fleet history, so it works from day one.
//! - [`RulRegressor`]: gradient boosting over sliding-window features,
//!   trained on run-to-failure histories of a fleet (C-MAPSS style).

use crate::error::ModelError;
use crate::gbm::{Gbm, GbmConfig};
use crate::parse::CmapssRow;
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
    let tm = crate::stats::mean(&t[..n]);
    let ym = crate::stats::mean(&y);
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

/// 1-based C-MAPSS sensors that carry degradation signal in FD001 (the
/// others are constant or nearly so and are dropped by convention).
pub const CMAPSS_SENSORS: [usize; 14] = [2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21];

/// Sliding-window feature options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// Short trailing mean window (cycles).
    pub short_window: usize,
    /// Long window for the mean and the least-squares slope (cycles).
    pub long_window: usize,
    /// EWMA smoothing factor.
    pub ewma_alpha: f64,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            short_window: 5,
            long_window: 30,
            ewma_alpha: 0.1,
        }
    }
}

fn slope(v: &[f64]) -> f64 {
    let n = v.len();
    if n < 2 {
        return 0.0;
    }
    let tm = (n as f64 - 1.0) / 2.0;
    let ym = crate::stats::mean(v);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in v.iter().enumerate() {
        let d = i as f64 - tm;
        sxy += d * (y - ym);
        sxx += d * d;
    }
    sxy / sxx
}

/// Features for every cycle of one unit's history (rows sorted by cycle).
/// Causal: the features of cycle t use cycles ≤ t only.
pub fn unit_features(rows: &[&CmapssRow], cfg: &FeatureConfig) -> Vec<Vec<f64>> {
    let series: Vec<Vec<f64>> = CMAPSS_SENSORS
        .iter()
        .map(|&s| rows.iter().map(|r| r.sensors[s - 1]).collect())
        .collect();
    let ewmas: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut e = s.first().copied().unwrap_or(0.0);
            s.iter()
                .map(|v| {
                    e = cfg.ewma_alpha * v + (1.0 - cfg.ewma_alpha) * e;
                    e
                })
                .collect()
        })
        .collect();
    (0..rows.len())
        .map(|t| {
            let mut f = Vec::with_capacity(1 + 4 * series.len());
            f.push(rows[t].cycle as f64);
            for (s, e) in series.iter().zip(&ewmas) {
                let short = &s[(t + 1).saturating_sub(cfg.short_window)..=t];
                let long = &s[(t + 1).saturating_sub(cfg.long_window)..=t];
                f.push(crate::stats::mean(short));
                f.push(crate::stats::mean(long));
                f.push(e[t]);
                f.push(slope(long));
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
}

impl Default for RulConfig {
    fn default() -> Self {
        Self {
            max_rul: 125.0,
            features: FeatureConfig::default(),
            gbm: GbmConfig::default(),
            stride: 1,
        }
    }
}

/// Learned RUL regressor over sliding-window features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulRegressor {
    cfg: RulConfig,
    model: Gbm,
}

impl RulRegressor {
    /// Trains on run-to-failure histories: the last cycle of each unit is
    /// its failure.
    pub fn fit(train: &[CmapssRow], cfg: RulConfig) -> Result<Self, ModelError> {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for rows in group_units(train).values() {
            let last = rows.last().map(|r| r.cycle).unwrap_or(0) as f64;
            let feats = unit_features(rows, &cfg.features);
            for (i, (r, f)) in rows.iter().zip(feats).enumerate() {
                if i % cfg.stride.max(1) != 0 && i + 1 != rows.len() {
                    continue;
                }
                x.push(f);
                y.push((last - r.cycle as f64).min(cfg.max_rul));
            }
        }
        let model = Gbm::fit(&x, &y, &cfg.gbm)?;
        Ok(Self { cfg, model })
    }

    /// Predicts the RUL after the last cycle of one unit's history.
    pub fn predict_unit(&self, rows: &[&CmapssRow]) -> Option<f64> {
        let feats = unit_features(rows, &self.cfg.features);
        feats
            .last()
            .map(|f| self.model.predict(f).clamp(0.0, self.cfg.max_rul))
    }

    /// Predicts one RUL per unit of `test` (ascending unit id).
    pub fn predict_last(&self, test: &[CmapssRow]) -> Vec<(u32, f64)> {
        group_units(test)
            .iter()
            .filter_map(|(u, rows)| self.predict_unit(rows).map(|p| (*u, p)))
            .collect()
    }
}

/// Per-unit C-MAPSS result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmapssUnitResult {
    /// Unit id.
    pub unit: u32,
    /// Predicted RUL at the last test cycle.
    pub predicted: f64,
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
}

/// C-MAPSS evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmapssReport {
    /// Headline numbers.
    pub overall: CmapssOverall,
    /// Per-unit predictions.
    pub units: Vec<CmapssUnitResult>,
    /// Configuration used.
    pub config: RulConfig,
}

/// Trains on `train`, predicts the last cycle of each `test` unit and scores
/// against `truth` (line i = unit i), using the unclipped true RUL.
pub fn evaluate_cmapss(
    train: &[CmapssRow],
    test: &[CmapssRow],
    truth: &[f64],
    cfg: RulConfig,
) -> Result<CmapssReport, ModelError> {
    let model = RulRegressor::fit(train, cfg)?;
    let mut units = Vec::new();
    for (u, p) in model.predict_last(test) {
        let t = truth
            .get((u as usize).wrapping_sub(1))
            .copied()
            .ok_or_else(|| ModelError::MissingLabels(format!("no true RUL for unit {u}")))?;
        units.push(CmapssUnitResult {
            unit: u,
            predicted: p,
            truth: t,
        });
    }
    let pred: Vec<f64> = units.iter().map(|u| u.predicted).collect();
    let tr: Vec<f64> = units.iter().map(|u| u.truth).collect();
    Ok(CmapssReport {
        overall: CmapssOverall {
            rmse: crate::metrics::rmse(&pred, &tr),
            score: crate::metrics::phm08_score(&pred, &tr),
            units: units.len(),
        },
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
}
