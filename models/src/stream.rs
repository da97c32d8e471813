//! Calibrated streaming anomaly scoring for any single stream, and per column
//! of a multi-column table (the default of `prognos score`).
//!
//! Each stream is watched by three robust, adaptive surprise statistics:
//!
//! - **level**: |x − median| / (1.4826·MAD) over a trailing window (spikes,
//!   level shifts, variance increases);
//! - **step**: the same on first differences (onsets on smooth or
//!   random-walk-like signals, where the level window is dominated by trend);
//! - **drift**: the trailing median against a slow exponentially weighted
//!   reference, in units of the slow average scale (slow drifts);
//! - **stuck**: the length of the current run of unchanged values (a sensor
//!   stuck at a constant, or a signal that goes flat).
//!
//! Every scale has a floor (a fraction of the level, never zero), so a flat
//! line gives finite statistics and a change out of it is very surprising.
//!
//! Why calibration and not `ratio / (1 + ratio)`: each statistic is turned
//! into an upper-tail probability under **its own** running, exponentially
//! forgotten histogram (log-spaced bins, bounded memory), with an exponential
//! tail extrapolated from its 90 % and 99 % quantiles beyond the data (so a
//! value never seen before gets a small p-value instead of saturating at 0).
//! The four p-values are combined with a Bonferroni minimum, and the score
//! is `−log10(p) / decades` clipped to [0, 1]: with the default 4 decades a
//! score of 0.9 means p ≈ 2.5·10⁻⁴ under the stream's own past, so on normal
//! data scores near 1 are rare by construction, whatever the stream's units,
//! noise distribution or daily cycle (a cycle is part of the past the
//! statistics are calibrated on).
//!
//! Onset rather than duration: when a stream fires, its scores are capped
//! below the alarm for `cooldown` samples (about the time the trailing
//! median needs to move to a new level), the firing samples are kept out of
//! the calibration histograms, and the drift reference is re-anchored once
//! the cooldown ends, so a level shift that becomes the new normal goes back
//! to low scores.
//!
//! Missing values (NaN) are skipped without changing state. Memory per stream
//! is two windows of `window` values plus three fixed histograms.

use crate::detector::{Detector, Score};
use crate::error::ModelError;
use crate::univariate::UnivariateDetector;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Histogram bins over `ln(1 + z)`.
const BINS: usize = 256;
/// Bin width in `ln(1 + z)`: 256 bins cover z up to e^25.6 − 1 ≈ 1.3·10¹¹.
const BIN_W: f64 = 0.1;
/// Smallest p-value reported (keeps `−log10 p` finite).
const P_MIN: f64 = 1e-300;
/// Fraction of the slow average scale below which no scale may fall.
const FLOOR_OF_SLOW_SCALE: f64 = 0.5;
/// Per-statistic p-value below which an observation enters the calibration
/// histogram with [`TAIL_LEARNING_WEIGHT`] only.
const TAIL_LEARNING_P: f64 = 0.01;
/// Weight of such an observation.
const TAIL_LEARNING_WEIGHT: f64 = 1.0;
/// Index of the drift statistic.
const DRIFT: usize = 2;
/// The drift statistic is smooth (a median of a window against a slow
/// average), so consecutive values are nearly equal: learning every one of
/// them would calibrate a creeping drift away as fast as it grows. It is
/// learned on every 32nd sample only (with a memory 32 times shorter in
/// samples learned, i.e. the same span of stream).
const DRIFT_SUBSAMPLE: u64 = 32;
/// Number of statistics combined per stream.
pub const N_STATS: usize = 4;

