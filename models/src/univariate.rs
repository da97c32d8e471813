//! Univariate causal detectors with bounded memory.
//!
//! Each detector sees one value at a time; the score for a sample depends
//! only on that sample and earlier ones. Baselines come either from
//! [`UnivariateDetector::fit`] on a healthy window (then frozen) or from the
//! first `warmup` samples of the stream.

use crate::detector::{Detector, Score};
use crate::error::ModelError;
use prognos_stats::sample::{mad, mean, median, std_dev};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A single-metric online detector.
pub trait UnivariateDetector {
    /// Freezes the baseline on a healthy window (optional; otherwise the
    /// detector calibrates itself from the start of the stream).
    fn fit(&mut self, healthy: &[f64]) -> Result<(), ModelError>;
    /// Feeds one value. Non-finite values are rejected without changing state.
    fn update(&mut self, x: f64) -> Result<Score, ModelError>;
}

fn check(x: f64) -> Result<f64, ModelError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(ModelError::NonFinite)
    }
}

/// Guards a scale estimate against zero (constant signals) so ratios stay finite.
fn floor_scale(s: f64, level: f64) -> f64 {
    s.max(1e-6 * level.abs().max(1.0))
}

/// Fixed threshold with hysteresis and a minimum duration: raises after
/// `min_samples` consecutive values ≥ `high`, clears only once a value falls
/// below `clear`. Why: a value hovering at the limit must not flap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    high: f64,
    clear: f64,
    min_samples: usize,
    run: usize,
    active: bool,
}

impl Threshold {
    /// `clear` must be below `high` (for an upper limit).
    pub fn new(high: f64, clear: f64, min_samples: usize) -> Result<Self, ModelError> {
        if !(high.is_finite() && clear.is_finite() && clear < high) {
            return Err(ModelError::InvalidParameter(
                "threshold needs finite clear < high".into(),
            ));
        }
        Ok(Self {
            high,
            clear,
            min_samples: min_samples.max(1),
            run: 0,
            active: false,
        })
    }
}

impl UnivariateDetector for Threshold {
    fn fit(&mut self, _healthy: &[f64]) -> Result<(), ModelError> {
        Ok(())
    }
    fn update(&mut self, x: f64) -> Result<Score, ModelError> {
        let x = check(x)?;
        if x >= self.high {
            self.run += 1;
            if self.run >= self.min_samples {
                self.active = true;
            }
        } else {
            self.run = 0;
            if x < self.clear {
                self.active = false;
            }
        }
        let ratio = (x - self.clear) / (self.high - self.clear);
        Ok(Score::new(ratio, self.active))
    }
}

/// Robust z-score against a trailing window's median and MAD (scaled by
/// 1.4826 to estimate σ). Why robust: one spike must not inflate the scale
/// and mask the next one, as a mean/σ window would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustZ {
    window: usize,
    threshold: f64,
    min_samples: usize,
    buf: VecDeque<f64>,
    frozen: Option<(f64, f64)>,
}

impl RobustZ {
    /// `window` samples of history, alarm at |z| > `threshold` (3.5 is usual).
    pub fn new(window: usize, threshold: f64) -> Result<Self, ModelError> {
        if window < 3 || threshold <= 0.0 {
            return Err(ModelError::InvalidParameter(
                "robust z needs window >= 3 and threshold > 0".into(),
            ));
        }
        Ok(Self {
            window,
            threshold,
            min_samples: (window / 4).max(3),
            buf: VecDeque::with_capacity(window),
            frozen: None,
        })
    }
}

impl UnivariateDetector for RobustZ {
    fn fit(&mut self, healthy: &[f64]) -> Result<(), ModelError> {
        if healthy.len() < 3 {
            return Err(ModelError::NotEnoughData {
                need: 3,
                got: healthy.len(),
            });
        }
        let m = median(healthy);
        self.frozen = Some((m, floor_scale(1.4826 * mad(healthy), m)));
        Ok(())
    }
    fn update(&mut self, x: f64) -> Result<Score, ModelError> {
        let x = check(x)?;
        let base = match self.frozen {
            Some(b) => Some(b),
            None if self.buf.len() >= self.min_samples => {
                let v: Vec<f64> = self.buf.iter().copied().collect();
                let m = median(&v);
                Some((m, floor_scale(1.4826 * mad(&v), m)))
            }
            None => None,
        };
        if self.frozen.is_none() {
            if self.buf.len() == self.window {
                self.buf.pop_front();
            }
            self.buf.push_back(x);
        }
        Ok(match base {
            Some((m, s)) => {
                let ratio = ((x - m) / s).abs() / self.threshold;
                Score::new(ratio, ratio > 1.0)
            }
            None => Score::new(0.0, false),
        })
    }
}

