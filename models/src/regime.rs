//! Operating regimes learned from the setting columns, and per-regime sensor
//! normalisation.
//!
//! C-MAPSS engines fly at several operating conditions (altitude, Mach,
//! throttle). The raw sensors mostly measure the condition, not the wear, so
//! the condition is identified from the three setting columns and every
//! sensor is z-scored with the mean/std of its regime.
//!
//! The number of regimes is not given: a small deterministic k-means (written
//! here, ~80 lines, to keep the crate free of dependencies) is run for
//! k = 1, 2, … and the smallest k whose clusters explain at least
//! [`RegimeConfig::explained`] of the setting variance is kept. Noise around a
//! single operating point is never explained to 99.9 % by a handful of
//! clusters, so one condition gives k = 1; six tight clusters give k = 6.

use crate::error::ModelError;
use prognos_stats::sample::XorShift;
use serde::{Deserialize, Serialize};

/// Number of setting columns.
pub const N_SETTINGS: usize = 3;

/// Regime-discovery options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegimeConfig {
    /// Largest number of regimes tried.
    pub max_k: usize,
    /// Fraction of the (normalised) setting variance the clusters must
    /// explain: 1 − SSE_k / SSE_1 ≥ `explained`.
    pub explained: f64,
    /// k-means++ restarts per k (the lowest SSE is kept).
    pub restarts: usize,
    /// Lloyd iterations per restart.
    pub max_iter: usize,
    /// At most this many rows (evenly strided) are clustered; the rest are
    /// only assigned.
    pub max_points: usize,
    /// Seed of the k-means++ initialisation.
    pub seed: u64,
}

impl Default for RegimeConfig {
    fn default() -> Self {
        Self {
            max_k: 10,
            explained: 0.999,
            restarts: 4,
            max_iter: 50,
            max_points: 4000,
            seed: 7,
        }
    }
}

type Point = [f64; N_SETTINGS];