/// Parameters of [`StreamScorer`]: one set for every stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Trailing window (samples) for the level and step medians/MADs.
    pub window: usize,
    /// Samples needed before anything is scored (earlier samples score 0).
    pub min_samples: usize,
    /// Smoothing factor of the slow drift reference (1/time constant).
    pub drift_alpha: f64,
    /// Time constant (samples) of the calibration histograms' forgetting.
    pub memory: f64,
    /// Weight (in samples) of the prior distribution the histograms start from.
    pub prior_weight: f64,
    /// Score = −log10(p) / `decades`, clipped to [0, 1].
    pub decades: f64,
    /// Score at or above which a sample is flagged.
    pub alarm: f64,
    /// Samples after a fire during which the stream's scores are capped at
    /// half the alarm.
    pub cooldown: usize,
    /// Relative floor on every scale: `rel_floor · max(|level|, 1e-6)`.
    pub rel_floor: f64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            window: 64,
            min_samples: 8,
            drift_alpha: 1.0 / 512.0,
            memory: 5000.0,
            prior_weight: 20.0,
            decades: 4.0,
            alarm: 0.9,
            cooldown: 64,
            rel_floor: 1e-6,
        }
    }
}

impl StreamConfig {
    fn validate(&self) -> Result<(), ModelError> {
        let ok = self.window >= 4
            && self.min_samples >= 3
            && self.min_samples <= self.window
            && self.drift_alpha > 0.0
            && self.drift_alpha < 1.0
            && self.memory >= 10.0
            && self.memory.is_finite()
            && self.prior_weight > 0.0
            && self.prior_weight.is_finite()
            && self.decades > 0.0
            && self.decades.is_finite()
            && self.alarm > 0.0
            && self.alarm <= 1.0
            && self.rel_floor > 0.0
            && self.rel_floor.is_finite();
        if ok {
            Ok(())
        } else {
            Err(ModelError::InvalidParameter(
                "stream scorer: window >= 4, 3 <= min_samples <= window, drift_alpha in (0,1), \
                 memory >= 10, prior_weight > 0, decades > 0, alarm in (0,1], rel_floor > 0"
                    .into(),
            ))
        }
    }

    /// Maps a p-value to the calibrated score.
    pub fn score_of_p(&self, p: f64) -> f64 {
        let p = if p.is_nan() { 1.0 } else { p.clamp(P_MIN, 1.0) };
        (-p.log10() / self.decades).clamp(0.0, 1.0)
    }

    /// p-value at which the score reaches `s`.
    pub fn p_of_score(&self, s: f64) -> f64 {
        10f64.powf(-s.clamp(0.0, 1.0) * self.decades)
    }
}

/// Upper-tail probability under a running, forgotten histogram of a
/// non-negative statistic, with an exponential tail beyond its 99 % quantile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TailCalibrator {
    counts: Vec<f64>,
    total: f64,
    inc: f64,
    growth: f64,
}

fn bin_of(z: f64) -> (usize, f64) {
    let s = z.max(0.0).ln_1p() / BIN_W;
    if s >= BINS as f64 {
        return (BINS - 1, 1.0);
    }
    let b = s.floor();
    (b as usize, s - b)
}

fn z_of_bin(pos: f64) -> f64 {
    (pos * BIN_W).exp_m1()
}

impl TailCalibrator {
    /// Starts from the prior P(Z > z) = 10^(−z/2) (10 % above 2, 1 % above 4:
    /// heavier-tailed than a Gaussian |z|, so the first minutes of a stream
    /// are conservative), with total weight `weight`.
    fn new(weight: f64, memory: f64) -> Self {
        let tail = |z: f64| 10f64.powf(-z / 2.0);
        let mut counts = vec![0.0; BINS];
        for (i, c) in counts.iter_mut().enumerate() {
            let lo = tail(z_of_bin(i as f64));
            let hi = if i + 1 == BINS {
                0.0
            } else {
                tail(z_of_bin((i + 1) as f64))
            };
            *c = weight * (lo - hi);
        }
        Self {
            counts,
            total: weight,
            inc: 1.0,
            growth: 1.0 / (1.0 - 1.0 / memory),
        }
    }

    /// Adds one observation with relative weight `w` (1 = a full sample);
    /// every call advances the forgetting by one sample.
    fn add(&mut self, z: f64, w: f64) {
        self.inc *= self.growth;
        let (b, _) = bin_of(z);
        self.counts[b] += w * self.inc;
        self.total += w * self.inc;
        if self.inc > 1e150 {
            let k = 1.0 / self.inc;
            self.counts.iter_mut().for_each(|c| *c *= k);
            self.total *= k;
            self.inc = 1.0;
        }
    }