/// Baseline learned from the first samples, shared by EWMA and CUSUM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Baseline {
    warmup: usize,
    seen: Vec<f64>,
    params: Option<(f64, f64)>,
}

impl Baseline {
    fn new(warmup: usize) -> Self {
        Self {
            warmup: warmup.max(3),
            seen: Vec::new(),
            params: None,
        }
    }
    fn fit(&mut self, healthy: &[f64]) -> Result<(), ModelError> {
        if healthy.len() < 3 {
            return Err(ModelError::NotEnoughData {
                need: 3,
                got: healthy.len(),
            });
        }
        let m = mean(healthy);
        self.params = Some((m, floor_scale(std_dev(healthy, 1), m)));
        self.seen = Vec::new();
        Ok(())
    }
    /// Returns the baseline if known; otherwise records `x` toward it.
    fn observe(&mut self, x: f64) -> Option<(f64, f64)> {
        if self.params.is_none() {
            self.seen.push(x);
            if self.seen.len() >= self.warmup {
                let m = mean(&self.seen);
                self.params = Some((m, floor_scale(std_dev(&self.seen, 1), m)));
                self.seen = Vec::new();
            }
            return None;
        }
        self.params
    }
}

/// EWMA control chart: smooths the signal with factor λ and alarms when the
/// smoothed value leaves μ₀ ± L·σ·√(λ/(2−λ)). Why: small sustained shifts
/// that a per-sample threshold misses accumulate in the average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    lambda: f64,
    l: f64,
    base: Baseline,
    z: Option<f64>,
}

impl Ewma {
    /// λ in (0, 1], L > 0 (λ = 0.2, L = 3 is a common choice).
    pub fn new(lambda: f64, l: f64, warmup: usize) -> Result<Self, ModelError> {
        if !(lambda > 0.0 && lambda <= 1.0 && l > 0.0) {
            return Err(ModelError::InvalidParameter(
                "EWMA needs lambda in (0,1] and L > 0".into(),
            ));
        }
        Ok(Self {
            lambda,
            l,
            base: Baseline::new(warmup),
            z: None,
        })
    }
}

impl UnivariateDetector for Ewma {
    fn fit(&mut self, healthy: &[f64]) -> Result<(), ModelError> {
        self.base.fit(healthy)
    }
    fn update(&mut self, x: f64) -> Result<Score, ModelError> {
        let x = check(x)?;
        let Some((m, s)) = self.base.observe(x) else {
            return Ok(Score::new(0.0, false));
        };
        let z = self.lambda * x + (1.0 - self.lambda) * self.z.unwrap_or(m);
        self.z = Some(z);
        let limit = self.l * s * (self.lambda / (2.0 - self.lambda)).sqrt();
        let ratio = (z - m).abs() / limit;
        Ok(Score::new(ratio, ratio > 1.0))
    }
}

/// Two-sided tabular CUSUM in σ units (reference k, decision h). Why: the
/// optimal detector for a slow drift or small persistent mean shift; it
/// accumulates evidence that EWMA would partly forget. Not reset after an
/// alarm, so the alarm persists while the drift does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    k: f64,
    h: f64,
    base: Baseline,
    pos: f64,
    neg: f64,
}

impl Cusum {
    /// k = 0.5 and h = 5 (in σ) detect a 1σ shift quickly with rare false alarms.
    pub fn new(k: f64, h: f64, warmup: usize) -> Result<Self, ModelError> {
        if !(k >= 0.0 && h > 0.0 && k.is_finite() && h.is_finite()) {
            return Err(ModelError::InvalidParameter(
                "CUSUM needs k >= 0 and h > 0".into(),
            ));
        }
        Ok(Self {
            k,
            h,
            base: Baseline::new(warmup),
            pos: 0.0,
            neg: 0.0,
        })
    }
}

impl UnivariateDetector for Cusum {
    fn fit(&mut self, healthy: &[f64]) -> Result<(), ModelError> {
        self.base.fit(healthy)
    }
    fn update(&mut self, x: f64) -> Result<Score, ModelError> {
        let x = check(x)?;
        let Some((m, s)) = self.base.observe(x) else {
            return Ok(Score::new(0.0, false));
        };
        let z = (x - m) / s;
        // Cap the statistics so an endless drift cannot overflow.
        self.pos = (self.pos + z - self.k).clamp(0.0, 1e12);
        self.neg = (self.neg - z - self.k).clamp(0.0, 1e12);
        let ratio = self.pos.max(self.neg) / self.h;
        Ok(Score::new(ratio, ratio > 1.0))
    }
}