fn dist2(a: &Point, b: &Point) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(c: &[Point], p: &Point) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (i, ci) in c.iter().enumerate() {
        let d = dist2(ci, p);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

/// Deterministic k-means (k-means++ seeding, Lloyd iterations, best of
/// `restarts`). Returns the centroids and the within-cluster SSE. `k` must
/// be in 1..=points.len().
fn kmeans(
    points: &[Point],
    k: usize,
    restarts: usize,
    max_iter: usize,
    seed: u64,
) -> (Vec<Point>, f64) {
    let mut rng = XorShift::new(seed);
    let mut best: (Vec<Point>, f64) = (Vec::new(), f64::INFINITY);
    for _ in 0..restarts.max(1) {
        // k-means++ seeding.
        let first = (rng.next_u64() % points.len() as u64) as usize;
        let mut c = vec![points[first]];
        let mut d: Vec<f64> = points.iter().map(|p| dist2(p, &c[0])).collect();
        while c.len() < k {
            let total: f64 = d.iter().sum();
            let pick = if total <= 0.0 {
                (rng.next_u64() % points.len() as u64) as usize
            } else {
                let mut u = rng.next_f64() * total;
                let mut idx = points.len() - 1;
                for (i, di) in d.iter().enumerate() {
                    u -= di;
                    if u < 0.0 {
                        idx = i;
                        break;
                    }
                }
                idx
            };
            c.push(points[pick]);
            for (di, p) in d.iter_mut().zip(points) {
                *di = di.min(dist2(p, &points[pick]));
            }
        }
        // Lloyd.
        let mut assign = vec![usize::MAX; points.len()];
        for _ in 0..max_iter.max(1) {
            let mut changed = false;
            for (a, p) in assign.iter_mut().zip(points) {
                let (j, _) = nearest(&c, p);
                if *a != j {
                    *a = j;
                    changed = true;
                }
            }
            let mut sum = vec![[0.0; N_SETTINGS]; k];
            let mut cnt = vec![0usize; k];
            for (a, p) in assign.iter().zip(points) {
                cnt[*a] += 1;
                for (s, v) in sum[*a].iter_mut().zip(p) {
                    *s += v;
                }
            }
            for j in 0..k {
                if cnt[j] > 0 {
                    for (cj, s) in c[j].iter_mut().zip(&sum[j]) {
                        *cj = s / cnt[j] as f64;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let sse: f64 = points.iter().map(|p| nearest(&c, p).1).sum();
        if sse < best.1 {
            best = (c, sse);
        }
    }
    best
}

/// Operating regimes: settings are scaled per column, then assigned to the
/// nearest centroid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Regimes {
    center: Point,
    scale: Point,
    centroids: Vec<Point>,
}

impl Regimes {
    /// Learns the regimes from training setting vectors.
    pub fn fit(settings: &[Point], cfg: &RegimeConfig) -> Result<Self, ModelError> {
        if settings.is_empty() {
            return Err(ModelError::NotEnoughData { need: 1, got: 0 });
        }
        if settings.iter().flatten().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite);
        }
        if !(cfg.explained > 0.0 && cfg.explained < 1.0) || cfg.max_k == 0 {
            return Err(ModelError::InvalidParameter(
                "regimes: explained in (0,1), max_k ≥ 1".into(),
            ));
        }
        let n = settings.len() as f64;
        let mut center = [0.0; N_SETTINGS];
        let mut scale = [1.0; N_SETTINGS];
        for j in 0..N_SETTINGS {
            let m = settings.iter().map(|s| s[j]).sum::<f64>() / n;
            let var = settings.iter().map(|s| (s[j] - m).powi(2)).sum::<f64>() / n;
            center[j] = m;
            // A constant column contributes nothing (scaled values are 0).
            scale[j] = if var.sqrt() > 1e-12 * m.abs().max(1.0) {
                var.sqrt()
            } else {
                f64::INFINITY
            };
        }
        let scaled = |s: &Point| -> Point {
            let mut p = [0.0; N_SETTINGS];
            for j in 0..N_SETTINGS {
                p[j] = (s[j] - center[j]) / scale[j];
            }
            p
        };
        let step = settings.len().div_ceil(cfg.max_points.max(1)).max(1);
        let pts: Vec<Point> = settings.iter().step_by(step).map(scaled).collect();
        let (c1, sse1) = kmeans(&pts, 1, 1, 1, cfg.seed);
        let mut centroids = c1;
        if sse1 > 1e-12 * pts.len() as f64 {
            for k in 2..=cfg.max_k.min(pts.len()) {
                let (c, sse) = kmeans(&pts, k, cfg.restarts, cfg.max_iter, cfg.seed ^ k as u64);
                if 1.0 - sse / sse1 >= cfg.explained {
                    centroids = c;
                    break;
                }
            }
        }
        Ok(Self {
            center,
            scale,
            centroids,
        })
    }

    /// Number of regimes found.
    pub fn k(&self) -> usize {
        self.centroids.len()
    }

    /// Regime of one setting vector (nearest centroid; non-finite settings
    /// fall back to regime 0).
    pub fn assign(&self, s: &Point) -> usize {
        if s.iter().any(|v| !v.is_finite()) {
            return 0;
        }
        let mut p = [0.0; N_SETTINGS];
        for j in 0..N_SETTINGS {
            p[j] = (s[j] - self.center[j]) / self.scale[j];
        }
        nearest(&self.centroids, &p).0
    }
}

/// Per-regime z-scoring of sensor channels, plus the channels kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegimeNormalizer {
    regimes: Regimes,
    /// mean[regime][channel].
    mean: Vec<Vec<f64>>,
    /// std[regime][channel]; 0 marks a channel constant in that regime.
    std: Vec<Vec<f64>>,
    n_channels: usize,
    keep: Vec<usize>,
    /// Correlation of each kept channel with the training target.
    corr: Vec<f64>,
}

impl RegimeNormalizer {
    /// Fits regimes on `settings` and per-regime mean/std of every channel of
    /// `values` (row-major, all rows the same width). A channel is kept when
    /// it varies within some regime and its normalised value correlates with
    /// `target` at |r| ≥ `min_abs_corr` (pass 0 to keep every non-constant
    /// channel).
    pub fn fit(
        settings: &[Point],
        values: &[Vec<f64>],
        target: &[f64],
        min_abs_corr: f64,
        cfg: &RegimeConfig,
    ) -> Result<Self, ModelError> {
        if settings.len() != values.len() || values.len() != target.len() {
            return Err(ModelError::Dimension {
                expected: settings.len(),
                got: values.len().min(target.len()),
            });
        }
        let regimes = Regimes::fit(settings, cfg)?;
        let nc = values.first().map_or(0, |v| v.len());
        if values.iter().any(|v| v.len() != nc) {
            return Err(ModelError::Dimension {
                expected: nc,
                got: values
                    .iter()
                    .map(|v| v.len())
                    .find(|&l| l != nc)
                    .unwrap_or(0),
            });
        }
        if values
            .iter()
            .flatten()
            .chain(target)
            .any(|v| !v.is_finite())
        {
            return Err(ModelError::NonFinite);
        }
        let k = regimes.k();
        let labels: Vec<usize> = settings.iter().map(|s| regimes.assign(s)).collect();
        let mut cnt = vec![0usize; k];
        let mut mean = vec![vec![0.0; nc]; k];
        for (l, v) in labels.iter().zip(values) {
            cnt[*l] += 1;
            for (m, x) in mean[*l].iter_mut().zip(v) {
                *m += x;
            }
        }
        for (m, c) in mean.iter_mut().zip(&cnt) {
            m.iter_mut().for_each(|x| *x /= (*c).max(1) as f64);
        }
        let mut std = vec![vec![0.0; nc]; k];
        for (l, v) in labels.iter().zip(values) {
            for ((s, x), m) in std[*l].iter_mut().zip(v).zip(&mean[*l]) {
                *s += (x - m) * (x - m);
            }
        }
        for r in 0..k {
            for c in 0..nc {
                let sd = (std[r][c] / cnt[r].max(1) as f64).sqrt();
                // Relative tolerance: a channel at 1e-9 of its level is constant.
                std[r][c] = if sd > 1e-9 * mean[r][c].abs().max(1e-12) {
                    sd
                } else {
                    0.0
                };
            }
        }
        let mut this = Self {
            regimes,
            mean,
            std,
            n_channels: nc,
            keep: (0..nc).collect(),
            corr: Vec::new(),
        };
        // Informative channels: correlation of the normalised value with the
        // target, on the training rows.
        let z: Vec<Vec<f64>> = settings
            .iter()
            .zip(values)
            .map(|(s, v)| this.normalise_all(s, v))
            .collect();
        let tm = prognos_stats::sample::mean(target);
        let tv: f64 = target.iter().map(|t| (t - tm) * (t - tm)).sum();
        let (mut keep, mut corr) = (Vec::new(), Vec::new());
        for c in 0..nc {
            let col: Vec<f64> = z.iter().map(|r| r[c]).collect();
            let m = prognos_stats::sample::mean(&col);
            let v: f64 = col.iter().map(|x| (x - m) * (x - m)).sum();
            if v <= 1e-12 * col.len() as f64 {
                continue;
            }
            let r = if tv > 0.0 {
                col.iter()
                    .zip(target)
                    .map(|(x, t)| (x - m) * (t - tm))
                    .sum::<f64>()
                    / (v * tv).sqrt()
            } else {
                0.0
            };
            if r.abs() >= min_abs_corr {
                keep.push(c);
                corr.push(r);
            }
        }
        this.keep = keep;
        this.corr = corr;
        Ok(this)
    }

    fn normalise_all(&self, s: &Point, v: &[f64]) -> Vec<f64> {
        let r = self.regimes.assign(s);
        (0..self.n_channels)
            .map(|c| {
                let x = v.get(c).copied().unwrap_or(f64::NAN);
                let sd = self.std[r][c];
                if sd > 0.0 && x.is_finite() {
                    (x - self.mean[r][c]) / sd
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Normalised values of the kept channels for one row (non-finite
    /// readings become 0, the regime mean).
    pub fn normalise(&self, s: &Point, v: &[f64]) -> Vec<f64> {
        let all = self.normalise_all(s, v);
        self.keep.iter().map(|&c| all[c]).collect()
    }

    /// A health index from normalised kept values (as returned by
    /// [`RegimeNormalizer::normalise`]): their average weighted by the
    /// correlation with the target, signed so that it rises as the target
    /// (remaining life) falls. 0 when nothing correlates.
    pub fn health_index(&self, z: &[f64]) -> f64 {
        let w: f64 = self.corr.iter().map(|c| c.abs()).sum();
        if w <= 0.0 {
            return 0.0;
        }
        -self.corr.iter().zip(z).map(|(c, v)| c * v).sum::<f64>() / w
    }

    /// Regimes found.
    pub fn regimes(&self) -> &Regimes {
        &self.regimes
    }

    /// Indices (0-based) of the kept channels.
    pub fn kept(&self) -> &[usize] {
        &self.keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn six_conditions(n: usize, seed: u64) -> (Vec<Point>, Vec<usize>) {
        let ops: [Point; 6] = [
            [0.0, 0.0, 100.0],
            [10.0, 0.25, 100.0],
            [20.0, 0.7, 100.0],
            [25.0, 0.62, 60.0],
            [35.0, 0.84, 100.0],
            [42.0, 0.84, 100.0],
        ];
        let mut rng = XorShift::new(seed);
        let mut pts = Vec::new();
        let mut lab = Vec::new();
        for i in 0..n {
            let r = (rng.next_u64() % 6) as usize;
            let o = ops[r];
            let e = |rng: &mut XorShift, s: f64| (rng.next_f64() - 0.5) * s;
            pts.push([
                o[0] + e(&mut rng, 0.01),
                o[1] + e(&mut rng, 0.001),
                o[2] + if i % 3 == 0 { 0.0 } else { e(&mut rng, 1e-9) },
            ]);
            lab.push(r);
        }
        (pts, lab)
    }

    #[test]
    fn recovers_six_regimes() {
        let (pts, lab) = six_conditions(1200, 3);
        let r = Regimes::fit(&pts, &RegimeConfig::default()).unwrap();
        assert_eq!(r.k(), 6);
        // Same partition as the truth (up to relabelling).
        let mut map = [usize::MAX; 6];
        for (p, l) in pts.iter().zip(&lab) {
            let a = r.assign(p);
            if map[*l] == usize::MAX {
                map[*l] = a;
            }
            assert_eq!(map[*l], a);
        }
        let mut m = map.to_vec();
        m.sort();
        m.dedup();
        assert_eq!(m.len(), 6);
        // Deterministic.
        assert_eq!(r, Regimes::fit(&pts, &RegimeConfig::default()).unwrap());
    }

    #[test]
    fn one_regime_for_noise_or_constant_settings() {
        let mut rng = XorShift::new(11);
        let noisy: Vec<Point> = (0..800)
            .map(|_| [rng.next_f64() * 0.004 - 0.002, rng.next_f64() * 6e-4, 100.0])
            .collect();
        assert_eq!(
            Regimes::fit(&noisy, &RegimeConfig::default()).unwrap().k(),
            1
        );
        let constant = vec![[1.0, 2.0, 3.0]; 50];
        assert_eq!(
            Regimes::fit(&constant, &RegimeConfig::default())
                .unwrap()
                .k(),
            1
        );
        let single = vec![[1.0, 2.0, 3.0]];
        assert_eq!(
            Regimes::fit(&single, &RegimeConfig::default()).unwrap().k(),
            1
        );
        assert!(Regimes::fit(&[], &RegimeConfig::default()).is_err());
        assert!(Regimes::fit(&[[f64::NAN, 0.0, 0.0]], &RegimeConfig::default()).is_err());
    }

    #[test]
    fn per_regime_normalisation_removes_condition() {
        let (pts, lab) = six_conditions(1200, 5);
        let mut rng = XorShift::new(9);
        // Channel 0: level set by the regime + unit noise + a wear signal
        // tied to the target; channel 1: constant per regime (dropped);
        // channel 2: pure noise (dropped by the correlation filter).
        let target: Vec<f64> = (0..pts.len()).map(|i| (i % 100) as f64).collect();
        let values: Vec<Vec<f64>> = lab
            .iter()
            .zip(&target)
            .map(|(l, t)| {
                vec![
                    100.0 * *l as f64 + 3.0 * (rng.next_f64() - 0.5) - 0.05 * t,
                    7.0 * *l as f64,
                    rng.next_f64(),
                ]
            })
            .collect();
        let n =
            RegimeNormalizer::fit(&pts, &values, &target, 0.2, &RegimeConfig::default()).unwrap();
        assert_eq!(n.regimes().k(), 6);
        assert_eq!(n.kept(), &[0]);
        // Each regime's normalised channel has mean ≈ 0 and std ≈ 1.
        for r in 0..6 {
            let z: Vec<f64> = pts
                .iter()
                .zip(&values)
                .zip(&lab)
                .filter(|(_, l)| **l == r)
                .map(|((p, v), _)| n.normalise(p, v)[0])
                .collect();
            assert!(prognos_stats::sample::mean(&z).abs() < 1e-9);
            assert!((prognos_stats::sample::std_dev(&z, 0) - 1.0).abs() < 1e-9);
        }
        // The raw channel is dominated by the regime; the normalised one by wear.
        let z0: Vec<f64> = pts
            .iter()
            .zip(&values)
            .map(|(p, v)| n.normalise(p, v)[0])
            .collect();
        let tm = prognos_stats::sample::mean(&target);
        let zm = prognos_stats::sample::mean(&z0);
        let cov: f64 = z0
            .iter()
            .zip(&target)
            .map(|(z, t)| (z - zm) * (t - tm))
            .sum();
        let corr = cov
            / (z0.iter().map(|z| (z - zm).powi(2)).sum::<f64>()
                * target.iter().map(|t| (t - tm).powi(2)).sum::<f64>())
            .sqrt();
        assert!(corr < -0.8, "{corr}");
        // Mismatched lengths and NaN are errors, not panics.
        assert!(
            RegimeNormalizer::fit(&pts, &values[1..], &target, 0.2, &RegimeConfig::default())
                .is_err()
        );
        let mut bad = values.clone();
        bad[0][0] = f64::NAN;
        assert!(RegimeNormalizer::fit(&pts, &bad, &target, 0.2, &RegimeConfig::default()).is_err());
        // A NaN reading at prediction time maps to the regime mean.
        assert_eq!(n.normalise(&pts[0], &[f64::NAN, 0.0, 0.0]), vec![0.0]);
    }
}