    /// z at which the upper-tail mass equals `tail` (linear within a bin).
    fn quantile_upper(&self, tail: f64) -> f64 {
        let target = tail * self.total;
        let mut above = 0.0;
        for i in (0..BINS).rev() {
            let c = self.counts[i];
            if above + c >= target && c > 0.0 {
                let frac = (target - above) / c; // fraction of the bin from its top
                return z_of_bin(i as f64 + 1.0 - frac);
            }
            above += c;
        }
        0.0
    }

    /// P(Z ≥ z) under the histogram, never below the exponential tail.
    fn p_value(&self, z: f64) -> f64 {
        if self.total <= 0.0 {
            return 1.0;
        }
        let (b, frac) = bin_of(z);
        let above: f64 = self.counts[b + 1..].iter().sum::<f64>() + (1.0 - frac) * self.counts[b];
        let p_hist = (above / self.total).clamp(0.0, 1.0);
        let z99 = self.quantile_upper(0.01);
        if z <= z99 {
            return p_hist;
        }
        let z90 = self.quantile_upper(0.10);
        // Exponential tail through the 90 % and 99 % quantiles; a tail scale
        // of zero (a flat history) means any excess is beyond the data.
        let beta = (z99 - z90) / std::f64::consts::LN_10;
        let p_exp = if beta > 1e-12 {
            0.01 * (-(z - z99) / beta).exp()
        } else {
            0.0
        };
        p_hist.max(p_exp).max(P_MIN)
    }
}

/// Median and a robust σ estimate of a window (copied into `scratch`):
/// 1.4826·MAD, or 1.2533·(mean absolute deviation) when more than half the
/// window is identical (MAD = 0 on quantised or mostly-flat signals).
fn med_mad(buf: &VecDeque<f64>, scratch: &mut Vec<f64>) -> (f64, f64) {
    scratch.clear();
    scratch.extend(buf.iter().copied());
    let m = median_in_place(scratch);
    scratch.iter_mut().for_each(|v| *v = (*v - m).abs());
    let mean_ad = scratch.iter().sum::<f64>() / scratch.len().max(1) as f64;
    let d = median_in_place(scratch);
    (
        m,
        if d > 0.0 {
            1.4826 * d
        } else {
            1.2533 * mean_ad
        },
    )
}

fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let (_, hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *hi;
    if n % 2 == 1 {
        hi
    } else {
        let lo = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lo + hi)
    }
}

/// Result of one sample of a [`StreamScorer`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StreamScore {
    /// Combined upper-tail probability (after Bonferroni and suppression).
    pub p_value: f64,
    /// Calibrated score in [0, 1].
    pub score: f64,
    /// `score >= alarm`.
    pub is_anomaly: bool,
}

/// A calibrated, causal, adaptive anomaly scorer for one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamScorer {
    cfg: StreamConfig,
    values: VecDeque<f64>,
    steps: VecDeque<f64>,
    last: Option<f64>,
    seen: u64,
    run: usize,
    drift_ref: Option<f64>,
    drift_scale: Option<f64>,
    calib: Vec<TailCalibrator>,
    cooldown_left: usize,
    last_p: [f64; N_STATS],
    #[serde(skip)]
    scratch: Vec<f64>,
}

