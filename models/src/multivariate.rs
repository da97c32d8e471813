//! Multivariate per-device detectors.

use crate::detector::{Detector, Score};
use crate::error::ModelError;
use crate::pca::{PcaConfig, PcaModel};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Trailing rolling median over a bounded window.
#[derive(Debug, Clone)]
pub struct RollingMedian {
    window: usize,
    buf: VecDeque<f64>,
}

impl RollingMedian {
    /// A window of `window` samples (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            buf: VecDeque::with_capacity(window.max(1)),
        }
    }
    /// Pushes a value and returns the median of the window and whether the
    /// window is full.
    pub fn push(&mut self, x: f64) -> (f64, bool) {
        if self.buf.len() == self.window {
            self.buf.pop_front();
        }
        self.buf.push_back(x);
        let v: Vec<f64> = self.buf.iter().copied().collect();
        (
            prognos_stats::sample::median(&v),
            self.buf.len() == self.window,
        )
    }
}

/// The SKAB reference detector: PCA T² + Q with p = 0.999 limits and a
/// trailing median of `window` rows; rows before the window is full score 0
/// (as the reference's pandas rolling window yields NaN → 0).
#[derive(Debug, Clone)]
pub struct PcaT2Q {
    model: PcaModel,
    t2: RollingMedian,
    q: RollingMedian,
}

impl PcaT2Q {
    /// Fits on a healthy training window.
    pub fn fit(train: &[Vec<f64>], cfg: &PcaConfig, window: usize) -> Result<Self, ModelError> {
        Ok(Self {
            model: PcaModel::fit(train, cfg)?,
            t2: RollingMedian::new(window),
            q: RollingMedian::new(window),
        })
    }
    /// The fitted PCA model (limits, components).
    pub fn model(&self) -> &PcaModel {
        &self.model
    }
}

impl Detector for PcaT2Q {
    fn update(&mut self, x: &[f64]) -> Result<Score, ModelError> {
        let (t2, q) = self.model.statistics(x)?;
        let (t2m, full) = self.t2.push(t2);
        let (qm, _) = self.q.push(q);
        if !full {
            return Ok(Score::new(0.0, false));
        }
        let ratio = (t2m / self.model.t2_limit).max(qm / self.model.q_limit);
        Ok(Score::new(ratio, ratio > 1.0))
    }
}

/// Per sample, its ascending nearest-neighbour distances.
pub(crate) type NeighbourRows = Vec<Vec<f64>>;

/// Mean of the first `k` values (of fewer when shorter; 0 when empty).
pub(crate) fn mean_of_first(v: &[f64], k: usize) -> f64 {
    let n = v.len().min(k);
    if n == 0 {
        0.0
    } else {
        v[..n].iter().sum::<f64>() / n as f64
    }
}

/// Options for [`KnnDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KnnConfig {
    /// Neighbours averaged for the distance.
    pub k: usize,
    /// Quantile of the leave-one-out training distances used as the limit.
    pub quantile: f64,
    /// Multiplier on that limit at which to alarm (below 1 = more sensitive).
    pub threshold: f64,
    /// Trailing median window over the distance ratio (suppresses spikes).
    pub median_window: usize,
}

impl Default for KnnConfig {
    /// Global defaults chosen once on SKAB (see `README`/report): k = 5,
    /// 95 % quantile, alarm at 0.8 of it, median over 31 samples.
    fn default() -> Self {
        Self {
            k: 5,
            quantile: 0.95,
            threshold: 0.8,
            median_window: 31,
        }
    }
}

/// Nearest-neighbour similarity detector (an MSET-like "distance to the
/// healthy memory"): samples are standardised with the training window's
/// mean/std and scored by the mean Euclidean distance to their `k` nearest
/// training samples, relative to the same statistic computed leave-one-out
/// on the training window.
///
/// Why: unlike PCA it does not assume one linear Gaussian operating regime,
/// so a healthy window that visits several states (pump cycling) does not
/// inflate the limits, and a sample between two healthy states is not
/// flagged. Memory is the fixed training set plus the median window.
#[derive(Debug, Clone)]
pub struct KnnDetector {
    cfg: KnnConfig,
    n_inputs: usize,
    columns: Vec<usize>,
    mean: Vec<f64>,
    scale: Vec<f64>,
    memory: Vec<Vec<f64>>,
    limit: f64,
    smooth: RollingMedian,
}

