//! The detector interface every online detector implements, and the score it returns.

use crate::error::ModelError;
use serde::{Deserialize, Serialize};

/// Output of a detector for one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Statistic divided by its alarm limit: values ≥ 1 are over the limit.
    /// Unbounded above, never negative.
    pub ratio: f64,
    /// `ratio / (1 + ratio)`, a monotone squash into [0, 1) where 0.5 is the
    /// limit, so scores from different detectors share one scale.
    pub anomaly_score: f64,
    /// The detector's decision after its own smoothing / hysteresis.
    pub is_anomaly: bool,
}

impl Score {
    /// Builds a score from a limit ratio and a decision.
    pub fn new(ratio: f64, is_anomaly: bool) -> Self {
        let r = if ratio.is_finite() {
            ratio.max(0.0)
        } else if ratio > 0.0 {
            f64::MAX
        } else {
            0.0
        };
        let anomaly_score = if r >= f64::MAX { 1.0 } else { r / (1.0 + r) };
        Self {
            ratio: r,
            anomaly_score,
            is_anomaly,
        }
    }

    /// Builds a score from an already calibrated value in [0, 1] (a
    /// probability-like score such as [`crate::stream::StreamScorer`]'s); the
    /// ratio is its inverse image `s / (1 − s)`, so `anomaly_score == s`.
    pub fn calibrated(score: f64, is_anomaly: bool) -> Self {
        let s = if score.is_nan() {
            0.0
        } else {
            score.clamp(0.0, 1.0)
        };
        let ratio = if s >= 1.0 { f64::MAX } else { s / (1.0 - s) };
        Self {
            ratio,
            anomaly_score: s,
            is_anomaly,
        }
    }
}

/// A causal, online detector over fixed-width samples: the score for a
/// sample depends only on that sample and the ones fed before it, and the
/// memory used is bounded regardless of stream length.
pub trait Detector {
    /// Feeds one sample and returns its score.
    fn update(&mut self, x: &[f64]) -> Result<Score, ModelError>;
}
