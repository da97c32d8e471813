//! PCA with Hotelling T² and SPE (Q) control limits, fitted on a healthy
//! window.
//!
//! This follows the SKAB reference (`core/t2.py`): standardise, keep the
//! components that explain 85 % of the variance, and set limits at p = 0.999 — T² from the F distribution and Q
//! from Jackson & Mudholkar. One deliberate deviation: the reference computes
//! θᵢ as (Σλ)^i, a bug; we use θᵢ = Σ λⱼ^i over the residual eigenvalues as in
//! the original paper, because the buggy limit is not a control limit at any
//! stated p. A second one: columns constant in training are kept at a floor
//! scale instead of dropped (they add a zero eigenvalue, so the fit and the
//! limits do not change), so that any later change of them is anomalous.

use crate::error::ModelError;
use prognos_stats::sample::{f_quantile, normal_quantile, symmetric_eigen};
use serde::{Deserialize, Serialize};

/// Fitting options for [`PcaModel`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PcaConfig {
    /// Fraction of variance the retained components must explain.
    pub explained_variance: f64,
    /// Confidence level of both control limits.
    pub p_value: f64,
}

impl Default for PcaConfig {
    fn default() -> Self {
        Self {
            explained_variance: 0.85,
            p_value: 0.999,
        }
    }
}

/// A fitted PCA monitoring model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaModel {
    n_inputs: usize,
    keep: Vec<usize>,
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// Retained loading vectors, `k` rows of length `keep.len()`.
    components: Vec<Vec<f64>>,
    /// All eigenvalues of the standardised covariance, descending.
    pub eigenvalues: Vec<f64>,
    /// Hotelling T² upper control limit.
    pub t2_limit: f64,
    /// SPE / Q upper control limit (`inf` when no residual space is left).
    pub q_limit: f64,
}