impl StreamScorer {
    /// A scorer with `cfg` (see [`StreamConfig::default`]).
    pub fn new(cfg: StreamConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            values: VecDeque::with_capacity(cfg.window),
            steps: VecDeque::with_capacity(cfg.window),
            last: None,
            seen: 0,
            run: 0,
            drift_ref: None,
            drift_scale: None,
            calib: (0..N_STATS)
                .map(|i| {
                    let memory = if i == DRIFT {
                        (cfg.memory / DRIFT_SUBSAMPLE as f64).max(10.0)
                    } else {
                        cfg.memory
                    };
                    TailCalibrator::new(cfg.prior_weight, memory)
                })
                .collect(),
            cooldown_left: 0,
            last_p: [1.0; N_STATS],
            scratch: Vec::with_capacity(cfg.window),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// Scale floor: a tiny fraction of the level, or half the slow
    /// average scale (so deviations on a mostly-flat, quantised signal are
    /// measured on one consistent scale); it decays towards the level floor
    /// while the signal stays flat, so a change out of a long flat line is
    /// always very surprising.
    /// Per-statistic p-values (level, step, drift, stuck) of the last scored
    /// sample, before combination and suppression: which kind of change fired.
    pub fn last_p_values(&self) -> [f64; N_STATS] {
        self.last_p
    }

    /// Two values closer than this are "unchanged" for the stuck statistic.
    fn unchanged_tolerance(&self, level: f64) -> f64 {
        self.cfg.rel_floor * level.abs().max(1e-6)
    }

    fn floor(&self, level: f64) -> f64 {
        let rel = self.cfg.rel_floor * level.abs().max(1e-6);
        rel.max(FLOOR_OF_SLOW_SCALE * self.drift_scale.unwrap_or(0.0))
    }

    /// Scores one value. `None` (missing: NaN or infinite) returns p = 1,
    /// score 0 and leaves the state unchanged.
    pub fn score(&mut self, x: f64) -> StreamScore {
        if !x.is_finite() {
            return StreamScore {
                p_value: 1.0,
                score: 0.0,
                is_anomaly: false,
            };
        }
        let w = self.cfg.window;
        let mut p = 1.0;
        let mut stats = [0.0; N_STATS];
        let ready = self.values.len() >= self.cfg.min_samples;
        if ready {
            let mut scratch = std::mem::take(&mut self.scratch);
            let (m, d) = med_mad(&self.values, &mut scratch);
            let fl = self.floor(m);
            let sigma = d.max(fl);
            stats[0] = (x - m).abs() / sigma;
            if let Some(last) = self.last
                && self.steps.len() >= self.cfg.min_samples
            {
                let (ms, ds) = med_mad(&self.steps, &mut scratch);
                let sigma_s = ds.max(fl);
                stats[1] = ((x - last) - ms).abs() / sigma_s;
            }
            self.scratch = scratch;
            if let Some(last) = self.last {
                stats[3] = if (x - last).abs() <= self.unchanged_tolerance(x) {
                    (self.run + 1) as f64
                } else {
                    0.0
                };
            }
            // Expanding mean at the start, so the reference is accurate
            // before 1/alpha samples have been seen.
            let a = self.cfg.drift_alpha.max(1.0 / self.seen.max(1) as f64);
            match (self.drift_ref, self.drift_scale) {
                (Some(r), Some(s)) => {
                    // In units of the standard error of a window median
                    // (1.2533·σ/√n for white noise), so that on white noise
                    // the statistic is on the prior's unit scale.
                    let se = 1.2533 * s.max(fl) / (self.values.len() as f64).sqrt();
                    stats[DRIFT] = (m - r).abs() / se;
                    self.drift_ref = Some(r + a * (m - r));
                    self.drift_scale = Some(s + a * (sigma - s));
                }
                _ => {
                    self.drift_ref = Some(m);
                    self.drift_scale = Some(sigma);
                }
            }
            for ((lp, z), c) in self.last_p.iter_mut().zip(stats).zip(&self.calib) {
                *lp = c.p_value(z);
            }
            let p_min = self.last_p.iter().copied().fold(1.0, f64::min);
            p = (N_STATS as f64 * p_min).min(1.0);
        }
        let suppressed = self.cooldown_left > 0;
        if suppressed {
            p = p.max(self.cfg.p_of_score(self.cfg.alarm / 2.0));
            self.cooldown_left -= 1;
            if self.cooldown_left == 0 {
                // The new level (if any) is now the normal: re-anchor drift.
                let mut scratch = std::mem::take(&mut self.scratch);
                let (m, _) = med_mad(&self.values, &mut scratch);
                self.scratch = scratch;
                self.drift_ref = Some(m);
            }
        }
        let score = self.cfg.score_of_p(p);
        let is_anomaly = ready && score >= self.cfg.alarm;
        // The firing sample itself is part of the calibration (so a
        // recurring pattern becomes normal); the cooldown samples, dominated
        // by the transient of the change, are not.
        // Statistics of the first window (partial windows, a young drift
        // reference) are not representative of the stream: not learned.
        let warm = self.seen >= w as u64;
        if ready && warm && !suppressed {
            let drift_turn = self.seen.is_multiple_of(DRIFT_SUBSAMPLE);
            for (i, ((c, z), lp)) in self
                .calib
                .iter_mut()
                .zip(stats)
                .zip(self.last_p)
                .enumerate()
            {
                if i == DRIFT && !drift_turn {
                    continue;
                }
                // Values already in the 1 % tail are learned slowly, so a
                // statistic that creeps up (a drift) is not calibrated away
                // as fast as it grows.
                c.add(
                    z,
                    if lp < TAIL_LEARNING_P {
                        TAIL_LEARNING_WEIGHT
                    } else {
                        1.0
                    },
                );
            }
        }
        if is_anomaly {
            self.cooldown_left = self.cfg.cooldown;
        }
        if let Some(last) = self.last {
            self.run = if (x - last).abs() <= self.unchanged_tolerance(x) {
                self.run + 1
            } else {
                0
            };
            if self.steps.len() == w {
                self.steps.pop_front();
            }
            self.steps.push_back(x - last);
        }
        if self.values.len() == w {
            self.values.pop_front();
        }
        self.values.push_back(x);
        self.last = Some(x);
        self.seen += 1;
        StreamScore {
            p_value: p,
            score,
            is_anomaly,
        }
    }
}

impl UnivariateDetector for StreamScorer {
    /// Warms the scorer up on a healthy window (its samples are fed in order;
    /// the scorer stays adaptive afterwards).
    fn fit(&mut self, healthy: &[f64]) -> Result<(), ModelError> {
        for x in healthy {
            self.score(*x);
        }
        Ok(())
    }
    fn update(&mut self, x: f64) -> Result<Score, ModelError> {
        if !x.is_finite() {
            return Err(ModelError::NonFinite);
        }
        let s = self.score(x);
        Ok(Score::calibrated(s.score, s.is_anomaly))
    }
}

/// One [`StreamScorer`] per column; the row's p-value is the Bonferroni
/// minimum over the columns present, so the alarm rate does not grow with the
/// number of columns. Missing cells (NaN) are skipped per column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDetector {
    cfg: StreamConfig,
    columns: Vec<StreamScorer>,
}

