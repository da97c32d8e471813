//! Per-device random streams and the few distributions the physics needs.
//!
//! Every device owns one ChaCha8 stream keyed by the fleet seed and selected by
//! the device index. That is what makes a device's history independent of how
//! many other devices exist, of the order they are stepped in and of how the
//! caller chunks time: each device consumes only its own stream, tick by tick.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A device's private random source (uniforms, Box–Muller normals, ...).
#[derive(Debug, Clone)]
pub(crate) struct DevRng {
    rng: ChaCha8Rng,
    /// Box–Muller yields normals in pairs; the second one is kept so that each
    /// normal costs one uniform pair only every other call.
    spare: Option<f64>,
}

impl DevRng {
    /// Stream `index` of the generator keyed by `seed`.
    pub(crate) fn new(seed: u64, index: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index);
        Self { rng, spare: None }
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n); `n == 0` yields 0 so callers never panic.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // f64 has 53 bits of mantissa: exact enough for the small n used here.
        let i = (self.uniform() * n as f64) as usize;
        i.min(n - 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal by Box–Muller (we avoid a rand_distr dependency).
    pub(crate) fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - u lies in (0, 1], so ln never sees 0.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }

    /// Exponential with the given mean.
    pub(crate) fn exponential(&mut self, mean: f64) -> f64 {
        let u = 1.0 - self.uniform();
        -mean * u.ln()
    }

    /// Log-normal with the given median and log-space sigma, clipped to [lo, hi].
    pub(crate) fn lognormal_clipped(&mut self, median: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
        (median * (sigma * self.normal()).exp()).clamp(lo, hi)
    }

    /// Index drawn with probability proportional to `weights` (non-negative).
    pub(crate) fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().copied().filter(|w| *w > 0.0).sum();
        if total <= 0.0 {
            return 0;
        }
        let mut x = self.uniform() * total;
        for (i, w) in weights.iter().enumerate() {
            if *w <= 0.0 {
                continue;
            }
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_moments() {
        let mut r = DevRng::new(1, 0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn streams_differ_by_index() {
        let mut a = DevRng::new(7, 0);
        let mut b = DevRng::new(7, 1);
        assert_ne!(a.uniform(), b.uniform());
    }
}