impl PcaModel {
    /// Fits on `rows` (samples × inputs). Needs at least 3 rows. Columns
    /// constant in `rows` are kept at a floor scale (the reference drops them).
    pub fn fit(rows: &[Vec<f64>], cfg: &PcaConfig) -> Result<Self, ModelError> {
        if !(0.0..=1.0).contains(&cfg.explained_variance) || !(0.5..1.0).contains(&cfg.p_value) {
            return Err(ModelError::InvalidParameter(
                "explained_variance in [0,1], p_value in [0.5,1)".into(),
            ));
        }
        let n = rows.len();
        if n < 3 {
            return Err(ModelError::NotEnoughData { need: 3, got: n });
        }
        let p_all = rows[0].len();
        for r in rows {
            if r.len() != p_all {
                return Err(ModelError::Dimension {
                    expected: p_all,
                    got: r.len(),
                });
            }
            if r.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite);
            }
        }
        let mut keep = Vec::new();
        let mut mean = Vec::new();
        let mut scale = Vec::new();
        for j in 0..p_all {
            let col: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            let m = prognos_stats::sample::mean(&col);
            // StandardScaler uses the population standard deviation.
            let s = prognos_stats::sample::std_dev(&col, 0);
            // The reference drops constant columns; we keep them at a floor
            // scale (zero variance in training, so the fit and the limits are
            // unchanged) so that any later change of them shows in T² or Q.
            keep.push(j);
            mean.push(m);
            scale.push(s.max(prognos_stats::sample::constant_scale_floor(m)));
        }
        let p = keep.len();
        if p == 0 {
            return Err(ModelError::NotEnoughData { need: 1, got: 0 });
        }
        let z: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                keep.iter()
                    .enumerate()
                    .map(|(i, &j)| (r[j] - mean[i]) / scale[i])
                    .collect()
            })
            .collect();
        let mut cov = vec![vec![0.0; p]; p];
        for r in &z {
            for (row, ra) in cov.iter_mut().zip(r) {
                for (c, rb) in row.iter_mut().zip(r) {
                    *c += ra * rb;
                }
            }
        }
        cov.iter_mut().flatten().for_each(|c| *c /= (n - 1) as f64);
        let (eigenvalues, vectors) = symmetric_eigen(&cov);
        let eigenvalues: Vec<f64> = eigenvalues.into_iter().map(|v| v.max(0.0)).collect();
        let total: f64 = eigenvalues.iter().sum::<f64>().max(1e-300);
        // sklearn: smallest k whose cumulative ratio strictly exceeds the target.
        let mut k = p;
        let mut cum = 0.0;
        for (i, ev) in eigenvalues.iter().enumerate() {
            cum += ev / total;
            if cum > cfg.explained_variance {
                k = i + 1;
                break;
            }
        }
        let k = k.clamp(1, p);
        let components: Vec<Vec<f64>> = (0..k)
            .map(|c| (0..p).map(|r| vectors[r][c]).collect())
            .collect();
        let nf = n as f64;
        let kf = k as f64;
        let t2_limit = if n > k + 1 {
            kf * (nf - 1.0) * (nf + 1.0) / (nf * (nf - kf)) * f_quantile(cfg.p_value, kf, nf - kf)
        } else {
            f64::INFINITY
        };
        let q_limit = if k < p {
            let theta = |i: i32| -> f64 { eigenvalues[k..].iter().map(|l| l.powi(i)).sum() };
            let (t1, t2, t3) = (theta(1), theta(2), theta(3));
            if t1 <= 1e-300 || t2 <= 1e-300 {
                1e-12
            } else {
                let h0 = 1.0 - 2.0 * t1 * t3 / (3.0 * t2 * t2);
                let c = normal_quantile(cfg.p_value);
                let base = 1.0 + c * h0 * (2.0 * t2).sqrt() / t1 + t2 * h0 * (h0 - 1.0) / (t1 * t1);
                if h0.abs() < 1e-9 || base <= 0.0 {
                    // Degenerate spectrum: fall back to a normal approximation.
                    t1 + c * (2.0 * t2).sqrt()
                } else {
                    t1 * base.powf(1.0 / h0)
                }
            }
        } else {
            f64::INFINITY
        };
        Ok(Self {
            n_inputs: p_all,
            keep,
            mean,
            scale,
            components,
            eigenvalues,
            t2_limit,
            q_limit,
        })
    }

    /// Number of retained principal components.
    pub fn n_components(&self) -> usize {
        self.components.len()
    }

    /// Width of the input rows the model was fitted on.
    pub fn n_inputs(&self) -> usize {
        self.n_inputs
    }

    /// Standardised residual per kept input (for evidence: which sensor drives Q).
    pub fn residuals(&self, x: &[f64]) -> Result<Vec<f64>, ModelError> {
        let z = self.standardise(x)?;
        let scores: Vec<f64> = self
            .components
            .iter()
            .map(|c| c.iter().zip(&z).map(|(a, b)| a * b).sum())
            .collect();
        Ok((0..z.len())
            .map(|i| {
                z[i] - self
                    .components
                    .iter()
                    .zip(&scores)
                    .map(|(c, s)| c[i] * s)
                    .sum::<f64>()
            })
            .collect())
    }

    fn standardise(&self, x: &[f64]) -> Result<Vec<f64>, ModelError> {
        if x.len() != self.n_inputs {
            return Err(ModelError::Dimension {
                expected: self.n_inputs,
                got: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite);
        }
        Ok(self
            .keep
            .iter()
            .enumerate()
            .map(|(i, &j)| (x[j] - self.mean[i]) / self.scale[i])
            .collect())
    }

    /// Hotelling T² and Q (SPE) of one sample.
    pub fn statistics(&self, x: &[f64]) -> Result<(f64, f64), ModelError> {
        let z = self.standardise(x)?;
        let mut t2 = 0.0;
        let mut proj_sq = 0.0;
        for (c, ev) in self.components.iter().zip(&self.eigenvalues) {
            let s: f64 = c.iter().zip(&z).map(|(a, b)| a * b).sum();
            t2 += s * s / ev.max(1e-12);
            proj_sq += s * s;
        }
        let norm_sq: f64 = z.iter().map(|v| v * v).sum();
        // ‖z − PPᵀz‖² = ‖z‖² − ‖Pᵀz‖² for orthonormal P.
        let q = (norm_sq - proj_sq).max(0.0);
        Ok((t2, q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prognos_stats::sample::XorShift;

    fn gaussian(rng: &mut XorShift) -> f64 {
        let u1 = rng.next_f64().max(1e-12);
        let u2 = rng.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    #[test]
    fn healthy_data_rarely_exceeds_limits_and_faults_do() {
        let mut rng = XorShift::new(7);
        let make = |rng: &mut XorShift| {
            let a = gaussian(rng);
            let b = gaussian(rng);
            vec![a, a + 0.1 * gaussian(rng), b, b - 0.1 * gaussian(rng), 5.0]
        };
        let train: Vec<Vec<f64>> = (0..500).map(|_| make(&mut rng)).collect();
        let m = PcaModel::fit(&train, &PcaConfig::default()).unwrap();
        assert_eq!(m.n_components(), 2);
        let mut exceed = 0;
        for _ in 0..2000 {
            let (t2, q) = m.statistics(&make(&mut rng)).unwrap();
            if t2 > m.t2_limit || q > m.q_limit {
                exceed += 1;
            }
        }
        assert!(exceed < 40, "{exceed}");
        // Breaking the correlation between columns 0 and 1 shows up in Q.
        let (_, q) = m.statistics(&[1.0, -1.0, 0.0, 0.0, 5.0]).unwrap();
        assert!(q > m.q_limit);
        assert!(m.statistics(&[1.0]).is_err());
    }
}