impl StreamDetector {
    /// `ncols` independent scorers sharing `cfg`.
    pub fn new(ncols: usize, cfg: StreamConfig) -> Result<Self, ModelError> {
        if ncols == 0 {
            return Err(ModelError::InvalidParameter(
                "stream detector needs at least one column".into(),
            ));
        }
        let s = StreamScorer::new(cfg)?;
        Ok(Self {
            cfg,
            columns: vec![s; ncols],
        })
    }

    /// Scores one row; every cell may be NaN (missing).
    pub fn score_row(&mut self, x: &[f64]) -> Result<StreamScore, ModelError> {
        if x.len() != self.columns.len() {
            return Err(ModelError::Dimension {
                expected: self.columns.len(),
                got: x.len(),
            });
        }
        let mut p_min: f64 = 1.0;
        let mut any = false;
        for (s, v) in self.columns.iter_mut().zip(x) {
            let r = s.score(*v);
            p_min = p_min.min(r.p_value);
            any |= r.is_anomaly;
        }
        let p = (self.columns.len() as f64 * p_min).min(1.0);
        let score = self.cfg.score_of_p(p);
        Ok(StreamScore {
            p_value: p,
            score,
            is_anomaly: any && score >= self.cfg.alarm,
        })
    }
}

impl Detector for StreamDetector {
    fn update(&mut self, x: &[f64]) -> Result<Score, ModelError> {
        let s = self.score_row(x)?;
        Ok(Score::calibrated(s.score, s.is_anomaly))
    }
}