impl KnnDetector {
    /// Fits on `train` using only the input indices in `columns` (all when
    /// empty). A column constant in training keeps a floor scale
    /// ([`prognos_stats::sample::constant_scale_floor`]), so any later change of it is anomalous.
    pub fn fit(train: &[Vec<f64>], columns: &[usize], cfg: KnnConfig) -> Result<Self, ModelError> {
        if cfg.k == 0 || !(0.0..=1.0).contains(&cfg.quantile) || cfg.threshold <= 0.0 {
            return Err(ModelError::InvalidParameter(
                "k >= 1, quantile in [0,1], threshold > 0".into(),
            ));
        }
        let need = cfg.k + 2;
        if train.len() < need {
            return Err(ModelError::NotEnoughData {
                need,
                got: train.len(),
            });
        }
        let n_inputs = train[0].len();
        for r in train {
            if r.len() != n_inputs {
                return Err(ModelError::Dimension {
                    expected: n_inputs,
                    got: r.len(),
                });
            }
            if r.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite);
            }
        }
        let candidates: Vec<usize> = if columns.is_empty() {
            (0..n_inputs).collect()
        } else {
            columns.to_vec()
        };
        let mut cols = Vec::new();
        let mut mean = Vec::new();
        let mut scale = Vec::new();
        for &j in &candidates {
            if j >= n_inputs {
                return Err(ModelError::Dimension {
                    expected: n_inputs,
                    got: j + 1,
                });
            }
            let c: Vec<f64> = train.iter().map(|r| r[j]).collect();
            let m = prognos_stats::sample::mean(&c);
            let s = prognos_stats::sample::std_dev(&c, 0);
            cols.push(j);
            mean.push(m);
            scale.push(s.max(prognos_stats::sample::constant_scale_floor(m)));
        }
        let mut det = Self {
            cfg,
            n_inputs,
            columns: cols,
            mean,
            scale,
            memory: Vec::new(),
            limit: 1.0,
            smooth: RollingMedian::new(cfg.median_window),
        };
        det.memory = train.iter().map(|r| det.standardise(r)).collect();
        let loo: Vec<f64> = (0..det.memory.len())
            .map(|i| det.knn_distance(&det.memory[i], Some(i)))
            .collect();
        // Floor: a training window of identical rows has zero LOO distances;
        // 1e-6 standard deviations is far below any real neighbour distance.
        det.limit = prognos_stats::sample::quantile(&loo, cfg.quantile).max(1e-6);
        Ok(det)
    }

    fn standardise(&self, x: &[f64]) -> Vec<f64> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, &j)| (x[j] - self.mean[i]) / self.scale[i])
            .collect()
    }

    /// The `k` smallest Euclidean distances from standardised `z` to the
    /// memory (skipping index `skip`), ascending.
    fn k_smallest(&self, z: &[f64], skip: Option<usize>, k: usize) -> Vec<f64> {
        // Keep the k smallest squared distances in a small sorted buffer.
        let mut best: Vec<f64> = Vec::with_capacity(k + 1);
        for (i, m) in self.memory.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let d: f64 = m.iter().zip(z).map(|(a, b)| (a - b) * (a - b)).sum();
            if best.len() < k || d < best[best.len() - 1] {
                let pos = best.partition_point(|v| *v <= d);
                best.insert(pos, d);
                best.truncate(k);
            }
        }
        best.iter_mut().for_each(|v| *v = v.sqrt());
        best
    }

    fn knn_distance(&self, z: &[f64], skip: Option<usize>) -> f64 {
        mean_of_first(&self.k_smallest(z, skip, self.cfg.k), self.cfg.k)
    }

    /// For tuning: the `k` smallest distances of every sample of `rows` to
    /// the memory (ascending), and the same leave-one-out for every training
    /// sample, so that any `k' <= k` and any quantile can be evaluated
    /// without refitting.
    pub(crate) fn neighbour_table(
        &self,
        rows: &[Vec<f64>],
        k: usize,
    ) -> Result<(NeighbourRows, NeighbourRows), ModelError> {
        let mut test = Vec::with_capacity(rows.len());
        for x in rows {
            if x.len() != self.n_inputs {
                return Err(ModelError::Dimension {
                    expected: self.n_inputs,
                    got: x.len(),
                });
            }
            if x.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::NonFinite);
            }
            test.push(self.k_smallest(&self.standardise(x), None, k));
        }
        let loo = (0..self.memory.len())
            .map(|i| self.k_smallest(&self.memory[i], Some(i), k))
            .collect();
        Ok((test, loo))
    }

    /// The raw (unsmoothed) distance ratio of one sample.
    pub fn raw_ratio(&self, x: &[f64]) -> Result<f64, ModelError> {
        if x.len() != self.n_inputs {
            return Err(ModelError::Dimension {
                expected: self.n_inputs,
                got: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NonFinite);
        }
        Ok(self.knn_distance(&self.standardise(x), None) / self.limit)
    }
}

impl Detector for KnnDetector {
    fn update(&mut self, x: &[f64]) -> Result<Score, ModelError> {
        let raw = self.raw_ratio(x)?;
        let (m, _) = self.smooth.push(raw);
        let ratio = m / self.cfg.threshold;
        Ok(Score::new(ratio, ratio > 1.0))
    }
}