/// Runs one univariate detector per column of a multivariate sample and
/// reports the worst column: a multivariate [`Detector`] built from
/// univariate parts.
pub struct PerColumn {
    detectors: Vec<Box<dyn UnivariateDetector + Send>>,
}

impl std::fmt::Debug for PerColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerColumn")
            .field("columns", &self.detectors.len())
            .finish()
    }
}

impl PerColumn {
    /// One detector per column, in column order.
    pub fn new(detectors: Vec<Box<dyn UnivariateDetector + Send>>) -> Self {
        Self { detectors }
    }
    /// Fits each column's detector on its column of `healthy`.
    pub fn fit(&mut self, healthy: &[Vec<f64>]) -> Result<(), ModelError> {
        for (j, d) in self.detectors.iter_mut().enumerate() {
            let col: Vec<f64> = healthy
                .iter()
                .map(|r| r.get(j).copied().unwrap_or(f64::NAN))
                .collect();
            if col.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite);
            }
            d.fit(&col)?;
        }
        Ok(())
    }
}

impl Detector for PerColumn {
    fn update(&mut self, x: &[f64]) -> Result<Score, ModelError> {
        if x.len() != self.detectors.len() {
            return Err(ModelError::Dimension {
                expected: self.detectors.len(),
                got: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite);
        }
        let mut ratio: f64 = 0.0;
        let mut any = false;
        for (d, v) in self.detectors.iter_mut().zip(x) {
            let s = d.update(*v)?;
            ratio = ratio.max(s.ratio);
            any |= s.is_anomaly;
        }
        Ok(Score::new(ratio, any))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prognos_stats::sample::XorShift;

    fn noise(rng: &mut XorShift) -> f64 {
        rng.next_f64() - 0.5
    }

    /// First index ≥ `from` flagged anomalous.
    fn first_alarm(d: &mut dyn UnivariateDetector, xs: &[f64], from: usize) -> Option<usize> {
        let mut first = None;
        for (i, x) in xs.iter().enumerate() {
            let s = d.update(*x).unwrap();
            assert!(s.anomaly_score.is_finite() && (0.0..=1.0).contains(&s.anomaly_score));
            if s.is_anomaly && i >= from && first.is_none() {
                first = Some(i);
            }
        }
        first
    }

    #[test]
    fn threshold_hysteresis_does_not_flap() {
        let mut t = Threshold::new(10.0, 8.0, 2).unwrap();
        let xs = [5.0, 11.0, 9.0, 11.0, 11.0, 9.0, 10.5, 7.0, 9.0];
        let flags: Vec<bool> = xs
            .iter()
            .map(|x| t.update(*x).unwrap().is_anomaly)
            .collect();
        assert_eq!(
            flags,
            [false, false, false, false, true, true, true, false, false]
        );
        assert!(Threshold::new(1.0, 2.0, 1).is_err());
    }

    #[test]
    fn robust_z_detects_step_not_noise() {
        let mut rng = XorShift::new(1);
        let xs: Vec<f64> = (0..400)
            .map(|i| noise(&mut rng) + if i >= 300 { 5.0 } else { 0.0 })
            .collect();
        let mut d = RobustZ::new(60, 3.5).unwrap();
        let mut false_alarms = 0;
        for x in &xs[..300] {
            false_alarms += d.update(*x).unwrap().is_anomaly as usize;
        }
        assert!(false_alarms <= 3, "{false_alarms}");
        assert!(d.update(xs[300]).unwrap().is_anomaly);
    }

    #[test]
    fn ewma_and_cusum_catch_slow_drift() {
        let mut rng = XorShift::new(2);
        // Drift of 0.005 per sample starting at 200 (σ ≈ 0.29).
        let xs: Vec<f64> = (0..600)
            .map(|i| {
                noise(&mut rng)
                    + if i >= 200 {
                        0.005 * (i - 200) as f64
                    } else {
                        0.0
                    }
            })
            .collect();
        let mut c = Cusum::new(0.5, 5.0, 100).unwrap();
        let mut e = Ewma::new(0.1, 3.0, 100).unwrap();
        let fc = first_alarm(&mut c, &xs, 0).unwrap();
        let fe = first_alarm(&mut e, &xs, 0).unwrap();
        assert!((200..350).contains(&fc), "cusum {fc}");
        assert!((200..400).contains(&fe), "ewma {fe}");
    }

    #[test]
    fn constant_signal_is_finite_and_quiet() {
        let mut d = RobustZ::new(10, 3.5).unwrap();
        let mut c = Cusum::new(0.5, 5.0, 5).unwrap();
        for _ in 0..50 {
            assert!(!d.update(1.0).unwrap().is_anomaly);
            assert!(!c.update(1.0).unwrap().is_anomaly);
        }
        assert!(d.update(f64::NAN).is_err());
    }
}
